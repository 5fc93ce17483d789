//! The one path every HTTP API takes into the spool: Baton's own `/v1/messages` and the
//! provider-compatible APIs (`compat/`). An API only authenticates its client, parses its
//! request into a [`SendRequest`] and answers in its own shape; reading the body within the
//! memory budget, composing the message, the sender checks, idempotency and the spool are
//! here, once. Its promise: whichever API a message came in through, it was checked and
//! stored exactly alike, and every refusal is counted under one reason list.

use super::compose::{AddressInput, ComposeError, Composed, SendRequest, compose, envelope_address};
use super::{Idempotency, IngestError, accept, new_message_id};
use crate::runtime::Client;
use crate::shared::Shared;
use crate::spool::record::Ingress;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a request was not accepted; each API turns it into its own error shape.
#[derive(Debug)]
pub enum Refusal {
    /// The request is malformed or a field is invalid (the message names the field).
    Invalid(String),
    /// CR/LF or NUL in a header value, subject or address.
    HeaderInjection(String),
    /// Larger than `server.max_message_size` (the limit in bytes).
    TooLarge(u64),
    /// The client may not send from this address.
    SenderNotAllowed(String),
    /// Too many large requests in flight (`server.http_max_inflight_bytes`).
    Busy,
    SpoolFull,
    ShuttingDown,
    /// The idempotency key was used with another request (the first message's id).
    IdempotencyConflict(String),
    /// Another node is accepting a request with the same idempotency key (cluster mode); a
    /// retry gets that node's message id.
    InProgress,
    /// A provider-stored template, and the client's route has no provider of that type.
    NoTemplateProvider(String),
    Internal,
}

impl Refusal {
    /// The `reason` label of `baton_ingest_rejections_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Invalid(_) => "invalid",
            Refusal::HeaderInjection(_) => "header_injection",
            Refusal::TooLarge(_) => "too_large",
            Refusal::SenderNotAllowed(_) => "sender_not_allowed",
            Refusal::Busy => "rate_limited",
            Refusal::SpoolFull => "spool_full",
            Refusal::ShuttingDown => "shutting_down",
            Refusal::IdempotencyConflict(_) => "idempotency_conflict",
            Refusal::InProgress => "idempotency_in_progress",
            Refusal::NoTemplateProvider(_) => "no_template_provider",
            Refusal::Internal => "internal",
        }
    }

    /// A message for the client (never internal details).
    pub fn message(&self) -> String {
        match self {
            Refusal::Invalid(m)
            | Refusal::HeaderInjection(m)
            | Refusal::SenderNotAllowed(m)
            | Refusal::NoTemplateProvider(m) => m.clone(),
            Refusal::TooLarge(limit) => format!("message is larger than the limit of {limit} bytes"),
            Refusal::Busy => "too many large requests in flight; retry shortly".into(),
            Refusal::SpoolFull => IngestError::SpoolFull.to_string(),
            Refusal::ShuttingDown => IngestError::ShuttingDown.to_string(),
            Refusal::IdempotencyConflict(id) => IngestError::IdempotencyConflict(id.clone()).to_string(),
            Refusal::InProgress => IngestError::InProgress.to_string(),
            Refusal::Internal => "internal error; the message was not accepted".into(),
        }
    }
}

/// Counts a refusal of the HTTP ingress and hands it back.
pub fn count(shared: &Shared, refusal: Refusal) -> Refusal {
    shared.metrics.ingest_rejections.with_label_values(&["http", refusal.reason()]).inc();
    if let Refusal::SenderNotAllowed(_) = &refusal {
        // Not the message: it names the address, and log lines carry no addresses.
        super::log_refusal("http", 403, refusal.reason(), "sender not in the client's allowed_senders");
    }
    refusal
}

/// Room for request bodies in memory, in KiB (`server.http_max_inflight_bytes`), shared by
/// every API on the listener.
#[derive(Clone)]
pub struct BodyBudget {
    room: Arc<Semaphore>,
    kib: u32,
}

/// How long a request waits for room for its body before it is told to come back.
const BUDGET_WAIT: Duration = Duration::from_secs(10);

impl BodyBudget {
    pub fn new(bytes: u64) -> BodyBudget {
        let kib = (bytes / 1024).clamp(1, u64::from(u32::MAX)) as u32;
        BodyBudget { room: Arc::new(Semaphore::new(kib as usize)), kib }
    }

    /// Waits for room for a body of `len` bytes (at most the whole budget, so a large body
    /// proceeds alone); `None` when there is no room within [`BUDGET_WAIT`].
    async fn reserve(&self, len: u64) -> Option<OwnedSemaphorePermit> {
        let want = len.div_ceil(1024).clamp(1, u64::from(self.kib)) as u32;
        tokio::time::timeout(BUDGET_WAIT, self.room.clone().acquire_many_owned(want)).await.ok()?.ok()
    }
}

