//! Verifies AWS Signature Version 4 on requests to the SES-compatible API: the request is
//! signed by an AWS SDK with one of a client's `aws_credentials`, and Baton recomputes the
//! signature over the canonical request exactly as AWS defines it, over the headers the client
//! says it signed, and compares in constant time. Its promise: a request is taken only if whoever
//! sent it holds the secret, the body is the one signed, and the signature is recent (15 minutes).
//!
//! Written here rather than with the `aws-sigv4` crate: that crate signs outgoing requests and
//! chooses itself which headers to sign (leaving some out, adding others), and its canonical
//! request is not public API. A verifier must rebuild the canonical request from the header list
//! the client sent (`SignedHeaders`), whatever SDK chose it: boto3 signs
//! `content-type;host;x-amz-date`, the AWS JS SDK also `x-amz-content-sha256` and `amz-sdk-*`.
//! The steps follow AWS's "Create a canonical request for Signature Version 4"; the tests use
//! AWS's published test-suite signatures.
//!
//! Behind a reverse proxy the `Host` header the client signed must reach Baton unchanged.

use axum::http::HeaderMap;
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime};

type HmacSha256 = hmac::Hmac<Sha256>;

/// How far `X-Amz-Date` may be from Baton's clock, as AWS allows.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// Why a request was not taken; each maps to AWS's error code for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigV4Error {
    /// No `Authorization` header (AWS: `MissingAuthenticationToken`).
    Missing,
    /// An `Authorization` header Baton cannot read, or a signed header that is absent
    /// (AWS: `IncompleteSignature`).
    Malformed(String),
    /// The access key id is no client's (AWS: `InvalidClientTokenId` /
    /// `UnrecognizedClientException`).
    UnknownKey,
    /// The signature is not the one the secret gives (AWS: `SignatureDoesNotMatch`).
    Mismatch,
    /// `X-Amz-Date` is more than [`MAX_SKEW`] from Baton's clock (AWS: `RequestTimeTooSkewed`).
    Skewed,
}

/// The request as received, before anything is parsed out of it.
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as sent, still percent-encoded.
    pub path: &'a str,
    /// The query string as sent, without `?`.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// The parts of `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
#[derive(Debug, PartialEq, Eq)]
struct Authorization<'a> {
    key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, SigV4Error> {
    let malformed = |why: &str| SigV4Error::Malformed(why.to_string());
    let rest =
        value.strip_prefix("AWS4-HMAC-SHA256").ok_or_else(|| malformed("Authorization must use AWS4-HMAC-SHA256"))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        match part.trim().split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => return Err(malformed("Authorization holds an unknown part")),
        }
    }
    let credential = credential.ok_or_else(|| malformed("Authorization has no Credential"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, date, region, service, "aws4_request"] = scope[..] else {
        return Err(malformed("Credential must be KEY/DATE/REGION/SERVICE/aws4_request"));
    };
    let signed_headers: Vec<&str> =
        signed.ok_or_else(|| malformed("Authorization has no SignedHeaders"))?.split(';').collect();
    let signature = signature.ok_or_else(|| malformed("Authorization has no Signature"))?;
    Ok(Authorization { key_id, date, region, service, signed_headers, signature })
}

/// `YYYYMMDDTHHMMSSZ` as a time.
fn parse_amz_date(value: &str) -> Option<SystemTime> {
    if value.len() != 16 || &value[8..9] != "T" || !value.ends_with('Z') {
        return None;
    }
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &value[0..4],
        &value[4..6],
        &value[6..8],
        &value[9..11],
        &value[11..13],
        &value[13..15]
    );
    humantime::parse_rfc3339(&rfc3339).ok()
}

