//! The suppression list: an address a provider reported as bad is never handed to any
//! provider again (also after failover), per client by default or for everyone with
//! `scope = "global"`; the `/v1/suppressions` and `/admin/suppressions` APIs; and the list
//! survives a restart.

mod support;

use serde_json::{Value, json};
use support::baton::{Baton, DEADLINE, KEY, OTHER_KEY, message, recipient, smtp_provider};
use support::mock_smtp::MockSmtp;

const UNKNOWN_USER: &str = "550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown";

fn config(primary: &MockSmtp, backup: &MockSmtp, extra: &str) -> String {
    format!(
        "{}{}\n[retry]\nschedule = [\"1h\"]\n{extra}\n[[routes]]\nname = \"default\"\nproviders = [\"primary\", \"backup\"]\n",
        smtp_provider("primary", primary, ""),
        smtp_provider("backup", backup, ""),
    )
}

fn from_other(to: &[&str]) -> Value {
    json!({"from": "app@example.org", "to": to, "subject": "from the other app", "text": "hello"})
}

async fn send_as(baton: &Baton, key: &str, msg: Value) -> String {
    let (code, body) = baton.post(Some(key), None, msg.to_string()).await;
    assert_eq!(code, 202, "{body}");
    body["id"].as_str().unwrap().to_string()
}

