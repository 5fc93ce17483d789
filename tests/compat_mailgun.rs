//! Mailgun's clients, each pointed at Baton by its API root only: the official Python SDK
//! (`mailgun`, `Client(auth=("api", key), api_url=…)`), mailgun.js with `form-data`
//! (`client({username: "api", key, url})`) and django-anymail's Mailgun backend
//! (`MAILGUN_API_URL`, with `/v3`). For each: a send with names, cc/bcc, UTF-8 subject,
//! html + text, an attachment, an inline image, `o:tag`, `v:` and `h:Reply-To`, delivered at the
//! scripted provider (subject encoded, Content-ID kept, no Bcc header) with its tags and
//! metadata; `recipient-variables` as one rendered message per recipient; `messages.mime` byte
//! for byte with a Bcc only in the envelope; a bad key, a domain the client may not use and a
//! missing field as the client's own errors (401 `Forbidden`, 404, 400 naming the field). And a
//! suspended primary behind the API, over HTTPS (what the Python SDK needs off localhost):
//! delivered once, through the secondary.

mod support;

use serde_json::{Value, json};
use support::baton::{Baton, DEADLINE, KEY};
use support::mock_smtp::{MockSmtp, ReceivedMessage, Stage};
use support::sdk::{run_node_json, run_python_json, two_provider_route};

const BAD_KEY: &str = "not-a-key-of-this-baton";

/// A complete message (Message-ID and Date given, so Baton adds nothing): what arrives must be
/// these bytes. `hidden@example.net` is only in the envelope (`to` fields), a Bcc.
const RAW: &str = "From: Acme <app@example.com>\r\nTo: erin@example.net\r\nMessage-ID: <raw-1@example.com>\r\n\
                   Date: Wed, 2 Dec 2026 10:00:00 +0000\r\nSubject: raw\r\n\r\nbyte for byte\r\n";

/// Baton's message id inside a Mailgun id `<ID@domain>`.
fn baton_id(answer: &Value) -> String {
    let id = answer["id"].as_str().unwrap_or_else(|| panic!("an id in {answer}"));
    id.strip_prefix('<').and_then(|i| i.split_once('@')).map(|(i, _)| i.to_string()).expect("<id@domain>")
}

/// A Baton with two SMTP mocks on its route; the primary accepts everything.
async fn baton_with_mocks() -> (Baton, MockSmtp, MockSmtp) {
    let (primary, backup) = (MockSmtp::start().await, MockSmtp::start().await);
    let baton = Baton::start(&two_provider_route(&primary, &backup)).await;
    (baton, primary, backup)
}

/// The one message `mock` got for `rcpt` among `got`.
fn for_rcpt<'a>(got: &'a [ReceivedMessage], rcpt: &str) -> &'a ReceivedMessage {
    got.iter().find(|m| m.rcpts.iter().any(|r| r == rcpt)).unwrap_or_else(|| panic!("{rcpt} got a message"))
}

/// Checks what every full send here asks of the copy that arrived: the UTF-8 subject encoded,
/// the inline image's Content-ID `cid` and the attachment's name kept, the reply-to and custom
/// header set, and the bcc recipient nowhere in the headers.
fn assert_full_send(m: &ReceivedMessage, cid: &str) {
    let text = m.data_str();
    assert!(m.header("Subject").is_some_and(|s| s.starts_with("=?utf-8?")), "UTF-8 subject encoded: {text}");
    assert!(text.contains(&format!("Content-ID: <{cid}>")) && text.contains("filename=\"a.txt\""), "{text}");
    assert!(text.contains("X-Ref: 42") && text.contains("Acme"), "{text}");
    assert_eq!(m.header("Reply-To").as_deref(), Some("<support@example.com>"), "{text}");
    let head = &text[..text.find("\r\n\r\n").unwrap_or(text.len())];
    assert!(m.header("Bcc").is_none() && !head.contains("audit@example.com"), "bcc stays off the headers: {head}");
}

