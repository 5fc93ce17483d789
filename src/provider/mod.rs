//! Providers: the places a message can be handed to. Each adapter turns its provider's answers
//! into one [`SendReport`] (outcome class + a result per recipient), so failover and health
//! treat every provider alike.
//!
//! What adapters share lives here, never copied: the one batching loop ([`send`]), the mapping
//! of a failure class to a probe verdict ([`probe_failure`]) and the shape of a synthetic
//! trial's report ([`trial_accepted`]). HTTP transport, redaction and the probe fallback for
//! answers an adapter has no rule for are in [`http`].

mod file;
pub mod http;
pub mod labels;
mod mailgun;
mod mandrill;
pub mod mime;
mod postmark;
pub mod redact;
mod resend;
mod sendgrid;
mod ses;
mod smtp;
pub mod smtp_classify;
mod smtp_stream;

use crate::config::ProviderConfig;
use crate::health::ProbeReport;
use crate::outcome::{OutcomeClass, RecipientResult, RejectReason, SendReport, truncate_detail};
use std::collections::BTreeMap;
use std::sync::Arc;

pub use file::FileProvider;
pub use smtp::SmtpProvider;

/// One message as handed to a provider: the envelope for the recipients still pending, the
/// RFC 5322 bytes exactly as spooled, and the app's tags and metadata (see `labels.rs` for how
/// each provider carries them).
#[derive(Clone, Copy)]
pub struct Outbound<'a> {
    pub id: &'a str,
    pub mail_from: &'a str,
    pub recipients: &'a [String],
    pub body: &'a [u8],
    pub tags: &'a [String],
    pub metadata: &'a BTreeMap<String, String>,
    /// The body is not MIME but a provider-stored-template request in this provider's own
    /// API shape (a compatible-API pass-through): sent with [`Provider::send_template`].
    pub template: bool,
}

static NO_METADATA: BTreeMap<String, String> = BTreeMap::new();

impl<'a> Outbound<'a> {
    /// A message without tags or metadata.
    pub fn new(id: &'a str, mail_from: &'a str, recipients: &'a [String], body: &'a [u8]) -> Outbound<'a> {
        Outbound { id, mail_from, recipients, body, tags: &[], metadata: &NO_METADATA, template: false }
    }
}

#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    fn name(&self) -> &str;
    /// Most recipients one request may carry; [`send`] splits larger sends into batches.
    fn max_recipients(&self) -> usize {
        usize::MAX
    }
    /// Sends one batch (at most [`Provider::max_recipients`] recipients) and classifies the
    /// answer. Never panics or errors: every failure is a [`SendReport`].
    async fn send_batch(&self, msg: &Outbound<'_>) -> SendReport;
    /// Sends a provider-template request passed through from the compatible API of this
    /// provider's type (`msg.body` is that request as the app sent it, without credentials),
    /// in one request for all its recipients. Providers without stored templates refuse it.
    async fn send_template(&self, msg: &Outbound<'_>) -> SendReport {
        let detail = "this provider has no stored templates; the template request cannot be sent here";
        SendReport::failed(OutcomeClass::BadRequest, msg.recipients.len(), detail)
    }
    /// A synthetic half-open trial: exercises the send path with this message's envelope
    /// without delivering it (SMTP MAIL + RCPT + RSET, SendGrid sandbox mode, Mailgun test
    /// mode). `None`: the provider has none, and the trial is a real send bounded by
    /// `health.trial_timeout`.
    async fn trial(&self, _msg: &Outbound<'_>) -> Option<SendReport> {
        None
    }
    /// A cheap check that the provider would take mail now (login works, account usable).
    /// A probe that cannot judge (no permission for its endpoint, endpoint missing, an answer
    /// it cannot read) says [`crate::health::ProbeVerdict::Inconclusive`], never "failed".
    async fn probe(&self) -> ProbeReport;
}

/// Sends `msg` through `provider`, in batches of its `max_recipients`: the one batching rule
/// every adapter shares. Batches go one after another and stop at the first provider-level
/// failure; recipients of earlier batches stay delivered (or rejected), the rest are `NotDone`
/// and move on to the next provider, and the report carries the failure's class so health
/// sees it.
pub async fn send(provider: &dyn Provider, msg: &Outbound<'_>) -> SendReport {
    if msg.template {
        return whole_request(provider.send_template(msg).await);
    }
    let size = provider.max_recipients().max(1);
    if msg.recipients.len() <= size {
        return provider.send_batch(msg).await;
    }
    let batches: Vec<&[String]> = msg.recipients.chunks(size).collect();
    let mut reports = Vec::with_capacity(batches.len());
    for batch in &batches {
        let report = provider.send_batch(&Outbound { recipients: batch, ..*msg }).await;
        let stop = report.class.is_provider_failure();
        reports.push(report);
        if stop {
            break;
        }
    }
    SendReport::from_batches(reports, msg.recipients.len())
}

