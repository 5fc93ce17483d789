//! The `mandrill` provider: Mailchimp Transactional's `messages/send-raw`, so the message goes
//! out exactly as spooled.
//!
//! Mandrill answers a send with one result per recipient, and some of those "successes" are not:
//! `queued` with a suspension `queued_reason` (account suspended, paused, out of quota…) arrives
//! as HTTP 200 although nothing will be delivered soon. Those make the attempt an `account`
//! failure, flagged as a possible duplicate because Mandrill may still send the message later.
//! A recipient `rejected` as `unsigned` (the sending domain is not set up) makes the attempt
//! `sender_unverified`: other domains keep Mandrill. `invalid-sender` and `test-mode-limit` are
//! the account's. Errors are `{"status":"error","code","name","message"}` under any HTTP status
//! (historically 500), so the `name` decides before the status does. See `shared/providers.md`.
//!
//! The probe is `users/ping2`: PONG is usable, a key or payment error is `account`, a 5xx or a
//! service error `transient`; anything else (an unreadable 200) is inconclusive.

use super::http::{HttpClient, HttpReply, class_for_status, probe_fallback, refused};
use super::redact::Secrets;
use super::{Outbound, Provider, probe_failure};
use crate::config::MandrillConfig;
use crate::health::ProbeReport;
use crate::outcome::{OutcomeClass, RecipientResult, RejectReason, SendReport, truncate_detail};
use serde::Serialize;
use serde_json::Value;

/// `queued_reason`s that mean the account cannot send now (provider unhealthy).
const SUSPENSION_REASONS: [&str; 7] = [
    "account-suspended",
    "sending-suspended",
    "sending-paused",
    "free-trial-sends-exhausted",
    "monthly-limit-reached",
    "hourly-quota-exhausted",
    "sending-backlogged",
];

/// `reject_reason`s that blame the sender or the account, not the recipient, and their class:
/// `unsigned` is this sender's domain only, the others stop the account.
const SENDER_REJECTIONS: [(&str, OutcomeClass); 3] = [
    ("invalid-sender", OutcomeClass::Account),
    ("unsigned", OutcomeClass::SenderUnverified),
    ("test-mode-limit", OutcomeClass::Account),
];

/// What each recipient `reject_reason` says about the address (`invalid` is a status, not a
/// reason). A soft bounce says nothing lasting: not suppressed. Unlisted reasons are `other`.
const REJECT_REASONS: [(&str, RejectReason); 6] = [
    ("hard-bounce", RejectReason::Bounced),
    ("spam", RejectReason::Spam),
    ("unsub", RejectReason::Unsubscribed),
    ("custom", RejectReason::Blocked),
    ("rule", RejectReason::Blocked),
    ("soft-bounce", RejectReason::Other),
];

pub struct MandrillProvider {
    name: String,
    key: String,
    send_url: String,
    template_url: String,
    ping_url: String,
    http: HttpClient,
}

impl MandrillProvider {
    pub fn new(name: &str, config: &MandrillConfig) -> Result<Self, String> {
        let base = config.base_url.trim_end_matches('/');
        Ok(MandrillProvider {
            name: name.to_string(),
            key: config.api_key.clone(),
            send_url: format!("{base}/messages/send-raw"),
            template_url: format!("{base}/messages/send-template"),
            ping_url: format!("{base}/users/ping2"),
            http: HttpClient::new(config.timeout.0, config.max_connections, Secrets::new([config.api_key.as_str()]))?,
        })
    }
}

#[derive(Serialize)]
struct SendRaw<'a> {
    key: &'a str,
    raw_message: &'a str,
    from_email: &'a str,
    to: &'a [String],
    #[serde(rename = "async")]
    is_async: bool,
}

/// Longest tag Mandrill takes; a tag starting with `_` is reserved and refused by Mandrill.
const MAX_TAG_LEN: usize = 50;
/// Longest `X-MC-Metadata` value kept: the header must fit on one 998-byte line.
const MAX_METADATA_JSON: usize = 900;

