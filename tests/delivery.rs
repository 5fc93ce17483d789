//! Routed delivery with failover, against scripted local SMTP relays.

mod support;

use serde_json::Value;
use support::baton::{Baton, DEADLINE, message, smtp_provider};
use support::mock_smtp::{MockSmtp, Stage};

fn two_provider_route(primary: &MockSmtp, primary_extra: &str, backup: &MockSmtp, retry: &str) -> String {
    format!(
        "{}{}\n[retry]\nschedule = [{retry}]\n\n[[routes]]\nname = \"default\"\nproviders = [\"primary\", \"backup\"]\n",
        smtp_provider("primary", primary, primary_extra),
        smtp_provider("backup", backup, ""),
    )
}

fn recipient<'a>(status: &'a Value, email: &str) -> &'a Value {
    status["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["email"] == email)
        .unwrap_or_else(|| panic!("{email} in {status}"))
}

#[tokio::test]
async fn delivers_through_the_primary() {
    let primary = MockSmtp::start().await;
    let backup = MockSmtp::start().await;
    let baton = Baton::start(&two_provider_route(&primary, "", &backup, "\"10s\"")).await;
    let id = baton.send(message(&["alice@example.net", "bob@example.net"], "Reset your password")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["status"], "delivered", "{status:#}");
    let got = primary.wait_for_messages(1, DEADLINE).await;
    assert_eq!(got[0].mail_from, "app@example.com");
    assert_eq!(got[0].rcpts, vec!["alice@example.net", "bob@example.net"]);
    assert_eq!(got[0].message_id().as_deref(), Some(format!("<{id}@baton.test>").as_str()));
    assert_eq!(got[0].header("Subject").as_deref(), Some("Reset your password"));
    for r in status["recipients"].as_array().unwrap() {
        assert_eq!(r["status"], "delivered");
        assert_eq!(r["provider"], "primary");
        assert!(r["provider_message_id"].is_string(), "queue id kept: {r}");
    }
    assert_eq!(backup.commands_seen("MAIL"), 0, "backup must not be tried");
    let m = baton.metrics().await;
    assert_eq!(
        Baton::metric(&m, "baton_delivery_attempts_total", &[("provider", "primary"), ("outcome", "accepted")]),
        1.0
    );
    assert_eq!(Baton::metric(&m, "baton_failovers_total", &[]), 0.0);
    assert_eq!(Baton::metric(&m, "baton_messages_received_total", &[("ingress", "http"), ("client", "app")]), 1.0);
}

/// Each provider-level failure moves the message to the backup within the same pass. (Later
/// messages may skip the primary altogether once its health says so: tests/health.rs.)
async fn failover_case(name: &str, primary_extra: &str, script: impl Fn(&MockSmtp), expected: &str) {
    let primary = MockSmtp::start().await;
    script(&primary);
    let backup = MockSmtp::start().await;
    // A long retry delay: delivery must not wait for a retry, it must fail over at once.
    let baton = Baton::start(&two_provider_route(&primary, primary_extra, &backup, "\"1h\"")).await;
    for i in 0..3 {
        let id = baton.send(message(&["alice@example.net"], &format!("{name} {i}"))).await;
        let status = baton.wait_final(&id).await;
        assert_eq!(status["status"], "delivered", "{name}: {status:#}");
        assert_eq!(status["recipients"][0]["provider"], "backup", "{name}: {status:#}");
        let attempts = status["attempts"].as_array().unwrap();
        let last = attempts.last().unwrap();
        assert_eq!((last["provider"].as_str(), last["outcome"].as_str()), (Some("backup"), Some("accepted")));
        if i == 0 {
            assert_eq!(attempts[0]["provider"], "primary", "{name}");
            assert_eq!(attempts[0]["outcome"], expected, "{name}: {status:#}");
        }
    }
    let got = backup.wait_for_messages(3, DEADLINE).await;
    let mut subjects: Vec<String> = got.iter().map(|m| m.header("Subject").unwrap()).collect();
    subjects.sort();
    assert_eq!(subjects, vec![format!("{name} 0"), format!("{name} 1"), format!("{name} 2")], "each exactly once");
    assert_eq!(primary.message_count(), 0);
    let m = baton.metrics().await;
    let labels = [("route", "default"), ("from", "primary"), ("to", "backup")];
    assert_eq!(Baton::metric(&m, "baton_failovers_total", &labels), 3.0, "{name}");
    assert!(Baton::metric(&m, "baton_failovers_total", &[("from", "primary"), ("reason", expected)]) >= 1.0);
    assert!(
        Baton::metric(&m, "baton_delivery_attempts_total", &[("provider", "primary"), ("outcome", expected)]) >= 1.0
    );
}

