//! Issue 11, the SMTP listener against hostile clients, and what it hands to the next hop: AUTH
//! guessing blocked across connections (per address and per username), slow-drip sessions cut
//! off, NUL and bare CR refused, `Date:` / `Message-ID:` added when missing, the null sender
//! only for clients that relay bounces. Real sockets; a client acts as several hosts by
//! binding its side of the connection to other addresses of 127.0.0.0/8.

mod support;

use base64::Engine;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use support::baton::{Baton, DEADLINE, KEY};
use support::smtp_reply::{Reply, read_reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::JoinHandle;

const PASSWORD: &str = "correct horse battery staple";
const OTHER_PASSWORD: &str = "other-password";

/// Client "app" logs in as `app`; "other" as `other`; "mta" as `mta` and may send the null
/// sender. `[smtp]` gets `smtp` (limits under test).
fn config(smtp: &str, out: &Path) -> String {
    format!(
        r#"
[smtp]
{smtp}

[[clients]]
name = "app"
api_keys = ["{KEY}"]
allowed_senders = ["*@example.com"]
smtp_users = [{{ username = "app", password = "{PASSWORD}" }}]

[[clients]]
name = "other"
allowed_senders = ["*@example.org"]
smtp_users = [{{ username = "other", password = "{OTHER_PASSWORD}" }}]

[[clients]]
name = "mta"
allowed_senders = ["*@example.net"]
smtp_users = [{{ username = "mta", password = "mta-password" }}]
allow_null_sender = true

[providers.outbox]
type = "file"
dir = "{}"

[[routes]]
name = "default"
providers = ["outbox"]
"#,
        out.display()
    )
}

/// A Baton with an SMTP listener delivering into a file outbox.
struct Setup {
    baton: Baton,
    out: tempfile::TempDir,
}

impl Setup {
    async fn start(smtp: &str) -> Setup {
        let out = tempfile::tempdir().unwrap();
        let baton = Baton::start_with_server("smtp_listen = \"127.0.0.1:0\"", "", &config(smtp, out.path())).await;
        Setup { baton, out }
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

    /// The `.eml` of a message from a client without an API key (no status to ask for).
    async fn outbox_file(&self, id: &str) -> String {
        let path = self.out.path().join(format!("{id}.eml"));
        let started = Instant::now();
        while !path.exists() {
            assert!(started.elapsed() < DEADLINE, "{} never written", path.display());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        std::fs::read_to_string(path).unwrap()
    }

    async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        Baton::metric(&self.baton.metrics().await, name, labels)
    }

    async fn rejections(&self, reason: &str) -> f64 {
        self.metric("baton_ingest_rejections_total", &[("ingress", "smtp"), ("reason", reason)]).await
    }

    async fn received(&self) -> f64 {
        self.metric("baton_messages_received_total", &[("ingress", "smtp")]).await
    }
}

/// The message as the client sent it, plus what Baton added below its Received: header.
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
    &rest[end..]
}

/// `127.0.0.n`: one more host on this machine.
fn host(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

// ---- a raw SMTP client --------------------------------------------------------------------

struct Raw {
    reader: BufReader<OwnedReadHalf>,
    /// `None` once handed to [`Raw::drip`].
    writer: Option<OwnedWriteHalf>,
}

impl Raw {
    /// Connects from `from` (an address of this machine) and reads the `220` greeting.
    async fn connect_from(addr: SocketAddr, from: IpAddr) -> Raw {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(from, 0)).expect("bind a loopback address");
        let tcp = tokio::time::timeout(DEADLINE, socket.connect(addr)).await.expect("connect in time").unwrap();
        let (read, write) = tcp.into_split();
        let mut raw = Raw { reader: BufReader::new(read), writer: Some(write) };
        let greeting = raw.reply().await;
        assert_eq!(greeting.code, 220, "{greeting:?}");
        raw
    }

    async fn connect(addr: SocketAddr) -> Raw {
        Raw::connect_from(addr, host(1)).await
    }

    async fn send(&mut self, bytes: &[u8]) {
        let writer = self.writer.as_mut().expect("not dripping");
        writer.write_all(bytes).await.unwrap();
        writer.flush().await.unwrap();
    }

    async fn reply(&mut self) -> Reply {
        read_reply(&mut self.reader).await
    }

    async fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// Sends a command and asserts the reply starts with `want`.
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

    /// EHLO and AUTH PLAIN as `user`.
    async fn login(&mut self, user: &str, password: &str) -> Reply {
        self.expect("EHLO client.test", "250").await;
        self.auth_plain(user, password).await
    }

    /// MAIL and RCPT, ready for the content.
    async fn envelope(&mut self, from: &str, to: &str) {
        self.expect(&format!("MAIL FROM:<{from}>"), "250 2.1.0").await;
        self.expect(&format!("RCPT TO:<{to}>"), "250 2.1.5").await;
    }

    /// DATA with `content` (dot-stuffed, CRLF-terminated); returns the reply to the final dot.
    async fn data(&mut self, content: &[u8]) -> Reply {
        self.expect("DATA", "354").await;
        self.send(content).await;
        self.send(b".\r\n").await;
        self.reply().await
    }

    /// A whole transaction by DATA; returns the queued id.
    async fn send_message(&mut self, from: &str, to: &str, content: &str) -> String {
        self.envelope(from, to).await;
        let r = self.data(content.as_bytes()).await;
        assert!(r.last().starts_with("250 2.0.0 Ok: queued as "), "{r:?}");
        queued_id(&r)
    }

    /// Waits for the server to close the connection (after any replies still to read).
    async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match tokio::time::timeout(DEADLINE, self.reader.read_to_end(&mut rest)).await {
            Ok(Ok(_)) => rest.is_empty(),
            Ok(Err(_)) => true, // reset
            Err(_) => false,
        }
    }

    /// Sends `first`, then one byte of `x` every `every`, until the server closes: the client
    /// that keeps a session alive by never finishing what it sends.
    fn drip(&mut self, first: &'static [u8], every: Duration) -> JoinHandle<()> {
        let mut writer = self.writer.take().expect("one drip per connection");
        tokio::spawn(async move {
            if writer.write_all(first).await.is_err() {
                return;
            }
            loop {
                tokio::time::sleep(every).await;
                if writer.write_all(b"x").await.is_err() {
                    return;
                }
            }
        })
    }
}

