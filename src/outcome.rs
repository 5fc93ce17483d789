//! The vocabulary every provider answer is translated into (see `shared/providers.md`):
//! one outcome class per attempt plus a result per recipient.

pub use crate::event::RejectReason;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeClass {
    /// The provider took the message (maybe only for some recipients).
    Accepted,
    /// The provider refused specific recipients; never a provider problem, never fails over.
    RecipientRejected,
    /// Timeout, connection error, 5xx, SMTP 4xx: try the next provider.
    Transient,
    /// 429 / throttling: back off this provider, use the next one meanwhile.
    RateLimited,
    /// Auth failure, suspended/paused account, credits or quota gone: the provider is out for everyone.
    Account,
    /// This sender's address or domain is not a verified identity at this provider. Fails over
    /// like a provider failure, but only for that sender domain: other domains keep the provider.
    SenderUnverified,
    /// The message itself is invalid for this provider; fails only if every provider says so.
    BadRequest,
}

impl OutcomeClass {
    pub const ALL: [OutcomeClass; 7] = [
        OutcomeClass::Accepted,
        OutcomeClass::RecipientRejected,
        OutcomeClass::Transient,
        OutcomeClass::RateLimited,
        OutcomeClass::Account,
        OutcomeClass::SenderUnverified,
        OutcomeClass::BadRequest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeClass::Accepted => "accepted",
            OutcomeClass::RecipientRejected => "recipient_rejected",
            OutcomeClass::Transient => "transient",
            OutcomeClass::RateLimited => "rate_limited",
            OutcomeClass::Account => "account",
            OutcomeClass::SenderUnverified => "sender_unverified",
            OutcomeClass::BadRequest => "bad_request",
        }
    }

    /// True for classes that say something is wrong with the provider (move on to the next one).
    pub fn is_provider_failure(self) -> bool {
        matches!(
            self,
            OutcomeClass::Transient
                | OutcomeClass::RateLimited
                | OutcomeClass::Account
                | OutcomeClass::SenderUnverified
                | OutcomeClass::BadRequest
        )
    }
}

/// What happened to one recipient in one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientResult {
    Delivered {
        provider_message_id: Option<String>,
    },
    /// Final: the address is bad or suppressed.
    Rejected {
        detail: String,
        /// Why, when the provider says (decides whether the address is suppressed).
        reason: RejectReason,
    },
    /// Not handled by this attempt (provider failure, or a temporary per-recipient refusal).
    NotDone,
}

/// A provider's answer to one send, already classified.
#[derive(Debug, Clone)]
pub struct SendReport {
    pub class: OutcomeClass,
    /// Short, secret-free description (classified reply text, truncated).
    pub detail: String,
    /// One entry per recipient, in the order they were handed to the provider.
    pub recipients: Vec<RecipientResult>,
    pub retry_after: Option<Duration>,
    /// The provider may have taken the message although we could not confirm it
    /// (timeout after the data was sent, Mandrill "queued" on a suspended account).
    pub possible_duplicate: bool,
}

impl SendReport {
    /// Every recipient delivered.
    pub fn delivered(recipients: usize, provider_message_id: Option<String>, detail: impl Into<String>) -> Self {
        SendReport {
            class: OutcomeClass::Accepted,
            detail: detail.into(),
            recipients: vec![RecipientResult::Delivered { provider_message_id }; recipients],
            retry_after: None,
            possible_duplicate: false,
        }
    }

    /// Joins the reports of a send split into batches (sent in order, stopped at the first
    /// provider-level failure; `total` recipients in all). The class is that failure's, so
    /// health sees it even when earlier batches went through; their recipients keep their
    /// results and the ones never sent are `NotDone`.
    pub fn from_batches(reports: Vec<SendReport>, total: usize) -> SendReport {
        let count = reports.len();
        let failure = reports.iter().find(|r| r.class.is_provider_failure());
        let class = match failure {
            Some(f) => f.class,
            None if reports.iter().any(|r| r.class == OutcomeClass::Accepted) => OutcomeClass::Accepted,
            None => OutcomeClass::RecipientRejected,
        };
        let retry_after = failure.and_then(|f| f.retry_after);
        let possible_duplicate = reports.iter().any(|r| r.possible_duplicate);
        let detail = if count == 1 {
            reports[0].detail.clone()
        } else {
            let parts: Vec<String> =
                reports.iter().enumerate().map(|(i, r)| format!("batch {}: {}", i + 1, r.detail)).collect();
            truncate_detail(&parts.join("; "))
        };
        let mut recipients: Vec<RecipientResult> = reports.into_iter().flat_map(|r| r.recipients).collect();
        recipients.resize(total, RecipientResult::NotDone);
        SendReport { class, detail, recipients, retry_after, possible_duplicate }
    }

    /// A provider-level failure: no recipient was handled.
    pub fn failed(class: OutcomeClass, recipients: usize, detail: impl Into<String>) -> Self {
        SendReport {
            class,
            detail: detail.into(),
            recipients: vec![RecipientResult::NotDone; recipients],
            retry_after: None,
            possible_duplicate: false,
        }
    }
}

/// Trims a provider's reply for storage in attempt records and logs.
pub fn truncate_detail(text: &str) -> String {
    const MAX: usize = 300;
    let clean: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let clean = clean.trim();
    if clean.len() <= MAX {
        return clean.to_string();
    }
    let mut end = MAX;
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &clean[..end])
}
