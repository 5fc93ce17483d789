//! The spool's one writer thread: group commit, and what happens when a commit fails.
//!
//! Promise: a caller is answered only after its write is committed (fsync'd) or has failed, and
//! the spool's condition never says "writable" while the store cannot write. After a failed
//! commit, every write is refused until the writer has re-opened the file (redb latches an I/O
//! error: the database must be closed and opened again) and a probe write has succeeded; it
//! retries on its own with backoff, so space freed on a full disk is used without a restart.

use super::fault::{Condition, Fault, FaultKind, classify, is_full, panic_text};
use super::open::{OpenError, open_existing};
use super::record::now_ms;
use super::{
    BODY, Finished, IDEMPOTENCY, IDEMPOTENCY_WINDOW_MS, Inserted, Keyed, META, OUTBOX, PROVIDER_HEALTH, PROVIDER_IDS,
    SPOOL_INFO, SUPPRESSION, SpoolError,
};
use crate::metrics::Metrics;
use redb::{Database, ReadableTable};
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// Most requests committed in one transaction.
const MAX_BATCH: usize = 2048;
/// Most body bytes committed in one transaction (bounds the memory a batch holds).
const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;
/// Shortest and longest wait between attempts to write again after a fault.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// After a full disk, writing resumes only once this much can be written beside the spool:
/// resuming at the first free byte would fail again at the next message.
const SPACE_PROBE_BYTES: usize = 4 * 1024 * 1024;
const SPACE_PROBE_FILE: &str = ".space-probe";

pub(super) enum Op {
    Insert {
        id: String,
        meta: Vec<u8>,
        /// Shared with the delivery queue, which may send the message from memory.
        body: bytes::Bytes,
        /// (idempotency entry, request fingerprint).
        idempotency: Option<(String, Option<String>)>,
        reply: oneshot::Sender<Result<Inserted, SpoolError>>,
    },
    Update {
        id: String,
        meta: Vec<u8>,
        delete_body: bool,
        /// `provider_id_key`s that name this message from now on.
        provider_ids: Vec<String>,
        /// Outbox entries committed with it.
        outbox: Vec<(String, Vec<u8>)>,
        reply: oneshot::Sender<Result<(), SpoolError>>,
    },
    Remove {
        entries: Vec<Finished>,
        reply: oneshot::Sender<Result<(), SpoolError>>,
    },
    /// Stores (or, with `None`, removes) an entry of a small keyed table.
    Put {
        table: Keyed,
        entries: Vec<(String, Option<Vec<u8>>)>,
        reply: oneshot::Sender<Result<(), SpoolError>>,
    },
}

impl Op {
    fn bytes(&self) -> usize {
        match self {
            Op::Insert { meta, body, .. } => meta.len() + body.len(),
            Op::Update { meta, outbox, .. } => meta.len() + outbox.iter().map(|(_, v)| v.len()).sum::<usize>(),
            Op::Remove { entries, .. } => entries.len() * 64,
            Op::Put { entries, .. } => entries.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len)).sum(),
        }
    }

    fn fail(self, err: SpoolError) {
        match self {
            Op::Insert { reply, .. } => drop(reply.send(Err(err))),
            Op::Update { reply, .. } | Op::Remove { reply, .. } | Op::Put { reply, .. } => drop(reply.send(Err(err))),
        }
    }
}

/// What the writer and the readers share: the open database (swapped when re-opened) and the
/// spool's condition.
pub(super) struct Store {
    pub(super) dir: PathBuf,
    pub(super) path: PathBuf,
    /// `None` while the writer re-opens the file. std RwLock: held only to clone the `Arc`.
    db: RwLock<Option<Arc<Database>>>,
    pub(super) condition: watch::Sender<Condition>,
}

impl Store {
    pub(super) fn new(dir: &Path, path: PathBuf, db: Database) -> Store {
        Store {
            dir: dir.to_path_buf(),
            path,
            db: RwLock::new(Some(Arc::new(db))),
            condition: watch::Sender::new(Condition::Writable),
        }
    }

    /// The open database, for one read.
    pub(super) fn db(&self) -> Result<Arc<Database>, SpoolError> {
        self.current()
            .ok_or_else(|| SpoolError::Storage("the spool file is being re-opened after a storage error".into()))
    }