/// The raw message with the app's tags and metadata in front as Mandrill's `X-MC-Tags` and
/// `X-MC-Metadata` headers (Mandrill reads and removes them); the bytes as spooled when there
/// are none. Only ASCII labels go: a header line must stay 7-bit.
fn with_label_headers<'a>(msg: &Outbound<'_>, raw: &'a str) -> std::borrow::Cow<'a, str> {
    let tag_fits = |t: &str| t.len() <= MAX_TAG_LEN && !t.starts_with('_') && !t.contains(',') && t.is_ascii();
    let tags = super::labels::tags(msg, tag_fits, usize::MAX);
    let metadata: serde_json::Map<String, Value> = (msg.metadata.iter())
        .filter(|(k, v)| k.is_ascii() && v.is_ascii())
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let metadata = Some(Value::Object(metadata).to_string()).filter(|m| m != "{}" && m.len() <= MAX_METADATA_JSON);
    if tags.is_empty() && metadata.is_none() {
        return std::borrow::Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len() + 128);
    if !tags.is_empty() {
        out.push_str(&format!("X-MC-Tags: {}\r\n", tags.join(",")));
    }
    if let Some(metadata) = metadata {
        out.push_str(&format!("X-MC-Metadata: {metadata}\r\n"));
    }
    out.push_str(raw);
    std::borrow::Cow::Owned(out)
}

/// The class an error `name` stands for (`None`: unknown name, decide by status).
fn error_name_class(name: &str) -> Option<OutcomeClass> {
    Some(match name {
        "Invalid_Key" | "PaymentRequired" | "Unknown_Subaccount" => OutcomeClass::Account,
        "ValidationError" => OutcomeClass::BadRequest,
        "GeneralError" | "ServiceUnavailable" => OutcomeClass::Transient,
        "RequestLimitExceeded" => OutcomeClass::RateLimited,
        _ => return None,
    })
}

/// `{"status":"error","name":…}` → the error's name.
fn error_name(body: &Value) -> Option<&str> {
    (body.get("status")?.as_str()? == "error").then_some(())?;
    body.get("name")?.as_str()
}

/// The class of an answer that is not a list of recipient results.
fn failure_class(status: u16, body: Option<&Value>) -> OutcomeClass {
    if let Some(class) = body.and_then(error_name).and_then(error_name_class) {
        return class;
    }
    match status {
        // A 2xx that is neither results nor a known error: an unknown shape.
        200..=299 => OutcomeClass::Transient,
        s => class_for_status(s),
    }
}

/// What Mandrill said about one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// sent, scheduled, or queued for a harmless reason.
    Delivered(Option<String>),
    /// rejected/invalid for a reason that is the recipient's.
    Rejected(String, RejectReason),
    /// rejected because of the sender (`sender_unverified`) or the account (`account`).
    SenderProblem(OutcomeClass, String),
    /// queued on a suspended/paused/exhausted account: Mandrill may still send it later.
    Suspended(String),
    /// No result, or a status we do not know.
    Unknown(String),
}

fn verdict(entry: &Value) -> Verdict {
    let text = |k: &str| entry.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let id = text("_id").map(str::to_string);
    match text("status").unwrap_or("") {
        "sent" | "scheduled" => Verdict::Delivered(id),
        "queued" => match text("queued_reason") {
            Some(reason) if SUSPENSION_REASONS.contains(&reason) => Verdict::Suspended(format!("queued: {reason}")),
            _ => Verdict::Delivered(id),
        },
        status @ ("rejected" | "invalid") => {
            let detail = match text("reject_reason") {
                Some(reason) => format!("{status}: {reason}"),
                None => status.to_string(),
            };
            let sender = SENDER_REJECTIONS.iter().find(|(r, _)| text("reject_reason") == Some(*r));
            let reason = match (status, text("reject_reason")) {
                ("invalid", _) => RejectReason::Invalid,
                (_, Some(r)) => REJECT_REASONS.iter().find(|(name, _)| *name == r).map_or(RejectReason::Other, |x| x.1),
                (_, None) => RejectReason::Other,
            };
            match sender {
                Some(&(_, class)) => Verdict::SenderProblem(class, detail),
                None => Verdict::Rejected(detail, reason),
            }
        }
        other => Verdict::Unknown(format!("unknown status {other:?}")),
    }
}

