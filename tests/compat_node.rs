//! The providers' official Node SDKs as clients, each pointed at Baton by its base URL or host
//! only: `@mailchimp/mailchimp_transactional`, `@sendgrid/mail`, `postmark` and `resend`. For
//! each: a send with names, cc/bcc, UTF-8 subject, html + text, an attachment, an inline image
//! and tags/categories/metadata, answered in the SDK's success shape with Baton's message id
//! and delivered (subject encoded, Content-ID kept, no Bcc header) at the scripted provider;
//! a bad key as the SDK's own error; a bad field as the SDK's error naming it. Resend also:
//! the same `idempotencyKey` twice is one message.

mod support;

use serde_json::Value;
use support::baton::{Baton, DEADLINE, KEY};
use support::mock_smtp::{MockSmtp, ReceivedMessage};
use support::sdk::{run_node_json, two_provider_route};

const BAD_KEY: &str = "not-a-key-of-this-baton";

/// Runs `body` (an ES module) after `prelude`, with `print(value)` writing one JSON line and
/// `KEY`, `BAD_KEY` and `BASE` (Baton's `http://127.0.0.1:port`) in the environment.
async fn node(baton: &Baton, prelude: &str, body: &str) -> Vec<Value> {
    let script = format!(
        "const print = (value) => console.log(JSON.stringify(value));\n\
         const {{ KEY, BAD_KEY, BASE }} = process.env;\n{prelude}\n{body}"
    );
    run_node_json(&script, &[("KEY", KEY), ("BAD_KEY", BAD_KEY), ("BASE", &baton.base)]).await
}

/// A Baton with two SMTP mocks on its route; the primary accepts everything.
async fn baton_with_mocks() -> (Baton, MockSmtp, MockSmtp) {
    let (primary, backup) = (MockSmtp::start().await, MockSmtp::start().await);
    let baton = Baton::start(&two_provider_route(&primary, &backup)).await;
    (baton, primary, backup)
}

/// Waits until Baton says `id` is delivered; returns the copy the provider got for `rcpt`,
/// checked for what every send here asks: the UTF-8 subject encoded, the inline image's
/// Content-ID kept, the attachment named, and the bcc recipient nowhere in the headers.
async fn delivered(baton: &Baton, mock: &MockSmtp, id: &str, rcpt: &str) -> ReceivedMessage {
    let status = baton.wait_final(id).await;
    assert_eq!(status["status"], "delivered", "{status:#}");
    let got = mock.wait_for_messages(1, DEADLINE).await;
    let m = got.into_iter().find(|m| m.rcpts.iter().any(|r| r == rcpt)).unwrap_or_else(|| panic!("{rcpt} got it"));
    let text = m.data_str();
    assert!(m.header("Subject").is_some_and(|s| s.starts_with("=?utf-8?")), "UTF-8 subject encoded: {text}");
    assert!(text.contains("Content-ID: <logo>") && text.contains("filename=\"a.txt\""), "{text}");
    let head = &text[..text.find("\r\n\r\n").unwrap_or(text.len())];
    assert!(m.header("Bcc").is_none() && !head.contains("audit@example.com"), "bcc stays off the headers: {head}");
    m
}

/// The Mailchimp Transactional SDK takes no host option: its client's `basePath` (set in its
/// constructor, read by every call) is the one place the API root lives. It never throws on an
/// error answer: it returns axios' error as the call's value.
const MANDRILL: &str = r#"
import mailchimp from "@mailchimp/mailchimp_transactional";
const client = (key) => {
    const c = mailchimp(key);
    c.basePath = BASE + "/api/1.3";
    return c;
};
const answer = (r) => r instanceof Error
    ? { error: r.constructor.name, status: r.response?.status, body: r.response?.data }
    : { ok: r };
"#;

