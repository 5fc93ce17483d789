//! The HTTP ingest API: `POST /v1/messages` and `GET /v1/messages/{id}`.

use super::compose::{ComposeError, SendRequest, compose};
use super::{Idempotency, IngestError, accept, new_message_id};
use crate::app::Shared;
use crate::runtime::Client;
use crate::spool::record::{Ingress, MessageRecord, MessageStatus};
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Room for request bodies in memory, in KiB (see `server.http_max_inflight_bytes`).
#[derive(Clone)]
struct BodyBudget {
    room: Arc<Semaphore>,
    kib: u32,
}

/// How long a request waits for room for its body before it is told to come back.
const BUDGET_WAIT: Duration = Duration::from_secs(10);

pub fn router(shared: Arc<Shared>) -> Router {
    let kib = (shared.runtime.load().config.server.http_max_inflight_bytes.0 / 1024).clamp(1, u32::MAX as u64) as u32;
    let budget = BodyBudget { room: Arc::new(Semaphore::new(kib as usize)), kib };
    Router::new()
        .route("/v1/messages", post(send))
        .route("/v1/messages/{id}", get(status))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .layer(axum::Extension(budget))
        .with_state(shared)
}

/// Waits for room for a body of `len` bytes (at most the whole budget, so a large body
/// proceeds alone); `None` when there is no room within [`BUDGET_WAIT`].
async fn reserve(budget: &BodyBudget, len: u64) -> Option<OwnedSemaphorePermit> {
    let want = len.div_ceil(1024).clamp(1, u64::from(budget.kib)) as u32;
    tokio::time::timeout(BUDGET_WAIT, budget.room.clone().acquire_many_owned(want)).await.ok()?.ok()
}

/// An API error: `{"error": {"code", "message"}}`.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp =
            (self.status, Json(json!({"error": {"code": self.code, "message": self.message}}))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

fn reject(shared: &Shared, reason: &str, err: ApiError) -> ApiError {
    shared.metrics.ingest_rejections.with_label_values(&["http", reason]).inc();
    err
}

/// The client whose API key is in `Authorization: Bearer <key>`.
fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<Arc<Client>, ApiError> {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let Some(key) = key else {
        return Err(reject(
            shared,
            "auth",
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing `Authorization: Bearer <api key>` header"),
        ));
    };
    match shared.runtime.load().client_by_key(key) {
        Some(client) => Ok(client.clone()),
        None => Err(reject(shared, "auth", ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "invalid API key"))),
    }
}

