//! Live config reload. SIGHUP, `POST /admin/reload` and the config file watch all end in
//! [`reload`]: the new file is loaded and fully validated first (an invalid one changes
//! nothing), then the new runtime is swapped in atomically. Providers whose connection settings
//! did not change keep their connections and health state; changed ones start fresh; removed
//! ones are simply no longer in any route, so queued messages follow the new routes on their
//! next pass. Messages in flight finish on the runtime snapshot they started with.

use crate::config::{self, Config, ConfigError, Problem};
use crate::runtime::Runtime;
use crate::shared::Shared;
use notify::{RecursiveMode, Watcher};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Names added, removed and changed in one section of the config.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl Changes {
    fn between<T: PartialEq>(old: &BTreeMap<&str, &T>, new: &BTreeMap<&str, &T>) -> Changes {
        let mut c = Changes::default();
        for (name, value) in new {
            match old.get(name) {
                None => c.added.push(name.to_string()),
                Some(previous) if previous != value => c.changed.push(name.to_string()),
                Some(_) => {}
            }
        }
        c.removed = old.keys().filter(|n| !new.contains_key(*n)).map(|n| n.to_string()).collect();
        c
    }

    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// What a successful reload changed.
#[derive(Debug, Serialize)]
pub struct ReloadSummary {
    pub hash: String,
    pub providers: Changes,
    pub routes: Changes,
    pub clients: Changes,
    /// Other sections that changed and took effect (health, retry, …).
    pub other: Vec<String>,
    /// Settings that changed in the file but only take effect after a restart.
    pub restart_required: Vec<String>,
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Invalid(ConfigError),
    #[error("{0}")]
    Build(String),
}

impl ReloadError {
    /// Every problem, with file, line and key where known.
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ReloadError::Invalid(ConfigError::Invalid { problems }) => problems.clone(),
            other => vec![Problem { file: String::new(), line: None, key: String::new(), message: other.to_string() }],
        }
    }
}

fn by_name<'a, T>(items: impl Iterator<Item = (&'a str, &'a T)>) -> BTreeMap<&'a str, &'a T> {
    items.collect()
}

/// Keys whose new value needs a restart: listeners and the spool are opened once.
fn restart_required(old: &Config, new: &Config) -> Vec<String> {
    let mut keys = Vec::new();
    let mut check = |key: &str, changed: bool| {
        if changed {
            keys.push(key.to_string());
        }
    };
    check("server.http_listen", old.server.http_listen != new.server.http_listen);
    check("server.admin_listen", old.server.admin_listen != new.server.admin_listen);
    check("server.smtp_listen", old.server.smtp_listen != new.server.smtp_listen);
    check("server.smtps_listen", old.server.smtps_listen != new.server.smtps_listen);
    check("server.https_listen", old.server.https_listen != new.server.https_listen);
    check("server.watch_config", old.server.watch_config != new.server.watch_config);
    check("server.shutdown_grace", old.server.shutdown_grace != new.server.shutdown_grace);
    let http_limits = |c: &Config| {
        let s = &c.server;
        (
            s.http_header_timeout,
            s.http_request_timeout,
            s.http_max_connections,
            s.http_max_connections_per_ip,
            s.http_max_inflight_bytes,
            s.compatible_apis.clone(),
        )
    };
    check("server.http_* limits and compatible_apis", http_limits(old) != http_limits(new));
    check("spool.dir", old.spool.dir != new.spool.dir);
    check("spool.max_bytes", old.spool.max_bytes != new.spool.max_bytes);
    check("delivery.concurrency", old.delivery.concurrency != new.delivery.concurrency);
    check("cluster", old.cluster != new.cluster);
    check(
        "server.tls (enabling or disabling; new certificate files are used at once)",
        old.server.tls.is_some() != new.server.tls.is_some(),
    );
    keys
}

/// Other sections that changed and apply at once.
fn other_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if old.health != new.health {
        out.push("health".to_string());
    }
    if old.retry.schedule != new.retry.schedule {
        out.push("retry.schedule".to_string());
    }
    if old.spool.max_age != new.spool.max_age {
        out.push("spool.max_age".to_string());
    }
    if old.server.tls != new.server.tls && old.server.tls.is_some() && new.server.tls.is_some() {
        out.push("server.tls".to_string());
    }
    if old.server.hostname != new.server.hostname
        || old.server.max_message_size != new.server.max_message_size
        || old.server.max_recipients != new.server.max_recipients
        || old.server.admin_token != new.server.admin_token
    {
        out.push("server".to_string());
    }
    out
}

