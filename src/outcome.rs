//! The vocabulary every provider answer is translated into (see `shared/providers.md`):
//! one outcome class per attempt plus a result per recipient.

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
    /// Auth failure, suspended/paused account, credits or quota gone, unverified sender.
    Account,
    /// The message itself is invalid for this provider; fails only if every provider says so.
    BadRequest,
}

impl OutcomeClass {
    pub const ALL: [OutcomeClass; 6] = [
        OutcomeClass::Accepted,
        OutcomeClass::RecipientRejected,
        OutcomeClass::Transient,
        OutcomeClass::RateLimited,
        OutcomeClass::Account,
        OutcomeClass::BadRequest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeClass::Accepted => "accepted",
            OutcomeClass::RecipientRejected => "recipient_rejected",
            OutcomeClass::Transient => "transient",
            OutcomeClass::RateLimited => "rate_limited",
            OutcomeClass::Account => "account",
            OutcomeClass::BadRequest => "bad_request",
        }
    }

    /// True for classes that say something is wrong with the provider (move on to the next one).
    pub fn is_provider_failure(self) -> bool {
        matches!(
            self,
            OutcomeClass::Transient | OutcomeClass::RateLimited | OutcomeClass::Account | OutcomeClass::BadRequest
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

    /// Ends a send split into batches when a batch failed: recipients of earlier batches that
    /// went through are reported as delivered (and then the attempt counts as accepted); the
    /// others stay `NotDone` and move on to the next provider.
    pub fn after_batches(mut self, results: Vec<RecipientResult>) -> SendReport {
        if results.iter().any(|r| matches!(r, RecipientResult::Delivered { .. })) {
            self.class = OutcomeClass::Accepted;
            self.retry_after = None;
        }
        self.recipients = results;
        self
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
