//! Resend's API, served by Baton: `POST /emails`, `POST /emails/batch`, `GET /emails/{id}`,
//! with the client's API key as `Authorization: Bearer`. An app using Resend's SDK changes only
//! its base URL (`RESEND_BASE_URL` / `resend.api_url`).
//!
//! How a Resend request becomes a Baton message: `from` is the sender (name and address),
//! `to` / `cc` / `bcc` (a string or a list) the recipients, `reply_to` one address, `subject`,
//! `text`, `html`, `headers`, `attachments` (`content` base64, `filename`, `content_type`,
//! `content_id` for inline images) and `tags` (kept as metadata: name → value). `Idempotency-Key` is
//! Baton's idempotency. A `template` names a template stored at Resend: the
//! email is passed through as it came to the route's `resend` provider
//! (`submit::TemplateRequest`). `scheduled_at` is refused with Resend's `validation_error`
//! (Baton sends at once).
//! Answers and errors have Resend's shapes, so the SDK returns its own results and raises its
//! own typed errors.

use super::super::compose::{AddressInput, AttachmentInput, SendRequest};
use super::super::submit::{self, BodyBudget, Refusal, Submission, TemplateRequest, read_body};
use super::AuthFailure;
use crate::runtime::Client;
use crate::shared::Shared;
use crate::spool::record::{MessageRecord, MessageStatus};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Resend's limit of emails in one batch request.
const MAX_BATCH: usize = 100;

pub fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/emails", post(send)).route("/emails/batch", post(batch)).route("/emails/{id}", get(status))
}

/// A string or a list of strings (`to`, `cc`, `bcc`, `reply_to`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// Attachment content: base64 text, or the bytes as a list of numbers (what the Node and
/// Python SDKs send for a buffer / `list(bytes)`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Base64(String),
    Bytes(Vec<u8>),
}

