//! SendGrid's Event Webhook: a JSON array of events, signed (Signed Event Webhook) with ECDSA
//! P-256/SHA-256 over the `X-Twilio-Email-Event-Webhook-Timestamp` header value followed by the
//! raw body; the base64 DER signature is in `X-Twilio-Email-Event-Webhook-Signature`. The
//! verification key is the base64 DER SubjectPublicKeyInfo SendGrid shows in its mail settings.
//!
//! SendGrid documents no freshness window for the signed timestamp; like Mailgun's, it must be
//! within [`TOLERANCE_SECS`] of now, so a captured request cannot be replayed later.

use super::{Inbound, Refused};
use crate::event::{EventType, ProviderEvent, RejectReason};
use crate::outcome::truncate_detail;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, ParsedPublicKey, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

pub const SIGNATURE_HEADER: &str = "X-Twilio-Email-Event-Webhook-Signature";
pub const TIMESTAMP_HEADER: &str = "X-Twilio-Email-Event-Webhook-Timestamp";

/// How far the signed timestamp may be from now.
pub const TOLERANCE_SECS: i64 = 15 * 60;

/// The DER SubjectPublicKeyInfo of a configured `webhook_public_key` (base64 DER as SendGrid
/// shows it, or the same inside PEM armour), checked to be a P-256 key. For config validation.
pub fn public_key(text: &str) -> Result<Vec<u8>, String> {
    let b64: String =
        text.lines().filter(|l| !l.trim_start().starts_with("-----")).flat_map(str::split_whitespace).collect();
    let der = STANDARD.decode(b64).map_err(|_| "webhook_public_key is not base64".to_string())?;
    ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &der)
        .map_err(|_| "webhook_public_key is not a P-256 SubjectPublicKeyInfo".to_string())?;
    Ok(der)
}

/// The bytes SendGrid signs: the timestamp header value, then the body.
pub fn signed_data(timestamp: &str, body: &[u8]) -> Vec<u8> {
    [timestamp.as_bytes(), body].concat()
}

/// Checks the Signed Event Webhook headers against `webhook_public_key`.
pub fn verify(webhook_public_key: &str, inbound: &Inbound) -> Result<(), Refused> {
    let (Some(signature), Some(timestamp)) = (inbound.header(SIGNATURE_HEADER), inbound.header(TIMESTAMP_HEADER))
    else {
        return Err(Refused::unauthenticated(
            "X-Twilio-Email-Event-Webhook-Signature or -Timestamp header is missing (is the Signed Event Webhook on?)",
        ));
    };
    let key = public_key(webhook_public_key).map_err(|e| Refused::forbidden(format!("cannot verify: {e}")))?;
    let Ok(sent) = timestamp.parse::<i64>() else {
        return Err(Refused::forbidden("X-Twilio-Email-Event-Webhook-Timestamp is not a number of seconds"));
    };
    if inbound.now_secs().abs_diff(sent) > TOLERANCE_SECS.unsigned_abs() {
        return Err(Refused::forbidden("the signed timestamp is too far from now (a replay, or a clock out of sync)"));
    }
    let Ok(signature) = STANDARD.decode(signature) else {
        return Err(Refused::forbidden("X-Twilio-Email-Event-Webhook-Signature is not base64"));
    };
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &key)
        .verify(&signed_data(timestamp, inbound.body), &signature)
        .map_err(|_| Refused::forbidden("the signature does not match (check webhook_public_key)"))
}

/// The events of one POST (always a JSON array).
pub fn parse(body: &[u8]) -> Result<Vec<ProviderEvent>, String> {
    let events: Vec<Value> =
        serde_json::from_slice(body).map_err(|e| format!("the body is not a JSON array of events: {e}"))?;
    Ok(events.iter().map(event).collect())
}

