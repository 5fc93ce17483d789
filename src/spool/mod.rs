//! The durable spool: every accepted message lives here (redb file, fsync'd) until each of its
//! recipients is delivered, rejected or failed.
//!
//! All writes go through one writer thread (`writer.rs`) that gathers whatever requests are
//! waiting into a single write transaction and commits it with one fsync (group commit). Callers
//! are answered only after that commit returns, so "202 Accepted" really means "on disk". Reads
//! use redb's concurrent read transactions directly.
//!
//! Storage faults are values, not crashes: a failed write makes the spool unwritable
//! ([`Condition`]) until the writer has re-opened the file and a probe write succeeds; while it
//! is, new messages are refused (a full disk is "spool full") and delivery is held. A file that
//! is not a spool, or a damaged one, is refused at start (`open.rs`); records that cannot be read
//! are moved into quarantine and reported, never skipped silently.

pub mod fault;
mod open;
pub mod record;
mod writer;

pub use fault::{Condition, Fault, FaultKind};
pub use open::OpenError;

use crate::metrics::Metrics;
use record::MessageRecord;
use redb::{ReadableDatabase, TableDefinition};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use tokio::sync::oneshot;
use writer::{Op, Store};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const BODY: TableDefinition<&str, &[u8]> = TableDefinition::new("body");
const IDEMPOTENCY: TableDefinition<&str, &str> = TableDefinition::new("idempotency");
/// Per provider: the health state that survives a restart (bytes owned by `health::saved`).
const PROVIDER_HEALTH: TableDefinition<&str, &[u8]> = TableDefinition::new("provider_health");
/// Records that could not be read at start, raw bytes as found (id → meta bytes).
const QUARANTINE: TableDefinition<&str, &[u8]> = TableDefinition::new("quarantine");
/// The bodies of quarantined records.
const QUARANTINE_BODY: TableDefinition<&str, &[u8]> = TableDefinition::new("quarantine_body");
/// About the file itself: its format marker, and the writer's probe writes.
const SPOOL_INFO: TableDefinition<&str, &[u8]> = TableDefinition::new("spool_info");
/// Suppressed addresses (bytes owned by `suppression`): "scope \n address" → entry.
const SUPPRESSION: TableDefinition<&str, &[u8]> = TableDefinition::new("suppression");
/// Which message a provider's id belongs to, to match its webhook events:
/// [`provider_id_key`] → Baton's message id. Written with the record, removed with it.
const PROVIDER_IDS: TableDefinition<&str, &str> = TableDefinition::new("provider_ids");
/// Events waiting to be posted to the app's webhooks (bytes owned by `outbox`).
const OUTBOX: TableDefinition<&str, &[u8]> = TableDefinition::new("outbox");

/// Idempotency keys are honoured for this long.
pub const IDEMPOTENCY_WINDOW_MS: u64 = 24 * 3600 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// `spool.max_bytes` is reached, or the filesystem is full.
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

/// A message waiting for delivery, as the queue needs it.
pub struct PendingEntry {
    pub id: String,
    pub next_attempt_ms: u64,
    pub created_ms: u64,
}

/// Small keyed tables that are written whole, one entry at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyed {
    /// Per provider: the health state that survives a restart (`health::saved`).
    ProviderHealth,
    /// `suppression`'s entries.
    Suppression,
    /// `outbox`'s entries.
    Outbox,
}

/// Key of a [`PROVIDER_IDS`] entry.
pub fn provider_id_key(provider: &str, provider_message_id: &str) -> String {
    format!("{provider}\n{provider_message_id}")
}

/// One finished message the spool still holds, until the sweeper removes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub at_ms: u64,
    pub id: String,
    /// Its idempotency entry, removed with it.
    pub idem: Option<String>,
    /// Bytes of its body when kept for re-delivery (freed when it is removed).
    pub kept_bytes: u64,
    /// Its [`provider_id_key`]s, removed with it.
    pub provider_ids: Vec<String>,
}

impl Finished {
    pub fn of(record: &MessageRecord) -> Finished {
        Finished {
            at_ms: record.completed_ms.unwrap_or(record.created_ms),
            id: record.id.clone(),
            idem: record.idempotency_key.as_ref().map(|k| idempotency_entry(&record.client, k)),
            kept_bytes: if record.body_kept { record.size } else { 0 },
            provider_ids: record.provider_ids(),
        }
    }
}

