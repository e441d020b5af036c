//! What the user typed: the clap derive definitions and their help text. No logic lives here;
//! [`crate::config`] turns these raw values into validated options.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

mod examples;

use examples::{
    DEMO_EXAMPLES, EXPORT_EXAMPLES, IMPORT_EXAMPLES, RECONCILE_EXAMPLES, SIMULATE_EXAMPLES,
    STATUS_EXAMPLES, TOP_EXAMPLES,
};

/// Bulk-register users into a Messente Verigator 2FA service, resumably.
///
/// Credentials come only from the environment: VERIGATOR_USERNAME and VERIGATOR_PASSWORD.
#[derive(Debug, Parser)]
#[command(name = "verigator-sync", version, about, long_about = None, after_help = TOP_EXAMPLES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// When to colour help and usage errors: auto (on a terminal, unless NO_COLOR is set), always,
    /// never. Nothing else is coloured.
    #[arg(long, global = true, value_enum, default_value_t = ColorWhen::Auto)]
    pub color: ColorWhen,
}

/// `--color`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorWhen {
    /// Colour on a terminal, unless `NO_COLOR` is set.
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

impl Cli {
    /// Parses the command line, colouring help and errors as `--color` and `NO_COLOR` say. Both
    /// must be known before clap prints anything, so they are read ahead of the parse.
    pub fn parse_with_color() -> Cli {
        let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        let mut when = None;
        for (i, arg) in args.iter().enumerate() {
            let arg = arg.to_string_lossy();
            // After `--` come file names, never options.
            if arg == "--" {
                break;
            }
            let value = match arg.strip_prefix("--color") {
                Some(rest) if rest.starts_with('=') => rest[1..].to_string(),
                Some("") => args
                    .get(i + 1)
                    .map(|v| v.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                _ => continue,
            };
            when = Some(value);
        }
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let choice = match when.as_deref() {
            Some("always") => clap::ColorChoice::Always,
            Some("never") => clap::ColorChoice::Never,
            _ if no_color => clap::ColorChoice::Never,
            _ => clap::ColorChoice::Auto,
        };
        let matches = Cli::command().color(choice).get_matches_from(args);
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register the users of a CSV file in a Verigator service.
    #[command(after_help = IMPORT_EXAMPLES)]
    Import(ImportArgs),
    /// Show counts per service and status, and the last runs.
    #[command(after_help = STATUS_EXAMPLES)]
    Status(StatusArgs),
    /// Write the ledger as CSV: how you store the UserIDs in your own database.
    #[command(after_help = EXPORT_EXAMPLES)]
    Export(ExportArgs),
    /// Compare the service's users at Verigator with the ledger (changes it only with --fix).
    #[command(after_help = RECONCILE_EXAMPLES)]
    Reconcile(ReconcileArgs),
    /// Serve an in-memory Verigator on loopback for tests, demos and rehearsals.
    #[command(after_help = SIMULATE_EXAMPLES)]
    Simulate(SimulateArgs),
    /// Import the bundled sample into a built-in simulator, twice, to show what a run looks like.
    #[command(after_help = DEMO_EXAMPLES)]
    Demo,
    /// Print a shell completion script, e.g. `completions bash > ~/.local/share/bash-completion/completions/verigator-sync`.
    Completions(CompletionsArgs),
    /// Print the man page (roff), with every subcommand, the exit codes and the environment, e.g. `man | man -l -`.
    Man,
}

/// Options of `completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Options shared by every subcommand that reads the ledger.
#[derive(Debug, Args)]
pub struct LedgerArgs {
    /// The SQLite ledger file (created on first import).
    #[arg(long, env = "VERIGATOR_LEDGER", default_value = "verigator-sync.db")]
    pub ledger: PathBuf,
}

/// Where the API is and which service to use.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// The Verigator API's base URL.
    #[arg(
        long,
        env = "VERIGATOR_BASE_URL",
        default_value = "https://api.verigator.com"
    )]
    pub base_url: String,
    /// The ServiceID to register users in.
    #[arg(long, env = "VERIGATOR_SERVICE_ID")]
    pub service_id: Option<String>,
    /// A PEM file of CA certificates to trust besides the system's (a TLS-inspecting proxy's
    /// root, where the system store cannot be changed).
    #[arg(long, env = "VERIGATOR_CA_CERT", value_name = "PATH")]
    pub ca_cert: Option<PathBuf>,
}

