//! Events to the app (`[[webhooks]]`): what happened to each recipient is posted, signed per
//! the Standard Webhooks spec, to the app's endpoint; filtered by event type and client; and
//! kept in the spool until the endpoint takes it, across a restart.

mod support;

use baton::event::signature;
use serde_json::{Value, json};
use support::baton::{Baton, DEADLINE, OTHER_KEY, message, smtp_provider};
use support::mock_http::{MockHttp, Recorded, Reply};
use support::mock_smtp::MockSmtp;

/// `whsec_` + base64 of 32 bytes (a test key, not a secret of anyone's).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw0Q5Rm9zJ9Zc=";
const PATH: &str = "/mail-events";

fn config(primary: &MockSmtp, endpoint: &MockHttp, webhook_extra: &str) -> String {
    format!(
        "{}\n[retry]\nschedule = [\"1h\"]\n\n[[routes]]\nname = \"default\"\nproviders = [\"primary\"]\n\n\
         [[webhooks]]\nurl = \"{}{PATH}\"\nsecret = \"{SECRET}\"\nname = \"app-events\"\n{webhook_extra}\n",
        smtp_provider("primary", primary, ""),
        endpoint.url(),
    )
}

/// The events of a request, after checking its Standard Webhooks signature.
fn verified(req: &Recorded) -> Vec<Value> {
    let key = signature::decode_secret(SECRET).unwrap();
    let id = req.header("webhook-id").expect("webhook-id");
    let ts = req.header("webhook-timestamp").expect("webhook-timestamp");
    let sig = req.header("webhook-signature").expect("webhook-signature");
    assert!(sig.starts_with("v1,"), "{sig}");
    let now = ts.parse::<i64>().unwrap();
    signature::verify(&key, id, ts, sig, &req.body, now, 300).expect("signature verifies");
    let tampered = [req.body.as_slice(), b" "].concat();
    assert!(signature::verify(&key, id, ts, sig, &tampered, now, 300).is_err());
    assert_eq!(req.header("content-type"), Some("application/json"));
    req.json().as_array().expect("a JSON array of events").clone()
}

fn all_events(endpoint: &MockHttp) -> Vec<Value> {
    endpoint.requests_to(PATH).iter().flat_map(verified).collect()
}

async fn wait_events(endpoint: &MockHttp, n: usize) -> Vec<Value> {
    let start = std::time::Instant::now();
    loop {
        let events = all_events(endpoint);
        if events.len() >= n {
            return events;
        }
        assert!(start.elapsed() < DEADLINE, "expected {n} events, got {events:#?}");
        let seen = endpoint.requests_to(PATH).len();
        let _ = tokio::time::timeout(DEADLINE, endpoint.wait_for_requests(PATH, seen + 1, DEADLINE)).await;
    }
}

