//! Provider health: one state machine per provider, shared by every route and worker. Its
//! promise: a working provider is never taken out of rotation by Baton's own checks, and a
//! message never waits on a provider known to be bad.
//!
//! ```text
//!  healthy ⇄ degraded ──(threshold / ratio)──▶ open ──(cooldown)──▶ one half-open trial
//!     ▲                                          ▲  ╰── trial fails: cooldown doubles ──╯
//!     ╰──────────── trial succeeds ──────────────╯
//!  any ──account outcome──▶ suspended ──(account_cooldown, then a passing probe, or one
//!                                        trial send when the probe is off or inconclusive)──▶ healthy
//!  any ──rate_limited─────▶ rate_limited ──(Retry-After over)──▶ one trial ──▶ healthy
//!  any ──operator drain───▶ drained ──(operator resume)──▶ healthy
//!  sender_unverified ─────▶ (provider, sender domain) blocked for sender_cooldown; the
//!                           provider stays in rotation for every other domain
//! ```
//! Only `transient`, `rate_limited` and `account` count against a provider; a rejected
//! recipient, an invalid message or an unverified sender says nothing about the provider.
//!
//! Probes have three verdicts ([`ProbeVerdict`]): usable, failed, or inconclusive (the probe
//! could not judge, e.g. a send-only key may not read the probed endpoint). An inconclusive
//! probe never changes state. Drained, suspended and open states and the sender blocks are
//! saved ([`saved`]) whenever they change, through the channel of [`Health::persistent`].
//!
//! In a cluster the account's facts (drained, suspended, silent, sender blocks, and their end)
//! are shared: [`Health::shared_facts`] is what this node tells the others, and
//! [`Health::adopt`] (in `adopt.rs`) takes theirs, while admission stays local.

mod adopt;
pub mod canary;
pub mod mailbox;
pub mod probe;
pub mod rates;
pub mod saved;
mod window;

use crate::config::{Config, HealthSettings};
use crate::metrics::Metrics;
use crate::outcome::{OutcomeClass, SendReport, truncate_detail};
use crate::spool::record::now_ms;
pub use adopt::Adopted;
use dashmap::DashMap;
use rates::{Clock, RateSettings, Rates};
use saved::{Account, SavedBlock, SavedHealth};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderState {
    Healthy,
    Degraded,
    Open,
    Suspended,
    RateLimited,
    Drained,
    /// End-to-end canaries sent through it stopped arriving: it takes mail and drops it.
    Silent,
}

impl ProviderState {
    pub const ALL: [ProviderState; 7] = [
        ProviderState::Healthy,
        ProviderState::Degraded,
        ProviderState::Open,
        ProviderState::Suspended,
        ProviderState::RateLimited,
        ProviderState::Drained,
        ProviderState::Silent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderState::Healthy => "healthy",
            ProviderState::Degraded => "degraded",
            ProviderState::Open => "open",
            ProviderState::Suspended => "suspended",
            ProviderState::RateLimited => "rate_limited",
            ProviderState::Drained => "drained",
            ProviderState::Silent => "silent",
        }
    }
}

/// Whether an attempt is the single trial that decides if a provider comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trial {
    No,
    Yes,
}

/// Why a delivery skips a provider (the `reason` of `baton_failovers_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The provider is out of rotation for everyone.
    State(ProviderState),
    /// The provider refused this message's sender domain as unverified, recently.
    SenderBlocked,
    /// Its bounce or complaint rate is at or over the warn level and `pause_on_rate` is set.
    RateWarning,
    /// Its `max_rate` had no turn for the message within `rate_wait` (decided by delivery).
    MaxRate,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::State(state) => state.as_str(),
            Skip::SenderBlocked => "sender_blocked",
            Skip::RateWarning => "rate_warning",
            Skip::MaxRate => "max_rate",
        }
    }
}

/// Whether a delivery may use a provider now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Send(Trial),
    Skip(Skip),
}

/// An active probe's verdict on a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeVerdict {
    /// The provider would take mail now.
    Usable,
    /// The provider says it cannot send: `Account` (suspended, paused, key revoked, quota
    /// gone) or a `Transient` failure of the provider itself (cannot connect, 5xx, timeout).
    Failed(OutcomeClass),
    /// The probe could not judge (no permission for the probed endpoint, endpoint missing, an
    /// answer it cannot read, a restricted key). Never changes the provider's state.
    Inconclusive,
}

impl ProbeVerdict {
    /// The `result` label of `baton_health_probes_total` and the admin API's `last_probe.result`.
    pub const LABELS: [&'static str; 3] = ["ok", "failed", "inconclusive"];

    pub fn as_str(self) -> &'static str {
        match self {
            ProbeVerdict::Usable => "ok",
            ProbeVerdict::Failed(_) => "failed",
            ProbeVerdict::Inconclusive => "inconclusive",
        }
    }
}

/// What an active probe found.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    pub verdict: ProbeVerdict,
    pub detail: String,
}

impl ProbeReport {
    pub fn usable(detail: impl Into<String>) -> Self {
        ProbeReport { verdict: ProbeVerdict::Usable, detail: detail.into() }
    }

    pub fn failed(class: OutcomeClass, detail: impl Into<String>) -> Self {
        ProbeReport { verdict: ProbeVerdict::Failed(class), detail: detail.into() }
    }

    /// The probe could not judge; `detail` says why and what the operator can do about it.
    pub fn inconclusive(detail: impl Into<String>) -> Self {
        ProbeReport { verdict: ProbeVerdict::Inconclusive, detail: detail.into() }
    }
}

/// The last active probe of a provider.
#[derive(Debug, Clone)]
pub struct ProbeRecord {
    pub at_ms: u64,
    pub result: ProbeVerdict,
    pub detail: String,
}

/// A trial older than this is considered lost (its attempt never reported back).
const TRIAL_EXPIRY: Duration = Duration::from_secs(600);
/// How soon a message that found the trial taken looks again.
const TRIAL_RECHECK: Duration = Duration::from_millis(250);

/// A sender domain refused by a provider as unverified.
#[derive(Debug, Clone)]
struct SenderBlock {
    since_ms: u64,
    until: Instant,
    reason: String,
}

