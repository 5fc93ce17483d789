//! The `mailgun` provider: `messages.mime`, so the message goes out byte-exact.
//!
//! One multipart request per send: a `to` field per pending recipient and the spooled bytes as
//! the file field `message`, with HTTP Basic `api:<key>`. Mailgun's 401 is a bare `Forbidden`
//! for a wrong key and for a domain that lives in the other region alike, and "not allowed to
//! send" is an account block whatever the status (`shared/providers.md`).

use super::http::{HttpClient, HttpReply, class_for_status, refused};
use super::{Outbound, Provider};
use crate::config::MailgunConfig;
use crate::health::ProbeReport;
use crate::outcome::{OutcomeClass, SendReport, truncate_detail};
use base64::Engine as _;
use reqwest::multipart::{Form, Part};
use serde_json::Value;

pub struct MailgunProvider {
    name: String,
    key: String,
    /// `api:<key>` as it travels in the Authorization header, to scrub it from echoed bodies.
    encoded_credentials: String,
    domain: String,
    send_url: String,
    domain_url: String,
    http: HttpClient,
}

impl MailgunProvider {
    pub fn new(name: &str, config: &MailgunConfig) -> Result<Self, String> {
        let base = config.base_url.trim_end_matches('/');
        let domain = config.domain.trim();
        if domain.is_empty() || domain.contains(['/', '?', '#']) || domain.chars().any(char::is_whitespace) {
            return Err(format!("mailgun domain {domain:?} is not a domain name"));
        }
        Ok(MailgunProvider {
            name: name.to_string(),
            key: config.api_key.clone(),
            encoded_credentials: base64::engine::general_purpose::STANDARD.encode(format!("api:{}", config.api_key)),
            domain: domain.to_string(),
            send_url: format!("{base}/v3/{domain}/messages.mime"),
            domain_url: format!("{base}/v4/domains/{domain}"),
            http: HttpClient::new(config.timeout.0, config.max_connections)?,
        })
    }

    fn scrub(&self, reply: &mut HttpReply) {
        reply.redact(&self.key);
        reply.redact(&self.encoded_credentials);
    }
}

/// The class of a refused request (non-2xx), and what to say beyond the body.
fn failure(status: u16, body: &str) -> (OutcomeClass, Option<&'static str>) {
    // Text before code: "Domain X is not allowed to send: <reason>" is an account block (sandbox
    // domain, disabled domain, unpaid account) under 400 and 403 alike.
    if body.to_ascii_lowercase().contains("not allowed to send") {
        return (OutcomeClass::Account, None);
    }
    match status {
        400 => (OutcomeClass::BadRequest, None),
        401 => (
            OutcomeClass::Account,
            Some(
                "unauthorized: wrong API key, or the domain is in the other region (US api.mailgun.net vs EU api.eu.mailgun.net)",
            ),
        ),
        402 => (OutcomeClass::Account, Some("payment required")),
        403 => (OutcomeClass::Account, Some("forbidden")),
        404 => (OutcomeClass::Account, Some("domain unknown to Mailgun (check domain and region)")),
        429 => (OutcomeClass::RateLimited, None),
        500..=599 => (OutcomeClass::Transient, None),
        // Only called for non-2xx answers: never `accepted`.
        s => (class_for_status(s), None),
    }
}

fn with_note(detail: String, note: Option<&str>) -> String {
    match note {
        Some(note) => truncate_detail(&format!("{note}; {detail}")),
        None => detail,
    }
}

/// Classifies the answer to `messages.mime` for `n` recipients.
fn classify(reply: &HttpReply, n: usize) -> SendReport {
    if (200..300).contains(&reply.status) {
        let id = reply.json().and_then(|b| b.get("id").and_then(Value::as_str).map(str::to_string));
        if let Some(id) = id.filter(|id| !id.is_empty()) {
            return SendReport::delivered(
                n,
                Some(id.clone()),
                truncate_detail(&format!("HTTP {} id {id}", reply.status)),
            );
        }
        // 2xx without Mailgun's answer (a proxy, a wrong base_url): we cannot tell whether the
        // mail went out.
        let mut report = refused(OutcomeClass::Transient, n, reply);
        report.possible_duplicate = true;
        return report;
    }
    let (class, note) = failure(reply.status, &reply.body);
    let mut report = refused(class, n, reply);
    report.detail = with_note(report.detail, note);
    report
}

/// Classifies the answer to `GET /v4/domains/{domain}`.
fn classify_domain(reply: &HttpReply, domain: &str) -> ProbeReport {
    if !(200..300).contains(&reply.status) {
        let (class, note) = failure(reply.status, &reply.body);
        return ProbeReport { failure: Some(class), detail: with_note(reply.detail(), note) };
    }
    let body = reply.json();
    let d = body.as_ref().and_then(|b| b.get("domain"));
    let state = d.and_then(|d| d.get("state")).and_then(Value::as_str);
    let disabled = d.and_then(|d| d.get("is_disabled")).and_then(Value::as_bool).unwrap_or(false);
    match state {
        None => ProbeReport { failure: Some(OutcomeClass::Transient), detail: reply.detail() },
        Some(_) if disabled => {
            ProbeReport { failure: Some(OutcomeClass::Account), detail: format!("domain {domain} is disabled") }
        }
        Some("active") => ProbeReport { failure: None, detail: format!("domain {domain} is active") },
        Some(state) => ProbeReport {
            failure: Some(OutcomeClass::Account),
            detail: truncate_detail(&format!("domain {domain} is {state}, not active")),
        },
    }
}

