//! End-to-end canaries (`[canary]`): a small real message through each provider on a schedule,
//! read back from a mailbox that does not depend on that provider. A provider that accepts mail
//! and drops it — a suspended account still answering "queued", a broken sending domain — is
//! seen by nothing else. Its promise: a provider whose canaries stop arriving is taken out of
//! rotation as `silent` after `lost_threshold` lost in a row, and comes back when one sent while
//! silent is read back; and a canary is judged lost only by a mailbox read that worked, and a
//! provider is silenced only while another provider's canaries arrive, so an unreachable
//! mailbox (or one that receives nothing) never takes a provider out.
//!
//! Two tasks share one book of canaries in flight: the sender sends through each provider when
//! it is due (bypassing routes, failover and health: a canary is not app traffic and never
//! retried elsewhere), the reader reads the mailbox and judges.

use super::mailbox::{self, Mailbox};
use super::{Health, ProviderState};
use crate::config::CanaryConfig;
use crate::metrics::Metrics;
use crate::outcome::OutcomeClass;
use crate::provider::{self, Outbound};
use crate::runtime::Runtime;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// How often the sender looks for canaries due.
const TICK: Duration = Duration::from_millis(100);
/// Longest one canary send may take, whatever the provider's own timeout.
const MAX_SEND: Duration = Duration::from_secs(120);

/// A provider that just went silent, and since when (wall ms) what it accepted is unconfirmed:
/// the send of its last canary that was read back (or of the first lost one when none was).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silenced {
    pub provider: String,
    pub since_ms: u64,
}

/// A canary a provider accepted, not read back yet.
struct Pending {
    provider: String,
    sent: Instant,
    sent_ms: u64,
    /// Sent while the provider was `silent`: its arrival brings the provider back.
    while_silent: bool,
}

/// What both tasks share.
#[derive(Default)]
struct Book {
    pending: HashMap<String, Pending>,
    /// Lost canaries in a row, per provider.
    streak: HashMap<String, u32>,
    /// Per provider: when (wall ms) the last canary that was read back was sent.
    confirmed_ms: HashMap<String, u64>,
    /// Per provider: when the first canary of the current lost streak was sent.
    streak_start_ms: HashMap<String, u64>,
}

type Shared = Arc<Mutex<Book>>;

fn lock(book: &Shared) -> std::sync::MutexGuard<'_, Book> {
    book.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs the canary sender and reader until `stop`; idle while the live config has no
/// `[canary]`. With `redeliver_unconfirmed`, each provider that goes silent is reported on
/// `silenced` (delivery re-queues what it took).
pub async fn run(
    runtime: Arc<ArcSwap<Runtime>>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    silenced: tokio::sync::mpsc::UnboundedSender<Silenced>,
    stop: CancellationToken,
) {
    let book: Shared = Arc::default();
    let sender = send_loop(runtime.clone(), health.clone(), metrics.clone(), book.clone(), stop.clone());
    let reader = read_loop(runtime, health, metrics, book, silenced, stop);
    tokio::join!(sender, reader);
}

/// The providers canaries go through: those with `canary = true` (the default but for `file`).
fn canary_providers(runtime: &Runtime) -> Vec<String> {
    let mut names: Vec<String> = (runtime.config.providers.iter())
        .filter(|(name, p)| p.canary_enabled() && runtime.providers.contains_key(*name))
        .map(|(name, _)| name.clone())
        .collect();
    names.sort();
    names
}

/// A spread of up to a tenth of `interval` either way, so canaries of several providers (and
/// several Batons) do not go out in step.
fn jittered(interval: Duration) -> Duration {
    let spread = interval.as_millis() as u64 / 10;
    if spread == 0 {
        return interval;
    }
    let r = u64::from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().subsec_nanos());
    interval - Duration::from_millis(spread) + Duration::from_millis(r % (2 * spread))
}

