//! Turns an HTTP send request into an envelope and a standards-correct RFC 5322 message
//! (built with mail-builder: encoded UTF-8 headers, multipart/alternative, attachments), or
//! takes a raw message byte for byte, except for what `headers.rs` removes (`Bcc:`) and
//! refuses (NUL, bare CR). Trace and authentication headers cannot be set through `headers`.

use base64::Engine;
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address as MbAddress;
use mail_builder::headers::text::Text;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::str::FromStr;

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum AddressInput {
    Plain(String),
    Full { email: String, name: Option<String> },
}

/// The compatible APIs hand over their sender as text.
impl From<String> for AddressInput {
    fn from(text: String) -> AddressInput {
        AddressInput::Plain(text)
    }
}

/// Compares a sender given as text (tests of the compatible APIs).
impl PartialEq<&str> for AddressInput {
    fn eq(&self, other: &&str) -> bool {
        matches!(self, AddressInput::Plain(s) if s == other)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentInput {
    pub filename: String,
    #[serde(default)]
    pub content_type: Option<String>,
    pub content_base64: String,
    /// Set for an inline part the HTML refers to as `cid:<content_id>`.
    #[serde(default)]
    pub content_id: Option<String>,
}

/// Body of `POST /v1/messages`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// `"a@example.com"`, `"Name <a@example.com>"` or `{"email", "name"}`, like `to`.
    pub from: AddressInput,
    #[serde(default)]
    pub to: Vec<AddressInput>,
    #[serde(default)]
    pub cc: Vec<AddressInput>,
    #[serde(default)]
    pub bcc: Vec<AddressInput>,
    #[serde(default)]
    pub reply_to: Option<AddressInput>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub html: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub attachments: Vec<AttachmentInput>,
    /// Labels for the app's own bookkeeping, handed to providers that carry them (Mandrill
    /// tags, SendGrid categories, Postmark `Tag`, Mailgun `o:tag`, …).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Key/value pairs handed to providers that carry them (Mandrill metadata, SendGrid
    /// custom_args, Postmark `Metadata`, Resend and SES tags, Mailgun `v:`).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub stream: Option<String>,
    #[serde(default)]
    pub raw_base64: Option<String>,
}

impl SendRequest {
    /// About how many bytes of content the request carries (text, HTML, attachments, raw
    /// message): what composing it costs, roughly.
    pub fn content_len(&self) -> usize {
        let text = self.text.as_ref().map_or(0, String::len) + self.html.as_ref().map_or(0, String::len);
        let attached: usize = self.attachments.iter().map(|a| a.content_base64.len()).sum();
        text + attached + self.raw_base64.as_ref().map_or(0, String::len)
    }

    /// A request for a raw message, kept byte for byte: `from` and `to` are the envelope (the
    /// provider-compatible APIs' raw sends: Mandrill send-raw, SES Raw, Mailgun messages.mime).
    pub fn raw(from: String, to: Vec<AddressInput>, raw: &[u8]) -> SendRequest {
        SendRequest {
            from: from.into(),
            to,
            cc: Vec::new(),
            bcc: Vec::new(),
            reply_to: None,
            subject: None,
            text: None,
            html: None,
            headers: BTreeMap::new(),
            attachments: Vec::new(),
            tags: Vec::new(),
            metadata: BTreeMap::new(),
            stream: None,
            raw_base64: Some(base64::engine::general_purpose::STANDARD.encode(raw)),
        }
    }
}

/// The addresses a raw message's headers name, for APIs whose envelope may come from them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HeaderAddresses {
    /// The first From: address.
    pub from: Option<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
}

