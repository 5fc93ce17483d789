//! The cluster's work for one node, one step at a time: the heartbeat and the registry every
//! second, and each provider's fact compared with the last one published — adopted where
//! newer, published where this node knows more. It remembers per provider what it last told
//! the others or took from them, so that adopting a fact never sends it round again.

use super::store::Store;
use super::wire::{self, Fact, Heartbeat};
use super::{Member, Status};
use crate::cluster::link::Link;
use crate::health::Health;
use crate::health::saved::{SavedHealth, Settings};
use crate::metrics::Metrics;
use crate::spool::record::now_ms;
use std::collections::{BTreeMap, HashMap};
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
}

impl Syncer {
    pub fn new(me: Member, store: Store, health: Arc<Health>, metrics: Arc<Metrics>, status: Arc<Status>) -> Syncer {
        let link = Link::new(metrics.clone(), status.clone());
        Syncer { me, store, health, metrics, status, link, told: HashMap::new() }
    }

    /// Once a second: heartbeat, registry, and every provider's fact (a lost announcement is
    /// caught here; after an outage this is the re-sync). Stops at the first failed call.
    pub async fn tick(&mut self) {
        if self.heartbeat().await && self.list_nodes().await {
            self.sync_facts().await;
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