fn event(e: &Value) -> ProviderEvent {
    let text = |key: &str| field(e, key);
    let kind = text("event").unwrap_or("unknown");
    let (event_type, reject_reason) = classify(kind, e);
    // Bounces carry the server's words in `reason`, deliveries and deferrals in `response`.
    let detail = match (text("status"), text("reason").or(text("response"))) {
        (Some(status), Some(said)) if !said.contains(status) => format!("{status} {said}"),
        (_, Some(said)) => said.to_string(),
        (status, None) => status.unwrap_or_default().to_string(),
    };
    ProviderEvent {
        event_type,
        provider_event: kind.to_string(),
        recipient: text("email").map(str::to_lowercase),
        // The adapter stores the send answer's `X-Message-Id`; `sg_message_id` is that id, a dot,
        // and the id of the message SendGrid made for this recipient.
        provider_message_id: text("sg_message_id").and_then(|id| id.split('.').next()).map(str::to_string),
        at_ms: e.get("timestamp").and_then(Value::as_f64).map(|ts| (ts * 1000.0) as u64).unwrap_or(0),
        reject_reason,
        detail: truncate_detail(&detail),
        event_id: text("sg_event_id").map(str::to_string),
    }
}

/// django-anymail's mapping, except two cases where it would suppress for a reason that is not
/// the address's: a block (`bounce` with `type` `blocked`: the receiving server refused the
/// message, not the mailbox, and SendGrid keeps no bounce for it) is a soft bounce, `deferred`;
/// and a `group_unsubscribe` (one ASM group) is `unknown`, as Baton's suppression list is global.
fn classify(kind: &str, e: &Value) -> (EventType, Option<RejectReason>) {
    let text = |key: &str| field(e, key);
    match kind {
        "processed" => (EventType::Queued, None),
        "deferred" => (EventType::Deferred, None),
        "delivered" => (EventType::Delivered, None),
        "bounce" if text("type") == Some("blocked") => (EventType::Deferred, Some(RejectReason::Blocked)),
        "bounce" => (EventType::Bounced, Some(bounce_reason(text("bounce_classification")))),
        "dropped" => (EventType::Rejected, Some(drop_reason(text("reason").or(text("type")).unwrap_or("")))),
        "open" => (EventType::Opened, None),
        "click" => (EventType::Clicked, None),
        "spamreport" => (EventType::Complained, Some(RejectReason::Spam)),
        "unsubscribe" => (EventType::Unsubscribed, Some(RejectReason::Unsubscribed)),
        // group_unsubscribe, group_resubscribe, account_status_change and anything newer.
        _ => (EventType::Unknown, None),
    }
}

fn field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}

/// `bounce_classification` (SendGrid's "Bounce & Block Classifications").
fn bounce_reason(classification: Option<&str>) -> RejectReason {
    match classification {
        Some("Invalid Address") => RejectReason::Invalid,
        Some("Content" | "Reputation" | "Frequency or Volume") => RejectReason::Blocked,
        _ => RejectReason::Bounced,
    }
}

