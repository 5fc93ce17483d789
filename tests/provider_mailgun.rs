//! The Mailgun adapter against a local server that answers like Mailgun's API: the
//! `messages.mime` multipart request (a `to` field per recipient, the MIME byte-exact as the file
//! field `message`, Basic `api:<key>`), the classification of every documented answer with
//! failover to the backup, the message id, the domain probe (usable, failed, inconclusive), the
//! test-mode trial, and that the key never leaks.

mod provider_common;
mod support;

use base64::Engine as _;
use provider_common::*;
use serde_json::json;
use support::baton::{Baton, DEADLINE, message};
use support::mock_http::{MockHttp, Recorded, Reply};
use support::mock_smtp::{MockSmtp, Stage};

const SECRET: &str = "key-SECRET-9f8e7d6c5b4a39281706";
const DOMAIN: &str = "mg.example.com";
const SEND: &str = "/v3/mg.example.com/messages.mime";
const DOMAIN_INFO: &str = "/v4/domains/mg.example.com";

fn table() -> String {
    format!("api_key = \"{SECRET}\"\ndomain = \"{DOMAIN}\"\ntimeout = \"2s\"\n")
}

fn basic() -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("api:{SECRET}")))
}

fn domain_state(state: &str, disabled: bool) -> Reply {
    Reply::json(
        200,
        json!({"domain": {"name": DOMAIN, "state": state, "is_disabled": disabled}, "receiving_dns_records": [], "sending_dns_records": []}),
    )
}

fn queued(id: &str) -> Reply {
    Reply::json(200, json!({"id": id, "message": "Queued. Thank you."}))
}

async fn setup(health: &str) -> (MockHttp, MockSmtp, Baton) {
    let mock = MockHttp::start().await;
    mock.reply(DOMAIN_INFO, domain_state("active", false));
    let backup = MockSmtp::start().await;
    let baton = Baton::start(&config("mailgun", &mock.url(), &table(), &backup, health)).await;
    (mock, backup, baton)
}

/// One field of a multipart/form-data body.
#[derive(Debug)]
struct FormField {
    name: String,
    filename: Option<String>,
    content_type: Option<String>,
    data: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay[from..].windows(needle.len()).position(|w| w == needle).map(|p| p + from)
}

