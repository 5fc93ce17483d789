//! Durability across crashes and restarts, with the real binary.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::baton::{DEADLINE, KEY, config_text, message, smtp_provider};
use support::mock_smtp::{MockSmtp, Stage};
use support::process::BatonProcess;

fn write_config(dir: &std::path::Path, mock: &MockSmtp, retry: &str) -> std::path::PathBuf {
    let body = format!(
        "{}\n[retry]\nschedule = [{retry}]\n[[routes]]\nname = \"default\"\nproviders = [\"relay\"]\n",
        smtp_provider("relay", mock, "")
    );
    let path = dir.join("baton.toml");
    std::fs::write(&path, config_text(dir, "", &body)).unwrap();
    path
}

async fn post(http: &reqwest::Client, base: &str, subject: &str) -> Result<String, String> {
    let resp = http
        .post(format!("{base}/v1/messages"))
        .bearer_auth(KEY)
        .body(message(&["alice@example.net"], subject).to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let v: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
    if status == 202 { Ok(v["id"].as_str().unwrap().to_string()) } else { Err(format!("{status} {v}")) }
}

async fn wait_delivered(http: &reqwest::Client, base: &str, ids: &[String]) {
    let start = Instant::now();
    for id in ids {
        loop {
            let v: serde_json::Value = http
                .get(format!("{base}/v1/messages/{id}"))
                .bearer_auth(KEY)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["status"] == "delivered" {
                break;
            }
            assert!(start.elapsed() < DEADLINE, "{id} not delivered: {v}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn subjects(mock: &MockSmtp) -> HashMap<String, usize> {
    let mut count = HashMap::new();
    for m in mock.messages() {
        *count.entry(m.header("Subject").unwrap()).or_insert(0) += 1;
    }
    count
}

#[tokio::test]
async fn sigkill_after_202_loses_nothing_and_sends_once() {
    let dir = tempfile::tempdir().unwrap();
    let relay = MockSmtp::start().await;
    relay.set_reply(Stage::Mail, Some("451 4.3.0 provider down".into()));
    let config = write_config(dir.path(), &relay, "\"300ms\"");
    let http = reqwest::Client::new();

    let mut first = BatonProcess::spawn(&config);
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(post(&http, &first.http, &format!("crash {i}")).await.expect("accepted"));
    }
    // Make sure delivery was really attempted (and failed) before the crash.
    relay.wait_for_commands("MAIL", 1, DEADLINE).await;
    first.signal("KILL");
    first.wait_exit(DEADLINE);
    assert_eq!(relay.message_count(), 0);

    relay.reset();
    let second = BatonProcess::spawn(&config);
    relay.wait_for_messages(50, DEADLINE).await;
    wait_delivered(&http, &second.http, &ids).await;
    let counts = subjects(&relay);
    assert_eq!(counts.len(), 50, "every accepted message delivered");
    assert!(counts.values().all(|&n| n == 1), "each exactly once: {counts:?}");
}

#[tokio::test]
async fn sigkill_under_load_loses_no_accepted_message_and_resends_only_what_was_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let relay = MockSmtp::start().await;
    let config = write_config(dir.path(), &relay, "\"300ms\"");
    let http = reqwest::Client::new();
    let mut first = BatonProcess::spawn(&config);
    // Many concurrent senders; the process is killed while they run and deliveries are under way.
    let (kill_tx, mut kill_rx) = tokio::sync::watch::channel(false);
    let mut senders = Vec::new();
    for s in 0..8 {
        let http = http.clone();
        let base = first.http.clone();
        let mut stop = kill_rx.clone();
        senders.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            for i in 0.. {
                if *stop.borrow_and_update() {
                    break;
                }
                match post(&http, &base, &format!("load {s}-{i}")).await {
                    Ok(_) => accepted.push(format!("load {s}-{i}")),
                    Err(_) => break, // the process died mid-request: not acknowledged, not counted
                }
            }
            accepted
        }));
    }
    relay.wait_for_messages(40, DEADLINE).await;
    first.signal("KILL");
    kill_tx.send(true).unwrap();
    first.wait_exit(DEADLINE);
    kill_rx.mark_changed();
    let mut acknowledged = Vec::new();
    for s in senders {
        acknowledged.extend(s.await.unwrap());
    }
    assert!(acknowledged.len() >= 40);

    let _second = BatonProcess::spawn(&config);
    let start = Instant::now();
    loop {
        let counts = subjects(&relay);
        let missing: Vec<&String> = acknowledged.iter().filter(|s| !counts.contains_key(*s)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{} acknowledged messages never delivered, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A restart never re-sends what was recorded as delivered: only a message whose provider
    // answered but whose record was not yet committed at the kill can go out twice, and at most
    // delivery.concurrency (64) passes were under way.
    let counts = subjects(&relay);
    let twice: Vec<(&String, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.len() <= 64, "{} messages sent more than once after the restart: {twice:?}", twice.len());
    assert!(twice.iter().all(|(_, n)| **n == 2), "sent three times or more: {twice:?}");
}

#[tokio::test]
async fn sigterm_stops_cleanly_and_keeps_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let relay = MockSmtp::start().await;
    relay.set_reply(Stage::Mail, Some("451 4.3.0 provider down".into()));
    let config = write_config(dir.path(), &relay, "\"300ms\"");
    let http = reqwest::Client::new();
    let mut first = BatonProcess::spawn(&config);
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(post(&http, &first.http, &format!("term {i}")).await.expect("accepted"));
    }
    first.signal("TERM");
    let status = first.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "exit status {status:?}");
    let log = first.log_lines().join("\n");
    assert!(log.contains("shutdown complete"), "{log}");
    assert!(post(&http, &first.http, "after stop").await.is_err(), "no longer accepting");

    relay.reset();
    let second = BatonProcess::spawn(&config);
    wait_delivered(&http, &second.http, &ids).await;
    let counts = subjects(&relay);
    assert_eq!(counts.len(), 10);
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
}

