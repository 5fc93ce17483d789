//! Which spooled messages are due when. Holds ids and times (bodies and records stay on disk),
//! so 100,000 waiting messages cost a few megabytes; and, up to [`KEPT_BYTES`], the record and
//! body of messages just accepted, so that their first delivery pass starts from memory instead
//! of reading back from disk what ingest has just written there (the copy on disk is the same:
//! it was committed before the message was scheduled).

use crate::spool::record::MessageRecord;
use bytes::Bytes;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Most bytes of accepted messages kept in memory for their first pass (about 9,000 1 KB
/// messages: a second of backlog at full speed). Past it, passes read from the spool. At 32 MiB
/// the RSS of a busy Baton reached the 150 MB budget (docs/benchmarks.md).
pub const KEPT_BYTES: usize = 16 * 1024 * 1024;
/// What a kept record costs besides its body (struct, strings, map entry), roughly.
const KEPT_RECORD_OVERHEAD: usize = 512;

/// A message's committed record and body, kept for its first delivery pass.
pub struct Kept {
    pub record: MessageRecord,
    pub body: Bytes,
}

impl Kept {
    fn cost(&self) -> usize {
        self.body.len() + KEPT_RECORD_OVERHEAD
    }
}

#[derive(Default)]
struct State {
    /// (due ms, id) of messages waiting for their next pass.
    by_due: BTreeSet<(u64, Arc<str>)>,
    /// id → (due ms, created ms) for waiting messages.
    waiting: HashMap<Arc<str>, (u64, u64)>,
    /// id → created ms for messages being delivered right now.
    in_flight: HashMap<Arc<str>, u64>,
    /// (created ms, id) of every unfinished message, for the oldest-age gauge.
    by_created: BTreeSet<(u64, Arc<str>)>,
    /// Messages waiting for their first pass whose record and body are in memory.
    kept: HashMap<Arc<str>, Kept>,
    /// What `kept` holds, by [`Kept::cost`].
    kept_bytes: usize,
}

impl State {
    fn drop_kept(&mut self, id: &str) -> Option<Kept> {
        let kept = self.kept.remove(id)?;
        self.kept_bytes -= kept.cost();
        Some(kept)
    }
}

#[derive(Default)]
pub struct Queue {
    state: Mutex<State>,
    notify: Notify,
}

/// Counts for the `baton_queue_messages` gauges.
pub struct QueueStats {
    pub ready: usize,
    pub scheduled: usize,
    pub in_flight: usize,
    pub oldest_created_ms: Option<u64>,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a message (new, or back from a delivery pass) to be delivered at `due_ms`.
    pub fn schedule(&self, id: &str, due_ms: u64, created_ms: u64) {
        self.schedule_with(id, due_ms, created_ms, None);
    }

    /// Adds a message just accepted, keeping its committed record and body in memory for its
    /// first pass while they fit in [`KEPT_BYTES`].
    pub fn schedule_kept(&self, record: MessageRecord, body: Bytes) {
        let (due, created) = (record.next_attempt_ms, record.created_ms);
        let id = record.id.clone();
        self.schedule_with(&id, due, created, Some(Kept { record, body }));
    }

    fn schedule_with(&self, id: &str, due_ms: u64, created_ms: u64, kept: Option<Kept>) {
        let mut s = self.lock();
        // Whatever was kept is older than what the spool now has: never send from it.
        s.drop_kept(id);
        let key: Arc<str> = match s.in_flight.remove_entry(id) {
            Some((k, _)) => k,
            None => Arc::from(id),
        };
        if let Some((old_due, _)) = s.waiting.insert(key.clone(), (due_ms, created_ms)) {
            s.by_due.remove(&(old_due, key.clone()));
        }
        s.by_due.insert((due_ms, key.clone()));
        s.by_created.insert((created_ms, key.clone()));
        if let Some(kept) = kept.filter(|k| s.kept_bytes + k.cost() <= KEPT_BYTES) {
            s.kept_bytes += kept.cost();
            s.kept.insert(key, kept);
        }
        drop(s);
        self.notify.notify_one();
    }

    /// The record and body kept for `id`'s first pass, if any (taken: a later pass reads the
    /// spool, which by then holds what the first pass wrote).
    pub fn take_kept(&self, id: &str) -> Option<Kept> {
        self.lock().drop_kept(id)
    }

    /// Bytes of messages kept in memory for their first pass.
    pub fn kept_bytes(&self) -> usize {
        self.lock().kept_bytes
    }

    /// Takes the next due message (marking it in flight), or tells when the next one is due.
    pub fn take_due(&self, now_ms: u64) -> Result<Arc<str>, Option<u64>> {
        let mut s = self.lock();
        match s.by_due.first() {
            Some((due, _)) if *due <= now_ms => {
                let (_, id) = s.by_due.pop_first().expect("first exists");
                let (_, created) = s.waiting.remove(&id).unwrap_or((0, 0));
                s.in_flight.insert(id.clone(), created);
                Ok(id)
            }
            Some((due, _)) => Err(Some(*due)),
            None => Err(None),
        }
    }

    /// The message is finished (or gone): forget it.
    pub fn finish(&self, id: &str) {
        let mut s = self.lock();
        s.drop_kept(id);
        let created = s.in_flight.remove(id).or_else(|| {
            let (due, created) = s.waiting.remove(id)?;
            s.by_due.remove(&(due, Arc::from(id)));
            Some(created)
        });
        if let Some(created) = created {
            s.by_created.remove(&(created, Arc::from(id)));
        }
    }

    /// Waits until something is scheduled (a permit is kept if nobody was waiting).
    pub async fn changed(&self) {
        self.notify.notified().await
    }

    pub fn stats(&self, now_ms: u64) -> QueueStats {
        let s = self.lock();
        let ready = s.by_due.range(..(now_ms + 1, Arc::from(""))).count();
        QueueStats {
            ready,
            scheduled: s.by_due.len() - ready,
            in_flight: s.in_flight.len(),
            oldest_created_ms: s.by_created.first().map(|(c, _)| *c),
        }
    }

    pub fn len(&self) -> usize {
        let s = self.lock();
        s.waiting.len() + s.in_flight.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_order_and_flight() {
        let q = Queue::default();
        q.schedule("b", 20, 2);
        q.schedule("a", 10, 1);
        assert_eq!(q.take_due(5), Err(Some(10)));
        assert_eq!(&*q.take_due(15).unwrap(), "a");
        assert_eq!(q.take_due(15), Err(Some(20)));
        let st = q.stats(15);
        assert_eq!((st.ready, st.scheduled, st.in_flight, st.oldest_created_ms), (0, 1, 1, Some(1)));
        q.schedule("a", 30, 1); // back from a failed pass
        assert_eq!(&*q.take_due(25).unwrap(), "b");
        q.finish("b");
        q.finish("a");
        assert!(q.is_empty());
        assert_eq!(q.stats(100).oldest_created_ms, None);
    }

    fn accepted(id: &str, body_len: usize) -> (MessageRecord, Bytes) {
        let record = serde_json::from_value(serde_json::json!({
            "id": id, "client": "app", "ingress": "http", "mail_from": "a@example.com",
            "recipients": [{"email": "b@example.net", "status": "pending"}],
            "created_ms": 1, "next_attempt_ms": 1, "status": "queued", "size": body_len,
        }))
        .unwrap();
        (record, Bytes::from(vec![b'x'; body_len]))
    }

    #[test]
    fn a_kept_message_serves_its_first_pass_only_and_within_the_budget() {
        let q = Queue::default();
        let (record, body) = accepted("a", 1000);
        q.schedule_kept(record, body);
        assert_eq!(q.kept_bytes(), 1000 + KEPT_RECORD_OVERHEAD);
        assert_eq!(&*q.take_due(5).unwrap(), "a");
        let kept = q.take_kept("a").expect("kept for the first pass");
        assert_eq!((kept.record.id.as_str(), kept.body.len()), ("a", 1000));
        assert!(q.take_kept("a").is_none(), "taken once");
        assert_eq!(q.kept_bytes(), 0);

        // Rescheduling or finishing drops what was kept: later passes read the spool.
        let (record, body) = accepted("b", 10);
        q.schedule_kept(record, body);
        q.schedule("b", 50, 1);
        assert!(q.take_kept("b").is_none());
        let (record, body) = accepted("c", 10);
        q.schedule_kept(record, body);
        q.finish("c");
        assert_eq!(q.kept_bytes(), 0);

        // Past the budget a message is still queued, just not kept.
        let (record, body) = accepted("big", KEPT_BYTES);
        q.schedule_kept(record, body);
        assert_eq!(q.kept_bytes(), 0);
        assert!(q.take_kept("big").is_none());
        assert_eq!(q.len(), 3, "a in flight, b waiting for its retry, big waiting");
    }
}
