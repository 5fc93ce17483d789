//! Opening the spool file. A new spool is created whole or not at all; an existing file is used
//! only if it is a Baton spool whose every page verifies. Anything else (an empty file, another
//! program's file, a damaged one) is refused with an error that says what was found and what to
//! do: never a panic, and never an empty spool standing in for a lost one.
//!
//! Records that redb reads fine but Baton cannot (their JSON does not parse) are moved aside
//! into the `quarantine` tables with their raw bytes, logged with their id and reported.

use super::fault::panic_text;
use super::record::MessageRecord;
use super::{
    BODY, Finished, IDEMPOTENCY, META, OUTBOX, PROVIDER_HEALTH, PROVIDER_IDS, PendingEntry, QUARANTINE,
    QUARANTINE_BODY, Recovered, SPOOL_INFO, SUPPRESSION,
};
use redb::{Builder, Database, ReadableDatabase, ReadableTable, TableHandle};
use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// The spool file inside `spool.dir`.
pub(super) const FILE: &str = "spool.redb";
/// A new spool is built under this name and renamed into place once complete.
const NEW_FILE: &str = "spool.redb.new";
/// `spool_info` key naming the format; its presence says "this redb file is a Baton spool".
const FORMAT_KEY: &str = "format";
const FORMAT: &[u8] = b"baton-spool-1";
/// The first bytes of every redb file (redb's `MAGICNUMBER`, not exported by the crate).
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];
/// Page cache: recently used pages only; bodies are read from disk when delivered, so memory
/// stays flat however many messages wait.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the spool directory {dir}: {source}")]
    Dir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a Baton spool: {what}. Baton creates its spool when the file is absent; \
         if this file should hold messages, restore it from a backup, otherwise move it away"
    )]
    NotASpool { path: PathBuf, what: String },
    #[error(
        "{path} is damaged: {detail}. Baton will not start on it (nothing in it is dropped or sent \
         twice): keep the file for inspection, and restore the spool from a backup or move it away \
         to start with an empty one"
    )]
    Damaged { path: PathBuf, detail: String },
    #[error(
        "{path} is held by another Baton (or another program): two Batons cannot share a spool. \
         Stop the other one, or give this one its own spool.dir"
    )]
    Locked { path: PathBuf },
    #[error("cannot open {path}: {source}")]
    Storage {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },
    #[error("cannot start the spool writer thread: {0}")]
    Writer(#[source] std::io::Error),
}

/// Opens the spool under `dir`, creating it if (and only if) the file is absent.
pub(super) fn open_or_create(dir: &Path) -> Result<Database, OpenError> {
    std::fs::create_dir_all(dir).map_err(|source| OpenError::Dir { dir: dir.to_path_buf(), source })?;
    let path = dir.join(FILE);
    if !check_file(&path)? {
        create_new(dir, &path)?;
    }
    let db = open_existing(&path)?;
    check_tables(&db, &path)?;
    Ok(db)
}

/// Whether a spool file is there (`false`: absent, a new spool may be created). Refuses what
/// cannot be one before redb sees it: redb would initialise an empty file as a new database.
fn check_file(path: &Path) -> Result<bool, OpenError> {
    let not_a_spool = |what: &str| OpenError::NotASpool { path: path.to_path_buf(), what: what.to_string() };
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(OpenError::Storage { path: path.to_path_buf(), source: e.into() }),
    };
    if !meta.is_file() {
        return Err(not_a_spool("it is not a regular file"));
    }
    if meta.len() == 0 {
        return Err(not_a_spool("the file is empty (0 bytes)"));
    }
    let mut head = [0u8; REDB_MAGIC.len()];
    let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head));
    match read {
        Ok(()) if head == REDB_MAGIC => Ok(true),
        Ok(()) => Err(not_a_spool("the file is not a redb database (wrong magic number)")),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(not_a_spool("the file is too short to be a redb database"))
        }
        Err(e) => Err(OpenError::Storage { path: path.to_path_buf(), source: e.into() }),
    }
}