fn queued_id(r: &Reply) -> String {
    r.last().rsplit(' ').next().unwrap().to_string()
}

// ---- 1. AUTH guessing across connections ----------------------------------------------------

#[tokio::test]
async fn auth_guesses_from_one_address_are_blocked_across_connections() {
    let setup = Setup::start(
        "auth_failures_per_ip = 3\nauth_failures_per_user = 100\nmax_auth_failures = 2\n\
         auth_failure_delay = \"200ms\"\nauth_block_for = \"1h\"",
    )
    .await;
    // Two guesses end the first connection (the per-connection limit, as before).
    let mut c = Raw::connect(setup.smtp()).await;
    assert!(c.login("app", "guess-1").await.last().starts_with("535 5.7.8"));
    assert!(c.auth_plain("app", "guess-2").await.last().starts_with("535 5.7.8"));
    c.expect_reply("421 4.7.0").await;
    assert!(c.closed().await);
    // A new connection does not start the count over: the third guess blocks the address.
    let mut c = Raw::connect(setup.smtp()).await;
    assert!(c.login("other", "guess-3").await.last().starts_with("535 5.7.8"));
    let started = Instant::now();
    let r = c.auth_plain("app", PASSWORD).await;
    assert_eq!(r.last(), "454 4.7.0 Temporary authentication failure", "right password, blocked address");
    assert!(started.elapsed() >= Duration::from_millis(200), "the delay is kept: {:?}", started.elapsed());
    c.expect_reply("421 4.7.0").await; // the second refusal on this connection
    let mut c = Raw::connect(setup.smtp()).await;
    assert!(c.login("app", PASSWORD).await.last().starts_with("454 4.7.0"), "on every new connection");
    // Other addresses, and the users themselves, are not blocked.
    let mut c = Raw::connect_from(setup.smtp(), host(2)).await;
    assert_eq!(c.login("app", PASSWORD).await.code, 235);

    assert_eq!(setup.metric("baton_smtp_auth_failures_total", &[("reason", "invalid_credentials")]).await, 3.0);
    assert_eq!(setup.metric("baton_smtp_auth_failures_total", &[("reason", "ip_blocked")]).await, 2.0);
    assert_eq!(setup.metric("baton_smtp_auth_blocks_total", &[("scope", "ip")]).await, 1.0);
    assert_eq!(setup.metric("baton_smtp_auth_blocks_total", &[("scope", "user")]).await, 0.0);
    assert_eq!(setup.rejections("auth").await, 5.0);
}

