//! The configuration file: its structure (the contract operators write against), loading with
//! `${ENV}` substitution, and validation that reports file, line and key for every problem.

mod env;
pub mod locate;
mod parse;
#[cfg(test)]
mod reference;
pub mod units;
mod validate;

use locate::{KeyPath, Locator};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
pub use units::Rate;
use units::{Dur, Size};

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    #[serde(default)]
    pub spool: SpoolConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    #[serde(default)]
    pub smtp: SmtpConfig,
    /// Circuit-breaker and probe defaults for every provider.
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// End-to-end canaries through each provider, read back from a mailbox (off without it).
    #[serde(default)]
    pub canary: Option<CanaryConfig>,
    /// Who shares a suppression list.
    #[serde(default)]
    pub suppression: SuppressionConfig,
    /// Where the app is told what happened to its mail (`[[webhooks]]`).
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// Several nodes behaving as one relay, coordinated through Redis (off without it).
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
}

/// `[cluster]`: nodes behind one load balancer share provider health through Redis (or any
/// Redis-compatible server). Each node keeps its own spool and delivers what it accepted.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://[user:password@]host[:port][/db]`, or `rediss://` for TLS.
    pub redis_url: String,
    /// This node's name among the others (default: the host name).
    #[serde(default = "default_node_id")]
    pub node_id: String,
    /// Prefix of every Redis key Baton uses (several clusters can share one Redis).
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Other live nodes that must have a provider's circuit open before this node opens its own.
    #[serde(default = "default_quorum")]
    pub quorum: u32,
    /// The longest any Redis call may take; after it the node goes on with what it knows.
    #[serde(default = "default_cluster_timeout")]
    pub timeout: Dur,
}

/// The host name: `HOSTNAME`, else the kernel's, else `/etc/hostname`, else "baton".
fn default_node_id() -> String {
    let from_file = |path: &str| std::fs::read_to_string(path).ok();
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| from_file("/proc/sys/kernel/hostname"))
        .or_else(|| from_file("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "baton".to_string())
}
fn default_key_prefix() -> String {
    "baton:".into()
}
fn default_quorum() -> u32 {
    2
}
fn default_cluster_timeout() -> Dur {
    Dur(std::time::Duration::from_millis(250))
}

/// `[suppression]`: addresses a provider reported as bad (hard bounce, complaint, unsubscribe)
/// are never handed to any provider again.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct SuppressionConfig {
    #[serde(default)]
    pub scope: SuppressionScope,
}

/// `client`: each client has its own list (one app's bounce does not stop another app's
/// mail to that address); `global`: one list for every client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(rename_all = "lowercase")]
pub enum SuppressionScope {
    #[default]
    Client,
    Global,
}

/// `[[webhooks]]`: an app endpoint that receives Baton's events, signed per the Standard
/// Webhooks spec.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// `whsec_<base64>`: the key events are signed with.
    pub secret: String,
    /// The name in metrics and logs (default: the URL's host).
    #[serde(default)]
    pub name: Option<String>,
    /// Event types sent (default: all).
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// Clients whose events are sent (default: all).
    #[serde(default)]
    pub clients: Option<Vec<String>>,
}

/// `[canary]`: a small real message through each provider on a schedule, read back over IMAP;
/// a provider whose canaries stop arriving is `silent` and out of rotation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    /// Per provider, with jitter.
    #[serde(default = "default_canary_interval")]
    pub interval: Dur,
    /// Not read back by then: lost.
    #[serde(default = "default_canary_timeout")]
    pub timeout: Dur,
    /// Consecutive lost canaries that make a provider `silent`.
    #[serde(default = "default_lost_threshold")]
    pub lost_threshold: u32,
    /// An address every provider may send from.
    pub from: String,
    /// The read-back mailbox's address.
    pub to: String,
    /// Re-send through the route's next provider what a provider accepted since its last
    /// confirmed canary, when it goes silent (those attempts are marked possible duplicates).
    #[serde(default)]
    pub redeliver_unconfirmed: bool,
    pub imap: ImapConfig,
}

/// `[canary.imap]`: the mailbox canaries are read back from (IMAP4rev1).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct ImapConfig {
    pub host: String,
    #[serde(default = "default_imap_port")]
    pub port: u16,
    #[serde(default = "default_imap_tls")]
    pub tls: TlsMode,
    pub username: String,
    pub password: String,
    #[serde(default = "default_mailbox")]
    pub mailbox: String,
    /// Extra CA certificates (PEM) to trust for the IMAP server, besides the public roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_canary_interval() -> Dur {
    Dur(std::time::Duration::from_secs(300))
}

