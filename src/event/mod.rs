//! The event vocabulary: what happened to a message after Baton accepted it, in one set of
//! words whatever provider reported it. The types and reject reasons are django-anymail's
//! (which app developers already know), plus Baton's own (`accepted`, `failover`,
//! `suppressed`, `redelivered`). Provider webhooks are parsed into [`ProviderEvent`]s
//! (`ingest/webhooks/`); the app is told in [`EventType`]s.
//!
//! This module sits at the bottom of the dependency graph, beside `outcome.rs`: it imports
//! nothing of Baton's.

pub mod signature;

use serde::{Deserialize, Serialize};

/// What happened. The first thirteen are django-anymail's normalized tracking events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// The provider queued the message for sending.
    Queued,
    /// The provider handed it on to the recipient's server.
    Sent,
    /// The provider refused to send it to this recipient (before trying).
    Rejected,
    /// The provider could not send it (its own error).
    Failed,
    /// The recipient's server refused it for good (a hard bounce).
    Bounced,
    /// A temporary refusal (a soft bounce): the provider will try again.
    Deferred,
    /// The recipient's server took it.
    Delivered,
    /// An automatic reply (out of office).
    Autoresponded,
    Opened,
    Clicked,
    /// The recipient marked it as spam.
    Complained,
    Unsubscribed,
    /// A provider event Baton has no word for; `detail` says what it was.
    Unknown,
    // Baton's own.
    /// Baton took the message (202 / 250, after fsync).
    Accepted,
    /// A provider failed for this recipient and the next one is tried.
    Failover,
    /// The recipient is on the suppression list: no provider was given it.
    Suppressed,
    /// Sent again because the provider that took it went silent.
    Redelivered,
}

impl EventType {
    pub const ALL: [EventType; 17] = [
        EventType::Queued,
        EventType::Sent,
        EventType::Rejected,
        EventType::Failed,
        EventType::Bounced,
        EventType::Deferred,
        EventType::Delivered,
        EventType::Autoresponded,
        EventType::Opened,
        EventType::Clicked,
        EventType::Complained,
        EventType::Unsubscribed,
        EventType::Unknown,
        EventType::Accepted,
        EventType::Failover,
        EventType::Suppressed,
        EventType::Redelivered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Queued => "queued",
            EventType::Sent => "sent",
            EventType::Rejected => "rejected",
            EventType::Failed => "failed",
            EventType::Bounced => "bounced",
            EventType::Deferred => "deferred",
            EventType::Delivered => "delivered",
            EventType::Autoresponded => "autoresponded",
            EventType::Opened => "opened",
            EventType::Clicked => "clicked",
            EventType::Complained => "complained",
            EventType::Unsubscribed => "unsubscribed",
            EventType::Unknown => "unknown",
            EventType::Accepted => "accepted",
            EventType::Failover => "failover",
            EventType::Suppressed => "suppressed",
            EventType::Redelivered => "redelivered",
        }
    }

    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// Why a recipient was rejected or bounced (django-anymail's `reject_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The address does not exist or cannot exist (unknown user, no such domain).
    Invalid,
    /// The address bounced before (a provider's own bounce list).
    Bounced,
    TimedOut,
    /// Refused by policy (content, reputation, a block list), not because of the address.
    Blocked,
    /// The recipient complained (marked mail as spam).
    Spam,
    Unsubscribed,
    Other,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Invalid => "invalid",
            RejectReason::Bounced => "bounced",
            RejectReason::TimedOut => "timed_out",
            RejectReason::Blocked => "blocked",
            RejectReason::Spam => "spam",
            RejectReason::Unsubscribed => "unsubscribed",
            RejectReason::Other => "other",
        }
    }
}

/// Why an address is on the suppression list. The one place that decides which provider
/// verdicts suppress an address: a bad address, a complaint or an unsubscribe does; a policy
/// block, a timeout or a soft bounce says nothing about the address and does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionReason {
    /// Hard bounce, or the provider already lists it as bounced.
    Bounced,
    /// The address does not exist.
    Invalid,
    Complained,
    Unsubscribed,
    /// Added through the API.
    Manual,
}

