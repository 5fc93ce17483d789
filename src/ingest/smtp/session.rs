//! One SMTP session: the command loop, connection-level commands (EHLO/HELO, STARTTLS, RSET,
//! NOOP, VRFY, QUIT) and the error accounting that ends abusive sessions. AUTH is in
//! `auth.rs`; MAIL/RCPT/DATA/BDAT in `transaction.rs`.

use super::guard::AuthGuard;
use super::io::{self, Deadline, Io, Line, Phase, ReadError, Stream};
use super::limits::Slot;
use super::received::sanitize_helo;
use super::reply;
use super::transaction::Transaction;
use crate::runtime::Runtime;
use crate::shared::Shared;
use smtp_proto::{Error as ParseError, Request};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// What the session does after a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Close,
}

pub struct Helo {
    pub name: String,
    /// EHLO (true) or HELO (false).
    pub extended: bool,
}

pub struct Session {
    pub shared: Arc<Shared>,
    pub io: Io,
    pub peer: SocketAddr,
    pub stop: CancellationToken,
    /// The live config as of the current command: a reload applies from the next command on.
    pub rt: Arc<Runtime>,
    pub helo: Option<Helo>,
    /// The login that succeeded with AUTH on this connection.
    pub authenticated: Option<super::auth::Credentials>,
    pub tx: Option<Transaction>,
    /// AUTH failures across the listener's connections.
    pub guard: Arc<AuthGuard>,
    errors: u32,
    pub auth_failures: u32,
}

/// Runs one connection from greeting to close. `_slot` holds its connection-limit slot.
pub async fn run(
    shared: Arc<Shared>,
    guard: Arc<AuthGuard>,
    tcp: TcpStream,
    peer: SocketAddr,
    implicit_tls: bool,
    stop: CancellationToken,
    _slot: Slot,
) {
    // Replies are already batched (see io.rs); Nagle would only add latency to each of them.
    let _ = tcp.set_nodelay(true);
    let rt = shared.runtime.load_full();
    let idle = rt.config.smtp.idle_timeout.0;
    let stream = if implicit_tls {
        let Some(acceptor) = rt.tls.clone() else {
            tracing::warn!(peer = %peer, "smtps connection but no [server.tls] certificate is loaded; closing");
            return;
        };
        match io::handshake(&acceptor, tcp, idle).await {
            Ok(tls) => Stream::Tls(Box::new(tls)),
            Err(e) => {
                tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                return;
            }
        }
    } else {
        Stream::Plain(tcp)
    };
    tracing::debug!(peer = %peer, tls = implicit_tls, "SMTP session started");
    let mut session = Session {
        io: Io::new(stream, idle),
        shared,
        peer,
        stop,
        rt,
        helo: None,
        authenticated: None,
        tx: None,
        guard,
        errors: 0,
        auth_failures: 0,
    };
    session.io.reply(&reply::greeting(session.hostname()));
    session.serve().await;
    tracing::debug!(peer = %peer, "SMTP session ended");
    session.io.close().await;
}

impl Session {
    pub fn hostname(&self) -> &str {
        &self.rt.config.server.hostname
    }

    fn max_line(&self) -> usize {
        self.rt.config.smtp.max_line_length
    }

    async fn serve(&mut self) {
        loop {
            // RFC 5321 §4.5.3.2.7: the whole command, not each byte of it, gets the timeout.
            let deadline = Deadline::after(self.rt.config.smtp.command_timeout.0, Phase::Command);
            let line = match self.io.line(self.max_line(), Some(&self.stop), deadline).await {
                Ok(line) => line,
                Err(e) => {
                    self.read_failed(e);
                    return;
                }
            };
            self.rt = self.shared.runtime.load_full();
            if self.stop.is_cancelled() {
                self.refuse_shutting_down();
                return;
            }
            let flow = match line {
                Line::TooLong => self.error(reply::LINE_TOO_LONG),
                Line::Complete(line) => self.command(line).await,
            };
            if flow == Flow::Close {
                return;
            }
        }
    }

    async fn command(&mut self, mut line: Vec<u8>) -> Flow {
        // smtp-proto parses a line including its LF.
        line.push(b'\n');
        let request = match Request::parse(&mut line.iter()) {
            Ok(r) => r.into_owned(),
            Err(e) => return self.parse_error(e),
        };
        match request {
            Request::Ehlo { host } => self.hello(host, true),
            Request::Helo { host } => self.hello(host, false),
            Request::Mail { from } => self.mail(from),
            Request::Rcpt { to } => self.rcpt(to),
            Request::Data => self.data().await,
            Request::Bdat { chunk_size, is_last } => self.bdat(chunk_size, is_last).await,
            Request::Auth { mechanism, initial_response } => self.auth(mechanism, initial_response).await,
            Request::StartTls => self.start_tls().await,
            Request::Rset => {
                self.tx = None;
                self.io.reply(reply::RESET_OK);
                Flow::Continue
            }
            Request::Noop { .. } => {
                self.io.reply(reply::OK);
                Flow::Continue
            }
            Request::Vrfy { .. } => {
                self.io.reply(reply::VRFY);
                Flow::Continue
            }
            Request::Help { .. } => {
                self.io.reply("214 2.0.0 See RFC 5321; Baton speaks SMTP submission");
                Flow::Continue
            }
            Request::Quit => {
                self.io.reply(reply::BYE);
                Flow::Close
            }
            Request::Lhlo { .. } => self.error(reply::UNKNOWN_COMMAND),
            Request::Expn { .. } | Request::Etrn { .. } | Request::Atrn { .. } | Request::Burl { .. } => {
                self.error(reply::NOT_IMPLEMENTED)
            }
        }
    }

