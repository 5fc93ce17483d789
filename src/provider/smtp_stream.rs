//! The TCP (and, for implicit TLS, TLS) stream the SMTP provider hands to lettre.
//!
//! We open the socket ourselves so that Nagle's algorithm is off: lettre writes the message
//! and the closing "CRLF . CRLF" as separate small writes, and with Nagle on the second one
//! waits for the relay's delayed ACK, about 40 ms per message. lettre cannot set TCP_NODELAY
//! on sockets it opens, but it accepts an existing stream (`AsyncTokioStream`).

use lettre::transport::smtp::client::AsyncTokioStream;
use rustls_pki_types::ServerName;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Connects with TCP_NODELAY set.
pub async fn connect(host: &str, port: u16) -> io::Result<TcpStream> {
    let tcp = TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// TLS client settings for implicit TLS (smtps): the public web PKI roots, plus `ca_file`.
pub fn tls_connector(ca_file: Option<&Path>) -> Result<TlsConnector, String> {
    crate::tls::client_connector(ca_file)
}

/// Opens an implicit-TLS connection (certificate checked against `host`).
pub async fn connect_tls(connector: &TlsConnector, host: &str, port: u16) -> io::Result<ImplicitTls> {
    let tcp = connect(host, port).await?;
    let name = ServerName::try_from(host.to_string()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    Ok(ImplicitTls(connector.connect(name, tcp).await?))
}

/// A TLS stream lettre can drive as if it were a plain socket.
#[derive(Debug)]
pub struct ImplicitTls(TlsStream<TcpStream>);

impl AsyncRead for ImplicitTls {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ImplicitTls {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}
