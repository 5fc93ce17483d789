#![allow(dead_code)]
//! A scripted mock SMTP relay for Baton's integration tests.
//!
//! [`MockSmtp::start`] binds `127.0.0.1:0` and serves plain-text SMTP (no TLS)
//! with one tokio task per connection. Out of the box it accepts everything,
//! like a provider's submission relay. Tests can change its behaviour at any
//! time through `&self`. Each change applies to the next command handled, on
//! connections that are already open as well as on new ones.
//!
//! Protocol notes (modelled on Postfix):
//! * Greeting `220`, then `EHLO`/`HELO`, `AUTH PLAIN` (with or without an
//!   initial response), `AUTH LOGIN`, `MAIL`, `RCPT`, `DATA` (dot-unstuffed up
//!   to `CRLF.CRLF`), `RSET`, `NOOP`, `QUIT`. Anything else gets `502`.
//! * `MAIL` requires `EHLO`/`HELO` first (`503`). It also requires `AUTH` when
//!   credentials are configured (`530 5.7.0`).
//! * `EHLO` advertises `PIPELINING`, `SIZE`, `8BITMIME`,
//!   `ENHANCEDSTATUSCODES`, and `AUTH PLAIN LOGIN` when credentials are
//!   configured or `reject_auth(true)` is set. If neither is set, `AUTH` is
//!   answered with `503 5.5.1 Error: authentication not enabled`.
//! * Replies are buffered and flushed once no complete pipelined command is
//!   left to read, the way a real pipelining server behaves.
//! * Any reply that starts with `421` (scripted or not) is sent, and then the
//!   connection is closed, as RFC 5321 §3.8 requires.
//! * A scripted non-2xx greeting other than `421` (for example `554`) is sent
//!   and the connection stays open. Every later command gets
//!   `503 5.5.1 Error: bad sequence of commands`, except `QUIT`, which gets
//!   `221`. This is the behaviour RFC 5321 §3.1 prescribes. A scripted `421`
//!   greeting closes the connection straight away.
//! * A scripted reply may be a multi-line reply: separate the lines with
//!   `\r\n` and use `NNN-` continuations.
//! * A message is recorded *before* the final reply is written. When the
//!   client has seen `250` after `DATA`, [`MockSmtp::messages`] already holds
//!   the message.
//! * A message whose end-of-data reply is not 2xx (including a hang at
//!   [`Stage::EndOfData`]) is not recorded.
//! * A connection that hangs stays silent: it reads and discards input until
//!   the client disconnects or the `MockSmtp` is dropped. Clearing the hang
//!   later does not revive it.
//! * Dropping the `MockSmtp` stops the accept loop and ends every connection
//!   task, hung ones included. Their sockets are closed.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Host name the mock uses in its greeting and `EHLO` reply.
pub const HOSTNAME: &str = "mock-smtp.baton.test";
/// Default `SIZE` limit advertised and enforced (50 MiB).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 50 * 1024 * 1024;
/// Reply to failed (or rejected) authentication.
pub const AUTH_FAILED_REPLY: &str = "535 5.7.8 Authentication credentials invalid";

/// A point in the SMTP dialogue whose reply can be scripted or hung.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The `220` banner right after the TCP accept.
    Greeting,
    /// Reply to `MAIL FROM`.
    Mail,
    /// Reply to `RCPT TO`. A per-recipient [`MockSmtp::reject_recipient`]
    /// takes precedence over this.
    Rcpt,
    /// Reply to the `DATA` command (default `354`). A non-3xx reply here
    /// means the message content is never read.
    Data,
    /// Reply after the terminating `CRLF.CRLF` (default
    /// `250 2.0.0 Ok: queued as N`).
    EndOfData,
}

/// A message that completed a transaction with a 2xx reply after `DATA`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// Reverse path without angle brackets (empty for the null sender `<>`).
    pub mail_from: String,
    /// Accepted recipients only, without angle brackets, in the order given.
    pub rcpts: Vec<String>,
    /// Message content, dot-unstuffed, with line endings as received
    /// (normally CRLF). The terminating `.` line is excluded.
    pub data: Vec<u8>,
    /// User name of a successful `AUTH` on this connection.
    pub auth_user: Option<String>,
    /// When the final reply to the content was sent.
    pub received_at: std::time::Instant,
}

