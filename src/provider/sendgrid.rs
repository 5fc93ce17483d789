//! The `sendgrid` provider: SendGrid v3 `mail/send`.
//!
//! SendGrid takes no raw MIME, so the spooled message is split into its JSON fields
//! ([`super::mime::fields`]): recipients from the envelope (To/Cc as the headers name them, the
//! rest Bcc), from, reply-to, subject, text and HTML content, attachments and inline parts,
//! custom headers and the Message-ID. At most 1000 recipients go in one request (the shared
//! batching in [`super::send`] splits larger sends). Success is `202` with the id in
//! `X-Message-Id`; errors are classified on their text first ("Maximum credits exceeded" under a
//! 401 is `account`, "does not match a verified Sender Identity" under a 403 is
//! `sender_unverified`, any other 403 `account`), then on the status (`shared/providers.md`).
//!
//! The probe reads `GET /v3/scopes`, which any valid key may: `mail.send` listed is usable, a
//! list without it or a 401 is `account`, a 403/404 or an unreadable answer is inconclusive.
//! The half-open trial is the real request for the first recipient in sandbox mode: SendGrid
//! validates it and answers 200 without delivering.

use super::http::{HttpClient, HttpReply, class_for_status, probe_fallback, refused, refused_with_note, with_note};
use super::mime::{self, Fields, Mailbox};
use super::redact::Secrets;
use super::{Outbound, Provider, trial_accepted};
use crate::config::SendgridConfig;
use crate::health::ProbeReport;
use crate::outcome::{OutcomeClass, SendReport, truncate_detail};
use base64::Engine as _;
use serde_json::{Map, Value, json};

/// SendGrid's limit of recipients (to + cc + bcc) per request.
const MAX_RECIPIENTS: usize = 1000;

pub struct SendgridProvider {
    name: String,
    key: String,
    send_url: String,
    scopes_url: String,
    http: HttpClient,
}

impl SendgridProvider {
    pub fn new(name: &str, config: &SendgridConfig) -> Result<Self, String> {
        let base = config.base_url.trim_end_matches('/');
        Ok(SendgridProvider {
            name: name.to_string(),
            key: config.api_key.clone(),
            send_url: format!("{base}/v3/mail/send"),
            scopes_url: format!("{base}/v3/scopes"),
            http: HttpClient::new(config.timeout.0, config.max_connections, Secrets::new([config.api_key.as_str()]))?,
        })
    }

    /// Posts one `mail/send` body for `n` recipients: the reply (key redacted), or the
    /// transport failure.
    async fn post(&self, body: &Value, n: usize) -> Result<HttpReply, SendReport> {
        let request = self.http.client.post(&self.send_url).bearer_auth(&self.key).json(body);
        self.http.send(request, n).await
    }
}

fn mailbox(m: &Mailbox) -> Value {
    match &m.name {
        Some(name) => json!({"email": m.email, "name": name}),
        None => json!({"email": m.email}),
    }
}

/// The `mail/send` body for one request.
fn payload(f: &Fields) -> Value {
    let mut personalization = Map::new();
    personalization.insert("to".into(), f.to.iter().map(mailbox).collect());
    if !f.cc.is_empty() {
        personalization.insert("cc".into(), f.cc.iter().map(mailbox).collect());
    }
    if !f.bcc.is_empty() {
        personalization.insert("bcc".into(), f.bcc.iter().map(mailbox).collect());
    }
    let mut body = Map::new();
    body.insert("personalizations".into(), json!([personalization]));
    if let Some(from) = &f.from {
        body.insert("from".into(), mailbox(from));
    }
    match f.reply_to.as_slice() {
        [] => {}
        [one] => {
            body.insert("reply_to".into(), mailbox(one));
        }
        many => {
            body.insert("reply_to_list".into(), many.iter().map(mailbox).collect());
        }
    }
    body.insert("subject".into(), Value::String(f.subject.clone()));
    // SendGrid wants text/plain first, then text/html, and at least one non-empty value.
    let mut content = Vec::new();
    if let Some(text) = f.text.as_deref().filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text/plain", "value": text}));
    }
    if let Some(html) = f.html.as_deref().filter(|h| !h.is_empty()) {
        content.push(json!({"type": "text/html", "value": html}));
    }
    if content.is_empty() {
        // An attachments-only message: SendGrid refuses an empty content list.
        content.push(json!({"type": "text/plain", "value": " "}));
    }
    body.insert("content".into(), Value::Array(content));
    if !f.attachments.is_empty() {
        let attachments = f
            .attachments
            .iter()
            .map(|a| {
                let mut att = json!({
                    "content": base64::engine::general_purpose::STANDARD.encode(&a.content),
                    "filename": a.filename,
                    "type": a.content_type,
                    "disposition": if a.content_id.is_some() { "inline" } else { "attachment" },
                });
                if let Some(cid) = &a.content_id {
                    att["content_id"] = Value::String(cid.clone());
                }
                att
            })
            .collect();
        body.insert("attachments".into(), Value::Array(attachments));
    }
    let mut headers = Map::new();
    for (name, value) in &f.headers {
        // A JSON object holds each name once: the first occurrence wins.
        if !headers.keys().any(|k| k.eq_ignore_ascii_case(name)) {
            headers.insert(name.clone(), Value::String(value.clone()));
        }
    }
    if let Some(id) = &f.message_id {
        // Keep Baton's Message-ID so replies and logs can be matched to the message.
        headers.insert("Message-ID".into(), Value::String(id.clone()));
    }
    if !headers.is_empty() {
        body.insert("headers".into(), Value::Object(headers));
    }
    Value::Object(body)
}

