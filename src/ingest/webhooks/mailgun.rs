//! Mailgun webhooks: one event per JSON POST, `{"signature": {"timestamp", "token",
//! "signature"}, "event-data": {…}}`, where `signature` is the hex HMAC-SHA256 of timestamp
//! followed by token under the webhook signing key (Mailgun docs "Securing Webhooks"). Events of
//! a subaccount also carry `parent-signature`, the same under the parent account's key: either
//! one matching is enough.
//!
//! Mailgun asks receivers to refuse reused tokens and timestamps far from now: the timestamp must
//! be within [`MAX_AGE_SECS`] of now, and a [`TokenCache`] remembers every accepted token for as
//! long as its timestamp would be accepted, so a captured request cannot be replayed.
//! Mailgun's legacy form-encoded webhooks are not supported.

use super::{Inbound, Refused};
use crate::event::{EventType, ProviderEvent, RejectReason};
use crate::outcome::truncate_detail;
use hmac::{KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

type HmacSha256 = hmac::Hmac<Sha256>;

/// How far the signed timestamp may be from now, and so how long a token is remembered.
pub const MAX_AGE_SECS: i64 = 15 * 60;

/// Tokens of accepted webhooks, each kept until its timestamp is too old to be accepted again.
/// Bounded: when full, expired tokens go first, then the ones closest to expiring.
pub struct TokenCache {
    // std Mutex: held only for a map operation, never across .await.
    seen: Mutex<HashMap<String, u64>>,
    capacity: usize,
}

impl TokenCache {
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache { seen: Mutex::new(HashMap::new()), capacity: capacity.max(1) }
    }

    /// Records `token` as used until `expires_ms`; false if it already was (a replay).
    pub fn first_use(&self, token: &str, expires_ms: u64, now_ms: u64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.get(token).is_some_and(|&until| until > now_ms) {
            return false;
        }
        if seen.len() >= self.capacity {
            seen.retain(|_, until| *until > now_ms);
        }
        if seen.len() >= self.capacity
            && let Some(soonest) = seen.iter().min_by_key(|(_, until)| **until).map(|(t, _)| t.clone())
        {
            seen.remove(&soonest);
        }
        seen.insert(token.to_string(), expires_ms);
        true
    }
}

impl Default for TokenCache {
    /// Room for a busy hour-quarter: 100,000 tokens (a few MB).
    fn default() -> TokenCache {
        TokenCache::new(100_000)
    }
}

/// The hex `signature` Mailgun sends for `timestamp` and `token` under `key`.
pub fn signature(key: &str, timestamp: &str, token: &str) -> String {
    hex::encode(mac(key, timestamp, token).finalize().into_bytes())
}

/// Checks the body's signature block against `webhook_signing_key`, refusing stale timestamps
/// and tokens already used.
pub fn verify(webhook_signing_key: &str, tokens: &TokenCache, inbound: &Inbound) -> Result<(), Refused> {
    let body: Value = serde_json::from_slice(inbound.body).map_err(|_| {
        Refused::unauthenticated("the body is not JSON with a signature block (legacy form webhooks are not supported)")
    })?;
    let field = |key: &str| match body.get("signature").and_then(|s| s.get(key)) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let (Some(timestamp), Some(token), Some(given)) = (field("timestamp"), field("token"), field("signature")) else {
        return Err(Refused::unauthenticated("the body has no signature block (timestamp, token, signature)"));
    };
    let Ok(sent) = timestamp.parse::<i64>() else {
        return Err(Refused::forbidden("the signature timestamp is not a number of seconds"));
    };
    if inbound.now_secs().abs_diff(sent) > MAX_AGE_SECS.unsigned_abs() {
        return Err(Refused::forbidden(
            "the signature timestamp is too far from now (a replay, or a clock out of sync)",
        ));
    }
    let matches = |hex_sig: &str| {
        // `verify_slice` compares in constant time.
        hex::decode(hex_sig)
            .is_ok_and(|bytes| mac(webhook_signing_key, &timestamp, &token).verify_slice(&bytes).is_ok())
    };
    if !(matches(&given) || field("parent-signature").is_some_and(|p| matches(&p))) {
        return Err(Refused::forbidden("the signature does not match (check webhook_signing_key)"));
    }
    // Only signed tokens are remembered: a forger cannot fill the cache.
    let expires_ms = (sent.saturating_add(MAX_AGE_SECS).max(0) as u64).saturating_mul(1000);
    match tokens.first_use(&token, expires_ms, inbound.now_ms) {
        true => Ok(()),
        false => Err(Refused::forbidden("the signature token was already used (a replay)")),
    }
}

