//! What the program means: validated, typed options built from [`crate::cli`] and the environment.
//! This is the only place that reads environment variables; everything downstream receives a
//! `Config` value. It does not open files or sockets.

use std::fmt;
use std::net::IpAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;
use url::Url;

use crate::cli::{ApiArgs, ImportArgs};

/// The request rate of commands that make only a few requests.
const DEFAULT_RATE: f64 = 20.0;

/// Environment variable holding the API username.
pub const USERNAME_VAR: &str = "VERIGATOR_USERNAME";
/// Environment variable holding the API password.
pub const PASSWORD_VAR: &str = "VERIGATOR_PASSWORD";

/// A value that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The API credentials, sent as `X-Service-Auth: <username>:<password>`.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The Messente API username.
    pub username: String,
    /// The Messente API password.
    pub password: Secret,
}

impl Credentials {
    /// Reads the credentials from the environment (never from flags: argv is visible to every user).
    pub fn from_env() -> Result<Self, ConfigError> {
        let read = |name: &'static str| match std::env::var(name) {
            Ok(v) if !v.is_empty() => Ok(v),
            Ok(_) | Err(std::env::VarError::NotPresent) => Err(ConfigError::MissingEnv(name)),
            Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::NotUnicodeEnv(name)),
        };
        let username = read(USERNAME_VAR)?;
        if username.contains(':') {
            return Err(ConfigError::ColonInUsername);
        }
        Ok(Credentials {
            username,
            password: Secret::new(read(PASSWORD_VAR)?),
        })
    }
}

/// Where the CSV comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Standard input (`-`).
    Stdin,
    /// A file.
    File(PathBuf),
}

impl Source {
    /// The name used in messages and in the runs table.
    pub fn name(&self) -> String {
        match self {
            Source::Stdin => "<stdin>".to_string(),
            Source::File(p) => p.display().to_string(),
        }
    }
}

/// How to read the CSV.
#[derive(Clone, Debug, Default)]
pub struct InputOptions {
    /// Header of the id column, if not detected.
    pub id_column: Option<String>,
    /// Header of the phone column, if not detected.
    pub phone_column: Option<String>,
    /// Field delimiter, if not detected.
    pub delimiter: Option<u8>,
    /// Country for national numbers without a prefix.
    pub default_region: Option<phonenumber::country::Id>,
}

/// How to talk to the API.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The API's base URL (https, or http on loopback only).
    pub base_url: Url,
    /// The credentials.
    pub credentials: Credentials,
    /// Requests in flight at once.
    pub concurrency: NonZeroUsize,
    /// Requests per second; `None` means unlimited (`--rate 0`).
    pub rate: Option<f64>,
    /// Requests allowed at once above the steady rate.
    pub burst: NonZeroU32,
    /// Attempts per row.
    pub max_attempts: NonZeroU32,
    /// Time allowed for one answer.
    pub timeout: Duration,
}

/// How much a run prints besides the summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// Errors and the summary only.
    Quiet,
    /// Row warnings and progress.
    #[default]
    Normal,
    /// Also every request's outcome.
    Verbose,
}

/// What a run may do besides sending new rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mode {
    /// Plan only: no request, no ledger write.
    pub dry_run: bool,
    /// Send at most this many rows.
    pub limit: Option<u64>,
    /// Send rows that failed before.
    pub retry_failed: bool,
    /// Replace users whose phone changed.
    pub apply_changes: bool,
}

/// Everything one `import` needs.
#[derive(Clone, Debug)]
pub struct ImportConfig {
    /// The CSV.
    pub source: Source,
    /// How to read it.
    pub input: InputOptions,
    /// The ServiceID.
    pub service_id: String,
    /// The ledger file.
    pub ledger: PathBuf,
    /// The HTTP side.
    pub client: ClientOptions,
    /// Summary as JSON on stdout.
    pub json: bool,
    /// Show progress (bar on a terminal, periodic lines otherwise).
    pub progress: bool,
    /// Time between progress lines when stderr is not a terminal.
    pub progress_interval: Duration,
    /// What else the run may do.
    pub mode: Mode,
    /// Where to write the per-row report.
    pub report: Option<PathBuf>,
    /// How much to print.
    pub verbosity: Verbosity,
}

/// A configuration the user has to fix; nothing has been sent.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// A required environment variable is unset or empty.
    #[error("{0} is not set: export the Messente API credentials in the environment")]
    MissingEnv(&'static str),
    /// An environment variable is not valid UTF-8.
    #[error("{0} is not valid UTF-8")]
    NotUnicodeEnv(&'static str),
    /// The username cannot contain the separator of the auth header.
    #[error(
        "VERIGATOR_USERNAME contains ':', which the X-Service-Auth header uses as its separator"
    )]
    ColonInUsername,
    /// No service id.
    #[error("no service id: pass --service-id or set VERIGATOR_SERVICE_ID")]
    MissingServiceId,
    /// The service id cannot be put into a URL path.
    #[error("service id {0:?} may hold only letters, digits, '-' and '_'")]
    BadServiceId(String),
    /// Not a URL.
    #[error("--base-url {url:?} is not a valid URL: {reason}")]
    BadUrl {
        /// What was given (without any userinfo).
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// Plain HTTP to a non-loopback host would expose the credentials.
    #[error(
        "--base-url {0}: plain http:// is allowed only for loopback hosts (127.0.0.0/8, ::1, localhost); use https://"
    )]
    InsecureUrl(String),
    /// A numeric option out of range.
    #[error("--{flag} {value}: {reason}")]
    BadNumber {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: String,
        /// The allowed range.
        reason: &'static str,
    },
    /// A delimiter that is not one ASCII character.
    #[error("--delimiter {0:?}: give one ASCII character, e.g. ';' or '\\t'")]
    BadDelimiter(String),
    /// An unknown region.
    #[error("--default-region {0:?} is not an ISO 3166 country code such as EE or GB")]
    BadRegion(String),
    /// An unknown status in a filter.
    #[error("--status {0:?}: use synced, present, failed or retry")]
    BadStatus(String),
}

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

