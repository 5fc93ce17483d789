//! Amazon SNS HTTPS deliveries: the signed JSON envelope SNS posts for a topic's messages
//! (Notification) and for subscription changes (SubscriptionConfirmation,
//! UnsubscribeConfirmation). SES events reach Baton this way (`ses.rs` reads what is inside).
//!
//! The promise: an envelope is accepted only if its topic is one of the configured ones, its
//! `SigningCertURL` is HTTPS on an SNS host of AWS (`sns.<region>.amazonaws.com`, or `.com.cn`),
//! and its `Signature` (SignatureVersion 1: SHA1withRSA, 2: SHA256withRSA) verifies with the
//! certificate found there over the canonical string of its fields (AWS SNS docs "Verifying the
//! signatures of Amazon SNS messages"). The steps are split so all but the certificate fetch are
//! pure: [`check_envelope`], [`CertCache::get`], [`verify_with_certificate`].

use super::Refused;
use aws_lc_rs::signature::{
    RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{AlgorithmIdentifier, CertificateDer, InvalidSignature, SignatureVerificationAlgorithm, alg_id};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Notification,
    SubscriptionConfirmation,
    UnsubscribeConfirmation,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Notification => "Notification",
            MessageType::SubscriptionConfirmation => "SubscriptionConfirmation",
            MessageType::UnsubscribeConfirmation => "UnsubscribeConfirmation",
        }
    }

    fn parse(name: &str) -> Option<MessageType> {
        [MessageType::Notification, MessageType::SubscriptionConfirmation, MessageType::UnsubscribeConfirmation]
            .into_iter()
            .find(|t| t.as_str() == name)
    }

    /// The fields a signature covers, in order (AWS: Subject only when present).
    fn signed_fields(self) -> &'static [&'static str] {
        match self {
            MessageType::Notification => &["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"],
            MessageType::SubscriptionConfirmation | MessageType::UnsubscribeConfirmation => {
                &["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SignatureVersion {
    /// "1": SHA1withRSA.
    Sha1,
    /// "2": SHA256withRSA.
    Sha256,
}

/// An SNS message whose topic and URLs are acceptable; its signature is checked by
/// [`verify_with_certificate`].
#[derive(Debug, Clone)]
pub struct Envelope {
    pub message_type: MessageType,
    pub message_id: String,
    pub topic_arn: String,
    pub message: String,
    /// A confirmation's URL (checked like the certificate's: HTTPS on an SNS host). GETting it
    /// confirms a SubscriptionConfirmation.
    pub subscribe_url: Option<String>,
    pub signing_cert_url: String,
    version: SignatureVersion,
    signature: Vec<u8>,
    string_to_sign: String,
}

impl Envelope {
    /// The canonical string the signature covers (for tests that sign their own envelopes).
    pub fn string_to_sign(&self) -> &str {
        &self.string_to_sign
    }
}

/// Reads an SNS envelope and checks everything but its signature: that it is one (401 if not,
/// or if unsigned), that its topic is in `topic_arns` and its certificate and confirmation URLs
/// are SNS URLs of AWS (403 if not).
pub fn check_envelope(body: &[u8], topic_arns: &[String]) -> Result<Envelope, Refused> {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return Err(Refused::unauthenticated("the body is not an SNS message (a JSON object)"));
    };
    let text = |key: &str| fields.get(key).and_then(Value::as_str).filter(|s| !s.is_empty());
    // SNS says `SigningCertURL` over HTTP; Lambda's copy of the same says `SigningCertUrl`.
    let (Some(signature), Some(version), Some(cert_url)) =
        (text("Signature"), text("SignatureVersion"), text("SigningCertURL").or(text("SigningCertUrl")))
    else {
        return Err(Refused::unauthenticated(
            "the SNS message is not signed (Signature, SignatureVersion, SigningCertURL)",
        ));
    };
    let message_type = text("Type").and_then(MessageType::parse).ok_or_else(|| {
        Refused::forbidden(
            "the SNS message Type is not Notification, SubscriptionConfirmation or UnsubscribeConfirmation",
        )
    })?;
    let topic_arn = text("TopicArn").ok_or_else(|| Refused::forbidden("the SNS message has no TopicArn"))?;
    if !topic_arns.iter().any(|t| t == topic_arn) {
        return Err(Refused::forbidden(format!("topic {topic_arn} is not in sns_topic_arns")));
    }
    if !is_sns_url(cert_url, Some(".pem")) {
        return Err(Refused::forbidden("SigningCertURL is not an https .pem URL on an SNS host of AWS"));
    }
    let subscribe_url = match message_type {
        MessageType::Notification => None,
        _ => match text("SubscribeURL") {
            Some(url) if is_sns_url(url, None) => Some(url.to_string()),
            _ => return Err(Refused::forbidden("SubscribeURL is missing or not an https URL on an SNS host of AWS")),
        },
    };
    let version = match version {
        "1" => SignatureVersion::Sha1,
        "2" => SignatureVersion::Sha256,
        _ => return Err(Refused::forbidden("SignatureVersion is neither 1 nor 2")),
    };
    let signature = STANDARD.decode(signature).map_err(|_| Refused::forbidden("the SNS Signature is not base64"))?;
    let string_to_sign = string_to_sign(&fields, message_type)?;
    Ok(Envelope {
        message_type,
        message_id: text("MessageId").unwrap_or_default().to_string(),
        topic_arn: topic_arn.to_string(),
        message: text("Message").unwrap_or_default().to_string(),
        subscribe_url,
        signing_cert_url: cert_url.to_string(),
        version,
        signature,
        string_to_sign,
    })
}

/// Checks the envelope's signature with the certificate (PEM, as SNS serves it, or DER) that
/// its `SigningCertURL` names.
pub fn verify_with_certificate(envelope: &Envelope, certificate: &[u8]) -> Result<(), Refused> {
    let der =
        certificate_der(certificate).ok_or_else(|| Refused::forbidden("the SNS signing certificate cannot be read"))?;
    let cert = webpki::EndEntityCert::try_from(&der)
        .map_err(|_| Refused::forbidden("the SNS signing certificate cannot be read"))?;
    cert.verify_signature(&SnsRsa(envelope.version), envelope.string_to_sign.as_bytes(), &envelope.signature)
        .map_err(|_| Refused::forbidden("the SNS signature does not match its signing certificate"))
}

/// True for `https://sns.<region>.amazonaws.com[.cn]/…` (no credentials, no port other than
/// 443), with a path ending in `suffix` when given: the host rule of AWS's own validators.
pub fn is_sns_url(url: &str, suffix: Option<&str>) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    let host = url.host_str().unwrap_or_default();
    let region = host
        .strip_prefix("sns.")
        .and_then(|rest| rest.strip_suffix(".amazonaws.com").or_else(|| rest.strip_suffix(".amazonaws.com.cn")));
    url.scheme() == "https"
        && url.username().is_empty()
        && url.password().is_none()
        && url.port().is_none()
        && region.is_some_and(|r| r.len() >= 3 && r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        && suffix.is_none_or(|s| url.path().ends_with(s))
}

/// "Key\nvalue\n" for each signed field present, in AWS's order.
fn string_to_sign(fields: &Map<String, Value>, message_type: MessageType) -> Result<String, Refused> {
    let mut out = String::new();
    for &key in message_type.signed_fields() {
        match fields.get(key).and_then(Value::as_str) {
            Some(value) => {
                out.push_str(key);
                out.push('\n');
                out.push_str(value);
                out.push('\n');
            }
            None if key == "Subject" => {}
            None => return Err(Refused::forbidden(format!("the SNS message has no {key}"))),
        }
    }
    Ok(out)
}

fn certificate_der(bytes: &[u8]) -> Option<CertificateDer<'static>> {
    match bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        true => CertificateDer::from_pem_slice(bytes).ok(),
        false => Some(CertificateDer::from(bytes.to_vec())),
    }
}

