//! The live configuration: a validated [`Config`] plus everything built from it (clients by API
//! key, providers, routes). Held in an `ArcSwap` so a reload can replace it atomically; each
//! request and each delivery pass works on one consistent snapshot.

use crate::config::{Config, Loaded};
use crate::provider::{self, Provider};
use std::collections::HashMap;
use std::sync::Arc;
use wildmatch::WildMatch;

pub struct Client {
    pub name: String,
    pub route: Option<String>,
    allowed_senders: Vec<WildMatch>,
}

impl Client {
    /// Whether this client may send from `address` (case-insensitive pattern match).
    pub fn may_send_from(&self, address: &str) -> bool {
        self.allowed_senders.iter().any(|p| p.matches(address))
    }
}

pub struct Route {
    pub name: String,
    pub providers: Vec<String>,
    senders: Option<Vec<WildMatch>>,
    streams: Option<Vec<String>>,
    clients: Option<Vec<String>>,
}

impl Route {
    fn matches(&self, client: &str, sender: &str, stream: Option<&str>) -> bool {
        self.senders
            .as_ref()
            .is_none_or(|s| s.iter().any(|p| p.matches(sender)))
            && self
                .streams
                .as_ref()
                .is_none_or(|s| stream.is_some_and(|st| s.iter().any(|x| x == st)))
            && self
                .clients
                .as_ref()
                .is_none_or(|c| c.iter().any(|x| x == client))
    }
}

pub struct Runtime {
    pub config: Config,
    clients_by_key: HashMap<String, Arc<Client>>,
    clients: HashMap<String, Arc<Client>>,
    pub providers: HashMap<String, Arc<dyn Provider>>,
    pub routes: Vec<Route>,
}

fn patterns(list: &[String]) -> Vec<WildMatch> {
    list.iter()
        .map(|p| WildMatch::new_case_insensitive(p))
        .collect()
}

impl Runtime {
    pub fn build(loaded: &Loaded) -> Result<Runtime, String> {
        let config = loaded.config.clone();
        let mut clients_by_key = HashMap::new();
        let mut clients = HashMap::new();
        for c in &config.clients {
            let client = Arc::new(Client {
                name: c.name.clone(),
                route: c.route.clone(),
                allowed_senders: patterns(&c.allowed_senders),
            });
            for key in &c.api_keys {
                clients_by_key.insert(key.clone(), client.clone());
            }
            clients.insert(c.name.clone(), client);
        }
        let mut providers = HashMap::new();
        for (name, p) in &config.providers {
            let built = provider::build(name, p, &config.server.hostname)
                .map_err(|e| format!("{}: providers.{name}: {e}", loaded.source))?;
            providers.insert(name.clone(), built);
        }
        let routes = config
            .routes
            .iter()
            .map(|r| {
                let m = r.matcher.clone().unwrap_or_default();
                Route {
                    name: r.name.clone(),
                    providers: r.providers.clone(),
                    senders: m.senders.as_deref().map(patterns),
                    streams: m.streams,
                    clients: m.clients,
                }
            })
            .collect();
        Ok(Runtime {
            config,
            clients_by_key,
            clients,
            providers,
            routes,
        })
    }

    /// The client an API key belongs to.
    pub fn client_by_key(&self, key: &str) -> Option<&Arc<Client>> {
        self.clients_by_key.get(key)
    }

    pub fn client(&self, name: &str) -> Option<&Arc<Client>> {
        self.clients.get(name)
    }

    /// The route for a message: the client's own route if it names one, else the first match.
    pub fn route_for(&self, client: &str, sender: &str, stream: Option<&str>) -> Option<&Route> {
        if let Some(name) = self.client(client).and_then(|c| c.route.as_deref()) {
            return self.routes.iter().find(|r| r.name == name);
        }
        self.routes
            .iter()
            .find(|r| r.matches(client, sender, stream))
    }
}
