//! Proves the `MockSmtp` test double works, with lettre as a real client
//! and with raw sockets.

mod support;

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::response::Response;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use support::mock_smtp::{MockSmtp, Stage};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Upper bound for anything that is expected to succeed.
const WAIT: Duration = Duration::from_secs(10);
/// Deadline for things that are expected NOT to happen (hangs).
const SHORT: Duration = Duration::from_millis(300);

// ---- helpers ---------------------------------------------------------------

fn transport(mock: &MockSmtp, creds: Option<(&str, &str)>) -> AsyncSmtpTransport<Tokio1Executor> {
    transport_with(mock, creds, None)
}

fn transport_with(
    mock: &MockSmtp,
    creds: Option<(&str, &str)>,
    mechanism: Option<Mechanism>,
) -> AsyncSmtpTransport<Tokio1Executor> {
    let mut builder =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(mock.host()).port(mock.port()).timeout(Some(WAIT));
    if let Some((user, pass)) = creds {
        builder = builder.credentials(Credentials::new(user.to_owned(), pass.to_owned()));
    }
    if let Some(mechanism) = mechanism {
        builder = builder.authentication(vec![mechanism]);
    }
    builder.build()
}

fn message(to: &[&str], body: &str) -> Message {
    let mut builder = Message::builder()
        .from("Alice <alice@example.com>".parse::<Mailbox>().unwrap())
        .subject("Selftest")
        .message_id(Some("<selftest-1@example.com>".to_owned()));
    for rcpt in to {
        builder = builder.to(rcpt.parse::<Mailbox>().unwrap());
    }
    builder.body(body.to_owned()).unwrap()
}

async fn send(
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    msg: Message,
) -> Result<Response, lettre::transport::smtp::Error> {
    tokio::time::timeout(WAIT, transport.send(msg)).await.expect("lettre send did not finish")
}

/// Minimal raw SMTP client.
struct Raw {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
}

impl Raw {
    async fn connect(mock: &MockSmtp) -> Raw {
        let stream = TcpStream::connect(mock.addr()).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (rd, wr) = stream.into_split();
        Raw { rd: BufReader::new(rd), wr }
    }

    async fn write(&mut self, bytes: &str) {
        self.wr.write_all(bytes.as_bytes()).await.unwrap();
    }

    /// Reads one (possibly multi-line) reply, lines joined with "\n".
    /// Returns None on EOF.
    async fn try_reply(&mut self) -> Option<String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if self.rd.read_line(&mut line).await.unwrap() == 0 {
                return None;
            }
            let line = line.trim_end().to_owned();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return Some(lines.join("\n"));
            }
        }
    }

    async fn reply(&mut self) -> String {
        tokio::time::timeout(WAIT, self.try_reply())
            .await
            .expect("no reply from MockSmtp")
            .expect("MockSmtp closed the connection")
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.write(&format!("{line}\r\n")).await;
        self.reply().await
    }

    /// Asserts the server closes the connection (EOF) promptly.
    async fn expect_eof(&mut self) {
        let mut buf = [0u8; 64];
        let n =
            tokio::time::timeout(WAIT, self.rd.read(&mut buf)).await.expect("connection was not closed").unwrap_or(0);
        assert_eq!(n, 0, "expected EOF, got {:?}", String::from_utf8_lossy(&buf[..n]));
    }
}

fn code(reply: &str) -> &str {
    &reply[..3]
}

// ---- lettre ----------------------------------------------------------------

#[tokio::test]
async fn accepts_plain_message_from_lettre() {
    let mock = MockSmtp::start().await;
    assert_eq!(mock.addr().ip().to_string(), "127.0.0.1");

    let t = transport(&mock, None);
    let resp =
        send(&t, message(&["bob@example.net", "carol@example.org"], "Hello there")).await.expect("send should succeed");
    assert_eq!(u16::from(resp.code()), 250);
    assert!(resp.first_line().unwrap().contains("queued as 1"), "{resp:?}");

    let resp = send(&t, message(&["dave@example.net"], "Second")).await.unwrap();
    assert!(resp.first_line().unwrap().contains("queued as 2"), "{resp:?}");

    let msgs = mock.wait_for_messages(2, WAIT).await;
    assert_eq!(msgs.len(), 2);
    let m = &msgs[0];
    assert_eq!(m.mail_from, "alice@example.com");
    assert_eq!(m.rcpts, vec!["bob@example.net", "carol@example.org"]);
    assert_eq!(m.auth_user, None);
    assert_eq!(m.message_id().as_deref(), Some("<selftest-1@example.com>"));
    assert_eq!(m.header("subject").as_deref(), Some("Selftest"));
    assert_eq!(m.header("X-Missing"), None);
    assert!(m.data_str().contains("\r\n\r\nHello there"), "{:?}", m.data_str());
    assert!(m.body().starts_with("Hello there"));
    assert_eq!(msgs[1].rcpts, vec!["dave@example.net"]);

    assert_eq!(mock.message_count(), 2);
    assert_eq!(mock.connections_accepted(), 2); // lettre without pool: one per send
    assert_eq!(mock.commands_seen("MAIL"), 2);
    assert_eq!(mock.commands_seen("rcpt"), 3);
    assert_eq!(mock.commands_seen("AUTH"), 0);
}