#[tokio::test]
async fn guesses_spread_over_addresses_block_the_username_but_not_its_own_hosts() {
    let setup = Setup::start(
        "auth_failures_per_ip = 100\nauth_failures_per_user = 4\n\
         auth_failure_delay = \"10ms\"\nauth_block_for = \"1h\"",
    )
    .await;
    let login = |from: u8, user: &'static str, password: &'static str| {
        let addr = setup.smtp();
        async move { Raw::connect_from(addr, host(from)).await.login(user, password).await }
    };
    // 127.0.0.9 is where the application really runs.
    assert_eq!(login(9, "app", PASSWORD).await.code, 235);
    for from in 1..=3 {
        assert_eq!(login(from, "app", "guess").await.code, 535);
    }
    // A successful login in between does not reset the other addresses' failures.
    assert_eq!(login(9, "app", PASSWORD).await.code, 235);
    assert_eq!(login(4, "app", "guess").await.code, 535);
    // Now "app" is blocked from every address, the right password included...
    let r = login(5, "app", PASSWORD).await;
    assert_eq!(r.last(), "454 4.7.0 Temporary authentication failure");
    assert_eq!(login(1, "app", PASSWORD).await.code, 454);
    // ...but not for the host that has been logging in as "app", nor for other users.
    assert_eq!(login(9, "app", PASSWORD).await.code, 235);
    assert_eq!(login(5, "other", OTHER_PASSWORD).await.code, 235);

    assert_eq!(setup.metric("baton_smtp_auth_blocks_total", &[("scope", "user")]).await, 1.0);
    assert_eq!(setup.metric("baton_smtp_auth_blocks_total", &[("scope", "ip")]).await, 0.0);
    assert_eq!(setup.metric("baton_smtp_auth_failures_total", &[("reason", "user_blocked")]).await, 2.0);
    assert_eq!(setup.metric("baton_smtp_auth_failures_total", &[("reason", "invalid_credentials")]).await, 4.0);
}

// ---- 2. slow drip ------------------------------------------------------------------------

/// Waits for the `421 4.4.2` a dripping client gets, and checks it came at least `at_least`
/// (the limit under test, longer than the idle timeout the drip keeps resetting) after
/// `started`, taken before the client sent what starts the server's clock.
async fn cut_off(c: &mut Raw, started: Instant, at_least: Duration) -> Reply {
    let r = c.expect_reply("421 4.4.2").await;
    let took = started.elapsed();
    assert!(took >= at_least, "cut off after {took:?}, before the limit");
    assert!(c.closed().await);
    r
}

#[tokio::test]
async fn a_command_dripped_a_byte_at_a_time_is_cut_off() {
    let setup = Setup::start("idle_timeout = \"1s\"\ncommand_timeout = \"2s\"").await;
    let mut c = Raw::connect(setup.smtp()).await;
    let started = Instant::now();
    c.expect("EHLO client.test", "250").await; // the next command's time starts after this
    let drip = c.drip(b"NOOP ", Duration::from_millis(200));
    let r = cut_off(&mut c, started, Duration::from_secs(2)).await;
    assert!(r.last().contains("Command not received in time"), "{r:?}");
    drip.abort();
    assert_eq!(setup.metric("baton_smtp_timeouts_total", &[("phase", "command")]).await, 1.0);

    // A session that sends nothing is still an idle one.
    let mut idle = Raw::connect(setup.smtp()).await;
    assert!(idle.expect_reply("421 4.4.2").await.last().contains("Idle timeout"));
    assert_eq!(setup.metric("baton_smtp_timeouts_total", &[("phase", "idle")]).await, 1.0);
}

