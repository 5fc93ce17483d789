//! HTTP API provider benchmark (not part of the normal test run; asserts nothing about time):
//!
//!     cargo test --release --test bench_http_provider -- --ignored --nocapture
//!
//! Baton delivers through a Mandrill-shaped mock API on 127.0.0.1. Reports (1) end-to-end
//! throughput, HTTP ingest to provider request, with the spool fsync'd, and (2) Baton's added
//! latency, from the client seeing 202 to the provider receiving the request, at a moderate
//! fixed rate.

mod support;

use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::baton::{Baton, KEY, message, smtp_provider};
use support::mock_http::{MockHttp, Recorded, Reply};
use support::mock_smtp::MockSmtp;

/// The Baton message id inside a Mandrill send-raw request.
fn message_id(req: &Recorded) -> Option<String> {
    let raw = req.json()["raw_message"].as_str()?.to_string();
    let start = raw.find("Message-ID: <")? + "Message-ID: <".len();
    Some(raw[start..].split('@').next()?.to_string())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn http_api_provider_throughput_and_added_latency() {
    let arrivals: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mock = MockHttp::start().await;
    let seen = arrivals.clone();
    mock.reply(
        "/messages/send-raw",
        Reply::dynamic(move |req: &Recorded| {
            if let Some(id) = message_id(req) {
                seen.lock().unwrap().insert(id, Instant::now());
            }
            let results: Vec<_> = req.json()["to"]
                .as_array()
                .unwrap()
                .iter()
                .map(|to| json!({"email": to, "status": "sent", "_id": "m1"}))
                .collect();
            Reply::json(200, json!(results))
        }),
    );
    mock.reply("/users/ping2", Reply::json(200, json!({"PING": "PONG!"})));
    let backup = MockSmtp::start().await;
    let body = format!(
        "[providers.mandrill]\ntype = \"mandrill\"\napi_key = \"bench-key\"\nbase_url = \"{}/api/1.0\"\nmax_connections = 32\n{}\n[delivery]\nconcurrency = 64\n\n[[routes]]\nname = \"default\"\nproviders = [\"mandrill\", \"backup\"]\n",
        mock.url(),
        smtp_provider("backup", &backup, "")
    );
    let baton = Arc::new(Baton::start(&body).await);

    // 1. Throughput: 4000 messages from 32 concurrent senders, until the API saw them all.
    let total = 4000;
    let started = Instant::now();
    let mut senders = Vec::new();
    for s in 0..32 {
        let baton = baton.clone();
        senders.push(tokio::spawn(async move {
            for i in 0..total / 32 {
                let (code, _) = baton
                    .post(Some(KEY), None, message(&["alice@example.net"], &format!("t{s}-{i}")).to_string())
                    .await;
                assert_eq!(code, 202);
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    let ingested = started.elapsed();
    mock.wait_for_requests("/messages/send-raw", total, Duration::from_secs(120)).await;
    let delivered = started.elapsed();
    println!(
        "throughput: {total} messages, 32 senders: ingest {:.0} msg/s; delivered to the API {:.0} msg/s end to end ({:.2} s)",
        total as f64 / ingested.as_secs_f64(),
        total as f64 / delivered.as_secs_f64(),
        delivered.as_secs_f64()
    );

    // 2. Added latency at a moderate rate: 200 messages/s for 10 s, one at a time.
    let mut latencies = Vec::new();
    let interval = Duration::from_millis(5);
    let mut acks = Vec::new();
    let t0 = Instant::now();
    for i in 0..2000u32 {
        let due = t0 + interval * i;
        tokio::time::sleep_until(due.into()).await;
        let id = baton.send(message(&["alice@example.net"], &format!("l{i}"))).await;
        acks.push((id, Instant::now()));
    }
    mock.wait_for_requests("/messages/send-raw", total + 2000, Duration::from_secs(60)).await;
    let seen = arrivals.lock().unwrap();
    for (id, ack) in &acks {
        let arrived = seen[id];
        latencies.push(arrived.saturating_duration_since(*ack).as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "added latency (202 seen by the client -> request at the API), 2000 messages at 200/s: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99),
        latencies.last().unwrap()
    );
}
