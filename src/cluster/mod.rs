//! Cluster mode (`[cluster]`): several Baton nodes behind one load balancer behave as one
//! relay. This module owns what the nodes share through Redis: who the nodes are (a registry
//! with their addresses and heartbeats) and the facts about each provider's account that one
//! node learns for all — drained and resumed by an operator, suspended, silent, sender-domain
//! blocks, and their end (see `health/adopt.rs` for what is adopted, and why an open circuit
//! is not).
//!
//! Its promise: Redis never stands between a client and its message. Ingest and delivery do
//! not call Redis at all — they ask this node's health, which this task keeps up to date
//! beside them; every Redis call is bounded by `cluster.timeout`; with Redis down or slow each
//! node goes on with its own health (logged once, `baton_cluster_connected` 0) and catches up
//! when it is back.
//!
//! ```text
//!   node a: health changes ──▶ HSET baton:health {provider} {node, at_ms, saved}
//!                              PUBLISH baton:health {provider} ──▶ node b, c: HGET → Health::adopt
//!   every node, every second: HSET baton:nodes {node_id} {http, admin, last_heartbeat_ms}
//!                             HGETALL baton:nodes, HGETALL baton:health → adopt / publish
//! ```
//!
//! Each node keeps its own spool and delivers what it accepted. Still to come in this
//! module (issue 17): open circuits adopted on a quorum of nodes, one prober per provider
//! out of rotation, cluster-wide `max_rate`, idempotency claims and message lookup.

mod link;
mod store;
mod sync;
pub mod wire;

use crate::config::ClusterConfig;
use crate::health::Health;
use crate::metrics::Metrics;
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::Store;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use wire::{Fact, Heartbeat};

/// How often each node beats, re-reads every provider's fact, and retries Redis.
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// This node as the others see it.
#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub http: String,
    pub admin: String,
}

impl Member {
    /// `cluster.node_id` at the listeners' addresses; a listener on every interface
    /// (`0.0.0.0`, `::`) is advertised under `server.hostname`.
    pub fn new(config: &ClusterConfig, hostname: &str, http: SocketAddr, admin: SocketAddr) -> Member {
        let advertised = |a: SocketAddr| {
            if a.ip().is_unspecified() { format!("{hostname}:{}", a.port()) } else { a.to_string() }
        };
        Member { id: config.node_id.clone(), http: advertised(http), admin: advertised(admin) }
    }
}

/// What this node last saw of the cluster, for `/admin/cluster`.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub node_id: String,
    pub connected: bool,
    /// Live nodes, by id.
    pub nodes: Vec<(String, Heartbeat)>,
    /// The last fact published about each provider.
    pub health: BTreeMap<String, Fact>,
}

/// The cluster task's view, shared with the admin API. A std Mutex: never held across `.await`.
pub struct Status {
    view: Mutex<View>,
}

impl Status {
    pub fn new(node_id: &str) -> Status {
        Status { view: Mutex::new(View { node_id: node_id.to_string(), ..View::default() }) }
    }

    pub fn view(&self) -> View {
        self.view.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, change: impl FnOnce(&mut View)) {
        change(&mut self.view.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// The cluster task: runs until `stop`, then leaves the registry. `changes` names the
/// providers whose durable health changed on this node ([`Health::changes`]).
pub async fn run(
    config: ClusterConfig,
    me: Member,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    status: Arc<Status>,
    mut changes: mpsc::UnboundedReceiver<String>,
    stop: CancellationToken,
) {
    let store = match Store::open(&config.redis_url, &config.key_prefix, config.timeout.0) {
        Ok(s) => s,
        Err(e) => return tracing::error!(error = %e, "cluster: cannot use cluster.redis_url; this node runs alone"),
    };
    tracing::info!(node_id = %me.id, "cluster: joining");
    let mut node = sync::Syncer::new(me, store.clone(), health, metrics, status);
    let (heard_tx, mut heard) = mpsc::unbounded_channel();
    let listener = tokio::spawn(listen(store, heard_tx, node.link.comebacks(), stop.clone()));
    let mut tick = tokio::time::interval(SYNC_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => node.tick().await,
            Some(first) = changes.recv() => {
                // A burst of changes to one provider is told once: the latest state.
                let mut names = BTreeSet::from([first]);
                while let Ok(more) = changes.try_recv() {
                    names.insert(more);
                }
                for provider in names {
                    node.local_change(&provider).await;
                }
            }
            Some(provider) = heard.recv() => node.refresh(&provider).await,
        }
    }
    node.leave().await;
    let _ = listener.await;
}

/// Passes on the providers other nodes announce. Subscribes again after its connection ends
/// and whenever Redis comes back (an announcement missed meanwhile is caught by the sync).
async fn listen(
    store: Store,
    heard: mpsc::UnboundedSender<String>,
    mut comebacks: watch::Receiver<u64>,
    stop: CancellationToken,
) {
    loop {
        comebacks.borrow_and_update();
        let ended = match store.subscribe().await {
            Ok(messages) => follow(messages, &heard, &mut comebacks, &stop).await,
            Err(_) => Ended::Closed,
        };
        match ended {
            Ended::Stopped => return,
            Ended::RedisBack => continue,
            Ended::Closed => {}
        }
        // Try again in a second, or at once when the sync finds Redis back.
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(SYNC_EVERY) => {}
            _ = comebacks.changed() => {}
        }
    }
}

/// Why a subscription ended.
enum Ended {
    Stopped,
    /// Redis came back after an outage: this connection may be a stale one.
    RedisBack,
    Closed,
}

async fn follow(
    mut messages: redis::aio::PubSubStream,
    heard: &mpsc::UnboundedSender<String>,
    comebacks: &mut watch::Receiver<u64>,
    stop: &CancellationToken,
) -> Ended {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ended::Stopped,
            _ = comebacks.changed() => return Ended::RedisBack,
            message = messages.next() => match message {
                Some(m) => {
                    if let Ok(provider) = m.get_payload::<String>() {
                        let _ = heard.send(provider);
                    }
                }
                None => return Ended::Closed,
            },
        }
    }
}
