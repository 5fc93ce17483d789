//! Mailgun's sending API, served by Baton: `POST /v3/{domain}/messages` and
//! `/v3/{domain}/messages.mime`, with the client's Baton API key as the password of HTTP Basic
//! (Mailgun's user is `api`; the user name is not checked). An app using a Mailgun SDK changes
//! only its API root: `Client(auth=("api", key), api_url=…)` in the `mailgun` Python SDK,
//! `client({username: "api", key, url})` in mailgun.js, `MAILGUN_API_URL` (with `/v3`) in
//! django-anymail. The Python SDK refuses plain `http://` to any host but `localhost` and
//! `127.0.0.1`: elsewhere it needs Baton on HTTPS (`server.https_listen`).
//!
//! The `{domain}` must be one the client may send from: some address at it (or at a subdomain
//! a pattern covers) is within its `allowed_senders`; else 404 `Domain not found: …`, as Mailgun
//! answers for a domain that is not on the account. `from` itself may be any address the client
//! may use, as at Mailgun, where the sending domain and the `From:` are independent.
//!
//! How a Mailgun form (`multipart/form-data` or `application/x-www-form-urlencoded`, repeated
//! fields kept) becomes Baton messages: `from`; `to` / `cc` / `bcc` repeated or comma-separated
//! (names allowed); `subject`, `text`, `html`; `attachment` file parts (filename and content
//! type from the part) and `inline` file parts (their Content-ID is the filename, as Mailgun
//! does); `h:X-…` headers (`h:Reply-To` is the reply-to, `h:X-Mailgun-Variables` a JSON object of
//! more metadata, not a header); `o:tag` (repeated) are tags; `v:NAME` are metadata. With
//! `recipient-variables` (a JSON object address → {name: value}) it is Mailgun's batch sending:
//! each `to` recipient gets a message of their own, `cc` and `bcc` ride along on each, and
//! `%recipient.NAME%` is replaced by that recipient's value (empty when they have none) in the
//! subject, text, html, `h:` headers and `v:` values before spooling, so any provider in the
//! route sends the rendered text. `messages.mime` keeps the `message` part byte for byte; its
//! `to` fields are the envelope (a Bcc exists only there) and its `From:` the sender.
//!
//! Refused by name with 400 rather than done differently: `o:deliverytime` and
//! `o:time-zone-localize` (Baton sends at once), `o:testmode` (Baton has no test mode: the mail
//! would really go out), `template` (stored at Mailgun). Other `o:` options (tracking, DKIM,
//! require-tls, sending IP) are accepted and ignored: those belong to the route's providers.
//! `amp-html` is ignored next to `html` or `text`.
//!
//! Answers: `200 {"id": "<BATON_ID@domain>", "message": "Queued. Thank you."}` (a batch answers
//! with its first message's id, as Mailgun gives one id per request); 401 plain `Forbidden`;
//! `{"message"}` with 400 naming the field in Mailgun's words where Mailgun has them, 400 "… is
//! not allowed to send" for a sender the client may not use, 404 for the domain, 413 for size,
//! 503 only when nothing was spooled (full, stopping, busy) — the SDKs retry 5xx and 429.

use super::super::compose::{AddressInput, AttachmentInput, SendRequest, header_addresses};
use super::super::submit::{self, BodyBudget, Refusal, read_body};
use super::merge;
use crate::runtime::Client;
use crate::shared::Shared;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use base64::Engine as _;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

/// Mailgun's limit of `to` recipients in one batch send.
const MAX_BATCH: usize = 1000;
/// A batch may expand to at most this many times `server.max_message_size` in memory.
const BATCH_COPIES: u64 = 16;

pub fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/v3/{domain}/messages", post(send)).route("/v3/{domain}/messages.mime", post(send_mime))
}

/// A file part of the form: `attachment`, `inline` or `message`.
#[derive(Debug, Clone)]
struct File {
    filename: Option<String>,
    content_type: Option<String>,
    data: Bytes,
}

/// One field's value, as sent.
#[derive(Debug, Clone)]
enum Part {
    Text(String),
    File(File),
}

/// The fields of a Mailgun request in the order sent, repeated names kept.
#[derive(Debug, Default)]
struct Form {
    fields: Vec<(String, Part)>,
}

