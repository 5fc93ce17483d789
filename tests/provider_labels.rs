//! Tags and metadata given at ingest reach every HTTP provider in that provider's own fields
//! (see `src/provider/labels.rs`): one message with two tags (one not ASCII) and two metadata
//! fields, sent through each adapter against its local mock, and the request it made read back.

mod provider_common;
mod support;

use provider_common::config;
use serde_json::{Value, json};
use support::baton::{Baton, DEADLINE};
use support::mock_http::{MockHttp, Recorded, Reply};
use support::mock_smtp::MockSmtp;

const HEALTH: &str = "probe_interval = \"1h\"";

fn labelled_message() -> Value {
    json!({
        "from": "App <app@example.com>", "to": ["alice@example.net"], "subject": "Reset", "text": "hello",
        "tags": ["password-reset", "grüße"], "metadata": {"user_id": "7", "plan": "pro"},
    })
}

/// Sends the labelled message through a Baton on `config` whose first provider is `mock`,
/// answering `send_path` with `ok`; the request the provider got.
async fn sent_request(config: String, mock: &MockHttp, send_path: &str, ok: Reply) -> Recorded {
    mock.reply(send_path, ok);
    let baton = Baton::start(&config).await;
    let id = baton.send(labelled_message()).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["tags"], json!(["password-reset", "grüße"]), "{status:#}");
    assert_eq!(status["metadata"]["user_id"], "7", "{status:#}");
    mock.wait_for_requests(send_path, 1, DEADLINE).await.remove(0)
}

async fn api_request(kind: &str, table: &str, send_path: &str, ok: Reply) -> Recorded {
    let mock = MockHttp::start().await;
    let backup = MockSmtp::start().await;
    let body = config(kind, &mock.url(), table, &backup, HEALTH);
    sent_request(body, &mock, send_path, ok).await
}

#[tokio::test]
async fn sendgrid_gets_categories_and_custom_args() {
    let ok = Reply::Static { status: 202, headers: vec![("x-message-id".into(), "sg-1".into())], body: String::new() };
    let request = api_request("sendgrid", "api_key = \"SG.key\"\n", "/v3/mail/send", ok).await;
    let body = request.json();
    assert_eq!(body["categories"], json!(["password-reset"]), "non-ASCII categories are left out: {body}");
    assert_eq!(body["custom_args"], json!({"plan": "pro", "user_id": "7"}), "{body}");
}

#[tokio::test]
async fn postmark_gets_the_first_tag_and_metadata() {
    let ok = Reply::json(
        200,
        json!({"To": "alice@example.net", "SubmittedAt": "2026-01-01T00:00:00Z", "MessageID": "pm-1", "ErrorCode": 0, "Message": "OK"}),
    );
    let request = api_request("postmark", "server_token = \"pm-token\"\n", "/email", ok).await;
    let body = request.json();
    assert_eq!(body["Tag"], "password-reset", "{body}");
    assert_eq!(body["Metadata"], json!({"plan": "pro", "user_id": "7"}), "{body}");
}

#[tokio::test]
async fn resend_gets_name_value_tags() {
    let ok = Reply::json(200, json!({"id": "49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"}));
    let request = api_request("resend", "api_key = \"re_key\"\n", "/emails", ok).await;
    let body = request.json();
    assert_eq!(
        body["tags"],
        json!([{"name": "plan", "value": "pro"}, {"name": "user_id", "value": "7"}, {"name": "tag", "value": "password-reset"}]),
        "a tag outside Resend's character rules is left out: {body}"
    );
}

#[tokio::test]
async fn mandrill_gets_x_mc_headers_in_the_raw_message() {
    let ok = Reply::json(200, json!([{"email": "alice@example.net", "status": "sent", "_id": "md-1"}]));
    let request = api_request("mandrill", "api_key = \"md-key\"\n", "/messages/send-raw", ok).await;
    let raw = request.json()["raw_message"].as_str().unwrap().to_string();
    assert!(raw.starts_with("X-MC-Tags: password-reset\r\nX-MC-Metadata: {"), "{raw}");
    assert!(raw.contains(r#""user_id":"7""#), "{raw}");
}

#[tokio::test]
async fn mailgun_gets_o_tag_and_v_variables() {
    let ok = Reply::json(200, json!({"id": "<mg-1@example.com>", "message": "Queued. Thank you."}));
    let table = "api_key = \"mg-key\"\ndomain = \"mg.example.com\"\n";
    let request = api_request("mailgun", table, "/v3/mg.example.com/messages.mime", ok).await;
    let form = request.text();
    assert!(form.contains("name=\"o:tag\"\r\n\r\npassword-reset\r\n"), "{form}");
    assert!(form.contains("name=\"v:user_id\"\r\n\r\n7\r\n"), "{form}");
    assert!(form.contains("name=\"v:plan\"\r\n\r\npro\r\n"), "{form}");
}

#[tokio::test]
async fn ses_gets_email_tags() {
    let mock = MockHttp::start().await;
    let backup = MockSmtp::start().await;
    let table = format!(
        "[providers.ses]\ntype = \"ses\"\nregion = \"eu-west-1\"\naccess_key_id = \"AKIAEXAMPLEKEY000001\"\nsecret_access_key = \"example-secret\"\nendpoint = \"{}\"\n{}\n[health]\n{HEALTH}\n\n[[routes]]\nname = \"default\"\nproviders = [\"ses\", \"backup\"]\n",
        mock.url(),
        support::baton::smtp_provider("backup", &backup, ""),
    );
    let ok = Reply::json(200, json!({"MessageId": "ses-1"}));
    let request = sent_request(table, &mock, "/v2/email/outbound-emails", ok).await;
    let body = request.json();
    assert_eq!(
        body["EmailTags"],
        json!([{"Name": "plan", "Value": "pro"}, {"Name": "user_id", "Value": "7"}, {"Name": "tag", "Value": "password-reset"}]),
        "{body}"
    );
}
