//! One delivery pass over a message: try the route's providers in order for the recipients
//! still pending, moving on at once when a provider fails; then persist and decide what next.

use crate::event::{EventType, SuppressionReason};
use crate::health::{Admission, Skip, Trial, sender_domain};
use crate::metrics::Metrics;
use crate::outcome::{OutcomeClass, RecipientResult, SendReport};
use crate::provider::{Outbound, Provider};
use crate::runtime::{Route, Runtime};
use crate::shared::Shared;
use crate::spool::record::{Attempt, MessageRecord, MessageStatus, RecipientStatus, now_ms};
use crate::suppression::{self, Entry};
use std::time::{Duration, Instant};

/// What the pass concluded about the message.
struct PassResult {
    /// Every provider tried said the message itself is invalid.
    all_bad_request: bool,
    /// The last provider tried; `None` when every provider was out of rotation.
    last_provider: Option<String>,
    /// A provider was skipped for want of a `max_rate` turn: try again after its `rate_wait`
    /// (the shortest of them), not after the next retry slot.
    rate_held: Option<Duration>,
}

/// Shortest wait before a pass may try anything.
const MIN_WAIT: Duration = Duration::from_millis(50);

/// The providers that may send `record`, in the route's order: the route's, or for a
/// provider-template pass-through only the provider it was passed to (no failover: no other
/// account holds that template; none if a reload removed it).
fn providers_for<'a>(runtime: &'a Runtime, route: &'a Route, record: &MessageRecord) -> Vec<&'a String> {
    match &record.passthrough {
        Some(provider) => runtime.providers.get_key_value(provider).map(|(name, _)| name).into_iter().collect(),
        None => route.providers.iter().collect(),
    }
}

/// If every provider that may send the message is out of rotation: how long until the first
/// may be usable again (`Some(None)`: only an operator can bring one back). `None` if one is
/// usable now.
fn unavailable_for(shared: &Shared, providers: &[&String], sender_domain: &str) -> Option<Option<Duration>> {
    let mut soonest: Option<Duration> = None;
    for name in providers {
        match shared.health.available_in(name, sender_domain) {
            Some(d) if d.is_zero() => return None,
            Some(d) => soonest = Some(soonest.map_or(d, |s| s.min(d))),
            None => {}
        }
    }
    Some(soonest)
}

enum Loaded {
    Ready(Box<MessageRecord>),
    /// Finished or gone: nothing to do.
    Gone,
    /// Could not be read now; try later.
    Unreadable,
}

/// Reads from the spool in place. A record or body is one redb point read of a page that is
/// almost always cached (microseconds); handing it to the blocking pool cost more than the
/// read, twice per pass (measured: about a third less delivered under load). This runs on
/// delivery's own threads (`delivery::Threads`), so a read that does wait for the disk holds
/// up other passes for that long, never ingest. A storage-engine panic (a damaged page) is an
/// error like any other: the message is tried again later, not left in flight.
fn load<T>(
    shared: &Shared,
    id: &str,
    read: impl FnOnce(&crate::spool::Spool, &str) -> Result<Option<T>, crate::spool::SpoolError>,
) -> Result<Option<T>, String> {
    let spool = &shared.spool;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(spool, id))) {
        Ok(read) => read.map_err(|e| e.to_string()),
        Err(_) => Err("the storage engine panicked reading the spool".to_string()),
    }
}

fn load_record(shared: &Shared, id: &str) -> Loaded {
    match load(shared, id, |s, k| s.get(k)) {
        Ok(Some(r)) if !r.status.is_final() => Loaded::Ready(Box::new(r)),
        Ok(_) => Loaded::Gone,
        Err(e) => {
            tracing::error!(message_id = id, error = %e, "cannot read message from spool; retrying in 30s");
            Loaded::Unreadable
        }
    }
}

