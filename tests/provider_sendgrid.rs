//! The SendGrid adapter against a local server that answers like SendGrid v3: the JSON body
//! Baton builds from the MIME (personalizations from the envelope, content, attachments and
//! inline parts, headers), Bearer auth, the 1000-recipient split, the classification of every
//! documented answer with failover to the backup, X-Message-Id, the scopes probe (usable,
//! failed, inconclusive), the sandbox-mode trial, and that the key never leaks.

mod provider_common;
mod support;

use base64::Engine as _;
use provider_common::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use support::baton::{Baton, DEADLINE, message};
use support::mock_http::{MockHttp, Recorded, Reply};
use support::mock_smtp::MockSmtp;

const SECRET: &str = "SG.SECRET-key.0a1b2c3d4e5f60718293";
const SEND: &str = "/v3/mail/send";
const SCOPES: &str = "/v3/scopes";

fn table() -> String {
    format!("api_key = \"{SECRET}\"\ntimeout = \"2s\"\n")
}

fn accepted(id: &str) -> Reply {
    Reply::Static { status: 202, headers: vec![("x-message-id".into(), id.into())], body: String::new() }
}

fn sendgrid_error(status: u16, message: &str) -> Reply {
    Reply::json(status, json!({"errors": [{"message": message, "field": null, "help": null}]}))
}

async fn setup_with(server: &str, health: &str) -> (MockHttp, MockSmtp, Baton) {
    let mock = MockHttp::start().await;
    mock.reply(SCOPES, Reply::json(200, json!({"scopes": ["mail.send", "alerts.read"]})));
    let backup = MockSmtp::start().await;
    let body = config("sendgrid", &mock.url(), &table(), &backup, health);
    let baton = Baton::start_with_server(server, "", &body).await;
    (mock, backup, baton)
}

async fn setup(health: &str) -> (MockHttp, MockSmtp, Baton) {
    setup_with("", health).await
}