async fn send(
    State(shared): State<Arc<Shared>>,
    axum::Extension(budget): axum::Extension<BodyBudget>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if shared.is_shutting_down() {
        return Err(reject(
            &shared,
            "shutting_down",
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "Baton is shutting down; try again shortly",
            ),
        ));
    }
    let client = authenticate(&shared, &headers)?;
    let runtime = shared.runtime.load_full();
    let server = &runtime.config.server;
    let max_size = server.max_message_size.0;
    // JSON carries the message base64-encoded (4/3) plus some structure; refuse anything larger
    // before reading it all into memory.
    let body_limit = (max_size as usize).saturating_mul(4) / 3 + 64 * 1024;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(body_limit as u64)
        .min(body_limit as u64);
    let Some(_room) = reserve(&budget, declared).await else {
        return Err(reject(
            &shared,
            "rate_limited",
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "too many large requests in flight; retry shortly"),
        ));
    };
    let bytes = axum::body::to_bytes(body, body_limit).await.map_err(|_| {
        reject(
            &shared,
            "too_large",
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("request body is larger than the message size limit ({})", server.max_message_size),
            ),
        )
    })?;
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => match v.to_str() {
            Ok(k) if !k.is_empty() && k.len() <= 255 => Some(k.to_string()),
            _ => {
                return Err(reject(
                    &shared,
                    "invalid",
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "Idempotency-Key must be 1 to 255 visible ASCII characters",
                    ),
                ));
            }
        },
    };
    let mut json = serde_json::Deserializer::from_slice(&bytes);
    let request: SendRequest = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        let message = if path == "." || path == "?" || e.inner().is_syntax() || e.inner().is_eof() {
            format!("invalid JSON body: {}", e.inner())
        } else {
            format!("{path}: {}", e.inner())
        };
        reject(&shared, "invalid", ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message))
    })?;
    let id = new_message_id();
    // Decoding and building a message of up to max_message_size is CPU work: off the async
    // workers, so admin, SMTP and delivery stay responsive meanwhile.
    let (message_id, hostname, max_recipients) = (id.clone(), server.hostname.clone(), server.max_recipients);
    let built = tokio::task::spawn_blocking(move || compose(request, &message_id, &hostname, max_size, max_recipients))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "message composition failed");
            reject(&shared, "internal", ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error"))
        })?;
    let composed = built.map_err(|e| match e {
        ComposeError::Invalid(m) => {
            reject(&shared, "invalid", ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", m))
        }
        ComposeError::HeaderInjection(m) => {
            reject(&shared, "header_injection", ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "header_injection", m))
        }
        ComposeError::TooLarge(limit) => reject(
            &shared,
            "too_large",
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("message is larger than the limit of {limit} bytes"),
            ),
        ),
    })?;
    if !client.may_send_from(&composed.mail_from) {
        return Err(reject(
            &shared,
            "sender_not_allowed",
            ApiError::new(
                StatusCode::FORBIDDEN,
                "sender_not_allowed",
                format!("client {:?} may not send from {}", client.name, composed.mail_from),
            ),
        ));
    }
    if let Some(address) = super::headers::foreign_header_sender(&client, &composed.body) {
        return Err(reject(
            &shared,
            "sender_not_allowed",
            ApiError::new(
                StatusCode::FORBIDDEN,
                "sender_not_allowed",
                format!("client {:?} may not name {address} in From: or Sender: (see header_senders)", client.name),
            ),
        ));
    }
    // The fingerprint of the request: its JSON, keys in a fixed order (so formatting and key
    // order do not matter), hashed.
    let idempotency = idempotency_key.map(|key| {
        let canonical = serde_json::from_slice::<serde_json::Value>(&bytes).map(|v| v.to_string()).unwrap_or_default();
        Idempotency { key, request: crate::config::text_hash(&canonical) }
    });
    match accept(&shared, id, &client.name, Ingress::Http, composed, idempotency).await {
        Ok((id, _new)) => Ok((StatusCode::ACCEPTED, Json(json!({"id": id, "status": "queued"}))).into_response()),
        Err(e) => {
            let (status, code) = match e {
                IngestError::SpoolFull => (StatusCode::SERVICE_UNAVAILABLE, "spool_full"),
                IngestError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
                // 422 as in the IETF Idempotency-Key draft (409 is for a request still in progress).
                IngestError::IdempotencyConflict(_) => (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
                IngestError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            };
            if let IngestError::Internal(detail) = &e {
                tracing::error!(error = %detail, "ingest failed");
            }
            let message = if matches!(e, IngestError::Internal(_)) {
                "internal error; the message was not accepted".to_string()
            } else {
                e.to_string()
            };
            Err(reject(&shared, e.reason(), ApiError::new(status, code, message)))
        }
    }
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// The public view of a spooled message.
pub fn status_json(r: &MessageRecord) -> serde_json::Value {
    let status =
        if r.status == MessageStatus::Queued && !r.attempts.is_empty() { MessageStatus::Delivering } else { r.status };
    json!({
        "id": r.id,
        "status": status.as_str(),
        "created_at": rfc3339(r.created_ms),
        "next_attempt_at": (!r.status.is_final()).then(|| rfc3339(r.next_attempt_ms)),
        "recipients": r.recipients.iter().map(|rc| json!({
            "email": rc.email,
            "status": rc.status,
            "provider": rc.provider,
            "provider_message_id": rc.provider_message_id,
            "detail": rc.detail,
        })).collect::<Vec<_>>(),
        "attempts": r.attempts.iter().map(|a| json!({
            "at": rfc3339(a.at_ms),
            "provider": a.provider,
            "outcome": a.outcome,
            "detail": a.detail,
            "duration_ms": a.duration_ms,
            "possible_duplicate": a.possible_duplicate,
        })).collect::<Vec<_>>(),
    })
}

async fn status(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let client = authenticate(&shared, &headers)?;
    let spool = shared.spool.clone();
    let record = tokio::task::spawn_blocking(move || spool.get(&id))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    match record {
        // Another client's message is indistinguishable from a missing one.
        Some(r) if r.client == client.name => Ok(Json(status_json(&r)).into_response()),
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "no message with this id for this client")),
    }
}
