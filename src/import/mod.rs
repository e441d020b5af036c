//! One import run: setup, the run's state and its result. The stages run on threads of their own
//! and meet here: read ([`crate::input`], a thread) → look up ([`crate::ledger::lookup`], two
//! threads) → decide (`plan.rs`) → send concurrently (`send.rs`) → record
//! ([`crate::ledger::writer`], a thread).
//!
//! - `event_loop.rs`: the loop. Only the HTTP stage is concurrent (a `FuturesUnordered` bounded by
//!   `--concurrency`); decisions, progress, logs and the report happen one at a time, so nothing
//!   needs a lock. Also owns stopping: signals and fatal answers.
//! - `rows.rs`: every row's outcome, counted, logged, reported and queued for the ledger.
//! - `plan.rs`: the ledger filter.
//! - `send.rs`: one row's requests and what their answers mean.
//! - `finish.rs`: the end of the run: resolving UserIDs, the summary, the run record.
//! - `prune.rs`: `--prune`, the users not in the file deleted at the end.
//! - `pace.rs`: whether the rate asked is reached, and if the window holds it back.
//! - `scratch.rs`: where the new ids of a dry run are kept, off the heap.
//! - `seen.rs`: the ledger rows this input has had, and the line of each one's first occurrence.

mod event_loop;
mod finish;
mod pace;
mod plan;
mod prune;
mod rows;
mod scratch;
mod seen;
mod send;
mod suspect;

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::client::{Client, ClientError};
use crate::config::{ImportConfig, Mode, OnSuspect, Verbosity};
use crate::input::{self, InputError, Reader};
use crate::ledger::lookup;
use crate::ledger::writer::{self, Event, Writer};
use crate::ledger::{Ledger, LedgerError, RunCounts};
use crate::report::progress::Progress;
use crate::report::{RowReport, Summary};
use crate::signals::Signals;
use crate::throttle::Stop;
use plan::Planner;
use send::Flying;

/// How often the loop wakes to refresh progress when nothing else happens.
const TICK: Duration = Duration::from_millis(100);
/// Finished rows go to the writer thread in handfuls of this many…
const HANDFUL: usize = 64;
/// …or when the oldest has waited this long.
const HANDFUL_AGE: Duration = Duration::from_millis(50);
/// At most this many rows are answered and not yet committed, counting the requests in flight
/// (or `--concurrency`, when that is larger): the most a `kill -9` can lose from the ledger (the
/// next run finds those users again through 409 and the user list), and the bound on the memory
/// between the loop and the writer. Room for the writer's largest batch and the next one
/// building up behind it, so that a writer that falls behind is never starved while it commits.
const MAX_UNRECORDED: usize = crate::ledger::BATCH_ROWS_BEHIND + 4096;

