//! Mandrill (Mailchimp Transactional) event webhooks: a form-encoded POST whose one field,
//! `mandrill_events`, is a JSON array of up to 1,000 events, signed in `X-Mandrill-Signature`
//! with base64 HMAC-SHA1 (key: the webhook's key) over the registered URL followed by each POST
//! field's name and value, sorted by name.
//!
//! When a webhook is added, Mandrill first sends a HEAD request (the handler answers it 200,
//! unsigned) and, if that fails, a POST with an empty `mandrill_events` array signed with the
//! generic key `test-webhook`: that one empty batch is accepted too, and carries no events.

use super::{Inbound, Refused};
use crate::event::{EventType, ProviderEvent, RejectReason};
use crate::outcome::truncate_detail;
use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

pub const SIGNATURE_HEADER: &str = "X-Mandrill-Signature";

/// The key Mandrill signs its URL check with (Mailchimp Transactional's "Why can't my webhook
/// URL be verified?").
pub const TEST_KEY: &str = "test-webhook";

/// The `X-Mandrill-Signature` of a POST with these form fields to `url`.
pub fn signature(key: &str, url: &str, fields: &[(&str, &str)]) -> String {
    STANDARD.encode(hmac::sign(&hmac_key(key), &signed_data(url, fields)).as_ref())
}

/// Checks `X-Mandrill-Signature` against `webhook_key` and `webhook_url` (the exact URL
/// registered in Mandrill, which may differ from what Baton sees behind a proxy).
pub fn verify(webhook_key: &str, webhook_url: &str, inbound: &Inbound) -> Result<(), Refused> {
    let Some(given) = inbound.header(SIGNATURE_HEADER) else {
        return Err(Refused::unauthenticated("X-Mandrill-Signature header is missing"));
    };
    let Ok(given) = STANDARD.decode(given) else {
        return Err(Refused::forbidden("X-Mandrill-Signature is not base64"));
    };
    let owned = fields(inbound.body);
    let fields: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let data = signed_data(webhook_url, &fields);
    // `hmac::verify` compares in constant time.
    if hmac::verify(&hmac_key(webhook_key), &data, &given).is_ok() {
        return Ok(());
    }
    if is_url_check(&fields) && hmac::verify(&hmac_key(TEST_KEY), &data, &given).is_ok() {
        return Ok(());
    }
    Err(Refused::forbidden(
        "X-Mandrill-Signature does not match (check webhook_key, and that webhook_url is exactly the URL registered in Mandrill)",
    ))
}

/// The events of a `mandrill_events` POST.
pub fn parse(body: &[u8]) -> Result<Vec<ProviderEvent>, String> {
    let events = fields(body)
        .into_iter()
        .find(|(name, _)| name == "mandrill_events")
        .map(|(_, value)| value)
        .ok_or("the body has no mandrill_events field")?;
    let events: Vec<Value> =
        serde_json::from_str(&events).map_err(|e| format!("mandrill_events is not a JSON array of events: {e}"))?;
    Ok(events.iter().map(event).collect())
}

fn hmac_key(key: &str) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key.as_bytes())
}

fn fields(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

fn signed_data(url: &str, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut sorted = fields.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut data = url.as_bytes().to_vec();
    for (name, value) in sorted {
        data.extend_from_slice(name.as_bytes());
        data.extend_from_slice(value.as_bytes());
    }
    data
}

/// The POST Mandrill sends when a webhook is added: `mandrill_events=[]` and nothing else.
fn is_url_check(fields: &[(&str, &str)]) -> bool {
    matches!(fields, [("mandrill_events", events)] if events.trim() == "[]")
}

fn event(e: &Value) -> ProviderEvent {
    // Message events say `event`; sync events (allow/deny list changes) say `type`.
    let kind = field(e, "event").or(field(e, "type")).unwrap_or("unknown");
    let msg = e.get("msg").unwrap_or(&Value::Null);
    let (event_type, reject_reason) = classify(kind, msg);
    let reject = e.get("reject").unwrap_or(&Value::Null);
    let entry = e.get("entry").unwrap_or(&Value::Null);
    let recipient = field(msg, "email").or(field(reject, "email")).or(field(entry, "email"));
    let detail = [field(msg, "bounce_description"), field(msg, "diag"), field(reject, "detail")]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(": ");
    ProviderEvent {
        event_type,
        provider_event: kind.to_string(),
        recipient: recipient.map(str::to_lowercase),
        // The send answer's per-recipient `_id` (what the adapter stores) is `msg._id`.
        provider_message_id: field(msg, "_id").or(field(e, "_id")).map(str::to_string),
        at_ms: e.get("ts").and_then(Value::as_f64).map(|ts| (ts * 1000.0) as u64).unwrap_or(0),
        reject_reason,
        detail: truncate_detail(&detail),
        event_id: None,
    }
}

fn field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}