impl ReceivedMessage {
    /// Value of the `Message-ID` header, trimmed, brackets kept
    /// (for example `<abc@example.com>`).
    pub fn message_id(&self) -> Option<String> {
        self.header("Message-ID")
    }

    /// Value of the first header called `name` (case-insensitive). The value
    /// is unfolded (CRLF removed from folded lines) and trimmed. Only the
    /// header block is searched.
    pub fn header(&self, name: &str) -> Option<String> {
        let text = String::from_utf8_lossy(&self.data);
        let mut found: Option<String> = None;
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                break; // end of the header block
            }
            if line.starts_with([' ', '\t']) {
                if let Some(value) = found.as_mut() {
                    value.push_str(line);
                }
                continue;
            }
            if found.is_some() {
                break;
            }
            if let Some((field, value)) = line.split_once(':')
                && field.trim().eq_ignore_ascii_case(name)
            {
                found = Some(value.to_owned());
            }
        }
        found.map(|v| v.trim().to_owned())
    }

    /// The whole content as (lossy) UTF-8.
    pub fn data_str(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// Content after the first empty line (the body), as (lossy) UTF-8.
    pub fn body(&self) -> String {
        let text = self.data_str();
        match text.find("\r\n\r\n") {
            Some(i) => text[i + 4..].to_owned(),
            None => match text.find("\n\n") {
                Some(i) => text[i + 2..].to_owned(),
                None => String::new(),
            },
        }
    }
}

#[derive(Debug, Clone)]
struct Behaviour {
    credentials: Option<(String, String)>,
    reject_auth: bool,
    /// Keyed by lower-cased address.
    rcpt_replies: HashMap<String, String>,
    replies: HashMap<Stage, String>,
    hang: Option<Stage>,
    max_message_size: usize,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            credentials: None,
            reject_auth: false,
            rcpt_replies: HashMap::new(),
            replies: HashMap::new(),
            hang: None,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
}

/// What a "delivering" mock does with each message it accepts (e.g. hand it to dovecot-lda).
pub type Forward = Arc<dyn Fn(&ReceivedMessage) + Send + Sync>;

struct Shared {
    behaviour: Mutex<Behaviour>,
    /// Called with each accepted message unless `drop_all` is set.
    forward: Mutex<Option<Forward>>,
    /// Accept everything with 250 and pass nothing on: a provider that silently drops mail.
    drop_all: std::sync::atomic::AtomicBool,
    messages: Mutex<Vec<ReceivedMessage>>,
    connections: Mutex<usize>,
    /// Upper-cased verb -> count.
    commands: Mutex<HashMap<String, usize>>,
    next_queue_id: AtomicU64,
    /// Bumped after every recorded event (connection, command, message) so
    /// that waiters can re-check their condition.
    events: watch::Sender<u64>,
}

