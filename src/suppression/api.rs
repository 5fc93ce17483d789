//! The suppression list over HTTP: `/v1/suppressions` for a client's own list (API key, as
//! `POST /v1/messages`), `/admin/suppressions` for every entry (admin token).
//!
//! A client sees and manages the entries that apply to its mail: its own, and the ones for
//! everyone (`scope = "global"`, or added by an operator). Under the client scope, an entry an
//! operator added for everyone is removed by an operator, not by one client.

use super::{EVERYONE, Entry, Filter, scope_for};
use crate::config::SuppressionScope;
use crate::event::SuppressionReason;
use crate::ingest::http::{ApiError, authenticate};
use crate::shared::Shared;
use crate::spool::record::now_ms;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// `/v1/suppressions…` on the ingest listeners.
pub fn client_routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/suppressions", get(client_list).post(client_add))
        .route("/v1/suppressions/{email}", get(client_get).delete(client_delete))
}

/// `/suppressions…`, nested under `/admin` behind the admin token.
pub fn admin_routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/suppressions", get(admin_list).post(admin_add))
        .route("/suppressions/{email}", get(admin_get).delete(admin_delete))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    reason: Option<String>,
    /// RFC 3339 time: entries added at or after it.
    since: Option<String>,
    /// Admin only: entries that apply to this client.
    client: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddRequest {
    email: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    detail: Option<String>,
    /// Admin only: the client the entry is for (default: everyone).
    #[serde(default)]
    client: Option<String>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// An entry as the API shows it; `with_scope` adds which client it belongs to (admin only:
/// a client is not told other clients' names).
fn entry_json(e: &Entry, with_scope: bool) -> Value {
    let mut v = json!({
        "email": e.email,
        "reason": e.reason.as_str(),
        "provider": e.provider,
        "message_id": e.message_id,
        "created_at": rfc3339(e.at_ms),
        "detail": e.detail,
    });
    if with_scope {
        v["client"] = json!((e.scope != EVERYONE).then_some(&e.scope));
    }
    v
}

fn filter<'a>(query: &'a ListQuery, client: Option<&'a str>) -> Result<Filter<'a>, ApiError> {
    let reason = match query.reason.as_deref() {
        None | Some("") => None,
        Some(r) => Some(SuppressionReason::parse(r).ok_or_else(|| {
            let known: Vec<&str> = SuppressionReason::ALL.iter().map(|r| r.as_str()).collect();
            bad(format!("reason: unknown reason {r:?} (one of {})", known.join(", ")))
        })?),
    };
    let since_ms = match query.since.as_deref() {
        None | Some("") => None,
        Some(s) => {
            let t = humantime::parse_rfc3339_weak(s)
                .map_err(|_| bad(format!("since: {s:?} is not an RFC 3339 time (e.g. 2026-12-01T00:00:00Z)")))?;
            Some(t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64))
        }
    };
    Ok(Filter { client, reason, since_ms })
}

fn list_json(shared: &Shared, filter: &Filter<'_>, with_scope: bool) -> Response {
    let scope = shared.runtime.load().config.suppression.scope;
    let entries = shared.suppressions.list(scope, filter);
    let list: Vec<Value> = entries.iter().map(|e| entry_json(e, with_scope)).collect();
    Json(json!({"suppressions": list})).into_response()
}

/// A plausible address: one `@`, something on each side, no spaces or control characters.
fn check_email(email: &str) -> Result<String, ApiError> {
    let email = email.trim();
    let ok = email.len() <= 254
        && email.split('@').count() == 2
        && !email.starts_with('@')
        && !email.ends_with('@')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>');
    match ok {
        true => Ok(email.to_ascii_lowercase()),
        false => Err(bad(format!("email: {email:?} is not an email address"))),
    }
}

fn parse_add(body: &[u8]) -> Result<AddRequest, ApiError> {
    let mut json = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        match path.as_str() {
            "." | "?" => bad(format!("invalid JSON body: {}", e.inner())),
            _ => bad(format!("{path}: {}", e.inner())),
        }
    })
}

async fn add(shared: &Shared, request: AddRequest, scope: String, with_scope: bool) -> Result<Response, ApiError> {
    let email = check_email(&request.email)?;
    let reason = match request.reason.as_deref() {
        None | Some("") => SuppressionReason::Manual,
        Some(r) => SuppressionReason::parse(r).ok_or_else(|| bad(format!("reason: unknown reason {r:?}")))?,
    };
    let detail = crate::outcome::truncate_detail(request.detail.as_deref().unwrap_or(""));
    let entry = Entry {
        email: email.clone(),
        scope: scope.clone(),
        reason,
        provider: None,
        message_id: None,
        at_ms: now_ms(),
        detail,
    };
    let added = shared.suppressions.add(entry, "api").await.map_err(|e| {
        tracing::error!(error = %e, "cannot save a suppression entry");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "spool_unavailable", "the entry could not be saved; try again")
    })?;
    let stored = shared.suppressions.list(SuppressionScope::Client, &Filter::default());
    let entry = stored.iter().find(|e| e.email == email && e.scope == scope).cloned();
    let status = if added { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(entry.map_or(Value::Null, |e| entry_json(&e, with_scope)))).into_response())
}

