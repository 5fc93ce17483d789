//! The HTTP ingest API: `POST /v1/messages` and `GET /v1/messages/{id}`.

use super::compose::SendRequest;
use super::submit::{self, BodyBudget, Refusal, count, read_body};
use crate::runtime::Client;
use crate::shared::Shared;
use crate::spool::record::{MessageRecord, MessageStatus};
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

pub fn router(shared: Arc<Shared>) -> Router {
    let budget = BodyBudget::new(shared.runtime.load().config.server.http_max_inflight_bytes.0);
    let apis = shared.runtime.load().config.server.compatible_apis.clone();
    let mut router = Router::new()
        .route("/v1/messages", post(send))
        .route("/v1/messages/{id}", get(status))
        .merge(crate::suppression::api::client_routes())
        .merge(super::webhooks::receive::routes());
    // Provider-compatible APIs (`server.compatible_apis`), on their own root paths.
    for api in super::compat::APIS {
        if apis.iter().any(|a| a == api) {
            router = router.merge(super::compat::routes(api, &shared));
        }
    }
    router
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .layer(axum::Extension(budget))
        .with_state(shared)
}

/// An API error: `{"error": {"code", "message"}}`.
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
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
    super::log_refusal("v1", err.status.as_u16(), reason, &err.message);
    err
}

/// The client whose API key is in `Authorization: Bearer <key>`.
pub(crate) fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<Arc<Client>, ApiError> {
    let key = super::bearer_token(headers);
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
    let client = authenticate(&shared, &headers)?;
    let body = read_body(&shared, &budget, &headers, body).await?;
    let mut json = serde_json::Deserializer::from_slice(&body.bytes);
    let request: SendRequest = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        let message = if path == "." || path == "?" || e.inner().is_syntax() || e.inner().is_eof() {
            format!("invalid JSON body: {}", e.inner())
        } else {
            format!("{path}: {}", e.inner())
        };
        count(&shared, Refusal::Invalid(message))
    })?;
    let idempotency = submit::idempotency(&shared, &headers, &body.bytes)?;
    let id = submit::submit(&shared, &client, request, idempotency).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"id": id, "status": "queued"}))).into_response())
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> ApiError {
        let (status, code) = match &r {
            Refusal::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            Refusal::HeaderInjection(_) => (StatusCode::UNPROCESSABLE_ENTITY, "header_injection"),
            Refusal::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Refusal::SenderNotAllowed(_) => (StatusCode::FORBIDDEN, "sender_not_allowed"),
            Refusal::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            Refusal::SpoolFull => (StatusCode::SERVICE_UNAVAILABLE, "spool_full"),
            Refusal::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            // 422 as in the IETF Idempotency-Key draft (409 is for a request still in progress).
            Refusal::IdempotencyConflict(_) => (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
            Refusal::InProgress => (StatusCode::CONFLICT, "idempotency_key_in_progress"),
            Refusal::NoTemplateProvider(_) => (StatusCode::UNPROCESSABLE_ENTITY, "no_template_provider"),
            Refusal::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, r.message())
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
        "tags": r.tags,
        "metadata": r.metadata,
        "recipients": r.recipients.iter().map(|rc| json!({
            "email": rc.email,
            "status": rc.status,
            "provider": rc.provider,
            "provider_message_id": rc.provider_message_id,
            "detail": rc.detail,
            "events": events_json(r, rc),
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

/// A recipient's events, oldest first; `accepted` (when Baton took the message) is not stored.
fn events_json(r: &MessageRecord, rc: &crate::spool::record::Recipient) -> Vec<serde_json::Value> {
    let accepted = json!({"type": "accepted", "at": rfc3339(r.created_ms), "provider": null, "detail": ""});
    let stored = rc.events.iter().map(|e| {
        let mut v = json!({"type": e.event_type, "at": rfc3339(e.at_ms), "provider": e.provider, "detail": e.detail});
        if let Some(reason) = e.reject_reason {
            v["reject_reason"] = json!(reason);
        }
        v
    });
    std::iter::once(accepted).chain(stored).collect()
}

async fn status(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let client = authenticate(&shared, &headers)?;
    let spool = shared.spool.clone();
    let key = id.clone();
    let record = tokio::task::spawn_blocking(move || spool.get(&key))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    match record {
        // Another client's message is indistinguishable from a missing one.
        Some(r) if r.client == client.name => Ok(Json(status_json(&r)).into_response()),
        _ => match held_elsewhere(&shared, &headers, &id).await {
            Some(response) => Ok(response),
            None => Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "no message with this id for this client")),
        },
    }
}

/// In a cluster, each node holds what it accepted: a message this node does not hold is asked
/// of the other live nodes (with the client's own credentials, once: a relayed request is not
/// relayed again), and their answer is passed on with `Baton-Node` naming the node holding it.
async fn held_elsewhere(shared: &Shared, headers: &HeaderMap, id: &str) -> Option<Response> {
    let cluster = shared.cluster.as_ref()?;
    // Message ids are ULIDs: anything else is not relayed into another node's URL.
    if headers.contains_key(crate::cluster::RELAYED_HEADER) || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let (node, status, body) = cluster.find_message(&format!("/v1/messages/{id}"), headers).await?;
    let status = StatusCode::from_u16(status).ok()?;
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    response.headers_mut().insert("baton-node", header::HeaderValue::from_str(&node).ok()?);
    Some(response)
}
