//! Server-side TLS (STARTTLS and smtps): loading the certificate chain and key from PEM files.

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
