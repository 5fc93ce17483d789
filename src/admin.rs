//! The admin listener: liveness, readiness, metrics, and `/admin/*` (behind `admin_token`).

use crate::health::ProbeVerdict;
use crate::shared::Shared;
use crate::spool::Condition;
use crate::spool::record::now_ms;
use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use std::sync::Arc;

pub fn router(shared: Arc<Shared>) -> Router {
    let admin = Router::new()
        .route("/queue", get(queue))
        .route("/providers", get(providers))
        .route("/providers/{name}/drain", post(drain))
        .route("/providers/{name}/resume", post(resume))
        .route("/reload", post(reload))
        .route("/cluster", get(cluster))
        .merge(crate::suppression::api::admin_routes())
        .layer(middleware::from_fn_with_state(shared.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/admin", admin)
        .with_state(shared)
}

/// Ready means "a message sent now is accepted and delivered": not while shutting down, and
/// not while the spool cannot write (ingest would refuse it and delivery is held).
async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.is_shutting_down() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    match shared.spool.condition() {
        Condition::Writable => (StatusCode::OK, "ready\n").into_response(),
        other => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", other.describe())).into_response(),
    }
}

/// Refreshes the queue, spool and route-availability gauges, then renders every metric.
async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let now = now_ms();
    let stats = shared.queue.stats(now);
    let m = &shared.metrics;
    m.queue_messages.with_label_values(&["ready"]).set(stats.ready as i64);
    m.queue_messages.with_label_values(&["scheduled"]).set(stats.scheduled as i64);
    m.queue_messages.with_label_values(&["in_flight"]).set(stats.in_flight as i64);
    m.queue_oldest_age.set(stats.oldest_created_ms.map(|c| now.saturating_sub(c) / 1000).unwrap_or(0) as i64);
    m.spool_bytes.set(shared.spool.bytes() as i64);
    m.queue_kept_bytes.set(shared.queue.kept_bytes() as i64);
    // Providers of each route in rotation (0: the route sends nothing until one comes back).
    let runtime = shared.runtime.load();
    let routes: Vec<(&str, usize)> = runtime
        .routes
        .iter()
        .map(|r| (r.name.as_str(), r.providers.iter().filter(|p| shared.health.in_rotation(p)).count()))
        .collect();
    m.set_route_available_providers(&routes);
    // Bounce and complaint rates as the window slides, not only when something is recorded.
    shared.health.export_rates();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], m.render()).into_response()
}

/// Most quarantined ids listed by `/admin/queue` (the count is always complete).
const QUARANTINED_IDS_SHOWN: usize = 100;

async fn queue(State(shared): State<Arc<Shared>>) -> Response {
    let now = now_ms();
    let s = shared.queue.stats(now);
    let condition = shared.spool.condition();
    let quarantined = shared.spool.quarantined();
    Json(json!({
        "ready": s.ready,
        "scheduled": s.scheduled,
        "in_flight": s.in_flight,
        "oldest_age_seconds": s.oldest_created_ms.map(|c| now.saturating_sub(c) / 1000),
        "spool_bytes": shared.spool.bytes(),
        "spool_writable": condition.is_writable(),
        "spool_problem": (!condition.is_writable()).then(|| condition.describe()),
        "quarantined": {
            "count": quarantined.len(),
            "ids": &quarantined[..quarantined.len().min(QUARANTINED_IDS_SHOWN)],
        },
    }))
    .into_response()
}

async fn require_token(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let expected = shared.runtime.load().config.server.admin_token.clone().filter(|t| !t.is_empty());
    if let Some(expected) = expected {
        let given = crate::ingest::bearer_token(req.headers());
        if given != Some(expected.as_str()) {
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": {"code": "unauthorized", "message": "admin endpoints need `Authorization: Bearer <admin_token>`"}})),
            )
                .into_response();
        }
    }
    next.run(req).await
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}

