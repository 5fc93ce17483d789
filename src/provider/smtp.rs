//! The `smtp` provider: hands messages to an SMTP relay with lettre.
//!
//! We drive lettre's connection API (MAIL, RCPT, DATA and their replies) rather than its
//! transport, because the transport stops at the first refused RCPT and hides per-recipient
//! replies, which Baton needs to tell "bad recipient" from "bad provider". For the same reason
//! the small idle connection pool below is ours: lettre's pool is tied to its transport.
//!
//! When the relay offers PIPELINING (RFC 2920) the envelope — MAIL, every RCPT, DATA — goes in
//! one write and the replies are read in order: two round trips a message instead of four or
//! more, which on a busy machine is most of a send's time (docs/benchmarks.md, "Pipeline").
//! lettre neither pipelines nor keeps the PIPELINING keyword, so a new session asks EHLO once
//! more before AUTH, and the envelope is one command text. A pipelined transaction that goes
//! wrong half-way drops the connection instead of trying to resynchronise it.
//!
//! Replies are classified by [`super::smtp_classify`] (text before code: account blocks behind
//! 4xx codes, unverified senders at any code). A relay's "too many recipients" sends the rest in
//! another transaction of the same attempt; a failure after some recipients went through keeps
//! its class, so health sees it, and those recipients stay delivered. The probe is connect,
//! EHLO, STARTTLS, AUTH, QUIT; the half-open trial goes one step further (MAIL FROM, RCPT TO the
//! first recipient, RSET, QUIT) and sends nothing.

use super::redact::Secrets;
use super::smtp_classify::{Stage, classify, is_too_many_recipients, reject_reason};
use super::smtp_stream;
use super::{Outbound, Provider, probe_failure, trial_accepted};
use crate::config::{SmtpProviderConfig, TlsMode};
use crate::health::ProbeReport;
use crate::outcome::{OutcomeClass, RecipientResult, RejectReason, SendReport, truncate_detail};
use lettre::Address;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use std::error::Error as _;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, SemaphorePermit};

/// Idle connections older than this are closed instead of reused.
const MAX_IDLE: Duration = Duration::from_secs(60);
/// Idle connections older than this are checked with NOOP before reuse.
const CHECK_AFTER: Duration = Duration::from_secs(5);

pub struct SmtpProvider {
    name: String,
    host: String,
    port: u16,
    tls: TlsMode,
    /// STARTTLS settings (lettre upgrades the connection).
    tls_params: Option<TlsParameters>,
    /// Implicit TLS (smtps): we open the TLS stream ourselves.
    implicit_tls: Option<tokio_rustls::TlsConnector>,
    credentials: Option<Credentials>,
    timeout: Duration,
    hello: ClientId,
    slots: Semaphore,
    /// Idle connections: the connection, whether the relay offers PIPELINING, since when idle.
    idle: Mutex<Vec<(AsyncSmtpConnection, bool, Instant)>>,
    max_idle_connections: usize,
    /// The login in every form it travels in: a relay echoing it must not put it in details.
    secrets: Secrets,
}

/// A failure that ends the attempt: what the provider said and at which stage.
struct Failure {
    class: OutcomeClass,
    detail: String,
}

fn failure_from(stage: Stage, e: &lettre::transport::smtp::Error) -> Failure {
    match e.status() {
        Some(code) => {
            let code = u16::from(code);
            let text = e.source().map(|s| s.to_string()).unwrap_or_default();
            Failure {
                class: classify(stage, code, &text),
                detail: truncate_detail(&format!("{} {code} {text}", stage.as_str())),
            }
        }
        None if e.is_client() && stage == Stage::Auth => {
            Failure { class: OutcomeClass::Account, detail: truncate_detail(&format!("auth: {e}")) }
        }
        None => {
            Failure { class: OutcomeClass::Transient, detail: truncate_detail(&format!("{}: {e}", stage.as_str())) }
        }
    }
}