#[tokio::test]
async fn auth_plain_success_and_failure() {
    let mock = MockSmtp::start().await;
    mock.set_credentials(Some(("user", "pass")));

    // Correct credentials.
    let ok = transport_with(&mock, Some(("user", "pass")), Some(Mechanism::Plain));
    send(&ok, message(&["bob@example.net"], "hi")).await.expect("auth ok");
    let msgs = mock.wait_for_messages(1, WAIT).await;
    assert_eq!(msgs[0].auth_user.as_deref(), Some("user"));

    // Wrong password -> 535 5.7.8, permanent.
    let bad = transport_with(&mock, Some(("user", "nope")), Some(Mechanism::Plain));
    let err = send(&bad, message(&["bob@example.net"], "hi")).await.unwrap_err();
    assert!(err.is_permanent(), "{err:?}");
    assert_eq!(err.status().map(u16::from), Some(535));

    // No AUTH at all -> MAIL gets 530.
    let anon = transport(&mock, None);
    let err = send(&anon, message(&["bob@example.net"], "hi")).await.unwrap_err();
    assert_eq!(err.status().map(u16::from), Some(530), "{err:?}");

    // reject_auth: even correct credentials fail.
    mock.reject_auth(true);
    let err = send(&ok, message(&["bob@example.net"], "hi")).await.unwrap_err();
    assert_eq!(err.status().map(u16::from), Some(535), "{err:?}");

    assert_eq!(mock.message_count(), 1);
    assert_eq!(mock.commands_seen("AUTH"), 3);
    assert_eq!(mock.commands_seen("MAIL"), 2); // ok + anon; failed AUTH never reaches MAIL
}

#[tokio::test]
async fn auth_login_with_lettre() {
    let mock = MockSmtp::start().await;
    mock.set_credentials(Some(("login-user", "s3cret")));
    let t = transport_with(&mock, Some(("login-user", "s3cret")), Some(Mechanism::Login));
    send(&t, message(&["bob@example.net"], "hi")).await.expect("AUTH LOGIN");
    assert_eq!(mock.messages()[0].auth_user.as_deref(), Some("login-user"));

    let t = transport_with(&mock, Some(("login-user", "wrong")), Some(Mechanism::Login));
    let err = send(&t, message(&["bob@example.net"], "hi")).await.unwrap_err();
    assert_eq!(err.status().map(u16::from), Some(535), "{err:?}");
}

#[tokio::test]
async fn end_of_data_554_is_permanent_for_lettre() {
    let mock = MockSmtp::start().await;
    mock.set_reply(Stage::EndOfData, Some("554 5.7.1 Your account has been suspended".to_owned()));
    let t = transport(&mock, None);
    let err = send(&t, message(&["bob@example.net"], "hi")).await.unwrap_err();
    assert!(err.is_permanent(), "{err:?}");
    assert_eq!(err.status().map(u16::from), Some(554));
    assert!(err.to_string().contains("suspended"), "{err}");
    assert_eq!(mock.message_count(), 0, "rejected message must not be recorded");
    assert_eq!(mock.commands_seen("DATA"), 1);

    // Back to normal.
    mock.set_behaviour_accept();
    send(&t, message(&["bob@example.net"], "hi")).await.unwrap();
    assert_eq!(mock.message_count(), 1);
}

#[tokio::test]
async fn transient_replies_are_transient_for_lettre() {
    let mock = MockSmtp::start().await;
    let t = transport(&mock, None);

    mock.set_reply(Stage::Mail, Some("451 4.3.0 Temporary local problem".to_owned()));
    let err = send(&t, message(&["bob@example.net"], "hi")).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(mock.commands_seen("RCPT"), 0);

    mock.reset();
    mock.set_reply(Stage::Greeting, Some("421 4.7.0 Try again later".to_owned()));
    let err = send(&t, message(&["bob@example.net"], "hi")).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(mock.commands_seen("MAIL"), 1, "MAIL must not be tried after 421");
    assert_eq!(mock.message_count(), 0);
}

