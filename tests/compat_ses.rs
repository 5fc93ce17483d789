//! Amazon SES's API served by Baton, with boto3 as the client, pointed at Baton by
//! `endpoint_url` only and signing with the client's `aws_credentials`: v2 `SendEmail` Simple
//! (names, cc/bcc, UTF-8 subject, html + text, an attachment and an inline image, tags) and Raw
//! (byte for byte, Bcc only in the envelope), `GetAccount`; v1 `SendEmail`, `SendRawEmail` and
//! `GetSendQuota`; boto3's own typed errors for a wrong secret, an unknown key id, a sender the
//! client may not use and a clock too far off; a suspended primary behind the API still
//! delivers through the secondary, exactly once.

mod support;

use serde_json::Value;
use support::baton::{AWS_KEY_ID, AWS_SECRET, Baton, DEADLINE};
use support::mock_smtp::{MockSmtp, Stage};
use support::sdk::{run_python_json, two_provider_route};

/// Runs `body` with `v2` (sesv2) and `v1` (ses) boto3 clients for this Baton, signing with
/// `key_id` / `secret`; `call(f, **kw)` prints the answer or the error code as JSON.
async fn boto3(baton: &Baton, key_id: &str, secret: &str, body: &str) -> Vec<Value> {
    let script = format!(
        r#"import json, os, boto3
from botocore.exceptions import ClientError
from botocore.config import Config
kw = dict(endpoint_url=os.environ["BASE"], region_name="eu-west-1", aws_access_key_id=os.environ["KEY_ID"],
          aws_secret_access_key=os.environ["SECRET"], config=Config(retries={{"max_attempts": 1}}))
v2 = boto3.client("sesv2", **kw)
v1 = boto3.client("ses", **kw)
def call(f, **args):
    try:
        r = f(**args)
        r.pop("ResponseMetadata", None)
        print(json.dumps({{"ok": r}}, default=str))
    except ClientError as e:
        print(json.dumps({{"error": e.response["Error"]["Code"], "message": e.response["Error"].get("Message"),
                          "status": e.response["ResponseMetadata"]["HTTPStatusCode"]}}))
{body}"#
    );
    run_python_json(&script, &[("BASE", &baton.base), ("KEY_ID", key_id), ("SECRET", secret)]).await
}

#[tokio::test]
async fn boto3_sends_through_baton_with_ses_v2_and_v1() {
    let (primary, backup) = (MockSmtp::start().await, MockSmtp::start().await);
    let baton = Baton::start(&two_provider_route(&primary, &backup)).await;
    let raw = "From: app@example.com\r\nTo: raw@example.net\r\nMessage-ID: <raw-1@example.com>\r\nDate: Wed, 2 Dec 2026 10:00:00 +0000\r\nSubject: raw\r\n\r\nbyte for byte\r\n";
    let out = boto3(
        &baton,
        AWS_KEY_ID,
        AWS_SECRET,
        &format!(
            r#"
call(v2.send_email, FromEmailAddress="Acme <app@example.com>",
     Destination={{"ToAddresses": ["Alice <alice@example.net>"], "CcAddresses": ["bob@example.net"], "BccAddresses": ["audit@example.com"]}},
     ReplyToAddresses=["support@example.com"], EmailTags=[{{"Name": "campaign", "Value": "reset"}}],
     Content={{"Simple": {{"Subject": {{"Data": "Grüße aus Köln", "Charset": "UTF-8"}},
               "Body": {{"Text": {{"Data": "Hi"}}, "Html": {{"Data": "<p>Hi <img src=\"cid:logo\"></p>"}}}},
               "Attachments": [{{"RawContent": b"hello", "FileName": "a.txt", "ContentType": "text/plain"}},
                               {{"RawContent": b"PNG", "FileName": "logo.png", "ContentType": "image/png",
                                 "ContentDisposition": "INLINE", "ContentId": "logo"}}]}}}})
call(v2.send_email, Destination={{"ToAddresses": ["raw@example.net"], "BccAddresses": ["hidden@example.net"]}},
     Content={{"Raw": {{"Data": {raw:?}.encode()}}}})
call(v2.get_account)
call(v1.send_email, Source="app@example.com", Destination={{"ToAddresses": ["carol@example.net"]}},
     Message={{"Subject": {{"Data": "v1 subject"}}, "Body": {{"Text": {{"Data": "v1 text"}}}}}})
call(v1.send_raw_email, Destinations=["dave@example.net"], RawMessage={{"Data": {raw:?}.encode()}})
call(v1.get_send_quota)
call(v2.send_email, FromEmailAddress="ceo@example.org", Destination={{"ToAddresses": ["x@example.net"]}},
     Content={{"Simple": {{"Subject": {{"Data": "s"}}, "Body": {{"Text": {{"Data": "t"}}}}}}}})
call(v1.send_email, Source="ceo@example.org", Destination={{"ToAddresses": ["x@example.net"]}},
     Message={{"Subject": {{"Data": "s"}}, "Body": {{"Text": {{"Data": "t"}}}}}})
"#
        ),
    )
    .await;
    let id = out[0]["ok"]["MessageId"].as_str().unwrap_or_else(|| panic!("{:?}", out[0])).to_string();
    let status = baton.wait_final(&id).await;
    assert_eq!(status["status"], "delivered", "{status:#}");
    assert_eq!(status["recipients"].as_array().unwrap().len(), 3, "{status:#}");
    assert_eq!(status["metadata"]["campaign"], "reset", "{status:#}");
    let simple = primary.wait_for_messages(1, DEADLINE).await[0].clone();
    let text = simple.data_str();
    assert!(text.contains("Subject: =?utf-8?") && text.contains("Content-ID: <logo>"), "{text}");
    assert!(text.contains("filename=\"a.txt\"") && text.contains("Reply-To: <support@example.com>"), "{text}");
    assert!(simple.header("Bcc").is_none() && simple.rcpts.contains(&"audit@example.com".to_string()), "{text}");

    let raw_id = out[1]["ok"]["MessageId"].as_str().unwrap_or_else(|| panic!("{:?}", out[1]));
    baton.wait_final(raw_id).await;
    let sent = primary.messages().into_iter().find(|m| m.rcpts.contains(&"hidden@example.net".to_string())).unwrap();
    assert_eq!(sent.data_str(), raw, "Content.Raw keeps the bytes");
    assert_eq!(sent.rcpts.len(), 2, "the envelope is the Destination: {:?}", sent.rcpts);

    assert_eq!(out[2]["ok"]["SendingEnabled"], true, "{:?}", out[2]);
    for (i, rcpt) in [(3, "carol@example.net"), (4, "dave@example.net")] {
        let id = out[i]["ok"]["MessageId"].as_str().unwrap_or_else(|| panic!("{:?}", out[i]));
        assert_eq!(baton.wait_final(id).await["recipients"][0]["email"], rcpt);
    }
    let v1_raw = primary.messages().into_iter().find(|m| m.rcpts == ["dave@example.net"]).unwrap();
    assert_eq!(v1_raw.data_str(), raw, "SendRawEmail keeps the bytes");
    assert_eq!(out[5]["ok"]["Max24HourSend"], -1.0, "{:?}", out[5]);
    for i in [6, 7] {
        assert_eq!(
            (out[i]["error"].as_str(), out[i]["status"].as_u64()),
            (Some("MessageRejected"), Some(400)),
            "{:?}",
            out[i]
        );
    }
}