/// What was found in the spool at start-up.
pub struct Recovered {
    /// Messages with recipients still pending: they go back on the delivery queue. Only what
    /// the queue needs is kept, so recovering a large spool does not hold every record in memory.
    pub pending: Vec<PendingEntry>,
    /// Finished messages kept for status queries, in completion order.
    pub completed: Vec<Finished>,
    /// Saved provider health, per provider name (see `health::saved`).
    pub provider_health: Vec<(String, Vec<u8>)>,
    /// The suppression list's entries (see `suppression`).
    pub suppression: Vec<(String, Vec<u8>)>,
    /// Events waiting for the app's webhooks (see `outbox`).
    pub outbox: Vec<(String, Vec<u8>)>,
}

pub struct Spool {
    store: Arc<Store>,
    tx: Mutex<Option<mpsc::Sender<Op>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Body bytes of messages not yet finished (what `max_bytes` limits).
    bytes: AtomicU64,
    max_bytes: u64,
    /// Ids of the records in quarantine (found unreadable at this or an earlier start).
    quarantined: Vec<String>,
    metrics: Arc<Metrics>,
}

/// Key of an idempotency entry: client name and the client's key.
pub fn idempotency_entry(client: &str, key: &str) -> String {
    format!("{client}\n{key}")
}

impl Spool {
    /// Opens the spool under `dir` (creating it only if the file is absent), reads back
    /// everything in it and starts the writer. Refuses a file that is not a spool or is damaged.
    pub fn open(dir: &Path, max_bytes: u64, metrics: Arc<Metrics>) -> Result<(Arc<Spool>, Recovered), OpenError> {
        let db = open::open_or_create(dir)?;
        let path = dir.join(open::FILE);
        let scan = open::scan(&db, &path)?;
        let store = Arc::new(Store::new(dir, path, db));
        let (tx, rx) = mpsc::channel();
        let writer = writer::spawn(store.clone(), rx, metrics.clone()).map_err(OpenError::Writer)?;
        metrics.spool_bytes.set(scan.bytes as i64);
        metrics.spool_max_bytes.set(i64::try_from(max_bytes).unwrap_or(i64::MAX));
        metrics.spool_writable.set(1);
        metrics.spool_quarantined.set(scan.quarantined.len() as i64);
        let spool = Spool {
            store,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            bytes: AtomicU64::new(scan.bytes),
            max_bytes,
            quarantined: scan.quarantined,
            metrics,
        };
        Ok((Arc::new(spool), scan.recovered))
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
    /// Refused at once while the spool cannot write (a full disk: [`SpoolError::Full`]).
    pub async fn insert(
        &self,
        record: &MessageRecord,
        body: bytes::Bytes,
        request: Option<String>,
    ) -> Result<Inserted, SpoolError> {
        if let Some(refused) = self.condition().refusal() {
            return Err(refused);
        }
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

    /// Persists a record after a delivery pass. When the message is finished its body is deleted,
    /// unless the record says it is kept (`body_kept`: then it is freed by [`Spool::remove`]).
    pub async fn update(&self, record: &MessageRecord) -> Result<(), SpoolError> {
        self.update_with(record, Vec::new()).await
    }

    /// [`Spool::update`], with `outbox` entries (the events of this change, for the app's
    /// webhooks) committed in the same transaction: an event is queued if and only if the
    /// change it describes is on disk.
    pub async fn update_with(&self, record: &MessageRecord, outbox: Vec<(String, Vec<u8>)>) -> Result<(), SpoolError> {
        let meta = serde_json::to_vec(record).map_err(storage)?;
        let delete_body = record.status.is_final() && !record.body_kept;
        let provider_ids = record.provider_ids();
        let (reply, rx) = oneshot::channel();
        self.send(Op::Update { id: record.id.clone(), meta, delete_body, provider_ids, outbox, reply })?;
        rx.await.unwrap_or(Err(SpoolError::Closed))?;
        if delete_body {
            self.release(record.size);
        }
        Ok(())
    }

    /// Forgets finished messages (with their idempotency keys and provider ids) for good; the
    /// bodies among them that were kept are freed once this is committed.
    pub async fn remove(&self, entries: Vec<Finished>) -> Result<(), SpoolError> {
        let kept_bytes = entries.iter().map(|f| f.kept_bytes).sum();
        let (reply, rx) = oneshot::channel();
        self.send(Op::Remove { entries, reply })?;
        rx.await.unwrap_or(Err(SpoolError::Closed))?;
        self.release(kept_bytes);
        Ok(())
    }

    /// Stores events that arrived for a message (provider webhooks) with their `outbox`
    /// entries; unlike [`Spool::update`], never deletes or frees the body.
    pub async fn annotate(&self, record: &MessageRecord, outbox: Vec<(String, Vec<u8>)>) -> Result<(), SpoolError> {
        let meta = serde_json::to_vec(record).map_err(storage)?;
        let (reply, rx) = oneshot::channel();
        let op =
            Op::Update { id: record.id.clone(), meta, delete_body: false, provider_ids: Vec::new(), outbox, reply };
        self.send(op)?;
        rx.await.unwrap_or(Err(SpoolError::Closed))
    }

    /// Stores an entry of a small keyed table (`None`: remove it). Returns once it is on disk,
    /// like every other write.
    pub async fn put(&self, table: Keyed, key: &str, value: Option<Vec<u8>>) -> Result<(), SpoolError> {
        self.put_many(table, vec![(key.to_string(), value)]).await
    }

    /// [`Spool::put`] for several entries, in one transaction.
    pub async fn put_many(&self, table: Keyed, entries: Vec<(String, Option<Vec<u8>>)>) -> Result<(), SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Put { table, entries, reply })?;
        rx.await.unwrap_or(Err(SpoolError::Closed))
    }

