//! Splits a spooled RFC 5322 message into the fields of JSON send APIs (SendGrid, Postmark,
//! Resend), with mail-parser. Providers that take raw MIME (Mandrill send-raw, SES Raw,
//! Mailgun messages.mime) do not use this: they get the bytes exactly as spooled.

use mail_parser::{Address, MessageParser, MimeHeaders};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub email: String,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub filename: String,
    pub content_type: String,
    pub content: Vec<u8>,
    /// Set for inline parts (`cid:` references in the HTML).
    pub content_id: Option<String>,
}

/// The parts of a message a JSON API asks for. Recipients come from the envelope: those named
/// in the To/Cc headers keep their place, the rest (Bcc) go to `bcc`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    pub from: Option<Mailbox>,
    pub reply_to: Vec<Mailbox>,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub bcc: Vec<Mailbox>,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    pub attachments: Vec<Attachment>,
    /// Headers the APIs do not have a field for (X-*, List-*, In-Reply-To, References, …).
    pub headers: Vec<(String, String)>,
    pub message_id: Option<String>,
}

/// Headers the APIs set themselves or take from their own fields.
const STRUCTURAL: [&str; 15] = [
    "from",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "return-path",
    "received",
    "sender",
    "dkim-signature",
];

fn mailboxes(addr: Option<&Address<'_>>) -> Vec<Mailbox> {
    addr.map(|a| {
        a.iter()
            .filter_map(|m| {
                Some(Mailbox {
                    email: m.address()?.to_string(),
                    name: m.name().map(str::to_string).filter(|n| !n.is_empty()),
                })
            })
            .collect()
    })
    .unwrap_or_default()
}

/// Parses `raw` for an API send to `recipients` (the envelope recipients still pending).
pub fn fields(raw: &[u8], mail_from: &str, recipients: &[String]) -> Fields {
    let Some(msg) = MessageParser::default().parse(raw) else {
        // Not parseable as a message: send the bytes as text rather than lose the mail.
        return Fields {
            from: Some(Mailbox { email: mail_from.to_string(), name: None }),
            bcc: recipients.iter().map(|r| Mailbox { email: r.clone(), name: None }).collect(),
            text: Some(String::from_utf8_lossy(raw).into_owned()),
            ..Fields::default()
        };
    };
    let header_to = mailboxes(msg.to());
    let header_cc = mailboxes(msg.cc());
    let mut f = Fields {
        from: mailboxes(msg.from()).into_iter().next().or(Some(Mailbox { email: mail_from.to_string(), name: None })),
        reply_to: mailboxes(msg.reply_to()),
        subject: msg.subject().unwrap_or_default().to_string(),
        text: msg.body_text(0).map(|t| t.into_owned()),
        html: msg.body_html(0).map(|h| h.into_owned()),
        message_id: msg.message_id().map(|m| format!("<{m}>")),
        ..Fields::default()
    };
    // mail-parser renders an HTML body as text (and vice versa) when only one exists; keep
    // only what the message really has.
    // A part without Content-Type is text/plain (RFC 2045).
    if !msg.text_part(0).is_some_and(|p| p.content_type().is_none() || p.is_content_type("text", "plain")) {
        f.text = None;
    }
    if !msg.html_part(0).is_some_and(|p| p.is_content_type("text", "html")) {
        f.html = None;
    }
    for rcpt in recipients {
        let find = |list: &[Mailbox]| list.iter().find(|m| m.email.eq_ignore_ascii_case(rcpt)).cloned();
        if let Some(m) = find(&header_to) {
            f.to.push(m);
        } else if let Some(m) = find(&header_cc) {
            f.cc.push(m);
        } else {
            f.bcc.push(Mailbox { email: rcpt.clone(), name: None });
        }
    }
    // An API needs at least one "to": promote when every pending recipient is Cc/Bcc.
    if f.to.is_empty() {
        if !f.cc.is_empty() {
            f.to.push(f.cc.remove(0));
        } else if !f.bcc.is_empty() {
            f.to.push(f.bcc.remove(0));
        }
    }
    for (name, value) in msg.headers_raw() {
        if !STRUCTURAL.contains(&name.to_ascii_lowercase().as_str()) {
            let unfolded: String =
                value.split(['\r', '\n']).map(str::trim).filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ");
            f.headers.push((name.to_string(), unfolded));
        }
    }
    for part in msg.attachments() {
        let content_type = part
            .content_type()
            .map(|ct| match ct.subtype() {
                Some(sub) => format!("{}/{}", ct.ctype(), sub),
                None => ct.ctype().to_string(),
            })
            .unwrap_or_else(|| "application/octet-stream".into());
        let inline = part.content_disposition().is_some_and(|d| d.ctype().eq_ignore_ascii_case("inline"));
        f.attachments.push(Attachment {
            filename: part.attachment_name().unwrap_or("attachment").to_string(),
            content_type,
            content: part.contents().to_vec(),
            content_id: if inline || part.content_id().is_some() {
                part.content_id().map(|c| c.trim_matches(['<', '>']).to_string())
            } else {
                None
            },
        });
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_a_built_message() {
        let raw = mail_builder::MessageBuilder::new()
            .from(("Billing", "billing@example.com"))
            .to(vec![("Alice", "alice@example.net")])
            .cc("carol@example.net")
            .reply_to("support@example.com")
            .subject("Grüße")
            .message_id("id-1@baton.test")
            .header("X-Campaign", mail_builder::headers::text::Text::new("reset"))
            .text_body("plain")
            .html_body("<p>html</p>")
            .attachment("application/pdf", "a.pdf", b"%PDF".to_vec())
            .write_to_vec()
            .unwrap();
        let rcpts = ["alice@example.net".to_string(), "carol@example.net".to_string(), "audit@example.com".to_string()];
        let f = fields(&raw, "billing@example.com", &rcpts);
        assert_eq!(f.from, Some(Mailbox { email: "billing@example.com".into(), name: Some("Billing".into()) }));
        assert_eq!(f.to, vec![Mailbox { email: "alice@example.net".into(), name: Some("Alice".into()) }]);
        assert_eq!(f.cc[0].email, "carol@example.net");
        assert_eq!(f.bcc[0].email, "audit@example.com");
        assert_eq!(f.reply_to[0].email, "support@example.com");
        assert_eq!(f.subject, "Grüße");
        assert_eq!(f.text.as_deref().map(str::trim_end), Some("plain"));
        assert_eq!(f.html.as_deref().map(str::trim_end), Some("<p>html</p>"));
        assert_eq!(f.message_id.as_deref(), Some("<id-1@baton.test>"));
        assert_eq!(f.headers, vec![("X-Campaign".to_string(), "reset".to_string())]);
        assert_eq!(f.attachments.len(), 1);
        assert_eq!(f.attachments[0].filename, "a.pdf");
        assert_eq!(f.attachments[0].content_type, "application/pdf");
        assert_eq!(f.attachments[0].content, b"%PDF");
    }

    #[test]
    fn only_bcc_left_is_promoted_to_to() {
        let raw = b"From: a@example.com\r\nTo: x@example.net\r\nSubject: s\r\n\r\nhello\r\n";
        let f = fields(raw, "a@example.com", &["hidden@example.org".to_string()]);
        assert_eq!(f.to[0].email, "hidden@example.org");
        assert!(f.bcc.is_empty());
        assert_eq!(f.html, None);
        assert_eq!(f.text.as_deref().map(str::trim_end), Some("hello"));
    }
}