#[tokio::test]
async fn boto3_gets_its_own_errors_for_bad_credentials_and_a_suspended_primary_still_delivers_once() {
    let (primary, backup) = (MockSmtp::start().await, MockSmtp::start().await);
    primary.set_reply(Stage::EndOfData, Some("554 5.7.1 Your account has been suspended".into()));
    let baton = Baton::start(&two_provider_route(&primary, &backup)).await;
    let send = r#"
call(v2.send_email, FromEmailAddress="app@example.com", Destination={"ToAddresses": ["a@example.net"]},
     Content={"Simple": {"Subject": {"Data": "failover"}, "Body": {"Text": {"Data": "t"}}}})
call(v1.send_email, Source="app@example.com", Destination={"ToAddresses": ["b@example.net"]},
     Message={"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "t"}}})
"#;
    let wrong_secret = boto3(&baton, AWS_KEY_ID, "not-the-secret-000000000", send).await;
    for answer in &wrong_secret {
        assert_eq!((answer["error"].as_str(), answer["status"].as_u64()), (Some("SignatureDoesNotMatch"), Some(403)));
    }
    let unknown = boto3(&baton, "AKIAUNKNOWNKEY000001", AWS_SECRET, send).await;
    assert_eq!(unknown[0]["error"], "UnrecognizedClientException", "{:?}", unknown[0]);
    assert_eq!(unknown[1]["error"], "InvalidClientTokenId", "{:?}", unknown[1]);
    // A client clock 20 minutes behind: its signatures are too old to take.
    let skewed = format!(
        "import datetime, botocore.auth\nbotocore.auth.get_current_datetime = lambda *a, **k: datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(minutes=20)\n{send}"
    );
    for answer in boto3(&baton, AWS_KEY_ID, AWS_SECRET, &skewed).await {
        assert_eq!((answer["error"].as_str(), answer["status"].as_u64()), (Some("RequestTimeTooSkewed"), Some(403)));
    }
    assert_eq!(primary.message_count() + backup.message_count(), 0, "nothing taken without a valid signature");

    let out = boto3(&baton, AWS_KEY_ID, AWS_SECRET, send).await;
    for answer in &out {
        let id = answer["ok"]["MessageId"].as_str().unwrap_or_else(|| panic!("{answer:?}"));
        assert_eq!(baton.wait_final(id).await["recipients"][0]["provider"], "backup");
    }
    assert_eq!((primary.message_count(), backup.message_count()), (0, 2));
}