/// The emails of one personalization field.
fn emails(p: &Value, field: &str) -> Vec<String> {
    p[field]
        .as_array()
        .map(|a| a.iter().map(|m| m["email"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn builds_the_mail_send_body_from_the_mime() {
    let (mock, backup, baton) = setup("").await;
    mock.reply(SEND, accepted("sg-msg-1"));
    let pdf = b"%PDF-1.4 \x00\x01\xff binary".to_vec();
    let png = b"\x89PNG\r\n\x1a\n fake".to_vec();
    let raw = mail_builder::MessageBuilder::new()
        .from(("App", "app@example.com"))
        .to(vec![("Alice", "alice@example.net")])
        .cc("bob@example.net")
        .reply_to("support@example.com")
        .subject("Grüße from SendGrid")
        .message_id("sg-test-1@example.com")
        .header("X-Campaign", mail_builder::headers::text::Text::new("reset"))
        .text_body("plain ✓")
        .html_body("<p>html ✓ <img src=\"cid:logo\"></p>")
        .inline("image/png", "logo", png.clone())
        .attachment("application/pdf", "invoice.pdf", pdf.clone())
        .write_to_vec()
        .unwrap();
    let id = send_raw(&baton, &["alice@example.net", "bob@example.net"], &["audit@example.com"], &raw).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["status"], "delivered", "{status:#}");
    for r in status["recipients"].as_array().unwrap() {
        assert_eq!(r["provider"], API);
        assert_eq!(r["provider_message_id"], "sg-msg-1", "X-Message-Id kept");
    }
    let reqs = mock.requests_to(SEND);
    assert_eq!(reqs.len(), 1);
    let req = &reqs[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/v3/mail/send");
    assert_eq!(req.header("authorization"), Some(format!("Bearer {SECRET}").as_str()));
    assert!(req.header("content-type").unwrap().starts_with("application/json"));
    let body = req.json();
    let ps = body["personalizations"].as_array().unwrap();
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0]["to"], json!([{"email": "alice@example.net", "name": "Alice"}]));
    assert_eq!(emails(&ps[0], "cc"), vec!["bob@example.net"]);
    assert_eq!(emails(&ps[0], "bcc"), vec!["audit@example.com"], "envelope-only recipients go to bcc");
    assert_eq!(body["from"], json!({"email": "app@example.com", "name": "App"}));
    assert_eq!(body["reply_to"], json!({"email": "support@example.com"}));
    assert_eq!(body["subject"], "Grüße from SendGrid");
    let content = body["content"].as_array().unwrap();
    assert_eq!(content.len(), 2);
    assert_eq!(content[0]["type"], "text/plain");
    assert!(content[0]["value"].as_str().unwrap().starts_with("plain ✓"));
    assert_eq!(content[1]["type"], "text/html");
    assert!(content[1]["value"].as_str().unwrap().contains("cid:logo"));
    let atts = body["attachments"].as_array().unwrap();
    assert_eq!(atts.len(), 2, "{atts:?}");
    let b64 = base64::engine::general_purpose::STANDARD;
    let invoice = atts.iter().find(|a| a["filename"] == "invoice.pdf").expect("pdf attachment");
    assert_eq!(invoice["type"], "application/pdf");
    assert_eq!(invoice["disposition"], "attachment");
    assert_eq!(b64.decode(invoice["content"].as_str().unwrap()).unwrap(), pdf);
    let logo = atts.iter().find(|a| a["type"] == "image/png").expect("inline image");
    assert_eq!(logo["disposition"], "inline");
    assert_eq!(logo["content_id"], "logo");
    assert_eq!(b64.decode(logo["content"].as_str().unwrap()).unwrap(), png);
    assert_eq!(body["headers"]["X-Campaign"], "reset");
    assert_eq!(body["headers"]["Message-ID"], "<sg-test-1@example.com>");
    let header_names: Vec<String> =
        body["headers"].as_object().unwrap().keys().map(|k| k.to_ascii_lowercase()).collect();
    for reserved in ["to", "from", "subject", "cc", "bcc", "reply-to", "content-type", "content-transfer-encoding"] {
        assert!(!header_names.contains(&reserved.to_string()), "{reserved} is set through its own field");
    }
    assert_eq!(backup.message_count(), 0);
    assert_secret_absent(&baton, &id, SECRET).await;
}

#[tokio::test]
async fn more_than_1000_recipients_are_split() {
    let (mock, backup, baton) = setup_with("max_recipients = 3000", "").await;
    let n = Arc::new(AtomicUsize::new(0));
    let counter = n.clone();
    mock.reply(
        SEND,
        Reply::dynamic(move |_req: &Recorded| {
            let i = counter.fetch_add(1, Ordering::SeqCst) + 1;
            Reply::Static {
                status: 202,
                headers: vec![("x-message-id".into(), format!("sg-part-{i}"))],
                body: String::new(),
            }
        }),
    );
    let to: Vec<String> = (0..2001).map(|i| format!("user{i}@example.net")).collect();
    let to_refs: Vec<&str> = to.iter().map(String::as_str).collect();
    let id = baton.send(message(&to_refs, "big send")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["status"], "delivered");
    let reqs = mock.requests_to(SEND);
    assert_eq!(reqs.len(), 3);
    let mut seen = Vec::new();
    for req in &reqs {
        let body = req.json();
        let p = &body["personalizations"][0];
        let count = emails(p, "to").len() + emails(p, "cc").len() + emails(p, "bcc").len();
        assert!(count <= 1000, "{count} recipients in one request");
        seen.extend(emails(p, "to"));
    }
    assert_eq!(seen, to, "every recipient once, in order");
    assert_eq!(recipient(&status, "user0@example.net")["provider_message_id"], "sg-part-1");
    assert_eq!(recipient(&status, "user1999@example.net")["provider_message_id"], "sg-part-2");
    assert_eq!(recipient(&status, "user2000@example.net")["provider_message_id"], "sg-part-3");
    assert_eq!(backup.message_count(), 0);
}

#[tokio::test]
async fn a_failed_part_of_a_split_send_fails_over_alone() {
    let (mock, backup, baton) = setup_with("max_recipients = 3000", "").await;
    let n = Arc::new(AtomicUsize::new(0));
    let counter = n.clone();
    mock.reply(
        SEND,
        Reply::dynamic(move |_req: &Recorded| {
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                accepted("sg-first")
            } else {
                sendgrid_error(429, "too many requests").with_header("x-ratelimit-reset", &epoch_in(60).to_string())
            }
        }),
    );
    let to: Vec<String> = (0..1500).map(|i| format!("user{i}@example.net")).collect();
    let to_refs: Vec<&str> = to.iter().map(String::as_str).collect();
    let id = baton.send(message(&to_refs, "split then throttled")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["status"], "delivered", "{status:#}");
    assert_eq!(recipient(&status, "user999@example.net")["provider"], API);
    assert_eq!(recipient(&status, "user1000@example.net")["provider"], "backup");
    assert_eq!(status["attempts"][0]["outcome"], "rate_limited");
    assert_eq!(mock.requests_to(SEND).len(), 2);
    let got = backup.wait_for_messages(1, DEADLINE).await;
    assert_eq!(got[0].rcpts.len(), 500);
    assert_eq!(baton.provider(API).await["state"], "rate_limited");
}

fn epoch_in(secs: u64) -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + secs
}

