//! Which certificate authorities the client trusts, and what a refused certificate means.
//!
//! As other tools on the machine: `SSL_CERT_FILE` / `SSL_CERT_DIR` when set (in place of the
//! system store, as OpenSSL reads them), else the system store (the bundle file Linux
//! distributions keep), else (a machine without one) the Mozilla roots compiled in; `--ca-cert`
//! adds its certificates to whichever it is. Every file is read as untrusted: a regular file, of
//! bounded size. There is no way to turn verification off.

use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use thiserror::Error;

use crate::config::TrustOptions;
use crate::user::escape;

/// Largest certificate file read: a bundle of every public CA is under 300 KiB.
const MAX_CA_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Most entries of an `SSL_CERT_DIR` looked at (a hashed directory holds a few hundred).
const MAX_DIR_ENTRIES: usize = 100_000;
/// Most bytes read from an `SSL_CERT_DIR`'s files together.
const MAX_DIR_BYTES: u64 = 64 * 1024 * 1024;

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
    #[error(
        "{from} names {path}, which holds no usable certificate (PEM, -----BEGIN CERTIFICATE-----)"
    )]
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

/// Loads the certificates `options` name into a TLS configuration (HTTP/2 offered, as reqwest
/// does with configurations it builds itself).
pub fn load(options: &TrustOptions) -> Result<Trust, TrustError> {
    let mut roots = rustls::RootCertStore::empty();
    let mut sources = base_roots(options, &mut roots)?;
    if let Some(path) = &options.ca_cert {
        let added = add_file(&mut roots, "--ca-cert", path)?;
        sources.push(format!("--ca-cert {}: {}", shown(path), count(added)));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TrustError::Setup(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Trust { config, sources })
}

/// The roots before `--ca-cert`, and one line per source: the environment's files, or the
/// system store, or the bundled ones.
fn base_roots(
    options: &TrustOptions,
    roots: &mut rustls::RootCertStore,
) -> Result<Vec<String>, TrustError> {
    if options.cert_file.is_some() || !options.cert_dirs.is_empty() {
        let mut named = Vec::new();
        if let Some(file) = &options.cert_file {
            let added = add_file(roots, "SSL_CERT_FILE", file)?;
            named.push(format!("SSL_CERT_FILE {}: {}", shown(file), count(added)));
        }
        for dir in &options.cert_dirs {
            named.push(match add_dir(roots, dir) {
                Some(added) => format!("SSL_CERT_DIR {}: {}", shown(dir), count(added)),
                // As OpenSSL: a directory that is not there is passed over.
                None => format!("SSL_CERT_DIR {}: not a directory, passed over", shown(dir)),
            });
        }
        if roots.is_empty() {
            return Err(TrustError::Empty {
                from: "SSL_CERT_DIR",
                path: options
                    .cert_dirs
                    .iter()
                    .map(|d| shown(d))
                    .collect::<Vec<_>>()
                    .join(":"),
            });
        }
        return Ok(named);
    }
    if let Some((bundle, added)) = system_store(roots)? {
        return Ok(vec![format!(
            "the system store ({bundle}): {}",
            count(added)
        )]);
    }
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    Ok(vec![format!(
        "the system store has none; the bundled Mozilla roots: {}",
        count(roots.len())
    )])
}

/// The system's bundle of trusted CAs: the first of the places Linux distributions keep it
/// (read as [`add_file`] reads, never a stream or a huge file); `None` when there is none. One
/// that is there but cannot be used is an error, as for curl: trusting the bundled roots
/// instead would drop a company CA installed there, and bring back roots removed from it.
fn system_store(roots: &mut rustls::RootCertStore) -> Result<Option<(String, usize)>, TrustError> {
    const BUNDLES: [&str; 6] = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
        "/etc/ssl/ca-bundle.pem",
        "/etc/ssl/cert.pem",
        "/usr/local/share/certs/ca-root-nss.crt",
    ];
    let Some(bundle) = BUNDLES.iter().find(|b| Path::new(b).exists()) else {
        return Ok(None);
    };
    let added = add_file(roots, "the system store", Path::new(bundle))?;
    Ok(Some((bundle.to_string(), added)))
}

/// Adds the certificates of one PEM file; a file that cannot be read, is not PEM, or holds no
/// usable certificate is an error (the operator named it, as curl sees it).
fn add_file(
    roots: &mut rustls::RootCertStore,
    from: &'static str,
    path: &Path,
) -> Result<usize, TrustError> {
    let certs = read_pem_file(from, path)?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TrustError::Empty {
            from,
            path: shown(path),
        });
    }
    Ok(added)
}

/// Adds the certificates of every regular file of a directory that is PEM (others are passed
/// over, as OpenSSL does), each file once however many links name it; `None` when it is not a
/// directory.
fn add_dir(roots: &mut rustls::RootCertStore, dir: &Path) -> Option<usize> {
    use std::os::unix::fs::MetadataExt as _;
    let entries = std::fs::read_dir(dir).ok()?;
    let mut seen = std::collections::HashSet::new();
    let (mut added, mut read) = (0, 0u64);
    for entry in entries.flatten().take(MAX_DIR_ENTRIES) {
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if !meta.is_file() || !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        // A bound on the whole directory too: a hashed one holds well under a megabyte.
        read += meta.len();
        if read > MAX_DIR_BYTES {
            break;
        }
        if let Ok(certs) = read_pem_file("SSL_CERT_DIR", &path) {
            added += roots.add_parsable_certificates(certs).0;
        }
    }
    Some(added)
}

/// The certificates of a PEM file: a regular file (a FIFO would block the run, a device never
/// end), read to at most [`MAX_CA_FILE_BYTES`].
fn read_pem_file(
    from: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let unreadable = |reason: String| TrustError::Unreadable {
        from,
        path: shown(path),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| unreadable(e.to_string()))?;
    if !meta.is_file() {
        return Err(unreadable("it is not a regular file".into()));
    }
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
    // The PEM parser's errors quote the bytes it choked on: a reason of our own instead.
    CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| unreadable("it is not PEM (a section is cut off or malformed)".into()))
}

/// "1 certificate", "2 certificates".
fn count(n: usize) -> String {
    match n {
        1 => "1 certificate".to_string(),
        n => format!("{n} certificates"),
    }
}

/// A path as a message shows it: escaped, since it came from the environment or the command line.
fn shown(path: &Path) -> String {
    escape(&path.display().to_string())
}
