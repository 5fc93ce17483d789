//! Redis and nothing else: the commands the cluster uses, each bounded by `cluster.timeout`
//! and each failure a value. Callers decide what a failure means. The connection manager
//! reconnects on its own after Redis comes back; the pub/sub connection is the listener's.

use super::wire::Keys;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubStream};
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("{0}")]
    Setup(String),
}

/// The cluster's Redis: a cheap-clone handle.
#[derive(Clone)]
pub struct Store {
    client: redis::Client,
    manager: ConnectionManager,
    keys: Keys,
    timeout: Duration,
}

impl Store {
    /// Prepares the connection without making it: the first command connects, so a node
    /// starts whether Redis is up or not.
    pub fn open(url: &str, prefix: &str, timeout: Duration) -> Result<Store, StoreError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // Fail fast: the cluster's once-a-second sync is the retry.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(200));
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Store { client, manager, keys: Keys::new(prefix), timeout })
    }

    async fn bounded<T>(&self, call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut conn = self.manager.clone();
        self.bounded(cmd.query_async(&mut conn)).await
    }

    /// `HSET {prefix}nodes {node} {json}`.
    pub async fn heartbeat(&self, node: &str, json: &str) -> Result<(), StoreError> {
        self.query(redis::cmd("HSET").arg(&self.keys.nodes).arg(node).arg(json)).await
    }

    /// Every registry entry, node id → JSON.
    pub async fn nodes(&self) -> Result<HashMap<String, String>, StoreError> {
        self.query(redis::cmd("HGETALL").arg(&self.keys.nodes)).await
    }

    /// Removes registry entries (nodes gone, or this node leaving).
    pub async fn forget_nodes(&self, ids: &[String]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.query(redis::cmd("HDEL").arg(&self.keys.nodes).arg(ids)).await
    }

    /// Stores a provider's fact and announces it, in one transaction.
    pub async fn publish(&self, provider: &str, json: &str) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("HSET").arg(&self.keys.health).arg(provider).arg(json).ignore();
        pipe.cmd("PUBLISH").arg(&self.keys.health).arg(provider).ignore();
        let mut conn = self.manager.clone();
        self.bounded(pipe.query_async::<()>(&mut conn)).await
    }

    /// Every provider's last fact, provider → JSON.
    pub async fn facts(&self) -> Result<HashMap<String, String>, StoreError> {
        self.query(redis::cmd("HGETALL").arg(&self.keys.health)).await
    }

    /// One provider's last fact.
    pub async fn fact(&self, provider: &str) -> Result<Option<String>, StoreError> {
        self.query(redis::cmd("HGET").arg(&self.keys.health).arg(provider)).await
    }

    /// Reserves `cost` units of `provider`'s `max_rate` (GCRA on Redis's clock, see
    /// [`RESERVE`]): `Some(wait)` when the turn comes within `max_wait` (reserved: send after
    /// `wait`), `None` when it does not (nothing reserved).
    pub async fn reserve_rate(
        &self,
        provider: &str,
        interval: Duration,
        cost: u32,
        max_wait: Duration,
    ) -> Result<Option<Duration>, StoreError> {
        let cmd = eval(RESERVE, &self.keys.rate(provider))
            .arg(interval.as_micros() as u64)
            .arg(cost)
            .arg(max_wait.as_micros() as u64)
            .clone();
        let wait: i64 = self.query(&cmd).await?;
        Ok(u64::try_from(wait).ok().map(Duration::from_micros))
    }

    /// Claims an idempotency key for `ttl`: `None` when this claim is the first, else the
    /// claim stored first (on whichever node). One `SET NX GET` (Redis 7+): a plain command
    /// costs Redis a fraction of a script, and this runs for every request with a key.
    pub async fn claim(
        &self,
        client: &str,
        key: &str,
        claim: &str,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        let cmd = redis::cmd("SET")
            .arg(self.keys.idempotency(client, key))
            .arg(claim)
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .clone();
        self.query(&cmd).await
    }

    /// Replaces this node's pending claim by its confirmed form, for `ttl`. A plain `SET XX`:
    /// the pending claim could only have been replaced had the spool write taken longer than
    /// the pending claim lives (30 s), and then both messages exist anyway.
    pub async fn confirm(&self, client: &str, key: &str, confirmed: &str, ttl: Duration) -> Result<(), StoreError> {
        let cmd = redis::cmd("SET")
            .arg(self.keys.idempotency(client, key))
            .arg(confirmed)
            .arg("XX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .clone();
        self.query::<Option<String>>(&cmd).await.map(drop)
    }

    /// Gives back a claim whose message was not accepted after all (only if it is still `claim`).
    pub async fn release(&self, client: &str, key: &str, claim: &str) -> Result<(), StoreError> {
        let cmd = eval(RELEASE, &self.keys.idempotency(client, key)).arg(claim).clone();
        self.query::<i64>(&cmd).await.map(drop)
    }

    /// Takes or renews the lease to probe `provider` for `ttl`: true when this node holds it.
    pub async fn lease_probe(&self, provider: &str, node: &str, ttl: Duration) -> Result<bool, StoreError> {
        let cmd = eval(LEASE, &self.keys.prober(provider)).arg(node).arg(ttl.as_millis() as u64).clone();
        self.query::<i64>(&cmd).await.map(|held| held == 1)
    }

    /// Writes (`Some(json)`) or removes this node's open circuit for `provider`, and reads
    /// every node's: node id → JSON.
    pub async fn circuits(
        &self,
        provider: &str,
        node: &str,
        mine: Option<&str>,
    ) -> Result<HashMap<String, String>, StoreError> {
        let key = self.keys.circuits(provider);
        let mut pipe = redis::pipe();
        match mine {
            Some(json) => pipe.cmd("HSET").arg(&key).arg(node).arg(json).ignore(),
            None => pipe.cmd("HDEL").arg(&key).arg(node).ignore(),
        };
        pipe.cmd("HGETALL").arg(&key);
        let mut conn = self.manager.clone();
        let (all,): (HashMap<String, String>,) = self.bounded(pipe.query_async(&mut conn)).await?;
        Ok(all)
    }

    /// A connection of its own subscribed to the fact announcements; the stream ends when
    /// the connection does.
    pub async fn subscribe(&self) -> Result<PubSubStream, StoreError> {
        self.bounded(async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&self.keys.health).await?;
            Ok(pubsub.into_on_message())
        })
        .await
    }
}

/// `EVAL script 1 key …`. The scripts are a few lines each: sending them every time costs less
/// than keeping `EVALSHA` and its NOSCRIPT fallback (and the `script` feature) in step.
fn eval(script: &str, key: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(1).arg(key);
    cmd
}

/// GCRA as virtual scheduling, on Redis's clock so the nodes' clocks do not matter. The key
/// holds the theoretical arrival time (TAT, µs): the time the next unit may go. A request of
/// `cost` units starts at max(TAT, now); if that is more than `max_wait` away nothing is
/// reserved (-1), else TAT moves on by cost × interval and the wait (µs) is returned. Sends
/// are thus spaced one interval apart whichever node makes them, with no burst: any second
/// holds at most the limit (+1 for the send on its edge). ARGV: interval µs, cost, max_wait µs.
const RESERVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - now
if wait > tonumber(ARGV[3]) then return -1 end
tat = tat + tonumber(ARGV[1]) * tonumber(ARGV[2])
redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.floor((tat - now) / 1000) + 1000)
return wait
";

/// DEL only if the key still holds this claim. ARGV: claim.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// A lease taken when free or renewed by its holder. ARGV: node, ttl ms.
const LEASE: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";
