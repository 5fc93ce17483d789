//! The `mandrill` provider (placeholder until its adapter is written).

use super::{Outbound, Provider};
use crate::config::MandrillConfig;
use crate::health::ProbeReport;
use crate::outcome::{OutcomeClass, SendReport};

pub struct MandrillProvider {
    name: String,
}

impl MandrillProvider {
    pub fn new(name: &str, _config: &MandrillConfig) -> Result<Self, String> {
        Ok(MandrillProvider { name: name.to_string() })
    }
}

#[async_trait::async_trait]
impl Provider for MandrillProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, msg: &Outbound<'_>) -> SendReport {
        SendReport::failed(OutcomeClass::Transient, msg.recipients.len(), "mandrill adapter not implemented")
    }

    async fn probe(&self) -> ProbeReport {
        ProbeReport { failure: Some(OutcomeClass::Transient), detail: "mandrill adapter not implemented".into() }
    }
}
