//! End to end: a route `mandrill → ses → smtp`. Mandrill starts answering HTTP 200 `queued` /
//! `account-suspended` mid-stream, SES answers `AccountSuspendedException` later: every message
//! ends up delivered by the next working provider, none twice on a provider that accepted it.

mod support;

use base64::Engine as _;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use support::baton::{Baton, message, smtp_provider};
use support::mock_http::{MockHttp, Reply};
use support::mock_smtp::MockSmtp;

/// Mandrill says `sent` to this many requests, then `queued` / `account-suspended`.
const MANDRILL_GOOD: usize = 8;
/// SES takes this many requests, then answers `AccountSuspendedException`.
const SES_GOOD: usize = 6;
const MANDRILL_KEY: &str = "md-SECRET-key-5e1f";
const SES_SECRET: &str = "e2eSesSecret/K7MDENGbPxRfiCYEXAMPLEKEY";

/// The Baton id in a message's `Message-ID: <id@baton.test>`.
fn baton_id(raw: &str) -> String {
    let start = raw.find("Message-ID: <").expect("Message-ID header") + "Message-ID: <".len();
    let end = raw[start..].find("@baton.test>").expect("Baton's Message-ID") + start;
    raw[start..end].to_string()
}

/// Every request a mock answered, as (Baton id, accepted?).
type Log = Arc<Mutex<Vec<(String, bool)>>>;

fn mandrill_mock_reply(log: Log) -> Reply {
    let calls = AtomicUsize::new(0);
    Reply::dynamic(move |req| {
        let j = req.json();
        assert_eq!(j["key"], MANDRILL_KEY);
        let id = baton_id(j["raw_message"].as_str().unwrap());
        let good = calls.fetch_add(1, Ordering::SeqCst) < MANDRILL_GOOD;
        log.lock().unwrap().push((id.clone(), good));
        let results: Vec<Value> = j["to"]
            .as_array()
            .unwrap()
            .iter()
            .map(|to| {
                if good {
                    json!({"email": to, "status": "sent", "reject_reason": null, "queued_reason": null, "_id": format!("md-{id}")})
                } else {
                    json!({"email": to, "status": "queued", "reject_reason": null, "queued_reason": "account-suspended", "_id": format!("md-{id}")})
                }
            })
            .collect();
        Reply::json(200, Value::Array(results))
    })
}

fn ses_mock_reply(log: Log) -> Reply {
    let calls = AtomicUsize::new(0);
    Reply::dynamic(move |req| {
        let j = req.json();
        let raw =
            base64::engine::general_purpose::STANDARD.decode(j["Content"]["Raw"]["Data"].as_str().unwrap()).unwrap();
        let id = baton_id(&String::from_utf8(raw).unwrap());
        let good = calls.fetch_add(1, Ordering::SeqCst) < SES_GOOD;
        log.lock().unwrap().push((id.clone(), good));
        if good {
            Reply::json(200, json!({"MessageId": format!("ses-{id}")}))
        } else {
            Reply::json(400, json!({"message": "Account suspended."})).with_header(
                "x-amzn-ErrorType",
                "AccountSuspendedException:http://internal.amazon.com/coral/com.amazon.sesv2/",
            )
        }
    })
}