impl SmtpProvider {
    pub fn new(name: &str, c: &SmtpProviderConfig, hostname: &str) -> Result<Self, String> {
        let tls_params = if c.tls == TlsMode::None {
            None
        } else {
            let mut builder = TlsParameters::builder(c.host.clone());
            if let Some(ca) = &c.ca_file {
                let pem = std::fs::read(ca).map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
                let cert =
                    Certificate::from_pem(&pem).map_err(|e| format!("invalid certificate in {}: {e}", ca.display()))?;
                builder = builder.add_root_certificate(cert);
            }
            Some(builder.build_rustls().map_err(|e| format!("TLS setup failed: {e}"))?)
        };
        let credentials = match (&c.username, &c.password) {
            (Some(u), Some(p)) => Some(Credentials::new(u.clone(), p.clone())),
            _ => None,
        };
        Ok(SmtpProvider {
            name: name.to_string(),
            host: c.host.clone(),
            port: c.port,
            tls: c.tls,
            implicit_tls: match c.tls {
                TlsMode::Tls => Some(smtp_stream::tls_connector(c.ca_file.as_deref())?),
                _ => None,
            },
            tls_params,
            credentials,
            timeout: c.timeout.0,
            hello: ClientId::Domain(hostname.to_string()),
            slots: Semaphore::new(c.max_connections),
            idle: Mutex::new(Vec::new()),
            max_idle_connections: c.max_connections,
            secrets: match (&c.username, &c.password) {
                (Some(u), Some(p)) => Secrets::new([]).with_login(u, p),
                _ => Secrets::default(),
            },
        })
    }

