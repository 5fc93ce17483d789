//! The durable spool: every accepted message lives here (redb file, fsync'd) until each of its
//! recipients is delivered, rejected or failed.
//!
//! All writes go through one writer thread that gathers whatever requests are waiting into a
//! single write transaction and commits it with one fsync (group commit). Callers are answered
//! only after that commit returns, so "202 Accepted" really means "on disk". Reads use redb's
//! concurrent read transactions directly.

pub mod record;

use crate::metrics::Metrics;
use record::{MessageRecord, now_ms};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Instant;
use tokio::sync::oneshot;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const BODY: TableDefinition<&str, &[u8]> = TableDefinition::new("body");
const IDEMPOTENCY: TableDefinition<&str, &str> = TableDefinition::new("idempotency");
/// Per provider: the health state that survives a restart (bytes owned by `health::saved`).
const PROVIDER_HEALTH: TableDefinition<&str, &[u8]> = TableDefinition::new("provider_health");

/// Idempotency keys are honoured for this long.
pub const IDEMPOTENCY_WINDOW_MS: u64 = 24 * 3600 * 1000;
/// Most requests committed in one transaction.
const MAX_BATCH: usize = 2048;
/// Most body bytes committed in one transaction (bounds the memory a batch holds).
const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool is full")]
    Full,
    #[error("spool is closed")]
    Closed,
    #[error("spool storage error: {0}")]
    Storage(String),
}

fn storage<E: std::fmt::Display>(e: E) -> SpoolError {
    SpoolError::Storage(e.to_string())
}

/// Result of an insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    New,
    /// The idempotency key was already used within the window: this is that message's id.
    Existing(String),
    /// The idempotency key was already used within the window for another request.
    Conflict(String),
}

enum Op {
    Insert {
        id: String,
        meta: Vec<u8>,
        body: Vec<u8>,
        /// (idempotency entry, request fingerprint).
        idempotency: Option<(String, Option<String>)>,
        reply: oneshot::Sender<Result<Inserted, SpoolError>>,
    },
    Update {
        id: String,
        meta: Vec<u8>,
        delete_body: bool,
        reply: oneshot::Sender<Result<(), SpoolError>>,
    },
    Remove {
        entries: Vec<(String, Option<String>)>,
        reply: oneshot::Sender<Result<(), SpoolError>>,
    },
    /// Stores (or, with `None`, removes) a provider's saved health.
    SaveHealth {
        provider: String,
        value: Option<Vec<u8>>,
        reply: oneshot::Sender<Result<(), SpoolError>>,
    },
}

impl Op {
    fn bytes(&self) -> usize {
        match self {
            Op::Insert { meta, body, .. } => meta.len() + body.len(),
            Op::Update { meta, .. } => meta.len(),
            Op::Remove { entries, .. } => entries.len() * 64,
            Op::SaveHealth { value, .. } => value.as_ref().map_or(0, Vec::len),
        }
    }
}

/// A message waiting for delivery, as the queue needs it.
pub struct PendingEntry {
    pub id: String,
    pub next_attempt_ms: u64,
    pub created_ms: u64,
}

/// What was found in the spool at start-up.
pub struct Recovered {
    /// Messages with recipients still pending: they go back on the delivery queue. Only what
    /// the queue needs is kept, so recovering a large spool does not hold every record in memory.
    pub pending: Vec<PendingEntry>,
    /// Finished messages kept for status queries: (id, completed at ms, idempotency key).
    pub completed: Vec<(String, u64, Option<String>)>,
    /// Saved provider health, per provider name (see `health::saved`).
    pub provider_health: Vec<(String, Vec<u8>)>,
}

pub struct Spool {
    db: Arc<Database>,
    tx: Mutex<Option<mpsc::Sender<Op>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Body bytes of messages not yet finished (what `max_bytes` limits).
    bytes: AtomicU64,
    max_bytes: u64,
    metrics: Arc<Metrics>,
}

/// Key of an idempotency entry: client name and the client's key.
pub fn idempotency_entry(client: &str, key: &str) -> String {
    format!("{client}\n{key}")
}

