//! Semantic checks that serde cannot express: cross references, duplicates, addresses, TLS.

use super::locate::KeyPath;
use super::{Config, Problems, ProviderConfig, TlsMode};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

pub(crate) fn validate(c: &Config, p: &mut Problems<'_>) {
    let root = KeyPath::root();
    let server = root.key("server");

    if c.server.hostname.trim().is_empty() || c.server.hostname.chars().any(|ch| ch.is_whitespace()) {
        p.error(&server.key("hostname"), "must be a host name without spaces, e.g. \"baton.example.com\"");
    }
    let http = check_listen(&c.server.http_listen, &server.key("http_listen"), p);
    let admin = check_listen(&c.server.admin_listen, &server.key("admin_listen"), p);
    if let (Some(h), Some(a)) = (http, admin)
        && h == a
        && h.port() != 0
    {
        p.error(&server.key("admin_listen"), format!("same address as server.http_listen ({h})"));
    }
    check_admin_access(c, admin, &server, p);
    let smtp = c.server.smtp_listen.as_deref().and_then(|a| check_listen(a, &server.key("smtp_listen"), p));
    let smtps = c.server.smtps_listen.as_deref().and_then(|a| check_listen(a, &server.key("smtps_listen"), p));
    let mut taken = vec![("http_listen", http), ("admin_listen", admin)];
    let https = c.server.https_listen.as_deref().and_then(|a| check_listen(a, &server.key("https_listen"), p));
    for (key, addr) in [("smtp_listen", smtp), ("smtps_listen", smtps), ("https_listen", https)] {
        if let Some(a) = addr
            && a.port() != 0
            && let Some((other, _)) = taken.iter().find(|(_, t)| *t == Some(a))
        {
            p.error(&server.key(key), format!("same address as server.{other} ({a})"));
        }
        taken.push((key, addr));
    }
    if c.server.https_listen.is_some() && c.server.tls.is_none() {
        p.error(&server.key("https_listen"), "HTTPS needs a certificate: add [server.tls] with cert and key");
    }
    if c.server.smtps_listen.is_some() && c.server.tls.is_none() {
        p.error(&server.key("smtps_listen"), "smtps needs a certificate: add [server.tls] with cert and key");
    }
    if let Some(tls) = &c.server.tls
        && let Err(e) = crate::tls::load_server_config(&tls.cert, &tls.key)
    {
        p.error(&server.key("tls"), e);
    }
    let smtp_limits = KeyPath::root().key("smtp");
    for (key, value) in [
        ("max_connections", c.smtp.max_connections),
        ("max_connections_per_ip", c.smtp.max_connections_per_ip),
        ("max_errors", c.smtp.max_errors as usize),
        ("max_auth_failures", c.smtp.max_auth_failures as usize),
        ("auth_failures_per_ip", c.smtp.auth_failures_per_ip as usize),
        ("auth_failures_per_user", c.smtp.auth_failures_per_user as usize),
    ] {
        if value == 0 {
            p.error(&smtp_limits.key(key), "must be at least 1");
        }
    }
    if c.smtp.max_line_length < 512 {
        p.error(&smtp_limits.key("max_line_length"), "must be at least 512 (RFC 5321)");
    }
    if c.smtp.idle_timeout.0.is_zero() {
        p.error(&smtp_limits.key("idle_timeout"), "must be greater than 0");
    }
    for (key, value) in [
        ("auth_failure_window", c.smtp.auth_failure_window),
        ("auth_block_for", c.smtp.auth_block_for),
        ("command_timeout", c.smtp.command_timeout),
        ("data_timeout", c.smtp.data_timeout),
    ] {
        if value.0.is_zero() {
            p.error(&smtp_limits.key(key), "must be greater than 0");
        }
    }
    if c.server.max_message_size.0 == 0 {
        p.error(&server.key("max_message_size"), "must be greater than 0");
    }
    for (key, value) in [
        ("http_max_connections", c.server.http_max_connections),
        ("http_max_connections_per_ip", c.server.http_max_connections_per_ip),
    ] {
        if value == 0 {
            p.error(&server.key(key), "must be at least 1");
        }
    }
    for (key, value) in
        [("http_header_timeout", c.server.http_header_timeout), ("http_request_timeout", c.server.http_request_timeout)]
    {
        if value.0.is_zero() {
            p.error(&server.key(key), "must be greater than 0");
        }
    }
    for (i, api) in c.server.compatible_apis.iter().enumerate() {
        if !super::COMPATIBLE_APIS.contains(&api.as_str()) {
            let known = super::COMPATIBLE_APIS.join(", ");
            p.error(&server.key("compatible_apis").index(i), format!("unknown API {api:?}; known: {known}"));
        }
    }
    if c.server.max_recipients == 0 {
        p.error(&server.key("max_recipients"), "must be at least 1");
    }
    if c.retry.schedule.is_empty() {
        p.error(&root.key("retry").key("schedule"), "needs at least one delay, e.g. [\"10s\", \"1m\"]");
    }
    for (i, d) in c.retry.schedule.iter().enumerate() {
        if d.0.is_zero() {
            p.error(&root.key("retry").key("schedule").index(i), "a retry delay must be greater than 0");
        }
    }
    if c.delivery.concurrency == 0 {
        p.error(&root.key("delivery").key("concurrency"), "must be at least 1");
    }

    validate_health(&c.health, &root.key("health"), p);
    for (name, provider) in &c.providers {
        validate_health(provider.health(), &root.key("providers").key(name).key("health"), p);
    }
    validate_providers(c, p);
    validate_clients(c, p);
    validate_routes(c, p);
    if let Some(canary) = &c.canary {
        validate_canary(c, canary, &root.key("canary"), p);
    }
    validate_webhooks(c, p);
    if let Some(cluster) = &c.cluster {
        validate_cluster(cluster, &root.key("cluster"), p);
    }
}

