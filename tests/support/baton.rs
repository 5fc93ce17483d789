#![allow(dead_code)]
//! Starts a real Baton (in this process, on ephemeral 127.0.0.1 ports, spool in a temp dir) and
//! talks to it over HTTP like a client would.

use super::mock_smtp::MockSmtp;
use baton::app::Running;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const KEY: &str = "test-api-key-0123456789";
pub const OTHER_KEY: &str = "other-api-key-0123456789";
/// Client "app"'s AWS credential, for the SES-compatible API.
pub const AWS_KEY_ID: &str = "AKIABATONTESTAPP0001";
pub const AWS_SECRET: &str = "test-aws-secret-0123456789";
/// Generous: the machines are small and noisy.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Default clients: "app" may send from *@example.com, "other" from *@example.org.
pub const CLIENTS: &str = r#"
[[clients]]
name = "app"
api_keys = ["test-api-key-0123456789"]
allowed_senders = ["*@example.com"]
aws_credentials = [{ access_key_id = "AKIABATONTESTAPP0001", secret_access_key = "test-aws-secret-0123456789" }]

[[clients]]
name = "other"
api_keys = ["other-api-key-0123456789"]
allowed_senders = ["*@example.org"]
"#;

/// A `[providers.NAME]` table for an SMTP provider pointing at a mock.
pub fn smtp_provider(name: &str, mock: &MockSmtp, extra: &str) -> String {
    let timeout = if extra.contains("timeout") { "" } else { "timeout = \"2s\"\n" };
    format!(
        "\n[providers.{name}]\ntype = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n{timeout}{extra}\n",
        mock.port()
    )
}

/// The whole config file text: server and spool sections for `dir`, then `body`
/// (providers, routes, retry…; the default clients are added unless `body` has its own).
pub fn config_text(dir: &Path, spool_extra: &str, body: &str) -> String {
    let clients = if body.contains("[[clients]]") { "" } else { CLIENTS };
    format!(
        r#"[server]
hostname = "baton.test"
http_listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_grace = "5s"

[spool]
dir = "{}"
{spool_extra}
{clients}
{body}
"#,
        dir.join("spool").display()
    )
}

pub struct Baton {
    running: Option<Running>,
    pub base: String,
    pub admin: String,
    pub http: reqwest::Client,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Baton {
    pub async fn start(body: &str) -> Baton {
        Baton::start_with(body, "").await
    }

    pub async fn start_with(body: &str, spool_extra: &str) -> Baton {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut b = Baton::start_in(&dir, body, spool_extra).await;
        b._tmp = Some(tmp);
        b
    }

    /// Starts on an existing directory (for restarts: the spool is kept).
    pub async fn start_in(dir: &Path, body: &str, spool_extra: &str) -> Baton {
        Baton::start_in_with_server(dir, "", spool_extra, body).await
    }

    /// Graceful stop (like SIGTERM); the temp dir is kept until the value is dropped.
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }

    pub fn shared(&self) -> &baton::shared::Shared {
        &self.running.as_ref().expect("running").shared
    }

    /// Starts with `server_extra` lines added to `[server]` (SMTP listeners, TLS, limits).
    pub async fn start_with_server(server_extra: &str, spool_extra: &str, body: &str) -> Baton {
        let tmp = tempfile::tempdir().expect("temp dir");
        let mut b = Baton::start_in_with_server(tmp.path(), server_extra, spool_extra, body).await;
        b._tmp = Some(tmp);
        b
    }

    /// The `server.https_listen` address.
    pub fn https_addr(&self) -> std::net::SocketAddr {
        self.running.as_ref().expect("running").https_addr.expect("server.https_listen is set")
    }

    /// The `server.smtp_listen` address (an ephemeral port when configured as `:0`).
    pub fn smtp_addr(&self) -> std::net::SocketAddr {
        self.running.as_ref().expect("running").smtp_addr.expect("server.smtp_listen is set")
    }

    /// The `server.smtps_listen` address.
    pub fn smtps_addr(&self) -> std::net::SocketAddr {
        self.running.as_ref().expect("running").smtps_addr.expect("server.smtps_listen is set")
    }