struct Inner {
    settings: HealthSettings,
    /// `probe = false` in the provider's config: no probes; a trial send ends a suspension.
    probe_enabled: bool,
    /// The provider's connection settings, to tell whether saved state still applies.
    fingerprint: String,
    state: ProviderState,
    since_ms: u64,
    reason: String,
    consecutive_failures: u32,
    /// Recent attempts that count for health, and how many failed.
    window: window::Window,
    /// Current cooldown of the open circuit.
    open_for: Duration,
    /// Open: earliest trial; rate_limited: end of the back-off; suspended: end of the cooldown.
    available_at: Option<Instant>,
    trial_started: Option<Instant>,
    last_probe: Option<ProbeRecord>,
    last_probe_at: Option<Instant>,
    probe_running: bool,
    /// Sender domains (lower case) this provider refused as unverified, until their cooldown ends.
    sender_blocks: HashMap<String, SenderBlock>,
    /// Wall-clock ms of the last operator drain or resume (see `saved.rs`: the three clocks).
    operator_ms: u64,
    /// Wall-clock ms of the last change of the account's state (suspended, silent, in rotation).
    account_ms: u64,
    /// Wall-clock ms of the last resume that lifted every sender block.
    blocks_cleared_ms: u64,
}

impl Inner {
    /// The time between probes: faster while out of rotation, so recovery is noticed quickly.
    fn probe_interval(&self) -> Duration {
        let base = self.settings.probe_interval;
        match self.state {
            ProviderState::Open | ProviderState::Suspended => (base / 4).max(Duration::from_millis(100)),
            _ => base,
        }
    }

    fn new(settings: HealthSettings, probe_enabled: bool, fingerprint: String) -> Self {
        Inner {
            open_for: settings.open_for,
            settings,
            probe_enabled,
            fingerprint,
            state: ProviderState::Healthy,
            since_ms: now_ms(),
            reason: String::new(),
            consecutive_failures: 0,
            window: window::Window::default(),
            available_at: None,
            trial_started: None,
            last_probe: None,
            last_probe_at: None,
            probe_running: false,
            sender_blocks: HashMap::new(),
            operator_ms: 0,
            account_ms: 0,
            blocks_cleared_ms: 0,
        }
    }

    fn prune(&mut self, now: Instant) {
        self.window.prune(now, self.settings.window);
    }

    fn failure_ratio(&self) -> (f64, usize) {
        self.window.failure_ratio()
    }

    fn trial_in_flight(&self, now: Instant) -> bool {
        self.trial_started.is_some_and(|t| now.duration_since(t) < TRIAL_EXPIRY)
    }

    fn cooldown_over(&self, now: Instant) -> bool {
        self.available_at.is_none_or(|at| now >= at)
    }

    /// A suspension ends with a trial send (not a probe) when no probe can judge: probes are
    /// off, or the last one was inconclusive (e.g. a send-only key).
    fn trial_ends_suspension(&self) -> bool {
        !self.probe_enabled || self.last_probe.as_ref().is_some_and(|p| p.result == ProbeVerdict::Inconclusive)
    }

    /// How long `domain` stays blocked (`None`: not blocked).
    fn block_remaining(&self, domain: &str, now: Instant) -> Option<Duration> {
        let block = self.sender_blocks.get(domain)?;
        (block.until > now).then(|| block.until - now)
    }

    /// Removes blocks whose cooldown is over; true if any was removed.
    fn expire_blocks(&mut self, now: Instant) -> bool {
        let before = self.sender_blocks.len();
        self.sender_blocks.retain(|_, b| b.until > now);
        self.sender_blocks.len() != before
    }

    fn blocked_domains(&self) -> Vec<String> {
        self.sender_blocks.keys().cloned().collect()
    }
}

/// The sender domain health scopes `sender_unverified` by: the envelope sender's domain,
/// lower case (empty for the null sender).
pub fn sender_domain(mail_from: &str) -> String {
    mail_from.rsplit_once('@').map(|(_, d)| d.trim_end_matches('>').to_ascii_lowercase()).unwrap_or_default()
}

/// One provider's health.
pub struct ProviderHealth {
    name: String,
    inner: Mutex<Inner>,
}

/// A sender domain's block as the admin API shows it.
#[derive(Debug, Clone)]
pub struct BlockStatus {
    pub domain: String,
    pub since_ms: u64,
    pub remaining: Duration,
    pub reason: String,
}

/// Everything the admin API shows about a provider.
#[derive(Debug, Clone)]
pub struct ProviderStatus {
    pub name: String,
    pub state: ProviderState,
    pub since_ms: u64,
    pub reason: String,
    pub consecutive_failures: u32,
    pub window_requests: usize,
    pub success_ratio: Option<f64>,
    pub probe_enabled: bool,
    pub last_probe: Option<ProbeRecord>,
    pub next_trial_in: Option<Duration>,
    pub sender_blocks: Vec<BlockStatus>,
}

pub struct Health {
    providers: DashMap<String, Arc<ProviderHealth>>,
    /// Per route: messages seen, for the warm-standby share.
    standby_counters: DashMap<String, AtomicU64>,
    metrics: Arc<Metrics>,
    /// Where the names of providers whose durable state changed go (see [`Health::persistent`]
    /// and [`Health::changes`]).
    changed: Vec<mpsc::UnboundedSender<String>>,
    /// Bounce and complaint rates of what was sent through each provider.
    rates: Rates,
}

impl Health {
    /// Health kept in memory only.
    pub fn new(metrics: Arc<Metrics>) -> Health {
        let rates = Rates::new(Clock::System);
        Health { providers: DashMap::new(), standby_counters: DashMap::new(), metrics, changed: Vec::new(), rates }
    }

    /// Health whose durable state is saved: the receiver yields the name of each provider
    /// whose [`Health::saved`] changed, for the app to write to the spool.
    pub fn persistent(metrics: Arc<Metrics>) -> (Health, mpsc::UnboundedReceiver<String>) {
        let mut health = Health::new(metrics);
        let rx = health.changes();
        (health, rx)
    }