/// The From/To/Cc/Bcc addresses in `raw`'s header (empty when it has none or is no message).
pub fn header_addresses(raw: &[u8]) -> HeaderAddresses {
    let Some(parsed) = mail_parser::MessageParser::new().parse_headers(raw) else { return HeaderAddresses::default() };
    let list = |a: Option<&mail_parser::Address>| -> Vec<String> {
        a.map(|a| a.iter().filter_map(|x| x.address.as_deref().map(str::to_string)).collect()).unwrap_or_default()
    };
    HeaderAddresses {
        from: list(parsed.from()).into_iter().next(),
        to: list(parsed.to()),
        cc: list(parsed.cc()),
        bcc: list(parsed.bcc()),
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum ComposeError {
    /// 400: which field, what is wrong.
    Invalid(String),
    /// 422: CR/LF (or another control character) in a header value, subject or address.
    HeaderInjection(String),
    /// 413: the message is larger than `server.max_message_size`.
    TooLarge(u64),
}

/// A message ready for the spool.
#[derive(Debug)]
pub struct Composed {
    /// Envelope sender address (no display name).
    pub mail_from: String,
    /// Envelope recipients, deduplicated.
    pub recipients: Vec<String>,
    pub body: Vec<u8>,
    pub stream: Option<String>,
    pub tags: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    /// The provider a template request is passed through to (`body` is then that request).
    pub passthrough: Option<String>,
}

/// Headers that come from their own fields (or are generated) and may not be set via `headers`.
const RESERVED_HEADERS: [&str; 13] = [
    "from",
    "to",
    "cc",
    "bcc",
    "subject",
    "reply-to",
    "sender",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "return-path",
];

fn no_injection(field: &str, value: &str) -> Result<(), ComposeError> {
    if value.chars().any(|c| c == '\r' || c == '\n' || c == '\0') {
        return Err(ComposeError::HeaderInjection(format!("{field} contains a line break or NUL")));
    }
    Ok(())
}

struct Parsed {
    name: Option<String>,
    email: String,
}

/// A backslash escape in an address (`"v\\rx"@…`) would be unescaped by the parser and the
/// mail sent to a different address than the one given: refused instead.
fn no_escapes(field: &str, value: &str) -> Result<(), ComposeError> {
    if value.contains('\\') {
        return Err(ComposeError::Invalid(format!(
            "{field}: {value:?} contains a backslash escape; write the address without one"
        )));
    }
    Ok(())
}

fn parse_address(field: &str, input: &AddressInput) -> Result<Parsed, ComposeError> {
    match input {
        AddressInput::Plain(s) | AddressInput::Full { email: s, .. } => no_escapes(field, s)?,
    }
    match input {
        AddressInput::Plain(s) => {
            no_injection(field, s)?;
            let mailbox = lettre::message::Mailbox::from_str(s.trim())
                .map_err(|e| ComposeError::Invalid(format!("{field}: {s:?} is not a valid address ({e})")))?;
            Ok(Parsed { name: mailbox.name, email: mailbox.email.to_string() })
        }
        AddressInput::Full { email, name } => {
            no_injection(field, email)?;
            if let Some(n) = name {
                no_injection(field, n)?;
            }
            let address = lettre::Address::from_str(email.trim())
                .map_err(|e| ComposeError::Invalid(format!("{field}: {email:?} is not a valid address ({e})")))?;
            Ok(Parsed { name: name.clone().filter(|n| !n.is_empty()), email: address.to_string() })
        }
    }
}

/// The bare address of `input` (`"Name <a@example.com>"` → `a@example.com`), checked as for
/// a composed message; for requests Baton does not compose (template pass-through).
pub fn envelope_address(field: &str, input: &AddressInput) -> Result<String, ComposeError> {
    parse_address(field, input).map(|p| p.email)
}

fn mb_address(p: &Parsed) -> MbAddress<'static> {
    MbAddress::new_address(p.name.clone(), p.email.clone())
}

fn valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// Validates and builds the message. `id` becomes the Message-ID's local part.
pub fn compose(
    req: SendRequest,
    id: &str,
    hostname: &str,
    max_size: u64,
    max_recipients: usize,
) -> Result<Composed, ComposeError> {
    // Cheap limits first: a request with 90,000 recipients is refused before any work per
    // recipient (entries are counted as given, duplicates included).
    let given = req.to.len() + req.cc.len() + req.bcc.len();
    if given > max_recipients {
        return Err(ComposeError::Invalid(format!(
            "to: {given} recipients (to, cc and bcc), at most {max_recipients} are allowed per message"
        )));
    }
    let from = parse_address("from", &req.from)?;
    let lists = [("to", &req.to), ("cc", &req.cc), ("bcc", &req.bcc)];
    let mut parsed: Vec<(&str, Vec<Parsed>)> = Vec::new();
    for (field, list) in lists {
        let mut v = Vec::with_capacity(list.len());
        for (i, a) in list.iter().enumerate() {
            v.push(parse_address(&format!("{field}[{i}]"), a)?);
        }
        parsed.push((field, v));
    }
    // First occurrence wins, compared without case; a set keeps this linear.
    let mut seen = std::collections::HashSet::with_capacity(given);
    let recipients: Vec<String> = parsed
        .iter()
        .flat_map(|(_, list)| list)
        .filter(|p| seen.insert(p.email.to_ascii_lowercase()))
        .map(|p| p.email.clone())
        .collect();
    if recipients.is_empty() {
        return Err(ComposeError::Invalid("to: at least one recipient (to, cc or bcc) is required".into()));
    }
    if let Some(stream) = &req.stream {
        no_injection("stream", stream)?;
    }
    for tag in &req.tags {
        no_injection("tags", tag)?;
    }
    for (key, value) in &req.metadata {
        no_injection("metadata", key)?;
        no_injection("metadata", value)?;
    }

    let body = if let Some(raw) = &req.raw_base64 {
        let structured = req.subject.is_some()
            || req.text.is_some()
            || req.html.is_some()
            || !req.headers.is_empty()
            || !req.attachments.is_empty()
            || req.reply_to.is_some();
        if structured {
            return Err(ComposeError::Invalid(
                "raw_base64: cannot be combined with subject, text, html, headers, attachments or reply_to".into(),
            ));
        }
        // Estimated decoded size first, so an oversize request is refused before decoding.
        if (raw.len() as u64 / 4) * 3 > max_size + 3 {
            return Err(ComposeError::TooLarge(max_size));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(raw.trim())
            .map_err(|e| ComposeError::Invalid(format!("raw_base64: not valid base64 ({e})")))?;
        let prepared = prepare_raw(decoded, id, hostname)?;
        if let Some(why) = super::headers::unsafe_line_ending(&prepared) {
            return Err(ComposeError::Invalid(format!("raw_base64: the message {why}")));
        }
        super::headers::strip_bcc(prepared)
    } else {
        build_mime(&req, &from, &parsed, id, hostname)?
    };
    if body.len() as u64 > max_size {
        return Err(ComposeError::TooLarge(max_size));
    }
    Ok(Composed {
        mail_from: from.email,
        recipients,
        body,
        stream: req.stream,
        tags: req.tags,
        metadata: req.metadata,
        passthrough: None,
    })
}

fn build_mime(
    req: &SendRequest,
    from: &Parsed,
    lists: &[(&str, Vec<Parsed>)],
    id: &str,
    hostname: &str,
) -> Result<Vec<u8>, ComposeError> {
    let mut b = MessageBuilder::new().from(mb_address(from)).message_id(format!("{id}@{hostname}")).date(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0),
    );
    for (field, list) in lists {
        if list.is_empty() || *field == "bcc" {
            continue; // Bcc recipients are envelope-only.
        }
        let addrs = MbAddress::new_list(list.iter().map(mb_address).collect());
        b = if *field == "to" { b.to(addrs) } else { b.cc(addrs) };
    }
    if let Some(reply_to) = &req.reply_to {
        b = b.reply_to(mb_address(&parse_address("reply_to", reply_to)?));
    }
    if let Some(subject) = &req.subject {
        no_injection("subject", subject)?;
        b = b.subject(subject.clone());
    }
    for (name, value) in &req.headers {
        if !valid_header_name(name) {
            return Err(ComposeError::Invalid(format!("headers: {name:?} is not a valid header name")));
        }
        no_injection(&format!("headers.{name}"), value)?;
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(ComposeError::Invalid(format!(
                "headers: {name} is set from its own field and cannot be given here"
            )));
        }
        if super::headers::is_trace_header(name) {
            return Err(ComposeError::Invalid(format!(
                "headers: {name} is a trace or authentication header: only the hops that handle the message add those"
            )));
        }
        b = b.header(name.clone(), Text::new(value.clone()));
    }
    match (&req.text, &req.html) {
        (None, None) => {
            if req.attachments.is_empty() {
                return Err(ComposeError::Invalid("text: give text, html (or both), or raw_base64".into()));
            }
        }
        (text, html) => {
            for (field, value) in [("text", text), ("html", html)] {
                if let Some(why) = value.as_deref().and_then(|v| super::headers::unsafe_line_ending(v.as_bytes())) {
                    return Err(ComposeError::Invalid(format!("{field}: {why}")));
                }
            }
            if let Some(t) = text {
                b = b.text_body(t.clone());
            }
            if let Some(h) = html {
                b = b.html_body(h.clone());
            }
        }
    }
    for (i, a) in req.attachments.iter().enumerate() {
        no_injection(&format!("attachments[{i}].filename"), &a.filename)?;
        let content_type = a.content_type.clone().unwrap_or_else(|| "application/octet-stream".into());
        no_injection(&format!("attachments[{i}].content_type"), &content_type)?;
        if !content_type.contains('/') {
            return Err(ComposeError::Invalid(format!(
                "attachments[{i}].content_type: {content_type:?} is not a MIME type"
            )));
        }
        let data = base64::engine::general_purpose::STANDARD
            .decode(a.content_base64.trim())
            .map_err(|e| ComposeError::Invalid(format!("attachments[{i}].content_base64: not valid base64 ({e})")))?;
        b = match &a.content_id {
            Some(cid) => {
                no_injection(&format!("attachments[{i}].content_id"), cid)?;
                b.inline(content_type, cid.clone(), data)
            }
            None => b.attachment(content_type, a.filename.clone(), data),
        };
    }
    b.write_to_vec().map_err(|e| ComposeError::Invalid(format!("cannot build message: {e}")))
}

