//! django-anymail as a client: Django's email API with anymail's Mandrill and Postmark
//! backends, pointed at Baton by anymail's `MANDRILL_API_URL` / `POSTMARK_API_URL` settings
//! only. For each backend: an `AnymailMessage` with names, cc/bcc, UTF-8 subject, html + text,
//! an attachment, an inline image, tags and metadata, whose `anymail_status` carries Baton's
//! message ids and which is delivered (subject encoded, Content-ID kept, no Bcc header) at the
//! scripted provider; and a bad key raised as anymail's `AnymailAPIError`.

mod support;

use serde_json::Value;
use support::baton::{Baton, DEADLINE, KEY};
use support::mock_smtp::{MockSmtp, ReceivedMessage};
use support::sdk::{run_python_json, two_provider_route};

/// Django configured for this Baton (both backends' settings); `send(**kwargs)` sends the
/// test message through `anymail.backends.$BACKEND.EmailBackend` (its settings overridden by
/// `kwargs`) and prints its `anymail_status`, or anymail's error. Sent with the right key, then
/// with `$KEY_SETTING` (the backend's key setting) wrong. A Reply-To only when `$REPLY_TO` is set.
const SCRIPT: &str = r#"import json, os
import django
from django.conf import settings
base = os.environ["BASE"]
settings.configure(ANYMAIL={
    "MANDRILL_API_KEY": os.environ["KEY"], "MANDRILL_API_URL": base + "/api/1.0",
    "POSTMARK_SERVER_TOKEN": os.environ["KEY"], "POSTMARK_API_URL": base + "/",
})
django.setup()
from django.core.mail import get_connection
from anymail.message import AnymailMessage
from anymail.exceptions import AnymailAPIError

def send(**kwargs):
    connection = get_connection("anymail.backends.%s.EmailBackend" % os.environ["BACKEND"], **kwargs)
    m = AnymailMessage(
        subject="Grüße aus Köln", body="Hi", from_email="Acme <app@example.com>",
        to=["Alice <alice@example.net>"], cc=["bob@example.net"], bcc=["audit@example.com"],
        reply_to=[os.environ["REPLY_TO"]] if os.environ["REPLY_TO"] else None, headers={"X-Ref": "42"},
        connection=connection,
        tags=["reset"], metadata={"user": "7"},
    )
    m.attach("a.txt", b"hello", "text/plain")
    cid = m.attach_inline_image(b"PNG", "logo.png", subtype="png")
    m.attach_alternative('<p>Hi <img src="cid:%s"></p>' % cid, "text/html")
    try:
        m.send()
    except AnymailAPIError as e:
        print(json.dumps({"error": type(e).__name__, "status": e.status_code, "body": e.response.json()}))
        return
    s = m.anymail_status
    ids = s.message_id if isinstance(s.message_id, set) else {s.message_id}
    print(json.dumps({
        "cid": cid, "message_ids": sorted(ids), "status": sorted(s.status),
        "recipients": {email: {"id": r.message_id, "status": r.status} for email, r in s.recipients.items()},
    }))

send()
send(**{os.environ["KEY_SETTING"]: "not-a-key-of-this-baton"})
"#;

/// Runs [`SCRIPT`] for `backend`, whose key setting is `key_setting`: the sent message's
/// status, then the bad key's error.
async fn anymail(baton: &Baton, backend: &str, key_setting: &str, reply_to: &str) -> Vec<Value> {
    let env = [
        ("KEY", KEY),
        ("BASE", &baton.base),
        ("BACKEND", backend),
        ("KEY_SETTING", key_setting),
        ("REPLY_TO", reply_to),
    ];
    run_python_json(SCRIPT, &env).await
}

/// A Baton with two SMTP mocks on its route; the primary accepts everything.
async fn baton_with_mocks() -> (Baton, MockSmtp, MockSmtp) {
    let (primary, backup) = (MockSmtp::start().await, MockSmtp::start().await);
    let baton = Baton::start(&two_provider_route(&primary, &backup)).await;
    (baton, primary, backup)
}

