//! The handles the running parts share: the live config, the spool, the delivery queue, health,
//! metrics, the cluster, and the stop signal. Built once by `app::start`; the listeners, the dispatcher, the
//! admin API and reload take an `Arc<Shared>`, the smaller tasks take only the handles they use.
//! This module sits below all of them, so none of them imports the module that starts them.

use crate::delivery::queue::Queue;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::runtime::Runtime;
pub use crate::spool::Finished;
use crate::spool::Spool;
use crate::spool::record::{MessageRecord, now_ms};
use arc_swap::ArcSwap;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// State shared by the listeners and the dispatcher.
pub struct Shared {
    pub runtime: Arc<ArcSwap<Runtime>>,
    pub spool: Arc<Spool>,
    pub queue: Queue,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub suppressions: Arc<crate::suppression::Suppressions>,
    /// Events waiting for the app's webhooks.
    pub outbox: Arc<crate::outbox::Outbox>,
    /// What the provider webhooks keep between requests.
    pub inbox: crate::ingest::webhooks::receive::Inbox,
    /// Finished messages waiting to be removed from the spool.
    pub retention: Arc<Retention>,
    /// The config file, re-read on reload.
    pub config_path: std::path::PathBuf,
    /// Hash of the config text now live (see [`crate::config::text_hash`]).
    pub config_hash: Mutex<String>,
    /// Reloads run one at a time.
    pub reload_lock: tokio::sync::Mutex<()>,
    pub stop: CancellationToken,
    /// The cluster (`None`: no `[cluster]`).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// `max_rate` turns: the cluster's, or this node's share of each limit.
    pub throttle: crate::delivery::throttle::Throttle,
}

impl Shared {
    pub fn is_shutting_down(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Writes a provider's saved health to the spool now (drain, resume, shutdown); other
    /// changes reach the spool as they happen (`app::save_health_changes`).
    pub async fn save_health(&self, provider: &str) {
        save_health(&self.spool, &self.health, provider).await
    }

    /// Remembers a finished message so the sweeper removes it after `spool.keep_completed`.
    pub fn retain_completed(&self, record: &MessageRecord) {
        self.retention.push(record);
    }
}

/// Writes `provider`'s saved health to `spool`.
pub async fn save_health(spool: &Spool, health: &Health, provider: &str) {
    if let Err(e) = spool.save_provider_health(provider, health.saved(provider)).await {
        tracing::error!(provider, error = %e, "cannot save provider health; it will not survive a restart");
    }
}

/// Finished messages in completion order until the sweeper removes them from the spool.
#[derive(Default)]
pub struct Retention {
    list: Mutex<VecDeque<Finished>>,
}

impl Retention {
    /// Starts with the finished messages found in the spool at start, in completion order.
    pub fn new(completed: impl IntoIterator<Item = Finished>) -> Retention {
        Retention { list: Mutex::new(completed.into_iter().collect()) }
    }

    fn list(&self) -> std::sync::MutexGuard<'_, VecDeque<Finished>> {
        self.list.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, record: &MessageRecord) {
        let mut finished = Finished::of(record);
        finished.at_ms = record.completed_ms.unwrap_or_else(now_ms);
        self.list().push_back(finished);
    }

    /// Takes up to `max` messages finished at or before `cutoff` (ms).
    pub fn take_expired(&self, cutoff: u64, max: usize) -> Vec<Finished> {
        let mut list = self.list();
        let mut out = Vec::new();
        while list.front().is_some_and(|f| f.at_ms <= cutoff) && out.len() < max {
            out.push(list.pop_front().expect("front exists"));
        }
        out
    }

    /// Ids of the messages finished at or after `since_ms`.
    pub fn finished_since(&self, since_ms: u64) -> Vec<String> {
        self.list().iter().filter(|f| f.at_ms >= since_ms).map(|f| f.id.clone()).collect()
    }

    /// Takes `id` out (it may be delivered again): the sweeper cannot remove it meanwhile.
    /// `None` when it is not held (already swept, or taken by someone else).
    pub fn take(&self, id: &str) -> Option<Finished> {
        let mut list = self.list();
        let at = list.iter().position(|f| f.id == id)?;
        list.remove(at)
    }

    /// Puts back what [`Retention::take`] or [`Retention::take_expired`] took and did not use.
    pub fn put_back(&self, entries: impl IntoIterator<Item = Finished>) {
        let mut list = self.list();
        for f in entries {
            let at = list.partition_point(|x| x.at_ms <= f.at_ms);
            list.insert(at, f);
        }
    }
}