#[tokio::test]
async fn fails_over_when_auth_is_refused() {
    failover_case(
        "auth",
        "username = \"baton\"\npassword = \"secret\"",
        |m| {
            m.set_credentials(Some(("baton", "secret")));
            m.reject_auth(true);
        },
        "account",
    )
    .await;
}

#[tokio::test]
async fn fails_over_when_the_account_is_suspended() {
    failover_case(
        "suspended",
        "",
        |m| m.set_reply(Stage::EndOfData, Some("554 5.7.1 Your account has been suspended".into())),
        "account",
    )
    .await;
}

#[tokio::test]
async fn fails_over_on_temporary_failure() {
    failover_case(
        "451",
        "",
        |m| m.set_reply(Stage::Mail, Some("451 4.3.0 Temporary local problem".into())),
        "transient",
    )
    .await;
}

#[tokio::test]
async fn fails_over_on_rate_limit() {
    failover_case(
        "throttled",
        "",
        |m| m.set_reply(Stage::Mail, Some("454 4.7.0 Throttling failure: Maximum sending rate exceeded".into())),
        "rate_limited",
    )
    .await;
}

#[tokio::test]
async fn fails_over_when_the_primary_hangs() {
    failover_case("hang", "", |m| m.set_hang(Some(Stage::Greeting)), "transient").await;
}

#[tokio::test]
async fn fails_over_when_the_primary_is_unreachable() {
    // A port that was just free: connection refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let backup = MockSmtp::start().await;
    let body = format!(
        "[providers.primary]\ntype = \"smtp\"\nhost = \"127.0.0.1\"\nport = {closed}\ntls = \"none\"\n{}\n[retry]\nschedule = [\"1h\"]\n[[routes]]\nname = \"default\"\nproviders = [\"primary\", \"backup\"]\n",
        smtp_provider("backup", &backup, "")
    );
    let baton = Baton::start(&body).await;
    let id = baton.send(message(&["alice@example.net"], "unreachable")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["recipients"][0]["provider"], "backup", "{status:#}");
    assert_eq!(status["attempts"][0]["outcome"], "transient");
    backup.wait_for_messages(1, DEADLINE).await;
}

#[tokio::test]
async fn rejected_recipient_does_not_fail_over() {
    let primary = MockSmtp::start().await;
    primary
        .reject_recipient("bob@example.net", "550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown");
    let backup = MockSmtp::start().await;
    let baton = Baton::start(&two_provider_route(&primary, "", &backup, "\"1h\"")).await;
    let id = baton.send(message(&["alice@example.net", "bob@example.net"], "partial")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["status"], "partially_delivered", "{status:#}");
    assert_eq!(recipient(&status, "alice@example.net")["status"], "delivered");
    let bob = recipient(&status, "bob@example.net");
    assert_eq!(bob["status"], "rejected");
    assert_eq!(bob["provider"], "primary");
    assert!(bob["detail"].as_str().unwrap().contains("5.1.1"), "{bob}");
    let got = primary.wait_for_messages(1, DEADLINE).await;
    assert_eq!(got[0].rcpts, vec!["alice@example.net"]);
    assert_eq!(backup.commands_seen("MAIL"), 0, "a bad recipient is not a provider problem");
    assert_eq!(status["attempts"].as_array().unwrap().len(), 1);

    // Only bad recipients: the message fails, still without failover. (Another address: bob is
    // now on the suppression list and would not be sent at all, see tests/suppression.rs.)
    primary.reject_recipient("carol@example.net", "550 5.1.1 <carol@example.net>: User unknown");
    let id = baton.send(message(&["carol@example.net"], "only carol")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["status"], "failed");
    assert_eq!(status["attempts"][0]["outcome"], "recipient_rejected");
    assert_eq!(backup.commands_seen("MAIL"), 0);
    let m = baton.metrics().await;
    assert_eq!(Baton::metric(&m, "baton_failovers_total", &[]), 0.0);
    assert_eq!(Baton::metric(&m, "baton_recipients_total", &[("provider", "primary"), ("status", "rejected")]), 2.0);
}

