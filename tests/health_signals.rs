//! Health signals that must never take a working provider out of rotation, nor make a message
//! wait on a bad one: probes that cannot judge, unverified sender domains, state that survives
//! a restart, and half-open trials bounded by `health.trial_timeout`.

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::baton::{Baton, DEADLINE, message, smtp_provider};
use support::mock_http::{MockHttp, Recorded, Reply};
use support::mock_smtp::{MockSmtp, Stage};

/// One client that may send from two domains (one verified at the provider, one not).
const TWO_DOMAINS: &str = "[[clients]]\nname = \"app\"\napi_keys = [\"test-api-key-0123456789\"]\n\
                           allowed_senders = [\"*@a.example.com\", \"*@b.example.com\"]\n";

/// A message from `app@{domain}` to alice.
fn message_from(domain: &str, subject: &str) -> Value {
    json!({"from": format!("app@{domain}"), "to": ["alice@example.net"], "subject": subject, "text": "hello"})
}

/// Route `[api, backup]` with `provider` as the `[providers.api]` table.
fn route(provider: &str, backup: &MockSmtp, health: &str) -> String {
    format!(
        "{provider}\n{}\n[retry]\nschedule = [\"1h\"]\n\n[health]\n{health}\n\n[[routes]]\nname = \"default\"\nproviders = [\"api\", \"backup\"]\n",
        smtp_provider("backup", backup, "")
    )
}

fn ses_table(url: &str) -> String {
    format!(
        "[providers.api]\ntype = \"ses\"\nregion = \"eu-west-1\"\naccess_key_id = \"AKIDEXAMPLE0000\"\n\
         secret_access_key = \"ses-secret-0123456789\"\nendpoint = \"{url}\"\n"
    )
}

fn ses_error(status: u16, kind: &str, text: &str) -> Reply {
    Reply::json(status, json!({"message": text}))
        .with_header("x-amzn-ErrorType", &format!("{kind}:http://internal.amazon.com/coral/com.amazon.sesv2/"))
}

const SES_SEND: &str = "/v2/email/outbound-emails";
const SES_ACCOUNT: &str = "/v2/email/account";

/// Sends and waits for the final status; returns (provider that delivered, status).
async fn deliver(baton: &Baton, msg: Value) -> (String, Value) {
    let id = baton.send(msg).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(status["status"], "delivered", "{status:#}");
    (status["recipients"][0]["provider"].as_str().unwrap().to_string(), status)
}

