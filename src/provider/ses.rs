//! The `ses` provider: Amazon SES v2 `SendEmail` with `Content.Raw` (the spooled bytes,
//! byte-exact) through the official SDK (`shared/providers.md`, Amazon SES v2).
//!
//! Credentials: the static keys of the config when given (the client is built at once, without
//! any I/O); otherwise the standard AWS chain (env, profile, web identity, IMDS), loaded on first
//! use because loading it is async. SDK retries are off: Baton's failover decides what happens
//! after a failure. The SDK's typed errors (type from `x-amzn-ErrorType` or `__type`) drive the
//! classification, then the message text, then the HTTP status.

use super::{Outbound, Provider};
use crate::config::SesConfig;
use crate::health::ProbeReport;
use crate::outcome::{OutcomeClass, RecipientResult, SendReport, truncate_detail};
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_sesv2 as sesv2;
use sesv2::config::retry::RetryConfig;
use sesv2::config::timeout::TimeoutConfig;
use sesv2::config::{BehaviorVersion, Credentials, Region};
use sesv2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use sesv2::primitives::Blob;
use sesv2::types::{Destination, EmailContent, RawMessage};
use std::time::Duration;
use tokio::sync::{OnceCell, Semaphore};

/// SES takes at most 50 recipients per `SendEmail`.
const MAX_RECIPIENTS: usize = 50;

pub struct SesProvider {
    name: String,
    region: String,
    endpoint: Option<String>,
    configuration_set: Option<String>,
    timeout: Duration,
    /// Built in `new` with static keys; on first use with the default credential chain.
    client: OnceCell<sesv2::Client>,
    slots: Semaphore,
    /// Never shown in details (the SDK does not echo them; this is the belt to its braces).
    secrets: Vec<String>,
}

/// A classified failure.
#[derive(Debug, Clone, PartialEq)]
struct Failure {
    class: OutcomeClass,
    detail: String,
    retry_after: Option<Duration>,
    possible_duplicate: bool,
}

fn timeouts(timeout: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .operation_attempt_timeout(timeout)
        .operation_timeout(timeout)
        .build()
}

/// The class of an SES error from its type (`code`), its text and the HTTP status.
fn classify(code: Option<&str>, message: &str, status: u16) -> OutcomeClass {
    let text = message.to_ascii_lowercase();
    // The type may come qualified (`com.amazon…#Type`) or with a URL suffix (`Type:http://…`).
    let code = code.map(|c| c.rsplit('#').next().unwrap_or(c).split(':').next().unwrap_or(c));
    match code.unwrap_or_default() {
        "AccountSuspendedException" | "SendingPausedException" | "MailFromDomainNotVerifiedException" => {
            OutcomeClass::Account
        }
        // Sandbox: the recipient (or sender) is not a verified identity.
        "MessageRejected" if text.contains("not verified") => OutcomeClass::Account,
        "MessageRejected" if text.contains("suspended") => OutcomeClass::Account,
        "MessageRejected" => OutcomeClass::BadRequest,
        "TooManyRequestsException" | "ThrottlingException" | "Throttling" | "LimitExceededException"
            if text.contains("daily message quota") || text.contains("quota exceeded") =>
        {
            OutcomeClass::Account
        }
        "TooManyRequestsException" | "ThrottlingException" | "Throttling" => OutcomeClass::RateLimited,
        "NotFoundException" => OutcomeClass::Account,
        "BadRequestException" => OutcomeClass::BadRequest,
        "InvalidClientTokenId"
        | "UnrecognizedClientException"
        | "UnrecognizedClient"
        | "AccessDenied"
        | "AccessDeniedException"
        | "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "InvalidSignatureException"
        | "ExpiredToken"
        | "ExpiredTokenException"
        | "NotAuthorized" => OutcomeClass::Account,
        "RequestExpired" | "RequestTimeTooSkewed" => OutcomeClass::Transient,
        "InternalFailure"
        | "InternalFailureException"
        | "InternalServerError"
        | "ServiceUnavailable"
        | "ServiceUnavailableException" => OutcomeClass::Transient,
        _ if status >= 500 => OutcomeClass::Transient,
        _ if text.contains("daily message quota exceeded") || text.contains("suspended") => OutcomeClass::Account,
        _ if text.contains("maximum sending rate exceeded") => OutcomeClass::RateLimited,
        _ => super::http::class_for_status(status),
    }
}

