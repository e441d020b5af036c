//! One function per subcommand: build the runtime, call the stage modules, print the result, and
//! return the exit code. The typed [`Error`] here is what `main` maps to an exit code.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;

use crate::cli::{
    CompletionsArgs, ExportArgs, ImportArgs, ReconcileArgs, SimulateArgs, StatusArgs,
};
use crate::config::ReconcileConfig;
use crate::config::{ConfigError, ImportConfig};
use crate::import::{self, ImportError};
use crate::ledger::{ExportError, Ledger, LedgerError, Status};
use crate::reconcile::{self, ReconcileError};
use crate::report;
use crate::simulator::{self, SeedError, SimConfig};

/// Why a command could not do its job.
#[derive(Debug, Error)]
pub enum Error {
    /// Bad options or environment.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The import could not start or its input broke.
    #[error(transparent)]
    Import(#[from] ImportError),
    /// The ledger could not be read.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// `export` failed.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// `reconcile` could not compare.
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    /// The simulator's seed file.
    #[error(transparent)]
    Seed(#[from] SeedError),
    /// A simulator option.
    #[error("{0}")]
    Simulator(String),
    /// Output or runtime failure.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether the error is stdout's reader having gone away (EPIPE), anywhere in its chain.
    pub fn is_broken_pipe(&self) -> bool {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = source {
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return true;
            }
            source = e.source();
        }
        false
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

/// A single-threaded runtime: the pipeline is one loop plus HTTP, and cross-thread wake-ups per
/// row cost more than they give (the CSV reader has its own thread).
pub fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::io("cannot start the async runtime"))
}

/// `import`.
pub fn import(args: ImportArgs) -> Result<u8, Error> {
    let config = ImportConfig::from_args(args)?;
    let started = std::time::Instant::now();
    let result = runtime()?
        .block_on(import::run(&config))
        .map_err(Error::from);
    if let Some(path) = &config.metrics_file {
        let code = match &result {
            Ok(summary) => summary.exit_code(),
            Err(e) => crate::exit::of(e),
        };
        write_metrics(path, &config, code, started.elapsed());
    }
    if let Err(Error::Import(import::ImportError::SuspectDuplicates { listed, .. })) = &result {
        for line in listed {
            eprintln!("{}", crate::user::printable(line));
        }
    }
    let summary = result?;
    print_summary(&summary, config.json)?;
    Ok(summary.exit_code())
}

/// Writes `--metrics-file`. A failure is a warning: the run's own exit code stays, and the
/// monitoring notices a file that stopped changing (its age is in it).
fn write_metrics(path: &std::path::Path, config: &ImportConfig, code: u8, took: Duration) {
    let run = report::RunEnd {
        service_id: &config.service_id,
        exit_code: code,
        duration: took,
        at: std::time::SystemTime::now(),
    };
    // Read without the run lock: another run may hold it already, and the counts are a snapshot.
    let ledger = match Ledger::open_read_only(&config.ledger) {
        Ok(ledger) => Some(ledger),
        Err(LedgerError::Missing(_)) => None,
        Err(e) => {
            eprintln!(
                "warning: --metrics-file: the ledger could not be read ({e}); only the run is in the file"
            );
            None
        }
    };
    let shown = path.display().to_string();
    let shown = crate::user::Escaped(&shown);
    match report::write_metrics(path, &run, ledger.as_ref()) {
        Ok(None) => {}
        Ok(Some(e)) => eprintln!(
            "warning: --metrics-file {shown}: the ledger could not be read ({e}); only the run is in the file"
        ),
        Err(e) => eprintln!("warning: --metrics-file {shown}: cannot write: {e}"),
    }
}

/// Prints the summary: the table on stderr, and with `json` one object on stdout.
pub fn print_summary(summary: &report::Summary, json: bool) -> Result<(), Error> {
    let mut err = std::io::stderr().lock();
    let _ = summary.write_text(&mut err);
    if json {
        let mut out = std::io::stdout().lock();
        match writeln!(out, "{}", summary.to_json()) {
            // Nobody reads the summary any more; the run's exit code still says how it went.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other.map_err(Error::io("cannot write to stdout"))?,
        }
    }
    Ok(())
}

/// `status`.
pub fn status(args: StatusArgs) -> Result<u8, Error> {
    let ledger = Ledger::open_read_only(&args.ledger.ledger)?;
    let mut out = std::io::stdout().lock();
    report::status(&ledger, args.service_id.as_deref(), args.json, &mut out)?;
    Ok(crate::exit::OK)
}

/// `export`.
pub fn export(args: ExportArgs) -> Result<u8, Error> {
    let statuses = args
        .status
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| Status::parse(s).ok_or_else(|| ConfigError::BadStatus(s.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(out) = &args.out {
        crate::config::not_the_ledger("--out", out, &args.ledger.ledger)?;
        report::check_target(out).map_err(Error::io(format!("--out {}", out.display())))?;
    }
    let ledger = Ledger::open_read_only(&args.ledger.ledger)?;
    let service = args.service_id.as_deref();
    let write = |w: &mut dyn Write| {
        if args.history {
            report::export_history(&ledger, service, args.format, w)
        } else {
            report::export(&ledger, service, &statuses, args.format, w)
        }
    };
    match &args.out {
        None => write(&mut std::io::stdout().lock())?,
        Some(path) => {
            let what = format!("cannot write {}", path.display());
            report::write_file(path, |w| write(w).map_err(ExportOut::Export)).map_err(
                |e| match e {
                    ExportOut::Export(e) => Error::Export(e),
                    ExportOut::Io(e) => Error::io(what)(e),
                },
            )?;
        }
    }
    Ok(crate::exit::OK)
}

/// An export to a file: the export's own failure, or the file's.
enum ExportOut {
    Export(ExportError),
    Io(std::io::Error),
}

impl From<std::io::Error> for ExportOut {
    fn from(e: std::io::Error) -> ExportOut {
        ExportOut::Io(e)
    }
}

/// `reconcile`.
pub fn reconcile(args: ReconcileArgs) -> Result<u8, Error> {
    if let Some(report) = &args.report {
        crate::config::not_the_ledger("--report", report, &args.ledger.ledger)?;
        // Checked before the list is asked for and anything is fixed.
        let what = format!("--report {}", report.display());
        report::check_target(report).map_err(Error::io(what.clone()))?;
        let dir = report.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(dir) = dir
            && !dir.is_dir()
        {
            return Err(Error::io(what)(std::io::Error::other(format!(
                "{} is not a directory",
                dir.display()
            ))));
        }
    }
    let config = ReconcileConfig::from_args(
        args.api,
        args.ledger.ledger,
        args.timeout,
        (args.fix, args.force),
    )?;
    // The report streams into a temporary file while the list is compared; it is renamed into
    // place only once reconcile has finished.
    let what = |path: &std::path::Path| format!("cannot write {}", path.display());
    let mut pending = match &args.report {
        Some(path) => Some(report::Pending::create(path).map_err(Error::io(what(path)))?),
        None => None,
    };
    let out = pending.as_mut().map(report::Pending::writer);
    let findings = runtime()?.block_on(reconcile::run(&config, out))?;
    let _ = findings.write_text(&mut std::io::stderr().lock());
    if let (Some(pending), Some(path)) = (pending, &args.report) {
        pending.persist().map_err(Error::io(what(path)))?;
    }
    if args.json {
        match writeln!(std::io::stdout().lock(), "{}", findings.to_json()) {
            // Nobody reads it any more; the exit code still says how reconcile went.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other.map_err(Error::io("cannot write to stdout"))?,
        }
    }
    Ok(findings.exit_code())
}

/// `simulate`.
/// `completions SHELL`: the completion script on stdout.
pub fn completions(args: &CompletionsArgs) -> Result<u8, Error> {
    crate::manual::completions(args.shell, &mut std::io::stdout().lock()).map_err(|source| {
        Error::Io {
            what: "writing the completion script".into(),
            source,
        }
    })?;
    Ok(crate::exit::OK)
}

/// `man`: the man page on stdout.
pub fn man() -> Result<u8, Error> {
    crate::manual::man(&mut std::io::stdout().lock()).map_err(|source| Error::Io {
        what: "writing the man page".into(),
        source,
    })?;
    Ok(crate::exit::OK)
}

pub fn simulate(args: SimulateArgs) -> Result<u8, Error> {
    let listen = loopback(args.listen)?;
    let config = SimConfig {
        username: args.username,
        password: args.password,
        create_status: args.create_status,
        service_ids: (!args.service_id.is_empty()).then_some(args.service_id),
        fail_rate: probability("fail-rate", args.fail_rate)?,
        reset_rate: probability("reset-rate", args.reset_rate)?,
        rate_limit: args.rate_limit,
        latency: std::time::Duration::from_millis(args.latency_ms),
        reject_phone: args
            .reject_phone
            .map(|r| {
                regex::Regex::new(&r).map_err(|e| Error::Simulator(format!("--reject-phone: {e}")))
            })
            .transpose()?,
        seed: args
            .seed
            .map(|p| simulator::load_seed(&p))
            .transpose()?
            .unwrap_or_default(),
        list_cap: args.list_cap,
        list_repeat: args.list_repeat,
        outage: args.outage,
        tls: match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(
                simulator::SimTls::from_files(cert, key)
                    .map_err(|e| Error::Simulator(e.to_string()))?,
            ),
            _ => None,
        },
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::io("cannot start the async runtime"))?
        .block_on(simulator::run(listen, config))
        .map_err(Error::io(format!("simulator on {listen}")))?;
    Ok(crate::exit::OK)
}

fn loopback(addr: SocketAddr) -> Result<SocketAddr, Error> {
    if addr.ip().is_loopback() {
        Ok(addr)
    } else {
        Err(Error::Simulator(format!(
            "--listen {addr}: the simulator serves loopback addresses only (127.0.0.0/8, ::1)"
        )))
    }
}

fn probability(flag: &str, p: f64) -> Result<f64, Error> {
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(Error::Simulator(format!(
            "--{flag} {p}: use a probability from 0 to 1"
        )))
    }
}
