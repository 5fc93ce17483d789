//! The SES v2 adapter (official SDK) against a local mock answering like SES v2's REST-JSON
//! protocol: the raw message goes out byte-exact and signed, every documented error type is
//! classified, SDK retries are off, the account probe drives health (and a key that may not read
//! the account leaves it alone), secrets stay out.
//! Every config here has static keys and an `endpoint`: the SDK never looks for credentials or
//! reaches a real AWS endpoint.

mod support;

use base64::Engine as _;
use serde_json::{Value, json};
use support::baton::{Baton, DEADLINE, KEY, message, smtp_provider};
use support::mock_http::{MockHttp, Recorded, Reply};
use support::mock_smtp::MockSmtp;

const KEY_ID: &str = "AKIDBATONTEST0000001";
const SECRET: &str = "SesSecretKey/wJalrXUtnFEMI+K7MDENGbPxRfiCY";
const SESSION: &str = "SesSessionToken-FwoGZXIvYXdzEJr";
const MESSAGE_ID: &str = "010001933b1c2d3e-5f6a7b8c-0000-4000-8000-000000000000-000000";
const SEND_PATH: &str = "/v2/email/outbound-emails";
const ACCOUNT_PATH: &str = "/v2/email/account";

/// Route `ses → backup`; `extra` goes into `[providers.ses]`.
fn config(mock: &MockHttp, backup: &MockSmtp, extra: &str, health: &str) -> String {
    let health = if health.is_empty() { "probe_interval = \"1h\"" } else { health };
    format!(
        "[providers.ses]\ntype = \"ses\"\nregion = \"eu-west-1\"\naccess_key_id = \"{KEY_ID}\"\nsecret_access_key = \"{SECRET}\"\nendpoint = \"{}\"\n{}\n{extra}\n{}\n[retry]\nschedule = [\"1h\"]\n\n[health]\n{health}\n\n[[routes]]\nname = \"default\"\nproviders = [\"ses\", \"backup\"]\n",
        mock.url(),
        if extra.contains("timeout") { "" } else { "timeout = \"2s\"" },
        smtp_provider("backup", backup, ""),
    )
}

fn ok_reply() -> Reply {
    Reply::json(200, json!({"MessageId": MESSAGE_ID}))
}

fn account(sending: bool, enforcement: &str) -> Reply {
    Reply::json(
        200,
        json!({
            "DedicatedIpAutoWarmupEnabled": false,
            "EnforcementStatus": enforcement,
            "ProductionAccessEnabled": true,
            "SendQuota": {"Max24HourSend": 50000.0, "MaxSendRate": 14.0, "SentLast24Hours": 12.0},
            "SendingEnabled": sending,
        }),
    )
}

/// An SES error with its type in `x-amzn-ErrorType`, as SES v2 sends it.
fn error(status: u16, kind: &str, text: &str) -> Reply {
    Reply::json(status, json!({"message": text}))
        .with_header("x-amzn-ErrorType", &format!("{kind}:http://internal.amazon.com/coral/com.amazon.sesv2/"))
        .with_header("x-amzn-RequestId", "6a1d54b4-0c7f-4b5e-9b1b-1e2f3a4b5c6d")
}

/// An SES error with its type only in the body's `__type`.
fn body_error(status: u16, kind: &str, text: &str) -> Reply {
    Reply::json(status, json!({"__type": format!("com.amazonaws.sesv2#{kind}"), "message": text}))
}

fn html(status: u16, body: &str) -> Reply {
    Reply::Static { status, headers: vec![("content-type".into(), "text/html".into())], body: body.into() }
}

async fn healthy_mock() -> MockHttp {
    let mock = MockHttp::start().await;
    mock.reply(ACCOUNT_PATH, account(true, "HEALTHY"));
    mock.reply(SEND_PATH, ok_reply());
    mock
}

