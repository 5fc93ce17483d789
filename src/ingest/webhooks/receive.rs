//! `POST /webhooks/{provider name}`: a provider's event webhook, verified with that provider's
//! own scheme and settings (`[providers.NAME]`), then applied: each event is matched to the
//! Baton message and recipient by the provider message id stored at send time, added to the
//! recipient's history, queued for the app's webhooks, and — a hard bounce, a complaint or an
//! unsubscribe — puts the address on the suppression list.
//!
//! Promise: a request that is not signed, or wrongly, gets 401/403 and changes nothing. A
//! provider without webhook settings has no webhook endpoint (404): nothing is ever taken
//! unverified. An event for a message Baton no longer holds (swept after
//! `spool.keep_completed`) still suppresses (only with `scope = "global"`: whose list it belongs
//! on is not known) and still reaches the app's webhooks that take every client's events.

use super::{Inbound, Refused, mailgun, mandrill, postmark, resend, sendgrid, ses, sns};
use crate::config::{ProviderConfig, SuppressionScope};
use crate::event::{EventType, ProviderEvent};
use crate::outbox::{self, Fields};
use crate::shared::Shared;
use crate::spool::Keyed;
use crate::spool::record::{MessageRecord, now_ms};
use crate::suppression::{self, Entry};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

/// `outcome` label values of `baton_provider_webhooks_total`: requests taken, refused (401/403),
/// unreadable although signed (400), for a provider without webhook settings (404), or that
/// could not be checked now (503: SNS certificate unreachable; the provider retries).
pub const OUTCOMES: [&str; 5] = ["accepted", "refused", "invalid", "not_configured", "unavailable"];

/// How long an applied event's id is remembered.
const EVENT_MEMORY: std::time::Duration = std::time::Duration::from_secs(3600);

/// What the provider webhooks keep between requests: replay caches, SNS certificates, and a
/// lock that applies one request's events at a time (each is a read-modify-write of a record).
pub struct Inbox {
    mailgun_tokens: mailgun::TokenCache,
    /// Provider event ids applied in the last [`EVENT_MEMORY`]: a provider that posts an event
    /// again (its retry after a lost answer) does not add it twice.
    events_seen: mailgun::TokenCache,
    sns_certs: Option<sns::CertCache>,
    apply: tokio::sync::Mutex<()>,
}

impl Default for Inbox {
    fn default() -> Inbox {
        let sns_certs =
            sns::CertCache::new().inspect_err(|e| tracing::error!(error = %e, "SES webhooks unavailable")).ok();
        Inbox {
            mailgun_tokens: mailgun::TokenCache::default(),
            events_seen: mailgun::TokenCache::default(),
            sns_certs,
            apply: tokio::sync::Mutex::new(()),
        }
    }
}

impl Inbox {
    /// The SNS certificate cache (tests put their own signing certificate in it).
    pub fn sns_certs(&self) -> Option<&sns::CertCache> {
        self.sns_certs.as_ref()
    }
}

pub fn routes() -> Router<Arc<Shared>> {
    // Mandrill checks that a webhook URL exists with a HEAD request before it saves it.
    Router::new().route("/webhooks/{provider}", post(receive).head(|| async { StatusCode::OK }))
}

fn answer(shared: &Shared, provider: &str, outcome: &str, status: StatusCode, message: &str) -> Response {
    shared.metrics.provider_webhooks.with_label_values(&[provider, outcome]).inc();
    let code = match status.as_u16() {
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        503 => "unavailable",
        _ => "invalid_request",
    };
    (status, Json(json!({"error": {"code": code, "message": message}}))).into_response()
}

fn refused(shared: &Shared, provider: &str, r: Refused) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::FORBIDDEN);
    let outcome = if r.status == 503 { "unavailable" } else { "refused" };
    tracing::warn!(provider, status = r.status, reason = %r.reason, "provider webhook refused");
    answer(shared, provider, outcome, status, &r.reason)
}

/// What a verified request holds: events, or an SNS subscription to confirm.
enum Verified {
    Events(Vec<ProviderEvent>),
    Confirm(String),
}

