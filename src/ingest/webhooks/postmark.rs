//! Postmark webhooks: one JSON event per POST (`RecordType` Bounce, SpamComplaint, Delivery,
//! Open, Click or SubscriptionChange). Postmark signs nothing; the webhook is registered with
//! HTTP Basic credentials (in the URL or its HttpAuth setting) and sends them in
//! `Authorization`, which is all there is to check: both the username and the password, each
//! compared in constant time.

use super::{Inbound, Refused};
use crate::event::{EventType, ProviderEvent, RejectReason};
use crate::outcome::truncate_detail;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::UNIX_EPOCH;
use subtle::ConstantTimeEq;

/// The `Authorization` header Postmark sends for these credentials.
pub fn authorization(username: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{username}:{password}")))
}

/// Checks the Basic credentials of the request against `webhook_username`/`webhook_password`.
pub fn verify(webhook_username: &str, webhook_password: &str, inbound: &Inbound) -> Result<(), Refused> {
    let basic = inbound.header("authorization").and_then(|h| {
        let (scheme, credentials) = h.split_once(' ')?;
        scheme.eq_ignore_ascii_case("basic").then(|| credentials.trim())
    });
    let Some(basic) = basic else {
        return Err(Refused::unauthenticated(
            "no Basic credentials (set them in the Postmark webhook's URL or HttpAuth)",
        ));
    };
    let decoded = STANDARD.decode(basic).ok().and_then(|b| String::from_utf8(b).ok());
    let Some((username, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
        return Err(Refused::forbidden("the Basic credentials are not base64 of username:password"));
    };
    // Hashing first makes the comparison independent of the lengths too; `&` (not `&&`)
    // checks both even when the first differs.
    let same = |given: &str, expected: &str| Sha256::digest(given).ct_eq(&Sha256::digest(expected));
    match bool::from(same(username, webhook_username) & same(password, webhook_password)) {
        true => Ok(()),
        false => Err(Refused::forbidden("wrong Basic credentials (check webhook_username and webhook_password)")),
    }
}

/// The one event of a webhook POST.
pub fn parse(body: &[u8]) -> Result<Vec<ProviderEvent>, String> {
    let event: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    match event.is_object() {
        true => Ok(vec![self::event(&event)]),
        false => Err("the body is not a JSON object".to_string()),
    }
}

fn event(e: &Value) -> ProviderEvent {
    let text = |key: &str| e.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
    // Inbound messages carry no RecordType: this is the wrong webhook for them.
    let record = text("RecordType").unwrap_or("unknown");
    let (kind, (event_type, reject_reason)) = match record {
        "Bounce" | "SpamComplaint" => {
            let kind = text("Type").unwrap_or(record);
            (format!("{record}/{kind}"), bounce_type(kind))
        }
        "SubscriptionChange" => match e.get("SuppressSending").and_then(Value::as_bool).unwrap_or(true) {
            true => {
                let why = text("SuppressionReason").unwrap_or("unknown");
                (format!("{record}/{why}"), bounce_type(why))
            }
            // Sending reactivated: Baton has no word for "subscribed".
            false => (format!("{record}/Reactivated"), (EventType::Unknown, None)),
        },
        "Delivery" => (record.to_string(), (EventType::Delivered, None)),
        "Open" => (record.to_string(), (EventType::Opened, None)),
        "Click" => (record.to_string(), (EventType::Clicked, None)),
        _ => (record.to_string(), (EventType::Unknown, None)),
    };
    let at = text("DeliveredAt").or(text("BouncedAt")).or(text("ReceivedAt")).or(text("ChangedAt"));
    let event_id = match e.get("ID") {
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    ProviderEvent {
        event_type,
        provider_event: kind,
        // Bounces and complaints say `Email`; the others `Recipient`.
        recipient: text("Email").or(text("Recipient")).map(str::to_lowercase),
        // The send answer's `MessageID`, which the adapter stores.
        provider_message_id: text("MessageID").map(str::to_string),
        at_ms: at.and_then(timestamp_ms).unwrap_or(0),
        reject_reason,
        detail: truncate_detail(text("Details").or(text("Description")).unwrap_or_default()),
        event_id,
    }
}

/// A bounce `Type` (or a SubscriptionChange `SuppressionReason`), as django-anymail maps it,
/// except three: a `SoftBounce` is retried, so `deferred`; a `SpamNotification` (a spam filter's
/// verdict on the content, not a complaint by the recipient) and a `VirusNotification` are
/// `failed` + `blocked`, which say nothing about the address and do not suppress it.
fn bounce_type(kind: &str) -> (EventType, Option<RejectReason>) {
    match kind {
        "HardBounce" => (EventType::Bounced, Some(RejectReason::Bounced)),
        "Transient" | "SoftBounce" | "DnsError" | "OpenRelayTest" => (EventType::Deferred, None),
        "Unsubscribe" | "ManualSuppression" => (EventType::Unsubscribed, Some(RejectReason::Unsubscribed)),
        "AutoResponder" | "AddressChange" | "ChallengeVerification" => (EventType::Autoresponded, None),
        "SpamNotification" | "VirusNotification" => (EventType::Failed, Some(RejectReason::Blocked)),
        "SpamComplaint" => (EventType::Complained, Some(RejectReason::Spam)),
        "BadEmailAddress" => (EventType::Rejected, Some(RejectReason::Invalid)),
        "ManuallyDeactivated" | "Blocked" | "DMARCPolicy" => (EventType::Rejected, Some(RejectReason::Blocked)),
        "Unconfirmed" => (EventType::Rejected, None),
        "SMTPApiError" | "TemplateRenderingFailed" => (EventType::Failed, None),
        // Subscribe, InboundError, Unknown and anything newer.
        _ => (EventType::Unknown, None),
    }
}

/// ms since the epoch of an ISO 8601 time with any fraction and a `Z` or `±hh:mm` offset
/// (Postmark's webhooks say `Z`; its older examples carry offsets such as `-05:00`).
fn timestamp_ms(text: &str) -> Option<u64> {
    let text = text.trim();
    let tail = text.len().checked_sub(6).filter(|&i| i >= 19).and_then(|i| text.get(i..));
    let (local, offset_secs) = match tail.map(str::as_bytes) {
        Some([sign @ (b'+' | b'-'), h1, h2, b':', m1, m2]) => {
            let two = |a: u8, b: u8| -> Option<i64> {
                (a.is_ascii_digit() && b.is_ascii_digit()).then(|| i64::from((a - b'0') * 10 + (b - b'0')))
            };
            let secs = two(*h1, *h2)? * 3600 + two(*m1, *m2)? * 60;
            (&text[..text.len() - 6], if *sign == b'-' { -secs } else { secs })
        }
        _ => (text, 0),
    };
    let local = humantime::parse_rfc3339_weak(local).ok()?.duration_since(UNIX_EPOCH).ok()?.as_millis() as i64;
    u64::try_from(local - offset_secs * 1000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::SuppressionReason;
    use axum::http::{HeaderMap, HeaderValue};

    // Postmark's documented webhook examples (postmarkapp.com/developer/webhooks/…): bounce,
    // spam complaint, delivery, open, click, subscription change.
    const BOUNCE: &str = r#"{
      "RecordType": "Bounce", "MessageStream": "outbound", "ID": 4323372036854775807, "Type": "HardBounce", "TypeCode": 1,
      "Name": "Hard bounce", "Tag": "Test", "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "Metadata": {"a_key": "a_value", "b_key": "b_value"},
      "ServerID": 23, "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
      "Details": "Test bounce details", "Email": "john@example.com", "From": "sender@example.com",
      "BouncedAt": "2019-11-05T16:33:54.9070259Z", "DumpAvailable": true, "Inactive": true, "CanActivate": true,
      "Subject": "Test subject", "Content": "Test content"}"#;
    const SPAM_COMPLAINT: &str = r#"{
      "RecordType": "SpamComplaint", "MessageStream": "outbound", "ID": 42, "Type": "SpamComplaint", "TypeCode": 100001,
      "Name": "Spam complaint", "Tag": "Test", "MessageID": "00000000-0000-0000-0000-000000000000", "Metadata": {"a_key": "a_value"},
      "ServerID": 1234, "Description": "", "Details": "Test spam complaint details", "Email": "John@Example.com",
      "From": "sender@example.com", "BouncedAt": "2019-11-05T16:33:54.9070259Z", "DumpAvailable": true, "Inactive": true,
      "CanActivate": false, "Subject": "Test subject", "Content": "<Abuse report dump>"}"#;
    const DELIVERY: &str = r#"{
      "RecordType": "Delivery", "ServerID": 23, "MessageStream": "outbound", "MessageID": "00000000-0000-0000-0000-000000000000",
      "Recipient": "john@example.com", "Tag": "welcome-email", "DeliveredAt": "2021-02-21T16:34:52Z",
      "Details": "Test delivery webhook details", "Metadata": {"example": "value", "example_2": "value"}}"#;
    const OPEN: &str = r#"{
      "RecordType": "Open", "MessageStream": "outbound", "FirstOpen": true,
      "Client": {"Name": "Chrome 35.0.1916.153", "Company": "Google", "Family": "Chrome"},
      "OS": {"Name": "OS X 10.7 Lion", "Company": "Apple Computer, Inc.", "Family": "OS X 10"}, "Platform": "WebMail",
      "UserAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_7_5)", "ReadSeconds": 5,
      "Geo": {"CountryISOCode": "RS", "Country": "Serbia", "City": "Novi Sad", "IP": "188.2.95.4"},
      "MessageID": "00000000-0000-0000-0000-000000000000", "Metadata": {"a_key": "a_value"},
      "ReceivedAt": "2019-11-05T16:33:54.9070259Z", "Tag": "welcome-email", "Recipient": "john@example.com"}"#;
    const CLICK: &str = r#"{
      "RecordType": "Click", "MessageStream": "outbound", "ClickLocation": "HTML", "Platform": "Desktop",
      "UserAgent": "Mozilla/5.0", "OriginalLink": "https://example.com", "MessageID": "00000000-0000-0000-0000-000000000000",
      "Metadata": {"a_key": "a_value"}, "ReceivedAt": "2017-10-25T15:21:11.0000000Z", "Tag": "welcome-email", "Recipient": "john@example.com"}"#;
    const SUBSCRIPTION_CHANGE: &str = r#"{
      "RecordType": "SubscriptionChange", "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "ServerID": 123456,
      "MessageStream": "outbound", "ChangedAt": "2020-02-01T10:53:34.416071Z", "Recipient": "bounced-address@wildbit.com",
      "Origin": "Recipient", "SuppressSending": true, "SuppressionReason": "ManualSuppression", "Tag": "my-tag",
      "Metadata": {"example": "value"}}"#;

    fn check(authorization: Option<&str>) -> Result<(), Refused> {
        let mut headers = HeaderMap::new();
        if let Some(a) = authorization {
            headers.insert("authorization", HeaderValue::from_str(a).unwrap());
        }
        verify("postmark", "s3cret:pass", &Inbound { headers: &headers, body: BOUNCE.as_bytes(), now_ms: 0 })
    }

    #[test]
    fn the_right_basic_credentials_are_accepted() {
        assert_eq!(check(Some(&authorization("postmark", "s3cret:pass"))), Ok(()));
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let lower = authorization("postmark", "s3cret:pass").replace("Basic", "basic");
        assert_eq!(check(Some(&lower)), Ok(()));
    }

    #[test]
    fn missing_or_wrong_credentials_are_refused() {
        let status = |a: Option<&str>| check(a).unwrap_err().status;
        assert_eq!(status(None), 401);
        assert_eq!(status(Some("Bearer abc")), 401);
        assert_eq!(status(Some(&authorization("postmark", "wrong"))), 403);
        assert_eq!(status(Some(&authorization("someone", "s3cret:pass"))), 403);
        assert_eq!(status(Some(&authorization("postmark", "s3cret"))), 403);
        assert_eq!(status(Some("Basic not-base64!")), 403);
        assert_eq!(status(Some(&format!("Basic {}", STANDARD.encode("no colon")))), 403);
    }

    #[test]
    fn parses_the_documented_examples() {
        use EventType as E;
        use RejectReason as R;
        let cases = [
            (
                BOUNCE,
                "Bounce/HardBounce",
                E::Bounced,
                Some(R::Bounced),
                "john@example.com",
                "883953f4-6105-42a2-a16a-77a8eac79483",
                1_572_971_634_907,
            ),
            (
                SPAM_COMPLAINT,
                "SpamComplaint/SpamComplaint",
                E::Complained,
                Some(R::Spam),
                "john@example.com",
                "00000000-0000-0000-0000-000000000000",
                1_572_971_634_907,
            ),
            (
                DELIVERY,
                "Delivery",
                E::Delivered,
                None,
                "john@example.com",
                "00000000-0000-0000-0000-000000000000",
                1_613_925_292_000,
            ),
            (
                OPEN,
                "Open",
                E::Opened,
                None,
                "john@example.com",
                "00000000-0000-0000-0000-000000000000",
                1_572_971_634_907,
            ),
            (
                CLICK,
                "Click",
                E::Clicked,
                None,
                "john@example.com",
                "00000000-0000-0000-0000-000000000000",
                1_508_944_871_000,
            ),
            (
                SUBSCRIPTION_CHANGE,
                "SubscriptionChange/ManualSuppression",
                E::Unsubscribed,
                Some(R::Unsubscribed),
                "bounced-address@wildbit.com",
                "883953f4-6105-42a2-a16a-77a8eac79483",
                1_580_554_414_416,
            ),
        ];
        for (body, kind, event_type, reason, recipient, message_id, at_ms) in cases {
            let events = parse(body.as_bytes()).unwrap();
            assert_eq!(events.len(), 1);
            let e = &events[0];
            assert_eq!(e.provider_event, kind);
            assert_eq!((e.event_type, e.reject_reason), (event_type, reason), "{kind}");
            assert_eq!(e.recipient.as_deref(), Some(recipient), "{kind}");
            assert_eq!(e.provider_message_id.as_deref(), Some(message_id), "{kind}");
            assert_eq!(e.at_ms, at_ms, "{kind}");
        }
        let bounce = parse(BOUNCE.as_bytes()).unwrap().remove(0);
        assert_eq!(bounce.event_id.as_deref(), Some("4323372036854775807"));
        assert_eq!(bounce.detail, "Test bounce details");
    }

    #[test]
    fn hard_bounces_complaints_and_suppressions_suppress() {
        let first = |body: &str| parse(body.as_bytes()).unwrap().remove(0);
        assert_eq!(first(BOUNCE).suppression(), Some(SuppressionReason::Bounced));
        assert_eq!(first(SPAM_COMPLAINT).suppression(), Some(SuppressionReason::Complained));
        assert_eq!(first(SUBSCRIPTION_CHANGE).suppression(), Some(SuppressionReason::Unsubscribed));
        let soft = BOUNCE.replace("\"HardBounce\"", "\"SoftBounce\"");
        assert_eq!(first(&soft).event_type, EventType::Deferred);
        assert_eq!(first(&soft).suppression(), None);
        let filtered = BOUNCE.replace("\"HardBounce\"", "\"SpamNotification\"");
        assert_eq!(first(&filtered).suppression(), None);
        let reactivated = SUBSCRIPTION_CHANGE.replace("\"SuppressSending\": true", "\"SuppressSending\": false");
        assert_eq!(first(&reactivated).event_type, EventType::Unknown);
    }

    #[test]
    fn bounce_types_map_as_documented() {
        use EventType as E;
        use RejectReason as R;
        let cases = [
            ("Transient", E::Deferred, None),
            ("DnsError", E::Deferred, None),
            ("AutoResponder", E::Autoresponded, None),
            ("BadEmailAddress", E::Rejected, Some(R::Invalid)),
            ("ManuallyDeactivated", E::Rejected, Some(R::Blocked)),
            ("DMARCPolicy", E::Rejected, Some(R::Blocked)),
            ("SMTPApiError", E::Failed, None),
            ("Subscribe", E::Unknown, None),
            ("SomethingNew", E::Unknown, None),
        ];
        for (kind, event_type, reason) in cases {
            assert_eq!(bounce_type(kind), (event_type, reason), "{kind}");
        }
    }

    #[test]
    fn timestamps_with_offsets_are_read_as_utc() {
        assert_eq!(timestamp_ms("2014-01-15T16:09:19.6421112-05:00"), Some(1_389_820_159_642));
        assert_eq!(timestamp_ms("2014-01-15T21:09:19.6421112Z"), Some(1_389_820_159_642));
        assert_eq!(timestamp_ms("2014-01-15T22:39:19+01:30"), Some(1_389_820_159_000));
        assert_eq!(timestamp_ms("yesterday"), None);
    }

    #[test]
    fn a_body_that_is_not_an_event_is_an_error() {
        assert!(parse(b"[]").is_err());
        assert!(parse(b"RecordType=Bounce").is_err());
        assert_eq!(parse(b"{\"FromFull\": {}}").unwrap()[0].event_type, EventType::Unknown);
    }
}
