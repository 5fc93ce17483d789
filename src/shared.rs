//! The handles the running parts share: the live config, the spool, the delivery queue, health,
//! metrics, and the stop signal. Built once by `app::start`; the listeners, the dispatcher, the
//! admin API and reload take an `Arc<Shared>`, the smaller tasks take only the handles they use.
//! This module sits below all of them, so none of them imports the module that starts them.

use crate::delivery::queue::Queue;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::spool::record::{MessageRecord, now_ms};
use crate::spool::{Spool, idempotency_entry};
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
    /// Finished messages waiting to be removed from the spool.
    pub retention: Arc<Retention>,
    /// The config file, re-read on reload.
    pub config_path: std::path::PathBuf,
    /// Hash of the config text now live (see [`crate::config::text_hash`]).
    pub config_hash: Mutex<String>,
    /// Reloads run one at a time.
    pub reload_lock: tokio::sync::Mutex<()>,
    pub stop: CancellationToken,
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

/// Finished messages in completion order — (completed ms, id, idempotency entry) — until the
/// sweeper removes them from the spool.
#[derive(Default)]
pub struct Retention {
    list: Mutex<VecDeque<(u64, String, Option<String>)>>,
}

impl Retention {
    /// Starts with the finished messages found in the spool at start, in completion order.
    pub fn new(completed: impl IntoIterator<Item = (u64, String, Option<String>)>) -> Retention {
        Retention { list: Mutex::new(completed.into_iter().collect()) }
    }

    pub fn push(&self, record: &MessageRecord) {
        let idem = record.idempotency_key.as_ref().map(|k| idempotency_entry(&record.client, k));
        let at = record.completed_ms.unwrap_or_else(now_ms);
        self.list.lock().unwrap_or_else(|e| e.into_inner()).push_back((at, record.id.clone(), idem));
    }

    /// Takes up to `max` messages finished at or before `cutoff` (ms): their ids and
    /// idempotency entries.
    pub fn take_expired(&self, cutoff: u64, max: usize) -> Vec<(String, Option<String>)> {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        while list.front().is_some_and(|(at, _, _)| *at <= cutoff) && out.len() < max {
            let (_, id, idem) = list.pop_front().expect("front exists");
            out.push((id, idem));
        }
        out
    }
}
