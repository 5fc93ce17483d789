//! Provider health: one state machine per provider, shared by every route and worker.
//!
//! ```text
//!  healthy ⇄ degraded ──(threshold / ratio)──▶ open ──(cooldown)──▶ one half-open trial
//!     ▲                                          ▲  ╰── trial fails: cooldown doubles ──╯
//!     ╰──────────── trial succeeds ──────────────╯
//!  any ──account outcome──▶ suspended ──(account_cooldown, then a passing probe)──▶ healthy
//!  any ──rate_limited─────▶ rate_limited ──(Retry-After over)──▶ one trial ──▶ healthy
//!  any ──operator drain───▶ drained ──(operator resume)──▶ healthy
//! ```
//! Only `transient`, `rate_limited` and `account` count against a provider; a rejected
//! recipient or an invalid message says nothing about the provider's health.

pub mod probe;

use crate::config::{Config, HealthSettings};
use crate::metrics::Metrics;
use crate::outcome::{OutcomeClass, truncate_detail};
use crate::spool::record::now_ms;
use dashmap::DashMap;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderState {
    Healthy,
    Degraded,
    Open,
    Suspended,
    RateLimited,
    Drained,
}

impl ProviderState {
    pub const ALL: [ProviderState; 6] = [
        ProviderState::Healthy,
        ProviderState::Degraded,
        ProviderState::Open,
        ProviderState::Suspended,
        ProviderState::RateLimited,
        ProviderState::Drained,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderState::Healthy => "healthy",
            ProviderState::Degraded => "degraded",
            ProviderState::Open => "open",
            ProviderState::Suspended => "suspended",
            ProviderState::RateLimited => "rate_limited",
            ProviderState::Drained => "drained",
        }
    }
}

/// Whether a delivery may use a provider now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send. `trial` marks the single half-open attempt after a cooldown.
    Send { trial: bool },
    /// Skip this provider; it is in this state.
    Skip(ProviderState),
}

/// The last active probe of a provider.
#[derive(Debug, Clone)]
pub struct ProbeRecord {
    pub at_ms: u64,
    pub ok: bool,
    pub detail: String,
}

/// What an active probe found.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// `None` when the probe passed; otherwise the class of the failure.
    pub failure: Option<OutcomeClass>,
    pub detail: String,
}

/// A trial older than this is considered lost (its attempt never reported back).
const TRIAL_EXPIRY: Duration = Duration::from_secs(600);
/// How soon a message that found the trial taken looks again.
const TRIAL_RECHECK: Duration = Duration::from_millis(250);

struct Inner {
    settings: HealthSettings,
    state: ProviderState,
    since_ms: u64,
    reason: String,
    consecutive_failures: u32,
    /// (when, failed) of recent attempts that count for health.
    window: VecDeque<(Instant, bool)>,
    /// Current cooldown of the open circuit.
    open_for: Duration,
    /// Open: earliest trial; rate_limited: end of the back-off; suspended: end of the cooldown.
    available_at: Option<Instant>,
    trial_started: Option<Instant>,
    last_probe: Option<ProbeRecord>,
    last_probe_at: Option<Instant>,
    probe_running: bool,
}

impl Inner {
    fn new(settings: HealthSettings) -> Self {
        Inner {
            open_for: settings.open_for,
            settings,
            state: ProviderState::Healthy,
            since_ms: now_ms(),
            reason: String::new(),
            consecutive_failures: 0,
            window: VecDeque::new(),
            available_at: None,
            trial_started: None,
            last_probe: None,
            last_probe_at: None,
            probe_running: false,
        }
    }

    fn prune(&mut self, now: Instant) {
        while self.window.front().is_some_and(|(at, _)| now.duration_since(*at) > self.settings.window) {
            self.window.pop_front();
        }
    }

    fn failure_ratio(&self) -> (f64, usize) {
        let total = self.window.len();
        let failed = self.window.iter().filter(|(_, f)| *f).count();
        if total == 0 { (0.0, 0) } else { (failed as f64 / total as f64, total) }
    }

    fn trial_in_flight(&self, now: Instant) -> bool {
        self.trial_started.is_some_and(|t| now.duration_since(t) < TRIAL_EXPIRY)
    }
}

/// One provider's health.
pub struct ProviderHealth {
    name: String,
    inner: Mutex<Inner>,
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
    pub last_probe: Option<ProbeRecord>,
    pub next_trial_in: Option<Duration>,
}

pub struct Health {
    providers: DashMap<String, Arc<ProviderHealth>>,
    /// Per route: messages seen, for the warm-standby share.
    standby_counters: DashMap<String, AtomicU64>,
    metrics: Arc<Metrics>,
}

impl Health {
    pub fn new(metrics: Arc<Metrics>) -> Health {
        Health { providers: DashMap::new(), standby_counters: DashMap::new(), metrics }
    }

