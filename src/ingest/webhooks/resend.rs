//! Resend webhooks: one JSON event per POST (`{"type", "created_at", "data"}`), signed the
//! Standard Webhooks way ([`crate::event::signature`]) with the `whsec_…` secret of the webhook,
//! in the `svix-id`, `svix-timestamp` and `svix-signature` headers (the `webhook-*` names of the
//! Standard Webhooks spec are read too). The timestamp must be within five minutes of now.

use super::{Inbound, Refused};
use crate::event::signature::{self, SignatureError};
use crate::event::{EventType, ProviderEvent, RejectReason};
use crate::outcome::truncate_detail;
use serde_json::Value;
use std::time::UNIX_EPOCH;

/// How far `svix-timestamp` may be from now (Svix's and Resend's libraries use the same).
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// Checks the signature headers against `webhook_secret` (`whsec_…`).
pub fn verify(webhook_secret: &str, inbound: &Inbound) -> Result<(), Refused> {
    let header = |name: &str| inbound.header(&format!("svix-{name}")).or(inbound.header(&format!("webhook-{name}")));
    let (Some(id), Some(timestamp), Some(signatures)) = (header("id"), header("timestamp"), header("signature")) else {
        return Err(Refused::unauthenticated("svix-id, svix-timestamp or svix-signature header is missing"));
    };
    let key =
        signature::decode_secret(webhook_secret).map_err(|e| Refused::forbidden(format!("cannot verify: {e}")))?;
    let now = inbound.now_secs();
    signature::verify(&key, id, timestamp, signatures, inbound.body, now, TOLERANCE_SECS).map_err(|e| match e {
        SignatureError::Missing => Refused::unauthenticated(e.to_string()),
        SignatureError::BadTimestamp | SignatureError::Stale | SignatureError::Mismatch => {
            Refused::forbidden(format!("{e} (check webhook_secret)"))
        }
    })
}

/// The events of a webhook POST, without event ids (see [`parse_delivery`]).
pub fn parse(body: &[u8]) -> Result<Vec<ProviderEvent>, String> {
    parse_delivery(body, None)
}

/// The events of a webhook POST whose `svix-id` header is `delivery_id`: that id is the same
/// for every retry of one event, so it becomes the events' `event_id` (suffixed with the
/// recipient when the event is about several).
pub fn parse_delivery(body: &[u8], delivery_id: Option<&str>) -> Result<Vec<ProviderEvent>, String> {
    let e: Value = serde_json::from_slice(body).map_err(|err| format!("the body is not JSON: {err}"))?;
    let kind = e.get("type").and_then(Value::as_str).ok_or("the body has no event type")?;
    let data = e.get("data").unwrap_or(&Value::Null);
    let (event_type, reject_reason) = classify(kind, data);
    // Resend lists the recipients an email event is about in `to` ("Name <addr>" or bare).
    let mut recipients: Vec<Option<String>> = match data.get("to") {
        Some(Value::Array(to)) => to.iter().filter_map(|a| text(Some(a))).map(|a| Some(address(a))).collect(),
        Some(Value::String(to)) => vec![Some(address(to))],
        _ => vec![text(data.get("email")).map(str::to_lowercase)],
    };
    if recipients.is_empty() {
        recipients.push(None);
    }
    let detail = detail(data);
    let at_ms = text(e.get("created_at")).and_then(timestamp_ms).unwrap_or(0);
    let several = recipients.len() > 1;
    Ok(recipients
        .into_iter()
        .map(|recipient| ProviderEvent {
            event_type,
            provider_event: kind.to_string(),
            event_id: delivery_id.map(|id| match (&recipient, several) {
                (Some(r), true) => format!("{id}:{r}"),
                _ => id.to_string(),
            }),
            recipient,
            // The send answer's `id`, which the adapter stores.
            provider_message_id: text(data.get("email_id")).map(str::to_string),
            at_ms,
            reject_reason,
            detail: detail.clone(),
        })
        .collect())
}

/// django-anymail's mapping, with the bounce's `type`/`subType` (Resend relays Amazon SES's)
/// deciding where anymail reads the message text: a transient bounce is `deferred`, an address
/// that does not exist `invalid`. `email.scheduled` is `queued`; `email.failed` (Resend could not
/// send: quota, domain, API key) `failed`; `email.suppressed` (on Resend's suppression list)
/// `rejected`.
fn classify(kind: &str, data: &Value) -> (EventType, Option<RejectReason>) {
    let field = |object: &str, key: &str| data.get(object).and_then(|o| o.get(key)).and_then(Value::as_str);
    match kind {
        "email.sent" => (EventType::Sent, None),
        "email.scheduled" => (EventType::Queued, None),
        "email.delivered" => (EventType::Delivered, None),
        "email.delivery_delayed" => (EventType::Deferred, None),
        "email.complained" => (EventType::Complained, Some(RejectReason::Spam)),
        "email.bounced" => match (field("bounce", "type"), field("bounce", "subType")) {
            (Some("Transient"), Some("ContentRejected" | "AttachmentRejected")) => {
                (EventType::Deferred, Some(RejectReason::Blocked))
            }
            (Some("Transient"), _) => (EventType::Deferred, None),
            (Some("Undetermined"), _) => (EventType::Bounced, Some(RejectReason::Other)),
            (_, Some("NoEmail")) => (EventType::Bounced, Some(RejectReason::Invalid)),
            _ => (EventType::Bounced, Some(RejectReason::Bounced)),
        },
        "email.opened" => (EventType::Opened, None),
        "email.clicked" => (EventType::Clicked, None),
        "email.failed" => (EventType::Failed, None),
        "email.suppressed" => {
            let why = field("suppressed", "type").unwrap_or_default().to_ascii_lowercase();
            let reason = match () {
                _ if why.contains("bounce") => RejectReason::Bounced,
                _ if why.contains("complaint") => RejectReason::Spam,
                _ => RejectReason::Other,
            };
            (EventType::Rejected, Some(reason))
        }
        // email.received, contact.*, domain.*, suppression.* and anything newer.
        _ => (EventType::Unknown, None),
    }
}

