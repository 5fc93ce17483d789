//! The admin listener: liveness, readiness, metrics, and `/admin/*` (behind `admin_token`).

use crate::app::Shared;
use crate::spool::record::now_ms;
use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use std::sync::Arc;

pub fn router(shared: Arc<Shared>) -> Router {
    let admin =
        Router::new().route("/queue", get(queue)).layer(middleware::from_fn_with_state(shared.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/admin", admin)
        .with_state(shared)
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.is_shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else {
        (StatusCode::OK, "ready\n").into_response()
    }
}

/// Refreshes the queue gauges, then renders every metric.
async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let now = now_ms();
    let stats = shared.queue.stats(now);
    let m = &shared.metrics;
    m.queue_messages.with_label_values(&["ready"]).set(stats.ready as i64);
    m.queue_messages.with_label_values(&["scheduled"]).set(stats.scheduled as i64);
    m.queue_messages.with_label_values(&["in_flight"]).set(stats.in_flight as i64);
    m.queue_oldest_age.set(stats.oldest_created_ms.map(|c| now.saturating_sub(c) / 1000).unwrap_or(0) as i64);
    m.spool_bytes.set(shared.spool.bytes() as i64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], m.render()).into_response()
}

async fn queue(State(shared): State<Arc<Shared>>) -> Response {
    let now = now_ms();
    let s = shared.queue.stats(now);
    Json(json!({
        "ready": s.ready,
        "scheduled": s.scheduled,
        "in_flight": s.in_flight,
        "oldest_age_seconds": s.oldest_created_ms.map(|c| now.saturating_sub(c) / 1000),
        "spool_bytes": shared.spool.bytes(),
    }))
    .into_response()
}

async fn require_token(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let expected = shared.runtime.load().config.server.admin_token.clone().filter(|t| !t.is_empty());
    if let Some(expected) = expected {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
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
