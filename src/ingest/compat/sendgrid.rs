//! SendGrid's v3 mail API, served by Baton: `POST /v3/mail/send` with the client's Baton API
//! key as `Authorization: Bearer`. An app using SendGrid's SDK changes only its host
//! (`SendGridAPIClient(api_key, host=…)`).
//!
//! How a SendGrid request becomes Baton messages: each entry of `personalizations` is one
//! message (SendGrid sends one per personalization) with its `to` / `cc` / `bcc`, its own
//! `subject` and `headers` over the request's; `from` and `reply_to` (`{email, name}`),
//! `content` (`text/plain`, `text/html`), `attachments` (`content` base64, `filename`, `type`,
//! `disposition: inline` + `content_id`), `headers`, `categories` and `custom_args` (kept as
//! tags and metadata). Answer: `202` with an empty body and `X-Message-Id` (the first message's Baton id;
//! `GET /v1/messages/{id}` works with it). `substitutions` (per
//! personalization) and `sections` are rendered into subject and content before spooling
//! (`merge.rs`). A `template_id` (with `dynamic_template_data`) names a template stored at
//! SendGrid: the request is passed through as it came to the route's `sendgrid` provider
//! (`submit::TemplateRequest`). Refused with SendGrid's `{"errors":[{message, field, help}]}`:
//! `send_at`.

use super::super::compose::{AddressInput, AttachmentInput, SendRequest};
use super::super::submit::{self, BodyBudget, Refusal, Submission, TemplateRequest, read_body};
use super::{AuthFailure, merge};
use crate::runtime::Client;
use crate::shared::Shared;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

pub fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/v3/mail/send", post(send))
}

#[derive(Debug, Deserialize)]
struct Mailbox {
    email: String,
    #[serde(default)]
    name: Option<String>,
}

impl Mailbox {
    fn into_input(self) -> AddressInput {
        AddressInput::Full { email: self.email, name: self.name }
    }
}

