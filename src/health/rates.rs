//! Bounce and complaint rates per provider: of the recipients Baton sent through a provider
//! (the provider accepted them) in the last `rate_window`, how many hard-bounced and how many
//! were reported as spam. Providers review and suspend accounts on these two rates (SES reviews
//! at 5 % / 0.1 % and pauses at 10 % / 0.5 %); Baton warns below those levels, while there is
//! still time to find the list that bounces, and with `pause_on_rate` it stops sending through
//! the provider until the rate is back under its warn level.
//!
//! The promise: a rate is judged only on a sample worth judging (`rate_min_sent` recipients in
//! the window: one bounce in three messages is noise, not 33 %), and recording is O(1) with
//! bounded memory whatever the send rate. As in `window.rs`, counts are kept in buckets, here a
//! ninety-sixth of the window (15 minutes of 24 hours): a count leaves the window at most one
//! bucket early.
//!
//! Bounces and complaints are counted when the provider reports them (a webhook, minutes to
//! days after the send), as the providers themselves count them.

use crate::config::{HealthSettings, ProviderConfig};
use dashmap::DashMap;
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BUCKETS: u32 = 96;

/// A provider's warn levels: hard bounces and complaints as ratios (0–1) of recipients sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WarnLevels {
    pub bounce: f64,
    pub complaint: f64,
}

/// The warn levels of a provider type when the config sets none: below the level at which the
/// provider reviews or suspends an account, so the warning comes while there is time to act.
pub fn default_warn(provider: &ProviderConfig) -> WarnLevels {
    let levels = |bounce, complaint| WarnLevels { bounce, complaint };
    match provider {
        // Under review at 5 % bounces / 0.1 % complaints; sending paused at 10 % / 0.5 %:
        // https://repost.aws/knowledge-center/ses-resolve-account-review-pause
        // https://docs.aws.amazon.com/ses/latest/DeveloperGuide/e-faq.html
        ProviderConfig::Ses(_) => levels(0.04, 0.0008),
        // "Your complaint rate must be lower than 0.08 %. Your bounce rate must be lower than
        // 4 %", else the account "may be shut down without warning":
        // https://resend.com/legal/acceptable-use
        ProviderConfig::Resend(_) => levels(0.03, 0.0006),
        // Mailgun has "thresholds in place that if exceeded will result in a domain being
        // temporarily disabled" and publishes no number
        // (https://documentation.mailgun.com/docs/mailgun/api-reference/lower-bounce-rate);
        // they are reported as 5 % / 0.05 %
        // (https://help.prismacampaigns.com/faqs/diagnose/high-bounce-complaint-rates-mailgun).
        ProviderConfig::Mailgun(_) => levels(0.04, 0.0004),
        // Postmark deactivates hard-bounced and complaining addresses
        // (https://postmarkapp.com/support/article/815-what-are-bounces-and-spam-complaints) and
        // publishes no rate; a server is reported disabled at about 10 % hard bounces
        // (https://emailverifiers.com/blog/postmark-account-deactivated-bounce-rate/). It takes
        // transactional mail only, where 5 % is already far from normal: warn there.
        // Complaints: the industry's 0.1 %, less a margin.
        ProviderConfig::Postmark(_) => levels(0.05, 0.0008),
        // SendGrid "regularly reviews accounts with apparent abnormal activity", no number given
        // (https://support.sendgrid.com/hc/en-us/articles/360041790293-Account-Under-Review):
        // the industry's 5 % / 0.1 %, less a margin.
        ProviderConfig::Sendgrid(_) => levels(0.04, 0.0008),
        // Mailchimp Transactional lowers an account's reputation and hourly quota with bounces
        // and complaints relative to volume, no number given
        // (https://mailchimp.com/developer/transactional/docs/reputation-rejections/); for
        // complaints "industry standards recommend a complaint rate under .1%"
        // (https://mandrill.zendesk.com/hc/en-us/articles/205583477-High-Spam-Complaint-Rate).
        ProviderConfig::Mandrill(_) => levels(0.04, 0.0008),
        // A relay (one's own, or another service's SMTP) or a file sink: no account of its own
        // to lose here, so the common review levels themselves.
        ProviderConfig::Smtp(_) | ProviderConfig::File(_) => levels(0.05, 0.001),
    }
}

