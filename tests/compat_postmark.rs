//! Postmark's Python SDK (postmarker), pointed at Baton by its API root only: a send with
//! names, cc/bcc, UTF-8 subject, html + text, an attachment and an inline image, tag and
//! metadata; a batch with one bad item answered in place; the SDK's own ClientError with
//! Postmark's codes for a bad token and a bad field; failover behind the API, exactly once.

mod support;

use serde_json::Value;
use support::baton::{Baton, KEY};
use support::mock_smtp::{MockSmtp, Stage};
use support::sdk::{run_python_json, two_provider_route};

async fn sdk(baton: &Baton, token: &str, body: &str) -> Vec<Value> {
    let script = format!(
        "import json, os\nfrom postmarker.core import PostmarkClient\nfrom postmarker.exceptions import ClientError\n\
         client = PostmarkClient(server_token=os.environ['TOKEN'], root_api_url=os.environ['BASE'] + '/')\n{body}"
    );
    run_python_json(&script, &[("TOKEN", token), ("BASE", &baton.base)]).await
}

#[tokio::test]
async fn postmarker_sends_through_baton_and_gets_postmarks_answers() {
    let (primary, backup) = (MockSmtp::start().await, MockSmtp::start().await);
    let baton = Baton::start(&two_provider_route(&primary, &backup)).await;
    let out = sdk(
        &baton,
        KEY,
        r#"
r = client.emails.send(
    From="Acme <app@example.com>", To='"Doe, Alice" <alice@example.net>', Cc="bob@example.net",
    Bcc="audit@example.com", Subject="Grüße aus Köln", HtmlBody='<p>Hi <img src="cid:logo"></p>', TextBody="Hi",
    Headers={"X-Ref": "42"}, Tag="reset", Metadata={"user": "7"}, ReplyTo="support@example.com",
    Attachments=[{"Name": "a.txt", "Content": "aGVsbG8=", "ContentType": "text/plain"},
                 {"Name": "logo.png", "Content": "UE5H", "ContentType": "image/png", "ContentID": "cid:logo"}],
)
print(json.dumps(r))
batch = client.emails.send_batch(
    {"From": "app@example.com", "To": "carol@example.net", "Subject": "one", "TextBody": "1"},
    {"From": "app@example.com", "To": "not an address", "Subject": "two", "TextBody": "2"},
)
print(json.dumps(batch))
try:
    client.emails.send(From="not an address", To="x@example.net", Subject="s", TextBody="t")
    print(json.dumps({"error": None}))
except ClientError as e:
    print(json.dumps({"error": e.error_code, "message": str(e)}))
"#,
    )
    .await;
    assert_eq!(out[0]["ErrorCode"], 0, "{:?}", out[0]);
    assert_eq!(out[0]["Message"], "OK");
    let id = out[0]["MessageID"].as_str().unwrap().to_string();
    let status = baton.wait_final(&id).await;
    assert_eq!(status["status"], "delivered", "{status:#}");
    assert_eq!(status["recipients"].as_array().unwrap().len(), 3, "{status:#}");
    let text = primary.wait_for_messages(1, support::baton::DEADLINE).await[0].data_str();
    assert!(text.contains("Subject: =?utf-8?") && text.contains("X-Ref: 42"), "{text}");
    assert!(text.contains("Content-ID: <logo>") && text.contains("\"Doe, Alice\""), "{text}");
    assert!(!text.contains("audit@example.com"), "{text}");
    let batch = out[1].as_array().unwrap();
    assert_eq!(batch[0]["ErrorCode"], 0, "{batch:?}");
    assert_eq!(batch[1]["ErrorCode"], 300, "the bad item is answered in place: {batch:?}");
    assert!(batch[1]["Message"].as_str().unwrap().contains("To"), "{batch:?}");
    assert_eq!(out[2]["error"], 300, "{:?}", out[2]);
    assert!(out[2]["message"].as_str().unwrap().contains("from"), "names the field: {:?}", out[2]);
}

#[tokio::test]
async fn a_bad_token_is_error_code_10_and_a_suspended_primary_still_delivers_once() {
    let (primary, backup) = (MockSmtp::start().await, MockSmtp::start().await);
    primary.set_reply(Stage::EndOfData, Some("554 5.7.1 Your account has been suspended".into()));
    let baton = Baton::start(&two_provider_route(&primary, &backup)).await;
    let send = r#"
try:
    print(json.dumps(client.emails.send(From="app@example.com", To="a@example.net", Subject="s", TextBody="t")))
except ClientError as e:
    print(json.dumps({"error": e.error_code}))
"#;
    assert_eq!(sdk(&baton, "not-a-key-of-this-baton", send).await[0]["error"], 10);
    let out = sdk(&baton, KEY, send).await;
    assert!(out[0]["MessageID"].is_string(), "{out:?}");
    let status = baton.wait_final(out[0]["MessageID"].as_str().unwrap()).await;
    assert_eq!(status["recipients"][0]["provider"], "backup", "{status:#}");
    assert_eq!((primary.message_count(), backup.message_count()), (0, 1));
}
