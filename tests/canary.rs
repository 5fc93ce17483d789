//! End-to-end canaries against a real IMAP server (Dovecot, started by the test): scripted SMTP
//! providers deliver into its mailbox with dovecot-lda, or silently drop everything while
//! answering 250. Canaries through each provider are read back and deleted; a provider that
//! starts dropping goes `silent` within `timeout + interval × lost_threshold`, app mail moves
//! to the next provider, and the provider comes back when it delivers again; with
//! `redeliver_unconfirmed`, what it accepted after its last confirmed canary is delivered again
//! through the next provider, exactly once, and nothing from before; an IMAP server
//! that is down or refuses the login, or a mailbox no canary reaches, takes no provider out
//! and does not disturb app mail.

mod support;

use std::sync::Arc;
use support::baton::{Baton, DEADLINE, message, smtp_provider};
use support::dovecot::{self, Dovecot};
use support::mock_smtp::{MockSmtp, ReceivedMessage};

/// Canary settings short enough for a test: lost after 2 s, silent after 2 lost.
fn config(primary: &MockSmtp, backup: &MockSmtp, imap_port: u16, password: &str) -> String {
    config_with(primary, backup, imap_port, password, "")
}

/// [`config`] with more `[canary]` keys.
fn config_with(primary: &MockSmtp, backup: &MockSmtp, imap_port: u16, password: &str, canary: &str) -> String {
    format!(
        "{}{}\n[retry]\nschedule = [\"1h\"]\n\n[[routes]]\nname = \"default\"\nproviders = [\"primary\", \"backup\"]\n\n\
         [canary]\ninterval = \"300ms\"\ntimeout = \"2s\"\nlost_threshold = 2\nfrom = \"canary@example.com\"\nto = \"{}\"\n{canary}\n\
         [canary.imap]\nhost = \"127.0.0.1\"\nport = {imap_port}\ntls = \"none\"\nusername = \"{}\"\npassword = \"{password}\"\n",
        smtp_provider("primary", primary, ""),
        smtp_provider("backup", backup, ""),
        dovecot::USER,
        dovecot::USER,
    )
}

/// Makes `mock` a provider that delivers what is addressed to the canary mailbox into it.
fn delivering(mock: &MockSmtp, imap: &Dovecot) {
    let conf = imap.conf();
    mock.set_forward(Some(Arc::new(move |m: &ReceivedMessage| {
        if m.rcpts.iter().any(|r| r == dovecot::USER) {
            Dovecot::deliver(&conf, &m.data);
        }
    })));
}

async fn counter(baton: &Baton, name: &str, provider: &str) -> f64 {
    Baton::metric(&baton.metrics().await, name, &[("provider", provider)])
}

