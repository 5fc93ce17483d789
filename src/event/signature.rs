//! Standard Webhooks signatures (the scheme Svix and Resend use): HMAC-SHA256 over
//! `{id}.{timestamp}.{body}`. Used to verify Resend's webhooks and to sign Baton's own events.
//!
//! The one promise: [`verify`] accepts a request only if one of its `v1` signatures is the HMAC
//! of exactly these bytes under the key, compared in constant time, and its timestamp is within
//! the tolerance of now (the timestamp is signed, so a captured request cannot be replayed later
//! with a fresher one).

use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::{DecodePaddingMode, general_purpose};
use hmac::{KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The prefix Standard Webhooks and Svix put before a secret's base64.
const SECRET_PREFIX: &str = "whsec_";

/// Secrets are base64 with or without padding, as leniently as the spec's libraries read them.
const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Why a signed request was refused. The messages name no secret and no signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the webhook id, timestamp or signature header is missing")]
    Missing,
    #[error("the webhook timestamp is not a number of seconds")]
    BadTimestamp,
    #[error("the webhook timestamp is too far from now (a replay, or a clock out of sync)")]
    Stale,
    #[error("no v1 signature matches the body")]
    Mismatch,
}

/// The key of a `whsec_<base64>` secret (the prefix is optional).
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, String> {
    let text = secret.trim();
    let text = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
    let key =
        SECRET_BASE64.decode(text).map_err(|_| "the webhook secret is not whsec_ followed by base64".to_string())?;
    match key.is_empty() {
        true => Err("the webhook secret is empty".to_string()),
        false => Ok(key),
    }
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`: one entry of a signature header.
pub fn sign(key: &[u8], id: &str, timestamp_secs: i64, body: &[u8]) -> String {
    let tag = mac(key, id, &timestamp_secs.to_string(), body).finalize().into_bytes();
    format!("v1,{}", STANDARD.encode(tag))
}

/// Checks a request signed under `key`. `signatures` is the header's space-separated list of
/// `version,base64` entries; versions other than `v1` are ignored (a sender rotating to a new
/// scheme lists both). `timestamp` is the header as sent, checked against `now_secs`.
pub fn verify(
    key: &[u8],
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now_secs: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let (id, timestamp, signatures) = (id.trim(), timestamp.trim(), signatures.trim());
    if id.is_empty() || timestamp.is_empty() || signatures.is_empty() {
        return Err(SignatureError::Missing);
    }
    let sent: i64 = timestamp.parse().map_err(|_| SignatureError::BadTimestamp)?;
    if now_secs.abs_diff(sent) > tolerance_secs.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let expected = mac(key, id, timestamp, body);
    let matches = signatures
        .split_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|b64| general_purpose::STANDARD.decode(b64).ok())
        // `verify_slice` compares in constant time.
        .any(|given| expected.clone().verify_slice(&given).is_ok());
    match matches {
        true => Ok(()),
        false => Err(SignatureError::Mismatch),
    }
}

fn mac(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test vector of the Standard Webhooks libraries (standard-webhooks/standard-webhooks,
    // libraries/*/ `test_sign_function`), also used by Svix's.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn check(signatures: &str, body: &[u8], now: i64) -> Result<(), SignatureError> {
        let key = decode_secret(SECRET).unwrap();
        verify(&key, ID, &TIMESTAMP.to_string(), signatures, body, now, 300)
    }

    #[test]
    fn signs_the_standard_webhooks_test_vector() {
        let key = decode_secret(SECRET).unwrap();
        assert_eq!(sign(&key, ID, TIMESTAMP, BODY), SIGNATURE);
        assert_eq!(check(SIGNATURE, BODY, TIMESTAMP), Ok(()));
    }

    #[test]
    fn secrets_decode_with_or_without_prefix_and_padding() {
        let with = decode_secret(SECRET).unwrap();
        assert_eq!(decode_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(), with);
        // 34 base64 characters need "==" padding; the spec's libraries accept it either way.
        let unpadded = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwBr").unwrap();
        assert_eq!(decode_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwBr==").unwrap(), unpadded);
        assert!(decode_secret("whsec_").is_err());
        assert!(decode_secret("whsec_not base64!").is_err());
    }

    #[test]
    fn any_v1_signature_of_the_list_may_match() {
        let list = format!("v2,abc v1,AAAA {SIGNATURE}");
        assert_eq!(check(&list, BODY, TIMESTAMP), Ok(()));
        // Only other versions: nothing to check against.
        assert_eq!(
            check("v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", BODY, TIMESTAMP),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn tampering_with_anything_signed_is_refused() {
        let key = decode_secret(SECRET).unwrap();
        let ts = TIMESTAMP.to_string();
        let cases: [(&str, &str, &str, &[u8]); 4] = [
            ("msg_other", &ts, SIGNATURE, BODY),
            (ID, "1614265331", SIGNATURE, BODY),
            (ID, &ts, SIGNATURE, br#"{"test": 2432232315}"#),
            (ID, &ts, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OF=", BODY),
        ];
        for (id, ts, sig, body) in cases {
            assert_eq!(
                verify(&key, id, ts, sig, body, TIMESTAMP, 300),
                Err(SignatureError::Mismatch),
                "{id} {ts} {sig}"
            );
        }
        let wrong_key = decode_secret("whsec_c29tZSBvdGhlciBzZWNyZXQ=").unwrap();
        assert_eq!(verify(&wrong_key, ID, &ts, SIGNATURE, BODY, TIMESTAMP, 300), Err(SignatureError::Mismatch));
    }

    #[test]
    fn timestamps_outside_the_tolerance_are_refused() {
        assert_eq!(check(SIGNATURE, BODY, TIMESTAMP + 300), Ok(()));
        assert_eq!(check(SIGNATURE, BODY, TIMESTAMP - 300), Ok(()));
        assert_eq!(check(SIGNATURE, BODY, TIMESTAMP + 301), Err(SignatureError::Stale));
        assert_eq!(check(SIGNATURE, BODY, TIMESTAMP - 301), Err(SignatureError::Stale));
        let key = decode_secret(SECRET).unwrap();
        assert_eq!(verify(&key, ID, "soon", SIGNATURE, BODY, TIMESTAMP, 300), Err(SignatureError::BadTimestamp));
    }

    #[test]
    fn missing_parts_are_refused_as_missing() {
        let key = decode_secret(SECRET).unwrap();
        let ts = TIMESTAMP.to_string();
        assert_eq!(verify(&key, "", &ts, SIGNATURE, BODY, TIMESTAMP, 300), Err(SignatureError::Missing));
        assert_eq!(verify(&key, ID, "", SIGNATURE, BODY, TIMESTAMP, 300), Err(SignatureError::Missing));
        assert_eq!(verify(&key, ID, &ts, " ", BODY, TIMESTAMP, 300), Err(SignatureError::Missing));
    }
}
