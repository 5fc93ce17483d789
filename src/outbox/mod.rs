//! Events to the app (`[[webhooks]]`): what happened to each recipient after "accepted", in
//! the vocabulary of `event`, posted to the app's endpoints and signed per the Standard
//! Webhooks spec.
//!
//! Promise: an event is queued if and only if the change it describes is on disk. The events
//! of a delivery pass or of a provider webhook are put in the spool's `outbox` table by the
//! same transaction that stores the record (`Spool::update_with`), one entry per endpoint that
//! wants the event; `sender.rs` posts them and deletes each entry only once its endpoint
//! answered 2xx. Entries are retried with backoff for a day (restarts included) and then
//! dropped, counted and logged.
//!
//! `accepted` is not posted: the app has it as the answer to its request.

pub mod sender;

use crate::config::{Config, WebhookConfig};
use crate::event::{EventType, RejectReason};
use crate::metrics::Metrics;
use crate::spool::record::{MessageRecord, Recipient, RecordedEvent};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

/// How long an event is retried before it is dropped.
pub const RETRY_FOR: Duration = Duration::from_secs(24 * 3600);

/// One event for one endpoint, as the outbox table holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queued {
    /// The endpoint's name ([`webhook_name`]).
    pub webhook: String,
    /// The event as the app receives it.
    pub event: Value,
    /// When it was first queued (ms): retried until `RETRY_FOR` after this.
    pub first_ms: u64,
    #[serde(default)]
    pub attempts: u32,
    /// Not before (ms); 0 = now.
    #[serde(default)]
    pub next_ms: u64,
}

/// The name an endpoint has in metrics and logs: `name`, else the URL's host.
pub fn webhook_name(w: &WebhookConfig) -> String {
    if let Some(name) = w.name.as_deref().filter(|n| !n.is_empty()) {
        return name.to_string();
    }
    let rest = w.url.split_once("://").map_or(w.url.as_str(), |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host.to_string()
}

/// Whether endpoint `w` wants events of this type and client.
fn wants(w: &WebhookConfig, event_type: EventType, client: &str) -> bool {
    let type_ok = w.events.as_ref().is_none_or(|list| list.iter().any(|e| e == event_type.as_str()));
    let client_ok = w.clients.as_ref().is_none_or(|list| list.iter().any(|c| c == client));
    type_ok && client_ok && event_type != EventType::Accepted
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// The fields of an event, before it is put in the app's shape.
pub struct Fields<'a> {
    pub event_type: EventType,
    pub message_id: Option<&'a str>,
    pub recipient: Option<&'a str>,
    pub client: &'a str,
    pub provider: Option<&'a str>,
    pub provider_message_id: Option<&'a str>,
    pub at_ms: u64,
    pub reject_reason: Option<RejectReason>,
    pub detail: &'a str,
    pub tags: &'a [String],
    pub metadata: &'a BTreeMap<String, String>,
}

/// The event as the app receives it (one element of the posted array).
pub fn event_json(id: &str, f: &Fields<'_>) -> Value {
    json!({
        "id": id,
        "type": f.event_type,
        "message_id": f.message_id,
        "recipient": f.recipient,
        "client": f.client,
        "provider": f.provider,
        "provider_message_id": f.provider_message_id,
        "at": rfc3339(f.at_ms),
        "reject_reason": f.reject_reason,
        "detail": f.detail,
        "tags": f.tags,
        "metadata": f.metadata,
    })
}

/// Outbox entries (key, bytes) for one event: one per endpoint that wants it.
pub fn entries(config: &Config, f: &Fields<'_>, now_ms: u64) -> Vec<(String, Vec<u8>)> {
    let targets: Vec<&WebhookConfig> = config.webhooks.iter().filter(|w| wants(w, f.event_type, f.client)).collect();
    if targets.is_empty() {
        return Vec::new();
    }
    let id = format!("evt_{}", ulid::Ulid::new());
    let event = event_json(&id, f);
    targets
        .into_iter()
        .map(|w| {
            let webhook = webhook_name(w);
            let key = format!("{webhook}\n{id}");
            let queued = Queued { webhook, event: event.clone(), first_ms: now_ms, attempts: 0, next_ms: 0 };
            (key, serde_json::to_vec(&queued).expect("an event serializes"))
        })
        .collect()
}

/// The outbox entries for the events a recipient gained since the record was loaded (those
/// still marked `fresh`), and clears the marks.
pub fn fresh_entries(config: &Config, record: &mut MessageRecord, now_ms: u64) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let (id, client, tags, metadata) = (&record.id, &record.client, &record.tags, &record.metadata);
    for r in record.recipients.iter_mut() {
        let Recipient { email, provider_message_id, events, .. } = r;
        for e in events.iter_mut().filter(|e| e.fresh) {
            e.fresh = false;
            if config.webhooks.is_empty() {
                continue;
            }
            let RecordedEvent { event_type, at_ms, provider, reject_reason, detail, .. } = e;
            let fields = Fields {
                event_type: *event_type,
                message_id: Some(id),
                recipient: Some(email),
                client,
                provider: provider.as_deref(),
                provider_message_id: provider_message_id.as_deref(),
                at_ms: *at_ms,
                reject_reason: *reject_reason,
                detail,
                tags,
                metadata,
            };
            out.extend(entries(config, &fields, now_ms));
        }
    }
    out
}

