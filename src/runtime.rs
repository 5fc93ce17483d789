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
    /// `header_senders`: more addresses allowed in `From:` / `Sender:` only.
    header_senders: Vec<WildMatch>,
}

impl Client {
    /// Whether this client may send from `address` (case-insensitive pattern match).
    pub fn may_send_from(&self, address: &str) -> bool {
        self.allowed_senders.iter().any(|p| p.matches(address))
    }

    /// Whether `address` may stand in this client's `From:` / `Sender:` headers.
    pub fn may_name_in_header(&self, address: &str) -> bool {
        self.may_send_from(address) || self.header_senders.iter().any(|p| p.matches(address))
    }

    /// Whether some address at `domain` is one this client may send from: the part after the
    /// last `@` of an `allowed_senders` pattern matches it (the Mailgun API's `/v3/{domain}/`).
    pub fn may_send_from_domain(&self, domain: &str) -> bool {
        !domain.is_empty()
            && !domain.contains('@')
            && self.allowed_senders.iter().any(|p| {
                let pattern = p.pattern();
                pattern.rsplit_once('@').is_some_and(|(_, d)| WildMatch::new_case_insensitive(d).matches(domain))
            })
    }
}

pub struct Route {
    pub name: String,
    pub providers: Vec<String>,
    /// Share of messages that try the second provider first.
    pub warm_standby: f64,
    senders: Option<Vec<WildMatch>>,
    streams: Option<Vec<String>>,
    clients: Option<Vec<String>>,
}

impl Route {
    fn matches(&self, client: &str, sender: &str, stream: Option<&str>) -> bool {
        self.senders.as_ref().is_none_or(|s| s.iter().any(|p| p.matches(sender)))
            && self.streams.as_ref().is_none_or(|s| stream.is_some_and(|st| s.iter().any(|x| x == st)))
            && self.clients.as_ref().is_none_or(|c| c.iter().any(|x| x == client))
    }
}

pub struct Runtime {
    pub config: Config,
    /// The config this process started with: what its listeners, spool and threads were opened
    /// with. Keys that need a restart are compared with it, not with the last reload.
    pub started: Arc<Config>,
    clients_by_key: HashMap<String, Arc<Client>>,
    clients: HashMap<String, Arc<Client>>,
    /// SMTP username → (password, client).
    smtp_logins: HashMap<String, (String, Arc<Client>)>,
    /// AWS access key id → (secret, client), for SigV4-signed requests.
    aws_keys: HashMap<String, (String, Arc<Client>)>,
    /// Networks whose SMTP connections need no AUTH, in config order.
    networks: Vec<(ipnet::IpNet, Arc<Client>)>,
    /// STARTTLS / smtps certificate, when `[server.tls]` is set.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub providers: HashMap<String, Arc<dyn Provider>>,
    pub routes: Vec<Route>,
}

fn patterns(list: &[String]) -> Vec<WildMatch> {
    list.iter().map(|p| WildMatch::new_case_insensitive(p)).collect()
}