/// Builds a new spool beside the final name and renames it into place, so a crash while
/// creating never leaves a half-made file that a later start would have to refuse.
fn create_new(dir: &Path, path: &Path) -> Result<(), OpenError> {
    let new = dir.join(NEW_FILE);
    let failed = |source: redb::Error| OpenError::Storage { path: new.clone(), source };
    match std::fs::remove_file(&new) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(failed(e.into())),
        _ => {}
    }
    let db = Builder::new().create(&new).map_err(|e| failed(e.into()))?;
    let txn = db.begin_write().map_err(|e| failed(e.into()))?;
    create_tables(&txn).and_then(|()| mark(&txn)).map_err(failed)?;
    txn.commit().map_err(|e| failed(e.into()))?;
    db.close().map_err(|e| failed(e.into()))?;
    std::fs::rename(&new, path).map_err(|e| failed(e.into()))?;
    // The rename is durable only once the directory is synced.
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| failed(e.into()))?;
    tracing::info!(path = %path.display(), "new spool created");
    Ok(())
}

fn create_tables(txn: &redb::WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(META)?;
    txn.open_table(BODY)?;
    txn.open_table(IDEMPOTENCY)?;
    txn.open_table(PROVIDER_HEALTH)?;
    txn.open_table(SUPPRESSION)?;
    txn.open_table(PROVIDER_IDS)?;
    txn.open_table(OUTBOX)?;
    txn.open_table(QUARANTINE)?;
    txn.open_table(QUARANTINE_BODY)?;
    txn.open_table(SPOOL_INFO)?;
    Ok(())
}

/// Writes the format marker.
fn mark(txn: &redb::WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(SPOOL_INFO)?.insert(FORMAT_KEY, FORMAT)?;
    Ok(())
}

/// Opens an existing spool file, verifying every page first. redb's plain open trusts the file
/// and may panic on a damaged one, or hand back a record with a flipped byte; with the check it
/// reports `Corrupted` instead. The check reads the whole file (about 1 s per GB, measured on a
/// 1.1 GB spool of 100,000 messages), at start and after a storage fault only. redb's own debug
/// assertions can still panic on damage, so the open runs under `catch_unwind` too.
pub(super) fn open_existing(path: &Path) -> Result<Database, OpenError> {
    let opened = catch_unwind(AssertUnwindSafe(|| {
        Builder::new().set_cache_size(CACHE_BYTES).set_check_integrity_on_open(true).open(path)
    }));
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(open_error(path, e)),
        Err(panic) => Err(OpenError::Damaged {
            path: path.to_path_buf(),
            detail: format!("the storage engine failed reading it ({})", panic_text(&*panic)),
        }),
    }
}

fn open_error(path: &Path, e: redb::DatabaseError) -> OpenError {
    let path = path.to_path_buf();
    match redb::Error::from(e) {
        redb::Error::DatabaseAlreadyOpen => OpenError::Locked { path },
        redb::Error::Corrupted(detail) => OpenError::Damaged { path, detail },
        redb::Error::RepairAborted => OpenError::Damaged { path, detail: "repair aborted".into() },
        redb::Error::UpgradeRequired(v) => {
            OpenError::NotASpool { path, what: format!("it uses redb file format {v}, which this build cannot read") }
        }
        // redb reports "not a database" and unreadable structures as InvalidData.
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            OpenError::Damaged { path, detail: io.to_string() }
        }
        source => OpenError::Storage { path, source },
    }
}

/// A redb file is a Baton spool if it carries the format marker, or (spools made before the
/// marker existed) the `meta` table; the marker is then added. Any other redb file is refused.
fn check_tables(db: &Database, path: &Path) -> Result<(), OpenError> {
    let failed = |source: redb::Error| OpenError::Storage { path: path.to_path_buf(), source };
    let names: Vec<String> = {
        let txn = db.begin_read().map_err(|e| failed(e.into()))?;
        let tables = txn.list_tables().map_err(|e| failed(e.into()))?;
        tables.map(|t| t.name().to_string()).collect()
    };
    let has = |t: &str| names.iter().any(|n| n == t);
    if !has(SPOOL_INFO.name()) && !has(META.name()) {
        return Err(OpenError::NotASpool {
            path: path.to_path_buf(),
            what: format!("it is a redb database without Baton's tables (it has: {})", names.join(", ")),
        });
    }
    let txn = db.begin_write().map_err(|e| failed(e.into()))?;
    create_tables(&txn).map_err(failed)?;
    if !has(SPOOL_INFO.name()) {
        mark(&txn).map_err(failed)?;
    }
    txn.commit().map_err(|e| failed(e.into()))
}