/// The fields whose values are files (read as bytes); every other field is text.
const FILE_FIELDS: [&str; 3] = ["attachment", "inline", "message"];

impl Form {
    /// Every text value of `name`.
    fn texts<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.fields.iter().filter(move |(n, _)| n == name).filter_map(|(_, p)| match p {
            Part::Text(t) => Some(t.as_str()),
            Part::File(_) => None,
        })
    }

    /// The first text value of `name`.
    fn text<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.texts(name).next()
    }

    /// `(rest, value)` of every text field named `prefix` + rest, in order.
    fn prefixed<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.fields.iter().filter_map(move |(n, p)| match p {
            Part::Text(t) => n.strip_prefix(prefix).map(|rest| (rest, t.as_str())),
            Part::File(_) => None,
        })
    }

    /// Every value of `name`, text or file.
    fn parts<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Part> {
        self.fields.iter().filter(move |(n, _)| n == name).map(|(_, p)| p)
    }

    fn has(&self, name: &str) -> bool {
        self.parts(name).next().is_some()
    }
}

/// Reads a form body by its Content-Type; an error says what is wrong with it.
async fn read_form(headers: &HeaderMap, bytes: Bytes) -> Result<Form, String> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    match essence.as_str() {
        "multipart/form-data" => read_multipart(content_type, bytes).await,
        "application/x-www-form-urlencoded" => Ok(Form {
            fields: form_urlencoded::parse(&bytes).map(|(k, v)| (k.into_owned(), Part::Text(v.into_owned()))).collect(),
        }),
        // No body at all: every field is missing, and the answer says which first.
        "" if bytes.is_empty() => Ok(Form::default()),
        _ => {
            Err(format!("Content-Type {content_type:?}: send multipart/form-data or application/x-www-form-urlencoded"))
        }
    }
}

async fn read_multipart(content_type: &str, bytes: Bytes) -> Result<Form, String> {
    let boundary = multer::parse_boundary(content_type).map_err(|e| format!("multipart/form-data: {e}"))?;
    let stream = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(bytes) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut form = Form::default();
    let invalid = |e: multer::Error| format!("invalid multipart/form-data body: {e}");
    while let Some(field) = multipart.next_field().await.map_err(invalid)? {
        let Some(name) = field.name().map(str::to_string) else { continue };
        let part = if FILE_FIELDS.contains(&name.as_str()) {
            let filename = field.file_name().map(str::to_string);
            let content_type = field.content_type().map(|m| m.essence_str().to_string());
            Part::File(File { filename, content_type, data: field.bytes().await.map_err(invalid)? })
        } else {
            Part::Text(field.text().await.map_err(invalid)?)
        };
        form.fields.push((name, part));
    }
    Ok(form)
}

/// A Mailgun error: `{"message"}` with an HTTP status; 401 is a bare `Forbidden`.
#[derive(Debug)]
struct MailgunError {
    status: StatusCode,
    message: String,
}

impl MailgunError {
    fn invalid(message: impl Into<String>) -> MailgunError {
        MailgunError { status: StatusCode::BAD_REQUEST, message: message.into() }
    }
}

impl IntoResponse for MailgunError {
    fn into_response(self) -> Response {
        if self.status == StatusCode::UNAUTHORIZED {
            // Exactly Mailgun's answer for a missing or wrong key.
            let challenge = HeaderValue::from_static("Basic realm=\"MG API\"");
            return (self.status, [(header::WWW_AUTHENTICATE, challenge)], "Forbidden").into_response();
        }
        (self.status, Json(json!({"message": self.message}))).into_response()
    }
}

impl From<Refusal> for MailgunError {
    fn from(r: Refusal) -> MailgunError {
        let status = match &r {
            Refusal::Invalid(_)
            | Refusal::HeaderInjection(_)
            | Refusal::IdempotencyConflict(_)
            | Refusal::NoTemplateProvider(_) => StatusCode::BAD_REQUEST,
            // Mailgun's sandbox answer for a sender it will not send for is a 400 "… is not
            // allowed to send" (a 403 with those words means the whole domain is blocked).
            Refusal::SenderNotAllowed(m) => {
                return MailgunError::invalid(format!("Sender is not allowed to send: {m}"));
            }
            Refusal::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            // Nothing was spooled: a retry by the SDK cannot make a duplicate.
            Refusal::Busy | Refusal::InProgress | Refusal::SpoolFull | Refusal::ShuttingDown | Refusal::Internal => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        MailgunError { status, message: r.message() }
    }
}

/// The client whose key is the password of `Authorization: Basic` (the user, `api` at
/// Mailgun, is not checked).
fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<Arc<Client>, MailgunError> {
    let password = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|login| login.split_once(':').map(|(_, password)| password.to_string()));
    super::client(shared, password.as_deref())
        .map_err(|_| MailgunError { status: StatusCode::UNAUTHORIZED, message: "Forbidden".into() })
}

