//! The `resend` provider: `POST {base}/emails` with the message split into Resend's JSON fields
//! (`shared/providers.md`, Resend).
//!
//! Every request carries an `Idempotency-Key`: the Baton message id plus a short, stable hash
//! of the recipient set of that request. Sending the same message to the same recipients again
//! (a retry after a timeout that Resend did take, a restart) reuses the key, so Resend answers
//! with the first email instead of sending it twice. A later pass may hand Resend a different
//! subset (another provider took some recipients meanwhile): that is a different request, and
//! Resend refuses a reused key with a different body, hence the hash in the key.
//!
//! Errors are classified on their `name`, then their text, then the status: a From domain that
//! is not verified (403 "The … domain is not verified", 422 `invalid_from_address`) is
//! `sender_unverified`, other domains keep Resend; "only send testing emails" (no verified
//! domain at all), bad, suspended or restricted keys and used-up quotas are `account`. At most 50
//! recipients go in one request (the shared batching in [`super::send`]); Resend never refuses
//! single recipients of a request, so each request is all or nothing.
//!
//! The probe lists `GET /domains`: at least one verified domain is usable, none is `account`, a
//! rejected key is `account`; a sending-only key (401 `restricted_api_key`) cannot list domains,
//! so its probe is inconclusive.

use super::http::{HttpClient, HttpReply, accepted, class_for_status, probe_fallback, refused};
use super::mime;
use super::postmark::display_mailbox;
use super::redact::Secrets;
use super::{Outbound, Provider};
use crate::config::ResendConfig;
use crate::health::ProbeReport;
use crate::outcome::{OutcomeClass, SendReport, truncate_detail};
use base64::Engine as _;
use serde_json::{Map, Value, json};

/// Resend takes at most 50 recipients per email.
const MAX_RECIPIENTS: usize = 50;

pub struct ResendProvider {
    name: String,
    base: String,
    api_key: String,
    http: HttpClient,
}

/// `{message id}-{16 hex digits}`: FNV-1a over the sorted, lower-cased recipients. Stable across
/// restarts and Rust versions (unlike `DefaultHasher`), so a retry after a restart reuses it.
pub(crate) fn idempotency_key(message_id: &str, recipients: &[String]) -> String {
    let mut sorted: Vec<String> = recipients.iter().map(|r| r.to_ascii_lowercase()).collect();
    sorted.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in sorted.join("\n").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{message_id}-{hash:016x}")
}

/// Classifies an error answer: status 5xx, then the error `name` (old and new spellings, any
/// case), then the status class for names we do not know.
fn classify(status: u16, body: Option<&Value>) -> OutcomeClass {
    if status >= 500 {
        return OutcomeClass::Transient;
    }
    if (200..300).contains(&status) {
        return OutcomeClass::Accepted;
    }
    let name = body.and_then(|b| b.get("name")).and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase();
    let message = body.and_then(|b| b.get("message")).and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase();
    match name.as_str() {
        // "The example.com domain is not verified": per sender domain.
        "invalid_from_address" => OutcomeClass::SenderUnverified,
        "validation_error" if message.contains("domain is not verified") => OutcomeClass::SenderUnverified,
        "missing_api_key" | "restricted_api_key" | "invalid_api_key" | "suspended_api_key" | "invalid_permission"
        | "invalid_access" => OutcomeClass::Account,
        "daily_quota_exceeded" | "monthly_quota_exceeded" | "email_above_quota" => OutcomeClass::Account,
        "rate_limit_exceeded" => OutcomeClass::RateLimited,
        // "You can only send testing emails to your own email address" (no verified domain at
        // all): the account cannot send to anyone else.
        "validation_error"
            if status == 403
                || message.contains("testing emails")
                || message.contains("not verified")
                || message.contains("verify a domain") =>
        {
            OutcomeClass::Account
        }
        "validation_error"
        | "missing_required_field"
        | "invalid_attachment"
        | "invalid_parameter"
        | "invalid_idempotency_key"
        | "invalid_idempotent_request" => OutcomeClass::BadRequest,
        "concurrent_idempotent_requests" => OutcomeClass::Transient,
        _ if status == 429 && message.contains("quota") => OutcomeClass::Account,
        _ => class_for_status(status),
    }
}