fn types(r: &Value) -> Vec<String> {
    r["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap().to_string()).collect()
}

async fn drain(baton: &Baton, provider: &str) {
    let resp = baton.http.post(format!("{}/admin/providers/{provider}/drain", baton.admin)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_recipient_rejected_as_unknown_is_never_handed_to_the_next_provider() {
    let primary = MockSmtp::start().await;
    primary.reject_recipient("bob@example.net", UNKNOWN_USER);
    let backup = MockSmtp::start().await;
    let baton = Baton::start(&config(&primary, &backup, "")).await;

    let id = baton.send(message(&["alice@example.net", "bob@example.net"], "first")).await;
    let status = baton.wait_final(&id).await;
    let bob = recipient(&status, "bob@example.net");
    assert_eq!(bob["status"], "rejected", "{status:#}");
    assert_eq!(types(bob), ["accepted", "rejected"], "{bob:#}");
    assert_eq!(bob["events"][1]["reject_reason"], "invalid");
    assert_eq!(types(recipient(&status, "alice@example.net")), ["accepted", "sent"]);

    // The primary goes out of rotation: the next message fails over to the backup, which must
    // never see the address the primary reported as unknown.
    drain(&baton, "primary").await;
    let id = baton.send(message(&["Bob@Example.net", "carol@example.net"], "second")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["status"], "partially_delivered", "{status:#}");
    let bob = recipient(&status, "Bob@Example.net");
    assert_eq!(bob["status"], "suppressed");
    assert_eq!(bob["provider"], Value::Null, "no provider was given it");
    assert!(bob["detail"].as_str().unwrap().contains("invalid reported by primary"), "{bob}");
    assert_eq!(types(bob), ["accepted", "suppressed"]);
    let carol = recipient(&status, "carol@example.net");
    assert_eq!(carol["status"], "delivered");
    assert_eq!(carol["provider"], "backup");
    assert_eq!(types(carol), ["accepted", "failover", "sent"], "{carol:#}");
    let got = backup.wait_for_messages(1, DEADLINE).await;
    assert_eq!(got[0].rcpts, vec!["carol@example.net"]);

    // Only suppressed recipients: finished without any attempt.
    let id = baton.send(message(&["bob@example.net"], "third")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["status"], "failed");
    assert_eq!(status["attempts"].as_array().unwrap().len(), 0, "{status:#}");
    assert_eq!(backup.message_count(), 1);
    assert_eq!(primary.commands_seen("MAIL"), 1);

    let m = baton.metrics().await;
    assert_eq!(Baton::metric(&m, "baton_suppressions", &[]), 1.0);
    assert_eq!(
        Baton::metric(&m, "baton_suppressions_added_total", &[("reason", "invalid"), ("source", "send_answer")]),
        1.0
    );
    assert_eq!(Baton::metric(&m, "baton_recipients_suppressed_total", &[("client", "app")]), 2.0);

    // The client sees why; another client's list does not have it.
    let (code, entry) = get(&baton, KEY, "/v1/suppressions/BOB@example.net").await;
    assert_eq!(code, 200, "{entry}");
    assert_eq!(entry["email"], "bob@example.net");
    assert_eq!(entry["reason"], "invalid");
    assert_eq!(entry["provider"], "primary");
    assert!(entry["detail"].as_str().unwrap().contains("5.1.1"), "{entry}");
    assert!(entry.get("client").is_none(), "a client is not told whose entry it is");
    let (code, _) = get(&baton, OTHER_KEY, "/v1/suppressions/bob@example.net").await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn a_policy_block_does_not_suppress_the_address() {
    let primary = MockSmtp::start().await;
    primary.reject_recipient("bob@example.net", "550 5.7.1 Message rejected due to content");
    let backup = MockSmtp::start().await;
    let baton = Baton::start(&config(&primary, &backup, "")).await;
    let id = baton.send(message(&["bob@example.net"], "spammy?")).await;
    let status = baton.wait_final(&id).await;
    let bob = recipient(&status, "bob@example.net");
    assert_eq!(bob["status"], "rejected");
    assert_eq!(bob["events"][1]["reject_reason"], "blocked");
    primary.clear_recipient_rejections();
    let id = baton.send(message(&["bob@example.net"], "again")).await;
    assert_eq!(baton.wait_final(&id).await["status"], "delivered");
    assert_eq!(Baton::metric(&baton.metrics().await, "baton_suppressions", &[]), 0.0);
}

#[tokio::test]
async fn one_clients_bounce_is_not_another_clients_problem_unless_the_scope_is_global() {
    for (scope, other_suppressed) in [("", false), ("[suppression]\nscope = \"global\"\n", true)] {
        let primary = MockSmtp::start().await;
        primary.reject_recipient("bob@example.net", UNKNOWN_USER);
        let backup = MockSmtp::start().await;
        let baton = Baton::start(&config(&primary, &backup, scope)).await;
        let id = baton.send(message(&["bob@example.net"], "first")).await;
        baton.wait_final(&id).await;
        primary.clear_recipient_rejections();

        let id = send_as(&baton, OTHER_KEY, from_other(&["bob@example.net"])).await;
        let status = baton.wait_final_as(OTHER_KEY, &id).await;
        let want = if other_suppressed { "suppressed" } else { "delivered" };
        assert_eq!(recipient(&status, "bob@example.net")["status"], want, "scope {scope:?}: {status:#}");
        let (code, _) = get(&baton, OTHER_KEY, "/v1/suppressions/bob@example.net").await;
        assert_eq!(code, if other_suppressed { 200 } else { 404 });
    }
}

async fn get(baton: &Baton, key: &str, path: &str) -> (u16, Value) {
    let resp = baton.http.get(format!("{}{path}", baton.base)).bearer_auth(key).send().await.unwrap();
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(Value::Null))
}

async fn send_json(
    baton: &Baton,
    method: reqwest::Method,
    url: String,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = baton.http.request(method, url);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_api_adds_lists_and_removes_entries_and_they_survive_a_restart() {
    use reqwest::Method;
    let primary = MockSmtp::start().await;
    let backup = MockSmtp::start().await;
    let body = config(&primary, &backup, "");
    let tmp = tempfile::tempdir().unwrap();
    let mut baton = Baton::start_in(tmp.path(), &body, "").await;
    let v1 = format!("{}/v1/suppressions", baton.base);
    let admin = format!("{}/admin/suppressions", baton.admin);

    // Bad input changes nothing, and says what is wrong.
    for (body, says) in [
        (json!({"email": "not-an-address"}), "email"),
        (json!({"email": "x@example.net", "reason": "annoyed"}), "reason"),
        (json!({"email": "x@example.net", "client": "other"}), "client"),
        (json!({"address": "x@example.net"}), "address"),
    ] {
        let (code, err) = send_json(&baton, Method::POST, v1.clone(), Some(KEY), Some(body)).await;
        assert_eq!(code, 400, "{err}");
        assert_eq!(err["error"]["code"], "invalid_request");
        assert!(err["error"]["message"].as_str().unwrap().contains(says), "{err}");
    }
    let (code, _) = send_json(&baton, Method::POST, v1.clone(), None, Some(json!({"email": "x@example.net"}))).await;
    assert_eq!(code, 401);
    let (code, list) = get(&baton, KEY, "/v1/suppressions").await;
    assert_eq!((code, list["suppressions"].as_array().unwrap().len()), (200, 0));

    // Add (201), add again (200, unchanged), list with filters.
    let add = json!({"email": "Dave@Example.net", "reason": "unsubscribed", "detail": "asked by phone"});
    let (code, entry) = send_json(&baton, Method::POST, v1.clone(), Some(KEY), Some(add.clone())).await;
    assert_eq!(code, 201, "{entry}");
    assert_eq!(entry["email"], "dave@example.net");
    assert_eq!(entry["reason"], "unsubscribed");
    let (code, _) = send_json(&baton, Method::POST, v1.clone(), Some(KEY), Some(add)).await;
    assert_eq!(code, 200);
    let (_, e2) =
        send_json(&baton, Method::POST, v1.clone(), Some(KEY), Some(json!({"email": "erin@example.net"}))).await;
    assert_eq!(e2["reason"], "manual");
    let (_, list) = get(&baton, KEY, "/v1/suppressions?reason=unsubscribed").await;
    let emails: Vec<&str> =
        list["suppressions"].as_array().unwrap().iter().map(|e| e["email"].as_str().unwrap()).collect();
    assert_eq!(emails, ["dave@example.net"]);
    let (_, list) = get(&baton, KEY, "/v1/suppressions?since=2999-01-01T00:00:00Z").await;
    assert_eq!(list["suppressions"].as_array().unwrap().len(), 0);
    let (code, err) = get(&baton, KEY, "/v1/suppressions?since=yesterday").await;
    assert_eq!(code, 400, "{err}");
    let (_, list) = get(&baton, OTHER_KEY, "/v1/suppressions").await;
    assert_eq!(list["suppressions"].as_array().unwrap().len(), 0, "the other client's list is its own");

    // An operator's entry for everyone applies to every client, which cannot remove it.
    let (code, entry) = send_json(
        &baton,
        Method::POST,
        admin.clone(),
        None,
        Some(json!({"email": "frank@example.net", "reason": "complained"})),
    )
    .await;
    assert_eq!(code, 201, "{entry}");
    assert_eq!(entry["client"], Value::Null);
    let id = send_as(&baton, OTHER_KEY, from_other(&["frank@example.net", "gina@example.net"])).await;
    let status = baton.wait_final_as(OTHER_KEY, &id).await;
    assert_eq!(recipient(&status, "frank@example.net")["status"], "suppressed");
    assert_eq!(recipient(&status, "gina@example.net")["status"], "delivered");
    let (code, err) = send_json(&baton, Method::DELETE, format!("{v1}/frank@example.net"), Some(OTHER_KEY), None).await;
    assert_eq!(code, 403, "{err}");
    let (_, all) = send_json(&baton, Method::GET, admin.clone(), None, None).await;
    let clients: Vec<Value> = all["suppressions"].as_array().unwrap().iter().map(|e| e["client"].clone()).collect();
    assert_eq!(clients, [json!("app"), json!("app"), Value::Null], "{all:#}");

    // A restart keeps the list; a removed entry stays removed.
    baton.stop().await;
    let baton = Baton::start_in(tmp.path(), &body, "").await;
    let v1 = format!("{}/v1/suppressions", baton.base);
    let (_, list) = get(&baton, KEY, "/v1/suppressions").await;
    assert_eq!(list["suppressions"].as_array().unwrap().len(), 3, "{list:#}");
    let (code, _) = send_json(&baton, Method::DELETE, format!("{v1}/dave@example.net"), Some(KEY), None).await;
    assert_eq!(code, 204);
    let (code, _) = send_json(&baton, Method::DELETE, format!("{v1}/dave@example.net"), Some(KEY), None).await;
    assert_eq!(code, 404);
    let id = baton.send(message(&["dave@example.net", "erin@example.net"], "after removal")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(recipient(&status, "dave@example.net")["status"], "delivered");
    assert_eq!(recipient(&status, "erin@example.net")["status"], "suppressed");
    let admin = format!("{}/admin/suppressions", baton.admin);
    let (code, _) = send_json(&baton, Method::DELETE, format!("{admin}/frank@example.net"), None, None).await;
    assert_eq!(code, 204);
    assert_eq!(Baton::metric(&baton.metrics().await, "baton_suppressions", &[]), 1.0);
    let _ = DEADLINE;
}
