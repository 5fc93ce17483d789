#![allow(dead_code)]
//! A real Prometheus for the ops-stack tests: Debian's `prometheus` on a free 127.0.0.1 port,
//! with the config text a test gives it and its TSDB in a temp dir. Killed on drop. Missing
//! `prometheus` fails the test with what to install: no silent skip.

use serde_json::Value;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Prometheus {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    dir: tempfile::TempDir,
    child: Child,
    http: reqwest::Client,
}

fn binary() -> PathBuf {
    ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("prometheus not found: install Debian's prometheus (.ci/run installs it)"))
}

impl Prometheus {
    /// Writes `config` to a temp dir, starts Prometheus on it and waits until `/-/ready`.
    pub async fn start(config: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(binary())
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        let prometheus =
            Prometheus { url: format!("http://127.0.0.1:{port}"), dir, child, http: reqwest::Client::new() };
        let ready = prometheus.wait("ready", Duration::from_secs(30), || async {
            let resp = prometheus.http.get(format!("{}/-/ready", prometheus.url)).send().await;
            resp.is_ok_and(|r| r.status().is_success()).then_some(())
        });
        ready.await;
        prometheus
    }

    /// `GET /api/v1/{path}`: the `data` of a successful answer.
    pub async fn api(&self, path: &str) -> Value {
        let resp = self.http.get(format!("{}/api/v1/{path}", self.url)).send().await.expect("prometheus answers");
        let body: Value = resp.json().await.expect("JSON");
        assert_eq!(body["status"], "success", "GET /api/v1/{path}: {body}");
        body["data"].clone()
    }

    /// Polls `check` until it gives a value; panics after `within` with Prometheus's log.
    pub async fn wait<T, F: std::future::Future<Output = Option<T>>>(
        &self,
        what: &str,
        within: Duration,
        mut check: impl FnMut() -> F,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            assert!(Instant::now() < deadline, "prometheus: timed out waiting for {what}; log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