impl Shared {
    fn bump(&self) {
        self.events.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn behaviour(&self) -> Behaviour {
        lock(&self.behaviour).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Handle to a running mock SMTP server. Dropping it shuts the server down.
pub struct MockSmtp {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Never sent on. Dropping it wakes every `changed()` with an error,
    /// which ends the accept loop and all connection tasks.
    _shutdown: watch::Sender<()>,
}

impl fmt::Debug for MockSmtp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockSmtp").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl MockSmtp {
    /// Binds `127.0.0.1:0` and starts serving in the background.
    pub async fn start() -> MockSmtp {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("MockSmtp: cannot bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("MockSmtp: listener has no local address");
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(Behaviour::default()),
            forward: Mutex::new(None),
            drop_all: std::sync::atomic::AtomicBool::new(false),
            messages: Mutex::new(Vec::new()),
            connections: Mutex::new(0),
            commands: Mutex::new(HashMap::new()),
            next_queue_id: AtomicU64::new(1),
            events: watch::Sender::new(0),
        });
        let (shutdown, shutdown_rx) = watch::channel(());
        tokio::spawn(accept_loop(listener, Arc::clone(&shared), shutdown_rx));
        MockSmtp { addr, shared, _shutdown: shutdown }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Always `"127.0.0.1"`.
    pub fn host(&self) -> String {
        self.addr.ip().to_string()
    }

    // ---- scripting -------------------------------------------------------

    /// `Some((user, pass))`: advertise `AUTH PLAIN LOGIN`, require AUTH
    /// before `MAIL` (`530 5.7.0`), and reject other credentials with
    /// [`AUTH_FAILED_REPLY`]. `None`: no authentication.
    pub fn set_credentials(&self, credentials: Option<(&str, &str)>) {
        lock(&self.shared.behaviour).credentials = credentials.map(|(u, p)| (u.to_owned(), p.to_owned()));
    }

    /// When `true`, every AUTH attempt ends in [`AUTH_FAILED_REPLY`], and
    /// AUTH is advertised even if no credentials are set.
    pub fn reject_auth(&self, reject: bool) {
        lock(&self.shared.behaviour).reject_auth = reject;
    }

    /// Gives `RCPT TO:<rcpt>` (case-insensitive) the full reply line
    /// `reply`, e.g.
    /// `"550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown"`.
    pub fn reject_recipient(&self, rcpt: &str, reply: &str) {
        check_reply(reply);
        lock(&self.shared.behaviour).rcpt_replies.insert(rcpt.to_ascii_lowercase(), reply.to_owned());
    }

    /// Removes all per-recipient replies.
    pub fn clear_recipient_rejections(&self) {
        lock(&self.shared.behaviour).rcpt_replies.clear();
    }

    /// Replaces the reply at `stage` with a full reply line (code first),
    /// e.g. `"554 5.7.1 Your account has been suspended"`. `None` restores
    /// the default reply.
    pub fn set_reply(&self, stage: Stage, reply: Option<String>) {
        let mut b = lock(&self.shared.behaviour);
        match reply {
            Some(reply) => {
                check_reply(&reply);
                b.replies.insert(stage, reply);
            }
            None => {
                b.replies.remove(&stage);
            }
        }
    }

    /// At `stage`, stop answering but keep the TCP connection open.
    /// `Greeting` accepts TCP and never sends 220. `EndOfData` reads the
    /// whole message and never replies (the message is not recorded).
    pub fn set_hang(&self, stage: Option<Stage>) {
        lock(&self.shared.behaviour).hang = stage;
    }

    /// `SIZE` limit advertised in EHLO and enforced on `MAIL ... SIZE=` and
    /// after `DATA` (`552 5.3.4`).
    pub fn set_max_message_size(&self, bytes: usize) {
        lock(&self.shared.behaviour).max_message_size = bytes;
    }

    /// Back to accept-all: no credentials, no overrides, no hang, default
    /// size limit. Recorded messages and counters are kept.
    pub fn set_behaviour_accept(&self) {
        *lock(&self.shared.behaviour) = Behaviour::default();
    }

    /// Alias of [`MockSmtp::set_behaviour_accept`].
    pub fn reset(&self) {
        self.set_behaviour_accept();
    }

    // ---- recording -------------------------------------------------------

    /// Passes each accepted message to `forward` (a delivering provider), or stops doing so.
    pub fn set_forward(&self, forward: Option<Forward>) {
        *lock(&self.shared.forward) = forward;
    }

    /// `true`: still answer 250 to everything, but forward nothing (a silent drop).
    pub fn set_drop_all(&self, drop: bool) {
        self.shared.drop_all.store(drop, Ordering::Relaxed);
    }

    pub fn messages(&self) -> Vec<ReceivedMessage> {
        lock(&self.shared.messages).clone()
    }

    pub fn message_count(&self) -> usize {
        lock(&self.shared.messages).len()
    }

    pub fn connections_accepted(&self) -> usize {
        *lock(&self.shared.connections)
    }

    /// How many commands with this verb (case-insensitive, e.g. `"MAIL"`)
    /// arrived, whatever the reply was. SASL continuation lines and message
    /// content are not commands.
    pub fn commands_seen(&self, verb: &str) -> usize {
        lock(&self.shared.commands).get(&verb.to_ascii_uppercase()).copied().unwrap_or(0)
    }

    /// Waits until at least `n` messages are recorded and returns all of
    /// them. Panics if that has not happened within `timeout`.
    pub async fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<ReceivedMessage> {
        self.wait_until(timeout, &format!("{n} message(s)"), |m| m.message_count() >= n).await;
        self.messages()
    }

    /// Waits until at least `n` TCP connections have been accepted. Panics
    /// after `timeout`.
    pub async fn wait_for_connections(&self, n: usize, timeout: Duration) {
        self.wait_until(timeout, &format!("{n} connection(s)"), |m| m.connections_accepted() >= n).await;
    }

    /// Waits until at least `n` commands with this verb have arrived.
    /// Panics after `timeout`.
    pub async fn wait_for_commands(&self, verb: &str, n: usize, timeout: Duration) {
        self.wait_until(timeout, &format!("{n} {verb} command(s)"), |m| m.commands_seen(verb) >= n).await;
    }

    async fn wait_until(&self, timeout: Duration, what: &str, cond: impl Fn(&Self) -> bool) {
        // Subscribe before the first check so no event can slip in between.
        let mut events = self.shared.events.subscribe();
        let wait = async {
            while !cond(self) {
                // The sender lives in `self.shared`, so this cannot fail.
                let _ = events.changed().await;
            }
        };
        if tokio::time::timeout(timeout, wait).await.is_err() {
            let commands: BTreeMap<String, usize> =
                lock(&self.shared.commands).iter().map(|(k, v)| (k.clone(), *v)).collect();
            panic!(
                "MockSmtp {}: timed out after {timeout:?} waiting for {what}; \
                 so far: {} message(s), {} connection(s), commands {commands:?}",
                self.addr,
                self.message_count(),
                self.connections_accepted(),
            );
        }
    }
}

/// Panics on something that is not an SMTP reply (`NNN`, `NNN text`,
/// `NNN-text...`).
fn check_reply(reply: &str) {
    let b = reply.as_bytes();
    let ok = b.len() >= 3
        && b[..3].iter().all(u8::is_ascii_digit)
        && (2..=5).contains(&(b[0] - b'0'))
        && (b.len() == 3 || b[3] == b' ' || b[3] == b'-');
    assert!(ok, "MockSmtp: {reply:?} is not an SMTP reply line (expected e.g. \"550 5.1.1 text\")");
}

fn is_positive(reply: &str) -> bool {
    reply.starts_with(['2', '3'])
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<()>) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _peer)) = accepted else {
            continue;
        };
        *lock(&shared.connections) += 1;
        shared.bump();
        let shared = Arc::clone(&shared);
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = Session::new(stream, shared).run() => {}
            }
        });
    }
}

