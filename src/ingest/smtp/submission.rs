//! The header fields Baton adds to a message submitted over SMTP, as a submission server may
//! (RFC 6409 §8): `Date:` (§8.2) and `Message-ID:` (§8.3), each only when the message has none,
//! because several receivers refuse mail without them. They go right after Baton's `Received:`
//! header; the client's own bytes are not changed (a field that is present but malformed is
//! left as it is).

/// Which of the two fields the client's header section has.
#[derive(Debug, Default, PartialEq, Eq)]
struct Present {
    date: bool,
    message_id: bool,
}

/// Looks through the header section of `content` (the message as the client sent it, line
/// ends already CRLF): up to the empty line that ends it, or the first line that is neither a
/// field nor a folded continuation (the body of a message without headers).
fn present(content: &[u8]) -> Present {
    let mut found = Present::default();
    for line in content.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            break;
        };
        // RFC 5322 §4.5 (obsolete syntax): white space may precede the colon.
        let name = line[..colon].trim_ascii_end();
        found.date |= name.eq_ignore_ascii_case(b"Date");
        found.message_id |= name.eq_ignore_ascii_case(b"Message-ID");
    }
    found
}

/// Inserts the missing fields at `at` (the end of Baton's `Received:` header), before the
/// client's content `body[at..]`. `date` is the RFC 5322 date-time of acceptance; the
/// Message-ID is `<id@hostname>`, the same form the HTTP API gives its messages.
pub fn add_missing_fields(body: &mut Vec<u8>, at: usize, id: &str, hostname: &str, date: &str) {
    let found = present(&body[at..]);
    let mut fields = String::new();
    if !found.date {
        fields.push_str(&format!("Date: {date}\r\n"));
    }
    if !found.message_id {
        fields.push_str(&format!("Message-ID: <{id}@{hostname}>\r\n"));
    }
    if !fields.is_empty() {
        body.splice(at..at, fields.into_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "Tue, 1 Jul 2025 10:52:37 +0000";

    fn added(content: &str) -> String {
        let mut body = format!("Received: x\r\n{content}").into_bytes();
        add_missing_fields(&mut body, 13, "01ID", "baton.test", DATE);
        String::from_utf8(body).unwrap()
    }

    #[test]
    fn both_missing_are_added_after_received() {
        assert_eq!(
            added("Subject: hi\r\n\r\nbody\r\n"),
            format!("Received: x\r\nDate: {DATE}\r\nMessage-ID: <01ID@baton.test>\r\nSubject: hi\r\n\r\nbody\r\n")
        );
    }

    #[test]
    fn present_fields_are_kept_whatever_their_case() {
        let full = "date: Mon, 30 Jun 2025 08:00:00 +0200\r\nMESSAGE-id : <a@b>\r\n\r\nbody\r\n";
        assert_eq!(added(full), format!("Received: x\r\n{full}"));
        assert_eq!(
            added("Message-Id: <a@b>\r\nSubject: x\r\n\r\n"),
            format!("Received: x\r\nDate: {DATE}\r\nMessage-Id: <a@b>\r\nSubject: x\r\n\r\n")
        );
    }

    #[test]
    fn only_the_header_section_counts() {
        let in_body = "Subject: x\r\n\r\nDate: not a header\r\nMessage-ID: nor this\r\n";
        assert!(added(in_body).contains("\r\nMessage-ID: <01ID@baton.test>\r\nSubject: x"));
        let folded = "Subject: a\r\n Date: folded, not a field\r\n\r\n";
        assert!(added(folded).contains(&format!("Date: {DATE}")));
        assert_eq!(present(b"no header here\r\nDate: x\r\n"), Present::default());
        assert_eq!(present(b""), Present::default());
    }
}
