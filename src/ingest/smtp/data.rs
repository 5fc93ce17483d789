//! Receiving message content: DATA (dot-stuffed, ended by `<CRLF>.<CRLF>`) and BDAT chunks
//! (RFC 3030, counted octets), with smtp-proto's receivers doing the unstuffing and counting.
//!
//! Size is enforced while reading: once the content passes the limit, what was kept is dropped
//! and the rest is read and thrown away until the end of the message, so the client stays in
//! step and gets its `552` after the final dot, and memory never grows past limit + one read.
//!
//! Line endings, the way Postfix 3.9 handles them by default (`smtpd_forbid_bare_newline =
//! normalize`): only `<CRLF>.<CRLF>` ends DATA, so `<LF>.<LF>` or `<LF>.<CRLF>` inside the
//! content is just content (no SMTP smuggling); a bare LF in the content is taken as a line end
//! and stored as CRLF (with the dot-unstuffing a line end implies), so what Baton later relays
//! is a well-formed message.
//!
//! Bare CR and NUL are refused, not normalised (the check is the one HTTP raw messages get,
//! [`crate::ingest::headers::unsafe_line_ending`]): RFC 5321 §2.3.8 allows CR only as part of
//! CRLF, and RFC 5322 §2.3 keeps NUL out of message text. Next hops differ in what they make
//! of them (a lenient one may take `<CR>.<CR>` as the end of DATA: SMTP smuggling), and any
//! rewrite would change bytes a signature may cover, so the whole message is refused with
//! `554 5.6.0` and a reason the sender can act on. Postfix normalises bare LF only; so does Baton.
//!
//! Time is bounded as well as size: all content must arrive by the transaction's data
//! [`Deadline`] (`smtp.data_timeout`).

use super::io::{Deadline, Io, ReadError};
use smtp_proto::request::receiver::{BdatReceiver, DataReceiver, DummyDataReceiver};

/// How a message body ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    Complete,
    /// More than the limit arrived; nothing was kept.
    TooLarge,
}

/// Reads DATA content into `body` (after what it already holds) up to the terminating dot.
pub async fn receive_data(
    io: &mut Io,
    body: &mut Vec<u8>,
    limit: usize,
    deadline: Deadline,
) -> Result<Received, ReadError> {
    let start = body.len();
    let mut receiver = DataReceiver::new();
    // The receiver recognises `.` at the start of a line only after it has seen a CRLF; the
    // content starts right after the CRLF of the DATA command, so show it that CRLF first.
    receiver.ingest(&mut b"\r\n".iter(), &mut Vec::new());
    let mut discard: Option<DummyDataReceiver> = None;
    loop {
        let buffered = io.buffered();
        let mut bytes = buffered.iter();
        let done = match discard.as_mut() {
            None => receiver.ingest(&mut bytes, body),
            Some(d) => d.ingest(&mut bytes),
        };
        let used = buffered.len() - bytes.as_slice().len();
        io.consume(used);
        if discard.is_none() && body.len() - start > limit {
            body.truncate(start);
            body.shrink_to(start);
            discard = Some(DummyDataReceiver::new_data(&receiver));
        }
        if done {
            return Ok(if discard.is_some() { Received::TooLarge } else { Received::Complete });
        }
        io.fill(None, deadline).await?;
    }
}

/// Reads one BDAT chunk of `size` octets into `body`, or throws it away when `body` is `None`
/// (a refused or oversize chunk still has to be read to stay in step with the client).
pub async fn receive_chunk(
    io: &mut Io,
    body: Option<&mut Vec<u8>>,
    size: usize,
    deadline: Deadline,
) -> Result<(), ReadError> {
    match body {
        Some(body) => {
            body.reserve(size);
            let mut receiver = BdatReceiver::new(size, false);
            loop {
                let buffered = io.buffered();
                let mut bytes = buffered.iter();
                let done = receiver.ingest(&mut bytes, body);
                let used = buffered.len() - bytes.as_slice().len();
                io.consume(used);
                if done {
                    return Ok(());
                }
                io.fill(None, deadline).await?;
            }
        }
        None => {
            let mut receiver = DummyDataReceiver::new_bdat(size);
            loop {
                let buffered = io.buffered();
                let mut bytes = buffered.iter();
                let done = receiver.ingest(&mut bytes);
                let used = buffered.len() - bytes.as_slice().len();
                io.consume(used);
                if done {
                    return Ok(());
                }
                io.fill(None, deadline).await?;
            }
        }
    }
}

/// Rewrites every LF not preceded by CR in `body[from..]` as CRLF. With `unstuff` (DATA), a
/// line after a bare LF also loses its leading dot: the client dot-stuffed that line by its own
/// idea of a line, and smtp-proto only unstuffs after CRLF (Python's smtplib, given bytes with
/// LF line endings, sends exactly that). Most messages have no bare LF, and then nothing is
/// copied.
pub fn normalize_bare_lf(body: &mut Vec<u8>, from: usize, unstuff: bool) {
    let content = &body[from..];
    let bare = |i: usize| content[i] == b'\n' && (i == 0 || content[i - 1] != b'\r');
    let count = (0..content.len()).filter(|&i| bare(i)).count();
    if count == 0 {
        return;
    }
    let mut out = Vec::with_capacity(body.len() + count);
    out.extend_from_slice(&body[..from]);
    let mut i = 0;
    while i < content.len() {
        if bare(i) {
            out.extend_from_slice(b"\r\n");
            i += 1;
            if unstuff && content.get(i) == Some(&b'.') {
                i += 1;
            }
            continue;
        }
        out.push(content[i]);
        i += 1;
    }
    *body = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_lf_becomes_crlf_and_crlf_is_kept() {
        let mut body = b"Received: x\r\n".to_vec();
        let from = body.len();
        body.extend_from_slice(b"a\nb\r\n\nc\r\n");
        normalize_bare_lf(&mut body, from, true);
        assert_eq!(body, b"Received: x\r\na\r\nb\r\n\r\nc\r\n");
        let mut clean = b"a\r\nb\r\n".to_vec();
        normalize_bare_lf(&mut clean, 0, true);
        assert_eq!(clean, b"a\r\nb\r\n");
    }

    #[test]
    fn dots_after_bare_lf_are_unstuffed_only_for_data() {
        let mut data = b"a\n..b\n.\r\nc\r\n..d\r\n".to_vec();
        normalize_bare_lf(&mut data, 0, true);
        assert_eq!(data, b"a\r\n.b\r\n\r\nc\r\n..d\r\n", "after CRLF smtp-proto has unstuffed already");
        let mut chunk = b"a\n..b\n".to_vec();
        normalize_bare_lf(&mut chunk, 0, false);
        assert_eq!(chunk, b"a\r\n..b\r\n");
    }
}
