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
//! Each node keeps its own spool and delivers what it accepted. Besides the facts, the nodes
//! share (each through [`Cluster`], each call bounded the same way, each with a local fallback):
//! - open circuits: every node writes its own, and a node takes a circuit open when
//!   `cluster.quorum` live nodes have it open — one node's bad path does not take a provider
//!   out for all (`sync.rs`);
//! - one prober per provider out of rotation, by a lease ([`Cluster::may_probe`]);
//! - `max_rate` turns, GCRA on Redis's clock ([`Cluster::reserve_rate`]; the fallback, a
//!   share of the limit on each node, is `delivery/throttle.rs`);
//! - idempotency claims ([`Cluster::claim`]) and where each message is ([`Cluster::find_message`]).

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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::Store;
pub use store::StoreError;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use wire::{Claim, Fact, Heartbeat};

/// An idempotency claim not yet confirmed by its node's spool expires after this: a node that
/// dies between claiming and committing does not block the key for a day.
const PENDING_CLAIM: Duration = Duration::from_secs(30);
/// Idempotency keys are honoured this long (as in the spool).
const CLAIM_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a request waits for another node to finish accepting the same idempotency key.
const CLAIM_PATIENCE: Duration = Duration::from_secs(2);
/// A request relayed to the node holding a message carries this header (it is not relayed again).
pub const RELAYED_HEADER: &str = "baton-relayed-from";

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
    /// Per provider, the live nodes whose circuit on it is open (this one included).
    pub circuits: BTreeMap<String, Vec<String>>,
}

/// The cluster task's view, shared with the admin API. A std Mutex: never held across `.await`.
pub struct Status {
    view: Mutex<View>,
    /// `view.connected` and the number of live nodes, read on every send and request.
    connected: AtomicBool,
    live: AtomicUsize,
}

impl Status {
    pub fn new(node_id: &str) -> Status {
        Status {
            view: Mutex::new(View { node_id: node_id.to_string(), ..View::default() }),
            connected: AtomicBool::new(false),
            live: AtomicUsize::new(1),
        }
    }

    pub fn view(&self) -> View {
        self.view.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, change: impl FnOnce(&mut View)) {
        let mut view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut view);
        self.connected.store(view.connected, Ordering::Relaxed);
        self.live.store(view.nodes.len().max(1), Ordering::Relaxed);
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Live nodes last seen, this one included (at least 1).
    pub fn live_nodes(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }
}

/// What an idempotency claim found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claimed {
    /// This request is the first with the key: accept it, then [`Cluster::confirm`].
    First(String),
    /// A message was accepted with this key already (on the node named in the claim).
    Earlier(Claim),
    /// Another node is accepting a message with this key right now.
    InProgress,
    /// Redis did not answer: only this node's spool can tell.
    Unknown,
}

/// The cluster as the rest of Baton asks it things: cheap, each call bounded by
/// `cluster.timeout`, and with an answer that says when Redis could not be asked (the caller
/// then goes on with what this node knows). While the cluster task knows Redis is down, calls
/// do not even try: ingest and delivery do not pay the timeout over and over.
pub struct Cluster {
    pub status: Arc<Status>,
    pub config: ClusterConfig,
    store: Store,
    http: reqwest::Client,
}