/// `Retry-After` of an SES answer (seconds or an HTTP date), through the shared parser.
fn retry_after(raw: &sesv2::config::http::HttpResponse) -> Option<Duration> {
    let value = raw.headers().get("retry-after")?;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("retry-after", reqwest::header::HeaderValue::from_str(value).ok()?);
    super::http::retry_after(&headers)
}

/// The class of a failure to get credentials: none configured or a broken configuration is for
/// the operator; a provider that timed out or failed (IMDS, STS) may work next time.
fn credentials_failure(e: &(dyn std::error::Error + 'static)) -> Option<OutcomeClass> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(c) = err.downcast_ref::<CredentialsError>() {
            return Some(match c {
                CredentialsError::CredentialsNotLoaded(_) | CredentialsError::InvalidConfiguration(_) => {
                    OutcomeClass::Account
                }
                _ => OutcomeClass::Transient,
            });
        }
        current = err.source();
    }
    None
}

fn failure_from<E>(e: &SdkError<E>, timeout: Duration) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let mut f = match e {
        SdkError::ServiceError(_) | SdkError::ResponseError(_) => {
            let raw = e.raw_response().expect("service and response errors carry the response");
            let status = raw.status().as_u16();
            let code = e.code();
            let message = e.message().unwrap_or_default();
            let class = match (e, code) {
                (SdkError::ServiceError(_), _) | (_, Some(_)) => classify(code, message, status),
                // No error shape we can read: by status (a 2xx whose body we could not parse
                // was still taken).
                _ => super::http::class_for_status(status),
            };
            let detail = match code {
                Some(code) => format!("HTTP {status} {code}: {message}"),
                None => {
                    let body = raw.body().bytes().map(String::from_utf8_lossy).unwrap_or_default();
                    format!("HTTP {status} (no error type): {body}")
                }
            };
            Failure {
                class,
                detail,
                retry_after: if class == OutcomeClass::RateLimited { retry_after(raw) } else { None },
                possible_duplicate: false,
            }
        }
        SdkError::TimeoutError(_) => Failure {
            class: OutcomeClass::Transient,
            detail: format!("timed out after {timeout:?}"),
            retry_after: None,
            // The request may have been sent and taken.
            possible_duplicate: true,
        },
        SdkError::DispatchFailure(d) => {
            let class = credentials_failure(e).unwrap_or(OutcomeClass::Transient);
            Failure {
                class,
                detail: format!("request failed: {}", DisplayErrorContext(e)),
                retry_after: None,
                possible_duplicate: d.is_timeout(),
            }
        }
        _ => Failure {
            class: credentials_failure(e).unwrap_or(OutcomeClass::Transient),
            detail: format!("request not sent: {}", DisplayErrorContext(e)),
            retry_after: None,
            possible_duplicate: false,
        },
    };
    f.detail = truncate_detail(&f.detail);
    f
}

impl SesProvider {
    pub fn new(name: &str, config: &SesConfig) -> Result<Self, String> {
        let timeout = config.timeout.0;
        let client = OnceCell::new();
        let mut secrets = Vec::new();
        if let (Some(key_id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            secrets.push(secret.clone());
            secrets.extend(config.session_token.clone());
            let credentials =
                Credentials::new(key_id.clone(), secret.clone(), config.session_token.clone(), None, "baton-config");
            let mut builder = sesv2::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new(config.region.clone()))
                .credentials_provider(credentials)
                .retry_config(RetryConfig::disabled())
                .timeout_config(timeouts(timeout));
            if let Some(endpoint) = &config.endpoint {
                builder = builder.endpoint_url(endpoint.clone());
            }
            let _ = client.set(sesv2::Client::from_conf(builder.build()));
        }
        Ok(SesProvider {
            name: name.to_string(),
            region: config.region.clone(),
            endpoint: config.endpoint.clone(),
            configuration_set: config.configuration_set.clone(),
            timeout,
            client,
            slots: Semaphore::new(config.max_connections),
            secrets: secrets.into_iter().filter(|s| !s.is_empty()).collect(),
        })
    }

