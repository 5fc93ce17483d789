#![allow(dead_code)]
//! A scripted HTTP server on 127.0.0.1 that answers like an email provider's API: tests set the
//! reply per path (static, computed from the request, slow, or hanging) and inspect every
//! request Baton made (method, path, headers, body).

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// One request as the mock received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path with query string.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("request body is not JSON ({e}): {}", self.text()))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What the mock answers.
#[derive(Clone)]
pub enum Reply {
    Static {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Computed from the request (e.g. one result per recipient).
    Dynamic(Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>),
    /// Wait, then answer.
    Delayed(Duration, Box<Reply>),
    /// Accept the request and never answer.
    Hang,
}

impl Reply {
    pub fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply::Static {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string(),
        }
    }
    pub fn text(status: u16, body: &str) -> Reply {
        Reply::Static { status, headers: vec![("content-type".into(), "text/plain".into())], body: body.into() }
    }
    pub fn with_header(self, name: &str, value: &str) -> Reply {
        match self {
            Reply::Static { status, mut headers, body } => {
                headers.push((name.into(), value.into()));
                Reply::Static { status, headers, body }
            }
            other => other,
        }
    }
    pub fn dynamic(f: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Reply {
        Reply::Dynamic(Arc::new(f))
    }
}

#[derive(Default)]
struct State {
    requests: Mutex<Vec<Recorded>>,
    /// (path suffix, reply); the longest matching suffix wins.
    replies: Mutex<HashMap<String, Reply>>,
}

pub struct MockHttp {
    addr: SocketAddr,
    state: Arc<State>,
    changed: watch::Sender<usize>,
    shutdown: watch::Sender<bool>,
}

impl MockHttp {
    /// Starts on 127.0.0.1 with an ephemeral port; every path answers 404 until scripted.
    pub async fn start() -> MockHttp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let (changed, _) = watch::channel(0usize);
        let (shutdown, mut shutdown_rx) = watch::channel(false);
        let handler_state = state.clone();
        let handler_changed = changed.clone();
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let state = handler_state.clone();
            let changed = handler_changed.clone();
            async move {
                let rec = Recorded {
                    method: method.to_string(),
                    path: uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                    headers,
                    body: body.to_vec(),
                };
                let reply = {
                    let replies = state.replies.lock().unwrap();
                    let path = rec.path.split('?').next().unwrap_or_default().to_string();
                    replies
                        .iter()
                        .filter(|(suffix, _)| path.ends_with(suffix.as_str()))
                        .max_by_key(|(suffix, _)| suffix.len())
                        .map(|(_, r)| r.clone())
                };
                state.requests.lock().unwrap().push(rec.clone());
                changed.send_modify(|n| *n += 1);
                answer(reply.unwrap_or_else(|| Reply::text(404, "no reply scripted for this path")), &rec).await
            }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = shutdown_rx.wait_for(|s| *s).await;
                })
                .await;
        });
        MockHttp { addr, state, changed, shutdown }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answer requests whose path ends with `path_suffix` with `reply` (replaces earlier scripts).
    pub fn reply(&self, path_suffix: &str, reply: Reply) {
        self.state.replies.lock().unwrap().insert(path_suffix.to_string(), reply);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn requests_to(&self, path_suffix: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.split('?').next().unwrap_or_default().ends_with(path_suffix))
            .collect()
    }

    /// Waits until at least `n` requests to `path_suffix` arrived; panics after `timeout`.
    pub async fn wait_for_requests(&self, path_suffix: &str, n: usize, timeout: Duration) -> Vec<Recorded> {
        let mut rx = self.changed.subscribe();
        let wait = async {
            loop {
                let got = self.requests_to(path_suffix);
                if got.len() >= n {
                    return got;
                }
                let _ = rx.changed().await;
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(got) => got,
            Err(_) => panic!(
                "expected {n} requests to {path_suffix}, got {}: {:?}",
                self.requests_to(path_suffix).len(),
                self.requests().iter().map(|r| format!("{} {}", r.method, r.path)).collect::<Vec<_>>()
            ),
        }
    }
}

impl Drop for MockHttp {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

async fn answer(reply: Reply, rec: &Recorded) -> Response {
    let mut reply = reply;
    loop {
        match reply {
            Reply::Dynamic(f) => reply = f(rec),
            Reply::Delayed(d, inner) => {
                tokio::time::sleep(d).await;
                reply = *inner;
            }
            Reply::Hang => std::future::pending::<()>().await,
            Reply::Static { status, headers, body } => {
                let mut resp =
                    (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), body).into_response();
                for (k, v) in headers {
                    if let (Ok(name), Ok(value)) =
                        (k.parse::<axum::http::HeaderName>(), v.parse::<axum::http::HeaderValue>())
                    {
                        resp.headers_mut().insert(name, value);
                    }
                }
                return resp;
            }
        }
    }
}
