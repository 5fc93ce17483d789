//! The SMTP provider's synthetic half-open trial against the mock relay: a fresh connection
//! (EHLO, AUTH as for a send), MAIL FROM the sender and RCPT TO the first recipient, then RSET
//! and QUIT; never DATA, nothing delivered. The relay's answer to the envelope is classified
//! like a send's.

mod provider_common;
mod support;

use baton::outcome::{OutcomeClass, RecipientResult};
use provider_common::{build, trial};
use support::mock_smtp::{MockSmtp, Stage};

/// A provider table for `mock`, logging in as u/p.
fn table(mock: &MockSmtp) -> String {
    format!(
        "type = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\ntimeout = \"2s\"\nusername = \"u\"\npassword = \"p\"\n",
        mock.port()
    )
}

async fn relay() -> MockSmtp {
    let mock = MockSmtp::start().await;
    mock.set_credentials(Some(("u", "p")));
    mock
}

#[tokio::test]
async fn the_trial_sends_an_envelope_and_no_message() {
    let mock = relay().await;
    let report = trial(build(&table(&mock)).as_ref()).await;
    assert_eq!(report.class, OutcomeClass::Accepted, "{}", report.detail);
    assert_eq!(report.recipients, vec![RecipientResult::NotDone; 2], "nobody was delivered");
    assert!(report.detail.contains("RCPT TO 250") && report.detail.contains("nothing sent"), "{}", report.detail);
    for (verb, n) in [("EHLO", 1), ("AUTH", 1), ("MAIL", 1), ("RCPT", 1), ("RSET", 1), ("QUIT", 1), ("DATA", 0)] {
        assert_eq!(mock.commands_seen(verb), n, "{verb}");
    }
    assert_eq!(mock.message_count(), 0);
}

#[tokio::test]
async fn the_relays_answer_to_the_envelope_is_classified_like_a_send() {
    let cases = [
        (Stage::Mail, "554 Message rejected: Email address is not verified.", OutcomeClass::SenderUnverified),
        (Stage::Mail, "550 5.7.1 Your account has been suspended", OutcomeClass::Account),
        (Stage::Mail, "451 4.3.0 Try again later", OutcomeClass::Transient),
        (Stage::Mail, "450 4.7.0 rate limit reached, slow down", OutcomeClass::RateLimited),
        (Stage::Rcpt, "550 5.1.1 <alice@example.net>: User unknown", OutcomeClass::RecipientRejected),
        (Stage::Rcpt, "554 5.7.1 Relay access denied", OutcomeClass::Account),
    ];
    let mock = relay().await;
    let provider = build(&table(&mock));
    for (stage, reply, class) in cases {
        mock.set_reply(stage, Some(reply.into()));
        let report = trial(provider.as_ref()).await;
        assert_eq!(report.class, class, "{reply}: {}", report.detail);
        assert_eq!(report.recipients, vec![RecipientResult::NotDone; 2], "{reply}");
        mock.set_reply(stage, None);
    }
    assert_eq!(mock.commands_seen("DATA"), 0);
    assert_eq!(mock.message_count(), 0);
}

#[tokio::test]
async fn a_refused_login_fails_the_trial_as_the_account() {
    let mock = relay().await;
    mock.reject_auth(true);
    let report = trial(build(&table(&mock)).as_ref()).await;
    assert_eq!(report.class, OutcomeClass::Account, "{}", report.detail);
    assert_eq!(mock.commands_seen("MAIL"), 0);
}

#[tokio::test]
async fn a_relay_that_does_not_answer_fails_the_trial_as_transient() {
    let mock = relay().await;
    mock.set_hang(Some(Stage::Rcpt));
    let started = std::time::Instant::now();
    let report = trial(build(&table(&mock)).as_ref()).await;
    assert_eq!(report.class, OutcomeClass::Transient, "{}", report.detail);
    assert!(report.detail.contains("RCPT TO"), "{}", report.detail);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