async fn send_loop(
    runtime: Arc<ArcSwap<Runtime>>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    book: Shared,
    stop: CancellationToken,
) {
    let mut next: HashMap<String, Instant> = HashMap::new();
    let in_flight: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.cancelled() => return,
        }
        let live = runtime.load_full();
        let Some(config) = live.config.canary.clone() else {
            next.clear();
            continue;
        };
        let now = Instant::now();
        for name in canary_providers(&live) {
            // The first canary goes out soon after start, spread over the first interval.
            let due = *next.entry(name.clone()).or_insert_with(|| now + jittered(config.interval.0) / 4);
            if due > now || !in_flight.lock().unwrap_or_else(|e| e.into_inner()).insert(name.clone()) {
                continue;
            }
            next.insert(name.clone(), now + jittered(config.interval.0));
            let task =
                send_one(live.clone(), name.clone(), config.clone(), health.clone(), metrics.clone(), book.clone());
            let in_flight = in_flight.clone();
            tokio::spawn(async move {
                task.await;
                in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&name);
            });
        }
    }
}

/// The canary message: a short text carrying `token` in its header.
fn message(config: &CanaryConfig, provider: &str, token: &str, hostname: &str) -> Vec<u8> {
    mail_builder::MessageBuilder::new()
        .from(config.from.as_str())
        .to(config.to.as_str())
        .subject(format!("Baton canary via {provider}"))
        .message_id(format!("{token}@{hostname}"))
        .header(mailbox::HEADER, mail_builder::headers::raw::Raw::new(token.to_string()))
        .text_body(format!(
            "An end-to-end check sent by Baton through provider {provider}. Baton reads it back and deletes it.\r\n"
        ))
        .write_to_vec()
        .unwrap_or_default()
}

async fn send_one(
    runtime: Arc<Runtime>,
    name: String,
    config: CanaryConfig,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    book: Shared,
) {
    let Some(provider) = runtime.providers.get(&name) else { return };
    let token = crate::ingest::new_message_id().to_ascii_lowercase();
    let body = message(&config, &name, &token, &runtime.config.server.hostname);
    let recipients = [config.to.clone()];
    let outbound = Outbound::new(&token, &config.from, &recipients, &body);
    let while_silent = health.state(&name) == Some(ProviderState::Silent);
    let (sent, sent_ms) = (Instant::now(), crate::spool::record::now_ms());
    let report = match tokio::time::timeout(MAX_SEND, provider::send(provider.as_ref(), &outbound)).await {
        Ok(report) => report,
        Err(_) => {
            return tracing::info!(provider = %name, "canary send gave no answer; the next one comes at the next interval");
        }
    };
    if report.class != OutcomeClass::Accepted {
        // The answer itself says the provider is failing: app sends and probes judge that.
        return tracing::info!(provider = %name, outcome = report.class.as_str(), detail = %report.detail, "canary not accepted");
    }
    metrics.canary_sent.with_label_values(&[&name]).inc();
    tracing::debug!(provider = %name, token, "canary sent");
    lock(&book).pending.insert(token, Pending { provider: name, sent, sent_ms, while_silent });
}

/// How often the mailbox is read: a quarter of the shorter of interval and timeout, between
/// 200 ms and 30 s.
fn read_period(config: &CanaryConfig) -> Duration {
    (config.interval.0.min(config.timeout.0) / 4).clamp(Duration::from_millis(200), Duration::from_secs(30))
}

async fn read_loop(
    runtime: Arc<ArcSwap<Runtime>>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    book: Shared,
    silenced: tokio::sync::mpsc::UnboundedSender<Silenced>,
    stop: CancellationToken,
) {
    let mut mailbox: Option<Mailbox> = None;
    let mut last_error: Option<String> = None;
    let mut period = Duration::from_secs(1);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.cancelled() => return,
        }
        let live = runtime.load_full();
        let Some(config) = live.config.canary.clone() else {
            mailbox = None;
            continue;
        };
        period = read_period(&config);
        if mailbox.as_ref().is_none_or(|m| *m.config() != config.imap) {
            mailbox = Some(Mailbox::new(config.imap.clone()));
        }
        let started = Instant::now();
        let ours = |token: &str| lock(&book).pending.contains_key(token);
        let read = mailbox.as_mut().expect("set above").read(&ours).await;
        match read {
            Ok(tokens) => {
                if last_error.take().is_some() {
                    tracing::info!(host = %config.imap.host, "canary mailbox readable again");
                }
                let enabled = canary_providers(&live);
                for gone in judge(&config, &enabled, &tokens, started, &health, &metrics, &book) {
                    if config.redeliver_unconfirmed {
                        let _ = silenced.send(gone);
                    }
                }
            }
            Err(e) => {
                // Canaries are not judged while the mailbox cannot be read.
                if last_error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(host = %config.imap.host, error = %e, "cannot read the canary mailbox; canaries are not judged until it can be read (app mail is not affected)");
                }
                last_error = Some(e);
            }
        }
    }
}

