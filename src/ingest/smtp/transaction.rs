//! The mail transaction: MAIL FROM (who is sending and may they), RCPT TO, then the content by
//! DATA or BDAT, handed to the spool through [`crate::ingest::accept`]. The `250 ... queued as`
//! reply is written only after `accept` returns, i.e. after the spool's fsync.
//!
//! Before that, the content is checked (no NUL, no bare CR: see `data.rs`) and, when missing,
//! given `Date:` and `Message-ID:` (`submission.rs`). The null sender (`MAIL FROM:<>`) is taken
//! only from clients with `allow_null_sender` (MTAs relaying their bounces).

use super::data::{self, Received};
use super::io::{Deadline, Phase, ReadError};
use super::received::{Trace, protocol};
use super::reply;
use super::session::{Flow, Session};
use super::submission;
use crate::ingest::compose::Composed;
use crate::ingest::headers::unsafe_line_ending;
use crate::ingest::{IngestError, accept, new_message_id};
use crate::runtime::Client;
use crate::spool::record::Ingress;
use smtp_proto::{MAIL_BODY_BINARYMIME, MAIL_REQUIRETLS, MAIL_SMTPUTF8, MailFrom, RcptTo};
use std::sync::Arc;

pub struct Transaction {
    client: Arc<Client>,
    mail_from: String,
    /// Accepted recipients, without duplicates.
    recipients: Vec<String>,
    smtputf8: bool,
    /// Size the client announced with `SIZE=` (0 when it did not).
    size_hint: usize,
    /// Whether a `452 4.5.3` was already counted for this transaction.
    counted_too_many: bool,
    /// Content received so far by BDAT (`None` until the first chunk).
    chunks: Option<Chunks>,
}

struct Chunks {
    id: String,
    /// The Received: header followed by the content so far.
    body: Vec<u8>,
    header_len: usize,
    /// All chunks of the transaction must arrive by this (`smtp.data_timeout`).
    deadline: Deadline,
}

/// `local@domain` with both parts present (smtp-proto has checked the characters).
fn well_formed(address: &str) -> bool {
    address.rsplit_once('@').is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
}

impl Session {
    /// The client this session sends for: the one that authenticated, else the one whose
    /// `allowed_networks` contain the peer.
    /// An AUTH login is resolved against the live config each time (a reload may have removed
    /// the user or changed the password since: the session then has to authenticate again).
    fn sending_client(&mut self) -> Option<Arc<Client>> {
        if let Some(login) = &self.authenticated {
            if let Some(client) = self.rt.client_by_smtp_login(&login.username, &login.password) {
                return Some(client.clone());
            }
            tracing::info!(peer = %self.peer, "SMTP login no longer valid after a config reload; AUTH needed again");
            self.authenticated = None;
        }
        self.rt.client_by_network(self.peer.ip()).cloned()
    }

    fn reject(&mut self, reason: &'static str, line: &str) -> Flow {
        self.count_rejection(reason);
        self.io.reply(line);
        Flow::Continue
    }

    pub fn mail(&mut self, from: MailFrom<String>) -> Flow {
        if self.helo.is_none() {
            return self.error(reply::SEND_HELO_FIRST);
        }
        if self.tx.is_some() {
            return self.error(reply::NESTED_MAIL);
        }
        let Some(client) = self.sending_client() else {
            // An unauthenticated client from a network no client owns: a relay attempt. When it
            // could authenticate only after STARTTLS, say so (RFC 3207).
            self.count_rejection("auth");
            let starttls_first = !self.auth_permitted() && self.rt.tls.is_some() && !self.io.is_tls();
            return self.error(if starttls_first { reply::STARTTLS_FIRST } else { reply::AUTH_REQUIRED });
        };
        if from.flags & MAIL_BODY_BINARYMIME != 0 {
            return self.error(reply::BINARY_UNSUPPORTED);
        }
        if from.flags & MAIL_REQUIRETLS != 0 {
            return self.error(reply::REQUIRETLS_UNSUPPORTED);
        }
        let smtputf8 = from.flags & MAIL_SMTPUTF8 != 0;
        if from.size as u64 > self.rt.config.server.max_message_size.0 {
            return self.reject("too_large", reply::TOO_BIG);
        }
        let address = from.address;
        if let Err(refused) = self.check_sender(&client, &address, smtputf8) {
            return refused;
        }
        self.tx = Some(Transaction {
            client,
            mail_from: address,
            recipients: Vec::new(),
            smtputf8,
            size_hint: from.size,
            counted_too_many: false,
            chunks: None,
        });
        self.io.reply(reply::SENDER_OK);
        Flow::Continue
    }

