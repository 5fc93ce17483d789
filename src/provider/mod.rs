//! Providers: the places a message can be handed to. Each adapter turns its provider's answers
//! into one [`SendReport`] (outcome class + a result per recipient), so failover and health
//! treat every provider alike.

mod file;
pub mod http;
mod mailgun;
mod mandrill;
pub mod mime;
mod postmark;
mod resend;
mod sendgrid;
mod ses;
mod smtp;
pub mod smtp_classify;
mod smtp_stream;

use crate::config::ProviderConfig;
use crate::health::ProbeReport;
use crate::outcome::SendReport;
use std::sync::Arc;

pub use file::FileProvider;
pub use smtp::SmtpProvider;

/// One message as handed to a provider: the envelope for the recipients still pending, and the
/// RFC 5322 bytes exactly as spooled.
pub struct Outbound<'a> {
    pub id: &'a str,
    pub mail_from: &'a str,
    pub recipients: &'a [String],
    pub body: &'a [u8],
}

#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    fn name(&self) -> &str;
    /// Sends and classifies. Never panics or errors: every failure is a [`SendReport`].
    async fn send(&self, msg: &Outbound<'_>) -> SendReport;
    /// A cheap check that the provider would take mail now (login works, account usable).
    async fn probe(&self) -> ProbeReport;
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
