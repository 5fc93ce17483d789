//! What Baton checks and changes in a submitted message's header section, the same for raw
//! HTTP messages and SMTP. Its promise: a client cannot send as another tenant, and a `Bcc:`
//! header never reaches the next hop; everything else stays byte for byte as submitted.
//!
//! - `From:` and `Sender:` addresses must be within the client's `allowed_senders` (or its
//!   `header_senders`, for legitimate on-behalf-of sending): the envelope check alone let a
//!   client put another tenant's domain in `From:`.
//! - `Bcc:` fields are removed (RFC 5322 §3.6.3: their addresses are envelope recipients, not
//!   something the other recipients may see; submission servers remove them, RFC 6409 §8).
//! - A body with NUL or a bare CR (a CR not followed by LF) is refused: next hops that accept
//!   them can be tricked into seeing `<CR>.<CR>` as the end of the data (SMTP smuggling), and
//!   RFC 5322 §2.3 allows CR and LF only together.

use crate::runtime::Client;
use mail_parser::{HeaderName, HeaderValue, MessageParser};

/// Header fields a client may not set through the JSON `headers` of `POST /v1/messages`:
/// trace and authentication results belong to the hops that add them, and a forged one
/// misleads receivers and operators (the HTTP API's own fields are checked separately).
pub const TRACE_HEADERS: [&str; 10] = [
    "received",
    "return-path",
    "delivered-to",
    "dkim-signature",
    "authentication-results",
    "arc-seal",
    "arc-message-signature",
    "arc-authentication-results",
    "x-baton-envelope-to",
    "resent-",
];

/// Whether `name` is a trace or authentication header (any `Resent-*` included).
pub fn is_trace_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    TRACE_HEADERS.iter().any(|t| if t.ends_with('-') { lower.starts_with(t) } else { lower == *t })
}

/// The first `From:` / `Sender:` address the client may not use, if any.
pub fn foreign_header_sender(client: &Client, message: &[u8]) -> Option<String> {
    let parsed = MessageParser::new().parse_headers(message)?;
    parsed
        .headers()
        .iter()
        .filter(|h| matches!(h.name, HeaderName::From | HeaderName::Sender))
        .flat_map(|h| addresses(&h.value))
        .find(|a| !client.may_name_in_header(a))
}

fn addresses(value: &HeaderValue<'_>) -> Vec<String> {
    match value {
        HeaderValue::Address(a) => a.iter().filter_map(|x| x.address.as_deref().map(str::to_string)).collect(),
        _ => Vec::new(),
    }
}

/// Removes every `Bcc:` field from the header section; the rest is kept byte for byte.
pub fn strip_bcc(message: Vec<u8>) -> Vec<u8> {
    let ranges: Vec<(usize, usize)> = match MessageParser::new().parse_headers(&message) {
        Some(parsed) => parsed
            .headers()
            .iter()
            .filter(|h| matches!(h.name, HeaderName::Bcc))
            .map(|h| (h.offset_field as usize, h.offset_end as usize))
            .collect(),
        None => return message,
    };
    if ranges.is_empty() {
        return message;
    }
    let mut out = Vec::with_capacity(message.len());
    let mut at = 0;
    for (start, end) in ranges {
        out.extend_from_slice(&message[at..start]);
        at = end.min(message.len());
    }
    out.extend_from_slice(&message[at..]);
    out
}

/// Why a message body cannot be sent on: NUL, or a CR not followed by LF.
pub fn unsafe_line_ending(message: &[u8]) -> Option<&'static str> {
    if message.contains(&0) {
        return Some("contains a NUL character");
    }
    let bare_cr = message.iter().enumerate().any(|(i, &b)| b == b'\r' && message.get(i + 1) != Some(&b'\n'));
    bare_cr.then_some("contains a bare CR (a CR not followed by LF)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcc_fields_go_and_nothing_else_moves() {
        let raw = b"From: a@example.com\r\nBcc: hidden@example.net,\r\n other@example.net\r\nTo: b@example.net\r\nbcc: x@example.org\r\nSubject: hi\r\n\r\nBcc: in the body stays\r\n".to_vec();
        let out = strip_bcc(raw);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "From: a@example.com\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nBcc: in the body stays\r\n"
        );
        let plain = b"From: a@example.com\r\n\r\nbody\r\n".to_vec();
        assert_eq!(strip_bcc(plain.clone()), plain);
    }

    #[test]
    fn bare_cr_and_nul_are_found() {
        assert_eq!(unsafe_line_ending(b"a\r\nb\r\n"), None);
        assert!(unsafe_line_ending(b"a\r\n.\rb\r\n").is_some());
        assert!(unsafe_line_ending(b"a\r\nb\0\r\n").is_some());
        assert!(unsafe_line_ending(b"ends with CR\r").is_some());
    }

    #[test]
    fn trace_headers_are_known() {
        for name in ["Received", "DKIM-Signature", "ARC-Seal", "Resent-From", "X-Baton-Envelope-To", "Delivered-To"] {
            assert!(is_trace_header(name), "{name}");
        }
        assert!(!is_trace_header("X-Campaign"));
    }
}