#[async_trait::async_trait]
impl Provider for MailgunProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, msg: &Outbound<'_>) -> SendReport {
        let n = msg.recipients.len();
        let mut form = Form::new();
        for rcpt in msg.recipients {
            form = form.text("to", rcpt.clone());
        }
        let message = match Part::bytes(msg.body.to_vec()).file_name("message.mime").mime_str("message/rfc822") {
            Ok(part) => part,
            Err(e) => return SendReport::failed(OutcomeClass::Transient, n, format!("cannot build request: {e}")),
        };
        form = form.part("message", message);
        let request = self.http.client.post(&self.send_url).basic_auth("api", Some(&self.key)).multipart(form);
        let mut reply = match self.http.send(request, n).await {
            Ok(reply) => reply,
            Err(report) => return report,
        };
        self.scrub(&mut reply);
        classify(&reply, n)
    }

    /// `GET /v4/domains/{domain}`: the key works and the sending domain is active.
    async fn probe(&self) -> ProbeReport {
        let request = self.http.client.get(&self.domain_url).basic_auth("api", Some(&self.key));
        match self.http.send(request, 0).await {
            Ok(mut reply) => {
                self.scrub(&mut reply);
                classify_domain(&reply, &self.domain)
            }
            Err(report) => ProbeReport { failure: Some(report.class), detail: report.detail },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::RecipientResult;
    use reqwest::header::HeaderMap;

    fn reply(status: u16, body: &str) -> HttpReply {
        HttpReply { status, headers: HeaderMap::new(), body: body.into() }
    }

    #[test]
    fn success_keeps_the_id() {
        let report = classify(&reply(200, r#"{"id":"<2024.abc@mg.example.com>","message":"Queued. Thank you."}"#), 2);
        assert_eq!(report.class, OutcomeClass::Accepted);
        assert_eq!(
            report.recipients[0],
            RecipientResult::Delivered { provider_message_id: Some("<2024.abc@mg.example.com>".into()) }
        );
        let report = classify(&reply(200, "<html>hello</html>"), 1);
        assert_eq!(report.class, OutcomeClass::Transient);
        assert!(report.possible_duplicate);
    }

    #[test]
    fn errors() {
        let cases = [
            (400, r#"{"message":"'to' parameter is missing"}"#, OutcomeClass::BadRequest),
            (
                400,
                r#"{"message":"Domain sandbox1.mailgun.org is not allowed to send: Free accounts are for test purposes only"}"#,
                OutcomeClass::Account,
            ),
            (401, "Forbidden", OutcomeClass::Account),
            (402, r#"{"message":"payment required"}"#, OutcomeClass::Account),
            (
                403,
                r#"{"message":"Domain mg.example.com is not allowed to send: Please activate your Mailgun account"}"#,
                OutcomeClass::Account,
            ),
            (404, r#"{"message":"Domain not found: mg.example.com"}"#, OutcomeClass::Account),
            (413, "", OutcomeClass::BadRequest),
            (429, r#"{"message":"Too many requests"}"#, OutcomeClass::RateLimited),
            (500, "<html>oops</html>", OutcomeClass::Transient),
            (503, "", OutcomeClass::Transient),
        ];
        for (status, body, class) in cases {
            let report = classify(&reply(status, body), 1);
            assert_eq!(report.class, class, "{status} {body}");
            assert!(!report.possible_duplicate);
        }
        let d = classify(&reply(401, "Forbidden"), 1).detail;
        assert!(d.contains("API key") && d.contains("region") && d.contains("Forbidden"), "{d}");
    }

    #[test]
    fn domain_probe() {
        let ok = r#"{"domain":{"name":"mg.example.com","state":"active","is_disabled":false}}"#;
        assert_eq!(classify_domain(&reply(200, ok), "mg.example.com").failure, None);
        let unverified = r#"{"domain":{"name":"mg.example.com","state":"unverified","is_disabled":false}}"#;
        assert_eq!(classify_domain(&reply(200, unverified), "mg.example.com").failure, Some(OutcomeClass::Account));
        let disabled = r#"{"domain":{"name":"mg.example.com","state":"active","is_disabled":true}}"#;
        assert_eq!(classify_domain(&reply(200, disabled), "mg.example.com").failure, Some(OutcomeClass::Account));
        assert_eq!(classify_domain(&reply(401, "Forbidden"), "d").failure, Some(OutcomeClass::Account));
        assert_eq!(classify_domain(&reply(404, "{}"), "d").failure, Some(OutcomeClass::Account));
        assert_eq!(classify_domain(&reply(200, "{}"), "d").failure, Some(OutcomeClass::Transient));
    }
}