/// The request was signed with SigV4 for SES in the configured region, and carries no secret.
fn assert_signed(req: &Recorded) {
    let auth = req.header("authorization").expect("Authorization header");
    assert!(auth.starts_with(&format!("AWS4-HMAC-SHA256 Credential={KEY_ID}/")), "{auth}");
    assert!(auth.contains("/eu-west-1/ses/aws4_request"), "{auth}");
    assert!(auth.contains("Signature="), "{auth}");
    assert!(req.header("x-amz-date").is_some());
    for (name, value) in &req.headers {
        assert!(!value.to_str().unwrap_or_default().contains(SECRET), "secret in header {name}");
    }
    assert!(!req.text().contains(SECRET), "secret in the request body");
}

#[tokio::test]
async fn sends_the_raw_message_byte_exact_and_signed() {
    let mock = healthy_mock().await;
    let backup = MockSmtp::start().await;
    let extra = format!("session_token = \"{SESSION}\"\nconfiguration_set = \"transactional\"");
    let baton = Baton::start(&config(&mock, &backup, &extra, "")).await;
    // 8-bit UTF-8, odd spacing, a dot-leading line, no trailing newline: must arrive untouched.
    let raw: &[u8] = "From: App <app@example.com>\r\nTo: alice@example.net\r\nCc: bob@example.net\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nMessage-ID: <raw-1@example.com>\r\nDate: Wed, 2 Dec 2026 10:00:00 +0000\r\nX-Spacing:   kept   as is  \r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln\r\n.leading dot\r\n\r\ntrailing  "
        .as_bytes();
    let request = json!({
        "from": "app@example.com",
        "to": ["alice@example.net"],
        "cc": ["bob@example.net"],
        "raw_base64": base64::engine::general_purpose::STANDARD.encode(raw),
    });
    let (code, body) = baton.post(Some(KEY), None, request.to_string()).await;
    assert_eq!(code, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let status = baton.wait_final(&id).await;
    assert_eq!(status["status"], "delivered", "{status:#}");
    for r in status["recipients"].as_array().unwrap() {
        assert_eq!(r["provider"], "ses", "{r}");
        assert_eq!(r["provider_message_id"], MESSAGE_ID, "{r}");
    }
    assert!(status["attempts"][0]["detail"].as_str().unwrap().contains(MESSAGE_ID), "{status:#}");

    let sent = mock.requests_to(SEND_PATH);
    assert_eq!(sent.len(), 1);
    let req = &sent[0];
    assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", SEND_PATH));
    assert_signed(req);
    assert_eq!(req.header("x-amz-security-token"), Some(SESSION), "the session token travels as AWS requires");
    let j = req.json();
    assert_eq!(j["FromEmailAddress"], "app@example.com");
    assert_eq!(j["Destination"]["ToAddresses"], json!(["alice@example.net", "bob@example.net"]));
    assert_eq!(j["ConfigurationSetName"], "transactional");
    let data = base64::engine::general_purpose::STANDARD.decode(j["Content"]["Raw"]["Data"].as_str().unwrap()).unwrap();
    assert_eq!(data, raw, "raw MIME byte-exact");
    assert!(j["Content"].get("Simple").is_none());
    assert_eq!(backup.message_count(), 0);

    let probes = mock.wait_for_requests(ACCOUNT_PATH, 1, DEADLINE).await;
    assert_eq!(probes[0].method, "GET");
    assert_signed(&probes[0]);
    let p = baton.wait_provider("ses", "a passing probe", |p| p["last_probe"]["ok"] == true).await;
    assert!(p["last_probe"]["detail"].as_str().unwrap().contains("HEALTHY"), "{p:#}");
    assert!(!status.to_string().contains(SESSION) && !p.to_string().contains(SESSION));
}

#[tokio::test]
async fn classifies_every_documented_error_type() {
    let mock = healthy_mock().await;
    let backup = MockSmtp::start().await;
    let baton = Baton::start(&config(&mock, &backup, "timeout = \"1s\"", "")).await;
    let cases: Vec<(&str, Reply, &str)> = vec![
        ("suspended", error(400, "AccountSuspendedException", "Account suspended."), "account"),
        ("suspended, body type", body_error(400, "AccountSuspendedException", "Account suspended."), "account"),
        ("paused", error(400, "SendingPausedException", "Sending is paused for this account."), "account"),
        ("paused, body type", body_error(400, "SendingPausedException", "Sending paused."), "account"),
        (
            "mail-from",
            error(400, "MailFromDomainNotVerifiedException", "MAIL FROM domain not verified."),
            "sender_unverified",
        ),
        (
            "unverified sender",
            error(
                400,
                "MessageRejected",
                "Email address is not verified. The following identities failed the check in region EU-WEST-1: app@example.com",
            ),
            "sender_unverified",
        ),
        (
            "no authority",
            body_error(400, "MessageRejected", "Did not have authority to send from email app@example.com"),
            "sender_unverified",
        ),
        ("rejected", error(400, "MessageRejected", "Illegal header: X-Bad"), "bad_request"),
        ("rate", error(429, "TooManyRequestsException", "Maximum sending rate exceeded."), "rate_limited"),
        ("daily quota", error(429, "TooManyRequestsException", "Daily message quota exceeded."), "account"),
        ("throttling", error(400, "ThrottlingException", "Rate exceeded"), "rate_limited"),
        ("not found", error(404, "NotFoundException", "Configuration set <x> does not exist."), "account"),
        ("bad request", error(400, "BadRequestException", "Invalid destination."), "bad_request"),
        (
            "bad token",
            error(403, "InvalidClientTokenId", "The security token included in the request is invalid."),
            "account",
        ),
        ("denied", error(403, "AccessDeniedException", "User is not authorized to perform ses:SendEmail"), "account"),
        (
            "signature",
            error(403, "SignatureDoesNotMatch", "The request signature we calculated does not match."),
            "account",
        ),
        (
            "unrecognized",
            error(403, "UnrecognizedClientException", "The security token included in the request is invalid."),
            "account",
        ),
        ("clock skew", error(400, "RequestExpired", "Request has expired."), "transient"),
        ("internal", error(500, "InternalFailure", "Internal failure."), "transient"),
        ("unavailable", error(503, "ServiceUnavailable", "Service unavailable."), "transient"),
        ("unknown 5xx", error(502, "SomethingNewException", "?"), "transient"),
        ("html 502", html(502, "<html>Bad gateway</html>"), "transient"),
        ("malformed 400", Reply::text(400, "{nope"), "bad_request"),
        ("timeout", Reply::Hang, "transient"),
    ];
    for (name, reply, expected) in cases {
        mock.reply(SEND_PATH, reply);
        let before = mock.requests_to(SEND_PATH).len();
        let id = baton.send(message(&["alice@example.net"], name)).await;
        let status = baton.wait_final(&id).await;
        // SDK retries are off: one request, whatever the answer.
        assert_eq!(mock.requests_to(SEND_PATH).len(), before + 1, "{name}: ses tried exactly once");
        let first = &status["attempts"][0];
        assert_eq!(
            (first["provider"].as_str(), first["outcome"].as_str()),
            (Some("ses"), Some(expected)),
            "{name}: {status:#}"
        );
        assert_eq!(status["status"], "delivered", "{name}: {status:#}");
        assert_eq!(status["recipients"][0]["provider"], "backup", "{name}: fails over: {status:#}");
        assert_eq!(first["possible_duplicate"], name == "timeout", "{name}: {status:#}");
        baton.resume("ses").await;
    }
    // A success status with a body we cannot read was still taken: no failover, no id.
    mock.reply(SEND_PATH, html(200, "<html>ok</html>"));
    let before = backup.message_count();
    let id = baton.send(message(&["alice@example.net"], "html 200")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["recipients"][0]["provider"], "ses", "{status:#}");
    assert_eq!(status["recipients"][0]["provider_message_id"], Value::Null);
    assert_eq!(backup.message_count(), before);

    let detail = {
        mock.reply(SEND_PATH, error(400, "AccountSuspendedException", "Account suspended."));
        let id = baton.send(message(&["alice@example.net"], "detail")).await;
        baton.wait_final(&id).await["attempts"][0]["detail"].as_str().unwrap().to_string()
    };
    assert!(detail.contains("AccountSuspendedException") && detail.contains("Account suspended"), "{detail}");
}

#[tokio::test]
async fn rate_limit_honours_retry_after() {
    let mock = healthy_mock().await;
    mock.reply(
        SEND_PATH,
        error(429, "TooManyRequestsException", "Maximum sending rate exceeded.").with_header("Retry-After", "60"),
    );
    let backup = MockSmtp::start().await;
    let baton = Baton::start(&config(&mock, &backup, "", "")).await;
    let id = baton.send(message(&["alice@example.net"], "throttled")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["attempts"][0]["outcome"], "rate_limited", "{status:#}");
    let p = baton.provider("ses").await;
    assert_eq!(p["state"], "rate_limited", "{p:#}");
    let next = p["next_trial_in_seconds"].as_f64().unwrap();
    assert!(next > 45.0 && next <= 60.0, "Retry-After honoured: {p:#}");
    let id = baton.send(message(&["alice@example.net"], "while throttled")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["attempts"].as_array().unwrap().len(), 1, "ses skipped: {status:#}");
    assert_eq!(mock.requests_to(SEND_PATH).len(), 1);
}

#[tokio::test]
async fn account_probe_drives_health() {
    let mock = MockHttp::start().await;
    mock.reply(ACCOUNT_PATH, account(true, "PROBATION"));
    mock.reply(SEND_PATH, ok_reply());
    let backup = MockSmtp::start().await;
    let baton = Baton::start(&config(&mock, &backup, "", "probe_interval = \"200ms\"")).await;
    // Probation still sends, and says so.
    let p = baton.wait_provider("ses", "a passing probe", |p| p["last_probe"]["ok"] == true).await;
    assert!(p["last_probe"]["detail"].as_str().unwrap().contains("probation"), "{p:#}");
    assert_eq!(p["state"], "healthy");

    mock.reply(ACCOUNT_PATH, account(false, "HEALTHY"));
    let p = baton.wait_provider("ses", "suspended by its probe", |p| p["state"] == "suspended").await;
    assert!(p["last_probe"]["detail"].as_str().unwrap().contains("paused"), "{p:#}");
    let id = baton.send(message(&["alice@example.net"], "while paused")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["recipients"][0]["provider"], "backup");
    assert!(mock.requests_to(SEND_PATH).is_empty(), "no send while suspended");

    mock.reply(ACCOUNT_PATH, account(true, "SHUTDOWN"));
    let p = baton
        .wait_provider("ses", "a shutdown probe", |p| {
            p["last_probe"]["detail"].as_str().is_some_and(|d| d.contains("shut down"))
        })
        .await;
    assert_eq!((p["state"].as_str(), p["last_probe"]["ok"].as_bool()), (Some("suspended"), Some(false)), "{p:#}");

    mock.reply(
        ACCOUNT_PATH,
        error(403, "InvalidClientTokenId", "The security token included in the request is invalid."),
    );
    let p = baton
        .wait_provider("ses", "an auth failure probe", |p| {
            p["last_probe"]["detail"].as_str().is_some_and(|d| d.contains("InvalidClientTokenId"))
        })
        .await;
    assert_eq!(p["last_probe"]["ok"], false);
    for probe in mock.requests_to(ACCOUNT_PATH) {
        assert_eq!(probe.method, "GET");
        assert_signed(&probe);
    }
}

/// AWS's sending-only policy grants `ses:SendEmail` but not `ses:GetAccount`: the probe cannot
/// judge, says what to grant, and SES stays in rotation. So does an endpoint without the
/// operation, or an answer the SDK cannot read.
#[tokio::test]
async fn a_key_that_may_not_read_the_account_keeps_ses() {
    let denied = error(
        403,
        "AccessDeniedException",
        "User: arn:aws:iam::123456789012:user/sender is not authorized to perform: ses:GetAccount",
    );
    let cases = [
        (denied, "grant ses:GetAccount"),
        (Reply::text(404, "Not Found"), "GetAccount"),
        (html(200, "<html>captive portal</html>"), "cannot read"),
    ];
    for (reply, expect) in cases {
        let mock = healthy_mock().await;
        mock.reply(ACCOUNT_PATH, reply);
        let backup = MockSmtp::start().await;
        let baton = Baton::start(&config(&mock, &backup, "", "probe_interval = \"200ms\"")).await;
        let p = baton.assert_inconclusive_probe_keeps("ses", "probe = false").await;
        assert!(p["last_probe"]["detail"].as_str().unwrap().contains(expect), "{p:#}");
    }
}

#[tokio::test]
async fn the_secret_never_appears_in_details() {
    let mock = healthy_mock().await;
    let leak = format!("The request signature we calculated does not match. Secret: {SECRET}");
    mock.reply(SEND_PATH, error(403, "SignatureDoesNotMatch", &leak));
    let backup = MockSmtp::start().await;
    let baton = Baton::start(&config(&mock, &backup, "", "probe_interval = \"200ms\"")).await;
    let id = baton.send(message(&["alice@example.net"], "secret check")).await;
    let status = baton.wait_final(&id).await;
    // The probe fails the same way only now: had it failed first, SES would have been skipped
    // and the send's answer (what this checks) never read.
    mock.reply(ACCOUNT_PATH, error(403, "SignatureDoesNotMatch", &leak));
    assert_eq!(status["attempts"][0]["outcome"], "account", "{status:#}");
    assert!(!status.to_string().contains(SECRET), "secret in message status: {status:#}");
    baton.wait_provider("ses", "a failed probe", |p| p["last_probe"]["ok"] == false).await;
    let all = baton.providers().await;
    assert!(!all.to_string().contains(SECRET), "secret in /admin/providers: {all:#}");
    for req in mock.requests() {
        assert_signed(&req);
    }
}

const CHAIN_KEY_ID: &str = "AKIDFROMTHEENVCHAIN01";

/// Without keys in the config, the standard AWS credential chain is used, loaded on first use.
/// The chain is fed through the environment (its first link), so this runs in a child process
/// whose environment is set before anything starts: metadata (IMDS) disabled, no profile files,
/// the endpoint still the local mock.
#[test]
fn default_credential_chain_is_used_without_static_keys() {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child.args(["--exact", "credential_chain_child", "--ignored", "--nocapture", "--test-threads=1"]);
    for var in [
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_SESV2",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ] {
        child.env_remove(var);
    }
    let out = child
        .env("AWS_ACCESS_KEY_ID", CHAIN_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent/baton-test/config")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/baton-test/credentials")
        .env("BATON_SES_CHAIN_CHILD", "1")
        .output()
        .expect("child test runs");
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("1 passed"), "child failed:\n{text}");
}

