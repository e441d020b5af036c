//! The ledger's writer: a thread that owns an import's read-write connection. Inserts, commits
//! and their fsyncs happen there, so they neither take the event loop's time from the requests
//! nor stall it (a stalled loop would send the requests it owed in one burst, past the rate
//! limit). The loop hands over finished rows in small batches and learns, after each commit,
//! which new rows the ledger now holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::{mpsc as events, oneshot};

use crate::ledger::{Change, Ledger, LedgerError};

/// One finished row to write, with the replacement it completes (if any).
#[derive(Debug)]
pub struct Row {
    /// What to record.
    pub change: Change,
    /// The replacements-history row to complete with the new UserID.
    pub replacement: Option<i64>,
}

/// A replacement to write down before its delete is sent.
#[derive(Debug)]
pub struct Replacement {
    /// The run making it.
    pub run_id: Option<i64>,
    /// The user's id in the service.
    pub id_in_service: String,
    /// The UserID about to be deleted.
    pub old_user_id: String,
    /// The phone it was registered with.
    pub old_phone: String,
    /// The phone it is created again with.
    pub new_phone: String,
}

/// What the writer tells the loop.
#[derive(Debug)]
pub enum Event {
    /// Commit number `commit` is durable; it added these new rows `(id_in_service, rowid)`.
    Committed {
        /// Commits are numbered from 1; see [`Writer::commits`].
        commit: u64,
        /// How many of the rows handed over with [`Writer::write`] it made durable: the loop
        /// counts what is still unrecorded with it, and holds back new requests while that is high.
        rows: usize,
        /// The rows inserted (not updated) by it.
        added: Vec<(String, i64)>,
    },
    /// Writing failed and the writer stopped; [`Writer::finish`] returns the error.
    Failed,
}

enum Command {
    Rows(Vec<Row>),
    Replace(Replacement, oneshot::Sender<i64>),
}

/// The handle to the writer thread.
#[derive(Debug)]
pub struct Writer {
    commands: mpsc::Sender<Command>,
    thread: JoinHandle<Result<Ledger, LedgerError>>,
    commits: Arc<AtomicU64>,
    /// Rows handed over and not yet taken by the thread: while there are any, it is behind.
    queued: Arc<AtomicUsize>,
}

impl Writer {
    /// Moves `ledger` to a new writer thread recording into `service_id`; events arrive on the
    /// returned receiver.
    pub fn spawn(
        ledger: Ledger,
        service_id: String,
    ) -> Result<(Writer, events::UnboundedReceiver<Event>), LedgerError> {
        let (commands, inbox) = mpsc::channel();
        let (tell, told) = events::unbounded_channel();
        let commits = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&commits);
        let queued = Arc::new(AtomicUsize::new(0));
        let waiting = Arc::clone(&queued);
        let path = ledger.path().to_string();
        let thread = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || {
                let mut work = Work {
                    ledger,
                    service_id,
                    tell,
                    commits: counter,
                    added: Vec::new(),
                    written: 0,
                    queued: waiting,
                };
                match work.serve(&inbox) {
                    Ok(()) => Ok(work.ledger),
                    Err(e) => {
                        let _ = work.tell.send(Event::Failed);
                        Err(e)
                    }
                }
            })
            .map_err(|source| LedgerError::Io { path, source })?;
        Ok((
            Writer {
                commands,
                thread,
                commits,
                queued,
            },
            told,
        ))
    }

    /// How many commits are durable. A reader that loads this before it starts a read
    /// transaction sees at least those commits.
    pub fn commits(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.commits)
    }

    /// Queues rows; they are committed within about [`crate::ledger`]'s batch age. A writer
    /// that failed drops them, and has already sent [`Event::Failed`].
    pub fn write(&self, rows: Vec<Row>) {
        if !rows.is_empty() {
            self.queued.fetch_add(rows.len(), Ordering::AcqRel);
            let _ = self.commands.send(Command::Rows(rows));
        }
    }

    /// Writes down and commits a replacement, with everything queued before it; the receiver
    /// gets its history id, or is dropped if the writer failed.
    pub fn begin_replacement(&self, replacement: Replacement) -> oneshot::Receiver<i64> {
        let (reply, answer) = oneshot::channel();
        let _ = self.commands.send(Command::Replace(replacement, reply));
        answer
    }

    /// Commits what is queued, stops the thread and returns the ledger, or the error that
    /// stopped the writer.
    pub fn finish(self) -> Result<Ledger, LedgerError> {
        drop(self.commands);
        self.thread.join().unwrap_or_else(|_| {
            Err(LedgerError::Io {
                path: String::new(),
                source: std::io::Error::other("the ledger writer thread panicked"),
            })
        })
    }
}