/// Why an import could not run (nothing was sent), or stopped on bad input.
#[derive(Debug, Error)]
pub enum ImportError {
    /// The input file.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The ledger.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The HTTP client.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// `--on-suspect-duplicate fail` found other spellings of ids: nothing was sent.
    #[error(
        "{count} suspect duplicates (ids equal after Unicode normalisation and case folding, the first {} listed above; --dry-run --report FILE lists them all): nothing sent (--on-suspect-duplicate fail); fix the file, or pass --on-suspect-duplicate send or skip",
        listed.len()
    )]
    SuspectDuplicates {
        /// How many.
        count: u64,
        /// The first of them, one line each (`file:line: …`).
        listed: Vec<String>,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// Writing outcomes to the ledger failed part-way (disk full, I/O error): requests were sent,
    /// and the rows answered since the last commit are not recorded.
    #[error(
        "{0}; the run stopped: rows answered since the last commit are not in the ledger, and the next run finds them again (409 and the user list)"
    )]
    Recording(#[source] LedgerError),
    /// Looking rows up in the ledger failed part-way: requests were sent, and every answer so far
    /// is recorded.
    #[error(
        "{0}; the run stopped part-way: every answer so far is recorded, and the next run goes on from there"
    )]
    Lookup(#[source] LedgerError),
    /// A worker thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(#[source] std::io::Error),
    /// A dry run's temporary database.
    #[error(transparent)]
    Scratch(#[from] scratch::ScratchError),
    /// The `--report` file.
    #[error("--report {path}: {source}")]
    Report {
        /// The report's path.
        path: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// Runs one import (or, with `--dry-run`, plans it) and returns its summary. `Err` only when the
/// run could not start or the input broke part-way (recorded outcomes are committed first).
pub async fn run(config: &ImportConfig) -> Result<Summary, ImportError> {
    if config.mode.on_suspect == OnSuspect::Fail && !config.mode.dry_run {
        look_for_suspects(config).await?;
    }
    run_once(config).await
}

/// `--on-suspect-duplicate fail`: the file planned first, quietly, and the run refused before
/// any request when it holds other spellings of ids.
async fn look_for_suspects(config: &ImportConfig) -> Result<(), ImportError> {
    let look = ImportConfig {
        mode: Mode {
            dry_run: true,
            prune: None,
            ..config.mode
        },
        report: None,
        metrics_file: None,
        json: false,
        progress: false,
        verbosity: Verbosity::Quiet,
        ..config.clone()
    };
    // The plan reads the ledger as it is: upgraded first, so that it holds every id's folded key.
    if config.ledger.exists() {
        drop(Ledger::open_for_import(&config.ledger)?);
    }
    let planned = Box::pin(run_once(&look)).await?;
    if planned.suspect_duplicates == 0 {
        return Ok(());
    }
    let input = crate::user::escape(&config.source.name());
    Err(ImportError::SuspectDuplicates {
        count: planned.suspect_duplicates,
        listed: planned
            .suspects_listed
            .iter()
            .map(|line| format!("{input}:{line}"))
            .collect(),
    })
}

/// One run (or plan) of the file.
async fn run_once(config: &ImportConfig) -> Result<Summary, ImportError> {
    let reader = input::open(&config.source, &config.input)?;
    let report = config
        .report
        .as_deref()
        .map(RowReport::create)
        .transpose()
        .map_err(|e| report_error(config, e))?;
    let stop = Stop::default();
    let client = Arc::new(Client::new(&config.client, stop.clone())?);
    let mut signals = Signals::watch(stop.clone()).map_err(ImportError::Signals)?;
    let (mut run, looking) = Run::start(config, &reader, report)?;
    if config.verbosity == Verbosity::Verbose {
        run.progress.println(&match &config.client.proxy {
            Some(proxy) => format!("proxy: requests go through {proxy}"),
            None => "proxy: none, requests go directly to the API".to_string(),
        });
        for source in client.trusted() {
            run.progress.println(&format!("trust: {source}"));
        }
    }
    let commits = run.writer.as_ref().map(Writer::commits).unwrap_or_default();
    let started = Instant::now();
    let chunks = input::spawn(reader, lookup::LANES);
    let looked = lookup::spawn(looking, &config.service_id, &commits, chunks)
        .map_err(ImportError::Thread)?;
    let pumped = run
        .pump(Arc::clone(&client), &stop, looked, &mut signals)
        .await;
    // Whatever stopped the loop, rows already answered reach the ledger.
    let closed = run.close();
    let (input_error, closed) = match (pumped, closed) {
        (Ok(input_error), Ok(closed)) => (input_error, closed),
        // A last commit that failed outweighs the rest: its rows are the ones not recorded.
        (_, Err(e)) => return run.fail(None, e, started),
        (Err(e), Ok(closed)) => return run.fail(closed, e, started),
    };
    run.conclude(closed, input_error, &client, (&stop, &signals), started)
        .await
}

/// The `--report` file could not be written.
fn report_error(config: &ImportConfig, source: std::io::Error) -> ImportError {
    ImportError::Report {
        path: config
            .report
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        source,
    }
}

/// The sequential state of one run.
struct Run<'a> {
    config: &'a ImportConfig,
    planner: Planner,
    /// `None` on a dry run.
    writer: Option<Writer>,
    events: Option<UnboundedReceiver<Event>>,
    /// Finished rows not yet handed to the writer, and since when the oldest waits.
    outbox: Vec<writer::Row>,
    outbox_since: Instant,
    run_id: Option<i64>,
    input: String,
    progress: Progress,
    report: Option<RowReport>,
    report_failure: Option<std::io::Error>,
    counts: RunCounts,
    unsettled: u64,
    aborted: Option<String>,
    flying: Flying,
    /// Rows whose requests were started: once there are any, a failure is an abort with a summary.
    launched: u64,
    /// Rows kept for the ledger and not yet committed (see [`MAX_UNRECORDED`]).
    unrecorded: usize,
    /// Rows with their outcome (for progress): every row passes through `note` once.
    finished: u64,
    /// Of those, rows answered by the API (the progress display's pace).
    answered: u64,
    /// The first line whose id could not be read at all: `--prune` then deletes nothing.
    unreadable: Option<u64>,
    /// The first line of a record that runs over several lines: `--prune` then deletes nothing.
    spans_lines: Option<u64>,
    /// The input file as it was opened (a regular file): one changed since deletes nothing.
    stamp: Option<input::Stamp>,
    /// `--prune` was given and deleted nothing because a safety rule forbade it.
    prune_refused: bool,
    /// Rows sent (or, in a plan, to send) with a phone warning.
    phone_warnings: u64,
    /// Whether the window of requests in flight holds the rate back.
    pace: pace::PaceWatch,
    /// Of the rows checked before sending, those whose number is not a mobile.
    not_mobile: u64,
    /// Suspect duplicates sent anyway (`--on-suspect-duplicate send`).
    suspects_sent: u64,
    /// Ids that ended `changed` in this run (few): the end of the run does not count them again
    /// when their UserID is still unknown.
    changed: std::collections::HashSet<String>,
    /// The ServiceID, shared by the requests.
    service: Rc<str>,
}

/// The run's progress display. Rows are counted up front only when shown: a rerun without
/// progress reads the file once.
fn progress_of(config: &ImportConfig) -> Progress {
    Progress::new(
        config.progress,
        config
            .progress
            .then(|| input::count_rows(&config.source))
            .flatten(),
        config.progress_interval,
        config.mode.limit.is_none(),
    )
}

impl<'a> Run<'a> {
    /// Opens the ledger (a dry run only reads it), registers the run and starts the writer; returns
    /// the run's state and the lookup stage's connections. The lookups' connections are opened
    /// before the run is registered, so that failing there leaves no unfinished run behind.
    fn start(
        config: &'a ImportConfig,
        reader: &Reader,
        report: Option<RowReport>,
    ) -> Result<(Run<'a>, Vec<Option<Ledger>>), ImportError> {
        let ledger = (!config.mode.dry_run)
            .then(|| Ledger::open_for_import(&config.ledger))
            .transpose()?;
        let looking = (0..lookup::LANES)
            .map(|_| Ledger::open_for_plan(&config.ledger))
            .collect::<Result<Vec<_>, _>>()?;
        let (writer, events, run_id) = match ledger {
            None => (None, None, None),
            Some(mut ledger) => {
                let run_id = ledger.begin_run(&config.service_id, reader.name())?;
                let (writer, events) = Writer::spawn(ledger, config.service_id.clone())?;
                (Some(writer), Some(events), Some(run_id))
            }
        };
        let mut run = Run {
            config,
            planner: Planner::new(config.mode)?,
            writer,
            events,
            outbox: Vec::new(),
            outbox_since: Instant::now(),
            run_id,
            input: reader.name().to_string(),
            progress: progress_of(config),
            report,
            report_failure: None,
            counts: RunCounts::default(),
            unsettled: 0,
            aborted: None,
            flying: Flying::default(),
            launched: 0,
            unrecorded: 0,
            finished: 0,
            answered: 0,
            unreadable: None,
            spans_lines: None,
            stamp: reader.stamp(),
            prune_refused: false,
            phone_warnings: 0,
            pace: pace::PaceWatch::new(config.client.rate),
            not_mobile: 0,
            suspects_sent: 0,
            changed: std::collections::HashSet::new(),
            service: Rc::from(config.service_id.as_str()),
        };
        run.warn_if_spellings_unknown(&looking);
        Ok((run, looking))
    }

    /// A plan on a ledger older than schema 6 (it does not upgrade it) cannot find other
    /// spellings of ids in it: says so rather than report none.
    fn warn_if_spellings_unknown(&mut self, looking: &[Option<Ledger>]) {
        if looking
            .first()
            .and_then(Option::as_ref)
            .is_some_and(|ledger| !ledger.knows_spellings())
        {
            self.progress.warn(
                "warning: this ledger predates suspect duplicates: a plan does not check ids against the other spellings it holds until an import upgrades it",
            );
        }
    }
}