fn default_canary_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(600))
}

fn default_lost_threshold() -> u32 {
    2
}

fn default_imap_port() -> u16 {
    993
}

fn default_imap_tls() -> TlsMode {
    TlsMode::Tls
}

fn default_mailbox() -> String {
    "INBOX".into()
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Used in Message-ID and SMTP EHLO.
    pub hostname: String,
    pub http_listen: String,
    pub admin_listen: String,
    /// When set (non-empty), `/admin/*` needs `Authorization: Bearer <token>`.
    #[serde(default)]
    pub admin_token: Option<String>,
    #[serde(default = "default_max_message_size")]
    pub max_message_size: Size,
    #[serde(default = "default_max_recipients")]
    pub max_recipients: usize,
    /// How long SIGTERM/SIGINT waits for in-flight deliveries before handing them back to the spool.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: Dur,
    /// SMTP submission (STARTTLS when `[server.tls]` is set).
    #[serde(default)]
    pub smtp_listen: Option<String>,
    /// SMTP with implicit TLS (needs `[server.tls]`).
    #[serde(default)]
    pub smtps_listen: Option<String>,
    /// HTTPS for the ingest APIs (`/v1` and the compatible ones), with `[server.tls]`.
    #[serde(default)]
    pub https_listen: Option<String>,
    /// Certificate and key (PEM) for STARTTLS, smtps and HTTPS.
    #[serde(default)]
    pub tls: Option<ServerTlsConfig>,
    /// Reload automatically when the config file changes (also works for editors that replace
    /// the file and for Kubernetes ConfigMap symlink swaps).
    #[serde(default = "default_true")]
    pub watch_config: bool,
    /// HTTP listeners: time to receive a request's headers, and the longest a keep-alive
    /// connection may sit idle between requests (then it is closed).
    #[serde(default = "default_http_header_timeout")]
    pub http_header_timeout: Dur,
    /// HTTP listeners: longest one request may take, body and spool commit included (408 after).
    #[serde(default = "default_http_request_timeout")]
    pub http_request_timeout: Dur,
    /// `http_listen`: connections open at once, in all and from one IP address; more are
    /// answered 503 and closed. The admin listener has its own, smaller caps, so a flood of
    /// ingest connections never locks operators (or Prometheus) out.
    #[serde(default = "default_http_max_connections")]
    pub http_max_connections: usize,
    #[serde(default = "default_http_max_connections_per_ip")]
    pub http_max_connections_per_ip: usize,
    /// Request bodies of `POST /v1/messages` read into memory at once, in all (by their
    /// `Content-Length`); further requests wait for room, so many large sends at once cannot
    /// run the process out of memory.
    #[serde(default = "default_http_max_inflight_bytes")]
    pub http_max_inflight_bytes: Size,
    /// Provider APIs served on `http_listen` besides Baton's own (see `ingest::compat`).
    #[serde(default = "default_compatible_apis")]
    pub compatible_apis: Vec<String>,
}

fn default_true() -> bool {
    true
}
fn default_http_header_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(10))
}
fn default_http_request_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(60))
}
/// The provider-compatible APIs Baton can serve (`server.compatible_apis`; all by default).
pub const COMPATIBLE_APIS: [&str; 6] = ["mandrill", "sendgrid", "postmark", "resend", "ses", "mailgun"];

