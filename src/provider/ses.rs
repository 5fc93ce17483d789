//! The `ses` provider (placeholder until its adapter is written).

use super::{Outbound, Provider};
use crate::config::SesConfig;
use crate::health::ProbeReport;
use crate::outcome::{OutcomeClass, SendReport};

pub struct SesProvider {
    name: String,
}

impl SesProvider {
    pub fn new(name: &str, _config: &SesConfig) -> Result<Self, String> {
        Ok(SesProvider { name: name.to_string() })
    }
}

#[async_trait::async_trait]
impl Provider for SesProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, msg: &Outbound<'_>) -> SendReport {
        SendReport::failed(OutcomeClass::Transient, msg.recipients.len(), "ses adapter not implemented")
    }

    async fn probe(&self) -> ProbeReport {
        ProbeReport { failure: Some(OutcomeClass::Transient), detail: "ses adapter not implemented".into() }
    }
}