    /// One more receiver of the names of providers whose durable state changed (the cluster
    /// tells the other nodes); every receiver gets every name.
    pub fn changes(&mut self) -> mpsc::UnboundedReceiver<String> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.changed.push(tx);
        rx
    }

    /// Makes the registry match `config`: new providers start healthy; known ones keep their
    /// state and take the new settings; providers no longer configured are forgotten.
    pub fn sync(&self, config: &Config) {
        for (name, provider) in &config.providers {
            let settings = HealthSettings::resolve(&config.health, provider.health());
            self.rates.configure(name, RateSettings::resolve(&settings, provider));
            let (probe, fingerprint) = (provider.probe_enabled(), provider.fingerprint());
            match self.providers.get(name) {
                Some(p) => {
                    let mut inner = p.inner.lock().unwrap_or_else(|e| e.into_inner());
                    inner.settings = settings;
                    inner.probe_enabled = probe;
                    inner.fingerprint = fingerprint;
                }
                None => {
                    let inner = Mutex::new(Inner::new(settings, probe, fingerprint));
                    self.providers.insert(name.clone(), Arc::new(ProviderHealth { name: name.clone(), inner }));
                    self.export_state(name, None, ProviderState::Healthy);
                }
            }
        }
        self.providers.retain(|name, _| config.providers.contains_key(name));
        self.rates.retain(|name| config.providers.contains_key(name));
    }

    /// The bounce and complaint rates: delivery records what each provider accepted, webhooks
    /// the bounces and complaints it reports.
    pub fn rates(&self) -> &Rates {
        &self.rates
    }

    /// Exports every provider's rates and warn levels (`baton_provider_bounce_rate` …); the
    /// admin listener calls it at each scrape.
    pub fn export_rates(&self) {
        self.metrics.set_provider_rates(&self.rates.all());
    }

    /// Forgets a provider's health (its connection settings changed); the next
    /// [`Health::sync`] starts it afresh as healthy.
    pub fn forget(&self, name: &str) {
        if let Some((_, p)) = self.providers.remove(name) {
            let from = p.inner.lock().unwrap_or_else(|e| e.into_inner()).state;
            if from != ProviderState::Healthy {
                self.metrics.provider_state_changes.with_label_values(&[name, from.as_str(), "healthy"]).inc();
            }
            self.metrics.set_sender_blocked(name, &[]);
            self.mark_changed(name);
        }
        self.rates.forget(name);
    }

    fn get(&self, name: &str) -> Option<Arc<ProviderHealth>> {
        self.providers.get(name).map(|p| p.clone())
    }

    fn mark_changed(&self, name: &str) {
        for tx in &self.changed {
            let _ = tx.send(name.to_string());
        }
    }

    fn export_state(&self, name: &str, from: Option<ProviderState>, to: ProviderState) {
        for s in ProviderState::ALL {
            self.metrics.provider_state.with_label_values(&[name, s.as_str()]).set(i64::from(s == to));
        }
        if let Some(from) = from {
            self.metrics.provider_state_changes.with_label_values(&[name, from.as_str(), to.as_str()]).inc();
        }
    }

    fn transition(&self, p: &ProviderHealth, inner: &mut Inner, to: ProviderState, reason: &str) {
        let from = inner.state;
        inner.reason = truncate_detail(reason);
        if SavedHealth::keeps(to) {
            // A new cooldown end (a failed trial) is worth saving even without a state change.
            self.mark_changed(&p.name);
        }
        if from == to {
            return;
        }
        inner.state = to;
        inner.since_ms = now_ms();
        // Entering or leaving suspended / silent is news about the account (a drain hides it).
        let (a, b) = (Account::of(from), Account::of(to));
        if a != b && a != Account::Hidden && b != Account::Hidden {
            inner.account_ms = inner.since_ms;
        }
        if to == ProviderState::Healthy {
            inner.open_for = inner.settings.open_for;
            inner.available_at = None;
            inner.trial_started = None;
            inner.consecutive_failures = 0;
        }
        self.export_state(&p.name, Some(from), to);
        self.mark_changed(&p.name);
        match to {
            ProviderState::Healthy | ProviderState::Degraded => {
                tracing::info!(provider = %p.name, from = from.as_str(), to = to.as_str(), reason = %inner.reason, "provider state changed")
            }
            _ => {
                tracing::warn!(provider = %p.name, from = from.as_str(), to = to.as_str(), reason = %inner.reason, "provider state changed")
            }
        }
    }

    /// Re-exports `baton_provider_sender_blocked` for a provider and marks it for saving.
    fn blocks_changed(&self, p: &ProviderHealth, inner: &Inner) {
        self.metrics.set_sender_blocked(&p.name, &inner.blocked_domains());
        self.mark_changed(&p.name);
    }

    fn block_sender(&self, p: &ProviderHealth, inner: &mut Inner, domain: &str, detail: &str, now: Instant) {
        if domain.is_empty() {
            return;
        }
        let until = now + inner.settings.sender_cooldown;
        let reason = truncate_detail(detail);
        let since_ms = match inner.sender_blocks.get(domain) {
            Some(b) => b.since_ms,
            None => {
                tracing::warn!(
                    provider = %p.name, domain, reason = %reason, retry_in_s = inner.settings.sender_cooldown.as_secs(),
                    "sender domain not verified at this provider; its mail goes to the next provider (verify the domain there)"
                );
                now_ms()
            }
        };
        inner.sender_blocks.insert(domain.to_string(), SenderBlock { since_ms, until, reason });
        self.blocks_changed(p, inner);
    }

    /// May a delivery of mail from `sender_domain` use this provider now?
    pub fn admit(&self, name: &str, sender_domain: &str) -> Admission {
        let Some(p) = self.get(name) else { return Admission::Send(Trial::No) };
        let mut guard = p.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *guard;
        let now = Instant::now();
        if inner.expire_blocks(now) {
            self.blocks_changed(&p, inner);
        }
        let blocked = inner.block_remaining(sender_domain, now).is_some();
        // Evaluated from the live rates: no state of its own, it ends as the window slides.
        let rate_paused = self.rates.pausing(name).is_some();
        let trial_due = |inner: &Inner| inner.cooldown_over(now) && !inner.trial_in_flight(now) && !rate_paused;
        match inner.state {
            ProviderState::Healthy | ProviderState::Degraded if blocked => Admission::Skip(Skip::SenderBlocked),
            ProviderState::Healthy | ProviderState::Degraded if rate_paused => Admission::Skip(Skip::RateWarning),
            ProviderState::Healthy | ProviderState::Degraded => Admission::Send(Trial::No),
            ProviderState::Drained | ProviderState::Silent => Admission::Skip(Skip::State(inner.state)),
            // A blocked sender must not take the trial: its answer would say nothing.
            ProviderState::Suspended if inner.trial_ends_suspension() && trial_due(inner) && !blocked => {
                inner.trial_started = Some(now);
                Admission::Send(Trial::Yes)
            }
            ProviderState::Open | ProviderState::RateLimited if trial_due(inner) && !blocked => {
                inner.trial_started = Some(now);
                Admission::Send(Trial::Yes)
            }
            ProviderState::Suspended | ProviderState::Open | ProviderState::RateLimited => {
                Admission::Skip(Skip::State(inner.state))
            }
        }
    }

    /// Records the outcome of an attempt that `admit` allowed, for mail from `sender_domain`.
    pub fn record(&self, name: &str, sender_domain: &str, report: &SendReport, trial: Trial) {
        let Some(p) = self.get(name) else { return };
        let mut guard = p.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *guard;
        let now = Instant::now();
        if trial == Trial::Yes {
            inner.trial_started = None;
        }
        inner.prune(now);
        let failed = match report.class {
            OutcomeClass::Accepted | OutcomeClass::RecipientRejected => Some(false),
            OutcomeClass::BadRequest | OutcomeClass::SenderUnverified => None,
            OutcomeClass::Transient | OutcomeClass::RateLimited | OutcomeClass::Account => Some(true),
        };
        if let Some(f) = failed {
            inner.window.push(now, inner.settings.window, f);
        }
        if matches!(inner.state, ProviderState::Drained | ProviderState::Silent) {
            return; // the operator, or a canary read back, decides when it comes back
        }
        let detail = report.detail.as_str();
        match (inner.state, report.class) {
            // A per-domain answer, whatever the provider's state.
            (_, OutcomeClass::SenderUnverified) => self.block_sender(&p, inner, sender_domain, detail, now),
            (ProviderState::Suspended, _) => self.record_while_suspended(&p, inner, report, trial, now),
            (_, class) => self.record_class(&p, inner, class, report, trial, now),
        }
    }

    fn record_class(
        &self,
        p: &ProviderHealth,
        inner: &mut Inner,
        class: OutcomeClass,
        report: &SendReport,
        trial: Trial,
        now: Instant,
    ) {
        let detail = report.detail.as_str();
        match class {
            OutcomeClass::Account => {
                inner.consecutive_failures += 1;
                inner.available_at = Some(now + inner.settings.account_cooldown);
                self.transition(p, inner, ProviderState::Suspended, detail);
            }
            OutcomeClass::RateLimited => {
                inner.consecutive_failures += 1;
                let back_off = report.retry_after.unwrap_or(inner.settings.open_for);
                inner.available_at = Some(now + back_off);
                self.transition(p, inner, ProviderState::RateLimited, detail);
            }
            OutcomeClass::Transient => self.record_transient(p, inner, detail, trial, now),
            OutcomeClass::Accepted
            | OutcomeClass::RecipientRejected
            | OutcomeClass::BadRequest
            | OutcomeClass::SenderUnverified => {
                if matches!(class, OutcomeClass::Accepted | OutcomeClass::RecipientRejected) {
                    inner.consecutive_failures = 0;
                }
                let recovered_trial =
                    trial == Trial::Yes && matches!(inner.state, ProviderState::Open | ProviderState::RateLimited);
                let (ratio, _) = inner.failure_ratio();
                if recovered_trial {
                    self.transition(p, inner, ProviderState::Healthy, "half-open trial succeeded");
                } else if inner.state == ProviderState::Degraded
                    && inner.consecutive_failures == 0
                    && ratio < inner.settings.failure_rate / 2.0
                {
                    self.transition(p, inner, ProviderState::Healthy, "failures stopped");
                }
            }
        }
    }

    fn record_transient(&self, p: &ProviderHealth, inner: &mut Inner, detail: &str, trial: Trial, now: Instant) {
        inner.consecutive_failures += 1;
        let (ratio, total) = inner.failure_ratio();
        let trip = inner.consecutive_failures >= inner.settings.failure_threshold
            || (total >= inner.settings.min_requests as usize && ratio >= inner.settings.failure_rate);
        if trial == Trial::Yes && matches!(inner.state, ProviderState::Open | ProviderState::RateLimited) {
            if inner.state == ProviderState::Open {
                inner.open_for = (inner.open_for * 2).min(inner.settings.max_open_for);
            }
            inner.available_at = Some(now + inner.open_for);
            self.transition(p, inner, ProviderState::Open, detail);
        } else if trip && inner.state != ProviderState::Open {
            inner.available_at = Some(now + inner.open_for);
            self.transition(p, inner, ProviderState::Open, detail);
        } else if inner.state == ProviderState::Healthy {
            self.transition(p, inner, ProviderState::Degraded, detail);
        }
    }

    /// While suspended only the trial send decides (attempts that started before the
    /// suspension change nothing): a success ends the suspension, an account failure restarts
    /// the cooldown, any other failure waits `open_for` before the next trial.
    fn record_while_suspended(
        &self,
        p: &ProviderHealth,
        inner: &mut Inner,
        r: &SendReport,
        trial: Trial,
        now: Instant,
    ) {
        if trial == Trial::No {
            return;
        }
        match r.class {
            OutcomeClass::Accepted | OutcomeClass::RecipientRejected => {
                self.transition(p, inner, ProviderState::Healthy, "trial send succeeded after account cooldown")
            }
            OutcomeClass::Account => {
                inner.available_at = Some(now + inner.settings.account_cooldown);
                self.transition(p, inner, ProviderState::Suspended, &r.detail);
            }
            OutcomeClass::Transient | OutcomeClass::RateLimited => {
                inner.available_at = Some(now + r.retry_after.unwrap_or(inner.settings.open_for));
                self.mark_changed(&p.name);
            }
            // The answer says nothing about the account: the next message may try.
            OutcomeClass::BadRequest | OutcomeClass::SenderUnverified => {}
        }
    }

    /// Is an active probe due for this provider? Marks it running when it is.
    pub fn probe_due(&self, name: &str) -> bool {
        let Some(p) = self.get(name) else { return false };
        let mut inner = p.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.probe_running || !inner.probe_enabled {
            return false;
        }
        let interval = inner.probe_interval();
        let due = inner.last_probe_at.is_none_or(|at| at.elapsed() >= interval);
        if due {
            inner.probe_running = true;
        }
        due
    }

    /// The time between this provider's probes now (zero: no such provider).
    pub fn probe_interval(&self, name: &str) -> Duration {
        self.get(name).map_or(Duration::ZERO, |p| p.inner.lock().unwrap_or_else(|e| e.into_inner()).probe_interval())
    }

    /// A due probe was left to another node (it holds the provider's probe lease): the next
    /// one is due an interval from now.
    pub fn probe_skipped(&self, name: &str) {
        let Some(p) = self.get(name) else { return };
        let mut inner = p.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.probe_running = false;
        inner.last_probe_at = Some(Instant::now());
    }

    /// Records an active probe's result; probes drive recovery from `suspended`. An
    /// inconclusive probe changes nothing (it is shown, counted and logged when it changes).
    pub fn record_probe(&self, name: &str, report: &ProbeReport) {
        let Some(p) = self.get(name) else { return };
        self.metrics.health_probes.with_label_values(&[name, report.verdict.as_str()]).inc();
        let mut guard = p.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *guard;
        let now = Instant::now();
        inner.probe_running = false;
        inner.last_probe_at = Some(now);
        let detail = truncate_detail(&report.detail);
        let previous = inner.last_probe.as_ref().map(|p| p.result.as_str());
        if previous != Some(report.verdict.as_str()) {
            log_probe_change(&p.name, report.verdict, &detail);
        }
        inner.last_probe = Some(ProbeRecord { at_ms: now_ms(), result: report.verdict, detail });
        let failure = match report.verdict {
            ProbeVerdict::Usable => None,
            ProbeVerdict::Failed(class) => Some(class),
            ProbeVerdict::Inconclusive => return,
        };
        match (inner.state, failure) {
            // A probe cannot see mail being dropped: only a canary read back ends `silent`.
            (ProviderState::Drained | ProviderState::RateLimited | ProviderState::Silent, _) => {}
            (ProviderState::Suspended, None) => {
                if inner.cooldown_over(now) {
                    self.transition(&p, inner, ProviderState::Healthy, "probe passed after account cooldown");
                }
            }
            // An open circuit closes only through its half-open trial: a relay can pass the
            // probe (EHLO, AUTH) and still fail every MAIL, and the cooldown must keep doubling.
            (ProviderState::Open | ProviderState::Healthy | ProviderState::Degraded, None) => {}
            (_, Some(OutcomeClass::Account)) => {
                if inner.state != ProviderState::Suspended {
                    inner.available_at = Some(now + inner.settings.account_cooldown);
                    self.transition(&p, inner, ProviderState::Suspended, &format!("probe: {}", report.detail));
                }
            }
            (ProviderState::Healthy | ProviderState::Degraded, Some(_)) => {
                inner.consecutive_failures += 1;
                if inner.consecutive_failures >= inner.settings.failure_threshold {
                    inner.available_at = Some(now + inner.open_for);
                    self.transition(&p, inner, ProviderState::Open, &format!("probe: {}", report.detail));
                } else if inner.state == ProviderState::Healthy {
                    self.transition(&p, inner, ProviderState::Degraded, &format!("probe: {}", report.detail));
                }
            }
            (ProviderState::Open | ProviderState::Suspended, Some(_)) => {}
        }
    }

    /// Canaries sent through this provider were lost `lost` times in a row: out of rotation as
    /// `silent` (a drained provider stays drained: the operator decides).
    /// True when it became silent just now.
    pub fn silence(&self, name: &str, lost: u32) -> bool {
        let Some(p) = self.get(name) else { return false };
        let mut guard = p.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *guard;
        if matches!(inner.state, ProviderState::Drained | ProviderState::Silent) {
            return false;
        }
        let reason = format!("{lost} canaries in a row were not read back: it accepts mail and drops it");
        self.transition(&p, inner, ProviderState::Silent, &reason);
        true
    }

    /// A canary sent through this provider was read back: a `silent` provider is back.
    pub fn canary_arrived(&self, name: &str) {
        let Some(p) = self.get(name) else { return };
        let mut guard = p.inner.lock().unwrap_or_else(|e| e.into_inner());
        if guard.state == ProviderState::Silent {
            self.transition(&p, &mut guard, ProviderState::Healthy, "a canary was read back");
        }
    }

    /// Operator: take a provider out of rotation now.
    pub fn drain(&self, name: &str) -> Option<ProviderState> {
        let p = self.get(name)?;
        let mut inner = p.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.state != ProviderState::Drained {
            inner.operator_ms = now_ms();
        }
        self.transition(&p, &mut inner, ProviderState::Drained, "drained by operator");
        Some(inner.state)
    }

    /// Operator: put a provider back into rotation now (also ends a suspension, lifts every
    /// sender-domain block and a `pause_on_rate` pause, whose counts start afresh).
    pub fn resume(&self, name: &str) -> Option<ProviderState> {
        let p = self.get(name)?;
        self.rates.resume(name);
        let mut guard = p.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *guard;
        inner.window.clear();
        // The operator's word on everything at once: newer than any drain, suspension or block.
        let now = now_ms();
        (inner.operator_ms, inner.account_ms, inner.blocks_cleared_ms) = (now, now, now);
        if !inner.sender_blocks.is_empty() {
            inner.sender_blocks.clear();
            self.blocks_changed(&p, inner);
        }
        self.transition(&p, inner, ProviderState::Healthy, "resumed by operator");
        self.mark_changed(name);
        Some(inner.state)
    }

    /// When this provider may be usable again for mail from `sender_domain` (`None`: only
    /// after an operator acts).
    pub fn available_in(&self, name: &str, sender_domain: &str) -> Option<Duration> {
        let p = self.get(name)?;
        let inner = p.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let fast_probe = (inner.settings.probe_interval / 4).max(Duration::from_millis(100));
        let cooldown_left = inner.available_at.map(|at| at.saturating_duration_since(now)).unwrap_or_default();
        match inner.state {
            // Paused on its rates: look again when the oldest counts leave the window.
            ProviderState::Healthy | ProviderState::Degraded if self.rates.pausing(name).is_some() => {
                let block = inner.block_remaining(sender_domain, now).unwrap_or_default();
                Some(self.rates.recheck_in(name).unwrap_or(TRIAL_RECHECK).max(block))
            }
            ProviderState::Healthy | ProviderState::Degraded => {
                Some(inner.block_remaining(sender_domain, now).unwrap_or_default())
            }
            // Back when a canary arrives (or an operator acts): no time to wait for.
            ProviderState::Drained | ProviderState::Silent => None,
            // Another message holds the trial: look again once it has had time to finish.
            ProviderState::Open | ProviderState::RateLimited | ProviderState::Suspended
                if inner.trial_in_flight(now) =>
            {
                Some(TRIAL_RECHECK)
            }
            ProviderState::Suspended if inner.trial_ends_suspension() => Some(cooldown_left),
            // Back after the cooldown and a passing probe: check again at the fast probe pace.
            ProviderState::Suspended => Some(cooldown_left.max(fast_probe)),
            ProviderState::Open | ProviderState::RateLimited => Some(cooldown_left),
        }
    }

    /// Warm standby: true for `share` of the calls for this route, spread evenly.
    pub fn standby_turn(&self, route: &str, share: f64) -> bool {
        let counter = self.standby_counters.entry(route.to_string()).or_insert_with(|| AtomicU64::new(0));
        let n = counter.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * share).floor() > (n * share).floor()
    }

    pub fn state(&self, name: &str) -> Option<ProviderState> {
        Some(self.get(name)?.inner.lock().unwrap_or_else(|e| e.into_inner()).state)
    }

    /// Whether the provider takes new mail: healthy or degraded, and not paused on its rates.
    pub fn in_rotation(&self, name: &str) -> bool {
        matches!(self.state(name), Some(ProviderState::Healthy | ProviderState::Degraded))
            && self.rates.pausing(name).is_none()
    }

    /// `health.trial_timeout` of this provider: the longest a message waits on its trial.
    pub fn trial_timeout(&self, name: &str) -> Duration {
        self.get(name)
            .map(|p| p.inner.lock().unwrap_or_else(|e| e.into_inner()).settings.trial_timeout)
            .unwrap_or(Duration::from_secs(5))
    }

    /// Names of every provider health knows.
    pub fn names(&self) -> Vec<String> {
        self.providers.iter().map(|p| p.key().clone()).collect()
    }

    /// Every provider's status, sorted by name.
    pub fn statuses(&self) -> Vec<ProviderStatus> {
        let now = Instant::now();
        let mut out: Vec<ProviderStatus> = self.providers.iter().map(|entry| status(entry.value(), now)).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The provider's durable state as stored bytes; `None` when there is nothing worth
    /// keeping (or no such provider): the stored record, if any, is to be removed.
    pub fn saved(&self, name: &str) -> Option<Vec<u8>> {
        let p = self.get(name)?;
        let inner = p.inner.lock().unwrap_or_else(|e| e.into_inner());
        let saved = snapshot(&inner, Instant::now());
        if !SavedHealth::keeps(saved.state) && saved.sender_blocks.is_empty() {
            return None;
        }
        serde_json::to_vec(&saved).ok()
    }

    /// Applies state saved by an earlier run (call after [`Health::sync`] at start). A
    /// restored suspension still needs its cooldown and a passing probe or trial to end.
    pub fn restore(&self, name: &str, bytes: &[u8]) {
        let Some(p) = self.get(name) else { return };
        let saved: SavedHealth = match serde_json::from_slice(bytes) {
            Ok(s) => s,
            Err(e) => return tracing::warn!(provider = %name, error = %e, "saved provider health unreadable; ignored"),
        };
        let mut guard = p.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *guard;
        let same_settings = saved.fingerprint == inner.fingerprint;
        if !same_settings && saved.state != ProviderState::Drained {
            tracing::info!(provider = %name, saved = saved.state.as_str(), "provider settings changed since the last run; its saved health is not applied");
            drop(guard);
            return self.mark_changed(name);
        }
        let now = Instant::now();
        let (now_wall, instant) = (now_ms(), |ms: u64| instant_of(ms, now));
        inner.operator_ms = saved.operator_since();
        if same_settings {
            inner.account_ms = saved.account_since();
            inner.blocks_cleared_ms = saved.blocks_cleared_ms;
            for b in saved.sender_blocks.iter().filter(|b| b.until_ms > now_wall) {
                let block = SenderBlock { since_ms: b.since_ms, until: instant(b.until_ms), reason: b.reason.clone() };
                inner.sender_blocks.insert(b.domain.clone(), block);
            }
            self.metrics.set_sender_blocked(name, &inner.blocked_domains());
            inner.available_at = saved.until_ms.map(instant);
            inner.open_for = Duration::from_millis(saved.open_for_ms).max(inner.settings.open_for);
        }
        if SavedHealth::keeps(saved.state) {
            inner.state = saved.state;
            inner.since_ms = saved.since_ms;
            inner.reason = saved.reason.clone();
            self.export_state(name, None, saved.state);
            tracing::warn!(provider = %name, state = saved.state.as_str(), reason = %saved.reason, "provider health restored from the last run");
        }
    }
}