/// Most categories SendGrid takes on one message, and the longest.
const MAX_CATEGORIES: usize = 10;
const MAX_CATEGORY_LEN: usize = 255;
/// SendGrid's limit on all custom_args of a message together, in bytes.
const MAX_CUSTOM_ARGS_BYTES: usize = 10_000;

/// Adds the app's tags as `categories` and its metadata as `custom_args` (each within
/// SendGrid's limits; what does not fit is left out).
fn add_labels(body: &mut Value, msg: &Outbound<'_>) {
    let categories = super::labels::tags(msg, |t| t.len() <= MAX_CATEGORY_LEN && t.is_ascii(), MAX_CATEGORIES);
    if !categories.is_empty() {
        body["categories"] = json!(categories);
    }
    let mut custom_args = Map::new();
    let mut room = MAX_CUSTOM_ARGS_BYTES;
    for (key, value) in msg.metadata {
        let Some(left) = room.checked_sub(key.len() + value.len()) else { continue };
        room = left;
        custom_args.insert(key.clone(), Value::String(value.clone()));
    }
    if !custom_args.is_empty() {
        body["custom_args"] = Value::Object(custom_args);
    }
}

/// The body of a synthetic trial: the real request, in sandbox mode (validated, not delivered).
fn trial_payload(f: &Fields) -> Value {
    let mut body = payload(f);
    body["mail_settings"] = json!({"sandbox_mode": {"enable": true}});
    body
}

/// The class of a refused request, and what to say about it beyond the body.
fn failure(status: u16, body: &str) -> (OutcomeClass, Option<&'static str>) {
    // Text before code: the credits message comes under a 401 like a bad key does.
    let text = body.to_ascii_lowercase();
    if text.contains("maximum credits exceeded") {
        return (OutcomeClass::Account, Some("out of credits"));
    }
    match status {
        400 | 413 => (OutcomeClass::BadRequest, None),
        401 => (OutcomeClass::Account, Some("authentication failed (API key invalid or revoked)")),
        // Per sender: other domains may still send through this key.
        403 if text.contains("verified sender identity") => {
            (OutcomeClass::SenderUnverified, Some("the sender is not a verified Sender Identity"))
        }
        403 => (OutcomeClass::Account, Some("forbidden (key scope or IP access)")),
        429 => (OutcomeClass::RateLimited, None),
        500..=599 => (OutcomeClass::Transient, None),
        // Only called for non-2xx answers: never `accepted`.
        s => (class_for_status(s), None),
    }
}

/// Classifies the answer to one `mail/send` request for `n` recipients.
fn classify(reply: &HttpReply, n: usize) -> SendReport {
    if (200..300).contains(&reply.status) {
        let id = reply.header("x-message-id").map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
        if id.is_some() || reply.status == 202 {
            let detail = format!("HTTP {} X-Message-Id {}", reply.status, id.as_deref().unwrap_or("-"));
            return SendReport::delivered(n, id, truncate_detail(&detail));
        }
        // A 2xx that is not SendGrid's answer (a proxy, a wrong base_url): we cannot tell
        // whether the mail went out.
        let mut report = refused(OutcomeClass::Transient, n, reply);
        report.possible_duplicate = true;
        return report;
    }
    let (class, note) = failure(reply.status, &reply.body);
    refused_with_note(class, n, reply, note)
}

/// Classifies the answer to `GET /v3/scopes`.
fn classify_scopes(reply: &HttpReply) -> ProbeReport {
    const ENDPOINT: &str = "GET /v3/scopes";
    if (200..300).contains(&reply.status) {
        let scopes = reply.json().and_then(|b| b.get("scopes").and_then(Value::as_array).cloned());
        return match scopes {
            Some(list) if list.iter().any(|s| s.as_str() == Some("mail.send")) => {
                ProbeReport::usable("API key has the mail.send scope")
            }
            Some(_) => ProbeReport::failed(OutcomeClass::Account, "API key lacks the mail.send scope"),
            None => probe_fallback(reply, ENDPOINT, ""),
        };
    }
    if reply.status == 401 {
        // Any valid key may read its scopes: a 401 is the key itself (or the credits).
        let (class, note) = failure(reply.status, &reply.body);
        return ProbeReport::failed(class, with_note(reply.detail(), note));
    }
    probe_fallback(reply, ENDPOINT, "allow this host in the key's IP Access Management")
}

