//! The `mailgun` provider: `messages.mime`, so the message goes out byte-exact.
//!
//! One multipart request per batch of at most 1000 recipients (the shared batching in
//! [`super::send`]): a `to` field per recipient and the spooled bytes as the file field
//! `message`, with HTTP Basic `api:<key>`. Mailgun's 401 is a bare `Forbidden` for a wrong key
//! and for a domain that lives in the other region alike. "… is not allowed to send" under a
//! 400 (a sandbox domain) is `sender_unverified`; under any other status ("Domain X is not
//! allowed to send: <reason>", the configured sending domain blocked) it is `account`
//! (`shared/providers.md`).
//!
//! The probe reads `GET /v4/domains/{domain}`: active is usable, unverified or disabled is
//! `account`, "Domain not found" is `account`; a 401/403 is inconclusive, because domain sending
//! keys cannot read it (a wrong key also answers 401 there: the sends will tell). The half-open
//! trial is the real request for the first recipient with `o:testmode=yes`: Mailgun validates
//! it and answers 200 without delivering.

use super::http::{HttpClient, HttpReply, class_for_status, probe_fallback, refused, refused_with_note, with_note};
use super::redact::Secrets;
use super::{Outbound, Provider, trial_accepted};
use crate::config::MailgunConfig;
use crate::health::ProbeReport;
use crate::outcome::{OutcomeClass, SendReport, truncate_detail};
use reqwest::multipart::{Form, Part};
use serde_json::Value;

/// Mailgun's limit of recipients per message request.
const MAX_RECIPIENTS: usize = 1000;

/// Whether a request is a real send or a test-mode trial (`o:testmode`: validated, not delivered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Send,
    Test,
}

pub struct MailgunProvider {
    name: String,
    key: String,
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
            domain: domain.to_string(),
            send_url: format!("{base}/v3/{domain}/messages.mime"),
            domain_url: format!("{base}/v4/domains/{domain}"),
            http: HttpClient::new(
                config.timeout.0,
                config.max_connections,
                // HTTP Basic `api:<key>` is how the key travels.
                Secrets::new([]).with_login("api", &config.api_key),
            )?,
        })
    }

    /// Posts `messages.mime` for `recipients`: the reply (secrets scrubbed), or the failure.
    async fn post(&self, msg: &Outbound<'_>, recipients: &[String], mode: Mode) -> Result<HttpReply, SendReport> {
        let n = msg.recipients.len();
        let message = Part::bytes(msg.body.to_vec())
            .file_name("message.mime")
            .mime_str("message/rfc822")
            .map_err(|e| SendReport::failed(OutcomeClass::Transient, n, format!("cannot build request: {e}")))?;
        let form = recipients.iter().fold(Form::new(), |form, rcpt| form.text("to", rcpt.clone()));
        // Mailgun takes up to 3 tags of up to 128 ASCII characters; metadata as `v:` variables.
        let tags = super::labels::tags(msg, |t| t.len() <= 128 && t.is_ascii(), 3);
        let form = tags.into_iter().fold(form, |form, tag| form.text("o:tag", tag.to_string()));
        let form = (msg.metadata.iter()).fold(form, |form, (k, v)| form.text(format!("v:{k}"), v.clone()));
        let form = match mode {
            Mode::Send => form,
            Mode::Test => form.text("o:testmode", "yes"),
        };
        let request = self
            .http
            .client
            .post(&self.send_url)
            .basic_auth("api", Some(&self.key))
            .multipart(form.part("message", message));
        self.http.send(request, n).await
    }
}

