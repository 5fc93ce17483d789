//! Prometheus metrics. Names and labels are a contract: `grafana/dashboards/baton.json` and
//! `grafana/alerts/baton-rules.yml` use them, and `tests/observability.rs` fails when one of
//! their names is not exported. Label values are bounded: client, provider and route names come
//! from the config, everything else from the fixed lists below; never an address, id or free text.
//!
//! Every series a panel or an alert reads is created at 0 when Baton starts ([`Metrics::init_config`]),
//! so panels are not empty and `increase()` sees the first event.

use crate::config::{Config, HealthSettings};
use crate::health::rates::{RateSettings, RateSnapshot, WarnLevels};
use crate::health::{ProbeVerdict, ProviderState};
use crate::outcome::OutcomeClass;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

pub struct Metrics {
    registry: Registry,
    pub messages_received: IntCounterVec,
    pub ingest_rejections: IntCounterVec,
    pub compat_requests: IntCounterVec,
    pub delivery_attempts: IntCounterVec,
    pub recipients: IntCounterVec,
    pub failovers: IntCounterVec,
    pub messages_completed: IntCounterVec,
    pub provider_request_duration: HistogramVec,
    pub queue_messages: IntGaugeVec,
    pub queue_oldest_age: IntGauge,
    pub spool_bytes: IntGauge,
    pub queue_kept_bytes: IntGauge,
    pub spool_commit_duration: Histogram,
    pub spool_commit_batch_size: Histogram,
    pub delivery_latency: HistogramVec,
    pub canary_sent: IntCounterVec,
    pub canary_received: IntCounterVec,
    pub canary_lost: IntCounterVec,
    pub canary_delivery: HistogramVec,
    pub canary_last_received: IntGaugeVec,
    pub redelivered: IntCounterVec,
    pub provider_state: IntGaugeVec,
    pub provider_state_changes: IntCounterVec,
    pub health_probes: IntCounterVec,
    pub build_info: IntGaugeVec,
    /// `baton_config_reloads_total{result="success"|"failure"}`: incremented by the reloader.
    pub config_reloads: IntCounterVec,
    /// Unix time of the last successful config load; set to the start time by [`Metrics::new`].
    pub config_last_reload_success: Gauge,
    /// `baton_config_last_reload_successful`: 1 while the file on disk is the running config or
    /// the last reload of it succeeded; 0 from a refused reload until a later one succeeds (or
    /// the file is put back as it runs). What the reload alert follows.
    pub config_last_reload_successful: IntGauge,
    /// `baton_config_info{hash}` = 1 for the running config (`config::text_hash` of its text);
    /// change it with [`Metrics::set_config_info`].
    pub config_info: IntGaugeVec,
    /// `spool.max_bytes` of the open spool (what "spool full" is measured against).
    pub spool_max_bytes: IntGauge,
    /// `baton_spool_writable`: 1 while the spool can write; 0 while writes fail (new messages
    /// are refused and delivery is held until the writer's retry succeeds).
    pub spool_writable: IntGauge,
    /// `baton_spool_write_failures_total{reason}`: failed spool commits, by [`SPOOL_FAULTS`].
    pub spool_write_failures: IntCounterVec,
    /// `baton_spool_quarantined_records`: records found unreadable and moved aside (never delivered).
    pub spool_quarantined: IntGauge,
    /// Providers of each route that are in rotation (healthy or degraded); refreshed at each scrape.
    pub route_available_providers: IntGaugeVec,
    /// The hash currently exported by `config_info` (so a change removes the old series).
    config_hash: Mutex<Option<String>>,
    /// `baton_http_connections{listener}`: connections open now on `http_listen` / `admin_listen`.
    pub http_connections: IntGaugeVec,
    /// `baton_http_connections_refused_total{listener, reason}`: connections over a cap.
    pub http_connections_refused: IntCounterVec,
    /// `baton_http_request_timeouts_total{listener}`: requests answered 408 (too slow).
    pub http_request_timeouts: IntCounterVec,
    /// `baton_provider_sender_blocked{provider, domain}`: sender domains the provider refused as
    /// unverified and that now go to the next provider. `domain` is one of the domains named in
    /// the clients' `allowed_senders`, or `other` (then the value counts the domains folded in).
    pub provider_sender_blocked: IntGaugeVec,
    /// Domains that get their own `domain` label (from `allowed_senders`).
    sender_domains: Mutex<BTreeSet<String>>,
    /// Routes currently exported by `route_available_providers`.
    routes_exported: Mutex<Vec<String>>,
    /// `baton_smtp_auth_failures_total{reason}`: SMTP AUTH attempts refused, by
    /// [`SMTP_AUTH_FAILURE_REASONS`].
    pub smtp_auth_failures: IntCounterVec,
    /// `baton_smtp_auth_blocks_total{scope}`: times a client address or a username was
    /// blocked for too many AUTH failures ([`SMTP_AUTH_BLOCK_SCOPES`]).
    pub smtp_auth_blocks: IntCounterVec,
    /// `baton_smtp_timeouts_total{phase}`: SMTP sessions closed because input was too slow
    /// ([`SMTP_TIMEOUT_PHASES`]).
    pub smtp_timeouts: IntCounterVec,
    /// `baton_suppressions`: entries on the suppression list.
    pub suppressions: IntGauge,
    /// `baton_suppressions_added_total{reason, source}`: addresses added to the suppression list,
    /// by [`crate::event::SuppressionReason`] and [`crate::suppression::SOURCES`].
    pub suppressions_added: IntCounterVec,
    /// `baton_recipients_suppressed_total{client}`: recipients never handed to a provider
    /// because they are on the suppression list.
    pub recipients_suppressed: IntCounterVec,
    /// `baton_webhook_deliveries_total{url_name, outcome}`: events posted to the app's
    /// webhooks, by [`crate::outbox::sender::OUTCOMES`].
    pub webhook_deliveries: IntCounterVec,
    /// `baton_webhook_queue{url_name}`: events waiting for an app webhook.
    pub webhook_queue: IntGaugeVec,
    /// `baton_provider_webhooks_total{provider, outcome}`: provider webhook requests, by
    /// [`crate::ingest::webhooks::receive::OUTCOMES`].
    pub provider_webhooks: IntCounterVec,
    /// `baton_provider_events_total{provider, type}`: events providers reported, by
    /// [`crate::event::EventType`].
    pub provider_events: IntCounterVec,
    /// Endpoints exported by `webhook_queue`.
    webhooks_exported: Mutex<BTreeSet<String>>,
    /// `baton_provider_bounce_rate{provider}`: hard bounces ÷ recipients sent through the
    /// provider over its `rate_window`, 0 below `rate_min_sent`; refreshed at each scrape.
    pub provider_bounce_rate: GaugeVec,
    /// `baton_provider_complaint_rate{provider}`: spam complaints ÷ recipients sent, likewise.
    pub provider_complaint_rate: GaugeVec,
    /// `baton_provider_bounce_rate_warn{provider}`: its `bounce_rate_warn` (alerts compare with it).
    pub provider_bounce_rate_warn: GaugeVec,
    /// `baton_provider_complaint_rate_warn{provider}`: its `complaint_rate_warn`.
    pub provider_complaint_rate_warn: GaugeVec,
    /// `baton_provider_rate_sample{provider}`: recipients sent through it in the rate window.
    pub provider_rate_sample: IntGaugeVec,
    /// Providers currently exported by the five rate gauges.
    rate_providers: Mutex<Vec<String>>,
    /// `baton_cluster_connected`: 1 while this node reaches Redis, 0 while it goes on alone.
    /// No labels; exported only with `[cluster]` (see [`Metrics::set_cluster_connected`]).
    cluster_connected: IntGaugeVec,
    /// `baton_cluster_nodes`: nodes with a recent heartbeat, this one included.
    cluster_nodes: IntGaugeVec,
    /// `baton_cluster_facts_adopted_total{provider}`: times this node took a provider fact
    /// (drain, resume, suspension, rate limit, silence, sender block, an open circuit seen by
    /// a quorum) from other nodes.
    pub cluster_facts_adopted: IntCounterVec,
    /// `baton_provider_rate_limited_total{provider}`: messages that moved on from the provider
    /// because its `max_rate` had no turn for them within `rate_wait`.
    pub provider_rate_limited: IntCounterVec,
}