// ---- raw sockets -----------------------------------------------------------

#[tokio::test]
async fn per_recipient_rejection_while_other_accepted() {
    let mock = MockSmtp::start().await;
    mock.reject_recipient("bob@example.net", "550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown");
    let mut c = Raw::connect(&mock).await;
    assert!(c.reply().await.starts_with("220 "));
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(ehlo.starts_with("250-"));
    assert!(!ehlo.contains("AUTH"), "no AUTH without credentials: {ehlo}");
    assert_eq!(code(&c.cmd("MAIL FROM:<alice@example.com>").await), "250");
    assert_eq!(code(&c.cmd("RCPT TO:<carol@example.org>").await), "250");
    assert_eq!(
        c.cmd("RCPT TO:<Bob@Example.NET>").await,
        "550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown"
    );
    assert_eq!(code(&c.cmd("DATA").await), "354");
    c.write("Subject: x\r\n\r\nbody\r\n.\r\n").await;
    assert!(c.reply().await.starts_with("250 2.0.0 Ok: queued as"));
    assert_eq!(code(&c.cmd("QUIT").await), "221");
    c.expect_eof().await;

    let m = &mock.messages()[0];
    assert_eq!(m.rcpts, vec!["carol@example.org"]);
    assert_eq!(m.data, b"Subject: x\r\n\r\nbody\r\n");
}

#[tokio::test]
async fn dot_unstuffing() {
    let mock = MockSmtp::start().await;
    let mut c = Raw::connect(&mock).await;
    c.reply().await;
    c.cmd("HELO client.test").await;
    c.cmd("MAIL FROM:<>").await;
    c.cmd("RCPT TO:<bob@example.net>").await;
    assert_eq!(code(&c.cmd("DATA").await), "354");
    c.write("Subject: dots\r\n\r\n..leading dot\r\n...two dots\r\nmid.dle\r\n..\r\n.\r\n").await;
    assert_eq!(code(&c.reply().await), "250");

    let m = &mock.messages()[0];
    assert_eq!(m.mail_from, "");
    assert_eq!(m.body(), ".leading dot\r\n..two dots\r\nmid.dle\r\n.\r\n");

    // lettre dot-stuffs, the mock unstuffs: round trip is exact.
    let t = transport(&mock, None);
    send(&t, message(&["bob@example.net"], ".hidden line\n.\nend")).await.unwrap();
    let body = mock.messages()[1].body();
    assert_eq!(body, ".hidden line\r\n.\r\nend\r\n");
}

#[tokio::test]
async fn pipelined_commands_in_one_write() {
    let mock = MockSmtp::start().await;
    let mut c = Raw::connect(&mock).await;
    c.reply().await;
    c.write(
        "EHLO client.test\r\nMAIL FROM:<a@example.com> SIZE=100 BODY=8BITMIME\r\nRCPT TO:<b@example.net>\r\nDATA\r\n",
    )
    .await;
    let ehlo = c.reply().await;
    for ext in ["PIPELINING", "8BITMIME", "SIZE", "ENHANCEDSTATUSCODES"] {
        assert!(ehlo.contains(ext), "EHLO lacks {ext}: {ehlo}");
    }
    assert_eq!(code(&c.reply().await), "250");
    assert_eq!(code(&c.reply().await), "250");
    assert_eq!(code(&c.reply().await), "354");
    c.write("Subject: p\r\n\r\npipelined\r\n.\r\nNOOP\r\nQUIT\r\n").await;
    assert_eq!(code(&c.reply().await), "250");
    assert_eq!(code(&c.reply().await), "250");
    assert_eq!(code(&c.reply().await), "221");
    c.expect_eof().await;
    assert_eq!(mock.messages()[0].body(), "pipelined\r\n");
    assert_eq!(mock.commands_seen("NOOP"), 1);
}

#[tokio::test]
async fn partial_lines_are_reassembled() {
    let mock = MockSmtp::start().await;
    let mut c = Raw::connect(&mock).await;
    c.reply().await;
    c.cmd("EHLO client.test").await;
    c.write("MAIL FR").await;
    c.wr.flush().await.unwrap();
    // Nothing is answered until the line is complete.
    assert!(tokio::time::timeout(SHORT, c.try_reply()).await.is_err());
    c.write("OM:<a@example.com>\r\n").await;
    assert_eq!(code(&c.reply().await), "250");
}

