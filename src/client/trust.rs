//! Which certificate authorities the client trusts, and what a refused certificate means.
//!
//! As other tools on the machine: `SSL_CERT_FILE` / `SSL_CERT_DIR` when set (in place of the
//! system store, as OpenSSL reads them), else the system store, else (a machine without one) the
//! Mozilla roots compiled in; `--ca-cert` adds its certificates to whichever it is. There is no
//! way to turn verification off.

use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use thiserror::Error;

use super::answers::Fatal;
use crate::config::TrustOptions;
use crate::user::escape;

/// Largest `--ca-cert` file read: a bundle of every public CA is under 300 KiB.
const MAX_CA_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Why the trusted certificates could not be loaded: the run stops before any request.
#[derive(Debug, Error)]
pub enum TrustError {
    /// A file or directory named for certificates cannot be read.
    #[error("{from} names {path}, which cannot be read: {reason}")]
    Unreadable {
        /// `--ca-cert`, `SSL_CERT_FILE` or `SSL_CERT_DIR`.
        from: &'static str,
        /// The path, escaped.
        path: String,
        /// What failed.
        reason: String,
    },
    /// It was read but holds no certificate.
    #[error("{from} names {path}, which holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    Empty {
        /// `--ca-cert`, `SSL_CERT_FILE` or `SSL_CERT_DIR`.
        from: &'static str,
        /// The path, escaped.
        path: String,
    },
    /// The TLS library refused the setup.
    #[error("cannot set up TLS: {0}")]
    Setup(String),
}

/// The trust the client was built with, and where each part came from (for `-v`).
pub struct Trust {
    /// The TLS configuration every connection uses.
    pub(super) config: rustls::ClientConfig,
    /// One line per source: what it is and how many certificates it gave.
    pub sources: Vec<String>,
}

/// Loads the certificates `options` name into a TLS configuration.
pub fn load(options: &TrustOptions) -> Result<Trust, TrustError> {
    let mut roots = rustls::RootCertStore::empty();
    let mut sources = Vec::new();
    sources.push(base_roots(options, &mut roots)?);
    if let Some(path) = &options.ca_cert {
        let certs = read_pem_file("--ca-cert", path)?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(TrustError::Empty {
                from: "--ca-cert",
                path: shown(path),
            });
        }
        sources.push(format!("--ca-cert {}: {added} certificates", shown(path)));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TrustError::Setup(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Trust { config, sources })
}

/// The roots before `--ca-cert`: the environment's files, or the system store, or the bundled
/// ones; says which, with how many.
fn base_roots(
    options: &TrustOptions,
    roots: &mut rustls::RootCertStore,
) -> Result<String, TrustError> {
    if options.cert_file.is_some() || !options.cert_dirs.is_empty() {
        let mut named = Vec::new();
        if let Some(file) = &options.cert_file {
            let (added, _) =
                roots.add_parsable_certificates(from_paths("SSL_CERT_FILE", Some(file), None)?);
            named.push(format!(
                "SSL_CERT_FILE {}: {added} certificates",
                shown(file)
            ));
        }
        for dir in &options.cert_dirs {
            let (added, _) =
                roots.add_parsable_certificates(from_paths("SSL_CERT_DIR", None, Some(dir))?);
            named.push(format!("SSL_CERT_DIR {}: {added} certificates", shown(dir)));
        }
        return Ok(named.join(", "));
    }
    let (added, _) =
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if added > 0 {
        return Ok(format!("the system store: {added} certificates"));
    }
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    Ok(format!(
        "the system store has none; the bundled Mozilla roots: {} certificates",
        roots.len()
    ))
}

/// Certificates from `SSL_CERT_FILE` or one `SSL_CERT_DIR` directory; none or unreadable is an
/// error, as it is for curl: the variable says the operator meant it.
fn from_paths(
    from: &'static str,
    file: Option<&Path>,
    dir: Option<&Path>,
) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let path = file.or(dir).map(shown).unwrap_or_default();
    let loaded = rustls_native_certs::load_certs_from_paths(file, dir);
    if let Some(error) = loaded.errors.first()
        && loaded.certs.is_empty()
    {
        return Err(TrustError::Unreadable {
            from,
            path,
            reason: escape(&error.to_string()),
        });
    }
    if loaded.certs.is_empty() {
        return Err(TrustError::Empty { from, path });
    }
    Ok(loaded.certs)
}

/// The certificates of a PEM file, read to at most [`MAX_CA_FILE_BYTES`].
fn read_pem_file(
    from: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let unreadable = |reason: String| TrustError::Unreadable {
        from,
        path: shown(path),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| unreadable(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_CA_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(e.to_string()))?;
    if bytes.len() as u64 > MAX_CA_FILE_BYTES {
        return Err(unreadable(format!(
            "it is over {} MiB",
            MAX_CA_FILE_BYTES >> 20
        )));
    }
    CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unreadable(format!("not PEM ({e})")))
}

/// A path as a message shows it: escaped, since it came from the environment or the command line.
fn shown(path: &Path) -> String {
    escape(&path.display().to_string())
}

/// The stop a certificate error means, if that is why a request failed: unknown issuer,
/// expired or not yet valid, another name, revoked (the TLS library's error, wherever it sits in
/// the chain of causes).
pub(super) fn refused(error: &reqwest::Error, host: &str) -> Option<Fatal> {
    match tls_error(error)? {
        rustls::Error::InvalidCertificate(problem) => Some(certificate(host, problem)),
        _ => None,
    }
}

/// The TLS library's error among the causes: I/O errors hide the error they wrap from
/// `source()` (and wrap each other), so each is opened too.
fn tls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(found) = error.downcast_ref::<rustls::Error>() {
        return Some(found);
    }
    let wrapped = error
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .and_then(|inner| tls_error(inner));
    wrapped.or_else(|| error.source().and_then(tls_error))
}

/// A certificate problem in words, with what to do about it.
fn certificate(host: &str, problem: &rustls::CertificateError) -> Fatal {
    use rustls::CertificateError as E;
    const TRUST: &str = "if a TLS-inspecting proxy sits in between, install its CA in the system store, set SSL_CERT_FILE, or pass --ca-cert";
    let (problem, advice) = match problem {
        E::UnknownIssuer => ("it is issued by a CA this machine does not trust", TRUST),
        E::Expired | E::ExpiredContext { .. } => (
            "it has expired",
            "check the machine's clock, or tell whoever runs the server",
        ),
        E::NotValidYet | E::NotValidYetContext { .. } => (
            "it is not valid yet",
            "check the machine's clock, or tell whoever runs the server",
        ),
        E::NotValidForName | E::NotValidForNameContext { .. } => (
            "it is for another name",
            "check --base-url (the host must be the one the certificate names)",
        ),
        E::Revoked => ("it has been revoked", "tell whoever runs the server"),
        _ => ("it is not valid", TRUST),
    };
    Fatal::Certificate {
        host: escape(host),
        problem: problem.to_string(),
        advice,
    }
}