    fn current(&self) -> Option<Arc<Database>> {
        self.db.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn take(&self) -> Option<Arc<Database>> {
        self.db.write().unwrap_or_else(PoisonError::into_inner).take()
    }

    fn put(&self, db: Database) {
        *self.db.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(db));
    }
}

/// Starts the writer thread.
pub(super) fn spawn(store: Arc<Store>, rx: Receiver<Op>, metrics: Arc<Metrics>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("spool-writer".into()).spawn(move || {
        let watched = store.clone();
        guarded(&watched, move || Writer::new(store, metrics).run(rx));
    })
}

/// Runs the writer; if it panics anyway (a bug: storage faults and storage-engine panics are
/// caught and retried inside), the condition becomes `Failed` so that readiness, ingest and the
/// app see it at once, instead of a live process answering "shutting down" to everyone.
fn guarded(store: &Store, run: impl FnOnce()) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(run)) {
        let reason = panic_text(&*panic);
        tracing::error!(reason, "spool writer thread stopped");
        store.condition.send_replace(Condition::Failed(reason));
    }
}

/// Result of one op inside a batch, sent once the batch is committed.
enum Done {
    Inserted(Inserted),
    Unit,
}

enum Next {
    Op(Op),
    /// Time to try writing again.
    Retry,
    Closed,
}

struct Writer {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    /// Why writes are refused now (mirrored in `store.condition`).
    fault: Option<Fault>,
    backoff: Duration,
    retry_at: Instant,
}

impl Writer {
    fn new(store: Arc<Store>, metrics: Arc<Metrics>) -> Writer {
        Writer { store, metrics, fault: None, backoff: RETRY_FIRST, retry_at: Instant::now() }
    }

    fn run(mut self, rx: Receiver<Op>) {
        loop {
            let first = match self.next(&rx) {
                Next::Op(op) => op,
                Next::Retry => {
                    self.recover();
                    continue;
                }
                Next::Closed => return,
            };
            let batch = gather(first, &rx);
            if self.fault.is_some() && Instant::now() >= self.retry_at {
                self.recover();
            }
            match &self.fault {
                Some(fault) => batch.into_iter().for_each(|op| op.fail(fault.error())),
                None => self.commit(batch),
            }
        }
    }

    /// The next op; while writes are refused, wakes up to retry even when nothing arrives
    /// (delivery waits for the spool, so nothing else would).
    fn next(&self, rx: &Receiver<Op>) -> Next {
        if self.fault.is_none() {
            return rx.recv().map_or(Next::Closed, Next::Op);
        }
        match rx.recv_timeout(self.retry_at.saturating_duration_since(Instant::now())) {
            Ok(op) => Next::Op(op),
            Err(RecvTimeoutError::Timeout) => Next::Retry,
            Err(RecvTimeoutError::Disconnected) => Next::Closed,
        }
    }

    fn commit(&mut self, batch: Vec<Op>) {
        let started = Instant::now();
        let result = self.write(|db| commit_batch(db, &batch));
        self.metrics.spool_commit_duration.observe(started.elapsed().as_secs_f64());
        self.metrics.spool_commit_batch_size.observe(batch.len() as f64);
        match result {
            Ok(done) => answer(batch, done),
            Err(fault) => {
                // Callers first: re-opening may take a while.
                batch.into_iter().for_each(|op| op.fail(fault.error()));
                self.fail(fault);
            }
        }
    }

