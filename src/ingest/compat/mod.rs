//! Provider-compatible APIs: an app keeps its provider's SDK and points it at Baton. Each
//! module is "parse the provider's request into Baton's [`SendRequest`]" plus "answer in the
//! provider's shape", around the one shared path into the spool (`ingest::submit`); nothing
//! downstream knows which API a message came in through.
//!
//! [`SendRequest`]: super::compose::SendRequest

pub mod mailgun;
pub mod mandrill;
pub mod merge;
pub mod postmark;
pub mod resend;
pub mod sendgrid;
pub mod ses;
pub mod sigv4;

pub use crate::config::COMPATIBLE_APIS as APIS;

use crate::runtime::Client;
use crate::shared::Shared;
use axum::Router;
use axum::extract::Request;
use axum::http::Method;
use axum::middleware::Next;
use std::sync::Arc;

/// Marks the answer to a request that was passed through as a provider-stored template
/// (a response extension, read by the counting layer of [`routes`]).
#[derive(Debug, Clone, Copy)]
pub struct TemplatePassthrough;

/// The routes of compatible API `api` (one of [`APIS`]), every send request counted in
/// `baton_compat_requests_total{api, outcome}`: `accepted` (spooled to be composed and sent
/// through the route), `template_passthrough` (a provider-stored template, spooled for the
/// route's provider of this type), `refused` (any error answer). Reads — `GET` requests and
/// answers marked with [`read`] (Mandrill `users/ping2`, SES `GetSendQuota`) — are not sends and
/// are not counted.
pub fn routes(api: &'static str, shared: &Shared) -> Router<Arc<Shared>> {
    let router = match api {
        "mandrill" => mandrill::routes(),
        "sendgrid" => sendgrid::routes(),
        "postmark" => postmark::routes(),
        "resend" => resend::routes(),
        "ses" => ses::routes(),
        "mailgun" => mailgun::routes(),
        other => unreachable!("compatible_apis is validated: {other}"),
    };
    let counter = shared.metrics.compat_requests.clone();
    router.layer(axum::middleware::from_fn(move |request: Request, next: Next| {
        let counter = counter.clone();
        async move {
            let post = request.method() == Method::POST;
            let response = next.run(request).await;
            if post && response.extensions().get::<Read>().is_none() {
                let outcome = if !response.status().is_success() {
                    "refused"
                } else if response.extensions().get::<TemplatePassthrough>().is_some() {
                    "template_passthrough"
                } else {
                    "accepted"
                };
                counter.with_label_values(&[api, outcome]).inc();
            }
            response
        }
    }))
}

/// Marks the answer to a POST that reads rather than sends (not counted as a send).
#[derive(Debug, Clone, Copy)]
pub struct Read;

/// Marks `response` as the answer to a read (see [`Read`]), success or not.
pub fn read(mut response: axum::response::Response) -> axum::response::Response {
    response.extensions_mut().insert(Read);
    response
}

/// Marks `response` as the answer to a template pass-through.
pub fn passed_through(mut response: axum::response::Response) -> axum::response::Response {
    response.extensions_mut().insert(TemplatePassthrough);
    response
}

/// Why a compatible API could not tell who is calling; each API answers in its own shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credential where the provider's SDK puts it.
    Missing,
    /// A credential that is no client's API key.
    Invalid,
}

/// The client whose Baton API key came where the provider's SDK sends its key (counted as an
/// `auth` rejection when there is none).
pub fn client(shared: &Shared, key: Option<&str>) -> Result<Arc<Client>, AuthFailure> {
    let refused = |failure| {
        shared.metrics.ingest_rejections.with_label_values(&["http", "auth"]).inc();
        let why = match failure {
            AuthFailure::Missing => "missing API key",
            AuthFailure::Invalid => "invalid API key",
        };
        crate::ingest::log_refusal("compatible API", 401, "auth", why);
        failure
    };
    let key = key.map(str::trim).filter(|k| !k.is_empty()).ok_or_else(|| refused(AuthFailure::Missing))?;
    shared.runtime.load().client_by_key(key).cloned().ok_or_else(|| refused(AuthFailure::Invalid))
}

/// Parses a provider-shaped JSON body; the error names the field (`to[0]: …`) and is counted
/// as an `invalid` rejection.
pub fn parse<T: serde::de::DeserializeOwned>(shared: &Shared, bytes: &[u8]) -> Result<T, String> {
    let mut json = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut json).map_err(|e| refused(shared, e))
}

/// [`parse`] for one item of an already parsed batch.
pub fn parse_value<T: serde::de::DeserializeOwned>(shared: &Shared, value: &serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| refused(shared, e))
}

fn refused(shared: &Shared, e: serde_path_to_error::Error<serde_json::Error>) -> String {
    shared.metrics.ingest_rejections.with_label_values(&["http", "invalid"]).inc();
    match e.path().to_string().as_str() {
        "." | "?" => format!("invalid JSON body: {}", e.inner()),
        path => format!("{path}: {}", e.inner()),
    }
}