#[tokio::test]
async fn the_mandrill_node_sdk_sends_through_baton_and_gets_its_own_answers() {
    let (baton, primary, _backup) = baton_with_mocks().await;
    // Mandrill has no reply-to field: apps put it in `message.headers`.
    let out = node(
        &baton,
        MANDRILL,
        r#"
const mc = client(KEY);
print(answer(await mc.users.ping2()));
print(answer(await mc.messages.send({ message: {
    from_email: "app@example.com", from_name: "Acme", subject: "Grüße aus Köln", text: "Hi",
    html: '<p>Hi <img src="cid:logo"></p>',
    to: [{ email: "alice@example.net", name: "Alice" }, { email: "bob@example.net", type: "cc" }],
    bcc_address: "audit@example.com", headers: { "X-Ref": "42", "Reply-To": "support@example.com" },
    tags: ["reset"], metadata: { user: "7" },
    attachments: [{ type: "text/plain", name: "a.txt", content: Buffer.from("hello").toString("base64") }],
    images: [{ type: "image/png", name: "logo", content: Buffer.from("PNG").toString("base64") }],
} })));
print(answer(await client(BAD_KEY).messages.send({ message: {
    from_email: "app@example.com", to: [{ email: "a@example.net" }], subject: "s", text: "t" } })));
print(answer(await mc.messages.send({ message: {
    from_email: "app@example.com", to: [{ email: 42 }], subject: "s", text: "t" } })));
"#,
    )
    .await;
    assert_eq!(out[0]["ok"]["PING"], "PONG!", "{:?}", out[0]);
    let results = out[1]["ok"].as_array().unwrap_or_else(|| panic!("{:?}", out[1]));
    assert_eq!(results.len(), 2, "one entry per recipient: {results:?}");
    for r in results {
        assert_eq!(r["status"], "queued", "{r}");
        assert!(r.get("queued_reason").is_none_or(Value::is_null), "{r}");
    }
    assert_eq!(results[0]["email"], "alice@example.net");
    let alice = delivered(&baton, &primary, results[0]["_id"].as_str().unwrap(), "alice@example.net").await;
    assert!(alice.data_str().contains("X-Ref: 42") && alice.data_str().contains("Acme"), "{}", alice.data_str());
    assert_eq!(alice.header("Reply-To").as_deref(), Some("<support@example.com>"), "{}", alice.data_str());
    assert!(alice.rcpts.contains(&"audit@example.com".to_string()), "bcc_address gets a copy: {:?}", alice.rcpts);
    delivered(&baton, &primary, results[1]["_id"].as_str().unwrap(), "bob@example.net").await;
    assert_eq!(out[2]["error"], "AxiosError", "returned, not thrown: {:?}", out[2]);
    assert_eq!(out[2]["body"]["name"], "Invalid_Key", "{:?}", out[2]);
    assert_eq!(out[2]["body"]["status"], "error", "{:?}", out[2]);
    assert_eq!(out[3]["body"]["name"], "ValidationError", "{:?}", out[3]);
    assert!(out[3]["body"]["message"].as_str().unwrap().contains("to[0].email"), "names the field: {:?}", out[3]);
}

/// `@sendgrid/mail` sends through a `@sendgrid/client`; that client's default request
/// `baseUrl` (what its own data-residency setting changes) is the API root. Set it after the
/// key: `setApiKey` resets it to SendGrid's host. Attachments go out as given (the SDK does not
/// snake-case them), so the inline image's id is written `content_id`, as the API names it.
const SENDGRID: &str = r#"
import sgMail from "@sendgrid/mail";
import { Client } from "@sendgrid/client";
const mailer = (key) => {
    const client = new Client();
    const mail = new sgMail.MailService();
    mail.setClient(client);
    mail.setApiKey(key);
    client.setDefaultRequest("baseUrl", BASE);
    return mail;
};
const send = async (mail, msg) => {
    try {
        const [response] = await mail.send(msg);
        return { status: response.statusCode, id: response.headers["x-message-id"] };
    } catch (e) {
        return { error: e.constructor.name, status: e.code, body: e.response?.body };
    }
};
"#;