/// Refuses a `{domain}` the client may not send from, in Mailgun's words for a domain that is
/// not on the account (counted as `sender_not_allowed`).
fn sending_domain(shared: &Shared, client: &Client, domain: &str) -> Result<(), MailgunError> {
    if client.may_send_from_domain(domain) {
        return Ok(());
    }
    shared.metrics.ingest_rejections.with_label_values(&["http", "sender_not_allowed"]).inc();
    Err(MailgunError { status: StatusCode::NOT_FOUND, message: format!("Domain not found: {domain}") })
}

/// Counts an error found while reading the Mailgun form (before the shared path counts its own).
fn counted(shared: &Shared, e: MailgunError) -> MailgunError {
    shared.metrics.ingest_rejections.with_label_values(&["http", "invalid"]).inc();
    e
}

/// `"Alice <a@example.net>, b@example.net"` in every value of `field` → addresses with names.
fn addresses(form: &Form, field: &str) -> Result<Vec<AddressInput>, MailgunError> {
    address_lists(field, form.texts(field))
}

/// Every address of the comma-separated `lists`, with its name; an error names `field`.
fn address_lists<'a>(field: &str, lists: impl Iterator<Item = &'a str>) -> Result<Vec<AddressInput>, MailgunError> {
    let mut all = Vec::new();
    for list in lists.map(str::trim).filter(|l| !l.is_empty()) {
        let parsed = lettre::message::Mailboxes::from_str(list).map_err(|e| {
            MailgunError::invalid(format!("'{field}' parameter is not a valid address: {list:?} ({e})"))
        })?;
        all.extend(parsed.into_iter().map(|m| AddressInput::Full { email: m.email.to_string(), name: m.name }));
    }
    Ok(all)
}

fn email(a: &AddressInput) -> &str {
    match a {
        AddressInput::Plain(e) | AddressInput::Full { email: e, .. } => e,
    }
}

/// Whether an `o:` flag is on (Mailgun takes `yes`/`no`, `true`/`false`).
fn on(value: &str) -> bool {
    matches!(value.trim().to_ascii_lowercase().as_str(), "yes" | "true" | "1")
}

/// What only Mailgun itself could do, refused by name rather than done differently.
fn refuse_unsupported(form: &Form) -> Result<(), MailgunError> {
    for option in ["o:deliverytime", "o:time-zone-localize"] {
        if form.texts(option).any(|v| !v.trim().is_empty()) {
            return Err(MailgunError::invalid(format!("{option}: Baton sends at once; scheduling is not supported")));
        }
    }
    if form.texts("o:testmode").any(on) {
        return Err(MailgunError::invalid(
            "o:testmode: testmode is not supported; Baton would really send the message",
        ));
    }
    if form.has("template") {
        return Err(MailgunError::invalid(
            "template: templates stored at Mailgun are not supported; send text or html (recipient-variables render per recipient)",
        ));
    }
    Ok(())
}

/// `v:NAME` fields and the `h:X-Mailgun-Variables` JSON object, as metadata.
fn metadata(form: &Form) -> Result<BTreeMap<String, String>, MailgunError> {
    let mut metadata = BTreeMap::new();
    for (name, json) in form.prefixed("h:").filter(|(n, _)| n.eq_ignore_ascii_case("X-Mailgun-Variables")) {
        let object: Map<String, Value> = serde_json::from_str(json)
            .map_err(|e| MailgunError::invalid(format!("h:{name}: not a JSON object ({e})")))?;
        metadata.extend(object.iter().map(|(k, v)| (k.clone(), merge::as_text(v))));
    }
    metadata.extend(form.prefixed("v:").map(|(k, v)| (k.to_string(), v.to_string())));
    Ok(metadata)
}