/// The session is over: the client left, sent QUIT, got a 421, or an I/O
/// error occurred.
struct Over;

impl From<std::io::Error> for Over {
    fn from(_: std::io::Error) -> Self {
        Over
    }
}

type Res<T = ()> = Result<T, Over>;

struct Transaction {
    mail_from: String,
    rcpts: Vec<String>,
}

struct Session {
    reader: BufReader<OwnedReadHalf>,
    writer: BufWriter<OwnedWriteHalf>,
    shared: Arc<Shared>,
    helo: Option<String>,
    auth_user: Option<String>,
    tx: Option<Transaction>,
}

impl Session {
    fn new(stream: TcpStream, shared: Arc<Shared>) -> Self {
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        Session {
            reader: BufReader::new(rd),
            writer: BufWriter::new(wr),
            shared,
            helo: None,
            auth_user: None,
            tx: None,
        }
    }

    async fn run(mut self) {
        let _ = self.serve().await;
        // Flushes pending replies (e.g. 221 or 421) and sends FIN.
        let _ = self.writer.shutdown().await;
    }

    async fn serve(&mut self) -> Res {
        let b = self.shared.behaviour();
        if b.hang == Some(Stage::Greeting) {
            return self.hang().await;
        }
        let greeting =
            b.replies.get(&Stage::Greeting).cloned().unwrap_or_else(|| format!("220 {HOSTNAME} ESMTP Baton MockSmtp"));
        self.send(&greeting).await?; // closes on 421
        if !is_positive(&greeting) {
            // RFC 5321 §3.1: after a 554 greeting, wait for QUIT and answer
            // everything else with 503.
            loop {
                let line = self.read_line().await?;
                let text = String::from_utf8_lossy(&line);
                let (verb, _) = split_command(&text);
                self.count(&verb);
                if verb == "QUIT" {
                    self.send("221 2.0.0 Bye").await?;
                    return Err(Over);
                }
                self.send("503 5.5.1 Error: bad sequence of commands").await?;
            }
        }
        loop {
            let line = self.read_line().await?;
            self.command(&line).await?;
        }
    }

