//! What every HTTP API adapter shares: a keep-alive client with a cap on requests in flight,
//! failure classification by status when a body says nothing better, Retry-After parsing,
//! secret-free, truncated details for attempt records, and the probe rules every adapter
//! applies alike: no answer at all is a `transient` failure, an answer the adapter has no rule
//! for is judged by [`probe_fallback`].

use super::redact::Secrets;
use crate::health::ProbeReport;
use crate::outcome::{OutcomeClass, SendReport, truncate_detail};
use reqwest::header::HeaderMap;
use std::time::{Duration, SystemTime};
use tokio::sync::Semaphore;

/// Most response body bytes kept (bodies are only classified and quoted, never stored whole).
const MAX_BODY: usize = 64 * 1024;

/// A provider's HTTP client: connection reuse (HTTP/1.1 keep-alive, HTTP/2 where offered via
/// ALPN), a timeout per request, and at most `max_connections` requests in flight.
pub struct HttpClient {
    pub client: reqwest::Client,
    slots: Semaphore,
    timeout: Duration,
    secrets: Secrets,
}

/// A provider's answer, read and capped.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl HttpReply {
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.body).ok()
    }

    /// `HTTP 422: <body>` (truncated, control characters removed) for attempt records. A JSON
    /// body is reduced to its error fields (see [`ERROR_FIELDS`]): a provider that echoes the
    /// request back (subject, text, html, the raw message) must not put message text into
    /// logs, `/admin/providers` or a message's status.
    pub fn detail(&self) -> String {
        let text = match serde_json::from_str::<serde_json::Value>(&self.body) {
            Ok(json @ (serde_json::Value::Object(_) | serde_json::Value::Array(_))) => {
                let mut parts = Vec::new();
                error_fields(&json, &mut parts);
                parts.join("; ")
            }
            _ => self.body.clone(),
        };
        truncate_detail(&format!("HTTP {}: {text}", self.status))
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The fields of a provider's JSON answer that describe an error or a result, across the
/// providers' shapes (`shared/providers.md`); everything else (echoed content) is left out.
const ERROR_FIELDS: [&str; 17] = [
    "message",
    "Message",
    "error",
    "errors",
    "name",
    "code",
    "ErrorCode",
    "statusCode",
    "status",
    "field",
    "help",
    "reject_reason",
    "queued_reason",
    "email",
    "id",
    "MessageID",
    "__type",
];

/// Collects `key: value` for every [`ERROR_FIELDS`] key at any depth (arrays included).
fn error_fields(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match v {
                    serde_json::Value::Object(_) | serde_json::Value::Array(_) => error_fields(v, out),
                    serde_json::Value::Null => {}
                    leaf if ERROR_FIELDS.contains(&key.as_str()) => {
                        out.push(format!("{key}: {}", leaf.as_str().map_or_else(|| leaf.to_string(), str::to_string)))
                    }
                    _ => {}
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| error_fields(v, out)),
        serde_json::Value::String(s) => out.push(s.clone()),
        _ => {}
    }
}

impl HttpClient {
    /// A client whose replies never carry `secrets` (see [`Secrets`]): every body is scrubbed
    /// as it is read, before an adapter classifies or quotes it.
    pub fn new(timeout: Duration, max_connections: usize, secrets: Secrets) -> Result<HttpClient, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(max_connections)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("baton/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        Ok(HttpClient { client, slots: Semaphore::new(max_connections), timeout, secrets })
    }

