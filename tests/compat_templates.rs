//! Provider-stored templates through the compatible APIs, with each provider's official
//! Python SDK: Mandrill `send-template`, SendGrid `template_id`, Postmark `withTemplate` and
//! `batchWithTemplates`, Resend `template`, SES v2 `Content.Template` (boto3). Baton cannot
//! render them, so the request is spooled as it came and sent by the route's provider of the
//! same type (here second in the route, after an SMTP provider the template must skip), with
//! that provider's own key; the SDK gets its provider's answer shape, the message's status
//! shows the provider, and `baton_compat_requests_total{outcome="template_passthrough"}`
//! counts it. A route without a provider of the type answers the SDK's own error.

mod support;

use serde_json::{Value, json};
use support::baton::{Baton, DEADLINE, KEY, smtp_provider};
use support::mock_http::{MockHttp, Recorded, Reply};
use support::mock_smtp::MockSmtp;
use support::sdk::{run_python_json, two_provider_route};

/// The provider's key in Baton's config; never the app's key.
const PROVIDER_KEY: &str = "provider-key-0001";

/// Route `[smtp, api]`: `api` is a provider of type `kind` at `mock` with `keys`.
fn config(kind: &str, keys: &str, mock: &MockHttp, smtp: &MockSmtp) -> String {
    format!(
        "[providers.api]\ntype = \"{kind}\"\nbase_url = \"{}\"\ntimeout = \"2s\"\n{keys}\n{}\n[retry]\nschedule = [\"1h\"]\n\n[health]\nprobe_interval = \"1h\"\n\n[[routes]]\nname = \"default\"\nproviders = [\"smtp\", \"api\"]\n",
        mock.url(),
        smtp_provider("smtp", smtp, ""),
    )
}

/// Starts a Baton whose route holds an SMTP provider and then a `kind` provider answering
/// `path` with `ok`; runs the SDK `script` (with `KEY`, `BASE` in its environment).
async fn run(kind: &str, keys: &str, path: &str, ok: Reply, script: &str) -> (Baton, MockHttp, MockSmtp, Vec<Value>) {
    let (mock, smtp) = (MockHttp::start().await, MockSmtp::start().await);
    mock.reply(path, ok);
    let baton = Baton::start(&config(kind, keys, &mock, &smtp)).await;
    let out = run_python_json(script, &[("KEY", KEY), ("BASE", &baton.base)]).await;
    (baton, mock, smtp, out)
}

/// The message went to the template provider only, and was counted as a pass-through.
async fn passed_through(baton: &Baton, smtp: &MockSmtp, api: &str, id: &str, passes: f64) {
    let status = baton.wait_final(id).await;
    assert_eq!(status["status"], "delivered", "{status:#}");
    for r in status["recipients"].as_array().unwrap() {
        assert_eq!(r["provider"], "api", "{status:#}");
    }
    assert_eq!(smtp.message_count(), 0, "the SMTP provider first in the route is skipped");
    let metrics = baton.metrics().await;
    let counted =
        Baton::metric(&metrics, "baton_compat_requests_total", &[("api", api), ("outcome", "template_passthrough")]);
    assert_eq!(counted, passes, "{metrics}");
}

async fn one_request(mock: &MockHttp, path: &str) -> Recorded {
    mock.wait_for_requests(path, 1, DEADLINE).await.remove(0)
}

#[tokio::test]
async fn mandrill_send_template_is_passed_to_the_mandrill_provider() {
    let ok = Reply::json(200, json!([{"email": "alice@example.net", "status": "sent", "_id": "md-1"}]));
    let script = r#"import json, os
import mailchimp_transactional as MailchimpTransactional
client = MailchimpTransactional.Client(os.environ["KEY"])
client.api_client.host = os.environ["BASE"] + "/api/1.0"
print(json.dumps(client.messages.send_template({"template_name": "welcome", "template_content": [],
    "message": {"from_email": "app@example.com", "to": [{"email": "alice@example.net", "name": "Alice"}],
                "bcc_address": "audit@example.com", "global_merge_vars": [{"name": "fname", "content": "Alice"}],
                "tags": ["welcome"]}})))
"#;
    let keys = format!("api_key = \"{PROVIDER_KEY}\"");
    let (baton, mock, smtp, out) = run("mandrill", &keys, "/messages/send-template", ok, script).await;
    assert_eq!(out[0][0]["status"], "queued", "{out:?}");
    let id = out[0][0]["_id"].as_str().unwrap();
    let sent = one_request(&mock, "/messages/send-template").await.json();
    assert_eq!(sent["key"], PROVIDER_KEY, "the provider's key replaces the app's: {sent}");
    assert_eq!(sent["template_name"], "welcome");
    assert_eq!(sent["message"]["global_merge_vars"][0]["content"], "Alice", "sent as it came: {sent}");
    // Mandrill does not report on bcc_address: the request went out whole, so it is delivered.
    passed_through(&baton, &smtp, "mandrill", id, 1.0).await;
}

