//! One sent row's trip: its requests (a replacement's delete, then the create) and what their
//! answers mean for the row: its outcome, its reason, and what the ledger records. The loop in
//! [`super::event_loop`] owns the rows in flight ([`Flying`]) and acts on the [`Settled`] result.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::plan::{Job, Replace};
use crate::client::{Attempted, Client, Created, Deleted, Retried};
use crate::ledger::{Change, Status};
use crate::report::Outcome;

/// What a sent row got back: the delete of a replacement (if any), then the create.
#[derive(Debug)]
pub struct Answer {
    /// The replacements-history row written before the delete.
    pub history: Option<i64>,
    /// The delete's result, for a replacement.
    pub deleted: Option<Retried<Deleted>>,
    /// The create's result.
    pub created: Attempted<Created>,
}

/// A row's requests on their way, answering with the row's slot in [`Flying`].
pub type Sending = Pin<Box<dyn Future<Output = (usize, Answer)>>>;

/// The jobs in flight, by slot: the requests share them (no copy per request), and a stop can
/// still report the ones that got no answer.
#[derive(Debug, Default)]
pub struct Flying {
    slots: Vec<Option<Rc<Job>>>,
    free: Vec<usize>,
}

impl Flying {
    /// Starts a job's requests. `history`, for a replacement, answers once the writer has
    /// committed the history row; the delete waits for it.
    pub fn launch(
        &mut self,
        job: Job,
        client: &Arc<Client>,
        service: &Rc<str>,
        history: Option<oneshot::Receiver<i64>>,
    ) -> Sending {
        let job = Rc::new(job);
        let slot = self.insert(Rc::clone(&job));
        let client = Arc::clone(client);
        let service = Rc::clone(service);
        Box::pin(async move { (slot, send(&job, &client, &service, history).await) })
    }

    fn insert(&mut self, job: Rc<Job>) -> usize {
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(job);
                slot
            }
            None => {
                self.slots.push(Some(job));
                self.slots.len() - 1
            }
        }
    }

    /// The job back, owned once its requests have finished with it.
    pub fn remove(&mut self, slot: usize) -> Option<Job> {
        let job = self.slots.get_mut(slot)?.take()?;
        self.free.push(slot);
        Some(Rc::try_unwrap(job).unwrap_or_else(|shared| (*shared).clone()))
    }

    /// The jobs that got no answer, when the run stops.
    pub fn drain(&mut self) -> impl Iterator<Item = Rc<Job>> + use<> {
        self.free.clear();
        std::mem::take(&mut self.slots).into_iter().flatten()
    }
}

async fn send(
    job: &Job,
    client: &Client,
    service: &str,
    history: Option<oneshot::Receiver<i64>>,
) -> Answer {
    let (mut deleted, mut history_id) = (None, None);
    let not_created = || Attempted {
        result: Retried::Stopped(None),
        attempts: 0,
    };
    if let Some(replace) = &job.replace {
        // The old UserID must be on disk before it is deleted at Verigator.
        if let Some(written) = history {
            match written.await {
                Ok(id) => history_id = Some(id),
                Err(_) => {
                    let why = "the ledger could not record the replacement".to_string();
                    return Answer {
                        history: None,
                        deleted: Some(Retried::Stopped(Some(why))),
                        created: not_created(),
                    };
                }
            }
        }
        let attempted = client.delete_user(service, &replace.old_user_id).await;
        let gone = matches!(
            attempted.result,
            Retried::Done(Deleted::Gone | Deleted::AlreadyGone)
        );
        deleted = Some(attempted.result);
        if !gone {
            return Answer {
                history: history_id,
                deleted,
                created: not_created(),
            };
        }
    }
    Answer {
        history: history_id,
        deleted,
        created: client.create_user(service, &job.user).await,
    }
}

