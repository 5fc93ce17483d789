//! Delivery: takes due messages off the queue and runs a delivery pass for each, at most
//! `delivery.concurrency` at a time, on threads of its own ([`Threads`]).

pub mod pass;
pub mod queue;
pub mod redeliver;
pub mod throttle;

use crate::shared::Shared;
use crate::spool::record::now_ms;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The threads delivery passes run on: a tokio runtime of their own, beside the one that serves
/// HTTP and SMTP.
///
/// A pass is a chain of short waits (the provider's replies, the spool commit). On the runtime
/// that also serves the ingest connections, each wake-up queued behind every request being
/// handled: under full HTTP load a provider round trip took about 2 ms, a send about 7 ms, and
/// delivery fell to a fifth of the ingest rate (docs/benchmarks.md, "Pipeline"). On threads of
/// its own, the kernel's scheduler shares the cores between taking mail in and sending it out,
/// and a delivery thread woken by a reply runs at once.
pub struct Threads(Option<tokio::runtime::Runtime>);

impl Threads {
    pub fn start() -> std::io::Result<Threads> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("delivery")
            .enable_all()
            .build()?;
        Ok(Threads(Some(runtime)))
    }

    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.0.as_ref().expect("running until dropped").spawn(task)
    }
}

impl Drop for Threads {
    /// Stops the threads without waiting (allowed from async code, unlike dropping a runtime):
    /// by then delivery has finished or been abandoned (see [`run`]).
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

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