/// Runs one delivery pass for message `id` and decides what happens to it next.
pub async fn deliver(shared: &Shared, id: &str) {
    // A message's first pass usually starts from the record and body ingest committed, still
    // in memory; later passes (and a first one behind a long queue) read the spool.
    let (mut record, kept_body) = match shared.queue.take_kept(id) {
        Some(kept) => (kept.record, Some(kept.body)),
        None => match load_record(shared, id) {
            Loaded::Ready(r) => (*r, None),
            Loaded::Gone => return shared.queue.finish(id),
            Loaded::Unreadable => return shared.queue.schedule(id, now_ms() + 30_000, now_ms()),
        },
    };
    let runtime = shared.runtime.load_full();
    let config = &runtime.config;
    let max_age_ms = config.spool.max_age.0.as_millis() as u64;
    if suppress(shared, config.suppression.scope, &mut record) > 0 && !record.has_pending() {
        let route = runtime.route_for(&record.client, &record.mail_from, record.stream.as_deref());
        return finish(shared, record, route.map_or("", |r| r.name.as_str())).await;
    }
    let Some(route) = runtime.route_for(&record.client, &record.mail_from, record.stream.as_deref()) else {
        tracing::error!(message_id = id, client = %record.client, "no route matches this message; retrying in 60s");
        return shared.queue.schedule(id, now_ms() + 60_000, record.created_ms);
    };

    if let Some(provider) = record.passthrough.as_deref().filter(|p| !runtime.providers.contains_key(*p)) {
        tracing::warn!(
            message_id = id,
            provider,
            "the provider this template request was passed to is no longer configured; the message waits for it until spool.max_age"
        );
    }
    // Every provider is out of rotation: come back when the first may be usable, without
    // reading the body, touching the disk or using up a retry slot.
    let domain = sender_domain(&record.mail_from);
    let expired = now_ms().saturating_sub(record.created_ms) >= max_age_ms;
    if !expired && let Some(back) = unavailable_for(shared, &providers_for(&runtime, route, &record), &domain) {
        let schedule = &config.retry.schedule;
        let slot = schedule[(record.failed_passes as usize).min(schedule.len() - 1)].0;
        let wait = back.map_or(slot, |b| b.clamp(MIN_WAIT, slot.max(MIN_WAIT)));
        return shared.queue.schedule(id, now_ms() + wait.as_millis() as u64, record.created_ms);
    }

    if !spool_writable(shared, id).await {
        return shared.queue.schedule(id, record.next_attempt_ms, record.created_ms);
    }
    let read = match kept_body {
        Some(body) => Ok(Some(body)),
        None => load(shared, id, |s, k| s.body(k)),
    };
    let body = match read {
        Ok(Some(body)) => body,
        Ok(None) => {
            tracing::error!(message_id = id, "spooled message has no body; failing it");
            fail_pending(&mut record, "message body missing from spool");
            return finish(shared, record, &route.name).await;
        }
        Err(e) => {
            tracing::error!(message_id = id, error = %e, "cannot read message body; retrying in 30s");
            return shared.queue.schedule(id, now_ms() + 30_000, record.created_ms);
        }
    };

    let result = run_pass(shared, &runtime, route, &mut record, &body).await;
    let now = now_ms();
    if record.has_pending() {
        if result.all_bad_request {
            fail_pending(&mut record, "every provider refused the message as invalid");
        } else if now.saturating_sub(record.created_ms) >= max_age_ms {
            let reason = format!("expired: not delivered within spool.max_age ({})", config.spool.max_age);
            fail_pending(&mut record, &reason);
        }
    }
    if !record.has_pending() {
        // Failed recipients count against the provider that last tried them (this pass or an
        // earlier one); a message no provider ever tried has nobody to count them for.
        let last_tried = result.last_provider.clone().or_else(|| record.attempts.last().map(|a| a.provider.clone()));
        if let Some(provider) = last_tried {
            let failed = record.recipients.iter().filter(|r| r.status == RecipientStatus::Failed).count();
            shared.metrics.recipients.with_label_values(&[&provider, "failed"]).inc_by(failed as u64);
        }
        return finish(shared, record, &route.name).await;
    }

    let schedule = &config.retry.schedule;
    let mut delay = schedule[(record.failed_passes as usize).min(schedule.len() - 1)].0;
    // When the failures have taken every provider out of rotation, their cooldowns say when
    // trying again makes sense; the retry schedule is the upper bound.
    if let Some(Some(back)) = unavailable_for(shared, &providers_for(&runtime, route, &record), &domain) {
        delay = delay.min(back.max(MIN_WAIT));
    }
    if let Some(held) = result.rate_held {
        delay = delay.min(held.max(MIN_WAIT));
    }
    record.next_attempt_ms = now + delay.as_millis() as u64;
    if result.last_provider.is_some() {
        record.failed_passes += 1;
        record.status = MessageStatus::Delivering;
        persist(shared, &mut record).await;
        tracing::info!(message_id = id, route = %route.name, retry_in_ms = delay.as_millis() as u64, "no provider took the message; waiting for the next pass");
    }
    shared.queue.schedule(id, record.next_attempt_ms, record.created_ms);
}

