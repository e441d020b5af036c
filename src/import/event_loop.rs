//! The event loop of a run: feeds decisions into the bounded set of requests, settles answers,
//! hands finished rows to the writer, and stops on signals, fatal answers, bad input or a failing
//! ledger. Everything here runs on one thread, one event at a time.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc::UnboundedReceiver;

use super::plan::Job;
use super::send::{self, Sending};
use super::{HANDFUL, HANDFUL_AGE, ImportError, MAX_UNRECORDED, Run, TICK};
use crate::client::Client;
use crate::input::InputError;
use crate::ledger::Ledger;
use crate::ledger::lookup::{Chunk, Looked, Lookups};
use crate::ledger::writer::{self, Event, Writer};
use crate::report::Outcome;
use crate::report::progress::Done;
use crate::signals::Signals;
use crate::throttle::Stop;

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

/// The loop's own state, besides the run's.
#[derive(Default)]
struct Pumping {
    queue: VecDeque<Job>,
    in_flight: FuturesUnordered<Sending>,
    input_done: bool,
    input_error: Option<InputError>,
    signalled: bool,
    failure: Option<ImportError>,
    /// After a signal: when to stop waiting for the requests in flight.
    deadline: Option<tokio::time::Instant>,
}

impl Run<'_> {
    /// The main loop: feeds decisions into the bounded set of requests and settles answers until
    /// the input ends or the run stops. Returns an input error that ended the file early.
    pub(super) async fn pump(
        &mut self,
        client: Arc<Client>,
        stop: &Stop,
        mut chunks: Lookups,
        signals: &mut Signals,
    ) -> Result<Option<InputError>, ImportError> {
        let mut p = Pumping::default();
        let mut ticker = tokio::time::interval(TICK);
        loop {
            // The window moves with the API's latency and health (`--concurrency auto`).
            let concurrency = client.window().limit();
            self.launch(&mut p, &client, stop, concurrency);
            self.watch_pace(&client, &p);
            if p.in_flight.is_empty() && (p.input_done || stop.is_triggered()) {
                break;
            }
            let wants_input = !p.input_done && !stop.is_triggered() && p.queue.len() < concurrency;
            tokio::select! {
                biased;
                count = signals.next() => {
                    if self.on_signal(&mut p, count) {
                        break;
                    }
                }
                // Before answers: a writer that failed must stop the run at once.
                Some(event) = next_event(&mut self.events) => {
                    if let Err(e) = self.on_writer(event) {
                        p.failure = Some(e);
                        break;
                    }
                }
                Some((slot, answer)) = p.in_flight.next(), if !p.in_flight.is_empty() => {
                    self.settle(slot, answer, stop);
                    // Every answer already in, before the other branches are polled again.
                    while let Some(Some((slot, answer))) = p.in_flight.next().now_or_never() {
                        self.settle(slot, answer, stop);
                    }
                }
                chunk = chunks.recv(), if wants_input => self.take(&mut p, chunk, stop),
                () = sleep_until(p.deadline) => break,
                _ = ticker.tick() => {}
            }
            self.after_event(&client);
        }
        if let Some(warning) = self.pace.finish(&client) {
            self.progress.println(&warning);
        }
        self.note_unanswered(std::mem::take(&mut p.queue));
        match p.failure {
            Some(e) => Err(e),
            None => Ok(p.input_error),
        }
    }

    /// Right after launching: a full window with rows waiting is one that holds them back.
    fn watch_pace(&mut self, client: &Client, p: &Pumping) {
        if let Some(warning) = self
            .pace
            .sample(client, p.in_flight.len(), !p.queue.is_empty())
        {
            self.progress.println(&warning);
        }
    }

    /// After each event: finished rows to the writer when a handful is ready or old, and progress.
    fn after_event(&mut self, client: &Client) {
        if self.outbox.len() >= HANDFUL
            || (!self.outbox.is_empty() && self.outbox_since.elapsed() >= HANDFUL_AGE)
        {
            self.hand_over();
        }
        self.progress.update(Done {
            rows: self.finished,
            answered: self.answered,
            requests: client.requests_sent(),
            counts: &self.counts,
        });
    }

    /// Takes what the writer says: a commit frees room for requests; a failure stops the run.
    fn on_writer(&mut self, event: Event) -> Result<(), ImportError> {
        match event {
            Event::Committed {
                commit,
                rows,
                added,
            } => {
                self.unrecorded = self.unrecorded.saturating_sub(rows);
                self.planner.committed(commit, added);
                Ok(())
            }
            Event::Failed => Err(self.writer_failure()),
        }
    }

    /// Starts queued jobs while there is room in flight and the run goes on. A writer that falls
    /// behind (random ids, a slow disk) holds new requests back: answers waiting for a commit and
    /// requests that will add to them stay under [`MAX_UNRECORDED`], which bounds both the memory
    /// they take and what a `kill -9` can lose.
    fn launch(&mut self, p: &mut Pumping, client: &Arc<Client>, stop: &Stop, concurrency: usize) {
        let most = MAX_UNRECORDED.max(concurrency);
        while !stop.is_triggered()
            && p.in_flight.len() < concurrency
            && p.in_flight.len() + self.unrecorded < most
        {
            let Some(job) = p.queue.pop_front() else {
                break;
            };
            let history = self.replacement(&job);
            p.in_flight
                .push(self.flying.launch(job, client, &self.service, history));
            self.launched += 1;
        }
    }

    /// A first signal (which raised the stop flag already) stops new requests and waits for those
    /// in flight (up to a timeout); a second one stops at once. Returns whether to stop now.
    fn on_signal(&mut self, p: &mut Pumping, count: u32) -> bool {
        self.abort("interrupted by a signal".into());
        if count > 1 || p.signalled {
            self.progress
                .println("second signal: stopping now; requests in flight are left as retry");
            return true;
        }
        p.signalled = true;
        p.deadline = Some(tokio::time::Instant::now() + self.config.client.timeout);
        self.progress.println(
            "stopping: no new requests; waiting for those in flight (signal again to stop at once)",
        );
        false
    }

    /// Takes what the lookup stage passed on: decisions for a chunk, or the end of the input.
    fn take(&mut self, p: &mut Pumping, chunk: Option<Chunk>, stop: &Stop) {
        match chunk {
            None => p.input_done = true,
            Some(Chunk::Looked(Looked {
                records,
                found,
                twins,
                visible,
            })) => {
                self.planner.visible(visible);
                let looked = found.into_iter().zip(twins);
                for (record, entry) in records.into_iter().zip(looked) {
                    match self.decide(record, entry) {
                        Ok(Some(job)) => p.queue.push_back(job),
                        Ok(None) => {}
                        Err(e) => {
                            p.failure = Some(e);
                            stop.trigger();
                            return;
                        }
                    }
                }
            }
            Some(Chunk::Input(e)) => {
                p.input_error = Some(e);
                stop.trigger();
            }
            // Like bad input: no new requests, but those in flight are answered and recorded.
            Some(Chunk::Ledger(e)) => {
                p.failure = Some(ImportError::Lookup(e));
                stop.trigger();
            }
        }
    }

    /// Rows queued or in flight got no answer: the next run sends them again.
    fn note_unanswered(&mut self, queue: VecDeque<Job>) {
        for job in queue {
            let reason = "not sent: the run stopped first";
            self.note(
                job.line,
                &job.user.id_in_service,
                job.user.phone_as_written(),
                Outcome::Retry,
                Some(reason),
                false,
            );
        }
        for job in self.flying.drain() {
            self.note(
                job.line,
                &job.user.id_in_service,
                job.user.phone_as_written(),
                Outcome::Retry,
                Some("no answer before the run stopped"),
                false,
            );
            if let Some(change) = send::unanswered(&job) {
                self.keep(writer::Row {
                    change,
                    replacement: None,
                });
            }
        }
    }

    /// Passes the finished rows to the writer thread.
    pub(super) fn hand_over(&mut self) {
        if let Some(writer) = &self.writer {
            writer.write(std::mem::take(&mut self.outbox));
        }
    }

    /// Queues a finished row for the ledger.
    pub(super) fn keep(&mut self, row: writer::Row) {
        if self.writer.is_some() {
            if self.outbox.is_empty() {
                self.outbox_since = Instant::now();
            }
            self.unrecorded += 1;
            self.outbox.push(row);
        }
    }

    /// The error that stopped the writer thread.
    pub(super) fn writer_failure(&mut self) -> ImportError {
        match self.writer.take().map(Writer::finish) {
            Some(Err(e)) => ImportError::Recording(e),
            _ => ImportError::Thread(std::io::Error::other("the ledger writer stopped")),
        }
    }

    /// Hands over the last rows and stops the writer, which commits them; returns the ledger
    /// (`None` on a dry run) for the run's last writes.
    pub(super) fn close(&mut self) -> Result<Option<Ledger>, ImportError> {
        self.hand_over();
        let closed = self
            .writer
            .take()
            .map(Writer::finish)
            .transpose()
            .map_err(ImportError::Recording);
        // The last commits' new rows, so that the end of the run knows every row of this input.
        if let Some(mut events) = self.events.take() {
            while let Ok(event) = events.try_recv() {
                if let Event::Committed { .. } = event {
                    let _ = self.on_writer(event);
                }
            }
        }
        closed
    }
}