#[tokio::test]
async fn message_content_dripped_by_data_or_bdat_is_cut_off() {
    let setup = Setup::start("idle_timeout = \"1s\"\ndata_timeout = \"2s\"").await;
    let limit = Duration::from_secs(2);
    // DATA: the content trickles in.
    let mut c = Raw::connect(setup.smtp()).await;
    assert_eq!(c.login("app", PASSWORD).await.code, 235);
    c.envelope("app@example.com", "a@example.net").await;
    let started = Instant::now();
    c.expect("DATA", "354").await;
    let drip = c.drip(b"Subject: slow\r\n\r\n", Duration::from_millis(200));
    let r = cut_off(&mut c, started, limit).await;
    assert!(r.last().contains("Message content not received in time"), "{r:?}");
    drip.abort();

    // BDAT: each one-byte chunk is quick, but together they take too long.
    let mut c = Raw::connect(setup.smtp()).await;
    assert_eq!(c.login("app", PASSWORD).await.code, 235);
    c.envelope("app@example.com", "a@example.net").await;
    let started = Instant::now();
    let mut accepted = 0;
    loop {
        c.send(b"BDAT 1\r\nx").await;
        let r = c.reply().await;
        if r.code != 250 {
            assert!(r.last().starts_with("421 4.4.2"), "{r:?}");
            break;
        }
        accepted += 1;
        assert!(started.elapsed() < DEADLINE, "never cut off");
        tokio::time::sleep(Duration::from_millis(300)).await; // the client's pace
    }
    assert!(started.elapsed() >= limit && accepted >= 3, "{accepted} chunks in {:?}", started.elapsed());
    assert!(c.closed().await);

    assert_eq!(setup.metric("baton_smtp_timeouts_total", &[("phase", "data")]).await, 2.0);
    assert_eq!(setup.received().await, 0.0);
}

// ---- 3. bare CR and NUL ------------------------------------------------------------------

#[tokio::test]
async fn nul_and_bare_cr_are_refused_and_the_session_goes_on() {
    let setup = Setup::start("").await;
    let mut c = Raw::connect(setup.smtp()).await;
    assert_eq!(c.login("app", PASSWORD).await.code, 235);
    // `<CR>.<CR>`: what a lenient next hop could take for the end of DATA.
    c.envelope("app@example.com", "a@example.net").await;
    let smuggle =
        b"Subject: cr\r\n\r\nhello\r.\rMAIL FROM:<app@example.com>\rRCPT TO:<victim@example.net>\rDATA\rx\r\n";
    let r = c.data(smuggle).await;
    assert_eq!(r.last(), "554 5.6.0 Message contains a bare CR (a CR not followed by LF)");
    c.envelope("app@example.com", "a@example.net").await;
    let r = c.data(b"Subject: nul\r\n\r\na\0b\r\n").await;
    assert_eq!(r.last(), "554 5.6.0 Message contains a NUL character");
    // By BDAT too.
    c.envelope("app@example.com", "a@example.net").await;
    let chunk = b"Subject: cr\r\n\r\na\rb\r\n";
    c.send(format!("BDAT {} LAST\r\n", chunk.len()).as_bytes()).await;
    c.send(chunk).await;
    c.expect_reply("554 5.6.0").await;
    // The session is still in step, and a clean message goes through.
    let id = c.send_message("app@example.com", "a@example.net", "Subject: clean\r\n\r\nok\r\n").await;
    assert!(setup.delivered(&id).await.ends_with("Subject: clean\r\n\r\nok\r\n"));
    assert_eq!(setup.rejections("invalid").await, 3.0);
    assert_eq!(setup.received().await, 1.0);
}

// ---- 4. Date and Message-ID -------------------------------------------------------------------

#[tokio::test]
async fn date_and_message_id_are_added_only_when_missing() {
    let setup = Setup::start("").await;
    let mut c = Raw::connect(setup.smtp()).await;
    assert_eq!(c.login("app", PASSWORD).await.code, 235);

    let sent = "From: app@example.com\r\nSubject: neither\r\n\r\nhi\r\n";
    let id = c.send_message("app@example.com", "a@example.net", sent).await;
    let eml = setup.delivered(&id).await;
    let added = after_received(&eml).strip_suffix(sent).expect("the client's bytes follow, unchanged");
    let (date, message_id) = added.split_once("\r\n").unwrap();
    assert_eq!(message_id, format!("Message-ID: <{id}@baton.test>\r\n"));
    let parsed = mail_parser::MessageParser::default().parse(eml.as_bytes()).unwrap();
    assert_eq!(parsed.message_id(), Some(format!("{id}@baton.test").as_str()));
    let when = parsed.date().unwrap_or_else(|| panic!("RFC 5322 date: {date}")).to_timestamp();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((now - when).abs() < 120, "{date}: the time of acceptance");

    // Both present: not a byte changes.
    let sent = "Date: Mon, 30 Jun 2025 08:00:00 +0200\r\nMessage-ID: <own@example.com>\r\nSubject: both\r\n\r\nhi\r\n";
    let id = c.send_message("app@example.com", "a@example.net", sent).await;
    assert_eq!(after_received(&setup.delivered(&id).await), sent);

    // Only the missing one is added, by BDAT as well.
    let sent = "message-id: <own2@example.com>\r\nSubject: bdat\r\n\r\nhi\r\n";
    c.envelope("app@example.com", "a@example.net").await;
    c.send(format!("BDAT {} LAST\r\n{sent}", sent.len()).as_bytes()).await;
    let id = queued_id(&c.expect_reply("250 2.0.0 Ok: queued as").await);
    let eml = setup.delivered(&id).await;
    let added = after_received(&eml).strip_suffix(sent).expect("the client's bytes follow, unchanged");
    assert!(added.starts_with("Date: ") && added.matches("\r\n").count() == 1, "{added:?}");
}

