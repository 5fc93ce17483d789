//! Amazon SES's API, served by Baton for apps that send with an AWS SDK (boto3, the AWS JS SDK,
//! nodemailer's SES transport, django-ses, django-anymail): they change only the endpoint
//! (`endpoint_url=`, `AWS_ENDPOINT_URL_SESV2` / `AWS_ENDPOINT_URL_SES`). Requests are signed
//! with SigV4 using one of the client's `aws_credentials` (`sigv4.rs` checks them).
//!
//! - **v2** (rest-json): `POST /v2/email/outbound-emails` (`SendEmail`): `FromEmailAddress`,
//!   `Destination` (`ToAddresses`, `CcAddresses`, `BccAddresses`), `ReplyToAddresses` (one),
//!   `Content.Simple` (`Subject`, `Body.Text`, `Body.Html`, `Headers`, `Attachments` with
//!   `ContentDisposition: INLINE` + `ContentId` for inline images) or `Content.Raw.Data` (the
//!   MIME, byte for byte; without `Destination` the recipients come from its headers), and
//!   `EmailTags` (Baton's metadata). `Content.Template` names a template stored at SES: the
//!   request is passed through as it came to the route's `ses` provider
//!   (`submit::TemplateRequest`). Answer `{"MessageId"}` (Baton's id). `GET /v2/email/account`
//!   answers as a healthy production account, so SDK-side checks pass.
//! - **v1** (query protocol, XML answers): `POST /` with `Action=SendEmail` (`Source`,
//!   `Destination.ToAddresses.member.N`, …, `Message.Subject.Data`, `Message.Body.Text.Data`,
//!   `Message.Body.Html.Data`, `ReplyToAddresses.member.N`, `Tags.member.N.Name/Value`),
//!   `Action=SendRawEmail` (`RawMessage.Data`, `Destinations.member.N`, `Source`) and
//!   `Action=GetSendQuota` (django-ses asks before sending; Baton has no daily quota: `-1`, as
//!   SES says "unlimited").
//!
//! `ConfigurationSetName` is the provider account's business and is ignored. Errors come in
//! AWS's shapes (v2: status, `x-amzn-ErrorType` and `{"message"}`; v1: `<ErrorResponse>`), so
//! each SDK raises its own typed error; 5xx only before anything is spooled (the SDKs retry).

use super::super::compose::{AddressInput, AttachmentInput, SendRequest, header_addresses};
use super::super::submit::{self, BodyBudget, Refusal, Submission, TemplateRequest, read_body};
use super::sigv4::{self, SigV4Error};
use crate::runtime::Client;
use crate::shared::Shared;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v2/email/outbound-emails", post(send_v2))
        .route("/v2/email/account", get(account_v2))
        .route("/", post(query_v1))
}

/// The service names a credential scope may name: boto3 and the JS SDK sign SES as `ses`;
/// `email` is the endpoint prefix some clients use.
const SERVICES: [&str; 2] = ["ses", "email"];

/// Which protocol an answer is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// v2: JSON, the code in `x-amzn-ErrorType`.
    RestJson,
    /// v1: XML.
    Query,
}

