//! The Mandrill adapter against a local server that answers like Mandrill's API: what Baton
//! sends (send-raw, key in the body, MIME byte-exact), how each documented answer is classified
//! (per-recipient results, 200 "queued" on a suspended account, error names), failover to the
//! backup, the provider message id, probes, and that the key never leaks.

mod provider_common;
mod support;

use provider_common::*;
use serde_json::{Value, json};
use support::baton::{Baton, DEADLINE, KEY, message};
use support::mock_http::{MockHttp, Recorded, Reply};
use support::mock_smtp::{MockSmtp, Stage};

const SECRET: &str = "md-SECRET-key-5f1e2d3c4b5a69788796";
const SEND: &str = "/messages/send-raw";
const PING: &str = "/users/ping2";

fn table(extra: &str) -> String {
    format!("api_key = \"{SECRET}\"\ntimeout = \"2s\"\n{extra}")
}

async fn setup(health: &str) -> (MockHttp, MockSmtp, Baton) {
    let mock = MockHttp::start().await;
    mock.reply(PING, Reply::json(200, json!({"PING": "PONG!"})));
    let backup = MockSmtp::start().await;
    let base = format!("{}/api/1.0/", mock.url());
    let baton = Baton::start(&config("mandrill", &base, &table(""), &backup, health)).await;
    (mock, backup, baton)
}

/// One result per recipient of the request, all with `status` (plus `extra` fields).
fn results(status: &'static str, extra: Value) -> Reply {
    Reply::dynamic(move |req: &Recorded| {
        let list: Vec<Value> = req.json()["to"]
            .as_array()
            .unwrap()
            .iter()
            .map(|email| {
                let mut r = json!({"email": email, "status": status, "_id": format!("md-{}", email.as_str().unwrap())});
                for (k, v) in extra.as_object().unwrap() {
                    r[k] = v.clone();
                }
                r
            })
            .collect();
        Reply::json(200, Value::Array(list))
    })
}

fn error(status: u16, name: &str) -> Reply {
    Reply::json(status, json!({"status": "error", "code": -1, "name": name, "message": format!("{name} happened")}))
}

#[tokio::test]
async fn sends_the_spooled_mime_byte_exact_with_the_key_in_the_body() {
    let (mock, backup, baton) = setup("").await;
    mock.reply(SEND, results("sent", json!({"reject_reason": null})));
    let id = send_raw(&baton, &["alice@example.net", "bob@example.net"], &["audit@example.com"], RAW_UTF8).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["status"], "delivered", "{status:#}");
    let reqs = mock.requests_to(SEND);
    assert_eq!(reqs.len(), 1);
    let req = &reqs[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/api/1.0/messages/send-raw", "base_url path kept, trailing slash trimmed");
    assert!(req.header("content-type").unwrap().starts_with("application/json"));
    assert_eq!(req.header("authorization"), None, "Mandrill takes the key in the body");
    let body = req.json();
    assert_eq!(body["key"], SECRET);
    assert_eq!(body["raw_message"].as_str().unwrap().as_bytes(), RAW_UTF8, "raw MIME byte-exact");
    assert_eq!(body["from_email"], "app@example.com");
    assert_eq!(body["to"], json!(["alice@example.net", "bob@example.net", "audit@example.com"]));
    assert_eq!(body["async"], false);
    for email in ["alice@example.net", "bob@example.net", "audit@example.com"] {
        let r = recipient(&status, email);
        assert_eq!(r["provider"], API);
        assert_eq!(r["provider_message_id"], format!("md-{email}"), "Mandrill _id kept");
    }
    assert_eq!(backup.message_count(), 0);
    assert_secret_absent(&baton, &id, SECRET).await;
}

#[tokio::test]
async fn a_built_message_goes_out_as_spooled() {
    let (mock, backup, baton) = setup("").await;
    // Both providers fail, so the message stays spooled and its body can be compared.
    mock.reply(SEND, error(500, "GeneralError"));
    backup.set_reply(Stage::Mail, Some("451 4.3.0 Try later".into()));
    let msg = json!({"from": "App <app@example.com>", "to": ["alice@example.net"], "subject": "Grüße",
        "text": "plain ✓", "html": "<p>html ✓</p>",
        "attachments": [{"filename": "a.bin", "content_type": "application/octet-stream", "content_base64": "AAEC/w=="}]});
    let id = baton.send(msg).await;
    let reqs = mock.wait_for_requests(SEND, 1, DEADLINE).await;
    baton.wait_status(&id, "both providers tried", |s| s["attempts"].as_array().is_some_and(|a| a.len() >= 2)).await;
    let spooled = spooled_body(&baton, &id);
    assert_eq!(reqs[0].json()["raw_message"].as_str().unwrap().as_bytes(), spooled.as_slice());
}