#[tokio::test]
async fn each_recipients_outcome_reaches_the_app_signed() {
    let primary = MockSmtp::start().await;
    primary.reject_recipient("bob@example.net", "550 5.1.1 <bob@example.net>: User unknown");
    let endpoint = MockHttp::start().await;
    endpoint.reply(PATH, Reply::text(204, ""));
    let baton = Baton::start(&config(&primary, &endpoint, "")).await;
    let mut msg = message(&["alice@example.net", "bob@example.net"], "hello");
    msg["tags"] = json!(["welcome"]);
    msg["metadata"] = json!({"user_id": "42"});
    let id = baton.send(msg).await;
    baton.wait_final(&id).await;

    let events = wait_events(&endpoint, 2).await;
    let sent = events.iter().find(|e| e["type"] == "sent").expect("sent event");
    assert_eq!(sent["recipient"], "alice@example.net");
    assert_eq!(sent["message_id"], id.as_str());
    assert_eq!(sent["client"], "app");
    assert_eq!(sent["provider"], "primary");
    assert_eq!(sent["tags"], json!(["welcome"]));
    assert_eq!(sent["metadata"], json!({"user_id": "42"}));
    assert!(sent["id"].as_str().unwrap().starts_with("evt_"));
    let rejected = events.iter().find(|e| e["type"] == "rejected").expect("rejected event");
    assert_eq!(rejected["recipient"], "bob@example.net");
    assert_eq!(rejected["reject_reason"], "invalid");
    assert!(rejected["detail"].as_str().unwrap().contains("5.1.1"));
    assert_eq!(events.len(), 2, "{events:#?}");

    // bob is now suppressed: the app hears so.
    let id = baton.send(message(&["bob@example.net"], "again")).await;
    baton.wait_final(&id).await;
    let events = wait_events(&endpoint, 3).await;
    let suppressed = events.iter().find(|e| e["type"] == "suppressed").expect("suppressed event");
    assert_eq!(suppressed["message_id"], id.as_str());
    // The count follows the endpoint's answer: wait for it.
    let delivered = &[("url_name", "app-events"), ("outcome", "delivered")];
    let start = std::time::Instant::now();
    loop {
        let m = baton.metrics().await;
        if Baton::metric(&m, "baton_webhook_deliveries_total", delivered) == 3.0 {
            assert_eq!(Baton::metric(&m, "baton_webhook_queue", &[("url_name", "app-events")]), 0.0);
            break;
        }
        assert!(start.elapsed() < DEADLINE, "delivered events not counted: {m}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn only_the_chosen_events_and_clients_are_posted() {
    let primary = MockSmtp::start().await;
    primary.reject_recipient("bob@example.net", "550 5.7.1 blocked by policy");
    let endpoint = MockHttp::start().await;
    endpoint.reply(PATH, Reply::text(200, "ok"));
    let baton = Baton::start(&config(&primary, &endpoint, "events = [\"rejected\"]\nclients = [\"app\"]\n")).await;
    let other = json!({"from": "app@example.org", "to": ["bob@example.net"], "subject": "x", "text": "x"});
    let (code, body) = baton.post(Some(OTHER_KEY), None, other.to_string()).await;
    assert_eq!(code, 202, "{body}");
    let id = baton.send(message(&["alice@example.net", "bob@example.net"], "hello")).await;
    baton.wait_final(&id).await;
    let events = wait_events(&endpoint, 1).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["type"], "rejected");
    assert_eq!(events[0]["client"], "app");
}

#[tokio::test]
async fn events_wait_in_the_spool_while_the_endpoint_is_down_and_survive_a_restart() {
    let primary = MockSmtp::start().await;
    let endpoint = MockHttp::start().await;
    endpoint.reply(PATH, Reply::text(503, "down for maintenance"));
    let tmp = tempfile::tempdir().unwrap();
    let body = config(&primary, &endpoint, "");
    let mut baton = Baton::start_in(tmp.path(), &body, "").await;
    let id = baton.send(message(&["alice@example.net"], "hello")).await;
    baton.wait_final(&id).await;
    let refused = endpoint.wait_for_requests(PATH, 1, DEADLINE).await;
    let first = verified(&refused[0]);
    assert_eq!(first[0]["type"], "sent");
    let m = baton.metrics().await;
    let failed = &[("url_name", "app-events"), ("outcome", "failed")];
    assert_eq!(Baton::metric(&m, "baton_webhook_deliveries_total", failed), 1.0);
    assert_eq!(Baton::metric(&m, "baton_webhook_queue", &[("url_name", "app-events")]), 1.0);
    baton.stop().await;

    // Back up, and Baton restarted: the same event (same id) is posted and acknowledged.
    endpoint.reply(PATH, Reply::text(200, "ok"));
    let baton = Baton::start_in(tmp.path(), &body, "").await;
    let got = endpoint.wait_for_requests(PATH, 2, DEADLINE).await;
    let again = verified(&got[1]);
    assert_eq!(again, first, "the same event, unchanged");
    assert_eq!(got[1].header("webhook-id"), refused[0].header("webhook-id"), "a retry keeps its webhook-id");
    let start = std::time::Instant::now();
    while Baton::metric(&baton.metrics().await, "baton_webhook_queue", &[("url_name", "app-events")]) != 0.0 {
        assert!(start.elapsed() < DEADLINE, "outbox not emptied");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(baton.shared().outbox.next_due(), None);
}

/// The receiver in README's "Events and suppression" section, run as written: it prints what
/// Baton posts, and refuses a request that is not signed with the secret.
#[tokio::test]
async fn the_readme_receiver_verifies_what_baton_posts() {
    use tokio::io::AsyncBufReadExt;
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &readme[readme.find("## Events and suppression").expect("README section")..];
    let code = section.split("```python\n").nth(1).and_then(|c| c.split("```").next()).expect("python block");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut receiver = tokio::process::Command::new("python3")
        .args(["-c", code])
        .env("MAIL_EVENTS_SECRET", SECRET)
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs (installed by .ci/run)");
    let mut lines = tokio::io::BufReader::new(receiver.stdout.take().unwrap()).lines();
    let url = format!("http://127.0.0.1:{port}/mail-events");
    let http = reqwest::Client::new();
    let start = std::time::Instant::now();
    // Up once it answers; a request without a valid signature is refused.
    let forged = loop {
        let attempt = http
            .post(&url)
            .header("webhook-id", "msg_forged")
            .header("webhook-timestamp", (baton::spool::record::now_ms() / 1000).to_string())
            .header("webhook-signature", "v1,bm90IHRoZSBzaWduYXR1cmU=")
            .body("[]")
            .send()
            .await;
        match attempt {
            Ok(reply) => break reply.status().as_u16(),
            Err(_) if start.elapsed() < DEADLINE => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            Err(e) => panic!("the README receiver did not start: {e}"),
        }
    };
    assert_eq!(forged, 401);

    let primary = MockSmtp::start().await;
    let body = format!(
        "{}\n[[routes]]\nname = \"default\"\nproviders = [\"primary\"]\n\n[[webhooks]]\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n",
        smtp_provider("primary", &primary, ""),
    );
    let baton = Baton::start(&body).await;
    let id = baton.send(message(&["alice@example.net"], "hello")).await;
    let line = tokio::time::timeout(DEADLINE, lines.next_line()).await.expect("a line in time").unwrap();
    assert_eq!(line.as_deref(), Some(format!("sent alice@example.net {id}").as_str()));
}