impl ResendProvider {
    pub fn new(name: &str, config: &ResendConfig) -> Result<Self, String> {
        Ok(ResendProvider {
            name: name.to_string(),
            base: config.base_url.trim_end_matches('/').to_string(),
            api_key: config.api_key.clone(),
            http: HttpClient::new(config.timeout.0, config.max_connections, Secrets::new([config.api_key.as_str()]))?,
        })
    }

    fn payload(msg: &Outbound<'_>) -> Value {
        let f = mime::fields(msg.body, msg.mail_from, msg.recipients);
        let emails = |list: &[mime::Mailbox]| list.iter().map(|m| m.email.clone()).collect::<Vec<_>>();
        let from = f.from.as_ref().map(display_mailbox).unwrap_or_else(|| msg.mail_from.to_string());
        let mut body = json!({"from": from, "to": emails(&f.to), "subject": f.subject});
        let obj = body.as_object_mut().expect("object");
        if !f.cc.is_empty() {
            obj.insert("cc".into(), emails(&f.cc).into());
        }
        if !f.bcc.is_empty() {
            obj.insert("bcc".into(), emails(&f.bcc).into());
        }
        if !f.reply_to.is_empty() {
            obj.insert("reply_to".into(), emails(&f.reply_to).into());
        }
        if let Some(html) = &f.html {
            obj.insert("html".into(), html.clone().into());
        }
        if f.text.is_some() || f.html.is_none() {
            obj.insert("text".into(), f.text.clone().unwrap_or_default().into());
        }
        if !f.headers.is_empty() {
            let mut headers = Map::new();
            for (name, value) in &f.headers {
                // A JSON object holds one value per name: the first occurrence wins.
                headers.entry(name.clone()).or_insert_with(|| value.clone().into());
            }
            obj.insert("headers".into(), headers.into());
        }
        if !f.attachments.is_empty() {
            let attachments: Vec<Value> = f
                .attachments
                .iter()
                .map(|a| {
                    json!({
                        "filename": a.filename,
                        "content": base64::engine::general_purpose::STANDARD.encode(&a.content),
                    })
                })
                .collect();
            obj.insert("attachments".into(), attachments.into());
        }
        let safe = super::labels::name_value_safe;
        let tags = super::labels::name_value_pairs(msg, |n, v| safe(n) && safe(v), usize::MAX);
        if !tags.is_empty() {
            let tags: Vec<Value> = tags.iter().map(|(name, value)| json!({"name": name, "value": value})).collect();
            obj.insert("tags".into(), tags.into());
        }
        body
    }

    /// The report for an answer to `POST /emails` for `n` recipients (all or nothing).
    fn report(&self, reply: &HttpReply, n: usize) -> SendReport {
        let json = reply.json();
        match classify(reply.status, json.as_ref()) {
            OutcomeClass::Accepted => {
                let id = json.as_ref().and_then(|j| j.get("id")).and_then(Value::as_str).map(str::to_string);
                accepted(n, id, reply)
            }
            class => refused(class, n, reply),
        }
    }

    async fn post(&self, msg: &Outbound<'_>) -> Result<HttpReply, SendReport> {
        let request = self
            .http
            .client
            .post(format!("{}/emails", self.base))
            .bearer_auth(&self.api_key)
            .header("Idempotency-Key", idempotency_key(msg.id, msg.recipients))
            .json(&Self::payload(msg));
        self.http.send(request, msg.recipients.len()).await
    }
}