/// What an answer means for its row.
#[derive(Debug)]
pub struct Settled {
    /// The row's line.
    pub line: u64,
    /// The row as the ledger should record it (always carries the id and phone).
    pub change: Change,
    /// Whether the ledger records it: a row the server may have seen must be known.
    pub write: bool,
    /// The replacements-history row the change completes.
    pub replacement: Option<i64>,
    /// The outcome.
    pub outcome: Outcome,
    /// Why, for the log and the report.
    pub reason: Option<String>,
    /// Whether the row is now synced or present as the file says.
    pub settled: bool,
    /// An answer that must stop the run (401, 403, 404), as its message.
    pub fatal: Option<String>,
}

/// Interprets a row's answer. `verbose` adds the UserID to synced rows' reasons.
pub fn settle(job: Job, answer: Answer, verbose: bool) -> Settled {
    let Job {
        line,
        user,
        replace,
        known,
    } = job;
    let attempts = answer.created.attempts;
    let mut done = Settled {
        line,
        change: Change {
            id_in_service: user.id_in_service,
            phone_number: user.phone_number,
            status: Status::Retry,
            user_id: None,
            ctime: None,
            attempts,
            last_error: None,
            known,
        },
        write: false,
        replacement: answer.history,
        outcome: Outcome::Retry,
        reason: None,
        settled: false,
        fatal: None,
    };
    if let Some(deleted) = answer.deleted
        && let Some((outcome, reason)) = delete_failure(deleted, &mut done)
    {
        // The ledger row keeps the old phone and UserID, so the next run tries again.
        done.outcome = outcome;
        done.reason = Some(reason);
        return done;
    }
    (done.outcome, done.settled, done.write) =
        created(answer.created.result, &mut done, replace.as_ref(), verbose);
    done
}

