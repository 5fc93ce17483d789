//! SMTP submission (issue 3) over real sockets: lettre as a client (STARTTLS, smtps, AUTH PLAIN
//! and LOGIN), and a raw client for pipelining, dot-stuffing, line endings, limits and every
//! refusal code.

mod support;

use base64::Engine;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::baton::{Baton, DEADLINE, KEY};
use support::certs::TestCert;
use support::mock_smtp::MockSmtp;
use support::smtp_reply::{Reply, read_reply};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const PASSWORD: &str = "correct horse battery staple";
const SMTP: &str = "smtp_listen = \"127.0.0.1:0\"";

/// Client "app" logs in as `app`; client "other" as `other` and may only send from example.org.
fn clients(app_extra: &str) -> String {
    format!(
        r#"
[[clients]]
name = "app"
api_keys = ["{KEY}"]
allowed_senders = ["*@example.com"]
smtp_users = [{{ username = "app", password = "{PASSWORD}" }}]
{app_extra}

[[clients]]
name = "other"
allowed_senders = ["*@example.org"]
smtp_users = [{{ username = "other", password = "other-password" }}]
"#
    )
}

fn outbox_route(out: &Path) -> String {
    format!(
        "\n[providers.outbox]\ntype = \"file\"\ndir = \"{}\"\n\n[[routes]]\nname = \"default\"\nproviders = [\"outbox\"]\n",
        out.display()
    )
}

/// A Baton delivering into a file outbox.
struct Setup {
    baton: Baton,
    out: tempfile::TempDir,
}

impl Setup {
    async fn start(server_extra: &str, spool_extra: &str, clients: &str) -> Setup {
        let out = tempfile::tempdir().unwrap();
        let body = format!("{clients}\n{}", outbox_route(out.path()));
        let baton = Baton::start_with_server(server_extra, spool_extra, &body).await;
        Setup { baton, out }
    }

    async fn plain() -> Setup {
        Setup::start(SMTP, "", &clients("")).await
    }

    fn smtp(&self) -> SocketAddr {
        self.baton.smtp_addr()
    }

    /// The delivered `.eml` (the file provider puts Return-Path and envelope lines first).
    async fn delivered(&self, id: &str) -> String {
        let status = self.baton.wait_final(id).await;
        assert_eq!(status["status"], "delivered", "{status}");
        std::fs::read_to_string(self.out.path().join(format!("{id}.eml"))).unwrap()
    }

    async fn rejections(&self, reason: &str) -> f64 {
        let m = self.baton.metrics().await;
        Baton::metric(&m, "baton_ingest_rejections_total", &[("ingress", "smtp"), ("reason", reason)])
    }
}

/// The message as sent by the client: what follows Baton's Received: header in the .eml, and
/// the Date: and Message-ID: Baton adds below it to a message without them (as these tests'
/// messages are; tests/smtp_hardening.rs checks the fields themselves).
fn after_received(eml: &str) -> &str {
    let start = eml.find("Received: ").expect("Received: header");
    let rest = &eml[start..];
    // The header is folded over lines starting with a tab.
    let mut end = 0;
    for (i, line) in rest.split_inclusive("\r\n").enumerate() {
        if i > 0 && !line.starts_with('\t') {
            break;
        }
        end += line.len();
    }
    let mut rest = &rest[end..];
    for added in ["Date: ", "Message-ID: <"] {
        let line = rest.strip_prefix(added).unwrap_or_else(|| panic!("Baton's {added:?} expected: {eml}"));
        rest = &line[line.find("\r\n").expect("a whole line") + 2..];
    }
    rest
}

// ---- a raw SMTP client --------------------------------------------------------------------

trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

struct Raw {
    stream: BufReader<Box<dyn Conn>>,
}

impl Raw {
    /// Connects without reading the greeting.
    async fn open(addr: SocketAddr) -> Raw {
        let tcp = tokio::time::timeout(DEADLINE, TcpStream::connect(addr)).await.expect("connect in time").unwrap();
        Raw { stream: BufReader::new(Box::new(tcp)) }
    }

    /// Connects and reads the `220` greeting.
    async fn connect(addr: SocketAddr) -> Raw {
        let mut raw = Raw::open(addr).await;
        let greeting = raw.reply().await;
        assert_eq!(greeting.code, 220, "{greeting:?}");
        raw
    }