#[tokio::test]
async fn hang_at_greeting_times_out_client_and_drop_cleans_up() {
    let mock = MockSmtp::start().await;
    mock.set_hang(Some(Stage::Greeting));
    let mut c = Raw::connect(&mock).await;
    mock.wait_for_connections(1, WAIT).await;
    // The expected outcome is a client-side timeout: no 220 ever arrives.
    let greeting = tokio::time::timeout(SHORT, c.try_reply()).await;
    assert!(greeting.is_err(), "expected a hang, got {greeting:?}");

    // lettre hangs as well. Note: lettre 0.11's async `timeout()` only
    // bounds the TCP connect, not reading the greeting or replies, so the
    // caller has to put its own deadline around `send`.
    let t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(mock.host())
        .port(mock.port())
        .timeout(Some(SHORT))
        .build();
    let sent = tokio::time::timeout(SHORT * 2, t.send(message(&["bob@example.net"], "hi"))).await;
    assert!(sent.is_err(), "expected lettre to hang, got {sent:?}");
    mock.wait_for_connections(2, WAIT).await;
    assert_eq!(mock.commands_seen("EHLO"), 0);

    // Dropping the mock ends the hung connection task: the socket closes.
    drop(mock);
    c.expect_eof().await;
}

#[tokio::test]
async fn hang_at_end_of_data_reads_message_but_never_replies() {
    let mock = MockSmtp::start().await;
    mock.set_hang(Some(Stage::EndOfData));
    let mut c = Raw::connect(&mock).await;
    c.reply().await;
    c.cmd("EHLO client.test").await;
    c.cmd("MAIL FROM:<a@example.com>").await;
    c.cmd("RCPT TO:<b@example.net>").await;
    assert_eq!(code(&c.cmd("DATA").await), "354");
    c.write("Subject: h\r\n\r\nhang\r\n.\r\n").await;
    assert!(tokio::time::timeout(SHORT, c.try_reply()).await.is_err());
    assert_eq!(mock.message_count(), 0);
    mock.set_hang(None); // a hung connection stays hung, new ones are fine
    assert!(tokio::time::timeout(SHORT, c.try_reply()).await.is_err());
    send(&transport(&mock, None), message(&["b@example.net"], "ok")).await.unwrap();
    assert_eq!(mock.message_count(), 1);
}

#[tokio::test]
async fn behaviour_changes_apply_to_open_connections() {
    let mock = MockSmtp::start().await;
    let mut c = Raw::connect(&mock).await;
    c.reply().await;
    c.cmd("EHLO client.test").await;
    c.cmd("MAIL FROM:<a@example.com>").await;
    assert_eq!(code(&c.cmd("RCPT TO:<b@example.net>").await), "250");
    mock.set_reply(Stage::Rcpt, Some("452 4.5.3 Too many recipients".to_owned()));
    assert_eq!(c.cmd("RCPT TO:<c@example.net>").await, "452 4.5.3 Too many recipients");
    mock.set_reply(Stage::Rcpt, None);
    assert_eq!(code(&c.cmd("RCPT TO:<d@example.net>").await), "250");
    mock.set_reply(Stage::Data, Some("451 4.3.0 Temporary local problem".to_owned()));
    assert_eq!(code(&c.cmd("DATA").await), "451");
    assert_eq!(code(&c.cmd("RSET").await), "250");
    // Credentials configured mid-session: MAIL now needs AUTH.
    mock.set_credentials(Some(("u", "p")));
    assert_eq!(code(&c.cmd("MAIL FROM:<a@example.com>").await), "530");
    assert_eq!(code(&c.cmd("AUTH PLAIN").await), "334");
    assert_eq!(code(&c.cmd("AHUAcA==").await), "235"); // "\0u\0p"
    assert_eq!(code(&c.cmd("MAIL FROM:<a@example.com>").await), "250");
    mock.set_reply(Stage::Mail, Some("421 4.7.0 Try again later".to_owned()));
    assert_eq!(code(&c.cmd("RSET").await), "250");
    assert_eq!(c.cmd("MAIL FROM:<a@example.com>").await, "421 4.7.0 Try again later");
    c.expect_eof().await;
}

#[tokio::test]
async fn greeting_554_then_503_until_quit() {
    let mock = MockSmtp::start().await;
    mock.set_reply(Stage::Greeting, Some("554 5.7.1 Go away".to_owned()));
    let mut c = Raw::connect(&mock).await;
    assert_eq!(c.reply().await, "554 5.7.1 Go away");
    assert_eq!(code(&c.cmd("EHLO client.test").await), "503");
    assert_eq!(code(&c.cmd("MAIL FROM:<a@example.com>").await), "503");
    assert_eq!(code(&c.cmd("QUIT").await), "221");
    c.expect_eof().await;
    assert_eq!(mock.commands_seen("MAIL"), 1);
}