fn default_compatible_apis() -> Vec<String> {
    COMPATIBLE_APIS.iter().map(|s| s.to_string()).collect()
}
fn default_http_max_inflight_bytes() -> Size {
    Size(256 * 1024 * 1024)
}
fn default_http_max_connections() -> usize {
    512
}
fn default_http_max_connections_per_ip() -> usize {
    // Half the total: an application server's pool (often 100 connections, from one address
    // behind NAT) fits, and one address can never take every place.
    256
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Limits that keep one hostile or broken SMTP client from hurting the others.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    #[serde(default = "default_smtp_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_smtp_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// A session with no command for this long is closed with 421.
    #[serde(default = "default_smtp_idle_timeout")]
    pub idle_timeout: Dur,
    /// Longest command line accepted (RFC 5321 says 512; AUTH lines can be longer).
    #[serde(default = "default_smtp_max_line_length")]
    pub max_line_length: usize,
    /// Protocol errors after which the session is closed with 421.
    #[serde(default = "default_smtp_max_errors")]
    pub max_errors: u32,
    /// Failed AUTH attempts per connection before it is closed.
    #[serde(default = "default_smtp_max_auth_failures")]
    pub max_auth_failures: u32,
    /// Delay before answering a failed AUTH (slows password guessing).
    #[serde(default = "default_smtp_auth_failure_delay")]
    pub auth_failure_delay: Dur,
    /// Failed AUTH attempts from one client address (an IPv6 client: its /64), across all its
    /// connections, within `auth_failure_window` after which AUTH from that address answers
    /// `454 4.7.0` for `auth_block_for`, right password or not. Default 10.
    #[serde(default = "default_smtp_auth_failures_per_limit")]
    pub auth_failures_per_ip: u32,
    /// Failed AUTH attempts for one SMTP username, from any address, within
    /// `auth_failure_window` after which that username is refused with `454 4.7.0` for
    /// `auth_block_for`. Addresses that logged in as that user in the last 24 hours keep
    /// working, so guessing from elsewhere cannot lock the real application out. Default 10.
    #[serde(default = "default_smtp_auth_failures_per_limit")]
    pub auth_failures_per_user: u32,
    /// The sliding window the two AUTH failure limits count in. Default 5 minutes.
    #[serde(default = "default_smtp_auth_failure_window")]
    pub auth_failure_window: Dur,
    /// How long an address or username stays blocked once over a limit. Default 15 minutes.
    #[serde(default = "default_smtp_auth_block_for")]
    pub auth_block_for: Dur,
    /// A whole command line must arrive within this, however slowly its bytes trickle in (the
    /// idle timeout restarts with every byte). RFC 5321 §4.5.3.2.7: at least 5 minutes. Default 5m.
    #[serde(default = "default_smtp_command_timeout")]
    pub command_timeout: Dur,
    /// The whole content of one message (DATA, or all BDAT chunks of a transaction) must arrive
    /// within this. Default 10 minutes; raise it for very large messages over slow links.
    #[serde(default = "default_smtp_data_timeout")]
    pub data_timeout: Dur,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            max_connections: default_smtp_max_connections(),
            max_connections_per_ip: default_smtp_max_connections_per_ip(),
            idle_timeout: default_smtp_idle_timeout(),
            max_line_length: default_smtp_max_line_length(),
            max_errors: default_smtp_max_errors(),
            max_auth_failures: default_smtp_max_auth_failures(),
            auth_failure_delay: default_smtp_auth_failure_delay(),
            auth_failures_per_ip: default_smtp_auth_failures_per_limit(),
            auth_failures_per_user: default_smtp_auth_failures_per_limit(),
            auth_failure_window: default_smtp_auth_failure_window(),
            auth_block_for: default_smtp_auth_block_for(),
            command_timeout: default_smtp_command_timeout(),
            data_timeout: default_smtp_data_timeout(),
        }
    }
}

fn default_smtp_max_connections() -> usize {
    1000
}
fn default_smtp_max_connections_per_ip() -> usize {
    100
}
fn default_smtp_idle_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(300))
}
fn default_smtp_max_line_length() -> usize {
    4096
}
fn default_smtp_max_errors() -> u32 {
    10
}
fn default_smtp_max_auth_failures() -> u32 {
    3
}
fn default_smtp_auth_failure_delay() -> Dur {
    Dur(std::time::Duration::from_secs(1))
}
fn default_smtp_auth_failures_per_limit() -> u32 {
    10
}
fn default_smtp_auth_failure_window() -> Dur {
    Dur(std::time::Duration::from_secs(5 * 60))
}
fn default_smtp_auth_block_for() -> Dur {
    Dur(std::time::Duration::from_secs(15 * 60))
}
fn default_smtp_command_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(5 * 60))
}
fn default_smtp_data_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(10 * 60))
}