    fn parse_error(&mut self, e: ParseError) -> Flow {
        match e {
            ParseError::InvalidSenderAddress => self.error(reply::BAD_SENDER),
            ParseError::InvalidRecipientAddress => self.error(reply::BAD_RECIPIENT),
            ParseError::SyntaxError { syntax } => self.error(&reply::syntax(syntax)),
            ParseError::InvalidParameter { param } => self.error(&format!("501 5.5.4 Invalid {param} parameter")),
            ParseError::UnsupportedParameter { .. } => self.error(reply::UNSUPPORTED_PARAMETER),
            ParseError::UnknownCommand
            | ParseError::NeedsMoreData { .. }
            | ParseError::ResponseTooLong
            | ParseError::InvalidResponse { .. } => self.error(reply::UNKNOWN_COMMAND),
        }
    }

    fn hello(&mut self, host: String, extended: bool) -> Flow {
        self.tx = None;
        let name = sanitize_helo(&host);
        let me = self.hostname().to_string();
        if !extended {
            self.io.reply(&format!("250 {me}"));
        } else {
            let mut lines = vec![
                me,
                "PIPELINING".to_string(),
                format!("SIZE {}", self.rt.config.server.max_message_size.0),
                "8BITMIME".to_string(),
                "ENHANCEDSTATUSCODES".to_string(),
                "SMTPUTF8".to_string(),
                "CHUNKING".to_string(),
            ];
            if self.rt.tls.is_some() && !self.io.is_tls() {
                lines.push("STARTTLS".to_string());
            }
            if self.auth_permitted() {
                lines.push("AUTH PLAIN LOGIN".to_string());
            }
            let last = lines.len() - 1;
            for (i, l) in lines.iter().enumerate() {
                self.io.reply(&format!("250{}{l}", if i == last { ' ' } else { '-' }));
            }
        }
        self.helo = Some(Helo { name, extended });
        Flow::Continue
    }

    async fn start_tls(&mut self) -> Flow {
        if self.io.is_tls() {
            return self.error(reply::TLS_ALREADY);
        }
        let Some(acceptor) = self.rt.tls.clone() else {
            return self.error(reply::STARTTLS_UNAVAILABLE);
        };
        self.io.reply(reply::READY_TLS);
        if let Err(e) = self.io.flush().await {
            self.read_failed(e);
            return Flow::Close;
        }
        let injected = self.io.discard_buffered();
        if injected > 0 {
            tracing::info!(peer = %self.peer, bytes = injected, "discarded plain-text input pipelined after STARTTLS");
        }
        match self.io.start_tls(&acceptor).await {
            Ok(()) => {
                // RFC 3207 §4.2: everything learned before TLS is forgotten.
                self.helo = None;
                self.authenticated = None;
                self.tx = None;
                Flow::Continue
            }
            Err(e) => {
                tracing::debug!(peer = %self.peer, error = %e, "STARTTLS handshake failed");
                Flow::Close
            }
        }
    }

    /// Whether AUTH may be used now: under TLS always; in plain text only when no certificate
    /// is configured at all and the client is on this machine.
    pub fn auth_permitted(&self) -> bool {
        if self.io.is_tls() {
            return true;
        }
        if self.rt.tls.is_some() {
            return false;
        }
        match self.peer.ip() {
            std::net::IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
            ip => ip.is_loopback(),
        }
    }

    /// Replies with a protocol error and counts it; after `smtp.max_errors` the session ends.
    pub fn error(&mut self, line: &str) -> Flow {
        self.io.reply(line);
        self.errors += 1;
        if self.errors >= self.rt.config.smtp.max_errors {
            tracing::info!(peer = %self.peer, errors = self.errors, "SMTP session closed after too many errors");
            let bye = reply::too_many_errors(self.hostname());
            self.io.reply(&bye);
            return Flow::Close;
        }
        Flow::Continue
    }

    /// Counts a refused message (or refused client) in `baton_ingest_rejections_total`.
    pub fn count_rejection(&self, reason: &'static str) {
        self.shared.metrics.ingest_rejections.with_label_values(&["smtp", reason]).inc();
    }

    pub fn refuse_shutting_down(&mut self) {
        self.count_rejection("shutting_down");
        let bye = reply::shutting_down(self.hostname());
        self.io.reply(&bye);
    }

    /// The reply (if any) for input that could not be read; the session ends either way.
    pub fn read_failed(&mut self, e: ReadError) {
        match e {
            ReadError::Idle => {
                tracing::debug!(peer = %self.peer, "SMTP session idle for too long");
                self.shared.metrics.smtp_timeouts.with_label_values(&["idle"]).inc();
                let bye = reply::idle_timeout(self.hostname());
                self.io.reply(&bye);
            }
            ReadError::TooSlow(phase) => {
                tracing::info!(peer = %self.peer, phase = phase.as_str(), "SMTP input too slow; closing");
                self.shared.metrics.smtp_timeouts.with_label_values(&[phase.as_str()]).inc();
                let bye = match phase {
                    Phase::Command => reply::command_timeout(self.hostname()),
                    Phase::Data => reply::data_timeout(self.hostname()),
                };
                self.io.reply(&bye);
            }
            ReadError::Stopped => {
                let bye = reply::shutting_down(self.hostname());
                self.io.reply(&bye);
            }
            ReadError::Closed => {}
            ReadError::Io(e) => tracing::debug!(peer = %self.peer, error = %e, "SMTP connection error"),
        }
    }
}
