//! The Resend adapter against a local mock of Resend's API: what Baton sends (fields, bearer
//! key, idempotency key), how every documented answer is classified, ids, Retry-After, probes.

mod support;

use base64::Engine as _;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use support::baton::recipient;
use support::baton::{Baton, DEADLINE, message, smtp_provider};
use support::mock_http::{MockHttp, Reply};
use support::mock_smtp::MockSmtp;

const KEY: &str = "re_SECRET_4Jk2mQ9xTzY7";
const EMAIL_ID: &str = "49a3999c-0ce1-4ea6-ab68-afcd6dc2e794";

/// Route `resend → backup` (or just `resend`); `extra` goes into `[providers.resend]`.
fn config(mock: &MockHttp, backup: &MockSmtp, extra: &str, health: &str, retry: &str, providers: &str) -> String {
    let health = if health.is_empty() { "probe_interval = \"1h\"" } else { health };
    format!(
        "[providers.resend]\ntype = \"resend\"\napi_key = \"{KEY}\"\nbase_url = \"{}\"\n{}\n{extra}\n{}\n[retry]\nschedule = [{retry}]\n\n[health]\n{health}\n\n[[routes]]\nname = \"default\"\nproviders = [{providers}]\n",
        mock.url(),
        if extra.contains("timeout") { "" } else { "timeout = \"2s\"" },
        smtp_provider("backup", backup, ""),
    )
}

fn standard(mock: &MockHttp, backup: &MockSmtp, extra: &str, health: &str) -> String {
    config(mock, backup, extra, health, "\"1h\"", "\"resend\", \"backup\"")
}

fn ok_reply() -> Reply {
    Reply::json(200, json!({"id": EMAIL_ID}))
}

fn error(status: u16, name: &str, text: &str) -> Reply {
    Reply::json(status, json!({"statusCode": status, "name": name, "message": text}))
}

fn html(status: u16, body: &str) -> Reply {
    Reply::Static { status, headers: vec![("content-type".into(), "text/html".into())], body: body.into() }
}

async fn healthy_mock() -> MockHttp {
    let mock = MockHttp::start().await;
    mock.reply("/domains", Reply::json(200, json!({"object": "list", "data": [{"id": "d1", "name": "example.com", "status": "verified", "region": "us-east-1"}]})));
    mock.reply("/emails", ok_reply());
    mock
}

#[tokio::test]
async fn sends_resend_fields_with_bearer_and_idempotency_key() {
    let mock = healthy_mock().await;
    let backup = MockSmtp::start().await;
    let baton = Baton::start(&standard(&mock, &backup, "", "")).await;
    let id = baton
        .send(json!({
            "from": "App <app@example.com>",
            "to": [{"email": "alice@example.net", "name": "Alice"}],
            "cc": ["carol@example.net"],
            "bcc": ["audit@example.com"],
            "reply_to": "support@example.com",
            "subject": "Welcome",
            "text": "plain body",
            "html": "<p>html body</p>",
            "headers": {"X-Campaign": "welcome"},
            "attachments": [{"filename": "terms.txt", "content_type": "text/plain", "content_base64": base64::engine::general_purpose::STANDARD.encode("the terms")}],
        }))
        .await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["status"], "delivered", "{status:#}");
    for r in status["recipients"].as_array().unwrap() {
        assert_eq!(r["provider"], "resend", "{r}");
        assert_eq!(r["provider_message_id"], EMAIL_ID, "{r}");
    }
    let sent = mock.requests_to("/emails");
    assert_eq!(sent.len(), 1);
    let req = &sent[0];
    assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/emails"));
    assert_eq!(req.header("authorization"), Some(format!("Bearer {KEY}").as_str()));
    let key = req.header("idempotency-key").expect("Idempotency-Key sent");
    let suffix = key.strip_prefix(&format!("{id}-")).unwrap_or_else(|| panic!("key {key} starts with the message id"));
    assert!(suffix.len() == 16 && suffix.chars().all(|c| c.is_ascii_hexdigit()), "{key}");
    let j = req.json();
    assert_eq!(j["from"], "App <app@example.com>");
    assert_eq!(j["to"], json!(["alice@example.net"]));
    assert_eq!(j["cc"], json!(["carol@example.net"]));
    assert_eq!(j["bcc"], json!(["audit@example.com"]));
    assert_eq!(j["reply_to"], json!(["support@example.com"]));
    assert_eq!(j["subject"], "Welcome");
    assert_eq!(j["text"].as_str().unwrap().trim_end(), "plain body");
    assert_eq!(j["html"].as_str().unwrap().trim_end(), "<p>html body</p>");
    assert_eq!(j["headers"]["X-Campaign"], "welcome");
    assert_eq!(j["attachments"][0]["filename"], "terms.txt");
    let content = base64::engine::general_purpose::STANDARD.decode(j["attachments"][0]["content"].as_str().unwrap());
    assert_eq!(content.unwrap(), b"the terms");
    assert_eq!(backup.message_count(), 0);

    let probes = mock.wait_for_requests("/domains", 1, DEADLINE).await;
    assert_eq!(probes[0].method, "GET");
    assert_eq!(probes[0].header("authorization"), Some(format!("Bearer {KEY}").as_str()));
    let p = baton.wait_provider("resend", "a passing probe", |p| p["last_probe"]["ok"] == true).await;
    assert!(p["last_probe"]["detail"].as_str().unwrap().contains("example.com"), "{p:#}");
}

