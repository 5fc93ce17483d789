//! Delivery: takes due messages off the queue and runs a delivery pass for each, at most
//! `delivery.concurrency` at a time.

mod pass;
pub mod queue;
pub mod redeliver;

use crate::shared::Shared;
use crate::spool::record::now_ms;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Runs until `stop` is cancelled, then waits up to `grace` for passes under way. Passes still
/// running after that are abandoned: their messages stay pending in the spool and are picked up
/// again at the next start.
pub async fn run(shared: Arc<Shared>, stop: CancellationToken, grace: Duration) {
    let concurrency = shared.runtime.load().config.delivery.concurrency;
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut passes = JoinSet::new();
    'outer: loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("semaphore never closed"),
            _ = stop.cancelled() => break,
        };
        let id = loop {
            // Reap finished passes so the set does not grow.
            while passes.try_join_next().is_some() {}
            match shared.queue.take_due(now_ms()) {
                Ok(id) => break id,
                Err(next) => {
                    let wait = next.map(|due| due.saturating_sub(now_ms())).unwrap_or(60_000);
                    tokio::select! {
                        _ = shared.queue.changed() => {}
                        _ = tokio::time::sleep(Duration::from_millis(wait.max(1))) => {}
                        _ = stop.cancelled() => break 'outer,
                    }
                }
            }
        };
        let shared = shared.clone();
        passes.spawn(async move {
            pass::deliver(&shared, &id).await;
            drop(permit);
        });
    }
    while passes.try_join_next().is_some() {}
    let in_flight = passes.len();
    if in_flight > 0 {
        tracing::info!(in_flight, grace_secs = grace.as_secs_f64(), "waiting for deliveries under way");
        let drained = tokio::time::timeout(grace, async { while passes.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(abandoned = passes.len(), "grace period over: unfinished deliveries stay in the spool");
            passes.abort_all();
            while passes.join_next().await.is_some() {}
        }
    }
}
