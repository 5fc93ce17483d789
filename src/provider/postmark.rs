//! The `postmark` provider: `POST {base}/email` with the message split into Postmark's JSON
//! fields (`shared/providers.md`, Postmark).
//!
//! Postmark answers every error with an `ErrorCode`, which drives the classification before the
//! HTTP status does. A From address that is not a confirmed Sender Signature (ErrorCode 400, 401,
//! or 300 naming the Sender Signature) is `sender_unverified`: other domains keep Postmark.
//! ErrorCode 406 ("inactive recipient") refuses the whole request and names the inactive
//! addresses after "Found inactive addresses:": those recipients are rejected, and the request
//! is sent again at once, in the same attempt, without them, so the active recipients stay on
//! this provider instead of failing over (see `send_batch`). At most 50 recipients go in one
//! request (the shared batching in [`super::send`]).
//!
//! The probe reads `GET /server` with the server token, the token that sends: a 401 or ErrorCode
//! 10 is `account`, a 403/404 or an unreadable answer is inconclusive.

use super::http::{HttpClient, HttpReply, class_for_status, probe_fallback, refused};
use super::mime::{self, Mailbox};
use super::redact::Secrets;
use super::{Outbound, Provider};
use crate::config::PostmarkConfig;
use crate::health::ProbeReport;
use crate::outcome::{OutcomeClass, RecipientResult, RejectReason, SendReport, truncate_detail};
use base64::Engine as _;
use serde_json::{Map, Value, json};

/// An inactive recipient (406): Postmark deactivated it after a hard bounce, a spam complaint
/// or a manual suppression; its answer does not say which, and each means "do not send".
const INACTIVE: RejectReason = RejectReason::Bounced;

/// Postmark takes at most 50 recipients (To + Cc + Bcc) per message.
const MAX_RECIPIENTS: usize = 50;

pub struct PostmarkProvider {
    name: String,
    base: String,
    token: String,
    stream: String,
    http: HttpClient,
}

/// What one Postmark answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// Taken; Postmark's `MessageID`.
    Accepted(Option<String>),
    /// ErrorCode 406: these addresses (lower case) are inactive; empty when Postmark did not
    /// list them (then every recipient of the request is inactive).
    Inactive(Vec<String>),
    Failed(OutcomeClass),
}

/// `Name <addr>`, quoting the display name when it has characters RFC 5322 reserves.
pub(super) fn display_mailbox(m: &Mailbox) -> String {
    match m.name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
        None => m.email.clone(),
        Some(name) => {
            let plain = name.chars().all(|c| !c.is_control() && !"()<>[]:;@\\,.\"".contains(c));
            if plain {
                format!("{name} <{}>", m.email)
            } else {
                let escaped = name.replace('\\', "\\\\").replace('"', "\\\"");
                format!("\"{escaped}\" <{}>", m.email)
            }
        }
    }
}

fn comma_list(list: &[Mailbox]) -> String {
    list.iter().map(display_mailbox).collect::<Vec<_>>().join(", ")
}

/// The addresses a 406 message names: "... Found inactive addresses: a@x, b@y. Inactive
/// recipients are ..." (older wording: "... these inactive addresses: a@x.").
fn inactive_addresses(message: &str) -> Vec<String> {
    let lower = message.to_ascii_lowercase();
    let start = ["found inactive addresses:", "these inactive addresses:"]
        .iter()
        .find_map(|marker| lower.find(marker).map(|at| at + marker.len()));
    let Some(start) = start else { return Vec::new() };
    let rest = &lower[start..];
    let list = rest.find(". ").map_or(rest, |end| &rest[..end]);
    list.split([',', ';', ' '])
        .map(|a| a.trim().trim_end_matches('.').trim_matches(['<', '>']))
        .filter(|a| a.contains('@'))
        .map(str::to_string)
        .collect()
}

