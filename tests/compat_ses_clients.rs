//! The SES clients apps use besides boto3, as clients of Baton's SES-compatible API, each
//! pointed at Baton by its endpoint setting only and signing with the client's
//! `aws_credentials`: django-ses (v1 `SendRawEmail` after `GetSendQuota`, and `USE_SES_V2`:
//! `SendEmail` Raw after `GetAccount`), django-anymail's Amazon SES backend (v2 Raw, tags and
//! metadata), the AWS JS SDK's `@aws-sdk/client-sesv2` (Simple and Raw) and nodemailer's SES
//! transport. Every message is delivered at the scripted provider as the client built it (byte
//! for byte where the client builds the MIME), with Bcc only in the envelope; a wrong secret
//! comes back as each client's own `SignatureDoesNotMatch`.

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;
use support::baton::{AWS_KEY_ID, AWS_SECRET, Baton, DEADLINE};
use support::mock_smtp::{MockSmtp, ReceivedMessage};
use support::sdk::{run_node_json, run_python_json, two_provider_route};

const WRONG_SECRET: &str = "not-the-secret-000000000";

/// A Baton with two SMTP mocks on its route; the primary accepts everything.
async fn baton_with_mocks() -> (Baton, MockSmtp, MockSmtp) {
    let (primary, backup) = (MockSmtp::start().await, MockSmtp::start().await);
    let baton = Baton::start(&two_provider_route(&primary, &backup)).await;
    (baton, primary, backup)
}

/// Waits until Baton says `id` is delivered; returns the copy the provider got for `rcpt`,
/// checked to carry no Bcc header.
async fn delivered(baton: &Baton, mock: &MockSmtp, id: &str, rcpt: &str) -> (Value, ReceivedMessage) {
    let status = baton.wait_final(id).await;
    assert_eq!(status["status"], "delivered", "{status:#}");
    let got = mock.wait_for_messages(1, DEADLINE).await;
    let m = got.into_iter().find(|m| m.rcpts.iter().any(|r| r == rcpt)).unwrap_or_else(|| panic!("{rcpt} got it"));
    let text = m.data_str();
    let head = &text[..text.find("\r\n\r\n").unwrap_or(text.len())];
    assert!(m.header("Bcc").is_none() && !head.contains("audit@example.com"), "bcc stays off the headers: {head}");
    (status, m)
}

/// The bytes a client printed as base64 under `field`.
fn bytes_of(answer: &Value, field: &str) -> Vec<u8> {
    let b64 = answer[field].as_str().unwrap_or_else(|| panic!("{field} in {answer}"));
    BASE64.decode(b64).unwrap()
}

/// Checks that the provider got the bytes the client built, the envelope being to, cc and bcc.
fn assert_byte_exact(m: &ReceivedMessage, built: &[u8]) {
    assert_eq!(m.data_str(), String::from_utf8_lossy(built), "the client's MIME, byte for byte");
    assert_eq!(m.data, built);
    let mut rcpts = m.rcpts.clone();
    rcpts.sort();
    assert_eq!(rcpts, ["alice@example.net", "audit@example.com", "bob@example.net"], "to, cc and bcc");
    assert_eq!(m.mail_from, "app@example.com");
}

/// Django with django-ses as its `EMAIL_BACKEND`, pointed at Baton by
/// `AWS_SES_REGION_ENDPOINT_URL` (`AWS_SES_REGION_ENDPOINT` takes a host name and always builds
/// `https://`). django-ses serializes the message with its `get_message_bytes`; the script
/// wraps it to print what was sent. Prints the sent message's id (django-ses keeps it in
/// `extra_headers`) or what `send` raised, the bytes, the send quota django-ses's auto-throttle cached (it asks
/// before sending), then the error for a connection with a wrong secret.
const DJANGO_SES: &str = r#"import base64, json, os
import django
from django.conf import settings
settings.configure(
    EMAIL_BACKEND="django_ses.SESBackend",
    AWS_SES_REGION_NAME="eu-west-1",
    AWS_SES_REGION_ENDPOINT_URL=os.environ["BASE"],
    AWS_SES_ACCESS_KEY_ID=os.environ["KEY_ID"],
    AWS_SES_SECRET_ACCESS_KEY=os.environ["SECRET"],
    USE_SES_V2=os.environ["USE_SES_V2"] == "1",
)
django.setup()
import django_ses
from botocore.exceptions import ClientError
from django.core.mail import EmailMultiAlternatives, get_connection