impl SuppressionReason {
    pub const ALL: [SuppressionReason; 5] = [
        SuppressionReason::Bounced,
        SuppressionReason::Invalid,
        SuppressionReason::Complained,
        SuppressionReason::Unsubscribed,
        SuppressionReason::Manual,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionReason::Bounced => "bounced",
            SuppressionReason::Invalid => "invalid",
            SuppressionReason::Complained => "complained",
            SuppressionReason::Unsubscribed => "unsubscribed",
            SuppressionReason::Manual => "manual",
        }
    }

    pub fn parse(name: &str) -> Option<SuppressionReason> {
        SuppressionReason::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// A recipient refused in a send answer (or a provider's `rejected` event) for `reason`.
    pub fn for_rejection(reason: RejectReason) -> Option<SuppressionReason> {
        match reason {
            RejectReason::Invalid => Some(SuppressionReason::Invalid),
            RejectReason::Bounced => Some(SuppressionReason::Bounced),
            RejectReason::Spam => Some(SuppressionReason::Complained),
            RejectReason::Unsubscribed => Some(SuppressionReason::Unsubscribed),
            RejectReason::TimedOut | RejectReason::Blocked | RejectReason::Other => None,
        }
    }

    /// A provider webhook event: hard bounces, complaints and unsubscribes suppress.
    pub fn for_event(event: EventType, reason: Option<RejectReason>) -> Option<SuppressionReason> {
        match event {
            EventType::Bounced => match reason {
                Some(RejectReason::Invalid) => Some(SuppressionReason::Invalid),
                _ => Some(SuppressionReason::Bounced),
            },
            EventType::Complained => Some(SuppressionReason::Complained),
            EventType::Unsubscribed => Some(SuppressionReason::Unsubscribed),
            EventType::Rejected => reason.and_then(SuppressionReason::for_rejection),
            _ => None,
        }
    }
}

/// One event from a provider's webhook, in Baton's words. Parsers fill what the provider's
/// payload carries; the webhook handler matches it to a Baton message by
/// `provider_message_id` (as the provider's send answer gave it) and recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEvent {
    pub event_type: EventType,
    /// The provider's own name for the event (`hard_bounce`, `Bounce/Permanent`…), kept for
    /// logs and for `unknown` events.
    pub provider_event: String,
    /// Lower-cased address.
    pub recipient: Option<String>,
    /// The id the provider's send answer returned for this message (what Baton stores per
    /// recipient), in the same form (e.g. Mailgun's in angle brackets, as its send answer gives it).
    pub provider_message_id: Option<String>,
    /// When the provider says it happened (ms since the Unix epoch); 0 if it does not say.
    pub at_ms: u64,
    pub reject_reason: Option<RejectReason>,
    /// Secret-free description (the bounce's diagnostic text…), at most 300 characters.
    pub detail: String,
    /// The provider's id for this event, when it has one (to ignore a redelivered webhook).
    pub event_id: Option<String>,
}

impl ProviderEvent {
    pub fn suppression(&self) -> Option<SuppressionReason> {
        SuppressionReason::for_event(self.event_type, self.reject_reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        for r in SuppressionReason::ALL {
            assert_eq!(SuppressionReason::parse(r.as_str()), Some(r));
        }
    }

    #[test]
    fn only_address_verdicts_suppress() {
        use EventType as E;
        use RejectReason as R;
        let cases = [
            (E::Bounced, None, Some(SuppressionReason::Bounced)),
            (E::Bounced, Some(R::Invalid), Some(SuppressionReason::Invalid)),
            (E::Complained, None, Some(SuppressionReason::Complained)),
            (E::Unsubscribed, None, Some(SuppressionReason::Unsubscribed)),
            (E::Rejected, Some(R::Bounced), Some(SuppressionReason::Bounced)),
            (E::Rejected, Some(R::Spam), Some(SuppressionReason::Complained)),
            (E::Rejected, Some(R::Blocked), None),
            (E::Rejected, None, None),
            (E::Deferred, Some(R::Other), None),
            (E::Delivered, None, None),
            (E::Opened, None, None),
        ];
        for (event, reason, want) in cases {
            assert_eq!(SuppressionReason::for_event(event, reason), want, "{event:?} {reason:?}");
        }
    }
}