/// Checks the two messages of the batch send to carol and dave: each addressed to its
/// recipient only and rendered with their variables.
fn assert_batch(got: &[ReceivedMessage]) {
    for (rcpt, first, code) in [("carol@example.net", "Carol", 1), ("dave@example.net", "Dave", 2)] {
        let m = for_rcpt(got, rcpt);
        assert_eq!(m.rcpts, [rcpt], "a message of their own");
        assert!(m.header("To").is_some_and(|to| to.contains(rcpt) && !to.contains(',')), "{}", m.data_str());
        assert_eq!(m.header("Subject"), Some(format!("Hi {first}")), "{}", m.data_str());
        assert!(m.body().contains(&format!("Your code is {code}.")), "{}", m.data_str());
    }
}

/// Checks the `messages.mime` send: the bytes as given, the Bcc in the envelope only.
fn assert_raw(got: &[ReceivedMessage]) {
    let m = for_rcpt(got, "hidden@example.net");
    assert_eq!(m.rcpts, ["erin@example.net", "hidden@example.net"]);
    assert_eq!(m.data_str(), RAW, "the MIME message, byte for byte");
}

/// Runs `body` after making `client` (the Python SDK for `base` and `key`); `answer(response)`
/// prints `{status, body}` (the SDK returns responses, errors included, without raising).
async fn python(base: &str, key: &str, env: &[(&str, &str)], body: &str) -> Vec<Value> {
    let script = format!(
        r#"import json, os
from mailgun.client import Client
client = Client(auth=("api", os.environ["KEY"]), api_url=os.environ["BASE"])
def answer(r):
    try:
        body = r.json()
    except ValueError:
        body = r.text
    print(json.dumps({{"status": r.status_code, "body": body}}))
{body}"#
    );
    let mut all = vec![("KEY", key), ("BASE", base), ("RAW", RAW), ("BAD_KEY", BAD_KEY)];
    all.extend_from_slice(env);
    run_python_json(&script, &all).await
}

#[tokio::test]
async fn the_mailgun_python_sdk_sends_through_baton_and_gets_mailguns_answers() {
    let (baton, primary, _backup) = baton_with_mocks().await;
    let out = python(
        &baton.base,
        KEY,
        &[],
        r#"
send = client.messages.create
answer(send(domain="example.com", data={
    "from": "Acme <app@example.com>", "to": ['"Doe, Alice" <alice@example.net>'], "cc": "bob@example.net",
    "bcc": "audit@example.com", "subject": "Grüße aus Köln", "text": "Hi", "html": '<p>Hi <img src="cid:logo.png"></p>',
    "h:X-Ref": "42", "h:Reply-To": "support@example.com", "o:tag": ["reset", "july"], "v:user": "7",
    "o:tracking": "yes",
}, files=[("attachment", ("a.txt", b"hello", "text/plain")), ("inline", ("logo.png", b"PNG", "image/png"))]))
answer(send(domain="example.com", data={
    "from": "app@example.com", "to": ["Carol <carol@example.net>", "dave@example.net"],
    "subject": "Hi %recipient.first%", "text": "Your code is %recipient.code%.",
    "recipient-variables": json.dumps({"carol@example.net": {"first": "Carol", "code": 1},
                                       "dave@example.net": {"first": "Dave", "code": 2}}),
}))
answer(client.mimemessage.create(domain="example.com", data={"to": ["erin@example.net", "hidden@example.net"], "o:tag": "raw"},
                                 files={"message": os.environ["RAW"].encode()}))
answer(send(domain="example.com", data={"from": "app@example.com", "subject": "s", "text": "t"}))
answer(send(domain="example.org", data={"from": "app@example.com", "to": "a@example.net", "text": "t"}))
answer(send(domain="example.com", data={"from": "app@example.com", "to": "a@example.net", "text": "t", "o:testmode": "yes"}))
bad = Client(auth=("api", os.environ["BAD_KEY"]), api_url=os.environ["BASE"])
answer(bad.messages.create(domain="example.com", data={"from": "app@example.com", "to": "a@example.net", "text": "t"}))
"#,
    )
    .await;
    for sent in &out[..3] {
        assert_eq!(
            (sent["status"].as_u64(), sent["body"]["message"].as_str()),
            (Some(200), Some("Queued. Thank you."))
        );
        assert!(sent["body"]["id"].as_str().unwrap().ends_with("@example.com>"), "{sent}");
    }
    let status = baton.wait_final(&baton_id(&out[0]["body"])).await;
    assert_eq!(status["status"], "delivered", "{status:#}");
    assert_eq!(status["recipients"].as_array().unwrap().len(), 3, "to, cc and bcc: {status:#}");
    assert_eq!((&status["tags"], &status["metadata"]), (&json!(["reset", "july"]), &json!({"user": "7"})));
    let got = primary.wait_for_messages(4, DEADLINE).await;
    let alice = for_rcpt(&got, "alice@example.net");
    assert_full_send(alice, "logo.png");
    assert!(alice.data_str().contains("\"Doe, Alice\""), "{}", alice.data_str());
    assert_batch(&got);
    assert_raw(&got);
    assert_eq!(baton.status(&baton_id(&out[2]["body"])).await["tags"], json!(["raw"]));
    assert_eq!(
        (out[3]["status"].as_u64(), &out[3]["body"]),
        (Some(400), &json!({"message": "'to' parameter is missing"}))
    );
    assert_eq!(
        (out[4]["status"].as_u64(), &out[4]["body"]),
        (Some(404), &json!({"message": "Domain not found: example.org"}))
    );
    assert_eq!(out[5]["status"], 400, "{:?}", out[5]);
    assert!(out[5]["body"]["message"].as_str().unwrap().contains("testmode"), "{:?}", out[5]);
    assert_eq!((out[6]["status"].as_u64(), &out[6]["body"]), (Some(401), &json!("Forbidden")));
    let metrics = baton.metrics().await;
    let counted =
        |outcome| Baton::metric(&metrics, "baton_compat_requests_total", &[("api", "mailgun"), ("outcome", outcome)]);
    assert_eq!((counted("accepted"), counted("refused")), (3.0, 4.0));
}

