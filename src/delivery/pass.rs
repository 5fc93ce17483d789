//! One delivery pass over a message: try the route's providers in order for the recipients
//! still pending, moving on at once when a provider fails; then persist and decide what next.

use crate::app::Shared;
use crate::outcome::{OutcomeClass, RecipientResult};
use crate::provider::Outbound;
use crate::runtime::Runtime;
use crate::spool::record::{Attempt, MessageRecord, MessageStatus, RecipientStatus, now_ms};
use std::time::Instant;

/// What the pass concluded about the message.
struct PassResult {
    route: String,
    /// Every provider tried said the message itself is invalid.
    all_bad_request: bool,
    last_provider: Option<String>,
}

pub async fn deliver(shared: &Shared, id: &str) {
    let spool = shared.spool.clone();
    let key = id.to_string();
    let loaded =
        tokio::task::spawn_blocking(move || Ok::<_, crate::spool::SpoolError>((spool.get(&key)?, spool.body(&key)?)))
            .await;
    let (mut record, body) = match loaded {
        Ok(Ok((Some(record), Some(body)))) if !record.status.is_final() => (record, body),
        Ok(Ok((Some(record), None))) if !record.status.is_final() => {
            tracing::error!(message_id = id, "spooled message has no body; failing it");
            let mut record = record;
            fail_pending(&mut record, "message body missing from spool");
            finish(shared, record, "unknown").await;
            return;
        }
        Ok(Ok(_)) => {
            shared.queue.finish(id);
            return;
        }
        Ok(Err(e)) => {
            tracing::error!(message_id = id, error = %e, "cannot read message from spool; retrying in 30s");
            shared.queue.schedule(id, now_ms() + 30_000, now_ms());
            return;
        }
        Err(e) => {
            tracing::error!(message_id = id, error = %e, "spool read task failed");
            shared.queue.schedule(id, now_ms() + 30_000, now_ms());
            return;
        }
    };

    let runtime = shared.runtime.load_full();
    let result = run_pass(shared, &runtime, &mut record, &body).await;
    let now = now_ms();
    let config = &runtime.config;
    if record.has_pending() {
        if result.all_bad_request {
            fail_pending(&mut record, "every provider refused the message as invalid");
        } else if now.saturating_sub(record.created_ms) >= config.spool.max_age.0.as_millis() as u64 {
            fail_pending(
                &mut record,
                &format!("expired: not delivered within spool.max_age ({})", config.spool.max_age),
            );
        }
    }
    if record.has_pending() {
        let schedule = &config.retry.schedule;
        let delay = schedule[(record.failed_passes as usize).min(schedule.len() - 1)].0;
        record.failed_passes += 1;
        record.status = MessageStatus::Delivering;
        record.next_attempt_ms = now + delay.as_millis() as u64;
        if let Err(e) = shared.spool.update(&record).await {
            tracing::error!(message_id = id, error = %e, "cannot persist delivery state");
        }
        tracing::info!(message_id = id, route = %result.route, retry_in_secs = delay.as_secs(), "no provider took the message; waiting for the next retry");
        shared.queue.schedule(id, record.next_attempt_ms, record.created_ms);
    } else {
        if let Some(provider) = &result.last_provider {
            let failed = record.recipients.iter().filter(|r| r.status == RecipientStatus::Failed).count();
            shared.metrics.recipients.with_label_values(&[provider, "failed"]).inc_by(failed as u64);
        }
        finish(shared, record, &result.route).await;
    }
}

fn fail_pending(record: &mut MessageRecord, reason: &str) {
    for r in record.recipients.iter_mut().filter(|r| r.status == RecipientStatus::Pending) {
        r.status = RecipientStatus::Failed;
        r.detail = Some(match r.detail.take() {
            Some(last) => format!("{reason}; last error: {last}"),
            None => reason.to_string(),
        });
    }
}