/// `import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The CSV file to import; `-` reads standard input.
    pub csv: PathBuf,
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// Requests in flight at once: `auto` sizes it by the rate and the API's latency (and shrinks
    /// it when the API struggles); a number fixes it.
    #[arg(long, default_value = "auto")]
    pub concurrency: String,
    /// With `--concurrency auto`: the most requests in flight at once.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_concurrency: usize,
    /// Requests per second, retries included (the API's documented ceiling is 150/s per IP).
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Requests that may go out at once above the steady rate.
    #[arg(long, default_value_t = 1)]
    pub burst: u32,
    /// Attempts per row before it is left as `retry` for the next run.
    #[arg(long, default_value_t = 6)]
    pub max_attempts: u32,
    /// Seconds to wait for one answer (for the user list, which may stream for longer: for its
    /// next bytes).
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Stop the run (exit 3) when every request has failed transiently (connection errors,
    /// timeouts, 5xx, 429) for this many seconds: the API is down.
    #[arg(long, value_name = "SECS", default_value_t = 300.0)]
    pub outage_timeout: f64,
    /// The header of the id column (default: the first of id_in_service, username, email, login).
    #[arg(long)]
    pub id_column: Option<String>,
    /// The header of the phone column (default: the first of phone_number, phone, mobile, msisdn).
    #[arg(long)]
    pub phone_column: Option<String>,
    /// The field delimiter (default: detected from the header among , ; tab |).
    #[arg(long)]
    pub delimiter: Option<String>,
    /// Complete national numbers with this country's prefix (ISO code, e.g. EE).
    #[arg(long)]
    pub default_region: Option<String>,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar and no periodic progress lines.
    #[arg(long)]
    pub no_progress: bool,
    /// Seconds between progress lines when stderr is not a terminal.
    #[arg(long, hide = true, default_value_t = 10.0)]
    pub progress_interval: f64,
    /// Print the plan (what would be sent, skipped, rejected) without any request or ledger write.
    #[arg(long)]
    pub dry_run: bool,
    /// Send at most N rows this run (a canary); the rest stay pending for the next run.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Write every row that did not end synced, present or skipped to this CSV (re-importable).
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,
    /// Send again the rows the API refused in earlier runs (after fixing the cause).
    #[arg(long)]
    pub retry_failed: bool,
    /// Replace users whose phone changed: delete at Verigator, create again, record the new UserID.
    #[arg(long)]
    pub apply_changes: bool,
    /// Refuse (as invalid) phone numbers in no range their country assigns, instead of sending
    /// them with a warning.
    #[arg(long)]
    pub strict_phones: bool,
    /// Refuse (as invalid) phone numbers that are not mobiles (fixed lines, toll free, …),
    /// instead of sending them with a warning.
    #[arg(long)]
    pub mobile_only: bool,
    /// A new id equal to another of the file or the ledger after Unicode normalisation and case
    /// folding (`Alice@x.com` / `alice@x.com`): send it with a warning, skip it, or stop before
    /// any request (exit 2) with the list. Ids are kept exact either way.
    #[arg(long, value_enum, default_value = "send", value_name = "ACTION")]
    pub on_suspect_duplicate: crate::config::OnSuspect,
    /// Full sync: after the whole file, delete at Verigator the users this ledger registered for
    /// the service whose id is not in the file.
    #[arg(long, conflicts_with = "limit")]
    pub prune: bool,
    /// With --prune: delete at most N users, or P% of those the ledger holds for the service
    /// (default 5%); over it nothing is deleted.
    #[arg(long, value_name = "N|P%", requires = "prune")]
    pub max_delete: Option<String>,
    /// At the end of the run (aborted ones too), write its metrics and the ledger's here, in the
    /// Prometheus text format, for node_exporter's textfile collector (replaced atomically).
    #[arg(
        long,
        value_name = "PATH",
        env = "VERIGATOR_METRICS_FILE",
        conflicts_with = "dry_run"
    )]
    pub metrics_file: Option<PathBuf>,
    /// Print only errors and the summary.
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Log the outcome of every request (phone numbers masked).
    #[arg(short, long)]
    pub verbose: bool,
}

/// `reconcile`.
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// Seconds the user list may go without a byte (it may stream for longer).
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Write one CSV line per disagreement here.
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,
    /// Change the ledger: mark users deleted at Verigator for re-registration, correct UserIDs
    /// (every value a fix overwrites is kept: `export --history`).
    #[arg(long)]
    pub fix: bool,
    /// With --fix: act even on an empty user list while the ledger holds UserIDs.
    #[arg(long, requires = "fix")]
    pub force: bool,
}

/// Output formats of `export`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// CSV with a header line.
    Csv,
    /// One JSON object per line.
    Ndjson,
}

/// `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this service.
    #[arg(long, env = "VERIGATOR_SERVICE_ID")]
    pub service_id: Option<String>,
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Only this service.
    #[arg(long, env = "VERIGATOR_SERVICE_ID")]
    pub service_id: Option<String>,
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// Only these statuses, comma-separated (synced,present,failed,retry).
    #[arg(long, value_delimiter = ',')]
    pub status: Vec<String>,
    /// Write here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The output format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
    pub format: ExportFormat,
    /// List the history instead: replaced users and reconcile's fixes, with the UserIDs they
    /// overwrote.
    #[arg(long, conflicts_with = "status")]
    pub history: bool,
}

/// `simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Address to listen on (loopback; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The API username the simulator accepts.
    #[arg(long, default_value = "demo")]
    pub username: String,
    /// The API password the simulator accepts (a throwaway: the simulator guards nothing).
    #[arg(long, default_value = "demo")]
    pub password: String,
    /// Status of a successful create: 201 as documented, or 200 as the live server was seen to answer.
    #[arg(long, default_value_t = 201, value_parser = clap::value_parser!(u16).range(200..=201))]
    pub create_status: u16,
    /// Only these services exist (repeat or comma-separate); default: any service id is accepted.
    #[arg(long, value_delimiter = ',')]
    pub service_id: Vec<String>,
    /// Probability of answering a create with 503.
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Probability of dropping the connection on a create without answering.
    #[arg(long, default_value_t = 0.0)]
    pub reset_rate: f64,
    /// Answer 429 with Retry-After above this many requests per second.
    #[arg(long)]
    pub rate_limit: Option<u32>,
    /// Milliseconds added to every answer.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Answer 422 to creates whose phone matches this regular expression.
    #[arg(long)]
    pub reject_phone: Option<String>,
    /// CSV of users that already exist (id_in_service, phone_number[, service_id]).
    #[arg(long)]
    pub seed: Option<PathBuf>,
    /// List at most N users while `total` says the true count (a truncated list).
    #[arg(long, value_name = "N")]
    pub list_cap: Option<usize>,
    /// List this id a second time with another UserID (repeat or comma-separate).
    #[arg(long, value_name = "ID", value_delimiter = ',')]
    pub list_repeat: Vec<String>,
    /// Answer 503 to every request, as an API that is down.
    #[arg(long)]
    pub outage: bool,
    /// Serve HTTPS with this PEM certificate chain (leaf first); needs --tls-key.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}