#[tokio::test]
async fn retries_after_every_provider_failed_then_recovers() {
    let primary = MockSmtp::start().await;
    let backup = MockSmtp::start().await;
    for m in [&primary, &backup] {
        m.set_reply(Stage::Mail, Some("451 4.3.0 Temporary local problem".into()));
    }
    let baton = Baton::start(&two_provider_route(&primary, "", &backup, "\"300ms\"")).await;
    let id = baton.send(message(&["alice@example.net"], "retry me")).await;
    // Wait for at least two failed passes (both providers tried each time).
    let status =
        baton.wait_status(&id, "two failed passes", |s| s["attempts"].as_array().is_some_and(|a| a.len() >= 4)).await;
    assert_eq!(status["status"], "delivering");
    assert_eq!(status["recipients"][0]["status"], "pending");
    assert!(status["recipients"][0]["detail"].as_str().unwrap().contains("451"), "{status:#}");
    primary.reset();
    let status = baton.wait_final(&id).await;
    assert_eq!(status["status"], "delivered");
    assert_eq!(status["recipients"][0]["provider"], "primary");
    assert_eq!(primary.wait_for_messages(1, DEADLINE).await.len(), 1);
    assert_eq!(backup.message_count(), 0);
}

#[tokio::test]
async fn message_that_every_provider_calls_invalid_fails() {
    let primary = MockSmtp::start().await;
    let backup = MockSmtp::start().await;
    for m in [&primary, &backup] {
        m.set_reply(Stage::EndOfData, Some("552 5.3.4 Message size exceeds fixed limit".into()));
    }
    let baton = Baton::start(&two_provider_route(&primary, "", &backup, "\"1h\"")).await;
    let id = baton.send(message(&["alice@example.net"], "too big for them")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["status"], "failed", "{status:#}");
    assert_eq!(status["recipients"][0]["status"], "failed");
    let outcomes: Vec<&str> =
        status["attempts"].as_array().unwrap().iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, vec!["bad_request", "bad_request"]);
}

#[tokio::test]
async fn undelivered_recipients_expire_after_max_age() {
    let primary = MockSmtp::start().await;
    primary.set_reply(Stage::Mail, Some("451 4.3.0 Try later".into()));
    let body = format!(
        "{}\n[retry]\nschedule = [\"200ms\"]\n[[routes]]\nname = \"default\"\nproviders = [\"primary\"]\n",
        smtp_provider("primary", &primary, "")
    );
    let baton = Baton::start_with(&body, "max_age = \"1s\"").await;
    let id = baton.send(message(&["alice@example.net"], "expires")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["status"], "failed");
    let detail = status["recipients"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("expired") && detail.contains("451"), "{detail}");
    // Counted for the provider that last tried it, even though the circuit was open by then.
    let m = baton.metrics().await;
    assert_eq!(Baton::metric(&m, "baton_recipients_total", &[("provider", "primary"), ("status", "failed")]), 1.0);
}