#[tokio::test]
async fn every_documented_answer_is_classified() {
    let (mock, backup, baton) = setup("").await;
    let credits = "Maximum credits exceeded";
    let cases = vec![
        Case::new("202", accepted("sg-202"), "accepted", End::Api("sg-202")),
        Case::new(
            "200 with id",
            Reply::Static { status: 200, headers: vec![("x-message-id".into(), "sg-200".into())], body: String::new() },
            "accepted",
            End::Api("sg-200"),
        ),
        Case::new(
            "400",
            sendgrid_error(400, "The content value must be a string at least one character in length."),
            "bad_request",
            End::Backup,
        )
        .detail("content value"),
        Case::new("401 credits", sendgrid_error(401, credits), "account", End::Backup).detail("out of credits"),
        Case::new(
            "401 credits (old shape)",
            Reply::json(401, json!({"errors": [credits], "message": "error"})),
            "account",
            End::Backup,
        )
        .detail("out of credits"),
        Case::new(
            "401 auth",
            sendgrid_error(401, "The provided authorization grant is invalid, expired, or revoked"),
            "account",
            End::Backup,
        )
        .detail("authentication failed"),
        Case::new(
            "403 sender",
            sendgrid_error(403, "The from address does not match a verified Sender Identity. Mail cannot be sent until this error is resolved. Visit https://sendgrid.com/docs/for-developers/sending-email/sender-identity/ to see the Sender Identity requirements"),
            "sender_unverified",
            End::Backup,
        )
        .detail("verified Sender Identity"),
        Case::new("403 scope", sendgrid_error(403, "access forbidden"), "account", End::Backup).detail("forbidden"),
        Case::new("413", Reply::text(413, "Payload Too Large"), "bad_request", End::Backup),
        Case::new(
            "429 with X-RateLimit-Reset",
            sendgrid_error(429, "too many requests").with_header("x-ratelimit-reset", &epoch_in(100).to_string()),
            "rate_limited",
            End::Backup,
        )
        .next_trial(80.0, 100.0),
        Case::new("500", Reply::text(500, ""), "transient", End::Backup),
        Case::new(
            "503 HTML",
            Reply::text(503, "<html><body>Service Unavailable</body></html>"),
            "transient",
            End::Backup,
        )
        .detail("Service Unavailable"),
        Case::new("404 HTML", Reply::text(404, "<html>not here</html>"), "transient", End::Backup),
        Case::new("200 HTML, no id", Reply::text(200, "<html>captive portal</html>"), "transient", End::Backup)
            .duplicate(),
        Case::new("timeout", Reply::Hang, "transient", End::Backup).detail("timed out").duplicate(),
    ];
    run_cases(&baton, &mock, &backup, SEND, cases).await;
}

