//! Cluster mode with each node its own `baton` process, as in production: three processes on
//! one real Redis and the same scripted providers. An idempotency key sent to two processes is
//! one message; a node killed with SIGKILL and started again on its own spool delivers what it
//! had accepted, and any node answers for any node's messages; `max_rate` holds for the three
//! under load; Redis killed mid-run loses and duplicates nothing; a suspension one process
//! learns keeps the other two off the provider within a second.
//! (`tests/cluster.rs` covers the rest of cluster mode with in-process nodes.)

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::baton::{DEADLINE, KEY, config_text, message, smtp_provider, within};
use support::mock_smtp::MockSmtp;
use support::process::BatonProcess;
use support::redis::Redis;

struct Node {
    id: &'static str,
    config: PathBuf,
    process: BatonProcess,
}

/// Writes node `id`'s config (its own spool under `dir`) and starts it.
fn start(dir: &Path, id: &'static str, primary: &MockSmtp, backup: &MockSmtp, redis: &Redis) -> Node {
    start_with(dir, id, primary, "", backup, redis)
}

/// Like [`start`], with `primary_extra` in the primary's table.
fn start_with(
    dir: &Path,
    id: &'static str,
    primary: &MockSmtp,
    primary_extra: &str,
    backup: &MockSmtp,
    redis: &Redis,
) -> Node {
    let body = format!(
        "{}{}\n[retry]\nschedule = [\"300ms\"]\n\n[[routes]]\nname = \"default\"\nproviders = [\"primary\", \"backup\"]\n\n\
         [cluster]\nredis_url = \"{}\"\nnode_id = \"{id}\"\n",
        smtp_provider("primary", primary, primary_extra),
        smtp_provider("backup", backup, ""),
        redis.url(),
    );
    let home = dir.join(id);
    std::fs::create_dir_all(&home).unwrap();
    let config = home.join("baton.toml");
    std::fs::write(&config, config_text(&home, "", &body)).unwrap();
    let process = BatonProcess::spawn(&config);
    Node { id, config, process }
}