    pub async fn post(&self, key: Option<&str>, idempotency: Option<&str>, body: String) -> (u16, Value) {
        let mut req =
            self.http.post(format!("{}/v1/messages", self.base)).header("content-type", "application/json").body(body);
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        if let Some(i) = idempotency {
            req = req.header("idempotency-key", i);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Sends a message as client "app"; asserts 202 and returns the id.
    pub async fn send(&self, msg: Value) -> String {
        let (status, body) = self.post(Some(KEY), None, msg.to_string()).await;
        assert_eq!(status, 202, "send failed: {body}");
        assert_eq!(body["status"], "queued");
        body["id"].as_str().expect("id").to_string()
    }

    pub async fn status_as(&self, key: &str, id: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}/v1/messages/{id}", self.base))
            .header("authorization", format!("Bearer {key}"))
            .send()
            .await
            .expect("request sent");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn status(&self, id: &str) -> Value {
        let (code, v) = self.status_as(KEY, id).await;
        assert_eq!(code, 200, "status of {id}: {v}");
        v
    }

    /// Waits until the message's status satisfies `done`; panics with the last status after the deadline.
    pub async fn wait_status(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        self.wait_status_as(KEY, id, what, done).await
    }

    /// [`Baton::wait_status`] as the client whose API key is `key`.
    pub async fn wait_status_as(&self, key: &str, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let (code, s) = self.status_as(key, id).await;
            assert_eq!(code, 200, "status of {id}: {s}");
            if done(&s) {
                return s;
            }
            assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}; last status: {s:#}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the message is finished (delivered, partially_delivered or failed).
    pub async fn wait_final(&self, id: &str) -> Value {
        self.wait_final_as(KEY, id).await
    }

    /// [`Baton::wait_final`] as the client whose API key is `key`.
    pub async fn wait_final_as(&self, key: &str, id: &str) -> Value {
        self.wait_status_as(key, id, "a final status", |s| {
            matches!(s["status"].as_str(), Some("delivered" | "partially_delivered" | "failed"))
        })
        .await
    }

    /// `GET /admin/providers`.
    pub async fn providers(&self) -> Value {
        self.http.get(format!("{}/admin/providers", self.admin)).send().await.unwrap().json().await.unwrap()
    }

    /// One provider's entry in `GET /admin/providers`.
    pub async fn provider(&self, name: &str) -> Value {
        let all = self.providers().await;
        all["providers"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap().clone()
    }

    /// Waits until `/admin/providers` shows `name` satisfying `done`.
    pub async fn wait_provider(&self, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let p = self.provider(name).await;
            if done(&p) {
                return p;
            }
            assert!(start.elapsed() < DEADLINE, "{name} never got {what}: {p:#}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `provider`'s last probe is inconclusive and says `says`, then checks that it
    /// changed nothing: the provider is healthy and the next message goes through it. Returns
    /// the provider's admin entry.
    pub async fn assert_inconclusive_probe_keeps(&self, provider: &str, says: &str) -> Value {
        let p = self
            .wait_provider(provider, "an inconclusive probe", |p| {
                p["last_probe"]["result"] == "inconclusive"
                    && p["last_probe"]["detail"].as_str().is_some_and(|d| d.contains(says))
            })
            .await;
        assert_eq!(p["state"], "healthy", "an inconclusive probe changes nothing: {p:#}");
        let id = self.send(message(&["alice@example.net"], "after an inconclusive probe")).await;
        let status = self.wait_final(&id).await;
        assert_eq!(status["recipients"][0]["provider"], provider, "{status:#}");
        p
    }

    /// Takes a provider out of rotation (the operator's drain).
    pub async fn drain(&self, name: &str) {
        let resp = self.http.post(format!("{}/admin/providers/{name}/drain", self.admin)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }

    /// `GET /admin/cluster`.
    pub async fn cluster(&self) -> Value {
        self.http.get(format!("{}/admin/cluster", self.admin)).send().await.unwrap().json().await.unwrap()
    }

    /// Puts a provider back into rotation (the operator's resume).
    pub async fn resume(&self, name: &str) {
        let resp = self.http.post(format!("{}/admin/providers/{name}/resume", self.admin)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }

    pub async fn metrics(&self) -> String {
        self.http.get(format!("{}/metrics", self.admin)).send().await.expect("metrics").text().await.expect("text")
    }

    /// Value of one series, e.g. `metric(&m, "baton_failovers_total", &[("from","a")])`; 0 if absent.
    pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
            .map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0))
            .sum()
    }
}

/// Polls `check` every 10 ms until it holds; panics naming `what` after `limit`.
pub async fn within<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A small valid message from the "app" client.
pub fn message(to: &[&str], subject: &str) -> Value {
    serde_json::json!({"from": "App <app@example.com>", "to": to, "subject": subject, "text": "hello"})
}

/// A recipient's entry in a message status.
pub fn recipient<'a>(status: &'a Value, email: &str) -> &'a Value {
    status["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["email"] == email)
        .unwrap_or_else(|| panic!("{email} in {status}"))
}

impl Baton {
    /// Starts on an existing directory with `server_extra` lines added to `[server]` (a spool
    /// on a special filesystem, with SMTP listeners).
    pub async fn start_in_with_server(dir: &Path, server_extra: &str, spool_extra: &str, body: &str) -> Baton {
        let text =
            config_text(dir, spool_extra, body).replacen("[server]\n", &format!("[server]\n{server_extra}\n"), 1);
        let loaded = baton::config::load_str(&text, "test.toml", &|_| None)
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n{text}"));
        let running = baton::app::start(loaded).await.expect("baton starts");
        Baton {
            base: format!("http://{}", running.http_addr),
            admin: format!("http://{}", running.admin_addr),
            running: Some(running),
            http: reqwest::Client::new(),
            dir: dir.to_path_buf(),
            _tmp: None,
        }
    }

    /// `GET /readyz`: status and body.
    pub async fn readyz(&self) -> (u16, String) {
        let resp = self.http.get(format!("{}/readyz", self.admin)).send().await.expect("readyz");
        (resp.status().as_u16(), resp.text().await.unwrap_or_default())
    }

    /// `GET /admin/queue`.
    pub async fn admin_queue(&self) -> Value {
        self.http.get(format!("{}/admin/queue", self.admin)).send().await.unwrap().json().await.unwrap()
    }
}