#[tokio::test]
async fn classifies_every_documented_answer() {
    let mock = healthy_mock().await;
    let backup = MockSmtp::start().await;
    let baton = Baton::start(&standard(&mock, &backup, "timeout = \"1s\"", "")).await;
    let cases: Vec<(&str, Reply, &str)> = vec![
        ("missing key", error(401, "missing_api_key", "Missing API key in the authorization header."), "account"),
        (
            "restricted key",
            error(401, "restricted_api_key", "This API key is restricted to only send emails."),
            "account",
        ),
        ("invalid key", error(403, "invalid_api_key", "API key is invalid."), "account"),
        ("invalid key, old spelling", error(403, "invalid_api_Key", "API key is invalid."), "account"),
        ("suspended key", error(403, "suspended_api_key", "This API key has been suspended."), "account"),
        ("no permission", error(403, "invalid_permission", "Not allowed."), "account"),
        (
            "testing only",
            error(
                403,
                "validation_error",
                "You can only send testing emails to your own email address (owner@example.com). To send emails to other recipients, please verify a domain at resend.com/domains.",
            ),
            "account",
        ),
        ("bad from", error(422, "invalid_from_address", "Invalid `from` field."), "sender_unverified"),
        (
            "domain not verified",
            error(
                403,
                "validation_error",
                "The example.com domain is not verified. Please, add and verify your domain on https://resend.com/domains",
            ),
            "sender_unverified",
        ),
        ("bad field", error(422, "validation_error", "Invalid `to` field."), "bad_request"),
        ("bad field 400", error(400, "validation_error", "The `subject` field is required."), "bad_request"),
        ("missing field", error(422, "missing_required_field", "Missing `to` field."), "bad_request"),
        (
            "rate",
            error(429, "rate_limit_exceeded", "Too many requests. You can only make 2 requests per second."),
            "rate_limited",
        ),
        (
            "daily quota",
            error(429, "daily_quota_exceeded", "You have reached your daily email sending quota."),
            "account",
        ),
        (
            "monthly quota",
            error(429, "monthly_quota_exceeded", "You have reached your monthly email sending quota."),
            "account",
        ),
        ("above quota", error(429, "email_above_quota", "quota"), "account"),
        ("app error", error(500, "application_error", "An unexpected error occurred."), "transient"),
        ("server error", error(500, "internal_server_error", "An unexpected error occurred."), "transient"),
        ("concurrent idempotent", error(409, "concurrent_idempotent_requests", "Same key in flight."), "transient"),
        ("unknown 403", error(403, "some_new_name", "?"), "account"),
        ("unknown 429", error(429, "some_new_limit", "slow down"), "rate_limited"),
        ("unknown 422", error(422, "some_new_problem", "?"), "bad_request"),
        ("html 502", html(502, "<html>Bad gateway</html>"), "transient"),
        ("html 403", html(403, "<html>Forbidden</html>"), "account"),
        ("malformed 400", Reply::text(400, "{nope"), "bad_request"),
        ("timeout", Reply::Hang, "transient"),
    ];
    for (name, reply, expected) in cases {
        mock.reply("/emails", reply);
        let before = mock.requests_to("/emails").len();
        let id = baton.send(message(&["alice@example.net"], name)).await;
        let status = baton.wait_final(&id).await;
        assert_eq!(mock.requests_to("/emails").len(), before + 1, "{name}: resend tried once");
        let first = &status["attempts"][0];
        assert_eq!(
            (first["provider"].as_str(), first["outcome"].as_str()),
            (Some("resend"), Some(expected)),
            "{name}: {status:#}"
        );
        assert_eq!(status["status"], "delivered", "{name}: {status:#}");
        assert_eq!(status["recipients"][0]["provider"], "backup", "{name}: fails over: {status:#}");
        assert_eq!(first["possible_duplicate"], name == "timeout", "{name}: {status:#}");
        baton.resume("resend").await;
    }
    // A success status with a body we cannot read was still taken: no failover, no id.
    mock.reply("/emails", html(200, "<html>ok</html>"));
    let before = backup.message_count();
    let id = baton.send(message(&["alice@example.net"], "html 200")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["recipients"][0]["provider"], "resend", "{status:#}");
    assert_eq!(status["recipients"][0]["provider_message_id"], Value::Null);
    assert_eq!(backup.message_count(), before);
}