/// The events waiting to be posted, in memory (the table is their durable copy).
pub struct Outbox {
    waiting: Mutex<BTreeMap<String, Queued>>,
    /// Wakes the sender when something is queued.
    pub(crate) wake: tokio::sync::Notify,
    metrics: Arc<Metrics>,
}

impl Outbox {
    /// The outbox as the spool holds it. What was waiting is due at once: a restart is a good
    /// moment to try again.
    pub fn load(metrics: Arc<Metrics>, saved: Vec<(String, Vec<u8>)>) -> Outbox {
        let mut waiting = BTreeMap::new();
        for (key, bytes) in saved {
            match serde_json::from_slice::<Queued>(&bytes) {
                Ok(mut q) => {
                    q.next_ms = 0;
                    waiting.insert(key, q);
                }
                Err(e) => {
                    tracing::error!(key = %key.replace('\n', " "), error = %e, "unreadable outbox entry; dropped")
                }
            }
        }
        let outbox = Outbox { waiting: Mutex::new(waiting), wake: tokio::sync::Notify::new(), metrics };
        outbox.export_depth();
        outbox
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Queued>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Entries committed to the spool: the sender may post them now.
    pub fn committed(&self, entries: Vec<(String, Vec<u8>)>) {
        if entries.is_empty() {
            return;
        }
        {
            let mut waiting = self.waiting();
            for (key, bytes) in entries {
                if let Ok(q) = serde_json::from_slice::<Queued>(&bytes) {
                    waiting.insert(key, q);
                }
            }
        }
        self.export_depth();
        self.wake.notify_one();
    }

    /// `baton_webhook_queue{url_name}`: events waiting per endpoint.
    fn export_depth(&self) {
        let mut depth: BTreeMap<String, i64> = BTreeMap::new();
        for q in self.waiting().values() {
            *depth.entry(q.webhook.clone()).or_default() += 1;
        }
        self.metrics.set_webhook_queue(&depth);
    }

    /// Up to `max` entries of `webhook` due at `now` and not in `busy`, oldest first.
    pub(crate) fn due(&self, webhook: &str, now: u64, max: usize) -> Vec<(String, Queued)> {
        let waiting = self.waiting();
        let prefix = format!("{webhook}\n");
        waiting
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(_, q)| q.next_ms <= now)
            .take(max)
            .map(|(k, q)| (k.clone(), q.clone()))
            .collect()
    }

    /// The soonest time something is due (ms), if anything waits.
    pub fn next_due(&self) -> Option<u64> {
        self.waiting().values().map(|q| q.next_ms).min()
    }

    /// Names of the endpoints that have entries waiting.
    pub(crate) fn webhooks(&self) -> Vec<String> {
        let mut names: Vec<String> = self.waiting().values().map(|q| q.webhook.clone()).collect();
        names.dedup();
        names.sort();
        names.dedup();
        names
    }

    /// Forgets entries (posted, expired, or for an endpoint no longer configured).
    pub(crate) fn forget(&self, keys: &[String]) {
        {
            let mut waiting = self.waiting();
            for k in keys {
                waiting.remove(k);
            }
        }
        self.export_depth();
    }

    /// Stores the new retry state of entries that failed.
    pub(crate) fn reschedule(&self, entries: &[(String, Queued)]) {
        let mut waiting = self.waiting();
        for (k, q) in entries {
            waiting.insert(k.clone(), q.clone());
        }
    }
}
