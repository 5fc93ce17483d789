//! Resend's official Python SDK, pointed at Baton by its base URL only: sends (names, cc/bcc,
//! UTF-8 subject, html + text, attachments, an inline image, tags), a batch, idempotency, the
//! SDK's own errors for a bad key and a bad field, reading a message back; and failover behind
//! the compatible API, delivered exactly once.

mod support;

use serde_json::Value;
use support::baton::{Baton, KEY};
use support::mock_smtp::{MockSmtp, Stage};
use support::sdk::{run_python, run_python_json, two_provider_route};

/// Runs `body` after setting up the SDK for this Baton; each printed line is a JSON value.
async fn sdk(baton: &Baton, key: &str, body: &str) -> Vec<Value> {
    let script = format!(
        "import json, os, resend\nresend.api_key = os.environ['KEY']\nresend.api_url = os.environ['BASE']\n{body}"
    );
    run_python_json(&script, &[("KEY", key), ("BASE", &baton.base)]).await
}

#[tokio::test]
async fn the_resend_sdk_sends_through_baton_and_gets_its_own_answers() {
    let (primary, backup) = (MockSmtp::start().await, MockSmtp::start().await);
    let baton = Baton::start(&two_provider_route(&primary, &backup)).await;
    let out = sdk(
        &baton,
        KEY,
        r#"
r = resend.Emails.send({
    "from": "Acme <app@example.com>", "to": ["Alice <alice@example.net>"], "cc": "bob@example.net",
    "bcc": ["audit@example.com"], "reply_to": "support@example.com", "subject": "Grüße aus Köln",
    "html": "<p>Hi <img src=\"cid:logo\"></p>", "text": "Hi", "headers": {"X-Entity-Ref-ID": "42"},
    "tags": [{"name": "category", "value": "reset"}],
    "attachments": [{"filename": "a.txt", "content": list(b"hello")},
                    {"filename": "logo.png", "content": list(b"PNG"), "content_id": "logo", "content_type": "image/png"}],
})
print(json.dumps({"sent": r["id"]}))
print(json.dumps({"read": dict(resend.Emails.get(r["id"]))}))
batch = resend.Batch.send([
    {"from": "app@example.com", "to": ["carol@example.net"], "subject": "one", "text": "1"},
    {"from": "app@example.com", "to": ["dave@example.net"], "subject": "two", "text": "2"},
])
print(json.dumps({"batch": [d["id"] for d in batch["data"]]}))
first = resend.Emails.send({"from": "app@example.com", "to": "erin@example.net", "subject": "once", "text": "x"}, {"idempotency_key": "reset-7"})
again = resend.Emails.send({"from": "app@example.com", "to": "erin@example.net", "subject": "once", "text": "x"}, {"idempotency_key": "reset-7"})
print(json.dumps({"idempotent": [first["id"], again["id"]]}))
for params in [{"from": "app@example.com", "to": "x@example.net", "subject": "s", "text": "t", "scheduled_at": "in 1 hour"},
               {"from": "app@example.com", "to": "not an address", "subject": "s", "text": "t"}]:
    try:
        resend.Emails.send(params)
        print(json.dumps({"error": None}))
    except resend.exceptions.ResendError as e:
        print(json.dumps({"error": type(e).__name__, "message": str(e)}))
"#,
    )
    .await;
    let id = out[0]["sent"].as_str().unwrap().to_string();
    let status = baton.wait_final(&id).await;
    assert_eq!(status["status"], "delivered", "{status:#}");
    assert_eq!(status["recipients"].as_array().unwrap().len(), 3, "to, cc and bcc: {status:#}");
    let got = primary.wait_for_messages(1, support::baton::DEADLINE).await;
    let text = got[0].data_str();
    assert!(
        text.contains("From: \"Acme\" <app@example.com>") || text.contains("From: Acme <app@example.com>"),
        "{text}"
    );
    assert!(text.contains("Subject: =?utf-8?"), "UTF-8 subject encoded: {text}");
    assert!(text.contains("X-Entity-Ref-ID: 42") && text.contains("Reply-To: <support@example.com>"), "{text}");
    assert!(text.contains("Content-ID: <logo>") && text.contains("filename=\"a.txt\""), "{text}");
    assert!(!text.contains("audit@example.com"), "bcc stays off the headers: {text}");
    assert_eq!(out[1]["read"]["id"], id.as_str());
    assert_eq!(out[1]["read"]["object"], "email");
    assert_eq!(out[2]["batch"].as_array().unwrap().len(), 2);
    assert_eq!(out[3]["idempotent"][0], out[3]["idempotent"][1], "same key, same message");
    assert_eq!(out[4]["error"], "ValidationError", "{:?}", out[4]);
    assert!(out[4]["message"].as_str().unwrap().contains("scheduled_at"));
    assert_eq!(out[5]["error"], "ValidationError", "{:?}", out[5]);
    assert!(out[5]["message"].as_str().unwrap().contains("to[0]"), "names the field: {:?}", out[5]);
    for id in out[2]["batch"].as_array().unwrap() {
        assert_eq!(baton.wait_final(id.as_str().unwrap()).await["status"], "delivered");
    }
}