/// Checks a raw message has a header section, converts bare LF to CRLF, and adds a Message-ID
/// and a Date when the client did not give them (RFC 6409 §8.3, as Postfix does for
/// submissions).
fn prepare_raw(raw: Vec<u8>, id: &str, hostname: &str) -> Result<Vec<u8>, ComposeError> {
    let mut out = Vec::with_capacity(raw.len() + 64);
    let mut prev = 0u8;
    for &byte in &raw {
        if byte == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(byte);
        prev = byte;
    }
    let header_end = find(&out, b"\r\n\r\n").unwrap_or(out.len());
    let headers = &out[..header_end];
    let first_line = headers.split(|&b| b == b'\n').next().unwrap_or_default();
    if !first_line.contains(&b':') || first_line.first().is_some_and(|b| b.is_ascii_whitespace()) {
        return Err(ComposeError::Invalid("raw_base64: does not start with a header section".into()));
    }
    let has = |name: &[u8]| {
        headers
            .split(|&b| b == b'\n')
            .any(|line| line.len() >= name.len() && line[..name.len()].eq_ignore_ascii_case(name))
    };
    let mut added = String::new();
    if !has(b"message-id:") {
        added.push_str(&format!("Message-ID: <{id}@{hostname}>\r\n"));
    }
    if !has(b"date:") {
        added.push_str(&format!("Date: {}\r\n", mail_builder::headers::date::Date::now().to_rfc822()));
    }
    if added.is_empty() {
        return Ok(out);
    }
    let mut with_fields = added.into_bytes();
    with_fields.extend_from_slice(&out);
    Ok(with_fields)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> SendRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn builds_alternative_with_attachment() {
        let r = req(
            r#"{"from":"Billing <billing@example.com>","to":["alice@example.net",{"email":"bob@example.org","name":"Bøb"}],
            "bcc":["audit@example.com"],"subject":"Grüße","text":"hi","html":"<p>hi</p>","headers":{"X-Campaign":"reset"},
            "attachments":[{"filename":"a.txt","content_type":"text/plain","content_base64":"aGVsbG8="}]}"#,
        );
        let c = compose(r, "01ID", "baton.example.com", 1 << 20, 100).unwrap();
        assert_eq!(c.mail_from, "billing@example.com");
        assert_eq!(c.recipients, vec!["alice@example.net", "bob@example.org", "audit@example.com"]);
        let text = String::from_utf8(c.body).unwrap();
        assert!(text.contains("Message-ID: <01ID@baton.example.com>"), "{text}");
        assert!(text.contains("MIME-Version: 1.0"));
        assert!(text.contains("multipart/alternative"));
        assert!(text.contains("multipart/mixed"));
        assert!(text.contains("X-Campaign: reset"));
        assert!(text.contains("Subject: =?utf-8?"), "subject must be encoded: {text}");
        assert!(!text.contains("audit@example.com"), "bcc must not appear in headers");
    }

    #[test]
    fn refuses_injection_and_bad_fields() {
        let r =
            req(r#"{"from":"a@example.com","to":["b@example.net"],"subject":"x\r\nBcc: evil@example.org","text":"t"}"#);
        assert!(matches!(compose(r, "i", "h", 1000, 10), Err(ComposeError::HeaderInjection(_))));
        let r = req(
            r#"{"from":"a@example.com","to":["b@example.net"],"headers":{"X-A":"v\nBcc: x@example.org"},"text":"t"}"#,
        );
        assert!(matches!(compose(r, "i", "h", 1000, 10), Err(ComposeError::HeaderInjection(_))));
        let r = req(r#"{"from":"a@example.com","to":["\"v\\rx\"@example.net"],"text":"t"}"#);
        assert!(matches!(compose(r, "i", "h", 1000, 10), Err(ComposeError::Invalid(m)) if m.contains("backslash")));
        let r = req(r#"{"from":"a@example.com","to":["not an address"],"text":"t"}"#);
        assert!(matches!(compose(r, "i", "h", 1000, 10), Err(ComposeError::Invalid(m)) if m.starts_with("to[0]")));
        let r = req(r#"{"from":"a@example.com","to":[],"text":"t"}"#);
        assert!(matches!(compose(r, "i", "h", 1000, 10), Err(ComposeError::Invalid(_))));
        let r = req(r#"{"from":"a@example.com","to":["b@example.net"],"headers":{"Subject":"x"},"text":"t"}"#);
        assert!(matches!(compose(r, "i", "h", 1000, 10), Err(ComposeError::Invalid(_))));
        let r = req(r#"{"from":"a@example.com","to":["b@example.net"],"text":"0123456789"}"#);
        assert!(matches!(compose(r, "i", "h", 50, 10), Err(ComposeError::TooLarge(50))));
        let r = req(r#"{"from":"a@example.com","to":["b@example.net","c@example.net"],"text":"t"}"#);
        assert!(matches!(compose(r, "i", "h", 1000, 1), Err(ComposeError::Invalid(_))));
    }

    #[test]
    fn raw_messages_keep_bytes_and_get_message_id() {
        let raw = base64::engine::general_purpose::STANDARD.encode("Subject: hi\nFrom: a@example.com\n\nbody\n");
        let r = req(&format!(r#"{{"from":"a@example.com","to":["b@example.net"],"raw_base64":"{raw}"}}"#));
        let c = compose(r, "RAWID", "h.example.com", 1000, 10).unwrap();
        let text = String::from_utf8(c.body).unwrap();
        let (added, rest) = text.split_at(text.find("Subject").unwrap());
        assert!(added.starts_with("Message-ID: <RAWID@h.example.com>\r\nDate: "), "{text}");
        assert_eq!(rest, "Subject: hi\r\nFrom: a@example.com\r\n\r\nbody\r\n");
        let raw = base64::engine::general_purpose::STANDARD
            .encode("Message-ID: <x@y>\r\nDate: Wed, 2 Dec 2026 10:00:00 +0000\r\nSubject: hi\r\n\r\nbody\r\n");
        let r = req(&format!(r#"{{"from":"a@example.com","to":["b@example.net"],"raw_base64":"{raw}"}}"#));
        let c = compose(r, "RAWID", "h", 1000, 10).unwrap();
        assert_eq!(c.body, b"Message-ID: <x@y>\r\nDate: Wed, 2 Dec 2026 10:00:00 +0000\r\nSubject: hi\r\n\r\nbody\r\n");
    }
}