/// Turns a 200 list of recipient results into a report for `recipients` (the order we sent).
fn classify_results(recipients: &[String], results: &[Value]) -> SendReport {
    let mut used = vec![false; results.len()];
    let verdicts: Vec<Verdict> = recipients
        .iter()
        .map(|rcpt| {
            let found = results.iter().enumerate().position(|(i, r)| {
                !used[i] && r.get("email").and_then(Value::as_str).is_some_and(|e| e.eq_ignore_ascii_case(rcpt))
            });
            match found {
                Some(i) => {
                    used[i] = true;
                    verdict(&results[i])
                }
                None => Verdict::Unknown("no result for this recipient".into()),
            }
        })
        .collect();

    let any = |f: fn(&Verdict) -> bool| verdicts.iter().any(f);
    let suspended = any(|v| matches!(v, Verdict::Suspended(_)));
    let account = any(|v| matches!(v, Verdict::SenderProblem(OutcomeClass::Account, _)));
    let sender = any(|v| matches!(v, Verdict::SenderProblem(_, _)));
    let unknown = any(|v| matches!(v, Verdict::Unknown(_)));
    let delivered = any(|v| matches!(v, Verdict::Delivered(_)));
    let class = if suspended || account {
        // The provider is unusable: even if some recipients went through, the health engine
        // must hear about it, and the others move on to the next provider.
        OutcomeClass::Account
    } else if sender {
        OutcomeClass::SenderUnverified
    } else if delivered {
        OutcomeClass::Accepted
    } else if unknown {
        OutcomeClass::Transient
    } else {
        OutcomeClass::RecipientRejected
    };

    // A short summary: each distinct verdict once, with how many recipients got it.
    let mut parts: Vec<(String, usize)> = Vec::new();
    for v in &verdicts {
        let label = match v {
            Verdict::Delivered(_) => "accepted".to_string(),
            Verdict::Rejected(d, _) | Verdict::SenderProblem(_, d) | Verdict::Suspended(d) | Verdict::Unknown(d) => {
                d.clone()
            }
        };
        match parts.iter_mut().find(|(l, _)| *l == label) {
            Some((_, n)) => *n += 1,
            None => parts.push((label, 1)),
        }
    }
    let mut detail =
        format!("HTTP 200: {}", parts.iter().map(|(l, n)| format!("{n} {l}")).collect::<Vec<_>>().join(", "));
    if suspended {
        detail.push_str(" (account cannot send; Mandrill may still deliver the queued message later)");
    }

    SendReport {
        class,
        detail: truncate_detail(&detail),
        recipients: verdicts
            .into_iter()
            .map(|v| match v {
                Verdict::Delivered(id) => RecipientResult::Delivered { provider_message_id: id },
                Verdict::Rejected(detail, reason) => RecipientResult::Rejected { detail, reason },
                _ => RecipientResult::NotDone,
            })
            .collect(),
        retry_after: None,
        // Queued on a suspended account, or a result we cannot read although the request was
        // taken: Mandrill may send it anyway while the next provider does too.
        possible_duplicate: suspended || unknown,
    }
}

/// Classifies any answer to `messages/send-raw`.
fn classify(reply: &HttpReply, recipients: &[String]) -> SendReport {
    let body = reply.json();
    if (200..300).contains(&reply.status)
        && let Some(Value::Array(results)) = &body
        && !results.is_empty()
    {
        return classify_results(recipients, results);
    }
    let class = failure_class(reply.status, body.as_ref());
    let mut report = refused(class, recipients.len(), reply);
    // HTTP 200 that is not a result list: the request was taken, we cannot tell what happened.
    report.possible_duplicate = (200..300).contains(&reply.status) && body.as_ref().and_then(error_name).is_none();
    report
}

/// Classifies the answer to `users/ping2`: Mandrill's error names judge, the status only when
/// there is none.
fn classify_ping(reply: &HttpReply) -> ProbeReport {
    let body = reply.json();
    if (200..300).contains(&reply.status) && body.as_ref().and_then(|b| b.get("PING")?.as_str()) == Some("PONG!") {
        return ProbeReport::usable("users/ping2: PONG!");
    }
    match body.as_ref().and_then(error_name).and_then(error_name_class) {
        Some(class) => probe_failure(class, reply.detail()),
        None => probe_fallback(reply, "POST users/ping2", "check the key"),
    }
}

