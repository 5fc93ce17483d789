#![allow(dead_code)]
//! What the raw SMTP test clients share: an SMTP reply and reading one (multi-line replies
//! joined), within the deadline.

use super::baton::DEADLINE;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

#[derive(Debug)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// The last line (the one a single-line reply is).
    pub fn last(&self) -> &str {
        self.lines.last().map(String::as_str).unwrap_or("")
    }

    /// Whether some line's text (after the code) is `text`, e.g. an EHLO keyword.
    pub fn has(&self, text: &str) -> bool {
        self.lines.iter().any(|l| l.get(4..) == Some(text))
    }
}

/// Reads one reply from `reader`; panics when the connection closes or nothing comes in time.
pub async fn read_reply(reader: &mut (impl AsyncBufRead + Unpin)) -> Reply {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(DEADLINE, reader.read_line(&mut line))
            .await
            .expect("reply within the deadline")
            .expect("read reply");
        assert!(n > 0, "connection closed; reply so far: {lines:?}");
        let line = line.trim_end().to_string();
        let more = line.as_bytes().get(3) == Some(&b'-');
        lines.push(line);
        if !more {
            break;
        }
    }
    Reply { code: lines[0][..3].parse().expect("reply code"), lines }
}