/// Waits until Baton says `id` is delivered; returns the copy the provider got for `rcpt`,
/// checked for what the message asks: the UTF-8 subject encoded, the inline image's
/// Content-ID `cid` kept, the attachment named, and the bcc recipient nowhere in the headers.
async fn delivered(baton: &Baton, mock: &MockSmtp, id: &str, rcpt: &str, cid: &str) -> ReceivedMessage {
    let status = baton.wait_final(id).await;
    assert_eq!(status["status"], "delivered", "{status:#}");
    let got = mock.wait_for_messages(1, DEADLINE).await;
    let m = got.into_iter().find(|m| m.rcpts.iter().any(|r| r == rcpt)).unwrap_or_else(|| panic!("{rcpt} got it"));
    let text = m.data_str();
    assert!(m.header("Subject").is_some_and(|s| s.starts_with("=?utf-8?")), "UTF-8 subject encoded: {text}");
    assert!(text.contains(&format!("Content-ID: <{cid}>")) && text.contains("filename=\"a.txt\""), "{text}");
    assert!(text.contains("X-Ref: 42") && text.contains("Acme"), "{text}");
    let head = &text[..text.find("\r\n\r\n").unwrap_or(text.len())];
    assert!(m.header("Bcc").is_none() && !head.contains("audit@example.com"), "bcc stays off the headers: {head}");
    m
}

#[tokio::test]
async fn anymails_mandrill_backend_sends_through_baton_and_raises_its_own_error_for_a_bad_key() {
    let (baton, primary, _backup) = baton_with_mocks().await;
    // Mandrill's API has no reply-to field: anymail sends it in `message.headers`.
    let out = anymail(&baton, "mandrill", "api_key", "support@example.com").await;
    assert_eq!(out[0]["status"], serde_json::json!(["queued"]), "{:?}", out[0]);
    let recipients = out[0]["recipients"].as_object().unwrap();
    assert_eq!(recipients.len(), 3, "to, cc and bcc: {recipients:?}");
    let ids = out[0]["message_ids"].as_array().unwrap();
    assert_eq!(ids.len(), 3, "Mandrill's default: a message per recipient: {:?}", out[0]);
    let cid = out[0]["cid"].as_str().unwrap().trim_matches(['<', '>']);
    let alice = recipients["alice@example.net"]["id"].as_str().unwrap();
    let m = delivered(&baton, &primary, alice, "alice@example.net", cid).await;
    assert_eq!(m.header("Reply-To").as_deref(), Some("<support@example.com>"), "{}", m.data_str());
    for id in ids {
        assert_eq!(baton.wait_final(id.as_str().unwrap()).await["status"], "delivered");
    }
    assert_eq!(out[1]["error"], "AnymailRequestsAPIError", "{:?}", out[1]);
    assert_eq!(out[1]["status"], 401, "{:?}", out[1]);
    assert_eq!(out[1]["body"]["name"], "Invalid_Key", "{:?}", out[1]);
}

#[tokio::test]
async fn anymails_postmark_backend_sends_through_baton_and_raises_its_own_error_for_a_bad_token() {
    let (baton, primary, _backup) = baton_with_mocks().await;
    let out = anymail(&baton, "postmark", "server_token", "support@example.com").await;
    assert_eq!(out[0]["status"], serde_json::json!(["sent"]), "Postmark's \"OK\": {:?}", out[0]);
    let ids = out[0]["message_ids"].as_array().unwrap();
    assert_eq!(ids.len(), 1, "one message for to, cc and bcc: {:?}", out[0]);
    assert_eq!(out[0]["recipients"].as_object().unwrap().len(), 3, "{:?}", out[0]);
    let cid = out[0]["cid"].as_str().unwrap().trim_matches(['<', '>']);
    let m = delivered(&baton, &primary, ids[0].as_str().unwrap(), "alice@example.net", cid).await;
    assert_eq!(m.rcpts.len(), 3, "to, cc and bcc: {:?}", m.rcpts);
    assert_eq!(m.header("Reply-To").as_deref(), Some("<support@example.com>"), "{}", m.data_str());
    assert_eq!(out[1]["error"], "AnymailRequestsAPIError", "{:?}", out[1]);
    assert_eq!(out[1]["status"], 401, "{:?}", out[1]);
    assert_eq!(out[1]["body"]["ErrorCode"], 10, "{:?}", out[1]);
}