struct Work {
    ledger: Ledger,
    service_id: String,
    tell: events::UnboundedSender<Event>,
    commits: Arc<AtomicU64>,
    added: Vec<(String, i64)>,
    /// Rows written since the last commit was announced.
    written: usize,
    queued: Arc<AtomicUsize>,
}

impl Work {
    fn serve(&mut self, inbox: &mpsc::Receiver<Command>) -> Result<(), LedgerError> {
        loop {
            let command = match self.ledger.batch_deadline() {
                None => inbox.recv().ok(),
                Some(due) => {
                    match inbox.recv_timeout(due.saturating_duration_since(Instant::now())) {
                        Ok(command) => Some(command),
                        Err(RecvTimeoutError::Timeout) => {
                            self.commit()?;
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => None,
                    }
                }
            };
            match command {
                None => return self.commit(),
                Some(Command::Rows(rows)) => {
                    self.ledger.savepoint()?;
                    let count = rows.len();
                    let behind = self.queued.fetch_sub(count, Ordering::AcqRel) > count;
                    match self.write(rows) {
                        Ok(added) => {
                            self.ledger.release()?;
                            self.added.extend(added);
                            self.written += count;
                        }
                        Err(e) => {
                            // Undo this handful alone and keep the rows written before it. The
                            // first error is the one to report, whatever happens after it.
                            if self.ledger.roll_back_to_savepoint().is_ok() {
                                let _ = self.commit();
                            }
                            return Err(e);
                        }
                    }
                    if self.ledger.commit_if_due(behind)? {
                        self.published();
                    }
                }
                Some(Command::Replace(r, reply)) => {
                    // Commits the open batch too, so the history row is durable before the delete.
                    let id = self.ledger.begin_replacement(
                        r.run_id,
                        &self.service_id,
                        &r.id_in_service,
                        &r.old_user_id,
                        &r.old_phone,
                        &r.new_phone,
                    )?;
                    self.published();
                    let _ = reply.send(id);
                }
            }
        }
    }

    /// Writes one handful; returns the rows it inserted.
    fn write(&mut self, rows: Vec<Row>) -> Result<Vec<(String, i64)>, LedgerError> {
        let mut new = Vec::with_capacity(rows.len());
        for row in rows {
            if !row.change.known {
                new.push(row.change);
                continue;
            }
            self.ledger.record(&self.service_id, &row.change)?;
            if let Some(history) = row.replacement {
                self.ledger
                    .finish_replacement(history, row.change.user_id.as_deref())?;
            }
        }
        self.ledger.insert_new(&self.service_id, new)
    }

    fn commit(&mut self) -> Result<(), LedgerError> {
        if self.ledger.commit()? {
            self.published();
        }
        Ok(())
    }

    /// Announces a commit: first the counter, which lookups read before they start, then the rows.
    fn published(&mut self) {
        let commit = self.commits.fetch_add(1, Ordering::AcqRel) + 1;
        let added = std::mem::take(&mut self.added);
        let rows = std::mem::take(&mut self.written);
        let _ = self.tell.send(Event::Committed {
            commit,
            rows,
            added,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Status;

    fn row(id: &str, known: bool) -> Row {
        Row {
            change: Change {
                id_in_service: id.into(),
                phone_number: "+37255555555".into(),
                status: if known { Status::Retry } else { Status::Synced },
                user_id: (!known).then(|| format!("uid-{id}")),
                ctime: None,
                attempts: 1,
                last_error: None,
                known,
            },
            replacement: None,
        }
    }

    /// A writer on a new ledger, with the ledger's path (the directory lives as long as it).
    fn spawned() -> (
        tempfile::TempDir,
        std::path::PathBuf,
        Writer,
        events::UnboundedReceiver<Event>,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("l.db");
        let ledger = Ledger::open_for_import(&path).expect("open");
        let (writer, events) = Writer::spawn(ledger, "s".into()).expect("spawn");
        (dir, path, writer, events)
    }

    #[test]
    fn commits_are_counted_announced_and_visible_to_other_connections() {
        let (_dir, path, writer, mut events) = spawned();
        writer.write(vec![row("a", false), row("b", false)]);
        // A replacement commits the rows queued before it, then answers.
        let history = writer
            .begin_replacement(Replacement {
                run_id: None,
                id_in_service: "a".into(),
                old_user_id: "uid-a".into(),
                old_phone: "+37255555555".into(),
                new_phone: "+37255555556".into(),
            })
            .blocking_recv()
            .expect("history id");
        assert!(history > 0);
        let Some(Event::Committed {
            commit,
            rows,
            added,
        }) = events.blocking_recv()
        else {
            panic!("expected a commit");
        };
        assert_eq!((commit, rows), (1, 2));
        assert_eq!(writer.commits().load(Ordering::Acquire), 1);
        let ids: Vec<&str> = added.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        let mut reader = Ledger::open_read_only(&path).expect("reader");
        let found = reader
            .lookup_chunk("s", &["a", "zz", "b", "a"])
            .expect("lookup");
        let rowids: Vec<Option<i64>> = found.iter().map(|e| e.as_ref().map(|e| e.rowid)).collect();
        assert_eq!(
            rowids,
            [Some(added[0].1), None, Some(added[1].1), Some(added[0].1)]
        );
        // An update is written but announces no new row; finishing commits it.
        writer.write(vec![row("a", true)]);
        writer.finish().expect("finish");
        let Some(Event::Committed {
            commit,
            rows,
            added,
        }) = events.blocking_recv()
        else {
            panic!("expected the last commit");
        };
        assert_eq!((commit, rows, added.len()), (2, 1, 0));
        let a = reader.lookup_chunk("s", &["a"]).expect("lookup");
        assert_eq!(a[0].as_ref().map(|e| e.status), Some(Status::Retry));
    }

    #[test]
    fn a_failed_write_stops_the_writer_and_is_reported() {
        let (_dir, path, writer, mut events) = spawned();
        writer.write(vec![row("kept", false)]);
        // The same new id twice breaks the primary key: a bug, but one that must not pass silently.
        writer.write(vec![row("b", false), row("a", false), row("a", false)]);
        // The rows before the failing handful are committed and announced, then the failure.
        let Some(Event::Committed { added, .. }) = events.blocking_recv() else {
            panic!("expected the commit of the rows before the failure");
        };
        let ids: Vec<&str> = added.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["kept"]);
        assert!(matches!(events.blocking_recv(), Some(Event::Failed)));
        let history = writer.begin_replacement(Replacement {
            run_id: None,
            id_in_service: "a".into(),
            old_user_id: "x".into(),
            old_phone: "+1".into(),
            new_phone: "+2".into(),
        });
        assert!(
            history.blocking_recv().is_err(),
            "no history id after a failure"
        );
        let err = writer.finish().expect_err("the failure");
        assert!(err.to_string().contains("UNIQUE"), "{err}");
        // Only the failing handful is lost; the row written before it was committed.
        let mut reader = Ledger::open_read_only(&path).expect("reader");
        let found = reader
            .lookup_chunk("s", &["kept", "b", "a"])
            .expect("lookup");
        let present: Vec<bool> = found.iter().map(Option::is_some).collect();
        assert_eq!(present, [true, false, false]);
    }
}