/// A template request goes out whole, so its recipients share one fate: once the provider
/// took it for anyone, the recipients it did not report on (a Mandrill `bcc_address`, say) were
/// sent too; once it refused some (Postmark's inactive recipients) and took none, a retry would
/// post the same request to all again, so the rest end as refused. Only a request that got no
/// answer for anyone is retried.
fn whole_request(mut report: SendReport) -> SendReport {
    let delivered = report.recipients.iter().any(|r| matches!(r, RecipientResult::Delivered { .. }));
    let rejected = report.recipients.iter().any(|r| matches!(r, RecipientResult::Rejected { .. }));
    if delivered || rejected {
        let detail = format!("the template request was refused as a whole: {}", report.detail);
        for r in &mut report.recipients {
            if matches!(r, RecipientResult::NotDone) {
                *r = match delivered {
                    true => RecipientResult::Delivered { provider_message_id: None },
                    false => RecipientResult::Rejected { detail: detail.clone(), reason: RejectReason::Other },
                };
            }
        }
    }
    report
}

/// The verdict of a probe that failed with a send-style `class`. Only `account` (the provider
/// says the account cannot send) and `transient` (the provider itself is failing) judge the
/// provider; any other class (a throttled probe, a request the probed endpoint refused, an
/// answer read as a success without the expected content) means the probe could not judge.
pub(crate) fn probe_failure(class: OutcomeClass, detail: String) -> ProbeReport {
    match class {
        OutcomeClass::Account | OutcomeClass::Transient => ProbeReport::failed(class, detail),
        OutcomeClass::Accepted
        | OutcomeClass::RecipientRejected
        | OutcomeClass::RateLimited
        | OutcomeClass::SenderUnverified
        | OutcomeClass::BadRequest => ProbeReport::inconclusive(truncate_detail(&format!(
            "a {} answer says nothing about the account (sends will tell): {detail}",
            class.as_str()
        ))),
    }
}

/// The report of a synthetic trial the provider passed: `accepted`, and every recipient
/// `NotDone`, because nothing was delivered (the caller only reads the class and detail).
pub(crate) fn trial_accepted(recipients: usize, detail: impl Into<String>) -> SendReport {
    SendReport {
        class: OutcomeClass::Accepted,
        detail: detail.into(),
        recipients: vec![RecipientResult::NotDone; recipients],
        retry_after: None,
        possible_duplicate: false,
    }
}