/// Outcomes of a send request to a provider-compatible API (`baton_compat_requests_total`).
pub const COMPAT_OUTCOMES: [&str; 3] = ["accepted", "template_passthrough", "refused"];

/// Reasons an ingest request is refused (`baton_ingest_rejections_total{reason}`).
pub const REJECTION_REASONS: [&str; 13] = [
    "auth",
    "sender_not_allowed",
    "invalid",
    "too_large",
    "header_injection",
    "spool_full",
    "shutting_down",
    "internal",
    "rate_limited",
    "idempotency_conflict",
    "idempotency_in_progress",
    "null_sender",
    "no_template_provider",
];

/// Why an SMTP AUTH attempt was refused (`baton_smtp_auth_failures_total{reason}`): a wrong
/// username or password, or (credentials not even checked) a blocked address or username.
pub const SMTP_AUTH_FAILURE_REASONS: [&str; 3] = ["invalid_credentials", "ip_blocked", "user_blocked"];

/// What an AUTH block applies to (`baton_smtp_auth_blocks_total{scope}`).
pub const SMTP_AUTH_BLOCK_SCOPES: [&str; 2] = ["ip", "user"];

/// Which time limit closed an SMTP session (`baton_smtp_timeouts_total{phase}`): nothing
/// arrived for `idle_timeout`, a command line took longer than `command_timeout`, message
/// content longer than `data_timeout`.
pub const SMTP_TIMEOUT_PHASES: [&str; 3] = ["idle", "command", "data"];

/// Reasons a delivery moves on to the route's next provider (`baton_failovers_total{reason}`):
/// the outcome class of the failed attempt, or why a provider was skipped (`health::Skip`).
pub const FAILOVER_REASONS: [&str; 12] = [
    "transient",
    "rate_limited",
    "account",
    "sender_unverified",
    "bad_request",
    "open",
    "suspended",
    "drained",
    "silent",
    "sender_blocked",
    "rate_warning",
    "max_rate",
];

/// The `domain` label of `baton_provider_sender_blocked` for domains no client names.
pub const OTHER_DOMAIN: &str = "other";

/// The `listener` label of the HTTP connection metrics.
pub const HTTP_LISTENERS: [&str; 3] = ["http", "https", "admin"];

/// Why a spool write failed (`baton_spool_write_failures_total{reason}`): `spool::FaultKind`.
pub const SPOOL_FAULTS: [&str; 3] = ["full", "io", "damaged"];