/// How often a held pass looks again (the spool also wakes it when it can write).
const SPOOL_RECHECK: Duration = Duration::from_secs(1);

/// No send starts while the spool cannot write: its outcome could not be recorded, and a
/// restart would send the message again. Waits until it can; `false` if Baton stops first.
async fn spool_writable(shared: &Shared, id: &str) -> bool {
    if shared.spool.is_writable() {
        return true;
    }
    tracing::warn!(message_id = id, "spool cannot write: delivery held until it can");
    loop {
        if tokio::time::timeout(SPOOL_RECHECK, shared.spool.writable()).await.is_ok() {
            return true;
        }
        if shared.is_shutting_down() {
            return false;
        }
    }
}

/// Writes the record after a pass, retrying until it is on disk. The pass's sends happened, so
/// the message stays in flight (never offered for another send) until they are recorded; only
/// a stop before then loses them, and the log says the message may then be sent again.
async fn persist(shared: &Shared, record: &mut MessageRecord) {
    let mut failed = false;
    // The pass's events for the app's webhooks, committed with the record.
    let events = crate::outbox::fresh_entries(&shared.runtime.load().config, record, now_ms());
    loop {
        match shared.spool.update_with(record, events.clone()).await {
            Ok(()) => {
                shared.outbox.committed(events);
                if failed {
                    tracing::info!(message_id = %record.id, "delivery state persisted after the spool recovered");
                }
                return;
            }
            // Shutting down: the record on disk still says "pending", so the next start sends
            // what is left (the log line above, if any, named the possible duplicate).
            Err(crate::spool::SpoolError::Closed) => {
                return tracing::warn!(message_id = %record.id, "spool closed before the delivery state was persisted");
            }
            Err(e) if !failed => {
                failed = true;
                tracing::error!(
                    message_id = %record.id, error = %e,
                    "cannot persist delivery state: holding the message until the spool can write \
                     (if Baton stops first, it will be sent again: possible duplicate)"
                );
            }
            Err(_) => {}
        }
        tokio::time::sleep(MIN_WAIT).await;
        let _ = tokio::time::timeout(SPOOL_RECHECK, shared.spool.writable()).await;
    }
}

fn fail_pending(record: &mut MessageRecord, reason: &str) {
    for r in record.recipients.iter_mut().filter(|r| r.status == RecipientStatus::Pending) {
        r.status = RecipientStatus::Failed;
        r.detail = Some(match r.detail.take() {
            Some(last) => format!("{reason}; last error: {last}"),
            None => reason.to_string(),
        });
        let detail = r.detail.clone().unwrap_or_default();
        r.note(EventType::Failed, None, None, detail);
    }
}

/// Marks the pending recipients that are on the suppression list as suppressed: no provider
/// is handed them. Returns how many.
fn suppress(shared: &Shared, scope: crate::config::SuppressionScope, record: &mut MessageRecord) -> usize {
    if shared.suppressions.is_empty() {
        return 0;
    }
    let mut count = 0;
    let client = record.client.clone();
    for r in record.recipients.iter_mut().filter(|r| r.status == RecipientStatus::Pending) {
        let Some(entry) = shared.suppressions.lookup(scope, &client, &r.email) else { continue };
        let detail = match &entry.provider {
            Some(p) => format!("suppressed: {} reported by {p}", entry.reason.as_str()),
            None => format!("suppressed: {}", entry.reason.as_str()),
        };
        r.status = RecipientStatus::Suppressed;
        r.detail = Some(detail.clone());
        r.note(EventType::Suppressed, entry.provider.as_deref(), None, detail);
        count += 1;
    }
    if count > 0 {
        shared.metrics.recipients_suppressed.with_label_values(&[&client]).inc_by(count as u64);
        tracing::info!(message_id = %record.id, client = %client, recipients = count, "recipients on the suppression list are not sent");
    }
    count
}

/// A provider refused `email` for a reason that says the address is bad: no provider gets it
/// again (for this client, or everyone with `scope = "global"`).
async fn suppress_rejected(
    shared: &Shared,
    record: &MessageRecord,
    email: &str,
    reason: SuppressionReason,
    provider: &str,
    detail: &str,
) {
    let scope = shared.runtime.load().config.suppression.scope;
    let entry = Entry {
        email: email.to_ascii_lowercase(),
        scope: suppression::scope_for(scope, &record.client).to_string(),
        reason,
        provider: Some(provider.to_string()),
        message_id: Some(record.id.clone()),
        at_ms: now_ms(),
        detail: detail.to_string(),
    };
    if let Err(e) = shared.suppressions.add(entry, "send_answer").await {
        tracing::error!(message_id = %record.id, error = %e, "cannot save a suppression entry");
    }
}

