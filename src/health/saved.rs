//! What of a provider's health survives a restart: the operator's drain, an account
//! suspension with the end of its cooldown, an open circuit, a silent provider (canaries),
//! and sender-domain blocks.
//!
//! Health turns this into bytes; the app stores them in the spool database (one small record
//! per provider) whenever they change and reads them back at start. Times are wall-clock
//! milliseconds on disk (an `Instant` means nothing to the next process). A record whose
//! provider's connection settings changed since is not applied, except a drain: that was the
//! operator's decision, and only the operator ends it.

use super::ProviderState;
use serde::{Deserialize, Serialize};

/// One provider's durable health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedHealth {
    pub state: ProviderState,
    pub since_ms: u64,
    pub reason: String,
    /// End of the cooldown: suspended (`account_cooldown`) or open (the circuit's cooldown).
    #[serde(default)]
    pub until_ms: Option<u64>,
    /// The open circuit's current cooldown (it doubles after each failed trial).
    #[serde(default)]
    pub open_for_ms: u64,
    #[serde(default)]
    pub sender_blocks: Vec<SavedBlock>,
    /// `ProviderConfig::fingerprint` of the settings this was learned with.
    pub fingerprint: String,
}

/// A sender domain this provider refused as unverified, until `until_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedBlock {
    pub domain: String,
    pub since_ms: u64,
    pub until_ms: u64,
    pub reason: String,
}

impl SavedHealth {
    /// States worth keeping across a restart (the others are re-learned in seconds).
    pub fn keeps(state: ProviderState) -> bool {
        matches!(state, ProviderState::Drained | ProviderState::Suspended | ProviderState::Open | ProviderState::Silent)
    }
}