#[tokio::test]
async fn every_documented_answer_is_classified() {
    let (mock, backup, baton) = setup("").await;
    let id = "md-alice@example.net";
    let mut cases = vec![
        Case::new("sent", results("sent", json!({})), "accepted", End::Api(id)),
        Case::new("scheduled", results("scheduled", json!({})), "accepted", End::Api(id)),
        Case::new("queued (async)", results("queued", json!({})), "accepted", End::Api(id)),
        Case::new(
            "queued attachments",
            results("queued", json!({"queued_reason": "attachments"})),
            "accepted",
            End::Api(id),
        ),
        Case::new(
            "queued multiple-recipients",
            results("queued", json!({"queued_reason": "multiple-recipients"})),
            "accepted",
            End::Api(id),
        ),
        Case::new("invalid", results("invalid", json!({})), "recipient_rejected", End::Rejected("invalid")),
    ];
    for reason in ["hard-bounce", "soft-bounce", "spam", "unsub", "custom", "invalid", "rule"] {
        cases.push(Case::new(
            reason,
            results("rejected", json!({"reject_reason": reason})),
            "recipient_rejected",
            End::Rejected(reason),
        ));
    }
    for (reason, outcome) in
        [("invalid-sender", "account"), ("unsigned", "sender_unverified"), ("test-mode-limit", "account")]
    {
        cases.push(
            Case::new(reason, results("rejected", json!({"reject_reason": reason})), outcome, End::Backup)
                .detail(reason),
        );
    }
    for reason in [
        "account-suspended",
        "sending-suspended",
        "sending-paused",
        "free-trial-sends-exhausted",
        "monthly-limit-reached",
        "hourly-quota-exhausted",
        "sending-backlogged",
    ] {
        cases.push(
            Case::new(reason, results("queued", json!({"queued_reason": reason})), "account", End::Backup)
                .detail(reason)
                .duplicate(),
        );
    }
    cases.extend([
        Case::new("Invalid_Key", error(500, "Invalid_Key"), "account", End::Backup).detail("Invalid_Key"),
        Case::new("Invalid_Key 401", error(401, "Invalid_Key"), "account", End::Backup).detail("Invalid_Key"),
        Case::new("PaymentRequired", error(402, "PaymentRequired"), "account", End::Backup).detail("PaymentRequired"),
        Case::new("Unknown_Subaccount", error(500, "Unknown_Subaccount"), "account", End::Backup),
        Case::new("ValidationError", error(500, "ValidationError"), "bad_request", End::Backup)
            .detail("ValidationError"),
        Case::new("GeneralError", error(500, "GeneralError"), "transient", End::Backup),
        Case::new("ServiceUnavailable", error(503, "ServiceUnavailable"), "transient", End::Backup),
        Case::new(
            "RequestLimitExceeded",
            error(500, "RequestLimitExceeded").with_header("retry-after", "120"),
            "rate_limited",
            End::Backup,
        )
        .next_trial(100.0, 120.0),
        Case::new(
            "plain 429",
            Reply::text(429, "slow down").with_header("retry-after", "90"),
            "rate_limited",
            End::Backup,
        )
        .next_trial(70.0, 90.0),
        Case::new("unknown error name on 500", error(500, "Brand_New_Error"), "transient", End::Backup),
        Case::new("unknown error name on 401", error(401, "Brand_New_Error"), "account", End::Backup),
        Case::new("HTML 502", Reply::text(502, "<html><body>Bad Gateway</body></html>"), "transient", End::Backup)
            .detail("Bad Gateway"),
        Case::new("malformed 200", Reply::text(200, "[{\"email\":"), "transient", End::Backup).duplicate(),
        Case::new("empty 200", Reply::json(200, json!([])), "transient", End::Backup).duplicate(),
        Case::new("HTML 200", Reply::text(200, "<html>maintenance</html>"), "transient", End::Backup).duplicate(),
        Case::new("timeout", Reply::Hang, "transient", End::Backup).detail("timed out").duplicate(),
    ]);
    run_cases(&baton, &mock, &backup, SEND, cases).await;
}