    /// Reads one LF-terminated line. Pending replies are flushed first,
    /// unless another complete pipelined line is already buffered. EOF,
    /// including EOF in the middle of a line, ends the session.
    async fn read_line(&mut self) -> Res<Vec<u8>> {
        if !self.reader.buffer().contains(&b'\n') {
            self.writer.flush().await?;
        }
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line).await?;
        if line.last() != Some(&b'\n') {
            return Err(Over);
        }
        Ok(line)
    }

    /// Queues one reply (CRLF appended). A 421 reply also ends the session.
    async fn send(&mut self, reply: &str) -> Res {
        let reply = reply.trim_end_matches(['\r', '\n']);
        self.writer.write_all(reply.as_bytes()).await?;
        self.writer.write_all(b"\r\n").await?;
        if reply.starts_with("421") {
            self.writer.flush().await?;
            return Err(Over);
        }
        Ok(())
    }

    /// Stops answering. Input is read and discarded until the client goes
    /// away. The task is also dropped when the `MockSmtp` is dropped.
    async fn hang(&mut self) -> Res {
        self.writer.flush().await?;
        let mut sink = [0u8; 4096];
        loop {
            if self.reader.read(&mut sink).await? == 0 {
                return Err(Over);
            }
        }
    }

    fn count(&self, verb: &str) {
        *lock(&self.shared.commands).entry(verb.to_owned()).or_insert(0) += 1;
        self.shared.bump();
    }

    async fn command(&mut self, line: &[u8]) -> Res {
        let text = String::from_utf8_lossy(line);
        let (verb, args) = split_command(&text);
        self.count(&verb);
        match verb.as_str() {
            "EHLO" => self.ehlo(args).await,
            "HELO" => self.helo(args).await,
            "AUTH" => self.auth(args).await,
            "MAIL" => self.mail(args).await,
            "RCPT" => self.rcpt(args).await,
            "DATA" => self.data(args).await,
            "RSET" => {
                self.tx = None;
                self.send("250 2.0.0 Ok").await
            }
            "NOOP" => self.send("250 2.0.0 Ok").await,
            "QUIT" => {
                self.send("221 2.0.0 Bye").await?;
                Err(Over)
            }
            "" => self.send("500 5.5.2 Error: bad syntax").await,
            _ => self.send("502 5.5.2 Error: command not recognized").await,
        }
    }

    async fn ehlo(&mut self, args: &str) -> Res {
        let domain = args.trim();
        if domain.is_empty() {
            return self.send("501 5.5.4 Syntax: EHLO hostname").await;
        }
        self.helo = Some(domain.to_owned());
        self.tx = None;
        let b = self.shared.behaviour();
        let mut lines = vec![
            format!("{HOSTNAME} Hello {domain}"),
            "PIPELINING".to_owned(),
            format!("SIZE {}", b.max_message_size),
            "8BITMIME".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
        ];
        if b.credentials.is_some() || b.reject_auth {
            lines.push("AUTH PLAIN LOGIN".to_owned());
        }
        let last = lines.len() - 1;
        let reply = lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("250{}{l}", if i == last { ' ' } else { '-' }))
            .collect::<Vec<_>>()
            .join("\r\n");
        self.send(&reply).await
    }

    async fn helo(&mut self, args: &str) -> Res {
        let domain = args.trim();
        if domain.is_empty() {
            return self.send("501 5.5.4 Syntax: HELO hostname").await;
        }
        self.helo = Some(domain.to_owned());
        self.tx = None;
        self.send(&format!("250 {HOSTNAME}")).await
    }

    async fn auth(&mut self, args: &str) -> Res {
        let b = self.shared.behaviour();
        if b.credentials.is_none() && !b.reject_auth {
            return self.send("503 5.5.1 Error: authentication not enabled").await;
        }
        if self.helo.is_none() {
            return self.send("503 5.5.1 Error: send HELO/EHLO first").await;
        }
        if self.auth_user.is_some() {
            return self.send("503 5.5.1 Error: already authenticated").await;
        }
        if self.tx.is_some() {
            return self.send("503 5.5.1 Error: MAIL transaction in progress").await;
        }
        let mut parts = args.split_whitespace();
        let mechanism = parts.next().unwrap_or("").to_ascii_uppercase();
        let initial = parts.next().map(str::to_owned);
        let (user, pass) = match mechanism.as_str() {
            "PLAIN" => {
                let response = match initial {
                    Some(r) => r,
                    None => match self.challenge("").await? {
                        Some(r) => r,
                        None => return Ok(()),
                    },
                };
                let Some(decoded) = decode_base64(&response) else {
                    return self.send("501 5.5.2 Error: cannot decode response").await;
                };
                // authzid NUL authcid NUL passwd
                let fields: Vec<&[u8]> = decoded.split(|&c| c == 0).collect();
                let [_authzid, user, pass] = fields[..] else {
                    return self.send(AUTH_FAILED_REPLY).await;
                };
                (String::from_utf8_lossy(user).into_owned(), String::from_utf8_lossy(pass).into_owned())
            }
            "LOGIN" => {
                let user = match initial {
                    Some(r) => r,
                    None => match self.challenge("VXNlcm5hbWU6").await? {
                        Some(r) => r,
                        None => return Ok(()),
                    },
                };
                let Some(user) = decode_base64(&user) else {
                    return self.send("501 5.5.2 Error: cannot decode response").await;
                };
                let pass = match self.challenge("UGFzc3dvcmQ6").await? {
                    Some(r) => r,
                    None => return Ok(()),
                };
                let Some(pass) = decode_base64(&pass) else {
                    return self.send("501 5.5.2 Error: cannot decode response").await;
                };
                (String::from_utf8_lossy(&user).into_owned(), String::from_utf8_lossy(&pass).into_owned())
            }
            "" => return self.send("501 5.5.4 Syntax: AUTH mechanism").await,
            _ => {
                return self.send("504 5.5.4 Unrecognized authentication type").await;
            }
        };
        // Re-read: the test may have changed its mind during the exchange.
        let b = self.shared.behaviour();
        let valid = !b.reject_auth && b.credentials.as_ref().is_some_and(|(u, p)| *u == user && *p == pass);
        if valid {
            self.auth_user = Some(user);
            self.send("235 2.7.0 Authentication successful").await
        } else {
            self.send(AUTH_FAILED_REPLY).await
        }
    }

    /// Sends a `334` challenge and returns the client's answer. Returns
    /// `None` if the client cancelled with `*`; that has already been
    /// answered with 501.
    async fn challenge(&mut self, challenge: &str) -> Res<Option<String>> {
        self.send(&format!("334 {challenge}")).await?;
        let line = self.read_line().await?;
        let response = String::from_utf8_lossy(&line).trim().to_owned();
        if response == "*" {
            self.send("501 5.7.0 Authentication aborted").await?;
            return Ok(None);
        }
        Ok(Some(response))
    }

    async fn mail(&mut self, args: &str) -> Res {
        let b = self.shared.behaviour();
        if self.helo.is_none() {
            return self.send("503 5.5.1 Error: send HELO/EHLO first").await;
        }
        if b.credentials.is_some() && self.auth_user.is_none() {
            return self.send("530 5.7.0 Authentication required").await;
        }
        if self.tx.is_some() {
            return self.send("503 5.5.1 Error: nested MAIL command").await;
        }
        let Some((from, params)) = parse_path(args, "FROM:") else {
            return self.send("501 5.5.4 Syntax: MAIL FROM:<address>").await;
        };
        if size_param(params).is_some_and(|size| size > b.max_message_size) {
            return self.send("552 5.3.4 Message size exceeds fixed limit").await;
        }
        if b.hang == Some(Stage::Mail) {
            return self.hang().await;
        }
        let reply = b.replies.get(&Stage::Mail).cloned().unwrap_or_else(|| "250 2.1.0 Ok".to_owned());
        if is_positive(&reply) {
            self.tx = Some(Transaction { mail_from: from, rcpts: Vec::new() });
        }
        self.send(&reply).await
    }

    async fn rcpt(&mut self, args: &str) -> Res {
        if self.tx.is_none() {
            return self.send("503 5.5.1 Error: need MAIL command").await;
        }
        let Some((rcpt, _params)) = parse_path(args, "TO:") else {
            return self.send("501 5.5.4 Syntax: RCPT TO:<address>").await;
        };
        if rcpt.is_empty() {
            return self.send("501 5.1.3 Bad recipient address syntax").await;
        }
        let b = self.shared.behaviour();
        if b.hang == Some(Stage::Rcpt) {
            return self.hang().await;
        }
        let reply = b
            .rcpt_replies
            .get(&rcpt.to_ascii_lowercase())
            .or_else(|| b.replies.get(&Stage::Rcpt))
            .cloned()
            .unwrap_or_else(|| "250 2.1.5 Ok".to_owned());
        if is_positive(&reply)
            && let Some(tx) = self.tx.as_mut()
        {
            tx.rcpts.push(rcpt);
        }
        self.send(&reply).await
    }

    async fn data(&mut self, args: &str) -> Res {
        if !args.trim().is_empty() {
            return self.send("501 5.5.4 Syntax: DATA").await;
        }
        let Some(tx) = self.tx.as_ref() else {
            return self.send("503 5.5.1 Error: need RCPT command").await;
        };
        if tx.rcpts.is_empty() {
            return self.send("554 5.5.1 Error: no valid recipients").await;
        }
        let b = self.shared.behaviour();
        if b.hang == Some(Stage::Data) {
            return self.hang().await;
        }
        let reply =
            b.replies.get(&Stage::Data).cloned().unwrap_or_else(|| "354 End data with <CR><LF>.<CR><LF>".to_owned());
        if !reply.starts_with('3') {
            self.tx = None;
            return self.send(&reply).await;
        }
        self.send(&reply).await?;

        let data = self.read_data().await?;
        let tx = self.tx.take().expect("transaction checked above");

        // Re-read: the behaviour may have changed while the content arrived.
        let b = self.shared.behaviour();
        if b.hang == Some(Stage::EndOfData) {
            return self.hang().await;
        }
        let reply = if data.len() > b.max_message_size {
            "552 5.3.4 Message size exceeds fixed limit".to_owned()
        } else if let Some(reply) = b.replies.get(&Stage::EndOfData) {
            reply.clone()
        } else {
            let id = self.shared.next_queue_id.fetch_add(1, Ordering::Relaxed);
            format!("250 2.0.0 Ok: queued as {id}")
        };
        if reply.starts_with('2') {
            let message = ReceivedMessage {
                mail_from: tx.mail_from,
                rcpts: tx.rcpts,
                data,
                auth_user: self.auth_user.clone(),
                received_at: std::time::Instant::now(),
            };
            let forward = lock(&self.shared.forward).clone();
            if let Some(forward) = forward.filter(|_| !self.shared.drop_all.load(Ordering::Relaxed)) {
                let copy = message.clone();
                tokio::task::spawn_blocking(move || forward(&copy));
            }
            lock(&self.shared.messages).push(message);
            self.shared.bump();
        }
        self.send(&reply).await
    }

    /// Reads message content up to the lone `.` line and dot-unstuffs it.
    async fn read_data(&mut self) -> Res<Vec<u8>> {
        let mut data = Vec::new();
        loop {
            let line = self.read_line().await?;
            if line == b".\r\n" || line == b".\n" {
                return Ok(data);
            }
            data.extend_from_slice(line.strip_prefix(b".").unwrap_or(&line));
        }
    }
}