    /// Sends a request and reads the reply. A failure to get any reply becomes a `transient`
    /// report for `recipients` recipients; a timeout after the request went out is flagged as a
    /// possible duplicate (the provider may have accepted it).
    pub async fn send(&self, request: reqwest::RequestBuilder, recipients: usize) -> Result<HttpReply, SendReport> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| SendReport::failed(OutcomeClass::Transient, recipients, "provider closed"))?;
        let response = request.send().await.map_err(|e| self.transport_failure(&e, recipients))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(|e| self.transport_failure(&e, recipients))?;
        let body = self.secrets.scrub(&String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_BODY)]));
        Ok(HttpReply { status, headers, body })
    }

    /// Sends a probe request and reads the reply (scrubbed like every reply). No reply at all
    /// (cannot connect, timeout) is the provider failing: `failed(transient)`.
    pub async fn probe(&self, request: reqwest::RequestBuilder) -> Result<HttpReply, ProbeReport> {
        self.send(request, 0).await.map_err(|report| ProbeReport::failed(OutcomeClass::Transient, report.detail))
    }

    fn transport_failure(&self, e: &reqwest::Error, recipients: usize) -> SendReport {
        // reqwest's error text can carry the URL; ours hold no secrets (keys travel in headers
        // or bodies), but scrub and shorten it anyway.
        let detail = if e.is_timeout() {
            format!("timed out after {:?}", self.timeout)
        } else if e.is_connect() {
            truncate_detail(&self.secrets.scrub(&format!("cannot connect: {e}")))
        } else {
            truncate_detail(&self.secrets.scrub(&format!("request failed: {e}")))
        };
        let mut report = SendReport::failed(OutcomeClass::Transient, recipients, detail);
        // Connected, sent, then no answer: the provider may have taken the message.
        report.possible_duplicate = e.is_timeout() && !e.is_connect();
        report
    }
}

/// The class an HTTP status implies when the body names nothing more specific
/// (`shared/providers.md`: unknown shapes are transient).
pub fn class_for_status(status: u16) -> OutcomeClass {
    match status {
        200..=299 => OutcomeClass::Accepted,
        401..=403 => OutcomeClass::Account,
        429 => OutcomeClass::RateLimited,
        400 | 413 | 422 => OutcomeClass::BadRequest,
        _ => OutcomeClass::Transient,
    }
}

/// A report for a refused request of class `class`, with what Baton knows beyond the
/// provider's words (`out of credits`, `wrong region?`) in front of its detail.
pub fn refused_with_note(class: OutcomeClass, recipients: usize, reply: &HttpReply, note: Option<&str>) -> SendReport {
    let mut report = refused(class, recipients, reply);
    report.detail = with_note(report.detail, note);
    report
}

/// `note; detail`, truncated; `detail` alone without a note.
pub fn with_note(detail: String, note: Option<&str>) -> String {
    match note {
        Some(note) => truncate_detail(&format!("{note}; {detail}")),
        None => detail,
    }
}

/// The verdict on a probe answer its adapter has no rule for, from the status alone. 5xx and
/// 408 are the provider failing; everything else says nothing about sending (`shared/providers.md`,
/// "Probes need permissions that send-only keys may lack"): the verdict is inconclusive and its
/// detail says what the operator can do. `endpoint` names the probe (`GET /v3/scopes`);
/// `access` is what a key needs to read it, for permission answers.
pub fn probe_fallback(reply: &HttpReply, endpoint: &str, access: &str) -> ProbeReport {
    let advice = match reply.status {
        408 | 500..=599 => return ProbeReport::failed(OutcomeClass::Transient, reply.detail()),
        401 | 403 => {
            format!("permission denied: the key may send but cannot read this; {access}, or set probe = false")
        }
        404 | 405 | 410 => "endpoint not found: check base_url, or set probe = false".to_string(),
        200..=299 => "an answer the probe cannot read: check base_url, or set probe = false".to_string(),
        429 => "the probe was rate limited; sends will tell".to_string(),
        _ => "an answer the probe cannot judge; sends will tell".to_string(),
    };
    // The advice first: it must survive the truncation of a long body.
    ProbeReport::inconclusive(truncate_detail(&format!("{endpoint}: {advice} — {}", reply.detail())))
}

/// How long to back off: `Retry-After` (seconds or HTTP date), else `X-RateLimit-Reset`
/// (epoch seconds, SendGrid) or `RateLimit-Reset` / `X-RateLimit-Reset` as seconds from now.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(v) = text("retry-after") {
        if let Ok(secs) = v.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(when) = httpdate::parse_http_date(v) {
            return Some(when.duration_since(SystemTime::now()).unwrap_or_default());
        }
    }
    for name in ["x-ratelimit-reset", "ratelimit-reset"] {
        if let Some(n) = text(name).and_then(|v| v.parse::<u64>().ok()) {
            let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            // Large values are epoch timestamps; small ones are "seconds from now".
            return Some(Duration::from_secs(if n > 1_000_000_000 { n.saturating_sub(now) } else { n }));
        }
    }
    None
}