/// Every provider's health: state, why, recent success ratio, last probe, next trial.
async fn providers(State(shared): State<Arc<Shared>>) -> Response {
    let runtime = shared.runtime.load();
    let list: Vec<_> = shared
        .health
        .statuses()
        .into_iter()
        .map(|s| {
            json!({
                "name": s.name,
                "type": runtime.config.providers.get(&s.name).map(|p| p.type_name()),
                "state": s.state.as_str(),
                "since": rfc3339(s.since_ms),
                "reason": s.reason,
                "consecutive_failures": s.consecutive_failures,
                "recent_requests": s.window_requests,
                "recent_success_ratio": s.success_ratio,
                "probe": s.probe_enabled,
                "last_probe": s.last_probe.map(|p| json!({
                    "at": rfc3339(p.at_ms),
                    "ok": p.result == ProbeVerdict::Usable,
                    "result": p.result.as_str(),
                    "detail": p.detail,
                })),
                "next_trial_in_seconds": s.next_trial_in.map(|d| d.as_secs_f64()),
                "blocked_sender_domains": s.sender_blocks.iter().map(|b| json!({
                    "domain": b.domain,
                    "since": rfc3339(b.since_ms),
                    "retry_in_seconds": b.remaining.as_secs_f64(),
                    "reason": b.reason,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!({ "providers": list })).into_response()
}

/// What this node sees of the cluster: the live nodes and the last fact about each provider.
async fn cluster(State(shared): State<Arc<Shared>>) -> Response {
    let Some(cluster) = &shared.cluster else {
        return Json(json!({ "enabled": false })).into_response();
    };
    let view = cluster.status.view();
    let nodes: Vec<_> = view
        .nodes
        .iter()
        .map(|(id, beat)| {
            json!({
                "node_id": id,
                "http": beat.http,
                "admin": beat.admin,
                "last_heartbeat": rfc3339(beat.last_heartbeat_ms),
            })
        })
        .collect();
    let health: serde_json::Map<String, serde_json::Value> = view
        .health
        .iter()
        .map(|(provider, fact)| {
            let mut entry = json!({"node": fact.node, "at": rfc3339(fact.at_ms), "state": fact.saved.state.as_str()});
            if let Some(until) = fact.saved.until_ms {
                entry["until"] = rfc3339(until).into();
            }
            (provider.clone(), entry)
        })
        .collect();
    Json(json!({
        "enabled": true,
        "node_id": view.node_id,
        "connected": view.connected,
        "nodes": nodes,
        "health": health,
        "circuits": view.circuits,
    }))
    .into_response()
}

fn unknown_provider(name: &str) -> Response {
    let message = format!("no provider named {name:?}");
    (StatusCode::NOT_FOUND, Json(json!({"error": {"code": "not_found", "message": message}}))).into_response()
}

async fn drain(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    match shared.health.drain(&name) {
        Some(state) => {
            // On disk before the answer: a restart right after keeps the provider drained.
            shared.save_health(&name).await;
            tracing::warn!(provider = %name, "provider drained by operator");
            Json(json!({"name": name, "state": state.as_str()})).into_response()
        }
        None => unknown_provider(&name),
    }
}

async fn resume(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    match shared.health.resume(&name) {
        Some(state) => {
            shared.save_health(&name).await;
            tracing::info!(provider = %name, "provider resumed by operator");
            Json(json!({"name": name, "state": state.as_str()})).into_response()
        }
        None => unknown_provider(&name),
    }
}

/// Reloads the config file: 200 with what changed, or 422 with every problem (nothing changed).
async fn reload(State(shared): State<Arc<Shared>>) -> Response {
    match crate::reload::reload(&shared, "admin api").await {
        Ok(summary) => Json(json!({ "status": "reloaded", "summary": summary })).into_response(),
        Err(e) => {
            let problems: Vec<_> = e
                .problems()
                .iter()
                .map(|p| json!({"file": p.file, "line": p.line, "key": p.key, "message": p.message, "text": p.to_string()}))
                .collect();
            let body = json!({"error": {
                "code": "invalid_config",
                "message": "the new config is invalid; the running config is unchanged",
                "problems": problems,
            }});
            (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
        }
    }
}
