//! Wires the pieces together: opens the spool, starts the listeners, the dispatcher, the
//! retention sweeper and (with `[cluster]`) the cluster task, and shuts them down in the order
//! that loses nothing.

use crate::config::Loaded;
use crate::delivery::{self, queue::Queue};
use crate::health::{self, Health};
use crate::http_listener::{self, Limits};
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::runtime::Runtime;
use crate::shared::{Retention, Shared, save_health};
use crate::spool::Spool;
use crate::spool::record::now_ms;
use crate::suppression::Suppressions;
use crate::{admin, cluster, ingest};
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("cannot open spool: {0}")]
    Spool(#[from] crate::spool::OpenError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Listen { what: &'static str, addr: String, source: std::io::Error },
    #[error("cannot start the delivery threads: {0}")]
    Threads(std::io::Error),
}

/// A running Baton.
pub struct Running {
    pub http_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub smtp_addr: Option<SocketAddr>,
    pub smtps_addr: Option<SocketAddr>,
    pub https_addr: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    stop: CancellationToken,
    done: JoinHandle<()>,
}

impl Running {
    /// Begins a graceful shutdown (what SIGTERM does).
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    /// Returns once a shutdown has begun, asked for or not (see [`stop_when_spool_fails`]).
    pub async fn stopping(&self) {
        self.stop.cancelled().await
    }

    /// Waits until everything has stopped and the spool is flushed.
    pub async fn wait(self) {
        let _ = self.done.await;
    }

    pub async fn stop(self) {
        self.shutdown();
        self.wait().await;
    }
}

async fn bind(what: &'static str, addr: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Listen { what, addr: addr.to_string(), source })
}