/// Classifies one answer to `POST /email` (or `GET /server`): ErrorCode first, then status.
fn classify(status: u16, body: Option<&Value>) -> Answer {
    if status >= 500 {
        return Answer::Failed(OutcomeClass::Transient);
    }
    let code = body.and_then(|b| b.get("ErrorCode")).and_then(Value::as_i64);
    let message = body.and_then(|b| b.get("Message")).and_then(Value::as_str).unwrap_or_default();
    let by_status = |status: u16| match class_for_status(status) {
        OutcomeClass::Accepted => Answer::Accepted(None),
        class => Answer::Failed(class),
    };
    match code {
        Some(0) if (200..300).contains(&status) => {
            Answer::Accepted(body.and_then(|b| b.get("MessageID")).and_then(Value::as_str).map(str::to_string))
        }
        // Bad or missing server token.
        Some(10) => Answer::Failed(OutcomeClass::Account),
        // Maintenance.
        Some(100) => Answer::Failed(OutcomeClass::Transient),
        // Invalid request, except when the From address is not a confirmed sender signature.
        Some(300) if message.to_ascii_lowercase().contains("sender signature") => {
            Answer::Failed(OutcomeClass::SenderUnverified)
        }
        Some(300) => Answer::Failed(OutcomeClass::BadRequest),
        // Sender signature not found / not confirmed: per sender domain.
        Some(400 | 401) => Answer::Failed(OutcomeClass::SenderUnverified),
        // Not allowed to send (credits), account pending, account may not send.
        Some(405 | 412 | 413) => Answer::Failed(OutcomeClass::Account),
        Some(406) => Answer::Inactive(inactive_addresses(message)),
        Some(429) => Answer::Failed(OutcomeClass::RateLimited),
        // An error code on a success status: not a shape Postmark documents.
        Some(_) if (200..300).contains(&status) => Answer::Failed(OutcomeClass::Transient),
        Some(_) => by_status(status),
        // Postmark's API never answers 403 itself: an HTML 403 comes from a network block.
        None if status == 403 => Answer::Failed(OutcomeClass::Transient),
        None => by_status(status),
    }
}

impl PostmarkProvider {
    pub fn new(name: &str, config: &PostmarkConfig) -> Result<Self, String> {
        Ok(PostmarkProvider {
            name: name.to_string(),
            base: config.base_url.trim_end_matches('/').to_string(),
            token: config.server_token.clone(),
            stream: config.message_stream.clone(),
            http: HttpClient::new(
                config.timeout.0,
                config.max_connections,
                Secrets::new([config.server_token.as_str()]),
            )?,
        })
    }

    fn payload(&self, msg: &Outbound<'_>, recipients: &[String]) -> Value {
        let f = mime::fields(msg.body, msg.mail_from, recipients);
        let from = f.from.as_ref().map(display_mailbox).unwrap_or_else(|| msg.mail_from.to_string());
        let mut body = json!({
            "From": from,
            "To": comma_list(&f.to),
            "Subject": f.subject,
            "MessageStream": self.stream,
        });
        let obj = body.as_object_mut().expect("object");
        if !f.cc.is_empty() {
            obj.insert("Cc".into(), comma_list(&f.cc).into());
        }
        if !f.bcc.is_empty() {
            obj.insert("Bcc".into(), comma_list(&f.bcc).into());
        }
        if !f.reply_to.is_empty() {
            obj.insert("ReplyTo".into(), comma_list(&f.reply_to).into());
        }
        if let Some(html) = &f.html {
            obj.insert("HtmlBody".into(), html.clone().into());
        }
        // Postmark needs a body; an attachment-only message gets an empty text part.
        if f.text.is_some() || f.html.is_none() {
            obj.insert("TextBody".into(), f.text.clone().unwrap_or_default().into());
        }
        let mut headers: Vec<Value> = f.headers.iter().map(|(n, v)| json!({"Name": n, "Value": v})).collect();
        // Postmark keeps a Message-ID given as a header: the spooled one names the Baton id.
        if let Some(id) = &f.message_id {
            headers.push(json!({"Name": "Message-ID", "Value": id}));
        }
        if !headers.is_empty() {
            obj.insert("Headers".into(), headers.into());
        }
        // Postmark takes one Tag (up to 1000 characters) and up to 10 Metadata fields (keys up
        // to 20 characters, values up to 80); what does not fit is left out.
        if let Some(tag) = super::labels::tags(msg, |t| t.chars().count() <= 1000, 1).first() {
            obj.insert("Tag".into(), (*tag).into());
        }
        let metadata: Map<String, Value> = (msg.metadata.iter())
            .filter(|(k, v)| k.chars().count() <= 20 && v.chars().count() <= 80)
            .take(10)
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        if !metadata.is_empty() {
            obj.insert("Metadata".into(), metadata.into());
        }
        if !f.attachments.is_empty() {
            let attachments: Vec<Value> = f
                .attachments
                .iter()
                .map(|a| {
                    let mut att = json!({
                        "Name": a.filename,
                        "Content": base64::engine::general_purpose::STANDARD.encode(&a.content),
                        "ContentType": a.content_type,
                    });
                    if let Some(cid) = &a.content_id {
                        let cid = if cid.starts_with("cid:") { cid.clone() } else { format!("cid:{cid}") };
                        att["ContentID"] = cid.into();
                    }
                    att
                })
                .collect();
            obj.insert("Attachments".into(), attachments.into());
        }
        body
    }

