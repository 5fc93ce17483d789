//! Mailchimp Transactional's Python SDK, pointed at Baton by its host only: ping, a send with
//! names, cc/bcc, UTF-8 subject, html + text, an attachment and an inline image, tags and
//! metadata (one message per recipient, as Mandrill sends it); merge vars rendered per
//! recipient before spooling; send-raw byte for byte; the
//! SDK's ApiClientError with Mandrill's error names; failover behind the API, exactly once.

mod support;

use serde_json::Value;
use support::baton::{Baton, KEY};
use support::mock_smtp::{MockSmtp, Stage};
use support::sdk::{run_python_json, two_provider_route};

async fn sdk(baton: &Baton, key: &str, body: &str) -> Vec<Value> {
    let script = format!(
        r#"import json, os
import mailchimp_transactional as MailchimpTransactional
from mailchimp_transactional.api_client import ApiClientError
client = MailchimpTransactional.Client(os.environ["KEY"])
client.api_client.host = os.environ["BASE"] + "/api/1.3"
def call(f, body):
    try:
        print(json.dumps({{"ok": f(body)}}))
    except ApiClientError as e:
        print(json.dumps({{"error": e.text, "status": e.status_code}}))
{body}"#
    );
    run_python_json(&script, &[("KEY", key), ("BASE", &baton.base)]).await
}

#[tokio::test]
async fn the_mandrill_sdk_sends_through_baton_and_gets_its_own_answers() {
    let (primary, backup) = (MockSmtp::start().await, MockSmtp::start().await);
    let baton = Baton::start(&two_provider_route(&primary, &backup)).await;
    let raw = "From: app@example.com\r\nTo: raw@example.net\r\nMessage-ID: <raw-1@example.com>\r\nDate: Wed, 2 Dec 2026 10:00:00 +0000\r\nSubject: raw\r\n\r\nbyte for byte\r\n";
    let out = sdk(
        &baton,
        KEY,
        &format!(
            r#"
print(json.dumps({{"ok": client.users.ping2({{}})}}))
call(client.messages.send, {{"message": {{
    "from_email": "app@example.com", "from_name": "Acme", "subject": "Grüße aus Köln", "text": "Hi",
    "html": '<p>Hi <img src="cid:logo"></p>',
    "to": [{{"email": "alice@example.net", "name": "Alice"}}, {{"email": "bob@example.net", "type": "cc"}}],
    "bcc_address": "audit@example.com", "headers": {{"X-Ref": "42"}}, "tags": ["reset"], "metadata": {{"user": "7"}},
    "attachments": [{{"type": "text/plain", "name": "a.txt", "content": "aGVsbG8="}}],
    "images": [{{"type": "image/png", "name": "logo", "content": "UE5H"}}]}}}})
call(client.messages.send_raw, {{"raw_message": {raw:?}}})
call(client.messages.send, {{"message": {{"from_email": "app@example.com", "subject": "Hi *|FNAME|*",
    "to": [{{"email": "carol@example.net"}}, {{"email": "dan@example.net"}}], "text": "Code *|CODE|* for *|fname|*",
    "global_merge_vars": [{{"name": "fname", "content": "friend"}}],
    "merge_vars": [{{"rcpt": "carol@example.net", "vars": [{{"name": "FNAME", "content": "Carol"}}, {{"name": "code", "content": 4711}}]}}]}}}})
call(client.messages.send, {{"message": {{"from_email": "app@example.com", "to": [{{"email": "a@example.net"}}],
    "text": "*|IF:N|*x*|END:IF|*", "merge_vars": [{{"rcpt": "a@example.net", "vars": [{{"name": "N", "content": "v"}}]}}]}}}})
"#
        ),
    )
    .await;
    assert_eq!(out[0]["ok"]["PING"], "PONG!", "{:?}", out[0]);
    let results = out[1]["ok"].as_array().unwrap_or_else(|| panic!("{:?}", out[1]));
    assert_eq!(results.len(), 2, "one entry per recipient: {results:?}");
    assert!(results.iter().all(|r| r["status"] == "queued" && r.get("queued_reason").is_none_or(Value::is_null)));
    assert_ne!(results[0]["_id"], results[1]["_id"], "preserve_recipients false: a message each");
    for r in results {
        assert_eq!(baton.wait_final(r["_id"].as_str().unwrap()).await["status"], "delivered");
    }
    let alice = primary.messages().into_iter().find(|m| m.rcpts.contains(&"alice@example.net".to_string())).unwrap();
    let text = alice.data_str();
    assert!(
        text.contains("Subject: =?utf-8?") && text.contains("Content-ID: <logo>") && text.contains("X-Ref: 42"),
        "{text}"
    );
    assert!(!text.contains("bob@example.net"), "recipients are not shown to each other: {text}");
    assert!(alice.rcpts.contains(&"audit@example.com".to_string()), "bcc_address gets a copy: {:?}", alice.rcpts);
    let raw_id = out[2]["ok"][0]["_id"].as_str().unwrap_or_else(|| panic!("{:?}", out[2]));
    baton.wait_final(raw_id).await;
    let sent = primary.messages().into_iter().find(|m| m.rcpts == ["raw@example.net"]).unwrap();
    assert_eq!(sent.data_str(), raw, "send-raw keeps the bytes");
    for r in out[3]["ok"].as_array().unwrap_or_else(|| panic!("{:?}", out[3])) {
        baton.wait_final(r["_id"].as_str().unwrap()).await;
    }
    let to = |rcpt: &str| primary.messages().into_iter().find(|m| m.rcpts == [rcpt]).unwrap().data_str();
    let (carol, dan) = (to("carol@example.net"), to("dan@example.net"));
    assert!(carol.contains("Subject: Hi Carol") && carol.contains("Code 4711 for Carol"), "{carol}");
    assert!(dan.contains("Subject: Hi friend") && dan.contains("Code  for friend"), "{dan}");
    assert_eq!(out[4]["error"]["name"], "ValidationError", "{:?}", out[4]);
    assert!(out[4]["error"]["message"].as_str().unwrap().starts_with("text: *|IF:N|*"), "{:?}", out[4]);
}

#[tokio::test]
async fn a_bad_key_is_invalid_key_and_a_suspended_primary_still_delivers_once() {
    let (primary, backup) = (MockSmtp::start().await, MockSmtp::start().await);
    primary.set_reply(Stage::EndOfData, Some("554 5.7.1 Your account has been suspended".into()));
    let baton = Baton::start(&two_provider_route(&primary, &backup)).await;
    let send = r#"call(client.messages.send, {"message": {"from_email": "app@example.com", "to": [{"email": "a@example.net"}], "subject": "failover", "text": "t"}})"#;
    let out = sdk(&baton, "not-a-key-of-this-baton", send).await;
    assert_eq!(out[0]["error"]["name"], "Invalid_Key", "{:?}", out[0]);
    let out = sdk(&baton, KEY, send).await;
    let status = baton.wait_final(out[0]["ok"][0]["_id"].as_str().unwrap()).await;
    assert_eq!(status["recipients"][0]["provider"], "backup", "{status:#}");
    assert_eq!((primary.message_count(), backup.message_count()), (0, 1));
}