#[tokio::test]
async fn routes_by_client_and_match() {
    let a = MockSmtp::start().await;
    let b = MockSmtp::start().await;
    let body = format!(
        "{}{}\n[[routes]]\nname = \"other-client\"\nproviders = [\"b\"]\nmatch = {{ clients = [\"other\"] }}\n\n[[routes]]\nname = \"stream\"\nproviders = [\"b\"]\nmatch = {{ streams = [\"bulk\"] }}\n\n[[routes]]\nname = \"default\"\nproviders = [\"a\"]\n",
        smtp_provider("a", &a, ""),
        smtp_provider("b", &b, "")
    );
    let baton = Baton::start(&body).await;
    let id1 = baton.send(message(&["x@example.net"], "default")).await;
    let mut bulk = message(&["x@example.net"], "bulk");
    bulk["stream"] = "bulk".into();
    let id2 = baton.send(bulk).await;
    let (code, v) = baton
        .post(
            Some(support::baton::OTHER_KEY),
            None,
            serde_json::json!({"from":"o@example.org","to":["x@example.net"],"text":"t","subject":"other"}).to_string(),
        )
        .await;
    assert_eq!(code, 202, "{v}");
    assert_eq!(baton.wait_final(&id1).await["recipients"][0]["provider"], "a");
    assert_eq!(baton.wait_final(&id2).await["recipients"][0]["provider"], "b");
    let got = b.wait_for_messages(2, DEADLINE).await;
    let mut subjects: Vec<String> = got.iter().map(|m| m.header("Subject").unwrap()).collect();
    subjects.sort();
    assert_eq!(subjects, vec!["bulk", "other"]);
}

#[tokio::test]
async fn many_concurrent_messages_are_all_delivered_once() {
    let primary = MockSmtp::start().await;
    let backup = MockSmtp::start().await;
    let baton = Baton::start(&two_provider_route(&primary, "", &backup, "\"1h\"")).await;
    let mut sends = Vec::new();
    for i in 0..100 {
        let b = &baton;
        sends.push(async move { b.send(message(&["alice@example.net"], &format!("bulk {i}"))).await });
    }
    let ids = futures::future::join_all(sends).await;
    // Halfway, the primary is suspended: the rest must go to the backup, none lost.
    primary.set_reply(Stage::EndOfData, Some("554 5.7.1 Account suspended".into()));
    for id in &ids {
        assert_eq!(baton.wait_final(id).await["status"], "delivered");
    }
    let mut subjects: Vec<String> =
        primary.messages().iter().chain(backup.messages().iter()).map(|m| m.header("Subject").unwrap()).collect();
    subjects.sort();
    subjects.dedup();
    assert_eq!(subjects.len(), 100);
    assert_eq!(primary.message_count() + backup.message_count(), 100, "no duplicates");
}

#[tokio::test]
async fn the_relay_receives_the_spooled_bytes_exactly() {
    use base64::Engine;
    let primary = MockSmtp::start().await;
    let backup = MockSmtp::start().await;
    let baton = Baton::start(&two_provider_route(&primary, "", &backup, "\"1h\"")).await;
    let raw = "From: app@example.com\r\nTo: alice@example.net\r\nMessage-ID: <exact@example.com>\r\nDate: Wed, 2 Dec 2026 10:00:00 +0000\r\nSubject: exact\r\n\r\nline one\r\n.starts with a dot\r\n\r\nlast line\r\n";
    let (code, v) = baton
        .post(
            Some(support::baton::KEY),
            None,
            serde_json::json!({"from": "app@example.com", "to": ["alice@example.net"],
                "raw_base64": base64::engine::general_purpose::STANDARD.encode(raw)})
            .to_string(),
        )
        .await;
    assert_eq!(code, 202, "{v}");
    let got = primary.wait_for_messages(1, DEADLINE).await;
    assert_eq!(got[0].data_str(), raw, "byte-exact, no extra blank line, dot-stuffing undone");
}