built = []
serialize = django_ses.get_message_bytes
def capture(message):
    data = serialize(message)
    built.append(data)
    return data
django_ses.get_message_bytes = capture

def message(connection=None):
    m = EmailMultiAlternatives(
        subject="Grüße aus Köln", body="Hi, Grüße", from_email="Acme <app@example.com>",
        to=["Alice <alice@example.net>"], cc=["bob@example.net"], bcc=["audit@example.com"],
        reply_to=["support@example.com"], headers={"X-Ref": "42"}, connection=connection,
    )
    m.attach_alternative("<p>Hi, Grüße</p>", "text/html")
    m.attach("a.txt", b"hello", "text/plain")
    return m

m = message()
try:
    sent, raised = m.send(), None
except Exception as e:
    sent, raised = None, "%s: %s" % (type(e).__name__, e)
print(json.dumps({"sent": sent, "raised": raised, "id": m.extra_headers.get("message_id"),
                  "raw": base64.b64encode(built[0]).decode(), "rate_limits": django_ses.cached_rate_limits}))
try:
    message(get_connection(aws_secret_key="not-the-secret-000000000")).send()
    print(json.dumps({"sent": "with a wrong secret"}))
except ClientError as e:
    print(json.dumps({"error": e.response["Error"]["Code"], "status": e.response["ResponseMetadata"]["HTTPStatusCode"]}))
"#;

/// Runs [`DJANGO_SES`] against `baton`, with `USE_SES_V2` set to `v2`.
async fn django_ses(baton: &Baton, v2: bool) -> Vec<Value> {
    let env = [
        ("BASE", baton.base.as_str()),
        ("KEY_ID", AWS_KEY_ID),
        ("SECRET", AWS_SECRET),
        ("USE_SES_V2", if v2 { "1" } else { "0" }),
    ];
    run_python_json(DJANGO_SES, &env).await
}

/// What both django-ses tests check: the message Django built delivered byte for byte with Bcc
/// only in the envelope, the id being Baton's, the send quota (Baton's own rate) read from Baton
/// first, and a wrong secret raised as botocore's `SignatureDoesNotMatch`.
async fn assert_django_ses_sent(baton: &Baton, primary: &MockSmtp, out: &[Value], v2: bool) {
    // django-ses's v2 path reads the answer's request id (`x-amzn-RequestId`) after sending.
    assert_eq!((out[0]["sent"].as_u64(), &out[0]["raised"]), (Some(1), &Value::Null), "v2 = {v2}: {:?}", out[0]);
    assert_eq!(out[0]["rate_limits"][AWS_KEY_ID], 1000.0, "the quota came from Baton: {:?}", out[0]);
    let id = out[0]["id"].as_str().unwrap_or_else(|| panic!("{:?}", out[0]));
    let (_, m) = delivered(baton, primary, id, "alice@example.net").await;
    assert_byte_exact(&m, &bytes_of(&out[0], "raw"));
    assert!(m.header("Subject").is_some_and(|s| s.starts_with("=?utf-8?")), "{}", m.data_str());
    assert!(m.data_str().contains("filename=\"a.txt\"") && m.data_str().contains("X-Ref: 42"), "{}", m.data_str());
    assert_eq!(
        (out[1]["error"].as_str(), out[1]["status"].as_u64()),
        (Some("SignatureDoesNotMatch"), Some(403)),
        "{:?}",
        out[1]
    );
    assert_eq!(primary.message_count(), 1, "nothing taken with a wrong secret");
}

