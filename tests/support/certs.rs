#![allow(dead_code)]
//! Test certificates made on the fly with rcgen: a CA, and a server certificate it signed for
//! `localhost` and 127.0.0.1, written as PEM files for `[server.tls]`.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::path::PathBuf;

pub struct TestCert {
    _dir: tempfile::TempDir,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// The CA certificate clients should trust.
    pub ca_pem: String,
}

impl TestCert {
    pub fn generate() -> TestCert {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Baton test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key")).expect("CA cert");
        let key = KeyPair::generate().expect("server key");
        let params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("server params");
        let cert = params.signed_by(&key, &ca).expect("server cert");
        let dir = tempfile::tempdir().expect("temp dir");
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        TestCert { _dir: dir, cert_path, key_path, ca_pem: ca.pem() }
    }

    /// `server.tls` for this certificate, as a line inside `[server]`.
    pub fn server_tls_line(&self) -> String {
        format!("tls = {{ cert = \"{}\", key = \"{}\" }}", self.cert_path.display(), self.key_path.display())
    }
}