    /// The client; with the default credential chain, built on first use.
    async fn client(&self) -> &sesv2::Client {
        self.client
            .get_or_init(|| async {
                let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .region(Region::new(self.region.clone()))
                    .retry_config(RetryConfig::disabled())
                    .timeout_config(timeouts(self.timeout))
                    .load()
                    .await;
                let mut builder = sesv2::config::Builder::from(&shared)
                    .retry_config(RetryConfig::disabled())
                    .timeout_config(timeouts(self.timeout));
                if let Some(endpoint) = &self.endpoint {
                    builder = builder.endpoint_url(endpoint.clone());
                }
                sesv2::Client::from_conf(builder.build())
            })
            .await
    }

    fn scrub(&self, text: String) -> String {
        self.secrets
            .iter()
            .fold(text, |t, s| if t.contains(s.as_str()) { t.replace(s.as_str(), "[redacted]") } else { t })
    }

    /// One `SendEmail` for `recipients`: the provider's message id, or the failure.
    async fn send_one(&self, msg: &Outbound<'_>, recipients: &[String]) -> Result<Option<String>, Failure> {
        let client = self.client().await;
        let raw = RawMessage::builder().data(Blob::new(msg.body)).build().map_err(|e| Failure {
            class: OutcomeClass::BadRequest,
            detail: truncate_detail(&format!("cannot build the request: {e}")),
            retry_after: None,
            possible_duplicate: false,
        })?;
        let request = client
            .send_email()
            .from_email_address(msg.mail_from)
            .destination(Destination::builder().set_to_addresses(Some(recipients.to_vec())).build())
            .content(EmailContent::builder().raw(raw).build())
            .set_configuration_set_name(self.configuration_set.clone());
        let outcome = tokio::time::timeout(self.timeout + Duration::from_secs(1), request.send()).await;
        match outcome {
            Ok(Ok(out)) => Ok(out.message_id().map(str::to_string)),
            Ok(Err(e)) => match failure_from(&e, self.timeout) {
                // A success status with a body the SDK could not read: SES took the message.
                f if f.class == OutcomeClass::Accepted => Ok(None),
                f => Err(f),
            },
            Err(_) => Err(Failure {
                class: OutcomeClass::Transient,
                detail: format!("timed out after {:?}", self.timeout),
                retry_after: None,
                possible_duplicate: true,
            }),
        }
    }
}

#[async_trait::async_trait]
impl Provider for SesProvider {
    fn name(&self) -> &str {
        &self.name
    }

    /// One `SendEmail` per 50 recipients, the raw message untouched; the envelope recipients go
    /// in `Destination.ToAddresses` (SES delivers to the destination, the headers stay as they are).
    async fn send(&self, msg: &Outbound<'_>) -> SendReport {
        let n = msg.recipients.len();
        let Ok(_slot) = self.slots.acquire().await else {
            return SendReport::failed(OutcomeClass::Transient, n, "provider closed");
        };
        let mut results = vec![RecipientResult::NotDone; n];
        let mut detail = String::new();
        let all: Vec<usize> = (0..n).collect();
        for chunk in all.chunks(MAX_RECIPIENTS) {
            let recipients: Vec<String> = chunk.iter().map(|&i| msg.recipients[i].clone()).collect();
            match self.send_one(msg, &recipients).await {
                Ok(id) => {
                    detail = match &id {
                        Some(id) => format!("accepted: MessageId {id}"),
                        None => "accepted (no MessageId in the answer)".into(),
                    };
                    for &i in chunk {
                        results[i] = RecipientResult::Delivered { provider_message_id: id.clone() };
                    }
                }
                Err(f) => {
                    let failure = SendReport {
                        class: f.class,
                        detail: self.scrub(f.detail),
                        recipients: Vec::new(),
                        retry_after: f.retry_after,
                        possible_duplicate: f.possible_duplicate,
                    };
                    return failure.after_batches(results);
                }
            }
        }
        SendReport {
            class: OutcomeClass::Accepted,
            detail,
            recipients: results,
            retry_after: None,
            possible_duplicate: false,
        }
    }