async fn get(http: &reqwest::Client, url: String) -> (u16, Value) {
    let resp = http.get(url).header("authorization", format!("Bearer {KEY}")).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn post(http: &reqwest::Client, node: &Node, idempotency: Option<&str>, msg: &Value) -> (u16, Value) {
    let mut req = http
        .post(format!("{}/v1/messages", node.process.http))
        .header("authorization", format!("Bearer {KEY}"))
        .json(msg);
    if let Some(key) = idempotency {
        req = req.header("idempotency-key", key);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn admin(http: &reqwest::Client, node: &Node, action: &str) {
    let resp = http.post(format!("{}/admin/providers/{action}", node.process.admin)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{action} on {}", node.id);
}

async fn sees_all(http: &reqwest::Client, node: &Node, n: usize) {
    within(DEADLINE, &format!("{} sees {n} nodes", node.id), || async {
        let (_, view) = get(http, format!("{}/admin/cluster", node.process.admin)).await;
        view["connected"] == true && view["nodes"].as_array().is_some_and(|l| l.len() == n)
    })
    .await;
}

async fn state(http: &reqwest::Client, node: &Node, provider: &str) -> String {
    let (_, list) = get(http, format!("{}/admin/providers", node.process.admin)).await;
    let entry = list["providers"].as_array().unwrap().iter().find(|p| p["name"] == provider).cloned();
    entry.map_or_else(String::new, |p| p["state"].as_str().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_and_restarted_on_its_own_spool_delivers_what_it_accepted_and_keys_hold_across_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start();
    let (primary, backup) = (MockSmtp::start().await, MockSmtp::start().await);
    let http = reqwest::Client::new();
    let mut nodes: Vec<Node> =
        ["a", "b", "c"].into_iter().map(|id| start(dir.path(), id, &primary, &backup, &redis)).collect();
    for node in &nodes {
        sees_all(&http, node, 3).await;
    }

    // One key, two processes: one message.
    let once = message(&["alice@example.net"], "once");
    let (code, first) = post(&http, &nodes[0], Some("signup-42"), &once).await;
    assert_eq!(code, 202, "{first}");
    let (code, again) = post(&http, &nodes[1], Some("signup-42"), &once).await;
    assert_eq!((code, &again["id"]), (202, &first["id"]), "b answers with a's message");
    within(DEADLINE, "the message delivered", || async { primary.message_count() == 1 }).await;

    // Hold every delivery (a drain on a holds on every node), accept on all three.
    admin(&http, &nodes[0], "primary/drain").await;
    admin(&http, &nodes[0], "backup/drain").await;
    for node in &nodes[1..] {
        for provider in ["primary", "backup"] {
            within(Duration::from_secs(1), "the drain reaches every node", || async {
                state(&http, node, provider).await == "drained"
            })
            .await;
        }
    }
    let mut ids = Vec::new();
    for node in &nodes {
        for i in 0..5 {
            let (code, body) =
                post(&http, node, None, &message(&["bob@example.net"], &format!("{} {i}", node.id))).await;
            assert_eq!(code, 202, "{body}");
            ids.push(body["id"].as_str().unwrap().to_string());
        }
    }

    // b dies with its five messages accepted and not sent, and starts again on its spool.
    let b = nodes.remove(1);
    b.process.signal("KILL");
    let config = b.config.clone();
    drop(b);
    let restarted = tokio::task::spawn_blocking(move || BatonProcess::spawn(&config)).await.unwrap();
    nodes.insert(1, Node { id: "b", config: dir.path().join("b/baton.toml"), process: restarted });
    sees_all(&http, &nodes[1], 3).await;
    assert_eq!(state(&http, &nodes[1], "primary").await, "drained", "b kept the drain");
    let new_address = nodes[1].process.http.trim_start_matches("http://").to_string();
    within(Duration::from_secs(3), "a has b's new address from its heartbeat", || async {
        let (_, view) = get(&http, format!("{}/admin/cluster", nodes[0].process.admin)).await;
        view["nodes"].as_array().unwrap().iter().any(|n| n["node_id"] == "b" && n["http"] == new_address.as_str())
    })
    .await;

    // A resume on c lets every node deliver what it accepted, b included.
    admin(&http, &nodes[2], "primary/resume").await;
    within(DEADLINE, "all fifteen delivered", || async { primary.message_count() == 16 }).await;
    for id in &ids {
        // Asked of a whichever node holds it (the record is written just after the provider's 250).
        within(DEADLINE, &format!("{id} delivered, as node a tells"), || async {
            let (code, status) = get(&http, format!("{}/v1/messages/{id}", nodes[0].process.http)).await;
            code == 200 && status["status"] == "delivered"
        })
        .await;
    }
    let subjects: Vec<String> =
        primary.messages().iter().filter_map(|m| m.header("Subject")).filter(|s| s.starts_with("b ")).collect();
    assert_eq!(subjects.len(), 5, "b's five, once each: {subjects:?}");
    assert_eq!(backup.message_count(), 0);
}

/// Sends `n` messages to each node at once, subjects `{prefix} {node} {i}`; returns (node, id).
async fn load(http: &reqwest::Client, nodes: &[Node], prefix: &str, n: usize) -> Vec<(usize, String)> {
    let mut sends = Vec::new();
    for (k, node) in nodes.iter().enumerate() {
        for i in 0..n {
            let msg = message(&["carol@example.net"], &format!("{prefix} {} {i}", node.id));
            sends.push(async move {
                let (code, body) = post(http, node, None, &msg).await;
                assert_eq!(code, 202, "{body}");
                (k, body["id"].as_str().unwrap().to_string())
            });
        }
    }
    futures::future::join_all(sends).await
}

async fn wait_delivered(http: &reqwest::Client, nodes: &[Node], ids: &[(usize, String)]) {
    for (k, id) in ids {
        within(DEADLINE, &format!("{id} delivered"), || async {
            let (_, status) = get(http, format!("{}/v1/messages/{id}", nodes[*k].process.http)).await;
            status["status"] == "delivered"
        })
        .await;
    }
}

/// How many messages each subject starting with `prefix` reached the two providers.
fn copies(providers: [&MockSmtp; 2], prefix: &str) -> std::collections::BTreeMap<String, usize> {
    let mut seen = std::collections::BTreeMap::new();
    for m in providers.iter().flat_map(|p| p.messages()) {
        if let Some(subject) = m.header("Subject").filter(|s| s.starts_with(prefix)) {
            *seen.entry(subject).or_default() += 1;
        }
    }
    seen
}

async fn connected(http: &reqwest::Client, node: &Node) -> bool {
    let (_, view) = get(http, format!("{}/admin/cluster", node.process.admin)).await;
    view["connected"] == true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_rate_a_redis_killed_mid_run_and_a_suspension_across_three_processes() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = Redis::start();
    let (primary, backup) = (MockSmtp::start().await, MockSmtp::start().await);
    let http = reqwest::Client::new();
    let limit = "max_rate = \"20/s\"\nrate_wait = \"500ms\"\n";
    let nodes: Vec<Node> =
        ["a", "b", "c"].into_iter().map(|id| start_with(dir.path(), id, &primary, limit, &backup, &redis)).collect();
    for node in &nodes {
        sees_all(&http, node, 3).await;
    }

    // max_rate 20/s, all three loaded: no second holds more than the limit (+1 on the window's
    // edge, +1 for the mock's own timing); the rest goes to the backup; nothing lost or twice.
    let ids = load(&http, &nodes, "rate", 25).await;
    wait_delivered(&http, &nodes, &ids).await;
    let sent = copies([&primary, &backup], "rate");
    assert!(sent.len() == 75 && sent.values().all(|&n| n == 1), "{sent:?}");
    let mut times: Vec<Instant> = primary.messages().iter().map(|m| m.received_at).collect();
    times.sort();
    let busiest =
        times.iter().map(|t| times.iter().filter(|u| **u >= *t && **u < *t + Duration::from_secs(1)).count()).max();
    assert!(busiest.unwrap_or(0) <= 22, "{busiest:?} sends in one second under max_rate 20/s");
    assert!(backup.message_count() > 0, "the load over the limit went to the backup");

    // Redis killed while the three take and deliver mail: nothing lost, nothing twice.
    let first = load(&http, &nodes, "outage", 4);
    let (first, ()) = tokio::join!(first, async { redis.kill() });
    for node in &nodes {
        within(DEADLINE, &format!("{} notices", node.id), || async { !connected(&http, node).await }).await;
    }
    let second = load(&http, &nodes, "outage-late", 4).await;
    wait_delivered(&http, &nodes, &first).await;
    wait_delivered(&http, &nodes, &second).await;
    let sent = copies([&primary, &backup], "outage");
    assert!(sent.len() == 24 && sent.values().all(|&n| n == 1), "{sent:?}");
    redis.restart();
    for node in &nodes {
        within(DEADLINE, &format!("{} back on Redis", node.id), || async { connected(&http, node).await }).await;
    }

    // A suspension learned by a: b and c stay off the provider within a second.
    primary.set_reply(support::mock_smtp::Stage::Mail, Some("535 5.7.8 Authentication credentials invalid".into()));
    let (code, body) = post(&http, &nodes[0], None, &message(&["dave@example.net"], "learns")).await;
    assert_eq!(code, 202, "{body}");
    within(DEADLINE, "a is suspended", || async { state(&http, &nodes[0], "primary").await == "suspended" }).await;
    for node in &nodes[1..] {
        within(Duration::from_secs(1), &format!("{} honours a's suspension", node.id), || async {
            state(&http, node, "primary").await == "suspended"
        })
        .await;
    }
    let mails = primary.commands_seen("MAIL");
    let after = load(&http, &nodes[1..], "suspended", 3).await;
    let after: Vec<(usize, String)> = after.into_iter().map(|(k, id)| (k + 1, id)).collect();
    wait_delivered(&http, &nodes, &after).await;
    assert_eq!(primary.commands_seen("MAIL"), mails, "b and c sent nothing to the suspended provider");
}