/// A provider's durable state (`state` as it is: see `Health::saved` for what is kept).
fn snapshot(inner: &Inner, now: Instant) -> SavedHealth {
    let sender_blocks: Vec<SavedBlock> = inner
        .sender_blocks
        .iter()
        .filter(|(_, b)| b.until > now)
        .map(|(domain, b)| SavedBlock {
            domain: domain.clone(),
            since_ms: b.since_ms,
            until_ms: wall_ms(b.until, now),
            reason: b.reason.clone(),
        })
        .collect();
    SavedHealth {
        state: if SavedHealth::keeps(inner.state) { inner.state } else { ProviderState::Healthy },
        since_ms: inner.since_ms,
        reason: inner.reason.clone(),
        until_ms: inner.available_at.map(|at| wall_ms(at, now)),
        open_for_ms: inner.open_for.as_millis() as u64,
        sender_blocks,
        fingerprint: inner.fingerprint.clone(),
        operator_ms: inner.operator_ms,
        account_ms: inner.account_ms,
        blocks_cleared_ms: inner.blocks_cleared_ms,
    }
}

/// `at` as wall-clock milliseconds (`now` is the `Instant` of this moment).
fn wall_ms(at: Instant, now: Instant) -> u64 {
    now_ms() + at.saturating_duration_since(now).as_millis() as u64
}

