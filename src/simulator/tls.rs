//! HTTPS for the simulator (`simulate --tls-cert --tls-key`): a rehearsal of the TLS path,
//! private CAs and TLS-inspecting proxies included. Plain HTTP stays the default.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The server's TLS setup: a certificate chain and its key, both PEM.
#[derive(Clone)]
pub struct SimTls(pub(super) tokio_rustls::TlsAcceptor);

impl std::fmt::Debug for SimTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimTls")
    }
}

impl SimTls {
    /// Reads the chain (leaf first) from `cert` and the private key from `key`.
    pub fn from_files(cert: &Path, key: &Path) -> std::io::Result<SimTls> {
        let bad = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{what} {}: {e}", path.display()),
            )
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|e| bad("--tls-cert", cert, &e))?;
        if chain.is_empty() {
            return Err(bad("--tls-cert", cert, &"no certificate in it"));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("--tls-key", key, &e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
            .map_err(|e| bad("--tls-cert/--tls-key", cert, &e))?;
        Ok(SimTls(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }
}