    /// `GetAccount`: sending enabled, not shut down, daily quota not used up. Probation and the
    /// sandbox still send, and say so in the detail.
    async fn probe(&self) -> ProbeReport {
        let client = self.client().await;
        let out = match tokio::time::timeout(self.timeout + Duration::from_secs(1), client.get_account().send()).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => {
                let f = failure_from(&e, self.timeout);
                let class = if f.class == OutcomeClass::Accepted { OutcomeClass::Transient } else { f.class };
                return ProbeReport { failure: Some(class), detail: self.scrub(f.detail) };
            }
            Err(_) => {
                return ProbeReport {
                    failure: Some(OutcomeClass::Transient),
                    detail: format!("timed out after {:?}", self.timeout),
                };
            }
        };
        let enforcement = out.enforcement_status().unwrap_or("UNKNOWN");
        let mut notes = vec![format!("enforcement {enforcement}")];
        if !out.production_access_enabled() {
            notes.push("sandbox (no production access)".into());
        }
        if let Some(q) = out.send_quota() {
            notes.push(format!("sent {}/{} in 24h", q.sent_last24_hours(), q.max24_hour_send()));
        }
        let failure = if !out.sending_enabled() {
            notes.insert(0, "sending paused (SendingEnabled false)".into());
            Some(OutcomeClass::Account)
        } else if enforcement.eq_ignore_ascii_case("SHUTDOWN") {
            notes.insert(0, "account shut down".into());
            Some(OutcomeClass::Account)
        } else if out
            .send_quota()
            .is_some_and(|q| q.max24_hour_send() > 0.0 && q.sent_last24_hours() >= q.max24_hour_send())
        {
            notes.insert(0, "daily quota used up".into());
            Some(OutcomeClass::Account)
        } else {
            if enforcement.eq_ignore_ascii_case("PROBATION") {
                notes.insert(0, "on probation: still sending".into());
            }
            None
        };
        ProbeReport { failure, detail: truncate_detail(&notes.join("; ")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_types() {
        let c = |code: &str, message: &str, status: u16| classify(Some(code), message, status);
        assert_eq!(c("AccountSuspendedException", "Account suspended", 400), OutcomeClass::Account);
        assert_eq!(
            c("AccountSuspendedException:http://internal.amazon.com/coral/com.amazon.sesv2/", "", 400),
            OutcomeClass::Account
        );
        assert_eq!(c("com.amazonaws.sesv2#SendingPausedException", "", 400), OutcomeClass::Account);
        assert_eq!(c("MailFromDomainNotVerifiedException", "", 400), OutcomeClass::Account);
        assert_eq!(c("MessageRejected", "Illegal header", 400), OutcomeClass::BadRequest);
        assert_eq!(
            c("MessageRejected", "Email address is not verified. The following identities failed the check", 400),
            OutcomeClass::Account
        );
        assert_eq!(c("TooManyRequestsException", "Maximum sending rate exceeded.", 429), OutcomeClass::RateLimited);
        assert_eq!(c("TooManyRequestsException", "Daily message quota exceeded.", 429), OutcomeClass::Account);
        assert_eq!(c("ThrottlingException", "Rate exceeded", 400), OutcomeClass::RateLimited);
        assert_eq!(c("NotFoundException", "configuration set does not exist", 404), OutcomeClass::Account);
        assert_eq!(c("BadRequestException", "bad", 400), OutcomeClass::BadRequest);
        for code in
            ["InvalidClientTokenId", "AccessDeniedException", "SignatureDoesNotMatch", "UnrecognizedClientException"]
        {
            assert_eq!(c(code, "", 403), OutcomeClass::Account, "{code}");
        }
        assert_eq!(c("RequestExpired", "", 400), OutcomeClass::Transient);
        assert_eq!(c("InternalFailure", "", 500), OutcomeClass::Transient);
        assert_eq!(c("ServiceUnavailable", "", 503), OutcomeClass::Transient);
        assert_eq!(c("SomethingNew", "", 502), OutcomeClass::Transient);
        assert_eq!(c("SomethingNew", "", 400), OutcomeClass::BadRequest);
        assert_eq!(c("SomethingNew", "", 403), OutcomeClass::Account);
        assert_eq!(classify(None, "", 429), OutcomeClass::RateLimited);
    }
}
