//! Amazon SES events, delivered by SNS (`sns.rs` checks the envelope and its signature). The
//! SNS `Message` is one SES record in either of SES's shapes: a notification
//! (`notificationType` Bounce, Complaint or Delivery) or an event-publishing record (`eventType`
//! Send, Delivery, Bounce, Complaint, Reject, Open, Click, Rendering Failure, DeliveryDelay or
//! Subscription). A record becomes one event per recipient it is about.

use super::sns::{self, CertCache, Envelope};
use super::{Inbound, Refused};
use crate::event::{EventType, ProviderEvent, RejectReason};
use crate::outcome::truncate_detail;
use serde_json::Value;
use std::time::UNIX_EPOCH;

/// The Message SES publishes once when a topic is set up for event publishing.
const TOPIC_VALIDATED: &str = "Successfully validated SNS topic for Amazon SES event publishing.";

/// Checks an SNS delivery for one of `sns_topic_arns`, fetching (or reusing) its signing
/// certificate through `certs`. The handler then confirms a SubscriptionConfirmation by GETting
/// its `subscribe_url`, ignores an UnsubscribeConfirmation, and [`parse`]s a Notification.
pub async fn verify(sns_topic_arns: &[String], certs: &CertCache, inbound: &Inbound<'_>) -> Result<Envelope, Refused> {
    let envelope = sns::check_envelope(inbound.body, sns_topic_arns)?;
    if let Some(header) = inbound.header("x-amz-sns-message-type")
        && header != envelope.message_type.as_str()
    {
        return Err(Refused::forbidden("x-amz-sns-message-type does not match the message's Type"));
    }
    let certificate = certs.get(&envelope.signing_cert_url).await?;
    sns::verify_with_certificate(&envelope, &certificate)?;
    Ok(envelope)
}

/// The events of an SNS delivery: none for a subscription confirmation or SES's topic check.
pub fn parse(body: &[u8]) -> Result<Vec<ProviderEvent>, String> {
    let envelope: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let text = |key: &str| envelope.get(key).and_then(Value::as_str);
    match text("Type") {
        Some("Notification") => {}
        Some("SubscriptionConfirmation" | "UnsubscribeConfirmation") => return Ok(Vec::new()),
        _ => return Err("the body is not an SNS message".to_string()),
    }
    let message = text("Message").ok_or("the SNS message has no Message")?;
    if message.trim() == TOPIC_VALIDATED {
        return Ok(Vec::new());
    }
    let record: Value =
        serde_json::from_str(message).map_err(|e| format!("the SNS Message is not an SES event record: {e}"))?;
    if !record.is_object() {
        return Err("the SNS Message is not an SES event record".to_string());
    }
    events(&record, text("MessageId"), text("Timestamp"))
}

/// One recipient's share of a record.
struct Outcome {
    recipient: Option<String>,
    event_type: EventType,
    reject_reason: Option<RejectReason>,
    detail: String,
}

fn events(record: &Value, sns_id: Option<&str>, sns_time: Option<&str>) -> Result<Vec<ProviderEvent>, String> {
    let kind = str_at(record, "/eventType").or(str_at(record, "/notificationType")).unwrap_or("unknown");
    // The record's own object: `bounce` for Bounce, `deliveryDelay` for DeliveryDelay…
    let object = match kind {
        "Rendering Failure" => record.get("failure"),
        "DeliveryDelay" => record.get("deliveryDelay"),
        _ => record.get(kind.to_ascii_lowercase()),
    }
    .unwrap_or(&Value::Null);
    let outcomes = outcomes(kind, object, &destination(record))?;
    let at = str_at(object, "/timestamp").or(str_at(record, "/mail/timestamp")).or(sns_time);
    let several = outcomes.len() > 1;
    Ok(outcomes
        .into_iter()
        .map(|o| ProviderEvent {
            event_type: o.event_type,
            provider_event: kind.to_string(),
            event_id: sns_id.map(|id| match (&o.recipient, several) {
                (Some(r), true) => format!("{id}:{r}"),
                _ => id.to_string(),
            }),
            recipient: o.recipient,
            // The `MessageId` of the SendEmail answer, which the adapter stores.
            provider_message_id: str_at(record, "/mail/messageId").map(str::to_string),
            at_ms: at.and_then(timestamp_ms).unwrap_or(0),
            reject_reason: o.reject_reason,
            detail: truncate_detail(&o.detail),
        })
        .collect())
}