/// What Baton does while a rate is at or over its warn level (`pause_on_rate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnWarn {
    /// Log and export it (the alerts fire); routing is unchanged.
    Alert,
    /// Also give the provider no new mail (`Skip::RateWarning`) until the rate is back under.
    Pause,
}

/// One provider's rate settings: `[health]`, its overrides, and its type's warn levels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateSettings {
    pub warn: WarnLevels,
    pub window: Duration,
    pub min_sent: u64,
    pub on_warn: OnWarn,
}

impl RateSettings {
    pub fn resolve(settings: &HealthSettings, provider: &ProviderConfig) -> RateSettings {
        let default = default_warn(provider);
        RateSettings {
            warn: WarnLevels {
                bounce: settings.bounce_rate_warn.unwrap_or(default.bounce),
                complaint: settings.complaint_rate_warn.unwrap_or(default.complaint),
            },
            window: settings.rate_window,
            // Validation refuses 0; a rate needs something sent to divide by.
            min_sent: u64::from(settings.rate_min_sent.max(1)),
            on_warn: if settings.pause_on_rate { OnWarn::Pause } else { OnWarn::Alert },
        }
    }
}

/// A provider's counts in its window, and the rates once the sample is large enough.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateSnapshot {
    /// Recipients the provider accepted.
    pub sent: u64,
    /// Hard bounces it reported.
    pub bounces: u64,
    /// Spam complaints it reported.
    pub complaints: u64,
    /// bounces ÷ sent (at most 1); `None` below `rate_min_sent`.
    pub bounce_rate: Option<f64>,
    /// complaints ÷ sent (at most 1); `None` below `rate_min_sent`.
    pub complaint_rate: Option<f64>,
}

impl RateSnapshot {
    fn of(c: Counts, min_sent: u64) -> RateSnapshot {
        // Bounces of mail sent before the window (or before a restart) can outnumber what the
        // window holds: the rate is capped at 1.
        let rate = |n: u64| (c.sent >= min_sent).then(|| (n as f64 / c.sent as f64).min(1.0));
        RateSnapshot {
            sent: c.sent,
            bounces: c.bounces,
            complaints: c.complaints,
            bounce_rate: rate(c.bounces),
            complaint_rate: rate(c.complaints),
        }
    }
}

/// Which rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateKind {
    Bounce,
    Complaint,
}

impl RateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RateKind::Bounce => "bounce",
            RateKind::Complaint => "complaint",
        }
    }
}

/// A rate at or over its warn level, on a large enough sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateWarning {
    pub kind: RateKind,
    pub rate: f64,
    pub warn: f64,
    pub snapshot: RateSnapshot,
}

impl fmt::Display for RateWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, n) = match self.kind {
            RateKind::Bounce => ("hard bounces", self.snapshot.bounces),
            RateKind::Complaint => ("complaints", self.snapshot.complaints),
        };
        write!(
            f,
            "{} rate {:.3} % at or over its warn level {:.3} % ({n} {what} for {} recipients sent in the window)",
            self.kind.as_str(),
            self.rate * 100.0,
            self.warn * 100.0,
            self.snapshot.sent,
        )
    }
}

/// Where the rates read the time: the monotonic clock, or in tests one moved by hand (so a
/// day's window is not waited for).
#[derive(Debug, Clone, Default)]
pub enum Clock {
    #[default]
    System,
    Manual(Arc<Mutex<Instant>>),
}

impl Clock {
    /// A clock that stands still until [`Clock::advance`] moves it.
    pub fn manual() -> Clock {
        Clock::Manual(Arc::new(Mutex::new(Instant::now())))
    }

    /// Moves a manual clock forward (the system clock moves by itself: no effect on it).
    pub fn advance(&self, by: Duration) {
        if let Clock::Manual(at) = self {
            *at.lock().unwrap_or_else(|e| e.into_inner()) += by;
        }
    }