/// Wall-clock milliseconds as an `Instant` (a time past is now).
fn instant_of(ms: u64, now: Instant) -> Instant {
    now + Duration::from_millis(ms.saturating_sub(now_ms()))
}

fn status(p: &ProviderHealth, now: Instant) -> ProviderStatus {
    let mut inner = p.inner.lock().unwrap_or_else(|e| e.into_inner());
    inner.prune(now);
    let (ratio, total) = inner.failure_ratio();
    let mut sender_blocks: Vec<BlockStatus> = inner
        .sender_blocks
        .iter()
        .filter(|(_, b)| b.until > now)
        .map(|(domain, b)| BlockStatus {
            domain: domain.clone(),
            since_ms: b.since_ms,
            remaining: b.until - now,
            reason: b.reason.clone(),
        })
        .collect();
    sender_blocks.sort_by(|a, b| a.domain.cmp(&b.domain));
    ProviderStatus {
        name: p.name.clone(),
        state: inner.state,
        since_ms: inner.since_ms,
        reason: inner.reason.clone(),
        consecutive_failures: inner.consecutive_failures,
        window_requests: total,
        success_ratio: (total > 0).then_some(1.0 - ratio),
        probe_enabled: inner.probe_enabled,
        last_probe: inner.last_probe.clone(),
        next_trial_in: match inner.state {
            ProviderState::Open | ProviderState::RateLimited | ProviderState::Suspended => {
                inner.available_at.map(|at| at.saturating_duration_since(now))
            }
            _ => None,
        },
        sender_blocks,
    }
}

