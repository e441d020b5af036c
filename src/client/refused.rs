//! What a failed TLS handshake means: no retry changes a certificate the machine does not trust,
//! or a server that does not speak TLS on its port, so the run stops at once (exit 3) with a
//! line that says what failed, for which host, and what to do.

use super::answers::Fatal;
use crate::user::escape;

/// Where requests go: the API's host, and the proxy when it is reached over TLS itself (its
/// certificate may be the one refused).
#[derive(Debug)]
pub(super) struct Peer {
    /// The API's host.
    pub(super) host: String,
    /// An `https://` proxy, as shown.
    pub(super) proxy: Option<String>,
}

impl Peer {
    fn named(&self) -> String {
        match &self.proxy {
            Some(proxy) => format!("{} (or of the proxy {proxy})", escape(&self.host)),
            None => escape(&self.host),
        }
    }
}

/// The stop a TLS failure means, if that is why a request failed (the TLS library's error,
/// wherever it sits in the chain of causes).
pub(super) fn refused(error: &reqwest::Error, peer: &Peer) -> Option<Fatal> {
    Some(match tls_error(error)? {
        rustls::Error::InvalidCertificate(problem) => certificate(peer, problem),
        other => Fatal::Handshake {
            host: peer.named(),
            problem: handshake(other),
        },
    })
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

/// A handshake that failed for another reason than the certificate, in words.
fn handshake(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
            "the server does not speak TLS on that port (plain http?)".to_string()
        }
        other => escape(&other.to_string()),
    }
}

/// A certificate problem in words, with what to do about it.
fn certificate(peer: &Peer, problem: &rustls::CertificateError) -> Fatal {
    use rustls::CertificateError as E;
    const TRUST: &str = "if a TLS-inspecting proxy sits in between, install its CA in the system store, set SSL_CERT_FILE, or pass --ca-cert";
    const CLOCK: &str = "check the machine's clock, or tell whoever runs the server";
    let (problem, advice) = match problem {
        E::UnknownIssuer => ("it is issued by a CA this machine does not trust", TRUST),
        E::Expired | E::ExpiredContext { .. } => ("it has expired", CLOCK),
        E::NotValidYet | E::NotValidYetContext { .. } => ("it is not valid yet", CLOCK),
        E::NotValidForName | E::NotValidForNameContext { .. } => (
            "it is for another name",
            "check --base-url (the host must be the one the certificate names)",
        ),
        E::Revoked => ("it has been revoked", "tell whoever runs the server"),
        E::BadSignature => (
            "its signature does not verify: the connection may be tampered with",
            "do not work around it; tell whoever runs the network",
        ),
        _ => (
            "it is not a valid server certificate",
            "tell whoever runs the server (or the proxy)",
        ),
    };
    Fatal::Certificate {
        host: peer.named(),
        problem: problem.to_string(),
        advice,
    }
}