#[async_trait::async_trait]
impl Provider for MandrillProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send_batch(&self, msg: &Outbound<'_>) -> SendReport {
        let n = msg.recipients.len();
        // send-raw takes the MIME as a JSON string: only UTF-8 (or ASCII) bytes can go through
        // unchanged. Anything else is better sent by a provider that takes bytes.
        let Ok(raw) = std::str::from_utf8(msg.body) else {
            return SendReport::failed(
                OutcomeClass::BadRequest,
                n,
                "message is not valid UTF-8; Mandrill send-raw takes the MIME as a JSON string and cannot carry it byte-exact",
            );
        };
        let raw = with_label_headers(msg, raw);
        let body = SendRaw {
            key: &self.key,
            raw_message: &raw,
            from_email: msg.mail_from,
            to: msg.recipients,
            is_async: false,
        };
        let request = self.http.client.post(&self.send_url).json(&body);
        let reply = match self.http.send(request, n).await {
            Ok(reply) => reply,
            Err(report) => return report,
        };
        classify(&reply, msg.recipients)
    }

    /// `users/ping2` with the key: proves the key works (not that the account may send).
    /// `messages/send-template` with the app's call as it came, this provider's key added.
    async fn send_template(&self, msg: &Outbound<'_>) -> SendReport {
        let mut call = match super::http::template_request(msg) {
            Ok(call) => call,
            Err(report) => return report,
        };
        call.insert("key".into(), Value::String(self.key.clone()));
        let request = self.http.client.post(&self.template_url).json(&call);
        match self.http.send(request, msg.recipients.len()).await {
            Ok(reply) => classify(&reply, msg.recipients),
            Err(report) => report,
        }
    }

    async fn probe(&self) -> ProbeReport {
        let request = self.http.client.post(&self.ping_url).json(&serde_json::json!({ "key": self.key }));
        match self.http.probe(request).await {
            Ok(reply) => classify_ping(&reply),
            Err(report) => report,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;
    use serde_json::json;

    fn reply(status: u16, body: Value) -> HttpReply {
        HttpReply { status, headers: HeaderMap::new(), body: body.to_string() }
    }

    fn rcpts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tags_and_metadata_travel_as_mandrill_headers_in_front_of_the_raw_message() {
        let raw = "From: a@example.com\r\n\r\nhi\r\n";
        let to = rcpts(&["b@example.net"]);
        let plain = Outbound::new("m", "a@example.com", &to, raw.as_bytes());
        assert!(matches!(with_label_headers(&plain, raw), std::borrow::Cow::Borrowed(r) if r == raw));
        let tags = rcpts(&["reset", "_reserved", "a,b"]);
        let metadata = [("user".to_string(), "7".to_string())].into();
        let labelled = Outbound { tags: &tags, metadata: &metadata, ..plain };
        assert_eq!(
            with_label_headers(&labelled, raw),
            format!("X-MC-Tags: reset\r\nX-MC-Metadata: {{\"user\":\"7\"}}\r\n{raw}")
        );
    }

    #[test]
    fn per_recipient_results() {
        let r = rcpts(&["a@x.net", "b@x.net", "c@x.net", "d@x.net"]);
        let report = classify(
            &reply(
                200,
                json!([
                    {"email": "A@x.net", "status": "sent", "_id": "id-a"},
                    {"email": "b@x.net", "status": "rejected", "reject_reason": "hard-bounce", "_id": "id-b"},
                    {"email": "c@x.net", "status": "invalid", "reject_reason": null, "_id": "id-c"},
                    {"email": "d@x.net", "status": "queued", "queued_reason": "attachments", "_id": "id-d"},
                ]),
            ),
            &r,
        );
        assert_eq!(report.class, OutcomeClass::Accepted);
        assert!(!report.possible_duplicate);
        assert_eq!(
            report.recipients,
            vec![
                RecipientResult::Delivered { provider_message_id: Some("id-a".into()) },
                RecipientResult::Rejected { detail: "rejected: hard-bounce".into(), reason: RejectReason::Bounced },
                RecipientResult::Rejected { detail: "invalid".into(), reason: RejectReason::Invalid },
                RecipientResult::Delivered { provider_message_id: Some("id-d".into()) },
            ]
        );
    }

    #[test]
    fn only_rejections_are_recipient_rejected() {
        let report = classify(
            &reply(200, json!([{"email": "a@x.net", "status": "rejected", "reject_reason": "spam"}])),
            &rcpts(&["a@x.net"]),
        );
        assert_eq!(report.class, OutcomeClass::RecipientRejected);
    }

    #[test]
    fn sender_rejections_are_the_sender_or_the_account() {
        let expected = [
            ("invalid-sender", OutcomeClass::Account),
            ("unsigned", OutcomeClass::SenderUnverified),
            ("test-mode-limit", OutcomeClass::Account),
        ];
        for (reason, class) in expected {
            let report = classify(
                &reply(200, json!([{"email": "a@x.net", "status": "rejected", "reject_reason": reason}])),
                &rcpts(&["a@x.net"]),
            );
            assert_eq!(report.class, class, "{reason}");
            assert_eq!(report.recipients, vec![RecipientResult::NotDone], "{reason}");
            assert!(!report.possible_duplicate);
            assert!(report.detail.contains(reason), "{}", report.detail);
        }
    }

    #[test]
    fn suspension_queued_reasons_are_account_and_possible_duplicates() {
        for reason in SUSPENSION_REASONS {
            let report = classify(
                &reply(
                    200,
                    json!([{"email": "a@x.net", "status": "queued", "queued_reason": reason, "_id": "q"},
                           {"email": "b@x.net", "status": "sent", "_id": "s"}]),
                ),
                &rcpts(&["a@x.net", "b@x.net"]),
            );
            assert_eq!(report.class, OutcomeClass::Account, "{reason}");
            assert!(report.possible_duplicate, "{reason}");
            assert_eq!(report.recipients[0], RecipientResult::NotDone);
            assert_eq!(report.recipients[1], RecipientResult::Delivered { provider_message_id: Some("s".into()) });
            assert!(report.detail.contains(reason), "{}", report.detail);
        }
    }

    #[test]
    fn missing_results_are_unknown() {
        let report = classify(&reply(200, json!([{"email": "other@x.net", "status": "sent"}])), &rcpts(&["a@x.net"]));
        assert_eq!(report.class, OutcomeClass::Transient);
        assert!(report.possible_duplicate);
        let report = classify(&reply(200, json!([])), &rcpts(&["a@x.net"]));
        assert_eq!(report.class, OutcomeClass::Transient);
        assert!(report.possible_duplicate);
    }

    #[test]
    fn error_names_before_status() {
        let cases = [
            ("Invalid_Key", 500, OutcomeClass::Account),
            ("PaymentRequired", 402, OutcomeClass::Account),
            ("Unknown_Subaccount", 500, OutcomeClass::Account),
            ("ValidationError", 500, OutcomeClass::BadRequest),
            ("GeneralError", 500, OutcomeClass::Transient),
            ("ServiceUnavailable", 500, OutcomeClass::Transient),
            ("RequestLimitExceeded", 500, OutcomeClass::RateLimited),
            ("Something_New", 500, OutcomeClass::Transient),
            ("Something_New", 401, OutcomeClass::Account),
        ];
        for (name, status, class) in cases {
            let body = json!({"status": "error", "code": -1, "name": name, "message": "m"});
            let report = classify(&reply(status, body), &rcpts(&["a@x.net"]));
            assert_eq!(report.class, class, "{name} {status}");
            assert!(!report.possible_duplicate);
            assert!(report.detail.contains(name));
        }
    }

    #[test]
    fn unknown_shapes_by_status() {
        let html = HttpReply { status: 502, headers: HeaderMap::new(), body: "<html>Bad Gateway</html>".into() };
        assert_eq!(classify(&html, &rcpts(&["a@x.net"])).class, OutcomeClass::Transient);
        let weird = HttpReply { status: 200, headers: HeaderMap::new(), body: "{\"ok\":".into() };
        let report = classify(&weird, &rcpts(&["a@x.net"]));
        assert_eq!(report.class, OutcomeClass::Transient);
        assert!(report.possible_duplicate, "HTTP 200 may have sent it");
    }

    #[test]
    fn an_account_problem_outweighs_an_unsigned_sender() {
        let report = classify(
            &reply(
                200,
                json!([{"email": "a@x.net", "status": "rejected", "reject_reason": "unsigned"},
                       {"email": "b@x.net", "status": "queued", "queued_reason": "account-suspended"}]),
            ),
            &rcpts(&["a@x.net", "b@x.net"]),
        );
        assert_eq!(report.class, OutcomeClass::Account);
    }

    #[test]
    fn ping() {
        use crate::health::ProbeVerdict::{Failed, Inconclusive, Usable};
        let error = |name: &str| json!({"status": "error", "code": -1, "name": name, "message": "m"});
        let text = |status: u16, body: &str| HttpReply { status, headers: HeaderMap::new(), body: body.into() };
        let cases = [
            (reply(200, json!({"PING": "PONG!"})), Usable),
            (reply(500, error("Invalid_Key")), Failed(OutcomeClass::Account)),
            (reply(401, error("Invalid_Key")), Failed(OutcomeClass::Account)),
            (reply(402, error("PaymentRequired")), Failed(OutcomeClass::Account)),
            (reply(500, error("Unknown_Subaccount")), Failed(OutcomeClass::Account)),
            (reply(500, error("GeneralError")), Failed(OutcomeClass::Transient)),
            (reply(503, error("ServiceUnavailable")), Failed(OutcomeClass::Transient)),
            (reply(500, error("ValidationError")), Inconclusive),
            (reply(500, error("RequestLimitExceeded")), Inconclusive),
            (reply(200, json!({"PING": "nope"})), Inconclusive),
            (text(200, "<html>maintenance</html>"), Inconclusive),
            (text(502, "<html>Bad Gateway</html>"), Failed(OutcomeClass::Transient)),
            (text(404, "not found"), Inconclusive),
        ];
        for (r, verdict) in cases {
            let report = classify_ping(&r);
            assert_eq!(report.verdict, verdict, "{} {}: {}", r.status, r.body, report.detail);
        }
    }
}