/// One log line when a provider's probe verdict changes (not one per probe).
fn log_probe_change(provider: &str, verdict: ProbeVerdict, detail: &str) {
    match verdict {
        ProbeVerdict::Usable => tracing::info!(provider, detail, "probe passes"),
        ProbeVerdict::Failed(class) => tracing::warn!(provider, class = class.as_str(), detail, "probe failed"),
        ProbeVerdict::Inconclusive => tracing::warn!(
            provider,
            detail,
            "probe inconclusive: it cannot judge this provider, so it changes nothing; a suspension ends with a trial send (fix the key's permissions, or set probe = false)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HealthOverride;
    use rates::{OnWarn, WarnLevels};

    fn health(settings: HealthSettings) -> Health {
        let h = Health::new(Arc::new(Metrics::new()));
        h.providers.insert(
            "p".into(),
            Arc::new(ProviderHealth { name: "p".into(), inner: Mutex::new(Inner::new(settings, true, String::new())) }),
        );
        h
    }

    /// Records an attempt for mail from example.com.
    fn record(h: &Health, class: OutcomeClass, detail: &str, retry_after: Option<Duration>, trial: bool) {
        let mut report = SendReport::failed(class, 1, detail);
        report.retry_after = retry_after;
        h.record("p", "example.com", &report, if trial { Trial::Yes } else { Trial::No });
    }

    fn settings() -> HealthSettings {
        let mut s = HealthSettings::resolve(&HealthOverride::default(), &HealthOverride::default());
        s.open_for = Duration::from_millis(200);
        s.max_open_for = Duration::from_millis(1000);
        s
    }

    #[test]
    fn threshold_opens_and_trial_closes() {
        let h = health(settings());
        for _ in 0..2 {
            assert_eq!(h.admit("p", "example.com"), Admission::Send(Trial::No));
            record(&h, OutcomeClass::Transient, "451", None, false);
        }
        assert_eq!(h.state("p"), Some(ProviderState::Degraded));
        record(&h, OutcomeClass::Transient, "451", None, false);
        assert_eq!(h.state("p"), Some(ProviderState::Open));
        assert_eq!(h.admit("p", "example.com"), Admission::Skip(Skip::State(ProviderState::Open)));
        std::thread::sleep(Duration::from_millis(210));
        assert_eq!(h.admit("p", "example.com"), Admission::Send(Trial::Yes));
        assert_eq!(
            h.admit("p", "example.com"),
            Admission::Skip(Skip::State(ProviderState::Open)),
            "one trial at a time"
        );
        // Failed trial: closed again, and the cooldown doubled (200 → 400 ms).
        record(&h, OutcomeClass::Transient, "451", None, true);
        assert_eq!(h.admit("p", "example.com"), Admission::Skip(Skip::State(ProviderState::Open)));
        assert!(h.statuses()[0].next_trial_in.unwrap() > Duration::from_millis(300));
        std::thread::sleep(Duration::from_millis(410));
        assert_eq!(h.admit("p", "example.com"), Admission::Send(Trial::Yes));
        record(&h, OutcomeClass::Accepted, "250", None, true);
        assert_eq!(h.state("p"), Some(ProviderState::Healthy));
    }

    #[test]
    fn recipient_rejections_and_bad_requests_do_not_count() {
        let h = health(settings());
        for _ in 0..50 {
            record(&h, OutcomeClass::RecipientRejected, "550", None, false);
            record(&h, OutcomeClass::BadRequest, "552", None, false);
        }
        assert_eq!(h.state("p"), Some(ProviderState::Healthy));
    }

    #[test]
    fn failure_ratio_opens() {
        let mut s = settings();
        s.failure_threshold = 100;
        s.min_requests = 10;
        let h = health(s);
        for i in 0..10 {
            let class = if i % 2 == 1 { OutcomeClass::Transient } else { OutcomeClass::Accepted };
            record(&h, class, "x", None, false);
        }
        assert_eq!(h.state("p"), Some(ProviderState::Open));
    }

    #[test]
    fn account_suspends_until_cooldown_and_probe() {
        let mut s = settings();
        s.account_cooldown = Duration::from_millis(300);
        let h = health(s);
        record(&h, OutcomeClass::Account, "535 5.7.8", None, false);
        assert_eq!(h.admit("p", "example.com"), Admission::Skip(Skip::State(ProviderState::Suspended)));
        let ok = ProbeReport::usable("ok");
        h.record_probe("p", &ok);
        assert_eq!(h.state("p"), Some(ProviderState::Suspended), "cooldown not over");
        std::thread::sleep(Duration::from_millis(310));
        assert_eq!(
            h.admit("p", "example.com"),
            Admission::Skip(Skip::State(ProviderState::Suspended)),
            "needs a probe, not just time"
        );
        h.record_probe("p", &ok);
        assert_eq!(h.state("p"), Some(ProviderState::Healthy));
    }

    #[test]
    fn rate_limit_honours_retry_after() {
        let h = health(settings());
        record(&h, OutcomeClass::RateLimited, "429", Some(Duration::from_millis(300)), false);
        assert_eq!(h.admit("p", "example.com"), Admission::Skip(Skip::State(ProviderState::RateLimited)));
        std::thread::sleep(Duration::from_millis(310));
        assert_eq!(h.admit("p", "example.com"), Admission::Send(Trial::Yes));
        record(&h, OutcomeClass::Accepted, "ok", None, true);
        assert_eq!(h.state("p"), Some(ProviderState::Healthy));
    }

    #[test]
    fn drain_and_resume() {
        let h = health(settings());
        h.drain("p");
        assert_eq!(h.admit("p", "example.com"), Admission::Skip(Skip::State(ProviderState::Drained)));
        record(&h, OutcomeClass::Accepted, "ok", None, false);
        assert_eq!(h.state("p"), Some(ProviderState::Drained));
        h.resume("p");
        assert_eq!(h.admit("p", "example.com"), Admission::Send(Trial::No));
    }

    #[test]
    fn standby_share_is_exact() {
        let h = health(settings());
        let turns = (0..1000).filter(|_| h.standby_turn("r", 0.02)).count();
        assert_eq!(turns, 20);
    }

    #[test]
    fn an_inconclusive_probe_changes_nothing_and_a_trial_send_ends_the_suspension() {
        let mut s = settings();
        s.account_cooldown = Duration::from_millis(200);
        let h = health(s);
        let inconclusive = ProbeReport::inconclusive("GetAccount: AccessDeniedException");
        h.record_probe("p", &inconclusive);
        assert_eq!(h.state("p"), Some(ProviderState::Healthy));
        assert_eq!(h.statuses()[0].last_probe.as_ref().unwrap().result, ProbeVerdict::Inconclusive);
        record(&h, OutcomeClass::Account, "suspended", None, false);
        h.record_probe("p", &inconclusive);
        assert_eq!(h.admit("p", "example.com"), Admission::Skip(Skip::State(ProviderState::Suspended)), "cooldown");
        std::thread::sleep(Duration::from_millis(210));
        assert_eq!(h.admit("p", "example.com"), Admission::Send(Trial::Yes), "the probe cannot judge: a trial send");
        assert_eq!(h.admit("p", "example.com"), Admission::Skip(Skip::State(ProviderState::Suspended)), "one trial");
        // A failed trial restarts the cooldown; a successful one ends the suspension.
        record(&h, OutcomeClass::Account, "still suspended", None, true);
        assert_eq!(h.admit("p", "example.com"), Admission::Skip(Skip::State(ProviderState::Suspended)));
        std::thread::sleep(Duration::from_millis(210));
        assert_eq!(h.admit("p", "example.com"), Admission::Send(Trial::Yes));
        record(&h, OutcomeClass::Accepted, "250", None, true);
        assert_eq!(h.state("p"), Some(ProviderState::Healthy));
    }

    #[test]
    fn attempts_that_started_before_a_suspension_do_not_end_it() {
        let h = health(settings());
        record(&h, OutcomeClass::Account, "suspended", None, false);
        record(&h, OutcomeClass::Accepted, "250", None, false);
        record(&h, OutcomeClass::RateLimited, "429", Some(Duration::from_millis(1)), false);
        assert_eq!(h.state("p"), Some(ProviderState::Suspended));
    }

    #[test]
    fn an_unverified_sender_blocks_only_its_domain_until_the_cooldown() {
        let mut s = settings();
        s.sender_cooldown = Duration::from_millis(200);
        let h = health(s);
        let report = SendReport::failed(OutcomeClass::SenderUnverified, 1, "403 not a verified Sender Identity");
        for _ in 0..10 {
            h.record("p", "b.example.com", &report, Trial::No);
        }
        assert_eq!(h.state("p"), Some(ProviderState::Healthy), "not a provider problem");
        assert_eq!(h.admit("p", "b.example.com"), Admission::Skip(Skip::SenderBlocked));
        assert_eq!(h.admit("p", "a.example.com"), Admission::Send(Trial::No));
        assert!(h.available_in("p", "b.example.com").unwrap() > Duration::from_millis(100));
        assert_eq!(h.available_in("p", "a.example.com"), Some(Duration::ZERO));
        assert_eq!(h.statuses()[0].sender_blocks[0].domain, "b.example.com");
        std::thread::sleep(Duration::from_millis(210));
        assert_eq!(h.admit("p", "b.example.com"), Admission::Send(Trial::No), "tried again after the cooldown");
        assert!(h.statuses()[0].sender_blocks.is_empty());
    }

    /// Health whose provider "p" warns at 4 % bounces / 0.08 % complaints over an hour, with
    /// 100 sent at least, on a clock the test moves.
    fn health_with_rates(on_warn: OnWarn) -> (Health, Clock) {
        let clock = Clock::manual();
        let mut h = health(settings());
        h.rates = Rates::new(clock.clone());
        let warn = WarnLevels { bounce: 0.04, complaint: 0.0008 };
        h.rates.configure("p", RateSettings { warn, window: Duration::from_secs(3600), min_sent: 100, on_warn });
        (h, clock)
    }

    #[test]
    fn without_pause_on_rate_a_high_bounce_rate_changes_no_routing() {
        let (h, _) = health_with_rates(OnWarn::Alert);
        h.rates().record_sent("p", 100);
        (0..10).for_each(|_| h.rates().record_bounce("p"));
        assert!(h.rates().over_warn("p").is_some());
        assert_eq!(h.admit("p", "example.com"), Admission::Send(Trial::No));
        assert!(h.in_rotation("p"));
        assert_eq!(h.available_in("p", "example.com"), Some(Duration::ZERO));
    }

    #[test]
    fn pause_on_rate_skips_a_provider_over_its_warn_level_until_the_window_slides() {
        let (h, clock) = health_with_rates(OnWarn::Pause);
        h.rates().record_sent("p", 100);
        (0..3).for_each(|_| h.rates().record_bounce("p"));
        assert_eq!(h.admit("p", "example.com"), Admission::Send(Trial::No), "3 % is under 4 %");
        h.rates().record_bounce("p");
        assert_eq!(h.admit("p", "example.com"), Admission::Skip(Skip::RateWarning));
        assert!(!h.in_rotation("p"));
        assert_eq!(h.state("p"), Some(ProviderState::Healthy), "no state of its own: nothing to save or restore");
        let back = h.available_in("p", "example.com").unwrap();
        assert!(back > Duration::from_secs(3500), "delivery looks again when the counts leave the window: {back:?}");
        clock.advance(Duration::from_secs(3601));
        assert_eq!(h.admit("p", "example.com"), Admission::Send(Trial::No));
        assert!(h.in_rotation("p"));
    }

    #[test]
    fn a_rate_pause_holds_back_trials_and_an_operator_resume_lifts_it() {
        let (h, _) = health_with_rates(OnWarn::Pause);
        h.rates().record_sent("p", 100);
        h.rates().record_complaint("p");
        record(&h, OutcomeClass::RateLimited, "429", Some(Duration::ZERO), false);
        assert_eq!(
            h.admit("p", "example.com"),
            Admission::Skip(Skip::State(ProviderState::RateLimited)),
            "a paused provider takes no trial either"
        );
        h.resume("p");
        assert_eq!(h.admit("p", "example.com"), Admission::Send(Trial::No));
        assert_eq!(h.rates().snapshot("p").sent, 0, "counts start afresh");
    }

    #[test]
    fn every_skip_reason_is_a_failover_reason() {
        let out_of_rotation = ProviderState::ALL
            .into_iter()
            .filter(|s| !matches!(s, ProviderState::Healthy | ProviderState::Degraded))
            .map(Skip::State);
        for skip in out_of_rotation.chain([Skip::SenderBlocked, Skip::RateWarning, Skip::MaxRate]) {
            assert!(crate::metrics::FAILOVER_REASONS.contains(&skip.as_str()), "{} in FAILOVER_REASONS", skip.as_str());
        }
    }

    #[test]
    fn drain_suspension_and_blocks_survive_a_restart_with_the_same_settings() {
        let mut s = settings();
        s.account_cooldown = Duration::from_secs(60);
        let before = health(s.clone());
        record(&before, OutcomeClass::Account, "suspended", None, false);
        let blocked = SendReport::failed(OutcomeClass::SenderUnverified, 1, "unverified");
        before.record("p", "b.example.com", &blocked, Trial::No);
        let saved = before.saved("p").expect("something to keep");
        let since = before.statuses()[0].since_ms;

        let after = health(s.clone());
        after.restore("p", &saved);
        let st = &after.statuses()[0];
        assert_eq!(st.state, ProviderState::Suspended);
        assert_eq!(st.since_ms, since);
        assert!(st.next_trial_in.unwrap() > Duration::from_secs(50), "the cooldown goes on");
        assert_eq!(after.admit("p", "a.example.com"), Admission::Skip(Skip::State(ProviderState::Suspended)));
        assert_eq!(st.sender_blocks[0].domain, "b.example.com");

        // Other connection settings: the suspension is not applied, a drain is.
        let changed = Health::new(Arc::new(Metrics::new()));
        let inner = Mutex::new(Inner::new(s.clone(), true, "other-settings".into()));
        changed.providers.insert("p".into(), Arc::new(ProviderHealth { name: "p".into(), inner }));
        changed.restore("p", &saved);
        assert_eq!(changed.state("p"), Some(ProviderState::Healthy));
        before.drain("p");
        changed.restore("p", &before.saved("p").unwrap());
        assert_eq!(changed.state("p"), Some(ProviderState::Drained));

        // Healthy with no blocks: nothing to keep.
        assert!(health(s).saved("p").is_none());
    }
}