    /// Connects to smtps: TLS first, then the greeting.
    async fn connect_tls(addr: SocketAddr, ca_pem: &str) -> Raw {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = tls_connect(Box::new(tcp), ca_pem).await;
        let mut raw = Raw { stream: BufReader::new(tls) };
        assert_eq!(raw.reply().await.code, 220);
        raw
    }

    async fn send(&mut self, bytes: &str) {
        self.stream.get_mut().write_all(bytes.as_bytes()).await.unwrap();
        self.stream.get_mut().flush().await.unwrap();
    }

    async fn reply(&mut self) -> Reply {
        read_reply(&mut self.stream).await
    }

    async fn cmd(&mut self, line: &str) -> Reply {
        self.send(&format!("{line}\r\n")).await;
        self.reply().await
    }

    /// Sends a command and asserts the reply starts with `want` (code and enhanced code).
    async fn expect(&mut self, line: &str, want: &str) -> Reply {
        let r = self.cmd(line).await;
        assert!(r.last().starts_with(want), "{line:?}: expected {want:?}, got {r:?}");
        r
    }

    async fn expect_reply(&mut self, want: &str) -> Reply {
        let r = self.reply().await;
        assert!(r.last().starts_with(want), "expected {want:?}, got {r:?}");
        r
    }

    async fn auth_plain(&mut self, user: &str, password: &str) -> Reply {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        self.cmd(&format!("AUTH PLAIN {token}")).await
    }

    /// MAIL, RCPT, DATA and `body` (dot-stuffed, CRLF-terminated); returns the queued id.
    async fn send_message(&mut self, from: &str, to: &str, body: &str) -> String {
        self.expect(&format!("MAIL FROM:<{from}>"), "250 2.1.0").await;
        self.expect(&format!("RCPT TO:<{to}>"), "250 2.1.5").await;
        self.expect("DATA", "354").await;
        self.send(&format!("{body}.\r\n")).await;
        queued_id(&self.expect_reply("250 2.0.0 Ok: queued as ").await)
    }

    /// Waits for the server to close the connection (after any replies still to read).
    async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match tokio::time::timeout(DEADLINE, self.stream.read_to_end(&mut rest)).await {
            Ok(Ok(_)) => rest.is_empty(),
            Ok(Err(_)) => true, // reset
            Err(_) => false,
        }
    }

    async fn starttls(self, ca_pem: &str) -> Raw {
        assert!(self.stream.buffer().is_empty(), "no input may be pending at STARTTLS");
        let tls = tls_connect(self.stream.into_inner(), ca_pem).await;
        Raw { stream: BufReader::new(tls) }
    }
}

fn queued_id(r: &Reply) -> String {
    r.last().rsplit(' ').next().unwrap().to_string()
}

async fn tls_connect(inner: Box<dyn Conn>, ca_pem: &str) -> Box<dyn Conn> {
    use rustls_pki_types::pem::PemObject;
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap()).unwrap();
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    Box::new(tokio::time::timeout(DEADLINE, connector.connect(name, inner)).await.expect("handshake in time").unwrap())
}

// ---- lettre as the client -----------------------------------------------------------------

fn email(subject: &str) -> lettre::Message {
    lettre::Message::builder()
        .from("App <app@example.com>".parse().unwrap())
        .to("alice@example.net".parse().unwrap())
        .subject(subject)
        .body(String::from("Hello over SMTP\r\n.a line with a leading dot\r\n"))
        .unwrap()
}

fn lettre_client(addr: SocketAddr, tls: Tls, mechanism: Mechanism) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(addr.ip().to_string())
        .port(addr.port())
        .hello_name(ClientId::Domain("client.test".into()))
        .tls(tls)
        .credentials(Credentials::new("app".into(), PASSWORD.into()))
        .authentication(vec![mechanism])
        .timeout(Some(DEADLINE))
        .build()
}

fn tls_parameters(cert: &TestCert) -> TlsParameters {
    TlsParameters::builder("localhost".into())
        .add_root_certificate(Certificate::from_pem(cert.ca_pem.as_bytes()).unwrap())
        .build_rustls()
        .unwrap()
}