    /// A new session: connect, EHLO, STARTTLS, AUTH. With `for_sends`, also whether the relay
    /// offers PIPELINING (asked before AUTH; probes and trials do not need it).
    async fn connect(&self, stage: &mut Stage, for_sends: bool) -> Result<(AsyncSmtpConnection, bool), Failure> {
        *stage = Stage::Connect;
        // Our own socket with Nagle off (see smtp_stream.rs); lettre speaks SMTP over it.
        let connect_failed = |e: std::io::Error| Failure {
            class: OutcomeClass::Transient,
            detail: truncate_detail(&format!("connect to {}:{}: {e}", self.host, self.port)),
        };
        let stream: Box<dyn lettre::transport::smtp::client::AsyncTokioStream> = match &self.implicit_tls {
            Some(connector) => {
                Box::new(smtp_stream::connect_tls(connector, &self.host, self.port).await.map_err(connect_failed)?)
            }
            None => Box::new(smtp_stream::connect(&self.host, self.port).await.map_err(connect_failed)?),
        };
        let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &self.hello)
            .await
            .map_err(|e| failure_from(Stage::Connect, &e))?;
        if self.tls == TlsMode::Starttls {
            *stage = Stage::Tls;
            if !conn.server_info().supports_feature(Extension::StartTls) {
                return Err(Failure {
                    class: OutcomeClass::Account,
                    detail: "server does not offer STARTTLS but tls = \"starttls\" is configured".into(),
                });
            }
            let params = self.tls_params.clone().expect("TLS parameters exist when TLS is on");
            conn.starttls(params, &self.hello).await.map_err(|e| failure_from(Stage::Tls, &e))?;
        }
        let pipelining = for_sends && offers_pipelining(&mut conn, &self.hello).await;
        if let Some(creds) = &self.credentials {
            *stage = Stage::Auth;
            conn.auth(&[Mechanism::Plain, Mechanism::Login], creds).await.map_err(|e| failure_from(Stage::Auth, &e))?;
        }
        Ok((conn, pipelining))
    }

    /// The report with the login blanked out of everything the relay said.
    fn scrubbed(&self, mut report: SendReport) -> SendReport {
        report.detail = self.secrets.scrub(&report.detail);
        for r in &mut report.recipients {
            if let RecipientResult::Rejected { detail, .. } = r {
                *detail = self.secrets.scrub(detail);
            }
        }
        report
    }

    /// A connection slot (at most `max_connections` sessions at once).
    async fn slot(&self) -> Result<SemaphorePermit<'_>, Failure> {
        self.slots
            .acquire()
            .await
            .map_err(|_| Failure { class: OutcomeClass::Transient, detail: "provider closed".into() })
    }

    fn timed_out(&self, stage: Stage) -> String {
        format!("timed out after {:?} waiting for {} reply", self.timeout, stage.as_str())
    }

    /// An idle session (checked with NOOP when it has been idle a while) or a new one, and
    /// whether it may pipeline.
    async fn checkout(&self, stage: &mut Stage) -> Result<(AsyncSmtpConnection, bool), Failure> {
        loop {
            let candidate = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some((mut conn, pipelining, since)) = candidate else {
                break;
            };
            let age = since.elapsed();
            if age > MAX_IDLE || conn.has_broken() {
                continue;
            }
            if age > CHECK_AFTER && !conn.test_connected().await {
                continue;
            }
            return Ok((conn, pipelining));
        }
        self.connect(stage, true).await
    }

    fn checkin(&self, conn: AsyncSmtpConnection, pipelining: bool) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle_connections && !conn.has_broken() {
            idle.push((conn, pipelining, Instant::now()));
        }
    }

    /// One send: as many transactions as the relay's recipient limit needs.
    async fn transact(
        &self,
        msg: &Outbound<'_>,
        stage: &mut Stage,
        results: &mut [RecipientResult],
    ) -> Result<String, Failure> {
        let _slot = self.slot().await?;
        let (mut conn, pipelining) = self.checkout(stage).await?;
        let mail = envelope_from(&conn, msg)?;
        let mut remaining: Vec<usize> = (0..msg.recipients.len()).collect();
        let mut last_detail = String::new();
        while !remaining.is_empty() {
            // Addresses that cannot be written as RCPT TO are rejected here, without a command.
            let mut rcpts = Vec::new();
            for &idx in &remaining {
                match Address::from_str(&msg.recipients[idx]) {
                    Ok(a) => rcpts.push((idx, Rcpt::new(a, vec![]))),
                    Err(e) => {
                        let detail = format!("invalid address: {e}");
                        results[idx] = RecipientResult::Rejected { detail, reason: RejectReason::Invalid }
                    }
                }
            }
            // RFC 2920: MAIL, every RCPT and DATA in one write, then their replies in order: two
            // round trips a message (this and the body) instead of three plus one per recipient.
            let pipelined = pipelining && !rcpts.is_empty() && rcpts.len() <= MAX_PIPELINED_RCPTS;
            *stage = Stage::Mail;
            let mut replies = Vec::with_capacity(rcpts.len());
            let mut data_reply = None;
            if pipelined {
                let envelope = Envelope { mail: &mail, rcpts: &rcpts };
                let mail_reply = conn.command(envelope).await;
                for _ in &rcpts {
                    replies.push(conn.read_response().await);
                }
                let data = conn.read_response().await;
                if let Err(e) = mail_reply {
                    // Dropped, not reused: whatever the relay made of the rest is left behind.
                    return Err(failure_from(Stage::Mail, &e));
                }
                data_reply = Some(data);
            } else {
                conn.command(mail.clone()).await.map_err(|e| failure_from(Stage::Mail, &e))?;
            }
            *stage = Stage::Rcpt;
            let mut accepted = Vec::new();
            let mut deferred = Vec::new();
            let mut replies = replies.into_iter();
            for (idx, rcpt) in &rcpts {
                let idx = *idx;
                if !pipelined && !deferred.is_empty() {
                    deferred.push(idx);
                    continue;
                }
                let reply = match replies.next() {
                    Some(reply) => reply,
                    None => conn.command(rcpt.clone()).await,
                };
                match reply {
                    Ok(_) => accepted.push(idx),
                    Err(e) => {
                        let Some(code) = e.status().map(u16::from) else {
                            return Err(failure_from(Stage::Rcpt, &e));
                        };
                        let text = e.source().map(|s| s.to_string()).unwrap_or_default();
                        if is_too_many_recipients(code, &text) && !accepted.is_empty() {
                            deferred.push(idx);
                            continue;
                        }
                        let detail = truncate_detail(&format!("{code} {text}"));
                        match classify(Stage::Rcpt, code, &text) {
                            OutcomeClass::RecipientRejected => {
                                let reason = reject_reason(code, &text);
                                results[idx] = RecipientResult::Rejected { detail, reason }
                            }
                            // A temporary refusal of this one recipient: leave it pending.
                            OutcomeClass::Transient => last_detail = detail,
                            class => {
                                // Pipelined, DATA may be open: the connection is dropped instead.
                                if !pipelined {
                                    let _ = conn.command(Rset).await;
                                }
                                return Err(Failure { class, detail: truncate_detail(&format!("RCPT TO {detail}")) });
                            }
                        }
                    }
                }
            }
            if accepted.is_empty() {
                if matches!(data_reply, Some(Ok(_))) {
                    // The relay opened DATA with no recipient (RFC 2920 says it should not):
                    // the connection is dropped rather than a message ended.
                    return Ok(last_detail);
                }
                *stage = Stage::Mail;
                conn.command(Rset).await.map_err(|e| failure_from(Stage::Mail, &e))?;
                break;
            }
            *stage = Stage::Data;
            match data_reply {
                Some(reply) => reply.map(drop).map_err(|e| failure_from(Stage::Data, &e))?,
                None => conn.command(Data).await.map(drop).map_err(|e| failure_from(Stage::Data, &e))?,
            }
            *stage = Stage::Body;
            // lettre ends the data with CRLF "." CRLF itself; a body that already ends in CRLF
            // would gain a blank line, so hand it over without its last CRLF (byte-exact).
            let data = msg.body.strip_suffix(b"\r\n").unwrap_or(msg.body);
            let reply = conn.message(data).await.map_err(|e| failure_from(Stage::Body, &e))?;
            let text: Vec<&str> = reply.message().collect();
            let text = text.join(" ");
            let queue_id =
                text.split("queued as ").nth(1).map(|s| s.split_whitespace().next().unwrap_or(s).to_string());
            for idx in accepted {
                results[idx] = RecipientResult::Delivered { provider_message_id: queue_id.clone() };
            }
            last_detail = truncate_detail(&format!("{} {text}", u16::from(reply.code())));
            remaining = deferred;
        }
        self.checkin(conn, pipelining);
        Ok(last_detail)
    }

    /// A trial: on a fresh connection (connect, EHLO, STARTTLS and AUTH as for a send), MAIL
    /// FROM the sender and RCPT TO the first recipient, then RSET and QUIT: the relay judges the
    /// envelope and nothing is sent.
    async fn rehearse(&self, msg: &Outbound<'_>, stage: &mut Stage) -> Result<String, Failure> {
        let _slot = self.slot().await?;
        let (mut conn, _) = self.connect(stage, false).await?;
        let mail = envelope_from(&conn, msg)?;
        *stage = Stage::Mail;
        let mut reply = conn.command(mail).await.map_err(|e| failure_from(Stage::Mail, &e))?;
        if let Some(first) = msg.recipients.first() {
            *stage = Stage::Rcpt;
            let rcpt = Address::from_str(first).map_err(|e| Failure {
                class: OutcomeClass::RecipientRejected,
                detail: truncate_detail(&format!("invalid address: {e}")),
            })?;
            reply = conn.command(Rcpt::new(rcpt, vec![])).await.map_err(|e| failure_from(Stage::Rcpt, &e))?;
        }
        let judged = *stage;
        let _ = conn.command(Rset).await;
        let _ = conn.quit().await;
        let text: Vec<&str> = reply.message().collect();
        let code = u16::from(reply.code());
        Ok(truncate_detail(&format!("trial: {} {code} {}; reset, nothing sent", judged.as_str(), text.join(" "))))
    }
}