impl Runtime {
    /// Builds the runtime for `loaded`. Providers whose connection settings are the same as in
    /// `previous` are reused as they are (with their connection pools).
    pub fn build(loaded: &Loaded, previous: Option<&Runtime>) -> Result<Runtime, String> {
        let config = loaded.config.clone();
        let mut clients_by_key = HashMap::new();
        let mut clients = HashMap::new();
        let mut smtp_logins = HashMap::new();
        let mut aws_keys = HashMap::new();
        let mut networks = Vec::new();
        for c in &config.clients {
            let client = Arc::new(Client {
                name: c.name.clone(),
                route: c.route.clone(),
                allowed_senders: patterns(&c.allowed_senders),
                header_senders: patterns(&c.header_senders),
            });
            for key in &c.api_keys {
                clients_by_key.insert(key.clone(), client.clone());
            }
            for user in &c.smtp_users {
                smtp_logins.insert(user.username.clone(), (user.password.clone(), client.clone()));
            }
            for cred in &c.aws_credentials {
                aws_keys.insert(cred.access_key_id.clone(), (cred.secret_access_key.clone(), client.clone()));
            }
            for net in &c.allowed_networks {
                let parsed = net
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| net.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("{}: clients.{}: invalid network {net:?}", loaded.source, c.name))?;
                networks.push((parsed, client.clone()));
            }
            clients.insert(c.name.clone(), client);
        }
        let mut providers = HashMap::new();
        for (name, p) in &config.providers {
            let reusable = previous.and_then(|prev| {
                let old = prev.config.providers.get(name)?;
                let same = old.same_connection(p) && prev.config.server.hostname == config.server.hostname;
                same.then(|| prev.providers.get(name).cloned()).flatten()
            });
            let built = match reusable {
                Some(existing) => existing,
                None => provider::build(name, p, &config.server.hostname)
                    .map_err(|e| format!("{}: providers.{name}: {e}", loaded.source))?,
            };
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
                    warm_standby: r.warm_standby,
                    senders: m.senders.as_deref().map(patterns),
                    streams: m.streams,
                    clients: m.clients,
                }
            })
            .collect();
        let tls = match &config.server.tls {
            Some(t) => {
                Some(crate::tls::acceptor(&t.cert, &t.key).map_err(|e| format!("{}: server.tls: {e}", loaded.source))?)
            }
            None => None,
        };
        let started = previous.map_or_else(|| Arc::new(config.clone()), |p| p.started.clone());
        Ok(Runtime {
            config,
            started,
            clients_by_key,
            clients,
            smtp_logins,
            aws_keys,
            networks,
            tls,
            providers,
            routes,
        })
    }

    /// The client an API key belongs to.
    pub fn client_by_key(&self, key: &str) -> Option<&Arc<Client>> {
        self.clients_by_key.get(key)
    }

    /// The secret and client of an AWS access key id (the signature is checked by the caller).
    pub fn client_by_aws_key(&self, access_key_id: &str) -> Option<(&str, &Arc<Client>)> {
        self.aws_keys.get(access_key_id).map(|(secret, client)| (secret.as_str(), client))
    }

    /// The client an SMTP login belongs to, if the password matches (compared in constant time).
    pub fn client_by_smtp_login(&self, username: &str, password: &str) -> Option<&Arc<Client>> {
        use subtle::ConstantTimeEq;
        let (expected, client) = self.smtp_logins.get(username)?;
        bool::from(expected.as_bytes().ct_eq(password.as_bytes())).then_some(client)
    }

    /// The client whose `allowed_networks` contain `ip` (first match in config order).
    pub fn client_by_network(&self, ip: std::net::IpAddr) -> Option<&Arc<Client>> {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.networks.iter().find(|(net, _)| net.contains(&ip)).map(|(_, c)| c)
    }

    pub fn client(&self, name: &str) -> Option<&Arc<Client>> {
        self.clients.get(name)
    }

    /// The route for a message: the client's own route if it names one, else the first match.
    pub fn route_for(&self, client: &str, sender: &str, stream: Option<&str>) -> Option<&Route> {
        if let Some(name) = self.client(client).and_then(|c| c.route.as_deref()) {
            return self.routes.iter().find(|r| r.name == name);
        }
        self.routes.iter().find(|r| r.matches(client, sender, stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_domain_is_allowed_when_some_sender_pattern_covers_an_address_at_it() {
        let client = Client {
            name: "app".into(),
            route: None,
            allowed_senders: patterns(&["*@example.com".into(), "alerts@Example.net".into(), "*@*.example.org".into()]),
            header_senders: patterns(&["*@example.info".into()]),
        };
        for allowed in ["example.com", "EXAMPLE.com", "example.net", "mail.example.org"] {
            assert!(client.may_send_from_domain(allowed), "{allowed}");
        }
        for refused in ["example.org", "sub.example.com", "example.info", "", "a@example.com"] {
            assert!(!client.may_send_from_domain(refused), "{refused}");
        }
    }
}
