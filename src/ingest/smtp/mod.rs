//! SMTP submission listener (issue 3). Placeholder until the session is implemented.

use crate::app::Shared;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves SMTP on `listener` until `stop` is cancelled and every session has ended.
/// `implicit_tls`: the connection starts with a TLS handshake (smtps).
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, implicit_tls: bool, stop: CancellationToken) {
    let _ = (listener, shared, implicit_tls);
    stop.cancelled().await;
}