/// A retry of the same recipients reuses the key (Resend answers with the first email); a
/// retry of a different subset gets its own key.
#[tokio::test]
async fn idempotency_key_is_stable_per_recipient_set() {
    let mock = healthy_mock().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    // First answer: no answer at all (timeout); then accepted.
    mock.reply(
        "/emails",
        Reply::dynamic(move |_| if counter.fetch_add(1, Ordering::SeqCst) == 0 { Reply::Hang } else { ok_reply() }),
    );
    let backup = MockSmtp::start().await;
    let baton = Baton::start(&config(&mock, &backup, "timeout = \"1s\"", "", "\"300ms\"", "\"resend\"")).await;
    let id = baton.send(message(&["alice@example.net", "bob@example.net"], "retry")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["status"], "delivered", "{status:#}");
    let attempts = status["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{status:#}");
    assert_eq!(
        (attempts[0]["outcome"].as_str(), attempts[0]["possible_duplicate"].as_bool()),
        (Some("transient"), Some(true))
    );
    assert_eq!(attempts[1]["outcome"], "accepted");
    let sent = mock.requests_to("/emails");
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].header("idempotency-key"), sent[1].header("idempotency-key"), "same recipients, same key");
    assert_eq!(sent[0].json()["to"], sent[1].json()["to"]);

    // A subset: Resend fails, the backup takes alice and defers bob; the next pass sends only
    // bob to Resend, under a different key.
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    mock.reply(
        "/emails",
        Reply::dynamic(move |_| {
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                error(500, "application_error", "oops")
            } else {
                ok_reply()
            }
        }),
    );
    backup.reject_recipient("bob@example.net", "451 4.2.1 Mailbox busy, try again later");
    let subset_baton = Baton::start(&config(&mock, &backup, "", "", "\"300ms\"", "\"resend\", \"backup\"")).await;
    let id = subset_baton.send(message(&["alice@example.net", "bob@example.net"], "subset")).await;
    let status = subset_baton.wait_final(&id).await;
    assert_eq!(status["status"], "delivered", "{status:#}");
    assert_eq!(recipient(&status, "alice@example.net")["provider"], "backup");
    assert_eq!(recipient(&status, "bob@example.net")["provider"], "resend");
    let sent: Vec<_> = mock.requests_to("/emails").into_iter().skip(2).collect();
    assert_eq!(sent.len(), 2, "{status:#}");
    assert_eq!(sent[0].json()["to"], json!(["alice@example.net", "bob@example.net"]));
    assert_eq!(sent[1].json()["to"], json!(["bob@example.net"]));
    let (k1, k2) = (sent[0].header("idempotency-key").unwrap(), sent[1].header("idempotency-key").unwrap());
    assert_ne!(k1, k2, "different recipient sets, different keys");
    assert!(k1.starts_with(&id) && k2.starts_with(&id));
}

