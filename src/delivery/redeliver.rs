//! Re-delivery of what a silent provider swallowed (`canary.redeliver_unconfirmed`): when the
//! canaries say a provider accepts mail and drops it, every finished message it accepted since
//! its last confirmed canary goes back on the queue for the rest of its route. Its promise:
//! those recipients are delivered again (each attempt marked a possible duplicate, since the
//! provider may have delivered after all), and nothing it accepted before the last confirmed
//! canary is sent twice.

use crate::event::EventType;
use crate::health::canary::Silenced;
use crate::outcome::OutcomeClass;
use crate::shared::Shared;
use crate::spool::record::{MessageRecord, MessageStatus, RecipientStatus, now_ms};
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedReceiver;

/// Re-queues, for each provider reported silent, what it took since `since_ms`.
pub async fn run(shared: Arc<Shared>, mut silenced: UnboundedReceiver<Silenced>) {
    while let Some(s) = silenced.recv().await {
        let ids = shared.retention.finished_since(s.since_ms);
        let mut requeued = 0;
        for id in ids {
            // Held while it is looked at, so the sweeper cannot remove it under us.
            let Some(held) = shared.retention.take(&id) else { continue };
            let spool = shared.spool.clone();
            let record = tokio::task::spawn_blocking(move || spool.get(&id)).await;
            let Ok(Ok(Some(mut record))) = record else {
                shared.retention.put_back([held]);
                continue;
            };
            if !reopen(&mut record, &s) {
                shared.retention.put_back([held]);
                continue;
            }
            if let Err(e) = shared.spool.update(&record).await {
                tracing::error!(message_id = %record.id, error = %e, "cannot re-queue a message the silent provider took");
                shared.retention.put_back([held]);
                continue;
            }
            shared.queue.schedule(&record.id, record.next_attempt_ms, record.created_ms);
            shared.metrics.redelivered.with_label_values(&[&s.provider]).inc();
            tracing::info!(message_id = %record.id, provider = %s.provider, "re-queued: the provider that took it went silent");
            requeued += 1;
        }
        tracing::warn!(provider = %s.provider, since_ms = s.since_ms, requeued, "re-delivering what the silent provider accepted since its last confirmed canary");
    }
}

/// Puts the recipients `s.provider` took at or after `s.since_ms` back to pending; false when
/// there are none (or the body was not kept).
fn reopen(record: &mut MessageRecord, s: &Silenced) -> bool {
    let accepted_at = record
        .attempts
        .iter()
        .rev()
        .find(|a| a.provider == s.provider && a.outcome == OutcomeClass::Accepted)
        .map(|a| a.at_ms);
    // A template pass-through can go only to the provider that went silent: not re-delivered.
    if !record.status.is_final()
        || !record.body_kept
        || record.passthrough.is_some()
        || accepted_at.is_none_or(|at| at < s.since_ms)
    {
        return false;
    }
    let detail = format!("re-delivery: {} accepted it but went silent (its canaries were lost)", s.provider);
    let mut any = false;
    for r in record.recipients.iter_mut() {
        if r.status == RecipientStatus::Delivered && r.provider.as_deref() == Some(s.provider.as_str()) {
            r.status = RecipientStatus::Pending;
            r.detail = Some(detail.clone());
            r.note(EventType::Redelivered, Some(&s.provider), None, detail.clone());
            any = true;
        }
    }
    if any {
        record.status = MessageStatus::Queued;
        record.completed_ms = None;
        record.body_kept = false;
        record.redelivered_from = Some(s.provider.clone());
        record.next_attempt_ms = now_ms();
    }
    any
}