    /// Runs one write transaction on the open database; errors and storage-engine panics
    /// become a [`Fault`].
    fn write<T>(&self, f: impl FnOnce(&Database) -> Result<T, redb::Error>) -> Result<T, Fault> {
        let Some(db) = self.store.current() else {
            return Err(fault(FaultKind::Io, "the spool file is not open".into()));
        };
        match catch_unwind(AssertUnwindSafe(|| f(&db))) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(fault(classify(&e), e.to_string())),
            Err(panic) => {
                Err(fault(FaultKind::Damaged, format!("the storage engine panicked: {}", panic_text(&*panic))))
            }
        }
    }

    /// A commit failed: refuse writes from now on, re-open the file at once (reads fail until
    /// then) and schedule the first retry.
    fn fail(&mut self, fault: Fault) {
        tracing::error!(
            kind = fault.kind.as_str(), error = %fault.detail,
            "spool write failed: refusing new messages and holding delivery until a write succeeds"
        );
        self.metrics.spool_write_failures.with_label_values(&[fault.kind.as_str()]).inc();
        self.metrics.spool_writable.set(0);
        self.set_fault(fault);
        if let Err(f) = self.reopen() {
            self.set_fault(f);
        }
        self.backoff = RETRY_FIRST;
        self.retry_at = Instant::now() + self.backoff;
    }

    /// Records the current fault, keeping the time writes first failed.
    fn set_fault(&mut self, mut fault: Fault) {
        if let Some(old) = &self.fault {
            fault.since_ms = old.since_ms;
        }
        self.store.condition.send_replace(Condition::Unwritable(fault.clone()));
        self.fault = Some(fault);
    }

    fn recover(&mut self) {
        let Some(kind) = self.fault.as_ref().map(|f| f.kind) else {
            return;
        };
        match self.try_recover(kind) {
            Ok(()) => {
                let since = self.fault.take().map_or(0, |f| f.since_ms);
                tracing::info!(
                    unwritable_ms = now_ms().saturating_sub(since),
                    "spool writable again: accepting messages and delivering"
                );
                self.store.condition.send_replace(Condition::Writable);
                self.metrics.spool_writable.set(1);
            }
            Err(fault) => {
                tracing::debug!(error = %fault, "spool still cannot write");
                self.set_fault(fault);
                self.backoff = (self.backoff * 2).min(RETRY_MAX);
                self.retry_at = Instant::now() + self.backoff;
            }
        }
    }

    /// Room first (after a full disk), then an open database, then a real commit.
    fn try_recover(&mut self, kind: FaultKind) -> Result<(), Fault> {
        if kind == FaultKind::Full {
            space_probe(&self.store.dir).map_err(|e| {
                let kind = if is_full(&e) { FaultKind::Full } else { FaultKind::Io };
                fault(kind, format!("cannot write {SPACE_PROBE_BYTES} bytes in spool.dir: {e}"))
            })?;
        }
        if self.store.current().is_none() {
            self.reopen()?;
        }
        self.write(probe).inspect_err(|_| {
            // The failed probe latched an I/O error in redb: re-open before the next try.
            let _ = self.reopen();
        })
    }

    /// Closes the database (once the reads under way are done) and opens it again, verified.
    fn reopen(&self) -> Result<(), Fault> {
        if let Some(old) = self.store.take() {
            close(old);
        }
        let db = open_existing(&self.store.path).map_err(|e| reopen_fault(&e))?;
        self.store.put(db);
        tracing::info!("spool file re-opened");
        Ok(())
    }
}

fn fault(kind: FaultKind, detail: String) -> Fault {
    Fault { kind, detail, since_ms: now_ms() }
}

fn reopen_fault(e: &OpenError) -> Fault {
    match e {
        OpenError::Damaged { detail, .. } => fault(FaultKind::Damaged, detail.clone()),
        OpenError::Storage { source, .. } => fault(classify(source), format!("cannot re-open: {source}")),
        other => fault(FaultKind::Io, other.to_string()),
    }
}