/// What the start-up scan found.
pub(super) struct Scan {
    pub recovered: Recovered,
    /// Body bytes of unfinished messages.
    pub bytes: u64,
    /// Ids in quarantine (moved aside now or at an earlier start).
    pub quarantined: Vec<String>,
}

/// A record Baton cannot use, with why.
struct Unreadable {
    id: String,
    raw: Vec<u8>,
    why: String,
}

/// Reads every record back, moving unreadable ones into quarantine. Runs under `catch_unwind`
/// like the open: a failure here stops the start with a clear error.
pub(super) fn scan(db: &Database, path: &Path) -> Result<Scan, OpenError> {
    match catch_unwind(AssertUnwindSafe(|| scan_inner(db))) {
        Ok(Ok(scan)) => Ok(scan),
        Ok(Err(redb::Error::Corrupted(detail))) => Err(OpenError::Damaged { path: path.to_path_buf(), detail }),
        Ok(Err(source)) => Err(OpenError::Storage { path: path.to_path_buf(), source }),
        Err(panic) => Err(OpenError::Damaged {
            path: path.to_path_buf(),
            detail: format!("the storage engine failed reading records ({})", panic_text(&*panic)),
        }),
    }
}

fn scan_inner(db: &Database) -> Result<Scan, redb::Error> {
    let mut recovered = Recovered {
        pending: Vec::new(),
        completed: Vec::new(),
        provider_health: Vec::new(),
        suppression: Vec::new(),
        outbox: Vec::new(),
    };
    let mut bytes = 0;
    let mut unreadable = Vec::new();
    {
        let txn = db.begin_read()?;
        let meta = txn.open_table(META)?;
        for entry in meta.iter()? {
            let (k, v) = entry?;
            match parse(k.value(), v.value()) {
                Ok(record) => bytes += recover(&mut recovered, record),
                Err(why) => unreadable.push(Unreadable { id: k.value().to_string(), raw: v.value().to_vec(), why }),
            }
        }
        let health = txn.open_table(PROVIDER_HEALTH)?;
        for entry in health.iter()? {
            let (k, v) = entry?;
            recovered.provider_health.push((k.value().to_string(), v.value().to_vec()));
        }
        let suppression = txn.open_table(SUPPRESSION)?;
        for entry in suppression.iter()? {
            let (k, v) = entry?;
            recovered.suppression.push((k.value().to_string(), v.value().to_vec()));
        }
        let outbox = txn.open_table(OUTBOX)?;
        for entry in outbox.iter()? {
            let (k, v) = entry?;
            recovered.outbox.push((k.value().to_string(), v.value().to_vec()));
        }
    }
    recovered.completed.sort_by_key(|f| f.at_ms);
    quarantine(db, &unreadable);
    let mut quarantined: Vec<String> = {
        let txn = db.begin_read()?;
        let table = txn.open_table(QUARANTINE)?;
        table.iter()?.map(|e| e.map(|(k, _)| k.value().to_string())).collect::<Result<_, _>>()?
    };
    // Records that could not be moved (see `quarantine`) are still reported.
    for u in &unreadable {
        if !quarantined.contains(&u.id) {
            quarantined.push(u.id.clone());
        }
    }
    if !quarantined.is_empty() {
        tracing::warn!(count = quarantined.len(), "spool holds quarantined records (see /admin/queue)");
    }
    Ok(Scan { recovered, bytes, quarantined })
}

/// A record, if its bytes are one and it is stored under its own id (a record under another
/// key would be scheduled under an id that reads back as nothing, and silently dropped).
fn parse(key: &str, raw: &[u8]) -> Result<MessageRecord, String> {
    let record: MessageRecord = serde_json::from_slice(raw).map_err(|e| format!("not a readable record: {e}"))?;
    if record.id != key {
        return Err(format!("record of {:?} stored under another id", record.id));
    }
    Ok(record)
}

/// Files a readable record under pending or completed; returns the bytes it holds in the spool.
fn recover(recovered: &mut Recovered, record: MessageRecord) -> u64 {
    if record.status.is_final() {
        let finished = Finished::of(&record);
        let kept = finished.kept_bytes;
        recovered.completed.push(finished);
        kept
    } else {
        recovered.pending.push(PendingEntry {
            id: record.id,
            next_attempt_ms: record.next_attempt_ms,
            created_ms: record.created_ms,
        });
        record.size
    }
}

