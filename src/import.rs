//! The orchestration of one import run: read → decide against the ledger ([`crate::plan`]) →
//! send concurrently → record. Only the HTTP stage is concurrent (a `FuturesUnordered` bounded by
//! `--concurrency`); decisions, ledger writes, progress, logs and the report happen in this loop,
//! one at a time, so nothing needs a lock. Also owns stopping: signals and fatal answers.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use thiserror::Error;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::client::{Attempted, Client, ClientError, Created, Deleted, ListError, Retried};
use crate::config::{ImportConfig, Verbosity};
use crate::input::{self, InputError, Record, Row, mask_phone};
use crate::ledger::{Change, Entry, Ledger, LedgerError, RunCounts, Status};
use crate::plan::{Decision, Job, Planner};
use crate::progress::Progress;
use crate::report::{Outcome, RowReport, Summary};
use crate::throttle::Stop;

/// How often the loop wakes to commit and refresh progress when nothing else happens.
const TICK: Duration = Duration::from_millis(100);

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

/// What a sent row got back: the delete of a replacement (if any), then the create.
struct Answer {
    deleted: Option<Retried<Deleted>>,
    created: Attempted<Created>,
}

type Sending = Pin<Box<dyn Future<Output = (Job, Answer)>>>;

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
    let mut ledger = if config.mode.dry_run {
        Ledger::open_for_plan(&config.ledger)?
    } else {
        Some(Ledger::open_for_import(&config.ledger)?)
    };
    let signals = (
        signal(SignalKind::interrupt()).map_err(ImportError::Signals)?,
        signal(SignalKind::terminate()).map_err(ImportError::Signals)?,
    );
    let run_id = match &mut ledger {
        Some(l) if !config.mode.dry_run => Some(l.begin_run(&config.service_id, reader.name())?),
        _ => None,
    };
    let started = Instant::now();
    let mut run = Run {
        config,
        planner: Planner::new(config.mode),
        ledger,
        run_id,
        input: reader.name().to_string(),
        progress: Progress::new(config.progress, reader.size(), config.progress_interval),
        report,
        report_failure: None,
        counts: RunCounts::default(),
        unsettled: 0,
        aborted: None,
        flying: HashMap::new(),
    };
    let (chunks, bytes) = input::spawn(reader);
    let input_error = run
        .pump(Arc::clone(&client), &stop, chunks, &bytes, signals)
        .await?;
    let unresolved = run.finish(&client, &stop).await?;
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
    if let (Some(ledger), Some(id)) = (&mut run.ledger, run_id) {
        ledger.finish_run(id, &summary.counts, code)?;
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
    ledger: Option<Ledger>,
    run_id: Option<i64>,
    input: String,
    progress: Progress,
    report: Option<RowReport>,
    report_failure: Option<std::io::Error>,
    counts: RunCounts,
    unsettled: u64,
    aborted: Option<String>,
    /// Rows in flight by line, so that a stop can still report them.
    flying: HashMap<u64, (String, String)>,
}