fn default_max_message_size() -> Size {
    Size(25 * 1024 * 1024)
}
fn default_max_recipients() -> usize {
    100
}
fn default_shutdown_grace() -> Dur {
    Dur(std::time::Duration::from_secs(25))
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    #[serde(default = "default_spool_dir")]
    pub dir: PathBuf,
    /// When the spool holds this much message data, ingest answers 503 (HTTP) / 452 (SMTP).
    #[serde(default = "default_spool_max_bytes")]
    pub max_bytes: Size,
    /// Recipients still undelivered after this are failed.
    #[serde(default = "default_max_age")]
    pub max_age: Dur,
    /// How long the status of finished messages (and their idempotency keys) stays queryable.
    #[serde(default = "default_keep_completed")]
    pub keep_completed: Dur,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            dir: default_spool_dir(),
            max_bytes: default_spool_max_bytes(),
            max_age: default_max_age(),
            keep_completed: default_keep_completed(),
        }
    }
}

fn default_spool_dir() -> PathBuf {
    PathBuf::from("data/spool")
}
fn default_spool_max_bytes() -> Size {
    Size(10 * 1024 * 1024 * 1024)
}
fn default_max_age() -> Dur {
    Dur(std::time::Duration::from_secs(24 * 3600))
}
fn default_keep_completed() -> Dur {
    Dur(std::time::Duration::from_secs(24 * 3600))
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Delay before the next delivery pass when every provider failed; the last entry repeats.
    pub schedule: Vec<Dur>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        let s = |secs| Dur(std::time::Duration::from_secs(secs));
        RetryConfig { schedule: vec![s(10), s(60), s(300), s(900), s(3600)] }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Messages being delivered at the same time (across all providers).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig { concurrency: default_concurrency() }
    }
}

fn default_concurrency() -> usize {
    64
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub name: String,
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// Patterns like `*@example.com` or exact addresses; matched case-insensitively. They
    /// bound the envelope sender and the `From:` / `Sender:` header addresses.
    pub allowed_senders: Vec<String>,
    /// More patterns allowed in `From:` / `Sender:` headers only, for clients that send on
    /// behalf of others (the envelope sender stays within `allowed_senders`).
    #[serde(default)]
    pub header_senders: Vec<String>,
    #[serde(default)]
    pub route: Option<String>,
    /// Logins for SMTP submission (AUTH PLAIN / LOGIN).
    #[serde(default)]
    pub smtp_users: Vec<SmtpUser>,
    /// SMTP connections from these networks (CIDR) are this client without AUTH; the sender is
    /// still checked against `allowed_senders`.
    #[serde(default)]
    pub allowed_networks: Vec<String>,
    /// Accept `MAIL FROM:<>` over SMTP (RFC 5321 §4.5.5): for MTAs that relay their own
    /// bounces and delivery reports through Baton. Off by default: an application submitting
    /// mail has a sender, and a null-sender message from it is refused with `550 5.7.1`.
    #[serde(default)]
    pub allow_null_sender: bool,
    /// AWS-style credentials for the SES-compatible API: SigV4-signed requests made with one
    /// of these are this client's.
    #[serde(default)]
    pub aws_credentials: Vec<AwsCredential>,
}

/// An access key id and secret an AWS SDK signs its requests with (SigV4).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct AwsCredential {
    pub access_key_id: String,
    pub secret_access_key: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct SmtpUser {
    pub username: String,
    pub password: String,
}

/// Provider health settings (`[health]`); every key can be overridden per provider in
/// `[providers.NAME.health]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct HealthOverride {
    /// Active probe period while healthy; probes run faster while open or suspended.
    pub probe_interval: Option<Dur>,
    /// Consecutive transient failures that open the circuit.
    pub failure_threshold: Option<u32>,
    /// Or this failure ratio over `window` (with at least `min_requests` attempts).
    pub failure_rate: Option<f64>,
    pub window: Option<Dur>,
    pub min_requests: Option<u32>,
    /// First cooldown of an open circuit; doubles after each failed half-open trial.
    pub open_for: Option<Dur>,
    pub max_open_for: Option<Dur>,
    /// How long an `account` outcome (suspended, auth, credits…) keeps a provider out.
    pub account_cooldown: Option<Dur>,
    /// Longest a real message waits on a half-open trial before it fails over (the trial may
    /// still have been taken: recorded as a possible duplicate).
    pub trial_timeout: Option<Dur>,
    /// How long a sender domain the provider refused as unverified goes to the next provider
    /// before it is tried there again.
    pub sender_cooldown: Option<Dur>,
    /// Hard bounces ÷ recipients sent through the provider over `rate_window` at which Baton
    /// warns (default: per provider type, below the provider's own review level).
    pub bounce_rate_warn: Option<f64>,
    /// Spam complaints ÷ recipients sent, likewise.
    pub complaint_rate_warn: Option<f64>,
    /// The sliding window the bounce and complaint rates are measured over.
    pub rate_window: Option<Dur>,
    /// Recipients sent in the window before a rate counts (fewer say nothing).
    pub rate_min_sent: Option<u32>,
    /// Take the provider out of rotation while a rate is at or over its warn level.
    pub pause_on_rate: Option<bool>,
}