/// RSA PKCS#1 v1.5 over the certificate's key: webpki parses the certificate and hands the key
/// over; aws-lc-rs checks the signature (including SHA-1, which webpki's own algorithms lack).
#[derive(Debug)]
struct SnsRsa(SignatureVersion);

/// sha1WithRSAEncryption (1.2.840.113549.1.1.5) with NULL parameters.
const RSA_PKCS1_SHA1: AlgorithmIdentifier =
    AlgorithmIdentifier::from_slice(&[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05, 0x05, 0x00]);

impl SignatureVerificationAlgorithm for SnsRsa {
    fn verify_signature(&self, public_key: &[u8], message: &[u8], signature: &[u8]) -> Result<(), InvalidSignature> {
        let params = match self.0 {
            SignatureVersion::Sha1 => &RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            SignatureVersion::Sha256 => &RSA_PKCS1_2048_8192_SHA256,
        };
        UnparsedPublicKey::new(params, public_key).verify(message, signature).map_err(|_| InvalidSignature)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::RSA_ENCRYPTION
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        match self.0 {
            SignatureVersion::Sha1 => RSA_PKCS1_SHA1,
            SignatureVersion::Sha256 => alg_id::RSA_PKCS1_SHA256,
        }
    }
}

/// SNS signing certificates by URL, fetched over HTTPS on first use. Only URLs that pass
/// [`is_sns_url`] are fetched (no redirects followed), only readable certificates are kept, and
/// at most [`CertCache::MAX_CERTS`] (AWS uses one per region, rotated rarely).
pub struct CertCache {
    client: reqwest::Client,
    // std Mutex: held to read or insert, never across the fetch's .await.
    certs: Mutex<HashMap<String, Arc<Vec<u8>>>>,
}