#[tokio::test]
async fn the_sendgrid_node_sdk_sends_through_baton_and_gets_its_own_answers() {
    let (baton, primary, _backup) = baton_with_mocks().await;
    let out = node(
        &baton,
        SENDGRID,
        r#"
const sg = mailer(KEY);
print(await send(sg, {
    from: { email: "app@example.com", name: "Acme" }, to: { email: "alice@example.net", name: "Alice" },
    cc: "bob@example.net", bcc: ["audit@example.com"], replyTo: "support@example.com", subject: "Grüße aus Köln",
    text: "Hi", html: '<p>Hi <img src="cid:logo"></p>', headers: { "X-Ref": "42" },
    attachments: [
        { content: Buffer.from("hello").toString("base64"), filename: "a.txt", type: "text/plain",
          disposition: "attachment" },
        { content: Buffer.from("PNG").toString("base64"), filename: "logo.png", type: "image/png",
          disposition: "inline", content_id: "logo" },
    ],
    categories: ["reset"], customArgs: { user: "7" },
}));
print(await send(mailer(BAD_KEY), { from: "app@example.com", to: "a@example.net", subject: "s", text: "t" }));
print(await send(sg, { from: "app@example.com", to: "not an address", subject: "s", text: "t" }));
"#,
    )
    .await;
    assert_eq!(out[0]["status"], 202, "{:?}", out[0]);
    let id = out[0]["id"].as_str().unwrap_or_else(|| panic!("X-Message-Id: {:?}", out[0]));
    let m = delivered(&baton, &primary, id, "alice@example.net").await;
    assert!(m.rcpts.contains(&"bob@example.net".to_string()) && m.rcpts.contains(&"audit@example.com".to_string()));
    let text = m.data_str();
    assert!(text.contains("X-Ref: 42") && text.contains("Reply-To: <support@example.com>"), "{text}");
    assert_eq!(
        (out[1]["error"].as_str(), out[1]["status"].as_u64()),
        (Some("ResponseError"), Some(401)),
        "{:?}",
        out[1]
    );
    assert!(out[1]["body"]["errors"][0]["message"].is_string(), "SendGrid's error shape: {:?}", out[1]);
    assert_eq!(
        (out[2]["error"].as_str(), out[2]["status"].as_u64()),
        (Some("ResponseError"), Some(400)),
        "{:?}",
        out[2]
    );
    assert_eq!(
        out[2]["body"]["errors"][0]["field"], "personalizations.0.to.0.email",
        "SendGrid's field name: {:?}",
        out[2]
    );
}

/// The postmark SDK builds its URL from the client options `useHttps` and `requestHost`.
const POSTMARK: &str = r#"
import postmark from "postmark";
const server = (token) => new postmark.ServerClient(token, { useHttps: false, requestHost: new URL(BASE).host });
const send = async (client, msg) => {
    try {
        return await client.sendEmail(msg);
    } catch (e) {
        return { error: e.constructor.name, code: e.code, status: e.statusCode, message: e.message };
    }
};
"#;

#[tokio::test]
async fn the_postmark_node_sdk_sends_through_baton_and_gets_its_own_answers() {
    let (baton, primary, _backup) = baton_with_mocks().await;
    let out = node(
        &baton,
        POSTMARK,
        r#"
const pm = server(KEY);
print(await send(pm, {
    From: "Acme <app@example.com>", To: '"Doe, Alice" <alice@example.net>', Cc: "bob@example.net",
    Bcc: "audit@example.com", ReplyTo: "support@example.com", Subject: "Grüße aus Köln",
    HtmlBody: '<p>Hi <img src="cid:logo"></p>', TextBody: "Hi", Headers: [{ Name: "X-Ref", Value: "42" }],
    Tag: "reset", Metadata: { user: "7" },
    Attachments: [
        { Name: "a.txt", Content: Buffer.from("hello").toString("base64"), ContentType: "text/plain", ContentID: null },
        { Name: "logo.png", Content: Buffer.from("PNG").toString("base64"), ContentType: "image/png",
          ContentID: "cid:logo" },
    ],
}));
print(await send(server(BAD_KEY), { From: "app@example.com", To: "a@example.net", Subject: "s", TextBody: "t" }));
print(await send(pm, { From: "not an address", To: "a@example.net", Subject: "s", TextBody: "t" }));
"#,
    )
    .await;
    assert_eq!((out[0]["ErrorCode"].as_u64(), out[0]["Message"].as_str()), (Some(0), Some("OK")), "{:?}", out[0]);
    assert!(out[0]["To"].as_str().unwrap().contains("alice@example.net") && out[0]["SubmittedAt"].is_string());
    let m = delivered(&baton, &primary, out[0]["MessageID"].as_str().unwrap(), "alice@example.net").await;
    let text = m.data_str();
    assert!(text.contains("\"Doe, Alice\"") && text.contains("X-Ref: 42"), "{text}");
    assert_eq!(m.rcpts.len(), 3, "to, cc and bcc: {:?}", m.rcpts);
    assert_eq!(
        (out[1]["error"].as_str(), out[1]["code"].as_u64()),
        (Some("InvalidAPIKeyError"), Some(10)),
        "{:?}",
        out[1]
    );
    assert_eq!(out[1]["status"], 401, "{:?}", out[1]);
    assert_eq!(
        (out[2]["error"].as_str(), out[2]["code"].as_u64()),
        (Some("InvalidEmailRequestError"), Some(300)),
        "{:?}",
        out[2]
    );
    assert!(out[2]["message"].as_str().unwrap().to_lowercase().contains("from"), "names the field: {:?}", out[2]);
}

