//! What can go wrong under the spool, as values: the kind of a failed write and the spool's
//! condition. Readiness, ingest and delivery act on the condition, never on an error text:
//! while it is not [`Condition::Writable`], new messages are refused and no delivery starts.

use super::SpoolError;

/// Why a write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The filesystem (or the user's quota) has no room left: ENOSPC, EDQUOT.
    Full,
    /// Any other I/O error from the storage.
    Io,
    /// The file holds what redb did not write (a checksum mismatch), or redb panicked on it.
    Damaged,
}

impl FaultKind {
    pub const ALL: [FaultKind; 3] = [FaultKind::Full, FaultKind::Io, FaultKind::Damaged];

    /// The `reason` label of `baton_spool_write_failures_total` (see `metrics::SPOOL_FAULTS`).
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Full => "full",
            FaultKind::Io => "io",
            FaultKind::Damaged => "damaged",
        }
    }

    /// What an operator reads in `/readyz` and the logs.
    fn explain(self) -> &'static str {
        match self {
            FaultKind::Full => "the filesystem holding spool.dir is full",
            FaultKind::Io => "the storage under spool.dir reports I/O errors",
            FaultKind::Damaged => "the spool file is damaged",
        }
    }
}

/// A failed write: its kind, redb's words, and since when the spool has been unable to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    pub detail: String,
    pub since_ms: u64,
}

impl Fault {
    /// What a write is answered while this fault lasts. A full disk is "spool full" (ingest
    /// answers 503 `spool_full` / SMTP 452 4.3.1, and the client retries later).
    pub(crate) fn error(&self) -> SpoolError {
        match self.kind {
            FaultKind::Full => SpoolError::Full,
            FaultKind::Io | FaultKind::Damaged => SpoolError::Storage(self.to_string()),
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "spool cannot write: {} ({})", self.kind.explain(), self.detail)
    }
}

/// Whether the spool can take writes now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    Writable,
    /// The last write failed. Writes are refused and delivery is held until the writer has
    /// re-opened the file and a probe write succeeds (it retries on its own).
    Unwritable(Fault),
    /// The writer thread is gone: nothing can be written until Baton restarts (it stops itself).
    Failed(String),
}

impl Condition {
    pub fn is_writable(&self) -> bool {
        matches!(self, Condition::Writable)
    }

    /// The error a write gets in this condition; `None`: go ahead.
    pub(crate) fn refusal(&self) -> Option<SpoolError> {
        match self {
            Condition::Writable => None,
            Condition::Unwritable(fault) => Some(fault.error()),
            // Baton is stopping because of it: "shutting down" is what clients should hear.
            Condition::Failed(_) => Some(SpoolError::Closed),
        }
    }

    /// One line for `/readyz` and `/admin/queue`.
    pub fn describe(&self) -> String {
        match self {
            Condition::Writable => "spool writable".to_string(),
            Condition::Unwritable(fault) => fault.to_string(),
            Condition::Failed(reason) => format!("spool writer stopped: {reason}"),
        }
    }
}

/// Classifies a redb error from a write.
pub(crate) fn classify(e: &redb::Error) -> FaultKind {
    match e {
        redb::Error::Io(io) if is_full(io) => FaultKind::Full,
        redb::Error::Corrupted(_) => FaultKind::Damaged,
        _ => FaultKind::Io,
    }
}

/// ENOSPC and EDQUOT (std maps both to these kinds on every Unix).
pub(crate) fn is_full(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
}

/// The message of a caught panic.
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic without a message".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_or_quota_is_spool_full_and_other_io_errors_are_not() {
        let io = |code| redb::Error::Io(std::io::Error::from_raw_os_error(code));
        // Linux: ENOSPC 28, EDQUOT 122, EIO 5.
        assert_eq!(classify(&io(28)), FaultKind::Full);
        assert_eq!(classify(&io(122)), FaultKind::Full);
        assert_eq!(classify(&io(5)), FaultKind::Io);
        assert_eq!(classify(&redb::Error::PreviousIo), FaultKind::Io);
        assert_eq!(classify(&redb::Error::Corrupted("bad checksum".into())), FaultKind::Damaged);
        let fault = |kind| Fault { kind, detail: "x".into(), since_ms: 0 };
        assert!(matches!(fault(FaultKind::Full).error(), SpoolError::Full));
        assert!(matches!(fault(FaultKind::Io).error(), SpoolError::Storage(_)));
    }

    #[test]
    fn only_a_writable_spool_lets_writes_through() {
        assert!(Condition::Writable.refusal().is_none());
        let full = Condition::Unwritable(Fault { kind: FaultKind::Full, detail: "ENOSPC".into(), since_ms: 0 });
        assert!(matches!(full.refusal(), Some(SpoolError::Full)));
        assert!(full.describe().contains("full"), "{}", full.describe());
        assert!(matches!(Condition::Failed("gone".into()).refusal(), Some(SpoolError::Closed)));
    }

    #[test]
    fn fault_labels_are_the_metric_contract() {
        let labels: Vec<&str> = FaultKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(labels, crate::metrics::SPOOL_FAULTS);
    }
}
