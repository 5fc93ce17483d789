//! The guided failover demo, as the README walks through it: the real `baton demo` binary on
//! config/demo.toml (listen ports made free and the spool put in a temp dir, nothing else
//! changed), then the README's requests in order — send, suspend the primary's account, send
//! again and see the backup deliver it (status events, metrics, /admin/providers), resume, and
//! watch Baton switch back by itself.

mod support;

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::baton::{Baton, DEADLINE};

/// The demo's API key, sender and recipient, as in the README.
const KEY: &str = "demo-only-insecure-api-key";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// config/demo.toml with free ports and a spool in `dir`: each replaced text must be there once.
fn demo_config(dir: &Path) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml")).unwrap();
    let spool = format!("dir = \"{}\"", dir.join("spool").display());
    let swaps = [
        ("\"127.0.0.1:8080\"", "\"127.0.0.1:0\"".to_string()),
        ("\"127.0.0.1:9090\"", "\"127.0.0.1:0\"".to_string()),
        ("port = 2601", format!("port = {}", free_port())),
        ("port = 2602", format!("port = {}", free_port())),
        ("dir = \"data/demo/spool\"", spool),
    ];
    swaps.iter().fold(text, |text, (from, to)| {
        assert_eq!(text.matches(from).count(), 1, "config/demo.toml has {from} once");
        text.replace(from, to)
    })
}

/// `baton demo` as a child process; killed on drop.
struct Demo {
    child: Child,
    http: String,
    admin: String,
    control: String,
    guide: String,
    client: reqwest::Client,
}

impl Demo {
    fn start(config: &Path) -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["demo", "--log-format", "json", "--control", "127.0.0.1:0", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("baton demo starts");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (guide_tx, guide_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = guide_tx.send(line);
            }
        });
        let (mut control, mut addrs, mut log) = (None, None, Vec::new());
        let deadline = Instant::now() + DEADLINE;
        while control.is_none() || addrs.is_none() {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("baton demo did not start; log:\n{}", log.join("\n")));
            let v: Value = serde_json::from_str(&line).unwrap_or_default();
            match v["message"].as_str() {
                Some("demo sinks listening") => control = v["control"].as_str().map(str::to_string),
                Some("baton listening") => addrs = Some((v["http"].to_string(), v["admin"].to_string())),
                _ => {}
            }
            log.push(line);
        }
        std::thread::spawn(move || for _ in rx {});
        let (http, admin) = addrs.unwrap();
        let unquote = |s: String| format!("http://{}", s.trim_matches('"'));
        // The guide is printed once the relay listens; its last line shows the sinks.
        let mut guide = Vec::new();
        while !guide.last().is_some_and(|l: &String| l.starts_with("sinks:")) {
            let line = guide_rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
            guide.push(line.unwrap_or_else(|_| panic!("no guide printed: {guide:?}")));
        }
        Demo {
            child,
            http: unquote(http),
            admin: unquote(admin),
            control: format!("http://{}", control.unwrap()),
            guide: guide.join("\n"),
            client: reqwest::Client::new(),
        }
    }

    /// The README's send command.
    async fn send(&self, subject: &str) -> String {
        let body = json!({"from": "demo@example.com", "to": ["alice@example.net"], "subject": subject, "text": "Hi"});
        let resp = self
            .client
            .post(format!("{}/v1/messages", self.http))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), 202);
        let v: Value = resp.json().await.unwrap();
        v["id"].as_str().expect("an id").to_string()
    }

    async fn get(&self, url: String, bearer: Option<&str>) -> Value {
        let mut req = self.client.get(url);
        if let Some(key) = bearer {
            req = req.bearer_auth(key);
        }
        req.send().await.expect("GET").json().await.expect("JSON")
    }

    async fn control(&self, path: &str) -> Value {
        let resp = self.client.post(format!("{}{path}", self.control)).send().await.expect("control");
        assert_eq!(resp.status().as_u16(), 200);
        resp.json().await.unwrap()
    }

    async fn provider_state(&self, name: &str) -> String {
        let all = self.get(format!("{}/admin/providers", self.admin), None).await;
        let p = all["providers"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap().clone();
        p["state"].as_str().unwrap().to_string()
    }

    /// Waits until `GET /v1/messages/{id}` is delivered; returns the status.
    async fn delivered(&self, id: &str) -> Value {
        let url = format!("{}/v1/messages/{id}", self.http);
        eventually("delivered", DEADLINE, || async {
            let s = self.get(url.clone(), Some(KEY)).await;
            (s["status"] == "delivered").then_some(s)
        })
        .await
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_demo_fails_over_when_the_primary_account_is_suspended_and_switches_back() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("demo.toml");
    std::fs::write(&config, demo_config(dir.path())).unwrap();
    let demo = Demo::start(&config);
    // The guide printed at start names this run's addresses.
    for command in [format!("{}/primary/suspend", demo.control), format!("{}/v1/messages", demo.http)] {
        assert!(demo.guide.contains(&command), "{command} in the guide:\n{}", demo.guide);
    }

    // 1. A message goes through the primary.
    let first = demo.delivered(&demo.send("Hello").await).await;
    assert_eq!(first["recipients"][0]["provider"], "primary", "{first:#}");

    // 2. The primary's account is suspended, at the provider: Baton is not told.
    let sink = demo.control("/primary/suspend").await;
    assert_eq!(sink["account"], "suspended");

    // 3. The next message is delivered by the backup, in the same pass; its events say why.
    let second = demo.delivered(&demo.send("Hello again").await).await;
    let recipient = &second["recipients"][0];
    assert_eq!(recipient["provider"], "backup", "{second:#}");
    let events: Vec<&str> = recipient["events"].as_array().unwrap().iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(events, ["accepted", "failover", "sent"], "{second:#}");
    // The send met the suspension (an `account` attempt), or a probe met it first and the
    // primary was skipped as suspended: either is the failover the README shows.
    let failover = &recipient["events"][1];
    assert_eq!(failover["provider"], "primary", "{second:#}");

    let metrics = demo.client.get(format!("{}/metrics", demo.admin)).send().await.unwrap().text().await.unwrap();
    let failovers = Baton::metric(&metrics, "baton_failovers_total", &[("from", "primary"), ("to", "backup")]);
    assert_eq!(failovers, 1.0, "{metrics}");
    assert_eq!(
        Baton::metric(&metrics, "baton_provider_state", &[("provider", "primary"), ("state", "suspended")]),
        1.0
    );
    assert_eq!(demo.provider_state("primary").await, "suspended");

    // 4. The account is back: after account_cooldown a passing probe returns the primary to
    // rotation, with no operator action, and the next message goes through it again.
    demo.control("/primary/resume").await;
    let within = Duration::from_secs(20) + DEADLINE;
    eventually("primary back in rotation", within, || async {
        (demo.provider_state("primary").await == "healthy").then_some(())
    })
    .await;
    let third = demo.delivered(&demo.send("Hello once more").await).await;
    assert_eq!(third["recipients"][0]["provider"], "primary", "{third:#}");

    let sinks = demo.get(format!("{}/", demo.control), None).await;
    let taken =
        |name: &str| sinks["sinks"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap()["messages"].clone();
    assert_eq!((taken("primary"), taken("backup")), (json!(2), json!(1)), "{sinks:#}");
}