impl Spool {
    /// Opens (or creates) the spool under `dir` and reads back everything in it.
    pub fn open(dir: &Path, max_bytes: u64, metrics: Arc<Metrics>) -> Result<(Arc<Spool>, Recovered), SpoolError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| SpoolError::Storage(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("spool.redb");
        // The cache holds recently used pages only; bodies are read from disk when delivered,
        // so memory stays flat however many messages wait.
        let db = Database::builder()
            .set_cache_size(32 * 1024 * 1024)
            .create(&path)
            .map_err(|e| SpoolError::Storage(format!("cannot open {}: {e}", path.display())))?;
        {
            let txn = db.begin_write().map_err(storage)?;
            txn.open_table(META).map_err(storage)?;
            txn.open_table(BODY).map_err(storage)?;
            txn.open_table(IDEMPOTENCY).map_err(storage)?;
            txn.open_table(PROVIDER_HEALTH).map_err(storage)?;
            txn.commit().map_err(storage)?;
        }
        let mut recovered = Recovered { pending: Vec::new(), completed: Vec::new(), provider_health: Vec::new() };
        let mut bytes = 0;
        {
            let txn = db.begin_read().map_err(storage)?;
            let meta = txn.open_table(META).map_err(storage)?;
            for entry in meta.iter().map_err(storage)? {
                let (k, v) = entry.map_err(storage)?;
                let record: MessageRecord = match serde_json::from_slice(v.value()) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(id = k.value(), error = %e, "unreadable spool record skipped");
                        continue;
                    }
                };
                if record.status.is_final() {
                    let done = record.completed_ms.unwrap_or(record.created_ms);
                    let idem = record.idempotency_key.as_ref().map(|key| idempotency_entry(&record.client, key));
                    recovered.completed.push((record.id, done, idem));
                } else {
                    bytes += record.size;
                    recovered.pending.push(PendingEntry {
                        id: record.id,
                        next_attempt_ms: record.next_attempt_ms,
                        created_ms: record.created_ms,
                    });
                }
            }
            let health = txn.open_table(PROVIDER_HEALTH).map_err(storage)?;
            for entry in health.iter().map_err(storage)? {
                let (k, v) = entry.map_err(storage)?;
                recovered.provider_health.push((k.value().to_string(), v.value().to_vec()));
            }
        }
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel();
        let writer_db = db.clone();
        let writer_metrics = metrics.clone();
        let writer = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer_loop(&writer_db, rx, &writer_metrics))
            .map_err(storage)?;
        metrics.spool_bytes.set(bytes as i64);
        metrics.spool_max_bytes.set(i64::try_from(max_bytes).unwrap_or(i64::MAX));
        let spool = Spool {
            db,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            bytes: AtomicU64::new(bytes),
            max_bytes,
            metrics,
        };
        Ok((Arc::new(spool), recovered))
    }

    fn send(&self, op: Op) -> Result<(), SpoolError> {
        let guard = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(tx) => tx.send(op).map_err(|_| SpoolError::Closed),
            None => Err(SpoolError::Closed),
        }
    }

    fn reserve(&self, size: u64) -> Result<(), SpoolError> {
        let mut current = self.bytes.load(Ordering::Relaxed);
        loop {
            if current + size > self.max_bytes {
                return Err(SpoolError::Full);
            }
            match self.bytes.compare_exchange_weak(current, current + size, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    self.metrics.spool_bytes.set((current + size) as i64);
                    return Ok(());
                }
                Err(actual) => current = actual,
            }
        }
    }

    fn release(&self, size: u64) {
        let before = self.bytes.fetch_sub(size, Ordering::AcqRel);
        self.metrics.spool_bytes.set(before.saturating_sub(size) as i64);
    }

    /// Stores a new message durably. Returns once it is committed to disk. `request` is the
    /// fingerprint of the request its idempotency key came with (see [`Inserted::Conflict`]).
    pub async fn insert(
        &self,
        record: &MessageRecord,
        body: Vec<u8>,
        request: Option<String>,
    ) -> Result<Inserted, SpoolError> {
        let size = record.size;
        self.reserve(size)?;
        let meta = serde_json::to_vec(record).map_err(storage)?;
        let idempotency = record.idempotency_key.as_ref().map(|k| (idempotency_entry(&record.client, k), request));
        let (reply, rx) = oneshot::channel();
        let result = match self.send(Op::Insert { id: record.id.clone(), meta, body, idempotency, reply }) {
            Ok(()) => rx.await.unwrap_or(Err(SpoolError::Closed)),
            Err(e) => Err(e),
        };
        if !matches!(result, Ok(Inserted::New)) {
            self.release(size);
        }
        result
    }

    /// Persists a record after a delivery pass. When the message is finished its body is deleted.
    pub async fn update(&self, record: &MessageRecord) -> Result<(), SpoolError> {
        let meta = serde_json::to_vec(record).map_err(storage)?;
        let delete_body = record.status.is_final();
        let (reply, rx) = oneshot::channel();
        self.send(Op::Update { id: record.id.clone(), meta, delete_body, reply })?;
        rx.await.unwrap_or(Err(SpoolError::Closed))?;
        if delete_body {
            self.release(record.size);
        }
        Ok(())
    }

    /// Forgets finished messages (and their idempotency keys) for good.
    pub async fn remove(&self, entries: Vec<(String, Option<String>)>) -> Result<(), SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Remove { entries, reply })?;
        rx.await.unwrap_or(Err(SpoolError::Closed))
    }

    /// Stores a provider's saved health (`None`: nothing to keep, remove it). Returns once it
    /// is on disk, like every other write.
    pub async fn save_provider_health(&self, provider: &str, value: Option<Vec<u8>>) -> Result<(), SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::SaveHealth { provider: provider.to_string(), value, reply })?;
        rx.await.unwrap_or(Err(SpoolError::Closed))
    }

    /// Reads a message record (blocking; call from `spawn_blocking` on hot paths).
    pub fn get(&self, id: &str) -> Result<Option<MessageRecord>, SpoolError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(META).map_err(storage)?;
        match table.get(id).map_err(storage)? {
            Some(v) => serde_json::from_slice(v.value()).map(Some).map_err(storage),
            None => Ok(None),
        }
    }

    /// Reads a message's body (blocking).
    pub fn body(&self, id: &str) -> Result<Option<Vec<u8>>, SpoolError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(BODY).map_err(storage)?;
        Ok(table.get(id).map_err(storage)?.map(|v| v.value().to_vec()))
    }

    /// Bytes of message data waiting for delivery.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Stops taking writes, commits everything already queued and waits for the writer thread.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.close();
    }
}