#[tokio::test]
async fn rate_limit_honours_retry_after() {
    let mock = healthy_mock().await;
    mock.reply("/emails", error(429, "rate_limit_exceeded", "Too many requests.").with_header("retry-after", "90"));
    let backup = MockSmtp::start().await;
    let baton = Baton::start(&standard(&mock, &backup, "", "")).await;
    let id = baton.send(message(&["alice@example.net"], "throttled")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["attempts"][0]["outcome"], "rate_limited", "{status:#}");
    let p = baton.provider("resend").await;
    assert_eq!(p["state"], "rate_limited", "{p:#}");
    let next = p["next_trial_in_seconds"].as_f64().unwrap();
    assert!(next > 70.0 && next <= 90.0, "Retry-After 90s honoured: {p:#}");
    let id = baton.send(message(&["alice@example.net"], "while throttled")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["attempts"].as_array().unwrap().len(), 1, "resend skipped: {status:#}");
    assert_eq!(mock.requests_to("/emails").len(), 1);
}

#[tokio::test]
async fn failing_probe_is_visible_in_admin_providers() {
    let mock = MockHttp::start().await;
    mock.reply("/domains", error(403, "invalid_api_key", "API key is invalid."));
    let backup = MockSmtp::start().await;
    let baton = Baton::start(&standard(&mock, &backup, "", "probe_interval = \"200ms\"")).await;
    let p = baton.wait_provider("resend", "suspended by its probe", |p| p["state"] == "suspended").await;
    assert_eq!(p["last_probe"]["ok"], false, "{p:#}");
    assert!(p["last_probe"]["detail"].as_str().unwrap().contains("invalid_api_key"), "{p:#}");
    let id = baton.send(message(&["alice@example.net"], "while suspended")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["recipients"][0]["provider"], "backup");
    assert!(mock.requests_to("/emails").is_empty());
}

/// A sending-only key cannot list domains: its probe cannot judge and the provider stays; a key
/// that can list them and finds no verified domain suspends the provider.
#[tokio::test]
async fn a_sending_only_keys_probe_is_inconclusive_and_no_verified_domain_suspends() {
    let mock = MockHttp::start().await;
    mock.reply("/domains", error(401, "restricted_api_key", "This API key is restricted to only send emails."));
    mock.reply("/emails", ok_reply());
    let backup = MockSmtp::start().await;
    let baton = Baton::start(&standard(&mock, &backup, "", "probe_interval = \"200ms\"")).await;
    let p = baton.assert_inconclusive_probe_keeps("resend", "full-access key").await;
    assert!(p["last_probe"]["detail"].as_str().unwrap().contains("restricted_api_key"), "{p:#}");

    mock.reply(
        "/domains",
        Reply::json(200, json!({"object": "list", "data": [{"id": "d1", "name": "example.com", "status": "pending"}]})),
    );
    let p = baton.wait_provider("resend", "suspended", |p| p["state"] == "suspended").await;
    assert!(p["last_probe"]["detail"].as_str().unwrap().contains("no verified domain"), "{p:#}");
}

#[tokio::test]
async fn the_key_never_appears_in_details() {
    let mock = healthy_mock().await;
    mock.reply("/emails", error(403, "invalid_api_key", &format!("API key {KEY} is invalid.")));
    mock.reply("/domains", error(403, "invalid_api_key", &format!("API key {KEY} is invalid.")));
    let backup = MockSmtp::start().await;
    let baton = Baton::start(&standard(&mock, &backup, "", "probe_interval = \"200ms\"")).await;
    let id = baton.send(message(&["alice@example.net"], "secret check")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["attempts"][0]["outcome"], "account", "{status:#}");
    assert!(!status.to_string().contains(KEY), "key in message status: {status:#}");
    assert!(status["attempts"][0]["detail"].as_str().unwrap().contains("[redacted]"), "{status:#}");
    baton.wait_provider("resend", "a failed probe", |p| p["last_probe"]["ok"] == false).await;
    let all = baton.providers().await;
    assert!(!all.to_string().contains(KEY), "key in /admin/providers: {all:#}");
}