/// django-anymail's mapping, except a soft bounce: Mandrill retries it, so it is `deferred`.
fn classify(kind: &str, msg: &Value) -> (EventType, Option<RejectReason>) {
    match kind {
        "send" => (EventType::Sent, None),
        "delivered" => (EventType::Delivered, None),
        "deferral" => (EventType::Deferred, None),
        "hard_bounce" => (EventType::Bounced, Some(bounce_reason(field(msg, "bounce_description")))),
        "soft_bounce" => (EventType::Deferred, soft_bounce_reason(field(msg, "bounce_description"))),
        "open" => (EventType::Opened, None),
        "click" => (EventType::Clicked, None),
        "spam" => (EventType::Complained, Some(RejectReason::Spam)),
        "unsub" => (EventType::Unsubscribed, Some(RejectReason::Unsubscribed)),
        "reject" => (EventType::Rejected, field(msg, "reject_reason").map(rejection_reason)),
        // Allow/deny list syncs, inbound mail and anything newer.
        _ => (EventType::Unknown, None),
    }
}

/// `bounce_description` ("bad_mailbox", "invalid_domain", …): an address that cannot exist is
/// `invalid`, any other hard bounce `bounced`.
fn bounce_reason(description: Option<&str>) -> RejectReason {
    match description {
        Some("bad_mailbox" | "invalid_domain") => RejectReason::Invalid,
        _ => RejectReason::Bounced,
    }
}

fn soft_bounce_reason(description: Option<&str>) -> Option<RejectReason> {
    match description? {
        "spam_related" | "policy_related" | "invalid_content" => Some(RejectReason::Blocked),
        _ => Some(RejectReason::Other),
    }
}