/// The one event of a webhook POST.
pub fn parse(body: &[u8]) -> Result<Vec<ProviderEvent>, String> {
    let body: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let data = body.get("event-data").filter(|d| d.is_object()).ok_or("the body has no event-data object")?;
    Ok(vec![event(data)])
}

fn mac(key: &str, timestamp: &str, token: &str) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(token.as_bytes());
    mac
}

fn text(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}

fn event(data: &Value) -> ProviderEvent {
    let kind = text(data.get("event")).unwrap_or("unknown");
    let status = |key: &str| data.get("delivery-status").and_then(|s| s.get(key));
    let (event_type, reject_reason) =
        classify(kind, text(data.get("severity")), text(data.get("reason")), text(status("enhanced-code")));
    let headers = |key: &str| text(data.get("message").and_then(|m| m.get("headers")).and_then(|h| h.get(key)));
    // A `rejected` event may name its recipient only in the To header.
    let recipient = text(data.get("recipient")).map(str::to_string).or_else(|| headers("to").map(address));
    let said = text(status("message")).or(text(status("description"))).or(text(data.pointer("/reject/reason")));
    let code = status("code").and_then(Value::as_u64).map(|c| c.to_string());
    let detail = [code.as_deref(), said].into_iter().flatten().collect::<Vec<_>>().join(" ");
    ProviderEvent {
        event_type,
        provider_event: kind.to_string(),
        recipient: recipient.map(|r| r.to_lowercase()),
        // The send answer's `id`, which the adapter keeps as given: the Message-Id in angle
        // brackets. Events carry the header without them.
        provider_message_id: headers("message-id").map(|id| match id.starts_with('<') {
            true => id.to_string(),
            false => format!("<{id}>"),
        }),
        at_ms: data.get("timestamp").and_then(Value::as_f64).map(|ts| (ts * 1000.0) as u64).unwrap_or(0),
        reject_reason,
        detail: truncate_detail(&detail),
        event_id: text(data.get("id")).map(str::to_string),
    }
}

/// django-anymail's mapping (`failed` is a bounce, or a deferral when `severity` is
/// `temporary`), made finer where `reason` says the message was never tried: a drop for an
/// address on one of Mailgun's suppression lists is `rejected` for that list's reason, and a
/// message that expired unsent is `failed`, `timed_out` (a timeout says nothing of the address).
fn classify(
    kind: &str,
    severity: Option<&str>,
    reason: Option<&str>,
    enhanced_code: Option<&str>,
) -> (EventType, Option<RejectReason>) {
    match (kind, severity) {
        ("accepted", _) => (EventType::Queued, None),
        ("rejected", _) => (EventType::Rejected, Some(RejectReason::Other)),
        ("delivered", _) => (EventType::Delivered, None),
        ("failed", Some("temporary")) => (EventType::Deferred, Some(failure_reason(reason))),
        ("failed", _) => match reason {
            Some("suppress-bounce") => (EventType::Rejected, Some(RejectReason::Bounced)),
            Some("suppress-complaint") => (EventType::Rejected, Some(RejectReason::Spam)),
            Some("suppress-unsubscribe") => (EventType::Rejected, Some(RejectReason::Unsubscribed)),
            Some("old") => (EventType::Failed, Some(RejectReason::TimedOut)),
            _ if enhanced_code.is_some_and(is_bad_address_code) => (EventType::Bounced, Some(RejectReason::Invalid)),
            _ => (EventType::Bounced, Some(failure_reason(reason))),
        },
        ("opened", _) => (EventType::Opened, None),
        ("clicked", _) => (EventType::Clicked, None),
        ("unsubscribed", _) => (EventType::Unsubscribed, Some(RejectReason::Unsubscribed)),
        ("complained", _) => (EventType::Complained, Some(RejectReason::Spam)),
        _ => (EventType::Unknown, None),
    }
}