/// Waits until `name{provider}` reaches `at_least`.
async fn wait_counter(baton: &Baton, name: &str, provider: &str, at_least: f64) {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let value = counter(baton, name, provider).await;
        if value >= at_least {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{name}{{provider={provider}}} stayed at {value}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn state(baton: &Baton, provider: &str) -> String {
    baton.provider(provider).await["state"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn canaries_through_each_provider_are_read_back_and_deleted() {
    let imap = Dovecot::start();
    let (primary, backup) = (MockSmtp::start().await, MockSmtp::start().await);
    delivering(&primary, &imap);
    delivering(&backup, &imap);
    let baton = Baton::start(&config(&primary, &backup, imap.port, dovecot::PASSWORD)).await;
    for provider in ["primary", "backup"] {
        wait_counter(&baton, "baton_canary_received_total", provider, 2.0).await;
        assert!(counter(&baton, "baton_canary_delivery_seconds_count", provider).await >= 2.0);
        assert!(counter(&baton, "baton_canary_last_received_timestamp_seconds", provider).await > 1.7e9);
        assert_eq!(counter(&baton, "baton_canary_lost_total", provider).await, 0.0, "{}", imap.log());
        assert_eq!(state(&baton, provider).await, "healthy");
    }
    let sent = primary.messages().into_iter().find(|m| m.rcpts == [dovecot::USER]).expect("a canary");
    assert!(sent.header("X-Baton-Canary").is_some() && sent.mail_from == "canary@example.com", "{}", sent.data_str());
    // Read-back deletes what it found: the mailbox holds at most the canaries still on their way.
    let received = counter(&baton, "baton_canary_received_total", "primary").await
        + counter(&baton, "baton_canary_received_total", "backup").await;
    assert!((imap.message_count() as f64) < received, "found canaries are deleted");
    let id = baton.send(message(&["alice@example.net"], "app mail")).await;
    assert_eq!(baton.wait_final(&id).await["recipients"][0]["provider"], "primary", "canaries are not app traffic");
}

#[tokio::test]
async fn a_provider_that_drops_mail_goes_silent_its_traffic_moves_on_and_it_comes_back() {
    let imap = Dovecot::start();
    let (primary, backup) = (MockSmtp::start().await, MockSmtp::start().await);
    delivering(&primary, &imap);
    delivering(&backup, &imap);
    let baton = Baton::start(&config(&primary, &backup, imap.port, dovecot::PASSWORD)).await;
    wait_counter(&baton, "baton_canary_received_total", "primary", 1.0).await;

    primary.set_drop_all(true);
    let silent = baton.wait_provider("primary", "silent", |p| p["state"] == "silent").await;
    assert!(silent["reason"].as_str().unwrap_or_default().contains("canaries"), "{silent:#}");
    assert!(counter(&baton, "baton_canary_lost_total", "primary").await >= 2.0);
    assert_eq!(state(&baton, "backup").await, "healthy", "the provider that delivers stays in rotation");
    let id = baton.send(message(&["alice@example.net"], "while primary is silent")).await;
    assert_eq!(baton.wait_final(&id).await["recipients"][0]["provider"], "backup");

    primary.set_drop_all(false);
    baton.wait_provider("primary", "healthy again", |p| p["state"] == "healthy").await;
    let id = baton.send(message(&["alice@example.net"], "primary is back")).await;
    assert_eq!(baton.wait_final(&id).await["recipients"][0]["provider"], "primary");
}

#[tokio::test]
async fn an_unreadable_mailbox_takes_no_provider_out_and_app_mail_flows() {
    // A mailbox that refuses the login, then one that is down: canaries cannot be judged.
    let mut imap = Dovecot::start();
    let (primary, backup) = (MockSmtp::start().await, MockSmtp::start().await);
    delivering(&primary, &imap);
    let baton = Baton::start(&config(&primary, &backup, imap.port, "not-the-password")).await;
    // Enough canaries for the providers to have gone silent if they were judged.
    wait_counter(&baton, "baton_canary_sent_total", "primary", 12.0).await;
    imap.stop();
    let sent = counter(&baton, "baton_canary_sent_total", "primary").await;
    wait_counter(&baton, "baton_canary_sent_total", "primary", sent + 12.0).await;
    for provider in ["primary", "backup"] {
        assert_eq!(state(&baton, provider).await, "healthy");
        assert_eq!(counter(&baton, "baton_canary_lost_total", provider).await, 0.0);
    }
    let id = baton.send(message(&["alice@example.net"], "app mail")).await;
    assert_eq!(baton.wait_final(&id).await["recipients"][0]["provider"], "primary");
}

#[tokio::test]
async fn what_a_silent_provider_swallowed_is_redelivered_through_the_next_one_exactly_once() {
    let imap = Dovecot::start();
    let (primary, backup) = (MockSmtp::start().await, MockSmtp::start().await);
    delivering(&primary, &imap);
    delivering(&backup, &imap);
    let config = config_with(&primary, &backup, imap.port, dovecot::PASSWORD, "redeliver_unconfirmed = true\n");
    let baton = Baton::start(&config).await;
    // Before the drop: delivered by primary and confirmed by a canary sent after it.
    let before = baton.send(message(&["before@example.net"], "confirmed")).await;
    assert_eq!(baton.wait_final(&before).await["recipients"][0]["provider"], "primary");
    let sent = counter(&baton, "baton_canary_sent_total", "primary").await;
    wait_counter(&baton, "baton_canary_received_total", "primary", sent + 2.0).await;

    primary.set_drop_all(true);
    let swallowed = baton.send(message(&["after@example.net"], "swallowed")).await;
    assert_eq!(baton.wait_final(&swallowed).await["recipients"][0]["provider"], "primary", "taken, then dropped");
    baton.wait_provider("primary", "silent", |p| p["state"] == "silent").await;
    let status = baton
        .wait_status(&swallowed, "re-delivered by backup", |s| {
            s["status"] == "delivered" && s["recipients"][0]["provider"] == "backup"
        })
        .await;
    assert!(status["recipients"][0]["detail"].as_str().unwrap_or_default().contains("went silent"), "{status:#}");
    let last = status["attempts"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["provider"].as_str(), last["possible_duplicate"].as_bool()),
        (Some("backup"), Some(true)),
        "{status:#}"
    );
    let to_backup = |rcpt: &str| backup.messages().iter().filter(|m| m.rcpts == [rcpt]).count();
    assert_eq!(to_backup("after@example.net"), 1, "exactly once");
    assert_eq!(to_backup("before@example.net"), 0, "what a canary confirmed is not sent again");
    assert_eq!(counter(&baton, "baton_redelivered_total", "primary").await, 1.0);
}

/// Canaries through every provider lost: the mailbox is what fails, and nobody is taken out.
#[tokio::test]
async fn when_no_canary_arrives_through_any_provider_the_mailbox_is_blamed_not_the_providers() {
    let imap = Dovecot::start();
    let (primary, backup) = (MockSmtp::start().await, MockSmtp::start().await);
    primary.set_drop_all(true);
    backup.set_drop_all(true);
    let baton = Baton::start(&config(&primary, &backup, imap.port, dovecot::PASSWORD)).await;
    for provider in ["primary", "backup"] {
        wait_counter(&baton, "baton_canary_lost_total", provider, 4.0).await;
    }
    for provider in ["primary", "backup"] {
        assert_eq!(state(&baton, provider).await, "healthy", "{provider}");
    }
    let id = baton.send(message(&["alice@example.net"], "app mail")).await;
    assert_eq!(baton.wait_final(&id).await["recipients"][0]["provider"], "primary");
}
