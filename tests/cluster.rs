//! Cluster mode: three Batons sharing one real Redis and the same scripted providers act as
//! one relay — a drain, a resume, a suspension or a rate limit on one node applies on every
//! node within a second, an open circuit only when a quorum of nodes sees it, one node probes a
//! provider out of rotation, `max_rate` holds for the three together, an idempotency key is
//! one message whichever node it reaches — and none of them waits on Redis to accept or deliver.
//! (`tests/cluster_processes.rs` runs the nodes as separate processes.)

mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::baton::{Baton, DEADLINE, message, smtp_provider, within};
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

/// A node's config: `primary` (with `primary_extra` in its table) then `backup`, and `extra`
/// tables (e.g. `[health]`).
fn config(
    primary: &MockSmtp,
    backup: &MockSmtp,
    redis: &Redis,
    node_id: &str,
    primary_extra: &str,
    extra: &str,
) -> String {
    format!(
        "{}{}\n[retry]\nschedule = [\"1h\"]\n\n[[routes]]\nname = \"default\"\nproviders = [\"primary\", \"backup\"]\n\n\
         [cluster]\nredis_url = \"{}\"\nnode_id = \"{node_id}\"\n{extra}\n",
        smtp_provider("primary", primary, primary_extra),
        smtp_provider("backup", backup, ""),
        redis.url(),
    )
}

/// Three nodes, each connected to Redis and seeing the other two.
async fn cluster() -> Cluster {
    cluster_with("", "").await
}

