//! The HTTP ingest API contract: status codes, error bodies, idempotency, status queries.

mod support;

use base64::Engine;
use serde_json::{Value, json};
use support::baton::{Baton, KEY, OTHER_KEY, message, smtp_provider};
use support::mock_smtp::{MockSmtp, Stage};

const OUTBOX_ROUTE: &str = "[providers.outbox]\ntype = \"file\"\ndir = \"OUTBOX\"\n\n[[routes]]\nname = \"default\"\nproviders = [\"outbox\"]\n";

async fn outbox_baton(spool_extra: &str, server_extra: Option<&str>) -> (Baton, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let mut body = OUTBOX_ROUTE.replace("OUTBOX", &out.path().display().to_string());
    if let Some(extra) = server_extra {
        body = format!("{extra}\n{body}");
    }
    (Baton::start_with(&body, spool_extra).await, out)
}

fn assert_error(code: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(code, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

#[tokio::test]
async fn delivers_to_the_file_provider_with_a_correct_mime_message() {
    let (baton, out) = outbox_baton("", None).await;
    let attachment = base64::engine::general_purpose::STANDARD.encode(b"%PDF-1.4 fake");
    let id = baton
        .send(json!({
            "from": "Billing <billing@example.com>",
            "to": ["alice@example.net", {"email": "bob@example.org", "name": "Bob"}],
            "cc": ["carol@example.net"], "bcc": ["audit@example.com"],
            "reply_to": "support@example.com",
            "subject": "Réinitialisez votre mot de passe",
            "text": "plain", "html": "<p>html</p>",
            "headers": {"X-Campaign": "reset"},
            "attachments": [{"filename": "a.pdf", "content_type": "application/pdf", "content_base64": attachment}],
            "tags": ["password-reset"], "stream": "transactional"
        }))
        .await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["status"], "delivered");
    assert_eq!(status["recipients"].as_array().unwrap().len(), 4, "to + cc + bcc: {status}");
    let eml = std::fs::read_to_string(out.path().join(format!("{id}.eml"))).unwrap();
    for needle in [
        "X-Baton-Envelope-To: <audit@example.com>",
        "Reply-To: <support@example.com>",
        "X-Campaign: reset",
        "MIME-Version: 1.0",
        "multipart/alternative",
        "application/pdf",
        "filename=\"a.pdf\"",
        "Subject: =?utf-8?",
    ] {
        assert!(eml.contains(needle), "missing {needle:?} in:\n{eml}");
    }
    assert!(eml.contains(&format!("Message-ID: <{id}@baton.test>")));
    let headers = eml.split("\r\n\r\n").next().unwrap();
    assert!(!headers.contains("Bcc"), "bcc must stay in the envelope");
}

/// `from` takes `{"email", "name"}` like `to`, `cc` and `bcc` (issue 18).
#[tokio::test]
async fn from_may_be_an_object_like_the_recipients() {
    let (baton, out) = outbox_baton("", None).await;
    let from = json!({"email": "billing@example.com", "name": "Billing, Acme Inc."});
    let id = baton.send(json!({"from": from, "to": ["alice@example.net"], "subject": "s", "text": "t"})).await;
    assert_eq!(baton.wait_final(&id).await["status"], "delivered");
    let eml = std::fs::read_to_string(out.path().join(format!("{id}.eml"))).unwrap();
    assert!(eml.contains("From: \"Billing, Acme Inc.\" <billing@example.com>\r\n"), "{eml}");
    let id =
        baton.send(json!({"from": {"email": "billing@example.com"}, "to": ["alice@example.net"], "text": "t"})).await;
    assert_eq!(baton.wait_final(&id).await["status"], "delivered");
    let eml = std::fs::read_to_string(out.path().join(format!("{id}.eml"))).unwrap();
    assert!(eml.contains("From: <billing@example.com>\r\n") || eml.contains("From: billing@example.com\r\n"), "{eml}");
}

#[tokio::test]
async fn raw_messages_are_passed_through_byte_exact() {
    let (baton, out) = outbox_baton("", None).await;
    let raw = "From: app@example.com\r\nTo: x@example.net\r\nMessage-ID: <raw-1@example.com>\r\nSubject: raw\r\n\r\nBody line\r\n.leading dot\r\n";
    let id = baton
        .send(json!({"from": "app@example.com", "to": ["x@example.net"], "raw_base64": base64::engine::general_purpose::STANDARD.encode(raw)}))
        .await;
    baton.wait_final(&id).await;
    let eml = std::fs::read_to_string(out.path().join(format!("{id}.eml"))).unwrap();
    assert!(eml.ends_with(raw), "raw bytes kept:\n{eml}");
}

#[tokio::test]
async fn every_error_code() {
    let (baton, _out) = outbox_baton("", Some("")).await;
    let good = message(&["a@example.net"], "s").to_string();

    // 401: no key, bad key.
    let (c, b) = baton.post(None, None, good.clone()).await;
    assert_error(c, &b, 401, "unauthorized");
    let (c, b) = baton.post(Some("not-a-real-key-at-all"), None, good.clone()).await;
    assert_error(c, &b, 401, "unauthorized");

    // 400: malformed JSON, wrong types, unknown field, missing recipients, bad address.
    for (body, field) in [
        ("{not json".to_string(), "JSON"),
        (json!({"from": "app@example.com", "to": "a@example.net", "text": "t"}).to_string(), "to"),
        (json!({"from": "app@example.com", "to": ["a@example.net"], "text": "t", "sujbect": "typo"}).to_string(), "sujbect"),
        (json!({"from": "app@example.com", "to": [], "text": "t"}).to_string(), "to"),
        (json!({"from": "app@example.com", "to": ["not an address"], "text": "t"}).to_string(), "to[0]"),
        (json!({"from": "app@example.com", "to": ["a@example.net"]}).to_string(), "text"),
        (json!({"from": "app@example.com", "to": ["a@example.net"], "raw_base64": "!!!"}).to_string(), "raw_base64"),
        (json!({"from": "app@example.com", "to": ["a@example.net"], "text": "t", "attachments": [{"filename": "a", "content_base64": "%%%"}]}).to_string(), "attachments[0]"),
    ] {
        let (c, b) = baton.post(Some(KEY), None, body.clone()).await;
        assert_error(c, &b, 400, "invalid_request");
        assert!(b["error"]["message"].as_str().unwrap().contains(field), "message should name {field:?}: {b} (request {body})");
    }

    // 403: sender not allowed for this client (as text or as an object).
    let (c, b) = baton
        .post(Some(KEY), None, json!({"from": "ceo@example.org", "to": ["a@example.net"], "text": "t"}).to_string())
        .await;
    assert_error(c, &b, 403, "sender_not_allowed");
    let from = json!({"email": "ceo@example.org", "name": "CEO"});
    let (c, b) =
        baton.post(Some(KEY), None, json!({"from": from, "to": ["a@example.net"], "text": "t"}).to_string()).await;
    assert_error(c, &b, 403, "sender_not_allowed");

    // 422: header injection in subject, header value, address name.
    for body in [
        json!({"from": "app@example.com", "to": ["a@example.net"], "subject": "hi\r\nBcc: victim@example.org", "text": "t"}),
        json!({"from": "app@example.com", "to": ["a@example.net"], "headers": {"X-A": "v\nBcc: victim@example.org"}, "text": "t"}),
        json!({"from": "app@example.com", "to": [{"email": "a@example.net", "name": "A\r\nBcc: victim@example.org"}], "text": "t"}),
        json!({"from": {"email": "app@example.com", "name": "App\r\nBcc: victim@example.org"}, "to": ["a@example.net"], "text": "t"}),
    ] {
        let (c, b) = baton.post(Some(KEY), None, body.to_string()).await;
        assert_error(c, &b, 422, "header_injection");
    }

    // 404: unknown id, unknown path.
    let (c, b) = baton.status_as(KEY, "01NOSUCHMESSAGE").await;
    assert_error(c, &b, 404, "not_found");
    let resp = baton.http.get(format!("{}/v2/nothing", baton.base)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 404);

    // Nothing above was accepted.
    let m = baton.metrics().await;
    assert_eq!(Baton::metric(&m, "baton_messages_received_total", &[]), 0.0);
    assert_eq!(Baton::metric(&m, "baton_ingest_rejections_total", &[("reason", "auth")]), 2.0);
    assert_eq!(Baton::metric(&m, "baton_ingest_rejections_total", &[("reason", "header_injection")]), 4.0);
    assert_eq!(Baton::metric(&m, "baton_ingest_rejections_total", &[("reason", "sender_not_allowed")]), 2.0);
}

#[tokio::test]
async fn oversize_messages_get_413() {
    let (baton, _out) = outbox_baton("", None).await;
    let mut b = baton;
    b.stop().await;
    // A server with a 10 KiB limit.
    let out = tempfile::tempdir().unwrap();
    let body = format!(
        "[providers.outbox]\ntype = \"file\"\ndir = \"{}\"\n[[routes]]\nname = \"default\"\nproviders = [\"outbox\"]\n",
        out.path().display()
    );
    let text = support::baton::config_text(&b.dir, "", &body)
        .replace("shutdown_grace = \"5s\"", "shutdown_grace = \"5s\"\nmax_message_size = \"10KiB\"");
    let loaded = baton::config::load_str(&text, "t.toml", &|_| None).unwrap();
    let running = baton::app::start(loaded).await.unwrap();
    let url = format!("http://{}/v1/messages", running.http_addr);
    let client = reqwest::Client::new();
    for size in [11 * 1024, 200 * 1024] {
        let resp = client
            .post(&url)
            .bearer_auth(KEY)
            .body(json!({"from": "app@example.com", "to": ["a@example.net"], "text": "x".repeat(size)}).to_string())
            .send()
            .await
            .unwrap();
        let code = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap();
        assert_error(code, &v, 413, "too_large");
    }
    let resp = client
        .post(&url)
        .bearer_auth(KEY)
        .body(json!({"from": "app@example.com", "to": ["a@example.net"], "text": "x".repeat(5 * 1024)}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    running.stop().await;
}

#[tokio::test]
async fn spool_full_gives_503_and_stores_nothing_half() {
    let down = MockSmtp::start().await;
    down.set_reply(Stage::Mail, Some("451 4.3.0 down".into()));
    let body = format!(
        "{}\n[retry]\nschedule = [\"1h\"]\n[[routes]]\nname = \"default\"\nproviders = [\"down\"]\n",
        smtp_provider("down", &down, "")
    );
    let baton = Baton::start_with(&body, "max_bytes = \"4KiB\"").await;
    let mut accepted = 0;
    let mut full = None;
    for i in 0..50 {
        let (c, b) = baton.post(Some(KEY), None, message(&["a@example.net"], &format!("fill {i}")).to_string()).await;
        match c {
            202 => accepted += 1,
            _ => {
                full = Some((c, b));
                break;
            }
        }
    }
    let (c, b) = full.expect("the spool filled up");
    assert_error(c, &b, 503, "spool_full");
    assert!(accepted >= 2, "some messages fit before: {accepted}");
    let m = baton.metrics().await;
    assert_eq!(Baton::metric(&m, "baton_messages_received_total", &[]), accepted as f64);
    assert_eq!(Baton::metric(&m, "baton_ingest_rejections_total", &[("reason", "spool_full")]), 1.0);
    assert!(Baton::metric(&m, "baton_spool_bytes", &[]) <= 4096.0);
}

#[tokio::test]
async fn idempotency_key_returns_the_same_message() {
    let (baton, out) = outbox_baton("", None).await;
    let body = message(&["a@example.net"], "once").to_string();
    let (c1, b1) = baton.post(Some(KEY), Some("reset-42"), body.clone()).await;
    let (c2, b2) = baton.post(Some(KEY), Some("reset-42"), body.clone()).await;
    assert_eq!((c1, c2), (202, 202));
    assert_eq!(b1["id"], b2["id"], "same key, same id");
    // The same request written differently (key order, spacing) is still the same request.
    let v: Value = serde_json::from_str(&body).unwrap();
    let reordered = format!(
        "{{ \"text\": {}, \"subject\": {}, \"to\": {}, \"from\": {} }}",
        v["text"], v["subject"], v["to"], v["from"]
    );
    let (c, b) = baton.post(Some(KEY), Some("reset-42"), reordered).await;
    assert_eq!((c, &b["id"]), (202, &b1["id"]), "{b}");
    // The same key with another request is refused, naming the first message; nothing is stored.
    let changed = message(&["a@example.net"], "a different message").to_string();
    let (c, b) = baton.post(Some(KEY), Some("reset-42"), changed).await;
    assert_error(c, &b, 422, "idempotency_key_reused");
    assert!(b["error"]["message"].as_str().unwrap().contains(b1["id"].as_str().unwrap()), "{b}");
    // Concurrent duplicates too.
    let (r1, r2) = tokio::join!(
        baton.post(Some(KEY), Some("race"), body.clone()),
        baton.post(Some(KEY), Some("race"), body.clone())
    );
    assert_eq!(r1.1["id"], r2.1["id"]);
    // Another key, or another client with the same key, is another message.
    let (_, b3) = baton.post(Some(KEY), Some("reset-43"), body.clone()).await;
    assert_ne!(b1["id"], b3["id"]);
    let other = json!({"from": "o@example.org", "to": ["a@example.net"], "text": "t"}).to_string();
    let (c4, b4) = baton.post(Some(OTHER_KEY), Some("reset-42"), other).await;
    assert_eq!(c4, 202);
    assert_ne!(b1["id"], b4["id"]);
    for id in [&b1["id"], &r1.1["id"], &b3["id"]] {
        baton.wait_final(id.as_str().unwrap()).await;
    }
    // The other client's message too (its status needs its own key).
    let other_id = b4["id"].as_str().unwrap();
    let start = std::time::Instant::now();
    while baton.status_as(OTHER_KEY, other_id).await.1["status"] != "delivered" {
        assert!(start.elapsed() < support::baton::DEADLINE, "other client's message not delivered");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let files = std::fs::read_dir(out.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "eml"))
        .count();
    assert_eq!(files, 4, "reset-42, race, reset-43 and the other client's message");
    let m = baton.metrics().await;
    assert_eq!(Baton::metric(&m, "baton_messages_received_total", &[]), 4.0);
    let reused = [("ingress", "http"), ("reason", "idempotency_conflict")];
    assert_eq!(Baton::metric(&m, "baton_ingest_rejections_total", &reused), 1.0);
}

#[tokio::test]
async fn status_is_private_to_the_client() {
    let (baton, _out) = outbox_baton("", None).await;
    let id = baton.send(message(&["a@example.net"], "mine")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["id"], id.as_str());
    let attempt = &status["attempts"][0];
    for field in ["at", "provider", "outcome", "detail", "duration_ms"] {
        assert!(!attempt[field].is_null(), "attempt has {field}: {attempt}");
    }
    for field in ["email", "status", "provider", "provider_message_id", "detail"] {
        assert!(status["recipients"][0].get(field).is_some(), "recipient has {field}");
    }
    let (code, body) = baton.status_as(OTHER_KEY, &id).await;
    assert_error(code, &body, 404, "not_found");
}

#[tokio::test]
async fn too_many_recipients_are_refused_before_any_work_per_recipient() {
    let (baton, _out) = outbox_baton("", None).await;
    // 90,000 distinct recipients (1.3 MB): refused on the count alone, before any address is
    // parsed or compared.
    let to: Vec<String> = (0..90_000).map(|i| format!("user{i}@example.net")).collect();
    let (code, body) =
        baton.post(Some(KEY), None, json!({"from": "app@example.com", "to": to, "text": "x"}).to_string()).await;
    assert_error(code, &body, 400, "invalid_request");
    assert!(body["error"]["message"].as_str().unwrap().contains("at most"), "{body}");
    // Within the limit, duplicates (any case) are folded into one envelope recipient.
    let id = baton.send(json!({"from": "app@example.com", "to": ["a@example.net", "A@example.net"], "cc": ["a@EXAMPLE.net"], "text": "x"})).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["recipients"].as_array().unwrap().len(), 1, "{status:#}");
}

#[tokio::test]
async fn the_bearer_scheme_is_matched_in_any_case_and_spaces_around_the_key_are_ignored() {
    let (baton, _out) = outbox_baton("", Some("")).await;
    let good = message(&["a@example.net"], "s").to_string();
    // README, "API": the scheme in any case, spaces around the key ignored; another scheme is refused.
    let http = reqwest::Client::new();
    for (authorization, want) in [
        (format!("bearer {KEY}"), 202),
        (format!("BEARER {KEY}"), 202),
        (format!("Bearer   {KEY}  "), 202),
        (format!("Basic {KEY}"), 401),
        ("Bearer ".to_string(), 401),
    ] {
        let resp = http
            .post(format!("{}/v1/messages", baton.base))
            .header("authorization", &authorization)
            .header("content-type", "application/json")
            .body(good.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), want, "{authorization:?}");
    }
}