pub type HealthConfig = HealthOverride;

/// Health settings with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSettings {
    pub probe_interval: std::time::Duration,
    pub failure_threshold: u32,
    pub failure_rate: f64,
    pub window: std::time::Duration,
    pub min_requests: u32,
    pub open_for: std::time::Duration,
    pub max_open_for: std::time::Duration,
    pub account_cooldown: std::time::Duration,
    pub trial_timeout: std::time::Duration,
    pub sender_cooldown: std::time::Duration,
    /// `None`: the provider type's default (`health::rates::default_warn`).
    pub bounce_rate_warn: Option<f64>,
    pub complaint_rate_warn: Option<f64>,
    pub rate_window: std::time::Duration,
    pub rate_min_sent: u32,
    pub pause_on_rate: bool,
}

impl HealthSettings {
    /// `[health]` defaults, then the provider's own overrides.
    pub fn resolve(defaults: &HealthOverride, provider: &HealthOverride) -> HealthSettings {
        let secs = std::time::Duration::from_secs;
        let pick = |p: Option<Dur>, d: Option<Dur>, fallback| p.or(d).map(|x| x.0).unwrap_or(fallback);
        HealthSettings {
            probe_interval: pick(provider.probe_interval, defaults.probe_interval, secs(30)),
            failure_threshold: provider.failure_threshold.or(defaults.failure_threshold).unwrap_or(3),
            failure_rate: provider.failure_rate.or(defaults.failure_rate).unwrap_or(0.5),
            window: pick(provider.window, defaults.window, secs(60)),
            min_requests: provider.min_requests.or(defaults.min_requests).unwrap_or(10),
            open_for: pick(provider.open_for, defaults.open_for, secs(15)),
            max_open_for: pick(provider.max_open_for, defaults.max_open_for, secs(300)),
            account_cooldown: pick(provider.account_cooldown, defaults.account_cooldown, secs(600)),
            trial_timeout: pick(provider.trial_timeout, defaults.trial_timeout, secs(5)),
            sender_cooldown: pick(provider.sender_cooldown, defaults.sender_cooldown, secs(600)),
            bounce_rate_warn: provider.bounce_rate_warn.or(defaults.bounce_rate_warn),
            complaint_rate_warn: provider.complaint_rate_warn.or(defaults.complaint_rate_warn),
            rate_window: pick(provider.rate_window, defaults.rate_window, secs(24 * 3600)),
            rate_min_sent: provider.rate_min_sent.or(defaults.rate_min_sent).unwrap_or(100),
            pause_on_rate: provider.pause_on_rate.or(defaults.pause_on_rate).unwrap_or(false),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ProviderConfig {
    Smtp(SmtpProviderConfig),
    File(FileProviderConfig),
    Mandrill(MandrillConfig),
    Ses(SesConfig),
    Sendgrid(SendgridConfig),
    Mailgun(MailgunConfig),
    Postmark(PostmarkConfig),
    Resend(ResendConfig),
}

/// Declares the config struct of an HTTP API provider: its own keys plus the keys every HTTP
/// provider has (`timeout`, `max_connections`, `health`). A macro because serde cannot combine
/// `flatten` with `deny_unknown_fields`, and typos must stay errors.
macro_rules! http_provider_config {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident : $ty:ty $(= $default:literal)?),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Deserialize)]
        #[cfg_attr(test, derive(serde::Serialize))]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$fdoc])* $(#[serde(default = $default)])? pub $field: $ty,)*
            #[serde(default = "default_provider_timeout")]
            pub timeout: Dur,
            /// Requests in flight at once.
            #[serde(default = "default_max_connections")]
            pub max_connections: usize,
            /// Run this provider's active probe (`false`: a trial send ends a suspension).
            #[serde(default = "default_true")]
            pub probe: bool,
            /// Send end-to-end canaries through this provider (when `[canary]` is set).
            #[serde(default = "default_true")]
            pub canary: bool,
            /// Sends allowed across the cluster (`"14/s"`; SES counts recipients); none: no limit.
            #[serde(default)]
            pub max_rate: Option<Rate>,
            /// How long a message may wait for its turn under `max_rate` before it moves on.
            #[serde(default = "default_rate_wait")]
            pub rate_wait: Dur,
            #[serde(default)]
            pub health: HealthOverride,
        }
    };
}