impl CertCache {
    pub const MAX_CERTS: usize = 32;
    const MAX_BYTES: usize = 64 * 1024;
    const TIMEOUT: Duration = Duration::from_secs(10);

    pub fn new() -> Result<CertCache, String> {
        let client = reqwest::Client::builder()
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(CertCache::TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the HTTPS client for SNS certificates: {e}"))?;
        Ok(CertCache { client, certs: Mutex::new(HashMap::new()) })
    }

    /// Puts a certificate in the cache as if fetched from `url` (tests; a pinned certificate).
    pub fn insert(&self, url: &str, certificate: impl Into<Vec<u8>>) {
        self.put(url, Arc::new(certificate.into()));
    }

    fn put(&self, url: &str, certificate: Arc<Vec<u8>>) {
        let mut certs = self.certs.lock().unwrap_or_else(PoisonError::into_inner);
        if certs.len() >= CertCache::MAX_CERTS
            && !certs.contains_key(url)
            && let Some(any) = certs.keys().next().cloned()
        {
            certs.remove(&any);
        }
        certs.insert(url.to_string(), certificate);
    }

    /// The certificate at `url`: cached, or fetched now. A URL that is not an SNS one is
    /// refused (403); a fetch that fails is 503, so SNS retries later (it does not retry 4xx).
    pub async fn get(&self, url: &str) -> Result<Arc<Vec<u8>>, Refused> {
        if !is_sns_url(url, Some(".pem")) {
            return Err(Refused::forbidden("SigningCertURL is not an https .pem URL on an SNS host of AWS"));
        }
        if let Some(cert) = self.certs.lock().unwrap_or_else(PoisonError::into_inner).get(url) {
            return Ok(cert.clone());
        }
        let pem = self.fetch(url).await.map_err(|why| Refused {
            status: 503,
            reason: format!("cannot fetch the SNS signing certificate: {why}"),
        })?;
        let cert = Arc::new(pem);
        self.put(url, cert.clone());
        Ok(cert)
    }

    async fn fetch(&self, url: &str) -> Result<Vec<u8>, String> {
        let mut reply = self.client.get(url).send().await.map_err(|e| e.without_url().to_string())?;
        if reply.status() != reqwest::StatusCode::OK {
            return Err(format!("HTTP {}", reply.status().as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = reply.chunk().await.map_err(|e| e.without_url().to_string())? {
            body.extend_from_slice(&chunk);
            if body.len() > CertCache::MAX_BYTES {
                return Err("the certificate is too large".into());
            }
        }
        let readable = certificate_der(&body).is_some_and(|der| webpki::EndEntityCert::try_from(&der).is_ok());
        match readable {
            true => Ok(body),
            false => Err("the answer is not a certificate".into()),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::{KeyPair, KeySize};
    use aws_lc_rs::signature::RSA_PKCS1_SHA256;
    use serde_json::json;
    use std::sync::OnceLock;

    pub const TOPIC: &str = "arn:aws:sns:us-west-2:123456789012:MyTopic";
    pub const CERT_URL: &str =
        "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem";

    /// A self-signed certificate made once with `openssl req -x509 -newkey rsa:2048` (its key
    /// was thrown away), and its SHA1withRSA and SHA256withRSA signatures of the canonical
    /// string of AWS's documented example Notification below: SignatureVersion 1 cannot be
    /// signed here at test time (aws-lc-rs signs no SHA-1).
    const FIXED_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIDGzCCAgOgAwIBAgIUGg9116UMffRwEiBpbklzVmYWKDwwDQYJKoZIhvcNAQEL
BQAwHDEaMBgGA1UEAwwRc25zLmFtYXpvbmF3cy5jb20wIBcNMjYxMjAzMDAxNDI0
WhgPMjEyNjExMDkwMDE0MjRaMBwxGjAYBgNVBAMMEXNucy5hbWF6b25hd3MuY29t
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEArPWrtpbjqoycCJFz+VSE
a6axggiNo/q9A3RFAx2YPvguEPGH2+ZOZU7t52OR9+ePPRH1M98+izH/wAJa/ESc
9Y4jDwtRYCSzP30p1Lx8N0d5q8NbbfOyDNvmrrto8GC70vSj70k/7Qgk/kt/h1MC
XmRjH54JjSLuoJDj0oNqejdr2uvlQl0YJ1k5KULNhJFbLDPQnTscU+tj+ZMDmbRG
KPjBlE85lR4KZNNXP8115N859jBlWIBufLG7h1KRhUbke5pbfhhMW4nP++7v0NBC
RNrxb1XXBDK/apbJsyBewO3ywpAGSwF1y7XRN2T5VgJPpnfh6VhS1ZCkbEQaHKHY
FwIDAQABo1MwUTAdBgNVHQ4EFgQUXlwJ5iEjUSYRp0awRq1V0K1e6/EwHwYDVR0j
BBgwFoAUXlwJ5iEjUSYRp0awRq1V0K1e6/EwDwYDVR0TAQH/BAUwAwEB/zANBgkq
hkiG9w0BAQsFAAOCAQEAaBx+MjSqSqttK6BE+i1aDmQIrDPMG6hRhDrYnjnIapG7
TC9HXdblStUD5jOZ0mzwBWHW4VvhOIqEMNOFPIhu15vMJccQ+VaYChgpEmNekQBH
IYkwJE4maijg3XIb8eGHlj7YjReb4RH5VSWwn5pfzW6jUelkoIAVukGn0UxmyC/c
lJyU4GFfhFT/yzOe86uQXlurx8UgDzCmbjrhjeNhdSA/KzJjDpLx2z9UE43wcWly
6nrMB3nx570g+rjVxHdjn8DXUmi0Yc+oZAB9aI4wgJvUtba/e5cIrzpG2xoh+Wfd
Le/mUGq47a1Y36ORRv1Z7ppiMGQ6K44wApiqU15cew==
-----END CERTIFICATE-----
";
    const FIXED_SHA1_SIGNATURE: &str = "ctxbk0NBC+1RvypvBCzEykwA8Eb3D6ArnHSQc7KwBJWDo07ioxX/SakQv5+jBGLAYTrVS90xZf/L056jI6CuAIca0EMgJ/ZxMh0itlWODARHX4PU74E8JLSvSyR648+dwaSIb74FqhULrLUpkxoDrphlfCJ66vygAcMZ4mY75YjIF44Ad/3E4Mxg1qwm+uWa/fKVzRni/ha1hbewnN06ksnJKhyN2/UQE8JhPLaw34YTRdiz1FqPk04Y8flmIb3zP5I7zlLorxQ9SovKMcHkPaMsGX55U8OH0QwYVMZBKLnS0nlYrAnkCA5tOLDSrZ2wmO4RwwZXwoe+n1eMuLJIYQ==";
    const FIXED_SHA256_SIGNATURE: &str = "qKu2GOhLHs+DF5uIKyoFppswS2ietXpXaIB8SlaXFiIRhwPA4lGfXBy/3pGM/JBArE4NP9awMtOa3jA47p+XfYfeqTKQpbKQyvURM8wS6MCMU6vZMBVen1MLctAz6fKxCKEXEWX1fBnjWAd4EdzuAjG9L+VfviNTrGwX1z9hrh/E0SoTq+JHSWZF0Mix0V9p9Deglwkj1xJrYNLj5IV2a4UtGxsT45dYWOMk3YdfX8hkqZRuAO9XQhvv+YM9j7qpFDCQAncgBytkHW5imLapTJmgVWB1j/nBM4WEg1JEOVaUVduqEwfV0CnOdnhAPD/B4F6PtQBDFhNi8/M5nR84ow==";

    /// AWS's documented example Notification (SNS docs "HTTP/HTTPS notification JSON format").
    fn documented_notification(version: &str, signature: &str) -> Value {
        json!({
            "Type": "Notification",
            "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
            "TopicArn": TOPIC,
            "Subject": "My First Message",
            "Message": "Hello world!",
            "Timestamp": "2012-05-02T00:54:06.655Z",
            "SignatureVersion": version,
            "Signature": signature,
            "SigningCertURL": CERT_URL,
            "UnsubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=arn:aws:sns:us-west-2:123456789012:MyTopic:c9135db0-26c4-47ec-8998-413945fb5a96"
        })
    }

    /// AWS's documented example SubscriptionConfirmation (same page), unsigned.
    pub fn documented_confirmation() -> Value {
        json!({
            "Type": "SubscriptionConfirmation",
            "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
            "Token": "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a747ba6f3beb71854e285d6ad02428b09ceece29417f1f02d609c582afbacc99c583a916b9981dd2728f4ae6fdb82efd087cc3b7849e05798d2d2785c03b0879594eeac82c01f235d0e717736",
            "TopicArn": TOPIC,
            "Message": "You have chosen to subscribe to the topic arn:aws:sns:us-west-2:123456789012:MyTopic.\nTo confirm the subscription, visit the SubscribeURL included in this message.",
            "SubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-west-2:123456789012:MyTopic&Token=2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a747ba6f3beb71854e285d6ad02428b09ceece29417f1f02d609c582afbacc99c583a916b9981dd2728f4ae6fdb82efd087cc3b7849e05798d2d2785c03b0879594eeac82c01f235d0e717736",
            "Timestamp": "2012-04-26T20:45:04.751Z",
            "SignatureVersion": "2",
            "Signature": "AAAA",
            "SigningCertURL": CERT_URL
        })
    }

    /// A signer made at test time: an RSA key (aws-lc-rs) and its self-signed certificate
    /// (rcgen), made once per test run.
    pub struct Signer {
        key: KeyPair,
        pub cert_pem: String,
    }

    pub fn signer() -> &'static Signer {
        static SIGNER: OnceLock<Signer> = OnceLock::new();
        SIGNER.get_or_init(|| {
            let key = KeyPair::generate(KeySize::Rsa2048).unwrap();
            let pkcs8: Pkcs8V1Der = key.as_der().unwrap();
            let pkcs8 = rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec());
            let rc_key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256).unwrap();
            let params = rcgen::CertificateParams::new(vec!["sns.amazonaws.com".to_string()]).unwrap();
            let cert_pem = params.self_signed(&rc_key).unwrap().pem();
            Signer { key, cert_pem }
        })
    }

    impl Signer {
        /// `envelope` with a SignatureVersion 2 signature of its canonical string.
        pub fn sign(&self, mut envelope: Value, topic_arns: &[String]) -> Value {
            envelope["SignatureVersion"] = json!("2");
            envelope["Signature"] = json!("AAAA");
            let body = serde_json::to_vec(&envelope).unwrap();
            let to_sign = check_envelope(&body, topic_arns).unwrap().string_to_sign;
            let mut signature = vec![0; self.key.public_modulus_len()];
            self.key.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), to_sign.as_bytes(), &mut signature).unwrap();
            envelope["Signature"] = json!(STANDARD.encode(signature));
            envelope
        }
    }

    fn topics() -> Vec<String> {
        vec!["arn:aws:sns:us-east-1:123456789012:other".to_string(), TOPIC.to_string()]
    }

    fn envelope(value: &Value) -> Result<Envelope, Refused> {
        check_envelope(&serde_json::to_vec(value).unwrap(), &topics())
    }

    #[test]
    fn builds_the_documented_canonical_strings() {
        let e = envelope(&documented_notification("1", FIXED_SHA1_SIGNATURE)).unwrap();
        assert_eq!(
            e.string_to_sign(),
            "Message\nHello world!\nMessageId\n22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324\nSubject\nMy First Message\n\
             Timestamp\n2012-05-02T00:54:06.655Z\nTopicArn\narn:aws:sns:us-west-2:123456789012:MyTopic\nType\nNotification\n"
        );
        let mut no_subject = documented_notification("1", FIXED_SHA1_SIGNATURE);
        no_subject.as_object_mut().unwrap().remove("Subject");
        assert!(!envelope(&no_subject).unwrap().string_to_sign().contains("Subject"));
        let confirmation = documented_confirmation();
        let c = envelope(&confirmation).unwrap();
        let field = |key: &str| format!("{key}\n{}\n", confirmation[key].as_str().unwrap());
        let keys = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"];
        assert_eq!(c.string_to_sign(), keys.map(field).concat());
        assert_eq!(c.message_type, MessageType::SubscriptionConfirmation);
        assert!(
            c.subscribe_url
                .as_deref()
                .unwrap()
                .starts_with("https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription")
        );
    }

    #[test]
    fn verifies_signature_versions_1_and_2() {
        let v1 = envelope(&documented_notification("1", FIXED_SHA1_SIGNATURE)).unwrap();
        assert_eq!(verify_with_certificate(&v1, FIXED_CERT.as_bytes()), Ok(()));
        let v2 = envelope(&documented_notification("2", FIXED_SHA256_SIGNATURE)).unwrap();
        assert_eq!(verify_with_certificate(&v2, FIXED_CERT.as_bytes()), Ok(()));
        // DER works as well as PEM.
        let der = CertificateDer::from_pem_slice(FIXED_CERT.as_bytes()).unwrap();
        assert_eq!(verify_with_certificate(&v2, der.as_ref()), Ok(()));
        // The version decides the hash: a SHA-1 signature claimed as version 2 fails.
        let swapped = envelope(&documented_notification("2", FIXED_SHA1_SIGNATURE)).unwrap();
        assert_eq!(verify_with_certificate(&swapped, FIXED_CERT.as_bytes()).unwrap_err().status, 403);
    }

    #[test]
    fn a_freshly_signed_envelope_verifies_with_its_certificate_only() {
        let signed = signer().sign(documented_confirmation(), &topics());
        let e = envelope(&signed).unwrap();
        assert_eq!(verify_with_certificate(&e, signer().cert_pem.as_bytes()), Ok(()));
        assert_eq!(verify_with_certificate(&e, FIXED_CERT.as_bytes()).unwrap_err().status, 403);
        assert_eq!(verify_with_certificate(&e, b"not a certificate").unwrap_err().status, 403);
    }

    #[test]
    fn tampered_envelopes_are_refused() {
        let cases = [
            ("Message", json!("Goodbye world!")),
            ("MessageId", json!("22b80b92-fdea-4c2c-8f9d-bdfb0c7bf325")),
            ("Subject", json!("My Second Message")),
            ("Timestamp", json!("2012-05-02T00:54:07.655Z")),
        ];
        for (key, value) in cases {
            let mut tampered = documented_notification("1", FIXED_SHA1_SIGNATURE);
            tampered[key] = value;
            let e = envelope(&tampered).unwrap();
            assert_eq!(verify_with_certificate(&e, FIXED_CERT.as_bytes()).unwrap_err().status, 403, "{key}");
        }
    }

    #[test]
    fn unsigned_foreign_or_misdirected_envelopes_are_refused() {
        let status = |v: &Value| envelope(v).unwrap_err().status;
        let good = documented_notification("1", FIXED_SHA1_SIGNATURE);
        let without = |key: &str| {
            let mut v = good.clone();
            v.as_object_mut().unwrap().remove(key);
            v
        };
        assert_eq!(status(&without("Signature")), 401);
        assert_eq!(status(&without("SigningCertURL")), 401);
        assert_eq!(status(&json!(["not", "sns"])), 401);
        assert_eq!(status(&without("Message")), 403);
        let with = |key: &str, value: &str| {
            let mut v = good.clone();
            v[key] = json!(value);
            v
        };
        assert_eq!(status(&with("TopicArn", "arn:aws:sns:us-west-2:999999999999:MyTopic")), 403);
        assert_eq!(status(&with("SignatureVersion", "3")), 403);
        assert_eq!(status(&with("Type", "Gossip")), 403);
        for url in [
            "http://sns.us-west-2.amazonaws.com/SimpleNotificationService-1.pem",
            "https://sns.us-west-2.amazonaws.com.evil.example/SimpleNotificationService-1.pem",
            "https://evil.example/sns.us-west-2.amazonaws.com/SimpleNotificationService-1.pem",
            "https://sns.us-west-2.amazonaws.com@evil.example/SimpleNotificationService-1.pem",
            "https://user@sns.us-west-2.amazonaws.com/SimpleNotificationService-1.pem",
            "https://sns.us-west-2.amazonaws.com:8443/SimpleNotificationService-1.pem",
            "https://s3.us-west-2.amazonaws.com/SimpleNotificationService-1.pem",
            "https://sns.a.b.amazonaws.com/SimpleNotificationService-1.pem",
            "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-1.txt",
        ] {
            assert_eq!(status(&with("SigningCertURL", url)), 403, "{url}");
        }
        let mut confirmation = documented_confirmation();
        confirmation["SubscribeURL"] = json!("https://evil.example/?Action=ConfirmSubscription");
        assert_eq!(status(&confirmation), 403);
    }

    #[test]
    fn sns_hosts_of_every_partition_pass() {
        assert!(is_sns_url("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem", Some(".pem")));
        assert!(is_sns_url("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-x.pem", Some(".pem")));
        assert!(is_sns_url("https://SNS.EU-WEST-1.AMAZONAWS.COM/?Action=ConfirmSubscription", None));
        assert!(!is_sns_url("not a url", None));
    }

    #[tokio::test]
    async fn the_cert_cache_serves_inserted_certificates_and_refuses_foreign_urls() {
        let cache = CertCache::new().unwrap();
        cache.insert(CERT_URL, FIXED_CERT);
        assert_eq!(cache.get(CERT_URL).await.unwrap().as_slice(), FIXED_CERT.as_bytes());
        let foreign = cache.get("https://evil.example/SimpleNotificationService-1.pem").await.unwrap_err();
        assert_eq!(foreign.status, 403);
        for i in 0..CertCache::MAX_CERTS + 5 {
            cache.insert(&format!("https://sns.us-east-1.amazonaws.com/c{i}.pem"), FIXED_CERT);
        }
        assert_eq!(cache.certs.lock().unwrap().len(), CertCache::MAX_CERTS);
    }
}