#[tokio::test]
async fn a_drain_is_on_disk_before_the_admin_api_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, backup) = (MockSmtp::start().await, MockSmtp::start().await);
    let body = format!(
        "{}{}\n[[routes]]\nname = \"default\"\nproviders = [\"relay\", \"backup\"]\n",
        smtp_provider("relay", &relay, ""),
        smtp_provider("backup", &backup, "")
    );
    let config = dir.path().join("baton.toml");
    std::fs::write(&config, config_text(dir.path(), "", &body)).unwrap();
    let http = reqwest::Client::new();
    let mut first = BatonProcess::spawn(&config);
    let drained = http.post(format!("{}/admin/providers/relay/drain", first.admin)).send().await.unwrap();
    assert_eq!(drained.status().as_u16(), 200);
    // No shutdown to save anything: the drain must already be in the spool.
    first.signal("KILL");
    first.wait_exit(Duration::from_secs(20));

    let second = BatonProcess::spawn(&config);
    let providers: serde_json::Value =
        http.get(format!("{}/admin/providers", second.admin)).send().await.unwrap().json().await.unwrap();
    let relay_state = providers["providers"].as_array().unwrap().iter().find(|p| p["name"] == "relay").unwrap();
    assert_eq!(relay_state["state"], "drained", "{providers:#}");
    let id = post(&http, &second.http, "while drained").await.expect("accepted");
    wait_delivered(&http, &second.http, std::slice::from_ref(&id)).await;
    assert_eq!(backup.message_count(), 1);
    assert_eq!(relay.commands_seen("MAIL"), 0, "the drained relay got {id}");
}

/// A second Baton on the same spool is refused at start, saying why (issue 18), and the first
/// one keeps running.
#[tokio::test]
async fn a_second_baton_on_the_same_spool_is_told_another_one_holds_it() {
    let relay = MockSmtp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &relay, "\"300ms\"");
    let first = BatonProcess::spawn(&config);
    let second = match BatonProcess::start_or_exit(&config, DEADLINE) {
        Ok(_) => panic!("a second Baton started on the same spool"),
        Err(exited) => exited,
    };
    assert_eq!(second.status.code(), Some(1), "{:?}", second.log);
    let log = second.log.join("\n");
    assert!(log.contains("another Baton"), "{log}");
    let http = reqwest::Client::new();
    post(&http, &first.http, "still here").await.expect("the first one still takes mail");
}