/// Result of one op inside a batch, sent once the batch is committed.
enum Done {
    Inserted(Inserted),
    Unit,
}

fn writer_loop(db: &Database, rx: mpsc::Receiver<Op>, metrics: &Metrics) {
    while let Ok(first) = rx.recv() {
        let mut bytes = first.bytes();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(op) => {
                    bytes += op.bytes();
                    batch.push(op);
                }
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let result = commit_batch(db, &batch);
        metrics.spool_commit_duration.observe(started.elapsed().as_secs_f64());
        metrics.spool_commit_batch_size.observe(batch.len() as f64);
        match result {
            Ok(done) => {
                for (op, done) in batch.into_iter().zip(done) {
                    match (op, done) {
                        (Op::Insert { reply, .. }, Done::Inserted(r)) => {
                            let _ = reply.send(Ok(r));
                        }
                        (Op::Update { reply, .. }, _)
                        | (Op::Remove { reply, .. }, _)
                        | (Op::SaveHealth { reply, .. }, _) => {
                            let _ = reply.send(Ok(()));
                        }
                        (Op::Insert { reply, .. }, Done::Unit) => {
                            let _ = reply.send(Err(SpoolError::Storage("internal: insert without result".into())));
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, ops = batch.len(), "spool commit failed");
                for op in batch {
                    let err = SpoolError::Storage(e.to_string());
                    match op {
                        Op::Insert { reply, .. } => {
                            let _ = reply.send(Err(err));
                        }
                        Op::Update { reply, .. } | Op::Remove { reply, .. } | Op::SaveHealth { reply, .. } => {
                            let _ = reply.send(Err(err));
                        }
                    }
                }
            }
        }
    }
}

/// What a still-valid idempotency entry `value` says about a new request with fingerprint
/// `request`: the same request (the earlier message) or another one (a conflict). `None`: the
/// entry has expired. Entries without a fingerprint (older spools) match any request.
fn reuse(value: &str, request: Option<&str>, now: u64) -> Option<Inserted> {
    let mut parts = value.split('\t');
    let (id, at) = (parts.next()?, parts.next()?.parse::<u64>().ok()?);
    if now.saturating_sub(at) >= IDEMPOTENCY_WINDOW_MS {
        return None;
    }
    let stored = parts.next().filter(|s| !s.is_empty());
    Some(match (stored, request) {
        (Some(stored), Some(request)) if stored != request => Inserted::Conflict(id.to_string()),
        _ => Inserted::Existing(id.to_string()),
    })
}

fn commit_batch(db: &Database, batch: &[Op]) -> Result<Vec<Done>, SpoolError> {
    let now = now_ms();
    let txn = db.begin_write().map_err(storage)?;
    let mut done = Vec::with_capacity(batch.len());
    {
        let mut meta = txn.open_table(META).map_err(storage)?;
        let mut body_table = txn.open_table(BODY).map_err(storage)?;
        let mut idem = txn.open_table(IDEMPOTENCY).map_err(storage)?;
        let mut health = txn.open_table(PROVIDER_HEALTH).map_err(storage)?;
        for op in batch {
            match op {
                Op::Insert { id, meta: m, body, idempotency, .. } => {
                    if let Some((key, request)) = idempotency {
                        let existing = idem.get(key.as_str()).map_err(storage)?.map(|v| v.value().to_string());
                        if let Some(found) = existing.as_deref().and_then(|v| reuse(v, request.as_deref(), now)) {
                            done.push(Done::Inserted(found));
                            continue;
                        }
                        // "id \t committed at \t request fingerprint" (older entries lack the last).
                        let value = format!("{id}\t{now}\t{}", request.as_deref().unwrap_or(""));
                        idem.insert(key.as_str(), value.as_str()).map_err(storage)?;
                    }
                    meta.insert(id.as_str(), m.as_slice()).map_err(storage)?;
                    body_table.insert(id.as_str(), body.as_slice()).map_err(storage)?;
                    done.push(Done::Inserted(Inserted::New));
                }
                Op::Update { id, meta: m, delete_body, .. } => {
                    meta.insert(id.as_str(), m.as_slice()).map_err(storage)?;
                    if *delete_body {
                        body_table.remove(id.as_str()).map_err(storage)?;
                    }
                    done.push(Done::Unit);
                }
                Op::Remove { entries, .. } => {
                    for (id, key) in entries {
                        meta.remove(id.as_str()).map_err(storage)?;
                        body_table.remove(id.as_str()).map_err(storage)?;
                        if let Some(key) = key {
                            // Only drop the key if it still points at this message.
                            let points_here = idem
                                .get(key.as_str())
                                .map_err(storage)?
                                .is_some_and(|v| v.value().split('\t').next() == Some(id.as_str()));
                            if points_here {
                                idem.remove(key.as_str()).map_err(storage)?;
                            }
                        }
                    }
                    done.push(Done::Unit);
                }
                Op::SaveHealth { provider, value, .. } => {
                    match value {
                        Some(v) => health.insert(provider.as_str(), v.as_slice()).map_err(storage)?,
                        None => health.remove(provider.as_str()).map_err(storage)?,
                    };
                    done.push(Done::Unit);
                }
            }
        }
    }
    txn.commit().map_err(storage)?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idempotency_entry_matches_its_own_request_only() {
        let now = 10 * IDEMPOTENCY_WINDOW_MS;
        let entry = format!("01ABC\t{}\tf1f1", now - 1000);
        assert_eq!(reuse(&entry, Some("f1f1"), now), Some(Inserted::Existing("01ABC".into())));
        assert_eq!(reuse(&entry, Some("e2e2"), now), Some(Inserted::Conflict("01ABC".into())));
        // Entries written before fingerprints existed match any request.
        assert_eq!(
            reuse(&format!("01ABC\t{}", now - 1000), Some("e2e2"), now),
            Some(Inserted::Existing("01ABC".into()))
        );
        // Past the window the key is free again.
        assert_eq!(reuse(&format!("01ABC\t{}\tf1f1", now - IDEMPOTENCY_WINDOW_MS), Some("e2e2"), now), None);
    }
}