    /// Whether `client` may use `address` as its envelope sender; the reply when not.
    fn check_sender(&mut self, client: &Client, address: &str, smtputf8: bool) -> Result<(), Flow> {
        if address.is_empty() {
            // RFC 5321 §4.5.5: the null sender is for notifications (bounces), which an MTA
            // relaying through Baton may have to send; an application has no business with it.
            if self.allows_null_sender(client) {
                return Ok(());
            }
            let peer = self.peer.ip();
            tracing::warn!(%peer, client = %client.name, "SMTP null sender refused (allow_null_sender is off)");
            return Err(self.reject("null_sender", reply::NULL_SENDER));
        }
        if !smtputf8 && !address.is_ascii() {
            return Err(self.error(reply::NEEDS_SMTPUTF8));
        }
        if !well_formed(address) {
            return Err(self.error(reply::BAD_SENDER));
        }
        if !client.may_send_from(address) {
            tracing::info!(peer = %self.peer.ip(), client = %client.name, sender = %address, "SMTP sender not allowed for this client");
            return Err(self.reject("sender_not_allowed", reply::SENDER_NOT_ALLOWED));
        }
        Ok(())
    }

    fn allows_null_sender(&self, client: &Client) -> bool {
        self.rt.config.clients.iter().any(|c| c.name == client.name && c.allow_null_sender)
    }

    pub fn rcpt(&mut self, to: RcptTo<String>) -> Flow {
        let max_recipients = self.rt.config.server.max_recipients;
        let Some(tx) = self.tx.as_mut() else {
            return self.error(reply::NEED_MAIL);
        };
        if tx.chunks.is_some() {
            return self.error(reply::NOT_IN_TRANSACTION);
        }
        let address = to.address;
        // smtp-proto turns `<postmaster>` into an empty address; Baton has no local mailboxes.
        if address.is_empty() || !well_formed(&address) {
            return self.error(reply::BAD_RECIPIENT);
        }
        if !tx.smtputf8 && !address.is_ascii() {
            return self.error(reply::NEEDS_SMTPUTF8);
        }
        if tx.recipients.iter().any(|r| r.eq_ignore_ascii_case(&address)) {
            self.io.reply(reply::RECIPIENT_OK);
            return Flow::Continue;
        }
        if tx.recipients.len() >= max_recipients {
            let first = !tx.counted_too_many;
            tx.counted_too_many = true;
            if first {
                self.count_rejection("invalid");
            }
            self.io.reply(reply::TOO_MANY_RECIPIENTS);
            return Flow::Continue;
        }
        tx.recipients.push(address);
        self.io.reply(reply::RECIPIENT_OK);
        Flow::Continue
    }

    /// The Received: header for the current transaction.
    fn trace_header(&self, id: &str) -> String {
        let tx = self.tx.as_ref().expect("called inside a transaction");
        let helo = self.helo.as_ref().expect("MAIL needs HELO");
        let tls = self.io.tls_description();
        Trace {
            helo: &helo.name,
            peer: self.peer.ip(),
            by: self.hostname(),
            protocol: protocol(helo.extended, tx.smtputf8, self.io.is_tls(), self.authenticated.is_some()),
            id,
            tls: tls.as_deref(),
            single_recipient: (tx.recipients.len() == 1).then(|| tx.recipients[0].as_str()),
        }
        .header()
    }