fn id_from(response: &lettre::transport::smtp::response::Response) -> String {
    let line = response.message().last().expect("reply text").to_string();
    assert!(line.contains("queued as"), "{line}");
    line.rsplit(' ').next().unwrap().to_string()
}

#[tokio::test]
async fn lettre_starttls_with_auth_plain_and_login() {
    let cert = TestCert::generate();
    let setup = Setup::start(&format!("{SMTP}\n{}", cert.server_tls_line()), "", &clients("")).await;
    for mechanism in [Mechanism::Plain, Mechanism::Login] {
        let client = lettre_client(setup.smtp(), Tls::Required(tls_parameters(&cert)), mechanism);
        let response = client.send(email(&format!("via {mechanism}"))).await.expect("lettre sends");
        assert_eq!(response.code().to_string(), "250");
        let id = id_from(&response);
        let eml = setup.delivered(&id).await;
        assert!(eml.contains(&format!("with ESMTPSA id {id}")), "{eml}");
        assert!(
            eml.contains("Received: from client.test ([127.0.0.1])\r\n\tby baton.test (Baton) (using TLSv1.3"),
            "{eml}"
        );
        assert!(eml.contains("\r\n\tfor <alice@example.net>;"), "{eml}");
        assert!(eml.contains(&format!("Subject: via {mechanism}")));
        assert!(eml.contains("\r\n.a line with a leading dot\r\n"), "dot-unstuffed: {eml}");
    }
    // A wrong password is refused, and nothing is queued.
    let bad = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(setup.smtp().port())
        .tls(Tls::Required(tls_parameters(&cert)))
        .credentials(Credentials::new("app".into(), "wrong".into()))
        .timeout(Some(DEADLINE))
        .build();
    let err = bad.send(email("bad")).await.expect_err("bad password refused");
    assert!(err.to_string().contains("535"), "{err}");
}

#[tokio::test]
async fn lettre_implicit_tls_on_smtps() {
    let cert = TestCert::generate();
    let server = format!("{SMTP}\nsmtps_listen = \"127.0.0.1:0\"\n{}", cert.server_tls_line());
    let setup = Setup::start(&server, "", &clients("")).await;
    let client = lettre_client(setup.baton.smtps_addr(), Tls::Wrapper(tls_parameters(&cert)), Mechanism::Plain);
    let response = client.send(email("smtps")).await.expect("lettre sends over smtps");
    let eml = setup.delivered(&id_from(&response)).await;
    assert!(eml.contains(" with ESMTPSA id "), "{eml}");
}

#[tokio::test]
async fn end_to_end_through_a_mock_provider_with_status_api_and_metrics() {
    let mock = MockSmtp::start().await;
    let body = format!(
        "{}\n{}\n[[routes]]\nname = \"default\"\nproviders = [\"mock\"]\n",
        clients(""),
        support::baton::smtp_provider("mock", &mock, "")
    );
    let baton = Baton::start_with_server(SMTP, "", &body).await;
    // No [server.tls]: AUTH is offered on loopback in plain text.
    let client = lettre_client(baton.smtp_addr(), Tls::None, Mechanism::Login);
    let response = client.send(email("end to end")).await.expect("sent");
    let id = id_from(&response);

    let status = baton.wait_final(&id).await;
    assert_eq!(status["status"], "delivered", "{status}");
    assert_eq!(status["recipients"][0]["email"], "alice@example.net");
    let got = mock.wait_for_messages(1, DEADLINE).await;
    assert_eq!(got[0].mail_from, "app@example.com");
    assert_eq!(got[0].rcpts, vec!["alice@example.net".to_string()]);
    let data = got[0].data_str();
    assert!(data.starts_with("Received: from client.test ([127.0.0.1])"), "{data}");
    assert!(data.contains(&format!("with ESMTPA id {id}")), "{data}");

    let m = baton.metrics().await;
    assert_eq!(Baton::metric(&m, "baton_messages_received_total", &[("ingress", "smtp"), ("client", "app")]), 1.0);
    // Another client's key does not see it.
    let (code, _) = baton.status_as(support::baton::OTHER_KEY, &id).await;
    assert_eq!(code, 401, "\"other\" has no API key in this config");
}

// ---- protocol ----------------------------------------------------------------------------