/// `[cluster]`: a Redis URL the client accepts, a node id, and a timeout short enough that
/// the once-a-second sync keeps its pace.
fn validate_cluster(c: &super::ClusterConfig, path: &KeyPath, p: &mut Problems<'_>) {
    // Never echo the URL: it may carry a password.
    let scheme_ok = c.redis_url.starts_with("redis://") || c.redis_url.starts_with("rediss://");
    if !scheme_ok || redis::Client::open(c.redis_url.as_str()).is_err() {
        p.error(
            &path.key("redis_url"),
            "must be a redis:// or rediss:// URL, e.g. \"redis://10.0.0.5:6379/0\" (a password as \"redis://:${REDIS_PASSWORD}@host:6379\")",
        );
    }
    if c.node_id.is_empty() || c.node_id.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
        p.error(&path.key("node_id"), "must be a non-empty name without spaces, e.g. \"baton-1\"");
    }
    if c.key_prefix.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
        p.error(&path.key("key_prefix"), "must not contain spaces, e.g. \"baton:\"");
    }
    if c.quorum == 0 {
        p.error(&path.key("quorum"), "must be at least 1");
    }
    if c.timeout.0.is_zero() || c.timeout.0 > std::time::Duration::from_secs(1) {
        p.error(&path.key("timeout"), "must be greater than 0 and at most 1s (the nodes sync every second)");
    }
}