#[derive(Debug, Deserialize)]
struct Personalization {
    #[serde(default)]
    to: Vec<Mailbox>,
    #[serde(default)]
    cc: Option<Vec<Mailbox>>,
    #[serde(default)]
    bcc: Option<Vec<Mailbox>>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    custom_args: Option<BTreeMap<String, String>>,
    #[serde(default)]
    substitutions: Option<BTreeMap<String, String>>,
    #[serde(default)]
    dynamic_template_data: Option<Value>,
    #[serde(default)]
    send_at: Option<Value>,
    /// A per-personalization sender: refused (see `refuse_unsupported`).
    #[serde(default)]
    from: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Content {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

#[derive(Debug, Deserialize)]
struct Attachment {
    content: String,
    filename: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    disposition: Option<String>,
    #[serde(default)]
    content_id: Option<String>,
}

/// The body of `POST /v3/mail/send` (unknown fields such as tracking settings are ignored).
#[derive(Debug, Deserialize)]
struct Mail {
    personalizations: Vec<Personalization>,
    from: Mailbox,
    #[serde(default)]
    reply_to: Option<Mailbox>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    content: Vec<Content>,
    #[serde(default)]
    attachments: Vec<Attachment>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    categories: Vec<String>,
    #[serde(default)]
    custom_args: BTreeMap<String, String>,
    #[serde(default)]
    sections: BTreeMap<String, String>,
    #[serde(default)]
    template_id: Option<String>,
    #[serde(default)]
    send_at: Option<Value>,
}

/// SendGrid's error: `{"errors":[{message, field, help}]}` with an HTTP status.
struct SendgridError {
    status: StatusCode,
    message: String,
    field: Option<String>,
}

impl SendgridError {
    fn bad(field: Option<&str>, message: impl Into<String>) -> SendgridError {
        SendgridError { status: StatusCode::BAD_REQUEST, message: message.into(), field: field.map(str::to_string) }
    }
}

impl SendgridError {
    /// Names the field as SendGrid does for personalization `i`: Baton's `to[0]` is
    /// `personalizations.{i}.to.0.email` (so for `cc` and `bcc`).
    fn in_personalization(mut self, i: usize) -> SendgridError {
        self.field = self.field.map(|field| {
            for list in ["to", "cc", "bcc"] {
                if let Some(n) = field.strip_prefix(list).and_then(|r| r.strip_prefix('[')?.strip_suffix(']')) {
                    return format!("personalizations.{i}.{list}.{n}.email");
                }
            }
            field
        });
        self
    }
}

impl IntoResponse for SendgridError {
    fn into_response(self) -> Response {
        let body = json!({"errors": [{"message": self.message, "field": self.field, "help": null}]});
        (self.status, Json(body)).into_response()
    }
}

impl From<Refusal> for SendgridError {
    fn from(r: Refusal) -> SendgridError {
        let message = r.message();
        // The field is the part before ": " in Baton's message ("to[0]: …"), when there is one.
        let field = match &r {
            Refusal::Invalid(m) | Refusal::HeaderInjection(m) => m.split_once(": ").map(|(f, _)| f.to_string()),
            Refusal::SenderNotAllowed(_) => Some("from".into()),
            Refusal::NoTemplateProvider(_) => Some("template_id".into()),
            _ => None,
        };
        let status = match &r {
            Refusal::Invalid(_)
            | Refusal::HeaderInjection(_)
            | Refusal::IdempotencyConflict(_)
            | Refusal::NoTemplateProvider(_) => StatusCode::BAD_REQUEST,
            Refusal::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            // SendGrid's answer for a sender it will not send for.
            Refusal::SenderNotAllowed(_) => StatusCode::FORBIDDEN,
            // Nothing was spooled: a retry by the SDK cannot make a duplicate.
            Refusal::Busy | Refusal::InProgress | Refusal::SpoolFull | Refusal::ShuttingDown | Refusal::Internal => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        SendgridError { status, message, field }
    }
}

fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<Arc<Client>, SendgridError> {
    let key = crate::ingest::bearer_token(headers);
    super::client(shared, key).map_err(|failure| SendgridError {
        status: StatusCode::UNAUTHORIZED,
        message: match failure {
            AuthFailure::Missing => "Permission denied, wrong credentials".into(),
            AuthFailure::Invalid => "The provided authorization grant is invalid, expired, or revoked".into(),
        },
        field: None,
    })
}

/// What Baton cannot do, named by its field.
fn refuse_unsupported(mail: &Mail) -> Result<(), SendgridError> {
    if mail.send_at.is_some() {
        return Err(SendgridError::bad(Some("send_at"), "Baton sends at once; scheduling is not supported"));
    }
    for (i, p) in mail.personalizations.iter().enumerate() {
        // Baton checks one sender per request against allowed_senders; a template request is
        // forwarded as it came, and SendGrid would honour a sender given here unchecked.
        if p.from.is_some() {
            let field = format!("personalizations.{i}.from");
            return Err(SendgridError::bad(Some(&field), "Baton takes one sender per request: give it in from"));
        }
        if p.send_at.is_some() {
            let field = format!("personalizations.{i}.send_at");
            return Err(SendgridError::bad(Some(&field), "Baton sends at once; scheduling is not supported"));
        }
        if p.dynamic_template_data.is_some() && mail.template_id.is_none() {
            let field = format!("personalizations.{i}.dynamic_template_data");
            return Err(SendgridError::bad(Some(&field), "dynamic_template_data needs a template_id"));
        }
    }
    Ok(())
}

/// A request with a `template_id` (stored at SendGrid): passed through as it came, one
/// message for all personalizations' recipients.
fn template(mail: Mail, body: &[u8]) -> TemplateRequest {
    let mut recipients = Vec::new();
    for p in mail.personalizations {
        let all = p.to.into_iter().chain(p.cc.unwrap_or_default()).chain(p.bcc.unwrap_or_default());
        recipients.extend(all.map(|m| AddressInput::Plain(m.email)));
    }
    TemplateRequest {
        api: "sendgrid",
        from: AddressInput::Plain(mail.from.email),
        recipients,
        stream: None,
        tags: mail.categories,
        metadata: mail.custom_args,
        body: body.to_vec(),
    }
}

/// One Baton request per personalization, or the template pass-through of the whole request.
fn translate(mail: Mail, body: &[u8]) -> Result<Vec<Submission>, SendgridError> {
    refuse_unsupported(&mail)?;
    if mail.personalizations.is_empty() {
        return Err(SendgridError::bad(Some("personalizations"), "at least one personalization is required"));
    }
    if mail.template_id.is_some() {
        return Ok(vec![template(mail, body).into()]);
    }
    let from = match &mail.from.name {
        Some(name) => format!("{name} <{}>", mail.from.email),
        None => mail.from.email.clone(),
    };
    let text = mail.content.iter().find(|c| c.kind.eq_ignore_ascii_case("text/plain")).map(|c| c.value.clone());
    let html = mail.content.iter().find(|c| c.kind.eq_ignore_ascii_case("text/html")).map(|c| c.value.clone());
    let reply_to = mail.reply_to.map(Mailbox::into_input);
    let attachments: Vec<AttachmentInput> = mail
        .attachments
        .iter()
        .map(|a| AttachmentInput {
            filename: a.filename.clone(),
            content_type: a.kind.clone(),
            content_base64: a.content.clone(),
            content_id: a.content_id.clone().filter(|_| a.disposition.as_deref() == Some("inline")),
        })
        .collect();
    Ok(mail
        .personalizations
        .into_iter()
        .map(|p| {
            let mut headers = mail.headers.clone();
            headers.extend(p.headers.unwrap_or_default());
            // A personalization's custom_args add to (and override) the message's.
            let mut metadata = mail.custom_args.clone();
            metadata.extend(p.custom_args.unwrap_or_default());
            // Substitutions are rendered here, so any provider sends the personalized text;
            // then the sections their values may name.
            let substitutions = p.substitutions.unwrap_or_default();
            let substitutions: Vec<(&str, &str)> =
                substitutions.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let sections: Vec<(&str, &str)> = mail.sections.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let render = |text: Option<String>| {
                text.map(|t| merge::substitute(&merge::substitute(&t, &substitutions), &sections))
            };
            SendRequest {
                from: from.clone().into(),
                to: p.to.into_iter().map(Mailbox::into_input).collect(),
                cc: p.cc.unwrap_or_default().into_iter().map(Mailbox::into_input).collect(),
                bcc: p.bcc.unwrap_or_default().into_iter().map(Mailbox::into_input).collect(),
                reply_to: reply_to.clone(),
                subject: render(p.subject.or_else(|| mail.subject.clone())),
                text: render(text.clone()),
                html: render(html.clone()),
                headers,
                attachments: attachments.clone(),
                tags: mail.categories.clone(),
                metadata,
                stream: None,
                raw_base64: None,
            }
            .into()
        })
        .collect())
}

async fn send(
    State(shared): State<Arc<Shared>>,
    Extension(budget): Extension<BodyBudget>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, SendgridError> {
    let client = authenticate(&shared, &headers)?;
    let body = read_body(&shared, &budget, &headers, body).await?;
    let mail: Mail = super::parse(&shared, &body.bytes).map_err(|m| {
        let field = m.split_once(": ").map(|(f, _)| f.to_string()).filter(|f| !f.contains(' '));
        SendgridError { status: StatusCode::BAD_REQUEST, message: m, field }
    })?;
    let requests = translate(mail, &body.bytes).inspect_err(|_| {
        shared.metrics.ingest_rejections.with_label_values(&["http", "invalid"]).inc();
    })?;
    let template = matches!(requests.first(), Some(Submission::Template(_)));
    // SendGrid takes a request whole or not at all: every personalization is checked before
    // any is spooled.
    let mut prepared = Vec::with_capacity(requests.len());
    for (i, request) in requests.into_iter().enumerate() {
        prepared.push(submit::prepare(&shared, &client, request).await.map_err(|refusal| match template {
            true => SendgridError::from(refusal),
            false => SendgridError::from(refusal).in_personalization(i),
        })?);
    }
    let mut first = None;
    for message in prepared {
        match submit::spool(&shared, &client, message, None).await {
            Ok(id) => {
                first.get_or_insert(id);
            }
            // The spool failed after earlier personalizations were spooled (it is full or
            // stopping): answering an error would make the SDK resend those. Accept, and log.
            Err(refusal) if first.is_some() => {
                tracing::warn!(client = %client.name, reason = refusal.reason(), "a personalization of a SendGrid request could not be spooled; the others were accepted");
            }
            Err(refusal) => return Err(refusal.into()),
        }
    }
    let mut response = StatusCode::ACCEPTED.into_response();
    if let Some(id) = first.and_then(|id| HeaderValue::from_str(&id).ok()) {
        response.headers_mut().insert("x-message-id", id);
    }
    Ok(if template { super::passed_through(response) } else { response })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn composed(mail: Mail) -> Vec<SendRequest> {
        let all = translate(mail, b"{}").ok().unwrap();
        all.into_iter()
            .map(|s| match s {
                Submission::Compose(r) => r,
                Submission::Template(_) => panic!("not a template request"),
            })
            .collect()
    }

    #[test]
    fn each_personalization_is_one_message() {
        let mail: Mail = serde_json::from_value(json!({
            "personalizations": [
                {"to": [{"email": "alice@example.net", "name": "Alice"}], "bcc": [{"email": "audit@example.com"}], "subject": "For Alice"},
                {"to": [{"email": "bob@example.net"}], "headers": {"X-Who": "bob"}},
            ],
            "from": {"email": "app@example.com", "name": "Acme"}, "subject": "Hello",
            "content": [{"type": "text/plain", "value": "hi"}, {"type": "text/html", "value": "<p>hi</p>"}],
            "attachments": [{"content": "UE5H", "filename": "logo.png", "type": "image/png", "disposition": "inline", "content_id": "logo"}],
            "categories": ["reset"], "custom_args": {"user": "7"}, "tracking_settings": {"click_tracking": {"enable": false}},
        }))
        .unwrap();
        let r = composed(mail);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].from, "Acme <app@example.com>");
        assert_eq!(r[0].subject.as_deref(), Some("For Alice"));
        assert_eq!(r[1].subject.as_deref(), Some("Hello"));
        assert_eq!(r[0].bcc.len(), 1);
        assert_eq!(r[1].headers["X-Who"], "bob");
        assert_eq!(r[0].tags, ["reset"]);
        assert_eq!(r[0].metadata["user"], "7");
        assert_eq!(r[0].attachments[0].content_id.as_deref(), Some("logo"));
    }

    #[test]
    fn substitutions_and_sections_are_rendered_per_personalization() {
        let mail: Mail = serde_json::from_value(json!({
            "personalizations": [
                {"to": [{"email": "a@example.net"}], "substitutions": {"-name-": "Ann", "-sig-": "%formal%"}},
                {"to": [{"email": "b@example.net"}], "substitutions": {"-name-": "Bo", "-sig-": "%casual%"}, "subject": "Yo -name-"},
            ],
            "from": {"email": "app@example.com"}, "subject": "Hello -name-",
            "sections": {"%formal%": "Regards", "%casual%": "Cheers"},
            "content": [{"type": "text/plain", "value": "Hi -name-. -sig-"}],
        }))
        .unwrap();
        let r = composed(mail);
        assert_eq!(r[0].subject.as_deref(), Some("Hello Ann"));
        assert_eq!(r[0].text.as_deref(), Some("Hi Ann. Regards"));
        assert_eq!(r[1].subject.as_deref(), Some("Yo Bo"));
        assert_eq!(r[1].text.as_deref(), Some("Hi Bo. Cheers"));
    }

    #[test]
    fn a_template_id_is_passed_through_whole_and_template_data_alone_is_refused() {
        let mut t = json!({"personalizations": [{"to": [{"email": "a@example.net"}], "bcc": [{"email": "b@example.net"}],
                           "dynamic_template_data": {"name": "Alice"}}], "from": {"email": "app@example.com"}});
        let e = translate(serde_json::from_value(t.clone()).unwrap(), b"{}").err().unwrap();
        assert_eq!(e.field.as_deref(), Some("personalizations.0.dynamic_template_data"));
        t["template_id"] = json!("d-123");
        let body = t.to_string();
        let all = translate(serde_json::from_value(t).unwrap(), body.as_bytes()).ok().unwrap();
        let [Submission::Template(r)] = all.as_slice() else { panic!("one template request") };
        assert_eq!((r.api, r.recipients.len(), r.body.as_slice()), ("sendgrid", 2, body.as_bytes()));
    }
}
