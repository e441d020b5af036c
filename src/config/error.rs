//! The errors of a configuration the user has to fix: each names the flag or variable and what to do.

use thiserror::Error;

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
    /// Every setting that is missing, said at once.
    #[error("missing settings: {0}")]
    Missing(String),
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
    /// A proxy variable that is not a proxy URL (its value may hold a password: not shown).
    #[error("{var} is not a usable proxy URL: {reason}")]
    BadProxy {
        /// The variable.
        var: &'static str,
        /// Why.
        reason: String,
    },
    /// An output file that would replace the ledger.
    #[error(
        "{flag} {path} is the ledger (or a file beside it): writing there would replace every recorded UserID; name another file"
    )]
    OutputIsLedger {
        /// The flag.
        flag: &'static str,
        /// The path given.
        path: String,
    },
    /// An output that would replace the file being imported.
    #[error("{flag} {path} is the file being imported: name another file")]
    OutputIsInput {
        /// The flag.
        flag: &'static str,
        /// The path given.
        path: String,
    },
    /// Two outputs named the same file.
    #[error("{} and {} both name {path}: name two files", flags[0], flags[1])]
    OutputTwice {
        /// The flags.
        flags: [&'static str; 2],
        /// The path given.
        path: String,
    },
    /// An output path that cannot be a file (a directory, a device).
    #[error("{flag} {path}: {reason}")]
    NotAFile {
        /// The flag.
        flag: &'static str,
        /// The path given.
        path: String,
        /// Why.
        reason: String,
    },
    /// A delimiter that is not one ASCII character.
    #[error("--delimiter {0:?}: give one ASCII character, e.g. ';' or '\\t'")]
    BadDelimiter(String),
    /// An unknown region.
    #[error("--default-region {0:?} is not an ISO 3166 country code such as EE or GB")]
    BadRegion(String),
    /// `--on-suspect-duplicate fail` reads the input twice; a stream cannot be.
    #[error(
        "--on-suspect-duplicate fail reads {0} twice (first to look for suspect duplicates, before any request): give a regular file, or use skip"
    )]
    ReadTwice(String),
    /// An unknown status in a filter.
    #[error("--status {0:?}: use synced, present, failed, retry or deleted")]
    BadStatus(String),
}