/// An SES error in the protocol's shape.
#[derive(Debug)]
struct SesError {
    protocol: Protocol,
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl SesError {
    fn new(protocol: Protocol, status: StatusCode, code: &'static str, message: impl Into<String>) -> SesError {
        SesError { protocol, status, code, message: message.into() }
    }

    /// A request Baton will not take as it is (the message names the field).
    fn invalid(protocol: Protocol, message: impl Into<String>) -> SesError {
        let code = match protocol {
            Protocol::RestJson => "BadRequestException",
            Protocol::Query => "InvalidParameterValue",
        };
        SesError::new(protocol, StatusCode::BAD_REQUEST, code, message)
    }

    fn from_refusal(protocol: Protocol, r: Refusal) -> SesError {
        let message = r.message();
        match r {
            Refusal::SenderNotAllowed(_) | Refusal::TooLarge(_) => {
                SesError::new(protocol, StatusCode::BAD_REQUEST, "MessageRejected", message)
            }
            // Nothing was spooled: a retry by the SDK cannot make a duplicate.
            Refusal::Busy | Refusal::InProgress | Refusal::SpoolFull | Refusal::ShuttingDown | Refusal::Internal => {
                SesError::new(protocol, StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", message)
            }
            Refusal::Invalid(_)
            | Refusal::HeaderInjection(_)
            | Refusal::IdempotencyConflict(_)
            | Refusal::NoTemplateProvider(_) => SesError::invalid(protocol, message),
        }
    }

    fn from_signature(protocol: Protocol, e: SigV4Error) -> SesError {
        let forbidden = StatusCode::FORBIDDEN;
        match e {
            SigV4Error::Missing => SesError::new(
                protocol,
                forbidden,
                "MissingAuthenticationToken",
                "Request is missing Authentication Token",
            ),
            SigV4Error::Malformed(why) => SesError::new(protocol, StatusCode::BAD_REQUEST, "IncompleteSignature", why),
            SigV4Error::UnknownKey => SesError::new(
                protocol,
                forbidden,
                match protocol {
                    Protocol::RestJson => "UnrecognizedClientException",
                    Protocol::Query => "InvalidClientTokenId",
                },
                "The security token included in the request is invalid.",
            ),
            SigV4Error::Mismatch => SesError::new(
                protocol,
                forbidden,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.",
            ),
            SigV4Error::Skewed => SesError::new(
                protocol,
                forbidden,
                "RequestTimeTooSkewed",
                "The difference between the request time and the current time is too large.",
            ),
        }
    }
}

impl IntoResponse for SesError {
    fn into_response(self) -> Response {
        match self.protocol {
            Protocol::RestJson => with_request_id(
                (self.status, [("x-amzn-ErrorType", self.code)], Json(json!({"message": self.message})))
                    .into_response(),
            ),
            Protocol::Query => {
                let body = format!(
                    "<ErrorResponse xmlns=\"{XMLNS}\"><Error><Type>Sender</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
                    self.code,
                    xml_escape(&self.message),
                    request_id()
                );
                (self.status, [(header::CONTENT_TYPE, "text/xml")], body).into_response()
            }
        }
    }
}

const XMLNS: &str = "http://ses.amazonaws.com/doc/2010-12-01/";

/// Text for an XML element: the five characters XML reserves, escaped. (Baton writes only these
/// few fixed answers; an XML library would add nothing but a dependency.)
fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;")
}

/// A request id for an answer (AWS SDKs log it).
fn request_id() -> String {
    super::super::new_message_id()
}

/// A v2 answer with its `x-amzn-RequestId` header: boto3 puts it in `ResponseMetadata`, and
/// django-ses reads it from there after a send (a missing one fails the app after the message
/// was taken).
fn with_request_id(mut response: Response) -> Response {
    if let Ok(id) = axum::http::HeaderValue::from_str(&request_id()) {
        response.headers_mut().insert("x-amzn-RequestId", id);
    }
    response
}

/// The client whose AWS credential signed the request.
fn authenticate(
    shared: &Shared,
    protocol: Protocol,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Arc<Client>, SesError> {
    let runtime = shared.runtime.load();
    let request = sigv4::Request { method: method.as_str(), path: uri.path(), query: uri.query(), headers, body };
    let lookup = |id: &str| runtime.client_by_aws_key(id).map(|(secret, client)| (secret.to_string(), client.clone()));
    sigv4::verify(&request, &SERVICES, SystemTime::now(), lookup).map_err(|e| {
        shared.metrics.ingest_rejections.with_label_values(&["http", "auth"]).inc();
        crate::ingest::log_refusal("ses", 403, "auth", "request signature refused");
        SesError::from_signature(protocol, e)
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Destination {
    #[serde(default)]
    to_addresses: Vec<String>,
    #[serde(default)]
    cc_addresses: Vec<String>,
    #[serde(default)]
    bcc_addresses: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Text {
    data: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Body2 {
    #[serde(default)]
    text: Option<Text>,
    #[serde(default)]
    html: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NameValue {
    name: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Attachment2 {
    raw_content: String,
    file_name: String,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    content_disposition: Option<String>,
    #[serde(default)]
    content_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Simple {
    #[serde(default)]
    subject: Option<Text>,
    #[serde(default)]
    body: Body2,
    #[serde(default)]
    headers: Vec<NameValue>,
    #[serde(default)]
    attachments: Vec<Attachment2>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Raw {
    data: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Content {
    #[serde(default)]
    simple: Option<Simple>,
    #[serde(default)]
    raw: Option<Raw>,
    #[serde(default)]
    template: Option<Value>,
}

/// The body of v2 `SendEmail` (fields Baton does not use are ignored).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendEmail {
    #[serde(default)]
    from_email_address: Option<String>,
    #[serde(default)]
    destination: Option<Destination>,
    #[serde(default)]
    reply_to_addresses: Vec<String>,
    #[serde(default)]
    content: Content,
    #[serde(default)]
    email_tags: Vec<NameValue>,
}

fn plain(list: Vec<String>) -> Vec<AddressInput> {
    list.into_iter().map(AddressInput::Plain).collect()
}

fn one_reply_to(protocol: Protocol, mut list: Vec<String>, field: &str) -> Result<Option<AddressInput>, SesError> {
    if list.len() > 1 {
        return Err(SesError::invalid(protocol, format!("{field}: Baton takes one reply-to address")));
    }
    Ok(list.pop().map(AddressInput::Plain))
}

/// The request for a raw message: the bytes as given; the envelope from `recipients`, or when
/// there are none, from the message's To/Cc (and Bcc) headers; the sender from `source` or
/// From:.
fn raw_request(
    protocol: Protocol,
    field: &str,
    data: &str,
    source: Option<String>,
    recipients: Vec<String>,
    metadata: BTreeMap<String, String>,
) -> Result<SendRequest, SesError> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| SesError::invalid(protocol, format!("{field}: not valid base64 ({e})")))?;
    let found = header_addresses(&raw);
    let from = source
        .or(found.from)
        .ok_or_else(|| SesError::invalid(protocol, "Source: required (the message has no From: either)"))?;
    let recipients = if recipients.is_empty() { [found.to, found.cc, found.bcc].concat() } else { recipients };
    Ok(SendRequest { metadata, ..SendRequest::raw(from, plain(recipients), &raw) })
}

/// Turns a v2 `SendEmail` (`raw`: as it came) into Baton's request.
fn translate_v2(email: SendEmail, raw: &[u8]) -> Result<Submission, SesError> {
    let p = Protocol::RestJson;
    let destination = email.destination.unwrap_or_default();
    let metadata: BTreeMap<String, String> = email.email_tags.into_iter().map(|t| (t.name, t.value)).collect();
    let given = [email.content.simple.is_some(), email.content.raw.is_some(), email.content.template.is_some()];
    if given.iter().filter(|&&g| g).count() != 1 {
        return Err(SesError::invalid(p, "Content: exactly one of Simple, Raw or Template is required"));
    }
    if email.content.template.is_some() {
        let from = email.from_email_address.ok_or_else(|| {
            SesError::invalid(p, "FromEmailAddress: required (Baton checks it against allowed_senders)")
        })?;
        let mut recipients = destination.to_addresses;
        recipients.extend(destination.cc_addresses);
        recipients.extend(destination.bcc_addresses);
        return Ok(TemplateRequest {
            api: "ses",
            from: AddressInput::Plain(from),
            recipients: plain(recipients),
            stream: None,
            tags: Vec::new(),
            metadata,
            body: raw.to_vec(),
        }
        .into());
    }
    if let Some(r) = email.content.raw {
        let mut recipients = destination.to_addresses;
        recipients.extend(destination.cc_addresses);
        recipients.extend(destination.bcc_addresses);
        return raw_request(p, "Content.Raw.Data", &r.data, email.from_email_address, recipients, metadata)
            .map(Submission::from);
    }
    let simple = email.content.simple.expect("one content kind is given");
    let from = email.from_email_address.ok_or_else(|| SesError::invalid(p, "FromEmailAddress: required"))?;
    let attachments = simple
        .attachments
        .into_iter()
        .map(|a| {
            let inline = a.content_disposition.as_deref().is_some_and(|d| d.eq_ignore_ascii_case("INLINE"));
            AttachmentInput {
                content_id: if inline { a.content_id.or_else(|| Some(a.file_name.clone())) } else { None },
                filename: a.file_name,
                content_type: a.content_type,
                content_base64: a.raw_content,
            }
        })
        .collect();
    Ok(SendRequest {
        from: from.into(),
        to: plain(destination.to_addresses),
        cc: plain(destination.cc_addresses),
        bcc: plain(destination.bcc_addresses),
        reply_to: one_reply_to(p, email.reply_to_addresses, "ReplyToAddresses")?,
        subject: simple.subject.map(|s| s.data),
        text: simple.body.text.map(|t| t.data),
        html: simple.body.html.map(|t| t.data),
        headers: simple.headers.into_iter().map(|h| (h.name, h.value)).collect(),
        attachments,
        tags: Vec::new(),
        metadata,
        stream: None,
        raw_base64: None,
    }
    .into())
}

/// The parts every handler starts with: the body within the budget and the signing client.
async fn signed(
    shared: &Shared,
    budget: &BodyBudget,
    protocol: Protocol,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<(submit::ReadBody, Arc<Client>), SesError> {
    let body = read_body(shared, budget, headers, body).await.map_err(|r| SesError::from_refusal(protocol, r))?;
    let client = authenticate(shared, protocol, method, uri, headers, &body.bytes)?;
    Ok((body, client))
}

async fn send_v2(
    State(shared): State<Arc<Shared>>,
    Extension(budget): Extension<BodyBudget>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, SesError> {
    let p = Protocol::RestJson;
    let (body, client) = signed(&shared, &budget, p, &method, &uri, &headers, body).await?;
    let email: SendEmail = super::parse(&shared, &body.bytes).map_err(|m| SesError::invalid(p, m))?;
    let request = translate_v2(email, &body.bytes).inspect_err(|_| {
        shared.metrics.ingest_rejections.with_label_values(&["http", "invalid"]).inc();
    })?;
    let template = matches!(request, Submission::Template(_));
    let id = submit::submit(&shared, &client, request, None).await.map_err(|r| SesError::from_refusal(p, r))?;
    let response = with_request_id(Json(json!({ "MessageId": id })).into_response());
    Ok(if template { super::passed_through(response) } else { response })
}

/// `GetAccount`: a healthy production account that may send, so SDK-side checks pass.
async fn account_v2(
    State(shared): State<Arc<Shared>>,
    Extension(budget): Extension<BodyBudget>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, SesError> {
    signed(&shared, &budget, Protocol::RestJson, &method, &uri, &headers, body).await?;
    Ok(with_request_id(
        Json(json!({
            "DedicatedIpAutoWarmupEnabled": false,
            "EnforcementStatus": "HEALTHY",
            "ProductionAccessEnabled": true,
            "SendingEnabled": true,
            "SendQuota": {"Max24HourSend": -1.0, "MaxSendRate": MAX_SEND_RATE, "SentLast24Hours": 0.0},
        }))
        .into_response(),
    ))
}

/// What Baton reports as its sending rate to SDKs that throttle themselves by it (django-ses's
/// auto-throttle): Baton takes mail far faster than that and has no per-second limit of its own.
const MAX_SEND_RATE: f64 = 1000.0;

/// The query protocol's parameters, in order (names may repeat).
struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// `prefix.member.1`, `prefix.member.2`, … in member order.
    fn members(&self, prefix: &str) -> Vec<String> {
        let start = format!("{prefix}.member.");
        let mut found: Vec<(u32, String)> =
            self.0.iter().filter_map(|(k, v)| Some((k.strip_prefix(&start)?.parse().ok()?, v.clone()))).collect();
        found.sort_by_key(|(n, _)| *n);
        found.into_iter().map(|(_, v)| v).collect()
    }

    /// `Tags.member.N.Name` / `.Value` as metadata.
    fn tags(&self) -> BTreeMap<String, String> {
        (1..)
            .map_while(|n| {
                let name = self.get(&format!("Tags.member.{n}.Name"))?;
                Some((name.to_string(), self.get(&format!("Tags.member.{n}.Value")).unwrap_or_default().to_string()))
            })
            .collect()
    }
}

/// v1 `SendEmail` as Baton's request.
fn translate_v1_send(params: &Params) -> Result<SendRequest, SesError> {
    let p = Protocol::Query;
    let from = params.get("Source").ok_or_else(|| SesError::invalid(p, "Source: required"))?;
    let text = |name: &str| params.get(name).map(str::to_string);
    Ok(SendRequest {
        from: from.to_string().into(),
        to: plain(params.members("Destination.ToAddresses")),
        cc: plain(params.members("Destination.CcAddresses")),
        bcc: plain(params.members("Destination.BccAddresses")),
        reply_to: one_reply_to(p, params.members("ReplyToAddresses"), "ReplyToAddresses")?,
        subject: text("Message.Subject.Data"),
        text: text("Message.Body.Text.Data"),
        html: text("Message.Body.Html.Data"),
        headers: BTreeMap::new(),
        attachments: Vec::new(),
        tags: Vec::new(),
        metadata: params.tags(),
        stream: None,
        raw_base64: None,
    })
}

/// A v1 success: `<{Action}Response><{Action}Result>{result}</…><ResponseMetadata>…`.
fn xml_answer(action: &str, result: &str) -> Response {
    let body = format!(
        "<{action}Response xmlns=\"{XMLNS}\"><{action}Result>{result}</{action}Result><ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></{action}Response>",
        request_id()
    );
    ([(header::CONTENT_TYPE, "text/xml")], body).into_response()
}

/// `POST /`: the v1 query protocol, by `Action`.
async fn query_v1(
    State(shared): State<Arc<Shared>>,
    Extension(budget): Extension<BodyBudget>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, SesError> {
    let p = Protocol::Query;
    let (body, client) = signed(&shared, &budget, p, &method, &uri, &headers, body).await?;
    let params = Params(form_urlencoded::parse(&body.bytes).into_owned().collect());
    let invalid = |e: SesError| {
        shared.metrics.ingest_rejections.with_label_values(&["http", "invalid"]).inc();
        e
    };
    let action = params.get("Action").unwrap_or_default().to_string();
    let request = match action.as_str() {
        "SendEmail" => translate_v1_send(&params).map_err(invalid)?,
        "SendRawEmail" => {
            let data = params
                .get("RawMessage.Data")
                .ok_or_else(|| invalid(SesError::invalid(p, "RawMessage.Data: required")))?;
            let source = params.get("Source").map(str::to_string);
            raw_request(p, "RawMessage.Data", data, source, params.members("Destinations"), params.tags())
                .map_err(invalid)?
        }
        "GetSendQuota" => {
            let quota = format!(
                "<Max24HourSend>-1.0</Max24HourSend><MaxSendRate>{MAX_SEND_RATE:.1}</MaxSendRate><SentLast24Hours>0.0</SentLast24Hours>"
            );
            return Ok(super::read(xml_answer("GetSendQuota", &quota)));
        }
        other => {
            let m = format!("Action {other:?}: Baton serves SendEmail, SendRawEmail and GetSendQuota");
            return Err(invalid(SesError::new(p, StatusCode::BAD_REQUEST, "InvalidAction", m)));
        }
    };
    let id = submit::submit(&shared, &client, request, None).await.map_err(|r| SesError::from_refusal(p, r))?;
    Ok(xml_answer(&action, &format!("<MessageId>{id}</MessageId>")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(body: Value) -> Result<Submission, SesError> {
        let raw = body.to_string();
        translate_v2(serde_json::from_value(body).unwrap(), raw.as_bytes())
    }

    #[test]
    fn a_v2_simple_email_becomes_a_baton_request() {
        let Ok(Submission::Compose(r)) = v2(json!({
            "FromEmailAddress": "Acme <app@example.com>",
            "Destination": {"ToAddresses": ["alice@example.net"], "CcAddresses": ["bob@example.net"], "BccAddresses": ["audit@example.com"]},
            "ReplyToAddresses": ["support@example.com"],
            "Content": {"Simple": {"Subject": {"Data": "Grüße", "Charset": "UTF-8"},
                "Body": {"Text": {"Data": "hi"}, "Html": {"Data": "<p>hi</p>"}},
                "Headers": [{"Name": "X-Ref", "Value": "42"}],
                "Attachments": [{"RawContent": "UE5H", "FileName": "logo.png", "ContentType": "image/png",
                                 "ContentDisposition": "INLINE", "ContentId": "logo"}]}},
            "EmailTags": [{"Name": "campaign", "Value": "reset"}], "ConfigurationSetName": "ignored",
        })) else {
            panic!("a message to compose")
        };
        assert_eq!(r.from, "Acme <app@example.com>");
        assert_eq!((r.to.len(), r.cc.len(), r.bcc.len()), (1, 1, 1));
        assert_eq!((r.subject.as_deref(), r.html.as_deref()), (Some("Grüße"), Some("<p>hi</p>")));
        assert_eq!(r.headers["X-Ref"], "42");
        assert_eq!(r.attachments[0].content_id.as_deref(), Some("logo"));
        assert_eq!(r.metadata["campaign"], "reset");
    }

    #[test]
    fn v2_raw_keeps_the_bytes_and_takes_recipients_from_destination_or_headers() {
        let mime = "From: app@example.com\r\nTo: a@example.net\r\nCc: c@example.net\r\nSubject: s\r\n\r\nbody\r\n";
        let data = base64::engine::general_purpose::STANDARD.encode(mime);
        let Ok(Submission::Compose(r)) = v2(json!({"Content": {"Raw": {"Data": data}}})) else { panic!() };
        assert_eq!(r.from, "app@example.com");
        assert_eq!(r.to.len(), 2, "To and Cc headers");
        assert_eq!(r.raw_base64.as_deref(), Some(data.as_str()));
        let Ok(Submission::Compose(r)) =
            v2(json!({"Destination": {"BccAddresses": ["hidden@example.net"]}, "Content": {"Raw": {"Data": data}}}))
        else {
            panic!()
        };
        assert!(matches!(&r.to[..], [AddressInput::Plain(a)] if a == "hidden@example.net"));
    }

    #[test]
    fn a_v2_template_is_passed_through_and_bad_content_is_named() {
        let body = json!({"FromEmailAddress": "app@example.com", "Destination": {"ToAddresses": ["a@example.net"]},
                          "Content": {"Template": {"TemplateName": "welcome", "TemplateData": "{\"name\":\"Ann\"}"}}});
        let Ok(Submission::Template(t)) = v2(body) else { panic!("a template request") };
        assert_eq!((t.api, t.recipients.len()), ("ses", 1));
        let e = v2(json!({"FromEmailAddress": "app@example.com", "Content": {}})).err().unwrap();
        assert_eq!((e.code, e.status), ("BadRequestException", StatusCode::BAD_REQUEST));
        assert!(e.message.starts_with("Content:"), "{}", e.message);
    }

    #[test]
    fn v1_parameters_become_a_baton_request() {
        let params = Params(
            form_urlencoded::parse(
                b"Action=SendEmail&Source=app%40example.com&Destination.ToAddresses.member.2=b%40example.net&Destination.ToAddresses.member.1=a%40example.net&Message.Subject.Data=Hi&Message.Body.Text.Data=x&Tags.member.1.Name=k&Tags.member.1.Value=v",
            )
            .into_owned()
            .collect(),
        );
        let r = translate_v1_send(&params).unwrap();
        assert!(
            matches!(&r.to[..], [AddressInput::Plain(a), AddressInput::Plain(b)] if a == "a@example.net" && b == "b@example.net")
        );
        assert_eq!((r.subject.as_deref(), r.metadata["k"].as_str()), (Some("Hi"), "v"));
    }

    #[test]
    fn errors_have_aws_shapes() {
        let xml = SesError::from_signature(Protocol::Query, SigV4Error::UnknownKey).into_response();
        assert_eq!(xml.status(), StatusCode::FORBIDDEN);
        let json = SesError::from_signature(Protocol::RestJson, SigV4Error::UnknownKey).into_response();
        assert_eq!(json.headers()["x-amzn-ErrorType"], "UnrecognizedClientException");
        assert!(json.headers().contains_key("x-amzn-RequestId"));
        assert_eq!(xml_escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }
}