/// Moves unreadable records (and their bodies) into the quarantine tables, raw bytes kept for
/// whoever salvages them. If that cannot be committed (a full disk at start), they stay where
/// they are, are reported all the same, and the next start tries again.
fn quarantine(db: &Database, unreadable: &[Unreadable]) {
    if unreadable.is_empty() {
        return;
    }
    for u in unreadable {
        tracing::error!(message_id = %u.id, error = %u.why, "unreadable spool record moved to quarantine; it will not be delivered");
    }
    let moved = (|| -> Result<(), redb::Error> {
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let mut body = txn.open_table(BODY)?;
            let mut q = txn.open_table(QUARANTINE)?;
            let mut q_body = txn.open_table(QUARANTINE_BODY)?;
            for u in unreadable {
                q.insert(u.id.as_str(), u.raw.as_slice())?;
                let b = body.remove(u.id.as_str())?.map(|b| b.value().to_vec());
                if let Some(b) = b {
                    q_body.insert(u.id.as_str(), b.as_slice())?;
                }
                meta.remove(u.id.as_str())?;
            }
        }
        txn.commit()?;
        Ok(())
    })();
    if let Err(e) = moved {
        tracing::error!(error = %e, count = unreadable.len(), "cannot move unreadable records to quarantine; they stay in place and are tried again at the next start");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::spool::Spool;
    use std::sync::Arc;

    fn open(dir: &Path) -> Result<(Arc<Spool>, Recovered), OpenError> {
        Spool::open(dir, u64::MAX, Arc::new(Metrics::new()))
    }

    fn refused(contents: &[u8]) -> OpenError {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), contents).unwrap();
        let err = open(dir.path()).err().expect("refused");
        // Refused means untouched: the file is left as it was found.
        assert_eq!(std::fs::read(dir.path().join(FILE)).unwrap(), contents);
        err
    }

    #[test]
    fn an_absent_file_is_a_new_spool_and_nothing_else_is() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, recovered) = open(dir.path()).expect("new spool");
        assert!(recovered.pending.is_empty() && spool.quarantined().is_empty());
        drop(spool);
        assert!(!dir.path().join(NEW_FILE).exists(), "built beside, then renamed into place");
        open(dir.path()).expect("and opened again");

        assert!(matches!(refused(b""), OpenError::NotASpool { what, .. } if what.contains("empty")));
        assert!(matches!(refused(b"hello, I am a text file\n"), OpenError::NotASpool { .. }));
        assert!(matches!(refused(&[0x5a; 4096]), OpenError::NotASpool { .. }));
        assert!(matches!(refused(&REDB_MAGIC[..4]), OpenError::NotASpool { .. }));
    }

    #[test]
    fn another_programs_redb_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<&str, u64>::new("users")).unwrap().insert("ada", 1).unwrap();
        txn.commit().unwrap();
        drop(db);
        let err = open(dir.path()).err().expect("refused");
        assert!(matches!(&err, OpenError::NotASpool { what, .. } if what.contains("users")), "{err}");
    }

    #[test]
    fn unreadable_records_are_moved_to_quarantine_with_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()).unwrap());
        let path = dir.path().join(FILE);
        {
            let db = Database::open(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut meta = txn.open_table(META).unwrap();
                meta.insert("01BROKEN", b"{\"id\": \"01BRO".as_slice()).unwrap();
                txn.open_table(BODY).unwrap().insert("01BROKEN", b"Subject: x\r\n\r\nbody".as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let (spool, recovered) = open(dir.path()).unwrap();
        assert_eq!(spool.quarantined(), ["01BROKEN"]);
        assert!(recovered.pending.is_empty());
        drop(spool);
        // Moved, not copied; and still reported at the next start.
        let (spool, _) = open(dir.path()).unwrap();
        assert_eq!(spool.quarantined(), ["01BROKEN"]);
        drop(spool);
        let db = Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        assert!(txn.open_table(META).unwrap().get("01BROKEN").unwrap().is_none());
        assert!(txn.open_table(BODY).unwrap().get("01BROKEN").unwrap().is_none());
        let raw = txn.open_table(QUARANTINE).unwrap().get("01BROKEN").unwrap().unwrap().value().to_vec();
        assert_eq!(raw, b"{\"id\": \"01BRO");
        let body = txn.open_table(QUARANTINE_BODY).unwrap().get("01BROKEN").unwrap().unwrap().value().to_vec();
        assert_eq!(body, b"Subject: x\r\n\r\nbody");
    }
}