/// Most recipients sent in one pipelined write; a larger envelope goes command by command, so
/// that neither side can fill its socket buffer waiting for the other to read (RFC 2920, 3.1).
const MAX_PIPELINED_RCPTS: usize = 100;

/// MAIL FROM, the RCPT TOs and DATA as one command text (lettre writes a command in one write
/// and reads one reply; the other replies are read after it).
struct Envelope<'a> {
    mail: &'a Mail,
    rcpts: &'a [(usize, Rcpt)],
}

impl std::fmt::Display for Envelope<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.mail)?;
        for (_, rcpt) in self.rcpts {
            write!(f, "{rcpt}")?;
        }
        write!(f, "{Data}")
    }
}

/// Whether the relay offers PIPELINING. lettre keeps only the EHLO keywords it knows and
/// PIPELINING is not one of them, so EHLO is asked again (allowed at any time before a
/// transaction; done before AUTH). No answer means no pipelining: the session goes on as
/// before, command by command.
async fn offers_pipelining(conn: &mut AsyncSmtpConnection, hello: &ClientId) -> bool {
    match conn.command(Ehlo::new(hello.clone())).await {
        Ok(reply) => reply.message().any(|line| {
            line.split_whitespace().next().is_some_and(|keyword| keyword.eq_ignore_ascii_case("PIPELINING"))
        }),
        Err(_) => false,
    }
}