async fn verify(
    shared: &Shared,
    config: &ProviderConfig,
    inbound: &Inbound<'_>,
) -> Result<Result<Verified, String>, Option<Refused>> {
    let events = |parsed: Result<Vec<ProviderEvent>, String>| Ok(parsed.map(Verified::Events));
    match config {
        ProviderConfig::Mandrill(c) => match (&c.webhook_key, &c.webhook_url) {
            (Some(key), Some(url)) => {
                mandrill::verify(key, url, inbound).map_err(Some)?;
                events(mandrill::parse(inbound.body))
            }
            _ => Err(None),
        },
        ProviderConfig::Sendgrid(c) => {
            let key = c.webhook_public_key.as_deref().ok_or(None)?;
            sendgrid::verify(key, inbound).map_err(Some)?;
            events(sendgrid::parse(inbound.body))
        }
        ProviderConfig::Mailgun(c) => {
            let key = c.webhook_signing_key.as_deref().ok_or(None)?;
            mailgun::verify(key, &shared.inbox.mailgun_tokens, inbound).map_err(Some)?;
            events(mailgun::parse(inbound.body))
        }
        ProviderConfig::Postmark(c) => match (&c.webhook_username, &c.webhook_password) {
            (Some(user), Some(password)) => {
                postmark::verify(user, password, inbound).map_err(Some)?;
                events(postmark::parse(inbound.body))
            }
            _ => Err(None),
        },
        ProviderConfig::Resend(c) => {
            let secret = c.webhook_secret.as_deref().ok_or(None)?;
            resend::verify(secret, inbound).map_err(Some)?;
            events(resend::parse_delivery(inbound.body, inbound.header("svix-id")))
        }
        ProviderConfig::Ses(c) if !c.sns_topic_arns.is_empty() => {
            let certs = shared.inbox.sns_certs.as_ref().ok_or_else(|| {
                Some(Refused { status: 503, reason: "SNS certificates cannot be fetched on this node".into() })
            })?;
            let envelope = ses::verify(&c.sns_topic_arns, certs, inbound).await.map_err(Some)?;
            match (envelope.message_type, envelope.subscribe_url) {
                (sns::MessageType::SubscriptionConfirmation, Some(url)) => Ok(Ok(Verified::Confirm(url))),
                _ => events(ses::parse(inbound.body)),
            }
        }
        _ => Err(None),
    }
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let runtime = shared.runtime.load_full();
    let Some(config) = runtime.config.providers.get(&provider) else {
        return (StatusCode::NOT_FOUND, Json(json!({"error": {"code": "not_found", "message": "no such provider"}})))
            .into_response();
    };
    let inbound = Inbound { headers: &headers, body: &body, now_ms: now_ms() };
    let verified = match verify(&shared, config, &inbound).await {
        Ok(Ok(v)) => v,
        Ok(Err(why)) => {
            tracing::warn!(provider, error = %why, "signed provider webhook that cannot be read");
            return answer(&shared, &provider, "invalid", StatusCode::BAD_REQUEST, &why);
        }
        Err(Some(r)) => return refused(&shared, &provider, r),
        Err(None) => {
            let message = "webhooks are not configured for this provider (see its webhook settings)";
            return answer(&shared, &provider, "not_configured", StatusCode::NOT_FOUND, message);
        }
    };
    let events = match verified {
        Verified::Confirm(url) => return confirm(&shared, &provider, &url).await,
        Verified::Events(events) => events,
    };
    shared.metrics.provider_webhooks.with_label_values(&[&provider, "accepted"]).inc();
    let n = events.len();
    {
        let _one_at_a_time = shared.inbox.apply.lock().await;
        for event in events {
            apply(&shared, &provider, event).await;
        }
    }
    (StatusCode::OK, Json(json!({"received": n}))).into_response()
}

/// Confirms an SNS subscription to one of `sns_topic_arns` (the URL was checked to be an SNS
/// one of AWS).
async fn confirm(shared: &Shared, provider: &str, url: &str) -> Response {
    let client = reqwest::Client::builder()
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .build();
    let result = match client {
        Ok(c) => c.get(url).send().await.map_err(|e| e.without_url().to_string()),
        Err(e) => Err(e.to_string()),
    };
    match result {
        Ok(reply) if reply.status().is_success() => {
            tracing::info!(provider, "SNS subscription confirmed");
            shared.metrics.provider_webhooks.with_label_values(&[provider, "accepted"]).inc();
            (StatusCode::OK, Json(json!({"confirmed": true}))).into_response()
        }
        Ok(reply) => {
            let why = format!("confirming the SNS subscription: HTTP {}", reply.status().as_u16());
            answer(shared, provider, "unavailable", StatusCode::SERVICE_UNAVAILABLE, &why)
        }
        Err(e) => {
            let why = format!("confirming the SNS subscription: {e}");
            answer(shared, provider, "unavailable", StatusCode::SERVICE_UNAVAILABLE, &why)
        }
    }
}

/// The message a provider message id names, read from the spool.
async fn matched(shared: &Shared, provider: &str, event: &ProviderEvent) -> Option<MessageRecord> {
    let pmid = event.provider_message_id.clone()?;
    let (spool, provider) = (shared.spool.clone(), provider.to_string());
    let read = tokio::task::spawn_blocking(move || {
        let id = spool.find_by_provider_id(&provider, &pmid)?;
        id.map(|id| spool.get(&id)).transpose().map(Option::flatten)
    });
    match read.await {
        Ok(Ok(record)) => record,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot read the spool to match a provider event");
            None
        }
        Err(_) => None,
    }
}

