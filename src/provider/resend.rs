//! The `resend` provider (placeholder until its adapter is written).

use super::{Outbound, Provider};
use crate::config::ResendConfig;
use crate::health::ProbeReport;
use crate::outcome::{OutcomeClass, SendReport};

pub struct ResendProvider {
    name: String,
}

impl ResendProvider {
    pub fn new(name: &str, _config: &ResendConfig) -> Result<Self, String> {
        Ok(ResendProvider { name: name.to_string() })
    }
}

#[async_trait::async_trait]
impl Provider for ResendProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, msg: &Outbound<'_>) -> SendReport {
        SendReport::failed(OutcomeClass::Transient, msg.recipients.len(), "resend adapter not implemented")
    }

    async fn probe(&self) -> ProbeReport {
        ProbeReport { failure: Some(OutcomeClass::Transient), detail: "resend adapter not implemented".into() }
    }
}
