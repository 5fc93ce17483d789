//! The HTTP listeners' accept loop (ingest and admin). Its promise: no client can hold a
//! connection without sending, nor take more than its share of connections, so a flood of
//! idle or slow connections cannot starve the other listeners, the SMTP port or the
//! providers' sockets of file descriptors.
//!
//! - At most `max_connections` open at once, and `max_connections_per_ip` from one address;
//!   a connection over a cap is answered `503` (with `Retry-After`) and closed at once.
//! - A request's headers must arrive within `header_timeout`, which is also how long a
//!   keep-alive connection may sit idle between requests (hyper's header read timeout).
//! - A whole request, body and spool commit included, must finish within `request_timeout`
//!   (`408` after).
//!
//! Written on hyper's HTTP/1.1 connection builder rather than `axum::serve`, which has none
//! of these limits. HTTP/1.1 only: cleartext HTTP/2 needs protocol detection, which reads
//! without any timeout (an idle connection would sit in it forever), and no client of
//! Baton's API needs h2c.

use crate::metrics::Metrics;
use axum::Router;
use dashmap::DashMap;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;

/// The certificate of an HTTPS listener, looked up for every connection (so a reloaded
/// `[server.tls]` is used by the next handshake); `None` when no certificate is configured.
pub type TlsSource = Arc<dyn Fn() -> Option<tokio_rustls::TlsAcceptor> + Send + Sync>;

/// The limits of one HTTP listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

/// Why a connection was refused (`baton_http_connections_refused_total{reason}`).
pub const REFUSAL_REASONS: [&str; 2] = ["total", "per_ip"];

/// The admin listener's caps: enough for operators and scrapers, small enough that the
/// admin port alone cannot use up the process's file descriptors.
pub const ADMIN_MAX_CONNECTIONS: usize = 64;
pub const ADMIN_MAX_CONNECTIONS_PER_IP: usize = 32;

/// How long to wait for the socket to take a refusal before dropping it anyway.
const REFUSAL_WRITE: Duration = Duration::from_millis(200);
/// After a failed accept (e.g. out of file descriptors), wait before trying again rather
/// than spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Open connections, in all and per address; a [`Slot`] gives its place back when dropped.
#[derive(Default)]
struct Counts {
    total: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
}

struct Slot {
    counts: Arc<Counts>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counts.total.fetch_sub(1, Ordering::AcqRel);
        if let dashmap::Entry::Occupied(mut e) = self.counts.per_ip.entry(self.ip) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

impl Counts {
    /// Takes a place for a connection from `ip`, or says which cap it hits.
    fn admit(self: &Arc<Self>, ip: IpAddr, limits: &Limits) -> Result<Slot, &'static str> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err("total");
        }
        let mut n = self.per_ip.entry(ip).or_insert(0);
        if *n >= limits.max_connections_per_ip {
            drop(n);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err("per_ip");
        }
        *n += 1;
        Ok(Slot { counts: self.clone(), ip })
    }
}

/// Serves `router` on `listener` with `limits` until `stop` is cancelled; then stops
/// accepting and waits for the open connections to finish their requests (the caller bounds
/// that wait). `name` labels the metrics (`http`, `https` or `admin`); with `tls`, every
/// connection starts with a TLS handshake.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    name: &'static str,
    tls: Option<TlsSource>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let counts = Arc::new(Counts::default());
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let timeouts = metrics.http_request_timeouts.with_label_values(&[name]);
    let app = router
        .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, limits.request_timeout))
        // Outside the timeout layer, so it sees the 408s that layer answers.
        .layer(axum::middleware::map_response(move |response: axum::response::Response| {
            let timeouts = timeouts.clone();
            async move {
                if response.status() == axum::http::StatusCode::REQUEST_TIMEOUT {
                    timeouts.inc();
                }
                response
            }
        }));
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(listener = name, error = %e, "cannot accept a connection; retrying");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let slot = match counts.admit(peer.ip(), &limits) {
            Ok(slot) => slot,
            Err(reason) => {
                metrics.http_connections_refused.with_label_values(&[name, reason]).inc();
                tokio::spawn(refuse(stream));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        let open = metrics.http_connections.with_label_values(&[name]);
        open.inc();
        let acceptor = tls.as_ref().map(|current| current());
        tokio::spawn(async move {
            // Errors here are the client's (reset, timeout, malformed request, failed
            // handshake): nothing to do.
            match acceptor {
                None => {
                    let _ = watcher.watch(builder.serve_connection(TokioIo::new(stream), service)).await;
                }
                // The TLS handshake counts against the header timeout like the headers do.
                Some(Some(acceptor)) => {
                    if let Ok(Ok(tls)) = tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await {
                        let _ = watcher.watch(builder.serve_connection(TokioIo::new(tls), service)).await;
                    }
                }
                Some(None) => {}
            }
            open.dec();
            drop(slot);
        });
    }
    graceful.shutdown().await;
}

/// Answers a connection over a cap with `503` and closes it, without reading its request.
async fn refuse(mut stream: TcpStream) {
    const BODY: &str =
        "{\"error\":{\"code\":\"too_many_connections\",\"message\":\"too many connections; try again shortly\"}}";
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(REFUSAL_WRITE, async {
        let _ = stream.write_all(reply.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Raises the soft limit of open files to the hard limit (as most servers do at start), so
/// the listeners' caps, not the default 1,024, decide when connections are refused.
pub fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(open_files = n, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_in_all_and_per_address_and_give_places_back() {
        let limits = Limits {
            header_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            max_connections: 3,
            max_connections_per_ip: 2,
        };
        let counts = Arc::new(Counts::default());
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let a1 = counts.admit(a, &limits).unwrap();
        let _a2 = counts.admit(a, &limits).unwrap();
        assert_eq!(counts.admit(a, &limits).err(), Some("per_ip"));
        let _b1 = counts.admit(b, &limits).unwrap();
        assert_eq!(counts.admit(b, &limits).err(), Some("total"));
        drop(a1);
        let _b2 = counts.admit(b, &limits).expect("a place came back");
        assert_eq!(counts.total.load(Ordering::Relaxed), 3);
        drop(_b2);
        assert_eq!(counts.total.load(Ordering::Relaxed), 2);
    }
}
