//! The cluster's work for one node, one step at a time: the heartbeat and the registry every
//! second, and each provider's fact compared with the last one published — adopted where
//! newer, published where this node knows more. It remembers per provider what it last told
//! the others or took from them, so that adopting a fact never sends it round again.
//!
//! Open circuits are counted, not adopted one by one: each second every node writes its own
//! (or removes it) and reads everyone's; a node whose circuit is closed opens it when
//! `cluster.quorum` other live nodes have theirs open. A circuit taken that way is not written back as
//! this node's own, so it cannot keep the count up after the nodes that saw the failures
//! have closed theirs.

use super::store::Store;
use super::wire::{self, Circuit, Fact, Heartbeat};
use super::{Member, Status};
use crate::cluster::link::Link;
use crate::health::Health;
use crate::health::ProviderState;
use crate::health::saved::{SavedHealth, Settings};
use crate::metrics::Metrics;
use crate::spool::record::now_ms;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

pub struct Syncer {
    me: Member,
    store: Store,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    status: Arc<Status>,
    pub link: Link,
    /// Per provider: the facts this node last published or adopted.
    told: HashMap<String, SavedHealth>,
    /// `cluster.quorum`: other live nodes with a circuit open that make this node open its own.
    quorum: usize,
    /// Providers whose open circuit this node took from a quorum (not its own observation).
    taken_circuits: HashSet<String>,
}

impl Syncer {
    pub fn new(
        me: Member,
        store: Store,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
        status: Arc<Status>,
        quorum: usize,
    ) -> Syncer {
        let link = Link::new(metrics.clone(), status.clone());
        Syncer {
            me,
            store,
            health,
            metrics,
            status,
            link,
            told: HashMap::new(),
            quorum,
            taken_circuits: HashSet::new(),
        }
    }

    /// Once a second: heartbeat, registry, and every provider's fact (a lost announcement is
    /// caught here; after an outage this is the re-sync). Stops at the first failed call.
    pub async fn tick(&mut self) {
        if self.heartbeat().await && self.list_nodes().await {
            self.sync_facts().await;
            for provider in self.health.names() {
                if !self.link.is_up() {
                    break;
                }
                self.sync_circuit(&provider).await;
            }
        }
    }

    /// This node's facts about `provider` changed: tell the others, unless it is what this
    /// node last told them or took from them. With Redis down, the sync after it is back does.
    pub async fn local_change(&mut self, provider: &str) {
        let Some(mine) = self.health.shared_facts(provider) else { return };
        let now = now_ms();
        let known = match self.told.get(provider) {
            Some(told) => told.same_facts(&mine, now),
            None => !mine.says_anything(now),
        };
        if !known && self.link.is_up() {
            self.refresh(provider).await;
        }
    }

    /// Reads `provider`'s last fact and compares (an announcement, or before publishing: what
    /// another node published meanwhile is adopted first, so it is not overwritten).
    pub async fn refresh(&mut self, provider: &str) {
        let result = self.store.fact(provider).await;
        let Some(json) = self.link.observe(result) else { return };
        let fact = json.and_then(|j| serde_json::from_str::<Fact>(&j).ok());
        if let Some(f) = &fact {
            self.status.update(|v| {
                v.health.insert(provider.to_string(), f.clone());
            });
        }
        self.consider(provider, fact.as_ref()).await;
    }

    /// This node leaves the registry (graceful shutdown).
    pub async fn leave(&mut self) {
        let _ = self.store.forget_nodes(std::slice::from_ref(&self.me.id)).await;
    }

    async fn heartbeat(&mut self) -> bool {
        let beat = Heartbeat { http: self.me.http.clone(), admin: self.me.admin.clone(), last_heartbeat_ms: now_ms() };
        let json = serde_json::to_string(&beat).expect("a heartbeat serializes");
        let result = self.store.heartbeat(&self.me.id, &json).await;
        self.link.observe(result).is_some()
    }

    async fn list_nodes(&mut self) -> bool {
        let result = self.store.nodes().await;
        let Some(entries) = self.link.observe(result) else { return false };
        let (live, gone) = wire::live_nodes(entries, now_ms());
        if !gone.is_empty() {
            let result = self.store.forget_nodes(&gone).await;
            self.link.observe(result);
        }
        self.metrics.set_cluster_nodes(live.len());
        self.status.update(|v| v.nodes = live);
        true
    }

