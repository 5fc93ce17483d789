//! SendGrid's Python SDK, pointed at Baton by its host only: a send with names, cc/bcc, UTF-8
//! subject, html + text, an attachment and an inline image, categories and custom args; two
//! personalizations with substitutions (two messages, each rendered); the SDK's own errors for a bad key, a sender the client
//! may not use and an unsupported template; failover behind the API, exactly once.

mod support;

use serde_json::Value;
use support::baton::{Baton, KEY};
use support::mock_smtp::{MockSmtp, Stage};
use support::sdk::{run_python_json, two_provider_route};

/// Runs `body` with `sg` (a SendGridAPIClient on this Baton) and `send(mail)`, which prints
/// the answer's status and X-Message-Id, or the SDK's error class, status and body.
async fn sdk(baton: &Baton, key: &str, body: &str) -> Vec<Value> {
    let script = format!(
        r#"import json, os
from sendgrid import SendGridAPIClient
from python_http_client.exceptions import HTTPError
sg = SendGridAPIClient(api_key=os.environ["KEY"], host=os.environ["BASE"])
def send(mail):
    try:
        r = sg.send(mail) if not isinstance(mail, dict) else sg.client.mail.send.post(request_body=mail)
        print(json.dumps({{"status": r.status_code, "id": r.headers.get("X-Message-Id")}}))
    except HTTPError as e:
        print(json.dumps({{"error": type(e).__name__, "status": e.status_code, "body": json.loads(e.body)}}))
{body}"#
    );
    run_python_json(&script, &[("KEY", key), ("BASE", &baton.base)]).await
}

#[tokio::test]
async fn the_sendgrid_sdk_sends_through_baton_and_gets_its_own_answers() {
    let (primary, backup) = (MockSmtp::start().await, MockSmtp::start().await);
    let baton = Baton::start(&two_provider_route(&primary, &backup)).await;
    let out = sdk(
        &baton,
        KEY,
        r#"
from sendgrid.helpers.mail import Mail, Cc, Bcc, Attachment, FileContent, FileName, FileType, Disposition, ContentId, Category, CustomArg
m = Mail(from_email=("app@example.com", "Acme"), to_emails=[("alice@example.net", "Alice")], subject="Grüße aus Köln",
         plain_text_content="Hi", html_content='<p>Hi <img src="cid:logo"></p>')
m.add_cc(Cc("bob@example.net"))
m.add_bcc(Bcc("audit@example.com"))
m.add_attachment(Attachment(FileContent("aGVsbG8="), FileName("a.txt"), FileType("text/plain"), Disposition("attachment")))
m.add_attachment(Attachment(FileContent("UE5H"), FileName("logo.png"), FileType("image/png"), Disposition("inline"), ContentId("logo")))
m.add_category(Category("reset"))
m.add_custom_arg(CustomArg("user", "7"))
send(m)
send({"personalizations": [{"to": [{"email": "carol@example.net"}], "substitutions": {"-name-": "Carol"}},
                           {"to": [{"email": "dave@example.net"}], "subject": "For -name-", "substitutions": {"-name-": "Dave"}}],
      "from": {"email": "app@example.com"}, "subject": "Hello", "content": [{"type": "text/plain", "value": "hi -name-"}]})
send({"personalizations": [{"to": [{"email": "x@example.net"}]}], "from": {"email": "ceo@example.org"}, "subject": "s",
      "content": [{"type": "text/plain", "value": "t"}]})
send({"personalizations": [{"to": [{"email": "x@example.net"}]}], "from": {"email": "app@example.com"}, "template_id": "d-123"})
send({"personalizations": [{"to": [{"email": "erin@example.net"}]}, {"to": [{"email": "not an address"}]}],
      "from": {"email": "app@example.com"}, "subject": "all or nothing", "content": [{"type": "text/plain", "value": "x"}]})
"#,
    )
    .await;
    assert_eq!(out[0]["status"], 202, "{:?}", out[0]);
    let id = out[0]["id"].as_str().unwrap().to_string();
    let status = baton.wait_final(&id).await;
    assert_eq!(status["status"], "delivered", "{status:#}");
    assert_eq!(status["recipients"].as_array().unwrap().len(), 3, "{status:#}");
    let text = primary.wait_for_messages(1, support::baton::DEADLINE).await[0].data_str();
    assert!(text.contains("Subject: =?utf-8?") && text.contains("Content-ID: <logo>"), "{text}");
    assert!(text.contains("filename=\"a.txt\"") && !text.contains("audit@example.com"), "{text}");
    assert_eq!(out[1]["status"], 202, "{:?}", out[1]);
    primary.wait_for_messages(3, support::baton::DEADLINE).await;
    let to = |rcpt: &str| primary.messages().into_iter().find(|m| m.rcpts == [rcpt]).unwrap().data_str();
    let (carol, dave) = (to("carol@example.net"), to("dave@example.net"));
    assert!(carol.contains("Subject: Hello") && carol.contains("hi Carol"), "substitutions rendered: {carol}");
    assert!(dave.contains("Subject: For Dave") && dave.contains("hi Dave"), "one message per personalization: {dave}");
    assert_eq!(
        (out[2]["error"].as_str(), out[2]["status"].as_u64()),
        (Some("ForbiddenError"), Some(403)),
        "{:?}",
        out[2]
    );
    assert_eq!(out[2]["body"]["errors"][0]["field"], "from");
    assert_eq!(
        (out[3]["error"].as_str(), out[3]["status"].as_u64()),
        (Some("BadRequestsError"), Some(400)),
        "{:?}",
        out[3]
    );
    assert_eq!(out[3]["body"]["errors"][0]["field"], "template_id");
    assert_eq!(out[4]["status"], 400, "{:?}", out[4]);
    assert_eq!(out[4]["body"]["errors"][0]["field"], "personalizations.1.to.0.email", "{:?}", out[4]);
    let metrics = baton.metrics().await;
    let received = Baton::metric(&metrics, "baton_messages_received_total", &[("ingress", "http"), ("client", "app")]);
    assert_eq!(received, 3.0, "a refused request spools nothing, not even its valid personalization: {metrics}");
}

#[tokio::test]
async fn a_bad_key_is_the_sdks_unauthorized_error_and_a_suspended_primary_still_delivers_once() {
    let (primary, backup) = (MockSmtp::start().await, MockSmtp::start().await);
    primary.set_reply(Stage::EndOfData, Some("554 5.7.1 Your account has been suspended".into()));
    let baton = Baton::start(&two_provider_route(&primary, &backup)).await;
    let mail = r#"send({"personalizations": [{"to": [{"email": "a@example.net"}]}], "from": {"email": "app@example.com"},
      "subject": "failover", "content": [{"type": "text/plain", "value": "t"}]})"#;
    let out = sdk(&baton, "not-a-key-of-this-baton", mail).await;
    assert_eq!(out[0]["error"], "UnauthorizedError", "{:?}", out[0]);
    let out = sdk(&baton, KEY, mail).await;
    let status = baton.wait_final(out[0]["id"].as_str().unwrap()).await;
    assert_eq!(status["recipients"][0]["provider"], "backup", "{status:#}");
    assert_eq!((primary.message_count(), backup.message_count()), (0, 1));
}