impl Cluster {
    /// Prepares the connection without making it (a node starts whether Redis is up or not).
    pub fn open(config: &ClusterConfig) -> Result<Cluster, StoreError> {
        let store = Store::open(&config.redis_url, &config.key_prefix, config.timeout.0)?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| StoreError::Setup(e.to_string()))?;
        Ok(Cluster { status: Arc::new(Status::new(&config.node_id)), config: config.clone(), store, http })
    }

    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    /// Reserves a `max_rate` turn: `Some(Some(wait))` reserved, send after `wait`;
    /// `Some(None)` not within `max_wait`; `None` Redis could not be asked.
    pub async fn reserve_rate(
        &self,
        provider: &str,
        interval: Duration,
        cost: u32,
        max_wait: Duration,
    ) -> Option<Option<Duration>> {
        if !self.status.is_connected() {
            return None;
        }
        self.store.reserve_rate(provider, interval, cost, max_wait).await.ok()
    }

    /// Claims `key` for message `id` before it is spooled. A claim held by another node that
    /// is still accepting its message is waited for a little (it normally commits in
    /// milliseconds), so two copies of one request sent at once get one id.
    pub async fn claim(&self, client: &str, key: &str, id: &str, request: &str) -> Claimed {
        if !self.status.is_connected() {
            return Claimed::Unknown;
        }
        let mine = Claim { id: id.into(), node: self.node_id().into(), request: request.into(), pending: true };
        let json = serde_json::to_string(&mine).expect("a claim serializes");
        let deadline = tokio::time::Instant::now() + CLAIM_PATIENCE;
        loop {
            let first = match self.store.claim(client, key, &json, PENDING_CLAIM).await {
                Ok(None) => return Claimed::First(json),
                Ok(Some(first)) => first,
                Err(_) => return Claimed::Unknown,
            };
            match serde_json::from_str::<Claim>(&first) {
                Ok(claim) if !claim.pending => return Claimed::Earlier(claim),
                Ok(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(_) => return Claimed::InProgress,
                // Not Baton's: this node's spool decides.
                Err(_) => return Claimed::Unknown,
            }
        }
    }

    /// The message a [`Claimed::First`] claim named is in the spool: the claim now holds for 24 h.
    pub async fn confirm(&self, client: &str, key: &str, pending: &str) {
        let Ok(mut claim) = serde_json::from_str::<Claim>(pending) else { return };
        claim.pending = false;
        let json = serde_json::to_string(&claim).expect("a claim serializes");
        if let Err(e) = self.store.confirm(client, key, &json, CLAIM_TTL).await {
            tracing::warn!(message_id = %claim.id, error = %e, "cluster: idempotency claim not confirmed; it lapses in 30 s");
        }
    }

    /// The message a claim named was not accepted after all.
    pub async fn release(&self, client: &str, key: &str, pending: &str) {
        let _ = self.store.release(client, key, pending).await;
    }

    /// Whether this node probes `provider`, out of rotation, now: only the lease holder does
    /// (for `ttl`, renewed by each of its probes). Without Redis every node probes.
    pub async fn may_probe(&self, provider: &str, ttl: Duration) -> bool {
        if !self.status.is_connected() {
            return true;
        }
        self.store.lease_probe(provider, self.node_id(), ttl).await.unwrap_or(true)
    }

    /// Asks the other live nodes for `path` (a message's status) with the client's own
    /// credentials: the first answer that is not a 404, with the node that gave it.
    pub async fn find_message(&self, path: &str, headers: &axum::http::HeaderMap) -> Option<(String, u16, String)> {
        let others: Vec<(String, Heartbeat)> =
            self.status.view().nodes.into_iter().filter(|(id, _)| id != self.node_id()).collect();
        let asks = others.into_iter().map(|(node, beat)| {
            let mut request =
                self.http.get(format!("http://{}{path}", beat.http)).header(RELAYED_HEADER, self.node_id());
            for name in [axum::http::header::AUTHORIZATION.as_str(), "x-api-key"] {
                if let Some(value) = headers.get(name) {
                    request = request.header(name, value.as_bytes());
                }
            }
            Box::pin(async move {
                let response = request.send().await.ok()?;
                let status = response.status().as_u16();
                if status == 404 {
                    return None;
                }
                Some((node, status, response.text().await.ok()?))
            })
        });
        let mut pending: futures::stream::FuturesUnordered<_> = asks.collect();
        while let Some(answer) = pending.next().await {
            if answer.is_some() {
                return answer;
            }
        }
        None
    }
}

/// The cluster task: runs until `stop`, then leaves the registry. `changes` names the
/// providers whose durable health changed on this node ([`Health::changes`]).
pub async fn run(
    cluster: Arc<Cluster>,
    me: Member,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    mut changes: mpsc::UnboundedReceiver<String>,
    stop: CancellationToken,
) {
    let (store, status) = (cluster.store.clone(), cluster.status.clone());
    tracing::info!(node_id = %me.id, "cluster: joining");
    let mut node = sync::Syncer::new(me, store.clone(), health, metrics, status, cluster.config.quorum as usize);
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