fn form_fields(req: &Recorded) -> Vec<FormField> {
    let ct = req.header("content-type").expect("content-type");
    assert!(ct.starts_with("multipart/form-data"), "{ct}");
    let boundary = ct.split("boundary=").nth(1).expect("boundary").trim_matches('"');
    let delim = format!("--{boundary}").into_bytes();
    let body = &req.body;
    let mut starts = Vec::new();
    let mut at = 0;
    while let Some(p) = find(body, &delim, at) {
        starts.push(p);
        at = p + delim.len();
    }
    let mut fields = Vec::new();
    for w in starts.windows(2) {
        let seg = &body[w[0] + delim.len()..w[1]];
        let seg = seg.strip_prefix(b"\r\n").expect("CRLF after boundary");
        let seg = seg.strip_suffix(b"\r\n").expect("CRLF before boundary");
        let split = find(seg, b"\r\n\r\n", 0).expect("part headers");
        let headers = String::from_utf8_lossy(&seg[..split]).to_string();
        let param = |key: &str| {
            headers
                .split(';')
                .map(str::trim)
                .find_map(|p| p.strip_prefix(&format!("{key}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
        };
        let content_type = headers
            .lines()
            .find_map(|l| l.strip_prefix("Content-Type: ").or_else(|| l.strip_prefix("content-type: ")))
            .map(str::to_string);
        fields.push(FormField {
            name: param("name").expect("field name"),
            filename: param("filename"),
            content_type,
            data: seg[split + 4..].to_vec(),
        });
    }
    fields
}

#[tokio::test]
async fn posts_the_mime_byte_exact_as_multipart() {
    let (mock, backup, baton) = setup("").await;
    mock.reply(SEND, queued("<20260101.1@mg.example.com>"));
    // 8-bit ISO-8859-1: not UTF-8, must still arrive unchanged.
    let raw: &[u8] = b"From: App <app@example.com>\r\nTo: alice@example.net\r\nCc: bob@example.net\r\nSubject: latin1\r\nMessage-ID: <mg-1@example.com>\r\nDate: Wed, 2 Dec 2026 10:00:00 +0000\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\nH\xe4llo w\xf6rld \r\n.dot\r\n";
    let id = send_raw(&baton, &["alice@example.net", "bob@example.net"], &["audit@example.com"], raw).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["status"], "delivered", "{status:#}");
    for r in status["recipients"].as_array().unwrap() {
        assert_eq!(r["provider"], API);
        assert_eq!(r["provider_message_id"], "<20260101.1@mg.example.com>", "Mailgun id kept");
    }
    let reqs = mock.requests_to(SEND);
    assert_eq!(reqs.len(), 1);
    let req = &reqs[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, SEND);
    assert_eq!(req.header("authorization"), Some(basic().as_str()));
    let fields = form_fields(req);
    let to: Vec<String> =
        fields.iter().filter(|f| f.name == "to").map(|f| String::from_utf8(f.data.clone()).unwrap()).collect();
    assert_eq!(to, vec!["alice@example.net", "bob@example.net", "audit@example.com"], "one to field per recipient");
    let msg: Vec<&FormField> = fields.iter().filter(|f| f.name == "message").collect();
    assert_eq!(msg.len(), 1);
    assert!(msg[0].filename.is_some(), "message is a file field");
    assert_eq!(msg[0].content_type.as_deref(), Some("message/rfc822"));
    assert_eq!(msg[0].data, raw, "raw MIME byte-exact");
    assert_eq!(fields.len(), 4, "{fields:?}");
    assert_eq!(backup.message_count(), 0);
    assert_secret_absent(&baton, &id, SECRET).await;
}

#[tokio::test]
async fn a_built_message_goes_out_as_spooled() {
    let (mock, backup, baton) = setup("").await;
    // Both providers fail, so the message stays spooled and its body can be compared.
    mock.reply(SEND, Reply::text(503, "unavailable"));
    backup.set_reply(Stage::Mail, Some("451 4.3.0 Try later".into()));
    let msg = json!({"from": "App <app@example.com>", "to": ["alice@example.net"], "subject": "Grüße",
        "text": "plain ✓", "html": "<p>html ✓</p>",
        "attachments": [{"filename": "a.bin", "content_type": "application/octet-stream", "content_base64": "AAEC/w=="}]});
    let id = baton.send(msg).await;
    let reqs = mock.wait_for_requests(SEND, 1, DEADLINE).await;
    baton.wait_status(&id, "both providers tried", |s| s["attempts"].as_array().is_some_and(|a| a.len() >= 2)).await;
    let fields = form_fields(&reqs[0]);
    let sent = &fields.iter().find(|f| f.name == "message").unwrap().data;
    assert_eq!(sent, &spooled_body(&baton, &id));
}

#[tokio::test]
async fn every_documented_answer_is_classified() {
    let (mock, backup, baton) = setup("").await;
    let cases = vec![
        Case::new("200", queued("<1.abc@mg.example.com>"), "accepted", End::Api("<1.abc@mg.example.com>")),
        Case::new("400", Reply::json(400, json!({"message": "'from' parameter is missing"})), "bad_request", End::Backup)
            .detail("parameter is missing"),
        Case::new(
            "403 not allowed to send",
            Reply::json(403, json!({"message": "Domain mg.example.com is not allowed to send: Please activate your Mailgun account."})),
            "account",
            End::Backup,
        )
        .detail("not allowed to send"),
        Case::new(
            "400 sandbox not allowed to send",
            Reply::json(400, json!({"message": "Domain sandbox123.mailgun.org is not allowed to send: Free accounts are for test purposes only. Please upgrade or add the address to authorized recipients in Account Settings."})),
            "sender_unverified",
            End::Backup,
        )
        .detail("not allowed to send"),
        Case::new("401 Forbidden", Reply::text(401, "Forbidden"), "account", End::Backup).detail("region"),
        Case::new("402", Reply::json(402, json!({"message": "Payment required"})), "account", End::Backup),
        Case::new("403 other", Reply::json(403, json!({"message": "forbidden"})), "account", End::Backup),
        Case::new("404 domain", Reply::json(404, json!({"message": "Domain not found: mg.example.com"})), "account", End::Backup)
            .detail("domain unknown"),
        Case::new("413", Reply::text(413, "Request Entity Too Large"), "bad_request", End::Backup),
        Case::new(
            "429",
            Reply::json(429, json!({"message": "Too many requests"})).with_header("retry-after", "45"),
            "rate_limited",
            End::Backup,
        )
        .next_trial(30.0, 45.0),
        Case::new("500", Reply::json(500, json!({"message": "Internal error"})), "transient", End::Backup),
        Case::new("502 HTML", Reply::text(502, "<html><body>502 Bad Gateway</body></html>"), "transient", End::Backup)
            .detail("Bad Gateway"),
        Case::new("200 HTML", Reply::text(200, "<html>hello</html>"), "transient", End::Backup).duplicate(),
        Case::new("200 without id", Reply::json(200, json!({"message": "Queued. Thank you."})), "transient", End::Backup)
            .duplicate(),
        Case::new("timeout", Reply::Hang, "transient", End::Backup).detail("timed out").duplicate(),
    ];
    run_cases(&baton, &mock, &backup, SEND, cases).await;
}

#[tokio::test]
async fn the_key_never_leaks_even_when_echoed() {
    let (mock, _backup, baton) = setup("").await;
    mock.reply(
        SEND,
        Reply::dynamic(|req: &Recorded| {
            let auth = req.header("authorization").unwrap_or_default().to_string();
            let decoded = auth
                .strip_prefix("Basic ")
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            Reply::json(400, json!({"message": format!("bad request from {decoded} ({auth})")}))
        }),
    );
    let id = baton.send(message(&["alice@example.net"], "echo")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["attempts"][0]["outcome"], "bad_request", "{status:#}");
    assert!(status["attempts"][0]["detail"].as_str().unwrap().contains("api:[redacted]"), "{status:#}");
    assert_secret_absent(&baton, &id, SECRET).await;
    let encoded = basic();
    assert_secret_absent(&baton, &id, encoded.strip_prefix("Basic ").unwrap()).await;
}

#[tokio::test]
async fn probe_checks_the_domain_state() {
    let (mock, backup, baton) = setup("probe_interval = \"200ms\"").await;
    let probes = mock.wait_for_requests(DOMAIN_INFO, 2, DEADLINE).await;
    assert_eq!(probes[0].method, "GET");
    assert_eq!(probes[0].header("authorization"), Some(basic().as_str()));
    let p = baton.wait_provider(API, "a passing probe", |p| p["last_probe"]["ok"] == true).await;
    assert!(p["last_probe"]["detail"].as_str().unwrap().contains("active"));

    mock.reply(DOMAIN_INFO, domain_state("unverified", false));
    let p = baton.wait_provider(API, "suspended", |p| p["state"] == "suspended").await;
    assert!(p["last_probe"]["detail"].as_str().unwrap().contains("unverified"), "{p:#}");
    let id = baton.send(message(&["alice@example.net"], "while suspended")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["recipients"][0]["provider"], "backup");
    assert_eq!(mock.requests_to(SEND).len(), 0);
    backup.wait_for_messages(1, DEADLINE).await;
}

#[tokio::test]
async fn probe_failures_disabled_and_unknown_domain() {
    let unknown = Reply::json(404, json!({"message": "Domain not found"}));
    for (reply, expect) in [(domain_state("active", true), "disabled"), (unknown, "domain unknown")] {
        let (mock, _backup, baton) = setup("probe_interval = \"200ms\"").await;
        mock.reply(DOMAIN_INFO, reply);
        let p = baton.wait_provider(API, "suspended", |p| p["state"] == "suspended").await;
        assert!(p["last_probe"]["detail"].as_str().unwrap().contains(expect), "{p:#}");
    }
}

/// A domain sending key cannot read the domain (and a wrong key or region answers the same 401):
/// the probe cannot judge, the provider stays, and the sends tell.
#[tokio::test]
async fn a_probe_a_domain_sending_key_may_not_make_is_inconclusive() {
    for reply in [Reply::text(401, "Forbidden"), Reply::json(403, json!({"message": "forbidden"}))] {
        let (mock, backup, baton) = setup("probe_interval = \"200ms\"").await;
        mock.reply(DOMAIN_INFO, reply);
        mock.reply(SEND, queued("<after@mg.example.com>"));
        baton.assert_inconclusive_probe_keeps(API, "account API key").await;
        assert_eq!(backup.message_count(), 0);
    }
}

#[tokio::test]
async fn the_trial_is_the_request_for_the_first_recipient_in_test_mode() {
    let mock = MockHttp::start().await;
    mock.reply(SEND, queued("<trial@mg.example.com>"));
    let provider = build(&format!("type = \"mailgun\"\nbase_url = \"{}\"\n{}", mock.url(), table()));
    let report = trial(provider.as_ref()).await;
    assert_eq!(report.class.as_str(), "accepted", "{}", report.detail);
    assert!(report.detail.contains("test mode"), "{}", report.detail);
    assert!(report.recipients.iter().all(|r| *r == baton::outcome::RecipientResult::NotDone));
    let reqs = mock.requests_to(SEND);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].header("authorization"), Some(basic().as_str()));
    let fields = form_fields(&reqs[0]);
    let text = |name: &str| -> Vec<String> {
        fields.iter().filter(|f| f.name == name).map(|f| String::from_utf8(f.data.clone()).unwrap()).collect()
    };
    assert_eq!(text("o:testmode"), vec!["yes"]);
    assert_eq!(text("to"), vec!["alice@example.net"], "the first recipient only");
    let msg = fields.iter().find(|f| f.name == "message").expect("the MIME goes as for a send");
    assert_eq!(msg.data, TRIAL_RAW);

    // A send (not a trial) never carries o:testmode.
    let (mock, _backup, baton) = setup("").await;
    mock.reply(SEND, queued("<real@mg.example.com>"));
    let id = baton.send(message(&["alice@example.net"], "real")).await;
    baton.wait_final(&id).await;
    assert!(form_fields(&mock.requests_to(SEND)[0]).iter().all(|f| f.name != "o:testmode"));
}