#[tokio::test]
async fn a_bad_key_is_the_sdks_own_error_and_a_suspended_primary_still_delivers_once() {
    let (primary, backup) = (MockSmtp::start().await, MockSmtp::start().await);
    primary.set_reply(Stage::EndOfData, Some("554 5.7.1 Your account has been suspended".into()));
    let baton = Baton::start(&two_provider_route(&primary, &backup)).await;
    let out = sdk(
        &baton,
        "not-a-key-of-this-baton",
        r#"
try:
    resend.Emails.send({"from": "app@example.com", "to": "a@example.net", "subject": "s", "text": "t"})
except resend.exceptions.ResendError as e:
    print(json.dumps({"error": type(e).__name__}))
"#,
    )
    .await;
    assert_eq!(out[0]["error"], "InvalidApiKeyError");
    let out = sdk(&baton, KEY, r#"print(json.dumps(resend.Emails.send({"from": "app@example.com", "to": "a@example.net", "subject": "failover", "text": "t"})))"#).await;
    let status = baton.wait_final(out[0]["id"].as_str().unwrap()).await;
    assert_eq!(status["recipients"][0]["provider"], "backup", "{status:#}");
    assert_eq!(backup.message_count(), 1);
    assert_eq!(primary.message_count(), 0);
}

/// HTTPS ingest with a self-signed certificate: Baton's own API and the Resend SDK (which
/// trusts the test CA through REQUESTS_CA_BUNDLE) both work over TLS.
#[tokio::test]
async fn https_ingest_serves_the_same_apis_over_tls() {
    let cert = support::certs::TestCert::generate();
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), &cert.ca_pem).unwrap();
    let (primary, backup) = (MockSmtp::start().await, MockSmtp::start().await);
    let server = format!("https_listen = \"127.0.0.1:0\"\n{}", cert.server_tls_line());
    let baton = Baton::start_with_server(&server, "", &two_provider_route(&primary, &backup)).await;
    let https = format!("https://localhost:{}", baton.https_addr().port());
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = client
        .post(format!("{https}/v1/messages"))
        .bearer_auth(KEY)
        .json(&support::baton::message(&["alice@example.net"], "over https"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let script = "import json, os, resend\nresend.api_key = os.environ['KEY']\nresend.api_url = os.environ['BASE']\n\
                  print(json.dumps(resend.Emails.send({'from': 'app@example.com', 'to': 'a@example.net', 'subject': 's', 'text': 't'})))";
    let ca_path = ca.path().to_str().unwrap();
    let out = run_python(script, &[("KEY", KEY), ("BASE", &https), ("REQUESTS_CA_BUNDLE", ca_path)]).await;
    let id = serde_json::from_str::<Value>(out.trim()).unwrap()["id"].as_str().unwrap().to_string();
    assert_eq!(baton.wait_final(&id).await["status"], "delivered");
}
