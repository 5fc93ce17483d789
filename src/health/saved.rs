//! What of a provider's health survives a restart: the operator's drain, an account
//! suspension with the end of its cooldown, an open circuit, a silent provider (canaries),
//! and sender-domain blocks.
//!
//! Health turns this into bytes; the app stores them in the spool database (one small record
//! per provider) whenever they change and reads them back at start. Times are wall-clock
//! milliseconds on disk (an `Instant` means nothing to the next process). A record whose
//! provider's connection settings changed since is not applied, except a drain: that was the
//! operator's decision, and only the operator ends it.
//!
//! The same record is what cluster nodes tell each other about a provider's account
//! ([`super::Health::shared_facts`], [`super::Health::adopt`]). It carries three clocks, one
//! per kind of fact, so that the newer fact of each kind wins whichever node learned it and in
//! whatever order the nodes hear of it: the operator's drain or resume (`operator_ms`), the
//! account's state — suspended, silent or back in rotation — (`account_ms`), and the last
//! time an operator lifted every sender-domain block (`blocks_cleared_ms`).

use super::ProviderState;
use serde::{Deserialize, Serialize};

/// Sender blocks whose ends differ by less than this are the same block seen by two nodes
/// (each turns its own `Instant` into wall-clock time).
const SAME_END_MS: u64 = 1000;

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
    /// When an operator last drained or resumed the provider (0: not known).
    #[serde(default)]
    pub operator_ms: u64,
    /// When its account state last changed: suspended, silent, or back in rotation (0: not
    /// known, e.g. healthy since start).
    #[serde(default)]
    pub account_ms: u64,
    /// When an operator's resume last lifted every sender-domain block (0: never).
    #[serde(default)]
    pub blocks_cleared_ms: u64,
}

/// A sender domain this provider refused as unverified, until `until_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedBlock {
    pub domain: String,
    pub since_ms: u64,
    pub until_ms: u64,
    pub reason: String,
}

/// A provider's account as the cluster sees it: what every node using the same account
/// shares. Open and degraded are one node's view of its own path to the provider, so they
/// count as in rotation here; a rate limit (429 with Retry-After) is the account's quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Account {
    InRotation,
    Suspended,
    Silent,
    RateLimited,
    /// Drained: the account's own state is hidden under the operator's decision.
    Hidden,
}

impl Account {
    pub fn of(state: ProviderState) -> Account {
        match state {
            ProviderState::Healthy | ProviderState::Degraded | ProviderState::Open => Account::InRotation,
            ProviderState::RateLimited => Account::RateLimited,
            ProviderState::Suspended => Account::Suspended,
            ProviderState::Silent => Account::Silent,
            ProviderState::Drained => Account::Hidden,
        }
    }
}

/// Whether two records were learned with the same connection settings: only then do the
/// account's facts carry over; an operator's drain and resume always do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settings {
    Same,
    Other,
}

impl SavedHealth {
    /// States worth keeping across a restart (the others are re-learned in seconds).
    pub fn keeps(state: ProviderState) -> bool {
        matches!(state, ProviderState::Drained | ProviderState::Suspended | ProviderState::Open | ProviderState::Silent)
    }

    /// When the operator's last decision was taken (records written before the clocks
    /// existed: a drain's start).
    pub fn operator_since(&self) -> u64 {
        match self.state {
            ProviderState::Drained => self.operator_ms.max(self.since_ms),
            _ => self.operator_ms,
        }
    }

    /// When the account's state last changed (older records: a suspension's start).
    pub fn account_since(&self) -> u64 {
        match Account::of(self.state) {
            Account::Suspended | Account::Silent | Account::RateLimited => self.account_ms.max(self.since_ms),
            Account::InRotation | Account::Hidden => self.account_ms,
        }
    }

    /// Whether this record already knows everything `other` could teach it: adopting `other`
    /// ([`super::Health::adopt`]) would change nothing. Sender blocks over at `now_ms` do not count.
    pub fn covers(&self, other: &SavedHealth, settings: Settings, now_ms: u64) -> bool {
        if other.operator_since() > self.operator_since() {
            return false;
        }
        if settings == Settings::Other {
            return true;
        }
        let account_news = Account::of(other.state) != Account::Hidden && other.account_since() > self.account_since();
        !account_news
            && other.blocks_cleared_ms <= self.blocks_cleared_ms
            && other.live_blocks(now_ms, self.blocks_cleared_ms).all(|b| !self.learns_from(b))
    }

    /// Whether the two say the same (each covers the other).
    pub fn same_facts(&self, other: &SavedHealth, now_ms: u64) -> bool {
        self.covers(other, Settings::Same, now_ms) && other.covers(self, Settings::Same, now_ms)
    }