http_provider_config!(
    /// Mailchimp Transactional (Mandrill).
    MandrillConfig {
        api_key: String,
        /// Key Mandrill signs its webhooks with (`X-Mandrill-Signature`).
        webhook_key: Option<String>,
        /// The exact URL registered in Mandrill (part of what it signs).
        webhook_url: Option<String>,
        base_url: String = "default_mandrill_url",
    }
);

http_provider_config!(
    /// Amazon SES v2, through the official SDK.
    SesConfig {
        region: String,
        /// Without keys, the standard AWS credential chain is used (env, profile, IMDS, IRSA).
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
        session_token: Option<String>,
        configuration_set: Option<String>,
        /// Default: derived from the region.
        endpoint: Option<String>,
        /// SNS topics whose SES notifications `/webhooks/NAME` takes (others are refused).
        sns_topic_arns: Vec<String> = "Vec::new",
    }
);

http_provider_config!(
    /// SendGrid v3.
    SendgridConfig {
        api_key: String,
        /// The Event Webhook's verification key (base64 DER, ECDSA P-256).
        webhook_public_key: Option<String>,
        base_url: String = "default_sendgrid_url",
    }
);

http_provider_config!(
    /// Mailgun (US base by default; EU: https://api.eu.mailgun.net).
    MailgunConfig {
        api_key: String,
        domain: String,
        base_url: String = "default_mailgun_url",
        /// The HTTP webhook signing key (Mailgun: Sending → Webhooks).
        webhook_signing_key: Option<String>,
    }
);

http_provider_config!(
    /// Postmark.
    PostmarkConfig {
        server_token: String,
        /// HTTP Basic credentials put in the webhook URL registered in Postmark.
        webhook_username: Option<String>,
        webhook_password: Option<String>,
        message_stream: String = "default_postmark_stream",
        base_url: String = "default_postmark_url",
    }
);

http_provider_config!(
    /// Resend.
    ResendConfig {
        api_key: String,
        /// The webhook's signing secret (`whsec_…`).
        webhook_secret: Option<String>,
        base_url: String = "default_resend_url",
    }
);

fn default_mandrill_url() -> String {
    "https://mandrillapp.com/api/1.0".into()
}
fn default_sendgrid_url() -> String {
    "https://api.sendgrid.com".into()
}
fn default_mailgun_url() -> String {
    "https://api.mailgun.net".into()
}
fn default_postmark_url() -> String {
    "https://api.postmarkapp.com".into()
}
fn default_postmark_stream() -> String {
    "outbound".into()
}
fn default_resend_url() -> String {
    "https://api.resend.com".into()
}

/// `$body` for whichever provider type `$value` is, its config bound to `$c` (every type has
/// `health`, `probe` and `canary`).
macro_rules! each_provider {
    ($value:expr, $c:ident => $body:expr) => {
        match $value {
            ProviderConfig::Smtp($c) => $body,
            ProviderConfig::File($c) => $body,
            ProviderConfig::Mandrill($c) => $body,
            ProviderConfig::Ses($c) => $body,
            ProviderConfig::Sendgrid($c) => $body,
            ProviderConfig::Mailgun($c) => $body,
            ProviderConfig::Postmark($c) => $body,
            ProviderConfig::Resend($c) => $body,
        }
    };
}

impl ProviderConfig {
    /// Same connection settings (everything but `health`, `probe` and `canary`): the provider's
    /// connections and health state can be kept across a reload.
    pub fn same_connection(&self, other: &ProviderConfig) -> bool {
        self.connection_only() == other.connection_only()
    }

    /// A short hash of the connection settings (secrets included, so a rotated key counts as
    /// a change; only the hash is ever stored): saved health applies only to the same settings.
    pub fn fingerprint(&self) -> String {
        text_hash(&format!("{:?}", self.connection_only()))
    }

