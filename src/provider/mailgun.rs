//! The `mailgun` provider (placeholder until its adapter is written).

use super::{Outbound, Provider};
use crate::config::MailgunConfig;
use crate::health::ProbeReport;
use crate::outcome::{OutcomeClass, SendReport};

pub struct MailgunProvider {
    name: String,
}

impl MailgunProvider {
    pub fn new(name: &str, _config: &MailgunConfig) -> Result<Self, String> {
        Ok(MailgunProvider { name: name.to_string() })
    }
}

#[async_trait::async_trait]
impl Provider for MailgunProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, msg: &Outbound<'_>) -> SendReport {
        SendReport::failed(OutcomeClass::Transient, msg.recipients.len(), "mailgun adapter not implemented")
    }

    async fn probe(&self) -> ProbeReport {
        ProbeReport { failure: Some(OutcomeClass::Transient), detail: "mailgun adapter not implemented".into() }
    }
}