async fn cluster_with(primary_extra: &str, extra: &str) -> Cluster {
    let redis = Redis::start();
    let (primary, backup) = (MockSmtp::start().await, MockSmtp::start().await);
    let mut nodes = Vec::new();
    for id in ["a", "b", "c"] {
        nodes.push(Baton::start(&config(&primary, &backup, &redis, id, primary_extra, extra)).await);
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
    // Two syncs on every node: each heartbeat (written at a sync) has moved on twice.
    let beats = |view: Value| -> Vec<String> {
        view["nodes"].as_array().unwrap().iter().map(|n| n["last_heartbeat"].as_str().unwrap().to_string()).collect()
    };
    let mut seen = vec![beats(b.cluster().await)];
    let start = Instant::now();
    while !(0..seen[0].len()).all(|i| seen.iter().map(|v| &v[i]).collect::<std::collections::BTreeSet<_>>().len() >= 3)
    {
        assert!(start.elapsed() < DEADLINE, "every node synced twice more: {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = beats(b.cluster().await);
        if seen.last() != Some(&now) {
            seen.push(now);
        }
    }
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

#[tokio::test]
async fn a_rate_limit_is_shared_with_its_retry_after() {
    let c = cluster().await;
    let [a, b, node_c] = [&c.nodes[0], &c.nodes[1], &c.nodes[2]];
    c.primary.set_reply(Stage::Mail, Some("450 4.7.0 rate limit reached, slow down".into()));
    let (by, status) = deliver(a, "meets the rate limit").await;
    assert_eq!((by.as_str(), &status["attempts"][0]["outcome"]), ("backup", &Value::from("rate_limited")));
    all_show(&[b, node_c], "primary", "rate_limited", SHARED_WITHIN).await;
    let fact = &b.cluster().await["health"]["primary"];
    assert!(fact["until"].as_str().is_some_and(|t| t.ends_with('Z')), "the back-off's end is shared: {fact}");
    let mails = c.primary.commands_seen("MAIL");
    let (by, _) = deliver(node_c, "while rate limited").await;
    assert_eq!(by, "backup");
    assert_eq!(c.primary.commands_seen("MAIL"), mails, "c waited out a's back-off");
}

#[tokio::test]
async fn an_open_circuit_is_taken_by_every_node_only_when_a_quorum_of_nodes_has_it_open() {
    let c = cluster_with("[providers.primary.health]\nfailure_threshold = 1\nopen_for = \"1m\"\n", "").await;
    let [a, b, node_c] = [&c.nodes[0], &c.nodes[1], &c.nodes[2]];
    c.primary.set_reply(Stage::Mail, Some("451 4.3.0 try again later".into()));
    assert_eq!(deliver(a, "a's bad path").await.0, "backup");
    assert_eq!(state(a, "primary").await, "open");
    // c hears of a's circuit, and one node is not a quorum (2): c keeps the provider.
    within(DEADLINE, "c lists a's open circuit", || async {
        node_c.cluster().await["circuits"]["primary"] == serde_json::json!(["a"])
    })
    .await;
    assert_eq!(state(node_c, "primary").await, "healthy");
    assert_eq!(state(b, "primary").await, "healthy");

    assert_eq!(deliver(b, "b's bad path too").await.0, "backup");
    within(Duration::from_secs(3), "c takes the circuit open on a and b", || async {
        state(node_c, "primary").await == "open"
    })
    .await;
    let reason = node_c.provider("primary").await["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("circuit open on 2 nodes (a, b)"), "{reason}");
    let mails = c.primary.commands_seen("MAIL");
    let (by, status) = deliver(node_c, "c skips the provider").await;
    assert_eq!((by.as_str(), status["attempts"].as_array().unwrap().len()), ("backup", 1), "{status:#}");
    assert_eq!(c.primary.commands_seen("MAIL"), mails);
    // c's taken circuit is not counted as c's own: a lists a and b (at its next sync), never c.
    within(Duration::from_secs(3), "a lists a's and b's circuits", || async {
        let circuits = a.cluster().await["circuits"]["primary"].clone();
        assert!(!circuits.as_array().unwrap().contains(&Value::from("c")), "{circuits}");
        circuits == serde_json::json!(["a", "b"])
    })
    .await;
}

#[tokio::test]
async fn one_node_probes_a_provider_out_of_rotation() {
    let c = cluster_with("", "[health]\nprobe_interval = \"400ms\"\n").await;
    c.primary.set_reply(Stage::Mail, Some("535 5.7.8 Authentication credentials invalid".into()));
    deliver(&c.nodes[0], "suspends the provider").await;
    let refs: Vec<&Baton> = c.nodes.iter().collect();
    all_show(&refs, "primary", "suspended", DEADLINE).await;
    let probes = || async {
        let mut counts = Vec::new();
        for node in &c.nodes {
            counts.push(Baton::metric(&node.metrics().await, "baton_health_probes_total", &[("provider", "primary")]));
        }
        counts
    };
    let before = probes().await;
    // Suspended, each node's probe is due every 100 ms; the lease holder's alone run.
    let started = Instant::now();
    let grown: Vec<f64> = loop {
        let grown: Vec<f64> = probes().await.iter().zip(&before).map(|(now, then)| now - then).collect();
        if grown.iter().sum::<f64>() >= 8.0 {
            break grown;
        }
        assert!(started.elapsed() < DEADLINE, "not eight probes within {DEADLINE:?}: {grown:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let most = grown.iter().cloned().fold(0.0, f64::max);
    // One probe may have been on its way when the suspension arrived.
    assert!(grown.iter().sum::<f64>() - most <= 1.0, "one node probes: {grown:?}");
}

#[tokio::test]
async fn an_idempotency_key_is_one_message_on_any_node_and_any_node_answers_for_it() {
    let c = cluster().await;
    let [a, b, node_c] = [&c.nodes[0], &c.nodes[1], &c.nodes[2]];
    let body = message(&["alice@example.net"], "once").to_string();
    let (code, first) = a.post(Some(support::baton::KEY), Some("order-17"), body.clone()).await;
    assert_eq!(code, 202, "{first}");
    let (code, again) = b.post(Some(support::baton::KEY), Some("order-17"), body.clone()).await;
    assert_eq!((code, &again["id"]), (202, &first["id"]), "b answers with a's message");
    let other = message(&["bob@example.net"], "another").to_string();
    let (code, conflict) = node_c.post(Some(support::baton::KEY), Some("order-17"), other).await;
    assert_eq!((code, &conflict["error"]["code"]), (422, &Value::from("idempotency_key_reused")), "{conflict}");

    let id = first["id"].as_str().unwrap();
    // b does not hold the message: it asks the nodes, and a answers.
    let status = b.wait_final(id).await;
    assert_eq!(status["status"], "delivered", "{status:#}");
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/messages/{id}", node_c.base))
        .header("authorization", format!("Bearer {}", support::baton::KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["baton-node"], "a");
    assert_eq!(c.primary.message_count(), 1, "one delivery");
    let (code, _) = b.status_as(support::baton::KEY, "01NOSUCHMESSAGE0000000000X").await;
    assert_eq!(code, 404, "no node has it");
}

#[tokio::test]
async fn max_rate_holds_for_the_three_nodes_together_and_the_rest_fails_over() {
    let c = cluster_with("max_rate = \"20/s\"\nrate_wait = \"500ms\"\n", "").await;
    let mut sends = Vec::new();
    for round in 0..30 {
        for (n, node) in c.nodes.iter().enumerate() {
            sends.push(
                async move { (n, node.send(message(&["alice@example.net"], &format!("load {round}.{n}"))).await) },
            );
        }
    }
    let ids = futures::future::join_all(sends).await;
    for (n, id) in &ids {
        let status = c.nodes[*n].wait_final(id).await;
        assert_eq!(status["status"], "delivered", "{status:#}");
    }
    assert_eq!(c.primary.message_count() + c.backup.message_count(), 90, "nothing lost, nothing twice");
    let mut times: Vec<Instant> = c.primary.messages().iter().map(|m| m.received_at).collect();
    times.sort();
    let busiest =
        times.iter().map(|t| times.iter().filter(|u| **u >= *t && **u < *t + Duration::from_secs(1)).count()).max();
    // 20 a second, plus one on the window's edge and one for the mock's own timing.
    assert!(busiest.unwrap_or(0) <= 22, "{busiest:?} sends in one second to a provider with max_rate 20/s");
    assert!(c.backup.message_count() > 0, "the load over the limit went to the backup");
    let mut moved_on = 0.0;
    for node in &c.nodes {
        let m = node.metrics().await;
        moved_on += Baton::metric(&m, "baton_provider_rate_limited_total", &[("provider", "primary")]);
        moved_on -= Baton::metric(&m, "baton_failovers_total", &[("from", "primary"), ("reason", "max_rate")]);
    }
    assert_eq!(moved_on, 0.0, "each message moved on is counted as rate limited and as a failover");
}
