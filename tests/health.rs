//! Provider health: the engine remembers failures across messages, probes, and switches back.

mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::baton::{Baton, DEADLINE, message, smtp_provider};
use support::mock_smtp::{MockSmtp, Stage};

fn config(primary: &MockSmtp, primary_extra: &str, backup: &MockSmtp, health: &str, route_extra: &str) -> String {
    format!(
        "{}{}\n[retry]\nschedule = [\"1h\"]\n\n[health]\n{health}\n\n[[routes]]\nname = \"default\"\nproviders = [\"primary\", \"backup\"]\n{route_extra}\n",
        smtp_provider("primary", primary, primary_extra),
        smtp_provider("backup", backup, ""),
    )
}

async fn provider_state(baton: &Baton, name: &str) -> String {
    let all = baton.providers().await;
    let p = all["providers"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap().clone();
    p["state"].as_str().unwrap().to_string()
}

async fn wait_state(baton: &Baton, name: &str, want: &str) {
    let start = Instant::now();
    loop {
        let state = provider_state(baton, name).await;
        if state == want {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "{name} never became {want}; it is {state}: {:#}", baton.providers().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends one message and waits until it is finished; returns the provider that delivered it.
async fn deliver_one(baton: &Baton, subject: &str) -> (String, Value) {
    let id = baton.send(message(&["alice@example.net"], subject)).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["status"], "delivered", "{status:#}");
    (status["recipients"][0]["provider"].as_str().unwrap().to_string(), status)
}

#[tokio::test]
async fn suspended_primary_is_skipped_then_traffic_returns_after_a_probe() {
    let primary = MockSmtp::start().await;
    primary.set_credentials(Some(("baton", "secret-password")));
    let backup = MockSmtp::start().await;
    let body = config(
        &primary,
        "username = \"baton\"\npassword = \"secret-password\"",
        &backup,
        "probe_interval = \"200ms\"\naccount_cooldown = \"1s\"",
        "",
    );
    let baton = Baton::start(&body).await;
    assert_eq!(deliver_one(&baton, "before").await.0, "primary");

    // The account is suspended: sends end in 554, and new logins fail too.
    primary.set_reply(Stage::EndOfData, Some("554 5.7.1 Your account has been suspended".into()));
    primary.reject_auth(true);
    let (by, status) = deliver_one(&baton, "first after suspension").await;
    assert_eq!(by, "backup");
    // The send meets the suspension, unless a probe (every 200 ms, and logins now fail) met it
    // first: then the primary was skipped and the backup's attempt is the only one.
    let attempts = status["attempts"].as_array().unwrap();
    let probe_first = attempts.len() == 1;
    match probe_first {
        false => assert_eq!(attempts[0]["outcome"], "account", "{status:#}"),
        true => assert_eq!(attempts[0]["provider"], "backup", "{status:#}"),
    }
    assert_eq!(provider_state(&baton, "primary").await, "suspended");
    let mails_at_suspension = primary.commands_seen("MAIL");
    for i in 0..5 {
        let (by, status) = deliver_one(&baton, &format!("while suspended {i}")).await;
        assert_eq!(by, "backup");
        assert_eq!(status["attempts"].as_array().unwrap().len(), 1, "primary not even tried: {status:#}");
    }
    assert_eq!(primary.commands_seen("MAIL"), mails_at_suspension, "no message was tried on the primary");

    // The account is reinstated: after the cooldown, a probe passes and traffic comes back.
    primary.reset();
    primary.set_credentials(Some(("baton", "secret-password")));
    wait_state(&baton, "primary", "healthy").await;
    assert_eq!(deliver_one(&baton, "after recovery").await.0, "primary");
    let m = baton.metrics().await;
    assert_eq!(
        Baton::metric(&m, "baton_provider_state_changes_total", &[("provider", "primary"), ("to", "suspended")]),
        1.0
    );
    assert_eq!(Baton::metric(&m, "baton_provider_state", &[("provider", "primary"), ("state", "healthy")]), 1.0);
    assert!(Baton::metric(&m, "baton_health_probes_total", &[("provider", "primary"), ("result", "failed")]) >= 1.0);
    assert!(Baton::metric(&m, "baton_health_probes_total", &[("provider", "primary"), ("result", "ok")]) >= 1.0);
    assert_eq!(
        Baton::metric(&m, "baton_failovers_total", &[("from", "primary"), ("to", "backup"), ("reason", "suspended")]),
        if probe_first { 6.0 } else { 5.0 },
        "the five sent while suspended skipped the primary (and the first, when a probe met the suspension first)"
    );
}

#[tokio::test]
async fn flapping_primary_opens_the_circuit_with_growing_cooldown() {
    let primary = MockSmtp::start().await;
    primary.set_reply(Stage::Mail, Some("451 4.3.0 Temporary local problem".into()));
    let backup = MockSmtp::start().await;
    let body = config(
        &primary,
        "",
        &backup,
        "failure_threshold = 3\nopen_for = \"500ms\"\nmax_open_for = \"10s\"\nprobe_interval = \"1h\"",
        "",
    );
    let baton = Baton::start(&body).await;
    for i in 0..3 {
        assert_eq!(deliver_one(&baton, &format!("flap {i}")).await.0, "backup");
    }
    assert_eq!(primary.commands_seen("MAIL"), 3);
    assert_eq!(provider_state(&baton, "primary").await, "open");
    // Open: skipped without waiting.
    let (_, status) = deliver_one(&baton, "skipped").await;
    assert_eq!(status["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(primary.commands_seen("MAIL"), 3);
    // After the cooldown one half-open trial goes to the primary; it fails, the cooldown doubles.
    let start = Instant::now();
    loop {
        deliver_one(&baton, "probe the circuit").await;
        if primary.commands_seen("MAIL") == 4 {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "no half-open trial");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all = baton.providers().await;
    let p = &all["providers"].as_array().unwrap().iter().find(|p| p["name"] == "primary").unwrap().clone();
    assert_eq!(p["state"], "open");
    let next = p["next_trial_in_seconds"].as_f64().unwrap();
    assert!(next > 0.6 && next <= 1.0, "cooldown doubled to 1s: {p}");
    // The primary recovers: the next trial succeeds and closes the circuit.
    primary.reset();
    let start = Instant::now();
    loop {
        let (by, _) = deliver_one(&baton, "recovering").await;
        if by == "primary" {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "primary never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(provider_state(&baton, "primary").await, "healthy");
}

#[tokio::test]
async fn recipient_rejections_do_not_affect_health() {
    let primary = MockSmtp::start().await;
    primary.reject_recipient("gone@example.net", "550 5.1.1 <gone@example.net>: User unknown");
    let backup = MockSmtp::start().await;
    let baton = Baton::start(&config(&primary, "", &backup, "failure_threshold = 2", "")).await;
    for i in 0..20 {
        let id = baton.send(message(&["gone@example.net"], &format!("bounce {i}"))).await;
        assert_eq!(baton.wait_final(&id).await["status"], "failed");
    }
    assert_eq!(provider_state(&baton, "primary").await, "healthy");
    assert_eq!(backup.commands_seen("MAIL"), 0);
    let m = baton.metrics().await;
    assert_eq!(Baton::metric(&m, "baton_provider_state_changes_total", &[]), 0.0);
}

#[tokio::test]
async fn rate_limited_primary_is_skipped_until_its_back_off_ends() {
    let primary = MockSmtp::start().await;
    primary.set_reply(Stage::Mail, Some("454 4.7.0 Throttling failure: Maximum sending rate exceeded".into()));
    let backup = MockSmtp::start().await;
    let baton = Baton::start(&config(&primary, "", &backup, "open_for = \"1s\"\nprobe_interval = \"1h\"", "")).await;
    assert_eq!(deliver_one(&baton, "throttled").await.0, "backup");
    assert_eq!(provider_state(&baton, "primary").await, "rate_limited");
    for i in 0..3 {
        assert_eq!(deliver_one(&baton, &format!("meanwhile {i}")).await.0, "backup");
    }
    assert_eq!(primary.commands_seen("MAIL"), 1, "not tried during the back-off");
    primary.reset();
    let start = Instant::now();
    while deliver_one(&baton, "later").await.0 != "primary" {
        assert!(start.elapsed() < DEADLINE, "primary never used again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(provider_state(&baton, "primary").await, "healthy");
}

#[tokio::test]
async fn hanging_primary_stops_costing_the_timeout_once_open() {
    let primary = MockSmtp::start().await;
    primary.set_hang(Some(Stage::Greeting));
    let backup = MockSmtp::start().await;
    let baton = Baton::start(&config(
        &primary,
        "timeout = \"1s\"",
        &backup,
        "failure_threshold = 3\nprobe_interval = \"1h\"\nopen_for = \"1h\"",
        "",
    ))
    .await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(baton.send(message(&["alice@example.net"], &format!("hang {i}"))).await);
    }
    for id in &ids {
        let s = baton.wait_final(id).await;
        assert_eq!(s["recipients"][0]["provider"], "backup");
        assert!(s["attempts"][0]["duration_ms"].as_u64().unwrap() >= 900, "waited for the timeout: {s:#}");
    }
    wait_state(&baton, "primary", "open").await;
    let (by, status) = deliver_one(&baton, "after open").await;
    assert_eq!(by, "backup");
    let attempts = status["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "the hanging primary is not tried: {status:#}");
}

#[tokio::test]
async fn all_providers_down_keeps_messages_until_one_recovers() {
    let primary = MockSmtp::start().await;
    let backup = MockSmtp::start().await;
    for m in [&primary, &backup] {
        m.set_reply(Stage::Mail, Some("451 4.3.0 down".into()));
    }
    let baton = Baton::start(&config(
        &primary,
        "",
        &backup,
        "failure_threshold = 1\nopen_for = \"300ms\"\nmax_open_for = \"600ms\"\nprobe_interval = \"1h\"",
        "",
    ))
    .await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(baton.send(message(&["alice@example.net"], &format!("down {i}"))).await);
    }
    wait_state(&baton, "primary", "open").await;
    wait_state(&baton, "backup", "open").await;
    for id in &ids {
        let s = baton.status(id).await;
        assert_eq!(s["recipients"][0]["status"], "pending", "nothing expires early: {s:#}");
    }
    // The retry schedule is 1h, but the messages go out as soon as a provider is back.
    backup.reset();
    for id in &ids {
        let s = baton.wait_final(id).await;
        assert_eq!(s["status"], "delivered");
        assert_eq!(s["recipients"][0]["provider"], "backup");
    }
    assert_eq!(backup.message_count(), 5);
}

#[tokio::test]
async fn drain_and_resume_through_the_admin_api() {
    let primary = MockSmtp::start().await;
    let backup = MockSmtp::start().await;
    // admin_token lives in [server], which the harness writes: build this config by hand.
    let dir = tempfile::tempdir().unwrap();
    let text = support::baton::config_text(dir.path(), "", &config(&primary, "", &backup, "", ""))
        .replace("shutdown_grace = \"5s\"", "shutdown_grace = \"5s\"\nadmin_token = \"admin-token-0123456789\"");
    let loaded = baton::config::load_str(&text, "t.toml", &|_| None).unwrap();
    let running = baton::app::start(loaded).await.unwrap();
    let admin = format!("http://{}", running.admin_addr);
    let http = reqwest::Client::new();
    let unauth = http.post(format!("{admin}/admin/providers/primary/drain")).send().await.unwrap();
    assert_eq!(unauth.status().as_u16(), 401);
    let r = http
        .post(format!("{admin}/admin/providers/primary/drain"))
        .bearer_auth("admin-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["state"], "drained");
    let r = http
        .post(format!("{admin}/admin/providers/nope/drain"))
        .bearer_auth("admin-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    let send = |subject: String| {
        let http = http.clone();
        let base = format!("http://{}", running.http_addr);
        async move {
            let v: Value = http
                .post(format!("{base}/v1/messages"))
                .bearer_auth(support::baton::KEY)
                .json(&message(&["alice@example.net"], &subject))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["id"].as_str().unwrap().to_string()
        }
    };
    send("while drained".into()).await;
    backup.wait_for_messages(1, DEADLINE).await;
    assert_eq!(primary.commands_seen("MAIL"), 0);
    let r = http
        .post(format!("{admin}/admin/providers/primary/resume"))
        .bearer_auth("admin-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["state"], "healthy");
    send("after resume".into()).await;
    let got = primary.wait_for_messages(1, DEADLINE).await;
    assert_eq!(got[0].header("Subject").as_deref(), Some("after resume"));
    let list: Value = http
        .get(format!("{admin}/admin/providers"))
        .bearer_auth("admin-token-0123456789")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = list["providers"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["backup", "primary"]);
    running.stop().await;
}

#[tokio::test]
async fn warm_standby_share_goes_to_the_second_provider() {
    let primary = MockSmtp::start().await;
    let backup = MockSmtp::start().await;
    let baton = Baton::start(&config(&primary, "", &backup, "", "warm_standby = 0.1")).await;
    let mut ids = Vec::new();
    for i in 0..200 {
        ids.push(baton.send(message(&["alice@example.net"], &format!("share {i}"))).await);
    }
    for id in &ids {
        baton.wait_final(id).await;
    }
    // The share is spread deterministically (every tenth message), so the count is exact.
    assert_eq!(backup.message_count(), 20);
    assert_eq!(primary.message_count(), 180);
}