    fn connection_only(&self) -> ProviderConfig {
        let mut c = self.clone();
        each_provider!(&mut c, c => {
            c.health = HealthOverride::default();
            c.probe = true;
            c.canary = true;
            c.max_rate = None;
            c.rate_wait = default_rate_wait();
        });
        // Webhook settings concern what the provider sends Baton, not how Baton sends.
        match &mut c {
            ProviderConfig::Mandrill(m) => (m.webhook_key, m.webhook_url) = (None, None),
            ProviderConfig::Sendgrid(s) => s.webhook_public_key = None,
            ProviderConfig::Mailgun(m) => m.webhook_signing_key = None,
            ProviderConfig::Postmark(p) => (p.webhook_username, p.webhook_password) = (None, None),
            ProviderConfig::Resend(r) => r.webhook_secret = None,
            ProviderConfig::Ses(s) => s.sns_topic_arns.clear(),
            ProviderConfig::Smtp(_) | ProviderConfig::File(_) => {}
        }
        c
    }

    /// `probe = true|false`: whether the provider's active probe runs.
    pub fn probe_enabled(&self) -> bool {
        each_provider!(self, c => c.probe)
    }

    /// `canary = true|false`: whether end-to-end canaries go through this provider.
    pub fn canary_enabled(&self) -> bool {
        each_provider!(self, c => c.canary)
    }

    /// `max_rate` and `rate_wait`, when the provider has a send-rate limit.
    pub fn rate_limit(&self) -> Option<(Rate, std::time::Duration)> {
        each_provider!(self, c => c.max_rate.map(|rate| (rate, c.rate_wait.0)))
    }

    /// What one send costs under `max_rate`: SES counts every recipient against the account's
    /// maximum send rate; the other providers' limits count requests.
    pub fn rate_cost(&self, recipients: usize) -> u32 {
        match self {
            ProviderConfig::Ses(_) => recipients.max(1) as u32,
            _ => 1,
        }
    }

    /// The provider's `[providers.NAME.health]` overrides.
    pub fn health(&self) -> &HealthOverride {
        each_provider!(self, c => &c.health)
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            ProviderConfig::Smtp(_) => "smtp",
            ProviderConfig::File(_) => "file",
            ProviderConfig::Mandrill(_) => "mandrill",
            ProviderConfig::Ses(_) => "ses",
            ProviderConfig::Sendgrid(_) => "sendgrid",
            ProviderConfig::Mailgun(_) => "mailgun",
            ProviderConfig::Postmark(_) => "postmark",
            ProviderConfig::Resend(_) => "resend",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    None,
    Starttls,
    Tls,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct SmtpProviderConfig {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    #[serde(default = "default_tls")]
    pub tls: TlsMode,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default = "default_provider_timeout")]
    pub timeout: Dur,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Extra PEM root certificate to trust (private relays, tests).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Run the active probe (connect, EHLO, STARTTLS, AUTH).
    #[serde(default = "default_true")]
    pub probe: bool,
    /// Send end-to-end canaries through this provider (when `[canary]` is set).
    #[serde(default = "default_true")]
    pub canary: bool,
    /// Sends allowed across the cluster (`"14/s"`; SES counts recipients); none: no limit.
    #[serde(default)]
    pub max_rate: Option<Rate>,
    /// How long a message may wait for its turn under `max_rate` before it moves on.
    #[serde(default = "default_rate_wait")]
    pub rate_wait: Dur,
    #[serde(default)]
    pub health: HealthOverride,
}

fn default_smtp_port() -> u16 {
    587
}
fn default_tls() -> TlsMode {
    TlsMode::Starttls
}
fn default_provider_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(30))
}
fn default_max_connections() -> usize {
    16
}
fn default_rate_wait() -> Dur {
    Dur(std::time::Duration::from_secs(5))
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct FileProviderConfig {
    pub dir: PathBuf,
    #[serde(default = "default_true")]
    pub probe: bool,
    /// A file sink cannot lose mail silently; canaries through it are off by default.
    #[serde(default)]
    pub canary: bool,
    /// Sends allowed across the cluster (`"14/s"`; SES counts recipients); none: no limit.
    #[serde(default)]
    pub max_rate: Option<Rate>,
    /// How long a message may wait for its turn under `max_rate` before it moves on.
    #[serde(default = "default_rate_wait")]
    pub rate_wait: Dur,
    #[serde(default)]
    pub health: HealthOverride,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    /// Failover order.
    pub providers: Vec<String>,
    #[serde(default, rename = "match")]
    pub matcher: Option<RouteMatch>,
    /// Share of traffic (0 to <1) sent to the second provider first, to keep it verified.
    #[serde(default)]
    pub warm_standby: f64,
}

/// A route matches a message when every given list contains a match (absent lists match all).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    #[serde(default)]
    pub senders: Option<Vec<String>>,
    #[serde(default)]
    pub streams: Option<Vec<String>>,
    #[serde(default)]
    pub clients: Option<Vec<String>>,
}

