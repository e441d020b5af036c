//! The orchestration of one import run: read ([`crate::input`], a thread) → look up
//! ([`crate::lookup`], two threads) → decide ([`crate::plan`]) → send concurrently
//! ([`crate::send`]) → record ([`crate::writer`], a thread). Within this loop only the HTTP stage
//! is concurrent (a `FuturesUnordered` bounded by `--concurrency`); decisions, progress, logs and
//! the report happen here one at a time, so nothing needs a lock. Also owns stopping: signals and fatal answers.

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use thiserror::Error;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::oneshot;

use crate::client::{Client, ClientError, ListError, Retried};
use crate::config::{ImportConfig, Verbosity};
use crate::input::{self, InputError, Record, Row};
use crate::ledger::lookup::{self, Chunk, Looked, Lookups};
use crate::ledger::writer::{self, Event, Replacement, Writer};
use crate::ledger::{Entry, Ledger, LedgerError, RunCounts};
use crate::phone::mask_phone;
use crate::plan::{Decision, Job, Planner};
use crate::progress::Progress;
use crate::report::{Outcome, RowReport, Summary};
use crate::send::{self, Answer, Flying, Sending};
use crate::throttle::Stop;

/// How often the loop wakes to refresh progress when nothing else happens.
const TICK: Duration = Duration::from_millis(100);
/// Finished rows go to the writer thread in handfuls of this many…
const HANDFUL: usize = 64;
/// …or when the oldest has waited this long.
const HANDFUL_AGE: Duration = Duration::from_millis(50);

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
    let reader = input::open(&config.source, &config.input)?;
    let report_error = |source| ImportError::Report {
        path: config
            .report
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        source,
    };
    let report = config
        .report
        .as_deref()
        .map(RowReport::create)
        .transpose()
        .map_err(report_error)?;
    let stop = Stop::default();
    let client = Arc::new(Client::new(&config.client, stop.clone())?);
    let signals = (
        signal(SignalKind::interrupt()).map_err(ImportError::Signals)?,
        signal(SignalKind::terminate()).map_err(ImportError::Signals)?,
    );
    let ledger = (!config.mode.dry_run)
        .then(|| Ledger::open_for_import(&config.ledger))
        .transpose()?;
    // Opened before the run is registered, so that failing here leaves no unfinished run behind.
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
    let commits = writer.as_ref().map(Writer::commits).unwrap_or_default();
    let started = Instant::now();
    let mut run = Run {
        config,
        planner: Planner::new(config.mode),
        writer,
        events,
        outbox: Vec::new(),
        outbox_since: Instant::now(),
        run_id,
        input: reader.name().to_string(),
        progress: Progress::new(config.progress, reader.size(), config.progress_interval),
        report,
        report_failure: None,
        counts: RunCounts::default(),
        unsettled: 0,
        aborted: None,
        flying: Flying::default(),
        service: Rc::from(config.service_id.as_str()),
    };
    let (chunks, bytes) = input::spawn(reader, lookup::LANES);
    let looked = lookup::spawn(looking, &config.service_id, &commits, chunks)
        .map_err(ImportError::Thread)?;
    let pumped = run
        .pump(Arc::clone(&client), &stop, looked, &bytes, signals)
        .await;
    // Whatever stopped the loop, rows already answered reach the ledger.
    let closed = run.close();
    let (input_error, closed) = match (pumped, closed) {
        (Ok(input_error), Ok(closed)) => (input_error, closed),
        // A last commit that failed outweighs the rest: its rows are the ones not recorded.
        (_, Err(e)) => return Err(run.fail(None, e)),
        (Err(e), Ok(closed)) => return Err(run.fail(closed, e)),
    };
    let mut ledger = match closed {
        Some(ledger) => Some(ledger),
        // A dry run's own connection went to the lookups; this one counts what is unresolved.
        None => Ledger::open_for_plan(&config.ledger)?,
    };
    let unresolved = match run.finish(ledger.as_mut(), &client, &stop).await {
        Ok(unresolved) => unresolved,
        Err(e) if config.mode.dry_run => return Err(run.fail(None, e.into())),
        Err(e) => return Err(run.fail(ledger, ImportError::Recording(e))),
    };
    run.progress.finish();
    let summary = Summary {
        run_id,
        dry_run: config.mode.dry_run,
        input: run.input.clone(),
        service_id: config.service_id.clone(),
        counts: run.counts.clone(),
        unsettled: run.unsettled,
        unresolved,
        elapsed: started.elapsed(),
        aborted: run.aborted.clone(),
    };
    let code = if input_error.is_some() {
        crate::exit::USAGE
    } else {
        summary.exit_code()
    };
    if let (Some(ledger), Some(id)) = (&mut ledger, run_id)
        && let Err(e) = ledger.finish_run(id, &summary.counts, code)
    {
        return Err(run.fail(None, ImportError::Recording(e)));
    }
    if let Some(e) = run.report_failure.take() {
        return Err(report_error(e));
    }
    if let Some(report) = run.report.take() {
        report.finish().map_err(report_error)?;
    }
    match input_error {
        Some(e) => Err(e.into()),
        None => Ok(summary),
    }
}