#[tokio::test]
async fn auth_login_raw_and_protocol_errors() {
    let mock = MockSmtp::start().await;
    let mut c = Raw::connect(&mock).await;
    c.reply().await;
    assert_eq!(code(&c.cmd("MAIL FROM:<a@example.com>").await), "503"); // no EHLO
    c.cmd("EHLO client.test").await;
    assert_eq!(code(&c.cmd("AUTH PLAIN AHUAcA==").await), "503"); // not enabled
    assert_eq!(code(&c.cmd("RCPT TO:<b@example.net>").await), "503"); // no MAIL
    assert_eq!(code(&c.cmd("DATA").await), "503");
    assert_eq!(code(&c.cmd("STARTTLS").await), "502");

    mock.set_credentials(Some(("user", "pass")));
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(ehlo.contains("250 AUTH PLAIN LOGIN"), "{ehlo}");
    assert_eq!(c.cmd("AUTH LOGIN").await, "334 VXNlcm5hbWU6");
    assert_eq!(c.cmd("dXNlcg==").await, "334 UGFzc3dvcmQ6");
    assert_eq!(c.cmd("d3Jvbmc=").await, "535 5.7.8 Authentication credentials invalid");
    assert_eq!(c.cmd("AUTH LOGIN").await, "334 VXNlcm5hbWU6");
    assert_eq!(code(&c.cmd("*").await), "501");
    assert_eq!(c.cmd("AUTH LOGIN dXNlcg==").await, "334 UGFzc3dvcmQ6");
    assert_eq!(code(&c.cmd("cGFzcw==").await), "235");
    c.cmd("MAIL FROM:<a@example.com>").await;
    c.cmd("RCPT TO:<b@example.net>").await;
    c.cmd("DATA").await;
    c.write("x\r\n.\r\n").await;
    c.reply().await;
    assert_eq!(mock.messages()[0].auth_user.as_deref(), Some("user"));
}

#[tokio::test]
async fn disconnect_mid_session_is_harmless() {
    let mock = MockSmtp::start().await;
    {
        let mut c = Raw::connect(&mock).await;
        c.reply().await;
        c.cmd("EHLO client.test").await;
        c.cmd("MAIL FROM:<a@example.com>").await;
        c.cmd("RCPT TO:<b@example.net>").await;
        c.cmd("DATA").await;
        c.write("Subject: cut\r\n\r\nhalf a mess").await;
    } // dropped mid-DATA
    {
        let mut c = Raw::connect(&mock).await;
        c.reply().await;
        c.write("EHLO cli").await; // dropped mid-line
    }
    send(&transport(&mock, None), message(&["b@example.net"], "ok")).await.unwrap();
    let msgs = mock.wait_for_messages(1, WAIT).await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].body(), "ok\r\n"); // lettre ends the body with CRLF
    assert_eq!(mock.connections_accepted(), 3);
}

#[tokio::test]
async fn size_limit_is_enforced() {
    let mock = MockSmtp::start().await;
    mock.set_max_message_size(100);
    let mut c = Raw::connect(&mock).await;
    c.reply().await;
    assert!(c.cmd("EHLO client.test").await.contains("SIZE 100"));
    assert_eq!(code(&c.cmd("MAIL FROM:<a@example.com> SIZE=500").await), "552");
    let t = transport(&mock, None);
    let err = send(&t, message(&["b@example.net"], &"x".repeat(200))).await.unwrap_err();
    assert_eq!(err.status().map(u16::from), Some(552), "{err:?}");
    assert_eq!(mock.message_count(), 0);
}

#[tokio::test]
#[should_panic(expected = "timed out")]
async fn wait_for_messages_panics_after_deadline() {
    let mock = MockSmtp::start().await;
    mock.wait_for_messages(1, Duration::from_millis(50)).await;
}

#[tokio::test]
async fn wait_for_messages_wakes_on_arrival() {
    let mock = MockSmtp::start().await;
    let t = transport(&mock, None);
    let sender = tokio::spawn(async move { t.send(message(&["b@example.net"], "late")).await });
    let msgs = mock.wait_for_messages(1, WAIT).await;
    assert_eq!(msgs[0].body(), "late\r\n");
    sender.await.unwrap().unwrap();
    mock.wait_for_commands("QUIT", 1, WAIT).await;
}