#[async_trait::async_trait]
impl Provider for SendgridProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn max_recipients(&self) -> usize {
        MAX_RECIPIENTS
    }

    async fn send_batch(&self, msg: &Outbound<'_>) -> SendReport {
        let n = msg.recipients.len();
        let mut body = payload(&mime::fields(msg.body, msg.mail_from, msg.recipients));
        add_labels(&mut body, msg);
        match self.post(&body, n).await {
            Ok(reply) => classify(&reply, n),
            Err(report) => report,
        }
    }

    /// `mail/send` with the app's `template_id` request as it came.
    async fn send_template(&self, msg: &Outbound<'_>) -> SendReport {
        let n = msg.recipients.len();
        let request = (self.http.client.post(&self.send_url).bearer_auth(&self.key))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(msg.body.to_vec());
        match self.http.send(request, n).await {
            Ok(reply) => classify(&reply, n),
            Err(report) => report,
        }
    }

    /// The request for the first recipient in sandbox mode: 200 means SendGrid would take it.
    async fn trial(&self, msg: &Outbound<'_>) -> Option<SendReport> {
        let n = msg.recipients.len();
        let mut body = trial_payload(&mime::fields(msg.body, msg.mail_from, &msg.recipients[..n.min(1)]));
        add_labels(&mut body, msg);
        let report = match self.post(&body, n).await {
            Ok(reply) if (200..300).contains(&reply.status) => {
                trial_accepted(n, truncate_detail(&format!("sandbox mode: {}", reply.detail())))
            }
            Ok(reply) => classify(&reply, n),
            Err(report) => report,
        };
        Some(report)
    }

    /// `GET /v3/scopes`: the key works and may send mail.
    async fn probe(&self) -> ProbeReport {
        let request = self.http.client.get(&self.scopes_url).bearer_auth(&self.key);
        match self.http.probe(request).await {
            Ok(reply) => classify_scopes(&reply),
            Err(report) => report,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::RecipientResult;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn reply(status: u16, body: &str) -> HttpReply {
        HttpReply { status, headers: HeaderMap::new(), body: body.into() }
    }

    #[test]
    fn builds_the_body_from_the_mime() {
        let raw = mail_builder::MessageBuilder::new()
            .from(("Billing", "billing@example.com"))
            .to(vec![("Alice", "alice@example.net")])
            .cc("carol@example.net")
            .reply_to("support@example.com")
            .subject("Grüße")
            .message_id("id-1@baton.test")
            .header("X-Campaign", mail_builder::headers::text::Text::new("reset"))
            .text_body("plain")
            .html_body("<p>html <img src=\"cid:logo\"></p>")
            .attachment("application/pdf", "a.pdf", b"%PDF".to_vec())
            .inline("image/png", "logo", b"PNG".to_vec())
            .write_to_vec()
            .unwrap();
        let rcpts = ["alice@example.net".to_string(), "carol@example.net".to_string(), "audit@example.com".to_string()];
        let body = payload(&mime::fields(&raw, "billing@example.com", &rcpts));
        let p = &body["personalizations"][0];
        assert_eq!(p["to"], json!([{"email": "alice@example.net", "name": "Alice"}]));
        assert_eq!(p["cc"], json!([{"email": "carol@example.net"}]));
        assert_eq!(p["bcc"], json!([{"email": "audit@example.com"}]));
        assert_eq!(body["from"], json!({"email": "billing@example.com", "name": "Billing"}));
        assert_eq!(body["reply_to"], json!({"email": "support@example.com"}));
        assert_eq!(body["subject"], "Grüße");
        assert_eq!(body["content"][0]["type"], "text/plain");
        assert_eq!(body["content"][1]["type"], "text/html");
        assert_eq!(body["headers"]["X-Campaign"], "reset");
        assert_eq!(body["headers"]["Message-ID"], "<id-1@baton.test>");
        let atts = body["attachments"].as_array().unwrap();
        assert_eq!(atts.len(), 2, "{atts:?}");
        let pdf = atts.iter().find(|a| a["filename"] == "a.pdf").unwrap();
        assert_eq!(pdf["disposition"], "attachment");
        assert_eq!(pdf["content"], "JVBERg==");
        assert_eq!(pdf["type"], "application/pdf");
        let logo = atts.iter().find(|a| a["type"] == "image/png").unwrap();
        assert_eq!(logo["disposition"], "inline");
        assert_eq!(logo["content_id"], "logo");
    }

    #[test]
    fn success_keeps_the_message_id() {
        let mut r = reply(202, "");
        r.headers.insert("x-message-id", HeaderValue::from_static("abc123"));
        let report = classify(&r, 2);
        assert_eq!(report.class, OutcomeClass::Accepted);
        assert_eq!(report.recipients[1], RecipientResult::Delivered { provider_message_id: Some("abc123".into()) });
        // A 200 HTML page from something that is not SendGrid.
        let report = classify(&reply(200, "<html>welcome</html>"), 1);
        assert_eq!(report.class, OutcomeClass::Transient);
        assert!(report.possible_duplicate);
    }

    #[test]
    fn errors() {
        let credits = r#"{"errors":[{"message":"Maximum credits exceeded","field":null,"help":null}]}"#;
        let auth = r#"{"errors":[{"message":"The provided authorization grant is invalid, expired, or revoked","field":null,"help":null}]}"#;
        let cases = [
            (400, r#"{"errors":[{"message":"Invalid type","field":"content.0.value"}]}"#, OutcomeClass::BadRequest),
            (401, credits, OutcomeClass::Account),
            (401, auth, OutcomeClass::Account),
            (401, r#"{"errors":["Maximum credits exceeded"],"message":"error"}"#, OutcomeClass::Account),
            (
                403,
                r#"{"errors":[{"message":"The from address does not match a verified Sender Identity. Mail cannot be sent until this error is resolved. Visit https://sendgrid.com/docs/for-developers/sending-email/sender-identity/ to see the Sender Identity requirements","field":"from","help":null}]}"#,
                OutcomeClass::SenderUnverified,
            ),
            (403, r#"{"errors":[{"message":"access forbidden","field":null,"help":null}]}"#, OutcomeClass::Account),
            (413, "", OutcomeClass::BadRequest),
            (429, r#"{"errors":[{"message":"too many requests"}]}"#, OutcomeClass::RateLimited),
            (500, "", OutcomeClass::Transient),
            (503, "<html>unavailable</html>", OutcomeClass::Transient),
            (404, "<html>not found</html>", OutcomeClass::Transient),
        ];
        for (status, body, class) in cases {
            let report = classify(&reply(status, body), 1);
            assert_eq!(report.class, class, "{status} {body}");
            assert!(!report.possible_duplicate);
        }
        assert!(classify(&reply(401, credits), 1).detail.starts_with("out of credits"));
        assert!(classify(&reply(401, auth), 1).detail.starts_with("authentication failed"));
    }

    #[test]
    fn scopes_probe() {
        use crate::health::ProbeVerdict::{Failed, Inconclusive, Usable};
        let cases = [
            (200, r#"{"scopes":["mail.send","alerts.read"]}"#, Usable),
            (200, r#"{"scopes":["alerts.read"]}"#, Failed(OutcomeClass::Account)),
            (
                401,
                r#"{"errors":[{"message":"authorization required","field":null,"help":null}]}"#,
                Failed(OutcomeClass::Account),
            ),
            (401, r#"{"errors":[{"message":"Maximum credits exceeded"}]}"#, Failed(OutcomeClass::Account)),
            (403, r#"{"errors":[{"message":"access forbidden","field":null,"help":null}]}"#, Inconclusive),
            (404, "<html>not found</html>", Inconclusive),
            (200, "<html>captive portal</html>", Inconclusive),
            (429, r#"{"errors":[{"message":"too many requests"}]}"#, Inconclusive),
            (500, "", Failed(OutcomeClass::Transient)),
            (503, "<html>unavailable</html>", Failed(OutcomeClass::Transient)),
        ];
        for (status, body, verdict) in cases {
            let report = classify_scopes(&reply(status, body));
            assert_eq!(report.verdict, verdict, "{status} {body}: {}", report.detail);
            assert!(!report.detail.is_empty());
        }
        assert!(classify_scopes(&reply(403, "{}")).detail.contains("probe = false"));
        assert!(classify_scopes(&reply(401, "{}")).detail.starts_with("authentication failed"));
    }

    #[test]
    fn the_trial_is_the_real_request_in_sandbox_mode() {
        let raw = b"From: app@example.com\r\nTo: a@example.net\r\nSubject: t\r\n\r\nhello\r\n";
        let body = trial_payload(&mime::fields(raw, "app@example.com", &["a@example.net".to_string()]));
        assert_eq!(body["mail_settings"], json!({"sandbox_mode": {"enable": true}}));
        assert_eq!(body["personalizations"][0]["to"], json!([{"email": "a@example.net"}]));
        assert_eq!(body["subject"], "t");
    }
}