async fn finish(shared: &Shared, mut record: MessageRecord, route: &str) {
    record.status = record.final_status();
    record.completed_ms = Some(now_ms());
    // Kept so it can go out again if the provider that took it turns out to drop mail.
    let redeliver = shared.runtime.load().config.canary.as_ref().is_some_and(|c| c.redeliver_unconfirmed);
    record.body_kept = redeliver && record.recipients.iter().any(|r| r.status == RecipientStatus::Delivered);
    persist(shared, &mut record).await;
    shared.metrics.messages_completed.with_label_values(&[route, record.status.as_str()]).inc();
    tracing::info!(message_id = %record.id, route, status = record.status.as_str(), "message finished");
    shared.queue.finish(&record.id);
    shared.retain_completed(&record);
}

async fn run_pass(
    shared: &Shared,
    runtime: &Runtime,
    route: &Route,
    record: &mut MessageRecord,
    body: &[u8],
) -> PassResult {
    let metrics = &shared.metrics;
    let domain = sender_domain(&record.mail_from);
    let mut all_bad_request = true;
    let mut last_provider = None;
    let mut rate_held: Option<Duration> = None;
    let passthrough = record.passthrough.is_some();
    let mut order = providers_for(runtime, route, record);
    if route.warm_standby > 0.0 && order.len() > 1 && shared.health.standby_turn(&route.name, route.warm_standby) {
        order.swap(0, 1);
    }
    for (position, &name) in order.iter().enumerate() {
        let pending: Vec<usize> = record.pending().map(|(i, _)| i).collect();
        if pending.is_empty() {
            break;
        }
        let Some(provider) = runtime.providers.get(name) else {
            continue;
        };
        let next = order.get(position + 1).map(|n| n.as_str());
        let trial = match shared.health.admit(name, &domain) {
            Admission::Send(trial) => trial,
            Admission::Skip(skip) => {
                skipped(metrics, &route.name, record, name, next, skip);
                continue;
            }
        };
        let recipients: Vec<String> = pending.iter().map(|&i| record.recipients[i].email.clone()).collect();
        // A half-open trial is one send: it does not wait for a turn.
        if trial == Trial::No
            && let Some(wait) = rate_turn(shared, runtime, name, recipients.len()).await
        {
            rate_held = Some(rate_held.map_or(wait, |held| held.min(wait)));
            metrics.provider_rate_limited.with_label_values(&[name]).inc();
            skipped(metrics, &route.name, record, name, next, Skip::MaxRate);
            continue;
        }
        let started = Instant::now();
        let outbound = Outbound {
            id: &record.id,
            mail_from: &record.mail_from,
            recipients: &recipients,
            body,
            tags: &record.tags,
            metadata: &record.metadata,
            template: passthrough,
        };
        let report = attempt(shared, name, provider.as_ref(), &outbound, &domain, trial).await;
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
            // A re-delivery: the silent provider may have delivered it after all.
            possible_duplicate: report.possible_duplicate || record.redelivered_from.is_some(),
        });
        let latency = now_ms().saturating_sub(record.created_ms) as f64 / 1000.0;
        let mut suppressed = Vec::new();
        let mut sent = 0;
        for (&idx, result) in pending.iter().zip(report.recipients) {
            let r = &mut record.recipients[idx];
            match result {
                RecipientResult::Delivered { provider_message_id } => {
                    r.status = RecipientStatus::Delivered;
                    r.provider = Some(name.clone());
                    r.provider_message_id = provider_message_id;
                    r.detail = record.redelivered_from.as_ref().map(|silent| {
                        format!("re-delivered: {silent} accepted it but went silent (its canaries were lost)")
                    });
                    r.note(EventType::Sent, Some(name), None, String::new());
                    sent += 1;
                    metrics.recipients.with_label_values(&[name, "delivered"]).inc();
                    metrics.delivery_latency.with_label_values(&[&route.name, name]).observe(latency);
                }
                RecipientResult::Rejected { detail, reason } => {
                    r.status = RecipientStatus::Rejected;
                    r.provider = Some(name.clone());
                    r.note(EventType::Rejected, Some(name), Some(reason), detail.clone());
                    if let Some(why) = SuppressionReason::for_rejection(reason) {
                        suppressed.push((r.email.clone(), why, detail.clone()));
                    }
                    r.detail = Some(detail);
                    metrics.recipients.with_label_values(&[name, "rejected"]).inc();
                }
                RecipientResult::NotDone => r.detail = Some(format!("{name}: {}", report.detail)),
            }
        }
        if sent > 0 {
            shared.health.rates().record_sent(name, sent);
        }
        // Before the next provider (or the next message) is handed anything.
        for (email, why, detail) in suppressed {
            suppress_rejected(shared, record, &email, why, name, &detail).await;
        }
        if record.has_pending()
            && let Some(next) = order.get(position + 1).map(|n| n.as_str())
        {
            metrics.failovers.with_label_values(&[&route.name, name, next, class]).inc();
            tracing::warn!(message_id = %record.id, route = %route.name, from = %name, to = %next, reason = class, "failover");
            let detail = format!("{name} → {next}: {class}");
            for r in record.recipients.iter_mut().filter(|r| r.status == RecipientStatus::Pending) {
                r.note(EventType::Failover, Some(name), None, detail.clone());
            }
        }
    }
    PassResult { all_bad_request: all_bad_request && last_provider.is_some(), last_provider, rate_held }
}