/// The MAIL FROM command for `msg` on `conn`: 8BITMIME for an 8-bit body (when offered),
/// SMTPUTF8 for non-ASCII addresses (required: without it they cannot go through this relay).
fn envelope_from(conn: &AsyncSmtpConnection, msg: &Outbound<'_>) -> Result<Mail, Failure> {
    // The null sender (`allow_null_sender` clients relaying bounces) goes on as `MAIL FROM:<>`.
    let from = match msg.mail_from {
        "" => None,
        address => Some(Address::from_str(address).map_err(|e| Failure {
            class: OutcomeClass::BadRequest,
            detail: format!("invalid sender address: {e}"),
        })?),
    };
    let mut params = Vec::new();
    if !msg.body.is_ascii() && conn.server_info().supports_feature(Extension::EightBitMime) {
        params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    let needs_utf8 = !msg.mail_from.is_ascii() || msg.recipients.iter().any(|r| !r.is_ascii());
    if needs_utf8 {
        if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
            return Err(Failure {
                class: OutcomeClass::BadRequest,
                detail: "relay does not support SMTPUTF8 for non-ASCII addresses".into(),
            });
        }
        params.push(MailParameter::SmtpUtfEight);
    }
    Ok(Mail::new(from, params))
}

#[async_trait::async_trait]
impl Provider for SmtpProvider {
    fn name(&self) -> &str {
        &self.name
    }

    /// Connect, EHLO, STARTTLS, AUTH, QUIT: proves the relay answers and our login works.
    async fn probe(&self) -> ProbeReport {
        let mut stage = Stage::Connect;
        match tokio::time::timeout(self.timeout, self.connect(&mut stage, false)).await {
            Ok(Ok((mut conn, _))) => {
                let _ = conn.quit().await;
                ProbeReport::usable(format!("{}:{} answered", self.host, self.port))
            }
            Ok(Err(f)) => probe_failure(f.class, self.secrets.scrub(&f.detail)),
            Err(_) => ProbeReport::failed(OutcomeClass::Transient, self.timed_out(stage)),
        }
    }

    async fn send_batch(&self, msg: &Outbound<'_>) -> SendReport {
        let mut results = vec![RecipientResult::NotDone; msg.recipients.len()];
        let mut stage = Stage::Connect;
        let outcome = tokio::time::timeout(self.timeout, self.transact(msg, &mut stage, &mut results)).await;
        let timed_out = outcome.is_err();
        let (failure, detail) = match outcome {
            Ok(Ok(detail)) => (None, detail),
            Ok(Err(f)) => (Some(f.class), f.detail),
            Err(_) => (Some(OutcomeClass::Transient), self.timed_out(stage)),
        };
        let delivered = results.iter().any(|r| matches!(r, RecipientResult::Delivered { .. }));
        let rejected = results.iter().any(|r| matches!(r, RecipientResult::Rejected { .. }));
        let class = match failure {
            // Recipients that went through before the failure stay delivered; the class is the
            // failure's, so health sees it and the rest moves on to the next provider.
            Some(class) => class,
            None if delivered => OutcomeClass::Accepted,
            None if rejected => OutcomeClass::RecipientRejected,
            None => OutcomeClass::Transient,
        };
        self.scrubbed(SendReport {
            class,
            detail,
            recipients: results,
            retry_after: None,
            // Timed out after the data went out: the relay may have queued it anyway.
            possible_duplicate: timed_out && stage == Stage::Body,
        })
    }

    /// MAIL FROM + RCPT TO the first recipient, then RSET: the relay judges the envelope.
    async fn trial(&self, msg: &Outbound<'_>) -> Option<SendReport> {
        let n = msg.recipients.len();
        let mut stage = Stage::Connect;
        let report = match tokio::time::timeout(self.timeout, self.rehearse(msg, &mut stage)).await {
            Ok(Ok(detail)) => trial_accepted(n, detail),
            Ok(Err(f)) => SendReport::failed(f.class, n, f.detail),
            Err(_) => SendReport::failed(OutcomeClass::Transient, n, self.timed_out(stage)),
        };
        Some(self.scrubbed(report))
    }
}