async fn next_event(events: &mut Option<UnboundedReceiver<Event>>) -> Option<Event> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
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
    /// The ServiceID, shared by the requests.
    service: Rc<str>,
}

impl Run<'_> {
    /// The main loop: feeds decisions into the bounded set of requests and settles answers until
    /// the input ends or the run stops. Returns an input error that ended the file early.
    async fn pump(
        &mut self,
        client: Arc<Client>,
        stop: &Stop,
        mut chunks: Lookups,
        bytes: &AtomicU64,
        (mut sigint, mut sigterm): (Signal, Signal),
    ) -> Result<Option<InputError>, ImportError> {
        let concurrency = self.config.client.concurrency.get();
        let mut queue: VecDeque<Job> = VecDeque::new();
        let mut in_flight: FuturesUnordered<Sending> = FuturesUnordered::new();
        let (mut input_done, mut input_error, mut signalled) = (false, None, false);
        let mut failure = None;
        let mut deadline = None;
        let mut ticker = tokio::time::interval(TICK);
        loop {
            while !stop.is_triggered() && in_flight.len() < concurrency {
                let Some(job) = queue.pop_front() else { break };
                let history = self.replacement(&job);
                in_flight.push(self.flying.launch(job, &client, &self.service, history));
            }
            if in_flight.is_empty() && (input_done || stop.is_triggered()) {
                break;
            }
            let wants_input = !input_done && !stop.is_triggered() && queue.len() < concurrency;
            tokio::select! {
                biased;
                _ = async { tokio::select! { _ = sigint.recv() => {}, _ = sigterm.recv() => {} } } => {
                    if signalled {
                        self.progress.println("second signal: stopping now; requests in flight are left as retry");
                        break;
                    }
                    signalled = true;
                    self.abort("interrupted by a signal".into());
                    stop.trigger();
                    deadline = Some(tokio::time::Instant::now() + self.config.client.timeout);
                    self.progress.println("stopping: no new requests; waiting for those in flight (signal again to stop at once)");
                }
                // Before answers: a writer that failed must stop the run at once.
                Some(event) = next_event(&mut self.events) => match event {
                    Event::Committed { commit, added } => self.planner.committed(commit, added),
                    Event::Failed => {
                        failure = Some(self.writer_failure());
                        break;
                    }
                },
                Some((slot, answer)) = in_flight.next(), if !in_flight.is_empty() => {
                    self.settle(slot, answer, stop);
                    // Every answer already in, before the other branches are polled again.
                    while let Some(Some((slot, answer))) = in_flight.next().now_or_never() {
                        self.settle(slot, answer, stop);
                    }
                }
                chunk = chunks.recv(), if wants_input => match chunk {
                    None => input_done = true,
                    Some(Chunk::Looked(Looked { records, found, visible })) => {
                        self.planner.visible(visible);
                        for (record, entry) in records.into_iter().zip(found) {
                            if let Some(job) = self.decide(record, entry) {
                                queue.push_back(job);
                            }
                        }
                    }
                    Some(Chunk::Input(e)) => {
                        input_error = Some(e);
                        stop.trigger();
                    }
                    // Like bad input: no new requests, but those in flight are answered and recorded.
                    Some(Chunk::Ledger(e)) => {
                        failure = Some(ImportError::Lookup(e));
                        stop.trigger();
                    }
                },
                () = sleep_until(deadline) => break,
                _ = ticker.tick() => {}
            }
            if self.outbox.len() >= HANDFUL
                || (!self.outbox.is_empty() && self.outbox_since.elapsed() >= HANDFUL_AGE)
            {
                self.hand_over();
            }
            self.progress
                .update(bytes.load(Ordering::Relaxed), &self.counts);
        }
        // Rows queued or in flight got no answer: the next run sends them again.
        for job in queue {
            let reason = "not sent: the run stopped first";
            self.note(
                job.line,
                &job.user.id_in_service,
                &job.user.phone_number,
                Outcome::Retry,
                Some(reason),
                false,
            );
        }
        for job in self.flying.drain() {
            self.note(
                job.line,
                &job.user.id_in_service,
                &job.user.phone_number,
                Outcome::Retry,
                Some("no answer before the run stopped"),
                false,
            );
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(input_error),
        }
    }

    /// Ends a run that failed part-way: the report still gets every row noted so far, and the run
    /// is marked aborted if the ledger still takes writes. Returns `error`, the one to show.
    fn fail(&mut self, ledger: Option<Ledger>, error: ImportError) -> ImportError {
        if let (Some(mut ledger), Some(id)) = (ledger, self.run_id) {
            // Best effort: a ledger that just failed may refuse this too, and `error` says more.
            let _ = ledger.finish_run(id, &self.counts, crate::exit::ABORTED);
        }
        let unsaved = match self.report.take() {
            Some(report) => report.finish().err(),
            None => self.report_failure.take(),
        };
        if let Some(e) = unsaved {
            self.progress
                .println(&format!("warning: the report could not be written: {e}"));
        }
        self.progress.finish();
        error
    }

    fn abort(&mut self, why: String) {
        self.aborted.get_or_insert(why);
    }

    /// Passes the finished rows to the writer thread.
    fn hand_over(&mut self) {
        if let Some(writer) = &self.writer {
            writer.write(std::mem::take(&mut self.outbox));
        }
    }

    /// Queues a finished row for the ledger.
    fn keep(&mut self, row: writer::Row) {
        if self.writer.is_some() {
            if self.outbox.is_empty() {
                self.outbox_since = Instant::now();
            }
            self.outbox.push(row);
        }
    }

    /// The error that stopped the writer thread.
    fn writer_failure(&mut self) -> ImportError {
        match self.writer.take().map(Writer::finish) {
            Some(Err(e)) => ImportError::Recording(e),
            _ => ImportError::Thread(std::io::Error::other("the ledger writer stopped")),
        }
    }

    /// Hands over the last rows and stops the writer, which commits them; returns the ledger
    /// (`None` on a dry run) for the run's last writes.
    fn close(&mut self) -> Result<Option<Ledger>, ImportError> {
        self.hand_over();
        self.events = None;
        self.writer
            .take()
            .map(Writer::finish)
            .transpose()
            .map_err(ImportError::Recording)
    }

    /// Counts, logs and reports one row's outcome: the one place every row passes through.
    fn note(
        &mut self,
        line: u64,
        id: &str,
        phone: &str,
        outcome: Outcome,
        reason: Option<&str>,
        settled: bool,
    ) {
        outcome.count(&mut self.counts);
        if !settled {
            self.unsettled += 1;
        }
        // Rows that went as planned are logged only with -v; replacements always show.
        let routine = (settled && outcome != Outcome::Replaced) || outcome == Outcome::Pending;
        let show = match self.config.verbosity {
            Verbosity::Quiet => false,
            Verbosity::Normal => !routine,
            Verbosity::Verbose => true,
        };
        if show {
            let message = match reason {
                Some(reason) => format!(
                    "{}:{line}: {}: {id:?} ({}): {reason}",
                    self.input,
                    outcome.as_str(),
                    mask_phone(phone)
                ),
                None => format!(
                    "{}:{line}: {}: {id:?} ({})",
                    self.input,
                    outcome.as_str(),
                    mask_phone(phone)
                ),
            };
            if self.config.verbosity == Verbosity::Verbose {
                self.progress.println(&message);
            } else {
                self.progress.warn(&message);
            }
        }
        if settled
            && matches!(
                outcome,
                Outcome::Synced | Outcome::Present | Outcome::Skipped
            )
        {
            return;
        }
        if let Some(report) = &mut self.report
            && let Err(e) = report.write(line, id, phone, outcome, reason.unwrap_or_default())
        {
            self.report_failure.get_or_insert(e);
            self.report = None;
        }
    }

    /// Decides what to do with one record; returns the job if it must be sent now.
    fn decide(&mut self, record: Record, entry: Option<Entry>) -> Option<Job> {
        self.counts.rows += 1;
        let line = record.line;
        let user = match record.row {
            Row::Invalid(r) => {
                self.note(
                    line,
                    &r.id_in_service,
                    &r.phone_number,
                    Outcome::Invalid,
                    Some(&r.reason),
                    false,
                );
                return None;
            }
            Row::User(user) => user,
        };
        match self.planner.decide(entry, line, user) {
            Decision::Keep {
                user,
                outcome,
                reason,
                settled,
            } => {
                self.note(
                    line,
                    &user.id_in_service,
                    &user.phone_number,
                    outcome,
                    reason.as_deref(),
                    settled,
                );
                None
            }
            Decision::Send(job)
                if self
                    .config
                    .mode
                    .limit
                    .is_some_and(|n| self.counts.sent >= n) =>
            {
                let reason = "held back by --limit";
                self.note(
                    job.line,
                    &job.user.id_in_service,
                    &job.user.phone_number,
                    Outcome::Pending,
                    Some(reason),
                    false,
                );
                None
            }
            Decision::Send(job) => {
                // Counted when decided, so that --limit holds back exactly the rows beyond N.
                self.counts.sent += 1;
                (!self.config.mode.dry_run).then_some(job)
            }
        }
    }

    /// For a replacement, asks the writer to commit its history row; the delete waits for it.
    fn replacement(&self, job: &Job) -> Option<oneshot::Receiver<i64>> {
        let (replace, writer) = (job.replace.as_ref()?, self.writer.as_ref()?);
        Some(writer.begin_replacement(Replacement {
            run_id: self.run_id,
            id_in_service: job.user.id_in_service.clone(),
            old_user_id: replace.old_user_id.clone(),
            old_phone: replace.old_phone.clone(),
            new_phone: job.user.phone_number.clone(),
        }))
    }

    /// Counts, logs and queues for the ledger one row's answer.
    fn settle(&mut self, slot: usize, answer: Answer, stop: &Stop) {
        let Some(job) = self.flying.remove(slot) else {
            return;
        };
        let done = send::settle(job, answer, self.config.verbosity == Verbosity::Verbose);
        if let Some(fatal) = done.fatal {
            self.abort(fatal);
            stop.trigger();
        }
        self.note(
            done.line,
            &done.change.id_in_service,
            &done.change.phone_number,
            done.outcome,
            done.reason.as_deref(),
            done.settled,
        );
        if done.write {
            self.keep(writer::Row {
                change: done.change,
                replacement: done.replacement,
            });
        }
    }

    /// Commits, then fills in the UserIDs of `present` rows (this run's and earlier ones') from one
    /// user list. Returns how many present rows still lack a UserID.
    async fn finish(
        &mut self,
        ledger: Option<&mut Ledger>,
        client: &Client,
        stop: &Stop,
    ) -> Result<u64, LedgerError> {
        let Some(ledger) = ledger else {
            return Ok(0);
        };
        if self.config.mode.dry_run {
            return Ok(ledger.unresolved(&self.config.service_id)?.len() as u64);
        }
        let wanted = ledger.unresolved(&self.config.service_id)?;
        if wanted.is_empty() || stop.is_triggered() {
            return Ok(wanted.len() as u64);
        }
        let list = match client.list_users(&self.config.service_id).await.result {
            Retried::Done(Ok(list)) => list,
            Retried::Done(Err(ListError::Fatal(fatal))) => {
                self.abort(fatal.to_string());
                return Ok(wanted.len() as u64);
            }
            Retried::Done(Err(e)) => {
                self.progress
                    .println(&format!("warning: {e}; the next run tries again"));
                return Ok(wanted.len() as u64);
            }
            Retried::GaveUp(reason) | Retried::Stopped(Some(reason)) => {
                self.progress.println(&format!(
                    "warning: listing users failed: {reason}; the next run tries again"
                ));
                return Ok(wanted.len() as u64);
            }
            Retried::Stopped(None) => return Ok(wanted.len() as u64),
        };
        if let Some(total) = list.total.filter(|t| *t > list.users.len() as u64) {
            self.progress.println(&format!(
                "warning: the user list holds {} users but claims {total}: it may be truncated",
                list.users.len()
            ));
        }
        let wanted: std::collections::HashSet<String> = wanted.into_iter().collect();
        let mut resolved = 0;
        for user in list
            .users
            .iter()
            .filter(|u| wanted.contains(&u.id_in_service))
        {
            let ctime = user
                .ctime
                .as_ref()
                .map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_string));
            ledger.resolve(
                &self.config.service_id,
                &user.id_in_service,
                &user.id,
                ctime.as_deref(),
            )?;
            resolved += 1;
        }
        ledger.commit()?;
        self.counts.resolved += resolved;
        let missing = wanted.len() as u64 - resolved;
        if missing > 0 {
            self.progress.println(&format!(
                "warning: {missing} present users are not in the service's user list (another key or case?); they keep no UserID"
            ));
        }
        Ok(missing)
    }
}
