//! Where the client's trusted certificates come from: `--ca-cert`, and the `SSL_CERT_FILE` /
//! `SSL_CERT_DIR` variables other tools on the machine honour (read here, not in the client).

use std::path::PathBuf;

/// The sources of trusted certificates, as the command line and the environment name them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustOptions {
    /// `--ca-cert` / `VERIGATOR_CA_CERT`: a PEM file of CA certificates added to the others.
    pub ca_cert: Option<PathBuf>,
    /// `SSL_CERT_FILE`: a PEM bundle used in place of the system store.
    pub cert_file: Option<PathBuf>,
    /// `SSL_CERT_DIR` (`:`-separated): directories of PEM files used in place of the system store.
    pub cert_dirs: Vec<PathBuf>,
}

impl TrustOptions {
    /// `--ca-cert` and the variables read through `var` (empty ones say nothing).
    pub fn new(ca_cert: Option<PathBuf>, var: impl Fn(&str) -> Option<String>) -> TrustOptions {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        TrustOptions {
            ca_cert: ca_cert.filter(|p| !p.as_os_str().is_empty()),
            cert_file: set("SSL_CERT_FILE").map(PathBuf::from),
            cert_dirs: set("SSL_CERT_DIR")
                .map(|dirs| {
                    dirs.split(':')
                        .filter(|d| !d.is_empty())
                        .map(PathBuf::from)
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_names_files_and_directories_and_empty_says_nothing() {
        let vars = |name: &str| match name {
            "SSL_CERT_FILE" => Some("/etc/proxy.pem".to_string()),
            "SSL_CERT_DIR" => Some("/a::/b".to_string()),
            _ => None,
        };
        let trust = TrustOptions::new(Some("ca.pem".into()), vars);
        assert_eq!(trust.cert_file, Some("/etc/proxy.pem".into()));
        assert_eq!(trust.cert_dirs, vec![PathBuf::from("/a"), "/b".into()]);
        assert_eq!(trust.ca_cert, Some("ca.pem".into()));
        let empty = TrustOptions::new(Some("".into()), |_| Some(" ".to_string()));
        assert_eq!(empty, TrustOptions::default());
    }
}