/// A report where the provider took the message for every recipient.
pub fn accepted(recipients: usize, provider_message_id: Option<String>, reply: &HttpReply) -> SendReport {
    SendReport::delivered(recipients, provider_message_id, reply.detail())
}

/// A template pass-through's request as stored (the app's JSON object, without credentials),
/// or a `bad_request` report when it is not one.
pub fn template_request(msg: &super::Outbound<'_>) -> Result<serde_json::Map<String, serde_json::Value>, SendReport> {
    serde_json::from_slice(msg.body).map_err(|e| {
        let detail = format!("the stored template request is not a JSON object: {e}");
        SendReport::failed(OutcomeClass::BadRequest, msg.recipients.len(), detail)
    })
}

/// A report for a refused request of class `class`.
pub fn refused(class: OutcomeClass, recipients: usize, reply: &HttpReply) -> SendReport {
    let mut report = SendReport::failed(class, recipients, reply.detail());
    if class == OutcomeClass::RateLimited {
        report.retry_after = retry_after(&reply.headers);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let mut h = HeaderMap::new();
        let soon = SystemTime::now() + Duration::from_secs(120);
        h.insert("retry-after", HeaderValue::from_str(&httpdate::fmt_http_date(soon)).unwrap());
        let d = retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120), "{d:?}");
        let mut h = HeaderMap::new();
        let reset = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() + 30;
        h.insert("x-ratelimit-reset", HeaderValue::from_str(&reset.to_string()).unwrap());
        let d = retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(25) && d <= Duration::from_secs(30), "{d:?}");
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn details_keep_error_fields_and_drop_echoed_content() {
        let reply = |body: &str| HttpReply { status: 400, headers: HeaderMap::new(), body: body.into() };
        let echoed = r#"{"message":"Invalid request","request":{"subject":"Your reset code 123456","html":"<p>secret text</p>"},"errors":[{"message":"html too long","field":"html"}]}"#;
        let d = reply(echoed).detail();
        assert!(d.contains("Invalid request") && d.contains("html too long") && d.contains("field: html"), "{d}");
        assert!(!d.contains("123456") && !d.contains("secret text"), "{d}");
        assert_eq!(reply("<html>Bad Gateway</html>").detail(), "HTTP 400: <html>Bad Gateway</html>");
        let errors_list = reply(r#"{"errors":["Maximum credits exceeded"],"message":"error"}"#).detail();
        assert!(errors_list.contains("Maximum credits exceeded"), "{errors_list}");
    }

    #[test]
    fn probe_fallback_judges_only_server_failures() {
        use crate::health::ProbeVerdict;
        let verdict = |status: u16| {
            let reply = HttpReply { status, headers: HeaderMap::new(), body: "x".repeat(400) };
            probe_fallback(&reply, "GET /probe", "grant it")
        };
        for status in [500, 502, 503, 408] {
            assert_eq!(verdict(status).verdict, ProbeVerdict::Failed(OutcomeClass::Transient), "{status}");
        }
        for status in [200, 301, 400, 401, 403, 404, 405, 429] {
            assert_eq!(verdict(status).verdict, ProbeVerdict::Inconclusive, "{status}");
        }
        let denied = verdict(403).detail;
        assert!(denied.starts_with("GET /probe: permission denied") && denied.contains("grant it"), "{denied}");
        assert!(denied.contains("probe = false") && denied.contains("HTTP 403"), "advice kept: {denied}");
        assert!(verdict(404).detail.contains("endpoint not found"));
    }

    #[test]
    fn status_fallback() {
        assert_eq!(class_for_status(202), OutcomeClass::Accepted);
        assert_eq!(class_for_status(401), OutcomeClass::Account);
        assert_eq!(class_for_status(429), OutcomeClass::RateLimited);
        assert_eq!(class_for_status(413), OutcomeClass::BadRequest);
        assert_eq!(class_for_status(503), OutcomeClass::Transient);
        assert_eq!(class_for_status(404), OutcomeClass::Transient);
    }
}
