//! Postmark's API, served by Baton: `POST /email`, `/email/batch`, `/email/withTemplate` and
//! `/email/batchWithTemplates`, with the client's
//! Baton API key in `X-Postmark-Server-Token`. An app using Postmark's SDK changes only its API
//! root (`PostmarkClient(root_api_url=…)` in postmarker).
//!
//! How a Postmark request becomes a Baton message: `From` the sender, `To` / `Cc` / `Bcc`
//! comma-separated lists (names allowed), `ReplyTo`, `Subject`, `TextBody`, `HtmlBody`,
//! `Headers` (`[{Name, Value}]`), `Attachments` (`Name`, `Content` base64, `ContentType`,
//! `ContentID` for inline images), `Tag` and `Metadata` (kept as tags and metadata) and `MessageStream`
//! (Baton's stream, which routes can match). Tracking flags are accepted and ignored (Baton
//! does not rewrite mail). Answers: `{To, SubmittedAt, MessageID, ErrorCode: 0, Message: "OK"}`;
//! errors `{ErrorCode, Message}` with Postmark's codes (10 bad token, 300 invalid request,
//! 400 sender not allowed, 1101 no `postmark` provider for a template), so the SDK raises its
//! own `ClientError` with that code. An email with `TemplateId` / `TemplateAlias` uses a
//! template stored at Postmark: it is passed through as it came to the route's `postmark`
//! provider (`submit::TemplateRequest`).

use super::super::compose::{AddressInput, AttachmentInput, SendRequest};
use super::super::submit::{self, BodyBudget, Refusal, TemplateRequest, read_body};
use super::AuthFailure;
use crate::runtime::Client;
use crate::shared::Shared;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

/// Postmark's limit of messages in one batch request.
const MAX_BATCH: usize = 500;

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/email", post(send))
        .route("/email/batch", post(batch))
        .route("/email/withTemplate", post(send_with_template))
        .route("/email/withTemplate/", post(send_with_template))
        .route("/email/batchWithTemplates", post(batch_with_templates))
        .route("/email/batchWithTemplates/", post(batch_with_templates))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Header {
    name: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Attachment {
    name: String,
    content: String,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default, rename = "ContentID")]
    content_id: Option<String>,
}

/// The body of `POST /email` (Postmark's field names; unknown fields are ignored; SDKs send
/// `null` for fields not given, so every list and map is optional).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Email {
    from: String,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    cc: Option<String>,
    #[serde(default)]
    bcc: Option<String>,
    #[serde(default)]
    reply_to: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    text_body: Option<String>,
    #[serde(default)]
    html_body: Option<String>,
    #[serde(default)]
    headers: Option<Vec<Header>>,
    #[serde(default)]
    attachments: Option<Vec<Attachment>>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    message_stream: Option<String>,
}

/// A Postmark error: `{ErrorCode, Message}` with an HTTP status.
struct PostmarkError {
    status: StatusCode,
    code: u32,
    message: String,
}

impl PostmarkError {
    fn invalid(message: impl Into<String>) -> PostmarkError {
        PostmarkError { status: StatusCode::UNPROCESSABLE_ENTITY, code: 300, message: message.into() }
    }

    fn body(&self) -> Value {
        json!({"ErrorCode": self.code, "Message": self.message})
    }
}

impl IntoResponse for PostmarkError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

impl From<Refusal> for PostmarkError {
    fn from(r: Refusal) -> PostmarkError {
        let (status, code) = match &r {
            Refusal::Invalid(_) | Refusal::HeaderInjection(_) | Refusal::TooLarge(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, 300)
            }
            // Postmark's "Sender signature not found".
            Refusal::SenderNotAllowed(_) => (StatusCode::UNPROCESSABLE_ENTITY, 400),
            Refusal::IdempotencyConflict(_) => (StatusCode::UNPROCESSABLE_ENTITY, 300),
            // Postmark's "Template not found".
            Refusal::NoTemplateProvider(_) => (StatusCode::UNPROCESSABLE_ENTITY, 1101),
            // Nothing was spooled: a retry by the SDK cannot make a duplicate. 100 is
            // Postmark's "maintenance".
            Refusal::Busy | Refusal::InProgress | Refusal::SpoolFull | Refusal::ShuttingDown | Refusal::Internal => {
                (StatusCode::SERVICE_UNAVAILABLE, 100)
            }
        };
        PostmarkError { status, code, message: r.message() }
    }
}

fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<Arc<Client>, PostmarkError> {
    let token = headers.get("x-postmark-server-token").and_then(|v| v.to_str().ok());
    super::client(shared, token).map_err(|failure| PostmarkError {
        status: StatusCode::UNAUTHORIZED,
        code: 10,
        message: match failure {
            AuthFailure::Missing => "No Server API token was supplied in the X-Postmark-Server-Token header".into(),
            AuthFailure::Invalid => "The Server API token given is not a Baton API key".into(),
        },
    })
}

/// `"A <a@example.com>, b@example.com"` → addresses with their names.
fn addresses(field: &str, list: Option<&str>) -> Result<Vec<AddressInput>, PostmarkError> {
    let Some(list) = list.map(str::trim).filter(|l| !l.is_empty()) else { return Ok(Vec::new()) };
    let parsed = lettre::message::Mailboxes::from_str(list)
        .map_err(|e| PostmarkError::invalid(format!("{field}: {list:?} is not a list of addresses ({e})")))?;
    Ok(parsed.into_iter().map(|m| AddressInput::Full { email: m.email.to_string(), name: m.name }).collect())
}

/// Turns a Postmark email into Baton's request.
fn translate(email: Email) -> Result<SendRequest, PostmarkError> {
    let mut reply_to = addresses("ReplyTo", email.reply_to.as_deref())?;
    if reply_to.len() > 1 {
        return Err(PostmarkError::invalid("ReplyTo: Baton takes one reply-to address"));
    }
    Ok(SendRequest {
        from: email.from.into(),
        to: addresses("To", email.to.as_deref())?,
        cc: addresses("Cc", email.cc.as_deref())?,
        bcc: addresses("Bcc", email.bcc.as_deref())?,
        reply_to: reply_to.pop(),
        subject: email.subject,
        text: email.text_body,
        html: email.html_body,
        headers: email.headers.unwrap_or_default().into_iter().map(|h| (h.name, h.value)).collect(),
        attachments: email
            .attachments
            .unwrap_or_default()
            .into_iter()
            .map(|a| AttachmentInput {
                filename: a.name,
                content_type: a.content_type,
                content_base64: a.content,
                // Postmark's ContentID may come as "cid:logo".
                content_id: a.content_id.map(|c| c.trim_start_matches("cid:").to_string()),
            })
            .collect(),
        tags: email.tag.into_iter().collect(),
        metadata: email.metadata.unwrap_or_default(),
        stream: email.message_stream,
        raw_base64: None,
    })
}

/// Postmark's success answer for a message to `to`.
fn accepted(to: &str, id: &str) -> Value {
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    json!({"To": to, "SubmittedAt": now, "MessageID": id, "ErrorCode": 0, "Message": "OK"})
}

/// Parses, translates and spools one Postmark email given as JSON; Postmark's answer or error.
async fn one(shared: &Shared, client: &Client, item: &Value) -> Result<Value, PostmarkError> {
    let email: Email = super::parse_value(shared, item).map_err(PostmarkError::invalid)?;
    let to = email.to.clone().unwrap_or_default();
    let request = translate(email).inspect_err(|_| {
        shared.metrics.ingest_rejections.with_label_values(&["http", "invalid"]).inc();
    })?;
    let id = submit::submit(shared, client, request, None).await?;
    Ok(accepted(&to, &id))
}