impl Content {
    fn into_base64(self) -> String {
        use base64::Engine as _;
        match self {
            Content::Base64(s) => s,
            Content::Bytes(b) => base64::engine::general_purpose::STANDARD.encode(b),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Attachment {
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    filename: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    content_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Tag {
    name: String,
    value: String,
}

/// The body of `POST /emails` (Resend's field names; unknown fields are ignored as Resend does).
#[derive(Debug, Deserialize)]
struct Email {
    from: String,
    to: OneOrMany,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    cc: Option<OneOrMany>,
    #[serde(default)]
    bcc: Option<OneOrMany>,
    #[serde(default, alias = "replyTo")]
    reply_to: Option<OneOrMany>,
    #[serde(default)]
    html: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    attachments: Vec<Attachment>,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(default)]
    scheduled_at: Option<Value>,
    #[serde(default)]
    template: Option<Value>,
}

/// A Resend error: `{statusCode, name, message}` with that HTTP status.
struct ResendError {
    status: StatusCode,
    name: &'static str,
    message: String,
}

impl ResendError {
    fn validation(message: impl Into<String>) -> ResendError {
        ResendError { status: StatusCode::UNPROCESSABLE_ENTITY, name: "validation_error", message: message.into() }
    }
}

impl IntoResponse for ResendError {
    fn into_response(self) -> Response {
        let body = json!({"statusCode": self.status.as_u16(), "name": self.name, "message": self.message});
        (self.status, Json(body)).into_response()
    }
}

impl From<Refusal> for ResendError {
    fn from(r: Refusal) -> ResendError {
        let (status, name) = match &r {
            Refusal::Invalid(_)
            | Refusal::HeaderInjection(_)
            | Refusal::TooLarge(_)
            | Refusal::NoTemplateProvider(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_error"),
            Refusal::SenderNotAllowed(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_from_address"),
            Refusal::IdempotencyConflict(_) => (StatusCode::CONFLICT, "invalid_idempotent_request"),
            // Resend's answer while the first request with the key is still being processed.
            Refusal::InProgress => (StatusCode::CONFLICT, "concurrent_idempotent_requests"),
            // Nothing was spooled: a retry by the SDK cannot make a duplicate.
            Refusal::Busy | Refusal::SpoolFull | Refusal::ShuttingDown | Refusal::Internal => {
                (StatusCode::SERVICE_UNAVAILABLE, "application_error")
            }
        };
        ResendError { status, name, message: r.message() }
    }
}

/// The client whose key is in `Authorization: Bearer`, with Resend's answers for a missing
/// (401 `missing_api_key`) or unknown (403 `invalid_api_key`) key.
fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<Arc<Client>, ResendError> {
    let key = crate::ingest::bearer_token(headers);
    super::client(shared, key).map_err(|failure| match failure {
        AuthFailure::Missing => ResendError {
            status: StatusCode::UNAUTHORIZED,
            name: "missing_api_key",
            message: "Missing API key in the authorization header".into(),
        },
        AuthFailure::Invalid => {
            ResendError { status: StatusCode::FORBIDDEN, name: "invalid_api_key", message: "API key is invalid".into() }
        }
    })
}

/// Turns a Resend email (`raw`: as it came) into Baton's request: a message to compose, or,
/// with a `template` stored at Resend, the email passed through as it came; refuses what only
/// Resend itself could do.
fn translate(email: Email, raw: &[u8]) -> Result<Submission, ResendError> {
    if email.scheduled_at.is_some() {
        return Err(ResendError::validation("scheduled_at: Baton sends at once; scheduling is not supported"));
    }
    if email.template.is_some() {
        return Ok(template(email, raw).into());
    }
    compose(email).map(Submission::from)
}

fn template(email: Email, raw: &[u8]) -> TemplateRequest {
    let addresses = |list: Option<OneOrMany>| list.map(OneOrMany::into_vec).unwrap_or_default();
    let mut recipients = email.to.into_vec();
    recipients.extend(addresses(email.cc));
    recipients.extend(addresses(email.bcc));
    TemplateRequest {
        api: "resend",
        from: AddressInput::Plain(email.from),
        recipients: recipients.into_iter().map(AddressInput::Plain).collect(),
        stream: None,
        tags: Vec::new(),
        metadata: email.tags.into_iter().map(|t| (t.name, t.value)).collect(),
        body: raw.to_vec(),
    }
}

fn compose(email: Email) -> Result<SendRequest, ResendError> {
    let addresses = |list: Option<OneOrMany>| -> Vec<AddressInput> {
        list.map(OneOrMany::into_vec).unwrap_or_default().into_iter().map(AddressInput::Plain).collect()
    };
    let mut reply_to = email.reply_to.map(OneOrMany::into_vec).unwrap_or_default();
    if reply_to.len() > 1 {
        return Err(ResendError::validation("reply_to: Baton takes one reply-to address"));
    }
    let attachments = email
        .attachments
        .into_iter()
        .enumerate()
        .map(|(i, a)| match (a.content, a.path) {
            (Some(content), _) => Ok(AttachmentInput {
                filename: a.filename.unwrap_or_else(|| format!("attachment-{}", i + 1)),
                content_type: a.content_type,
                content_base64: content.into_base64(),
                content_id: a.content_id,
            }),
            (None, Some(_)) => Err(ResendError::validation(format!(
                "attachments[{i}].path: Baton does not fetch attachments from URLs; send `content`"
            ))),
            (None, None) => Err(ResendError::validation(format!("attachments[{i}].content: missing"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SendRequest {
        from: email.from.into(),
        to: email.to.into_vec().into_iter().map(AddressInput::Plain).collect(),
        cc: addresses(email.cc),
        bcc: addresses(email.bcc),
        reply_to: reply_to.pop().map(AddressInput::Plain),
        subject: email.subject,
        text: email.text,
        html: email.html,
        headers: email.headers,
        attachments,
        tags: Vec::new(),
        // Resend's tags are name/value pairs: Baton's metadata.
        metadata: email.tags.into_iter().map(|t| (t.name, t.value)).collect(),
        stream: None,
        raw_base64: None,
    })
}

fn parse<T: serde::de::DeserializeOwned>(shared: &Shared, bytes: &[u8]) -> Result<T, ResendError> {
    super::parse(shared, bytes).map_err(ResendError::validation)
}

async fn send(
    State(shared): State<Arc<Shared>>,
    Extension(budget): Extension<BodyBudget>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ResendError> {
    let client = authenticate(&shared, &headers)?;
    let body = read_body(&shared, &budget, &headers, body).await?;
    let email: Email = parse(&shared, &body.bytes)?;
    let request = translate(email, &body.bytes).map_err(|e| counted(&shared, e))?;
    let template = matches!(request, Submission::Template(_));
    let idempotency = submit::idempotency(&shared, &headers, &body.bytes)?;
    let id = submit::submit(&shared, &client, request, idempotency).await?;
    let response = Json(json!({ "id": id })).into_response();
    Ok(if template { super::passed_through(response) } else { response })
}

/// `POST /emails/batch`: one spooled message per item, in order. When an item is refused after
/// earlier ones were spooled, the answer keeps their ids and lists the refusal in `errors`
/// (Resend's permissive batch shape): what was accepted is never reported as failed.
async fn batch(
    State(shared): State<Arc<Shared>>,
    Extension(budget): Extension<BodyBudget>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ResendError> {
    let client = authenticate(&shared, &headers)?;
    let body = read_body(&shared, &budget, &headers, body).await?;
    let items: Vec<Value> = parse(&shared, &body.bytes)?;
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(counted(&shared, ResendError::validation(format!("a batch holds 1 to {MAX_BATCH} emails"))));
    }
    let mut requests = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let email: Email =
            super::parse_value(&shared, item).map_err(|m| ResendError::validation(format!("[{i}].{m}")))?;
        let canonical = item.to_string();
        let request = translate(email, canonical.as_bytes()).map_err(|e| counted(&shared, e))?;
        requests.push((canonical, request));
    }
    let template = requests.iter().any(|(_, r)| matches!(r, Submission::Template(_)));
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut data = Vec::new();
    let mut errors = Vec::new();
    for (i, (canonical, request)) in requests.into_iter().enumerate() {
        // One key for the batch: each item is idempotent under "key/index".
        let idempotency = key.as_ref().map(|k| super::super::Idempotency {
            key: format!("{k}/{i}"),
            request: crate::config::text_hash(&canonical),
        });
        match submit::submit(&shared, &client, request, idempotency).await {
            Ok(id) => data.push(json!({ "id": id })),
            Err(refusal) if data.is_empty() => return Err(refusal.into()),
            Err(refusal) => errors.push(json!({"index": i, "message": refusal.message()})),
        }
    }
    let mut answer = json!({ "data": data });
    if !errors.is_empty() {
        answer["errors"] = Value::Array(errors);
    }
    let response = Json(answer).into_response();
    Ok(if template { super::passed_through(response) } else { response })
}

/// `GET /emails/{id}`: the client's own message in Resend's shape (`last_event` from Baton's
/// status).
async fn status(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ResendError> {
    let client = authenticate(&shared, &headers)?;
    let spool = shared.spool.clone();
    let key = id.clone();
    let record = tokio::task::spawn_blocking(move || spool.get(&key)).await.ok().and_then(Result::ok).flatten();
    match record {
        Some(r) if r.client == client.name => Ok(Json(resend_view(&r)).into_response()),
        _ => Err(ResendError { status: StatusCode::NOT_FOUND, name: "not_found", message: "Email not found".into() }),
    }
}

fn resend_view(r: &MessageRecord) -> Value {
    let last_event = match r.status {
        MessageStatus::Delivered | MessageStatus::PartiallyDelivered => "delivered",
        MessageStatus::Failed => "bounced",
        _ => "queued",
    };
    let created =
        humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(r.created_ms));
    json!({
        "object": "email",
        "id": r.id,
        "from": r.mail_from,
        "to": r.recipients.iter().map(|rc| rc.email.clone()).collect::<Vec<_>>(),
        "created_at": created.to_string(),
        "last_event": last_event,
    })
}

/// Counts an error found while reading the Resend shape (before the shared path counts its own).
fn counted(shared: &Shared, e: ResendError) -> ResendError {
    shared.metrics.ingest_rejections.with_label_values(&["http", "invalid"]).inc();
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resend_email_becomes_a_baton_request() {
        let email: Email = serde_json::from_value(json!({
            "from": "Acme <app@example.com>", "to": "alice@example.net", "cc": ["bob@example.net"],
            "bcc": "audit@example.com", "reply_to": ["support@example.com"], "subject": "Hi", "html": "<p>x</p>",
            "headers": {"X-Entity-Ref-ID": "42"}, "tags": [{"name": "category", "value": "reset"}],
            "attachments": [{"filename": "a.txt", "content": [104, 101, 108, 108, 111]}, {"content": "UE5H", "content_id": "logo", "content_type": "image/png"}],
        }))
        .unwrap();
        let r = compose(email).ok().unwrap();
        assert_eq!(r.from, "Acme <app@example.com>");
        assert_eq!((r.to.len(), r.cc.len(), r.bcc.len()), (1, 1, 1));
        assert!(matches!(r.reply_to, Some(AddressInput::Plain(ref s)) if s == "support@example.com"));
        assert_eq!(r.metadata["category"], "reset");
        assert_eq!(r.attachments[0].content_base64, "aGVsbG8=", "bytes as numbers become base64");
        assert_eq!(r.attachments[1].content_id.as_deref(), Some("logo"));
        assert_eq!(r.attachments[1].filename, "attachment-2");
    }

    #[test]
    fn scheduling_is_refused_and_a_template_is_passed_through_as_it_came() {
        let v = json!({"from": "app@example.com", "to": "a@example.net", "text": "x", "scheduled_at": "in 1 hour"});
        let e = translate(serde_json::from_value(v).unwrap(), b"{}").err().unwrap();
        assert_eq!((e.status, e.name), (StatusCode::UNPROCESSABLE_ENTITY, "validation_error"));
        let v = json!({"from": "app@example.com", "to": ["a@example.net"], "bcc": "b@example.net",
                       "template": {"id": "welcome", "variables": {"name": "Ann"}}});
        let raw = v.to_string();
        let Ok(Submission::Template(t)) = translate(serde_json::from_value(v).unwrap(), raw.as_bytes()) else {
            panic!("a template request")
        };
        assert_eq!((t.api, t.recipients.len(), t.body.as_slice()), ("resend", 2, raw.as_bytes()));
    }
}