/// Waits until no read holds the database (reads take milliseconds and no new one can start:
/// the store's slot is empty), then closes it. The close reports the latched I/O error, if
/// any, which is already known.
fn close(mut db: Arc<Database>) {
    loop {
        match Arc::try_unwrap(db) {
            Ok(db) => {
                if let Ok(Err(e)) = catch_unwind(AssertUnwindSafe(|| db.close())) {
                    tracing::debug!(error = %e, "closing the spool file after a failed write");
                }
                return;
            }
            Err(shared) => {
                db = shared;
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

/// Whether `SPACE_PROBE_BYTES` can be written (and synced) in `dir`.
fn space_probe(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(SPACE_PROBE_FILE);
    let written = std::fs::File::create(&path).and_then(|mut f| {
        f.write_all(&vec![0; SPACE_PROBE_BYTES])?;
        f.sync_data()
    });
    let _ = std::fs::remove_file(&path);
    written
}

/// The write that decides the spool can write again: a real commit, fsync included.
fn probe(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    txn.open_table(SPOOL_INFO)?.insert("probe", now_ms().to_be_bytes().as_slice())?;
    txn.commit()?;
    Ok(())
}

/// `first` and whatever else is waiting, up to the batch limits.
fn gather(first: Op, rx: &Receiver<Op>) -> Vec<Op> {
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
    batch
}

/// Answers every op of a committed batch.
fn answer(batch: Vec<Op>, done: Vec<Done>) {
    for (op, done) in batch.into_iter().zip(done) {
        match (op, done) {
            (Op::Insert { reply, .. }, Done::Inserted(r)) => {
                let _ = reply.send(Ok(r));
            }
            (Op::Update { reply, .. }, _) | (Op::Remove { reply, .. }, _) | (Op::Put { reply, .. }, _) => {
                let _ = reply.send(Ok(()));
            }
            (op @ Op::Insert { .. }, Done::Unit) => {
                op.fail(SpoolError::Storage("internal: insert without result".into()))
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

fn commit_batch(db: &Database, batch: &[Op]) -> Result<Vec<Done>, redb::Error> {
    let now = now_ms();
    let txn = db.begin_write()?;
    let mut done = Vec::with_capacity(batch.len());
    {
        let mut meta = txn.open_table(META)?;
        let mut body_table = txn.open_table(BODY)?;
        let mut idem = txn.open_table(IDEMPOTENCY)?;
        let mut health = txn.open_table(PROVIDER_HEALTH)?;
        let mut suppression = txn.open_table(SUPPRESSION)?;
        let mut provider_ids = txn.open_table(PROVIDER_IDS)?;
        let mut outbox_table = txn.open_table(OUTBOX)?;
        for op in batch {
            match op {
                Op::Insert { id, meta: m, body, idempotency, .. } => {
                    if let Some((key, request)) = idempotency {
                        let existing = idem.get(key.as_str())?.map(|v| v.value().to_string());
                        if let Some(found) = existing.as_deref().and_then(|v| reuse(v, request.as_deref(), now)) {
                            done.push(Done::Inserted(found));
                            continue;
                        }
                        // "id \t committed at \t request fingerprint" (older entries lack the last).
                        let value = format!("{id}\t{now}\t{}", request.as_deref().unwrap_or(""));
                        idem.insert(key.as_str(), value.as_str())?;
                    }
                    meta.insert(id.as_str(), m.as_slice())?;
                    body_table.insert(id.as_str(), body.as_ref())?;
                    done.push(Done::Inserted(Inserted::New));
                }
                Op::Update { id, meta: m, delete_body, provider_ids: ids, outbox, .. } => {
                    for (key, value) in outbox {
                        outbox_table.insert(key.as_str(), value.as_slice())?;
                    }
                    meta.insert(id.as_str(), m.as_slice())?;
                    if *delete_body {
                        body_table.remove(id.as_str())?;
                    }
                    for key in ids {
                        provider_ids.insert(key.as_str(), id.as_str())?;
                    }
                    done.push(Done::Unit);
                }
                Op::Remove { entries, .. } => {
                    for Finished { id, idem: key, provider_ids: ids, .. } in entries {
                        meta.remove(id.as_str())?;
                        body_table.remove(id.as_str())?;
                        for key in ids {
                            // Only if it still names this message (a provider may reuse ids).
                            if provider_ids.get(key.as_str())?.is_some_and(|v| v.value() == id.as_str()) {
                                provider_ids.remove(key.as_str())?;
                            }
                        }
                        if let Some(key) = key {
                            // Only drop the key if it still points at this message.
                            let points_here = idem
                                .get(key.as_str())?
                                .is_some_and(|v| v.value().split('\t').next() == Some(id.as_str()));
                            if points_here {
                                idem.remove(key.as_str())?;
                            }
                        }
                    }
                    done.push(Done::Unit);
                }
                Op::Put { table, entries, .. } => {
                    let table = match table {
                        Keyed::ProviderHealth => &mut health,
                        Keyed::Suppression => &mut suppression,
                        Keyed::Outbox => &mut outbox_table,
                    };
                    for (key, value) in entries {
                        match value {
                            Some(v) => table.insert(key.as_str(), v.as_slice())?,
                            None => table.remove(key.as_str())?,
                        };
                    }
                    done.push(Done::Unit);
                }
            }
        }
    }
    txn.commit()?;
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

    #[test]
    fn a_writer_that_dies_leaves_the_spool_failed_not_ready() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.redb");
        let store = Store::new(dir.path(), path.clone(), Database::create(&path).unwrap());
        guarded(&store, || panic!("bug in the writer"));
        let condition = store.condition.borrow().clone();
        assert_eq!(condition, Condition::Failed("bug in the writer".into()));
        assert!(!condition.is_writable());
    }
}