#[tokio::test]
#[ignore = "run by default_credential_chain_is_used_without_static_keys in a child process"]
async fn credential_chain_child() {
    if std::env::var("BATON_SES_CHAIN_CHILD").as_deref() != Ok("1") {
        // Not in the prepared child: the real chain could reach for IMDS. Do nothing.
        return;
    }
    let mock = healthy_mock().await;
    let backup = MockSmtp::start().await;
    let body = config(&mock, &backup, "", "")
        .replace(&format!("access_key_id = \"{KEY_ID}\"\n"), "")
        .replace(&format!("secret_access_key = \"{SECRET}\"\n"), "");
    assert!(!body.contains("access_key"), "{body}");
    let baton = Baton::start(&body).await;
    let id = baton.send(message(&["alice@example.net"], "from the chain")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["recipients"][0]["provider"], "ses", "{status:#}");
    assert_eq!(status["recipients"][0]["provider_message_id"], MESSAGE_ID);
    let sent = mock.requests_to(SEND_PATH);
    assert_eq!(sent.len(), 1);
    let auth = sent[0].header("authorization").unwrap();
    assert!(auth.starts_with(&format!("AWS4-HMAC-SHA256 Credential={CHAIN_KEY_ID}/")), "{auth}");
    assert!(!sent[0].text().contains(SECRET));
    assert!(!status.to_string().contains(SECRET));
    // SDK retries are off on this path too.
    mock.reply(SEND_PATH, error(500, "InternalFailure", "Internal failure."));
    let id = baton.send(message(&["alice@example.net"], "no retries")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["attempts"][0]["outcome"], "transient", "{status:#}");
    assert_eq!(status["recipients"][0]["provider"], "backup");
    assert_eq!(mock.requests_to(SEND_PATH).len(), 2, "one request, no SDK retry");
}