#[tokio::test]
async fn sendgrid_template_id_is_passed_to_the_sendgrid_provider() {
    let ok = Reply::Static { status: 202, headers: vec![("x-message-id".into(), "sg-1".into())], body: String::new() };
    let script = r#"import json, os
from sendgrid import SendGridAPIClient
sg = SendGridAPIClient(api_key=os.environ["KEY"], host=os.environ["BASE"])
r = sg.client.mail.send.post(request_body={"from": {"email": "app@example.com"}, "template_id": "d-0123456789",
    "personalizations": [{"to": [{"email": "alice@example.net"}], "dynamic_template_data": {"name": "Alice"}}]})
print(json.dumps({"status": r.status_code, "id": r.headers.get("X-Message-Id")}))
"#;
    let keys = format!("api_key = \"{PROVIDER_KEY}\"");
    let (baton, mock, smtp, out) = run("sendgrid", &keys, "/v3/mail/send", ok, script).await;
    assert_eq!(out[0]["status"], 202, "{out:?}");
    let request = one_request(&mock, "/v3/mail/send").await;
    assert_eq!(request.header("authorization"), Some(format!("Bearer {PROVIDER_KEY}").as_str()));
    let sent = request.json();
    assert_eq!(sent["template_id"], "d-0123456789", "{sent}");
    assert_eq!(sent["personalizations"][0]["dynamic_template_data"]["name"], "Alice", "{sent}");
    passed_through(&baton, &smtp, "sendgrid", out[0]["id"].as_str().unwrap(), 1.0).await;
}

#[tokio::test]
async fn postmark_templates_single_and_batch_are_passed_to_the_postmark_provider() {
    let ok = Reply::json(
        200,
        json!({"To": "alice@example.net", "SubmittedAt": "2026-01-01T00:00:00Z", "MessageID": "pm-1", "ErrorCode": 0, "Message": "OK"}),
    );
    let script = r#"import json, os
from postmarker.core import PostmarkClient
client = PostmarkClient(server_token=os.environ["KEY"], root_api_url=os.environ["BASE"] + "/")
print(json.dumps(client.emails.send_with_template(TemplateId=42, TemplateModel={"name": "Alice"},
    From="app@example.com", To="alice@example.net")))
print(json.dumps(client.emails.send_template_batch(
    {"TemplateAlias": "welcome", "TemplateModel": {"name": "Bob"}, "From": "app@example.com", "To": "bob@example.net"},
    {"TemplateAlias": "welcome", "TemplateModel": {}, "From": "app@example.com", "To": "not an address"})))
"#;
    let keys = format!("server_token = \"{PROVIDER_KEY}\"");
    let (baton, mock, smtp, out) = run("postmark", &keys, "/email/withTemplate", ok, script).await;
    assert_eq!((out[0]["ErrorCode"].as_u64(), out[0]["To"].as_str()), (Some(0), Some("alice@example.net")), "{out:?}");
    let batch = out[1].as_array().unwrap_or_else(|| panic!("{out:?}"));
    assert_eq!(batch[0]["ErrorCode"], 0, "{batch:?}");
    assert_eq!(batch[1]["ErrorCode"], 300, "a bad item is answered in place: {batch:?}");
    let requests = mock.wait_for_requests("/email/withTemplate", 2, DEADLINE).await;
    assert!(requests.iter().all(|r| r.header("x-postmark-server-token") == Some(PROVIDER_KEY)));
    let models: Vec<Value> = requests.iter().map(|r| r.json()["TemplateModel"]["name"].clone()).collect();
    assert!(models.contains(&json!("Alice")) && models.contains(&json!("Bob")), "{models:?}");
    passed_through(&baton, &smtp, "postmark", out[0]["MessageID"].as_str().unwrap(), 2.0).await;
    baton.wait_final(batch[0]["MessageID"].as_str().unwrap()).await;
}

#[tokio::test]
async fn resend_template_is_passed_to_the_resend_provider() {
    let ok = Reply::json(200, json!({"id": "49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"}));
    let script = r#"import json, os, resend
resend.api_key = os.environ["KEY"]
resend.api_url = os.environ["BASE"]
r = resend.Emails.send({"from": "app@example.com", "to": ["alice@example.net"],
    "template": {"id": "welcome", "variables": {"name": "Alice"}}})
print(json.dumps({"id": r["id"]}))
"#;
    let keys = format!("api_key = \"{PROVIDER_KEY}\"");
    let (baton, mock, smtp, out) = run("resend", &keys, "/emails", ok, script).await;
    let request = one_request(&mock, "/emails").await;
    assert_eq!(request.header("authorization"), Some(format!("Bearer {PROVIDER_KEY}").as_str()));
    assert_eq!(request.json()["template"]["variables"]["name"], "Alice");
    passed_through(&baton, &smtp, "resend", out[0]["id"].as_str().unwrap(), 1.0).await;
}