fn failure_reason(reason: Option<&str>) -> RejectReason {
    match reason {
        Some("bounce") => RejectReason::Bounced,
        Some("espblock" | "esp-block") => RejectReason::Blocked,
        _ => RejectReason::Other,
    }
}

/// RFC 3463 addressing statuses that mean the recipient cannot exist: bad destination mailbox
/// (X.1.1), system (X.1.2) or syntax (X.1.3), and RFC 7505's null MX (X.1.10).
fn is_bad_address_code(code: &str) -> bool {
    matches!(code.strip_prefix("5.").unwrap_or(""), "1.1" | "1.2" | "1.3" | "1.10")
}

/// The address of a header value such as `Alice <alice@example.com>`.
fn address(value: &str) -> String {
    match (value.rfind('<'), value.rfind('>')) {
        (Some(start), Some(end)) if start < end => value[start + 1..end].trim().to_string(),
        _ => value.trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::SuppressionReason;
    use axum::http::HeaderMap;
    use serde_json::json;

    const KEY: &str = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0";
    const NOW: u64 = 1_770_920_800;

    /// Modeled on the sample payloads Mailgun's dashboard posts when testing a webhook (and
    /// its docs "Webhooks > Payload"): the failed one is its permanent_fail sample.
    fn sample(kind: &str) -> Value {
        let message = json!({"headers": {"to": "Alice <alice@example.com>", "message-id": "20130503182626.18666.16540@sandbox.mailgun.org",
                                          "from": "Bob <bob@sandbox.mailgun.org>", "subject": "Test webhook"},
                             "attachments": [], "size": 111});
        let mut data = match kind {
            "delivered" => {
                json!({"event": "delivered", "delivery-status": {"tls": true, "mx-host": "smtp-in.example.com", "code": 250,
                                  "description": "", "session-seconds": 0.43, "utf8": true, "attempt-no": 1, "message": "OK", "certificate-verified": true}})
            }
            "permanent_fail" => {
                json!({"event": "failed", "severity": "permanent", "reason": "suppress-bounce", "log-level": "error",
                                       "delivery-status": {"attempt-no": 1, "message": "", "code": 605, "enhanced-code": "",
                                                           "description": "Not delivering to previously bounced address", "session-seconds": 0}})
            }
            "hard_bounce" => {
                json!({"event": "failed", "severity": "permanent", "reason": "bounce", "log-level": "error",
                                    "delivery-status": {"attempt-no": 1, "message": "5.1.1 The email account that you tried to reach does not exist.",
                                                        "code": 550, "enhanced-code": "5.1.1", "description": "", "session-seconds": 0.5}})
            }
            "temporary_fail" => {
                json!({"event": "failed", "severity": "temporary", "reason": "generic", "log-level": "warn",
                                       "delivery-status": {"attempt-no": 1, "message": "4.2.2 The email account that you tried to reach is over quota.",
                                                           "code": 452, "description": "", "session-seconds": 1.0, "retry-seconds": 600}})
            }
            "opened" => {
                json!({"event": "opened", "ip": "50.56.129.169", "client-info": {"client-os": "Linux", "device-type": "desktop",
                               "client-name": "Chrome", "client-type": "browser", "user-agent": "Mozilla/5.0"}})
            }
            "clicked" => json!({"event": "clicked", "url": "https://example.com", "ip": "50.56.129.169"}),
            "unsubscribed" => json!({"event": "unsubscribed", "ip": "50.56.129.169"}),
            "complained" => json!({"event": "complained"}),
            "rejected" => {
                json!({"event": "rejected", "reject": {"reason": "Sandbox subdomains are for test purposes only.", "description": ""}})
            }
            other => json!({"event": other}),
        };
        let obj = data.as_object_mut().unwrap();
        obj.insert("id".into(), json!("G9Bn5sl1TC6nu79C8C0bwg"));
        obj.insert("timestamp".into(), json!(1521233195.375624));
        obj.insert("message".into(), message);
        obj.insert("tags".into(), json!(["my_tag_1", "my_tag_2"]));
        obj.insert("user-variables".into(), json!({"my_var_1": "Mailgun Variable #1"}));
        if kind != "rejected" {
            obj.insert("recipient".into(), json!("Alice@Example.com"));
        }
        json!({"event-data": data})
    }

    fn signed(mut body: Value, timestamp: &str, token: &str, key: &str) -> Vec<u8> {
        let sig = signature(key, timestamp, token);
        body["signature"] = json!({"timestamp": timestamp, "token": token, "signature": sig});
        serde_json::to_vec(&body).unwrap()
    }

    fn check(body: &[u8], tokens: &TokenCache, now_secs: u64) -> Result<(), Refused> {
        let headers = HeaderMap::new();
        verify(KEY, tokens, &Inbound { headers: &headers, body, now_ms: now_secs * 1000 })
    }

    #[test]
    fn matches_mailguns_documented_signature_scheme() {
        // `printf '%s' 1770920772e0b5477167110d68991efc6b9f89f0a11066af27834600e123 |
        //  openssl dgst -sha256 -hmac key-3ax6xnjp29jd6fds4gc373sgvjxteol0`
        assert_eq!(
            signature(KEY, "1770920772", "e0b5477167110d68991efc6b9f89f0a11066af27834600e123"),
            "3f9f9869e390626cfa401e164e5cd201b24d153eafc2004a69d41c945dc93c1e"
        );
    }

    #[test]
    fn a_correctly_signed_event_is_accepted_once() {
        let tokens = TokenCache::default();
        let body = signed(sample("delivered"), "1770920772", "e0b5477167110d68991efc6b9f89f0a11066af27834600e123", KEY);
        assert_eq!(check(&body, &tokens, NOW), Ok(()));
        // The same request again is a replay.
        let again = check(&body, &tokens, NOW + 1).unwrap_err();
        assert_eq!(again.status, 403);
        assert!(again.reason.contains("already used"), "{}", again.reason);
    }

    #[test]
    fn a_subaccount_event_may_match_on_its_parent_signature() {
        let tokens = TokenCache::default();
        let mut body: Value =
            serde_json::from_slice(&signed(sample("delivered"), "1770920772", "tok-1", "subaccount key")).unwrap();
        body["signature"]["parent-signature"] = json!(signature(KEY, "1770920772", "tok-1"));
        assert_eq!(check(&serde_json::to_vec(&body).unwrap(), &tokens, NOW), Ok(()));
    }

    #[test]
    fn forged_stale_and_unsigned_events_are_refused() {
        let tokens = TokenCache::default();
        let status = |body: &[u8], now| check(body, &tokens, now).unwrap_err().status;
        assert_eq!(status(&serde_json::to_vec(&sample("delivered")).unwrap(), NOW), 401);
        assert_eq!(status(b"timestamp=1&token=2&signature=3", NOW), 401);
        assert_eq!(status(&signed(sample("delivered"), "1770920772", "tok-a", "wrong key"), NOW), 403);
        let mut tampered: Value =
            serde_json::from_slice(&signed(sample("delivered"), "1770920772", "tok-b", KEY)).unwrap();
        tampered["signature"]["token"] = json!("tok-c");
        assert_eq!(status(&serde_json::to_vec(&tampered).unwrap(), NOW), 403);
        // 15 minutes either way is the window.
        let old = signed(sample("delivered"), "1770920772", "tok-d", KEY);
        assert_eq!(status(&old, 1_770_920_772 + 901), 403);
        assert_eq!(status(&old, 1_770_920_772 - 901), 403);
        assert_eq!(check(&old, &tokens, 1_770_920_772 + 900), Ok(()));
        assert_eq!(status(&signed(sample("delivered"), "yesterday", "tok-e", KEY), NOW), 403);
    }

    #[test]
    fn the_token_cache_forgets_expired_tokens_and_stays_bounded() {
        let cache = TokenCache::new(2);
        assert!(cache.first_use("a", 1_000, 0));
        assert!(!cache.first_use("a", 1_000, 500));
        // Expired: usable again (the timestamp check refuses it anyway).
        assert!(cache.first_use("a", 3_000, 1_500));
        assert!(cache.first_use("b", 4_000, 1_500));
        // Full of live tokens: the one closest to expiring makes room.
        assert!(cache.first_use("c", 5_000, 1_600));
        assert_eq!(cache.seen.lock().unwrap().len(), 2);
        assert!(!cache.first_use("c", 5_000, 1_700));
        assert!(!cache.first_use("b", 4_000, 1_700));
    }

    #[test]
    fn parses_the_sample_events() {
        use EventType as E;
        use RejectReason as R;
        let cases = [
            ("delivered", E::Delivered, None, "250 OK"),
            ("permanent_fail", E::Rejected, Some(R::Bounced), "605 Not delivering to previously bounced address"),
            (
                "hard_bounce",
                E::Bounced,
                Some(R::Invalid),
                "550 5.1.1 The email account that you tried to reach does not exist.",
            ),
            (
                "temporary_fail",
                E::Deferred,
                Some(R::Other),
                "452 4.2.2 The email account that you tried to reach is over quota.",
            ),
            ("opened", E::Opened, None, ""),
            ("clicked", E::Clicked, None, ""),
            ("unsubscribed", E::Unsubscribed, Some(R::Unsubscribed), ""),
            ("complained", E::Complained, Some(R::Spam), ""),
            ("rejected", E::Rejected, Some(R::Other), "Sandbox subdomains are for test purposes only."),
            ("list_member_uploaded", E::Unknown, None, ""),
        ];
        for (kind, event_type, reason, detail) in cases {
            let body = signed(sample(kind), "1770920772", "tok", KEY);
            let events = parse(&body).unwrap();
            assert_eq!(events.len(), 1);
            let e = &events[0];
            assert_eq!((e.event_type, e.reject_reason), (event_type, reason), "{kind}");
            assert_eq!(e.detail, detail, "{kind}");
            assert_eq!(e.recipient.as_deref(), Some("alice@example.com"), "{kind}");
            assert_eq!(e.provider_message_id.as_deref(), Some("<20130503182626.18666.16540@sandbox.mailgun.org>"));
            assert_eq!(e.at_ms, 1_521_233_195_375);
            assert_eq!(e.event_id.as_deref(), Some("G9Bn5sl1TC6nu79C8C0bwg"));
        }
    }

    #[test]
    fn hard_bounces_and_complaints_suppress() {
        let first = |kind: &str| parse(&serde_json::to_vec(&sample(kind)).unwrap()).unwrap().remove(0);
        assert_eq!(first("hard_bounce").suppression(), Some(SuppressionReason::Invalid));
        assert_eq!(first("permanent_fail").suppression(), Some(SuppressionReason::Bounced));
        assert_eq!(first("complained").suppression(), Some(SuppressionReason::Complained));
        assert_eq!(first("temporary_fail").suppression(), None);
        assert_eq!(first("rejected").suppression(), None);
    }

    #[test]
    fn a_body_without_event_data_is_an_error() {
        assert!(parse(b"{\"signature\": {}}").is_err());
        assert!(parse(b"mandrill_events=[]").is_err());
    }
}
