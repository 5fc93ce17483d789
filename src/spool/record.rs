//! What the spool stores per message: envelope, per-recipient state and attempt history.
//! Serialised as JSON so that later versions can add fields (`#[serde(default)]`) and still
//! read spools written by earlier ones.

use crate::event::{EventType, RejectReason};
use crate::outcome::OutcomeClass;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ingress {
    Http,
    Smtp,
}

impl Ingress {
    pub fn as_str(self) -> &'static str {
        match self {
            Ingress::Http => "http",
            Ingress::Smtp => "smtp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    Queued,
    Delivering,
    Delivered,
    PartiallyDelivered,
    Failed,
}

impl MessageStatus {
    pub fn is_final(self) -> bool {
        matches!(self, MessageStatus::Delivered | MessageStatus::PartiallyDelivered | MessageStatus::Failed)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Queued => "queued",
            MessageStatus::Delivering => "delivering",
            MessageStatus::Delivered => "delivered",
            MessageStatus::PartiallyDelivered => "partially_delivered",
            MessageStatus::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientStatus {
    Pending,
    Delivered,
    Rejected,
    Failed,
    /// On the suppression list: never handed to a provider.
    Suppressed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recipient {
    pub email: String,
    pub status: RecipientStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// What happened to it, oldest first: Baton's own events and the provider's webhooks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<RecordedEvent>,
}

impl Recipient {
    /// Adds an event to its history (up to [`MAX_EVENTS`]), marked fresh: the next write of
    /// the record queues it for the app's webhooks.
    pub fn note(
        &mut self,
        event_type: EventType,
        provider: Option<&str>,
        reject_reason: Option<RejectReason>,
        detail: String,
    ) {
        if self.events.len() < MAX_EVENTS {
            let provider = provider.map(str::to_string);
            self.events.push(RecordedEvent {
                event_type,
                at_ms: now_ms(),
                provider,
                reject_reason,
                detail,
                fresh: true,
            });
        }
    }

    pub fn new(email: String) -> Recipient {
        Recipient {
            email,
            status: RecipientStatus::Pending,
            provider: None,
            provider_message_id: None,
            detail: None,
            events: Vec::new(),
        }
    }
}

/// One event of a recipient, as `GET /v1/messages/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedEvent {
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject_reason: Option<RejectReason>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Added since the record was read: not yet queued for the app's webhooks
    /// (`outbox::fresh_entries`). Never stored.
    #[serde(skip)]
    pub fresh: bool,
}

/// Most events kept per recipient (opens and clicks can be many); later ones are not stored
/// on the record but still go to the app's webhooks.
pub const MAX_EVENTS: usize = 32;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    pub at_ms: u64,
    pub provider: String,
    pub outcome: OutcomeClass,
    pub detail: String,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub possible_duplicate: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageRecord {
    pub id: String,
    pub client: String,
    pub ingress: Ingress,
    /// Envelope sender (MAIL FROM).
    pub mail_from: String,
    pub recipients: Vec<Recipient>,
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    #[serde(default)]
    pub stream: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Key/value labels from the app, handed to providers that carry them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Set for a provider-stored-template request taken by a compatible API: the body is that
    /// API's own JSON request, and only this provider (of the same type) may send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passthrough: Option<String>,
    pub created_ms: u64,
    /// When the next delivery pass is due (ms since the Unix epoch).
    pub next_attempt_ms: u64,
    /// Delivery passes that ended with recipients still pending.
    #[serde(default)]
    pub failed_passes: u32,
    pub status: MessageStatus,
    /// Size of the message body in bytes.
    pub size: u64,
    #[serde(default)]
    pub completed_ms: Option<u64>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// A finished message whose body is kept (counted in the spool's bytes) so that it can be
    /// re-delivered if the provider that took it turns out silent (`canary.redeliver_unconfirmed`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub body_kept: bool,
    /// Re-queued because this provider accepted it and then went silent: its next attempts are
    /// possible duplicates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redelivered_from: Option<String>,
}

impl MessageRecord {
    pub fn pending(&self) -> impl Iterator<Item = (usize, &Recipient)> {
        self.recipients.iter().enumerate().filter(|(_, r)| r.status == RecipientStatus::Pending)
    }

    /// The `spool::provider_id_key`s of its delivered recipients (to match provider webhooks).
    pub fn provider_ids(&self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for r in &self.recipients {
            if let (Some(provider), Some(id)) = (&r.provider, &r.provider_message_id) {
                let key = super::provider_id_key(provider, id);
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
        keys
    }

    pub fn has_pending(&self) -> bool {
        self.pending().next().is_some()
    }

    /// The final status once no recipient is pending.
    pub fn final_status(&self) -> MessageStatus {
        let delivered = self.recipients.iter().filter(|r| r.status == RecipientStatus::Delivered).count();
        if delivered == self.recipients.len() {
            MessageStatus::Delivered
        } else if delivered > 0 {
            MessageStatus::PartiallyDelivered
        } else {
            MessageStatus::Failed
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