/// AWS's URI encoding: everything but `A-Z a-z 0-9 - . _ ~` as `%XX` (upper-case hex); `/`
/// kept when `keep_slash`.
fn uri_encode(input: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(input.len());
    for &b in input {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes (a malformed escape stays as written).
fn percent_decode(input: &str) -> Vec<u8> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (bytes.get(i + 1).and_then(|&b| hex(b)), bytes.get(i + 2).and_then(|&b| hex(b)))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// The canonical URI for services other than S3: the path as sent, encoded once more (the
/// SDKs encode each segment twice), `/` when empty.
fn canonical_uri(path: &str) -> String {
    if path.is_empty() { "/".to_string() } else { uri_encode(path.as_bytes(), true) }
}

/// The canonical query: each name and value decoded and encoded the AWS way, sorted by name,
/// then value; `name=` for a name without value.
fn canonical_query(query: Option<&str>) -> String {
    let mut pairs: Vec<(String, String)> = query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (uri_encode(&percent_decode(k), false), uri_encode(&percent_decode(v), false))
        })
        .collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// A header's values for signing: each trimmed, inner runs of spaces made one, joined by `,`.
/// `None` when absent, or not text (bytes a lossy conversion would blur could be changed
/// without changing the signature).
fn canonical_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<String> = headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().ok().map(|t| t.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect::<Option<_>>()?;
    (!values.is_empty()).then(|| values.join(","))
}

fn hmac(key: &[u8], data: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac
}

/// The signature key: the secret chained through date, region, service and `aws4_request`.
fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes()).finalize().into_bytes().to_vec();
    for part in [region, service, "aws4_request"] {
        key = hmac(&key, part.as_bytes()).finalize().into_bytes().to_vec();
    }
    key
}

/// The string the client signed, from the request and its `Authorization`.
fn string_to_sign(req: &Request<'_>, auth: &Authorization<'_>, amz_date: &str) -> Result<String, SigV4Error> {
    let mut canonical_headers = String::new();
    for name in &auth.signed_headers {
        let value = canonical_value(req.headers, name)
            .ok_or_else(|| SigV4Error::Malformed(format!("signed header {name:?} is not in the request")))?;
        canonical_headers.push_str(&format!("{name}:{value}\n"));
    }
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        canonical_uri(req.path),
        canonical_query(req.query),
        canonical_headers,
        auth.signed_headers.join(";"),
        hex::encode(Sha256::digest(req.body)),
    );
    let scope = format!("{}/{}/{}/aws4_request", auth.date, auth.region, auth.service);
    Ok(format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", hex::encode(Sha256::digest(canonical_request))))
}