    /// Makes the registry match `config`: new providers start healthy; known ones keep their
    /// state and take the new settings; providers no longer configured are forgotten.
    pub fn sync(&self, config: &Config) {
        for (name, provider) in &config.providers {
            let settings = HealthSettings::resolve(&config.health, provider.health());
            match self.providers.get(name) {
                Some(p) => p.inner.lock().unwrap_or_else(|e| e.into_inner()).settings = settings,
                None => {
                    self.providers.insert(
                        name.clone(),
                        Arc::new(ProviderHealth { name: name.clone(), inner: Mutex::new(Inner::new(settings)) }),
                    );
                    self.export_state(name, None, ProviderState::Healthy);
                }
            }
        }
        self.providers.retain(|name, _| config.providers.contains_key(name));
    }

    /// Forgets a provider's health (its connection settings changed); the next
    /// [`Health::sync`] starts it afresh as healthy.
    pub fn forget(&self, name: &str) {
        if let Some((_, p)) = self.providers.remove(name) {
            let from = p.inner.lock().unwrap_or_else(|e| e.into_inner()).state;
            if from != ProviderState::Healthy {
                self.metrics.provider_state_changes.with_label_values(&[name, from.as_str(), "healthy"]).inc();
            }
        }
    }

    fn get(&self, name: &str) -> Option<Arc<ProviderHealth>> {
        self.providers.get(name).map(|p| p.clone())
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
        if from == to {
            return;
        }
        inner.state = to;
        inner.since_ms = now_ms();
        if to == ProviderState::Healthy {
            inner.open_for = inner.settings.open_for;
            inner.available_at = None;
            inner.trial_started = None;
            inner.consecutive_failures = 0;
        }
        self.export_state(&p.name, Some(from), to);
        match to {
            ProviderState::Healthy | ProviderState::Degraded => {
                tracing::info!(provider = %p.name, from = from.as_str(), to = to.as_str(), reason = %inner.reason, "provider state changed")
            }
            _ => {
                tracing::warn!(provider = %p.name, from = from.as_str(), to = to.as_str(), reason = %inner.reason, "provider state changed")
            }
        }
    }

    /// May a delivery use this provider now?
    pub fn admit(&self, name: &str) -> Admission {
        let Some(p) = self.get(name) else { return Admission::Send { trial: false } };
        let mut inner = p.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match inner.state {
            ProviderState::Healthy | ProviderState::Degraded => Admission::Send { trial: false },
            ProviderState::Drained | ProviderState::Suspended => Admission::Skip(inner.state),
            ProviderState::Open | ProviderState::RateLimited => {
                let due = inner.available_at.is_none_or(|at| now >= at);
                if due && !inner.trial_in_flight(now) {
                    inner.trial_started = Some(now);
                    Admission::Send { trial: true }
                } else {
                    Admission::Skip(inner.state)
                }
            }
        }
    }

    /// Records the outcome of an attempt that `admit` allowed.
    pub fn record(&self, name: &str, class: OutcomeClass, detail: &str, retry_after: Option<Duration>, trial: bool) {
        let Some(p) = self.get(name) else { return };
        let mut guard = p.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *guard;
        let now = Instant::now();
        if trial {
            inner.trial_started = None;
        }
        inner.prune(now);
        let failed = match class {
            OutcomeClass::Accepted | OutcomeClass::RecipientRejected => Some(false),
            OutcomeClass::BadRequest => None,
            OutcomeClass::Transient | OutcomeClass::RateLimited | OutcomeClass::Account => Some(true),
        };
        if let Some(f) = failed {
            inner.window.push_back((now, f));
        }
        if inner.state == ProviderState::Drained {
            return; // the operator decides when it comes back
        }
        match class {
            OutcomeClass::Account => {
                inner.consecutive_failures += 1;
                if inner.state != ProviderState::Suspended {
                    inner.available_at = Some(now + inner.settings.account_cooldown);
                    self.transition(&p, inner, ProviderState::Suspended, detail);
                }
            }
            OutcomeClass::RateLimited => {
                inner.consecutive_failures += 1;
                let back_off = retry_after.unwrap_or(inner.settings.open_for);
                inner.available_at = Some(now + back_off);
                self.transition(&p, inner, ProviderState::RateLimited, detail);
            }
            OutcomeClass::Transient => {
                inner.consecutive_failures += 1;
                let (ratio, total) = inner.failure_ratio();
                let trip = inner.consecutive_failures >= inner.settings.failure_threshold
                    || (total >= inner.settings.min_requests as usize && ratio >= inner.settings.failure_rate);
                if trial && matches!(inner.state, ProviderState::Open | ProviderState::RateLimited) {
                    if inner.state == ProviderState::Open {
                        inner.open_for = (inner.open_for * 2).min(inner.settings.max_open_for);
                    }
                    inner.available_at = Some(now + inner.open_for);
                    self.transition(&p, inner, ProviderState::Open, detail);
                } else if trip && inner.state != ProviderState::Open && inner.state != ProviderState::Suspended {
                    inner.available_at = Some(now + inner.open_for);
                    self.transition(&p, inner, ProviderState::Open, detail);
                } else if inner.state == ProviderState::Healthy {
                    self.transition(&p, inner, ProviderState::Degraded, detail);
                }
            }
            OutcomeClass::Accepted | OutcomeClass::RecipientRejected | OutcomeClass::BadRequest => {
                if failed == Some(false) {
                    inner.consecutive_failures = 0;
                }
                let recovered_trial = trial && matches!(inner.state, ProviderState::Open | ProviderState::RateLimited);
                let (ratio, _) = inner.failure_ratio();
                if recovered_trial {
                    self.transition(&p, inner, ProviderState::Healthy, "half-open trial succeeded");
                } else if inner.state == ProviderState::Degraded
                    && inner.consecutive_failures == 0
                    && ratio < inner.settings.failure_rate / 2.0
                {
                    self.transition(&p, inner, ProviderState::Healthy, "failures stopped");
                }
            }
        }
    }

