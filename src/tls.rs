//! TLS settings: the server side (STARTTLS, smtps, HTTPS ingest) from PEM files, and the client
//! side (SMTP relays, the canary mailbox) with the public web PKI roots plus an optional CA file.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

/// Reads `cert` (PEM chain) and `key` (PEM private key) into a rustls server config.
pub fn load_server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read certificate {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid certificate PEM in {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in {}", cert.display()));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("cannot read private key {}: {e}", key.display()))?;
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| format!("certificate {} and key {} do not work together: {e}", cert.display(), key.display()))?;
    Ok(Arc::new(config))
}

/// A TLS acceptor for the configured certificate.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    load_server_config(cert, key).map(TlsAcceptor::from)
}

/// TLS client settings: the public web PKI roots, plus the certificates in `ca_file`.
pub fn client_connector(ca_file: Option<&Path>) -> Result<tokio_rustls::TlsConnector, String> {
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(ca) = ca_file {
        for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("cannot read {}: {e}", ca.display()))? {
            let cert = cert.map_err(|e| format!("invalid certificate in {}: {e}", ca.display()))?;
            roots.add(cert).map_err(|e| format!("unusable certificate in {}: {e}", ca.display()))?;
        }
    }
    let config = ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}