/// mailgun.js with the `form-data` package, as its README sets it up; `answer(promise)` prints
/// the result, or the SDK's own error (`MailgunAPIError`: status and Mailgun's message).
const MAILGUN_JS: &str = r#"
import Mailgun from "mailgun.js";
import FormData from "form-data";
const mailgun = new Mailgun(FormData);
const client = (key) => mailgun.client({ username: "api", key, url: BASE });
const answer = async (call) => {
    try {
        print({ ok: await call });
    } catch (e) {
        print({ error: e.type, status: e.status, details: e.details });
    }
};
"#;

#[tokio::test]
async fn mailgun_js_sends_through_baton_and_raises_its_own_errors() {
    let (baton, primary, _backup) = baton_with_mocks().await;
    let script = format!(
        "const print = (value) => console.log(JSON.stringify(value));\n\
         const {{ KEY, BAD_KEY, BASE, RAW }} = process.env;\n{MAILGUN_JS}\n{}",
        r#"
const mg = client(KEY);
await answer(mg.messages.create("example.com", {
    from: "Acme <app@example.com>", to: ["Alice <alice@example.net>"], cc: "bob@example.net", bcc: "audit@example.com",
    subject: "Grüße aus Köln", text: "Hi", html: '<p>Hi <img src="cid:logo.png"></p>',
    "h:X-Ref": "42", "h:Reply-To": "support@example.com", "o:tag": ["reset", "july"], "v:user": "7",
    attachment: [{ filename: "a.txt", data: Buffer.from("hello") }],
    inline: [{ filename: "logo.png", data: Buffer.from("PNG") }],
}));
await answer(mg.messages.create("example.com", {
    from: "app@example.com", to: ["Carol <carol@example.net>", "dave@example.net"],
    subject: "Hi %recipient.first%", text: "Your code is %recipient.code%.",
    "recipient-variables": JSON.stringify({ "carol@example.net": { first: "Carol", code: 1 },
                                            "dave@example.net": { first: "Dave", code: 2 } }),
}));
await answer(mg.messages.create("example.com", { to: ["erin@example.net", "hidden@example.net"], message: RAW }));
await answer(mg.messages.create("example.com", { to: "a@example.net", subject: "s", text: "t" }));
await answer(mg.messages.create("example.org", { from: "app@example.com", to: "a@example.net", text: "t" }));
await answer(client(BAD_KEY).messages.create("example.com", { from: "app@example.com", to: "a@example.net", text: "t" }));
"#
    );
    let env = [("KEY", KEY), ("BAD_KEY", BAD_KEY), ("BASE", baton.base.as_str()), ("RAW", RAW)];
    let out = run_node_json(&script, &env).await;
    for sent in &out[..3] {
        assert_eq!(
            (sent["ok"]["status"].as_u64(), sent["ok"]["message"].as_str()),
            (Some(200), Some("Queued. Thank you."))
        );
    }
    let status = baton.wait_final(&baton_id(&out[0]["ok"])).await;
    assert_eq!(status["recipients"].as_array().unwrap().len(), 3, "to, cc and bcc: {status:#}");
    assert_eq!((&status["tags"], &status["metadata"]), (&json!(["reset", "july"]), &json!({"user": "7"})));
    let got = primary.wait_for_messages(4, DEADLINE).await;
    assert_full_send(for_rcpt(&got, "alice@example.net"), "logo.png");
    assert_batch(&got);
    assert_raw(&got);
    let refused = |i: usize| (out[i]["error"].as_str(), out[i]["status"].as_u64(), out[i]["details"].as_str());
    assert_eq!(refused(3), (Some("MailgunAPIError"), Some(400), Some("'from' parameter is missing")), "{:?}", out[3]);
    assert_eq!(refused(4), (Some("MailgunAPIError"), Some(404), Some("Domain not found: example.org")), "{:?}", out[4]);
    assert_eq!(refused(5), (Some("MailgunAPIError"), Some(401), Some("Forbidden")), "{:?}", out[5]);
}