/// A provider's webhook settings: complete pairs, keys that decode. (Without them the
/// provider has no webhook endpoint; a half-configured one would refuse every request.)
fn validate_provider_webhook(provider: &ProviderConfig, path: &KeyPath, p: &mut Problems<'_>) {
    let pair = |p: &mut Problems<'_>, (a, va): (&str, &Option<String>), (b, vb): (&str, &Option<String>)| match (va, vb)
    {
        (Some(_), None) => p.error(&path.key(a), format!("{a} is set but {b} is not")),
        (None, Some(_)) => p.error(&path.key(b), format!("{b} is set but {a} is not")),
        _ => {}
    };
    match provider {
        ProviderConfig::Mandrill(m) => {
            pair(p, ("webhook_key", &m.webhook_key), ("webhook_url", &m.webhook_url));
            if let Some(url) = &m.webhook_url
                && !(url.starts_with("https://") || url.starts_with("http://"))
            {
                p.error(
                    &path.key("webhook_url"),
                    "must be the URL registered in Mandrill, e.g. \"https://baton.example.com/webhooks/NAME\"",
                );
            }
        }
        ProviderConfig::Postmark(m) => {
            pair(p, ("webhook_username", &m.webhook_username), ("webhook_password", &m.webhook_password))
        }
        ProviderConfig::Sendgrid(s) => {
            if let Some(key) = &s.webhook_public_key
                && let Err(e) = crate::ingest::webhooks::sendgrid::public_key(key)
            {
                p.error(&path.key("webhook_public_key"), format!("is not SendGrid's verification key: {e}"));
            }
        }
        ProviderConfig::Resend(r) => {
            if let Some(secret) = &r.webhook_secret
                && crate::event::signature::decode_secret(secret).is_err()
            {
                p.error(&path.key("webhook_secret"), "must be the webhook's signing secret, whsec_ followed by base64");
            }
        }
        ProviderConfig::Ses(s) => {
            for (i, arn) in s.sns_topic_arns.iter().enumerate() {
                if !(arn.starts_with("arn:aws:sns:")
                    || arn.starts_with("arn:aws-cn:sns:")
                    || arn.starts_with("arn:aws-us-gov:sns:"))
                {
                    p.error(
                        &path.key("sns_topic_arns").index(i),
                        "must be an SNS topic ARN, e.g. \"arn:aws:sns:us-east-1:123456789012:ses-events\"",
                    );
                }
            }
        }
        _ => {}
    }
    // Set but empty (e.g. an unset `${VAR:-}`) would make every request fail its check.
    let secrets: Vec<(&str, &Option<String>)> = match provider {
        ProviderConfig::Mandrill(m) => vec![("webhook_key", &m.webhook_key)],
        ProviderConfig::Mailgun(m) => vec![("webhook_signing_key", &m.webhook_signing_key)],
        ProviderConfig::Postmark(m) => {
            vec![("webhook_username", &m.webhook_username), ("webhook_password", &m.webhook_password)]
        }
        _ => Vec::new(),
    };
    for (key, value) in secrets {
        if let Some(v) = value {
            check_secret(&path.key(key), v, p);
        }
    }
}

/// `[[webhooks]]`: an http(s) URL, a Standard Webhooks secret, known event types and clients,
/// and one name per endpoint (metrics and the outbox tell endpoints apart by name).
fn validate_webhooks(c: &Config, p: &mut Problems<'_>) {
    let mut names = HashSet::new();
    for (i, w) in c.webhooks.iter().enumerate() {
        let path = KeyPath::root().key("webhooks").index(i);
        let host = w.url.strip_prefix("https://").or_else(|| w.url.strip_prefix("http://"));
        if host.is_none_or(|h| h.is_empty() || h.starts_with('/')) {
            p.error(
                &path.key("url"),
                "must be an http:// or https:// URL, e.g. \"https://app.example.com/mail-events\"",
            );
        }
        match crate::event::signature::decode_secret(&w.secret) {
            Ok(key) if key.len() >= 16 => {}
            Ok(_) => p.error(&path.key("secret"), "is too short: use at least 16 random bytes (whsec_ + base64)"),
            Err(_) => p.error(
                &path.key("secret"),
                "must be whsec_ followed by base64 (Standard Webhooks), e.g. from `openssl rand -base64 32`",
            ),
        }
        for (j, e) in w.events.iter().flatten().enumerate() {
            if crate::event::EventType::parse(e).is_none() {
                let known: Vec<&str> = crate::event::EventType::ALL.iter().map(|t| t.as_str()).collect();
                p.error(
                    &path.key("events").index(j),
                    format!("unknown event type {e:?} (one of {})", known.join(", ")),
                );
            }
        }
        for (j, client) in w.clients.iter().flatten().enumerate() {
            if !c.clients.iter().any(|k| &k.name == client) {
                p.error(&path.key("clients").index(j), format!("no client named {client:?}"));
            }
        }
        let name = crate::outbox::webhook_name(w);
        if !names.insert(name.clone()) {
            p.error(&path, format!("another webhook has the name {name:?}: give each a different `name`"));
        }
    }
}