/// The per-recipient outcomes of a record of type `kind`. Bounces, complaints, deliveries and
/// delays name their recipients; the other types are about the whole `destination`.
fn outcomes(kind: &str, object: &Value, destination: &[String]) -> Result<Vec<Outcome>, String> {
    let all = |event_type, reject_reason, detail: &str| {
        let recipients = match destination.is_empty() {
            true => vec![None],
            false => destination.iter().cloned().map(Some).collect(),
        };
        let each = |recipient| Outcome { recipient, event_type, reject_reason, detail: detail.to_string() };
        recipients.into_iter().map(each).collect::<Vec<_>>()
    };
    let text = |pointer: &str| str_at(object, pointer).unwrap_or_default();
    Ok(match kind {
        "Bounce" => {
            let (bounce_type, sub_type) = (text("/bounceType"), text("/bounceSubType"));
            let (event_type, reject_reason) = bounce(bounce_type, sub_type);
            listed(object, "bouncedRecipients", |r| Outcome {
                recipient: str_at(r, "/emailAddress").map(str::to_lowercase),
                event_type,
                reject_reason,
                detail: format!(
                    "{bounce_type}/{sub_type}: {}",
                    str_at(r, "/diagnosticCode").or(str_at(r, "/status")).unwrap_or("")
                ),
            })?
        }
        "Complaint" => listed(object, "complainedRecipients", |r| Outcome {
            recipient: str_at(r, "/emailAddress").map(str::to_lowercase),
            event_type: EventType::Complained,
            reject_reason: Some(RejectReason::Spam),
            detail: text("/complaintFeedbackType").to_string(),
        })?,
        "Delivery" => listed(object, "recipients", |r| Outcome {
            recipient: r.as_str().map(str::to_lowercase),
            event_type: EventType::Delivered,
            reject_reason: None,
            detail: text("/smtpResponse").to_string(),
        })?,
        "DeliveryDelay" => listed(object, "delayedRecipients", |r| Outcome {
            recipient: str_at(r, "/emailAddress").map(str::to_lowercase),
            event_type: EventType::Deferred,
            reject_reason: None,
            detail: format!("{}: {}", text("/delayType"), str_at(r, "/diagnosticCode").unwrap_or("")),
        })?,
        "Send" => all(EventType::Sent, None, ""),
        // SES's Reject: a virus was found, nothing was sent.
        "Reject" => all(EventType::Rejected, Some(RejectReason::Blocked), text("/reason")),
        "Open" => all(EventType::Opened, None, ""),
        "Click" => all(EventType::Clicked, None, ""),
        "Rendering Failure" => all(EventType::Failed, None, text("/errorMessage")),
        // An unsubscribe through SES's list management. The record does not say which
        // recipient changed their preferences: only a message to one recipient is read as theirs.
        "Subscription"
            if object.pointer("/newTopicPreferences/unsubscribeAll") == Some(&Value::Bool(true))
                && destination.len() == 1 =>
        {
            all(EventType::Unsubscribed, Some(RejectReason::Unsubscribed), text("/contactList"))
        }
        // Other subscription changes, Received (inbound mail) and anything newer.
        _ => vec![Outcome {
            recipient: None,
            event_type: EventType::Unknown,
            reject_reason: None,
            detail: String::new(),
        }],
    })
}

/// Bounce types as django-anymail reads them, made finer by SES's own classification: a
/// Transient bounce is retried by SES (soft), so `deferred`; an address SES knows does not exist
/// (`NoEmail`) is `invalid`; an Undetermined bounce is `bounced` for an `other` reason.
fn bounce(bounce_type: &str, sub_type: &str) -> (EventType, Option<RejectReason>) {
    match (bounce_type, sub_type) {
        ("Transient", "ContentRejected" | "AttachmentRejected") => (EventType::Deferred, Some(RejectReason::Blocked)),
        ("Transient", _) => (EventType::Deferred, None),
        ("Undetermined", _) => (EventType::Bounced, Some(RejectReason::Other)),
        (_, "NoEmail") => (EventType::Bounced, Some(RejectReason::Invalid)),
        // Permanent: General, Suppressed, OnAccountSuppressionList.
        _ => (EventType::Bounced, Some(RejectReason::Bounced)),
    }
}