impl Run<'_> {
    /// The main loop: feeds decisions into the bounded set of requests and settles answers until
    /// the input ends or the run stops. Returns an input error that ended the file early.
    async fn pump(
        &mut self,
        client: Arc<Client>,
        stop: &Stop,
        mut chunks: tokio::sync::mpsc::Receiver<Result<Vec<Record>, InputError>>,
        bytes: &AtomicU64,
        (mut sigint, mut sigterm): (Signal, Signal),
    ) -> Result<Option<InputError>, ImportError> {
        let concurrency = self.config.client.concurrency.get();
        let mut queue: VecDeque<Job> = VecDeque::new();
        let mut in_flight: FuturesUnordered<Sending> = FuturesUnordered::new();
        let (mut input_done, mut input_error, mut signalled) = (false, None, false);
        let mut deadline = None;
        let mut ticker = tokio::time::interval(TICK);
        loop {
            while !stop.is_triggered() && in_flight.len() < concurrency {
                let Some(job) = queue.pop_front() else { break };
                in_flight.push(self.launch(job, &client)?);
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
                Some((job, answer)) = in_flight.next(), if !in_flight.is_empty() => {
                    self.settle(job, answer, stop)?;
                }
                chunk = chunks.recv(), if wants_input => match chunk {
                    None => input_done = true,
                    Some(Ok(records)) => {
                        let found = self.lookup(&records)?;
                        for record in records {
                            if let Some(job) = self.decide(record, &found) {
                                queue.push_back(job);
                            }
                        }
                    }
                    Some(Err(e)) => {
                        input_error = Some(e);
                        stop.trigger();
                    }
                },
                () = sleep_until(deadline) => break,
                _ = ticker.tick() => {}
            }
            if let Some(ledger) = &mut self.ledger {
                ledger.commit_if_due()?;
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
        for (line, (id, phone)) in std::mem::take(&mut self.flying) {
            self.note(
                line,
                &id,
                &phone,
                Outcome::Retry,
                Some("no answer before the run stopped"),
                false,
            );
        }
        Ok(input_error)
    }

    fn abort(&mut self, why: String) {
        self.aborted.get_or_insert(why);
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

    /// What the ledger holds for a chunk's ids: no row's decision writes, so one lookup serves
    /// the whole chunk.
    fn lookup(&mut self, records: &[Record]) -> Result<HashMap<String, Entry>, LedgerError> {
        let Some(ledger) = &mut self.ledger else {
            return Ok(HashMap::new());
        };
        let ids: Vec<&str> = records
            .iter()
            .filter_map(|r| match &r.row {
                Row::User(user) => Some(user.id_in_service.as_str()),
                Row::Invalid(_) => None,
            })
            .collect();
        ledger.lookup_chunk(&self.config.service_id, &ids)
    }

    /// Decides what to do with one record; returns the job if it must be sent now.
    fn decide(&mut self, record: Record, found: &HashMap<String, Entry>) -> Option<Job> {
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
        let entry = found.get(&user.id_in_service).cloned();
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

    /// Starts sending one job; a replacement is written down (and committed) before its delete.
    fn launch(&mut self, mut job: Job, client: &Arc<Client>) -> Result<Sending, LedgerError> {
        if let (Some(replace), Some(ledger)) = (&mut job.replace, &mut self.ledger) {
            replace.history_id = Some(ledger.begin_replacement(
                self.run_id,
                &self.config.service_id,
                &job.user.id_in_service,
                &replace.old_user_id,
                &replace.old_phone,
                &job.user.phone_number,
            )?);
        }
        self.flying.insert(
            job.line,
            (
                job.user.id_in_service.clone(),
                job.user.phone_number.clone(),
            ),
        );
        let client = Arc::clone(client);
        let service = self.config.service_id.clone();
        Ok(Box::pin(async move {
            let mut deleted = None;
            if let Some(replace) = &job.replace {
                let attempted = client.delete_user(&service, &replace.old_user_id).await;
                let gone = matches!(
                    attempted.result,
                    Retried::Done(Deleted::Gone | Deleted::AlreadyGone)
                );
                deleted = Some(attempted.result);
                if !gone {
                    let created = Attempted {
                        result: Retried::Stopped(None),
                        attempts: 0,
                    };
                    return (job, Answer { deleted, created });
                }
            }
            let created = client.create_user(&service, &job.user).await;
            (job, Answer { deleted, created })
        }))
    }

    /// Records the answer for one sent row.
    fn settle(&mut self, job: Job, answer: Answer, stop: &Stop) -> Result<(), LedgerError> {
        let Job {
            line,
            user,
            replace,
            known,
        } = job;
        self.flying.remove(&line);
        let (id, phone) = (user.id_in_service.as_str(), user.phone_number.as_str());
        if let Some(deleted) = &answer.deleted {
            let failure = match deleted {
                Retried::Done(Deleted::Gone | Deleted::AlreadyGone) => None,
                Retried::Done(Deleted::Fatal(fatal)) => {
                    self.abort(fatal.to_string());
                    stop.trigger();
                    Some((Outcome::Retry, fatal.to_string()))
                }
                Retried::Done(Deleted::Refused(reason)) => Some((
                    Outcome::Failed,
                    format!("deleting the old user was refused: {reason}"),
                )),
                Retried::GaveUp(reason) => Some((
                    Outcome::Retry,
                    format!("deleting the old user failed: {reason}"),
                )),
                Retried::Stopped(_) => Some((
                    Outcome::Retry,
                    "the run stopped before the old user was deleted".into(),
                )),
            };
            if let Some((outcome, reason)) = failure {
                // The ledger row keeps the old phone and UserID, so the next run tries again.
                self.note(line, id, phone, outcome, Some(&reason), false);
                return Ok(());
            }
        }
        let mut change = Change {
            id_in_service: id,
            phone_number: phone,
            status: Status::Retry,
            user_id: None,
            ctime: None,
            attempts: answer.created.attempts,
            last_error: None,
            known,
        };
        let mut reason = None;
        let (outcome, settled, write) = match &answer.created.result {
            Retried::Done(Created::New { user_id, ctime }) => {
                change.user_id = user_id.as_deref();
                change.ctime = ctime.as_deref();
                // Without a UserID in the answer the row is like a 409: the user list resolves it.
                change.status = if user_id.is_some() {
                    Status::Synced
                } else {
                    Status::Present
                };
                let outcome = match (&replace, user_id) {
                    (Some(old), Some(new)) => {
                        reason = Some(format!("UserID {} replaced by {new}", old.old_user_id));
                        Outcome::Replaced
                    }
                    (None, Some(_)) => Outcome::Synced,
                    (_, None) => Outcome::Present,
                };
                (outcome, true, true)
            }
            Retried::Done(Created::Exists) => {
                change.status = Status::Present;
                (Outcome::Present, true, true)
            }
            Retried::Done(Created::Rejected(why)) => {
                change.status = Status::Failed;
                change.last_error = Some(why);
                (Outcome::Failed, false, true)
            }
            Retried::Done(Created::Fatal(fatal)) => {
                self.abort(fatal.to_string());
                stop.trigger();
                reason = Some(fatal.to_string());
                (Outcome::Retry, false, false)
            }
            Retried::GaveUp(why) => {
                change.last_error = Some(why);
                (Outcome::Retry, false, true)
            }
            Retried::Stopped(why) => {
                change.last_error = why.as_deref();
                reason = Some(
                    why.clone()
                        .unwrap_or_else(|| "not sent: the run stopped first".into()),
                );
                // Sent at least once: the server may have the user, so the ledger must know the row.
                (
                    Outcome::Retry,
                    false,
                    answer.created.attempts > 0 || replace.is_some(),
                )
            }
        };
        let reason = reason.or_else(|| change.last_error.map(str::to_string));
        let new_user_id = change.user_id.map(str::to_string);
        if write && let Some(ledger) = &mut self.ledger {
            let rowid = ledger.record(&self.config.service_id, &change)?;
            if let Some(history) = replace.as_ref().and_then(|r| r.history_id) {
                ledger.finish_replacement(history, new_user_id.as_deref())?;
            }
            self.planner.recorded(rowid, line, &user);
        }
        let attempts = answer.created.attempts;
        let reason = match (reason, outcome) {
            (None, Outcome::Synced) if self.config.verbosity == Verbosity::Verbose => {
                Some(format!(
                    "UserID {} after {attempts} attempt(s)",
                    new_user_id.unwrap_or_default()
                ))
            }
            (reason, _) => reason,
        };
        self.note(line, id, phone, outcome, reason.as_deref(), settled);
        Ok(())
    }

    /// Commits, then fills in the UserIDs of `present` rows (this run's and earlier ones') from one
    /// user list. Returns how many present rows still lack a UserID.
    async fn finish(&mut self, client: &Client, stop: &Stop) -> Result<u64, LedgerError> {
        let Some(ledger) = &mut self.ledger else {
            return Ok(0);
        };
        ledger.commit()?;
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
