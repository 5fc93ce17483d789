//! The connection under a session: plain TCP or TLS (after STARTTLS or on smtps), with our own
//! read buffer and reply buffer.
//!
//! Reading is bounded: a command line may not grow past the configured maximum (the rest of an
//! over-long line is read and thrown away), and message data is handed out in read-sized pieces,
//! so a client can never make a session hold more than one read buffer of input it has not
//! accounted for. Reading is bounded in time too: besides the idle timeout, which restarts with
//! every byte, a whole command line or message content must arrive before a [`Deadline`], so
//! a client dripping one byte at a time cannot hold a session forever.
//!
//! Replies are buffered and written only when the session needs more input: that is what makes
//! PIPELINING work (one write for a whole batch of pipelined commands) and it keeps the number
//! of syscalls per message small.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ProtocolVersion;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while STARTTLS hands the TCP stream to the handshake (and after it failed).
    Detached,
}

fn detached() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection is being switched to TLS")
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Detached => Poll::Ready(Err(detached())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Detached => Poll::Ready(Err(detached())),
        }
    }
}

/// What a [`Deadline`] bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// One command line, or one AUTH response line (`smtp.command_timeout`).
    Command,
    /// The content of one message (`smtp.data_timeout`).
    Data,
}

impl Phase {
    /// The `phase` label of `baton_smtp_timeouts_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Command => "command",
            Phase::Data => "data",
        }
    }
}

/// The time by which a whole read must be done, however often bytes arrive.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
    phase: Phase,
}

impl Deadline {
    pub fn after(limit: Duration, phase: Phase) -> Deadline {
        Deadline { at: Instant::now() + limit, phase }
    }

    pub fn passed(&self) -> bool {
        Instant::now() >= self.at
    }
}

/// Why no (more) input could be read.
#[derive(Debug)]
pub enum ReadError {
    /// Nothing arrived within the idle timeout.
    Idle,
    /// The read was not done by its deadline.
    TooSlow(Phase),
    /// Shutdown began while waiting for a command.
    Stopped,
    /// The client closed the connection.
    Closed,
    Io(io::Error),
}

/// One command line (or AUTH response line) as read.
pub enum Line {
    /// The line, without its line ending (CRLF or a bare LF).
    Complete(Vec<u8>),
    /// The line was longer than allowed; it has been read and discarded.
    TooLong,
}

pub struct Io {
    stream: Stream,
    /// Received, not yet consumed input is `buf[start..]`.
    buf: Vec<u8>,
    start: usize,
    out: Vec<u8>,
    idle: Duration,
}

impl Io {
    pub fn new(stream: Stream, idle: Duration) -> Io {
        Io { stream, buf: Vec::with_capacity(READ_CHUNK), start: 0, out: Vec::with_capacity(512), idle }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// Protocol version and cipher suite, for the Received: header.
    pub fn tls_description(&self) -> Option<String> {
        let Stream::Tls(tls) = &self.stream else { return None };
        let conn = tls.get_ref().1;
        let version = match conn.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "TLS",
        };
        let suite = conn.negotiated_cipher_suite().and_then(|s| s.suite().as_str()).unwrap_or("unknown");
        Some(format!("{version} with cipher {suite}"))
    }

    /// Queues one reply line (CRLF is added).
    pub fn reply(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// Writes the queued replies. A client that stops reading is given the idle timeout.
    pub async fn flush(&mut self) -> Result<(), ReadError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let write = async {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(self.idle, write).await {
            Ok(Ok(())) => {
                self.out.clear();
                Ok(())
            }
            Ok(Err(e)) => Err(ReadError::Io(e)),
            Err(_) => Err(ReadError::Idle),
        }
    }

    /// Input received but not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Marks `n` buffered bytes as consumed.
    pub fn consume(&mut self, n: usize) {
        self.start += n;
        debug_assert!(self.start <= self.buf.len());
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Reads more input, after writing any queued replies (the client may be waiting for them
    /// before it sends more). With `stop`, gives up when shutdown begins. Waits at most the
    /// idle timeout, and never past `deadline`.
    pub async fn fill(&mut self, stop: Option<&CancellationToken>, deadline: Deadline) -> Result<(), ReadError> {
        self.flush().await?;
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(READ_CHUNK);
        let left = deadline.at.saturating_duration_since(Instant::now());
        let (wait, late) =
            if left < self.idle { (left, ReadError::TooSlow(deadline.phase)) } else { (self.idle, ReadError::Idle) };
        let read = tokio::time::timeout(wait, self.stream.read_buf(&mut self.buf));
        let outcome = match stop {
            Some(stop) => tokio::select! {
                r = read => Some(r),
                _ = stop.cancelled() => None,
            },
            None => Some(read.await),
        };
        match outcome {
            None => Err(ReadError::Stopped),
            Some(Ok(Ok(0))) => Err(ReadError::Closed),
            Some(Ok(Ok(_))) => Ok(()),
            Some(Ok(Err(e))) => Err(ReadError::Io(e)),
            Some(Err(_)) => Err(late),
        }
    }

    /// Reads one line of at most `max` bytes (line ending included in the count) by
    /// `deadline`. A line of which nothing arrived by then is an idle session, not a slow one.
    pub async fn line(
        &mut self,
        max: usize,
        stop: Option<&CancellationToken>,
        deadline: Deadline,
    ) -> Result<Line, ReadError> {
        let mut discarding = false;
        loop {
            let pending = self.buffered();
            if let Some(pos) = memchr(b'\n', pending) {
                if discarding || pos + 1 > max {
                    self.consume(pos + 1);
                    return Ok(Line::TooLong);
                }
                let end = if pos > 0 && pending[pos - 1] == b'\r' { pos - 1 } else { pos };
                let line = pending[..end].to_vec();
                self.consume(pos + 1);
                return Ok(Line::Complete(line));
            }
            if pending.len() >= max {
                // Keep memory bounded: drop what we have and look for the end of the line.
                discarding = true;
                let n = pending.len();
                self.consume(n);
            }
            let started = discarding || !self.buffered().is_empty();
            match self.fill(stop, deadline).await {
                Err(ReadError::TooSlow(_)) if !started => return Err(ReadError::Idle),
                other => other?,
            }
        }
    }

    /// Drops buffered input. Used at STARTTLS: anything the client sent after the command in
    /// plain text must not be taken as if it had come over TLS (CVE-2011-0411).
    pub fn discard_buffered(&mut self) -> usize {
        let n = self.buffered().len();
        self.buf.clear();
        self.start = 0;
        n
    }

    /// Switches a plain connection to TLS (STARTTLS). The caller has flushed the `220` reply
    /// and discarded buffered input. The handshake gets the idle timeout.
    pub async fn start_tls(&mut self, acceptor: &TlsAcceptor) -> Result<(), io::Error> {
        if !matches!(self.stream, Stream::Plain(_)) {
            return Err(io::Error::other("TLS is already active"));
        }
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Detached) else {
            unreachable!("checked above");
        };
        let tls = handshake(acceptor, tcp, self.idle).await?;
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }

    /// Flushes queued replies and closes the connection (TLS close_notify included).
    pub async fn close(mut self) {
        // A client that does not read gets a short grace, not another idle period.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.flush()).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.stream.shutdown()).await;
    }
}

/// A TLS handshake on a fresh TCP connection, bounded by `timeout`.
pub async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>, io::Error> {
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")),
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}