/// `[canary]`: addresses, positive times, and an IMAP mailbox to read from.
fn validate_canary(c: &Config, canary: &super::CanaryConfig, path: &KeyPath, p: &mut Problems<'_>) {
    for (key, value) in [("from", &canary.from), ("to", &canary.to)] {
        if value.parse::<lettre::Address>().is_err() {
            p.error(&path.key(key), format!("{value:?} is not an email address"));
        }
    }
    for (key, value) in [("interval", canary.interval.0), ("timeout", canary.timeout.0)] {
        if value.is_zero() {
            p.error(&path.key(key), "must be longer than 0s");
        }
    }
    if canary.lost_threshold == 0 {
        p.error(&path.key("lost_threshold"), "must be at least 1");
    }
    let imap = path.key("imap");
    if canary.imap.host.trim().is_empty() {
        p.error(&imap.key("host"), "must not be empty");
    }
    if canary.imap.port == 0 {
        p.error(&imap.key("port"), "must be a port number");
    }
    check_secret(&imap.key("username"), &canary.imap.username, p);
    check_secret(&imap.key("password"), &canary.imap.password, p);
    if canary.imap.tls == TlsMode::None && canary.imap.ca_file.is_some() {
        p.error(&imap.key("ca_file"), "ca_file is set but tls = \"none\"");
    }
    if !c.providers.values().any(|pr| pr.canary_enabled()) {
        p.error(path, "no provider sends canaries: every one has canary = false");
    }
}

/// The admin API can drain every provider and reload the config: an empty token (e.g. an
/// unset `${VAR:-}`) must not silently turn its authentication off, and a listener other
/// machines can reach needs a token. Refusing such a config (rather than warning) is the
/// documented choice: a warning in a log nobody reads leaves the door open.
fn check_admin_access(c: &Config, admin: Option<SocketAddr>, server: &KeyPath, p: &mut Problems<'_>) {
    let token = c.server.admin_token.as_deref();
    if token.is_some_and(|t| t.trim().is_empty()) {
        p.error(
            &server.key("admin_token"),
            "empty: it would turn admin authentication off; set a token (e.g. \"${BATON_ADMIN_TOKEN}\") or remove the key",
        );
    }
    if let Some(addr) = admin
        && !addr.ip().is_loopback()
        && token.is_none()
    {
        p.error(
            &server.key("admin_listen"),
            format!(
                "{addr} can be reached from other machines but no admin_token is set: anyone could drain providers \
                 and reload the config; set server.admin_token or listen on 127.0.0.1"
            ),
        );
    }
}

fn validate_health(h: &super::HealthOverride, path: &KeyPath, p: &mut Problems<'_>) {
    for (key, value) in [
        ("probe_interval", h.probe_interval),
        ("window", h.window),
        ("open_for", h.open_for),
        ("max_open_for", h.max_open_for),
        ("account_cooldown", h.account_cooldown),
        ("trial_timeout", h.trial_timeout),
        ("sender_cooldown", h.sender_cooldown),
        ("rate_window", h.rate_window),
    ] {
        if value.is_some_and(|d| d.0.is_zero()) {
            p.error(&path.key(key), "must be greater than 0");
        }
    }
    if h.failure_threshold == Some(0) {
        p.error(&path.key("failure_threshold"), "must be at least 1");
    }
    if h.min_requests == Some(0) {
        p.error(&path.key("min_requests"), "must be at least 1");
    }
    if h.rate_min_sent == Some(0) {
        p.error(&path.key("rate_min_sent"), "must be at least 1");
    }
    for (key, value, example) in [
        ("failure_rate", h.failure_rate, "0.5"),
        ("bounce_rate_warn", h.bounce_rate_warn, "0.04 for 4 %"),
        ("complaint_rate_warn", h.complaint_rate_warn, "0.0008 for 0.08 %"),
    ] {
        if let Some(rate) = value
            && !(rate > 0.0 && rate <= 1.0)
        {
            p.error(&path.key(key), format!("must be a ratio above 0 and at most 1, e.g. {example}"));
        }
    }
    if let (Some(a), Some(b)) = (h.open_for, h.max_open_for)
        && b < a
    {
        p.error(&path.key("max_open_for"), "must not be shorter than open_for");
    }
}