#[async_trait::async_trait]
impl Provider for ResendProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn max_recipients(&self) -> usize {
        MAX_RECIPIENTS
    }

    /// One request; all or nothing.
    async fn send_batch(&self, msg: &Outbound<'_>) -> SendReport {
        let n = msg.recipients.len();
        let reply = match self.post(msg).await {
            Ok(reply) => reply,
            Err(report) => return report,
        };
        self.report(&reply, n)
    }

    /// `POST /emails` with the app's `template` email as it came.
    async fn send_template(&self, msg: &Outbound<'_>) -> SendReport {
        let n = msg.recipients.len();
        let request = (self.http.client.post(format!("{}/emails", self.base)))
            .bearer_auth(&self.api_key)
            .header("Idempotency-Key", idempotency_key(msg.id, msg.recipients))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(msg.body.to_vec());
        let reply = match self.http.send(request, n).await {
            Ok(reply) => reply,
            Err(report) => return report,
        };
        self.report(&reply, n)
    }

    /// `GET /domains`: the key works and at least one domain is verified.
    async fn probe(&self) -> ProbeReport {
        let request = self.http.client.get(format!("{}/domains", self.base)).bearer_auth(&self.api_key);
        match self.http.probe(request).await {
            Ok(reply) => classify_domains(&reply),
            Err(report) => report,
        }
    }
}

/// Classifies the answer to `GET /domains`.
fn classify_domains(reply: &HttpReply) -> ProbeReport {
    const ENDPOINT: &str = "GET /domains";
    let json = reply.json();
    let name = json.as_ref().and_then(|j| j.get("name")).and_then(Value::as_str).unwrap_or_default();
    // A sending-only key may not list domains; it may well send.
    if matches!(name.to_ascii_lowercase().as_str(), "restricted_api_key" | "invalid_permission") {
        return probe_fallback(reply, ENDPOINT, "probe with a full-access key");
    }
    match classify(reply.status, json.as_ref()) {
        OutcomeClass::Accepted => match json.as_ref().and_then(|j| j.get("data")).and_then(Value::as_array) {
            Some(domains) => verified_domains(domains),
            None => probe_fallback(reply, ENDPOINT, ""),
        },
        OutcomeClass::Account if !name.is_empty() => ProbeReport::failed(OutcomeClass::Account, reply.detail()),
        _ => probe_fallback(reply, ENDPOINT, "probe with a full-access key"),
    }
}