/// The one series of a metric without labels that exists only with some config (`[cluster]`).
const NO_LABELS: &[&str] = &[];

/// `baton_config_reloads_total{result}`.
pub const RELOAD_RESULTS: [&str; 2] = ["success", "failure"];

/// Domains named literally in the clients' `allowed_senders` (`*@example.com` → example.com);
/// patterns with a wildcard in the domain are left out (their domains fold into `other`).
fn sender_domains(config: &Config) -> BTreeSet<String> {
    config
        .clients
        .iter()
        .flat_map(|c| &c.allowed_senders)
        .filter_map(|pattern| pattern.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()))
        .filter(|d| !d.is_empty() && !d.contains(['*', '?']))
        .collect()
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn float_gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).expect("valid metric");
    registry.register(Box::new(h.clone())).expect("unique metric");
    h
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        {
            let _ = registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()));
        }
        let latency_buckets = vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
        let commit_buckets = vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0];
        let queue_messages =
            IntGaugeVec::new(Opts::new("baton_queue_messages", "Messages in the spool by queue state"), &["state"])
                .expect("valid metric");
        registry.register(Box::new(queue_messages.clone())).expect("unique metric");
        let queue_oldest_age = IntGauge::new(
            "baton_queue_oldest_message_age_seconds",
            "Age of the oldest message that still has undelivered recipients",
        )
        .expect("valid metric");
        registry.register(Box::new(queue_oldest_age.clone())).expect("unique metric");
        let spool_bytes =
            IntGauge::new("baton_spool_bytes", "Bytes of message data waiting in the spool").expect("valid metric");
        registry.register(Box::new(spool_bytes.clone())).expect("unique metric");
        let queue_kept_bytes = IntGauge::new(
            "baton_queue_kept_bytes",
            "Memory held by just-accepted messages kept for their first delivery pass (at most 16 MiB)",
        )
        .expect("valid metric");
        registry.register(Box::new(queue_kept_bytes.clone())).expect("unique metric");
        let spool_commit_duration = Histogram::with_opts(
            HistogramOpts::new("baton_spool_commit_duration_seconds", "Duration of one spool commit (with fsync)")
                .buckets(commit_buckets),
        )
        .expect("valid metric");
        registry.register(Box::new(spool_commit_duration.clone())).expect("unique metric");
        let spool_commit_batch_size = Histogram::with_opts(
            HistogramOpts::new("baton_spool_commit_batch_size", "Requests committed together in one spool commit")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0]),
        )
        .expect("valid metric");
        registry.register(Box::new(spool_commit_batch_size.clone())).expect("unique metric");
        let build_info = IntGaugeVec::new(Opts::new("baton_build_info", "Baton build information"), &["version"])
            .expect("valid metric");
        registry.register(Box::new(build_info.clone())).expect("unique metric");
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);

        let provider_state = IntGaugeVec::new(
            Opts::new("baton_provider_state", "1 for the provider's current health state, 0 for the others"),
            &["provider", "state"],
        )
        .expect("valid metric");
        registry.register(Box::new(provider_state.clone())).expect("unique metric");

        let config_last_reload_success = Gauge::new(
            "baton_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load (start-up or reload)",
        )
        .expect("valid metric");
        registry.register(Box::new(config_last_reload_success.clone())).expect("unique metric");
        config_last_reload_success.set(unix_now());
        let config_last_reload_successful = gauge(
            &registry,
            "baton_config_last_reload_successful",
            "1 unless the last config reload was refused and none has succeeded since",
        );
        config_last_reload_successful.set(1);
        let config_reloads = counter(&registry, "baton_config_reloads_total", "Config reloads by result", &["result"]);
        for result in RELOAD_RESULTS {
            config_reloads.with_label_values(&[result]);
        }

        let spool_write_failures =
            counter(&registry, "baton_spool_write_failures_total", "Failed spool commits by reason", &["reason"]);
        for reason in SPOOL_FAULTS {
            spool_write_failures.with_label_values(&[reason]);
        }

        Metrics {
            config_reloads,
            config_last_reload_success,
            config_last_reload_successful,
            config_info: gauge_vec(
                &registry,
                "baton_config_info",
                "1 for the fingerprint of the running config",
                &["hash"],
            ),
            config_hash: Mutex::new(None),
            routes_exported: Mutex::new(Vec::new()),
            spool_max_bytes: gauge(&registry, "baton_spool_max_bytes", "spool.max_bytes: the spool's capacity"),
            spool_writable: gauge(
                &registry,
                "baton_spool_writable",
                "1 while the spool can write; 0 while writes fail (ingest refused, delivery held)",
            ),
            spool_write_failures,
            spool_quarantined: gauge(
                &registry,
                "baton_spool_quarantined_records",
                "Spool records found unreadable and moved to quarantine (never delivered; see /admin/queue)",
            ),
            http_connections: gauge_vec(
                &registry,
                "baton_http_connections",
                "HTTP connections open now, per listener",
                &["listener"],
            ),
            http_connections_refused: counter(
                &registry,
                "baton_http_connections_refused_total",
                "HTTP connections refused because a connection cap was reached",
                &["listener", "reason"],
            ),
            http_request_timeouts: counter(
                &registry,
                "baton_http_request_timeouts_total",
                "HTTP requests answered 408 because they took longer than server.http_request_timeout",
                &["listener"],
            ),
            provider_sender_blocked: gauge_vec(
                &registry,
                "baton_provider_sender_blocked",
                "Sender domains the provider refused as unverified (their mail goes to the next provider)",
                &["provider", "domain"],
            ),
            sender_domains: Mutex::new(BTreeSet::new()),
            route_available_providers: gauge_vec(
                &registry,
                "baton_route_available_providers",
                "Providers of the route in rotation (healthy or degraded)",
                &["route"],
            ),
            provider_state,
            provider_state_changes: counter(
                &registry,
                "baton_provider_state_changes_total",
                "Provider health state transitions",
                &["provider", "from", "to"],
            ),
            health_probes: counter(
                &registry,
                "baton_health_probes_total",
                "Active health probes by result",
                &["provider", "result"],
            ),
            messages_received: counter(
                &registry,
                "baton_messages_received_total",
                "Messages accepted into the spool",
                &["ingress", "client"],
            ),
            compat_requests: counter(
                &registry,
                "baton_compat_requests_total",
                "Send requests to the provider-compatible APIs by outcome (accepted, template_passthrough, refused)",
                &["api", "outcome"],
            ),
            ingest_rejections: counter(
                &registry,
                "baton_ingest_rejections_total",
                "Ingest requests refused",
                &["ingress", "reason"],
            ),
            delivery_attempts: counter(
                &registry,
                "baton_delivery_attempts_total",
                "Delivery attempts by provider and outcome class",
                &["provider", "outcome"],
            ),
            recipients: counter(&registry, "baton_recipients_total", "Recipients finished", &["provider", "status"]),
            suppressions: gauge(&registry, "baton_suppressions", "Entries on the suppression list"),
            webhook_deliveries: counter(
                &registry,
                "baton_webhook_deliveries_total",
                "Events posted to the app's webhooks, by outcome (delivered, failed attempt, expired, dropped)",
                &["url_name", "outcome"],
            ),
            webhook_queue: gauge_vec(
                &registry,
                "baton_webhook_queue",
                "Events waiting for an app webhook",
                &["url_name"],
            ),
            webhooks_exported: Mutex::new(BTreeSet::new()),
            provider_webhooks: counter(
                &registry,
                "baton_provider_webhooks_total",
                "Provider webhook requests by outcome (accepted, refused, invalid, not_configured, unavailable)",
                &["provider", "outcome"],
            ),
            provider_events: counter(
                &registry,
                "baton_provider_events_total",
                "Events reported by the providers' webhooks, by type",
                &["provider", "type"],
            ),
            suppressions_added: counter(
                &registry,
                "baton_suppressions_added_total",
                "Addresses added to the suppression list, by reason and source (send_answer, webhook, api)",
                &["reason", "source"],
            ),
            recipients_suppressed: counter(
                &registry,
                "baton_recipients_suppressed_total",
                "Recipients not handed to any provider because they are on the suppression list",
                &["client"],
            ),
            provider_bounce_rate: float_gauge_vec(
                &registry,
                "baton_provider_bounce_rate",
                "Hard bounces / recipients sent through the provider over health.rate_window (0 below rate_min_sent)",
                &["provider"],
            ),
            provider_complaint_rate: float_gauge_vec(
                &registry,
                "baton_provider_complaint_rate",
                "Spam complaints / recipients sent through the provider over health.rate_window (0 below rate_min_sent)",
                &["provider"],
            ),
            provider_bounce_rate_warn: float_gauge_vec(
                &registry,
                "baton_provider_bounce_rate_warn",
                "health.bounce_rate_warn of the provider: the bounce rate Baton warns at",
                &["provider"],
            ),
            provider_complaint_rate_warn: float_gauge_vec(
                &registry,
                "baton_provider_complaint_rate_warn",
                "health.complaint_rate_warn of the provider: the complaint rate Baton warns at",
                &["provider"],
            ),
            provider_rate_sample: gauge_vec(
                &registry,
                "baton_provider_rate_sample",
                "Recipients sent through the provider over health.rate_window (the rates' sample)",
                &["provider"],
            ),
            rate_providers: Mutex::new(Vec::new()),
            cluster_connected: gauge_vec(
                &registry,
                "baton_cluster_connected",
                "1 while this node reaches the cluster's Redis; 0 while it goes on with its own health",
                &[],
            ),
            cluster_nodes: gauge_vec(
                &registry,
                "baton_cluster_nodes",
                "Cluster nodes with a heartbeat in the last 10 seconds, this one included",
                &[],
            ),
            cluster_facts_adopted: counter(
                &registry,
                "baton_cluster_facts_adopted_total",
                "Provider facts (drain, resume, suspension, rate limit, silence, sender blocks, quorum-open circuits) adopted from other nodes",
                &["provider"],
            ),
            provider_rate_limited: counter(
                &registry,
                "baton_provider_rate_limited_total",
                "Messages that moved on from the provider because its max_rate had no turn within rate_wait",
                &["provider"],
            ),
            failovers: counter(
                &registry,
                "baton_failovers_total",
                "Times a delivery moved on to the route's next provider",
                &["route", "from", "to", "reason"],
            ),
            messages_completed: counter(
                &registry,
                "baton_messages_completed_total",
                "Messages finished",
                &["route", "status"],
            ),
            provider_request_duration: histogram(
                &registry,
                "baton_provider_request_duration_seconds",
                "Duration of one provider send",
                &["provider", "outcome"],
                latency_buckets.clone(),
            ),
            canary_sent: counter(
                &registry,
                "baton_canary_sent_total",
                "End-to-end canaries a provider accepted",
                &["provider"],
            ),
            canary_received: counter(
                &registry,
                "baton_canary_received_total",
                "Canaries read back from the canary mailbox",
                &["provider"],
            ),
            canary_lost: counter(
                &registry,
                "baton_canary_lost_total",
                "Canaries not read back within canary.timeout",
                &["provider"],
            ),
            canary_delivery: histogram(
                &registry,
                "baton_canary_delivery_seconds",
                "Time from a canary's send to its reading in the mailbox",
                &["provider"],
                vec![0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0],
            ),
            canary_last_received: gauge_vec(
                &registry,
                "baton_canary_last_received_timestamp_seconds",
                "When a canary through this provider was last read back (Unix time)",
                &["provider"],
            ),
            redelivered: counter(
                &registry,
                "baton_redelivered_total",
                "Messages re-queued for the next provider because the provider that took them went silent",
                &["provider"],
            ),
            delivery_latency: histogram(
                &registry,
                "baton_delivery_latency_seconds",
                "Time from ingest acknowledgement to provider acceptance",
                &["route", "provider"],
                latency_buckets,
            ),
            smtp_auth_failures: counter(
                &registry,
                "baton_smtp_auth_failures_total",
                "SMTP AUTH attempts refused, by reason",
                &["reason"],
            ),
            smtp_auth_blocks: counter(
                &registry,
                "baton_smtp_auth_blocks_total",
                "Client addresses or usernames blocked after too many SMTP AUTH failures",
                &["scope"],
            ),
            smtp_timeouts: counter(
                &registry,
                "baton_smtp_timeouts_total",
                "SMTP sessions closed because input did not arrive in time",
                &["phase"],
            ),
            queue_messages,
            queue_oldest_age,
            spool_bytes,
            queue_kept_bytes,
            spool_commit_duration,
            spool_commit_batch_size,
            build_info,
            registry,
        }
    }

    /// Creates the series dashboards and alerts use, at 0, so panels are not empty at start.
    pub fn init_series(&self, clients: &[&str], providers: &[&str], routes: &[&str]) {
        for reason in crate::event::SuppressionReason::ALL {
            for source in crate::suppression::SOURCES {
                self.suppressions_added.with_label_values(&[reason.as_str(), source]);
            }
        }
        for client in clients {
            self.recipients_suppressed.with_label_values(&[client]);
        }
        for ingress in ["http", "smtp"] {
            for client in clients {
                self.messages_received.with_label_values(&[ingress, client]);
            }
            for reason in REJECTION_REASONS {
                self.ingest_rejections.with_label_values(&[ingress, reason]);
            }
        }
        for api in crate::config::COMPATIBLE_APIS {
            for outcome in COMPAT_OUTCOMES {
                self.compat_requests.with_label_values(&[api, outcome]);
            }
        }
        for provider in providers {
            for class in OutcomeClass::ALL {
                self.delivery_attempts.with_label_values(&[provider, class.as_str()]);
                self.provider_request_duration.with_label_values(&[provider, class.as_str()]);
            }
            for from in ProviderState::ALL {
                for to in ProviderState::ALL.into_iter().filter(|&to| to != from) {
                    self.provider_state_changes.with_label_values(&[provider, from.as_str(), to.as_str()]);
                }
            }
            for status in ["delivered", "rejected", "failed"] {
                self.recipients.with_label_values(&[provider, status]);
            }
            for result in ProbeVerdict::LABELS {
                self.health_probes.with_label_values(&[provider, result]);
            }
            for outcome in crate::ingest::webhooks::receive::OUTCOMES {
                self.provider_webhooks.with_label_values(&[provider, outcome]);
            }
            for event in [crate::event::EventType::Bounced, crate::event::EventType::Complained] {
                self.provider_events.with_label_values(&[provider, event.as_str()]);
            }
        }
        for route in routes {
            for status in ["delivered", "partially_delivered", "failed"] {
                self.messages_completed.with_label_values(&[route, status]);
            }
        }
        for state in ["ready", "scheduled", "in_flight"] {
            self.queue_messages.with_label_values(&[state]);
        }
        for reason in SMTP_AUTH_FAILURE_REASONS {
            self.smtp_auth_failures.with_label_values(&[reason]);
        }
        for scope in SMTP_AUTH_BLOCK_SCOPES {
            self.smtp_auth_blocks.with_label_values(&[scope]);
        }
        for phase in SMTP_TIMEOUT_PHASES {
            self.smtp_timeouts.with_label_values(&[phase]);
        }
        for listener in HTTP_LISTENERS {
            self.http_connections.with_label_values(&[listener]);
            self.http_request_timeouts.with_label_values(&[listener]);
            for reason in crate::http_listener::REFUSAL_REASONS {
                self.http_connections_refused.with_label_values(&[listener, reason]);
            }
        }
    }

    /// Creates every series the config implies, at 0: [`Metrics::init_series`] for its clients,
    /// providers and routes; per route, the failover series between neighbouring providers
    /// (both ways round for the first two when warm standby swaps them) and the delivery
    /// latency per provider. Idempotent: call it again after a reload (counters keep their values).
    pub fn init_config(&self, config: &Config) {
        let clients: Vec<&str> = config.clients.iter().map(|c| c.name.as_str()).collect();
        let providers: Vec<&str> = config.providers.keys().map(String::as_str).collect();
        let routes: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
        self.init_series(&clients, &providers, &routes);
        let domains = sender_domains(config);
        for provider in &providers {
            for domain in domains.iter().map(String::as_str).chain([OTHER_DOMAIN]) {
                self.provider_sender_blocked.with_label_values(&[provider, domain]);
            }
        }
        *self.sender_domains.lock().unwrap_or_else(|e| e.into_inner()) = domains;
        for (name, provider) in &config.providers {
            let settings = HealthSettings::resolve(&config.health, provider.health());
            self.init_rates(name, RateSettings::resolve(&settings, provider).warn);
        }
        if config.canary.is_some() {
            for (provider, _) in config.providers.iter().filter(|(_, p)| p.canary_enabled()) {
                self.canary_sent.with_label_values(&[provider]);
                self.canary_received.with_label_values(&[provider]);
                self.canary_lost.with_label_values(&[provider]);
                self.canary_delivery.with_label_values(&[provider]);
                self.canary_last_received.with_label_values(&[provider]);
                self.redelivered.with_label_values(&[provider]);
            }
        }
        if config.cluster.is_some() {
            self.cluster_connected.with_label_values(NO_LABELS);
            self.cluster_nodes.with_label_values(NO_LABELS);
            for provider in &providers {
                self.cluster_facts_adopted.with_label_values(&[provider]);
            }
        }
        for (provider, _) in config.providers.iter().filter(|(_, p)| p.rate_limit().is_some()) {
            self.provider_rate_limited.with_label_values(&[provider]);
        }
        for w in &config.webhooks {
            let name = crate::outbox::webhook_name(w);
            for outcome in crate::outbox::sender::OUTCOMES {
                self.webhook_deliveries.with_label_values(&[&name, outcome]);
            }
            self.webhook_queue.with_label_values(&[&name]);
            self.webhooks_exported.lock().unwrap_or_else(|e| e.into_inner()).insert(name);
        }
        for route in &config.routes {
            let list: Vec<&str> = route.providers.iter().map(String::as_str).collect();
            let mut pairs: Vec<(&str, &str)> = list.windows(2).map(|w| (w[0], w[1])).collect();
            if route.warm_standby > 0.0 && list.len() > 1 {
                pairs.push((list[1], list[0]));
                if let Some(&third) = list.get(2) {
                    pairs.push((list[0], third));
                }
            }
            for (from, to) in pairs {
                for reason in FAILOVER_REASONS {
                    self.failovers.with_label_values(&[route.name.as_str(), from, to, reason]);
                }
            }
            for provider in &list {
                self.delivery_latency.with_label_values(&[route.name.as_str(), provider]);
            }
        }
    }

    /// `baton_cluster_connected`: whether this node reaches Redis.
    pub fn set_cluster_connected(&self, connected: bool) {
        self.cluster_connected.with_label_values(NO_LABELS).set(i64::from(connected));
    }

    /// `baton_cluster_nodes`: live nodes seen.
    pub fn set_cluster_nodes(&self, nodes: usize) {
        self.cluster_nodes.with_label_values(NO_LABELS).set(nodes as i64);
    }

    /// Sets `baton_provider_sender_blocked` for `provider` to exactly these blocked domains.
    pub fn set_sender_blocked(&self, provider: &str, blocked: &[String]) {
        let known = self.sender_domains.lock().unwrap_or_else(|e| e.into_inner());
        let mut counts: BTreeMap<&str, i64> = known.iter().map(|d| (d.as_str(), 0)).collect();
        counts.insert(OTHER_DOMAIN, 0);
        for domain in blocked {
            let label = known.get(domain.as_str()).map_or(OTHER_DOMAIN, String::as_str);
            *counts.entry(label).or_default() += 1;
        }
        for (domain, n) in counts {
            self.provider_sender_blocked.with_label_values(&[provider, domain]).set(n);
        }
    }

    /// Creates a provider's rate series (the rates at 0 unless already set) with its warn levels.
    fn init_rates(&self, provider: &str, warn: WarnLevels) {
        self.provider_bounce_rate.with_label_values(&[provider]);
        self.provider_complaint_rate.with_label_values(&[provider]);
        self.provider_rate_sample.with_label_values(&[provider]);
        self.provider_bounce_rate_warn.with_label_values(&[provider]).set(warn.bounce);
        self.provider_complaint_rate_warn.with_label_values(&[provider]).set(warn.complaint);
        let mut exported = self.rate_providers.lock().unwrap_or_else(|e| e.into_inner());
        if !exported.iter().any(|p| p == provider) {
            exported.push(provider.to_string());
        }
    }

    /// Sets the five rate gauges to exactly these providers (removed providers disappear, so
    /// their last rate cannot keep an alert firing).
    pub fn set_provider_rates(&self, rates: &[(String, RateSnapshot, WarnLevels)]) {
        let gauges = [
            &self.provider_bounce_rate,
            &self.provider_complaint_rate,
            &self.provider_bounce_rate_warn,
            &self.provider_complaint_rate_warn,
        ];
        let mut exported = self.rate_providers.lock().unwrap_or_else(|e| e.into_inner());
        for old in exported.iter().filter(|old| !rates.iter().any(|(p, _, _)| p == *old)) {
            for g in gauges {
                let _ = g.remove_label_values(&[old.as_str()]);
            }
            let _ = self.provider_rate_sample.remove_label_values(&[old.as_str()]);
        }
        for (provider, s, warn) in rates {
            let p = [provider.as_str()];
            self.provider_bounce_rate.with_label_values(&p).set(s.bounce_rate.unwrap_or(0.0));
            self.provider_complaint_rate.with_label_values(&p).set(s.complaint_rate.unwrap_or(0.0));
            self.provider_bounce_rate_warn.with_label_values(&p).set(warn.bounce);
            self.provider_complaint_rate_warn.with_label_values(&p).set(warn.complaint);
            self.provider_rate_sample.with_label_values(&p).set(i64::try_from(s.sent).unwrap_or(i64::MAX));
        }
        *exported = rates.iter().map(|(p, _, _)| p.clone()).collect();
    }

    /// Exports `baton_config_info{hash}` = 1 for `hash` and removes the previous hash's series.
    pub fn set_config_info(&self, hash: &str) {
        let mut current = self.config_hash.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = current.as_deref()
            && old != hash
        {
            let _ = self.config_info.remove_label_values(&[old]);
        }
        self.config_info.with_label_values(&[hash]).set(1);
        *current = Some(hash.to_string());
    }

    /// Sets `baton_route_available_providers` to exactly these routes (removed routes disappear).
    pub fn set_route_available_providers(&self, routes: &[(&str, usize)]) {
        let mut exported = self.routes_exported.lock().unwrap_or_else(|e| e.into_inner());
        for old in exported.iter().filter(|old| !routes.iter().any(|(r, _)| r == old)) {
            let _ = self.route_available_providers.remove_label_values(&[old.as_str()]);
        }
        for (route, n) in routes {
            self.route_available_providers.with_label_values(&[route]).set(*n as i64);
        }
        *exported = routes.iter().map(|(r, _)| r.to_string()).collect();
    }

    /// Sets `baton_webhook_queue` to `depth` per endpoint (0 for the others ever exported).
    pub fn set_webhook_queue(&self, depth: &BTreeMap<String, i64>) {
        let mut exported = self.webhooks_exported.lock().unwrap_or_else(|e| e.into_inner());
        for name in exported.iter() {
            if !depth.contains_key(name) {
                self.webhook_queue.with_label_values(&[name]).set(0);
            }
        }
        for (name, n) in depth {
            self.webhook_queue.with_label_values(&[name]).set(*n);
            exported.insert(name.clone());
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sample lines of `name` (with labels), as written in the exposition.
    fn samples(m: &Metrics, name: &str) -> Vec<String> {
        m.render()
            .lines()
            .filter(|l| !l.starts_with('#') && l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .map(str::to_string)
            .collect()
    }

    fn config(routes: &str) -> Config {
        let text = format!(
            "[server]\nhostname = \"t\"\nhttp_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n[[clients]]\nname = \"app\"\napi_keys = [\"k-0123456789abcdef\"]\n\
             allowed_senders = [\"*@example.com\"]\n\n[providers.a]\ntype = \"file\"\ndir = \"/tmp/a\"\n\n\
             [providers.b]\ntype = \"file\"\ndir = \"/tmp/b\"\n\n[providers.c]\ntype = \"file\"\ndir = \"/tmp/c\"\n\n{routes}"
        );
        crate::config::load_str(&text, "t.toml", &|_| None).unwrap_or_else(|e| panic!("{e}")).config
    }

    #[test]
    fn reload_series_exist_from_the_start() {
        let m = Metrics::new();
        let reloads = samples(&m, "baton_config_reloads_total");
        assert_eq!(reloads.len(), 2, "{reloads:?}");
        assert!(reloads.iter().all(|l| l.ends_with(" 0")));
        let at = m.config_last_reload_success.get();
        assert!((unix_now() - at).abs() < 60.0, "start time, not 0: {at}");
        assert_eq!(
            samples(&m, "baton_build_info"),
            [format!("baton_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))]
        );
    }

    #[test]
    fn cluster_series_exist_only_with_a_cluster_and_start_at_zero() {
        let m = Metrics::new();
        m.init_config(&config("[[routes]]\nname = \"r\"\nproviders = [\"a\"]\n"));
        assert!(!m.render().contains("baton_cluster_"));
        let m = Metrics::new();
        let routes =
            "[[routes]]\nname = \"r\"\nproviders = [\"a\"]\n\n[cluster]\nredis_url = \"redis://127.0.0.1:6379\"\n";
        m.init_config(&config(routes));
        assert_eq!(samples(&m, "baton_cluster_connected"), ["baton_cluster_connected 0"]);
        assert_eq!(samples(&m, "baton_cluster_nodes"), ["baton_cluster_nodes 0"]);
        assert_eq!(samples(&m, "baton_cluster_facts_adopted_total").len(), 3, "one per provider");
        m.set_cluster_connected(true);
        m.init_config(&config(routes));
        assert_eq!(samples(&m, "baton_cluster_connected"), ["baton_cluster_connected 1"], "a reload keeps it");
    }

    #[test]
    fn config_info_keeps_one_series() {
        let m = Metrics::new();
        m.set_config_info("aaaa");
        m.set_config_info("bbbb");
        m.set_config_info("bbbb");
        assert_eq!(samples(&m, "baton_config_info"), ["baton_config_info{hash=\"bbbb\"} 1"]);
    }

    #[test]
    fn removed_routes_leave_route_availability() {
        let m = Metrics::new();
        m.set_route_available_providers(&[("default", 2), ("bulk", 1)]);
        m.set_route_available_providers(&[("default", 0)]);
        assert_eq!(
            samples(&m, "baton_route_available_providers"),
            ["baton_route_available_providers{route=\"default\"} 0"]
        );
    }

    #[test]
    fn failover_series_follow_the_route_order() {
        let m = Metrics::new();
        m.init_config(&config("[[routes]]\nname = \"r\"\nproviders = [\"a\", \"b\", \"c\"]\n"));
        let pairs = |m: &Metrics| {
            let mut p: Vec<String> = samples(m, "baton_failovers_total")
                .iter()
                .filter(|l| l.contains("reason=\"transient\""))
                .map(|l| {
                    let get =
                        |k: &str| l.split(&format!("{k}=\"")).nth(1).unwrap().split('"').next().unwrap().to_string();
                    format!("{}>{}", get("from"), get("to"))
                })
                .collect();
            p.sort();
            p
        };
        assert_eq!(pairs(&m), ["a>b", "b>c"]);
        assert_eq!(samples(&m, "baton_failovers_total").len(), 2 * FAILOVER_REASONS.len());
        assert!(samples(&m, "baton_failovers_total").iter().all(|l| l.ends_with(" 0")));

        // Warm standby sends some traffic to b first: b → a and a → c exist too.
        let m = Metrics::new();
        m.init_config(&config("[[routes]]\nname = \"r\"\nproviders = [\"a\", \"b\", \"c\"]\nwarm_standby = 0.1\n"));
        assert_eq!(pairs(&m), ["a>b", "a>c", "b>a", "b>c"]);
        assert_eq!(samples(&m, "baton_delivery_latency_seconds_count").len(), 3);
    }

    #[test]
    fn rate_series_start_at_zero_with_the_warn_levels_and_leave_with_their_provider() {
        let m = Metrics::new();
        m.init_config(&config("[[routes]]\nname = \"r\"\nproviders = [\"a\", \"b\", \"c\"]\n"));
        for name in ["baton_provider_bounce_rate", "baton_provider_complaint_rate", "baton_provider_rate_sample"] {
            let lines = samples(&m, name);
            assert_eq!(lines.len(), 3, "{lines:?}");
            assert!(lines.iter().all(|l| l.ends_with(" 0")), "{lines:?}");
        }
        // File providers: the generic levels.
        assert_eq!(
            samples(&m, "baton_provider_bounce_rate_warn")[0],
            "baton_provider_bounce_rate_warn{provider=\"a\"} 0.05"
        );
        assert_eq!(
            samples(&m, "baton_provider_complaint_rate_warn")[2],
            "baton_provider_complaint_rate_warn{provider=\"c\"} 0.001"
        );
        let s =
            RateSnapshot { sent: 200, bounces: 12, complaints: 0, bounce_rate: Some(0.06), complaint_rate: Some(0.0) };
        m.set_provider_rates(&[("a".into(), s, WarnLevels { bounce: 0.05, complaint: 0.001 })]);
        assert_eq!(samples(&m, "baton_provider_bounce_rate"), ["baton_provider_bounce_rate{provider=\"a\"} 0.06"]);
        assert_eq!(samples(&m, "baton_provider_rate_sample"), ["baton_provider_rate_sample{provider=\"a\"} 200"]);
        assert_eq!(samples(&m, "baton_provider_complaint_rate_warn").len(), 1, "b and c are gone");
    }

    #[test]
    fn every_label_value_comes_from_config_or_a_fixed_list() {
        let m = Metrics::new();
        m.init_config(&config("[[routes]]\nname = \"r\"\nproviders = [\"a\", \"b\"]\n"));
        let fixed: Vec<&str> = REJECTION_REASONS
            .iter()
            .chain(&FAILOVER_REASONS)
            .chain(&RELOAD_RESULTS)
            .chain(&SPOOL_FAULTS)
            .chain(&SMTP_AUTH_FAILURE_REASONS)
            .chain(&SMTP_AUTH_BLOCK_SCOPES)
            .chain(&SMTP_TIMEOUT_PHASES)
            .chain(&COMPAT_OUTCOMES)
            .chain(&crate::config::COMPATIBLE_APIS)
            .copied()
            .chain(OutcomeClass::ALL.iter().map(|c| c.as_str()))
            .chain(ProviderState::ALL.iter().map(|s| s.as_str()))
            .chain(["http", "smtp", "app", "a", "b", "c", "r", "ready", "scheduled", "in_flight", "example.com"])
            .chain(ProbeVerdict::LABELS)
            .chain(crate::event::SuppressionReason::ALL.iter().map(|r| r.as_str()))
            .chain(crate::suppression::SOURCES)
            .chain(crate::outbox::sender::OUTCOMES)
            .chain(crate::ingest::webhooks::receive::OUTCOMES)
            .chain(crate::event::EventType::ALL.iter().map(|t| t.as_str()))
            .chain(HTTP_LISTENERS)
            .chain(crate::http_listener::REFUSAL_REASONS)
            .chain([OTHER_DOMAIN])
            .chain(["delivered", "rejected", "failed", "partially_delivered", "ok", env!("CARGO_PKG_VERSION")])
            .collect();
        for line in m.render().lines().filter(|l| l.starts_with("baton_") && l.contains('{')) {
            let labels = &line[line.find('{').unwrap() + 1..line.rfind('}').unwrap()];
            for pair in labels.split("\",") {
                let (k, v) = pair.split_once("=\"").unwrap();
                let v = v.trim_end_matches('"');
                assert!(k == "le" || fixed.contains(&v), "unexpected label value {k}={v:?} in {line}");
            }
        }
    }
}