/// After a read that worked (begun at `read_at`): the canaries in `tokens` arrived; those
/// still pending `timeout` before the read are lost. Returns the providers that went silent.
fn judge(
    config: &CanaryConfig,
    enabled: &[String],
    tokens: &[String],
    read_at: Instant,
    health: &Health,
    metrics: &Metrics,
    book: &Shared,
) -> Vec<Silenced> {
    let mut book = lock(book);
    let now_s = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    for token in tokens {
        let Some(p) = book.pending.remove(token) else { continue };
        let took = p.sent.elapsed();
        metrics.canary_received.with_label_values(&[&p.provider]).inc();
        metrics.canary_delivery.with_label_values(&[&p.provider]).observe(took.as_secs_f64());
        metrics.canary_last_received.with_label_values(&[&p.provider]).set(now_s);
        tracing::debug!(provider = %p.provider, seconds = took.as_secs_f64(), "canary read back");
        book.streak.insert(p.provider.clone(), 0);
        book.streak_start_ms.remove(&p.provider);
        let confirmed = book.confirmed_ms.entry(p.provider.clone()).or_insert(0);
        *confirmed = (*confirmed).max(p.sent_ms);
        if p.while_silent {
            health.canary_arrived(&p.provider);
        }
    }
    let lost: Vec<String> = (book.pending.iter())
        .filter(|(_, p)| p.sent + config.timeout.0 <= read_at)
        .map(|(token, _)| token.clone())
        .collect();
    for token in lost {
        let p = book.pending.remove(&token).expect("listed above");
        metrics.canary_lost.with_label_values(&[&p.provider]).inc();
        book.streak_start_ms.entry(p.provider.clone()).or_insert(p.sent_ms);
        let streak = book.streak.entry(p.provider.clone()).or_insert(0);
        *streak += 1;
        tracing::warn!(provider = %p.provider, lost_in_a_row = *streak, timeout_s = config.timeout.0.as_secs_f64(), "canary not read back in time");
    }
    let losing: Vec<&String> =
        enabled.iter().filter(|p| book.streak.get(*p).copied().unwrap_or(0) >= config.lost_threshold).collect();
    // A provider is silent only when the mailbox demonstrably receives mail: a canary through
    // another provider, sent after this one's losses began, was read back. Otherwise the
    // mailbox may be what is broken (and with one provider there is nothing to compare with).
    let mut gone = Vec::new();
    for provider in losing {
        let since = book.streak_start_ms.get(provider).copied().unwrap_or(0);
        let mailbox_works = book.confirmed_ms.iter().any(|(other, &confirmed)| other != provider && confirmed >= since);
        if !mailbox_works {
            tracing::warn!(provider = %provider, "canaries through this provider are lost, but none through another provider arrived since: the canary mailbox may be what fails (check its domain's MX and the mailbox); the provider stays in rotation");
            continue;
        }
        if health.silence(provider, book.streak[provider]) {
            let since_ms = book.confirmed_ms.get(provider).copied().unwrap_or(since);
            gone.push(Silenced { provider: provider.clone(), since_ms });
        }
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_a_tenth_either_way() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(100));
            assert!(d >= Duration::from_secs(90) && d < Duration::from_secs(110), "{d:?}");
        }
    }
}