async fn provider_states(baton: &Baton) -> HashMap<String, String> {
    let all: Value =
        baton.http.get(format!("{}/admin/providers", baton.admin)).send().await.unwrap().json().await.unwrap();
    all["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p["state"].as_str().unwrap().to_string()))
        .collect()
}

/// Sends `n` messages at once; returns their ids once every one is final.
async fn wave(baton: &Baton, name: &str, n: usize) -> Vec<(String, Value)> {
    let sends = (0..n).map(|i| baton.send(message(&["alice@example.net"], &format!("{name} {i}"))));
    let ids = futures::future::join_all(sends).await;
    let mut out = Vec::new();
    for id in ids {
        let status = baton.wait_final(&id).await;
        out.push((id, status));
    }
    out
}

#[tokio::test]
async fn mandrill_then_ses_suspended_mid_stream_every_message_delivered_once() {
    let mandrill = MockHttp::start().await;
    let mandrill_log: Log = Arc::default();
    mandrill.reply("/messages/send-raw", mandrill_mock_reply(mandrill_log.clone()));
    // Whether ping works on a suspended account is unverified: here it does, as the worst case
    // (only the account cooldown keeps the provider out).
    mandrill.reply("/users/ping2", Reply::json(200, json!({"PING": "PONG!"})));
    let ses = MockHttp::start().await;
    let ses_log: Log = Arc::default();
    ses.reply("/v2/email/outbound-emails", ses_mock_reply(ses_log.clone()));
    ses.reply(
        "/v2/email/account",
        Reply::json(
            200,
            json!({"SendingEnabled": true, "EnforcementStatus": "HEALTHY", "ProductionAccessEnabled": true}),
        ),
    );
    let smtp = MockSmtp::start().await;
    let body = format!(
        r#"
[providers.mandrill]
type = "mandrill"
api_key = "{MANDRILL_KEY}"
base_url = "{}"
timeout = "2s"

[providers.ses]
type = "ses"
region = "us-east-1"
access_key_id = "AKIDE2ETEST000000001"
secret_access_key = "{SES_SECRET}"
endpoint = "{}"
timeout = "2s"
{}
[retry]
schedule = ["1h"]

[health]
probe_interval = "1h"
account_cooldown = "1h"

[[routes]]
name = "default"
providers = ["mandrill", "ses", "smtp"]
"#,
        mandrill.url(),
        ses.url(),
        smtp_provider("smtp", &smtp, ""),
    );
    let baton = Baton::start(&body).await;

    // Wave A: Mandrill works.
    let a = wave(&baton, "a", MANDRILL_GOOD).await;
    for (_, status) in &a {
        assert_eq!(status["status"], "delivered", "{status:#}");
        assert_eq!(status["recipients"][0]["provider"], "mandrill", "{status:#}");
        assert!(status["recipients"][0]["provider_message_id"].as_str().unwrap().starts_with("md-"));
    }

    // Wave B: Mandrill now queues everything on a suspended account (HTTP 200), SES takes a
    // few, then is suspended too; the SMTP relay takes the rest.
    let b = wave(&baton, "b", 12).await;
    // Wave C: both API providers are out: straight to SMTP, nothing tried on them.
    let mandrill_before_c = mandrill_log.lock().unwrap().len();
    let ses_before_c = ses_log.lock().unwrap().len();
    let c = wave(&baton, "c", 6).await;
    assert_eq!(mandrill_log.lock().unwrap().len(), mandrill_before_c, "suspended mandrill not tried");
    assert_eq!(ses_log.lock().unwrap().len(), ses_before_c, "suspended ses not tried");
    for (_, status) in &c {
        assert_eq!(status["recipients"][0]["provider"], "smtp", "{status:#}");
        assert_eq!(status["attempts"].as_array().unwrap().len(), 1, "{status:#}");
    }

    // Who accepted what: per message, exactly one provider took it, and it is the provider the
    // message status names.
    let mut accepted_by: HashMap<String, Vec<&str>> = HashMap::new();
    let mut tried: HashMap<(String, &str), usize> = HashMap::new();
    for (log, name) in [(&mandrill_log, "mandrill"), (&ses_log, "ses")] {
        for (id, ok) in log.lock().unwrap().iter() {
            *tried.entry((id.clone(), name)).or_default() += 1;
            if *ok {
                accepted_by.entry(id.clone()).or_default().push(name);
            }
        }
    }
    for m in smtp.messages() {
        let id = baton_id(&m.data_str());
        *tried.entry((id.clone(), "smtp")).or_default() += 1;
        accepted_by.entry(id).or_default().push("smtp");
    }
    for ((id, provider), n) in &tried {
        assert_eq!(*n, 1, "message {id} sent {n} times to {provider}");
    }
    let all: Vec<&(String, Value)> = a.iter().chain(&b).chain(&c).collect();
    assert_eq!(all.len(), MANDRILL_GOOD + 12 + 6);
    let mut by_provider: HashMap<String, usize> = HashMap::new();
    for (id, status) in &all {
        assert_eq!(status["status"], "delivered", "{status:#}");
        let provider = status["recipients"][0]["provider"].as_str().unwrap();
        assert_eq!(accepted_by.get(id).map(Vec::as_slice), Some(&[provider][..]), "{id}: {status:#}");
        *by_provider.entry(provider.to_string()).or_default() += 1;
        let attempts = status["attempts"].as_array().unwrap();
        for attempt in attempts {
            match (attempt["provider"].as_str().unwrap(), attempt["outcome"].as_str().unwrap()) {
                ("mandrill", "account") => {
                    // Queued on a suspended account: Mandrill may still send it later.
                    assert_eq!(attempt["possible_duplicate"], true, "{status:#}");
                    assert!(attempt["detail"].as_str().unwrap().contains("account-suspended"), "{status:#}");
                }
                ("ses", "account") => {
                    assert!(attempt["detail"].as_str().unwrap().contains("AccountSuspendedException"), "{status:#}")
                }
                (p, "accepted") => assert_eq!(p, provider, "{status:#}"),
                other => panic!("unexpected attempt {other:?}: {status:#}"),
            }
        }
        assert_eq!(attempts.last().unwrap()["outcome"], "accepted", "{status:#}");
    }
    assert_eq!(by_provider.get("mandrill"), Some(&MANDRILL_GOOD), "{by_provider:?}");
    assert_eq!(by_provider.get("ses"), Some(&SES_GOOD), "{by_provider:?}");
    assert_eq!(by_provider.get("smtp"), Some(&(12 - SES_GOOD + 6)), "{by_provider:?}");
    assert!(mandrill_log.lock().unwrap().iter().any(|(_, ok)| !ok), "mandrill answered queued/suspended");
    assert!(ses_log.lock().unwrap().iter().any(|(_, ok)| !ok), "ses answered AccountSuspendedException");

    let states = provider_states(&baton).await;
    assert_eq!(states["mandrill"], "suspended", "{states:?}");
    assert_eq!(states["ses"], "suspended", "{states:?}");
    assert_eq!(states["smtp"], "healthy", "{states:?}");

    // Nothing secret in what Baton reports.
    for (_, status) in &all {
        let text = status.to_string();
        assert!(!text.contains(MANDRILL_KEY) && !text.contains(SES_SECRET));
    }
}