#[tokio::test]
async fn mixed_results_are_kept_per_recipient() {
    let (mock, backup, baton) = setup("").await;
    mock.reply(
        SEND,
        Reply::json(
            200,
            json!([
                {"email": "alice@example.net", "status": "sent", "_id": "id-alice"},
                {"email": "bob@example.net", "status": "rejected", "reject_reason": "hard-bounce", "_id": "id-bob"},
                {"email": "carol@example.net", "status": "queued", "queued_reason": "account-suspended", "_id": "id-carol"},
            ]),
        ),
    );
    let id = baton.send(message(&["alice@example.net", "bob@example.net", "carol@example.net"], "mixed")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["status"], "partially_delivered", "{status:#}");
    let alice = recipient(&status, "alice@example.net");
    assert_eq!((alice["status"].as_str(), alice["provider"].as_str()), (Some("delivered"), Some(API)));
    assert_eq!(alice["provider_message_id"], "id-alice");
    let bob = recipient(&status, "bob@example.net");
    assert_eq!(bob["status"], "rejected");
    assert!(bob["detail"].as_str().unwrap().contains("hard-bounce"), "{bob}");
    let carol = recipient(&status, "carol@example.net");
    assert_eq!((carol["status"].as_str(), carol["provider"].as_str()), (Some("delivered"), Some("backup")));
    assert_eq!(status["attempts"][0]["outcome"], "account");
    assert_eq!(status["attempts"][0]["possible_duplicate"], true);
    let got = backup.wait_for_messages(1, DEADLINE).await;
    assert_eq!(got[0].rcpts, vec!["carol@example.net"], "only the suspended recipient fails over");
    assert_eq!(baton.provider(API).await["state"], "suspended");
}

#[tokio::test]
async fn suspension_mid_stream_fails_over_without_sending_twice() {
    let (mock, backup, baton) = setup("").await;
    mock.reply(SEND, results("sent", json!({})));
    for i in 0..3 {
        let id = baton.send(message(&["alice@example.net"], &format!("before {i}"))).await;
        let status = baton.wait_final(&id).await;
        assert_eq!(status["recipients"][0]["provider"], API, "{status:#}");
    }
    // Mandrill suspends the account: HTTP 200, status queued, queued_reason account-suspended.
    mock.reply(SEND, results("queued", json!({"queued_reason": "account-suspended"})));
    let id = baton.send(message(&["alice@example.net"], "first after suspension")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["recipients"][0]["provider"], "backup", "{status:#}");
    assert_eq!(status["attempts"][0]["outcome"], "account");
    assert_eq!(status["attempts"][0]["possible_duplicate"], true);
    let p = baton.provider(API).await;
    assert_eq!(p["state"], "suspended");
    assert!(p["reason"].as_str().unwrap().contains("account-suspended"), "{p:#}");
    let sends_at_suspension = mock.requests_to(SEND).len();
    for i in 0..3 {
        let id = baton.send(message(&["alice@example.net"], &format!("after {i}"))).await;
        let status = baton.wait_final(&id).await;
        assert_eq!(status["recipients"][0]["provider"], "backup");
        assert_eq!(status["attempts"].as_array().unwrap().len(), 1, "Mandrill not even tried: {status:#}");
    }
    assert_eq!(mock.requests_to(SEND).len(), sends_at_suspension, "no request to a suspended Mandrill");
    // Each message went out once on each provider at most.
    let got = backup.wait_for_messages(4, DEADLINE).await;
    let mut subjects: Vec<String> = got.iter().map(|m| m.header("Subject").unwrap()).collect();
    subjects.sort();
    assert_eq!(subjects, vec!["after 0", "after 1", "after 2", "first after suspension"]);
    let mandrill_subjects: Vec<String> = mock
        .requests_to(SEND)
        .iter()
        .map(|r| {
            let raw = r.json()["raw_message"].as_str().unwrap().to_string();
            raw.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap().trim().to_string()
        })
        .collect();
    assert_eq!(mandrill_subjects, vec!["before 0", "before 1", "before 2", "first after suspension"]);
}

