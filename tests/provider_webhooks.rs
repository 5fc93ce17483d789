//! Provider webhooks in (`POST /webhooks/{provider}`): every provider type takes a request
//! signed its own way and refuses an unsigned (401) or wrongly signed (403) one, which changes
//! nothing; a hard bounce reported by Mandrill reaches the app as a signed `bounced` event with
//! Baton's message id, and the address is then never handed to any provider, also when the
//! primary is down and mail fails over.

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use baton::event::signature;
use baton::ingest::webhooks::{mailgun, mandrill, postmark, sendgrid, sns};
use serde_json::{Value, json};
use support::baton::{Baton, DEADLINE, KEY, message, recipient, smtp_provider};
use support::mock_http::{MockHttp, Recorded, Reply};
use support::mock_smtp::MockSmtp;

const MANDRILL_KEY: &str = "mandrill-webhook-key-for-tests";
const MANDRILL_URL: &str = "https://baton.example.com/webhooks/mandrill";
const MAILGUN_KEY: &str = "mailgun-signing-key-for-tests";
const RESEND_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw0Q5Rm9zJ9Zc=";
const APP_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:baton-ses-events";
const CERT_URL: &str = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000000000000000000000.pem";

fn now_secs() -> i64 {
    (baton::spool::record::now_ms() / 1000) as i64
}

/// A request as a provider would send it: body and headers.
struct Post {
    body: Vec<u8>,
    headers: Vec<(String, String)>,
}

async fn post(baton: &Baton, provider: &str, p: &Post) -> (u16, Value) {
    let mut req = baton.http.post(format!("{}/webhooks/{provider}", baton.base)).body(p.body.clone());
    for (k, v) in &p.headers {
        req = req.header(k, v);
    }
    let resp = req.send().await.unwrap();
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(Value::Null))
}

fn mandrill_post(key: &str, events: &Value) -> Post {
    let events = events.to_string();
    let body = form_urlencoded::Serializer::new(String::new()).append_pair("mandrill_events", &events).finish();
    let sig = mandrill::signature(key, MANDRILL_URL, &[("mandrill_events", &events)]);
    Post {
        body: body.into_bytes(),
        headers: vec![
            ("content-type".into(), "application/x-www-form-urlencoded".into()),
            (mandrill::SIGNATURE_HEADER.into(), sig),
        ],
    }
}

/// Mandrill's documented `hard_bounce` event, for the message Mandrill knows as `id`.
fn mandrill_bounce(id: &str, email: &str) -> Value {
    json!([{
        "event": "hard_bounce", "_id": id, "ts": now_secs(),
        "msg": {"_id": id, "email": email, "state": "bounced", "ts": now_secs(),
                "bounce_description": "bad_mailbox", "diag": "smtp;550 5.1.1 The email account that you tried to reach does not exist."}
    }])
}

fn without(p: Post, header: &str) -> Post {
    Post { headers: p.headers.into_iter().filter(|(k, _)| !k.eq_ignore_ascii_case(header)).collect(), ..p }
}