/// A `reject_reason` as in Mandrill's send answer.
fn rejection_reason(reason: &str) -> RejectReason {
    match reason {
        "hard-bounce" => RejectReason::Bounced,
        "invalid" => RejectReason::Invalid,
        "spam" => RejectReason::Spam,
        "unsub" => RejectReason::Unsubscribed,
        "rule" | "custom" => RejectReason::Blocked,
        _ => RejectReason::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::SuppressionReason;
    use axum::http::{HeaderMap, HeaderValue};

    const KEY: &str = "uX2k7Y9mIeHw5xHhE1Mq-A";
    const URL: &str = "https://baton.example.com/webhooks/mandrill";

    /// Modeled on Mailchimp Transactional's sample webhook events (the ones its dashboard's
    /// "send test" posts, docs "Webhooks > Event format"): `ts` on the event and the message,
    /// the message's `_id` as returned by `messages/send`.
    const EVENTS: &str = r#"[
      {"event": "send", "_id": "exampleaaaaaaaaaaaaaaaaaaaaaaaaa1", "ts": 1384954004,
       "msg": {"ts": 1365109999, "subject": "This an example webhook message", "email": "Example.Webhook@mandrillapp.com",
               "sender": "example.sender@mandrillapp.com", "tags": ["webhook-example"], "opens": [], "clicks": [],
               "state": "sent", "metadata": {"user_id": 111}, "_id": "exampleaaaaaaaaaaaaaaaaaaaaaaaaa1", "_version": "exampleaaaaaaaaaaaaaaa"}},
      {"event": "hard_bounce", "_id": "exampleaaaaaaaaaaaaaaaaaaaaaaaaa2", "ts": 1384954004,
       "msg": {"ts": 1365109999, "subject": "This an example webhook message", "email": "example.webhook@mandrillapp.com",
               "sender": "example.sender@mandrillapp.com", "tags": ["webhook-example"], "state": "bounced",
               "metadata": {"user_id": 111}, "_id": "exampleaaaaaaaaaaaaaaaaaaaaaaaaa2", "_version": "exampleaaaaaaaaaaaaaaa",
               "bounce_description": "bad_mailbox", "bgtools_code": 10,
               "diag": "smtp;550 5.1.1 The email account that you tried to reach does not exist."}},
      {"event": "soft_bounce", "_id": "exampleaaaaaaaaaaaaaaaaaaaaaaaaa3", "ts": 1384954004,
       "msg": {"ts": 1365109999, "email": "example.webhook@mandrillapp.com", "state": "soft-bounced",
               "_id": "exampleaaaaaaaaaaaaaaaaaaaaaaaaa3", "bounce_description": "mailbox_full", "bgtools_code": 22,
               "diag": "smtp;552 5.2.2 Over Quota"}},
      {"event": "deferral", "_id": "exampleaaaaaaaaaaaaaaaaaaaaaaaaa4", "ts": 1384954004,
       "msg": {"ts": 1365109999, "email": "example.webhook@mandrillapp.com", "state": "deferred",
               "_id": "exampleaaaaaaaaaaaaaaaaaaaaaaaaa4", "smtp_events": [{"destination_ip": "127.0.0.1", "diag": "451 4.3.5 Temporarily unavailable", "size": 0, "source_ip": "127.0.0.1", "ts": 1365111111, "type": "deferred"}]}},
      {"event": "open", "_id": "exampleaaaaaaaaaaaaaaaaaaaaaaaaa5", "ts": 1384954004, "ip": "127.0.0.1", "user_agent": "Mozilla/5.0",
       "msg": {"ts": 1365109999, "email": "example.webhook@mandrillapp.com", "state": "sent", "_id": "exampleaaaaaaaaaaaaaaaaaaaaaaaaa5"}},
      {"event": "click", "_id": "exampleaaaaaaaaaaaaaaaaaaaaaaaaa6", "ts": 1384954004, "url": "http://mandrill.com",
       "msg": {"ts": 1365109999, "email": "example.webhook@mandrillapp.com", "state": "sent", "_id": "exampleaaaaaaaaaaaaaaaaaaaaaaaaa6"}},
      {"event": "spam", "_id": "exampleaaaaaaaaaaaaaaaaaaaaaaaaa7", "ts": 1384954004,
       "msg": {"ts": 1365109999, "email": "example.webhook@mandrillapp.com", "state": "sent", "_id": "exampleaaaaaaaaaaaaaaaaaaaaaaaaa7"}},
      {"event": "unsub", "_id": "exampleaaaaaaaaaaaaaaaaaaaaaaaaa8", "ts": 1384954004,
       "msg": {"ts": 1365109999, "email": "example.webhook@mandrillapp.com", "state": "sent", "_id": "exampleaaaaaaaaaaaaaaaaaaaaaaaaa8"}},
      {"event": "reject", "_id": "exampleaaaaaaaaaaaaaaaaaaaaaaaaa9", "ts": 1384954004,
       "msg": {"ts": 1365109999, "email": "example.webhook@mandrillapp.com", "state": "rejected", "_id": "exampleaaaaaaaaaaaaaaaaaaaaaaaaa9"}},
      {"event": "delivered", "_id": "exampleaaaaaaaaaaaaaaaaaaaaaaaaa0", "ts": 1384954004,
       "msg": {"ts": 1365109999, "email": "example.webhook@mandrillapp.com", "state": "delivered", "_id": "exampleaaaaaaaaaaaaaaaaaaaaaaaaa0"}},
      {"type": "blacklist", "action": "add", "ts": 1384954004,
       "reject": {"reason": "hard-bounce", "detail": "smtp;550 5.1.1 User unknown", "email": "example.webhook@mandrillapp.com",
                  "created_at": "2013-11-20 10:53:24", "expires_at": "2013-11-20 10:53:24", "expired": false, "sender": null}}
    ]"#;

    fn form(events: &str) -> Vec<u8> {
        form_urlencoded::Serializer::new(String::new()).append_pair("mandrill_events", events).finish().into_bytes()
    }

    fn headers(signature: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(s) = signature {
            h.insert("x-mandrill-signature", HeaderValue::from_str(s).unwrap());
        }
        h
    }

    fn check(key: &str, url: &str, signature: Option<&str>, body: &[u8]) -> Result<(), Refused> {
        let headers = headers(signature);
        verify(key, url, &Inbound { headers: &headers, body, now_ms: 0 })
    }

    #[test]
    fn parses_the_documented_sample_events() {
        use EventType as E;
        use RejectReason as R;
        let events = parse(&form(EVENTS)).unwrap();
        let want = [
            ("send", E::Sent, None),
            ("hard_bounce", E::Bounced, Some(R::Invalid)),
            ("soft_bounce", E::Deferred, Some(R::Other)),
            ("deferral", E::Deferred, None),
            ("open", E::Opened, None),
            ("click", E::Clicked, None),
            ("spam", E::Complained, Some(R::Spam)),
            ("unsub", E::Unsubscribed, Some(R::Unsubscribed)),
            ("reject", E::Rejected, None),
            ("delivered", E::Delivered, None),
            ("blacklist", E::Unknown, None),
        ];
        assert_eq!(events.len(), want.len());
        for (event, (kind, event_type, reason)) in events.iter().zip(want) {
            assert_eq!(event.provider_event, kind);
            assert_eq!((event.event_type, event.reject_reason), (event_type, reason), "{kind}");
            assert_eq!(event.recipient.as_deref(), Some("example.webhook@mandrillapp.com"), "{kind}");
            assert_eq!(event.at_ms, 1_384_954_004_000);
            assert!(event.detail.len() <= 304);
        }
        assert_eq!(events[0].provider_message_id.as_deref(), Some("exampleaaaaaaaaaaaaaaaaaaaaaaaaa1"));
        assert_eq!(
            events[1].detail,
            "bad_mailbox: smtp;550 5.1.1 The email account that you tried to reach does not exist."
        );
        assert_eq!(events[10].provider_message_id, None);
    }

    #[test]
    fn hard_bounces_complaints_and_unsubscribes_suppress() {
        let events = parse(&form(EVENTS)).unwrap();
        let suppression = |kind: &str| events.iter().find(|e| e.provider_event == kind).unwrap().suppression();
        assert_eq!(suppression("hard_bounce"), Some(SuppressionReason::Invalid));
        assert_eq!(suppression("spam"), Some(SuppressionReason::Complained));
        assert_eq!(suppression("unsub"), Some(SuppressionReason::Unsubscribed));
        assert_eq!(suppression("soft_bounce"), None);
        assert_eq!(suppression("deferral"), None);
    }

    #[test]
    fn unreadable_bodies_are_errors() {
        assert!(parse(b"other=1").is_err());
        assert!(parse(&form("{\"event\": \"send\"}")).is_err());
        assert_eq!(parse(&form("[]")).unwrap(), vec![]);
    }

    #[test]
    fn a_correctly_signed_post_is_accepted() {
        let body = form(EVENTS);
        let sig = signature(KEY, URL, &[("mandrill_events", EVENTS)]);
        assert_eq!(check(KEY, URL, Some(&sig), &body), Ok(()));
    }

    #[test]
    fn forged_or_misaddressed_posts_are_refused() {
        let body = form(EVENTS);
        let sig = signature(KEY, URL, &[("mandrill_events", EVENTS)]);
        let status = |r: Result<(), Refused>| r.unwrap_err().status;
        assert_eq!(status(check(KEY, URL, None, &body)), 401);
        assert_eq!(status(check("another key", URL, Some(&sig), &body)), 403);
        assert_eq!(status(check(KEY, "https://baton.example.com/other", Some(&sig), &body)), 403);
        assert_eq!(status(check(KEY, URL, Some(&sig), &form("[]"))), 403);
        assert_eq!(status(check(KEY, URL, Some("not base64!"), &body)), 403);
        let forged = signature("guess", URL, &[("mandrill_events", EVENTS)]);
        assert_eq!(status(check(KEY, URL, Some(&forged), &body)), 403);
    }

    #[test]
    fn the_url_check_signed_with_the_generic_key_is_accepted_only_when_empty() {
        let sig = signature(TEST_KEY, URL, &[("mandrill_events", "[]")]);
        assert_eq!(check(KEY, URL, Some(&sig), &form("[]")), Ok(()));
        let sig = signature(TEST_KEY, URL, &[("mandrill_events", EVENTS)]);
        assert_eq!(check(KEY, URL, Some(&sig), &form(EVENTS)).unwrap_err().status, 403);
    }

    #[test]
    fn fields_are_signed_sorted_by_name() {
        let one = signature(KEY, URL, &[("b", "2"), ("a", "1")]);
        let other = signature(KEY, URL, &[("a", "1"), ("b", "2")]);
        assert_eq!(one, other);
        // Known answer: `printf '%s' "${URL}a1b2" | openssl dgst -sha1 -hmac "$KEY" -binary | base64`.
        assert_eq!(one, "sIIxBtm3+UoAbH59WUAeso7a2yo=");
    }
}
