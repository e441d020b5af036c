//! What the program means: validated, typed options built from [`crate::cli`] and the environment,
//! one struct per command. This is the only place that reads environment variables; everything
//! downstream receives a config value. It does not open files or sockets.
//!
//! - `secret.rs`: the credentials and the `Secret` that never prints.
//! - `values.rs`: single values parsed and checked (service id, base URL, delimiter, region).
//! - `error.rs`: what the user has to fix.
//! - `prune.rs`: `--max-delete`.

mod error;
mod pace;
mod proxy;
mod prune;
mod secret;
mod trust;
mod values;

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::cli::{ApiArgs, ImportArgs};
use pace::{Pace, timeout};

pub use error::ConfigError;
pub use proxy::Proxy;
pub use prune::{DEFAULT_MAX_DELETE, MaxDelete};
pub use secret::{Credentials, PASSWORD_VAR, Secret, USERNAME_VAR};
pub use trust::TrustOptions;
pub use values::{
    base_url, delimiter, not_the_input, not_the_ledger, not_the_same, region, service_id,
};

/// The request rate of commands that make only a few requests.
const DEFAULT_RATE: f64 = 20.0;

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
    /// Requests in flight at once: sized automatically, or fixed.
    pub concurrency: crate::client::Concurrency,
    /// Requests per second; `None` means unlimited (`--rate 0`).
    pub rate: Option<f64>,
    /// Requests allowed at once above the steady rate.
    pub burst: NonZeroU32,
    /// Attempts per row.
    pub max_attempts: NonZeroU32,
    /// Time allowed for one answer.
    pub timeout: Duration,
    /// How long nothing but transient failures may last before the run stops.
    pub outage_timeout: Duration,
    /// The proxy requests go through (https only).
    pub proxy: Option<Proxy>,
    /// Where the trusted certificates come from.
    pub trust: TrustOptions,
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

/// What to do with a new id that is another spelling of an id of the file or the ledger
/// (equal after Unicode normalisation and case folding).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OnSuspect {
    /// Send it, with a warning.
    #[default]
    Send,
    /// Do not send it (outcome `duplicate`, the first spelling named).
    Skip,
    /// Stop before any request (exit 2), listing them.
    Fail,
}

impl OnSuspect {
    /// As the flag writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            OnSuspect::Send => "send",
            OnSuspect::Skip => "skip",
            OnSuspect::Fail => "fail",
        }
    }
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
    /// `--prune`: after the whole file, delete the users not in it, at most this many.
    pub prune: Option<MaxDelete>,
    /// Refuse numbers in no assigned range instead of sending them with a warning.
    pub strict_phones: bool,
    /// Refuse numbers that are not mobiles instead of sending them with a warning.
    pub mobile_only: bool,
    /// What to do with another spelling of an id.
    pub on_suspect: OnSuspect,
}

impl Mode {
    fn from_args(args: &ImportArgs) -> Result<Mode, ConfigError> {
        Ok(Mode {
            dry_run: args.dry_run,
            limit: args.limit,
            retry_failed: args.retry_failed,
            apply_changes: args.apply_changes,
            strict_phones: args.strict_phones,
            mobile_only: args.mobile_only,
            on_suspect: args.on_suspect_duplicate,
            prune: match (args.prune, args.max_delete.as_deref()) {
                (false, _) => None,
                (true, None) => Some(DEFAULT_MAX_DELETE),
                (true, Some(limit)) => Some(MaxDelete::parse(limit)?),
            },
        })
    }
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
    /// Where to write the metrics for monitoring, at the end of the run.
    pub metrics_file: Option<PathBuf>,
    /// How much to print.
    pub verbosity: Verbosity,
}

/// How long an outage may last before a run stops (`--outage-timeout`'s default).
pub const DEFAULT_OUTAGE_TIMEOUT: Duration = Duration::from_secs(300);

/// Everything one `reconcile` needs.
#[derive(Clone, Debug)]
pub struct ReconcileConfig {
    /// The ServiceID.
    pub service_id: String,
    /// The ledger.
    pub ledger: PathBuf,
    /// The HTTP side.
    pub client: ClientOptions,
    /// Change the ledger.
    pub fix: bool,
    /// Fix even on an empty user list while the ledger holds UserIDs.
    pub force: bool,
}

/// An environment variable, if set and valid UTF-8.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Says at once every setting that is missing (not one per run): the service id, and with
/// `credentials` the API username and password.
fn missing_settings(service_id: Option<&str>, credentials: bool) -> Result<(), ConfigError> {
    let mut missing = Vec::new();
    if service_id.is_none_or(|s| s.trim().is_empty()) {
        missing.push("no service id: pass --service-id or set VERIGATOR_SERVICE_ID");
    }
    if credentials {
        // Set but not UTF-8 is not missing: reading it says what is wrong with it.
        let unset = |name| std::env::var_os(name).is_none_or(|v| v.is_empty());
        if unset(USERNAME_VAR) {
            missing.push("VERIGATOR_USERNAME is not set: export the Messente API username");
        }
        if unset(PASSWORD_VAR) {
            missing.push("VERIGATOR_PASSWORD is not set: export the Messente API password (never a flag: argv is public)");
        }
    }
    match missing.len() {
        0 => Ok(()),
        _ => Err(ConfigError::Missing(missing.join("; "))),
    }
}