fn types(r: &Value) -> Vec<String> {
    r["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap().to_string()).collect()
}

/// The app's events received so far, each request's signature checked.
fn app_events(app: &MockHttp) -> Vec<Value> {
    let key = signature::decode_secret(APP_SECRET).unwrap();
    let verify = |r: &Recorded| {
        let (id, ts, sig) = (
            r.header("webhook-id").unwrap(),
            r.header("webhook-timestamp").unwrap(),
            r.header("webhook-signature").unwrap(),
        );
        signature::verify(&key, id, ts, sig, &r.body, ts.parse().unwrap(), 300).expect("signed with the app's secret");
        r.json().as_array().unwrap().clone()
    };
    app.requests_to("/mail-events").iter().flat_map(verify).collect()
}

#[tokio::test]
async fn a_hard_bounce_from_mandrill_reaches_the_app_and_the_address_is_never_sent_again() {
    let api = MockHttp::start().await;
    api.reply("/users/ping2", Reply::json(200, json!({"PING": "PONG!"})));
    api.reply(
        "/messages/send-raw",
        Reply::dynamic(|req: &Recorded| {
            let results: Vec<Value> = req.json()["to"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| json!({"email": e, "status": "sent", "_id": format!("md-{}", e.as_str().unwrap())}))
                .collect();
            Reply::json(200, Value::Array(results))
        }),
    );
    let backup = MockSmtp::start().await;
    let app = MockHttp::start().await;
    app.reply("/mail-events", Reply::text(204, ""));
    let body = format!(
        "[providers.mandrill]\ntype = \"mandrill\"\nbase_url = \"{}/api/1.0\"\napi_key = \"md-test-key\"\n\
         webhook_key = \"{MANDRILL_KEY}\"\nwebhook_url = \"{MANDRILL_URL}\"\n{}\n[retry]\nschedule = [\"1h\"]\n\n\
         [[routes]]\nname = \"default\"\nproviders = [\"mandrill\", \"backup\"]\n\n\
         [[webhooks]]\nurl = \"{}/mail-events\"\nsecret = \"{APP_SECRET}\"\nevents = [\"bounced\", \"suppressed\"]\n",
        api.url(),
        smtp_provider("backup", &backup, ""),
        app.url(),
    );
    let baton = Baton::start(&body).await;
    let id = baton.send(message(&["alice@example.net", "bob@example.net"], "welcome")).await;
    let status = baton.wait_final(&id).await;
    assert_eq!(recipient(&status, "bob@example.net")["provider_message_id"], "md-bob@example.net");

    // Unsigned, then signed with another key: refused, nothing recorded.
    let signed = mandrill_post(MANDRILL_KEY, &mandrill_bounce("md-bob@example.net", "bob@example.net"));
    let (code, err) =
        post(&baton, "mandrill", &without(mandrill_post(MANDRILL_KEY, &json!([])), mandrill::SIGNATURE_HEADER)).await;
    assert_eq!(code, 401, "{err}");
    let forged = mandrill_post("not-the-key", &mandrill_bounce("md-bob@example.net", "bob@example.net"));
    let (code, _) = post(&baton, "mandrill", &forged).await;
    assert_eq!(code, 403);
    assert_eq!(types(recipient(&baton.status(&id).await, "bob@example.net")), ["accepted", "sent"]);
    let (code, _) = support_get(&baton, "/v1/suppressions/bob@example.net").await;
    assert_eq!(code, 404, "a forged bounce suppresses nothing");

    let (code, answer) = post(&baton, "mandrill", &signed).await;
    assert_eq!((code, &answer["received"]), (200, &json!(1)), "{answer}");
    let status = baton.status(&id).await;
    let bob = recipient(&status, "bob@example.net");
    assert_eq!(types(bob), ["accepted", "sent", "bounced"], "{bob:#}");
    assert_eq!(bob["events"][2]["provider"], "mandrill");
    assert_eq!(types(recipient(&status, "alice@example.net")), ["accepted", "sent"]);

    // The app hears of it, signed, with Baton's id.
    let start = std::time::Instant::now();
    let bounced = loop {
        if let Some(e) = app_events(&app).into_iter().find(|e| e["type"] == "bounced") {
            break e;
        }
        assert!(start.elapsed() < DEADLINE, "no bounced event reached the app");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(bounced["message_id"], id.as_str());
    assert_eq!(bounced["recipient"], "bob@example.net");
    assert_eq!(bounced["provider"], "mandrill");
    assert_eq!(bounced["provider_message_id"], "md-bob@example.net");
    assert_eq!(bounced["client"], "app");
    assert!(
        bounced["detail"].as_str().unwrap().contains("bad_mailbox")
            || bounced["detail"].as_str().unwrap().contains("5.1.1"),
        "{bounced}"
    );

    let (code, entry) = support_get(&baton, "/v1/suppressions/bob@example.net").await;
    assert_eq!(code, 200);
    assert_eq!(
        (entry["reason"].as_str(), entry["provider"].as_str()),
        (Some("invalid"), Some("mandrill")),
        "bad_mailbox"
    );
    assert_eq!(entry["message_id"], id.as_str());

    // Mandrill goes down: the next message fails over, and the backup never sees bob.
    let drained = baton.http.post(format!("{}/admin/providers/mandrill/drain", baton.admin)).send().await.unwrap();
    assert_eq!(drained.status(), 200);
    let id2 = baton.send(message(&["bob@example.net", "carol@example.net"], "again")).await;
    let status = baton.wait_final(&id2).await;
    assert_eq!(recipient(&status, "bob@example.net")["status"], "suppressed", "{status:#}");
    assert_eq!(recipient(&status, "carol@example.net")["provider"], "backup");
    let got = backup.wait_for_messages(1, DEADLINE).await;
    assert_eq!(got[0].rcpts, vec!["carol@example.net"]);

    let m = baton.metrics().await;
    let count =
        |outcome| Baton::metric(&m, "baton_provider_webhooks_total", &[("provider", "mandrill"), ("outcome", outcome)]);
    assert_eq!((count("accepted"), count("refused")), (1.0, 2.0));
    assert_eq!(Baton::metric(&m, "baton_provider_events_total", &[("provider", "mandrill"), ("type", "bounced")]), 1.0);
    assert_eq!(Baton::metric(&m, "baton_provider_rate_sample", &[("provider", "mandrill")]), 2.0);
}

async fn support_get(baton: &Baton, path: &str) -> (u16, Value) {
    let resp = baton.http.get(format!("{}{path}", baton.base)).bearer_auth(KEY).send().await.unwrap();
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(Value::Null))
}

/// One provider type's case: a signed request with one hard bounce for `email`, the same
/// without credentials, and with wrong ones.
struct Case {
    provider: &'static str,
    email: &'static str,
    signed: Post,
    unsigned: Post,
    forged: Post,
}

fn sendgrid_case(key: &aws_lc_rs::signature::EcdsaKeyPair) -> Case {
    use aws_lc_rs::rand::SystemRandom;
    let email = "bounce-sendgrid@example.net";
    let body = json!([{
        "email": email, "timestamp": now_secs(), "event": "bounce", "type": "bounce",
        "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
        "status": "5.1.1", "sg_event_id": "sg-event-1", "sg_message_id": "sg-msg-1.filterdrecv-1"
    }])
    .to_string();
    let ts = now_secs().to_string();
    let sign = |pair: &aws_lc_rs::signature::EcdsaKeyPair| {
        let sig = pair.sign(&SystemRandom::new(), &sendgrid::signed_data(&ts, body.as_bytes())).unwrap();
        STANDARD.encode(sig.as_ref())
    };
    let other =
        aws_lc_rs::signature::EcdsaKeyPair::generate(&aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
    let post = |sig: Option<String>| Post {
        body: body.clone().into_bytes(),
        headers: [("content-type".to_string(), "application/json".to_string())]
            .into_iter()
            .chain(sig.map(|s| (sendgrid::SIGNATURE_HEADER.to_string(), s)))
            .chain([(sendgrid::TIMESTAMP_HEADER.to_string(), ts.clone())])
            .collect(),
    };
    Case {
        provider: "sendgrid",
        email,
        signed: post(Some(sign(key))),
        unsigned: post(None),
        forged: post(Some(sign(&other))),
    }
}

fn mailgun_case() -> Case {
    let email = "bounce-mailgun@example.net";
    let body = |key: Option<&str>, token: &str| {
        let ts = now_secs().to_string();
        let mut v = json!({
            "event-data": {
                "event": "failed", "severity": "permanent", "id": format!("mg-event-{token}"), "timestamp": now_secs(),
                "recipient": email, "reason": "bounce",
                "delivery-status": {"code": 550, "message": "5.1.1 No such user", "description": ""},
                "message": {"headers": {"message-id": "mg-msg-1@example.com"}}
            }
        });
        if let Some(key) = key {
            v["signature"] = json!({"timestamp": ts, "token": token, "signature": mailgun::signature(key, &ts, token)});
        }
        Post { body: v.to_string().into_bytes(), headers: vec![("content-type".into(), "application/json".into())] }
    };
    Case {
        provider: "mailgun",
        email,
        signed: body(Some(MAILGUN_KEY), "token-0123456789abcdef0123456789abcdef0123456789abcdef"),
        unsigned: body(None, "token-unsigned"),
        forged: body(Some("another-key"), "token-forged-0123456789abcdef0123456789abcdef012345"),
    }
}

fn postmark_case() -> Case {
    let email = "bounce-postmark@example.net";
    let body = json!({
        "RecordType": "Bounce", "Type": "HardBounce", "TypeCode": 1, "ID": 4323372036854775807u64,
        "MessageID": "pm-msg-1", "Email": email, "BouncedAt": "2026-12-01T10:00:00Z",
        "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "MessageStream": "outbound"
    })
    .to_string();
    let post = |auth: Option<String>| Post {
        body: body.clone().into_bytes(),
        headers: [("content-type".to_string(), "application/json".to_string())]
            .into_iter()
            .chain(auth.map(|a| ("authorization".to_string(), a)))
            .collect(),
    };
    Case {
        provider: "postmark",
        email,
        signed: post(Some(postmark::authorization("postmark-hook", "hook-password-0123"))),
        unsigned: post(None),
        forged: post(Some(postmark::authorization("postmark-hook", "guessed"))),
    }
}

fn resend_case() -> Case {
    let email = "bounce-resend@example.net";
    let body = json!({
        "type": "email.bounced", "created_at": "2026-12-01T10:00:00.000Z",
        "data": {"email_id": "rs-msg-1", "from": "app@example.com", "to": [email], "subject": "hi",
                 "created_at": "2026-12-01T09:59:00.000Z",
                 "bounce": {"message": "The recipient's email address does not exist.", "type": "Permanent", "subType": "General"}}
    })
    .to_string();
    let ts = now_secs().to_string();
    let post = |secret: Option<&str>| {
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        if let Some(secret) = secret {
            let key = signature::decode_secret(secret).unwrap();
            headers.push(("svix-id".into(), "msg_resend_1".into()));
            headers.push(("svix-timestamp".into(), ts.clone()));
            headers.push((
                "svix-signature".into(),
                signature::sign(&key, "msg_resend_1", ts.parse().unwrap(), body.as_bytes()),
            ));
        }
        Post { body: body.clone().into_bytes(), headers }
    };
    Case {
        provider: "resend",
        email,
        signed: post(Some(RESEND_SECRET)),
        unsigned: post(None),
        forged: post(Some("whsec_bm90LXRoZS1yZXNlbmQtc2VjcmV0LTAxMjM0NTY3")),
    }
}

fn ses_case(key: &aws_lc_rs::rsa::KeyPair) -> Case {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::RSA_PKCS1_SHA256;
    let email = "bounce-ses@example.net";
    let message = json!({
        "notificationType": "Bounce",
        "bounce": {"bounceType": "Permanent", "bounceSubType": "General", "timestamp": "2026-12-01T10:00:00.000Z",
                   "feedbackId": "0100-ses-feedback-1",
                   "bouncedRecipients": [{"emailAddress": email, "action": "failed", "status": "5.1.1",
                                          "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]},
        "mail": {"timestamp": "2026-12-01T09:59:00.000Z", "messageId": "ses-msg-1", "source": "app@example.com",
                 "destination": [email]}
    });
    let mut envelope = json!({
        "Type": "Notification", "MessageId": "5a4bdc5e-1d2e-5c1e-9f2e-000000000001", "TopicArn": TOPIC,
        "Message": message.to_string(), "Timestamp": "2026-12-01T10:00:01.000Z",
        "SignatureVersion": "2", "Signature": "AAAA", "SigningCertURL": CERT_URL,
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x"
    });
    let canonical = sns::check_envelope(envelope.to_string().as_bytes(), &[TOPIC.to_string()]).unwrap();
    let mut sig = vec![0; key.public_modulus_len()];
    key.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), canonical.string_to_sign().as_bytes(), &mut sig).unwrap();
    envelope["Signature"] = json!(STANDARD.encode(&sig));
    let post = |v: &Value| Post {
        body: v.to_string().into_bytes(),
        headers: vec![
            ("content-type".into(), "text/plain".into()),
            ("x-amz-sns-message-type".into(), "Notification".into()),
        ],
    };
    let mut unsigned = envelope.clone();
    unsigned.as_object_mut().unwrap().remove("Signature");
    let mut forged = envelope.clone();
    sig[10] ^= 0xff;
    forged["Signature"] = json!(STANDARD.encode(&sig));
    Case { provider: "ses", email, signed: post(&envelope), unsigned: post(&unsigned), forged: post(&forged) }
}

#[tokio::test]
async fn every_provider_type_takes_its_signed_webhooks_and_refuses_forged_ones() {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::KeyPair as _;
    let sendgrid_key =
        aws_lc_rs::signature::EcdsaKeyPair::generate(&aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
    let sendgrid_public: aws_lc_rs::encoding::PublicKeyX509Der = sendgrid_key.public_key().as_der().unwrap();
    let ses_key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let pkcs8: aws_lc_rs::encoding::Pkcs8V1Der = ses_key.as_der().unwrap();
    let rc_key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec()),
        &rcgen::PKCS_RSA_SHA256,
    )
    .unwrap();
    let cert_pem =
        rcgen::CertificateParams::new(vec!["sns.amazonaws.com".into()]).unwrap().self_signed(&rc_key).unwrap().pem();

    let api = MockHttp::start().await;
    let u = api.url();
    let body = format!(
        r#"[suppression]
scope = "global"

[providers.mandrill]
type = "mandrill"
base_url = "{u}"
api_key = "md-key"
probe = false
webhook_key = "{MANDRILL_KEY}"
webhook_url = "{MANDRILL_URL}"

[providers.sendgrid]
type = "sendgrid"
base_url = "{u}"
api_key = "SG.key"
probe = false
webhook_public_key = "{}"

[providers.mailgun]
type = "mailgun"
base_url = "{u}"
api_key = "mg-key"
domain = "mg.example.com"
probe = false
webhook_signing_key = "{MAILGUN_KEY}"

[providers.postmark]
type = "postmark"
base_url = "{u}"
server_token = "pm-token"
probe = false
webhook_username = "postmark-hook"
webhook_password = "hook-password-0123"

[providers.resend]
type = "resend"
base_url = "{u}"
api_key = "re_key"
probe = false
webhook_secret = "{RESEND_SECRET}"

[providers.ses]
type = "ses"
region = "us-east-1"
access_key_id = "AKIAWEBHOOKTEST00001"
secret_access_key = "ses-secret-for-tests"
endpoint = "{u}"
probe = false
sns_topic_arns = ["{TOPIC}"]

[providers.plain]
type = "mandrill"
base_url = "{u}"
api_key = "md-key-2"
probe = false

[[routes]]
name = "default"
providers = ["mandrill", "sendgrid", "mailgun", "postmark", "resend", "ses", "plain"]
"#,
        STANDARD.encode(sendgrid_public.as_ref()),
    );
    let baton = Baton::start(&body).await;
    baton.shared().inbox.sns_certs().expect("SNS certificates").insert(CERT_URL, cert_pem.as_bytes());

    let cases = vec![
        Case {
            provider: "mandrill",
            email: "bounce-mandrill@example.net",
            signed: mandrill_post(MANDRILL_KEY, &mandrill_bounce("md-msg-1", "bounce-mandrill@example.net")),
            unsigned: without(
                mandrill_post(MANDRILL_KEY, &mandrill_bounce("md-msg-1", "x@example.net")),
                mandrill::SIGNATURE_HEADER,
            ),
            forged: mandrill_post("another-key", &mandrill_bounce("md-msg-1", "bounce-mandrill@example.net")),
        },
        sendgrid_case(&sendgrid_key),
        mailgun_case(),
        postmark_case(),
        resend_case(),
        ses_case(&ses_key),
    ];
    for case in &cases {
        let p = case.provider;
        let (code, err) = post(&baton, p, &case.unsigned).await;
        assert_eq!(code, 401, "{p}: unsigned: {err}");
        assert!(err["error"]["message"].is_string(), "{p}: {err}");
        let (code, err) = post(&baton, p, &case.forged).await;
        assert_eq!(code, 403, "{p}: forged: {err}");
        let admin = format!("{}/admin/suppressions/{}", baton.admin, case.email);
        assert_eq!(
            baton.http.get(&admin).send().await.unwrap().status(),
            404,
            "{p}: a refused request changes nothing"
        );

        let (code, answer) = post(&baton, p, &case.signed).await;
        assert_eq!(code, 200, "{p}: signed: {answer}");
        assert!(answer["received"].as_u64().unwrap() >= 1, "{p}: {answer}");
        let listed: Value = baton.http.get(&admin).send().await.unwrap().json().await.unwrap();
        let entry = &listed["suppressions"][0];
        assert_eq!(entry["provider"], p, "{p}: the hard bounce suppressed the address: {listed:#}");
        assert_eq!(entry["client"], Value::Null, "{p}: global scope");
        let m = baton.metrics().await;
        assert_eq!(
            Baton::metric(&m, "baton_provider_events_total", &[("provider", p), ("type", "bounced")]),
            1.0,
            "{p}"
        );
        assert_eq!(
            Baton::metric(&m, "baton_provider_webhooks_total", &[("provider", p), ("outcome", "refused")]),
            2.0,
            "{p}"
        );
    }

    // Mailgun takes a token once: the same signed request again is a replay.
    let (code, _) = post(&baton, "mailgun", &cases[2].signed).await;
    assert_eq!(code, 403);
    // A provider without webhook settings has no webhook endpoint; nor has an unknown name.
    let (code, _) = post(&baton, "plain", &cases[0].signed).await;
    assert_eq!(code, 404);
    let (code, _) = post(&baton, "nope", &cases[0].signed).await;
    assert_eq!(code, 404);
    // Mandrill checks the URL with HEAD before saving it.
    let head = baton.http.head(format!("{}/webhooks/mandrill", baton.base)).send().await.unwrap();
    assert_eq!(head.status(), 200);
}