/// Builds the adapter for one `[providers.NAME]` table.
pub fn build(name: &str, config: &ProviderConfig, hostname: &str) -> Result<Arc<dyn Provider>, String> {
    Ok(match config {
        ProviderConfig::Smtp(c) => Arc::new(SmtpProvider::new(name, c, hostname)?),
        ProviderConfig::File(c) => Arc::new(FileProvider::new(name, c)),
        ProviderConfig::Mandrill(c) => Arc::new(mandrill::MandrillProvider::new(name, c)?),
        ProviderConfig::Ses(c) => Arc::new(ses::SesProvider::new(name, c)?),
        ProviderConfig::Sendgrid(c) => Arc::new(sendgrid::SendgridProvider::new(name, c)?),
        ProviderConfig::Mailgun(c) => Arc::new(mailgun::MailgunProvider::new(name, c)?),
        ProviderConfig::Postmark(c) => Arc::new(postmark::PostmarkProvider::new(name, c)?),
        ProviderConfig::Resend(c) => Arc::new(resend::ResendProvider::new(name, c)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::ProbeVerdict;
    use std::sync::Mutex;
    use std::time::Duration;

    /// A provider that takes 2 recipients per request and answers each request from a script
    /// (the last entry repeats), recording the recipients of every request.
    struct Scripted {
        answers: Vec<OutcomeClass>,
        retry_after: Option<Duration>,
        sent: Mutex<Vec<Vec<String>>>,
    }

    impl Scripted {
        fn new(answers: &[OutcomeClass]) -> Self {
            Scripted { answers: answers.to_vec(), retry_after: None, sent: Mutex::new(Vec::new()) }
        }
    }

    #[async_trait::async_trait]
    impl Provider for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }
        fn max_recipients(&self) -> usize {
            2
        }
        async fn send_batch(&self, msg: &Outbound<'_>) -> SendReport {
            let mut sent = self.sent.lock().unwrap();
            sent.push(msg.recipients.to_vec());
            let class = self.answers[(sent.len() - 1).min(self.answers.len() - 1)];
            let n = msg.recipients.len();
            match class {
                OutcomeClass::Accepted => SendReport::delivered(n, Some(format!("id-{}", sent.len())), "ok"),
                class => SendReport { retry_after: self.retry_after, ..SendReport::failed(class, n, "refused") },
            }
        }
        async fn probe(&self) -> ProbeReport {
            ProbeReport::usable("scripted")
        }
    }

    async fn send_six(provider: &Scripted) -> SendReport {
        let recipients: Vec<String> = (1..=6).map(|i| format!("r{i}@example.net")).collect();
        let msg = Outbound::new("m1", "app@example.com", &recipients, b"x");
        send(provider, &msg).await
    }

    #[tokio::test]
    async fn a_failed_batch_keeps_its_class_and_stops_the_send() {
        let provider = Scripted::new(&[OutcomeClass::Accepted, OutcomeClass::Transient, OutcomeClass::Accepted]);
        let report = send_six(&provider).await;
        assert_eq!(report.class, OutcomeClass::Transient, "health must see the failure");
        let delivered = RecipientResult::Delivered { provider_message_id: Some("id-1".into()) };
        assert_eq!(report.recipients[..2], [delivered.clone(), delivered]);
        assert!(report.recipients[2..].iter().all(|r| *r == RecipientResult::NotDone), "{:?}", report.recipients);
        assert_eq!(report.recipients.len(), 6);
        let sent = provider.sent.lock().unwrap();
        assert_eq!(sent.len(), 2, "the third batch is never sent: {sent:?}");
        assert_eq!(sent[1], ["r3@example.net", "r4@example.net"]);
    }

    #[tokio::test]
    async fn every_batch_accepted_is_accepted() {
        let provider = Scripted::new(&[OutcomeClass::Accepted]);
        let report = send_six(&provider).await;
        assert_eq!(report.class, OutcomeClass::Accepted);
        assert_eq!(report.recipients.len(), 6);
        assert_eq!(report.recipients[5], RecipientResult::Delivered { provider_message_id: Some("id-3".into()) });
        let sent = provider.sent.lock().unwrap();
        assert_eq!(sent.concat(), (1..=6).map(|i| format!("r{i}@example.net")).collect::<Vec<_>>(), "in order");
    }

    #[tokio::test]
    async fn a_rate_limited_batch_keeps_its_retry_after() {
        let mut provider = Scripted::new(&[OutcomeClass::Accepted, OutcomeClass::RateLimited]);
        provider.retry_after = Some(Duration::from_secs(42));
        let report = send_six(&provider).await;
        assert_eq!(report.class, OutcomeClass::RateLimited);
        assert_eq!(report.retry_after, Some(Duration::from_secs(42)));
    }

    #[tokio::test]
    async fn a_send_that_fits_one_batch_is_one_request() {
        let provider = Scripted::new(&[OutcomeClass::Accepted]);
        let recipients = vec!["a@example.net".to_string()];
        let msg = Outbound::new("m1", "app@example.com", &recipients, b"x");
        let report = send(&provider, &msg).await;
        assert_eq!((report.class, report.detail.as_str()), (OutcomeClass::Accepted, "ok"));
        assert_eq!(provider.sent.lock().unwrap().len(), 1);
    }

    #[test]
    fn only_account_and_transient_probe_failures_judge_the_provider() {
        for class in OutcomeClass::ALL {
            let verdict = probe_failure(class, "x".into()).verdict;
            match class {
                OutcomeClass::Account | OutcomeClass::Transient => assert_eq!(verdict, ProbeVerdict::Failed(class)),
                _ => assert_eq!(verdict, ProbeVerdict::Inconclusive, "{class:?}"),
            }
        }
    }

    #[test]
    fn a_passed_trial_delivers_nobody() {
        let report = trial_accepted(3, "trial");
        assert_eq!(report.class, OutcomeClass::Accepted);
        assert_eq!(report.recipients, vec![RecipientResult::NotDone; 3]);
    }
}
