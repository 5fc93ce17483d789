#![allow(dead_code)]
//! What the provider tests share: a Baton whose route is `[api provider, backup smtp mock]`,
//! admin helpers, a table runner that sends one message per scripted provider answer and checks
//! its classification, failover and the provider's health state, and a provider built alone
//! from its table, to call one of its methods (the synthetic trial) directly.

pub use crate::support::baton::recipient;
use crate::support::baton::{Baton, DEADLINE, message, smtp_provider};
use crate::support::mock_http::{MockHttp, Reply};
use crate::support::mock_smtp::MockSmtp;
use baton::outcome::SendReport;
use baton::provider::{Outbound, Provider};
use std::sync::Arc;

/// The name of the provider under test in every config.
pub const API: &str = "api";

/// Config: `[providers.api]` of `type` at `base_url` with `extra` keys, the backup SMTP mock, and
/// the route `[api, backup]`. `health` goes into `[health]`.
pub fn config(kind: &str, base_url: &str, extra: &str, backup: &MockSmtp, health: &str) -> String {
    format!(
        "[providers.{API}]\ntype = \"{kind}\"\nbase_url = \"{base_url}\"\n{extra}\n{}\n[retry]\nschedule = [\"1h\"]\n\n[health]\n{health}\n\n[[routes]]\nname = \"default\"\nproviders = [\"{API}\", \"backup\"]\n",
        smtp_provider("backup", backup, ""),
    )
}

/// The secret appears neither in the message's public status nor in the admin view.
pub async fn assert_secret_absent(baton: &Baton, id: &str, secret: &str) {
    let status = baton.status(id).await.to_string();
    assert!(!status.contains(secret), "secret leaked into GET /v1/messages/{id}: {status}");
    let admin = baton.providers().await.to_string();
    assert!(!admin.contains(secret), "secret leaked into /admin/providers: {admin}");
}