/// Applies one event: history, app webhooks, suppression.
async fn apply(shared: &Shared, provider: &str, event: ProviderEvent) {
    let now = now_ms();
    if let Some(id) = &event.event_id {
        let until = now + EVENT_MEMORY.as_millis() as u64;
        if !shared.inbox.events_seen.first_use(&format!("{provider}\n{id}"), until, now) {
            return tracing::debug!(provider, event_id = %id, "provider event already applied");
        }
    }
    shared.metrics.provider_events.with_label_values(&[provider, event.event_type.as_str()]).inc();
    // The provider judges the account on every bounce and complaint it sees, including those
    // of messages Baton no longer holds.
    match event.event_type {
        EventType::Bounced => shared.health.rates().record_bounce(provider),
        EventType::Complained => shared.health.rates().record_complaint(provider),
        _ => {}
    }
    let config = shared.runtime.load().config.clone();
    let at_ms = if event.at_ms > 0 { event.at_ms } else { now };
    let Some(mut record) = matched(shared, provider, &event).await else {
        return unmatched(shared, provider, &event, &config, at_ms).await;
    };
    let pmid = event.provider_message_id.as_deref();
    let mut touched = Vec::new();
    for r in record.recipients.iter_mut() {
        let same_send = r.provider.as_deref() == Some(provider) && r.provider_message_id.as_deref() == pmid;
        let same_address = event.recipient.as_deref().is_none_or(|e| r.email.eq_ignore_ascii_case(e));
        if same_send && same_address {
            r.note(event.event_type, Some(provider), event.reject_reason, event.detail.clone());
            if let Some(last) = r.events.last_mut() {
                last.at_ms = at_ms;
            }
            touched.push(r.email.clone());
        }
    }
    if touched.is_empty() {
        tracing::info!(provider, message_id = %record.id, event = event.event_type.as_str(), "provider event for a recipient this message does not have");
        return;
    }
    tracing::info!(
        provider, message_id = %record.id, event = event.event_type.as_str(),
        provider_event = %event.provider_event, recipients = touched.len(), "provider event"
    );
    if let Some(reason) = event.suppression() {
        let scope = suppression::scope_for(config.suppression.scope, &record.client).to_string();
        for email in &touched {
            let entry = Entry {
                email: email.to_ascii_lowercase(),
                scope: scope.clone(),
                reason,
                provider: Some(provider.to_string()),
                message_id: Some(record.id.clone()),
                at_ms,
                detail: event.detail.clone(),
            };
            if let Err(e) = shared.suppressions.add(entry, "webhook").await {
                tracing::error!(provider, error = %e, "cannot save a suppression entry");
            }
        }
    }
    let events = outbox::fresh_entries(&config, &mut record, now);
    match shared.spool.annotate(&record, events.clone()).await {
        Ok(()) => shared.outbox.committed(events),
        Err(e) => tracing::error!(provider, message_id = %record.id, error = %e, "cannot store a provider event"),
    }
}

/// An event for a message Baton does not hold (any more).
async fn unmatched(shared: &Shared, provider: &str, event: &ProviderEvent, config: &crate::config::Config, at_ms: u64) {
    tracing::info!(
        provider, event = event.event_type.as_str(), provider_event = %event.provider_event,
        "provider event for a message Baton does not hold"
    );
    if let (Some(reason), Some(email), SuppressionScope::Global) =
        (event.suppression(), &event.recipient, config.suppression.scope)
    {
        let entry = Entry {
            email: email.to_ascii_lowercase(),
            scope: suppression::EVERYONE.to_string(),
            reason,
            provider: Some(provider.to_string()),
            message_id: None,
            at_ms,
            detail: event.detail.clone(),
        };
        if let Err(e) = shared.suppressions.add(entry, "webhook").await {
            tracing::error!(provider, error = %e, "cannot save a suppression entry");
        }
    }
    let no_labels = BTreeMap::new();
    let fields = Fields {
        event_type: event.event_type,
        message_id: None,
        recipient: event.recipient.as_deref(),
        client: "",
        provider: Some(provider),
        provider_message_id: event.provider_message_id.as_deref(),
        at_ms,
        reject_reason: event.reject_reason,
        detail: &event.detail,
        tags: &[],
        metadata: &no_labels,
    };
    let entries = outbox::entries(config, &fields, now_ms());
    if entries.is_empty() {
        return;
    }
    let stored = entries.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect();
    match shared.spool.put_many(Keyed::Outbox, stored).await {
        Ok(()) => shared.outbox.committed(entries),
        Err(e) => tracing::error!(provider, error = %e, "cannot queue a provider event for the app"),
    }
}
