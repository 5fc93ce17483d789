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