/// A drop's `reason` (SendGrid's glossary "Drops").
fn drop_reason(reason: &str) -> RejectReason {
    match reason.to_ascii_lowercase().as_str() {
        "invalid" => RejectReason::Invalid,
        "bounced address" | "bounce" => RejectReason::Bounced,
        "unsubscribed address" => RejectReason::Unsubscribed,
        "spam reporting address" => RejectReason::Spam,
        "spam content" | "blocked" => RejectReason::Blocked,
        "expired" => RejectReason::TimedOut,
        _ => RejectReason::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::SuppressionReason;
    use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
    use axum::http::{HeaderMap, HeaderValue};

    /// The test vector of SendGrid's own SDK (sendgrid-nodejs, packages/eventwebhook/src/
    /// eventwebhook.spec.js): a real key, signature and timestamp.
    const SDK_PUBLIC_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==";
    const SDK_OTHER_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqTxd43gyp8IOEto2LdIfjRQrIbsd4SXZkLW6jDutdhXSJCWHw8REntlo7aNDthvj+y7GjUuFDb/R1NGe1OPzpA==";
    const SDK_SIGNATURE: &str =
        "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH2j/0=";
    const SDK_TIMESTAMP: &str = "1588788367";
    const SDK_PAYLOAD: &str = r#"{"category":"example_payload","event":"test_event","message_id":"message_id"}"#;

    /// Modeled on the Event Webhook Reference's examples (one of each delivery and engagement
    /// event, SendGrid docs "Event Webhook Reference"), with a current-form `sg_message_id`.
    const EVENTS: &str = r#"[
      {"email": "Example@Test.com", "timestamp": 1513299569, "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>", "event": "processed",
       "category": "cat facts", "sg_event_id": "rbtnWrG1DVDGGGFHFyun0A==", "sg_message_id": "euo2iKxdSayPF4YE4--I7A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0"},
      {"email": "example@test.com", "timestamp": 1513299569, "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>", "event": "dropped",
       "category": "cat facts", "sg_event_id": "zmzJhfJgAfUSOW80yEbPyw==", "sg_message_id": "euo2iKxdSayPF4YE4--I7A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
       "reason": "Bounced Address", "status": "5.0.0"},
      {"email": "example@test.com", "timestamp": 1513299569, "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>", "event": "delivered",
       "category": "cat facts", "sg_event_id": "rWVYmVk90MjZJ9iohOBa3w==", "sg_message_id": "euo2iKxdSayPF4YE4--I7A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
       "response": "250 OK"},
      {"email": "example@test.com", "timestamp": 1513299569, "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>", "event": "deferred",
       "category": "cat facts", "sg_event_id": "t7LEShmowp86DTdUW8M-GQ==", "sg_message_id": "euo2iKxdSayPF4YE4--I7A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
       "response": "400 try again later", "attempt": "5"},
      {"email": "example@test.com", "timestamp": 1513299569, "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>", "event": "bounce",
       "category": "cat facts", "sg_event_id": "6g4ZI7SA-xmRDv57GoPIPw==", "sg_message_id": "euo2iKxdSayPF4YE4--I7A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
       "reason": "500 unknown recipient", "status": "5.0.0", "type": "bounce", "bounce_classification": "Invalid Address"},
      {"email": "example@test.com", "timestamp": 1513299569, "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>", "event": "bounce",
       "category": "cat facts", "sg_event_id": "6g4ZI7SA-xmRDv57GoPIPx==", "sg_message_id": "euo2iKxdSayPF4YE4--I7A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
       "reason": "550 5.7.1 blocked by policy", "status": "5.7.1", "type": "blocked", "bounce_classification": "Reputation"},
      {"email": "example@test.com", "timestamp": 1513299569, "event": "open", "sg_machine_open": false, "category": "cat facts",
       "sg_event_id": "FOTFFO0ecsBE-zxFXfs6WA==", "sg_message_id": "euo2iKxdSayPF4YE4--I7A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
       "useragent": "Mozilla/4.0 (compatible; MSIE 6.1; Windows XP; .NET CLR 1.1.4322; .NET CLR 2.0.50727)", "ip": "255.255.255.255"},
      {"email": "example@test.com", "timestamp": 1513299569, "event": "click", "category": "cat facts",
       "sg_event_id": "kCAi1KttyQdEKHhdC-nuEA==", "sg_message_id": "euo2iKxdSayPF4YE4--I7A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
       "useragent": "Mozilla/4.0", "ip": "255.255.255.255", "url": "http://www.sendgrid.com/"},
      {"email": "example@test.com", "timestamp": 1513299569, "event": "spamreport", "category": "cat facts",
       "sg_event_id": "37nvH5QBz858KGVYCM4uOA==", "sg_message_id": "euo2iKxdSayPF4YE4--I7A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0"},
      {"email": "example@test.com", "timestamp": 1513299569, "event": "unsubscribe", "category": "cat facts",
       "sg_event_id": "zz_BjPgU_5pS-J8vlfB1sg==", "sg_message_id": "euo2iKxdSayPF4YE4--I7A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0"},
      {"email": "example@test.com", "timestamp": 1513299569, "event": "group_unsubscribe", "category": "cat facts",
       "sg_event_id": "ahSCB7xYcXFb-hEaawsPRw==", "sg_message_id": "euo2iKxdSayPF4YE4--I7A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
       "useragent": "Mozilla/4.0", "ip": "255.255.255.255", "url": "http://www.sendgrid.com/", "asm_group_id": 10},
      {"email": "example@test.com", "timestamp": 1513299569, "event": "group_resubscribe", "category": "cat facts",
       "sg_event_id": "w_u0vJhLT-OFfprar5N93g==", "sg_message_id": "euo2iKxdSayPF4YE4--I7A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
       "asm_group_id": 10}
    ]"#;

    fn inbound_headers(signature: Option<&str>, timestamp: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(s) = signature {
            h.insert(SIGNATURE_HEADER, HeaderValue::from_str(s).unwrap());
        }
        if let Some(t) = timestamp {
            h.insert(TIMESTAMP_HEADER, HeaderValue::from_str(t).unwrap());
        }
        h
    }

    fn check(
        key: &str,
        signature: Option<&str>,
        timestamp: Option<&str>,
        body: &str,
        now_secs: u64,
    ) -> Result<(), Refused> {
        let headers = inbound_headers(signature, timestamp);
        verify(key, &Inbound { headers: &headers, body: body.as_bytes(), now_ms: now_secs * 1000 })
    }

    /// A fresh key pair: (base64 SPKI as SendGrid shows it, the signer).
    fn key_pair() -> (String, EcdsaKeyPair) {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
        let der: PublicKeyX509Der = pair.public_key().as_der().unwrap();
        (STANDARD.encode(der.as_ref()), pair)
    }

    fn sign(pair: &EcdsaKeyPair, timestamp: &str, body: &str) -> String {
        STANDARD.encode(pair.sign(&SystemRandom::new(), &signed_data(timestamp, body.as_bytes())).unwrap().as_ref())
    }

    #[test]
    fn verifies_sendgrids_own_test_vector() {
        let now = SDK_TIMESTAMP.parse().unwrap();
        assert_eq!(check(SDK_PUBLIC_KEY, Some(SDK_SIGNATURE), Some(SDK_TIMESTAMP), SDK_PAYLOAD, now), Ok(()));
        let pem = format!("-----BEGIN PUBLIC KEY-----\n{SDK_PUBLIC_KEY}\n-----END PUBLIC KEY-----\n");
        assert_eq!(check(&pem, Some(SDK_SIGNATURE), Some(SDK_TIMESTAMP), SDK_PAYLOAD, now), Ok(()));
        // The SDK's negative cases: another key, another payload, a changed signature.
        let refused = |r: Result<(), Refused>| r.unwrap_err().status;
        assert_eq!(refused(check(SDK_OTHER_KEY, Some(SDK_SIGNATURE), Some(SDK_TIMESTAMP), SDK_PAYLOAD, now)), 403);
        assert_eq!(refused(check(SDK_PUBLIC_KEY, Some(SDK_SIGNATURE), Some(SDK_TIMESTAMP), "payload", now)), 403);
        let changed = SDK_SIGNATURE.replace("NH2j", "NH3j");
        assert_eq!(refused(check(SDK_PUBLIC_KEY, Some(&changed), Some(SDK_TIMESTAMP), SDK_PAYLOAD, now)), 403);
        assert_eq!(refused(check(SDK_PUBLIC_KEY, Some(SDK_SIGNATURE), Some("timestamp"), SDK_PAYLOAD, now)), 403);
    }

    #[test]
    fn a_freshly_signed_batch_is_accepted() {
        let (key, pair) = key_pair();
        let ts = "1700000000";
        let signature = sign(&pair, ts, EVENTS);
        assert_eq!(check(&key, Some(&signature), Some(ts), EVENTS, 1_700_000_100), Ok(()));
    }

    #[test]
    fn missing_forged_and_stale_requests_are_refused() {
        let (key, pair) = key_pair();
        let (other_key, other_pair) = key_pair();
        let ts = "1700000000";
        let now = 1_700_000_000;
        let signature = sign(&pair, ts, EVENTS);
        let refused = |r: Result<(), Refused>| r.unwrap_err().status;
        assert_eq!(refused(check(&key, None, Some(ts), EVENTS, now)), 401);
        assert_eq!(refused(check(&key, Some(&signature), None, EVENTS, now)), 401);
        assert_eq!(refused(check(&other_key, Some(&signature), Some(ts), EVENTS, now)), 403);
        assert_eq!(refused(check(&key, Some(&sign(&other_pair, ts, EVENTS)), Some(ts), EVENTS, now)), 403);
        assert_eq!(refused(check(&key, Some(&signature), Some("1700000001"), EVENTS, now)), 403);
        assert_eq!(refused(check(&key, Some(&signature), Some(ts), "[]", now)), 403);
        assert_eq!(refused(check(&key, Some("%%%"), Some(ts), EVENTS, now)), 403);
        // Within the window either way, then outside it.
        assert_eq!(check(&key, Some(&signature), Some(ts), EVENTS, now + 900), Ok(()));
        assert_eq!(check(&key, Some(&signature), Some(ts), EVENTS, now - 900), Ok(()));
        assert_eq!(refused(check(&key, Some(&signature), Some(ts), EVENTS, now + 901)), 403);
        // A configured key that is not one cannot verify anything.
        assert_eq!(refused(check("bm90IGEga2V5", Some(&signature), Some(ts), EVENTS, now)), 403);
        assert!(public_key("bm90IGEga2V5").is_err());
    }

    #[test]
    fn parses_the_documented_events() {
        use EventType as E;
        use RejectReason as R;
        let events = parse(EVENTS.as_bytes()).unwrap();
        let want = [
            ("processed", E::Queued, None),
            ("dropped", E::Rejected, Some(R::Bounced)),
            ("delivered", E::Delivered, None),
            ("deferred", E::Deferred, None),
            ("bounce", E::Bounced, Some(R::Invalid)),
            ("bounce", E::Deferred, Some(R::Blocked)),
            ("open", E::Opened, None),
            ("click", E::Clicked, None),
            ("spamreport", E::Complained, Some(R::Spam)),
            ("unsubscribe", E::Unsubscribed, Some(R::Unsubscribed)),
            ("group_unsubscribe", E::Unknown, None),
            ("group_resubscribe", E::Unknown, None),
        ];
        assert_eq!(events.len(), want.len());
        for (event, (kind, event_type, reason)) in events.iter().zip(want) {
            assert_eq!(event.provider_event, kind);
            assert_eq!((event.event_type, event.reject_reason), (event_type, reason), "{kind}");
            assert_eq!(event.recipient.as_deref(), Some("example@test.com"));
            assert_eq!(event.provider_message_id.as_deref(), Some("euo2iKxdSayPF4YE4--I7A"));
            assert_eq!(event.at_ms, 1_513_299_569_000);
        }
        assert_eq!(events[0].event_id.as_deref(), Some("rbtnWrG1DVDGGGFHFyun0A=="));
        assert_eq!(events[1].detail, "5.0.0 Bounced Address");
        assert_eq!(events[3].detail, "400 try again later");
        assert_eq!(events[4].detail, "5.0.0 500 unknown recipient");
        assert_eq!(events[5].detail, "550 5.7.1 blocked by policy");
    }

    #[test]
    fn hard_bounces_drops_of_bad_addresses_and_complaints_suppress() {
        let events = parse(EVENTS.as_bytes()).unwrap();
        assert_eq!(events[4].suppression(), Some(SuppressionReason::Invalid));
        assert_eq!(events[1].suppression(), Some(SuppressionReason::Bounced));
        assert_eq!(events[8].suppression(), Some(SuppressionReason::Complained));
        assert_eq!(events[9].suppression(), Some(SuppressionReason::Unsubscribed));
        // A block, a deferral and a group unsubscribe say nothing about the address.
        assert_eq!(events[5].suppression(), None);
        assert_eq!(events[3].suppression(), None);
        assert_eq!(events[10].suppression(), None);
    }

    #[test]
    fn drop_reasons_map_to_reject_reasons() {
        let cases = [
            ("Invalid", RejectReason::Invalid),
            ("Bounced Address", RejectReason::Bounced),
            ("Unsubscribed Address", RejectReason::Unsubscribed),
            ("Spam Reporting Address", RejectReason::Spam),
            ("Spam Content", RejectReason::Blocked),
            ("Invalid SMTPAPI header", RejectReason::Other),
        ];
        for (reason, want) in cases {
            assert_eq!(drop_reason(reason), want, "{reason}");
        }
    }

    #[test]
    fn a_body_that_is_not_an_array_of_events_is_an_error() {
        assert!(parse(b"{\"event\": \"delivered\"}").is_err());
        assert!(parse(b"not json").is_err());
        assert_eq!(parse(b"[]").unwrap(), vec![]);
    }
}