/// Common checks for HTTP API providers: a usable base URL (https, or http only to this
/// machine: API keys must not cross a network in clear text), timeout and connections.
fn check_http(
    path: &KeyPath,
    url_key: &str,
    url: Option<&String>,
    timeout: super::Dur,
    max_connections: usize,
    p: &mut Problems<'_>,
) {
    if timeout.0.is_zero() {
        p.error(&path.key("timeout"), "must be greater than 0");
    }
    if max_connections == 0 {
        p.error(&path.key("max_connections"), "must be at least 1");
    }
    let Some(url) = url else { return };
    let field = path.key(url_key);
    match reqwest::Url::parse(url) {
        Ok(u) if u.scheme() == "https" => {}
        Ok(u) if u.scheme() == "http" => {
            let host = u.host_str().unwrap_or_default();
            let loopback = host == "localhost"
                || host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                p.error(&field, format!("{url:?}: http:// would send the API key in clear text; use https://"));
            }
        }
        _ => p.error(&field, format!("{url:?} is not an http(s) URL")),
    }
}

fn check_secret(path: &KeyPath, value: &str, p: &mut Problems<'_>) {
    if value.trim().is_empty() {
        p.error(path, "must not be empty");
    }
}

fn check_listen(value: &str, path: &KeyPath, p: &mut Problems<'_>) -> Option<SocketAddr> {
    match value.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            p.error(path, format!("{value:?} is not a listen address; write IP:PORT, e.g. \"127.0.0.1:8080\""));
            None
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn validate_providers(c: &Config, p: &mut Problems<'_>) {
    let providers = KeyPath::root().key("providers");
    if c.providers.is_empty() {
        p.error(&providers, "no providers configured: add at least one [providers.NAME] table");
    }
    for (name, provider) in &c.providers {
        let path = providers.key(name);
        if !valid_name(name) {
            p.error(&path, "provider names may use letters, digits, '-' and '_' only");
        }
        validate_provider_webhook(provider, &path, p);
        match provider {
            ProviderConfig::Smtp(s) => {
                if s.host.trim().is_empty() {
                    p.error(&path.key("host"), "must not be empty");
                }
                if s.port == 0 {
                    p.error(&path.key("port"), "must be a port number from 1 to 65535");
                }
                if s.timeout.0.is_zero() {
                    p.error(&path.key("timeout"), "must be greater than 0");
                }
                if s.max_connections == 0 {
                    p.error(&path.key("max_connections"), "must be at least 1");
                }
                match (&s.username, &s.password) {
                    (Some(_), None) => p.error(&path.key("username"), "username is set but password is not"),
                    (None, Some(_)) => p.error(&path.key("password"), "password is set but username is not"),
                    _ => {}
                }
                let loopback = matches!(s.host.as_str(), "localhost" | "127.0.0.1" | "::1")
                    || s.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
                if s.tls == TlsMode::None && s.username.is_some() && !loopback {
                    p.error(
                        &path.key("tls"),
                        "tls = \"none\" would send the password in clear text to a remote host; use \"starttls\" or \"tls\"",
                    );
                }
                if s.tls == TlsMode::Starttls && s.port == 465 {
                    p.error(
                        &path.key("tls"),
                        "port 465 speaks implicit TLS: use tls = \"tls\" (or port 587 for STARTTLS)",
                    );
                }
                if s.tls == TlsMode::Tls && (s.port == 587 || s.port == 25) {
                    p.error(
                        &path.key("tls"),
                        format!(
                            "port {} speaks STARTTLS, not implicit TLS: use tls = \"starttls\" (or port 465)",
                            s.port
                        ),
                    );
                }
                if s.tls == TlsMode::None && s.ca_file.is_some() {
                    p.error(&path.key("ca_file"), "ca_file is set but tls = \"none\"");
                }
                if let Some(ca) = &s.ca_file
                    && !ca.is_file()
                {
                    p.error(&path.key("ca_file"), format!("{} does not exist or is not a file", ca.display()));
                }
            }
            ProviderConfig::File(f) => {
                if f.dir.as_os_str().is_empty() {
                    p.error(&path.key("dir"), "must not be empty");
                }
            }
            ProviderConfig::Mandrill(c) => {
                check_http(&path, "base_url", Some(&c.base_url), c.timeout, c.max_connections, p);
                check_secret(&path.key("api_key"), &c.api_key, p);
            }
            ProviderConfig::Sendgrid(c) => {
                check_http(&path, "base_url", Some(&c.base_url), c.timeout, c.max_connections, p);
                check_secret(&path.key("api_key"), &c.api_key, p);
            }
            ProviderConfig::Resend(c) => {
                check_http(&path, "base_url", Some(&c.base_url), c.timeout, c.max_connections, p);
                check_secret(&path.key("api_key"), &c.api_key, p);
            }
            ProviderConfig::Mailgun(c) => {
                check_http(&path, "base_url", Some(&c.base_url), c.timeout, c.max_connections, p);
                check_secret(&path.key("api_key"), &c.api_key, p);
                if c.domain.trim().is_empty() || c.domain.contains('/') {
                    p.error(&path.key("domain"), "must be the sending domain, e.g. \"mg.example.com\"");
                }
            }
            ProviderConfig::Postmark(c) => {
                check_http(&path, "base_url", Some(&c.base_url), c.timeout, c.max_connections, p);
                check_secret(&path.key("server_token"), &c.server_token, p);
                if c.message_stream.trim().is_empty() {
                    p.error(&path.key("message_stream"), "must not be empty (Postmark's default is \"outbound\")");
                }
            }
            ProviderConfig::Ses(c) => {
                check_http(&path, "endpoint", c.endpoint.as_ref(), c.timeout, c.max_connections, p);
                if c.region.trim().is_empty() {
                    p.error(&path.key("region"), "must be an AWS region, e.g. \"us-east-1\"");
                }
                match (&c.access_key_id, &c.secret_access_key) {
                    (Some(_), None) => {
                        p.error(&path.key("access_key_id"), "access_key_id is set but secret_access_key is not")
                    }
                    (None, Some(_)) => {
                        p.error(&path.key("secret_access_key"), "secret_access_key is set but access_key_id is not")
                    }
                    _ => {}
                }
                if c.session_token.is_some() && c.access_key_id.is_none() {
                    p.error(&path.key("session_token"), "a session_token needs access_key_id and secret_access_key");
                }
            }
        }
    }
}

fn validate_clients(c: &Config, p: &mut Problems<'_>) {
    let clients = KeyPath::root().key("clients");
    let route_names: HashSet<&str> = c.routes.iter().map(|r| r.name.as_str()).collect();
    let mut names = HashSet::new();
    let mut keys: HashMap<&str, &str> = HashMap::new();
    let mut smtp_users: HashMap<&str, &str> = HashMap::new();
    let mut aws_keys: HashMap<&str, &str> = HashMap::new();
    for (i, client) in c.clients.iter().enumerate() {
        let path = clients.index(i);
        if !valid_name(&client.name) {
            p.error(&path.key("name"), "client names may use letters, digits, '-' and '_' only");
        } else if !names.insert(client.name.as_str()) {
            p.error(&path.key("name"), format!("duplicate client name {:?}", client.name));
        }
        for (k, key) in client.api_keys.iter().enumerate() {
            let kpath = path.key("api_keys").index(k);
            if key.len() < 16 {
                p.error(&kpath, "API keys must be at least 16 characters long");
            }
            if let Some(other) = keys.insert(key.as_str(), client.name.as_str()) {
                // Never print the key itself.
                p.error(&kpath, format!("this API key is also used by client {other:?}"));
            }
        }
        for (u, user) in client.smtp_users.iter().enumerate() {
            let upath = path.key("smtp_users").index(u);
            if user.username.is_empty() || user.username.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
                p.error(&upath.key("username"), "must be non-empty, without spaces");
            } else if let Some(other) = smtp_users.insert(user.username.as_str(), client.name.as_str()) {
                p.error(
                    &upath.key("username"),
                    format!("SMTP user {:?} is also defined by client {other:?}", user.username),
                );
            }
            if user.password.len() < 8 {
                p.error(&upath.key("password"), "SMTP passwords must be at least 8 characters long");
            }
        }
        for (a, cred) in client.aws_credentials.iter().enumerate() {
            let apath = path.key("aws_credentials").index(a);
            let id = &cred.access_key_id;
            if !(16..=128).contains(&id.len()) || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                p.error(&apath.key("access_key_id"), "must be 16 to 128 letters and digits, as AWS key ids are");
            } else if let Some(other) = aws_keys.insert(id.as_str(), client.name.as_str()) {
                p.error(&apath.key("access_key_id"), format!("{id:?} is also used by client {other:?}"));
            }
            if cred.secret_access_key.len() < 16 {
                p.error(&apath.key("secret_access_key"), "must be at least 16 characters long");
            }
        }
        for (n, net) in client.allowed_networks.iter().enumerate() {
            if net.parse::<ipnet::IpNet>().is_err() && net.parse::<std::net::IpAddr>().is_err() {
                p.error(
                    &path.key("allowed_networks").index(n),
                    format!("{net:?} is not a network; write CIDR like \"10.0.0.0/8\" or an IP address"),
                );
            }
        }
        if client.allowed_senders.is_empty() {
            p.error(&path.key("allowed_senders"), "empty: this client could not send from any address");
        }
        for (s, pattern) in client.allowed_senders.iter().enumerate() {
            if !pattern.contains('@') {
                p.error(
                    &path.key("allowed_senders").index(s),
                    format!(
                        "{pattern:?} is not an address pattern; write e.g. \"*@example.com\" or \"alerts@example.net\""
                    ),
                );
            }
        }
        if let Some(route) = &client.route
            && !route_names.contains(route.as_str())
        {
            p.error(&path.key("route"), format!("unknown route {route:?} (routes: {})", join(route_names.iter())));
        }
    }
}

