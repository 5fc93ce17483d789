//! The SMTP provider pipelines the envelope (RFC 2920) when the relay offers PIPELINING, and
//! goes command by command when it does not.
//!
//! The relay here is scripted strictly, so that the test fails if the client does the wrong
//! thing: the pipelining relay answers nothing of an envelope until DATA has arrived (a client
//! that waits for the MAIL reply before sending RCPT hangs and times out); the other relay
//! answers each command as it comes and counts a command that arrives before the previous
//! reply was read as a protocol error.

mod provider_common;
mod support;

use baton::outcome::{OutcomeClass, RecipientResult};
use baton::provider::{Outbound, send};
use provider_common::build;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Default)]
struct Seen {
    /// Envelope commands (MAIL, RCPT, DATA) that arrived in one read with another one.
    batched: usize,
    /// Commands sent before the reply to the previous one (on a relay without PIPELINING).
    early: usize,
    messages: usize,
}

/// A relay on 127.0.0.1; `pipelining`: whether EHLO offers it. RCPT TO a "nobody@" address
/// is refused with 550 5.1.1.
async fn relay(pipelining: bool) -> (u16, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let state = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(session(tcp, pipelining, state.clone()));
        }
    });
    (port, seen)
}

async fn session(tcp: tokio::net::TcpStream, pipelining: bool, seen: Arc<Mutex<Seen>>) {
    let (rd, mut wr) = tcp.into_split();
    let mut rd = BufReader::new(rd);
    let _ = wr.write_all(b"220 relay.example.net ESMTP\r\n").await;
    let mut pending: Vec<String> = Vec::new(); // envelope replies held until DATA arrives
    loop {
        let mut line = String::new();
        if rd.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let envelope = matches!(verb.as_str(), "MAIL" | "RCPT" | "DATA");
        if envelope && !rd.buffer().is_empty() {
            seen.lock().unwrap().batched += 1;
            if !pipelining {
                seen.lock().unwrap().early += 1;
            }
        }
        let reply = match verb.as_str() {
            "EHLO" if pipelining => "250-relay.example.net\r\n250-PIPELINING\r\n250 8BITMIME".to_string(),
            "EHLO" => "250-relay.example.net\r\n250 8BITMIME".to_string(),
            "MAIL" => "250 2.1.0 Ok".to_string(),
            "RCPT" if line.contains("nobody@") => "550 5.1.1 <nobody@example.net>: User unknown".to_string(),
            "RCPT" => "250 2.1.5 Ok".to_string(),
            "DATA" => "354 End data with <CR><LF>.<CR><LF>".to_string(),
            "QUIT" => {
                let _ = wr.write_all(b"221 2.0.0 Bye\r\n").await;
                return;
            }
            _ => "250 2.0.0 Ok".to_string(),
        };
        if pipelining && envelope {
            pending.push(reply);
            if verb != "DATA" {
                continue; // strict: nothing until the whole envelope is in
            }
            let all = pending.drain(..).map(|r| format!("{r}\r\n")).collect::<String>();
            let _ = wr.write_all(all.as_bytes()).await;
        } else {
            let _ = wr.write_all(format!("{reply}\r\n").as_bytes()).await;
        }
        if verb == "DATA" {
            let mut body = Vec::new();
            while !body.ends_with(b"\r\n.\r\n") {
                let mut byte = [0u8; 1];
                if rd.read(&mut byte).await.unwrap_or(0) == 0 {
                    return;
                }
                body.push(byte[0]);
            }
            seen.lock().unwrap().messages += 1;
            let _ = wr.write_all(b"250 2.0.0 Ok: queued as 4ABC\r\n").await;
        }
    }
}

fn table(port: u16) -> String {
    format!("type = \"smtp\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\ntimeout = \"3s\"\n")
}

const RAW: &[u8] = b"From: app@example.com\r\nTo: alice@example.net\r\nSubject: hi\r\n\r\nhello\r\n";

#[tokio::test]
async fn the_envelope_goes_in_one_write_when_the_relay_offers_pipelining() {
    let (port, seen) = relay(true).await;
    let provider = build(&table(port));
    let recipients = vec!["alice@example.net".to_string(), "nobody@example.net".to_string(), "bob@example.net".into()];
    for round in 0..3 {
        let msg = Outbound::new("m-1", "app@example.com", &recipients, RAW);
        let report = send(provider.as_ref(), &msg).await;
        assert_eq!(report.class, OutcomeClass::Accepted, "round {round}: {}", report.detail);
        assert!(matches!(report.recipients[0], RecipientResult::Delivered { .. }), "{:?}", report.recipients);
        assert!(matches!(&report.recipients[1], RecipientResult::Rejected { detail, .. } if detail.contains("550")));
        assert!(matches!(report.recipients[2], RecipientResult::Delivered { .. }));
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.messages, 3, "one message a send, on a reused connection");
    // MAIL, RCPT and RCPT arrive with the rest of the envelope behind them, each send.
    assert!(seen.batched >= 3 * 3, "envelope commands batched: {}", seen.batched);
}

#[tokio::test]
async fn without_pipelining_each_command_waits_for_its_reply() {
    let (port, seen) = relay(false).await;
    let provider = build(&table(port));
    let recipients = vec!["alice@example.net".to_string(), "nobody@example.net".to_string()];
    let msg = Outbound::new("m-2", "app@example.com", &recipients, RAW);
    let report = send(provider.as_ref(), &msg).await;
    assert_eq!(report.class, OutcomeClass::Accepted, "{}", report.detail);
    assert!(matches!(report.recipients[0], RecipientResult::Delivered { .. }));
    assert!(matches!(report.recipients[1], RecipientResult::Rejected { .. }));
    let seen = seen.lock().unwrap();
    assert_eq!((seen.messages, seen.early), (1, 0), "nothing sent before its turn");
}