/// The class of a refused request (non-2xx), and what to say beyond the body.
fn failure(status: u16, body: &str) -> (OutcomeClass, Option<&'static str>) {
    // Text before code: "… is not allowed to send" under a 400 is a sandbox domain refusing this
    // sender; under a 403 ("Domain X is not allowed to send: <reason>") the configured sending
    // domain is blocked (disabled domain, unpaid account): the account.
    if body.to_ascii_lowercase().contains("not allowed to send") {
        return match status {
            400 => (OutcomeClass::SenderUnverified, Some("sandbox domain: this sender may not send")),
            _ => (OutcomeClass::Account, None),
        };
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
    refused_with_note(class, n, reply, note)
}

/// Classifies the answer to `GET /v4/domains/{domain}`.
fn classify_domain(reply: &HttpReply, domain: &str) -> ProbeReport {
    let endpoint = format!("GET /v4/domains/{domain}");
    if !(200..300).contains(&reply.status) {
        return classify_domain_error(reply, &endpoint);
    }
    let body = reply.json();
    let d = body.as_ref().and_then(|b| b.get("domain"));
    let state = d.and_then(|d| d.get("state")).and_then(Value::as_str);
    let disabled = d.and_then(|d| d.get("is_disabled")).and_then(Value::as_bool).unwrap_or(false);
    match state {
        None => probe_fallback(reply, &endpoint, ""),
        Some(_) if disabled => ProbeReport::failed(OutcomeClass::Account, format!("domain {domain} is disabled")),
        Some("active") => ProbeReport::usable(format!("domain {domain} is active")),
        Some(state) => ProbeReport::failed(
            OutcomeClass::Account,
            truncate_detail(&format!("domain {domain} is {state}, not active")),
        ),
    }
}

/// A refused domain probe: Mailgun saying the domain is unknown, blocked or unpaid is the
/// account; anything else (domain sending keys get 401/403 here) cannot judge.
fn classify_domain_error(reply: &HttpReply, endpoint: &str) -> ProbeReport {
    let message = reply.json().and_then(|b| b.get("message")?.as_str().map(str::to_ascii_lowercase));
    let (class, note) = failure(reply.status, &reply.body);
    let account = match reply.status {
        404 => message.as_deref().is_some_and(|m| m.contains("domain not found")),
        402 => true,
        _ => class == OutcomeClass::Account && message.is_some_and(|m| m.contains("not allowed to send")),
    };
    if account {
        return ProbeReport::failed(OutcomeClass::Account, with_note(reply.detail(), note));
    }
    probe_fallback(reply, endpoint, "probe with the account API key (domain sending keys cannot read the domain)")
}

#[async_trait::async_trait]
impl Provider for MailgunProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn max_recipients(&self) -> usize {
        MAX_RECIPIENTS
    }

    async fn send_batch(&self, msg: &Outbound<'_>) -> SendReport {
        match self.post(msg, msg.recipients, Mode::Send).await {
            Ok(reply) => classify(&reply, msg.recipients.len()),
            Err(report) => report,
        }
    }

    /// The request for the first recipient in test mode: 200 means Mailgun would take it.
    async fn trial(&self, msg: &Outbound<'_>) -> Option<SendReport> {
        let n = msg.recipients.len();
        let report = match self.post(msg, &msg.recipients[..n.min(1)], Mode::Test).await {
            Ok(reply) => match classify(&reply, n) {
                r if r.class == OutcomeClass::Accepted => {
                    trial_accepted(n, truncate_detail(&format!("test mode: {}", r.detail)))
                }
                r => r,
            },
            Err(report) => report,
        };
        Some(report)
    }

    /// `GET /v4/domains/{domain}`: the key works and the sending domain is active.
    async fn probe(&self) -> ProbeReport {
        let request = self.http.client.get(&self.domain_url).basic_auth("api", Some(&self.key));
        match self.http.probe(request).await {
            Ok(reply) => classify_domain(&reply, &self.domain),
            Err(report) => report,
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
                r#"{"message":"Domain sandbox1.mailgun.org is not allowed to send: Free accounts are for test purposes only. Please upgrade or add the address to authorized recipients in Account Settings."}"#,
                OutcomeClass::SenderUnverified,
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
        use crate::health::ProbeVerdict::{Failed, Inconclusive, Usable};
        let state = |state: &str, disabled: bool| {
            format!(r#"{{"domain":{{"name":"mg.example.com","state":"{state}","is_disabled":{disabled}}}}}"#)
        };
        let cases = [
            (200, state("active", false), Usable),
            (200, state("unverified", false), Failed(OutcomeClass::Account)),
            (200, state("inactive", false), Failed(OutcomeClass::Account)),
            (200, state("active", true), Failed(OutcomeClass::Account)),
            (200, "{}".into(), Inconclusive),
            (200, "<html>hello</html>".into(), Inconclusive),
            (401, "Forbidden".into(), Inconclusive),
            (403, r#"{"message":"forbidden"}"#.into(), Inconclusive),
            (
                403,
                r#"{"message":"Domain mg.example.com is not allowed to send: Please activate your Mailgun account"}"#
                    .into(),
                Failed(OutcomeClass::Account),
            ),
            (402, r#"{"message":"payment required"}"#.into(), Failed(OutcomeClass::Account)),
            (404, r#"{"message":"Domain not found"}"#.into(), Failed(OutcomeClass::Account)),
            (404, "404 page not found".into(), Inconclusive),
            (404, r#"{"message":"not found"}"#.into(), Inconclusive),
            (429, r#"{"message":"Too many requests"}"#.into(), Inconclusive),
            (500, "<html>oops</html>".into(), Failed(OutcomeClass::Transient)),
        ];
        for (status, body, verdict) in cases {
            let report = classify_domain(&reply(status, &body), "mg.example.com");
            assert_eq!(report.verdict, verdict, "{status} {body}: {}", report.detail);
        }
        let d = classify_domain(&reply(401, "Forbidden"), "mg.example.com").detail;
        assert!(d.contains("account API key") && d.contains("probe = false"), "{d}");
        let d = classify_domain(&reply(404, r#"{"message":"Domain not found"}"#), "mg.example.com").detail;
        assert!(d.contains("domain unknown"), "{d}");
    }
}