    async fn post(&self, msg: &Outbound<'_>, recipients: &[String]) -> Result<HttpReply, SendReport> {
        let request = self
            .http
            .client
            .post(format!("{}/email", self.base))
            .header("X-Postmark-Server-Token", &self.token)
            .header("Accept", "application/json")
            .json(&self.payload(msg, recipients));
        self.http.send(request, recipients.len()).await
    }
}

#[async_trait::async_trait]
impl Provider for PostmarkProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn max_recipients(&self) -> usize {
        MAX_RECIPIENTS
    }

    /// One request. A 406 naming some of the recipients rejects those and sends again to the
    /// others in the same attempt: Postmark refused the whole request, so nothing was sent to
    /// anyone yet, and the rest are not a reason to fail over. (When Postmark sends to the active
    /// recipients itself, it answers 200 and the 406 only comes when every recipient is
    /// inactive, so the resend never duplicates.)
    async fn send_batch(&self, msg: &Outbound<'_>) -> SendReport {
        let n = msg.recipients.len();
        let mut results = vec![RecipientResult::NotDone; n];
        let mut pending: Vec<usize> = (0..n).collect();
        let mut detail = String::new();
        while !pending.is_empty() {
            let recipients: Vec<String> = pending.iter().map(|&i| msg.recipients[i].clone()).collect();
            let reply = match self.post(msg, &recipients).await {
                Ok(reply) => reply,
                Err(report) => return SendReport { recipients: results, ..report },
            };
            detail = reply.detail();
            match classify(reply.status, reply.json().as_ref()) {
                Answer::Accepted(id) => {
                    for &i in &pending {
                        results[i] = RecipientResult::Delivered { provider_message_id: id.clone() };
                    }
                    pending.clear();
                }
                Answer::Inactive(listed) => {
                    match reject_inactive(msg.recipients, &pending, &listed, &mut results, &detail) {
                        Some(active) => pending = active,
                        // Names none of our recipients: not a shape we understand.
                        None => {
                            return SendReport { recipients: results, ..refused(OutcomeClass::Transient, n, &reply) };
                        }
                    }
                }
                Answer::Failed(class) => return SendReport { recipients: results, ..refused(class, n, &reply) },
            }
        }
        let delivered = results.iter().any(|r| matches!(r, RecipientResult::Delivered { .. }));
        let rejected = results.iter().any(|r| matches!(r, RecipientResult::Rejected { .. }));
        SendReport {
            class: if delivered || !rejected { OutcomeClass::Accepted } else { OutcomeClass::RecipientRejected },
            detail,
            recipients: results,
            retry_after: None,
            possible_duplicate: false,
        }
    }

    /// `POST /email/withTemplate` with the app's email as it came; one request for all its
    /// recipients.
    async fn send_template(&self, msg: &Outbound<'_>) -> SendReport {
        let n = msg.recipients.len();
        let request = (self.http.client.post(format!("{}/email/withTemplate", self.base)))
            .header("X-Postmark-Server-Token", &self.token)
            .header("Accept", "application/json")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(msg.body.to_vec());
        let reply = match self.http.send(request, n).await {
            Ok(reply) => reply,
            Err(report) => return report,
        };
        match classify(reply.status, reply.json().as_ref()) {
            Answer::Accepted(id) => SendReport::delivered(n, id, reply.detail()),
            Answer::Inactive(listed) => {
                let detail = reply.detail();
                let recipients = (msg.recipients.iter())
                    .map(|r| match listed.is_empty() || listed.iter().any(|l| l.eq_ignore_ascii_case(r)) {
                        true => RecipientResult::Rejected { detail: detail.clone(), reason: INACTIVE },
                        false => RecipientResult::NotDone,
                    })
                    .collect();
                SendReport { recipients, ..SendReport::failed(OutcomeClass::RecipientRejected, n, detail) }
            }
            Answer::Failed(class) => refused(class, n, &reply),
        }
    }

    /// `GET /server` with the server token: proves the token works and Postmark answers.
    async fn probe(&self) -> ProbeReport {
        let request = self
            .http
            .client
            .get(format!("{}/server", self.base))
            .header("X-Postmark-Server-Token", &self.token)
            .header("Accept", "application/json");
        match self.http.probe(request).await {
            Ok(reply) => classify_server(&reply),
            Err(report) => report,
        }
    }
}