/// Where a case's message ends up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Delivered by the provider under test, with this provider message id.
    Api(&'static str),
    /// Failed over: delivered by the backup.
    Backup,
    /// Rejected by the provider under test (no failover); the detail contains this.
    Rejected(&'static str),
}

/// One scripted answer and what Baton must make of it.
pub struct Case {
    pub name: &'static str,
    pub reply: Reply,
    /// Outcome class of the attempt on the provider under test.
    pub outcome: &'static str,
    /// Text the attempt detail must contain.
    pub detail: &'static str,
    pub end: End,
    pub possible_duplicate: bool,
    /// State of the provider under test afterwards.
    pub state: &'static str,
    /// For `rate_limited`: the back-off shown by /admin/providers must lie in this range (s).
    pub next_trial: Option<(f64, f64)>,
}

impl Case {
    pub fn new(name: &'static str, reply: Reply, outcome: &'static str, end: End) -> Case {
        let state = match outcome {
            // An unverified sender blocks its domain only: the provider stays in rotation.
            "accepted" | "recipient_rejected" | "bad_request" | "sender_unverified" => "healthy",
            "transient" => "degraded",
            "rate_limited" => "rate_limited",
            _ => "suspended",
        };
        Case { name, reply, outcome, detail: "", end, possible_duplicate: false, state, next_trial: None }
    }
    pub fn detail(mut self, text: &'static str) -> Case {
        self.detail = text;
        self
    }
    pub fn duplicate(mut self) -> Case {
        self.possible_duplicate = true;
        self
    }
    pub fn next_trial(mut self, min: f64, max: f64) -> Case {
        self.next_trial = Some((min, max));
        self
    }
}

/// Runs every case on one Baton: script the answer at `send_path`, put the provider back in
/// rotation, send one message to alice, check where it ended and how the attempt was classified.
pub async fn run_cases(baton: &Baton, mock: &MockHttp, backup: &MockSmtp, send_path: &str, cases: Vec<Case>) {
    for case in cases {
        let name = case.name;
        mock.reply(send_path, case.reply.clone());
        baton.resume(API).await;
        // A case that rejected alice put her on the suppression list (tests/suppression.rs):
        // each case starts from an empty list.
        let url = format!("{}/admin/suppressions/alice@example.net", baton.admin);
        baton.http.delete(url).send().await.unwrap();
        let before_api = mock.requests_to(send_path).len();
        let before_backup = backup.message_count();
        let subject = format!("case {name}");
        let id = baton.send(message(&["alice@example.net"], &subject)).await;
        let status = baton.wait_final(&id).await;
        let attempts = status["attempts"].as_array().unwrap();
        let first = &attempts[0];
        assert_eq!(first["provider"], API, "{name}: {status:#}");
        assert_eq!(first["outcome"], case.outcome, "{name}: {status:#}");
        assert!(
            first["detail"].as_str().unwrap().contains(case.detail),
            "{name}: detail lacks {:?}: {status:#}",
            case.detail
        );
        assert_eq!(first["possible_duplicate"], case.possible_duplicate, "{name}: {status:#}");
        assert_eq!(mock.requests_to(send_path).len(), before_api + 1, "{name}: one request to the API");
        let alice = recipient(&status, "alice@example.net");
        match case.end {
            End::Api(pmid) => {
                assert_eq!(status["status"], "delivered", "{name}: {status:#}");
                assert_eq!(alice["provider"], API, "{name}");
                assert_eq!(alice["provider_message_id"], pmid, "{name}: {status:#}");
                assert_eq!(attempts.len(), 1, "{name}: no failover: {status:#}");
            }
            End::Backup => {
                assert_eq!(status["status"], "delivered", "{name}: {status:#}");
                assert_eq!(alice["provider"], "backup", "{name}: {status:#}");
                assert_eq!(attempts.len(), 2, "{name}: {status:#}");
                assert_eq!(attempts[1]["outcome"], "accepted", "{name}");
                let got = backup.wait_for_messages(before_backup + 1, DEADLINE).await;
                assert_eq!(got.last().unwrap().header("Subject").as_deref(), Some(subject.as_str()), "{name}");
            }
            End::Rejected(text) => {
                assert_eq!(status["status"], "failed", "{name}: {status:#}");
                assert_eq!(alice["status"], "rejected", "{name}: {status:#}");
                assert_eq!(alice["provider"], API, "{name}");
                assert!(alice["detail"].as_str().unwrap().contains(text), "{name}: {status:#}");
                assert_eq!(attempts.len(), 1, "{name}: a rejected recipient does not fail over: {status:#}");
            }
        }
        if !matches!(case.end, End::Backup) {
            assert_eq!(backup.message_count(), before_backup, "{name}: backup must not be used");
        }
        let p = baton.provider(API).await;
        assert_eq!(p["state"], case.state, "{name}: {p:#}");
        if let Some((min, max)) = case.next_trial {
            let next = p["next_trial_in_seconds"].as_f64().unwrap_or(-1.0);
            assert!(next >= min && next <= max, "{name}: back-off {next}s not in {min}..{max}: {p:#}");
        }
    }
}

/// Sends `raw` byte-exact (`raw_base64`) from app@example.com to `to` (plus `bcc`); returns the id.
pub async fn send_raw(baton: &Baton, to: &[&str], bcc: &[&str], raw: &[u8]) -> String {
    use base64::Engine as _;
    let body = serde_json::json!({
        "from": "app@example.com",
        "to": to,
        "bcc": bcc,
        "raw_base64": base64::engine::general_purpose::STANDARD.encode(raw),
    });
    baton.send(body).await
}

/// A raw message with 8-bit UTF-8 text, a folded header, a leading-dot line and trailing
/// whitespace: anything that a re-encoding would change.
pub const RAW_UTF8: &[u8] = "From: App <app@example.com>\r\nTo: Alice <alice@example.net>\r\nCc: bob@example.net\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nX-Long: one\r\n two\r\nMessage-ID: <raw-1@example.com>\r\nDate: Wed, 2 Dec 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nHällo wörld \r\n.leading dot\r\n\r\n"
    .as_bytes();

/// The spooled body of a message that is still pending.
pub fn spooled_body(baton: &Baton, id: &str) -> Vec<u8> {
    baton.shared().spool.body(id).expect("spool readable").expect("body still spooled").to_vec()
}

/// The adapter for one provider `table` (TOML with its `type`), built as Baton builds it.
pub fn build(table: &str) -> Arc<dyn Provider> {
    let config: baton::config::ProviderConfig = toml::from_str(table).expect("a valid provider table");
    baton::provider::build("direct", &config, "baton.test").expect("the provider builds")
}

/// The raw message trials carry.
pub const TRIAL_RAW: &[u8] = b"From: App <app@example.com>\r\nTo: alice@example.net\r\nSubject: trial\r\nMessage-ID: <trial-1@baton.test>\r\n\r\nhello\r\n";

/// Runs `provider`'s synthetic trial for a message from app@example.com to alice and bob.
pub async fn trial(provider: &dyn Provider) -> SendReport {
    let recipients = vec!["alice@example.net".to_string(), "bob@example.net".to_string()];
    let msg = Outbound::new("trial-1", "app@example.com", &recipients, TRIAL_RAW);
    provider.trial(&msg).await.expect("this provider has a synthetic trial")
}