    /// Stores a provider's saved health (`None`: nothing to keep, remove it).
    pub async fn save_provider_health(&self, provider: &str, value: Option<Vec<u8>>) -> Result<(), SpoolError> {
        self.put(Keyed::ProviderHealth, provider, value).await
    }

    /// The message a provider's message id belongs to (blocking: one point read).
    pub fn find_by_provider_id(&self, provider: &str, provider_message_id: &str) -> Result<Option<String>, SpoolError> {
        let db = self.store.db()?;
        let txn = db.begin_read().map_err(storage)?;
        let table = txn.open_table(PROVIDER_IDS).map_err(storage)?;
        let key = provider_id_key(provider, provider_message_id);
        Ok(table.get(key.as_str()).map_err(storage)?.map(|v| v.value().to_string()))
    }

    /// Reads a message record (blocking: a point read, microseconds when the page is cached;
    /// off the async workers that serve clients, see `delivery::pass::load`).
    pub fn get(&self, id: &str) -> Result<Option<MessageRecord>, SpoolError> {
        let db = self.store.db()?;
        let txn = db.begin_read().map_err(storage)?;
        let table = txn.open_table(META).map_err(storage)?;
        match table.get(id).map_err(storage)? {
            Some(v) => serde_json::from_slice(v.value()).map(Some).map_err(storage),
            None => Ok(None),
        }
    }

    /// Reads a message's body (blocking).
    pub fn body(&self, id: &str) -> Result<Option<bytes::Bytes>, SpoolError> {
        let db = self.store.db()?;
        let txn = db.begin_read().map_err(storage)?;
        let table = txn.open_table(BODY).map_err(storage)?;
        Ok(table.get(id).map_err(storage)?.map(|v| bytes::Bytes::copy_from_slice(v.value())))
    }

    /// Bytes of message data waiting for delivery.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether the spool can take writes now (readiness, ingest and delivery act on it).
    pub fn condition(&self) -> Condition {
        self.store.condition.borrow().clone()
    }

    pub fn is_writable(&self) -> bool {
        self.store.condition.borrow().is_writable()
    }

    /// Returns once the spool can write (at once if it can now).
    pub async fn writable(&self) {
        let mut rx = self.store.condition.subscribe();
        // The sender lives as long as `self`: this cannot fail.
        let _ = rx.wait_for(Condition::is_writable).await;
    }

    /// Returns (with the reason) once the writer thread is gone for good.
    pub async fn failed(&self) -> String {
        let mut rx = self.store.condition.subscribe();
        let failed = rx.wait_for(|c| matches!(c, Condition::Failed(_))).await;
        match failed.as_deref() {
            Ok(Condition::Failed(reason)) => reason.clone(),
            _ => "spool writer gone".to_string(),
        }
    }

    /// Ids of the records in quarantine (unreadable at this or an earlier start).
    pub fn quarantined(&self) -> &[String] {
        &self.quarantined
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