pub async fn start(loaded: Loaded) -> Result<Running, StartError> {
    http_listener::raise_fd_limit();
    let metrics = Arc::new(Metrics::new());
    let runtime = Runtime::build(&loaded, None).map_err(StartError::Config)?;
    let config = &loaded.config;
    // Every series the config implies, at 0 (call again after a reload), and baton_config_info.
    metrics.init_config(config);
    metrics.set_config_info(&loaded.hash);
    let (spool, recovered) = Spool::open(&config.spool.dir, config.spool.max_bytes.0, metrics.clone())?;
    let queue = Queue::default();
    for r in &recovered.pending {
        queue.schedule(&r.id, r.next_attempt_ms, r.created_ms);
    }
    let completed = recovered.completed;
    tracing::info!(pending = recovered.pending.len(), completed = completed.len(), dir = %config.spool.dir.display(), "spool opened");

    let http_listener = bind("server.http_listen", &config.server.http_listen).await?;
    let admin_listener = bind("server.admin_listen", &config.server.admin_listen).await?;
    let smtp_listener = match &config.server.smtp_listen {
        Some(a) => Some(bind("server.smtp_listen", a).await?),
        None => None,
    };
    let smtps_listener = match &config.server.smtps_listen {
        Some(a) => Some(bind("server.smtps_listen", a).await?),
        None => None,
    };
    let https_listener = match &config.server.https_listen {
        Some(a) => Some(bind("server.https_listen", a).await?),
        None => None,
    };
    let https_addr = https_listener.as_ref().map(|l| l.local_addr().expect("bound socket has an address"));
    if smtp_listener.is_some() && config.server.tls.is_none() {
        tracing::warn!(
            "no [server.tls]: STARTTLS is not offered and SMTP AUTH is accepted only on loopback connections"
        );
    }
    let smtp_addr = smtp_listener.as_ref().map(|l| l.local_addr().expect("bound socket has an address"));
    let smtps_addr = smtps_listener.as_ref().map(|l| l.local_addr().expect("bound socket has an address"));
    let http_addr = http_listener.local_addr().expect("bound socket has an address");
    let admin_addr = admin_listener.local_addr().expect("bound socket has an address");
    let grace = config.server.shutdown_grace.0;

    let (mut health, health_changes) = Health::persistent(metrics.clone());
    // With [cluster], the cluster task hears of every change too and tells the other nodes.
    let cluster = config.cluster.as_ref().and_then(|c| match cluster::Cluster::open(c) {
        Ok(cluster) => Some((Arc::new(cluster), health.changes())),
        Err(e) => {
            tracing::error!(error = %e, "cluster: cannot use cluster.redis_url; this node runs alone");
            None
        }
    });
    health.sync(config);
    for (provider, saved) in &recovered.provider_health {
        health.restore(provider, saved);
    }
    let health = Arc::new(health);
    let runtime = Arc::new(ArcSwap::from_pointee(runtime));
    let retention = Arc::new(Retention::new(completed));
    let stop = CancellationToken::new();
    let shared = Arc::new(Shared {
        runtime: runtime.clone(),
        spool: spool.clone(),
        queue,
        health: health.clone(),
        suppressions: Arc::new(Suppressions::load(spool.clone(), metrics.clone(), recovered.suppression)),
        outbox: Arc::new(Outbox::load(metrics.clone(), recovered.outbox)),
        inbox: Default::default(),
        metrics,
        retention: retention.clone(),
        config_path: std::path::PathBuf::from(&loaded.source),
        config_hash: Mutex::new(loaded.hash.clone()),
        reload_lock: tokio::sync::Mutex::new(()),
        stop: stop.clone(),
        cluster: cluster.as_ref().map(|(cluster, _)| cluster.clone()),
        throttle: Default::default(),
    });

    let server = &config.server;
    let ingest_limits = Limits {
        header_timeout: server.http_header_timeout.0,
        request_timeout: server.http_request_timeout.0,
        max_connections: server.http_max_connections,
        max_connections_per_ip: server.http_max_connections_per_ip,
    };
    let admin_limits = Limits {
        max_connections: http_listener::ADMIN_MAX_CONNECTIONS,
        max_connections_per_ip: http_listener::ADMIN_MAX_CONNECTIONS_PER_IP,
        ..ingest_limits
    };
    let http_task = tokio::spawn(http_listener::serve(
        http_listener,
        ingest::http::router(shared.clone()),
        ingest_limits,
        "http",
        None,
        shared.metrics.clone(),
        stop.clone(),
    ));
    // HTTPS ingest: the same routes; the certificate comes from the live runtime, so a
    // reloaded [server.tls] is used by the next handshake.
    let https_task = https_listener.map(|listener| {
        let live = shared.clone();
        let tls: http_listener::TlsSource = Arc::new(move || live.runtime.load().tls.clone());
        tokio::spawn(http_listener::serve(
            listener,
            ingest::http::router(shared.clone()),
            ingest_limits,
            "https",
            Some(tls),
            shared.metrics.clone(),
            stop.clone(),
        ))
    });
    let admin_stop = CancellationToken::new();
    let admin_task = tokio::spawn(http_listener::serve(
        admin_listener,
        admin::router(shared.clone()),
        admin_limits,
        "admin",
        None,
        shared.metrics.clone(),
        admin_stop.clone(),
    ));
    let mut smtp_tasks = Vec::new();
    // One AUTH failure tracker for smtp and smtps: switching port gains no guesses.
    let auth_guard = Arc::new(ingest::smtp::AuthGuard::default());
    for (listener, implicit_tls) in [(smtp_listener, false), (smtps_listener, true)] {
        if let Some(listener) = listener {
            let serve = ingest::smtp::serve(listener, shared.clone(), auth_guard.clone(), implicit_tls, stop.clone());
            smtp_tasks.push(tokio::spawn(serve));
        }
    }
    let delivery_threads = delivery::Threads::start().map_err(StartError::Threads)?;
    let dispatcher = delivery_threads.spawn(delivery::run(shared.clone(), stop.clone(), grace));
    let sweeper = tokio::spawn(sweep_completed(spool.clone(), retention, runtime.clone(), stop.clone()));
    let prober =
        tokio::spawn(health::probe::run(runtime.clone(), health.clone(), shared.cluster.clone(), stop.clone()));
    let (silenced_tx, silenced_rx) = tokio::sync::mpsc::unbounded_channel();
    let canaries =
        tokio::spawn(health::canary::run(runtime, health.clone(), shared.metrics.clone(), silenced_tx, stop.clone()));
    let redeliverer = tokio::spawn(delivery::redeliver::run(shared.clone(), silenced_rx));
    let webhook_sender = tokio::spawn(crate::outbox::sender::run(
        shared.outbox.clone(),
        spool.clone(),
        shared.runtime.clone(),
        shared.metrics.clone(),
        stop.clone(),
    ));
    // Stopped after the deliveries, so what they learn while draining is still shared.
    let cluster_stop = CancellationToken::new();
    let cluster_task = cluster.map(|(cluster, changes)| {
        let me = cluster::Member::new(&cluster.config, &config.server.hostname, http_addr, admin_addr);
        let run = cluster::run(cluster, me, health.clone(), shared.metrics.clone(), changes, cluster_stop.clone());
        tokio::spawn(run)
    });
    let health_saver = tokio::spawn(save_health_changes(spool.clone(), health, health_changes));
    let spool_watch = tokio::spawn(stop_when_spool_fails(spool, stop.clone()));
    let watcher = if config.server.watch_config {
        match crate::reload::watch(shared.clone(), stop.clone()) {
            Ok(task) => Some(task),
            Err(e) => {
                tracing::warn!(error = %e, "config file watch unavailable; reload with SIGHUP or POST /admin/reload");
                None
            }
        }
    } else {
        None
    };
    tracing::info!(
        http = %http_addr,
        admin = %admin_addr,
        smtp = smtp_addr.map(|a| a.to_string()),
        smtps = smtps_addr.map(|a| a.to_string()),
        https = https_addr.map(|a| a.to_string()),
        "baton listening"
    );

    let done_shared = shared.clone();
    let done_stop = stop.clone();
    let done = tokio::spawn(async move {
        done_stop.cancelled().await;
        tracing::info!("shutting down: no new messages accepted");
        let listeners = async {
            let _ = http_task.await;
            if let Some(t) = https_task {
                let _ = t.await;
            }
            for t in smtp_tasks {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(grace, listeners).await.is_err() {
            tracing::warn!("HTTP connections still open after the grace period; closing them");
        }
        let _ = dispatcher.await;
        drop(delivery_threads);
        cluster_stop.cancel();
        if let Some(task) = cluster_task {
            let _ = task.await;
        }
        sweeper.abort();
        prober.abort();
        canaries.abort();
        redeliverer.abort();
        health_saver.abort();
        webhook_sender.abort();
        spool_watch.abort();
        // The last word on every provider's health, so a restart starts from it.
        for provider in done_shared.health.names() {
            done_shared.save_health(&provider).await;
        }
        if let Some(w) = watcher {
            w.abort();
        }
        let spool = done_shared.spool.clone();
        let _ = tokio::task::spawn_blocking(move || spool.close()).await;
        admin_stop.cancel();
        let _ = admin_task.await;
        tracing::info!("shutdown complete");
    });
    Ok(Running { http_addr, admin_addr, smtp_addr, smtps_addr, https_addr, shared, stop, done })
}

/// The spool's writer thread is gone (a bug: storage faults are retried, not fatal), so
/// nothing can be accepted or recorded again: stop instead of staying up "ready but broken".
/// `main` sees [`crate::spool::Condition::Failed`] and exits non-zero; a supervisor restarts
/// Baton, which re-opens and verifies the spool.
async fn stop_when_spool_fails(spool: Arc<Spool>, stop: CancellationToken) {
    let reason = spool.failed().await;
    tracing::error!(reason, "the spool cannot be written any more; shutting down");
    stop.cancel();
}

/// Writes each provider's saved health to the spool when it changes (health sends the name).
/// Bursts of changes to one provider are written once: the state written is the latest.
async fn save_health_changes(
    spool: Arc<Spool>,
    health: Arc<Health>,
    mut changes: tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    while let Some(first) = changes.recv().await {
        let mut names = std::collections::BTreeSet::from([first]);
        while let Ok(more) = changes.try_recv() {
            names.insert(more);
        }
        for provider in names {
            save_health(&spool, &health, &provider).await;
        }
    }
}

/// How long finished messages stay in the spool: `spool.keep_completed`, and while canaries
/// may re-deliver what a silent provider took, at least `interval × lost_threshold + timeout`.
fn keep_for(config: &crate::config::Config) -> Duration {
    let keep = config.spool.keep_completed.0;
    match &config.canary {
        // The last confirmed canary, then lost_threshold lost ones (each up to a tenth late),
        // their timeout and the reads that judge them; doubled for margin.
        Some(c) if c.redeliver_unconfirmed => keep.max((c.interval.0 * (c.lost_threshold + 1) + c.timeout.0) * 2),
        _ => keep,
    }
}

/// Removes finished messages from the spool once they have been kept long enough (the live
/// config decides, see [`keep_for`]).
async fn sweep_completed(
    spool: Arc<Spool>,
    retention: Arc<Retention>,
    runtime: Arc<ArcSwap<Runtime>>,
    stop: CancellationToken,
) {
    loop {
        let keep = keep_for(&runtime.load().config);
        let period = keep.min(Duration::from_secs(60)).max(Duration::from_millis(100));
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.cancelled() => return,
        }
        let cutoff = now_ms().saturating_sub(keep.as_millis() as u64);
        let expired = retention.take_expired(cutoff, 10_000);
        if !expired.is_empty() {
            let n = expired.len();
            match spool.remove(expired.clone()).await {
                Ok(()) => tracing::debug!(removed = n, "finished messages removed from the spool"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot remove finished messages; trying again later");
                    retention.put_back(expired);
                }
            }
        }
    }
}