/// Splits a command line into an upper-cased verb and the rest.
fn split_command(text: &str) -> (String, &str) {
    let text = text.trim_end_matches(['\r', '\n']);
    match text.split_once(' ') {
        Some((verb, args)) => (verb.to_ascii_uppercase(), args),
        None => (text.to_ascii_uppercase(), ""),
    }
}

/// Parses `FROM:<addr> params` / `TO:<addr> params` (keyword
/// case-insensitive; a space after the colon and a missing `<>` are
/// tolerated, as in Postfix). Returns the address without brackets and the
/// parameters.
fn parse_path<'a>(args: &'a str, keyword: &str) -> Option<(String, &'a str)> {
    let head = args.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = args[keyword.len()..].trim_start();
    if let Some(inner) = rest.strip_prefix('<') {
        let end = inner.find('>')?;
        Some((inner[..end].to_owned(), inner[end + 1..].trim()))
    } else {
        let (addr, params) = rest.split_once(' ').unwrap_or((rest, ""));
        if addr.is_empty() {
            return None;
        }
        Some((addr.to_owned(), params.trim()))
    }
}

fn size_param(params: &str) -> Option<usize> {
    params.split_whitespace().find_map(|p| {
        let (key, value) = p.split_once('=')?;
        if key.eq_ignore_ascii_case("SIZE") { value.parse().ok() } else { None }
    })
}

/// Base64 decoding, where `=` means an empty response (RFC 4954).
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    if s == "=" {
        return Some(Vec::new());
    }
    BASE64.decode(s).ok()
}
