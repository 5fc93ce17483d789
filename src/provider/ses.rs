//! The `ses` provider: Amazon SES v2 `SendEmail` with `Content.Raw` (the spooled bytes,
//! byte-exact) through the official SDK (`shared/providers.md`, Amazon SES v2).
//!
//! Credentials: the static keys of the config when given (the client is built at once, without
//! any I/O); otherwise the standard AWS chain (env, profile, web identity, IMDS), loaded on first
//! use because loading it is async. SDK retries are off: Baton's failover decides what happens
//! after a failure. The SDK's typed errors (type from `x-amzn-ErrorType` or `__type`) drive the
//! classification, then the message text, then the HTTP status. An unverified sender identity
//! (`MailFromDomainNotVerifiedException`, `MessageRejected` "Email address is not verified" /
//! "Did not have authority to send from") is `sender_unverified`: other domains keep SES.
//! At most 50 recipients go in one `SendEmail` (the shared batching in [`super::send`]).
//!
//! The probe is `GetAccount`. Sending-only keys may not call it: a permission error, a missing
//! operation or an answer the SDK cannot read is inconclusive and says what to grant; a rejected
//! key, a paused, shut-down or out-of-quota account is `account`; no answer or a 5xx is
//! `transient`.

use super::redact::Secrets;
use super::{Outbound, Provider, probe_failure};
use crate::config::SesConfig;
use crate::health::ProbeReport;
use crate::outcome::{OutcomeClass, SendReport, truncate_detail};
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_sesv2 as sesv2;
use sesv2::config::retry::RetryConfig;
use sesv2::config::timeout::TimeoutConfig;
use sesv2::config::{BehaviorVersion, Credentials, Region};
use sesv2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use sesv2::primitives::Blob;
use sesv2::types::{Destination, EmailContent, MessageTag, RawMessage, Template};
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
    secrets: Secrets,
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

/// An error type without its qualification: the type may come as `com.amazon…#Type` or with a
/// URL suffix (`Type:http://…`).
fn bare_code(code: &str) -> &str {
    code.rsplit('#').next().unwrap_or(code).split(':').next().unwrap_or(code)
}

/// `MessageRejected` texts that name the sender's identity (SES, and moto's emulation).
const SENDER_TEXTS: [&str; 2] = ["is not verified", "did not have authority to send from"];