// ---- 5. the null sender ------------------------------------------------------------------

/// Log lines at WARN and above from every Baton in this test binary.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn captured() -> &'static Logs {
        static LOGS: OnceLock<Logs> = OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = Logs::default();
            let writer = logs.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .with_max_level(tracing::Level::WARN)
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
            logs
        })
    }

    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap()).lines().map(str::to_string).collect()
    }
}

#[tokio::test]
async fn the_null_sender_is_taken_only_from_clients_that_allow_it() {
    let logs = Logs::captured();
    let setup = Setup::start("").await;
    // An MTA relaying a bounce.
    let mut c = Raw::connect(setup.smtp()).await;
    assert_eq!(c.login("mta", "mta-password").await.code, 235);
    let id = c.send_message("", "a@example.net", "Subject: Undelivered Mail\r\n\r\nbounce\r\n").await;
    assert!(setup.outbox_file(&id).await.starts_with("Return-Path: <>\r\n"));
    // An application: refused as before, now with a reason of its own and a log line.
    let mut c = Raw::connect(setup.smtp()).await;
    assert_eq!(c.login("app", PASSWORD).await.code, 235);
    c.expect("MAIL FROM:<>", "550 5.7.1").await;
    c.expect("MAIL FROM:<app@example.com>", "250 2.1.0").await;
    assert_eq!(setup.rejections("null_sender").await, 1.0);
    assert_eq!(setup.rejections("sender_not_allowed").await, 0.0);
    let lines = logs.lines();
    assert!(
        lines.iter().any(|l| l.contains("WARN") && l.contains("null sender refused") && l.contains("client=app")),
        "{lines:#?}"
    );
}

#[tokio::test]
async fn a_null_sender_bounce_goes_on_to_an_smtp_relay_as_mail_from_empty() {
    let relay = support::mock_smtp::MockSmtp::start().await;
    let body = format!(
        "[[clients]]\nname = \"mta\"\nallowed_senders = [\"*@example.net\"]\n\
         smtp_users = [{{ username = \"mta\", password = \"mta-password\" }}]\nallow_null_sender = true\n{}\n\
         [[routes]]\nname = \"default\"\nproviders = [\"relay\"]\n",
        support::baton::smtp_provider("relay", &relay, "")
    );
    let baton = Baton::start_with_server("smtp_listen = \"127.0.0.1:0\"", "", &body).await;
    let mut c = Raw::connect(baton.smtp_addr()).await;
    assert_eq!(c.login("mta", "mta-password").await.code, 235);
    c.send_message(
        "",
        "a@example.net",
        "From: MAILER-DAEMON@example.net\r\nSubject: Undelivered Mail\r\n\r\nbounce\r\n",
    )
    .await;
    let got = relay.wait_for_messages(1, support::baton::DEADLINE).await;
    assert_eq!(got[0].mail_from, "", "MAIL FROM:<> kept on the way out");
}

#[tokio::test]
async fn from_and_sender_must_be_the_logins_own_and_bcc_never_leaves() {
    let setup = Setup::start("").await;
    let mut c = Raw::connect(setup.smtp()).await;
    assert_eq!(c.login("app", PASSWORD).await.code, 235);
    c.envelope("app@example.com", "a@example.net").await;
    let r = c.data(b"From: ceo@example.org\r\nSubject: spoof\r\n\r\nhi\r\n").await;
    assert_eq!(r.code, 550, "{r:?}");
    assert_eq!(setup.rejections("sender_not_allowed").await, 1.0);
    let id = c
        .send_message(
            "app@example.com",
            "a@example.net",
            "From: app@example.com\r\nBcc: audit@example.com\r\nSubject: ok\r\n\r\nhi\r\n",
        )
        .await;
    let eml = setup.outbox_file(&id).await;
    assert!(!eml.to_ascii_lowercase().contains("bcc:"), "{eml}");
    assert!(eml.contains("From: app@example.com\r\nSubject: ok\r\n"), "{eml}");
}