impl ImportConfig {
    /// Validates `import`'s arguments and reads the credentials from the environment.
    pub fn from_args(args: ImportArgs) -> Result<Self, ConfigError> {
        let bad = |flag, value: String, reason| ConfigError::BadNumber {
            flag,
            value,
            reason,
        };
        let concurrency = NonZeroUsize::new(args.concurrency)
            .filter(|c| c.get() <= 1024)
            .ok_or_else(|| bad("concurrency", args.concurrency.to_string(), "use 1 to 1024"))?;
        if !args.rate.is_finite() || args.rate < 0.0 || args.rate > 1_000_000.0 {
            return Err(bad(
                "rate",
                args.rate.to_string(),
                "use 0 (unlimited) or a positive number of requests per second",
            ));
        }
        let rate = (args.rate > 0.0).then_some(args.rate);
        let burst = NonZeroU32::new(args.burst)
            .ok_or_else(|| bad("burst", args.burst.to_string(), "use 1 or more"))?;
        let max_attempts = NonZeroU32::new(args.max_attempts)
            .filter(|n| n.get() <= 100)
            .ok_or_else(|| {
                bad(
                    "max-attempts",
                    args.max_attempts.to_string(),
                    "use 1 to 100",
                )
            })?;
        if !args.timeout.is_finite() || args.timeout <= 0.0 || args.timeout > 3600.0 {
            return Err(bad(
                "timeout",
                args.timeout.to_string(),
                "use more than 0 and at most 3600 seconds",
            ));
        }
        let source = if args.csv.as_os_str() == "-" {
            Source::Stdin
        } else {
            Source::File(args.csv)
        };
        let input = InputOptions {
            id_column: args.id_column,
            phone_column: args.phone_column,
            delimiter: args.delimiter.as_deref().map(delimiter).transpose()?,
            default_region: args.default_region.as_deref().map(region).transpose()?,
        };
        let service_id = service_id(args.api.service_id)?;
        let base_url = base_url(&args.api.base_url)?;
        let credentials = match Credentials::from_env() {
            Ok(c) => c,
            // A plan sends nothing, so it needs no credentials.
            Err(_) if args.dry_run => Credentials {
                username: String::new(),
                password: Secret::new(""),
            },
            Err(e) => return Err(e),
        };
        let verbosity = match (args.quiet, args.verbose) {
            (true, _) => Verbosity::Quiet,
            (false, true) => Verbosity::Verbose,
            (false, false) => Verbosity::Normal,
        };
        Ok(ImportConfig {
            source,
            input,
            service_id,
            ledger: args.ledger.ledger,
            client: ClientOptions {
                base_url,
                credentials,
                concurrency,
                rate,
                burst,
                max_attempts,
                timeout: Duration::from_secs_f64(args.timeout),
            },
            json: args.json,
            progress: !args.no_progress && verbosity != Verbosity::Quiet,
            progress_interval: Duration::from_secs_f64(args.progress_interval.clamp(0.05, 3600.0)),
            mode: Mode {
                dry_run: args.dry_run,
                limit: args.limit,
                retry_failed: args.retry_failed,
                apply_changes: args.apply_changes,
            },
            report: args.report,
            verbosity,
        })
    }
}

impl crate::reconcile::ReconcileConfig {
    /// Validates `reconcile`'s arguments and reads the credentials from the environment.
    pub fn from_args(
        api: ApiArgs,
        ledger: PathBuf,
        timeout: f64,
        fix: bool,
    ) -> Result<Self, ConfigError> {
        if !timeout.is_finite() || timeout <= 0.0 || timeout > 3600.0 {
            return Err(ConfigError::BadNumber {
                flag: "timeout",
                value: timeout.to_string(),
                reason: "use more than 0 and at most 3600 seconds",
            });
        }
        Ok(crate::reconcile::ReconcileConfig {
            service_id: service_id(api.service_id)?,
            ledger,
            client: ClientOptions {
                base_url: base_url(&api.base_url)?,
                credentials: Credentials::from_env()?,
                concurrency: NonZeroUsize::MIN,
                rate: Some(DEFAULT_RATE),
                burst: NonZeroU32::MIN,
                max_attempts: NonZeroU32::new(6).unwrap_or(NonZeroU32::MIN),
                timeout: Duration::from_secs_f64(timeout),
            },
            fix,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        let c = Credentials {
            username: "u".into(),
            password: s,
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

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
    fn delimiters_and_regions() {
        assert_eq!(delimiter(";").ok(), Some(b';'));
        assert_eq!(delimiter("\\t").ok(), Some(b'\t'));
        assert!(delimiter("ab").is_err());
        assert!(region("ee").is_ok());
        assert!(region("XX").is_err());
    }
}
