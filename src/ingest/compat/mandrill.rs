//! Mailchimp Transactional (Mandrill)'s API, served by Baton: `messages/send`,
//! `messages/send-raw`, `messages/send-template` and `users/ping2` under `/api/1.0`, `/api/1.3` and `/api/1.4`, each with
//! and without `.json`, with the client's Baton API key as the body's `key`. An app using the
//! SDK changes only its host (`client.api_client.host` in the Python SDK).
//!
//! How a Mandrill message becomes Baton messages: `from_email` / `from_name`, `to` with
//! `type` to/cc/bcc, `subject`, `text`, `html`, `headers`, `attachments` and `images` (inline,
//! `name` is the content id), `tags` and `metadata`, `bcc_address` (a copy to
//! that address). With `preserve_recipients` false (Mandrill's default) every recipient gets a
//! message of their own, as Mandrill sends it; with true, one message to all. `send-raw` keeps
//! the MIME byte for byte. The answer is Mandrill's per-recipient array with `status: "queued"`
//! and Baton's message id as `_id` — never a `queued_reason`. Errors have Mandrill's shape
//! `{"status":"error","code","name","message"}` (`Invalid_Key`, `ValidationError`). Merge vars
//! (`merge_vars`, `global_merge_vars`, `merge_language` mailchimp or handlebars) are rendered
//! before spooling (`merge.rs`); recipients with vars of their own get a message each.
//! `send-template` uses a template stored at Mandrill: the call is passed through to
//! the route's `mandrill` provider as it came (see `submit::TemplateRequest`). Refused:
//! `send_at` (Baton sends at once).

use super::super::compose::{AddressInput, AttachmentInput, SendRequest, header_addresses};
use super::super::submit::{self, BodyBudget, Refusal, TemplateRequest, read_body};
use super::{AuthFailure, merge};
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
use std::sync::Arc;

pub fn routes() -> Router<Arc<Shared>> {
    let mut router = Router::new();
    for version in ["1.0", "1.3", "1.4"] {
        for suffix in ["", ".json"] {
            let at = |call: &str| format!("/api/{version}/{call}{suffix}");
            router = router
                .route(&at("messages/send"), post(send))
                .route(&at("messages/send-raw"), post(send_raw))
                .route(&at("messages/send-template"), post(send_template))
                .route(&at("users/ping2"), post(ping2));
        }
    }
    router
}

#[derive(Debug, Deserialize)]
struct Recipient {
    email: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    content: String,
}

#[derive(Debug, Default, Deserialize)]
struct Message {
    #[serde(default)]
    html: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    from_email: Option<String>,
    #[serde(default)]
    from_name: Option<String>,
    #[serde(default)]
    to: Vec<Recipient>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    attachments: Option<Vec<Part>>,
    #[serde(default)]
    images: Option<Vec<Part>>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    bcc_address: Option<String>,
    #[serde(default)]
    preserve_recipients: Option<bool>,
    #[serde(default)]
    merge: Option<bool>,
    #[serde(default)]
    merge_language: Option<String>,
    #[serde(default)]
    merge_vars: Option<Vec<RecipientVars>>,
    #[serde(default)]
    global_merge_vars: Option<Vec<MergeVar>>,
}

#[derive(Debug, Clone, Deserialize)]
struct MergeVar {
    name: String,
    #[serde(default)]
    content: Value,
}

#[derive(Debug, Clone, Deserialize)]
struct RecipientVars {
    rcpt: String,
    #[serde(default)]
    vars: Vec<MergeVar>,
}

/// How a message's merge tags are rendered (see `merge.rs`).
struct Merge {
    handlebars: bool,
    global: Vec<MergeVar>,
    per_recipient: Vec<RecipientVars>,
}

impl Merge {
    /// `None` when the message has no merging to do: `merge` is false, or it is unset and no
    /// merge vars are given (Mandrill turns merging on when there are any).
    fn of(m: &Message) -> Result<Option<Merge>, MandrillError> {
        let global = m.global_merge_vars.clone().unwrap_or_default();
        let per_recipient = m.merge_vars.clone().unwrap_or_default();
        if !m.merge.unwrap_or(!global.is_empty() || !per_recipient.is_empty()) {
            return Ok(None);
        }
        let handlebars = match m.merge_language.as_deref().unwrap_or("mailchimp") {
            "mailchimp" => false,
            "handlebars" => true,
            other => {
                return Err(MandrillError::validation(format!(
                    "merge_language: {other:?} is not one of \"mailchimp\", \"handlebars\""
                )));
            }
        };
        Ok(Some(Merge { handlebars, global, per_recipient }))
    }

