//! Single values from the user, parsed and checked: the service id (it goes into URL paths), the
//! base URL (https, or http on loopback only), the delimiter and the default region.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use url::Url;

use super::ConfigError;

/// Checks a service id: it is put into URL paths, so only UUID-like characters are allowed.
pub fn service_id(value: Option<String>) -> Result<String, ConfigError> {
    let id = value
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .ok_or(ConfigError::MissingServiceId)?;
    if id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(id)
    } else {
        Err(ConfigError::BadServiceId(id))
    }
}

/// Parses the base URL, refusing plain HTTP except to loopback hosts.
pub fn base_url(raw: &str) -> Result<Url, ConfigError> {
    let mut url = Url::parse(raw.trim()).map_err(|e| ConfigError::BadUrl {
        url: redact_userinfo(raw),
        reason: e.to_string(),
    })?;
    // Credentials belong in the environment; a URL's userinfo would leak into messages.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::BadUrl {
            url: redact_userinfo(raw),
            reason: "credentials in the URL are not allowed: use VERIGATOR_USERNAME and VERIGATOR_PASSWORD".into(),
        });
    }
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => return Err(ConfigError::InsecureUrl(url.to_string())),
        other => {
            return Err(ConfigError::BadUrl {
                url: url.to_string(),
                reason: format!("scheme {other:?} is not http or https"),
            });
        }
    }
    if url.host().is_none() {
        return Err(ConfigError::BadUrl {
            url: url.to_string(),
            reason: "no host".into(),
        });
    }
    // Paths are appended to the base, so it must end with a slash.
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

fn redact_userinfo(raw: &str) -> String {
    match (raw.find("://"), raw.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &raw[..scheme + 3], &raw[at..])
        }
        _ => raw.to_string(),
    }
}

/// Parses a `--delimiter` value: one ASCII character, or `\t`/`tab`.
pub fn delimiter(raw: &str) -> Result<u8, ConfigError> {
    match raw {
        "\\t" | "tab" | "\t" => Ok(b'\t'),
        s if s.len() == 1 && s.is_ascii() && s != "\"" => Ok(s.as_bytes()[0]),
        s => Err(ConfigError::BadDelimiter(s.to_string())),
    }
}

/// Parses a `--default-region` value (ISO 3166 alpha-2).
pub fn region(raw: &str) -> Result<phonenumber::country::Id, ConfigError> {
    raw.trim()
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| ConfigError::BadRegion(raw.to_string()))
}

/// Refuses an output path (`--report`, `--out`) that is the ledger or one of SQLite's files
/// beside it, by whatever path: writing a report there would replace every recorded UserID.
pub fn not_the_ledger(flag: &'static str, out: &Path, ledger: &Path) -> Result<(), ConfigError> {
    let (out_real, ledger_real) = (resolved(out), resolved(ledger));
    let taken = ["", "-wal", "-shm", "-journal", ".lock"]
        .iter()
        .any(|suffix| {
            let mut name = ledger_real.clone().into_os_string();
            name.push(suffix);
            out_real.as_os_str() == name
        });
    if taken {
        return Err(ConfigError::OutputIsLedger {
            flag,
            path: out.display().to_string(),
        });
    }
    Ok(())
}

/// Refuses an output (`--report`, `--metrics-file`) that is the input file itself: outputs replace
/// their target at the end, and a run that broke part-way would leave the user's file replaced.
pub fn not_the_input(flag: &'static str, out: &Path, input: &Path) -> Result<(), ConfigError> {
    if resolved(out) == resolved(input) {
        return Err(ConfigError::OutputIsInput {
            flag,
            path: out.display().to_string(),
        });
    }
    Ok(())
}

/// Refuses two outputs that are one file: the second would replace the first.
pub fn not_the_same(flags: [&'static str; 2], one: &Path, other: &Path) -> Result<(), ConfigError> {
    if resolved(one) == resolved(other) {
        return Err(ConfigError::OutputTwice {
            flags,
            path: one.display().to_string(),
        });
    }
    Ok(())
}

/// A path with symlinks and `..` resolved as far as it exists.
fn resolved(path: &Path) -> PathBuf {
    if let Ok(real) = std::fs::canonicalize(path) {
        return real;
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    match (std::fs::canonicalize(dir), path.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_on_loopback() {
        for ok in [
            "https://api.verigator.com",
            "http://127.0.0.1:8080",
            "http://127.3.2.1",
            "http://[::1]:9",
            "http://localhost:1",
        ] {
            assert!(base_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://api.verigator.com",
            "http://10.0.0.1",
            "ftp://x",
            "not a url",
        ] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn userinfo_in_url_is_refused_and_redacted() {
        let err = base_url("https://u:sup3rsecret@api.verigator.com").expect_err("must be refused");
        assert!(!err.to_string().contains("sup3rsecret"), "{err}");
    }

    #[test]
    fn base_url_gets_a_trailing_slash() {
        let u = base_url("http://127.0.0.1:9/prefix").expect("valid");
        assert_eq!(u.as_str(), "http://127.0.0.1:9/prefix/");
    }

    #[test]
    fn service_id_is_checked() {
        assert!(service_id(Some("81213bfd-b690-499e".into())).is_ok());
        assert!(matches!(
            service_id(None),
            Err(ConfigError::MissingServiceId)
        ));
        assert!(service_id(Some("../x".into())).is_err());
    }

    #[test]
    fn an_output_on_the_ledger_is_refused_by_any_path() {
        let dir = tempfile::tempdir().expect("dir");
        let ledger = dir.path().join("l.db");
        std::fs::write(&ledger, "x").expect("ledger");
        for out in ["l.db", "l.db-wal", "l.db.lock", "./sub/../l.db"] {
            std::fs::create_dir_all(dir.path().join("sub")).expect("sub");
            assert!(
                not_the_ledger("--out", &dir.path().join(out), &ledger).is_err(),
                "{out}"
            );
        }
        assert!(not_the_ledger("--out", &dir.path().join("report.csv"), &ledger).is_ok());
    }

    #[test]
    fn delimiters_and_regions() {
        assert_eq!(delimiter(";").ok(), Some(b';'));
        assert_eq!(delimiter("\\t").ok(), Some(b'\t'));
        assert!(delimiter("ab").is_err());
        assert!(region("ee").is_ok());
        assert!(region("XX").is_err());
    }
}