#[tokio::test]
async fn the_key_never_leaks_even_when_echoed() {
    let (mock, _backup, baton) = setup("").await;
    mock.reply(
        SEND,
        Reply::dynamic(|req: &Recorded| {
            let auth = req.header("authorization").unwrap_or_default().to_string();
            Reply::json(401, json!({"errors": [{"message": format!("bad credentials: {auth}")}]}))
        }),
    );
    let id = baton.send(message(&["alice@example.net"], "echo")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["attempts"][0]["outcome"], "account", "{status:#}");
    assert!(status["attempts"][0]["detail"].as_str().unwrap().contains("Bearer [redacted]"), "{status:#}");
    assert_secret_absent(&baton, &id, SECRET).await;
}

#[tokio::test]
async fn probe_checks_the_mail_send_scope() {
    let (mock, backup, baton) = setup("probe_interval = \"200ms\"").await;
    let probes = mock.wait_for_requests(SCOPES, 2, DEADLINE).await;
    assert_eq!(probes[0].method, "GET");
    assert_eq!(probes[0].header("authorization"), Some(format!("Bearer {SECRET}").as_str()));
    baton.wait_provider(API, "a passing probe", |p| p["last_probe"]["ok"] == true).await;

    // The key lost its mail.send scope.
    mock.reply(SCOPES, Reply::json(200, json!({"scopes": ["alerts.read", "stats.read"]})));
    let p = baton.wait_provider(API, "suspended", |p| p["state"] == "suspended").await;
    assert_eq!(p["last_probe"]["ok"], false);
    assert!(p["last_probe"]["detail"].as_str().unwrap().contains("mail.send"), "{p:#}");
    let id = baton.send(message(&["alice@example.net"], "while suspended")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["recipients"][0]["provider"], "backup");
    assert_eq!(mock.requests_to(SEND).len(), 0);
    backup.wait_for_messages(1, DEADLINE).await;
}

#[tokio::test]
async fn probe_with_a_revoked_key_is_an_account_failure() {
    let (mock, _backup, baton) = setup("probe_interval = \"200ms\"").await;
    mock.reply(SCOPES, sendgrid_error(401, "authorization required"));
    let p = baton.wait_provider(API, "suspended", |p| p["state"] == "suspended").await;
    assert!(p["last_probe"]["detail"].as_str().unwrap().contains("authentication failed"), "{p:#}");
}

#[tokio::test]
async fn a_probe_the_key_may_not_make_is_inconclusive_and_keeps_the_provider() {
    let (mock, backup, baton) = setup("probe_interval = \"200ms\"").await;
    mock.reply(SCOPES, sendgrid_error(403, "access forbidden"));
    mock.reply(SEND, accepted("sg-after-403"));
    let p = baton.assert_inconclusive_probe_keeps(API, "permission denied").await;
    assert!(p["last_probe"]["detail"].as_str().unwrap().contains("probe = false"), "{p:#}");
    assert_eq!(backup.message_count(), 0);
}

#[tokio::test]
async fn the_trial_is_the_request_for_the_first_recipient_in_sandbox_mode() {
    let mock = MockHttp::start().await;
    mock.reply(SEND, Reply::text(200, ""));
    let provider = build(&format!("type = \"sendgrid\"\nbase_url = \"{}\"\n{}", mock.url(), table()));
    let report = trial(provider.as_ref()).await;
    assert_eq!(report.class.as_str(), "accepted", "{}", report.detail);
    assert!(report.detail.contains("sandbox mode"), "{}", report.detail);
    let reqs = mock.requests_to(SEND);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].header("authorization"), Some(format!("Bearer {SECRET}").as_str()));
    let body = reqs[0].json();
    assert_eq!(body["mail_settings"], json!({"sandbox_mode": {"enable": true}}));
    let p = &body["personalizations"][0];
    let all: Vec<String> = ["to", "cc", "bcc"].iter().flat_map(|f| emails(p, f)).collect();
    assert_eq!(all, vec!["alice@example.net"], "the first recipient only");
    assert_eq!(body["subject"], "trial");

    // SendGrid refusing the sender in sandbox mode fails the trial as it would fail a send.
    mock.reply(SEND, sendgrid_error(403, "The from address does not match a verified Sender Identity."));
    assert_eq!(trial(provider.as_ref()).await.class.as_str(), "sender_unverified");
}