    /// The vars for `rcpt` (its own over the global ones), or the global ones alone.
    fn vars(&self, rcpt: Option<&str>) -> Vec<&MergeVar> {
        let own = rcpt.and_then(|r| self.per_recipient.iter().find(|v| v.rcpt.eq_ignore_ascii_case(r)));
        let own: Vec<&MergeVar> = own.map(|o| o.vars.iter().collect()).unwrap_or_default();
        let global = self.global.iter().filter(|g| !own.iter().any(|v| v.name.eq_ignore_ascii_case(&g.name)));
        let global: Vec<&MergeVar> = global.collect();
        own.into_iter().chain(global).collect()
    }

    /// Renders subject, text and HTML of `request` for `rcpt`.
    fn render(&self, request: &mut SendRequest, rcpt: Option<&str>) -> Result<(), MandrillError> {
        let vars = self.vars(rcpt);
        let data: serde_json::Map<String, Value> =
            vars.iter().rev().map(|v| (v.name.clone(), v.content.clone())).collect();
        let data = Value::Object(data);
        let one = |field: &str, text: &mut Option<String>, part: merge::Part| -> Result<(), MandrillError> {
            let Some(t) = text.as_deref() else { return Ok(()) };
            let rendered = if self.handlebars {
                merge::handlebars(t, &data, part)
            } else {
                merge::mailchimp(t, |name| {
                    vars.iter().find(|v| v.name.eq_ignore_ascii_case(name)).map(|v| merge::as_text(&v.content))
                })
            };
            *text = Some(rendered.map_err(|e| MandrillError::validation(format!("{field}: {e}")))?);
            Ok(())
        };
        one("subject", &mut request.subject, merge::Part::Subject)?;
        one("text", &mut request.text, merge::Part::Text)?;
        one("html", &mut request.html, merge::Part::Html)
    }
}

