//! Ingest: how mail enters Baton. Every ingress (HTTP now, SMTP later) authenticates the
//! client, checks its sender, and hands the message to [`accept`], which answers only after the
//! message is durably in the spool.

pub mod compat;
pub mod compose;
pub mod headers;
pub mod http;
pub mod smtp;
pub mod submit;
pub mod webhooks;

use crate::cluster::Claimed;
use crate::shared::Shared;
use crate::spool::record::{Ingress, MessageRecord, MessageStatus, Recipient, now_ms};
use crate::spool::{Inserted, SpoolError};
use compose::Composed;

/// Most refused-request log lines per [`REFUSAL_LOG_WINDOW`]; the rest are counted and the
/// count is reported by the next line that is written (a credential-stuffing client must not
/// flood the log; the metric `baton_ingest_rejections_total` counts every refusal).
const REFUSAL_LOG_BURST: u32 = 20;
const REFUSAL_LOG_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// Logs an HTTP request refused for its credentials (401) or its sender (403), rate-limited.
/// Never the key: `why` says only what was wrong ("missing API key", "invalid API key").
pub fn log_refusal(api: &str, status: u16, reason: &str, why: &str) {
    use std::sync::Mutex;
    use std::time::Instant;
    // (window start, lines written in it, lines left out since the last one written)
    static STATE: Mutex<Option<(Instant, u32, u64)>> = Mutex::new(None);
    let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    let (start, written, skipped) = state.get_or_insert((now, 0, 0));
    if now.duration_since(*start) >= REFUSAL_LOG_WINDOW {
        (*start, *written) = (now, 0);
    }
    if *written >= REFUSAL_LOG_BURST {
        *skipped += 1;
        return;
    }
    *written += 1;
    let left_out = std::mem::take(skipped);
    tracing::warn!(api, status, reason, why, similar_lines_left_out = left_out, "HTTP request refused");
}

/// The credentials of `Authorization: Bearer <token>`, for every HTTP API (Baton's, the
/// provider-compatible ones, admin). The scheme is matched without regard to case, as RFC 9110
/// §11.1 says (`bearer`, `BEARER`), and spaces around the token are ignored (a key pasted with a
/// trailing space still works). `None`: no such header, another scheme, or no token.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the spool is full; try again later")]
    SpoolFull,
    #[error("Baton is shutting down; try again shortly")]
    ShuttingDown,
    #[error("Idempotency-Key was already used with a different request (message {0}); use a new key for a new message")]
    IdempotencyConflict(String),
    #[error("a request with this Idempotency-Key is being accepted by another node; try again shortly")]
    InProgress,
    #[error("internal error: {0}")]
    Internal(String),
}

/// An `Idempotency-Key` and a fingerprint of the request it came with: the same key with
/// another request is refused, as Stripe and the IETF Idempotency-Key draft do, instead of
/// silently answering with the first message.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub request: String,
}

impl IngestError {
    pub fn reason(&self) -> &'static str {
        match self {
            IngestError::SpoolFull => "spool_full",
            IngestError::ShuttingDown => "shutting_down",
            IngestError::IdempotencyConflict(_) => "idempotency_conflict",
            IngestError::InProgress => "idempotency_in_progress",
            IngestError::Internal(_) => "internal",
        }
    }
}

/// A new message id: a ULID (sortable by time, unique without coordination).
pub fn new_message_id() -> String {
    ulid::Ulid::new().to_string()
}

/// Spools a message and queues it for delivery. Returns its id (the earlier message's id when
/// the idempotency key was already used) and whether it is new.
pub async fn accept(
    shared: &Shared,
    id: String,
    client: &str,
    ingress: Ingress,
    message: Composed,
    idempotency: Option<Idempotency>,
) -> Result<(String, bool), IngestError> {
    if shared.is_shutting_down() {
        return Err(IngestError::ShuttingDown);
    }
    let now = now_ms();
    let record = MessageRecord {
        id,
        client: client.to_string(),
        ingress,
        mail_from: message.mail_from,
        recipients: message.recipients.into_iter().map(Recipient::new).collect(),
        attempts: Vec::new(),
        stream: message.stream,
        tags: message.tags,
        metadata: message.metadata,
        passthrough: message.passthrough,
        created_ms: now,
        next_attempt_ms: now,
        failed_passes: 0,
        status: MessageStatus::Queued,
        size: message.body.len() as u64,
        completed_ms: None,
        idempotency_key: idempotency.as_ref().map(|i| i.key.clone()),
        body_kept: false,
        redelivered_from: None,
    };
    // In a cluster the key is claimed for the whole cluster first: the same request retried
    // onto another node gets the first node's message id.
    let claim = match (&idempotency, &shared.cluster) {
        (Some(i), Some(cluster)) => match cluster.claim(client, &i.key, &record.id, &i.request).await {
            Claimed::First(claim) => Some((cluster, i.key.clone(), claim)),
            Claimed::Earlier(first) if first.request == i.request => {
                tracing::info!(message_id = %first.id, client, node = %first.node, "idempotency key reused: returning the earlier message");
                return Ok((first.id, false));
            }
            Claimed::Earlier(first) => return Err(IngestError::IdempotencyConflict(first.id)),
            Claimed::InProgress => return Err(IngestError::InProgress),
            Claimed::Unknown => None,
        },
        _ => None,
    };
    let request = idempotency.map(|i| i.request);
    let body = bytes::Bytes::from(message.body);
    let inserted = shared.spool.insert(&record, body.clone(), request).await;
    if let Some((cluster, key, claim)) = claim {
        match &inserted {
            Ok(Inserted::New) => cluster.confirm(client, &key, &claim).await,
            // Not accepted here after all (or this node already had the key).
            _ => cluster.release(client, &key, &claim).await,
        }
    }
    match inserted {
        Ok(Inserted::New) => {
            shared.metrics.messages_received.with_label_values(&[ingress.as_str(), client]).inc();
            tracing::info!(message_id = %record.id, client, ingress = ingress.as_str(), recipients = record.recipients.len(), size = record.size, "message accepted");
            let id = record.id.clone();
            // Committed: the first delivery pass may start from these very bytes.
            shared.queue.schedule_kept(record, body);
            Ok((id, true))
        }
        Ok(Inserted::Existing(existing)) => {
            tracing::info!(message_id = %existing, client, "idempotency key reused: returning the earlier message");
            Ok((existing, false))
        }
        Ok(Inserted::Conflict(existing)) => Err(IngestError::IdempotencyConflict(existing)),
        Err(SpoolError::Full) => Err(IngestError::SpoolFull),
        Err(SpoolError::Closed) => Err(IngestError::ShuttingDown),
        Err(e) => Err(IngestError::Internal(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::bearer_token;
    use axum::http::{HeaderMap, HeaderValue, header};

    #[test]
    fn the_bearer_scheme_is_matched_without_case_and_spaces_around_the_token_are_ignored() {
        let token = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            bearer_token(&h).map(str::to_string)
        };
        for ok in ["Bearer k-1", "bearer k-1", "BEARER k-1", "Bearer   k-1  ", " Bearer k-1"] {
            assert_eq!(token(ok).as_deref(), Some("k-1"), "{ok:?}");
        }
        for refused in ["Basic k-1", "Bearer", "Bearer   ", "Bearerk-1", "k-1"] {
            assert_eq!(token(refused), None, "{refused:?}");
        }
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }
}
