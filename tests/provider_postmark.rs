//! The Postmark adapter against a local mock of Postmark's API: what Baton sends, how every
//! documented answer is classified (failover or not), message ids, Retry-After, probes (failed
//! and inconclusive), secrets.

mod support;

use base64::Engine as _;
use serde_json::json;
use support::baton::recipient;
use support::baton::{Baton, DEADLINE, message, smtp_provider};
use support::mock_http::{MockHttp, Reply};
use support::mock_smtp::MockSmtp;

const TOKEN: &str = "pm-server-token-SECRET-7f3a9c";
const MESSAGE_ID: &str = "0a129aee-e1cd-480d-b08d-4f48548ff48d";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Route `postmark → backup`; `extra` goes into `[providers.postmark]`, `health` into `[health]`.
fn config(mock: &MockHttp, backup: &MockSmtp, extra: &str, health: &str) -> String {
    let health = if health.is_empty() { "probe_interval = \"1h\"" } else { health };
    format!(
        "[providers.postmark]\ntype = \"postmark\"\nserver_token = \"{TOKEN}\"\nbase_url = \"{}\"\n{}\n{extra}\n{}\n[retry]\nschedule = [\"1h\"]\n\n[health]\n{health}\n\n[[routes]]\nname = \"default\"\nproviders = [\"postmark\", \"backup\"]\n",
        mock.url(),
        if extra.contains("timeout") { "" } else { "timeout = \"2s\"" },
        smtp_provider("backup", backup, ""),
    )
}

fn ok_reply() -> Reply {
    Reply::json(
        200,
        json!({"To": "alice@example.net", "SubmittedAt": "2026-11-22T10:00:00.0000000-05:00", "MessageID": MESSAGE_ID, "ErrorCode": 0, "Message": "OK"}),
    )
}

fn error(status: u16, code: i64, text: &str) -> Reply {
    Reply::json(status, json!({"ErrorCode": code, "Message": text}))
}

fn html(status: u16, body: &str) -> Reply {
    Reply::Static { status, headers: vec![("content-type".into(), "text/html".into())], body: body.into() }
}

/// A mock that passes probes and accepts mail.
async fn healthy_mock() -> MockHttp {
    let mock = MockHttp::start().await;
    mock.reply("/server", Reply::json(200, json!({"ID": 1, "Name": "Transactional", "DeliveryType": "Live"})));
    mock.reply("/email", ok_reply());
    mock
}

