//! Posts the outbox to the app's endpoints: per endpoint, up to [`BATCH`] due events at once
//! as a JSON array, signed per the Standard Webhooks spec (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256>`). A 2xx answer deletes the events; anything
//! else (or no answer within [`TIMEOUT`]) schedules them again with backoff ([`backoff`]) until
//! they are a day old, when they are dropped and counted as `expired`. One request per
//! endpoint is in flight at a time, so a slow endpoint delays only its own events.
//!
//! The endpoint list is the live config's: a reload adds, changes (new URL or secret apply to
//! the next request) or removes endpoints; events for a removed endpoint are dropped.

use super::{Outbox, Queued, RETRY_FOR, webhook_name};
use crate::config::WebhookConfig;
use crate::event::signature;
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::spool::record::now_ms;
use crate::spool::{Keyed, Spool};
use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Most events in one request.
pub const BATCH: usize = 100;
/// Longest wait for an endpoint's answer.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// `outcome` label values of `baton_webhook_deliveries_total`, per event: posted and
/// acknowledged, a failed attempt (retried), dropped after a day of failures, dropped because
/// the endpoint is no longer configured.
pub const OUTCOMES: [&str; 4] = ["delivered", "failed", "expired", "dropped"];

/// Wait before attempt `attempts + 1`: 5 s, 30 s, 2 min, 10 min, 30 min, then hourly.
pub fn backoff(attempts: u32) -> Duration {
    const STEPS: [u64; 6] = [5, 30, 120, 600, 1800, 3600];
    Duration::from_secs(STEPS[(attempts.max(1) as usize - 1).min(STEPS.len() - 1)])
}

/// What one request concluded, sent back to the loop.
struct Posted {
    webhook: String,
    batch: Vec<(String, Queued)>,
    /// `None`: acknowledged (2xx). Otherwise why not, for the log.
    failure: Option<String>,
}

/// Runs until `stop`: picks due events per endpoint and posts them.
pub async fn run(
    outbox: Arc<Outbox>,
    spool: Arc<Spool>,
    runtime: Arc<ArcSwap<Runtime>>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let client = match reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .user_agent(concat!("baton/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => return tracing::error!(error = %e, "cannot build the HTTP client for app webhooks; events are kept"),
    };
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Posted>();
    let mut busy: BTreeSet<String> = BTreeSet::new();
    loop {
        let config = runtime.load().config.clone();
        let now = now_ms();
        // Events for endpoints no longer configured are dropped.
        let live: Vec<(&WebhookConfig, String)> = config.webhooks.iter().map(|w| (w, webhook_name(w))).collect();
        for name in outbox.webhooks() {
            if !live.iter().any(|(_, n)| *n == name) && !busy.contains(&name) {
                let gone: Vec<(String, Queued)> = outbox.due(&name, u64::MAX, usize::MAX);
                drop_entries(&outbox, &spool, &metrics, &name, gone, "dropped").await;
                tracing::warn!(webhook = %name, "events for a webhook no longer in the config were dropped");
            }
        }
        for (w, name) in &live {
            if busy.contains(name) {
                continue;
            }
            let batch = outbox.due(name, now, BATCH);
            if batch.is_empty() {
                continue;
            }
            busy.insert(name.clone());
            let (client, done, w, name) = (client.clone(), done_tx.clone(), (*w).clone(), name.clone());
            tokio::spawn(async move {
                let failure = post(&client, &w, &batch).await.err();
                let _ = done.send(Posted { webhook: name, batch, failure });
            });
        }
        let wait = outbox.next_due().map_or(Duration::from_secs(60), |due| {
            Duration::from_millis(due.saturating_sub(now_ms()).clamp(10, 60_000))
        });
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = outbox.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            Some(posted) = done_rx.recv() => {
                busy.remove(&posted.webhook);
                settle(&outbox, &spool, &metrics, posted).await;
            }
        }
    }
}

