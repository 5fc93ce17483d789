//! Failover timing benchmark (not part of the normal test run; it asserts nothing about time):
//!
//!     cargo test --release --test bench_failover -- --ignored --nocapture
//!
//! 1. Suspension: messages flow at a steady rate through the primary; the primary starts
//!    answering "554 5.7.1 account suspended". Reports the added delivery latency of the
//!    messages accepted after the first `account` outcome, and whether any of them still
//!    tried the primary.
//! 2. Switch-back: the suspended primary recovers; reports the time from recovery until the
//!    first message is delivered by the primary again, against the probe interval.

mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::baton::{Baton, message, smtp_provider};
use support::mock_smtp::{MockSmtp, Stage};

fn ms_between(a: &str, b: &str) -> f64 {
    let t = |s: &str| humantime::parse_rfc3339(s).unwrap();
    t(b).duration_since(t(a)).unwrap_or_default().as_secs_f64() * 1000.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Delivery latency (ingest → accepted attempt) of a finished message, and providers tried.
fn latency(status: &Value) -> (f64, Vec<String>) {
    let attempts = status["attempts"].as_array().unwrap();
    let last = attempts.last().unwrap()["at"].as_str().unwrap();
    let tried = attempts.iter().map(|a| a["provider"].as_str().unwrap().to_string()).collect();
    (ms_between(status["created_at"].as_str().unwrap(), last), tried)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn suspension_failover_and_switch_back_timing() {
    let primary = MockSmtp::start().await;
    primary.set_credentials(Some(("baton", "secret-password")));
    let backup = MockSmtp::start().await;
    let probe_interval = Duration::from_secs(2);
    let body = format!(
        "{}{}\n[retry]\nschedule = [\"1h\"]\n[health]\nprobe_interval = \"2s\"\naccount_cooldown = \"1s\"\n[[routes]]\nname = \"default\"\nproviders = [\"primary\", \"backup\"]\n",
        smtp_provider("primary", &primary, "username = \"baton\"\npassword = \"secret-password\""),
        smtp_provider("backup", &backup, "")
    );
    let baton = Baton::start(&body).await;
    let rate = Duration::from_millis(10); // 100 messages/s

    // Phase 1: steady traffic, then suspension.
    let mut before = Vec::new();
    let mut after = Vec::new();
    let mut suspended_at = None;
    for i in 0..1000 {
        let tick = Instant::now();
        if i == 500 {
            primary.set_reply(Stage::EndOfData, Some("554 5.7.1 Your account has been suspended".into()));
            primary.reject_auth(true);
            suspended_at = Some(i);
        }
        let id = baton.send(message(&["alice@example.net"], &format!("m{i}"))).await;
        if suspended_at.is_some() {
            after.push(id)
        } else {
            before.push(id)
        }
        tokio::time::sleep(rate.saturating_sub(tick.elapsed())).await;
    }
    let mut base = Vec::new();
    for id in &before {
        base.push(latency(&baton.wait_final(id).await).0);
    }
    let mut extra = Vec::new();
    let mut tried_primary_after_first_account = 0;
    let mut seen_account = false;
    for id in &after {
        let s = baton.wait_final(id).await;
        let (ms, tried) = latency(&s);
        if seen_account && tried.iter().any(|p| p == "primary") {
            tried_primary_after_first_account += 1;
        }
        if s["attempts"].as_array().unwrap().iter().any(|a| a["outcome"] == "account") {
            seen_account = true;
        }
        extra.push(ms);
    }
    base.sort_by(f64::total_cmp);
    extra.sort_by(f64::total_cmp);
    let median_base = percentile(&base, 0.5);
    println!(
        "suspension: {} messages before (latency p50 {:.1} ms, p99 {:.1} ms)",
        base.len(),
        median_base,
        percentile(&base, 0.99)
    );
    println!(
        "suspension: {} messages after the primary was suspended: latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; extra over the pre-suspension median: p99 {:.1} ms",
        extra.len(),
        percentile(&extra, 0.5),
        percentile(&extra, 0.99),
        extra.last().copied().unwrap_or(f64::NAN),
        percentile(&extra, 0.99) - median_base
    );
    println!(
        "suspension: messages that still tried the primary after the first account outcome was recorded: {tried_primary_after_first_account}"
    );

    // Phase 2: recovery → back on the primary, several trials.
    let mut back_ms = Vec::new();
    for trial in 0..5 {
        // Make sure it is suspended (and the cooldown has passed) before recovering.
        primary.set_reply(Stage::EndOfData, Some("554 5.7.1 Your account has been suspended".into()));
        primary.reject_auth(true);
        let id = baton.send(message(&["alice@example.net"], &format!("suspend {trial}"))).await;
        baton.wait_final(&id).await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let recovered = Instant::now();
        primary.reset();
        primary.set_credentials(Some(("baton", "secret-password")));
        let mut n = 0;
        loop {
            let id = baton.send(message(&["alice@example.net"], &format!("r{trial}-{n}"))).await;
            let s = baton.wait_final(&id).await;
            if s["recipients"][0]["provider"] == "primary" {
                back_ms.push(recovered.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    back_ms.sort_by(f64::total_cmp);
    println!(
        "switch-back: time from recovery to the first message on the primary over {} trials: min {:.0} ms, median {:.0} ms, max {:.0} ms (probe_interval {} ms; probes run at a quarter of it while suspended)",
        back_ms.len(),
        back_ms[0],
        percentile(&back_ms, 0.5),
        back_ms.last().unwrap(),
        probe_interval.as_millis()
    );
}