async fn finish(shared: &Shared, mut record: MessageRecord, route: &str) {
    record.status = record.final_status();
    record.completed_ms = Some(now_ms());
    if let Err(e) = shared.spool.update(&record).await {
        // The message stays pending on disk and will be retried after a restart.
        tracing::error!(message_id = %record.id, error = %e, "cannot persist final state");
    }
    shared.metrics.messages_completed.with_label_values(&[route, record.status.as_str()]).inc();
    tracing::info!(message_id = %record.id, route, status = record.status.as_str(), "message finished");
    shared.queue.finish(&record.id);
    shared.retain_completed(&record);
}

async fn run_pass(shared: &Shared, runtime: &Runtime, record: &mut MessageRecord, body: &[u8]) -> PassResult {
    let Some(route) = runtime.route_for(&record.client, &record.mail_from, record.stream.as_deref()) else {
        tracing::error!(message_id = %record.id, client = %record.client, "no route matches this message");
        return PassResult { route: "none".into(), all_bad_request: false, last_provider: None };
    };
    let metrics = &shared.metrics;
    let mut all_bad_request = true;
    let mut last_provider = None;
    for (position, name) in route.providers.iter().enumerate() {
        let pending: Vec<usize> = record.pending().map(|(i, _)| i).collect();
        if pending.is_empty() {
            break;
        }
        let Some(provider) = runtime.providers.get(name) else {
            continue;
        };
        let recipients: Vec<String> = pending.iter().map(|&i| record.recipients[i].email.clone()).collect();
        let started = Instant::now();
        let report = provider
            .send(&Outbound { id: &record.id, mail_from: &record.mail_from, recipients: &recipients, body })
            .await;
        let elapsed = started.elapsed();
        last_provider = Some(name.clone());
        if report.class != OutcomeClass::BadRequest {
            all_bad_request = false;
        }
        let class = report.class.as_str();
        metrics.delivery_attempts.with_label_values(&[name, class]).inc();
        metrics.provider_request_duration.with_label_values(&[name, class]).observe(elapsed.as_secs_f64());
        tracing::info!(
            message_id = %record.id, provider = %name, outcome = class, duration_ms = elapsed.as_millis() as u64,
            recipients = recipients.len(), detail = %report.detail, possible_duplicate = report.possible_duplicate,
            "delivery attempt"
        );
        record.attempts.push(Attempt {
            at_ms: now_ms(),
            provider: name.clone(),
            outcome: report.class,
            detail: report.detail.clone(),
            duration_ms: elapsed.as_millis() as u64,
            possible_duplicate: report.possible_duplicate,
        });
        let latency = now_ms().saturating_sub(record.created_ms) as f64 / 1000.0;
        for (&idx, result) in pending.iter().zip(report.recipients) {
            let r = &mut record.recipients[idx];
            match result {
                RecipientResult::Delivered { provider_message_id } => {
                    r.status = RecipientStatus::Delivered;
                    r.provider = Some(name.clone());
                    r.provider_message_id = provider_message_id;
                    r.detail = None;
                    metrics.recipients.with_label_values(&[name, "delivered"]).inc();
                    metrics.delivery_latency.with_label_values(&[&route.name, name]).observe(latency);
                }
                RecipientResult::Rejected { detail } => {
                    r.status = RecipientStatus::Rejected;
                    r.provider = Some(name.clone());
                    r.detail = Some(detail);
                    metrics.recipients.with_label_values(&[name, "rejected"]).inc();
                }
                RecipientResult::NotDone => r.detail = Some(format!("{name}: {}", report.detail)),
            }
        }
        if record.has_pending()
            && let Some(next) = route.providers.get(position + 1)
        {
            metrics.failovers.with_label_values(&[&route.name, name, next, class]).inc();
            tracing::warn!(message_id = %record.id, route = %route.name, from = %name, to = %next, reason = class, "failover");
        }
    }
    PassResult { route: route.name.clone(), all_bad_request: all_bad_request && last_provider.is_some(), last_provider }
}
