//! What Baton hands to the next hop: no other tenant's From:/Sender:, no Bcc: header, no bare
//! CR or NUL, no client-made trace or authentication headers.

mod support;

use base64::Engine;
use serde_json::{Value, json};
use support::baton::{Baton, KEY};

fn setup_body(out: &std::path::Path, client_extra: &str) -> String {
    format!(
        "[[clients]]\nname = \"app\"\napi_keys = [\"{KEY}\"]\nallowed_senders = [\"*@example.com\"]\n{client_extra}\n\n\
         [providers.outbox]\ntype = \"file\"\ndir = \"{}\"\n\n[[routes]]\nname = \"default\"\nproviders = [\"outbox\"]\n",
        out.display()
    )
}

fn raw(text: &str) -> Value {
    json!({"from": "app@example.com", "to": ["alice@example.net"],
           "raw_base64": base64::engine::general_purpose::STANDARD.encode(text)})
}

#[tokio::test]
async fn from_and_sender_headers_must_be_the_clients_own() {
    let out = tempfile::tempdir().unwrap();
    let baton = Baton::start(&setup_body(out.path(), "header_senders = [\"*@customer.example\"]")).await;
    for header in ["From: ceo@example.org", "Sender: billing@example.org", "From: a@example.com, b@example.org"] {
        let (code, body) =
            baton.post(Some(KEY), None, raw(&format!("{header}\r\nSubject: x\r\n\r\nhi\r\n")).to_string()).await;
        assert_eq!(code, 403, "{header}: {body}");
        assert_eq!(body["error"]["code"], "sender_not_allowed");
        assert!(body["error"]["message"].as_str().unwrap().contains("example.org"), "{body}");
    }
    // Its own domain, and a domain it sends on behalf of (header only), are fine.
    for header in ["From: App <app@example.com>", "From: Customer <news@customer.example>\r\nSender: app@example.com"] {
        let (code, body) =
            baton.post(Some(KEY), None, raw(&format!("{header}\r\nSubject: x\r\n\r\nhi\r\n")).to_string()).await;
        assert_eq!(code, 202, "{header}: {body}");
    }
    let m = baton.metrics().await;
    let refused = Baton::metric(&m, "baton_ingest_rejections_total", &[("reason", "sender_not_allowed")]);
    assert_eq!(refused, 3.0);
}

#[tokio::test]
async fn bcc_headers_never_leave_baton() {
    let out = tempfile::tempdir().unwrap();
    let baton = Baton::start(&setup_body(out.path(), "")).await;
    let text = "From: app@example.com\r\nTo: alice@example.net\r\nBcc: audit@example.com\r\nSubject: x\r\n\r\nhi\r\n";
    let mut msg = raw(text);
    msg["bcc"] = json!(["audit@example.com"]);
    let (code, body) = baton.post(Some(KEY), None, msg.to_string()).await;
    assert_eq!(code, 202, "{body}");
    let id = body["id"].as_str().unwrap();
    let status = baton.wait_final(id).await;
    assert_eq!(status["recipients"].as_array().unwrap().len(), 2, "the Bcc recipient still gets it: {status:#}");
    let eml = std::fs::read_to_string(out.path().join(format!("{id}.eml"))).unwrap();
    assert!(!eml.to_ascii_lowercase().contains("bcc:"), "{eml}");
    assert!(eml.contains("To: alice@example.net\r\nSubject: x\r\n"), "the rest is byte for byte: {eml}");
}

#[tokio::test]
async fn bare_cr_nul_and_trace_headers_are_refused_with_a_clear_error() {
    let out = tempfile::tempdir().unwrap();
    let baton = Baton::start(&setup_body(out.path(), "")).await;
    let cases = [
        json!({"from": "app@example.com", "to": ["a@example.net"], "text": "line\r.\rsmuggled"}),
        json!({"from": "app@example.com", "to": ["a@example.net"], "html": "<p>nul\u{0}</p>"}),
        raw("From: app@example.com\r\n\r\nhi\r.\rMAIL FROM:<x@example.org>\r\n"),
        raw("From: app@example.com\r\n\r\nhi\0\r\n"),
        json!({"from": "app@example.com", "to": ["a@example.net"], "text": "t", "headers": {"Received": "from forged"}}),
        json!({"from": "app@example.com", "to": ["a@example.net"], "text": "t", "headers": {"DKIM-Signature": "v=1"}}),
        json!({"from": "app@example.com", "to": ["a@example.net"], "text": "t", "headers": {"Resent-From": "x@example.org"}}),
        json!({"from": "app@example.com", "to": ["a@example.net"], "text": "t", "headers": {"Authentication-Results": "pass"}}),
    ];
    for case in cases {
        let (code, body) = baton.post(Some(KEY), None, case.to_string()).await;
        assert_eq!(code, 400, "{case}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("bare CR") || message.contains("NUL") || message.contains("trace"), "{message}");
    }
    let m = baton.metrics().await;
    assert_eq!(Baton::metric(&m, "baton_messages_received_total", &[]), 0.0, "nothing refused was stored");
    // CRLF line endings in text are fine.
    let ok = json!({"from": "app@example.com", "to": ["a@example.net"], "text": "one\r\ntwo\r\n"});
    assert_eq!(baton.post(Some(KEY), None, ok.to_string()).await.0, 202);
}

#[tokio::test]
async fn provider_replies_never_carry_credentials_in_any_encoding() {
    use support::baton::smtp_provider;
    use support::mock_smtp::{MockSmtp, Stage};
    let password = "relay-secret-password-42";
    let plain = base64::engine::general_purpose::STANDARD.encode(format!("\0baton\0{password}"));
    let relay = MockSmtp::start().await;
    relay.set_credentials(Some(("baton", password)));
    // A relay that echoes the login it was given (seen in the wild in debug builds of relays).
    relay.set_reply(Stage::Mail, Some(format!("451 4.3.0 AUTH PLAIN {plain} then {password} rejected")));
    let backup = MockSmtp::start().await;
    let body = format!(
        "{}{}\n[retry]\nschedule = [\"1h\"]\n\n[[routes]]\nname = \"default\"\nproviders = [\"relay\", \"backup\"]\n",
        smtp_provider("relay", &relay, &format!("username = \"baton\"\npassword = \"{password}\"")),
        smtp_provider("backup", &backup, "")
    );
    let baton = Baton::start(&body).await;
    let id = baton.send(support::baton::message(&["alice@example.net"], "echo")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["attempts"][0]["provider"], "relay", "{status:#}");
    let seen = format!("{status} {} {}", baton.providers().await, baton.metrics().await);
    assert!(seen.contains("[redacted]"), "{status:#}");
    for secret in [password, plain.as_str(), plain.trim_end_matches('=')] {
        assert!(!seen.contains(secret), "{secret} leaked: {status:#}");
    }
}
