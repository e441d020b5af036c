//! The orchestration of one import run: read → classify against the ledger → send concurrently →
//! record. Only the HTTP stage is concurrent (a `FuturesUnordered` bounded by `--concurrency`);
//! classification, ledger writes, progress and counts happen here, one at a time, so nothing needs
//! a lock. Also owns stopping: signals and fatal answers.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use thiserror::Error;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::client::{Attempted, Client, ClientError, Created, Retried};
use crate::config::ImportConfig;
use crate::input::{self, InputError, Reader, Record, Row, User, mask_phone};
use crate::ledger::{Change, Ledger, LedgerError, RunCounts, Status};
use crate::progress::Progress;
use crate::report::{Outcome, Summary};
use crate::throttle::Stop;

/// Rows the reader thread hands over at once: large enough to amortise the channel.
const CHUNK_ROWS: usize = 512;
/// Chunks buffered between the reader thread and the pipeline.
const CHUNKS_BUFFERED: usize = 4;
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
}

/// A row to send.
struct Job {
    line: u64,
    user: User,
}

type Sending = Pin<Box<dyn Future<Output = (Job, Attempted<Created>)>>>;

/// Runs one import and returns its summary; `Err` only when the run could not start or the input
/// broke part-way (recorded outcomes are committed first).
pub async fn run(config: &ImportConfig) -> Result<Summary, ImportError> {
    let reader = input::open(&config.source, &config.input)?;
    let stop = Stop::default();
    let client = Arc::new(Client::new(&config.client, stop.clone())?);
    let mut ledger = Ledger::open_for_import(&config.ledger)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(ImportError::Signals)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(ImportError::Signals)?;
    let run_id = ledger.begin_run(&config.service_id, reader.name())?;
    let mut run = Run::new(
        config,
        ledger,
        reader.name().to_string(),
        Progress::new(config.progress, reader.size()),
    );
    let (mut chunks, bytes) = spawn_reader(reader);

    let started = Instant::now();
    let mut queue: VecDeque<Job> = VecDeque::new();
    let mut in_flight: FuturesUnordered<Sending> = FuturesUnordered::new();
    let mut input_done = false;
    let mut input_error = None;
    let mut signalled = false;
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut ticker = tokio::time::interval(TICK);
    loop {
        while !stop.is_triggered() && in_flight.len() < config.client.concurrency.get() {
            let Some(job) = queue.pop_front() else { break };
            run.counts.sent += 1;
            let client = Arc::clone(&client);
            let service = config.service_id.clone();
            in_flight.push(Box::pin(async move {
                let attempted = client.create_user(&service, &job.user).await;
                (job, attempted)
            }));
        }
        if in_flight.is_empty() && (input_done || stop.is_triggered()) {
            break;
        }
        let wants_input =
            !input_done && !stop.is_triggered() && queue.len() < config.client.concurrency.get();
        tokio::select! {
            biased;
            _ = async { tokio::select! { _ = sigint.recv() => {}, _ = sigterm.recv() => {} } } => {
                if signalled {
                    run.progress.println("second signal: stopping now; requests in flight become retry");
                    break;
                }
                signalled = true;
                run.abort("interrupted by a signal".into());
                stop.trigger();
                deadline = Some(tokio::time::Instant::now() + config.client.timeout);
                run.progress.println("stopping: no new requests; waiting for those in flight (signal again to stop at once)");
            }
            Some((job, attempted)) = in_flight.next(), if !in_flight.is_empty() => {
                run.settle(job, attempted, &stop)?;
            }
            chunk = chunks.recv(), if wants_input => match chunk {
                None => input_done = true,
                Some(Ok(records)) => {
                    for record in records {
                        if let Some(job) = run.classify(record)? {
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
        run.ledger.commit_if_due()?;
        run.progress.update(
            bytes.load(std::sync::atomic::Ordering::Relaxed),
            &run.counts,
        );
    }
    // Rows still queued or in flight were not answered: the next run sends them again.
    let unanswered = queue.len() + in_flight.len();
    for _ in 0..unanswered {
        run.tally(Outcome::Retry);
    }
    drop(in_flight);
    run.ledger.commit()?;
    if run.aborted.is_none() && input_error.is_none() {
        run.resolve(&client).await?;
    }
    let unresolved = run.ledger.unresolved(&config.service_id)?.len() as u64;
    run.progress.finish();
    let summary = Summary {
        run_id,
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
    run.ledger.finish_run(run_id, &summary.counts, code)?;
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

/// Reads and validates the CSV on its own thread, so that parsing overlaps the pipeline and a slow
/// stdin never blocks the event loop. Reports bytes consumed for progress.
fn spawn_reader(
    mut reader: Reader,
) -> (
    mpsc::Receiver<Result<Vec<Record>, InputError>>,
    Arc<std::sync::atomic::AtomicU64>,
) {
    let (tx, rx) = mpsc::channel(CHUNKS_BUFFERED);
    let bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = Arc::clone(&bytes);
    std::thread::spawn(move || {
        loop {
            let mut chunk = Vec::with_capacity(CHUNK_ROWS);
            let mut end = false;
            while chunk.len() < CHUNK_ROWS {
                match reader.next_record() {
                    Some(Ok(record)) => chunk.push(record),
                    Some(Err(e)) => {
                        let _ = tx.blocking_send(Ok(chunk));
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                    None => {
                        end = true;
                        break;
                    }
                }
            }
            counter.store(reader.bytes_read(), std::sync::atomic::Ordering::Relaxed);
            if (!chunk.is_empty() && tx.blocking_send(Ok(chunk)).is_err()) || end {
                return;
            }
        }
    });
    (rx, bytes)
}

/// Where each row of this run was first seen, by ledger rowid: a duplicate check that costs eight
/// bytes per ledger row instead of a set of every id in the file.
#[derive(Default)]
struct Seen(Vec<(u32, u32)>);

impl Seen {
    fn get(&self, rowid: i64) -> Option<(u32, u32)> {
        let slot = *self.0.get(usize::try_from(rowid).ok()?)?;
        (slot.0 != 0).then_some(slot)
    }

    fn mark(&mut self, rowid: i64, line: u64, phone: &str) {
        let Ok(index) = usize::try_from(rowid) else {
            return;
        };
        if self.0.len() <= index {
            self.0.resize(index + 1 + index / 4, (0, 0));
        }
        self.0[index] = (u32::try_from(line).unwrap_or(u32::MAX), phone_hash(phone));
    }
}

fn phone_hash(phone: &str) -> u32 {
    // FNV-1a: only compares phones of the same id, so 32 bits are plenty.
    phone.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The sequential state of one run.
struct Run<'a> {
    config: &'a ImportConfig,
    ledger: Ledger,
    input: String,
    progress: Progress,
    counts: RunCounts,
    unsettled: u64,
    seen: Seen,
    /// New ids queued or in flight, not yet in the ledger: line and phone of their first occurrence.
    pending: HashMap<String, (u64, String)>,
    aborted: Option<String>,
}

impl<'a> Run<'a> {
    fn new(config: &'a ImportConfig, ledger: Ledger, input: String, progress: Progress) -> Self {
        Run {
            config,
            ledger,
            input,
            progress,
            counts: RunCounts::default(),
            unsettled: 0,
            seen: Seen::default(),
            pending: HashMap::new(),
            aborted: None,
        }
    }

    fn abort(&mut self, why: String) {
        self.aborted.get_or_insert(why);
    }

    fn tally(&mut self, outcome: Outcome) {
        outcome.count(&mut self.counts);
        if !matches!(
            outcome,
            Outcome::Synced | Outcome::Present | Outcome::Skipped
        ) {
            self.unsettled += 1;
        }
    }

    fn warn(&mut self, line: u64, what: &str) {
        let message = format!("{}:{line}: {what}", self.input);
        self.progress.warn(&message);
    }

    /// Decides what to do with one row; returns the job if it must be sent.
    fn classify(&mut self, record: Record) -> Result<Option<Job>, LedgerError> {
        self.counts.rows += 1;
        let line = record.line;
        let user = match record.row {
            Row::Invalid(rejected) => {
                self.tally(Outcome::Invalid);
                self.warn(line, &format!("invalid: {}", rejected.reason));
                return Ok(None);
            }
            Row::User(user) => user,
        };
        if let Some((first, phone)) = self.pending.get(&user.id_in_service) {
            let (first, same) = (*first, *phone == user.phone_number);
            self.duplicate(line, first, same, &user);
            return Ok(None);
        }
        let Some(entry) = self
            .ledger
            .lookup(&self.config.service_id, &user.id_in_service)?
        else {
            self.pending.insert(
                user.id_in_service.clone(),
                (line, user.phone_number.clone()),
            );
            return Ok(Some(Job { line, user }));
        };
        if let Some((first, phone)) = self.seen.get(entry.rowid) {
            self.duplicate(
                line,
                u64::from(first),
                phone == phone_hash(&user.phone_number),
                &user,
            );
            return Ok(None);
        }
        self.seen.mark(entry.rowid, line, &user.phone_number);
        let same_phone = entry.phone_number == user.phone_number;
        match entry.status {
            Status::Synced | Status::Present if same_phone => self.tally(Outcome::Skipped),
            Status::Synced | Status::Present => {
                self.tally(Outcome::Changed);
                self.warn(line, &format!(
                    "changed: {:?} is {} with {} but the file has {}; not sent (the API cannot update a phone)",
                    user.id_in_service, entry.status.as_str(), mask_phone(&entry.phone_number), mask_phone(&user.phone_number)
                ));
            }
            Status::Failed if same_phone => {
                // Refused before for this very phone: resending would be refused again.
                self.counts.skipped += 1;
                self.unsettled += 1;
            }
            Status::Failed | Status::Retry => return Ok(Some(Job { line, user })),
        }
        Ok(None)
    }

    fn duplicate(&mut self, line: u64, first: u64, same_phone: bool, user: &User) {
        self.tally(Outcome::Duplicate);
        if same_phone {
            // The first occurrence decides this row's fate; it is counted there.
            self.unsettled -= 1;
        } else {
            self.warn(line, &format!(
                "duplicate: {:?} appeared on line {first} with another phone; {} here is ignored",
                user.id_in_service, mask_phone(&user.phone_number)
            ));
        }
    }

    /// Records the answer for one sent row.
    fn settle(
        &mut self,
        job: Job,
        attempted: Attempted<Created>,
        stop: &Stop,
    ) -> Result<(), LedgerError> {
        let Job { line, user } = job;
        let mut change = Change {
            id_in_service: &user.id_in_service,
            phone_number: &user.phone_number,
            status: Status::Retry,
            user_id: None,
            ctime: None,
            attempts: attempted.attempts,
            last_error: None,
        };
        let (outcome, write) = match &attempted.result {
            Retried::Done(Created::New { user_id, ctime }) => {
                change.user_id = user_id.as_deref();
                change.ctime = ctime.as_deref();
                // Without a UserID in the answer the row is like a 409: the user list resolves it.
                change.status = if user_id.is_some() {
                    Status::Synced
                } else {
                    Status::Present
                };
                (
                    if user_id.is_some() {
                        Outcome::Synced
                    } else {
                        Outcome::Present
                    },
                    true,
                )
            }
            Retried::Done(Created::Exists) => {
                change.status = Status::Present;
                (Outcome::Present, true)
            }
            Retried::Done(Created::Rejected(reason)) => {
                change.status = Status::Failed;
                change.last_error = Some(reason);
                self.warn(
                    line,
                    &format!(
                        "failed: {:?} ({}): {reason}",
                        user.id_in_service,
                        mask_phone(&user.phone_number)
                    ),
                );
                (Outcome::Failed, true)
            }
            Retried::Done(Created::Fatal(fatal)) => {
                self.abort(fatal.to_string());
                stop.trigger();
                (Outcome::Retry, false)
            }
            Retried::GaveUp(reason) => {
                change.last_error = Some(reason);
                self.warn(line, &format!("retry: {:?}: {reason}", user.id_in_service));
                (Outcome::Retry, true)
            }
            Retried::Stopped(reason) => {
                change.last_error = reason.as_deref();
                (Outcome::Retry, attempted.attempts > 0)
            }
        };
        self.tally(outcome);
        if write {
            let rowid = self.ledger.record(&self.config.service_id, &change)?;
            self.seen.mark(rowid, line, &user.phone_number);
        }
        self.pending.remove(&user.id_in_service);
        Ok(())
    }

    /// Fills in the UserIDs of `present` rows (this run's and earlier ones') from one user list.
    async fn resolve(&mut self, client: &Client) -> Result<(), LedgerError> {
        let wanted = self.ledger.unresolved(&self.config.service_id)?;
        if wanted.is_empty() {
            return Ok(());
        }
        let list = match client.list_users(&self.config.service_id).await.result {
            Retried::Done(Ok(list)) => list,
            Retried::Done(Err(crate::client::ListError::Fatal(fatal))) => {
                self.abort(fatal.to_string());
                return Ok(());
            }
            Retried::Done(Err(e)) => {
                self.progress
                    .println(&format!("warning: {e}; the next run tries again"));
                return Ok(());
            }
            Retried::GaveUp(reason) | Retried::Stopped(Some(reason)) => {
                self.progress.println(&format!(
                    "warning: listing users failed: {reason}; the next run tries again"
                ));
                return Ok(());
            }
            Retried::Stopped(None) => return Ok(()),
        };
        if list.total.is_some_and(|t| t > list.users.len() as u64) {
            self.progress.println(&format!(
                "warning: the user list holds {} users but claims {}: it may be truncated",
                list.users.len(),
                list.total.unwrap_or_default()
            ));
        }
        let wanted: std::collections::HashSet<String> = wanted.into_iter().collect();
        for user in list
            .users
            .iter()
            .filter(|u| wanted.contains(&u.id_in_service))
        {
            let ctime = user
                .ctime
                .as_ref()
                .map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_string));
            self.ledger.resolve(
                &self.config.service_id,
                &user.id_in_service,
                &user.id,
                ctime.as_deref(),
            )?;
            self.counts.resolved += 1;
        }
        self.ledger.commit()
    }
}
