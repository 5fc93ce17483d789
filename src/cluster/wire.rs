//! What the nodes write to Redis, and under which keys. With the default prefix:
//!
//! ```text
//! HSET baton:nodes  {node_id}  {"http": "10.0.0.5:8080", "admin": "10.0.0.5:9090", "last_heartbeat_ms": …}
//! HSET baton:health {provider} {"node": "baton-1", "at_ms": …, "saved": {SavedHealth}}
//! PUBLISH baton:health {provider}
//! ```
//!
//! A provider's entry is the last fact a node published about it; `saved` is that node's
//! [`Health::shared_facts`](crate::health::Health::shared_facts) — state `healthy` with no
//! blocks is the "cleared" marker. The other keys:
//!
//! ```text
//! baton:rate:{provider}          the max_rate GCRA's next free time (µs, Redis's clock)
//! baton:idem:{client}:{key}      {"id", "node", "request", "pending"}: 30 s pending, then 24 h
//! baton:prober:{provider}        the node probing a provider out of rotation (a lease)
//! HSET baton:circuit:{provider} {node} {"since_ms": …, "until_ms": …}   open circuits
//! ```

use crate::health::saved::SavedHealth;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A node whose heartbeat is older than this is gone: not listed, and removed from the hash.
pub const NODE_TTL: Duration = Duration::from_secs(10);

/// The Redis keys of one cluster (`cluster.key_prefix`).
#[derive(Debug, Clone)]
pub struct Keys {
    /// Hash: node id → [`Heartbeat`].
    pub nodes: String,
    /// Hash: provider → [`Fact`]; also the pub/sub channel announcing a provider's new fact.
    pub health: String,
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys { nodes: format!("{prefix}nodes"), health: format!("{prefix}health"), prefix: prefix.to_string() }
    }

    pub fn rate(&self, provider: &str) -> String {
        format!("{}rate:{provider}", self.prefix)
    }

    pub fn idempotency(&self, client: &str, key: &str) -> String {
        format!("{}idem:{client}:{key}", self.prefix)
    }

    pub fn prober(&self, provider: &str) -> String {
        format!("{}prober:{provider}", self.prefix)
    }

    pub fn circuits(&self, provider: &str) -> String {
        format!("{}circuit:{provider}", self.prefix)
    }
}

/// The first claim of an idempotency key: the message it named and the node holding it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub id: String,
    pub node: String,
    /// The fingerprint of the request (a different request with the same key is a conflict).
    pub request: String,
    /// Claimed, not yet in that node's spool (expires in 30 s unless confirmed).
    #[serde(default)]
    pub pending: bool,
}

/// One node's open circuit on a provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Circuit {
    pub since_ms: u64,
    /// When that node's next half-open trial is due.
    pub until_ms: u64,
}

/// A node's entry in the registry: where to reach it, and when it last said so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// `server.http_listen` as other machines reach it.
    pub http: String,
    /// `server.admin_listen` likewise.
    pub admin: String,
    pub last_heartbeat_ms: u64,
}

impl Heartbeat {
    pub fn is_live(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_heartbeat_ms) < NODE_TTL.as_millis() as u64
    }
}

/// The last fact published about a provider's account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fact {
    /// The node that published it.
    pub node: String,
    /// When it was published (wall-clock ms).
    pub at_ms: u64,
    pub saved: SavedHealth,
}

/// Parses the registry hash: live nodes sorted by id, and the ids of entries to remove (gone,
/// or unreadable: written by something else).
pub fn live_nodes(
    entries: impl IntoIterator<Item = (String, String)>,
    now_ms: u64,
) -> (Vec<(String, Heartbeat)>, Vec<String>) {
    let (mut live, mut gone) = (Vec::new(), Vec::new());
    for (id, json) in entries {
        match serde_json::from_str::<Heartbeat>(&json) {
            Ok(beat) if beat.is_live(now_ms) => live.push((id, beat)),
            _ => gone.push(id),
        }
    }
    live.sort_by(|a, b| a.0.cmp(&b.0));
    (live, gone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::ProviderState;

    #[test]
    fn nodes_older_than_ten_seconds_are_gone() {
        let beat = |ms: u64| {
            serde_json::to_string(&Heartbeat { http: "h".into(), admin: "a".into(), last_heartbeat_ms: ms }).unwrap()
        };
        let entries = [
            ("c".to_string(), beat(91_000)),
            ("a".to_string(), beat(100_000)),
            ("b".to_string(), beat(89_999)),
            ("x".to_string(), "junk".to_string()),
        ];
        let (live, gone) = live_nodes(entries, 100_000);
        assert_eq!(live.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(gone, ["b", "x"]);
    }

    #[test]
    fn a_fact_reads_back_as_written_and_older_records_still_read() {
        let json = r#"{"node":"baton-1","at_ms":5,"saved":{"state":"drained","since_ms":3,"reason":"drained by operator","fingerprint":"f"}}"#;
        let fact: Fact = serde_json::from_str(json).unwrap();
        assert_eq!(fact.saved.state, ProviderState::Drained);
        assert_eq!(fact.saved.operator_since(), 3);
        let again: Fact = serde_json::from_str(&serde_json::to_string(&fact).unwrap()).unwrap();
        assert_eq!(again, fact);
        let keys = Keys::new("baton:");
        assert_eq!((keys.nodes.as_str(), keys.health.as_str()), ("baton:nodes", "baton:health"));
    }
}