/// The credentials from the environment; a plan sends nothing, so it needs none.
fn credentials(dry_run: bool) -> Result<Credentials, ConfigError> {
    match Credentials::from_env() {
        Ok(c) => Ok(c),
        Err(_) if dry_run => Ok(Credentials {
            username: String::new(),
            password: Secret::new(""),
        }),
        Err(e) => Err(e),
    }
}

/// An output (`--report`, `--metrics-file`) must replace neither the ledger, nor the file being
/// imported, nor the other output.
fn check_outputs(args: &ImportArgs) -> Result<(), ConfigError> {
    let outputs = [
        ("--report", args.report.as_deref()),
        ("--metrics-file", args.metrics_file.as_deref()),
    ];
    for (flag, path) in outputs {
        let Some(path) = path else { continue };
        not_the_ledger(flag, path, &args.ledger.ledger)?;
        if args.csv.as_os_str() != "-" {
            not_the_input(flag, path, &args.csv)?;
        }
        crate::report::check_target(path).map_err(|e| ConfigError::NotAFile {
            flag,
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    if let (Some(report), Some(metrics)) = (&args.report, &args.metrics_file) {
        not_the_same(["--report", "--metrics-file"], report, metrics)?;
    }
    Ok(())
}

impl ImportConfig {
    /// Validates `import`'s arguments and reads the credentials from the environment.
    pub fn from_args(args: ImportArgs) -> Result<Self, ConfigError> {
        // A plan sends nothing, so it needs no credentials.
        missing_settings(args.api.service_id.as_deref(), !args.dry_run)?;
        let pace = Pace::from_args(&args)?;
        let mode = Mode::from_args(&args)?;
        check_outputs(&args)?;
        let source = if args.csv.as_os_str() == "-" {
            Source::Stdin
        } else {
            Source::File(args.csv)
        };
        let regular = matches!(&source, Source::File(path) if path.is_file());
        if mode.on_suspect == OnSuspect::Fail && !mode.dry_run && !regular {
            return Err(ConfigError::ReadTwice(crate::user::escape(&source.name())));
        }
        let input = InputOptions {
            delimiter: args.delimiter.as_deref().map(delimiter).transpose()?,
            default_region: args.default_region.as_deref().map(region).transpose()?,
            id_column: args.id_column,
            phone_column: args.phone_column,
        };
        let service_id = service_id(args.api.service_id)?;
        let base_url = base_url(&args.api.base_url)?;
        let proxy = proxy::choose(&base_url, env_var)?;
        let credentials = credentials(args.dry_run)?;
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
                concurrency: pace.concurrency,
                rate: pace.rate,
                burst: pace.burst,
                max_attempts: pace.max_attempts,
                timeout: pace.timeout,
                outage_timeout: pace.outage_timeout,
                proxy,
                trust: TrustOptions::new(args.api.ca_cert, env_var),
            },
            json: args.json,
            progress: !args.no_progress && verbosity != Verbosity::Quiet,
            progress_interval: if args.progress_interval.is_finite() {
                Duration::from_secs_f64(args.progress_interval.clamp(0.05, 3600.0))
            } else {
                crate::report::progress::LINE_EVERY
            },
            mode,
            report: args.report,
            metrics_file: args.metrics_file,
            verbosity,
        })
    }
}

impl ReconcileConfig {
    /// Validates `reconcile`'s arguments and reads the credentials from the environment.
    pub fn from_args(
        api: ApiArgs,
        ledger: PathBuf,
        timeout_s: f64,
        (fix, force): (bool, bool),
    ) -> Result<Self, ConfigError> {
        missing_settings(api.service_id.as_deref(), true)?;
        let timeout = timeout(timeout_s)?;
        let service_id = service_id(api.service_id)?;
        let base_url = base_url(&api.base_url)?;
        let proxy = proxy::choose(&base_url, env_var)?;
        Ok(ReconcileConfig {
            service_id,
            ledger,
            client: ClientOptions {
                base_url,
                proxy,
                trust: TrustOptions::new(api.ca_cert, env_var),
                credentials: Credentials::from_env()?,
                concurrency: crate::client::Concurrency::Fixed(1),
                rate: Some(DEFAULT_RATE),
                burst: NonZeroU32::MIN,
                max_attempts: NonZeroU32::new(6).unwrap_or(NonZeroU32::MIN),
                timeout,
                outage_timeout: DEFAULT_OUTAGE_TIMEOUT,
            },
            fix,
            force,
        })
    }
}