#[derive(Debug, Deserialize)]
struct SendCall {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    message: Message,
    #[serde(default)]
    send_at: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct SendRawCall {
    #[serde(default)]
    key: Option<String>,
    raw_message: String,
    #[serde(default)]
    from_email: Option<String>,
    #[serde(default)]
    to: Option<Vec<String>>,
    #[serde(default)]
    send_at: Option<Value>,
}

/// `messages/send-template`: only what Baton checks; the call goes to Mandrill as it came.
#[derive(Debug, Deserialize)]
struct SendTemplateCall {
    #[serde(default)]
    key: Option<String>,
    template_name: String,
    #[serde(default)]
    message: Message,
    #[serde(default)]
    send_at: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct KeyOnly {
    #[serde(default)]
    key: Option<String>,
}

/// Mandrill's error: `{"status":"error","code","name","message"}`.
struct MandrillError {
    status: StatusCode,
    code: i32,
    name: &'static str,
    message: String,
}

impl MandrillError {
    fn validation(message: impl Into<String>) -> MandrillError {
        MandrillError { status: StatusCode::BAD_REQUEST, code: -2, name: "ValidationError", message: message.into() }
    }
}

impl IntoResponse for MandrillError {
    fn into_response(self) -> Response {
        let body = json!({"status": "error", "code": self.code, "name": self.name, "message": self.message});
        (self.status, Json(body)).into_response()
    }
}

impl From<Refusal> for MandrillError {
    fn from(r: Refusal) -> MandrillError {
        match &r {
            Refusal::Busy | Refusal::SpoolFull | Refusal::ShuttingDown | Refusal::Internal => MandrillError {
                // Nothing was spooled: a retry by the SDK cannot make a duplicate.
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: -1,
                name: "GeneralError",
                message: r.message(),
            },
            Refusal::NoTemplateProvider(_) => MandrillError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                code: 5,
                name: "Unknown_Template",
                message: r.message(),
            },
            _ => MandrillError::validation(r.message()),
        }
    }
}

fn authenticate(shared: &Shared, key: Option<&str>) -> Result<Arc<Client>, MandrillError> {
    super::client(shared, key).map_err(|failure| MandrillError {
        status: StatusCode::UNAUTHORIZED,
        code: -1,
        name: "Invalid_Key",
        message: match failure {
            AuthFailure::Missing => "You must specify a key value".into(),
            AuthFailure::Invalid => "Invalid API key".into(),
        },
    })
}

fn parts(list: Option<Vec<Part>>, inline: bool) -> Vec<AttachmentInput> {
    list.unwrap_or_default()
        .into_iter()
        .map(|p| AttachmentInput {
            filename: p.name.clone(),
            content_type: Some(p.kind),
            content_base64: p.content,
            content_id: inline.then_some(p.name),
        })
        .collect()
}

/// Mandrill's metadata as Baton's: its values may be any JSON, providers take strings.
fn string_metadata(metadata: Option<BTreeMap<String, Value>>) -> BTreeMap<String, String> {
    (metadata.unwrap_or_default().into_iter())
        .map(|(k, v)| match v {
            Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect()
}

/// The Baton requests for one `messages/send` call, with the recipient each one answers for.
fn translate(call: SendCall) -> Result<Vec<(Vec<String>, SendRequest)>, MandrillError> {
    let m = call.message;
    if call.send_at.is_some() {
        return Err(MandrillError::validation("send_at: Baton sends at once; scheduling is not supported"));
    }
    let merge = Merge::of(&m)?;
    let email = m.from_email.clone().ok_or_else(|| MandrillError::validation("from_email: required"))?;
    let from = match &m.from_name {
        Some(name) => format!("{name} <{email}>"),
        None => email,
    };
    let metadata = string_metadata(m.metadata.clone());
    let mut attachments = parts(m.attachments, false);
    attachments.extend(parts(m.images, true));
    let extra_bcc: Vec<AddressInput> = m.bcc_address.clone().into_iter().map(AddressInput::Plain).collect();
    // Mandrill has no reply-to field: apps (and django-anymail) set it as a header.
    let mut headers = m.headers.unwrap_or_default();
    let reply_to = match headers.keys().find(|k| k.eq_ignore_ascii_case("reply-to")).cloned() {
        Some(name) => headers.remove(&name).map(AddressInput::Plain),
        None => None,
    };
    let base = SendRequest {
        from: from.into(),
        to: Vec::new(),
        cc: Vec::new(),
        bcc: extra_bcc,
        reply_to,
        subject: m.subject,
        text: m.text,
        html: m.html,
        headers,
        attachments,
        tags: m.tags.clone().unwrap_or_default(),
        metadata,
        stream: None,
        raw_base64: None,
    };
    let one = |recipients: &[&Recipient]| {
        let mut r = base.clone();
        for rc in recipients {
            let address = AddressInput::Full { email: rc.email.clone(), name: rc.name.clone() };
            match rc.kind.as_deref() {
                Some("cc") => r.cc.push(address),
                Some("bcc") => r.bcc.push(address),
                _ => r.to.push(address),
            }
        }
        (recipients.iter().map(|rc| rc.email.clone()).collect::<Vec<String>>(), r)
    };
    if m.to.is_empty() {
        return Err(MandrillError::validation("to: at least one recipient is required"));
    }
    // Recipients with merge vars of their own get a message each, even when recipients are
    // preserved: the rendered text differs per recipient.
    let personal = merge.as_ref().is_some_and(|g| !g.per_recipient.is_empty());
    let mut messages = if m.preserve_recipients == Some(true) && !personal {
        vec![one(&m.to.iter().collect::<Vec<_>>())]
    } else {
        m.to.iter().map(|rc| one(&[rc])).collect()
    };
    if let Some(merge) = &merge {
        for (recipients, request) in &mut messages {
            let rcpt = match recipients.as_slice() {
                [only] => Some(only.as_str()),
                _ => None,
            };
            merge.render(request, rcpt)?;
        }
    }
    Ok(messages)
}

/// Mandrill's answer: one entry per recipient.
fn queued(recipients: &[String], id: &str) -> Vec<Value> {
    recipients.iter().map(|e| json!({"email": e, "status": "queued", "_id": id, "reject_reason": null})).collect()
}

async fn send(
    State(shared): State<Arc<Shared>>,
    Extension(budget): Extension<BodyBudget>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, MandrillError> {
    let body = read_body(&shared, &budget, &headers, body).await?;
    let call: SendCall = super::parse(&shared, &body.bytes).map_err(MandrillError::validation)?;
    let client = authenticate(&shared, call.key.as_deref())?;
    let messages = translate(call).inspect_err(|_| {
        shared.metrics.ingest_rejections.with_label_values(&["http", "invalid"]).inc();
    })?;
    let mut answer = Vec::new();
    for (recipients, request) in messages {
        match submit::submit(&shared, &client, request, None).await {
            Ok(id) => answer.extend(queued(&recipients, &id)),
            Err(refusal) if answer.is_empty() => return Err(refusal.into()),
            // Later recipients after earlier ones were spooled: Mandrill's own per-recipient answer.
            Err(refusal) => answer.extend(
                recipients
                    .iter()
                    .map(|e| json!({"email": e, "status": "rejected", "_id": null, "reject_reason": refusal.reason()})),
            ),
        }
    }
    Ok(Json(answer).into_response())
}

async fn send_raw(
    State(shared): State<Arc<Shared>>,
    Extension(budget): Extension<BodyBudget>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, MandrillError> {
    let body = read_body(&shared, &budget, &headers, body).await?;
    let call: SendRawCall = super::parse(&shared, &body.bytes).map_err(MandrillError::validation)?;
    let client = authenticate(&shared, call.key.as_deref())?;
    if call.send_at.is_some() {
        return Err(MandrillError::validation("send_at: Baton sends at once; scheduling is not supported"));
    }
    let raw = call.raw_message.into_bytes();
    let found = header_addresses(&raw);
    let from = call
        .from_email
        .or(found.from)
        .ok_or_else(|| MandrillError::validation("from_email: required (the message has no From: either)"))?;
    let to = call.to.unwrap_or_else(|| [found.to, found.cc].concat());
    let request = SendRequest::raw(from, to.iter().cloned().map(AddressInput::Plain).collect(), &raw);
    let id = submit::submit(&shared, &client, request, None).await?;
    Ok(Json(queued(&to, &id)).into_response())
}

/// `messages/send-template`: the template is stored at Mandrill, so the call is spooled as it
/// came (without the key) and sent by the first `mandrill` provider of the client's route,
/// with no failover; one Baton id for all its recipients.
async fn send_template(
    State(shared): State<Arc<Shared>>,
    Extension(budget): Extension<BodyBudget>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, MandrillError> {
    let body = read_body(&shared, &budget, &headers, body).await?;
    let mut raw: serde_json::Map<String, Value> =
        super::parse(&shared, &body.bytes).map_err(MandrillError::validation)?;
    let call: SendTemplateCall =
        super::parse_value(&shared, &Value::Object(raw.clone())).map_err(MandrillError::validation)?;
    let client = authenticate(&shared, call.key.as_deref())?;
    if call.send_at.is_some() {
        return Err(MandrillError::validation("send_at: Baton sends at once; scheduling is not supported"));
    }
    if call.template_name.trim().is_empty() {
        return Err(MandrillError::validation("template_name: required"));
    }
    raw.remove("key");
    let m = call.message;
    let from_email = m.from_email.ok_or_else(|| {
        MandrillError::validation("from_email: Baton needs the sender in the call to check it (the template's default sender is not known to Baton)")
    })?;
    let mut recipients: Vec<AddressInput> = m.to.iter().map(|r| AddressInput::Plain(r.email.clone())).collect();
    recipients.extend(m.bcc_address.clone().map(AddressInput::Plain));
    let metadata = string_metadata(m.metadata);
    let request = TemplateRequest {
        api: "mandrill",
        from: AddressInput::Plain(from_email),
        recipients,
        stream: None,
        tags: m.tags.unwrap_or_default(),
        metadata,
        body: serde_json::to_vec(&raw).map_err(|_| MandrillError::from(Refusal::Internal))?,
    };
    let id = submit::submit(&shared, &client, request, None).await?;
    let emails: Vec<String> = m.to.into_iter().map(|r| r.email).collect();
    Ok(super::passed_through(Json(queued(&emails, &id)).into_response()))
}

async fn ping2(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let answer = async {
        let call: KeyOnly = super::parse(&shared, &body).map_err(MandrillError::validation)?;
        authenticate(&shared, call.key.as_deref())?;
        Ok::<_, MandrillError>(Json(json!({"PING": "PONG!"})).into_response())
    };
    super::read(answer.await.unwrap_or_else(IntoResponse::into_response))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(message: Value) -> SendCall {
        serde_json::from_value(json!({"key": "k", "message": message})).unwrap()
    }

    #[test]
    fn each_recipient_gets_a_message_unless_recipients_are_preserved() {
        let message = json!({
            "from_email": "app@example.com", "from_name": "Acme", "subject": "Hi", "text": "x",
            "to": [{"email": "alice@example.net", "name": "Alice"}, {"email": "bob@example.net", "type": "cc"}],
            "bcc_address": "audit@example.com", "tags": ["reset"], "metadata": {"user": 7},
            "images": [{"type": "image/png", "name": "logo", "content": "UE5H"}],
        });
        let split = translate(call(message.clone())).ok().unwrap();
        assert_eq!(split.len(), 2);
        assert_eq!(split[0].0, ["alice@example.net"]);
        assert_eq!((split[1].1.to.len(), split[1].1.cc.len(), split[1].1.bcc.len()), (0, 1, 1));
        assert_eq!(split[0].1.from, "Acme <app@example.com>");
        assert_eq!(split[0].1.tags, ["reset"]);
        assert_eq!(split[0].1.metadata["user"], "7");
        assert_eq!(split[0].1.attachments[0].content_id.as_deref(), Some("logo"));
        let mut together = message;
        together["preserve_recipients"] = json!(true);
        let one = translate(call(together)).ok().unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].0.len(), 2);
    }

    #[test]
    fn merge_vars_are_rendered_per_recipient_before_spooling() {
        let m = json!({
            "from_email": "app@example.com", "subject": "Hi *|FNAME|*", "text": "*|fname|* in *|CITY|*",
            "to": [{"email": "a@example.net"}, {"email": "B@example.net"}], "preserve_recipients": true,
            "global_merge_vars": [{"name": "city", "content": "Oslo"}, {"name": "fname", "content": "friend"}],
            "merge_vars": [{"rcpt": "b@example.net", "vars": [{"name": "FNAME", "content": "Bo"}]}],
        });
        let split = translate(call(m)).ok().unwrap();
        assert_eq!(split.len(), 2, "recipients with their own vars get a message each");
        assert_eq!(split[0].1.subject.as_deref(), Some("Hi friend"));
        assert_eq!(split[1].1.subject.as_deref(), Some("Hi Bo"));
        assert_eq!(split[1].1.text.as_deref(), Some("Bo in Oslo"));
    }

    #[test]
    fn handlebars_merge_escapes_html_only() {
        let m = json!({
            "from_email": "app@example.com", "subject": "{{name}}", "html": "<p>{{name}}</p>",
            "to": [{"email": "a@example.net"}], "merge_language": "handlebars",
            "global_merge_vars": [{"name": "name", "content": "A & B"}],
        });
        let one = translate(call(m)).ok().unwrap();
        assert_eq!(one[0].1.subject.as_deref(), Some("A & B"));
        assert_eq!(one[0].1.html.as_deref(), Some("<p>A &amp; B</p>"));
    }

    #[test]
    fn unrenderable_merge_tags_and_scheduling_are_refused_by_field() {
        let m = json!({"from_email": "app@example.com", "to": [{"email": "a@example.net"}], "text": "*|IF:X|*y*|END:IF|*",
                       "global_merge_vars": [{"name": "x", "content": "1"}]});
        let e = translate(call(m)).err().unwrap();
        assert_eq!(e.name, "ValidationError");
        assert!(e.message.starts_with("text: *|IF:X|*"), "{}", e.message);
        let m = json!({"from_email": "app@example.com", "to": [{"email": "a@example.net"}], "merge_language": "liquid", "merge": true});
        assert!(translate(call(m)).err().unwrap().message.starts_with("merge_language"));
        let scheduled: SendCall = serde_json::from_value(json!({"key": "k", "send_at": "2030-01-01 00:00:00",
            "message": {"from_email": "app@example.com", "to": [{"email": "a@example.net"}]}}))
        .unwrap();
        assert!(translate(scheduled).err().unwrap().message.starts_with("send_at"));
    }
}