#[tokio::test]
async fn ehlo_advertises_extensions_and_simple_commands_answer() {
    let setup = Setup::plain().await;
    let mut c = Raw::connect(setup.smtp()).await;
    let ehlo = c.expect("EHLO client.test", "250 ").await;
    for ext in
        ["PIPELINING", "SIZE 26214400", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING", "AUTH PLAIN LOGIN"]
    {
        assert!(ehlo.has(ext), "{ext} missing: {ehlo:?}");
    }
    assert!(!ehlo.has("STARTTLS"), "no certificate, no STARTTLS: {ehlo:?}");
    c.expect("NOOP", "250 2.0.0").await;
    c.expect("VRFY alice@example.net", "252 2.5.0").await;
    c.expect("RSET", "250 2.0.0").await;
    c.expect("HELO client.test", "250 baton.test").await;
    c.expect("QUIT", "221 2.0.0").await;
    assert!(c.closed().await);
}

#[tokio::test]
async fn pipelined_commands_get_their_replies_in_order() {
    let setup = Setup::plain().await;
    let mut c = Raw::connect(setup.smtp()).await;
    // Everything up to DATA in one write, as a PIPELINING client does.
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0app\0{PASSWORD}"));
    c.send(&format!(
        "EHLO client.test\r\nAUTH PLAIN {token}\r\nMAIL FROM:<app@example.com> SIZE=100\r\nRCPT TO:<a@example.net>\r\nRCPT TO:<bad>\r\nRCPT TO:<b@example.net>\r\nRCPT TO:<A@example.net>\r\nDATA\r\n"
    ))
    .await;
    c.expect_reply("250 ").await;
    c.expect_reply("235 2.7.0").await;
    c.expect_reply("250 2.1.0").await;
    c.expect_reply("250 2.1.5").await;
    c.expect_reply("501 5.1.3").await;
    c.expect_reply("250 2.1.5").await;
    c.expect_reply("250 2.1.5").await; // a duplicate (case-insensitive) is accepted once
    c.expect_reply("354").await;
    // The body and the next transaction in one write too.
    c.send("Subject: p\r\n\r\none\r\n.\r\nMAIL FROM:<app@example.com>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n").await;
    let first = queued_id(&c.expect_reply("250 2.0.0 Ok: queued as").await);
    c.expect_reply("250 2.1.0").await;
    c.expect_reply("250 2.1.5").await;
    c.expect_reply("354").await;
    c.send("Subject: q\r\n\r\ntwo\r\n.\r\nQUIT\r\n").await;
    let second = queued_id(&c.expect_reply("250 2.0.0 Ok: queued as").await);
    c.expect_reply("221").await;
    let status = setup.baton.wait_final(&first).await;
    let rcpts: Vec<&str> =
        status["recipients"].as_array().unwrap().iter().map(|r| r["email"].as_str().unwrap()).collect();
    assert_eq!(rcpts, ["a@example.net", "b@example.net"]);
    assert!(setup.delivered(&second).await.ends_with("Subject: q\r\n\r\ntwo\r\n"));
}

#[tokio::test]
async fn dot_stuffing_is_undone_and_bytes_are_kept() {
    let setup = Setup::plain().await;
    let mut c = Raw::connect(setup.smtp()).await;
    c.expect("EHLO client.test", "250").await;
    c.expect(&format!("AUTH LOGIN {}", base64::engine::general_purpose::STANDARD.encode("app")), "334 UGFzc3dvcmQ6")
        .await;
    c.expect(&base64::engine::general_purpose::STANDARD.encode(PASSWORD), "235 2.7.0").await;
    let sent =
        "From: app@example.com\r\nSubject: dots\r\nX-Odd:   spacing kept  \r\n\r\n..\r\n...two\r\n.x\r\nend . \r\n";
    let id = c.send_message("app@example.com", "z@example.net", sent).await;
    let eml = setup.delivered(&id).await;
    assert_eq!(
        after_received(&eml),
        "From: app@example.com\r\nSubject: dots\r\nX-Odd:   spacing kept  \r\n\r\n.\r\n..two\r\nx\r\nend . \r\n"
    );
}

/// Bare LF, the Postfix 3.9 default way (`smtpd_forbid_bare_newline = normalize`): only
/// CRLF.CRLF ends DATA, so `\n.\n` cannot smuggle a second message; a bare LF is taken as a
/// line end (dot-unstuffing included) and stored as CRLF.
#[tokio::test]
async fn bare_lf_is_normalised_and_cannot_end_data() {
    let setup = Setup::plain().await;
    let mut c = Raw::connect(setup.smtp()).await;
    // Commands may end in a bare LF.
    c.send("EHLO client.test\n").await;
    c.expect_reply("250 ").await;
    assert_eq!(c.auth_plain("app", PASSWORD).await.code, 235);
    c.expect("MAIL FROM:<app@example.com>", "250").await;
    c.expect("RCPT TO:<a@example.net>", "250").await;
    c.expect("DATA", "354").await;
    c.send("Subject: lf\n\nline one\n..stuffed\n.\nMAIL FROM:<app@example.com>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\nsmuggled\n.\r\nlast\r\n.\r\n")
        .await;
    let id = queued_id(&c.expect_reply("250 2.0.0 Ok: queued as").await);
    c.expect("NOOP", "250 2.0.0").await; // nothing else was taken as a command
    let eml = setup.delivered(&id).await;
    assert_eq!(
        after_received(&eml),
        "Subject: lf\r\n\r\nline one\r\n.stuffed\r\n\r\nMAIL FROM:<app@example.com>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\nsmuggled\r\n\r\nlast\r\n"
    );
    let m = setup.baton.metrics().await;
    assert_eq!(Baton::metric(&m, "baton_messages_received_total", &[("ingress", "smtp")]), 1.0);
}

#[tokio::test]
async fn chunking_with_bdat() {
    let setup = Setup::start(SMTP, "", &clients("")).await;
    let mut c = Raw::connect(setup.smtp()).await;
    c.expect("EHLO client.test", "250").await;
    c.auth_plain("app", PASSWORD).await;
    c.expect("MAIL FROM:<app@example.com>", "250").await;
    c.expect("RCPT TO:<a@example.net>", "250").await;
    let part1 = "Subject: bdat\r\n\r\n";
    let part2 = ".no stuffing\r\nend\r\n";
    c.send(&format!("BDAT {}\r\n{part1}", part1.len())).await;
    c.expect_reply(&format!("250 2.0.0 {} octets", part1.len())).await;
    c.send(&format!("BDAT {} LAST\r\n{part2}", part2.len())).await;
    let id = queued_id(&c.expect_reply("250 2.0.0 Ok: queued as").await);
    assert_eq!(after_received(&setup.delivered(&id).await), format!("{part1}{part2}"));
    // BDAT without a transaction: refused, and its octets are still read (the session stays in step).
    c.send("BDAT 6 LAST\r\nNOOP\r\n").await;
    c.expect_reply("503 5.5.1").await;
    c.expect("NOOP", "250").await;
}

#[tokio::test]
async fn line_too_long_is_refused_and_the_session_continues() {
    let setup =
        Setup::start(&format!("{SMTP}\n"), "", &format!("[smtp]\nmax_line_length = 512\n{}", clients(""))).await;
    let mut c = Raw::connect(setup.smtp()).await;
    c.expect(&format!("NOOP {}", "x".repeat(2000)), "500 5.5.2").await;
    c.expect("NOOP", "250 2.0.0").await;
    c.expect("EHLO client.test", "250").await;
}

#[tokio::test]
async fn too_big_by_size_parameter_and_by_data() {
    let setup = Setup::start(&format!("{SMTP}\nmax_message_size = 2048"), "", &clients("")).await;
    let mut c = Raw::connect(setup.smtp()).await;
    let ehlo = c.expect("EHLO client.test", "250").await;
    assert!(ehlo.has("SIZE 2048"), "{ehlo:?}");
    c.auth_plain("app", PASSWORD).await;
    c.expect("MAIL FROM:<app@example.com> SIZE=4096", "552 5.3.4").await;
    // No SIZE= given: found out while reading, the rest is read and thrown away.
    c.expect("MAIL FROM:<app@example.com>", "250").await;
    c.expect("RCPT TO:<a@example.net>", "250").await;
    c.expect("DATA", "354").await;
    let line = format!("{}\r\n", "y".repeat(98));
    for _ in 0..200 {
        c.send(&line).await;
    }
    c.send(".\r\n").await;
    c.expect_reply("552 5.3.4").await;
    // By BDAT too.
    c.expect("MAIL FROM:<app@example.com>", "250").await;
    c.expect("RCPT TO:<a@example.net>", "250").await;
    c.send(&format!("BDAT 3000 LAST\r\n{}", "z".repeat(3000))).await;
    c.expect_reply("552 5.3.4").await;
    // Still in step: a small message goes through.
    let id = c.send_message("app@example.com", "a@example.net", "Subject: small\r\n\r\nok\r\n").await;
    setup.delivered(&id).await;
    assert_eq!(setup.rejections("too_large").await, 3.0);
}

#[tokio::test]
async fn refusal_codes() {
    let setup =
        Setup::start(&format!("{SMTP}\nmax_recipients = 2"), "", &format!("[smtp]\nmax_errors = 100\n{}", clients("")))
            .await;
    let mut c = Raw::connect(setup.smtp()).await;
    // Sequence and syntax.
    c.expect("MAIL FROM:<app@example.com>", "503 5.5.1").await;
    c.expect("EHLO client.test", "250").await;
    c.expect("RCPT TO:<a@example.net>", "503 5.5.1").await;
    c.expect("DATA", "503 5.5.1").await;
    c.expect("FOO bar", "500 5.5.2").await;
    c.expect("MAIL FROM: app@example.com", "501 5.5.4").await;
    c.expect("EXPN staff", "502 5.5.1").await;
    c.expect("AUTH CRAM-MD5", "504 5.5.4").await;
    // Not authenticated, loopback is not an allowed network: a relay attempt.
    c.expect("MAIL FROM:<app@example.com>", "530 5.7.0 Authentication required").await;
    // Bad credentials, by PLAIN (challenge form) and LOGIN.
    c.expect("AUTH PLAIN", "334").await;
    let bad = base64::engine::general_purpose::STANDARD.encode("\0app\0nope");
    c.expect(&bad, "535 5.7.8").await;
    c.expect("AUTH LOGIN", "334 VXNlcm5hbWU6").await;
    c.expect("*", "501 5.7.0").await;
    assert_eq!(c.auth_plain("app", PASSWORD).await.code, 235);
    c.expect("AUTH LOGIN", "503 5.5.1").await;
    // Senders: not this client's, and the null sender.
    c.expect("MAIL FROM:<app@example.org>", "550 5.7.1").await;
    c.expect("MAIL FROM:<>", "550 5.7.1").await;
    c.expect("MAIL FROM:<jörg@example.com>", "553 5.6.7").await;
    // Recipients over server.max_recipients.
    c.expect("MAIL FROM:<app@example.com>", "250 2.1.0").await;
    c.expect("MAIL FROM:<app@example.com>", "503 5.5.1").await;
    c.expect("RCPT TO:<one@example.net>", "250").await;
    c.expect("RCPT TO:<two@example.net>", "250").await;
    c.expect("RCPT TO:<three@example.net>", "452 4.5.3").await;
    c.expect("RSET", "250").await;
    c.expect("MAIL FROM:<app@example.com>", "250").await;
    c.expect("DATA", "554 5.5.1").await;
    c.expect("RSET", "250").await;
    // SMTPUTF8 addresses with the parameter.
    c.expect("MAIL FROM:<jörg@example.com> SMTPUTF8", "250 2.1.0").await;
    c.expect("RCPT TO:<zoë@example.net>", "250 2.1.5").await;
    c.expect("RSET", "250").await;

    assert_eq!(setup.rejections("auth").await, 2.0, "530 and 535");
    assert_eq!(setup.rejections("sender_not_allowed").await, 1.0);
    assert_eq!(setup.rejections("null_sender").await, 1.0);
    assert_eq!(setup.rejections("invalid").await, 1.0, "too many recipients");
}

#[tokio::test]
async fn spool_full_is_a_temporary_refusal() {
    let setup = Setup::start(SMTP, "max_bytes = 64", &clients("")).await;
    let mut c = Raw::connect(setup.smtp()).await;
    c.expect("EHLO client.test", "250").await;
    c.auth_plain("app", PASSWORD).await;
    c.expect("MAIL FROM:<app@example.com>", "250").await;
    c.expect("RCPT TO:<a@example.net>", "250").await;
    c.expect("DATA", "354").await;
    c.send("Subject: too much for a 64-byte spool\r\n\r\nhello\r\n.\r\n").await;
    c.expect_reply("452 4.3.1").await;
    c.expect("NOOP", "250").await;
    assert_eq!(setup.rejections("spool_full").await, 1.0);
}

#[tokio::test]
async fn starttls_is_required_before_auth_when_a_certificate_is_configured() {
    let cert = TestCert::generate();
    let setup = Setup::start(&format!("{SMTP}\n{}", cert.server_tls_line()), "", &clients("")).await;
    let mut c = Raw::connect(setup.smtp()).await;
    let ehlo = c.expect("EHLO client.test", "250").await;
    assert!(ehlo.has("STARTTLS"), "{ehlo:?}");
    assert!(!ehlo.lines.iter().any(|l| l.contains("AUTH")), "no AUTH before TLS: {ehlo:?}");
    c.expect("AUTH PLAIN AGFwcABwdw==", "538 5.7.11").await;
    c.expect("MAIL FROM:<app@example.com>", "530 5.7.0 Must issue a STARTTLS command first").await;
    c.expect("STARTTLS", "220 2.0.0").await;
    let mut c = c.starttls(&cert.ca_pem).await;
    c.expect("MAIL FROM:<app@example.com>", "503 5.5.1").await; // EHLO again after TLS
    let ehlo = c.expect("EHLO client.test", "250").await;
    assert!(ehlo.has("AUTH PLAIN LOGIN") && !ehlo.has("STARTTLS"), "{ehlo:?}");
    c.expect("STARTTLS", "503 5.5.1").await;
    assert_eq!(c.auth_plain("app", PASSWORD).await.code, 235);
    let id = c.send_message("app@example.com", "a@example.net", "Subject: tls\r\n\r\nhi\r\n").await;
    assert!(setup.delivered(&id).await.contains(" with ESMTPSA id "));

    // Plain text pipelined after STARTTLS is dropped, not run as if it came over TLS.
    let mut c = Raw::connect(setup.smtp()).await;
    c.expect("EHLO client.test", "250").await;
    c.send("STARTTLS\r\nRSET\r\n").await;
    c.expect_reply("220 2.0.0").await;
    let mut c = c.starttls(&cert.ca_pem).await;
    c.expect("NOOP", "250 2.0.0").await; // the first reply over TLS is NOOP's, not RSET's
}

#[tokio::test]
async fn implicit_tls_raw_session() {
    let cert = TestCert::generate();
    let server = format!("{SMTP}\nsmtps_listen = \"127.0.0.1:0\"\n{}", cert.server_tls_line());
    let setup = Setup::start(&server, "", &clients("")).await;
    let mut c = Raw::connect_tls(setup.baton.smtps_addr(), &cert.ca_pem).await;
    let ehlo = c.expect("EHLO client.test", "250").await;
    assert!(ehlo.has("AUTH PLAIN LOGIN") && !ehlo.has("STARTTLS"), "{ehlo:?}");
    c.auth_plain("app", PASSWORD).await;
    let id = c.send_message("app@example.com", "a@example.net", "Subject: smtps\r\n\r\nhi\r\n").await;
    setup.delivered(&id).await;
}

#[tokio::test]
async fn allowed_networks_need_no_auth_but_are_sender_checked() {
    let setup = Setup::start(SMTP, "", &clients("allowed_networks = [\"127.0.0.0/8\"]")).await;
    let mut c = Raw::connect(setup.smtp()).await;
    c.expect("EHLO client.test", "250").await;
    c.expect("MAIL FROM:<someone@example.org>", "550 5.7.1").await;
    let id = c.send_message("cron@example.com", "ops@example.net", "Subject: nightly\r\n\r\nok\r\n").await;
    let eml = setup.delivered(&id).await;
    assert!(eml.contains(" with ESMTP id "), "not authenticated: {eml}");
    let status = setup.baton.status(&id).await; // client "app"'s API key sees it
    assert_eq!(status["id"], id.as_str());
}

#[tokio::test]
async fn unauthenticated_relay_from_a_network_no_client_owns() {
    // "app" owns 10.0.0.0/8 only; the test connects from 127.0.0.1 (and TLS is configured, so
    // there is no plain-text loopback AUTH either).
    let cert = TestCert::generate();
    let setup = Setup::start(
        &format!("{SMTP}\n{}", cert.server_tls_line()),
        "",
        &format!("[smtp]\nmax_errors = 3\n{}", clients("allowed_networks = [\"10.0.0.0/8\"]")),
    )
    .await;
    let mut c = Raw::connect(setup.smtp()).await;
    c.expect("EHLO relay-probe.test", "250").await;
    c.expect("MAIL FROM:<app@example.com>", "530 5.7.0").await;
    c.expect("MAIL FROM:<anyone@example.org>", "530 5.7.0").await;
    let last = c.cmd("MAIL FROM:<x@example.net>").await;
    assert!(last.last().starts_with("530 5.7.0"), "{last:?}");
    // The third error ends the session.
    c.expect_reply("421 4.7.0").await;
    assert!(c.closed().await);
    assert_eq!(setup.rejections("auth").await, 3.0);
}

#[tokio::test]
async fn auth_brute_force_is_slowed_and_cut_off() {
    let setup = Setup::start(
        SMTP,
        "",
        &format!("[smtp]\nmax_auth_failures = 3\nauth_failure_delay = \"300ms\"\n{}", clients("")),
    )
    .await;
    let mut c = Raw::connect(setup.smtp()).await;
    c.expect("EHLO client.test", "250").await;
    for attempt in 1..=3 {
        let started = Instant::now();
        let r = c.auth_plain("app", &format!("guess-{attempt}")).await;
        assert!(started.elapsed() >= Duration::from_millis(300), "answered too fast: {:?}", started.elapsed());
        assert!(r.last().starts_with("535 5.7.8"), "{r:?}");
    }
    c.expect_reply("421 4.7.0").await;
    assert!(c.closed().await);
    // The right password still works on a new connection.
    let mut c = Raw::connect(setup.smtp()).await;
    c.expect("EHLO client.test", "250").await;
    assert_eq!(c.auth_plain("app", PASSWORD).await.code, 235);
}

#[tokio::test]
async fn idle_sessions_are_closed() {
    let setup = Setup::start(SMTP, "", &format!("[smtp]\nidle_timeout = \"1s\"\n{}", clients(""))).await;
    let mut c = Raw::connect(setup.smtp()).await;
    c.expect("EHLO client.test", "250").await;
    let started = Instant::now();
    c.expect_reply("421 4.4.2").await; // sent by the server on its own after the idle timeout
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(c.closed().await);
}

#[tokio::test]
async fn max_connections_per_ip() {
    let setup = Setup::start(SMTP, "", &format!("[smtp]\nmax_connections_per_ip = 2\n{}", clients(""))).await;
    let first = Raw::connect(setup.smtp()).await;
    let _second = Raw::connect(setup.smtp()).await;
    let mut third = Raw::open(setup.smtp()).await;
    third.expect_reply("421 4.7.0").await;
    assert!(third.closed().await);
    // Closing one frees its slot (released when the server notices the close).
    drop(first);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut c = Raw::open(setup.smtp()).await;
        if c.reply().await.code == 220 {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn shutdown_mid_session_answers_421() {
    let mut setup = Setup::plain().await;
    let addr = setup.smtp();
    let mut idle = Raw::connect(addr).await;
    idle.expect("EHLO client.test", "250").await;
    let mut sending = Raw::connect(addr).await;
    sending.expect("EHLO client.test", "250").await;
    sending.auth_plain("app", PASSWORD).await;
    sending.expect("MAIL FROM:<app@example.com>", "250").await;
    sending.expect("RCPT TO:<a@example.net>", "250").await;
    sending.expect("DATA", "354").await;
    sending.send("Subject: half\r\n\r\nfirst half\r\n").await;

    let clients = async {
        // The idle session hears about the shutdown without sending anything.
        idle.expect_reply("421 4.3.2").await;
        assert!(idle.closed().await);
        // The message being received is read to its end, then refused: Baton takes no new
        // messages once shutdown has begun.
        sending.send("second half\r\n.\r\n").await;
        sending.expect_reply("421 4.3.2").await;
        assert!(sending.closed().await);
    };
    tokio::join!(setup.baton.stop(), clients);
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
}