    /// Why the content of the current transaction cannot be sent now, if it cannot.
    fn content_refusal(&self) -> Option<&'static str> {
        match &self.tx {
            None => Some(reply::NEED_MAIL),
            Some(tx) if tx.recipients.is_empty() => Some(reply::NO_VALID_RECIPIENTS),
            Some(_) => None,
        }
    }

    pub async fn data(&mut self) -> Flow {
        if let Some(refusal) = self.content_refusal() {
            return self.error(refusal);
        }
        if self.tx.as_ref().is_some_and(|tx| tx.chunks.is_some()) {
            return self.error(reply::BDAT_AFTER_DATA_MIX);
        }
        let limit = self.rt.config.server.max_message_size.0 as usize;
        let id = new_message_id();
        let header = self.trace_header(&id);
        // SIZE= saves reallocations, but it is only a claim: never reserve more than 1 MiB on it.
        let hint = self.tx.as_ref().map_or(0, |tx| tx.size_hint).min(limit).clamp(4096, 1 << 20);
        let mut body = Vec::with_capacity(header.len() + hint + 2);
        body.extend_from_slice(header.as_bytes());
        self.io.reply(reply::START_DATA);
        let deadline = Deadline::after(self.rt.config.smtp.data_timeout.0, Phase::Data);
        match data::receive_data(&mut self.io, &mut body, limit, deadline).await {
            Ok(Received::Complete) => {}
            Ok(Received::TooLarge) => {
                self.tx = None;
                return self.reject("too_large", reply::TOO_BIG);
            }
            Err(e) => {
                self.read_failed(e);
                return Flow::Close;
            }
        }
        self.finish(id, body, header.len(), true).await
    }

    pub async fn bdat(&mut self, size: usize, last: bool) -> Flow {
        let limit = self.rt.config.server.max_message_size.0 as usize;
        let data_timeout = self.rt.config.smtp.data_timeout.0;
        // A refused chunk is still read, or its bytes would be taken for commands.
        if let Some(refusal) = self.content_refusal() {
            let deadline = Deadline::after(data_timeout, Phase::Data);
            return match data::receive_chunk(&mut self.io, None, size, deadline).await {
                Ok(()) => self.error(refusal),
                Err(e) => {
                    self.read_failed(e);
                    Flow::Close
                }
            };
        }
        if self.tx.as_ref().is_some_and(|tx| tx.chunks.is_none()) {
            let id = new_message_id();
            let body = self.trace_header(&id).into_bytes();
            let header_len = body.len();
            let deadline = Deadline::after(data_timeout, Phase::Data);
            self.tx.as_mut().expect("checked").chunks = Some(Chunks { id, body, header_len, deadline });
        }
        let chunks = self.tx.as_mut().and_then(|tx| tx.chunks.as_mut()).expect("set above");
        let deadline = chunks.deadline;
        // Many small chunks, each quick, must not stretch a transaction past its deadline.
        if deadline.passed() {
            self.read_failed(ReadError::TooSlow(Phase::Data));
            return Flow::Close;
        }
        let fits = (chunks.body.len() - chunks.header_len).saturating_add(size) <= limit;
        let target = fits.then_some(&mut chunks.body);
        if let Err(e) = data::receive_chunk(&mut self.io, target, size, deadline).await {
            self.read_failed(e);
            return Flow::Close;
        }
        if !fits {
            // RFC 3030 §4.1: after a failed chunk the client sends no more for this transaction.
            self.tx = None;
            return self.reject("too_large", reply::TOO_BIG);
        }
        if !last {
            self.io.reply(&format!("250 2.0.0 {size} octets received"));
            return Flow::Continue;
        }
        let Chunks { id, body, header_len, .. } = self.tx.as_mut().and_then(|tx| tx.chunks.take()).expect("set above");
        self.finish(id, body, header_len, false).await
    }

    /// Spools the received message and answers for it. Ends the transaction. `dot_stuffed`:
    /// the content came by DATA (not BDAT).
    async fn finish(&mut self, id: String, mut body: Vec<u8>, header_len: usize, dot_stuffed: bool) -> Flow {
        let tx = self.tx.take().expect("called inside a transaction");
        data::normalize_bare_lf(&mut body, header_len, dot_stuffed);
        if (body.len() - header_len) as u64 > self.rt.config.server.max_message_size.0 {
            return self.reject("too_large", reply::TOO_BIG);
        }
        if let Some(why) = unsafe_line_ending(&body[header_len..]) {
            tracing::info!(peer = %self.peer.ip(), client = %tx.client.name, why, "SMTP message refused");
            return self.reject("invalid", &reply::unsafe_content(why));
        }
        if let Some(address) = crate::ingest::headers::foreign_header_sender(&tx.client, &body) {
            tracing::info!(peer = %self.peer.ip(), client = %tx.client.name, %address, "SMTP message refused: From:/Sender: not this client's");
            return self.reject("sender_not_allowed", reply::HEADER_SENDER_NOT_ALLOWED);
        }
        // RFC 6409 §8: a submission server removes Bcc: before the message goes on.
        let mut body = crate::ingest::headers::strip_bcc(body);
        if self.stop.is_cancelled() {
            self.refuse_shutting_down();
            return Flow::Close;
        }
        let date = mail_builder::headers::date::Date::now().to_rfc822();
        submission::add_missing_fields(&mut body, header_len, &id, self.hostname(), &date);
        let composed = Composed {
            mail_from: tx.mail_from,
            recipients: tx.recipients,
            body,
            stream: None,
            tags: Vec::new(),
            metadata: Default::default(),
            passthrough: None,
        };
        match accept(&self.shared, id, &tx.client.name, Ingress::Smtp, composed, None).await {
            Ok((id, _)) => {
                self.io.reply(&reply::queued(&id));
                Flow::Continue
            }
            Err(IngestError::SpoolFull) => self.reject("spool_full", reply::SPOOL_FULL),
            Err(IngestError::ShuttingDown) => {
                self.refuse_shutting_down();
                Flow::Close
            }
            // SMTP has no idempotency keys.
            Err(e @ (IngestError::Internal(_) | IngestError::IdempotencyConflict(_) | IngestError::InProgress)) => {
                let detail = e.to_string();
                tracing::error!(error = %detail, "SMTP ingest failed");
                self.reject("internal", reply::INTERNAL)
            }
        }
    }
}
