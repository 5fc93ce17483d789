//! A demo SMTP sink: stands in for one provider account in `baton demo`. It takes every
//! message (logs one line and forgets it) until it is told its account is suspended; from then
//! on it answers as a suspended account does — `535` to AUTH, `554 5.7.1` to MAIL and at the end
//! of DATA — so Baton sees a real provider-side failure, not an operator's drain. Plain text,
//! loopback only, a few hundred bytes of state: a stand-in, never a relay.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The sink's account, as the provider would see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Account {
    Active,
    Suspended,
}

impl Account {
    pub fn as_str(self) -> &'static str {
        match self {
            Account::Active => "active",
            Account::Suspended => "suspended",
        }
    }
}

/// One sink: its name (the provider's), whether its account is suspended and how many
/// messages it took. Atomics: the control API and every SMTP session read them at once.
#[derive(Debug)]
pub struct Sink {
    pub name: String,
    suspended: AtomicBool,
    taken: AtomicU64,
}

impl Sink {
    pub fn new(name: &str) -> Arc<Sink> {
        Arc::new(Sink { name: name.to_string(), suspended: AtomicBool::new(false), taken: AtomicU64::new(0) })
    }

    pub fn account(&self) -> Account {
        if self.suspended.load(Ordering::SeqCst) { Account::Suspended } else { Account::Active }
    }

    pub fn set_account(&self, account: Account) {
        self.suspended.store(account == Account::Suspended, Ordering::SeqCst);
        tracing::info!(sink = %self.name, account = account.as_str(), "demo sink account changed");
    }

    /// Messages taken since the start.
    pub fn taken(&self) -> u64 {
        self.taken.load(Ordering::SeqCst)
    }
}

/// Serves SMTP on `listener` for `sink`, one task per connection, until the process ends.
pub async fn serve(sink: Arc<Sink>, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let sink = sink.clone();
        tokio::spawn(async move {
            if let Err(e) = session(&sink, stream).await {
                tracing::debug!(sink = %sink.name, error = %e, "demo sink session ended");
            }
        });
    }
}

/// What a command line asks of the session, beyond a one-line reply.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Reply(String),
    /// AUTH: send these `334` prompts, read an answer to each, then reply.
    Auth {
        prompts: &'static [&'static str],
    },
    /// DATA: `354`, read the content up to the lone dot, then reply.
    Data,
    Quit,
}

/// The answer to one command line, given the account: the protocol without the I/O.
fn step(name: &str, account: Account, line: &str) -> Step {
    let mut words = line.split_whitespace();
    let verb = words.next().unwrap_or_default().to_ascii_uppercase();
    let suspended = account == Account::Suspended;
    let reply = |s: &str| Step::Reply(s.to_string());
    match verb.as_str() {
        "EHLO" => Step::Reply(format!("250-{name}\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME")),
        "HELO" => Step::Reply(format!("250 {name}")),
        "AUTH" => {
            let mechanism = words.next().unwrap_or_default().to_ascii_uppercase();
            // RFC 4616 / the LOGIN draft: what the client left out of the command is asked for.
            let given = words.next().is_some();
            match (mechanism.as_str(), given) {
                ("PLAIN", true) => Step::Auth { prompts: &[] },
                ("PLAIN", false) => Step::Auth { prompts: &[""] },
                ("LOGIN", true) => Step::Auth { prompts: &["UGFzc3dvcmQ6"] },
                ("LOGIN", false) => Step::Auth { prompts: &["VXNlcm5hbWU6", "UGFzc3dvcmQ6"] },
                _ => reply("504 5.5.4 Unrecognized authentication type"),
            }
        }
        // The text is what providers say; Baton classifies it as an account failure
        // (src/provider/smtp_classify.rs).
        "MAIL" if suspended => reply("554 5.7.1 Your account has been suspended"),
        "MAIL" => reply("250 2.1.0 Ok"),
        "RCPT" => reply("250 2.1.5 Ok"),
        "DATA" => Step::Data,
        "RSET" | "NOOP" => reply("250 2.0.0 Ok"),
        "QUIT" => Step::Quit,
        _ => reply("502 5.5.2 Command not recognized"),
    }
}

/// The reply once AUTH has its credentials: any login works while the account is active.
fn auth_result(account: Account) -> &'static str {
    match account {
        Account::Active => "235 2.7.0 Authentication successful",
        Account::Suspended => "535 5.7.8 Authentication failed: account suspended",
    }
}

/// The longest message content a sink reads (more ends the session).
const MAX_CONTENT: usize = 64 * 1024 * 1024;