/// Django with anymail's Mailgun backend pointed at this Baton: a full message, a batch with
/// `merge_data` and `merge_metadata` (anymail's recipient-variables), then a domain the client
/// may not use and a bad key, each printed as its `anymail_status` or anymail's error.
const ANYMAIL: &str = r#"import json, os
import django
from django.conf import settings
settings.configure(EMAIL_BACKEND="anymail.backends.mailgun.EmailBackend",
                   ANYMAIL={"MAILGUN_API_KEY": os.environ["KEY"], "MAILGUN_API_URL": os.environ["BASE"] + "/v3"})
django.setup()
from django.core.mail import get_connection
from anymail.message import AnymailMessage
from anymail.exceptions import AnymailAPIError

def send(m):
    try:
        m.send()
    except AnymailAPIError as e:
        print(json.dumps({"error": type(e).__name__, "status": e.status_code, "text": str(e)}))
        return
    s = m.anymail_status
    print(json.dumps({"message_id": s.message_id, "status": sorted(s.status),
                      "recipients": sorted(s.recipients), "cid": getattr(m, "cid", None)}))

m = AnymailMessage(
    subject="Grüße aus Köln", body="Hi", from_email="Acme <app@example.com>", to=["Alice <alice@example.net>"],
    cc=["bob@example.net"], bcc=["audit@example.com"], reply_to=["support@example.com"], headers={"X-Ref": "42"},
    tags=["reset"], metadata={"user": "7"},
)
m.attach("a.txt", b"hello", "text/plain")
m.cid = m.attach_inline_image(b"PNG", "logo.png", subtype="png")
m.attach_alternative('<p>Hi <img src="cid:%s"></p>' % m.cid, "text/html")
send(m)
send(AnymailMessage(
    subject="Hi %recipient.first%", body="Your code is %recipient.code%.", from_email="app@example.com",
    to=["Carol <carol@example.net>", "dave@example.net"],
    merge_data={"carol@example.net": {"first": "Carol", "code": 1}, "dave@example.net": {"first": "Dave", "code": 2}},
    merge_metadata={"carol@example.net": {"user": "c"}, "dave@example.net": {"user": "d"}},
))
send(AnymailMessage(subject="s", body="t", from_email="app@example.org", to=["a@example.net"]))
send(AnymailMessage(subject="s", body="t", from_email="app@example.com", to=["a@example.net"],
                    connection=get_connection("anymail.backends.mailgun.EmailBackend", api_key=os.environ["BAD_KEY"])))