/// `attachment` and `inline` file parts (an inline part's Content-ID is its filename).
fn attachments(form: &Form) -> Result<Vec<AttachmentInput>, MailgunError> {
    let mut all = Vec::new();
    for (field, inline) in [("attachment", false), ("inline", true)] {
        for part in form.parts(field) {
            let Part::File(file) = part else {
                return Err(MailgunError::invalid(format!("{field}: send files as multipart/form-data file parts")));
            };
            let filename = file.filename.clone().unwrap_or_else(|| format!("{field}-{}", all.len() + 1));
            all.push(AttachmentInput {
                content_id: inline.then(|| filename.clone()),
                filename,
                content_type: file.content_type.clone(),
                content_base64: base64::engine::general_purpose::STANDARD.encode(&file.data),
            });
        }
    }
    Ok(all)
}

/// Each recipient's variables, by address in lower case.
type RecipientVariables = BTreeMap<String, Map<String, Value>>;

/// `recipient-variables`, when given.
fn recipient_variables(form: &Form) -> Result<Option<RecipientVariables>, MailgunError> {
    let Some(json) = form.text("recipient-variables") else { return Ok(None) };
    let bad = |why: String| MailgunError::invalid(format!("recipient-variables: {why}"));
    let object: Map<String, Value> =
        serde_json::from_str(json).map_err(|e| bad(format!("not a JSON object of recipients ({e})")))?;
    let mut by_address = BTreeMap::new();
    for (address, vars) in object {
        let Value::Object(vars) = vars else {
            return Err(bad(format!("the value for {address:?} is not an object of variables")));
        };
        by_address.insert(address.trim().to_ascii_lowercase(), vars);
    }
    Ok(Some(by_address))
}

/// Replaces every `%recipient.NAME%` in `text` with that variable of `vars` (empty when it
/// has none), in one pass: a value is never rendered again.
fn render(text: &str, vars: &Map<String, Value>) -> String {
    const OPEN: &str = "%recipient.";
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        let name = after.split('%').next().filter(|n| after.len() > n.len());
        match name.filter(|n| !n.is_empty() && !n.contains(char::is_whitespace)) {
            Some(name) => {
                pairs.push((format!("{OPEN}{name}%"), vars.get(name).map(merge::as_text).unwrap_or_default()));
                rest = &after[name.len() + 1..];
            }
            None => rest = after,
        }
    }
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    merge::substitute(text, &pairs)
}

/// The parts of a Mailgun request every message made from it shares.
struct Common {
    from: String,
    cc: Vec<AddressInput>,
    bcc: Vec<AddressInput>,
    attachments: Vec<AttachmentInput>,
    tags: Vec<String>,
    metadata: BTreeMap<String, String>,
}

/// Turns a `/messages` form into Baton's requests: one, or with `recipient-variables` one per
/// `to` recipient, rendered for them.
fn translate(form: &Form) -> Result<Vec<SendRequest>, MailgunError> {
    refuse_unsupported(form)?;
    let from: Vec<&str> = form.texts("from").map(str::trim).filter(|f| !f.is_empty()).collect();
    let from = match from.as_slice() {
        [] => return Err(MailgunError::invalid("'from' parameter is missing")),
        [one] => one.to_string(),
        _ => return Err(MailgunError::invalid("'from' parameter: Baton sends from one address; give one")),
    };
    let mut to = addresses(form, "to")?;
    if to.is_empty() {
        return Err(MailgunError::invalid("'to' parameter is missing"));
    }
    if !form.has("text") && !form.has("html") {
        return Err(MailgunError::invalid(match form.has("amp-html") {
            true => "amp-html: Baton does not send AMP; give html or text as well",
            false => "Need at least one of 'text', 'html', 'amp-html' or 'template' parameters specified",
        }));
    }
    let common = Common {
        from,
        cc: addresses(form, "cc")?,
        bcc: addresses(form, "bcc")?,
        attachments: attachments(form)?,
        tags: form.texts("o:tag").map(str::to_string).collect(),
        metadata: metadata(form)?,
    };
    let Some(variables) = recipient_variables(form)? else {
        return Ok(vec![message(form, &common, to, |t| t.to_string())?]);
    };
    // Mailgun's batch sending: a message per `to` recipient, each address once.
    let mut seen = std::collections::HashSet::new();
    to.retain(|a| seen.insert(email(a).to_ascii_lowercase()));
    if to.len() > MAX_BATCH {
        return Err(MailgunError::invalid(format!(
            "'to' parameter: batch sending takes at most {MAX_BATCH} recipients"
        )));
    }
    let none = Map::new();
    to.into_iter()
        .map(|rcpt| {
            let vars = variables.get(&email(&rcpt).to_ascii_lowercase()).unwrap_or(&none);
            message(form, &common, vec![rcpt], |t| render(t, vars))
        })
        .collect()
}