async fn session(sink: &Sink, stream: TcpStream) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut line = String::new();
    let mut recipients = 0usize;
    write.write_all(format!("220 {} demo sink ESMTP\r\n", sink.name).as_bytes()).await?;
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let reply = match step(&sink.name, sink.account(), &line) {
            Step::Reply(r) => {
                recipients = match line.get(..4).map(str::to_ascii_uppercase).as_deref() {
                    Some("RCPT") => recipients + 1,
                    Some("MAIL" | "RSET") => 0,
                    _ => recipients,
                };
                r
            }
            Step::Auth { prompts } => {
                for prompt in prompts {
                    write.write_all(format!("334 {prompt}\r\n").as_bytes()).await?;
                    line.clear();
                    lines.read_line(&mut line).await?;
                }
                auth_result(sink.account()).to_string()
            }
            Step::Data => {
                write.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n").await?;
                let subject = read_content(&mut lines).await?;
                let r = end_of_data(sink, &subject, recipients);
                recipients = 0;
                r
            }
            Step::Quit => {
                write.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
        };
        write.write_all(format!("{reply}\r\n").as_bytes()).await?;
    }
}

/// Reads message content up to the lone dot; returns its Subject (for the log line).
async fn read_content(lines: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> std::io::Result<String> {
    let mut line = String::new();
    let (mut size, mut subject, mut in_header) = (0usize, String::new(), true);
    loop {
        line.clear();
        let n = lines.read_line(&mut line).await?;
        size += n;
        if n == 0 || size > MAX_CONTENT {
            return Err(std::io::Error::other("content ended early or is too large"));
        }
        let text = line.trim_end_matches(['\r', '\n']);
        if text == "." {
            return Ok(subject);
        }
        in_header &= !text.is_empty();
        if in_header && subject.is_empty() && text.to_ascii_lowercase().starts_with("subject:") {
            subject = text["subject:".len()..].trim().to_string();
        }
    }
}

/// The end-of-data reply: the message is taken (and counted) unless the account is suspended.
fn end_of_data(sink: &Sink, subject: &str, recipients: usize) -> String {
    if sink.account() == Account::Suspended {
        return "554 5.7.1 Your account has been suspended".into();
    }
    let n = sink.taken.fetch_add(1, Ordering::SeqCst) + 1;
    let id = format!("{}-{n}", sink.name);
    tracing::info!(sink = %sink.name, queued_as = %id, recipients, subject, "demo sink took a message");
    format!("250 2.0.0 Ok: queued as {id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suspended_account_answers_like_a_provider_and_baton_calls_it_an_account_failure() {
        use crate::outcome::OutcomeClass;
        use crate::provider::smtp_classify::{Stage, classify};
        let Step::Reply(mail) = step("primary", Account::Suspended, "MAIL FROM:<a@example.com>\r\n") else {
            panic!("MAIL is a one-line reply")
        };
        let (code, text) = mail.split_once(' ').unwrap();
        assert_eq!(classify(Stage::Mail, code.parse().unwrap(), text), OutcomeClass::Account);
        let (code, text) = auth_result(Account::Suspended).split_once(' ').unwrap();
        assert_eq!(classify(Stage::Auth, code.parse().unwrap(), text), OutcomeClass::Account);
        assert!(auth_result(Account::Active).starts_with("235 "));
    }

    #[test]
    fn commands_get_the_answers_of_a_plain_relay() {
        let active = |line| step("backup", Account::Active, line);
        assert_eq!(active("EHLO baton\r\n"), Step::Reply("250-backup\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME".into()));
        assert_eq!(active("AUTH PLAIN AGRlbW8AZGVtbw==\r\n"), Step::Auth { prompts: &[] });
        assert_eq!(active("AUTH PLAIN\r\n"), Step::Auth { prompts: &[""] });
        assert_eq!(active("auth login\r\n"), Step::Auth { prompts: &["VXNlcm5hbWU6", "UGFzc3dvcmQ6"] });
        assert_eq!(active("AUTH LOGIN ZGVtbw==\r\n"), Step::Auth { prompts: &["UGFzc3dvcmQ6"] });
        assert_eq!(active("MAIL FROM:<a@example.com>\r\n"), Step::Reply("250 2.1.0 Ok".into()));
        assert_eq!(active("DATA\r\n"), Step::Data);
        assert_eq!(active("QUIT\r\n"), Step::Quit);
        assert_eq!(active("VRFY x\r\n"), Step::Reply("502 5.5.2 Command not recognized".into()));
    }
}