/// The SMTP provider over STARTTLS and over implicit TLS, against a second Baton's SMTP
/// listener (a real TLS server with a test CA), with AUTH.
#[tokio::test]
async fn relays_over_starttls_and_implicit_tls_with_auth() {
    let cert = support::certs::TestCert::generate();
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), &cert.ca_pem).unwrap();
    let out = tempfile::tempdir().unwrap();
    // The downstream relay: another Baton with STARTTLS and smtps, writing to a file outbox.
    let downstream_body = format!(
        "[[clients]]\nname = \"upstream\"\nallowed_senders = [\"*@example.com\"]\nsmtp_users = [{{ username = \"relay\", password = \"relay-password\" }}]\n\n[providers.outbox]\ntype = \"file\"\ndir = \"{}\"\n\n[[routes]]\nname = \"default\"\nproviders = [\"outbox\"]\n",
        out.path().display()
    );
    let server = format!("smtp_listen = \"127.0.0.1:0\"\nsmtps_listen = \"127.0.0.1:0\"\n{}", cert.server_tls_line());
    let downstream = Baton::start_with_server(&server, "", &downstream_body).await;
    for (tls, addr) in [("starttls", downstream.smtp_addr()), ("tls", downstream.smtps_addr())] {
        let body = format!(
            "[providers.relay]\ntype = \"smtp\"\nhost = \"localhost\"\nport = {}\ntls = \"{tls}\"\nca_file = \"{}\"\nusername = \"relay\"\npassword = \"relay-password\"\ntimeout = \"5s\"\n\n[[routes]]\nname = \"default\"\nproviders = [\"relay\"]\n",
            addr.port(),
            ca.path().display()
        );
        let upstream = Baton::start(&body).await;
        let id = upstream.send(message(&["alice@example.net"], &format!("over {tls}"))).await;
        let status = upstream.wait_final(&id).await;
        assert_eq!(status["status"], "delivered", "{tls}: {status:#}");
        let downstream_id = status["recipients"][0]["provider_message_id"].as_str().unwrap().to_string();
        // The downstream Baton answered 250 once the message was in its spool; its own
        // delivery to the outbox follows.
        let path = out.path().join(format!("{downstream_id}.eml"));
        let start = std::time::Instant::now();
        while !path.exists() {
            assert!(start.elapsed() < DEADLINE, "{tls}: downstream never wrote {}", path.display());
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let eml = std::fs::read_to_string(&path).unwrap();
        assert!(eml.contains(&format!("Subject: over {tls}")), "{eml}");
        assert!(eml.contains("ESMTPSA"), "TLS and AUTH recorded by the receiving side: {eml}");
        assert!(eml.contains(&format!("Message-ID: <{id}@baton.test>")));
    }
}

/// `max_rate` on one node (no `[cluster]`): sends are spaced by the limit, and a message with
/// no turn within `rate_wait` and no other provider is tried again after `rate_wait`, not after
/// the next retry slot (an hour here).
#[tokio::test]
async fn max_rate_spaces_sends_and_a_held_message_comes_back_after_rate_wait() {
    let relay = MockSmtp::start().await;
    let body = format!(
        "{}\n[retry]\nschedule = [\"1h\"]\n\n[[routes]]\nname = \"default\"\nproviders = [\"relay\"]\n",
        smtp_provider("relay", &relay, "max_rate = \"5/s\"\nrate_wait = \"300ms\"\n")
    );
    let baton = Baton::start(&body).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(baton.send(message(&["alice@example.net"], &format!("paced {i}"))).await);
    }
    for id in &ids {
        let status = baton.wait_final(id).await;
        assert_eq!(status["status"], "delivered", "{status:#}");
    }
    let mut times: Vec<std::time::Instant> = relay.messages().iter().map(|m| m.received_at).collect();
    times.sort();
    for pair in times.windows(2) {
        // 200 ms apart at 5/s; a little less for the mock's own timing.
        assert!(pair[1] - pair[0] >= std::time::Duration::from_millis(150), "{:?}", pair[1] - pair[0]);
    }
    let m = baton.metrics().await;
    assert!(Baton::metric(&m, "baton_provider_rate_limited_total", &[("provider", "relay")]) >= 1.0, "some were held");
}