/// Why a replacement's delete did not clear the way for the create, if it did not.
fn delete_failure(deleted: Retried<Deleted>, done: &mut Settled) -> Option<(Outcome, String)> {
    match deleted {
        Retried::Done(Deleted::Gone | Deleted::AlreadyGone) => None,
        Retried::Done(Deleted::Fatal(fatal)) => {
            done.fatal = Some(fatal.to_string());
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
        Retried::Stopped(why) => Some((
            Outcome::Retry,
            why.unwrap_or_else(|| "the run stopped before the old user was deleted".into()),
        )),
    }
}

/// What the create's result means: the row's outcome, whether it is settled, and whether the
/// ledger must record it; fills in the change, the reason and any fatal stop.
fn created(
    result: Retried<Created>,
    done: &mut Settled,
    replace: Option<&Replace>,
    verbose: bool,
) -> (Outcome, bool, bool) {
    let attempts = done.change.attempts;
    let change = &mut done.change;
    match result {
        Retried::Done(Created::New { user_id, ctime }) => {
            // Without a UserID in the answer the row is like a 409: the user list resolves it.
            let outcome = match (replace, &user_id) {
                (Some(old), Some(new)) => {
                    done.reason = Some(format!("UserID {} replaced by {new}", old.old_user_id));
                    Outcome::Replaced
                }
                (None, Some(new)) => {
                    if verbose {
                        done.reason = Some(format!("UserID {new} after {attempts} attempt(s)"));
                    }
                    Outcome::Synced
                }
                (_, None) => Outcome::Present,
            };
            change.status = if user_id.is_some() {
                Status::Synced
            } else {
                Status::Present
            };
            (change.user_id, change.ctime) = (user_id, ctime);
            (outcome, true, true)
        }
        Retried::Done(Created::Exists) => {
            change.status = Status::Present;
            (Outcome::Present, true, true)
        }
        Retried::Done(Created::Rejected(why)) => {
            change.status = Status::Failed;
            done.reason = Some(why.clone());
            change.last_error = Some(why);
            (Outcome::Failed, false, true)
        }
        Retried::Done(Created::Fatal(fatal)) => {
            done.reason = Some(fatal.to_string());
            done.fatal = Some(fatal.to_string());
            (Outcome::Retry, false, false)
        }
        Retried::GaveUp(why) => {
            done.reason = Some(why.clone());
            change.last_error = Some(why);
            (Outcome::Retry, false, true)
        }
        Retried::Stopped(why) => {
            done.reason = Some(
                why.clone()
                    .unwrap_or_else(|| "not sent: the run stopped first".into()),
            );
            change.last_error = why;
            // Sent at least once: the server may have the user, so the ledger must know the row.
            (Outcome::Retry, false, attempts > 0 || replace.is_some())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Fatal;
    use crate::user::User;

    fn job(known: bool, replace: bool) -> Job {
        Job {
            line: 7,
            user: User {
                id_in_service: "a".into(),
                phone_number: "+37255555555".into(),
            },
            replace: replace.then(|| Replace {
                old_user_id: "old".into(),
                old_phone: "+37255555550".into(),
            }),
            known,
        }
    }

    fn created(result: Retried<Created>, attempts: u32) -> Answer {
        Answer {
            history: None,
            deleted: None,
            created: Attempted { result, attempts },
        }
    }

    #[test]
    fn a_new_user_id_is_synced_and_written() {
        let new = Created::New {
            user_id: Some("u1".into()),
            ctime: Some("t".into()),
        };
        let done = settle(job(false, false), created(Retried::Done(new), 2), true);
        assert_eq!(
            (done.outcome, done.settled, done.write),
            (Outcome::Synced, true, true)
        );
        assert_eq!(done.change.status, Status::Synced);
        assert_eq!(done.change.user_id.as_deref(), Some("u1"));
        assert_eq!(done.reason.as_deref(), Some("UserID u1 after 2 attempt(s)"));
        assert_eq!((done.line, done.change.attempts), (7, 2));
    }

    #[test]
    fn conflicts_refusals_and_exhausted_retries_are_written_with_their_status() {
        let done = settle(
            job(false, false),
            created(Retried::Done(Created::Exists), 1),
            false,
        );
        assert_eq!(
            (done.outcome, done.change.status, done.write),
            (Outcome::Present, Status::Present, true)
        );
        let refused = Retried::Done(Created::Rejected("bad phone".into()));
        let done = settle(job(false, false), created(refused, 1), false);
        assert_eq!(
            (done.outcome, done.change.status, done.settled),
            (Outcome::Failed, Status::Failed, false)
        );
        assert_eq!(done.change.last_error.as_deref(), Some("bad phone"));
        let done = settle(
            job(true, false),
            created(Retried::GaveUp("503".into()), 5),
            false,
        );
        assert_eq!(
            (done.outcome, done.change.status, done.write),
            (Outcome::Retry, Status::Retry, true)
        );
        assert!(done.change.known);
    }

    #[test]
    fn unsent_rows_are_not_written_but_sent_ones_are() {
        let done = settle(job(false, false), created(Retried::Stopped(None), 0), false);
        assert!(!done.write, "never sent: the next run sends it as new");
        assert_eq!(
            done.reason.as_deref(),
            Some("not sent: the run stopped first")
        );
        let done = settle(
            job(false, false),
            created(Retried::Stopped(Some("reset".into())), 1),
            false,
        );
        assert!(done.write, "sent once: the server may have it");
    }

    #[test]
    fn fatal_answers_stop_the_run_and_write_nothing() {
        let fatal = Retried::Done(Created::Fatal(Fatal::Unauthorized));
        let done = settle(job(false, false), created(fatal, 1), false);
        assert!(!done.write);
        assert!(done.fatal.is_some_and(|f| f.contains("401")));
    }

    #[test]
    fn a_replacement_records_its_history_or_keeps_the_old_row() {
        let mut answer = created(
            Retried::Done(Created::New {
                user_id: Some("new".into()),
                ctime: None,
            }),
            1,
        );
        answer.history = Some(3);
        answer.deleted = Some(Retried::Done(Deleted::Gone));
        let done = settle(job(true, true), answer, false);
        assert_eq!(
            (done.outcome, done.replacement),
            (Outcome::Replaced, Some(3))
        );
        assert_eq!(done.reason.as_deref(), Some("UserID old replaced by new"));
        let mut answer = created(Retried::Stopped(None), 0);
        answer.deleted = Some(Retried::Done(Deleted::Refused("no".into())));
        let done = settle(job(true, true), answer, false);
        assert_eq!((done.outcome, done.write), (Outcome::Failed, false));
        assert!(done.reason.is_some_and(|r| r.contains("refused")));
    }
}