    /// Whether there is anything in it for another node: a clock set, a block, or a state
    /// out of rotation.
    pub fn says_anything(&self, now_ms: u64) -> bool {
        self.operator_ms > 0
            || self.account_ms > 0
            || self.blocks_cleared_ms > 0
            || Account::of(self.state) != Account::InRotation
            || self.live_blocks(now_ms, 0).next().is_some()
    }

    /// Blocks still in force at `now_ms` and not lifted by a resume at `cleared_ms`.
    pub fn live_blocks(&self, now_ms: u64, cleared_ms: u64) -> impl Iterator<Item = &SavedBlock> {
        self.sender_blocks.iter().filter(move |b| b.until_ms > now_ms && b.since_ms >= cleared_ms)
    }

    /// Whether `block` is news to this record: a domain it does not block, a block that
    /// started later, or one that lasts clearly longer.
    pub fn learns_from(&self, block: &SavedBlock) -> bool {
        match self.sender_blocks.iter().find(|b| b.domain == block.domain) {
            None => true,
            Some(mine) => block.since_ms > mine.since_ms || block.until_ms > mine.until_ms + SAME_END_MS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;

    fn record(state: ProviderState) -> SavedHealth {
        SavedHealth {
            state,
            since_ms: 0,
            reason: String::new(),
            until_ms: None,
            open_for_ms: 0,
            sender_blocks: Vec::new(),
            fingerprint: "f".into(),
            operator_ms: 0,
            account_ms: 0,
            blocks_cleared_ms: 0,
        }
    }

    fn block(domain: &str, since_ms: u64, until_ms: u64) -> SavedBlock {
        SavedBlock { domain: domain.into(), since_ms, until_ms, reason: "unverified".into() }
    }

    #[test]
    fn the_newer_clock_of_each_kind_is_news() {
        let old = record(ProviderState::Healthy);
        let mut drained = record(ProviderState::Drained);
        drained.operator_ms = 10;
        assert!(!old.covers(&drained, Settings::Same, NOW));
        assert!(!old.covers(&drained, Settings::Other, NOW), "a drain crosses connection settings");
        assert!(drained.covers(&old, Settings::Same, NOW));

        let mut suspended = record(ProviderState::Suspended);
        suspended.account_ms = 20;
        assert!(!old.covers(&suspended, Settings::Same, NOW));
        assert!(old.covers(&suspended, Settings::Other, NOW), "an account fact does not");
        // A drained record hides its account state: its account clock teaches nothing.
        drained.account_ms = 30;
        let mut knows_the_drain = suspended.clone();
        knows_the_drain.operator_ms = 10;
        assert!(knows_the_drain.covers(&drained, Settings::Same, NOW));
        let mut resumed = record(ProviderState::Healthy);
        resumed.operator_ms = 40;
        assert!(!drained.covers(&resumed, Settings::Same, NOW), "the resume is newer than the drain");
    }

    #[test]
    fn records_written_before_the_clocks_count_their_state_start() {
        let mut suspended = record(ProviderState::Suspended);
        suspended.since_ms = 500;
        assert_eq!(suspended.account_since(), 500);
        let mut drained = record(ProviderState::Drained);
        drained.since_ms = 700;
        assert_eq!(drained.operator_since(), 700);
        assert!(suspended.says_anything(NOW));
        assert!(!record(ProviderState::Open).says_anything(NOW), "an open circuit is this node's own");
    }

    #[test]
    fn sender_blocks_are_news_until_known_lifted_or_over() {
        let mut theirs = record(ProviderState::Healthy);
        theirs.sender_blocks = vec![block("b.example", 100, NOW + 60_000)];
        let mut mine = record(ProviderState::Healthy);
        assert!(!mine.covers(&theirs, Settings::Same, NOW));
        mine.sender_blocks = vec![block("b.example", 100, NOW + 59_500)];
        assert!(mine.covers(&theirs, Settings::Same, NOW), "the same block, ends within a second");
        assert!(mine.same_facts(&theirs, NOW));
        mine.sender_blocks.clear();
        mine.blocks_cleared_ms = 200;
        assert!(mine.covers(&theirs, Settings::Same, NOW), "lifted by a later resume");
        assert!(!theirs.covers(&mine, Settings::Same, NOW), "the resume is news to them");
        let over = NOW + 61_000;
        assert!(record(ProviderState::Healthy).covers(&theirs, Settings::Same, over), "over");
        assert!(!theirs.says_anything(over));
    }
}
