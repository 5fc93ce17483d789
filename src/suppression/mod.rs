//! The suppression list: addresses a provider reported as bad (hard bounce, invalid address,
//! complaint, unsubscribe), and addresses the app added. It is Baton's own, across every
//! provider: providers keep their lists per account, and failing over to the next account
//! with the addresses that got the first one suspended would get that one suspended too.
//!
//! Promise: once an address is on the list (for the message's client, or for everyone), no
//! provider is handed it again; the message's other recipients go on. The list is in memory
//! for lookups on every delivery pass and in the spool (`suppression` table) so that it
//! survives restarts. An entry is visible to lookups before its write is committed, so a
//! message delivered in the meantime does not slip through.
//!
//! Scope (`[suppression] scope`): `client` (default) keeps one list per client, so one app's
//! bounce does not stop another app's mail; `global` makes every entry apply to all clients.
//! An entry is stored under its client's name, or `*` when added for everyone (global scope,
//! or through the admin API).

pub mod api;

use crate::config::SuppressionScope;
use crate::event::SuppressionReason;
use crate::metrics::Metrics;
use crate::spool::{Keyed, Spool, SpoolError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The scope of an entry that applies to every client.
pub const EVERYONE: &str = "*";

/// Where an entry came from (`baton_suppressions_added_total{source}`).
pub const SOURCES: [&str; 3] = ["send_answer", "webhook", "api"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Lower-cased address.
    pub email: String,
    /// The client the entry belongs to, or [`EVERYONE`].
    pub scope: String,
    pub reason: SuppressionReason,
    /// The provider that reported it (none when added through the API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The message whose delivery reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    pub at_ms: u64,
    /// What the provider said (secret-free, truncated).
    #[serde(default)]
    pub detail: String,
}

/// Which entries a listing shows.
#[derive(Debug, Clone, Default)]
pub struct Filter<'a> {
    /// Entries that apply to this client (`None`: every entry).
    pub client: Option<&'a str>,
    pub reason: Option<SuppressionReason>,
    pub since_ms: Option<u64>,
}

pub struct Suppressions {
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
    /// Address → its entries (one per scope).
    entries: RwLock<HashMap<String, Vec<Entry>>>,
}

/// The key of an entry in the spool's table.
fn key(scope: &str, email: &str) -> String {
    format!("{scope}\n{email}")
}

/// The scope a new entry for `client` is stored under.
pub fn scope_for(scope: SuppressionScope, client: &str) -> &str {
    match scope {
        SuppressionScope::Client => client,
        SuppressionScope::Global => EVERYONE,
    }
}

impl Suppressions {
    /// The list as the spool holds it (unreadable entries are logged and left out).
    pub fn load(spool: Arc<Spool>, metrics: Arc<Metrics>, saved: Vec<(String, Vec<u8>)>) -> Suppressions {
        let mut entries: HashMap<String, Vec<Entry>> = HashMap::new();
        let mut count = 0;
        for (k, v) in saved {
            match serde_json::from_slice::<Entry>(&v) {
                Ok(e) => {
                    entries.entry(e.email.clone()).or_default().push(e);
                    count += 1;
                }
                Err(e) => {
                    tracing::error!(key = %k.replace('\n', " "), error = %e, "unreadable suppression entry; ignored")
                }
            }
        }
        metrics.suppressions.set(count);
        Suppressions { spool, metrics, entries: RwLock::new(entries) }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Vec<Entry>>> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Vec<Entry>>> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The entry that stops `client`'s mail to `email`, if any.
    pub fn lookup(&self, scope: SuppressionScope, client: &str, email: &str) -> Option<Entry> {
        let email = email.to_ascii_lowercase();
        let entries = self.read();
        let list = entries.get(&email)?;
        let applies = |e: &&Entry| match scope {
            SuppressionScope::Global => true,
            SuppressionScope::Client => e.scope == client || e.scope == EVERYONE,
        };
        list.iter().find(applies).cloned()
    }

    /// Whether any entry exists at all (lets a pass skip the lookups).
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Adds `entry` unless its scope already lists the address (the first reason stays).
    /// Returns whether it was new, once it is on disk.
    pub async fn add(&self, mut entry: Entry, source: &str) -> Result<bool, SpoolError> {
        entry.email = entry.email.to_ascii_lowercase();
        {
            let mut entries = self.write();
            let list = entries.entry(entry.email.clone()).or_default();
            if list.iter().any(|e| e.scope == entry.scope) {
                return Ok(false);
            }
            list.push(entry.clone());
        }
        let value = serde_json::to_vec(&entry).map_err(|e| SpoolError::Storage(e.to_string()))?;
        if let Err(e) = self.spool.put(Keyed::Suppression, &key(&entry.scope, &entry.email), Some(value)).await {
            // Not durable: take it back so the list says what a restart would.
            self.forget(&entry.scope, &entry.email);
            return Err(e);
        }
        self.metrics.suppressions.inc();
        self.metrics.suppressions_added.with_label_values(&[entry.reason.as_str(), source]).inc();
        tracing::info!(
            scope = %entry.scope, reason = entry.reason.as_str(), provider = entry.provider.as_deref().unwrap_or(""),
            source, message_id = entry.message_id.as_deref().unwrap_or(""), "address suppressed"
        );
        Ok(true)
    }

    fn forget(&self, scope: &str, email: &str) -> Option<Entry> {
        let mut entries = self.write();
        let list = entries.get_mut(email)?;
        let at = list.iter().position(|e| e.scope == scope)?;
        let removed = list.remove(at);
        if list.is_empty() {
            entries.remove(email);
        }
        Some(removed)
    }

    /// Removes the entry of `scope` for `email`; `None` when there was none.
    pub async fn remove(&self, scope: &str, email: &str) -> Result<Option<Entry>, SpoolError> {
        let email = email.to_ascii_lowercase();
        let Some(removed) = self.forget(scope, &email) else {
            return Ok(None);
        };
        if let Err(e) = self.spool.put(Keyed::Suppression, &key(scope, &email), None).await {
            self.write().entry(email).or_default().push(removed);
            return Err(e);
        }
        self.metrics.suppressions.dec();
        tracing::info!(scope, "address removed from the suppression list");
        Ok(Some(removed))
    }

    /// The scopes that list `email`.
    pub fn scopes_of(&self, email: &str) -> Vec<String> {
        let entries = self.read();
        let list = entries.get(&email.to_ascii_lowercase());
        list.map(|l| l.iter().map(|e| e.scope.clone()).collect()).unwrap_or_default()
    }

    /// Entries matching `filter`, oldest first.
    pub fn list(&self, scope: SuppressionScope, filter: &Filter<'_>) -> Vec<Entry> {
        let entries = self.read();
        let mut out: Vec<Entry> = entries
            .values()
            .flatten()
            .filter(|e| match (filter.client, scope) {
                (None, _) | (Some(_), SuppressionScope::Global) => true,
                (Some(c), SuppressionScope::Client) => e.scope == c || e.scope == EVERYONE,
            })
            .filter(|e| filter.reason.is_none_or(|r| e.reason == r))
            .filter(|e| filter.since_ms.is_none_or(|s| e.at_ms >= s))
            .cloned()
            .collect();
        out.sort_by(|a, b| (a.at_ms, &a.email).cmp(&(b.at_ms, &b.email)));
        out
    }
}