/// The class of an SES error from its type (`code`), its text and the HTTP status.
fn classify(code: Option<&str>, message: &str, status: u16) -> OutcomeClass {
    let text = message.to_ascii_lowercase();
    match code.map(bare_code).unwrap_or_default() {
        "AccountSuspendedException" | "SendingPausedException" => OutcomeClass::Account,
        "MailFromDomainNotVerifiedException" => OutcomeClass::SenderUnverified,
        // "Email address is not verified. The following identities failed the check…"
        "MessageRejected" if SENDER_TEXTS.iter().any(|t| text.contains(t)) => OutcomeClass::SenderUnverified,
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
        let secrets = Secrets::new(config.secret_access_key.iter().chain(&config.session_token).map(String::as_str));
        if let (Some(key_id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
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
            secrets,
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

    /// The report for one `SendEmail` to `n` recipients.
    fn report(&self, n: usize, outcome: Result<Option<String>, Failure>) -> SendReport {
        match outcome {
            Ok(Some(id)) => SendReport::delivered(n, Some(id.clone()), format!("accepted: MessageId {id}")),
            Ok(None) => SendReport::delivered(n, None, "accepted (no MessageId in the answer)"),
            Err(f) => SendReport {
                retry_after: f.retry_after,
                possible_duplicate: f.possible_duplicate,
                ..SendReport::failed(f.class, n, self.scrub(f.detail))
            },
        }
    }

    fn scrub(&self, text: String) -> String {
        self.secrets.scrub(&text)
    }

    /// One `SendEmail` for the message's recipients: the provider's message id, or the failure.
    async fn send_one(&self, msg: &Outbound<'_>) -> Result<Option<String>, Failure> {
        let raw = RawMessage::builder().data(Blob::new(msg.body)).build().map_err(unbuildable)?;
        let destination = Destination::builder().set_to_addresses(Some(msg.recipients.to_vec())).build();
        let request = self
            .client()
            .await
            .send_email()
            .from_email_address(msg.mail_from)
            .destination(destination)
            .content(EmailContent::builder().raw(raw).build())
            .set_email_tags(email_tags(msg))
            .set_configuration_set_name(self.configuration_set.clone());
        self.call(request).await
    }

    /// One `SendEmail` with the app's `Content.Template` request (passed through from the
    /// SES-compatible API): its template, data, destination and reply-to as it gave them.
    async fn send_template_one(&self, msg: &Outbound<'_>) -> Result<Option<String>, Failure> {
        let call = super::http::template_request(msg).map_err(|r| Failure {
            class: r.class,
            detail: r.detail,
            retry_after: None,
            possible_duplicate: false,
        })?;
        let text =
            |v: &serde_json::Value, key: &str| v.get(key).and_then(serde_json::Value::as_str).map(str::to_string);
        let list = |v: Option<&serde_json::Value>, key: &str| -> Option<Vec<String>> {
            let items = v?.get(key)?.as_array()?;
            Some(items.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        };
        let template = call.get("Content").and_then(|c| c.get("Template")).cloned().unwrap_or_default();
        let content = EmailContent::builder()
            .template(
                Template::builder()
                    .set_template_name(text(&template, "TemplateName"))
                    .set_template_arn(text(&template, "TemplateArn"))
                    .set_template_data(text(&template, "TemplateData"))
                    .build(),
            )
            .build();
        let destination = call.get("Destination");
        let destination = Destination::builder()
            .set_to_addresses(list(destination, "ToAddresses"))
            .set_cc_addresses(list(destination, "CcAddresses"))
            .set_bcc_addresses(list(destination, "BccAddresses"))
            .build();
        let reply_to = call
            .get("ReplyToAddresses")
            .and_then(|v| v.as_array())
            .map(|items| items.iter().filter_map(|s| s.as_str().map(str::to_string)).collect::<Vec<_>>());
        let request = self
            .client()
            .await
            .send_email()
            .set_from_email_address(call.get("FromEmailAddress").and_then(|v| v.as_str()).map(str::to_string))
            .destination(destination)
            .set_reply_to_addresses(reply_to)
            .content(content)
            .set_email_tags(email_tags(msg))
            .set_configuration_set_name(self.configuration_set.clone());
        self.call(request).await
    }

    /// Sends a built `SendEmail` within the timeout: the provider's message id, or the failure.
    async fn call(
        &self,
        request: sesv2::operation::send_email::builders::SendEmailFluentBuilder,
    ) -> Result<Option<String>, Failure> {
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

fn unbuildable(e: impl std::fmt::Display) -> Failure {
    Failure {
        class: OutcomeClass::BadRequest,
        detail: truncate_detail(&format!("cannot build the request: {e}")),
        retry_after: None,
        possible_duplicate: false,
    }
}

/// Most `EmailTags` SES takes on one message.
const MAX_EMAIL_TAGS: usize = 50;

/// The app's tags and metadata as SES `EmailTags` (names and values within SES's character
/// rules); `None` when there are none.
fn email_tags(msg: &Outbound<'_>) -> Option<Vec<MessageTag>> {
    let safe = super::labels::name_value_safe;
    let pairs = super::labels::name_value_pairs(msg, |n, v| safe(n) && safe(v), MAX_EMAIL_TAGS);
    let tags: Vec<MessageTag> = pairs
        .iter()
        .filter_map(|(name, value)| MessageTag::builder().name(name.as_ref()).value(*value).build().ok())
        .collect();
    (!tags.is_empty()).then_some(tags)
}

#[async_trait::async_trait]
impl Provider for SesProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn max_recipients(&self) -> usize {
        MAX_RECIPIENTS
    }

    /// One `SendEmail`, the raw message untouched; the envelope recipients go in
    /// `Destination.ToAddresses` (SES delivers to the destination, the headers stay as they are).
    async fn send_batch(&self, msg: &Outbound<'_>) -> SendReport {
        let Ok(_slot) = self.slots.acquire().await else {
            return SendReport::failed(OutcomeClass::Transient, msg.recipients.len(), "provider closed");
        };
        self.report(msg.recipients.len(), self.send_one(msg).await)
    }

    /// A `Content.Template` request from the SES-compatible API, sent as the app gave it.
    async fn send_template(&self, msg: &Outbound<'_>) -> SendReport {
        let Ok(_slot) = self.slots.acquire().await else {
            return SendReport::failed(OutcomeClass::Transient, msg.recipients.len(), "provider closed");
        };
        self.report(msg.recipients.len(), self.send_template_one(msg).await)
    }

    /// `GetAccount`: sending enabled, not shut down, daily quota not used up. Probation and the
    /// sandbox still send, and say so in the detail.
    async fn probe(&self) -> ProbeReport {
        let client = self.client().await;
        let out = match tokio::time::timeout(self.timeout + Duration::from_secs(1), client.get_account().send()).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => {
                let code = e.code().map(str::to_string);
                let status = e.raw_response().map(|r| r.status().as_u16());
                let mut f = failure_from(&e, self.timeout);
                f.detail = self.scrub(f.detail);
                return probe_error(code.as_deref(), status, f);
            }
            Err(_) => {
                return ProbeReport::failed(OutcomeClass::Transient, format!("timed out after {:?}", self.timeout));
            }
        };
        let quota = out.send_quota().map(|q| (q.sent_last24_hours(), q.max24_hour_send()));
        account_verdict(&Account {
            sending_enabled: out.sending_enabled(),
            enforcement: out.enforcement_status().unwrap_or("UNKNOWN"),
            production: out.production_access_enabled(),
            quota,
        })
    }
}

/// What `GetAccount` says about sending.
struct Account<'a> {
    sending_enabled: bool,
    enforcement: &'a str,
    production: bool,
    /// (sent in the last 24 hours, 24-hour maximum).
    quota: Option<(f64, f64)>,
}

/// The verdict on a `GetAccount` answer.
fn account_verdict(a: &Account<'_>) -> ProbeReport {
    let mut notes = vec![format!("enforcement {}", a.enforcement)];
    if !a.production {
        notes.push("sandbox (no production access)".into());
    }
    if let Some((sent, max)) = a.quota {
        notes.push(format!("sent {sent}/{max} in 24h"));
    }
    let problem = if !a.sending_enabled {
        Some("sending paused (SendingEnabled false)")
    } else if a.enforcement.eq_ignore_ascii_case("SHUTDOWN") {
        Some("account shut down")
    } else if a.quota.is_some_and(|(sent, max)| max > 0.0 && sent >= max) {
        Some("daily quota used up")
    } else {
        None
    };
    match problem {
        Some(problem) => {
            notes.insert(0, problem.into());
            ProbeReport::failed(OutcomeClass::Account, truncate_detail(&notes.join("; ")))
        }
        None => {
            if a.enforcement.eq_ignore_ascii_case("PROBATION") {
                notes.insert(0, "on probation: still sending".into());
            }
            ProbeReport::usable(truncate_detail(&notes.join("; ")))
        }
    }
}

/// The verdict on a failed `GetAccount`: error type `code`, HTTP `status` when an answer came,
/// and the failure as a send would classify it.
fn probe_error(code: Option<&str>, status: Option<u16>, f: Failure) -> ProbeReport {
    let code = code.map(bare_code);
    let cannot_judge =
        |why: &str| ProbeReport::inconclusive(truncate_detail(&format!("GetAccount: {why} ({})", f.detail)));
    match (code, status) {
        (Some(c @ ("AccessDeniedException" | "AccessDenied" | "NotAuthorized" | "UnauthorizedOperation")), _) => {
            cannot_judge(&format!(
                "{c} — the key may send but cannot read the account; grant ses:GetAccount to this key, or set probe = false"
            ))
        }
        (Some("UnknownOperationException"), _) | (_, Some(404)) => {
            cannot_judge("the endpoint has no GetAccount — check region and endpoint, or set probe = false")
        }
        // An answer the SDK could not read (no error type): nothing to judge, unless the
        // status alone says the service is failing.
        (None, Some(status)) if status < 500 => {
            cannot_judge("an answer the SDK cannot read — check the endpoint, or set probe = false")
        }
        _ => probe_failure(f.class, f.detail),
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
        assert_eq!(
            c("MailFromDomainNotVerifiedException", "MAIL FROM domain not verified.", 400),
            OutcomeClass::SenderUnverified
        );
        assert_eq!(c("MessageRejected", "Illegal header", 400), OutcomeClass::BadRequest);
        assert_eq!(
            c(
                "MessageRejected",
                "Email address is not verified. The following identities failed the check in region EU-WEST-1: app@example.com",
                400
            ),
            OutcomeClass::SenderUnverified
        );
        assert_eq!(
            c("MessageRejected", "Did not have authority to send from email app@example.com", 400),
            OutcomeClass::SenderUnverified
        );
        assert_eq!(c("MessageRejected", "Sending suspended for this account.", 400), OutcomeClass::Account);
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

    fn failure(class: OutcomeClass, detail: &str) -> Failure {
        Failure { class, detail: detail.into(), retry_after: None, possible_duplicate: false }
    }

    #[test]
    fn probe_errors() {
        use crate::health::ProbeVerdict::{Failed, Inconclusive};
        let verdict = |code: Option<&str>, status: Option<u16>| {
            let class = match (code, status) {
                (Some(c), Some(s)) => classify(Some(c), "", s),
                (None, Some(s)) => crate::provider::http::class_for_status(s),
                (_, None) => OutcomeClass::Transient,
            };
            probe_error(code, status, failure(class, "raw detail"))
        };
        let cases = [
            (Some("AccessDeniedException"), Some(403), Inconclusive),
            (Some("AccessDenied"), Some(403), Inconclusive),
            (Some("NotAuthorized"), Some(403), Inconclusive),
            (Some("UnauthorizedOperation"), Some(403), Inconclusive),
            (Some("AccessDeniedException:http://internal.amazon.com/coral/com.amazon.sesv2/"), Some(403), Inconclusive),
            (Some("UnknownOperationException"), Some(400), Inconclusive),
            (Some("NotFoundException"), Some(404), Inconclusive),
            (None, Some(404), Inconclusive),
            (None, Some(200), Inconclusive),
            (None, Some(400), Inconclusive),
            (Some("ThrottlingException"), Some(429), Inconclusive),
            (Some("InvalidClientTokenId"), Some(403), Failed(OutcomeClass::Account)),
            (Some("SignatureDoesNotMatch"), Some(403), Failed(OutcomeClass::Account)),
            (Some("UnrecognizedClientException"), Some(403), Failed(OutcomeClass::Account)),
            (Some("UnrecognizedClient"), Some(403), Failed(OutcomeClass::Account)),
            (Some("AccountSuspendedException"), Some(400), Failed(OutcomeClass::Account)),
            (Some("InternalFailure"), Some(500), Failed(OutcomeClass::Transient)),
            (None, Some(502), Failed(OutcomeClass::Transient)),
            (None, None, Failed(OutcomeClass::Transient)),
        ];
        for (code, status, expected) in cases {
            let report = verdict(code, status);
            assert_eq!(report.verdict, expected, "{code:?} {status:?}: {}", report.detail);
            assert!(report.detail.contains("raw detail"), "{}", report.detail);
        }
        let denied = verdict(Some("AccessDeniedException"), Some(403)).detail;
        assert!(
            denied.starts_with("GetAccount: AccessDeniedException — the key may send but cannot read the account; grant ses:GetAccount to this key, or set probe = false"),
            "{denied}"
        );
        // Credentials that cannot be loaded are the operator's to fix: account.
        let report = probe_error(None, None, failure(OutcomeClass::Account, "no credentials"));
        assert_eq!(report.verdict, Failed(OutcomeClass::Account));
    }

    #[test]
    fn account_answers() {
        use crate::health::ProbeVerdict::{Failed, Usable};
        let account =
            |sending_enabled, enforcement, quota| Account { sending_enabled, enforcement, production: true, quota };
        let cases = [
            (account(true, "HEALTHY", Some((12.0, 50000.0))), Usable, "HEALTHY"),
            (account(true, "PROBATION", None), Usable, "probation"),
            (account(false, "HEALTHY", None), Failed(OutcomeClass::Account), "paused"),
            (account(true, "SHUTDOWN", None), Failed(OutcomeClass::Account), "shut down"),
            (account(true, "HEALTHY", Some((200.0, 200.0))), Failed(OutcomeClass::Account), "quota used up"),
        ];
        for (a, verdict, text) in cases {
            let report = account_verdict(&a);
            assert_eq!(report.verdict, verdict, "{}", report.detail);
            assert!(report.detail.contains(text), "{}", report.detail);
        }
        let sandbox = Account { production: false, ..account(true, "HEALTHY", None) };
        assert!(account_verdict(&sandbox).detail.contains("sandbox"));
    }
}
