//! Active probes: each provider's cheap health check, on its own schedule, never in the way of
//! sends. The loop looks at the live config on every tick, so providers added or removed by a
//! reload are picked up without restarting anything. In a cluster, a provider out of rotation
//! is probed by one node at a time (the holder of its lease); the others hear the result as a
//! shared fact — n nodes do not hammer a suspended account n times as often.

use crate::cluster::Cluster;
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

pub async fn run(
    runtime: Arc<ArcSwap<Runtime>>,
    health: Arc<Health>,
    cluster: Option<Arc<Cluster>>,
    stop: CancellationToken,
) {
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
            let cluster = cluster.clone();
            tokio::spawn(async move {
                if let Some(cluster) = cluster
                    && !health.in_rotation(&name)
                {
                    // Held a few probe intervals: a holder that dies is replaced soon after.
                    let lease = health.probe_interval(&name) * 3;
                    if !cluster.may_probe(&name, lease.max(Duration::from_secs(1))).await {
                        return health.probe_skipped(&name);
                    }
                }
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