"#;

#[tokio::test]
async fn anymails_mailgun_backend_sends_through_baton_and_raises_its_own_errors() {
    let (baton, primary, _backup) = baton_with_mocks().await;
    let env = [("KEY", KEY), ("BAD_KEY", BAD_KEY), ("BASE", baton.base.as_str())];
    let out = run_python_json(ANYMAIL, &env).await;
    assert_eq!(out[0]["status"], json!(["queued"]), "{:?}", out[0]);
    assert_eq!(out[0]["recipients"], json!(["alice@example.net", "audit@example.com", "bob@example.net"]));
    let status = baton.wait_final(&baton_id(&json!({"id": out[0]["message_id"]}))).await;
    assert_eq!((&status["tags"], &status["metadata"]), (&json!(["reset"]), &json!({"user": "7"})), "{status:#}");
    let got = primary.wait_for_messages(3, DEADLINE).await;
    assert_full_send(for_rcpt(&got, "alice@example.net"), out[0]["cid"].as_str().unwrap().trim_matches(['<', '>']));
    assert_eq!(out[1]["status"], json!(["queued"]), "{:?}", out[1]);
    assert_batch(&got);
    // anymail's merge_metadata travels as `v:user=%recipient.v:user%`: rendered per recipient.
    let carol = baton.status(&baton_id(&json!({"id": out[1]["message_id"]}))).await;
    assert_eq!(carol["metadata"], json!({"user": "c"}), "{carol:#}");
    assert_eq!((out[2]["error"].as_str(), out[2]["status"].as_u64()), (Some("AnymailRequestsAPIError"), Some(404)));
    assert!(out[2]["text"].as_str().unwrap().contains("Unknown sender domain 'example.org'"), "{:?}", out[2]);
    assert_eq!((out[3]["error"].as_str(), out[3]["status"].as_u64()), (Some("AnymailRequestsAPIError"), Some(401)));
}

/// The Python SDK off localhost needs HTTPS: Baton's `https_listen` with a certificate the SDK
/// trusts (`REQUESTS_CA_BUNDLE`). A primary that says the account is suspended: the message
/// the SDK sent once is delivered once, by the secondary.
#[tokio::test]
async fn over_https_a_suspended_primary_still_delivers_once_through_the_secondary() {
    let cert = support::certs::TestCert::generate();
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), &cert.ca_pem).unwrap();
    let (primary, backup) = (MockSmtp::start().await, MockSmtp::start().await);
    primary.set_reply(Stage::EndOfData, Some("554 5.7.1 Your account has been suspended".into()));
    let server = format!("https_listen = \"127.0.0.1:0\"\n{}", cert.server_tls_line());
    let baton = Baton::start_with_server(&server, "", &two_provider_route(&primary, &backup)).await;
    let https = format!("https://localhost:{}", baton.https_addr().port());
    let send = r#"answer(client.messages.create(domain="example.com", data={"from": "app@example.com", "to": "a@example.net", "subject": "failover", "text": "t"}))"#;
    let out = python(&https, KEY, &[("REQUESTS_CA_BUNDLE", ca.path().to_str().unwrap())], send).await;
    assert_eq!(out[0]["status"], 200, "{:?}", out[0]);
    let status = baton.wait_final(&baton_id(&out[0]["body"])).await;
    assert_eq!(status["recipients"][0]["provider"], "backup", "{status:#}");
    assert_eq!((primary.message_count(), backup.message_count()), (0, 1));
}