/// A request body read within the budget; the room is given back when this is dropped.
pub struct ReadBody {
    pub bytes: Bytes,
    _room: OwnedSemaphorePermit,
}

/// Reads a request body of at most what a message of `server.max_message_size` can take in
/// JSON (base64 is 4/3 of the bytes, plus some structure), waiting for room in the budget.
pub async fn read_body(
    shared: &Shared,
    budget: &BodyBudget,
    headers: &HeaderMap,
    body: Body,
) -> Result<ReadBody, Refusal> {
    if shared.is_shutting_down() {
        return Err(count(shared, Refusal::ShuttingDown));
    }
    let max_size = shared.runtime.load().config.server.max_message_size.0;
    let limit = (max_size as usize).saturating_mul(4) / 3 + 64 * 1024;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(limit as u64)
        .min(limit as u64);
    let Some(room) = budget.reserve(declared).await else {
        return Err(count(shared, Refusal::Busy));
    };
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| count(shared, Refusal::TooLarge(max_size)))?;
    Ok(ReadBody { bytes, _room: room })
}

/// The `Idempotency-Key` header with a fingerprint of the JSON request `body` (its keys in a
/// fixed order, so formatting and key order do not matter), or a refusal for a malformed key.
/// The body is re-read only when there is a key.
pub fn idempotency(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<Option<Idempotency>, Refusal> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => match v.to_str() {
            Ok(k) if !k.is_empty() && k.len() <= 255 => {
                let canonical =
                    serde_json::from_slice::<serde_json::Value>(body).map(|v| v.to_string()).unwrap_or_default();
                Ok(Some(Idempotency { key: k.to_string(), request: crate::config::text_hash(&canonical) }))
            }
            _ => {
                Err(count(shared, Refusal::Invalid("Idempotency-Key must be 1 to 255 visible ASCII characters".into())))
            }
        },
    }
}

/// A request to send with a template stored at the provider (Mandrill `send-template`,
/// SendGrid `template_id`, Postmark `withTemplate`, Resend `template`): Baton cannot render
/// it, so it is spooled as the API's own request and sent through a provider of the same
/// type in the client's route, with no failover.
pub struct TemplateRequest {
    /// The compatible API it came in through, which is also the provider type that can send it.
    pub api: &'static str,
    /// The sender as given (`"Name <a@example.com>"` or a bare address).
    pub from: AddressInput,
    /// Every recipient (to, cc, bcc), as given.
    pub recipients: Vec<AddressInput>,
    pub stream: Option<String>,
    pub tags: Vec<String>,
    pub metadata: std::collections::BTreeMap<String, String>,
    /// The request as the provider's API takes it, without the client's credentials.
    pub body: Vec<u8>,
}

/// What an API hands to [`submit`]: a message for Baton to compose, or a provider-stored
/// template request to pass through.
pub enum Submission {
    Compose(SendRequest),
    Template(TemplateRequest),
}

impl From<SendRequest> for Submission {
    fn from(r: SendRequest) -> Submission {
        Submission::Compose(r)
    }
}

impl From<TemplateRequest> for Submission {
    fn from(r: TemplateRequest) -> Submission {
        Submission::Template(r)
    }
}

/// Checks a [`TemplateRequest`] for `client` and pins it to the first provider of its type in
/// the client's route. The same checks as a composed message: the sender is one the client
/// may use, the recipients are addresses, the size is within the limit.
fn prepare_template(shared: &Shared, client: &Client, request: TemplateRequest) -> Result<Prepared, Refusal> {
    let runtime = shared.runtime.load_full();
    let server = &runtime.config.server;
    let invalid = |e: ComposeError| match e {
        ComposeError::HeaderInjection(m) => Refusal::HeaderInjection(m),
        ComposeError::Invalid(m) => Refusal::Invalid(m),
        ComposeError::TooLarge(limit) => Refusal::TooLarge(limit),
    };
    let from = envelope_address("from", &request.from).map_err(|e| count(shared, invalid(e)))?;
    let mut recipients: Vec<String> = Vec::with_capacity(request.recipients.len());
    for (i, r) in request.recipients.iter().enumerate() {
        let email = envelope_address(&format!("to[{i}]"), r).map_err(|e| count(shared, invalid(e)))?;
        if !recipients.iter().any(|known| known.eq_ignore_ascii_case(&email)) {
            recipients.push(email);
        }
    }
    if recipients.is_empty() {
        return Err(count(shared, Refusal::Invalid("to: at least one recipient is required".into())));
    }
    if recipients.len() > server.max_recipients {
        let m = format!("to: at most {} recipients per message", server.max_recipients);
        return Err(count(shared, Refusal::Invalid(m)));
    }
    if request.body.len() as u64 > server.max_message_size.0 {
        return Err(count(shared, Refusal::TooLarge(server.max_message_size.0)));
    }
    if !client.may_send_from(&from) {
        let m = format!("client {:?} may not send from {from}", client.name);
        return Err(count(shared, Refusal::SenderNotAllowed(m)));
    }
    let route = runtime.route_for(&client.name, &from, request.stream.as_deref());
    let provider = route.and_then(|route| {
        let same_type =
            |name: &&String| runtime.config.providers.get(*name).is_some_and(|p| p.type_name() == request.api);
        route.providers.iter().find(same_type).cloned()
    });
    let Some(provider) = provider else {
        let route = route.map_or("(none)", |r| r.name.as_str());
        let m = format!(
            "the template is stored at {api}, and route {route:?} has no {api} provider to send it with (provider templates cannot fail over to another provider)",
            api = request.api
        );
        return Err(count(shared, Refusal::NoTemplateProvider(m)));
    };
    let message = Composed {
        mail_from: from,
        recipients,
        body: request.body,
        stream: request.stream,
        tags: request.tags,
        metadata: request.metadata,
        passthrough: Some(provider),
    };
    Ok(Prepared { id: new_message_id(), message })
}