/// Reloads the config file. An invalid file changes nothing. Reloads never run concurrently.
pub async fn reload(shared: &Shared, trigger: &str) -> Result<ReloadSummary, ReloadError> {
    let _one_at_a_time = shared.reload_lock.lock().await;
    let path = shared.config_path.clone();
    let result: Result<ReloadSummary, ReloadError> = async {
        // Loading reads the file and the TLS certificate: blocking work.
        let loaded = tokio::task::spawn_blocking(move || config::load(&path))
            .await
            .map_err(|e| ReloadError::Build(format!("reload task failed: {e}")))?
            .map_err(ReloadError::Invalid)?;
        let old = shared.runtime.load_full();
        let new = Runtime::build(&loaded, Some(&old)).map_err(ReloadError::Build)?;
        let (o, n) = (&old.config, &loaded.config);
        let providers = Changes::between(
            &by_name(o.providers.iter().map(|(k, v)| (k.as_str(), v))),
            &by_name(n.providers.iter().map(|(k, v)| (k.as_str(), v))),
        );
        let summary = ReloadSummary {
            hash: loaded.hash.clone(),
            routes: Changes::between(
                &by_name(o.routes.iter().map(|r| (r.name.as_str(), r))),
                &by_name(n.routes.iter().map(|r| (r.name.as_str(), r))),
            ),
            clients: Changes::between(
                &by_name(o.clients.iter().map(|c| (c.name.as_str(), c))),
                &by_name(n.clients.iter().map(|c| (c.name.as_str(), c))),
            ),
            other: other_changes(o, n),
            // Against what this process runs with: a key changed back to it needs nothing.
            restart_required: restart_required(&old.started, n),
            warnings: loaded.warnings.iter().map(|w| w.to_string()).collect(),
            providers,
        };
        // Providers with new connection settings start with a clean health record.
        for name in &summary.providers.changed {
            if let (Some(a), Some(b)) = (o.providers.get(name), n.providers.get(name))
                && !a.same_connection(b)
            {
                shared.health.forget(name);
            }
        }
        shared.health.sync(n);
        shared.metrics.init_config(n);
        shared.runtime.store(Arc::new(new));
        *shared.config_hash.lock().unwrap_or_else(|e| e.into_inner()) = loaded.hash.clone();
        Ok(summary)
    }
    .await;
    match &result {
        Ok(s) => {
            let m = &shared.metrics;
            m.config_reloads.with_label_values(&["success"]).inc();
            m.config_last_reload_success.set(crate::spool::record::now_ms() as f64 / 1000.0);
            m.set_config_info(&s.hash);
            m.config_last_reload_successful.set(1);
            let live = s.providers.is_empty() && s.routes.is_empty() && s.clients.is_empty() && s.other.is_empty();
            let list = |names: &[String]| names.join(",");
            // One line per reload, "no change" included; names only, as plain fields.
            tracing::info!(
                trigger,
                hash = %s.hash,
                changed = !(live && s.restart_required.is_empty()),
                providers_added = %list(&s.providers.added),
                providers_changed = %list(&s.providers.changed),
                providers_removed = %list(&s.providers.removed),
                routes_added = %list(&s.routes.added),
                routes_changed = %list(&s.routes.changed),
                routes_removed = %list(&s.routes.removed),
                clients_added = %list(&s.clients.added),
                clients_changed = %list(&s.clients.changed),
                clients_removed = %list(&s.clients.removed),
                other = %list(&s.other),
                restart_required = %list(&s.restart_required),
                "config reloaded"
            );
            if !s.restart_required.is_empty() {
                let keys = list(&s.restart_required);
                tracing::warn!(trigger, keys = %keys, "config reloaded, but these changes need a restart");
            }
        }
        Err(e) => {
            shared.metrics.config_reloads.with_label_values(&["failure"]).inc();
            shared.metrics.config_last_reload_successful.set(0);
            for p in e.problems() {
                tracing::error!(trigger, problem = %p, "config reload refused; the running config is unchanged");
            }
        }
    }
    result
}

/// How long the file must be quiet before a change is reloaded (editors write in steps).
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Watches the config file's directory (not the file: editors replace files, and Kubernetes
/// swaps a `..data` symlink) and reloads when the file's content changed.
pub fn watch(shared: Arc<Shared>, stop: CancellationToken) -> Result<tokio::task::JoinHandle<()>, String> {
    let path = shared.config_path.clone();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let file_name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Only the config file itself (written, or renamed into place) and Kubernetes'
        // `..data` swaps matter: a log file next to the config must not wake the reloader.
        let relevant = event.is_ok_and(|e| {
            e.paths.iter().any(|p| {
                p.file_name().is_some_and(|n| n == file_name.as_os_str() || n.to_string_lossy().starts_with(".."))
            })
        });
        if relevant {
            let _ = tx.send(());
        }
    })
    .map_err(|e| format!("cannot watch the config file: {e}"))?;
    watcher.watch(&dir, RecursiveMode::NonRecursive).map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    Ok(tokio::spawn(async move {
        let _watcher = watcher; // dropping it stops the watch
        let mut last_tried: Option<String> = None;
        loop {
            tokio::select! {
                event = rx.recv() => if event.is_none() { return },
                _ = stop.cancelled() => return,
            }
            // Debounce: wait until the directory has been quiet for a moment.
            loop {
                match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let Ok(text) = tokio::fs::read_to_string(&path).await else { continue };
            let hash = config::text_hash(&text);
            let current = shared.config_hash.lock().unwrap_or_else(|e| e.into_inner()).clone();
            // Reload real changes, and try a broken file once, not on every event. A file put
            // back as it runs after a refused reload is reloaded too: that is logged and
            // counted, and ends the refusal (`baton_config_last_reload_successful`).
            let refused = shared.metrics.config_last_reload_successful.get() == 0;
            let restored = hash == current && refused;
            if (hash != current || restored) && Some(&hash) != last_tried.as_ref() {
                last_tried = Some(hash);
                let _ = reload(&shared, "file watch").await;
            }
        }
    }))
}