/// The resend SDK takes the API root as its constructor's `baseUrl` option. It answers
/// `{ data, error }` and never throws for an error answer.
const RESEND: &str = r#"
import { Resend } from "resend";
const resend = (key) => new Resend(key, { baseUrl: BASE });
"#;

#[tokio::test]
async fn the_resend_node_sdk_sends_through_baton_with_idempotency_and_its_own_answers() {
    let (baton, primary, _backup) = baton_with_mocks().await;
    let out = node(
        &baton,
        RESEND,
        r#"
const rs = resend(KEY);
print(await rs.emails.send({
    from: "Acme <app@example.com>", to: ["Alice <alice@example.net>"], cc: "bob@example.net",
    bcc: ["audit@example.com"], replyTo: "support@example.com", subject: "Grüße aus Köln",
    html: '<p>Hi <img src="cid:logo"></p>', text: "Hi", headers: { "X-Entity-Ref-ID": "42" },
    tags: [{ name: "category", value: "reset" }],
    attachments: [
        { filename: "a.txt", content: Buffer.from("hello") },
        { filename: "logo.png", content: Buffer.from("PNG").toString("base64"), contentId: "logo",
          contentType: "image/png" },
    ],
}));
const once = { from: "app@example.com", to: "erin@example.net", subject: "once", text: "x" };
print(await rs.emails.send(once, { idempotencyKey: "reset-7" }));
print(await rs.emails.send(once, { idempotencyKey: "reset-7" }));
print(await resend(BAD_KEY).emails.send({ from: "app@example.com", to: "a@example.net", subject: "s", text: "t" }));
print(await rs.emails.send({ from: "app@example.com", to: "not an address", subject: "s", text: "t" }));
"#,
    )
    .await;
    assert!(out[0]["error"].is_null(), "{:?}", out[0]);
    let id = out[0]["data"]["id"].as_str().unwrap_or_else(|| panic!("{:?}", out[0]));
    let m = delivered(&baton, &primary, id, "alice@example.net").await;
    assert!(m.data_str().contains("X-Entity-Ref-ID: 42"), "{}", m.data_str());
    assert_eq!(m.rcpts.len(), 3, "to, cc and bcc: {:?}", m.rcpts);
    let (first, again) = (&out[1]["data"]["id"], &out[2]["data"]["id"]);
    assert!(first.is_string() && first == again, "same key, same message: {:?} {:?}", out[1], out[2]);
    assert_eq!(baton.wait_final(first.as_str().unwrap()).await["status"], "delivered");
    let erin = primary.messages().into_iter().filter(|m| m.rcpts == ["erin@example.net"]).count();
    assert_eq!(erin, 1, "one message delivered for one key");
    assert_eq!(
        (out[3]["error"]["name"].as_str(), out[3]["error"]["statusCode"].as_u64()),
        (Some("invalid_api_key"), Some(403)),
        "{:?}",
        out[3]
    );
    assert!(out[3]["data"].is_null(), "{:?}", out[3]);
    assert_eq!(out[4]["error"]["name"], "validation_error", "{:?}", out[4]);
    assert!(out[4]["error"]["message"].as_str().unwrap().contains("to[0]"), "names the field: {:?}", out[4]);
}