/// A submission that passed every check, ready for the spool.
pub struct Prepared {
    id: String,
    message: Composed,
}

/// Checks and spools one submission for `client`. Returns its id (the earlier message's id
/// when the idempotency key was already used for the same request).
pub async fn submit(
    shared: &Shared,
    client: &Client,
    request: impl Into<Submission>,
    idempotency: Option<Idempotency>,
) -> Result<String, Refusal> {
    let prepared = prepare(shared, client, request).await?;
    spool(shared, client, prepared, idempotency).await
}

/// Every check of [`submit`] without spooling: an API whose request holds several messages
/// (SendGrid's personalizations) prepares them all first, so that a refused one leaves none
/// spooled, as the provider would.
pub async fn prepare(shared: &Shared, client: &Client, request: impl Into<Submission>) -> Result<Prepared, Refusal> {
    match request.into() {
        Submission::Compose(request) => prepare_composed(shared, client, request).await,
        Submission::Template(request) => prepare_template(shared, client, request),
    }
}

/// Requests with up to this much content are composed on the async worker (tens of µs).
const COMPOSE_IN_PLACE_BYTES: usize = 16 * 1024;

/// Composes and checks one message for `client`.
async fn prepare_composed(shared: &Shared, client: &Client, request: SendRequest) -> Result<Prepared, Refusal> {
    let runtime = shared.runtime.load_full();
    let server = &runtime.config.server;
    let id = new_message_id();
    // Decoding and building a large message is CPU work: off the async workers, so admin,
    // SMTP and delivery stay responsive meanwhile. A small one is built in place: handing it
    // to another thread would cost more than building it.
    let (max_size, max_recipients) = (server.max_message_size.0, server.max_recipients);
    let built = if request.content_len() <= COMPOSE_IN_PLACE_BYTES {
        compose(request, &id, &server.hostname, max_size, max_recipients)
    } else {
        let (message_id, hostname) = (id.clone(), server.hostname.clone());
        tokio::task::spawn_blocking(move || compose(request, &message_id, &hostname, max_size, max_recipients))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "message composition failed");
                count(shared, Refusal::Internal)
            })?
    };
    let composed = built.map_err(|e| {
        count(
            shared,
            match e {
                ComposeError::Invalid(m) => Refusal::Invalid(m),
                ComposeError::HeaderInjection(m) => Refusal::HeaderInjection(m),
                ComposeError::TooLarge(limit) => Refusal::TooLarge(limit),
            },
        )
    })?;
    if !client.may_send_from(&composed.mail_from) {
        let m = format!("client {:?} may not send from {}", client.name, composed.mail_from);
        return Err(count(shared, Refusal::SenderNotAllowed(m)));
    }
    if let Some(address) = super::headers::foreign_header_sender(client, &composed.body) {
        let m = format!("client {:?} may not name {address} in From: or Sender: (see header_senders)", client.name);
        return Err(count(shared, Refusal::SenderNotAllowed(m)));
    }
    Ok(Prepared { id, message: composed })
}

/// Spools a prepared message: its id, or the refusal counted.
pub async fn spool(
    shared: &Shared,
    client: &Client,
    prepared: Prepared,
    idempotency: Option<Idempotency>,
) -> Result<String, Refusal> {
    let Prepared { id, message } = prepared;
    match accept(shared, id, &client.name, Ingress::Http, message, idempotency).await {
        Ok((id, _new)) => Ok(id),
        Err(e) => {
            let refusal = match e {
                IngestError::SpoolFull => Refusal::SpoolFull,
                IngestError::ShuttingDown => Refusal::ShuttingDown,
                IngestError::IdempotencyConflict(id) => Refusal::IdempotencyConflict(id),
                IngestError::InProgress => Refusal::InProgress,
                IngestError::Internal(detail) => {
                    tracing::error!(error = %detail, "ingest failed");
                    Refusal::Internal
                }
            };
            Err(count(shared, refusal))
        }
    }
}