#[tokio::test]
async fn non_utf8_mime_goes_to_the_backup_as_bad_request() {
    let (mock, backup, baton) = setup("").await;
    mock.reply(SEND, results("sent", json!({})));
    let raw = b"From: app@example.com\r\nTo: alice@example.net\r\nSubject: latin1\r\nMessage-ID: <l1@example.com>\r\nDate: Wed, 2 Dec 2026 10:00:00 +0000\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\nH\xe4llo\r\n";
    let id = send_raw(&baton, &["alice@example.net"], &[], raw).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["recipients"][0]["provider"], "backup", "{status:#}");
    assert_eq!(status["attempts"][0]["outcome"], "bad_request");
    assert!(status["attempts"][0]["detail"].as_str().unwrap().contains("UTF-8"));
    assert_eq!(mock.requests_to(SEND).len(), 0);
    // (The SMTP leg may add a final CRLF of its own; the content up to there is intact.)
    assert!(backup.wait_for_messages(1, DEADLINE).await[0].data.starts_with(raw));
}

#[tokio::test]
async fn the_key_never_leaks_even_when_echoed() {
    let (mock, _backup, baton) = setup("probe_interval = \"200ms\"").await;
    // A proxy that echoes the whole request (key included) in its error.
    mock.reply(
        SEND,
        Reply::dynamic(|req: &Recorded| {
            Reply::json(
                500,
                json!({"status": "error", "code": -2, "name": "ValidationError", "message": format!("bad request: {}", req.text())}),
            )
        }),
    );
    let id = baton.send(message(&["alice@example.net"], "echo")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["attempts"][0]["outcome"], "bad_request", "{status:#}");
    let detail = status["attempts"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("[redacted]"), "{detail}");
    assert!(detail.chars().count() <= 301, "details are truncated: {}", detail.len());
    // Then the probe's answer echoes the key too (scripted only now, so that the probe cannot
    // suspend the provider before the message above was sent).
    mock.reply(
        PING,
        Reply::dynamic(|req: &Recorded| {
            Reply::json(500, json!({"status": "error", "code": -1, "name": "Invalid_Key", "message": req.text()}))
        }),
    );
    baton.wait_provider(API, "a failed probe", |p| p["last_probe"]["ok"] == false).await;
    assert_secret_absent(&baton, &id, SECRET).await;
    // The client's own API key is not the provider's, but it must not show up either.
    assert!(!baton.status(&id).await.to_string().contains(KEY));
}

#[tokio::test]
async fn probes_ping_and_an_invalid_key_suspends_the_provider() {
    let (mock, backup, baton) = setup("probe_interval = \"200ms\"").await;
    let pings = mock.wait_for_requests(PING, 2, DEADLINE).await;
    assert_eq!(pings[0].method, "POST");
    assert_eq!(pings[0].path, "/api/1.0/users/ping2");
    assert_eq!(pings[0].json(), json!({"key": SECRET}));
    let p = baton.wait_provider(API, "a passing probe", |p| p["last_probe"]["ok"] == true).await;
    assert_eq!(p["state"], "healthy");

    mock.reply(
        PING,
        Reply::json(500, json!({"status": "error", "code": -1, "name": "Invalid_Key", "message": "Invalid API key"})),
    );
    let p = baton.wait_provider(API, "a failed probe", |p| p["last_probe"]["ok"] == false).await;
    assert!(p["last_probe"]["detail"].as_str().unwrap().contains("Invalid_Key"), "{p:#}");
    let p = baton.wait_provider(API, "suspended", |p| p["state"] == "suspended").await;
    assert!(p["reason"].as_str().unwrap().contains("Invalid_Key"), "{p:#}");
    assert!(!p.to_string().contains(SECRET));
    // Out of rotation: mail goes to the backup without a send request to Mandrill.
    let id = baton.send(message(&["alice@example.net"], "while suspended")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["recipients"][0]["provider"], "backup");
    assert_eq!(mock.requests_to(SEND).len(), 0);
    backup.wait_for_messages(1, DEADLINE).await;
}
