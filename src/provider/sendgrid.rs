//! The `sendgrid` provider (placeholder until its adapter is written).

use super::{Outbound, Provider};
use crate::config::SendgridConfig;
use crate::health::ProbeReport;
use crate::outcome::{OutcomeClass, SendReport};

pub struct SendgridProvider {
    name: String,
}

impl SendgridProvider {
    pub fn new(name: &str, _config: &SendgridConfig) -> Result<Self, String> {
        Ok(SendgridProvider { name: name.to_string() })
    }
}

#[async_trait::async_trait]
impl Provider for SendgridProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, msg: &Outbound<'_>) -> SendReport {
        SendReport::failed(OutcomeClass::Transient, msg.recipients.len(), "sendgrid adapter not implemented")
    }

    async fn probe(&self) -> ProbeReport {
        ProbeReport { failure: Some(OutcomeClass::Transient), detail: "sendgrid adapter not implemented".into() }
    }
}