    async fn sync_facts(&mut self) {
        let result = self.store.facts().await;
        let Some(entries) = self.link.observe(result) else { return };
        let facts: BTreeMap<String, Fact> =
            entries.into_iter().filter_map(|(p, json)| Some((p, serde_json::from_str(&json).ok()?))).collect();
        self.status.update(|v| v.health = facts.clone());
        for provider in self.health.names() {
            self.consider(&provider, facts.get(&provider)).await;
        }
    }

    /// Adopts what the last published fact says that is newer; publishes this node's facts when
    /// the others lack something (nothing published yet, or this node knows more).
    async fn consider(&mut self, provider: &str, fact: Option<&Fact>) {
        let now = now_ms();
        let news = match fact {
            Some(f) if f.node != self.me.id => {
                let Some(adopted) = self.health.adopt(provider, &f.node, &f.saved) else { return };
                if adopted.changed {
                    self.metrics.cluster_facts_adopted.with_label_values(&[provider]).inc();
                }
                self.told.insert(provider.to_string(), adopted.facts.clone());
                adopted.ahead.then_some(adopted.facts)
            }
            _ => {
                let Some(mine) = self.health.shared_facts(provider) else { return };
                let lacking = match fact {
                    Some(f) => !f.saved.covers(&mine, Settings::Same, now),
                    None => mine.says_anything(now),
                };
                lacking.then_some(mine)
            }
        };
        if let Some(facts) = news {
            self.publish(provider, facts).await;
        }
    }

    /// Writes this node's own circuit on `provider`, reads every node's, and opens this node's
    /// when a quorum of other live nodes has it open.
    async fn sync_circuit(&mut self, provider: &str) {
        let open = self.health.state(provider) == Some(ProviderState::Open);
        if !open {
            self.taken_circuits.remove(provider);
        }
        let mine = match self.health.open_circuit(provider) {
            Some((since_ms, until_ms)) if !self.taken_circuits.contains(provider) => {
                Some(serde_json::to_string(&Circuit { since_ms, until_ms }).expect("a circuit serializes"))
            }
            _ => None,
        };
        let result = self.store.circuits(provider, &self.me.id, mine.as_deref()).await;
        let Some(all) = self.link.observe(result) else { return };
        let live: HashSet<String> = self.status.view().nodes.into_iter().map(|(id, _)| id).collect();
        let mut seen: Vec<(String, Circuit)> = all
            .into_iter()
            .filter(|(node, _)| live.contains(node))
            .filter_map(|(node, json)| Some((node, serde_json::from_str::<Circuit>(&json).ok()?)))
            .collect();
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        self.status.update(|v| {
            let nodes: Vec<String> = seen.iter().map(|(node, _)| node.clone()).collect();
            match nodes.is_empty() {
                true => v.circuits.remove(provider),
                false => v.circuits.insert(provider.to_string(), nodes),
            };
        });
        if open {
            return;
        }
        let others: Vec<&(String, Circuit)> = seen.iter().filter(|(node, _)| *node != self.me.id).collect();
        if others.len() >= self.quorum {
            let first_trial = others.iter().map(|(_, c)| c.until_ms).min().unwrap_or(0);
            let nodes: Vec<String> = others.iter().map(|(node, _)| node.clone()).collect();
            if self.health.adopt_circuit(provider, &nodes, first_trial) {
                self.taken_circuits.insert(provider.to_string());
                self.metrics.cluster_facts_adopted.with_label_values(&[provider]).inc();
            }
        }
    }

    async fn publish(&mut self, provider: &str, saved: SavedHealth) {
        let fact = Fact { node: self.me.id.clone(), at_ms: now_ms(), saved };
        let json = serde_json::to_string(&fact).expect("a fact serializes");
        let result = self.store.publish(provider, &json).await;
        if self.link.observe(result).is_some() {
            self.told.insert(provider.to_string(), fact.saved.clone());
            self.status.update(|v| {
                v.health.insert(provider.to_string(), fact);
            });
        }
    }
}