impl RouteMatch {
    pub fn matches_everything(&self) -> bool {
        self.senders.is_none() && self.streams.is_none() && self.clients.is_none()
    }
}

/// One thing wrong (or worth a warning) in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: ", self.file, line)?,
            None => write!(f, "{}: ", self.file)?,
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid { problems: Vec<Problem> },
}

/// A config that passed validation, with its warnings and a hash of its text.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Problem>,
    /// Path the config came from (relative paths in it are used as written, from the working dir).
    pub source: String,
    /// SHA-256 of the file text (before `${ENV}` substitution), first 12 hex digits: tells
    /// which config is live (`baton_config_info{hash}`) and whether the file really changed.
    pub hash: String,
}

/// Short SHA-256 of a config text.
pub fn text_hash(text: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Collects problems with their file and line.
pub(crate) struct Problems<'a> {
    file: &'a str,
    locator: &'a Locator,
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

impl Problems<'_> {
    pub fn error(&mut self, path: &KeyPath, message: impl Into<String>) {
        let p = self.make(path, message.into());
        self.errors.push(p);
    }
    pub fn warn(&mut self, path: &KeyPath, message: impl Into<String>) {
        let p = self.make(path, message.into());
        self.warnings.push(p);
    }
    fn make(&self, path: &KeyPath, message: String) -> Problem {
        Problem { file: self.file.to_string(), line: self.locator.line(path), key: path.to_string(), message }
    }
}

/// Reads, substitutes, parses and validates a config file.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
    load_str(&text, &path.display().to_string(), &|name| std::env::var(name).ok())
}

/// Same as [`load`], from text; `env` looks up `${NAME}` variables.
pub fn load_str(text: &str, file: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, ConfigError> {
    let syntax_problem = |message: String, span: Option<std::ops::Range<usize>>| {
        let locator = Locator::new(text);
        Problem {
            file: file.to_string(),
            line: span.map(|s| locator.line_of_offset(s.start)),
            key: String::new(),
            message,
        }
    };
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| ConfigError::Invalid {
        problems: vec![syntax_problem(format!("TOML syntax error: {}", e.message().trim()), e.span())],
    })?;
    let missing = env::substitute(&mut doc, env);
    let expanded = doc.to_string();
    let locator = Locator::new(&expanded);
    let mut problems = Problems { file, locator: &locator, errors: Vec::new(), warnings: Vec::new() };
    for m in &missing {
        problems.error(&m.path, format!("environment variable {} is not set", m.name));
    }
    let parsed = parse::deserialize(doc);
    for (path, message) in &parsed.problems {
        problems.error(path, message.clone());
    }
    let Some(config) = parsed.config else {
        return Err(ConfigError::Invalid { problems: problems.errors });
    };
    let before = problems.errors.len();
    validate::validate(&config, &mut problems);
    // A key whose variable is missing was substituted as empty, and a neutralised key holds a
    // default or a stand-in: their follow-on problems are noise.
    let missing_keys: Vec<String> = missing.iter().map(|m| m.path.to_string()).collect();
    let neutralised: Vec<String> = parsed.neutralised.iter().map(|p| p.to_string()).collect();
    let noise = |key: &str| missing_keys.iter().any(|k| k == key) || neutralised.iter().any(|n| is_under(key, n));
    let mut index = 0;
    problems.errors.retain(|p| {
        index += 1;
        index <= before || !noise(&p.key)
    });
    // In file order: the operator fixes them top to bottom.
    problems.errors.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    if problems.errors.is_empty() {
        Ok(Loaded { config, warnings: problems.warnings, source: file.to_string(), hash: text_hash(text) })
    } else {
        Err(ConfigError::Invalid { problems: problems.errors })
    }
}

/// Whether `key` is `path` or a key inside it (`a.b` is under `a`, and so is `a[0]`).
fn is_under(key: &str, path: &str) -> bool {
    key.strip_prefix(path).is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}
