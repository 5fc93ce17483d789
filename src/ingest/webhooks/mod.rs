//! Provider event webhooks (`POST /webhooks/{provider name}`). Each provider module owns two
//! pure steps: `verify` (is this request really from the provider? a [`Refused`] says why not,
//! without naming a secret) and `parse` (the signed body, in Baton's event words). A body that is
//! signed but cannot be read is an error; an event kind Baton has no word for is
//! `EventType::Unknown`, never an error.

pub mod mailgun;
pub mod mandrill;
pub mod postmark;
pub mod receive;
pub mod resend;
pub mod sendgrid;
pub mod ses;
pub mod sns;

/// A webhook request as received.
pub struct Inbound<'a> {
    pub headers: &'a axum::http::HeaderMap,
    pub body: &'a [u8],
    pub now_ms: u64,
}

impl Inbound<'_> {
    /// A header's value, trimmed; `None` when absent, empty or not text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
    }

    pub fn now_secs(&self) -> i64 {
        (self.now_ms / 1000) as i64
    }
}

/// Why a webhook request is refused: 401 (no credentials/signature) or 403 (wrong ones); 503
/// when Baton could not check it (an SNS signing certificate could not be fetched: SNS retries
/// 5xx answers, not 4xx). `reason` is secret-free, for logs and the error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    pub reason: String,
}

impl Refused {
    /// 401: the request carries no credentials or signature.
    pub fn unauthenticated(reason: impl Into<String>) -> Refused {
        Refused { status: 401, reason: reason.into() }
    }

    /// 403: it carries some, and they are wrong (or stale, or replayed).
    pub fn forbidden(reason: impl Into<String>) -> Refused {
        Refused { status: 403, reason: reason.into() }
    }
}