#[tokio::test]
async fn django_ses_sends_raw_through_baton_with_the_v1_api_after_asking_its_send_quota() {
    let (baton, primary, _backup) = baton_with_mocks().await;
    let out = django_ses(&baton, false).await;
    assert_django_ses_sent(&baton, &primary, &out, false).await;
}

#[tokio::test]
async fn django_ses_sends_raw_through_baton_with_use_ses_v2_after_reading_the_account() {
    let (baton, primary, _backup) = baton_with_mocks().await;
    let out = django_ses(&baton, true).await;
    assert_django_ses_sent(&baton, &primary, &out, true).await;
}

/// Django with django-anymail's Amazon SES backend (boto3 `sesv2`, `SendEmail` with
/// `Content.Raw`), pointed at Baton by the boto3 client parameters in
/// `ANYMAIL["AMAZON_SES_CLIENT_PARAMS"]`. Anymail sends metadata as an `X-Metadata` header and
/// tags as `X-Tag` headers, and one tag as an `EmailTags` entry named by
/// `AMAZON_SES_MESSAGE_TAG_NAME`. The script wraps the payload's `generate_raw_message` to print
/// the bytes sent. Prints the `anymail_status`, then anymail's error for a wrong secret.
const ANYMAIL_SES: &str = r#"import base64, json, os
import django
from django.conf import settings
params = {"endpoint_url": os.environ["BASE"], "region_name": "eu-west-1",
          "aws_access_key_id": os.environ["KEY_ID"], "aws_secret_access_key": os.environ["SECRET"]}
settings.configure(
    EMAIL_BACKEND="anymail.backends.amazon_ses.EmailBackend",
    ANYMAIL={"AMAZON_SES_CLIENT_PARAMS": params, "AMAZON_SES_MESSAGE_TAG_NAME": "campaign"},
)
django.setup()
from anymail.backends.amazon_ses import AmazonSESV2SendEmailPayload
from anymail.exceptions import AnymailAPIError
from anymail.message import AnymailMessage
from django.core.mail import get_connection

built = []
generate = AmazonSESV2SendEmailPayload.generate_raw_message
def capture(payload):
    data = generate(payload)
    built.append(data)
    return data
AmazonSESV2SendEmailPayload.generate_raw_message = capture

def message(connection=None):
    m = AnymailMessage(
        subject="Grüße aus Köln", body="Hi, Grüße", from_email="Acme <app@example.com>",
        to=["Alice <alice@example.net>"], cc=["bob@example.net"], bcc=["audit@example.com"],
        reply_to=["support@example.com"], headers={"X-Ref": "42"}, connection=connection,
        tags=["reset"], metadata={"user": "7"},
    )
    m.attach("a.txt", b"hello", "text/plain")
    cid = m.attach_inline_image(b"PNG", "logo.png", subtype="png")
    m.attach_alternative('<p>Hi <img src="cid:%s"></p>' % cid, "text/html")
    return m, cid

m, cid = message()
m.send()
s = m.anymail_status
print(json.dumps({"id": s.message_id, "status": sorted(s.status), "cid": cid, "raw": base64.b64encode(built[0]).decode(),
                  "recipients": {email: [r.message_id, r.status] for email, r in s.recipients.items()}}))
try:
    wrong = dict(params, aws_secret_access_key="not-the-secret-000000000")
    message(get_connection(client_params=wrong))[0].send()
    print(json.dumps({"sent": "with a wrong secret"}))
except AnymailAPIError as e:
    print(json.dumps({"error": type(e).__name__, "code": e.response["Error"]["Code"],
                      "status": e.response["ResponseMetadata"]["HTTPStatusCode"]}))
"#;

