//! Active probes: each provider's cheap health check, on its own schedule, never in the way of
//! sends. The loop looks at the live config on every tick, so providers added or removed by a
//! reload are picked up without restarting anything.

use crate::health::{Health, ProbeReport};
use crate::outcome::OutcomeClass;
use crate::runtime::Runtime;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the loop checks which probes are due (probe intervals themselves are longer).
const TICK: Duration = Duration::from_millis(50);
/// Upper bound for one probe, whatever the provider's own timeout.
const MAX_PROBE: Duration = Duration::from_secs(60);

pub async fn run(runtime: Arc<ArcSwap<Runtime>>, health: Arc<Health>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.cancelled() => return,
        }
        let live = runtime.load_full();
        for (name, provider) in &live.providers {
            if !health.probe_due(name) {
                continue;
            }
            let provider = provider.clone();
            let health = health.clone();
            let name = name.clone();
            tokio::spawn(async move {
                let report = match tokio::time::timeout(MAX_PROBE, provider.probe()).await {
                    Ok(r) => r,
                    Err(_) => ProbeReport::failed(OutcomeClass::Transient, "probe timed out"),
                };
                if report.verdict != crate::health::ProbeVerdict::Usable {
                    tracing::debug!(provider = %name, detail = %report.detail, "probe failed");
                }
                health.record_probe(&name, &report);
            });
        }
    }
}
