//! Prometheus metrics. Names and labels are a contract (dashboards and alerts use them); label
//! values are bounded: client, provider and route names come from the config, never from mail.

use crate::outcome::OutcomeClass;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub messages_received: IntCounterVec,
    pub ingest_rejections: IntCounterVec,
    pub delivery_attempts: IntCounterVec,
    pub recipients: IntCounterVec,
    pub failovers: IntCounterVec,
    pub messages_completed: IntCounterVec,
    pub provider_request_duration: HistogramVec,
    pub queue_messages: IntGaugeVec,
    pub queue_oldest_age: IntGauge,
    pub spool_bytes: IntGauge,
    pub spool_commit_duration: Histogram,
    pub spool_commit_batch_size: Histogram,
    pub delivery_latency: HistogramVec,
    pub provider_state: IntGaugeVec,
    pub provider_state_changes: IntCounterVec,
    pub health_probes: IntCounterVec,
    pub build_info: IntGaugeVec,
}

/// Reasons an ingest request is refused (`baton_ingest_rejections_total{reason}`).
pub const REJECTION_REASONS: [&str; 8] = [
    "auth",
    "sender_not_allowed",
    "invalid",
    "too_large",
    "header_injection",
    "spool_full",
    "shutting_down",
    "internal",
];

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

        Metrics {
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
            delivery_latency: histogram(
                &registry,
                "baton_delivery_latency_seconds",
                "Time from ingest acknowledgement to provider acceptance",
                &["route", "provider"],
                latency_buckets,
            ),
            queue_messages,
            queue_oldest_age,
            spool_bytes,
            spool_commit_duration,
            spool_commit_batch_size,
            build_info,
            registry,
        }
    }

    /// Creates the series dashboards and alerts use, at 0, so panels are not empty at start.
    pub fn init_series(&self, clients: &[&str], providers: &[&str], routes: &[&str]) {
        for ingress in ["http", "smtp"] {
            for client in clients {
                self.messages_received.with_label_values(&[ingress, client]);
            }
            for reason in REJECTION_REASONS {
                self.ingest_rejections.with_label_values(&[ingress, reason]);
            }
        }
        for provider in providers {
            for class in OutcomeClass::ALL {
                self.delivery_attempts.with_label_values(&[provider, class.as_str()]);
            }
            for status in ["delivered", "rejected", "failed"] {
                self.recipients.with_label_values(&[provider, status]);
            }
            for result in ["ok", "failed"] {
                self.health_probes.with_label_values(&[provider, result]);
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