    /// Is an active probe due for this provider? Marks it running when it is.
    pub fn probe_due(&self, name: &str) -> bool {
        let Some(p) = self.get(name) else { return false };
        let mut inner = p.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.probe_running {
            return false;
        }
        let base = inner.settings.probe_interval;
        // Faster while out of rotation, so recovery is noticed quickly.
        let interval = match inner.state {
            ProviderState::Open | ProviderState::Suspended => (base / 4).max(Duration::from_millis(100)),
            _ => base,
        };
        let due = inner.last_probe_at.is_none_or(|at| at.elapsed() >= interval);
        if due {
            inner.probe_running = true;
        }
        due
    }

    /// Records an active probe's result; probes drive recovery from `suspended` and `open`.
    pub fn record_probe(&self, name: &str, report: &ProbeReport) {
        let Some(p) = self.get(name) else { return };
        let ok = report.failure.is_none();
        self.metrics.health_probes.with_label_values(&[name, if ok { "ok" } else { "failed" }]).inc();
        let mut guard = p.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *guard;
        let now = Instant::now();
        inner.probe_running = false;
        inner.last_probe_at = Some(now);
        inner.last_probe = Some(ProbeRecord { at_ms: now_ms(), ok, detail: truncate_detail(&report.detail) });
        match (inner.state, report.failure) {
            (ProviderState::Drained | ProviderState::RateLimited, _) => {}
            (ProviderState::Suspended, None) => {
                if inner.available_at.is_none_or(|at| now >= at) {
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

    /// Operator: take a provider out of rotation now.
    pub fn drain(&self, name: &str) -> Option<ProviderState> {
        let p = self.get(name)?;
        let mut inner = p.inner.lock().unwrap_or_else(|e| e.into_inner());
        self.transition(&p, &mut inner, ProviderState::Drained, "drained by operator");
        Some(inner.state)
    }

    /// Operator: put a provider back into rotation now (also ends a suspension).
    pub fn resume(&self, name: &str) -> Option<ProviderState> {
        let p = self.get(name)?;
        let mut inner = p.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.window.clear();
        self.transition(&p, &mut inner, ProviderState::Healthy, "resumed by operator");
        Some(inner.state)
    }

    /// When this provider may be usable again (`None`: now, or only after an operator acts).
    pub fn available_in(&self, name: &str) -> Option<Duration> {
        let p = self.get(name)?;
        let inner = p.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match inner.state {
            ProviderState::Healthy | ProviderState::Degraded => Some(Duration::ZERO),
            ProviderState::Drained => None,
            // Back after the cooldown and a passing probe: check again at the fast probe pace.
            ProviderState::Suspended => Some(
                inner
                    .available_at
                    .map(|at| at.saturating_duration_since(now))
                    .unwrap_or_default()
                    .max((inner.settings.probe_interval / 4).max(Duration::from_millis(100))),
            ),
            // Another message holds the half-open trial: look again once it has had time to finish.
            ProviderState::Open | ProviderState::RateLimited if inner.trial_in_flight(now) => Some(TRIAL_RECHECK),
            ProviderState::Open | ProviderState::RateLimited => {
                Some(inner.available_at.map(|at| at.saturating_duration_since(now)).unwrap_or_default())
            }
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

    /// Every provider's status, sorted by name.
    pub fn statuses(&self) -> Vec<ProviderStatus> {
        let now = Instant::now();
        let mut out: Vec<ProviderStatus> = self
            .providers
            .iter()
            .map(|entry| {
                let p = entry.value();
                let mut inner = p.inner.lock().unwrap_or_else(|e| e.into_inner());
                inner.prune(now);
                let (ratio, total) = inner.failure_ratio();
                ProviderStatus {
                    name: p.name.clone(),
                    state: inner.state,
                    since_ms: inner.since_ms,
                    reason: inner.reason.clone(),
                    consecutive_failures: inner.consecutive_failures,
                    window_requests: total,
                    success_ratio: (total > 0).then_some(1.0 - ratio),
                    last_probe: inner.last_probe.clone(),
                    next_trial_in: match inner.state {
                        ProviderState::Open | ProviderState::RateLimited | ProviderState::Suspended => {
                            inner.available_at.map(|at| at.saturating_duration_since(now))
                        }
                        _ => None,
                    },
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HealthOverride;

    fn health(settings: HealthSettings) -> Health {
        let h = Health::new(Arc::new(Metrics::new()));
        h.providers
            .insert("p".into(), Arc::new(ProviderHealth { name: "p".into(), inner: Mutex::new(Inner::new(settings)) }));
        h
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
            assert_eq!(h.admit("p"), Admission::Send { trial: false });
            h.record("p", OutcomeClass::Transient, "451", None, false);
        }
        assert_eq!(h.state("p"), Some(ProviderState::Degraded));
        h.record("p", OutcomeClass::Transient, "451", None, false);
        assert_eq!(h.state("p"), Some(ProviderState::Open));
        assert_eq!(h.admit("p"), Admission::Skip(ProviderState::Open));
        std::thread::sleep(Duration::from_millis(210));
        assert_eq!(h.admit("p"), Admission::Send { trial: true });
        assert_eq!(h.admit("p"), Admission::Skip(ProviderState::Open), "one trial at a time");
        // Failed trial: closed again, and the cooldown doubled (200 → 400 ms).
        h.record("p", OutcomeClass::Transient, "451", None, true);
        assert_eq!(h.admit("p"), Admission::Skip(ProviderState::Open));
        assert!(h.statuses()[0].next_trial_in.unwrap() > Duration::from_millis(300));
        std::thread::sleep(Duration::from_millis(410));
        assert_eq!(h.admit("p"), Admission::Send { trial: true });
        h.record("p", OutcomeClass::Accepted, "250", None, true);
        assert_eq!(h.state("p"), Some(ProviderState::Healthy));
    }

    #[test]
    fn recipient_rejections_and_bad_requests_do_not_count() {
        let h = health(settings());
        for _ in 0..50 {
            h.record("p", OutcomeClass::RecipientRejected, "550", None, false);
            h.record("p", OutcomeClass::BadRequest, "552", None, false);
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
            h.record("p", class, "x", None, false);
        }
        assert_eq!(h.state("p"), Some(ProviderState::Open));
    }

    #[test]
    fn account_suspends_until_cooldown_and_probe() {
        let mut s = settings();
        s.account_cooldown = Duration::from_millis(300);
        let h = health(s);
        h.record("p", OutcomeClass::Account, "535 5.7.8", None, false);
        assert_eq!(h.admit("p"), Admission::Skip(ProviderState::Suspended));
        let ok = ProbeReport { failure: None, detail: "ok".into() };
        h.record_probe("p", &ok);
        assert_eq!(h.state("p"), Some(ProviderState::Suspended), "cooldown not over");
        std::thread::sleep(Duration::from_millis(310));
        assert_eq!(h.admit("p"), Admission::Skip(ProviderState::Suspended), "needs a probe, not just time");
        h.record_probe("p", &ok);
        assert_eq!(h.state("p"), Some(ProviderState::Healthy));
    }

    #[test]
    fn rate_limit_honours_retry_after() {
        let h = health(settings());
        h.record("p", OutcomeClass::RateLimited, "429", Some(Duration::from_millis(300)), false);
        assert_eq!(h.admit("p"), Admission::Skip(ProviderState::RateLimited));
        std::thread::sleep(Duration::from_millis(310));
        assert_eq!(h.admit("p"), Admission::Send { trial: true });
        h.record("p", OutcomeClass::Accepted, "ok", None, true);
        assert_eq!(h.state("p"), Some(ProviderState::Healthy));
    }

    #[test]
    fn drain_and_resume() {
        let h = health(settings());
        h.drain("p");
        assert_eq!(h.admit("p"), Admission::Skip(ProviderState::Drained));
        h.record("p", OutcomeClass::Accepted, "ok", None, false);
        assert_eq!(h.state("p"), Some(ProviderState::Drained));
        h.resume("p");
        assert_eq!(h.admit("p"), Admission::Send { trial: false });
    }

    #[test]
    fn standby_share_is_exact() {
        let h = health(settings());
        let turns = (0..1000).filter(|_| h.standby_turn("r", 0.02)).count();
        assert_eq!(turns, 20);
    }
}