/// Marks the recipients of `pending` that a 406 `listed` (all of them when it lists none) as
/// rejected; returns the others, or `None` when the list names none of `pending`.
fn reject_inactive(
    all: &[String],
    pending: &[usize],
    listed: &[String],
    results: &mut [RecipientResult],
    detail: &str,
) -> Option<Vec<usize>> {
    let (inactive, active): (Vec<usize>, Vec<usize>) =
        pending.iter().partition(|&&i| listed.is_empty() || listed.contains(&all[i].to_ascii_lowercase()));
    if inactive.is_empty() {
        return None;
    }
    for i in inactive {
        results[i] = RecipientResult::Rejected {
            reason: INACTIVE,
            detail: truncate_detail(&format!("inactive recipient (Postmark 406): {detail}")),
        };
    }
    Some(active)
}

/// Classifies the answer to `GET /server`. The server token is the token that sends, so a
/// refused token is the account; a 403/404 or an answer without the server says nothing.
fn classify_server(reply: &HttpReply) -> ProbeReport {
    let json = reply.json();
    if (200..300).contains(&reply.status)
        && let Some(Value::Object(server)) = &json
    {
        let name = server.get("Name").and_then(Value::as_str).unwrap_or("?");
        return ProbeReport::usable(truncate_detail(&format!("server {name:?} answered")));
    }
    let code = json.as_ref().and_then(|b| b.get("ErrorCode")).and_then(Value::as_i64);
    match classify(reply.status, json.as_ref()) {
        _ if reply.status == 401 => ProbeReport::failed(OutcomeClass::Account, reply.detail()),
        // Postmark named an account problem (bad token, credits, pending, may not send).
        Answer::Failed(OutcomeClass::Account) if code.is_some() => {
            ProbeReport::failed(OutcomeClass::Account, reply.detail())
        }
        Answer::Failed(OutcomeClass::Transient) if code == Some(100) => {
            ProbeReport::failed(OutcomeClass::Transient, reply.detail())
        }
        _ => probe_fallback(reply, "GET /server", "probe with the server token (not an account token)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: i64, message: &str) -> Value {
        json!({"ErrorCode": code, "Message": message})
    }

    #[test]
    fn error_codes() {
        let ok = json!({"To": "a@x", "SubmittedAt": "2026-01-01T00:00:00Z", "MessageID": "m-1", "ErrorCode": 0, "Message": "OK"});
        assert_eq!(classify(200, Some(&ok)), Answer::Accepted(Some("m-1".into())));
        let cases = [
            (422, 10, "Bad or missing server token.", OutcomeClass::Account),
            (422, 100, "Maintenance", OutcomeClass::Transient),
            (422, 300, "Invalid 'To' address: 'x'.", OutcomeClass::BadRequest),
            (
                422,
                300,
                "The 'From' address you supplied (a@x) is not a Sender Signature on your account. Add and confirm this address in order to send.",
                OutcomeClass::SenderUnverified,
            ),
            (
                422,
                300,
                "The 'From' address you supplied (a@x) is not a verified sender signature.",
                OutcomeClass::SenderUnverified,
            ),
            (422, 400, "Sender signature not found", OutcomeClass::SenderUnverified),
            (422, 401, "Sender signature not confirmed", OutcomeClass::SenderUnverified),
            (422, 405, "Not allowed to send: you have run out of credits.", OutcomeClass::Account),
            (422, 412, "Account pending approval", OutcomeClass::Account),
            (422, 413, "Account may not send", OutcomeClass::Account),
            (429, 429, "Rate limit exceeded", OutcomeClass::RateLimited),
            (401, 10, "Request does not contain a valid Server token.", OutcomeClass::Account),
            (500, 0, "", OutcomeClass::Transient),
            (422, 1101, "Template not found", OutcomeClass::BadRequest),
        ];
        for (status, code, message, class) in cases {
            assert_eq!(classify(status, Some(&err(code, message))), Answer::Failed(class), "{code} {message}");
        }
        assert_eq!(classify(403, None), Answer::Failed(OutcomeClass::Transient), "HTML 403: network block");
        assert_eq!(classify(401, None), Answer::Failed(OutcomeClass::Account));
        assert_eq!(classify(502, None), Answer::Failed(OutcomeClass::Transient));
        assert_eq!(classify(429, None), Answer::Failed(OutcomeClass::RateLimited));
        assert_eq!(classify(200, None), Answer::Accepted(None));
    }

    #[test]
    fn server_probe() {
        use crate::health::ProbeVerdict::{Failed, Inconclusive, Usable};
        let reply = |status: u16, body: &str| HttpReply { status, headers: Default::default(), body: body.into() };
        let bad_token = err(10, "Request does not contain a valid Server token.").to_string();
        let cases = [
            (200, r#"{"ID":1,"Name":"Transactional","DeliveryType":"Live"}"#.to_string(), Usable),
            (401, bad_token.clone(), Failed(OutcomeClass::Account)),
            (422, bad_token, Failed(OutcomeClass::Account)),
            (401, "Unauthorized".into(), Failed(OutcomeClass::Account)),
            (422, err(412, "Your account is pending approval.").to_string(), Failed(OutcomeClass::Account)),
            (503, err(100, "Maintenance").to_string(), Failed(OutcomeClass::Transient)),
            (500, "Internal Server Error".into(), Failed(OutcomeClass::Transient)),
            (403, "<html>403 Forbidden</html>".into(), Inconclusive),
            (404, "Not Found".into(), Inconclusive),
            (200, "<html>ok</html>".into(), Inconclusive),
            (200, "{}".into(), Usable),
            (200, "[]".into(), Inconclusive),
            (429, err(429, "Rate limit exceeded").to_string(), Inconclusive),
        ];
        for (status, body, verdict) in cases {
            let report = classify_server(&reply(status, &body));
            assert_eq!(report.verdict, verdict, "{status} {body}: {}", report.detail);
        }
    }

    #[test]
    fn inactive_forms() {
        let m = "You tried to send to recipient(s) that have been marked as inactive. Found inactive addresses: Bob@example.net, carol@example.net. Inactive recipients are ones that have generated a hard bounce, a spam complaint, or a manual suppression.";
        assert_eq!(
            classify(422, Some(&err(406, m))),
            Answer::Inactive(vec!["bob@example.net".into(), "carol@example.net".into()])
        );
        let m = "You tried to send to recipient(s) that have been marked as inactive. Found inactive addresses: bob@example.net.";
        assert_eq!(inactive_addresses(m), vec!["bob@example.net".to_string()]);
        let m = "You tried to send to recipients that have all been marked as inactive.";
        assert_eq!(classify(422, Some(&err(406, m))), Answer::Inactive(vec![]));
    }

    #[test]
    fn display_names_are_quoted_when_needed() {
        let m = |name: Option<&str>| Mailbox { email: "a@example.com".into(), name: name.map(str::to_string) };
        assert_eq!(display_mailbox(&m(None)), "a@example.com");
        assert_eq!(display_mailbox(&m(Some("Alice Smith"))), "Alice Smith <a@example.com>");
        assert_eq!(display_mailbox(&m(Some("Smith, Alice"))), "\"Smith, Alice\" <a@example.com>");
        assert_eq!(display_mailbox(&m(Some("A \"B\""))), "\"A \\\"B\\\"\" <a@example.com>");
    }
}