#[tokio::test]
async fn anymails_amazon_ses_backend_sends_through_baton_with_tags_and_metadata() {
    let (baton, primary, _backup) = baton_with_mocks().await;
    let env = [("BASE", baton.base.as_str()), ("KEY_ID", AWS_KEY_ID), ("SECRET", AWS_SECRET)];
    let out = run_python_json(ANYMAIL_SES, &env).await;
    assert_eq!(out[0]["status"], serde_json::json!(["queued"]), "{:?}", out[0]);
    let id = out[0]["id"].as_str().unwrap_or_else(|| panic!("{:?}", out[0]));
    let recipients = out[0]["recipients"].as_object().unwrap();
    assert_eq!(recipients.len(), 3, "to, cc and bcc: {recipients:?}");
    assert!(recipients.values().all(|r| r[0] == id && r[1] == "queued"), "one message: {recipients:?}");
    let (status, m) = delivered(&baton, &primary, id, "alice@example.net").await;
    // Anymail serializes with Python's default policy: lines end in LF. SMTP carries lines that
    // end in CRLF (RFC 5321 §2.3.8), so Baton changes each line ending and nothing else.
    let built = String::from_utf8(bytes_of(&out[0], "raw")).unwrap();
    assert!(!built.contains('\r'), "anymail's lines end in LF only");
    assert_byte_exact(&m, built.replace('\n', "\r\n").as_bytes());
    assert_eq!(status["metadata"]["campaign"], "reset", "the EmailTags entry is Baton's metadata: {status:#}");
    let text = m.data_str();
    let cid = out[0]["cid"].as_str().unwrap().trim_matches(['<', '>']);
    assert!(m.header("Subject").is_some_and(|s| s.starts_with("=?utf-8?")), "{text}");
    assert!(text.contains(&format!("Content-ID: <{cid}>")) && text.contains("filename=\"a.txt\""), "{text}");
    assert_eq!(m.header("X-Metadata").as_deref(), Some(r#"{"user": "7"}"#), "{text}");
    assert_eq!(m.header("X-Tag").as_deref(), Some("reset"), "{text}");
    assert_eq!(
        (out[1]["error"].as_str(), out[1]["code"].as_str(), out[1]["status"].as_u64()),
        (Some("AnymailAPIError"), Some("SignatureDoesNotMatch"), Some(403)),
        "{:?}",
        out[1]
    );
    assert_eq!(primary.message_count(), 1, "nothing taken with a wrong secret");
}

/// Runs `body` (an ES module) after `prelude`, with `print(value)` writing one JSON line and
/// `BASE` (Baton's `http://127.0.0.1:port`), `KEY_ID`, `SECRET` and `WRONG_SECRET` in the
/// environment.
async fn node(baton: &Baton, prelude: &str, body: &str) -> Vec<Value> {
    let script = format!(
        "const print = (value) => console.log(JSON.stringify(value));\n\
         const {{ BASE, KEY_ID, SECRET, WRONG_SECRET }} = process.env;\n{prelude}\n{body}"
    );
    let env =
        [("BASE", baton.base.as_str()), ("KEY_ID", AWS_KEY_ID), ("SECRET", AWS_SECRET), ("WRONG_SECRET", WRONG_SECRET)];
    run_node_json(&script, &env).await
}

/// The AWS JS SDK's SES v2 client takes Baton's URL as its `endpoint`. `send` answers the
/// command's output, or the error the SDK threw: its `name` is the AWS error code.
const SESV2: &str = r#"
import { SESv2Client, SendEmailCommand, GetAccountCommand } from "@aws-sdk/client-sesv2";
const ses = (secretAccessKey) =>
    new SESv2Client({ endpoint: BASE, region: "eu-west-1", credentials: { accessKeyId: KEY_ID, secretAccessKey } });
const send = async (client, command) => {
    try {
        const { $metadata, ...output } = await client.send(command);
        return { ok: output, status: $metadata.httpStatusCode };
    } catch (e) {
        return { error: e.name, fault: e.$fault, status: e.$metadata?.httpStatusCode, message: e.message };
    }
};
"#;

/// A raw message with a UTF-8 subject, an 8-bit body and a line starting with a dot (SMTP
/// stuffs it on the way to the provider, which unstuffs it).
const RAW: &str = "From: Acme <app@example.com>\r\nTo: Alice <alice@example.net>\r\nCc: bob@example.net\r\n\
    Subject: =?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=\r\nMessage-ID: <raw-js-1@example.com>\r\n\
    Date: Wed, 2 Dec 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
    Content-Transfer-Encoding: 8bit\r\n\r\nGrüße\r\n.a line with a dot\r\n";

#[tokio::test]
async fn the_aws_js_sdk_sends_simple_and_raw_through_baton_and_throws_its_own_error_for_a_wrong_secret() {
    let (baton, primary, _backup) = baton_with_mocks().await;
    let body = format!(
        r#"
const client = ses(SECRET);
print(await send(client, new SendEmailCommand({{
    FromEmailAddress: "Acme <app@example.com>",
    Destination: {{ ToAddresses: ["Alice <alice@example.net>"], CcAddresses: ["bob@example.net"],
                   BccAddresses: ["audit@example.com"] }},
    ReplyToAddresses: ["support@example.com"], EmailTags: [{{ Name: "campaign", Value: "reset" }}],
    Content: {{ Simple: {{
        Subject: {{ Data: "Grüße aus Köln", Charset: "UTF-8" }},
        Body: {{ Text: {{ Data: "Hi" }}, Html: {{ Data: '<p>Hi <img src="cid:logo"></p>' }} }},
        Headers: [{{ Name: "X-Ref", Value: "42" }}],
        Attachments: [
            {{ RawContent: Buffer.from("hello"), FileName: "a.txt", ContentType: "text/plain" }},
            {{ RawContent: Buffer.from("PNG"), FileName: "logo.png", ContentType: "image/png",
               ContentDisposition: "INLINE", ContentId: "logo" }},
        ],
    }} }},
}})));
print(await send(client, new SendEmailCommand({{
    Destination: {{ ToAddresses: ["alice@example.net"], CcAddresses: ["bob@example.net"],
                   BccAddresses: ["audit@example.com"] }},
    Content: {{ Raw: {{ Data: Buffer.from({RAW:?}) }} }},
}})));
print(await send(client, new GetAccountCommand({{}})));
print(await send(ses(WRONG_SECRET), new SendEmailCommand({{
    FromEmailAddress: "app@example.com", Destination: {{ ToAddresses: ["a@example.net"] }},
    Content: {{ Simple: {{ Subject: {{ Data: "s" }}, Body: {{ Text: {{ Data: "t" }} }} }} }},
}})));
"#
    );
    let out = node(&baton, SESV2, &body).await;
    assert_eq!(out[0]["status"], 200, "{:?}", out[0]);
    let id = out[0]["ok"]["MessageId"].as_str().unwrap_or_else(|| panic!("{:?}", out[0]));
    let (status, m) = delivered(&baton, &primary, id, "alice@example.net").await;
    assert_eq!(status["metadata"]["campaign"], "reset", "{status:#}");
    assert_eq!(m.rcpts.len(), 3, "to, cc and bcc: {:?}", m.rcpts);
    let text = m.data_str();
    assert!(m.header("Subject").is_some_and(|s| s.starts_with("=?utf-8?")), "UTF-8 subject encoded: {text}");
    assert!(text.contains("Content-ID: <logo>") && text.contains("filename=\"a.txt\""), "{text}");
    assert!(text.contains("X-Ref: 42") && text.contains("Reply-To: <support@example.com>"), "{text}");
    assert!(m.header("Cc").is_some_and(|c| c.contains("bob@example.net")), "{text}");
    assert!(text.contains("text/plain") && text.contains("text/html"), "html + text: {text}");

    let raw_id = out[1]["ok"]["MessageId"].as_str().unwrap_or_else(|| panic!("{:?}", out[1]));
    assert_eq!(baton.wait_final(raw_id).await["status"], "delivered");
    let raw = primary.messages().into_iter().find(|m| m.message_id().as_deref() == Some("<raw-js-1@example.com>"));
    assert_byte_exact(&raw.expect("the raw message"), RAW.as_bytes());

    assert_eq!(out[2]["ok"]["SendingEnabled"], true, "{:?}", out[2]);
    assert_eq!(
        (out[3]["error"].as_str(), out[3]["status"].as_u64(), out[3]["fault"].as_str()),
        (Some("SignatureDoesNotMatch"), Some(403), Some("client")),
        "{:?}",
        out[3]
    );
    assert_eq!(primary.message_count(), 2, "nothing taken with a wrong secret");
}

/// nodemailer's SES transport takes an `@aws-sdk/client-sesv2` client and its
/// `SendEmailCommand`; it builds the MIME itself and sends it as `Content.Raw`, the envelope
/// (to, cc and bcc) as `Destination.ToAddresses`, and `ses` fields as they are. Its `info.raw`
/// is the bytes it sent.
const NODEMAILER: &str = r#"
import nodemailer from "nodemailer";
import { SESv2Client, SendEmailCommand } from "@aws-sdk/client-sesv2";
const transport = (secretAccessKey) => nodemailer.createTransport({ SES: {
    sesClient: new SESv2Client({ endpoint: BASE, region: "eu-west-1", credentials: { accessKeyId: KEY_ID, secretAccessKey } }),
    SendEmailCommand,
} });
const mail = {
    from: '"Acme" <app@example.com>', to: "Alice <alice@example.net>", cc: "bob@example.net",
    bcc: "audit@example.com", replyTo: "support@example.com", subject: "Grüße aus Köln",
    text: "Hi, Grüße", html: '<p>Hi <img src="cid:logo"></p>', headers: { "X-Ref": "42" },
    attachments: [
        { filename: "a.txt", content: "hello", contentType: "text/plain" },
        { filename: "logo.png", content: Buffer.from("PNG"), contentType: "image/png", cid: "logo" },
    ],
    ses: { EmailTags: [{ Name: "campaign", Value: "reset" }] },
};
const send = async (t) => {
    try {
        const info = await t.sendMail(mail);
        return { response: info.response, messageId: info.messageId, envelope: info.envelope,
                 raw: info.raw.toString("base64") };
    } catch (e) {
        return { error: e.name, code: e.code, status: e.$metadata?.httpStatusCode };
    }
};
"#;

#[tokio::test]
async fn nodemailers_ses_transport_sends_its_own_mime_through_baton_byte_for_byte() {
    let (baton, primary, _backup) = baton_with_mocks().await;
    let out =
        node(&baton, NODEMAILER, "print(await send(transport(SECRET)));\nprint(await send(transport(WRONG_SECRET)));")
            .await;
    let id = out[0]["response"].as_str().unwrap_or_else(|| panic!("{:?}", out[0]));
    assert_eq!(out[0]["messageId"], format!("<{id}@eu-west-1.amazonses.com>"), "nodemailer's form of Baton's id");
    let (status, m) = delivered(&baton, &primary, id, "alice@example.net").await;
    assert_byte_exact(&m, &bytes_of(&out[0], "raw"));
    assert_eq!(status["metadata"]["campaign"], "reset", "the `ses` EmailTags: {status:#}");
    let text = m.data_str();
    assert!(m.header("Subject").is_some_and(|s| s.to_lowercase().starts_with("=?utf-8?")), "{text}");
    assert!(text.contains("Content-ID: <logo>") && text.contains("filename=a.txt"), "{text}");
    assert_eq!(
        (out[1]["error"].as_str(), out[1]["status"].as_u64()),
        (Some("SignatureDoesNotMatch"), Some(403)),
        "{:?}",
        out[1]
    );
    assert_eq!(out[1]["code"], "ESES", "nodemailer tags SDK errors: {:?}", out[1]);
    assert_eq!(primary.message_count(), 1, "nothing taken with a wrong secret");
}