/// Keeps sending (one message at a time) until `provider` delivers one; returns that status.
async fn deliver_until(baton: &Baton, provider: &str, domain: &str) -> Value {
    let start = Instant::now();
    loop {
        let (by, status) = deliver(baton, message_from(domain, "until")).await;
        if by == provider {
            return status;
        }
        assert!(start.elapsed() < DEADLINE, "{provider} never delivered again: {:#}", baton.providers().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_send_only_ses_key_keeps_ses_in_rotation_and_a_trial_send_ends_its_suspension() {
    // AWS's sending-only policy: SendRawEmail allowed, GetAccount denied; then an endpoint
    // without GetAccount at all. Neither may take SES out of rotation.
    let denied = ses_error(
        403,
        "AccessDeniedException",
        "User: arn:aws:iam::123456789012:user/baton is not authorized to perform: ses:GetAccount",
    );
    for (case, account_reply) in [("access denied", denied), ("no GetAccount", Reply::text(404, "Not Found"))] {
        let mock = MockHttp::start().await;
        mock.reply(SES_ACCOUNT, account_reply);
        mock.reply(SES_SEND, Reply::json(200, json!({"MessageId": "ses-ok"})));
        let backup = MockSmtp::start().await;
        let health = "probe_interval = \"100ms\"\naccount_cooldown = \"500ms\"";
        let baton = Baton::start(&route(&ses_table(&mock.url()), &backup, health)).await;
        let p =
            baton.wait_provider("api", "an inconclusive probe", |p| p["last_probe"]["result"] == "inconclusive").await;
        assert!(p["last_probe"]["detail"].as_str().unwrap().contains("GetAccount"), "{case}: says what to do: {p:#}");
        mock.wait_for_requests(SES_ACCOUNT, 3, DEADLINE).await;
        for i in 0..5 {
            let (by, _) = deliver(&baton, message(&["alice@example.net"], &format!("{case} {i}"))).await;
            assert_eq!(by, "api", "{case}: SES sends, so SES takes the mail");
        }
        assert_eq!(baton.provider("api").await["state"], "healthy", "{case}");
        let m = baton.metrics().await;
        let probes =
            |result| Baton::metric(&m, "baton_health_probes_total", &[("provider", "api"), ("result", result)]);
        assert!(probes("inconclusive") >= 3.0, "{case}: {m}");
        assert_eq!(probes("failed"), 0.0, "{case}");

        // The account is suspended for real: the probe cannot tell when it is back, so after
        // the cooldown one trial send decides.
        mock.reply(SES_SEND, ses_error(400, "AccountSuspendedException", "Account suspended"));
        let (by, _) = deliver(&baton, message(&["alice@example.net"], "suspended")).await;
        assert_eq!(by, "backup");
        assert_eq!(baton.provider("api").await["state"], "suspended");
        mock.reply(SES_SEND, Reply::json(200, json!({"MessageId": "ses-back"})));
        deliver_until(&baton, "api", "example.com").await;
        assert_eq!(baton.provider("api").await["state"], "healthy", "{case}");
    }
}

#[tokio::test]
async fn with_probe_off_nothing_is_probed_and_a_trial_send_ends_a_suspension() {
    let primary = MockSmtp::start().await;
    let backup = MockSmtp::start().await;
    let body = format!(
        "{}{}\n[retry]\nschedule = [\"1h\"]\n\n[health]\nprobe_interval = \"50ms\"\naccount_cooldown = \"300ms\"\n\n[[routes]]\nname = \"default\"\nproviders = [\"primary\", \"backup\"]\n",
        smtp_provider("primary", &primary, "probe = false"),
        smtp_provider("backup", &backup, "probe = false"),
    );
    let baton = Baton::start(&body).await;
    primary.set_reply(Stage::EndOfData, Some("554 5.7.1 Your account has been suspended".into()));
    let (by, _) = deliver(&baton, message(&["alice@example.net"], "suspends")).await;
    assert_eq!(by, "backup");
    assert_eq!(baton.provider("primary").await["state"], "suspended");
    primary.reset();
    deliver_until(&baton, "primary", "example.com").await;
    let p = baton.provider("primary").await;
    assert_eq!(p["state"], "healthy");
    assert_eq!(p["probe"], false);
    assert!(p["last_probe"].is_null(), "never probed: {p:#}");
    let m = baton.metrics().await;
    assert_eq!(Baton::metric(&m, "baton_health_probes_total", &[("provider", "primary")]), 0.0);
}

/// The provider answers "unverified sender" for b.example.com only, in its own words.
struct SenderCase {
    name: &'static str,
    /// The `[providers.api]` table for a mock at this base URL.
    table: fn(&str) -> String,
    send_path: &'static str,
    refuse_b: fn(&Recorded) -> Option<Reply>,
    accept: Reply,
}

fn sender_cases() -> Vec<SenderCase> {
    vec![
        SenderCase {
            name: "sendgrid",
            table: |url| {
                format!(
                    "[providers.api]\ntype = \"sendgrid\"\napi_key = \"SG.test-key-0123456789\"\nbase_url = \"{url}\"\n"
                )
            },
            send_path: "/v3/mail/send",
            refuse_b: |r| {
                r.json()["from"]["email"].as_str().unwrap().ends_with("@b.example.com").then(|| {
                    Reply::json(403, json!({"errors": [{"message": "The from address does not match a verified Sender Identity. Mail cannot be sent until this error is resolved.", "field": "from", "help": null}]}))
                })
            },
            accept: Reply::text(202, "").with_header("x-message-id", "sg-1"),
        },
        SenderCase {
            name: "ses",
            table: ses_table,
            send_path: SES_SEND,
            refuse_b: |r| {
                r.json()["FromEmailAddress"].as_str().unwrap().ends_with("@b.example.com").then(|| {
                    ses_error(400, "MessageRejected", "Email address is not verified. The following identities failed the check in region EU-WEST-1: app@b.example.com")
                })
            },
            accept: Reply::json(200, json!({"MessageId": "ses-1"})),
        },
        SenderCase {
            name: "postmark",
            table: |url| {
                format!(
                    "[providers.api]\ntype = \"postmark\"\nserver_token = \"pm-token-0123456789\"\nbase_url = \"{url}\"\n"
                )
            },
            send_path: "/email",
            refuse_b: |r| {
                r.json()["From"].as_str().unwrap().contains("@b.example.com").then(|| {
                    Reply::json(422, json!({"ErrorCode": 400, "Message": "The 'From' address you supplied (app@b.example.com) is not a Sender Signature on your account. Add and confirm this address in order to be able to use it in the 'From' field of your messages."}))
                })
            },
            accept: Reply::json(
                200,
                json!({"To": "alice@example.net", "SubmittedAt": "2026-12-02T10:00:00Z", "MessageID": "pm-1", "ErrorCode": 0, "Message": "OK"}),
            ),
        },
    ]
}

#[tokio::test]
async fn an_unverified_sender_domain_fails_over_alone_and_comes_back_after_its_cooldown() {
    for case in sender_cases() {
        let name = case.name;
        let mock = MockHttp::start().await;
        let table = (case.table)(&mock.url());
        let (refuse_b, accept) = (case.refuse_b, case.accept.clone());
        mock.reply(case.send_path, Reply::dynamic(move |r| refuse_b(r).unwrap_or_else(|| accept.clone())));
        let backup = MockSmtp::start().await;
        let health = "probe_interval = \"1h\"\nsender_cooldown = \"1s\"";
        let baton = Baton::start(&format!("{TWO_DOMAINS}\n{}", route(&table, &backup, health))).await;

        let (by, status) = deliver(&baton, message_from("b.example.com", "unverified")).await;
        assert_eq!(by, "backup", "{name}: {status:#}");
        assert_eq!(status["attempts"][0]["outcome"], "sender_unverified", "{name}: {status:#}");
        let (by, _) = deliver(&baton, message_from("a.example.com", "verified")).await;
        assert_eq!(by, "api", "{name}: the other domain keeps the provider");
        let p = baton.provider("api").await;
        assert_eq!(p["state"], "healthy", "{name}: {p:#}");
        assert_eq!(p["blocked_sender_domains"][0]["domain"], "b.example.com", "{name}: {p:#}");

        // While blocked, b's mail does not even try the provider.
        let sent = mock.requests_to(case.send_path).len();
        let (by, status) = deliver(&baton, message_from("b.example.com", "still blocked")).await;
        assert_eq!(by, "backup");
        assert_eq!(status["attempts"].as_array().unwrap().len(), 1, "{name}: skipped: {status:#}");
        assert_eq!(mock.requests_to(case.send_path).len(), sent, "{name}");
        let m = baton.metrics().await;
        let blocked = |d| Baton::metric(&m, "baton_provider_sender_blocked", &[("provider", "api"), ("domain", d)]);
        assert_eq!(blocked("b.example.com"), 1.0, "{name}");
        assert_eq!(blocked("a.example.com"), 0.0, "{name}");
        let skips = &[("from", "api"), ("to", "backup"), ("reason", "sender_blocked")];
        assert_eq!(Baton::metric(&m, "baton_failovers_total", skips), 1.0, "{name}");

        // The domain is verified at the provider; after the cooldown its mail goes there again.
        mock.reply(case.send_path, case.accept.clone());
        deliver_until(&baton, "api", "b.example.com").await;
        let p = baton.provider("api").await;
        assert_eq!(p["blocked_sender_domains"], json!([]), "{name}: {p:#}");
    }
}

#[tokio::test]
async fn a_drained_provider_stays_drained_after_a_restart() {
    let primary = MockSmtp::start().await;
    let backup = MockSmtp::start().await;
    let body = format!(
        "{}{}\n[[routes]]\nname = \"default\"\nproviders = [\"primary\", \"backup\"]\n",
        smtp_provider("primary", &primary, ""),
        smtp_provider("backup", &backup, "")
    );
    let dir = tempfile::tempdir().unwrap();
    let mut baton = Baton::start_in(dir.path(), &body, "").await;
    let r = baton.http.post(format!("{}/admin/providers/primary/drain", baton.admin)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let since = baton.provider("primary").await["since"].clone();
    baton.stop().await;

    let baton = Baton::start_in(dir.path(), &body, "").await;
    let p = baton.provider("primary").await;
    assert_eq!(p["state"], "drained", "{p:#}");
    assert_eq!(p["since"], since, "since is from before the restart");
    let (by, _) = deliver(&baton, message(&["alice@example.net"], "after restart")).await;
    assert_eq!(by, "backup");
    assert_eq!(primary.commands_seen("MAIL"), 0);
}

#[tokio::test]
async fn a_suspension_survives_a_restart_until_its_cooldown_and_a_passing_probe() {
    let primary = MockSmtp::start().await;
    primary.set_credentials(Some(("baton", "secret-password")));
    let backup = MockSmtp::start().await;
    let body = format!(
        "{}{}\n[retry]\nschedule = [\"1h\"]\n\n[health]\nprobe_interval = \"200ms\"\naccount_cooldown = \"4s\"\n\n[[routes]]\nname = \"default\"\nproviders = [\"primary\", \"backup\"]\n",
        smtp_provider("primary", &primary, "username = \"baton\"\npassword = \"secret-password\""),
        smtp_provider("backup", &backup, "")
    );
    let dir = tempfile::tempdir().unwrap();
    let mut baton = Baton::start_in(dir.path(), &body, "").await;
    primary.set_reply(Stage::EndOfData, Some("554 5.7.1 Your account has been suspended".into()));
    let (by, _) = deliver(&baton, message(&["alice@example.net"], "suspends")).await;
    assert_eq!(by, "backup");
    let before = baton.provider("primary").await;
    assert_eq!(before["state"], "suspended");
    baton.stop().await;

    // The provider works again, but Baton must not find out by handing it mail before the
    // cooldown is over: the account is still to be treated as suspended.
    primary.reset();
    primary.set_credentials(Some(("baton", "secret-password")));
    let mails_before = primary.commands_seen("MAIL");
    let baton = Baton::start_in(dir.path(), &body, "").await;
    let p = baton.provider("primary").await;
    assert_eq!(p["state"], "suspended", "{p:#}");
    assert_eq!(p["since"], before["since"]);
    assert!(p["next_trial_in_seconds"].as_f64().unwrap() > 0.0, "the cooldown goes on: {p:#}");
    for i in 0..3 {
        let (by, status) = deliver(&baton, message(&["alice@example.net"], &format!("restarted {i}"))).await;
        assert_eq!(by, "backup");
        assert_eq!(status["attempts"].as_array().unwrap().len(), 1, "primary not tried: {status:#}");
    }
    assert_eq!(primary.commands_seen("MAIL"), mails_before, "zero attempts on the suspended provider");
    baton.wait_provider("primary", "healthy after cooldown and probe", |p| p["state"] == "healthy").await;
    assert!(p["last_probe"].is_null() || p["last_probe"]["result"] == "ok");
    deliver_until(&baton, "primary", "example.com").await;
}

#[tokio::test]
async fn a_hanging_primary_never_holds_a_message_longer_than_the_trial_timeout() {
    // Hanging at the greeting (the synthetic trial itself times out) and after the data (the
    // synthetic trial passes, the real send hangs): either way the trial is bounded.
    for stage in [Stage::Greeting, Stage::EndOfData] {
        let primary = MockSmtp::start().await;
        primary.set_hang(Some(stage));
        let backup = MockSmtp::start().await;
        let body = format!(
            "{}{}\n[retry]\nschedule = [\"1h\"]\n\n[health]\nfailure_threshold = 1\nopen_for = \"100ms\"\nmax_open_for = \"200ms\"\ntrial_timeout = \"400ms\"\nprobe_interval = \"1h\"\n\n[[routes]]\nname = \"default\"\nproviders = [\"primary\", \"backup\"]\n",
            smtp_provider("primary", &primary, "timeout = \"5s\""),
            smtp_provider("backup", &backup, "")
        );
        let baton = Baton::start(&body).await;
        // The first message finds out the hard way (the provider's own 5 s timeout).
        let (by, _) = deliver(&baton, message(&["alice@example.net"], "first")).await;
        assert_eq!(by, "backup");
        assert_eq!(baton.provider("primary").await["state"], "open");

        // After that, trials happen every cooldown; none may cost more than trial_timeout.
        let start = Instant::now();
        let mut trials = 0;
        while trials < 3 {
            assert!(start.elapsed() < DEADLINE, "{stage:?}: no trials happened");
            let (by, status) = deliver(&baton, message(&["alice@example.net"], "later")).await;
            assert_eq!(by, "backup", "{stage:?}: {status:#}");
            for a in status["attempts"].as_array().unwrap().iter().filter(|a| a["provider"] == "primary") {
                trials += 1;
                let ms = a["duration_ms"].as_u64().unwrap();
                assert!(ms < 1500, "{stage:?}: a trial held the message {ms} ms (trial_timeout 400 ms): {status:#}");
                assert!(a["detail"].as_str().unwrap().contains("trial_timeout"), "{stage:?}: {status:#}");
                // A real send that got no answer may still be delivered by the provider.
                let sent_data = stage == Stage::EndOfData;
                assert_eq!(a["possible_duplicate"], sent_data, "{stage:?}: {status:#}");
            }
        }
    }
}