/// Signs and posts one batch; `Err` says why it did not count as delivered.
async fn post(client: &reqwest::Client, w: &WebhookConfig, batch: &[(String, Queued)]) -> Result<(), String> {
    let events: Vec<&serde_json::Value> = batch.iter().map(|(_, q)| &q.event).collect();
    let body = serde_json::to_vec(&events).map_err(|e| e.to_string())?;
    // The same events give the same id on every retry, so the app can recognise a repeat.
    let mut hash = Sha256::new();
    for (key, _) in batch {
        hash.update(key.as_bytes());
        hash.update(b"\n");
    }
    let id = format!("msg_{}", &hex::encode(hash.finalize())[..32]);
    let key = signature::decode_secret(&w.secret).map_err(|_| "the webhook secret cannot be decoded".to_string())?;
    let timestamp = (now_ms() / 1000) as i64;
    let signed = signature::sign(&key, &id, timestamp, &body);
    let reply = client
        .post(&w.url)
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signed)
        .body(body)
        .send()
        .await
        // Without the URL: it may carry credentials.
        .map_err(|e| format!("no answer: {}", e.without_url()))?;
    match reply.status() {
        s if s.is_success() => Ok(()),
        s => Err(format!("HTTP {}", s.as_u16())),
    }
}

/// Deletes what was delivered; reschedules (or, after a day, drops) what was not.
async fn settle(outbox: &Outbox, spool: &Spool, metrics: &Metrics, posted: Posted) {
    let Posted { webhook, batch, failure } = posted;
    let n = batch.len() as u64;
    let Some(why) = failure else {
        let keys: Vec<String> = batch.iter().map(|(k, _)| k.clone()).collect();
        match spool.put_many(Keyed::Outbox, keys.iter().map(|k| (k.clone(), None)).collect()).await {
            Ok(()) => tracing::debug!(webhook = %webhook, events = n, "events posted"),
            // Posted but still in the table: a restart posts them again (same ids).
            Err(e) => tracing::warn!(webhook = %webhook, error = %e, "events posted but not removed from the outbox"),
        }
        outbox.forget(&keys);
        metrics.webhook_deliveries.with_label_values(&[&webhook, "delivered"]).inc_by(n);
        return;
    };
    let now = now_ms();
    let (expired, retry): (Vec<_>, Vec<_>) =
        batch.into_iter().partition(|(_, q)| now.saturating_sub(q.first_ms) >= RETRY_FOR.as_millis() as u64);
    metrics.webhook_deliveries.with_label_values(&[&webhook, "failed"]).inc_by(retry.len() as u64);
    if !expired.is_empty() {
        tracing::error!(webhook = %webhook, events = expired.len(), error = %why, "events dropped after a day of failed attempts");
        drop_entries(outbox, spool, metrics, &webhook, expired, "expired").await;
    }
    if retry.is_empty() {
        return;
    }
    let retry: Vec<(String, Queued)> = retry
        .into_iter()
        .map(|(k, mut q)| {
            q.attempts += 1;
            q.next_ms = now + backoff(q.attempts).as_millis() as u64;
            (k, q)
        })
        .collect();
    let attempts = retry.iter().map(|(_, q)| q.attempts).max().unwrap_or(1);
    tracing::warn!(
        webhook = %webhook, events = retry.len(), error = %why, attempts,
        retry_in_s = backoff(attempts).as_secs(), "app webhook failed; retrying"
    );
    let stored: Vec<(String, Option<Vec<u8>>)> =
        retry.iter().map(|(k, q)| (k.clone(), serde_json::to_vec(q).ok())).collect();
    if let Err(e) = spool.put_many(Keyed::Outbox, stored).await {
        tracing::warn!(webhook = %webhook, error = %e, "cannot save the retry state of events");
    }
    outbox.reschedule(&retry);
}

async fn drop_entries(
    outbox: &Outbox,
    spool: &Spool,
    metrics: &Metrics,
    webhook: &str,
    entries: Vec<(String, Queued)>,
    outcome: &str,
) {
    if entries.is_empty() {
        return;
    }
    let keys: Vec<String> = entries.into_iter().map(|(k, _)| k).collect();
    if let Err(e) = spool.put_many(Keyed::Outbox, keys.iter().map(|k| (k.clone(), None)).collect()).await {
        tracing::warn!(webhook, error = %e, "cannot remove dropped events from the outbox");
    }
    metrics.webhook_deliveries.with_label_values(&[webhook, outcome]).inc_by(keys.len() as u64);
    outbox.forget(&keys);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_then_stays_hourly() {
        let secs: Vec<u64> = (1..=8).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(secs, [5, 30, 120, 600, 1800, 3600, 3600, 3600]);
    }
}
