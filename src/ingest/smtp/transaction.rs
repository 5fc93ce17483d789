//! The mail transaction: MAIL FROM (who is sending and may they), RCPT TO, then the content by
//! DATA or BDAT, handed to the spool through [`crate::ingest::accept`]. The `250 ... queued as`
//! reply is written only after `accept` returns, i.e. after the spool's fsync.

use super::data::{self, Received};
use super::received::{Trace, protocol};
use super::reply;
use super::session::{Flow, Session};
use crate::ingest::compose::Composed;
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
            // An unauthenticated client from a network no client owns: a relay attempt.
            self.count_rejection("auth");
            return self.error(reply::AUTH_REQUIRED);
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
        if address.is_empty() {
            return self.reject("sender_not_allowed", reply::NULL_SENDER);
        }
        if !smtputf8 && !address.is_ascii() {
            return self.error(reply::NEEDS_SMTPUTF8);
        }
        if !well_formed(&address) {
            return self.error(reply::BAD_SENDER);
        }
        if !client.may_send_from(&address) {
            tracing::info!(peer = %self.peer.ip(), client = %client.name, sender = %address, "SMTP sender not allowed for this client");
            return self.reject("sender_not_allowed", reply::SENDER_NOT_ALLOWED);
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
        match data::receive_data(&mut self.io, &mut body, limit).await {
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
        // A refused chunk is still read, or its bytes would be taken for commands.
        if let Some(refusal) = self.content_refusal() {
            return match data::receive_chunk(&mut self.io, None, size).await {
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
            self.tx.as_mut().expect("checked").chunks = Some(Chunks { id, body, header_len });
        }
        let chunks = self.tx.as_mut().and_then(|tx| tx.chunks.as_mut()).expect("set above");
        let fits = (chunks.body.len() - chunks.header_len).saturating_add(size) <= limit;
        let target = fits.then_some(&mut chunks.body);
        if let Err(e) = data::receive_chunk(&mut self.io, target, size).await {
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
        let Chunks { id, body, header_len } = self.tx.as_mut().and_then(|tx| tx.chunks.take()).expect("set above");
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
        if self.stop.is_cancelled() {
            self.refuse_shutting_down();
            return Flow::Close;
        }
        let composed =
            Composed { mail_from: tx.mail_from, recipients: tx.recipients, body, stream: None, tags: Vec::new() };
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
            Err(e @ (IngestError::Internal(_) | IngestError::IdempotencyConflict(_))) => {
                let detail = e.to_string();
                tracing::error!(error = %detail, "SMTP ingest failed");
                self.reject("internal", reply::INTERNAL)
            }
        }
    }
}