/// Checks `req`'s signature: `lookup` gives the secret (and whatever identifies the caller) for
/// an access key id; `services` are the service names the credential scope may name.
pub fn verify<T>(
    req: &Request<'_>,
    services: &[&str],
    now: SystemTime,
    lookup: impl FnOnce(&str) -> Option<(String, T)>,
) -> Result<T, SigV4Error> {
    let header = req.headers.get("authorization").ok_or(SigV4Error::Missing)?;
    let header = header.to_str().map_err(|_| SigV4Error::Malformed("Authorization is not text".into()))?;
    let auth = parse_authorization(header)?;
    if !services.contains(&auth.service) {
        return Err(SigV4Error::Malformed(format!("the credential scope names service {:?}", auth.service)));
    }
    for required in ["host", "x-amz-date"] {
        if !auth.signed_headers.contains(&required) {
            return Err(SigV4Error::Malformed(format!("SignedHeaders must include {required}")));
        }
    }
    let amz_date = req.headers.get("x-amz-date").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let at =
        parse_amz_date(amz_date).ok_or_else(|| SigV4Error::Malformed("X-Amz-Date is not YYYYMMDDTHHMMSSZ".into()))?;
    if auth.date.len() != 8 || !amz_date.starts_with(auth.date) {
        return Err(SigV4Error::Malformed("the credential scope's date is not X-Amz-Date's".into()));
    }
    let skew = now.duration_since(at).unwrap_or_else(|e| e.duration());
    if skew > MAX_SKEW {
        return Err(SigV4Error::Skewed);
    }
    let (secret, caller) = lookup(auth.key_id).ok_or(SigV4Error::UnknownKey)?;
    let given = hex::decode(auth.signature).map_err(|_| SigV4Error::Mismatch)?;
    let to_sign = string_to_sign(req, &auth, amz_date)?;
    let key = signing_key(&secret, auth.date, auth.region, auth.service);
    // verify_slice compares in constant time.
    hmac(&key, to_sign.as_bytes()).verify_slice(&given).map_err(|_| SigV4Error::Mismatch)?;
    Ok(caller)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    /// AWS's Signature Version 4 test suite credentials and time.
    const SUITE_KEY: &str = "AKIDEXAMPLE";
    const SUITE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const SUITE_DATE: &str = "20150830T123600Z";

    fn suite_time() -> SystemTime {
        parse_amz_date(SUITE_DATE).unwrap()
    }

    fn headers(list: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in list {
            h.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        h
    }

    fn suite_auth(signed: &str, signature: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential={SUITE_KEY}/20150830/us-east-1/service/aws4_request, SignedHeaders={signed}, Signature={signature}"
        )
    }

    fn check(method: &str, query: Option<&str>, extra: &[(&str, &str)], body: &[u8], signed: &str, sig: &str) {
        let auth = suite_auth(signed, sig);
        let mut list = vec![("host", "example.amazonaws.com"), ("x-amz-date", SUITE_DATE), ("authorization", &auth)];
        list.extend_from_slice(extra);
        let h = headers(&list);
        let req = Request { method, path: "/", query, headers: &h, body };
        let lookup = |id: &str| (id == SUITE_KEY).then(|| (SUITE_SECRET.to_string(), "caller"));
        assert_eq!(verify(&req, &["service"], suite_time(), lookup), Ok("caller"), "{method} {query:?}");
    }

    #[test]
    fn aws_test_suite_signatures_verify() {
        // get-vanilla, post-vanilla, get-vanilla-query-order-key-case, post-x-www-form-urlencoded.
        let vanilla = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
        check("GET", None, &[], b"", "host;x-amz-date", vanilla);
        let post = "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b";
        check("POST", None, &[], b"", "host;x-amz-date", post);
        let query = "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500";
        check("GET", Some("Param2=value2&Param1=value1"), &[], b"", "host;x-amz-date", query);
        let form = "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a";
        let content_type = [("content-type", "application/x-www-form-urlencoded")];
        check("POST", None, &content_type, b"Param1=value1", "content-type;host;x-amz-date", form);
    }

    #[test]
    fn a_changed_body_a_wrong_secret_an_unknown_key_and_an_old_date_are_refused() {
        let form = "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a";
        let auth = suite_auth("content-type;host;x-amz-date", form);
        let h = headers(&[
            ("host", "example.amazonaws.com"),
            ("x-amz-date", SUITE_DATE),
            ("content-type", "application/x-www-form-urlencoded"),
            ("authorization", &auth),
        ]);
        let req = |body: &'static [u8]| Request { method: "POST", path: "/", query: None, headers: &h, body };
        let secret = |s: &'static str| move |_: &str| Some((s.to_string(), ()));
        let ok = verify(&req(b"Param1=value1"), &["service"], suite_time(), secret(SUITE_SECRET));
        assert_eq!(ok, Ok(()));
        let tampered = verify(&req(b"Param1=value2"), &["service"], suite_time(), secret(SUITE_SECRET));
        assert_eq!(tampered, Err(SigV4Error::Mismatch));
        let wrong = verify(&req(b"Param1=value1"), &["service"], suite_time(), secret("another-secret-000000"));
        assert_eq!(wrong, Err(SigV4Error::Mismatch));
        let unknown = verify(&req(b"Param1=value1"), &["service"], suite_time(), |_: &str| None::<(String, ())>);
        assert_eq!(unknown, Err(SigV4Error::UnknownKey));
        let later = suite_time() + MAX_SKEW + Duration::from_secs(1);
        assert_eq!(verify(&req(b"Param1=value1"), &["service"], later, secret(SUITE_SECRET)), Err(SigV4Error::Skewed));
        let other_service = verify(&req(b"Param1=value1"), &["ses", "email"], suite_time(), secret(SUITE_SECRET));
        assert!(matches!(other_service, Err(SigV4Error::Malformed(_))));
    }

    #[test]
    fn a_missing_or_unreadable_authorization_is_named() {
        let h = headers(&[("host", "example.amazonaws.com"), ("x-amz-date", SUITE_DATE)]);
        let req = Request { method: "GET", path: "/", query: None, headers: &h, body: b"" };
        let lookup = |_: &str| Some((SUITE_SECRET.to_string(), ()));
        assert_eq!(verify(&req, &["service"], suite_time(), lookup), Err(SigV4Error::Missing));
        let h = headers(&[("authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service")]);
        let req = Request { method: "GET", path: "/", query: None, headers: &h, body: b"" };
        assert!(matches!(verify(&req, &["service"], suite_time(), lookup), Err(SigV4Error::Malformed(_))));
    }

    #[test]
    fn canonical_parts_follow_aws_rules() {
        assert_eq!(canonical_query(Some("b=2&a=x y&a=1&c")), "a=1&a=x%20y&b=2&c=");
        assert_eq!(canonical_query(Some("k=a%2Fb")), "k=a%2Fb");
        // The path as sent is encoded once more (SDKs encode segments twice for non-S3 services).
        assert_eq!(canonical_uri("/v2/email/outbound-emails"), "/v2/email/outbound-emails");
        assert_eq!(canonical_uri("/a%20b"), "/a%2520b");
        assert_eq!(canonical_uri(""), "/");
    }
}