    fn now(&self) -> Instant {
        match self {
            Clock::System => Instant::now(),
            Clock::Manual(at) => *at.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    sent: u64,
    bounces: u64,
    complaints: u64,
}

impl Counts {
    fn add(&mut self, o: Counts) {
        self.sent += o.sent;
        self.bounces += o.bounces;
        self.complaints += o.complaints;
    }

    fn remove(&mut self, o: Counts) {
        self.sent -= o.sent;
        self.bounces -= o.bounces;
        self.complaints -= o.complaints;
    }
}

struct Bucket {
    start: Instant,
    counts: Counts,
}

/// Counts of the last `span`, in buckets of a ninety-sixth of it.
#[derive(Default)]
struct Window {
    buckets: VecDeque<Bucket>,
    total: Counts,
}

impl Window {
    fn prune(&mut self, now: Instant, span: Duration) {
        while let Some(b) = self.buckets.front() {
            if now.saturating_duration_since(b.start) <= span {
                break;
            }
            self.total.remove(b.counts);
            self.buckets.pop_front();
        }
    }

    fn add(&mut self, now: Instant, span: Duration, counts: Counts) {
        self.prune(now, span);
        let width = (span / BUCKETS).max(Duration::from_millis(1));
        let fresh = self.buckets.back().is_some_and(|b| now.saturating_duration_since(b.start) < width);
        if !fresh {
            self.buckets.push_back(Bucket { start: now, counts: Counts::default() });
        }
        self.buckets.back_mut().expect("just ensured").counts.add(counts);
        self.total.add(counts);
    }

    /// How long until the oldest counts leave the window (`None`: empty).
    fn next_expiry(&self, now: Instant, span: Duration) -> Option<Duration> {
        let oldest = self.buckets.front()?;
        Some((span + Duration::from_millis(1)).saturating_sub(now.saturating_duration_since(oldest.start)))
    }
}

struct ProviderRates {
    settings: RateSettings,
    window: Window,
    /// Whether the last look found a rate at or over its warn level (changes are logged once).
    over: bool,
}

impl ProviderRates {
    fn snapshot(&self) -> RateSnapshot {
        RateSnapshot::of(self.window.total, self.settings.min_sent)
    }

    /// The rate furthest over its warn level, if any is at or over it.
    fn judge(&self) -> Option<RateWarning> {
        let s = self.snapshot();
        let warn = self.settings.warn;
        [(RateKind::Bounce, s.bounce_rate, warn.bounce), (RateKind::Complaint, s.complaint_rate, warn.complaint)]
            .into_iter()
            .filter_map(|(kind, rate, warn)| {
                rate.filter(|r| *r >= warn).map(|rate| RateWarning { kind, rate, warn, snapshot: s })
            })
            .max_by(|a, b| (a.rate / a.warn).total_cmp(&(b.rate / b.warn)))
    }
}

/// Every provider's bounce and complaint rates. [`crate::health::Health`] holds them (its
/// providers are configured by `Health::sync`); callers reach them through the health handle
/// they already have: `shared.health.rates().record_sent(provider, n)`.
pub struct Rates {
    /// DashMap: a record touches one provider's entry for an O(1) update under its shard's
    /// lock, never held across an `.await` or while logging.
    providers: DashMap<String, ProviderRates>,
    clock: Clock,
}

impl Rates {
    pub fn new(clock: Clock) -> Rates {
        Rates { providers: DashMap::new(), clock }
    }

    /// Adds a provider or gives it new settings; its counts are kept (a shorter window drops
    /// what no longer fits at the next record or look).
    pub fn configure(&self, provider: &str, settings: RateSettings) {
        self.providers
            .entry(provider.to_string())
            .and_modify(|p| p.settings = settings)
            .or_insert_with(|| ProviderRates { settings, window: Window::default(), over: false });
    }

    /// Forgets the providers `keep` says no to.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.providers.retain(|name, _| keep(name));
    }

    /// Forgets a provider's counts (its connection settings changed: another account, maybe).
    pub fn forget(&self, provider: &str) {
        self.providers.remove(provider);
    }

    /// The provider accepted `n` recipients.
    pub fn record_sent(&self, provider: &str, n: usize) {
        self.record(provider, Counts { sent: n as u64, ..Counts::default() });
    }

    /// The provider reported a hard bounce (an address that does not exist or never will take
    /// mail; not a full mailbox or a greylisting).
    pub fn record_bounce(&self, provider: &str) {
        self.record(provider, Counts { bounces: 1, ..Counts::default() });
    }

    /// The provider reported a spam complaint.
    pub fn record_complaint(&self, provider: &str) {
        self.record(provider, Counts { complaints: 1, ..Counts::default() });
    }

    fn record(&self, provider: &str, counts: Counts) {
        let now = self.clock.now();
        {
            let Some(mut p) = self.providers.get_mut(provider) else { return };
            let span = p.settings.window;
            p.window.add(now, span, counts);
        }
        // So that crossing the warn level is logged when it happens.
        self.look(provider);
    }

    /// The provider's counts and rates now (all zero for a provider not configured).
    pub fn snapshot(&self, provider: &str) -> RateSnapshot {
        let now = self.clock.now();
        let Some(mut p) = self.providers.get_mut(provider) else { return RateSnapshot::default() };
        let span = p.settings.window;
        p.window.prune(now, span);
        p.snapshot()
    }

    /// The provider's warn levels (`None`: not configured).
    pub fn warn_levels(&self, provider: &str) -> Option<WarnLevels> {
        self.providers.get(provider).map(|p| p.settings.warn)
    }

    /// Whether a rate of the provider is at or over its warn level now, on enough sample.
    pub fn over_warn(&self, provider: &str) -> Option<RateWarning> {
        self.look(provider).flatten()
    }

    /// Whether the provider is to get no new mail now: over a warn level with `pause_on_rate`.
    pub fn pausing(&self, provider: &str) -> Option<RateWarning> {
        let over = self.look(provider).flatten()?;
        let pause = self.providers.get(provider).is_some_and(|p| p.settings.on_warn == OnWarn::Pause);
        pause.then_some(over)
    }

    /// How long until the oldest counts leave the provider's window: the earliest a pause can
    /// end by itself (nothing new is sent through a paused provider to dilute the rate).
    pub fn recheck_in(&self, provider: &str) -> Option<Duration> {
        let p = self.providers.get(provider)?;
        p.window.next_expiry(self.clock.now(), p.settings.window)
    }

    /// Operator resume: a provider paused by its rates starts counting afresh, so the pause
    /// ends now and comes back only on a new sample. Otherwise nothing changes.
    pub fn resume(&self, provider: &str) {
        let lifted = {
            let Some(mut p) = self.providers.get_mut(provider) else { return };
            let paused = p.over && p.settings.on_warn == OnWarn::Pause;
            if paused {
                p.window = Window::default();
                p.over = false;
            }
            paused
        };
        if lifted {
            tracing::warn!(provider, "rate pause lifted by operator; bounce and complaint counts start afresh");
        }
    }

    /// Every provider's name, snapshot and warn levels, sorted by name.
    pub fn all(&self) -> Vec<(String, RateSnapshot, WarnLevels)> {
        // Names first: looking at a provider takes its entry's lock, which iterating holds.
        let mut names: Vec<String> = self.providers.iter().map(|p| p.key().clone()).collect();
        names.sort();
        names
            .into_iter()
            .filter_map(|name| {
                self.look(&name);
                let p = self.providers.get(&name)?;
                let (snapshot, warn) = (p.snapshot(), p.settings.warn);
                drop(p);
                Some((name, snapshot, warn))
            })
            .collect()
    }

    /// Judges the provider's rates now and logs when the verdict changed (`None`: not
    /// configured).
    fn look(&self, provider: &str) -> Option<Option<RateWarning>> {
        let now = self.clock.now();
        let (warning, changed, settings, snapshot) = {
            let mut p = self.providers.get_mut(provider)?;
            let span = p.settings.window;
            p.window.prune(now, span);
            let warning = p.judge();
            let changed = warning.is_some() != p.over;
            p.over = warning.is_some();
            (warning, changed, p.settings, p.snapshot())
        };
        if changed {
            log_change(provider, warning.as_ref(), &settings, &snapshot);
        }
        Some(warning)
    }
}

/// One line when a provider's rates go over a warn level or come back under (not one per look).
fn log_change(provider: &str, warning: Option<&RateWarning>, settings: &RateSettings, s: &RateSnapshot) {
    let (bounce_rate, complaint_rate) = (s.bounce_rate.unwrap_or(0.0), s.complaint_rate.unwrap_or(0.0));
    let (bounce_rate_warn, complaint_rate_warn) = (settings.warn.bounce, settings.warn.complaint);
    let sent = s.sent;
    match (warning, settings.on_warn) {
        (Some(w), OnWarn::Alert) => tracing::warn!(
            provider, bounce_rate, complaint_rate, bounce_rate_warn, complaint_rate_warn, sent, reason = %w,
            "reputation warning: find the app or list sending to bad addresses before the provider reviews the account (pause_on_rate = true would stop sending through it meanwhile)"
        ),
        (Some(w), OnWarn::Pause) => tracing::warn!(
            provider, bounce_rate, complaint_rate, bounce_rate_warn, complaint_rate_warn, sent, reason = %w,
            "provider paused by pause_on_rate: no new mail goes to it until its rates are back under the warn levels or an operator resumes it"
        ),
        (None, OnWarn::Alert) => tracing::info!(
            provider,
            bounce_rate,
            complaint_rate,
            bounce_rate_warn,
            complaint_rate_warn,
            sent,
            "bounce and complaint rates back under the warn levels (or too few sent in the window to judge)"
        ),
        (None, OnWarn::Pause) => tracing::warn!(
            provider,
            bounce_rate,
            complaint_rate,
            bounce_rate_warn,
            complaint_rate_warn,
            sent,
            "provider no longer paused by pause_on_rate: its rates are back under the warn levels (or too few sent in the window to judge)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn settings(on_warn: OnWarn) -> RateSettings {
        RateSettings { warn: WarnLevels { bounce: 0.04, complaint: 0.0008 }, window: DAY, min_sent: 100, on_warn }
    }

    fn fresh(on_warn: OnWarn) -> (Rates, Clock) {
        let clock = Clock::manual();
        let rates = Rates::new(clock.clone());
        rates.configure("ses", settings(on_warn));
        (rates, clock)
    }

    fn bounces(rates: &Rates, n: usize) {
        (0..n).for_each(|_| rates.record_bounce("ses"));
    }

    #[test]
    fn a_rate_needs_the_minimum_sample() {
        let (rates, _) = fresh(OnWarn::Alert);
        rates.record_sent("ses", 3);
        rates.record_bounce("ses");
        let s = rates.snapshot("ses");
        assert_eq!((s.sent, s.bounces, s.bounce_rate, s.complaint_rate), (3, 1, None, None));
        assert_eq!(rates.over_warn("ses"), None, "one bounce in three messages is noise");
        rates.record_sent("ses", 97);
        let s = rates.snapshot("ses");
        assert_eq!((s.bounce_rate, s.complaint_rate), (Some(0.01), Some(0.0)));
    }

    #[test]
    fn warns_at_the_level_and_names_the_rate_furthest_over() {
        let (rates, _) = fresh(OnWarn::Alert);
        rates.record_sent("ses", 1000);
        bounces(&rates, 39);
        assert_eq!(rates.over_warn("ses"), None, "3.9 % is under 4 %");
        bounces(&rates, 1);
        let w = rates.over_warn("ses").expect("4 % reaches the level");
        assert_eq!((w.kind, w.rate, w.warn), (RateKind::Bounce, 0.04, 0.04));
        assert!(w.to_string().contains("40 hard bounces for 1000 recipients"), "{w}");
        // Two complaints in 1000 is 0.2 %, 2.5 times its level: further over than the bounces.
        rates.record_complaint("ses");
        rates.record_complaint("ses");
        assert_eq!(rates.over_warn("ses").unwrap().kind, RateKind::Complaint);
        assert_eq!(rates.pausing("ses"), None, "without pause_on_rate nothing is paused");
    }

    #[test]
    fn a_pause_ends_when_the_bounces_leave_the_window() {
        let (rates, clock) = fresh(OnWarn::Pause);
        rates.record_sent("ses", 200);
        bounces(&rates, 10);
        assert_eq!(rates.pausing("ses").map(|w| w.kind), Some(RateKind::Bounce), "5 % bounces");
        assert!(rates.recheck_in("ses").unwrap() > DAY - Duration::from_secs(1), "the oldest counts are fresh");
        // Half a day later more is sent (through another route's share, say): 10 of 300.
        clock.advance(DAY / 2);
        rates.record_sent("ses", 100);
        assert_eq!(rates.snapshot("ses").sent, 300);
        assert_eq!(rates.pausing("ses"), None, "3.3 % is back under 4 %");
        bounces(&rates, 5);
        assert!(rates.pausing("ses").is_some(), "15 of 300");
        // A day after the first sends they are gone, and with them the sample.
        clock.advance(DAY / 2 + Duration::from_secs(1));
        let s = rates.snapshot("ses");
        assert_eq!((s.sent, s.bounces, s.bounce_rate), (100, 5, Some(0.05)));
        clock.advance(DAY / 2);
        assert_eq!(rates.snapshot("ses"), RateSnapshot::default());
        assert_eq!(rates.pausing("ses"), None);
        assert_eq!(rates.recheck_in("ses"), None);
    }

    #[test]
    fn recording_keeps_one_bucket_per_ninety_sixth_of_the_window() {
        let (rates, clock) = fresh(OnWarn::Alert);
        for _ in 0..10_000 {
            rates.record_sent("ses", 1);
            clock.advance(Duration::from_millis(10));
        }
        assert_eq!(rates.providers.get("ses").unwrap().window.buckets.len(), 1);
        for _ in 0..200 {
            rates.record_sent("ses", 1);
            clock.advance(DAY / BUCKETS);
        }
        assert!(rates.providers.get("ses").unwrap().window.buckets.len() <= BUCKETS as usize + 1);
        assert_eq!(rates.snapshot("ses").sent, 96, "what is older than the window is gone");
    }

    #[test]
    fn an_operator_resume_lifts_a_rate_pause_and_starts_afresh() {
        let (rates, _) = fresh(OnWarn::Pause);
        rates.record_sent("ses", 100);
        bounces(&rates, 20);
        assert!(rates.pausing("ses").is_some());
        rates.resume("ses");
        assert_eq!(rates.pausing("ses"), None);
        assert_eq!(rates.snapshot("ses"), RateSnapshot::default());

        // Without a pause, a resume (of a drain, say) keeps the counts the alerts need.
        let (rates, _) = fresh(OnWarn::Alert);
        rates.record_sent("ses", 100);
        bounces(&rates, 20);
        rates.resume("ses");
        assert_eq!(rates.snapshot("ses").bounces, 20);
    }

    #[test]
    fn providers_not_configured_are_ignored() {
        let (rates, _) = fresh(OnWarn::Pause);
        rates.record_sent("other", 1000);
        rates.record_bounce("other");
        assert_eq!(rates.snapshot("other"), RateSnapshot::default());
        assert_eq!((rates.over_warn("other"), rates.warn_levels("other")), (None, None));
        rates.retain(|name| name != "ses");
        assert!(rates.all().is_empty());
    }

    #[test]
    fn each_provider_type_warns_below_its_review_level() {
        let config = |text: &str| -> ProviderConfig { toml::from_str(text).unwrap() };
        let cases = [
            // (provider, its review or suspension level: bounces, complaints)
            ("type = \"ses\"\nregion = \"eu-west-1\"", (0.05, 0.001)),
            ("type = \"resend\"\napi_key = \"re_x\"", (0.04, 0.0008)),
            ("type = \"mailgun\"\napi_key = \"k\"\ndomain = \"d\"", (0.05, 0.0005)),
            ("type = \"postmark\"\nserver_token = \"t\"", (0.10, 0.001)),
            ("type = \"sendgrid\"\napi_key = \"k\"", (0.05, 0.001)),
            ("type = \"mandrill\"\napi_key = \"k\"", (0.05, 0.001)),
        ];
        for (text, (bounce, complaint)) in cases {
            let w = default_warn(&config(text));
            assert!(w.bounce < bounce && w.complaint < complaint, "{text}: {w:?}");
        }
        let smtp = config("type = \"smtp\"\nhost = \"relay.example.com\"");
        assert_eq!(default_warn(&smtp), WarnLevels { bounce: 0.05, complaint: 0.001 });

        // [health] and the provider's own keys override the type's levels.
        let defaults = crate::config::HealthOverride { bounce_rate_warn: Some(0.02), ..Default::default() };
        let own = crate::config::HealthOverride { pause_on_rate: Some(true), ..Default::default() };
        let s = RateSettings::resolve(&HealthSettings::resolve(&defaults, &own), &smtp);
        assert_eq!(s.warn, WarnLevels { bounce: 0.02, complaint: 0.001 });
        assert_eq!((s.window, s.min_sent, s.on_warn), (DAY, 100, OnWarn::Pause));
    }
}