async fn send(
    State(shared): State<Arc<Shared>>,
    Extension(budget): Extension<BodyBudget>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, PostmarkError> {
    let client = authenticate(&shared, &headers)?;
    let body = read_body(&shared, &budget, &headers, body).await?;
    let item: Value = super::parse(&shared, &body.bytes).map_err(PostmarkError::invalid)?;
    Ok(Json(one(&shared, &client, &item).await?).into_response())
}

/// `POST /email/batch`: one spooled message per item, each answered in place (Postmark's own
/// batch shape: a refused item has its `ErrorCode`, the others are sent).
async fn batch(
    State(shared): State<Arc<Shared>>,
    Extension(budget): Extension<BodyBudget>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, PostmarkError> {
    let client = authenticate(&shared, &headers)?;
    let body = read_body(&shared, &budget, &headers, body).await?;
    let items: Vec<Value> = super::parse(&shared, &body.bytes).map_err(PostmarkError::invalid)?;
    if items.len() > MAX_BATCH {
        return Err(PostmarkError::invalid(format!("a batch holds at most {MAX_BATCH} messages")));
    }
    Ok(Json(each(&shared, &client, &items, Kind::Email).await).into_response())
}

/// What the items of a request are: emails Baton composes, or emails with a template stored
/// at Postmark.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Email,
    Template,
}

/// Each item spooled on its own and answered in place (Postmark's batch shape: a refused item
/// has its `ErrorCode`, the others are sent).
async fn each(shared: &Shared, client: &Client, items: &[Value], kind: Kind) -> Vec<Value> {
    let mut answers = Vec::with_capacity(items.len());
    for item in items {
        let answer = match kind {
            Kind::Email => one(shared, client, item).await,
            Kind::Template => one_template(shared, client, item).await,
        };
        answers.push(answer.unwrap_or_else(|e| json!({"ErrorCode": e.code, "Message": e.message})));
    }
    answers
}

/// One email with `TemplateId` or `TemplateAlias`: the template is stored at Postmark, so the
/// email is spooled as it came and sent by the route's `postmark` provider (no failover).
async fn one_template(shared: &Shared, client: &Client, item: &Value) -> Result<Value, PostmarkError> {
    let email: Email = super::parse_value(shared, item).map_err(PostmarkError::invalid)?;
    let named = |field: &str| item.get(field).is_some_and(|v| !v.is_null());
    if !named("TemplateId") && !named("TemplateAlias") {
        shared.metrics.ingest_rejections.with_label_values(&["http", "invalid"]).inc();
        return Err(PostmarkError::invalid("TemplateId or TemplateAlias: one of them is required"));
    }
    let to = email.to.clone().unwrap_or_default();
    let mut recipients = addresses("To", email.to.as_deref())?;
    recipients.extend(addresses("Cc", email.cc.as_deref())?);
    recipients.extend(addresses("Bcc", email.bcc.as_deref())?);
    let request = TemplateRequest {
        api: "postmark",
        from: AddressInput::Plain(email.from),
        recipients,
        stream: email.message_stream,
        tags: email.tag.into_iter().collect(),
        metadata: email.metadata.unwrap_or_default(),
        body: item.to_string().into_bytes(),
    };
    let id = submit::submit(shared, client, request, None).await?;
    Ok(accepted(&to, &id))
}

/// `POST /email/withTemplate`: one email with a Postmark-stored template.
async fn send_with_template(
    State(shared): State<Arc<Shared>>,
    Extension(budget): Extension<BodyBudget>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, PostmarkError> {
    let client = authenticate(&shared, &headers)?;
    let body = read_body(&shared, &budget, &headers, body).await?;
    let item: Value = super::parse(&shared, &body.bytes).map_err(PostmarkError::invalid)?;
    let answer = one_template(&shared, &client, &item).await?;
    Ok(super::passed_through(Json(answer).into_response()))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TemplateBatch {
    messages: Vec<Value>,
}

/// `POST /email/batchWithTemplates`: `{"Messages": [...]}`, each answered in place.
async fn batch_with_templates(
    State(shared): State<Arc<Shared>>,
    Extension(budget): Extension<BodyBudget>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, PostmarkError> {
    let client = authenticate(&shared, &headers)?;
    let body = read_body(&shared, &budget, &headers, body).await?;
    let batch: TemplateBatch = super::parse(&shared, &body.bytes).map_err(PostmarkError::invalid)?;
    if batch.messages.len() > MAX_BATCH {
        return Err(PostmarkError::invalid(format!("a batch holds at most {MAX_BATCH} messages")));
    }
    let answers = each(&shared, &client, &batch.messages, Kind::Template).await;
    Ok(super::passed_through(Json(answers).into_response()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postmark_email_becomes_a_baton_request() {
        let email: Email = serde_json::from_value(json!({
            "From": "Acme <app@example.com>", "To": "\"Doe, Alice\" <alice@example.net>, bob@example.net",
            "Bcc": "audit@example.com", "ReplyTo": "support@example.com", "Subject": "Hi", "TextBody": "x",
            "Headers": [{"Name": "X-Ref", "Value": "42"}], "Tag": "reset", "Metadata": {"user": "7"},
            "MessageStream": "outbound", "TrackOpens": true,
            "Attachments": [{"Name": "logo.png", "Content": "UE5H", "ContentType": "image/png", "ContentID": "cid:logo"}],
        }))
        .unwrap();
        let r = translate(email).ok().unwrap();
        assert_eq!(r.to.len(), 2);
        assert!(
            matches!(&r.to[0], AddressInput::Full { email, name: Some(n) } if email == "alice@example.net" && n == "Doe, Alice")
        );
        assert_eq!(r.bcc.len(), 1);
        assert_eq!(r.tags, ["reset"]);
        assert_eq!(r.metadata["user"], "7");
        assert_eq!(r.stream.as_deref(), Some("outbound"));
        assert_eq!(r.headers["X-Ref"], "42");
        assert_eq!(r.attachments[0].content_id.as_deref(), Some("logo"));
    }
}
