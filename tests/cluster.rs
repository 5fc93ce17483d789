//! Cluster mode: three Batons sharing one real Redis and the same scripted providers act as
//! one relay for provider health — a drain, a resume or a suspension on one node applies on
//! every node within a second — and none of them waits on Redis to accept or deliver.

mod support;

use serde_json::Value;
use std::future::Future;
use std::time::{Duration, Instant};
use support::baton::{Baton, DEADLINE, message, smtp_provider};
use support::mock_smtp::{MockSmtp, Stage};
use support::redis::Redis;

/// How soon every node must honour what one node learned (the contract).
const SHARED_WITHIN: Duration = Duration::from_secs(1);

struct Cluster {
    redis: Redis,
    primary: MockSmtp,
    backup: MockSmtp,
    /// Nodes "a", "b" and "c".
    nodes: Vec<Baton>,
}

fn config(primary: &MockSmtp, backup: &MockSmtp, redis: &Redis, node_id: &str) -> String {
    format!(
        "{}{}\n[retry]\nschedule = [\"1h\"]\n\n[[routes]]\nname = \"default\"\nproviders = [\"primary\", \"backup\"]\n\n\
         [cluster]\nredis_url = \"{}\"\nnode_id = \"{node_id}\"\n",
        smtp_provider("primary", primary, ""),
        smtp_provider("backup", backup, ""),
        redis.url(),
    )
}

/// Three nodes, each connected to Redis and seeing the other two.
async fn cluster() -> Cluster {
    let redis = Redis::start();
    let (primary, backup) = (MockSmtp::start().await, MockSmtp::start().await);
    let mut nodes = Vec::new();
    for id in ["a", "b", "c"] {
        nodes.push(Baton::start(&config(&primary, &backup, &redis, id)).await);
    }
    for node in &nodes {
        within(DEADLINE, "every node sees the three nodes", || async {
            let c = node.cluster().await;
            c["connected"] == true && c["nodes"].as_array().is_some_and(|n| n.len() == 3)
        })
        .await;
    }
    Cluster { redis, primary, backup, nodes }
}

/// Polls `check` until it holds; panics naming `what` after `limit`.
async fn within<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn state(node: &Baton, provider: &str) -> String {
    node.provider(provider).await["state"].as_str().unwrap().to_string()
}

/// Waits until each of `nodes` shows `provider` in `want`.
async fn all_show(nodes: &[&Baton], provider: &str, want: &str, limit: Duration) {
    for node in nodes {
        within(limit, &format!("{provider} {want} on {}", node.admin), || async {
            state(node, provider).await == want
        })
        .await;
    }
}

/// Sends one message through `node` and waits until it is delivered; returns the provider.
async fn deliver(node: &Baton, subject: &str) -> (String, Value) {
    let id = node.send(message(&["alice@example.net"], subject)).await;
    let status = node.wait_final(&id).await;
    assert_eq!(status["status"], "delivered", "{status:#}");
    (status["recipients"][0]["provider"].as_str().unwrap().to_string(), status)
}

async fn connected(node: &Baton) -> f64 {
    Baton::metric(&node.metrics().await, "baton_cluster_connected", &[])
}