/// A provider skipped for `skip`: counted and noted on the pending recipients as a failover
/// when there is a next provider.
fn skipped(metrics: &Metrics, route: &str, record: &mut MessageRecord, name: &str, next: Option<&str>, skip: Skip) {
    let Some(next) = next else { return };
    metrics.failovers.with_label_values(&[route, name, next, skip.as_str()]).inc();
    tracing::info!(message_id = %record.id, route, from = %name, to = %next, reason = skip.as_str(), "failover");
    let detail = format!("{name} → {next}: {}", skip.as_str());
    for r in record.recipients.iter_mut().filter(|r| r.status == RecipientStatus::Pending) {
        r.note(EventType::Failover, Some(name), None, detail.clone());
    }
}

/// Waits for the provider's `max_rate` turn (`delivery/throttle.rs`). `Some(rate_wait)`: no
/// turn within it, the message moves on.
async fn rate_turn(shared: &Shared, runtime: &Runtime, name: &str, recipients: usize) -> Option<Duration> {
    let config = runtime.config.providers.get(name)?;
    let (rate, max_wait) = config.rate_limit()?;
    let cost = config.rate_cost(recipients);
    match shared.throttle.turn(shared.cluster.as_deref(), name, rate, cost, max_wait).await {
        Some(wait) => {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            None
        }
        None => Some(max_wait),
    }
}

/// One attempt on a provider that health admitted, recorded with health.
///
/// A half-open trial never holds the message longer than `health.trial_timeout` in all:
/// where the provider has a synthetic trial (it exercises the send path without delivering),
/// that goes first and a failure moves the message on without anything sent; then the real
/// send is the trial, and when it gives no answer in the time left the message moves on (the
/// provider may still take it: a possible duplicate).
async fn attempt(
    shared: &Shared,
    name: &str,
    provider: &dyn Provider,
    msg: &Outbound<'_>,
    domain: &str,
    trial: Trial,
) -> SendReport {
    if trial == Trial::No {
        let report = crate::provider::send(provider, msg).await;
        shared.health.record(name, domain, &report, Trial::No);
        return report;
    }
    let limit = shared.health.trial_timeout(name);
    let deadline = tokio::time::Instant::now() + limit;
    let n = msg.recipients.len();
    let late = |what: &str| {
        let detail = format!("{what} gave no answer within health.trial_timeout ({limit:?}); moved on");
        SendReport::failed(OutcomeClass::Transient, n, detail)
    };
    // A template pass-through's body is the API's own request, not MIME: no synthetic trial.
    let synthetic = async {
        match msg.template {
            true => None,
            false => provider.trial(msg).await,
        }
    };
    let report = match tokio::time::timeout_at(deadline, synthetic).await {
        Ok(Some(mut synthetic)) if synthetic.class.is_provider_failure() => {
            synthetic.detail = format!("synthetic trial: {}", synthetic.detail);
            synthetic.recipients = vec![RecipientResult::NotDone; n];
            synthetic
        }
        Ok(_) => match tokio::time::timeout_at(deadline, crate::provider::send(provider, msg)).await {
            Ok(report) => report,
            // The request may have gone out: the provider may still deliver it.
            Err(_) => SendReport { possible_duplicate: true, ..late("half-open trial") },
        },
        Err(_) => late("synthetic trial"),
    };
    shared.health.record(name, domain, &report, Trial::Yes);
    report
}
