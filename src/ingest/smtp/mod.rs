//! SMTP submission listener (issue 3): apps and MTAs hand mail to Baton over SMTP, with
//! STARTTLS (or implicit TLS on smtps) and AUTH, and get `250 ... queued as <id>` only once the
//! message is in the spool, under the same id the HTTP status API answers for.
//!
//! | file | concern |
//! |---|---|
//! | `mod.rs` | accepting connections, connection limits, shutdown |
//! | `limits.rs` | per-listener connection counting (total and per IP) |
//! | `io.rs` | the plain/TLS stream, bounded line reading, reply buffering |
//! | `session.rs` | the command loop, EHLO/STARTTLS/RSET/QUIT, error accounting |
//! | `auth.rs` | AUTH PLAIN / LOGIN and the per-connection brute-force limits |
//! | `guard.rs` | AUTH failures counted across connections, per address and per username; blocks |
//! | `transaction.rs` | MAIL / RCPT / DATA / BDAT and the hand-off to the spool |
//! | `data.rs` | receiving message content within the size and time limits; bare LF, bare CR, NUL |
//! | `received.rs` | the Received: header |
//! | `submission.rs` | `Date:` and `Message-ID:` when the message has none (RFC 6409 §8) |
//! | `reply.rs` | every reply text and enhanced status code |
//!
//! Commands are parsed by smtp-proto. The limits (`[smtp]`, `server.max_message_size`,
//! `server.max_recipients`) and the certificate come from the live config: each command sees
//! the snapshot current when it arrived.
//!
//! What a hostile client runs into: connection caps (total, per IP); an idle timeout per read
//! and, for a client that drips bytes, a time limit per command line (`command_timeout`,
//! 5 min) and per message content (`data_timeout`, 10 min), both answered `421 4.4.2`;
//! `max_errors` protocol errors per session; AUTH failures delayed, capped per connection and
//! blocked across connections per address and per username (`454 4.7.0`, see `guard.rs`).
//!
//! What Baton changes in a message it takes: a `Received:` header on top, `Date:` and
//! `Message-ID:` when missing, bare LF stored as CRLF. A message with NUL or a bare CR is
//! refused with `554 5.6.0` (see `data.rs` for why refuse rather than normalise).

mod auth;
mod data;
mod guard;
mod io;
mod limits;
mod received;
mod reply;
mod session;
mod submission;
mod transaction;

use crate::shared::Shared;
pub use guard::AuthGuard;
use limits::{ConnectionLimits, Refusal};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Serves SMTP on `listener` until `stop` is cancelled and every session has ended.
/// `implicit_tls`: the connection starts with a TLS handshake (smtps).
///
/// On shutdown the listener closes at once; a session waiting for a command answers
/// `421 4.3.2` and closes, a session receiving message content reads it to the end and then
/// answers `421 4.3.2` (the spool takes no new messages once shutdown has begun).
///
/// `guard` counts AUTH failures: give the smtp and smtps listeners the same one, so a client
/// cannot double its guesses by switching listener.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    guard: Arc<AuthGuard>,
    implicit_tls: bool,
    stop: CancellationToken,
) {
    let limits = Arc::new(ConnectionLimits::default());
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            Some(done) = sessions.join_next(), if !sessions.is_empty() => {
                if let Err(e) = done
                    && e.is_panic()
                {
                    tracing::error!(error = %e, "SMTP session panicked");
                }
            }
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "cannot accept SMTP connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let rt = shared.runtime.load();
                let smtp = &rt.config.smtp;
                match limits.admit(peer.ip(), smtp.max_connections, smtp.max_connections_per_ip) {
                    Ok(slot) => {
                        let run =
                            session::run(shared.clone(), guard.clone(), tcp, peer, implicit_tls, stop.clone(), slot);
                        sessions.spawn(run);
                    }
                    Err(why) => {
                        tracing::info!(peer = %peer, limit = ?why, "SMTP connection refused: too many connections");
                        let hostname = rt.config.server.hostname.clone();
                        sessions.spawn(refuse(tcp, implicit_tls, hostname, why));
                    }
                }
            }
        }
    }
    drop(listener);
    let open = sessions.len();
    if open > 0 {
        tracing::info!(sessions = open, tls = implicit_tls, "waiting for SMTP sessions to end");
    }
    while sessions.join_next().await.is_some() {}
}

/// Tells a client over a connection limit why it is turned away. On smtps there is no plain
/// text to say it in, and a TLS handshake is what a flood should not get, so it is just closed.
async fn refuse(mut tcp: TcpStream, implicit_tls: bool, hostname: String, why: Refusal) {
    if implicit_tls {
        return;
    }
    let line = match why {
        Refusal::Total => reply::too_many_connections(&hostname),
        Refusal::PerIp => reply::too_many_connections_from_ip(&hostname),
    };
    let write = async {
        tcp.write_all(format!("{line}\r\n").as_bytes()).await?;
        tcp.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), write).await;
}
