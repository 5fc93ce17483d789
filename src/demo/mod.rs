//! `baton demo`: a failover to watch on one machine, with no provider account. Every SMTP
//! provider of the config (config/demo.toml) at a loopback address gets a local sink there
//! (`sink.rs`), and a small control API suspends and resumes a sink's "account". The relay
//! itself is the ordinary one, started as `serve` starts it: nothing here is on the message
//! path, and Baton cannot tell a sink from a real relay.

pub mod sink;

use crate::config::{Config, ProviderConfig};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use sink::{Account, Sink};
use std::net::SocketAddr;
use std::sync::Arc;
use thiserror::Error;
use tokio::net::TcpListener;

#[derive(Debug, Error)]
pub enum DemoError {
    #[error("no SMTP provider at a loopback address in the config: nothing for the demo to stand in for")]
    NoSinks,
    #[error("cannot listen on {addr} for {what}")]
    Bind {
        what: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The running sinks and where their control API listens.
pub struct Demo {
    pub control: SocketAddr,
    pub sinks: Vec<Arc<Sink>>,
}

/// The SMTP providers the demo stands in for: (name, address), each at a loopback address.
pub fn sink_addrs(config: &Config) -> Vec<(String, SocketAddr)> {
    config
        .providers
        .iter()
        .filter_map(|(name, provider)| match provider {
            ProviderConfig::Smtp(s) => {
                let ip = s.host.parse::<std::net::IpAddr>().ok().filter(|ip| ip.is_loopback())?;
                Some((name.clone(), SocketAddr::new(ip, s.port)))
            }
            _ => None,
        })
        .collect()
}

/// Starts a sink for every provider of [`sink_addrs`] and the control API on `control`.
pub async fn start(config: &Config, control: SocketAddr) -> Result<Demo, DemoError> {
    let addrs = sink_addrs(config);
    if addrs.is_empty() {
        return Err(DemoError::NoSinks);
    }
    let mut sinks = Vec::new();
    for (name, addr) in addrs {
        let listener = bind(addr, &format!("the {name} sink")).await?;
        let sink = Sink::new(&name);
        tokio::spawn(sink::serve(sink.clone(), listener));
        sinks.push(sink);
    }
    let listener = bind(control, "the demo control API").await?;
    let control =
        listener.local_addr().map_err(|source| DemoError::Bind { what: "control".into(), addr: control, source })?;
    let app = router(Arc::new(sinks.clone()));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(Demo { control, sinks })
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, DemoError> {
    TcpListener::bind(addr).await.map_err(|source| DemoError::Bind { what: what.into(), addr, source })
}

type Sinks = Arc<Vec<Arc<Sink>>>;

/// `GET /` lists the sinks; `POST /{name}/suspend` and `POST /{name}/resume` change one.
fn router(sinks: Sinks) -> Router {
    Router::new()
        .route("/", get(list))
        .route("/{name}/suspend", post(|s: State<Sinks>, p: Path<String>| set(s, p, Account::Suspended)))
        .route("/{name}/resume", post(|s: State<Sinks>, p: Path<String>| set(s, p, Account::Active)))
        .with_state(sinks)
}

fn describe(sink: &Sink) -> Value {
    json!({"name": sink.name, "account": sink.account().as_str(), "messages": sink.taken()})
}

async fn list(State(sinks): State<Sinks>) -> Json<Value> {
    Json(json!({"sinks": sinks.iter().map(|s| describe(s)).collect::<Vec<_>>()}))
}

async fn set(State(sinks): State<Sinks>, Path(name): Path<String>, account: Account) -> Response {
    match sinks.iter().find(|s| s.name == name) {
        Some(sink) => {
            sink.set_account(account);
            Json(describe(sink)).into_response()
        }
        None => (StatusCode::NOT_FOUND, Json(json!({"error": format!("no sink named {name:?}")}))).into_response(),
    }
}

impl Demo {
    /// What to try, with this run's addresses (printed once the relay listens).
    pub fn guide(&self, config: &Config, http: SocketAddr, admin: SocketAddr) -> String {
        let route = config.routes.first().map(|r| r.providers.join(" → ")).unwrap_or_default();
        let first = config.routes.first().and_then(|r| r.providers.first()).cloned();
        let suspend = first.unwrap_or_else(|| self.sinks[0].name.clone());
        let key = config.clients.iter().flat_map(|c| c.api_keys.first()).next().cloned().unwrap_or_default();
        let sender = config
            .clients
            .first()
            .and_then(|c| c.allowed_senders.first())
            .map(|s| s.replace('*', "demo"))
            .unwrap_or_default();
        let names: Vec<&str> = self.sinks.iter().map(|s| s.name.as_str()).collect();
        format!(
            "\nBaton demo: route {route}; local SMTP sinks stand in for the accounts {}.\n\
             send:    curl -s http://{http}/v1/messages -H 'Authorization: Bearer {key}' \
             -H 'Content-Type: application/json' \
             -d '{{\"from\": \"{sender}\", \"to\": [\"alice@example.net\"], \"subject\": \"Hello\", \"text\": \"Hi\"}}'\n\
             suspend: curl -s -X POST http://{control}/{suspend}/suspend\n\
             resume:  curl -s -X POST http://{control}/{suspend}/resume\n\
             watch:   curl -s http://{admin}/admin/providers    (and http://{admin}/metrics)\n\
             sinks:   curl -s http://{control}/\n",
            names.join(", "),
            control = self.control
        )
    }
}