fn validate_routes(c: &Config, p: &mut Problems<'_>) {
    let routes = KeyPath::root().key("routes");
    if c.routes.is_empty() {
        p.error(&routes, "no routes configured: add a [[routes]] table with a providers list");
        return;
    }
    let client_names: HashSet<&str> = c.clients.iter().map(|c| c.name.as_str()).collect();
    let mut names = HashSet::new();
    let mut used = HashSet::new();
    for (i, route) in c.routes.iter().enumerate() {
        let path = routes.index(i);
        if !valid_name(&route.name) {
            p.error(&path.key("name"), "route names may use letters, digits, '-' and '_' only");
        } else if !names.insert(route.name.as_str()) {
            p.error(&path.key("name"), format!("duplicate route name {:?}", route.name));
        }
        if !(0.0..1.0).contains(&route.warm_standby) {
            p.error(&path.key("warm_standby"), "must be a share from 0 up to (not including) 1, e.g. 0.02");
        } else if route.warm_standby > 0.0 && route.providers.len() < 2 {
            p.error(&path.key("warm_standby"), "needs a second provider in the route to send standby traffic to");
        }
        if route.providers.is_empty() {
            p.error(&path.key("providers"), "needs at least one provider");
        }
        let mut seen = HashSet::new();
        for (j, provider) in route.providers.iter().enumerate() {
            let ppath = path.key("providers").index(j);
            if !c.providers.contains_key(provider) {
                p.error(&ppath, format!("unknown provider {provider:?} (providers: {})", join(c.providers.keys())));
            } else if !seen.insert(provider.as_str()) {
                p.error(&ppath, format!("provider {provider:?} is listed twice"));
            }
            used.insert(provider.as_str());
        }
        if let Some(m) = &route.matcher
            && let Some(clients) = &m.clients
        {
            for (j, client) in clients.iter().enumerate() {
                if !client_names.contains(client.as_str()) {
                    p.error(&path.key("match").key("clients").index(j), format!("unknown client {client:?}"));
                }
            }
        }
    }
    let catch_all = c.routes.iter().any(|r| r.matcher.as_ref().is_none_or(|m| m.matches_everything()));
    let every_client_routed = !c.clients.is_empty() && c.clients.iter().all(|cl| cl.route.is_some());
    if !catch_all && !every_client_routed {
        p.error(
            &routes,
            "no route matches every message: add a route without `match` (a catch-all, usually last) or give every client a `route`",
        );
    }
    for name in c.providers.keys() {
        if !used.contains(name.as_str()) {
            p.warn(&KeyPath::root().key("providers").key(name), "provider is not used by any route");
        }
    }
}