/// Usable when at least one listed domain is verified: with none, Resend sends only test mail.
fn verified_domains(domains: &[Value]) -> ProbeReport {
    let verified: Vec<&str> = domains
        .iter()
        .filter(|d| d.get("status").and_then(Value::as_str) == Some("verified"))
        .filter_map(|d| d.get("name").and_then(Value::as_str))
        .collect();
    if verified.is_empty() {
        ProbeReport::failed(OutcomeClass::Account, format!("no verified domain ({} listed)", domains.len()))
    } else {
        ProbeReport::usable(truncate_detail(&format!("verified: {}", verified.join(", "))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(status: u16, name: &str, message: &str) -> OutcomeClass {
        classify(status, Some(&json!({"statusCode": status, "name": name, "message": message})))
    }

    #[test]
    fn error_names() {
        assert_eq!(err(401, "missing_api_key", "Missing API key in the authorization header."), OutcomeClass::Account);
        assert_eq!(
            err(401, "restricted_api_key", "This API key is restricted to only send emails."),
            OutcomeClass::Account
        );
        assert_eq!(err(403, "invalid_api_Key", "API key is invalid."), OutcomeClass::Account);
        assert_eq!(err(403, "suspended_api_key", "suspended"), OutcomeClass::Account);
        assert_eq!(err(403, "invalid_permission", "no"), OutcomeClass::Account);
        assert_eq!(
            err(403, "validation_error", "You can only send testing emails to your own email address (a@x)."),
            OutcomeClass::Account
        );
        assert_eq!(err(422, "invalid_from_address", "Invalid `from` field."), OutcomeClass::SenderUnverified);
        assert_eq!(
            err(
                403,
                "validation_error",
                "The example.com domain is not verified. Please, add and verify your domain on https://resend.com/domains"
            ),
            OutcomeClass::SenderUnverified
        );
        assert_eq!(
            err(
                422,
                "validation_error",
                "The example.com domain is not verified. Please, add and verify your domain on https://resend.com/domains"
            ),
            OutcomeClass::SenderUnverified
        );
        assert_eq!(err(422, "validation_error", "Invalid `to` field."), OutcomeClass::BadRequest);
        assert_eq!(err(400, "validation_error", "The `subject` field is required."), OutcomeClass::BadRequest);
        assert_eq!(err(422, "missing_required_field", "Missing `to` field."), OutcomeClass::BadRequest);
        assert_eq!(err(429, "rate_limit_exceeded", "Too many requests."), OutcomeClass::RateLimited);
        assert_eq!(err(429, "daily_quota_exceeded", "quota"), OutcomeClass::Account);
        assert_eq!(err(429, "monthly_quota_exceeded", "quota"), OutcomeClass::Account);
        assert_eq!(err(429, "email_above_quota", "quota"), OutcomeClass::Account);
        assert_eq!(err(500, "application_error", "oops"), OutcomeClass::Transient);
        assert_eq!(err(503, "rate_limit_exceeded", "odd"), OutcomeClass::Transient);
        // Unknown names: by status class.
        assert_eq!(err(403, "brand_new_name", "?"), OutcomeClass::Account);
        assert_eq!(err(429, "brand_new_limit", "slow down"), OutcomeClass::RateLimited);
        assert_eq!(err(429, "brand_new_limit", "you exceeded your sending quota"), OutcomeClass::Account);
        assert_eq!(err(422, "brand_new_name", "?"), OutcomeClass::BadRequest);
        assert_eq!(classify(502, None), OutcomeClass::Transient);
        assert_eq!(classify(200, None), OutcomeClass::Accepted);
    }

    #[test]
    fn domains_probe() {
        use crate::health::ProbeVerdict::{Failed, Inconclusive, Usable};
        let reply =
            |status: u16, body: Value| HttpReply { status, headers: Default::default(), body: body.to_string() };
        let error = |status: u16, name: &str, message: &str| {
            reply(status, json!({"statusCode": status, "name": name, "message": message}))
        };
        let domains =
            |status: &str| json!({"object": "list", "data": [{"id": "d1", "name": "example.com", "status": status}]});
        let cases = [
            (reply(200, domains("verified")), Usable),
            (reply(200, domains("pending")), Failed(OutcomeClass::Account)),
            (error(401, "restricted_api_key", "This API key is restricted to only send emails."), Inconclusive),
            (error(403, "invalid_permission", "Not allowed."), Inconclusive),
            (error(403, "invalid_api_key", "API key is invalid."), Failed(OutcomeClass::Account)),
            (error(403, "suspended_api_key", "This API key has been suspended."), Failed(OutcomeClass::Account)),
            (
                error(401, "missing_api_key", "Missing API key in the authorization header."),
                Failed(OutcomeClass::Account),
            ),
            (error(500, "application_error", "An unexpected error occurred."), Failed(OutcomeClass::Transient)),
            (reply(502, json!("Bad gateway")), Failed(OutcomeClass::Transient)),
            (error(429, "rate_limit_exceeded", "Too many requests."), Inconclusive),
            (reply(404, json!("not found")), Inconclusive),
            (reply(200, json!({"object": "list"})), Inconclusive),
            (HttpReply { status: 200, headers: Default::default(), body: "<html>".into() }, Inconclusive),
        ];
        for (r, verdict) in cases {
            let report = classify_domains(&r);
            assert_eq!(report.verdict, verdict, "{} {}: {}", r.status, r.body, report.detail);
        }
        let restricted = classify_domains(&error(401, "restricted_api_key", "restricted")).detail;
        assert!(restricted.contains("full-access key") && restricted.contains("probe = false"), "{restricted}");
    }

    #[test]
    fn idempotency_key_depends_on_the_recipient_set_only() {
        let a = idempotency_key("01J", &["b@x".into(), "A@x".into()]);
        assert_eq!(a, idempotency_key("01J", &["a@x".into(), "b@x".into()]), "order and case do not matter");
        assert_ne!(a, idempotency_key("01J", &["a@x".into()]));
        assert_ne!(a, idempotency_key("01K", &["a@x".into(), "b@x".into()]));
        assert!(a.starts_with("01J-") && a.len() == 4 + 16, "{a}");
    }
}