fn detail(data: &Value) -> String {
    let field = |object: &str, key: &str| {
        data.get(object).and_then(|o| o.get(key)).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
    };
    let text = match (field("bounce", "type"), field("bounce", "subType"), field("bounce", "message")) {
        (Some(kind), Some(sub), Some(message)) => format!("{kind}/{sub}: {message}"),
        (_, _, Some(message)) => message.to_string(),
        _ => field("failed", "reason").or(field("suppressed", "message")).unwrap_or_default().to_string(),
    };
    truncate_detail(&text)
}

fn text(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}

/// The lower-cased address of `Name <addr>` or `addr`.
fn address(value: &str) -> String {
    let addr = match (value.rfind('<'), value.rfind('>')) {
        (Some(start), Some(end)) if start < end => &value[start + 1..end],
        _ => value,
    };
    addr.trim().to_lowercase()
}

fn timestamp_ms(text: &str) -> Option<u64> {
    Some(humantime::parse_rfc3339_weak(text).ok()?.duration_since(UNIX_EPOCH).ok()?.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::SuppressionReason;
    use axum::http::{HeaderMap, HeaderValue};

    /// Modeled on Resend's documented webhook examples (resend.com/docs/webhooks/emails/…) and
    /// its SDK's payload types (resend-node `webhook-event.interface.ts`).
    fn sample(kind: &str, extra: &str) -> String {
        format!(
            r#"{{"type": "{kind}", "created_at": "2024-11-22T23:41:12.126Z",
                "data": {{"broadcast_id": "8b146471-e88e-4322-86af-016cd36fd216", "created_at": "2024-11-22T23:41:11.894719+00:00",
                          "email_id": "56761188-7520-42d8-8898-ff6fc54ce618", "from": "Acme <onboarding@resend.dev>",
                          "to": ["Delivered@resend.dev"], "subject": "Sending this example",
                          "tags": {{"category": "confirm_email"}}{extra}}}}}"#
        )
    }

    const BOUNCE: &str = r#", "bounce": {"message": "The recipient's email address is on the suppression list because it has a recent history of producing hard bounces.", "subType": "Suppressed", "type": "Permanent"}"#;
    const NO_EMAIL: &str = r#", "bounce": {"message": "The recipient's email provider sent a hard bounce message.", "subType": "NoEmail", "type": "Permanent"}"#;
    const TRANSIENT: &str =
        r#", "bounce": {"message": "The recipient's mailbox is full.", "subType": "MailboxFull", "type": "Transient"}"#;
    const CLICK: &str = r#", "click": {"ipAddress": "122.115.53.11", "link": "https://resend.com", "timestamp": "2024-11-24T05:00:57.163Z", "userAgent": "Mozilla/5.0"}"#;
    const FAILED: &str = r#", "failed": {"reason": "reached_daily_quota"}"#;
    const SUPPRESSED: &str =
        r#", "suppressed": {"message": "This email address is on the suppression list.", "type": "bounce"}"#;

    // The Standard Webhooks test secret (used by Resend's SDK tests too).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W";
    const NOW: i64 = 1_732_318_872;

    fn headers(pairs: &[(&str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        h
    }

    fn signed_headers(secret: &str, timestamp: i64, body: &str) -> Vec<(&'static str, String)> {
        let key = signature::decode_secret(secret).unwrap();
        vec![
            ("svix-id", ID.to_string()),
            ("svix-timestamp", timestamp.to_string()),
            ("svix-signature", signature::sign(&key, ID, timestamp, body.as_bytes())),
        ]
    }

    fn check(pairs: &[(&str, String)], body: &str, now_secs: i64) -> Result<(), Refused> {
        let headers = headers(pairs);
        verify(SECRET, &Inbound { headers: &headers, body: body.as_bytes(), now_ms: now_secs as u64 * 1000 })
    }

    #[test]
    fn a_correctly_signed_event_is_accepted() {
        let body = sample("email.delivered", "");
        assert_eq!(check(&signed_headers(SECRET, NOW, &body), &body, NOW), Ok(()));
        let renamed: Vec<_> = signed_headers(SECRET, NOW, &body)
            .into_iter()
            .map(|(name, value)| {
                (
                    match name {
                        "svix-id" => "webhook-id",
                        "svix-timestamp" => "webhook-timestamp",
                        _ => "webhook-signature",
                    },
                    value,
                )
            })
            .collect();
        assert_eq!(check(&renamed, &body, NOW), Ok(()));
    }

    #[test]
    fn missing_forged_and_stale_events_are_refused() {
        let body = sample("email.bounced", BOUNCE);
        let good = signed_headers(SECRET, NOW, &body);
        let status = |pairs: &[(&str, String)], body: &str, now| check(pairs, body, now).unwrap_err().status;
        assert_eq!(status(&good[..2], &body, NOW), 401);
        assert_eq!(status(&[], &body, NOW), 401);
        assert_eq!(status(&signed_headers("whsec_c29tZSBvdGhlciBzZWNyZXQ=", NOW, &body), &body, NOW), 403);
        assert_eq!(status(&good, &sample("email.delivered", ""), NOW), 403);
        assert_eq!(status(&good, &body, NOW + TOLERANCE_SECS + 1), 403);
        assert_eq!(status(&good, &body, NOW - TOLERANCE_SECS - 1), 403);
        let mut forged = good.clone();
        forged[2].1 = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".to_string();
        assert_eq!(status(&forged, &body, NOW), 403);
    }

    #[test]
    fn parses_the_documented_events() {
        use EventType as E;
        use RejectReason as R;
        let cases = [
            ("email.sent", "", E::Sent, None),
            ("email.scheduled", "", E::Queued, None),
            ("email.delivered", "", E::Delivered, None),
            ("email.delivery_delayed", "", E::Deferred, None),
            ("email.complained", "", E::Complained, Some(R::Spam)),
            ("email.bounced", BOUNCE, E::Bounced, Some(R::Bounced)),
            ("email.bounced", NO_EMAIL, E::Bounced, Some(R::Invalid)),
            ("email.bounced", TRANSIENT, E::Deferred, None),
            ("email.opened", "", E::Opened, None),
            ("email.clicked", CLICK, E::Clicked, None),
            ("email.failed", FAILED, E::Failed, None),
            ("email.suppressed", SUPPRESSED, E::Rejected, Some(R::Bounced)),
            ("domain.updated", "", E::Unknown, None),
        ];
        for (kind, extra, event_type, reason) in cases {
            let events = parse(sample(kind, extra).as_bytes()).unwrap();
            assert_eq!(events.len(), 1, "{kind}");
            let e = &events[0];
            assert_eq!(e.provider_event, kind);
            assert_eq!((e.event_type, e.reject_reason), (event_type, reason), "{kind} {extra}");
            assert_eq!(e.recipient.as_deref(), Some("delivered@resend.dev"));
            assert_eq!(e.provider_message_id.as_deref(), Some("56761188-7520-42d8-8898-ff6fc54ce618"));
            assert_eq!(e.at_ms, 1_732_318_872_126);
            assert_eq!(e.event_id, None);
        }
        let bounce = parse(sample("email.bounced", BOUNCE).as_bytes()).unwrap().remove(0);
        assert!(
            bounce.detail.starts_with("Permanent/Suppressed: The recipient's email address is on the suppression list")
        );
        let failed = parse(sample("email.failed", FAILED).as_bytes()).unwrap().remove(0);
        assert_eq!(failed.detail, "reached_daily_quota");
    }

    #[test]
    fn an_event_about_several_recipients_becomes_one_per_recipient() {
        let body =
            sample("email.delivered", "").replace(r#"["Delivered@resend.dev"]"#, r#"["A <a@x.test>", "b@x.test"]"#);
        let events = parse_delivery(body.as_bytes(), Some(ID)).unwrap();
        let got: Vec<_> = events.iter().map(|e| (e.recipient.as_deref(), e.event_id.as_deref())).collect();
        let (a, b) = (format!("{ID}:a@x.test"), format!("{ID}:b@x.test"));
        assert_eq!(got, [(Some("a@x.test"), Some(a.as_str())), (Some("b@x.test"), Some(b.as_str()))]);
        let one = parse_delivery(sample("email.delivered", "").as_bytes(), Some(ID)).unwrap();
        assert_eq!(one[0].event_id.as_deref(), Some(ID));
    }

    #[test]
    fn hard_bounces_and_complaints_suppress() {
        let first = |kind: &str, extra: &str| parse(sample(kind, extra).as_bytes()).unwrap().remove(0);
        assert_eq!(first("email.bounced", BOUNCE).suppression(), Some(SuppressionReason::Bounced));
        assert_eq!(first("email.bounced", NO_EMAIL).suppression(), Some(SuppressionReason::Invalid));
        assert_eq!(first("email.complained", "").suppression(), Some(SuppressionReason::Complained));
        assert_eq!(first("email.bounced", TRANSIENT).suppression(), None);
        assert_eq!(first("email.failed", FAILED).suppression(), None);
    }

    #[test]
    fn a_body_that_is_not_an_event_is_an_error() {
        assert!(parse(b"not json").is_err());
        assert!(parse(b"{\"data\": {}}").is_err());
    }
}