fn join<'a>(items: impl Iterator<Item = &'a (impl AsRef<str> + 'a + ?Sized)>) -> String {
    let mut v: Vec<&str> = items.map(|s| s.as_ref()).collect();
    v.sort_unstable();
    if v.is_empty() { "none".to_string() } else { v.join(", ") }
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigError, load_str};
    use std::time::Duration;

    const BASE: &str = "[server]\nhostname = \"t\"\nhttp_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n\
        [providers.a]\ntype = \"file\"\ndir = \"/tmp/a\"\n\n[[routes]]\nname = \"r\"\nproviders = [\"a\"]\n\n";

    fn problems(cluster: &str) -> Vec<String> {
        let text = format!("{BASE}[cluster]\n{cluster}");
        match load_str(&text, "t.toml", &|name| (name == "REDIS_PASSWORD").then(|| "s3cret-pw".to_string())) {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid { problems }) => problems.iter().map(|p| p.to_string()).collect(),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn cluster_defaults_and_the_redis_url_with_a_secret() {
        let text = format!("{BASE}[cluster]\nredis_url = \"redis://:${{REDIS_PASSWORD}}@10.0.0.5:6379/0\"\n");
        let loaded = load_str(&text, "t.toml", &|_| Some("s3cret-pw".into())).unwrap();
        let c = loaded.config.cluster.unwrap();
        assert_eq!((c.key_prefix.as_str(), c.quorum, c.timeout.0), ("baton:", 2, Duration::from_millis(250)));
        assert!(!c.node_id.is_empty(), "the host name");
        assert!(load_str(BASE, "t.toml", &|_| None).unwrap().config.cluster.is_none());
    }

    #[test]
    fn cluster_problems_name_line_and_key_and_never_the_url() {
        let found =
            problems("redis_url = \"http://:${REDIS_PASSWORD}@host\"\nnode_id = \"\"\nquorum = 0\ntimeout = \"5s\"\n");
        let expect = [
            ("t.toml:15: cluster.redis_url:", "redis:// or rediss://"),
            ("t.toml:16: cluster.node_id:", "non-empty"),
            ("t.toml:17: cluster.quorum:", "at least 1"),
            ("t.toml:18: cluster.timeout:", "at most 1s"),
        ];
        for (at, says) in expect {
            assert!(found.iter().any(|p| p.starts_with(at) && p.contains(says)), "{at} {says} in {found:#?}");
        }
        assert!(found.iter().all(|p| !p.contains("s3cret-pw")), "{found:#?}");
        assert!(problems("redis_url = \"rediss://cache.example.com:6380\"\nnode_id = \"baton-1\"\n").is_empty());
        assert_eq!(problems("node_id = \"x\"\n").len(), 1, "redis_url is required");
    }
}