/// One Baton request for `to`, every personal text passed through `render`.
fn message(
    form: &Form,
    common: &Common,
    to: Vec<AddressInput>,
    render: impl Fn(&str) -> String,
) -> Result<SendRequest, MailgunError> {
    let mut headers = BTreeMap::new();
    let mut reply_to = Vec::new();
    for (name, value) in form.prefixed("h:") {
        if name.eq_ignore_ascii_case("Reply-To") {
            reply_to.extend(address_lists("h:Reply-To", std::iter::once(render(value).as_str()))?);
        } else if !name.eq_ignore_ascii_case("X-Mailgun-Variables") {
            headers.insert(name.to_string(), render(value));
        }
    }
    if reply_to.len() > 1 {
        return Err(MailgunError::invalid("h:Reply-To: Baton takes one reply-to address"));
    }
    Ok(SendRequest {
        from: common.from.clone().into(),
        to,
        cc: common.cc.clone(),
        bcc: common.bcc.clone(),
        reply_to: reply_to.pop(),
        subject: form.text("subject").map(&render),
        text: form.text("text").map(&render),
        html: form.text("html").map(&render),
        headers,
        attachments: common.attachments.clone(),
        tags: common.tags.clone(),
        metadata: common.metadata.iter().map(|(k, v)| (k.clone(), render(v))).collect(),
        stream: None,
        raw_base64: None,
    })
}

/// Turns a `/messages.mime` form into Baton's request: the `message` part kept byte for byte,
/// sent to the `to` fields from its `From:` address.
fn translate_mime(form: &Form) -> Result<SendRequest, MailgunError> {
    refuse_unsupported(form)?;
    if form.has("recipient-variables") {
        return Err(MailgunError::invalid(
            "recipient-variables: not supported with messages.mime (the message is sent byte for byte); use /messages",
        ));
    }
    let to = addresses(form, "to")?;
    if to.is_empty() {
        return Err(MailgunError::invalid("'to' parameter is missing"));
    }
    let raw: &[u8] = match form.parts("message").next() {
        Some(Part::File(file)) => &file.data,
        Some(Part::Text(text)) => text.as_bytes(),
        None => return Err(MailgunError::invalid("'message' parameter is missing")),
    };
    let from = header_addresses(raw)
        .from
        .ok_or_else(|| MailgunError::invalid("message: the MIME message has no From: address"))?;
    Ok(SendRequest {
        tags: form.texts("o:tag").map(str::to_string).collect(),
        metadata: metadata(form)?,
        ..SendRequest::raw(from, to, raw)
    })
}

/// Mailgun's success answer for the message `id` sent for `domain`.
fn queued(id: &str, domain: &str) -> Response {
    Json(json!({"id": format!("<{id}@{domain}>"), "message": "Queued. Thank you."})).into_response()
}

/// The one flow of both endpoints: who is calling and may they use `domain`, then the form
/// read within the body budget, translated by `translate` and spooled; Mailgun's answer.
async fn accept(
    shared: &Shared,
    budget: &BodyBudget,
    headers: &HeaderMap,
    domain: &str,
    body: Body,
    translate: impl FnOnce(&Form) -> Result<Vec<SendRequest>, MailgunError>,
) -> Result<Response, MailgunError> {
    let client = authenticate(shared, headers)?;
    sending_domain(shared, &client, domain)?;
    // Held until the messages are spooled: their attachments are copies of the form's files.
    let body = read_body(shared, budget, headers, body).await?;
    let form = read_form(headers, body.bytes.clone()).await.map_err(|m| counted(shared, MailgunError::invalid(m)))?;
    // A batch becomes a message per `to` recipient, each holding a copy of the request's
    // content: bounded before any copy is made, so one request cannot exhaust memory.
    if form.has("recipient-variables") {
        let copies = form.texts("to").map(|t| t.matches('@').count()).sum::<usize>().max(1) as u64;
        let limit = shared.runtime.load().config.server.max_message_size.0.saturating_mul(BATCH_COPIES);
        if copies.saturating_mul(body.bytes.len() as u64) > limit {
            let m = format!(
                "recipient-variables: {copies} copies of a {} byte request are more than Baton takes at once ({BATCH_COPIES} × server.max_message_size); send smaller batches",
                body.bytes.len()
            );
            return Err(counted(shared, MailgunError { status: StatusCode::PAYLOAD_TOO_LARGE, message: m }));
        }
    }
    let requests = translate(&form).map_err(|e| counted(shared, e))?;
    let id = spool_all(shared, &client, requests).await?;
    drop(body);
    Ok(queued(&id, domain))
}