fn not_listed() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "this address is not on the suppression list")
}

async fn client_list(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    query: Query<ListQuery>,
) -> Result<Response, ApiError> {
    let client = authenticate(&shared, &headers)?;
    if query.client.is_some() {
        return Err(bad("client: only the admin API lists other clients' entries"));
    }
    Ok(list_json(&shared, &filter(&query, Some(&client.name))?, false))
}

async fn client_get(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(email): Path<String>,
) -> Result<Response, ApiError> {
    let client = authenticate(&shared, &headers)?;
    let scope = shared.runtime.load().config.suppression.scope;
    match shared.suppressions.lookup(scope, &client.name, &email) {
        Some(e) => Ok(Json(entry_json(&e, false)).into_response()),
        None => Err(not_listed()),
    }
}

async fn client_add(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let client = authenticate(&shared, &headers)?;
    let request = parse_add(&body)?;
    if request.client.is_some() {
        return Err(bad("client: only the admin API adds entries for other clients"));
    }
    let scope = scope_for(shared.runtime.load().config.suppression.scope, &client.name).to_string();
    add(&shared, request, scope, false).await
}

async fn client_delete(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(email): Path<String>,
) -> Result<Response, ApiError> {
    let client = authenticate(&shared, &headers)?;
    let scope = shared.runtime.load().config.suppression.scope;
    // Global scope: one list, so every entry for the address goes. Client scope: its own.
    let scopes: Vec<String> = match scope {
        SuppressionScope::Global => shared.suppressions.scopes_of(&email),
        SuppressionScope::Client => vec![client.name.clone()],
    };
    let removed = remove_all(&shared, &email, &scopes).await?;
    if removed == 0 {
        if shared.suppressions.lookup(scope, &client.name, &email).is_some() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "operator_entry",
                "this address is on the list for every client; an operator removes it (DELETE /admin/suppressions/{email})",
            ));
        }
        return Err(not_listed());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn remove_all(shared: &Shared, email: &str, scopes: &[String]) -> Result<usize, ApiError> {
    let mut removed = 0;
    for scope in scopes {
        match shared.suppressions.remove(scope, email).await {
            Ok(Some(_)) => removed += 1,
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot remove a suppression entry");
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "spool_unavailable",
                    "the entry could not be removed; try again",
                ));
            }
        }
    }
    Ok(removed)
}

async fn admin_list(State(shared): State<Arc<Shared>>, query: Query<ListQuery>) -> Result<Response, ApiError> {
    Ok(list_json(&shared, &filter(&query, query.client.as_deref())?, true))
}

async fn admin_get(State(shared): State<Arc<Shared>>, Path(email): Path<String>) -> Result<Response, ApiError> {
    let email = email.to_ascii_lowercase();
    let all = shared.suppressions.list(SuppressionScope::Client, &Filter::default());
    let list: Vec<Value> = all.iter().filter(|e| e.email == email).map(|e| entry_json(e, true)).collect();
    match list.is_empty() {
        true => Err(not_listed()),
        false => Ok(Json(json!({"suppressions": list})).into_response()),
    }
}

async fn admin_add(State(shared): State<Arc<Shared>>, body: Bytes) -> Result<Response, ApiError> {
    let request = parse_add(&body)?;
    let scope = match request.client.as_deref() {
        None | Some("") => EVERYONE.to_string(),
        Some(c) if shared.runtime.load().config.clients.iter().any(|k| k.name == c) => c.to_string(),
        Some(c) => return Err(bad(format!("client: no client named {c:?}"))),
    };
    add(&shared, request, scope, true).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    /// Only this client's entry (`*`: only the entry for everyone); default: every entry.
    client: Option<String>,
}

async fn admin_delete(
    State(shared): State<Arc<Shared>>,
    Path(email): Path<String>,
    Query(query): Query<DeleteQuery>,
) -> Result<Response, ApiError> {
    let scopes = match query.client {
        Some(c) => vec![c],
        None => shared.suppressions.scopes_of(&email),
    };
    match remove_all(&shared, &email, &scopes).await? {
        0 => Err(not_listed()),
        _ => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}
