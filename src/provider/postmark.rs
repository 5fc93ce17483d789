//! The `postmark` provider (placeholder until its adapter is written).

use super::{Outbound, Provider};
use crate::config::PostmarkConfig;
use crate::health::ProbeReport;
use crate::outcome::{OutcomeClass, SendReport};

pub struct PostmarkProvider {
    name: String,
}

impl PostmarkProvider {
    pub fn new(name: &str, _config: &PostmarkConfig) -> Result<Self, String> {
        Ok(PostmarkProvider { name: name.to_string() })
    }
}

#[async_trait::async_trait]
impl Provider for PostmarkProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, msg: &Outbound<'_>) -> SendReport {
        SendReport::failed(OutcomeClass::Transient, msg.recipients.len(), "postmark adapter not implemented")
    }

    async fn probe(&self) -> ProbeReport {
        ProbeReport { failure: Some(OutcomeClass::Transient), detail: "postmark adapter not implemented".into() }
    }
}