async fn send(
    State(shared): State<Arc<Shared>>,
    Extension(budget): Extension<BodyBudget>,
    Path(domain): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, MailgunError> {
    accept(&shared, &budget, &headers, &domain, body, translate).await
}

async fn send_mime(
    State(shared): State<Arc<Shared>>,
    Extension(budget): Extension<BodyBudget>,
    Path(domain): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, MailgunError> {
    let mime = |form: &Form| translate_mime(form).map(|r| vec![r]);
    accept(&shared, &budget, &headers, &domain, body, mime).await
}

/// Checks every message before spooling any (Mailgun takes a batch whole or not at all), then
/// spools them: the first one's id.
async fn spool_all(shared: &Shared, client: &Client, requests: Vec<SendRequest>) -> Result<String, MailgunError> {
    let mut prepared = Vec::with_capacity(requests.len());
    for request in requests {
        prepared.push(submit::prepare(shared, client, request).await?);
    }
    let mut first = None;
    for message in prepared {
        match submit::spool(shared, client, message, None).await {
            Ok(id) => {
                first.get_or_insert(id);
            }
            // The spool failed after earlier messages of the batch were spooled (it is full or
            // stopping): an error would make the SDK send those again. Accept, and log.
            Err(refusal) if first.is_some() => {
                tracing::warn!(client = %client.name, reason = refusal.reason(), "a message of a Mailgun batch could not be spooled; the others were accepted");
            }
            Err(refusal) => return Err(refusal.into()),
        }
    }
    first.ok_or_else(|| MailgunError::from(Refusal::Internal))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(fields: &[(&str, &str)]) -> Form {
        Form { fields: fields.iter().map(|(k, v)| (k.to_string(), Part::Text(v.to_string()))).collect() }
    }

    fn file(form: &mut Form, field: &str, filename: &str, content_type: Option<&str>, data: &'static [u8]) {
        let file = File {
            filename: Some(filename.into()),
            content_type: content_type.map(str::to_string),
            data: Bytes::from_static(data),
        };
        form.fields.push((field.into(), Part::File(file)));
    }

    fn named(a: &AddressInput) -> (&str, Option<&str>) {
        match a {
            AddressInput::Full { email, name } => (email, name.as_deref()),
            AddressInput::Plain(email) => (email, None),
        }
    }

    fn refused(form: &Form) -> String {
        translate(form).expect_err("refused").message
    }

    #[test]
    fn a_mailgun_form_becomes_a_baton_request() {
        let mut f = form(&[
            ("from", "Acme <app@example.com>"),
            ("to", "\"Doe, Alice\" <alice@example.net>, bob@example.net"),
            ("to", "Carol <carol@example.net>"),
            ("cc", "dave@example.net"),
            ("bcc", "audit@example.com"),
            ("subject", "Grüße"),
            ("text", "Hi"),
            ("html", "<p>Hi</p>"),
            ("h:X-Ref", "42"),
            ("h:Reply-To", "Support <support@example.com>"),
            ("h:X-Mailgun-Variables", r#"{"order": 7, "vip": true}"#),
            ("o:tag", "reset"),
            ("o:tag", "july"),
            ("o:tracking", "yes"),
            ("v:user", "u-1"),
        ]);
        file(&mut f, "attachment", "a.txt", Some("text/plain"), b"hello");
        file(&mut f, "inline", "logo.png", Some("image/png"), b"PNG");
        let [r] = translate(&f).unwrap().try_into().unwrap();
        assert_eq!(r.from, "Acme <app@example.com>");
        let to: Vec<_> = r.to.iter().map(named).collect();
        assert_eq!(
            to,
            [
                ("alice@example.net", Some("Doe, Alice")),
                ("bob@example.net", None),
                ("carol@example.net", Some("Carol"))
            ]
        );
        assert_eq!((r.cc.len(), r.bcc.len()), (1, 1));
        assert_eq!(named(r.reply_to.as_ref().unwrap()), ("support@example.com", Some("Support")));
        assert_eq!(r.headers.len(), 1, "Reply-To and X-Mailgun-Variables are not headers: {:?}", r.headers);
        assert_eq!(r.headers["X-Ref"], "42");
        assert_eq!(r.tags, ["reset", "july"]);
        assert_eq!(
            r.metadata,
            BTreeMap::from([
                ("order".into(), "7".into()),
                ("user".into(), "u-1".into()),
                ("vip".into(), "true".into())
            ])
        );
        assert_eq!(
            (r.subject.as_deref(), r.text.as_deref(), r.html.as_deref()),
            (Some("Grüße"), Some("Hi"), Some("<p>Hi</p>"))
        );
        let [a, logo] = r.attachments.as_slice() else { panic!("two attachments") };
        assert_eq!(
            (a.filename.as_str(), a.content_type.as_deref(), a.content_id.as_deref()),
            ("a.txt", Some("text/plain"), None)
        );
        assert_eq!(a.content_base64, "aGVsbG8=");
        assert_eq!(logo.content_id.as_deref(), Some("logo.png"), "Mailgun's Content-ID is the filename");
    }

    #[test]
    fn recipient_variables_make_a_rendered_message_per_to_recipient() {
        let f = form(&[
            ("from", "app@example.com"),
            ("to", "Alice <alice@example.net>, bob@example.net, ALICE@example.net"),
            ("cc", "carol@example.net"),
            ("subject", "Hi %recipient.first%"),
            ("text", "Code %recipient.code%, %recipient.missing%done. 100% %recipient. x"),
            ("html", "<b>%recipient.first%</b>"),
            ("h:X-User", "%recipient.h:X-User%"),
            ("v:user", "%recipient.v:user%"),
            (
                "recipient-variables",
                r#"{"Alice@example.net": {"first": "Alice", "code": 7, "h:X-User": "a", "v:user": "u-a"},
                    "bob@example.net": {"first": "%recipient.code%"}}"#,
            ),
        ]);
        let r = translate(&f).unwrap();
        assert_eq!(r.len(), 2, "each address once");
        assert_eq!(r[0].to.iter().map(named).collect::<Vec<_>>(), [("alice@example.net", Some("Alice"))]);
        assert_eq!(r[0].cc.len(), 1, "cc rides along on each message");
        assert_eq!(r[0].subject.as_deref(), Some("Hi Alice"));
        assert_eq!(r[0].text.as_deref(), Some("Code 7, done. 100% %recipient. x"));
        assert_eq!(r[0].html.as_deref(), Some("<b>Alice</b>"));
        assert_eq!((r[0].headers["X-User"].as_str(), r[0].metadata["user"].as_str()), ("a", "u-a"));
        assert_eq!(named(&r[1].to[0]), ("bob@example.net", None));
        assert_eq!(r[1].subject.as_deref(), Some("Hi %recipient.code%"), "a value is not rendered again");
        assert_eq!(r[1].text.as_deref(), Some("Code , done. 100% %recipient. x"), "unknown variables are emptied");
        assert_eq!(r[1].headers["X-User"], "");
    }

    #[test]
    fn without_recipient_variables_nothing_is_rendered_and_to_stays_one_message() {
        let f = form(&[
            ("from", "app@example.com"),
            ("to", "a@example.net"),
            ("to", "b@example.net"),
            ("text", "%recipient.x%"),
        ]);
        let r = translate(&f).unwrap();
        assert_eq!((r.len(), r[0].to.len(), r[0].text.as_deref()), (1, 2, Some("%recipient.x%")));
    }

    #[test]
    fn missing_fields_and_what_baton_cannot_do_are_refused_by_name() {
        let base = [("from", "app@example.com"), ("to", "a@example.net"), ("text", "t")];
        let with = |extra: &[(&str, &str)]| {
            let mut fields = base.to_vec();
            fields.extend_from_slice(extra);
            form(&fields)
        };
        assert_eq!(refused(&form(&base[1..])), "'from' parameter is missing");
        assert_eq!(refused(&form(&[base[0], base[2]])), "'to' parameter is missing");
        assert!(refused(&form(&base[..2])).starts_with("Need at least one of 'text', 'html'"));
        assert!(refused(&with(&[("to", "not an address")])).starts_with("'to' parameter is not a valid address"));
        assert!(
            refused(&with(&[("o:deliverytime", "Fri, 14 Oct 2011 23:10:10 -0000")])).starts_with("o:deliverytime:")
        );
        assert!(refused(&with(&[("o:testmode", "yes")])).contains("testmode is not supported"));
        assert!(translate(&with(&[("o:testmode", "no")])).is_ok(), "testmode off is a normal send");
        assert!(refused(&with(&[("template", "welcome")])).starts_with("template:"));
        assert!(refused(&with(&[("recipient-variables", "[1]")])).starts_with("recipient-variables:"));
        assert!(refused(&with(&[("h:Reply-To", "a@example.com, b@example.com")])).starts_with("h:Reply-To:"));
        assert!(refused(&with(&[("attachment", "not a file")])).starts_with("attachment:"));
        assert!(refused(&with(&[("from", "other@example.com")])).starts_with("'from' parameter:"));
    }

    #[test]
    fn a_mime_form_keeps_the_message_and_takes_the_envelope_from_to() {
        let raw: &'static [u8] = b"From: Acme <app@example.com>\r\nTo: a@example.net\r\nSubject: x\r\n\r\nbody\r\n";
        let mut f = form(&[("to", "a@example.net, hidden@example.net"), ("o:tag", "raw"), ("v:k", "v")]);
        assert_eq!(translate_mime(&f).unwrap_err().message, "'message' parameter is missing");
        file(&mut f, "message", "message.mime", Some("message/rfc822"), raw);
        let r = translate_mime(&f).unwrap();
        assert_eq!(r.from, "app@example.com");
        assert_eq!(r.to.len(), 2);
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(r.raw_base64.unwrap()).unwrap(), raw);
        assert_eq!((r.tags, r.metadata["k"].as_str()), (vec!["raw".to_string()], "v"));
        let no_to = form(&[("message", "From: app@example.com\r\n\r\nx")]);
        assert_eq!(translate_mime(&no_to).unwrap_err().message, "'to' parameter is missing");
        let no_from = form(&[("to", "a@example.net"), ("message", "Subject: x\r\n\r\nx")]);
        assert!(translate_mime(&no_from).unwrap_err().message.contains("no From:"));
    }

    #[tokio::test]
    async fn both_form_encodings_keep_repeated_fields_in_order() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
        let f =
            read_form(&headers, Bytes::from_static(b"to=a%40example.net&o%3Atag=x&to=b%40example.net")).await.unwrap();
        assert_eq!(f.texts("to").collect::<Vec<_>>(), ["a@example.net", "b@example.net"]);
        assert_eq!(f.text("o:tag"), Some("x"));
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"to\"\r\n\r\na@example.net\r\n\
                    --XyZ\r\nContent-Disposition: form-data; name=\"attachment\"; filename=\"r.pdf\"\r\nContent-Type: application/pdf\r\n\r\n%PDF\r\n\
                    --XyZ\r\nContent-Disposition: form-data; name=\"to\"\r\n\r\nb@example.net\r\n--XyZ--\r\n";
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("multipart/form-data; boundary=XyZ"));
        let f = read_form(&headers, Bytes::from(body)).await.unwrap();
        assert_eq!(f.texts("to").collect::<Vec<_>>(), ["a@example.net", "b@example.net"]);
        let Some(Part::File(pdf)) = f.parts("attachment").next() else { panic!("a file part") };
        assert_eq!(
            (pdf.filename.as_deref(), pdf.content_type.as_deref(), &pdf.data[..]),
            (Some("r.pdf"), Some("application/pdf"), &b"%PDF"[..])
        );
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert!(read_form(&headers, Bytes::from_static(b"{}")).await.unwrap_err().contains("multipart/form-data"));
    }
}