/// Without a provider of the template's type in the route, each SDK gets its own error, and
/// nothing is spooled.
#[tokio::test]
async fn a_route_without_a_provider_of_the_type_answers_each_sdks_own_error() {
    let (primary, backup) = (MockSmtp::start().await, MockSmtp::start().await);
    let baton = Baton::start(&two_provider_route(&primary, &backup)).await;
    let script = r#"import json, os
import mailchimp_transactional as MailchimpTransactional
from mailchimp_transactional.api_client import ApiClientError
from postmarker.core import PostmarkClient
from postmarker.exceptions import ClientError
from sendgrid import SendGridAPIClient
from python_http_client.exceptions import HTTPError
mc = MailchimpTransactional.Client(os.environ["KEY"])
mc.api_client.host = os.environ["BASE"] + "/api/1.0"
try:
    mc.messages.send_template({"template_name": "welcome", "template_content": [],
        "message": {"from_email": "app@example.com", "to": [{"email": "a@example.net"}]}})
except ApiClientError as e:
    print(json.dumps(e.text))
pm = PostmarkClient(server_token=os.environ["KEY"], root_api_url=os.environ["BASE"] + "/")
try:
    pm.emails.send_with_template(TemplateId=42, TemplateModel={}, From="app@example.com", To="a@example.net")
except ClientError as e:
    print(json.dumps({"ErrorCode": e.error_code}))
sg = SendGridAPIClient(api_key=os.environ["KEY"], host=os.environ["BASE"])
try:
    sg.client.mail.send.post(request_body={"from": {"email": "app@example.com"}, "template_id": "d-1",
        "personalizations": [{"to": [{"email": "a@example.net"}]}]})
except HTTPError as e:
    print(json.dumps({"status": e.status_code, "body": json.loads(e.body)}))
"#;
    let out = run_python_json(script, &[("KEY", KEY), ("BASE", &baton.base)]).await;
    assert_eq!(out[0]["name"], "Unknown_Template", "{out:?}");
    assert!(out[0]["message"].as_str().unwrap().contains("no mandrill provider"), "{out:?}");
    assert_eq!(out[1]["ErrorCode"], 1101, "{out:?}");
    assert_eq!((out[2]["status"].as_u64(), &out[2]["body"]["errors"][0]["field"]), (Some(400), &json!("template_id")));
    let metrics = baton.metrics().await;
    for api in ["mandrill", "postmark", "sendgrid"] {
        let refused = Baton::metric(&metrics, "baton_compat_requests_total", &[("api", api), ("outcome", "refused")]);
        assert_eq!(refused, 1.0, "{api}: {metrics}");
    }
    assert_eq!(primary.message_count() + backup.message_count(), 0);
}

#[tokio::test]
async fn ses_v2_content_template_is_passed_to_the_ses_provider() {
    let (mock, smtp) = (MockHttp::start().await, MockSmtp::start().await);
    mock.reply("/v2/email/outbound-emails", Reply::json(200, json!({"MessageId": "ses-1"})));
    let config = format!(
        "[providers.api]\ntype = \"ses\"\nregion = \"eu-west-1\"\naccess_key_id = \"AKIAPROVIDERKEY00001\"\nsecret_access_key = \"{PROVIDER_KEY}\"\nendpoint = \"{}\"\ntimeout = \"2s\"\n{}\n[retry]\nschedule = [\"1h\"]\n\n[health]\nprobe_interval = \"1h\"\n\n[[routes]]\nname = \"default\"\nproviders = [\"smtp\", \"api\"]\n",
        mock.url(),
        smtp_provider("smtp", &smtp, ""),
    );
    let baton = Baton::start(&config).await;
    let script = r#"import json, os, boto3
v2 = boto3.client("sesv2", endpoint_url=os.environ["BASE"], region_name="eu-west-1",
                  aws_access_key_id=os.environ["KEY_ID"], aws_secret_access_key=os.environ["SECRET"])
r = v2.send_email(FromEmailAddress="app@example.com", Destination={"ToAddresses": ["alice@example.net"]},
                  Content={"Template": {"TemplateName": "welcome", "TemplateData": "{\"name\": \"Alice\"}"}})
print(json.dumps({"id": r["MessageId"]}))
"#;
    let env =
        [("BASE", baton.base.as_str()), ("KEY_ID", support::baton::AWS_KEY_ID), ("SECRET", support::baton::AWS_SECRET)];
    let out = run_python_json(script, &env).await;
    let request = one_request(&mock, "/v2/email/outbound-emails").await;
    let auth = request.header("authorization").unwrap_or_default().to_string();
    assert!(auth.contains("Credential=AKIAPROVIDERKEY00001/"), "signed with the provider's own key: {auth}");
    let sent = request.json();
    assert_eq!(sent["Content"]["Template"]["TemplateName"], "welcome", "{sent}");
    assert_eq!(sent["Content"]["Template"]["TemplateData"], "{\"name\": \"Alice\"}", "{sent}");
    assert_eq!(sent["Destination"]["ToAddresses"], json!(["alice@example.net"]), "{sent}");
    passed_through(&baton, &smtp, "ses", out[0]["id"].as_str().unwrap(), 1.0).await;
}