#[tokio::test]
async fn sends_the_message_as_postmark_fields_and_keeps_the_message_id() {
    let mock = healthy_mock().await;
    let backup = MockSmtp::start().await;
    let baton = Baton::start(&config(&mock, &backup, "message_stream = \"transactional\"", "")).await;
    let id = baton
        .send(json!({
            "from": "App <app@example.com>",
            "to": [{"email": "alice@example.net", "name": "Alice Liddell"}],
            "cc": ["carol@example.net"],
            "bcc": ["audit@example.com"],
            "reply_to": "support@example.com",
            "subject": "Your invoice",
            "text": "plain body",
            "html": "<p>html body</p>",
            "headers": {"X-Campaign": "invoices"},
            "attachments": [{"filename": "invoice.pdf", "content_type": "application/pdf", "content_base64": b64(b"%PDF-1.4 test")}],
        }))
        .await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["status"], "delivered", "{status:#}");
    for r in status["recipients"].as_array().unwrap() {
        assert_eq!(r["provider"], "postmark", "{r}");
        assert_eq!(r["provider_message_id"], MESSAGE_ID, "{r}");
    }
    assert_eq!(status["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(status["attempts"][0]["outcome"], "accepted");

    let sent = mock.requests_to("/email");
    assert_eq!(sent.len(), 1);
    let req = &sent[0];
    assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/email"));
    assert_eq!(req.header("x-postmark-server-token"), Some(TOKEN));
    assert!(req.header("content-type").unwrap().starts_with("application/json"));
    let j = req.json();
    assert_eq!(j["From"], "App <app@example.com>");
    assert_eq!(j["To"], "Alice Liddell <alice@example.net>");
    assert_eq!(j["Cc"], "carol@example.net");
    assert_eq!(j["Bcc"], "audit@example.com");
    assert_eq!(j["ReplyTo"], "support@example.com");
    assert_eq!(j["Subject"], "Your invoice");
    assert_eq!(j["TextBody"].as_str().unwrap().trim_end(), "plain body");
    assert_eq!(j["HtmlBody"].as_str().unwrap().trim_end(), "<p>html body</p>");
    assert_eq!(j["MessageStream"], "transactional");
    let headers = j["Headers"].as_array().unwrap();
    assert!(headers.contains(&json!({"Name": "X-Campaign", "Value": "invoices"})), "{headers:?}");
    assert!(headers.contains(&json!({"Name": "Message-ID", "Value": format!("<{id}@baton.test>")})), "{headers:?}");
    let att = &j["Attachments"][0];
    assert_eq!(att["Name"], "invoice.pdf");
    assert_eq!(att["ContentType"], "application/pdf");
    let content = base64::engine::general_purpose::STANDARD.decode(att["Content"].as_str().unwrap()).unwrap();
    assert_eq!(content, b"%PDF-1.4 test");
    assert_eq!(backup.message_count(), 0, "backup not used");

    // The probe ran at start: GET /server with the token.
    let probes = mock.wait_for_requests("/server", 1, DEADLINE).await;
    assert_eq!(probes[0].method, "GET");
    assert_eq!(probes[0].header("x-postmark-server-token"), Some(TOKEN));
    let p = baton.wait_provider("postmark", "a passing probe", |p| p["last_probe"]["ok"] == true).await;
    assert_eq!(p["state"], "healthy", "{p:#}");
}

/// Every documented answer: the attempt's class, and whether the message failed over.
#[tokio::test]
async fn classifies_every_documented_answer() {
    let mock = healthy_mock().await;
    let backup = MockSmtp::start().await;
    let baton = Baton::start(&config(&mock, &backup, "timeout = \"1s\"", "")).await;
    let cases: Vec<(&str, Reply, &str)> = vec![
        ("bad token", error(401, 10, "Request does not contain a valid Server token."), "account"),
        ("maintenance", error(503, 100, "Maintenance"), "transient"),
        ("maintenance 422", error(422, 100, "Maintenance"), "transient"),
        ("invalid request", error(422, 300, "Invalid 'To' address: 'x'."), "bad_request"),
        (
            "unverified sender",
            error(
                422,
                300,
                "The 'From' address you supplied (app@example.com) is not a Sender Signature on your account. Add and confirm this address in order to send.",
            ),
            "sender_unverified",
        ),
        ("signature missing", error(422, 400, "Sender signature not found"), "sender_unverified"),
        ("signature unconfirmed", error(422, 401, "Sender signature not confirmed"), "sender_unverified"),
        ("no credits", error(422, 405, "Not allowed to send: you have run out of credits."), "account"),
        ("account pending", error(422, 412, "Your account is pending approval."), "account"),
        ("may not send", error(422, 413, "This account may not send."), "account"),
        ("rate limited", error(429, 429, "Rate limit exceeded."), "rate_limited"),
        ("http 401 text", Reply::text(401, "Unauthorized"), "account"),
        ("http 500", Reply::text(500, "Internal Server Error"), "transient"),
        ("http 502 html", html(502, "<html><body>Bad gateway</body></html>"), "transient"),
        ("network block", html(403, "<html><head><title>403 Forbidden</title></head></html>"), "transient"),
        ("malformed 422", Reply::text(422, "{not json"), "bad_request"),
        ("unknown code", error(422, 1101, "Template not found."), "bad_request"),
        ("timeout", Reply::Hang, "transient"),
    ];
    for (name, reply, expected) in cases {
        mock.reply("/email", reply);
        let before = mock.requests_to("/email").len();
        let id = baton.send(message(&["alice@example.net"], name)).await;
        let status = baton.wait_final(&id).await;
        assert_eq!(mock.requests_to("/email").len(), before + 1, "{name}: postmark tried once");
        let first = &status["attempts"][0];
        assert_eq!(first["provider"], "postmark", "{name}: {status:#}");
        assert_eq!(first["outcome"], expected, "{name}: {status:#}");
        assert_eq!(status["status"], "delivered", "{name}: {status:#}");
        assert_eq!(status["recipients"][0]["provider"], "backup", "{name}: fails over: {status:#}");
        assert_eq!(first["possible_duplicate"], name == "timeout", "{name}: {status:#}");
        assert!(first["detail"].as_str().is_some_and(|d| !d.is_empty()), "{name}: {status:#}");
        baton.resume("postmark").await;
    }

    // Answers that are not provider failures: no failover.
    let no_failover: Vec<(&str, Reply, &str, &str)> = vec![
        ("ok", ok_reply(), "accepted", "delivered"),
        ("html 200", html(200, "<html>ok</html>"), "accepted", "delivered"),
        (
            "all inactive",
            error(
                422,
                406,
                "You tried to send to recipient(s) that have been marked as inactive. Found inactive addresses: alice@example.net. Inactive recipients are ones that have generated a hard bounce, a spam complaint, or a manual suppression.",
            ),
            "recipient_rejected",
            "failed",
        ),
        (
            "all inactive, unlisted",
            error(422, 406, "You tried to send to recipients that have all been marked as inactive."),
            "recipient_rejected",
            "failed",
        ),
    ];
    let backup_before = backup.message_count();
    for (name, reply, expected, final_status) in no_failover {
        mock.reply("/email", reply);
        let id = baton.send(message(&["alice@example.net"], name)).await;
        let status = baton.wait_final(&id).await;
        assert_eq!(status["status"], final_status, "{name}: {status:#}");
        assert_eq!(status["attempts"].as_array().unwrap().len(), 1, "{name}: {status:#}");
        assert_eq!(status["attempts"][0]["outcome"], expected, "{name}: {status:#}");
        assert_eq!(status["recipients"][0]["provider"], "postmark", "{name}: {status:#}");
        if final_status == "failed" {
            assert_eq!(status["recipients"][0]["status"], "rejected", "{name}: {status:#}");
            assert!(status["recipients"][0]["detail"].as_str().unwrap().contains("inactive"), "{status:#}");
            // Postmark's inactive list is Baton's too: alice is suppressed for every provider.
            let url = format!("{}/admin/suppressions/alice@example.net", baton.admin);
            let listed: serde_json::Value = baton.http.get(&url).send().await.unwrap().json().await.unwrap();
            assert_eq!(listed["suppressions"][0]["provider"], "postmark", "{name}: {listed:#}");
            assert_eq!(baton.http.delete(&url).send().await.unwrap().status(), 204);
        }
    }
    assert_eq!(backup.message_count(), backup_before, "no failover for accepted or rejected");
}

#[tokio::test]
async fn inactive_recipients_are_rejected_and_the_others_sent_again_at_once() {
    let mock = healthy_mock().await;
    mock.reply(
        "/email",
        Reply::dynamic(|req| {
            let j = req.json();
            let all = format!("{} {} {}", j["To"], j["Cc"], j["Bcc"]);
            if all.contains("bob@example.net") {
                error(
                    422,
                    406,
                    "You tried to send to recipient(s) that have been marked as inactive. Found inactive addresses: Bob@Example.net. Inactive recipients are ones that have generated a hard bounce, a spam complaint, or a manual suppression.",
                )
            } else {
                ok_reply()
            }
        }),
    );
    let backup = MockSmtp::start().await;
    let baton = Baton::start(&config(&mock, &backup, "", "")).await;
    let id = baton.send(message(&["alice@example.net", "bob@example.net", "carol@example.net"], "partial")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["status"], "partially_delivered", "{status:#}");
    let bob = recipient(&status, "bob@example.net");
    assert_eq!((bob["status"].as_str(), bob["provider"].as_str()), (Some("rejected"), Some("postmark")), "{bob}");
    assert!(bob["detail"].as_str().unwrap().contains("inactive"), "{bob}");
    for email in ["alice@example.net", "carol@example.net"] {
        let r = recipient(&status, email);
        assert_eq!(r["status"], "delivered", "{r}");
        assert_eq!(r["provider"], "postmark", "{r}");
        assert_eq!(r["provider_message_id"], MESSAGE_ID, "{r}");
    }
    let attempts = status["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "one attempt, no failover: {status:#}");
    assert_eq!(attempts[0]["outcome"], "accepted");
    let sent = mock.requests_to("/email");
    assert_eq!(sent.len(), 2, "sent again without the inactive address");
    assert_eq!(sent[1].json()["To"], "alice@example.net, carol@example.net");
    assert_eq!(backup.message_count(), 0);
}

#[tokio::test]
async fn rate_limit_honours_retry_after() {
    let mock = healthy_mock().await;
    mock.reply("/email", error(429, 429, "Rate limit exceeded.").with_header("Retry-After", "120"));
    let backup = MockSmtp::start().await;
    let baton = Baton::start(&config(&mock, &backup, "", "")).await;
    let id = baton.send(message(&["alice@example.net"], "throttled")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["attempts"][0]["outcome"], "rate_limited", "{status:#}");
    assert_eq!(status["recipients"][0]["provider"], "backup");
    let p = baton.provider("postmark").await;
    assert_eq!(p["state"], "rate_limited", "{p:#}");
    let next = p["next_trial_in_seconds"].as_f64().unwrap();
    assert!(next > 100.0 && next <= 120.0, "Retry-After 120s honoured: {p:#}");
    // Backing off: the next message goes straight to the backup.
    let id = baton.send(message(&["alice@example.net"], "while throttled")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["recipients"][0]["provider"], "backup");
    assert_eq!(status["attempts"].as_array().unwrap().len(), 1, "postmark skipped: {status:#}");
    assert_eq!(mock.requests_to("/email").len(), 1);
}

#[tokio::test]
async fn failing_probe_is_visible_in_admin_providers() {
    let mock = MockHttp::start().await;
    mock.reply("/server", error(401, 10, "Request does not contain a valid Server token."));
    let backup = MockSmtp::start().await;
    let baton = Baton::start(&config(&mock, &backup, "", "probe_interval = \"200ms\"")).await;
    let p = baton.wait_provider("postmark", "a failed probe", |p| p["last_probe"]["ok"] == false).await;
    assert!(p["last_probe"]["detail"].as_str().unwrap().contains("valid Server token"), "{p:#}");
    let p = baton.wait_provider("postmark", "suspended", |p| p["state"] == "suspended").await;
    assert!(p["reason"].as_str().unwrap().contains("probe"), "{p:#}");
    let probe = &mock.requests_to("/server")[0];
    assert_eq!(probe.method, "GET");
    assert_eq!(probe.header("x-postmark-server-token"), Some(TOKEN));
    // Suspended by its probe: mail goes to the backup without trying Postmark.
    let id = baton.send(message(&["alice@example.net"], "while suspended")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["recipients"][0]["provider"], "backup", "{status:#}");
    assert!(mock.requests_to("/email").is_empty());
}

#[tokio::test]
async fn the_token_never_appears_in_details() {
    let mock = healthy_mock().await;
    // A provider that echoes the token back must not get it into Baton's records.
    mock.reply("/email", error(401, 10, &format!("Bad or missing server token: {TOKEN}")));
    mock.reply("/server", error(401, 10, &format!("Bad or missing server token: {TOKEN}")));
    let backup = MockSmtp::start().await;
    let baton = Baton::start(&config(&mock, &backup, "", "probe_interval = \"200ms\"")).await;
    let id = baton.send(message(&["alice@example.net"], "secret check")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["attempts"][0]["outcome"], "account", "{status:#}");
    assert!(status["attempts"][0]["detail"].as_str().unwrap().contains("[redacted]"), "{status:#}");
    assert!(!status.to_string().contains(TOKEN), "token in message status: {status:#}");
    baton.wait_provider("postmark", "a failed probe", |p| p["last_probe"]["ok"] == false).await;
    let all = baton.providers().await;
    assert!(!all.to_string().contains(TOKEN), "token in /admin/providers: {all:#}");
}

/// A 403/404 from `/server` (a token that cannot read it, a proxy) says nothing about sending:
/// the provider stays in rotation.
#[tokio::test]
async fn a_probe_answer_that_cannot_judge_keeps_the_provider() {
    for reply in [html(403, "<html><head><title>403 Forbidden</title></head></html>"), Reply::text(404, "Not Found")] {
        let mock = healthy_mock().await;
        mock.reply("/server", reply);
        let backup = MockSmtp::start().await;
        let baton = Baton::start(&config(&mock, &backup, "", "probe_interval = \"200ms\"")).await;
        baton.assert_inconclusive_probe_keeps("postmark", "probe = false").await;
        assert_eq!(backup.message_count(), 0);
    }
}