/// One outcome per entry of the list `key` of `object`; a record without it is malformed.
fn listed(object: &Value, key: &str, each: impl Fn(&Value) -> Outcome) -> Result<Vec<Outcome>, String> {
    match object.get(key).and_then(Value::as_array) {
        Some(list) if !list.is_empty() => Ok(list.iter().map(each).collect()),
        _ => Err(format!("the SES record has no {key}")),
    }
}

fn destination(record: &Value) -> Vec<String> {
    let list = record.pointer("/mail/destination").and_then(Value::as_array);
    list.into_iter().flatten().filter_map(Value::as_str).map(str::to_lowercase).collect()
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}

fn timestamp_ms(text: &str) -> Option<u64> {
    Some(humantime::parse_rfc3339_weak(text).ok()?.duration_since(UNIX_EPOCH).ok()?.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::SuppressionReason;
    use crate::ingest::webhooks::sns::tests::{CERT_URL, TOPIC, documented_confirmation, signer};
    use axum::http::{HeaderMap, HeaderValue};
    use serde_json::json;

    /// The `mail` object of AWS's examples (SES docs "Examples of notifications" and "Examples of
    /// event data that Amazon SES publishes to Amazon SNS"), headers left out.
    fn mail(destination: &[&str]) -> Value {
        json!({
            "timestamp": "2016-01-27T14:59:38.237Z",
            "source": "john@example.com",
            "sourceArn": "arn:aws:ses:us-east-1:888888888888:identity/example.com",
            "sourceIp": "127.0.3.0",
            "sendingAccountId": "123456789012",
            "callerIdentity": "IAM_user_or_role_name",
            "messageId": "00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000",
            "destination": destination,
            "headersTruncated": false,
            "commonHeaders": {"from": ["John Doe <john@example.com>"], "to": destination, "messageId": "custom-message-ID", "subject": "Hello"}
        })
    }

    const THREE: [&str; 3] = ["jane@example.com", "mary@example.com", "Richard@example.com"];

    fn records() -> Vec<(&'static str, Value)> {
        vec![
            (
                "bounce notification",
                json!({"notificationType": "Bounce", "mail": mail(&THREE), "bounce": {
                "bounceType": "Permanent", "bounceSubType": "General", "reportingMTA": "dns; email.example.com",
                "bouncedRecipients": [{"emailAddress": "jane@example.com", "status": "5.1.1", "action": "failed",
                                       "diagnosticCode": "smtp; 550 5.1.1 <jane@example.com>... User"}],
                "timestamp": "2016-01-27T14:59:44.101Z", "feedbackId": "00000138111222aa-44455566-cccc-cccc-cccc-ddddaaaa068a-000000",
                "remoteMtaIp": "127.0.2.0"}}),
            ),
            (
                "complaint notification",
                json!({"notificationType": "Complaint", "mail": mail(&THREE), "complaint": {
                "userAgent": "AnyCompany Feedback Loop (V0.01)", "complainedRecipients": [{"emailAddress": "Richard@example.com"}],
                "complaintFeedbackType": "abuse", "arrivalDate": "2016-01-27T14:59:38.237Z", "timestamp": "2016-01-27T14:59:38.237Z",
                "feedbackId": "000001378603177f-18c07c78-fa81-4a58-9dd1-fedc3cb8f49a-000000"}}),
            ),
            (
                "delivery notification",
                json!({"notificationType": "Delivery", "mail": mail(&THREE), "delivery": {
                "timestamp": "2016-01-27T14:59:38.237Z", "recipients": ["jane@example.com", "mary@example.com"],
                "processingTimeMillis": 546, "reportingMTA": "a8-70.smtp-out.amazonses.com",
                "smtpResponse": "250 ok:  Message 64111812 accepted", "remoteMtaIp": "127.0.2.0"}}),
            ),
            ("send event", json!({"eventType": "Send", "mail": mail(&["recipient@example.com"]), "send": {}})),
            (
                "reject event",
                json!({"eventType": "Reject", "mail": mail(&["recipient@example.com"]), "reject": {"reason": "Bad content"}}),
            ),
            (
                "open event",
                json!({"eventType": "Open", "mail": mail(&["recipient@example.com"]), "open": {
                "ipAddress": "192.0.2.1", "timestamp": "2017-08-09T22:00:19.652Z", "userAgent": "Mozilla/5.0"}}),
            ),
            (
                "click event",
                json!({"eventType": "Click", "mail": mail(&["recipient@example.com"]), "click": {
                "ipAddress": "192.0.2.1", "link": "http://docs.aws.amazon.com/ses/latest/DeveloperGuide/send-email-smtp.html",
                "linkTags": {"samplekey0": ["samplevalue0"]}, "timestamp": "2017-08-09T23:51:25.570Z", "userAgent": "Mozilla/5.0"}}),
            ),
            (
                "rendering failure event",
                json!({"eventType": "Rendering Failure", "mail": mail(&["recipient@example.com"]), "failure": {
                "errorMessage": "Attribute 'attributeName' is not present in the rendering data.", "templateName": "MyTemplate"}}),
            ),
            (
                "delivery delay event",
                json!({"eventType": "DeliveryDelay", "mail": mail(&["recipient@example.com"]), "deliveryDelay": {
                "timestamp": "2020-06-16T23:45:44.208Z", "delayType": "TransientCommunicationFailure",
                "expirationTime": "2020-06-17T00:00:00.000Z",
                "delayedRecipients": [{"emailAddress": "recipient@example.com", "status": "4.4.1",
                                        "diagnosticCode": "smtp; 421 4.4.1 Unable to connect to remote host"}]}}),
            ),
            (
                "subscription event",
                json!({"eventType": "Subscription", "mail": mail(&["recipient@example.com"]), "subscription": {
                "contactList": "ContactListName", "timestamp": "2022-01-12T01:00:17.910Z", "source": "UnsubscribeHeader",
                "newTopicPreferences": {"unsubscribeAll": true, "topicSubscriptionStatus": [{"topicName": "ExampleTopicName", "subscriptionStatus": "OptOut"}]},
                "oldTopicPreferences": {"unsubscribeAll": false, "topicSubscriptionStatus": [{"topicName": "ExampleTopicName", "subscriptionStatus": "OptOut"}]}}}),
            ),
            (
                "received notification",
                json!({"notificationType": "Received", "mail": mail(&["recipient@example.com"]), "receipt": {}}),
            ),
        ]
    }

    /// An SNS Notification carrying `record`, unsigned.
    fn notification(record: &Value) -> Value {
        json!({
            "Type": "Notification",
            "MessageId": "b5f6e1c4-5b4b-5f2e-9a38-5d0b5cfd3c1e",
            "TopicArn": TOPIC,
            "Message": record.to_string(),
            "Timestamp": "2016-01-27T14:59:45.000Z",
            "SignatureVersion": "1",
            "Signature": "AAAA",
            "SigningCertURL": CERT_URL,
            "UnsubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x"
        })
    }

    fn parsed(name: &str) -> Vec<ProviderEvent> {
        let record = records().into_iter().find(|(n, _)| *n == name).unwrap().1;
        parse(&serde_json::to_vec(&notification(&record)).unwrap()).unwrap()
    }

    #[test]
    fn parses_both_record_shapes_into_one_event_per_recipient() {
        use EventType as E;
        use RejectReason as R;
        let cases: [(&str, &[&str], E, Option<R>); 11] = [
            ("bounce notification", &["jane@example.com"], E::Bounced, Some(R::Bounced)),
            ("complaint notification", &["richard@example.com"], E::Complained, Some(R::Spam)),
            ("delivery notification", &["jane@example.com", "mary@example.com"], E::Delivered, None),
            ("send event", &["recipient@example.com"], E::Sent, None),
            ("reject event", &["recipient@example.com"], E::Rejected, Some(R::Blocked)),
            ("open event", &["recipient@example.com"], E::Opened, None),
            ("click event", &["recipient@example.com"], E::Clicked, None),
            ("rendering failure event", &["recipient@example.com"], E::Failed, None),
            ("delivery delay event", &["recipient@example.com"], E::Deferred, None),
            ("subscription event", &["recipient@example.com"], E::Unsubscribed, Some(R::Unsubscribed)),
            ("received notification", &[], E::Unknown, None),
        ];
        for (name, recipients, event_type, reason) in cases {
            let events = parsed(name);
            let got: Vec<Option<&str>> = events.iter().map(|e| e.recipient.as_deref()).collect();
            let want: Vec<Option<&str>> = match recipients.is_empty() {
                true => vec![None],
                false => recipients.iter().map(|r| Some(*r)).collect(),
            };
            assert_eq!(got, want, "{name}");
            for e in &events {
                assert_eq!((e.event_type, e.reject_reason), (event_type, reason), "{name}");
                assert_eq!(
                    e.provider_message_id.as_deref(),
                    Some("00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000")
                );
            }
        }
    }

    #[test]
    fn details_times_and_event_ids() {
        let bounce = parsed("bounce notification").remove(0);
        assert_eq!(bounce.detail, "Permanent/General: smtp; 550 5.1.1 <jane@example.com>... User");
        assert_eq!(bounce.at_ms, 1_453_906_784_101);
        assert_eq!(bounce.event_id.as_deref(), Some("b5f6e1c4-5b4b-5f2e-9a38-5d0b5cfd3c1e"));
        assert_eq!(bounce.provider_event, "Bounce");
        let deliveries = parsed("delivery notification");
        assert_eq!(deliveries[0].detail, "250 ok:  Message 64111812 accepted");
        assert_eq!(deliveries[1].event_id.as_deref(), Some("b5f6e1c4-5b4b-5f2e-9a38-5d0b5cfd3c1e:mary@example.com"));
        assert_eq!(parsed("complaint notification")[0].detail, "abuse");
        assert_eq!(
            parsed("delivery delay event")[0].detail,
            "TransientCommunicationFailure: smtp; 421 4.4.1 Unable to connect to remote host"
        );
        // Records without a timestamp of their own take the mail's.
        assert_eq!(parsed("send event")[0].at_ms, 1_453_906_778_237);
    }

    #[test]
    fn bounce_types_map_to_bounced_or_deferred() {
        use EventType as E;
        use RejectReason as R;
        let cases = [
            ("Permanent", "General", E::Bounced, Some(R::Bounced)),
            ("Permanent", "NoEmail", E::Bounced, Some(R::Invalid)),
            ("Permanent", "Suppressed", E::Bounced, Some(R::Bounced)),
            ("Permanent", "OnAccountSuppressionList", E::Bounced, Some(R::Bounced)),
            ("Transient", "General", E::Deferred, None),
            ("Transient", "MailboxFull", E::Deferred, None),
            ("Transient", "ContentRejected", E::Deferred, Some(R::Blocked)),
            ("Undetermined", "Undetermined", E::Bounced, Some(R::Other)),
        ];
        for (kind, sub, event_type, reason) in cases {
            assert_eq!(bounce(kind, sub), (event_type, reason), "{kind}/{sub}");
        }
    }

    #[test]
    fn hard_bounces_complaints_and_unsubscribes_suppress() {
        assert_eq!(parsed("bounce notification")[0].suppression(), Some(SuppressionReason::Bounced));
        assert_eq!(parsed("complaint notification")[0].suppression(), Some(SuppressionReason::Complained));
        assert_eq!(parsed("subscription event")[0].suppression(), Some(SuppressionReason::Unsubscribed));
        assert_eq!(parsed("delivery delay event")[0].suppression(), None);
        assert_eq!(parsed("reject event")[0].suppression(), None);
    }

    #[test]
    fn confirmations_and_the_topic_check_carry_no_events() {
        assert_eq!(parse(&serde_json::to_vec(&documented_confirmation()).unwrap()).unwrap(), vec![]);
        let check = notification(&json!(null));
        let mut check = check.as_object().unwrap().clone();
        check.insert("Message".into(), json!(TOPIC_VALIDATED));
        assert_eq!(parse(&serde_json::to_vec(&check).unwrap()).unwrap(), vec![]);
    }

    #[test]
    fn unreadable_records_are_errors() {
        let with_message = |m: &str| {
            let mut n = notification(&json!(null));
            n["Message"] = json!(m);
            serde_json::to_vec(&n).unwrap()
        };
        assert!(parse(&with_message("Hello world!")).is_err());
        assert!(parse(&with_message("[1, 2]")).is_err());
        assert!(
            parse(&with_message(r#"{"notificationType": "Bounce", "bounce": {"bounceType": "Permanent"}}"#)).is_err()
        );
        assert!(parse(b"{\"Type\": \"Gossip\"}").is_err());
    }

    fn inbound_headers(message_type: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-amz-sns-message-type", HeaderValue::from_str(message_type).unwrap());
        h
    }

    async fn check(body: &[u8], headers: &HeaderMap, topics: &[String]) -> Result<Envelope, Refused> {
        let certs = CertCache::new().unwrap();
        certs.insert(CERT_URL, signer().cert_pem.clone());
        verify(topics, &certs, &Inbound { headers, body, now_ms: 0 }).await
    }

    #[tokio::test]
    async fn a_signed_ses_notification_verifies_and_parses() {
        let topics = vec![TOPIC.to_string()];
        let record = &records()[0].1;
        let body = serde_json::to_vec(&signer().sign(notification(record), &topics)).unwrap();
        let envelope = check(&body, &inbound_headers("Notification"), &topics).await.unwrap();
        assert_eq!(envelope.message_type, sns::MessageType::Notification);
        assert_eq!(parse(&body).unwrap()[0].recipient.as_deref(), Some("jane@example.com"));
        // The header may be absent, but not contradict the body.
        assert!(check(&body, &HeaderMap::new(), &topics).await.is_ok());
        assert_eq!(check(&body, &inbound_headers("SubscriptionConfirmation"), &topics).await.unwrap_err().status, 403);
    }

    #[tokio::test]
    async fn a_signed_subscription_confirmation_exposes_its_url() {
        let topics = vec![TOPIC.to_string()];
        let body = serde_json::to_vec(&signer().sign(documented_confirmation(), &topics)).unwrap();
        let envelope = check(&body, &inbound_headers("SubscriptionConfirmation"), &topics).await.unwrap();
        assert!(
            envelope
                .subscribe_url
                .unwrap()
                .starts_with("https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription")
        );
    }

    #[tokio::test]
    async fn wrong_topics_forgeries_and_foreign_certificates_are_refused() {
        let topics = vec![TOPIC.to_string()];
        let record = &records()[0].1;
        let signed = signer().sign(notification(record), &topics);
        let headers = inbound_headers("Notification");
        let status = |r: Result<Envelope, Refused>| r.unwrap_err().status;
        // Another topic of the same account is not configured.
        assert_eq!(
            status(
                check(
                    &serde_json::to_vec(&signed).unwrap(),
                    &headers,
                    &["arn:aws:sns:us-west-2:123456789012:Other".to_string()]
                )
                .await
            ),
            403
        );
        // The record changed after signing.
        let mut forged = signed.clone();
        forged["Message"] = json!(records()[2].1.to_string());
        assert_eq!(status(check(&serde_json::to_vec(&forged).unwrap(), &headers, &topics).await), 403);
        // A certificate on a foreign host is never fetched.
        let mut foreign = signed.clone();
        foreign["SigningCertURL"] = json!("https://certs.example.com/SimpleNotificationService-1.pem");
        assert_eq!(status(check(&serde_json::to_vec(&foreign).unwrap(), &headers, &topics).await), 403);
        // Unsigned.
        let mut unsigned = signed;
        unsigned.as_object_mut().unwrap().remove("Signature");
        assert_eq!(status(check(&serde_json::to_vec(&unsigned).unwrap(), &headers, &topics).await), 401);
    }
}