#[tokio::test]
async fn a_drain_and_a_resume_on_one_node_apply_on_every_node_within_a_second() {
    let c = cluster().await;
    let [a, b, node_c] = [&c.nodes[0], &c.nodes[1], &c.nodes[2]];
    assert_eq!(deliver(b, "before").await.0, "primary");

    a.drain("primary").await;
    all_show(&[b, node_c], "primary", "drained", SHARED_WITHIN).await;
    let mails = c.primary.commands_seen("MAIL");
    for (i, node) in [b, node_c].into_iter().enumerate() {
        let (by, status) = deliver(node, &format!("while drained {i}")).await;
        assert_eq!(by, "backup");
        assert_eq!(status["attempts"].as_array().unwrap().len(), 1, "the primary is not even tried: {status:#}");
    }
    assert_eq!(c.primary.commands_seen("MAIL"), mails, "nothing sent to the drained provider");
    let reason = b.provider("primary").await["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("on node a"), "the reason says where: {reason}");

    b.resume("primary").await;
    all_show(&[a, node_c], "primary", "healthy", SHARED_WITHIN).await;
    assert_eq!(deliver(a, "after the resume").await.0, "primary");
    let m = a.metrics().await;
    assert_eq!(Baton::metric(&m, "baton_cluster_facts_adopted_total", &[("provider", "primary")]), 1.0, "the resume");
    assert_eq!(Baton::metric(&m, "baton_cluster_nodes", &[]), 3.0);
}

#[tokio::test]
async fn a_suspension_learned_by_one_node_keeps_every_node_off_the_provider() {
    let c = cluster().await;
    let [a, b, node_c] = [&c.nodes[0], &c.nodes[1], &c.nodes[2]];
    c.primary.set_reply(Stage::Mail, Some("535 5.7.8 Authentication credentials invalid".into()));
    let (by, status) = deliver(a, "learns the suspension").await;
    assert_eq!((by.as_str(), &status["attempts"][0]["outcome"]), ("backup", &Value::from("account")));
    assert_eq!(state(a, "primary").await, "suspended");

    all_show(&[b, node_c], "primary", "suspended", SHARED_WITHIN).await;
    let cooldown = b.provider("primary").await["next_trial_in_seconds"].as_f64().unwrap();
    assert!(cooldown > 500.0, "a's cooldown (account_cooldown, 10 min) goes on: {cooldown}");
    let mails = c.primary.commands_seen("MAIL");
    for node in [b, node_c] {
        for i in 0..3 {
            let (by, status) = deliver(node, &format!("after the suspension {i}")).await;
            assert_eq!(by, "backup");
            assert_eq!(status["attempts"].as_array().unwrap().len(), 1, "{status:#}");
        }
        let m = node.metrics().await;
        assert_eq!(Baton::metric(&m, "baton_cluster_facts_adopted_total", &[("provider", "primary")]), 1.0);
    }
    assert_eq!(c.primary.commands_seen("MAIL"), mails, "b and c sent nothing to the suspended provider");
    assert_eq!(c.backup.message_count(), 7);
}

#[tokio::test]
async fn without_redis_every_node_keeps_accepting_and_delivering_and_sharing_resumes_when_it_is_back() {
    let mut c = cluster().await;
    c.redis.kill();
    for node in &c.nodes {
        within(DEADLINE, "baton_cluster_connected 0", || async { connected(node).await == 0.0 }).await;
    }
    let mut ids = Vec::new();
    for (n, node) in c.nodes.iter().enumerate() {
        for i in 0..5 {
            ids.push((n, node.send(message(&["alice@example.net"], &format!("redis down {n}.{i}"))).await));
        }
    }
    for (n, id) in &ids {
        let status = c.nodes[*n].wait_final(id).await;
        assert_eq!(status["status"], "delivered", "{status:#}");
    }
    assert_eq!(c.primary.message_count(), 15, "every message delivered once");
    let cluster = c.nodes[0].cluster().await;
    assert_eq!(cluster["connected"], false, "{cluster:#}");

    c.redis.restart();
    for node in &c.nodes {
        within(DEADLINE, "baton_cluster_connected 1 again", || async { connected(node).await == 1.0 }).await;
    }
    let [a, b, node_c] = [&c.nodes[0], &c.nodes[1], &c.nodes[2]];
    node_c.drain("primary").await;
    all_show(&[a, b], "primary", "drained", DEADLINE).await;
    within(DEADLINE, "the registry refilled", || async {
        a.cluster().await["nodes"].as_array().is_some_and(|n| n.len() == 3)
    })
    .await;
}

#[tokio::test]
async fn a_redis_that_stops_answering_delays_no_message_and_sharing_resumes_when_it_answers() {
    let c = cluster().await;
    c.redis.freeze();
    for node in &c.nodes {
        within(DEADLINE, "baton_cluster_connected 0", || async { connected(node).await == 0.0 }).await;
    }
    for (i, node) in c.nodes.iter().enumerate() {
        let start = Instant::now();
        assert_eq!(deliver(node, &format!("redis frozen {i}")).await.0, "primary");
        assert!(start.elapsed() < Duration::from_secs(2), "delivery waited: {:?}", start.elapsed());
    }
    c.redis.thaw();
    for node in &c.nodes {
        within(DEADLINE, "baton_cluster_connected 1 again", || async { connected(node).await == 1.0 }).await;
    }
    c.nodes[1].drain("backup").await;
    all_show(&[&c.nodes[0], &c.nodes[2]], "backup", "drained", DEADLINE).await;
}

#[tokio::test]
async fn admin_cluster_lists_the_nodes_and_the_shared_facts() {
    let c = cluster().await;
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    let view = b.cluster().await;
    assert_eq!(
        (&view["enabled"], &view["node_id"], &view["connected"]),
        (&Value::from(true), &Value::from("b"), &Value::from(true))
    );
    let nodes = view["nodes"].as_array().unwrap();
    let ids: Vec<&str> = nodes.iter().map(|n| n["node_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    for (node, entry) in c.nodes.iter().zip(nodes) {
        assert_eq!(format!("http://{}", entry["http"].as_str().unwrap()), node.base, "{entry}");
        assert_eq!(format!("http://{}", entry["admin"].as_str().unwrap()), node.admin, "{entry}");
        assert!(entry["last_heartbeat"].as_str().is_some_and(|t| t.ends_with('Z')), "{entry}");
    }

    a.drain("backup").await;
    within(SHARED_WITHIN, "b lists a's fact", || async {
        let fact = &b.cluster().await["health"]["backup"];
        fact["node"] == "a" && fact["state"] == "drained"
    })
    .await;
    // No echo: the fact stays a's, and no node publishes it again at its next syncs.
    let published = b.cluster().await["health"]["backup"]["at"].clone();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for node in &c.nodes {
        let fact = &node.cluster().await["health"]["backup"];
        assert_eq!((&fact["node"], &fact["at"]), (&Value::from("a"), &published), "{fact}");
    }
    let alone = Baton::start(&format!(
        "{}\n[[routes]]\nname = \"default\"\nproviders = [\"primary\"]\n",
        smtp_provider("primary", &c.primary, "")
    ))
    .await;
    assert_eq!(alone.cluster().await, serde_json::json!({"enabled": false}));
    assert!(!alone.metrics().await.contains("baton_cluster_"), "no cluster metrics without [cluster]");
}
