//! One sent row's trip: its requests (a replacement's delete, then the create) and what their
//! answers mean for the row: its outcome, its reason, and what the ledger records. The loop in
//! [`super::event_loop`] owns the rows in flight ([`Flying`]) and acts on the [`Settled`] result.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::plan::{Job, Replace, Trip};
use crate::client::{Attempted, Client, Created, Deleted, Retried};
use crate::ledger::{Change, Status};
use crate::phone::mask_phone;
use crate::report::Outcome;

/// What a sent row got back: the delete of a replacement (if any), then the create.
#[derive(Debug)]
pub struct Answer {
    /// The replacements-history row written before the delete.
    pub history: Option<i64>,
    /// The delete's result, for a replacement.
    pub deleted: Option<Attempted<Deleted>>,
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
                        deleted: Some(Attempted {
                            result: Retried::Stopped(Some(why)),
                            attempts: 0,
                        }),
                        created: not_created(),
                    };
                }
            }
        }
        job.trip.set(Trip::Deleting);
        let attempted = client.delete_user(service, &replace.old_user_id).await;
        let gone = matches!(
            attempted.result,
            Retried::Done(Deleted::Gone | Deleted::AlreadyGone)
        );
        deleted = Some(attempted);
        if gone {
            job.trip.set(Trip::Deleted);
        } else {
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
    /// The file's phone, when the ledger records another (the one Verigator may hold): the log
    /// and the report show the row as the file has it.
    pub file_phone: Option<String>,
}

/// Interprets a row's answer. `verbose` adds the UserID to synced rows' reasons.
pub fn settle(job: Job, answer: Answer, verbose: bool) -> Settled {
    let Job {
        line,
        user,
        replace,
        known,
        last_sent,
        trip: _,
        warning: _,
        suspect: _,
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
        file_phone: None,
    };
    if let (Some(deleted), Some(old)) = (answer.deleted, &replace)
        && let Some((outcome, reason)) = delete_failure(deleted, old, &mut done)
    {
        done.outcome = outcome;
        done.reason = Some(reason);
        return done;
    }
    (done.outcome, done.settled, done.write) = created(
        answer.created.result,
        &mut done,
        replace.as_ref(),
        last_sent,
        verbose,
    );
    done
}

/// What the ledger must record for a row whose requests got no answer before the run stopped: a
/// create may have gone out, and a replacement's delete too (its old UserID is in the history
/// already). The row becomes `retry` without a UserID, with the phone Verigator may hold.
pub fn unanswered(job: &Job) -> Option<Change> {
    let phone = match (&job.replace, job.trip.get()) {
        (Some(_), Trip::Waiting) => return None,
        (Some(old), Trip::Deleting) => &old.old_phone,
        (Some(_), Trip::Deleted) => &job.user.phone_number,
        // A create that may have gone out: the next run must know the row, and the phone sent.
        (None, _) => job.last_sent.as_ref().unwrap_or(&job.user.phone_number),
    };
    Some(Change {
        id_in_service: job.user.id_in_service.clone(),
        phone_number: phone.clone(),
        status: Status::Retry,
        user_id: None,
        ctime: None,
        attempts: 0,
        last_error: Some("no answer before the run stopped".into()),
        known: job.known,
    })
}

/// Why a replacement's delete did not clear the way for the create, if it did not. A refused
/// delete leaves the ledger row as it was (old phone and UserID), so the next run tries again. A
/// delete whose answer was lost may have gone through: the row becomes `retry` with the old phone
/// and no UserID (the old UserID is in the history), which the next run settles either way.
fn delete_failure(
    deleted: Attempted<Deleted>,
    old: &Replace,
    done: &mut Settled,
) -> Option<(Outcome, String)> {
    let uncertain = deleted.attempts > 0
        && matches!(
            deleted.result,
            Retried::GaveUp(_) | Retried::Stopped(Some(_))
        );
    let failure = match deleted.result {
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
    };
    if uncertain && let Some((_, reason)) = &failure {
        done.write = true;
        done.file_phone = Some(std::mem::replace(
            &mut done.change.phone_number,
            old.old_phone.clone(),
        ));
        done.change.last_error = Some(reason.clone());
    }
    failure
}

/// What the create's result means: the row's outcome, whether it is settled, and whether the
/// ledger must record it; fills in the change, the reason and any fatal stop.
fn created(
    result: Retried<Created>,
    done: &mut Settled,
    replace: Option<&Replace>,
    last_sent: Option<String>,
    verbose: bool,
) -> (Outcome, bool, bool) {
    let attempts = done.change.attempts;
    let change = &mut done.change;
    match result {
        Retried::Done(Created::New { user_id, ctime }) => {
            new_user(done, replace, (user_id, ctime), verbose)
        }
        Retried::Done(Created::Exists) => exists(done, replace, last_sent),
        Retried::Done(Created::Rejected(why)) => {
            change.status = Status::Failed;
            done.reason = Some(why.clone());
            change.last_error = Some(why);
            (Outcome::Failed, false, true)
        }
        Retried::Done(Created::Fatal(fatal)) => {
            done.reason = Some(fatal.to_string());
            done.fatal = Some(fatal.to_string());
            // After a replacement's delete the old UserID is gone: the row must say so.
            (Outcome::Retry, false, replace.is_some())
        }
        Retried::GaveUp(why) => {
            done.reason = Some(why.clone());
            change.last_error = Some(why);
            done.file_phone = keep_earlier_phone(change, last_sent);
            (Outcome::Retry, false, true)
        }
        Retried::Stopped(why) => {
            done.reason = Some(
                why.clone()
                    .unwrap_or_else(|| "not sent: the run stopped first".into()),
            );
            change.last_error = why;
            done.file_phone = keep_earlier_phone(change, last_sent);
            // Sent at least once: the server may have the user, so the ledger must know the row.
            (Outcome::Retry, false, attempts > 0 || replace.is_some())
        }
    }
}

/// A 2xx: created (a replacement's new user), or like a 409 when the answer lacked the UserID
/// (the user list resolves it).
fn new_user(
    done: &mut Settled,
    replace: Option<&Replace>,
    (user_id, ctime): (Option<String>, Option<String>),
    verbose: bool,
) -> (Outcome, bool, bool) {
    let attempts = done.change.attempts;
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
    done.change.status = if user_id.is_some() {
        Status::Synced
    } else {
        Status::Present
    };
    (done.change.user_id, done.change.ctime) = (user_id, ctime);
    (outcome, true, true)
}

/// A 409. For a replacement it means the old user outlived its accepted delete (a 202 may be
/// carried out later); for a row whose earlier create sent another phone and lost its answer, that
/// phone is the one Verigator holds. Either way the ledger records the phone Verigator has, and
/// the next run sees the change again.
fn exists(
    done: &mut Settled,
    replace: Option<&Replace>,
    last_sent: Option<String>,
) -> (Outcome, bool, bool) {
    done.change.status = Status::Present;
    let file = mask_phone(&done.change.phone_number);
    let (held, why) = match (replace, last_sent) {
        (Some(old), _) => (
            old.old_phone.clone(),
            format!(
                "the old user is still there after its delete was accepted; Verigator holds {} and the file has {file}: rerun with --apply-changes",
                mask_phone(&old.old_phone)
            ),
        ),
        (None, Some(earlier)) => (
            earlier.clone(),
            format!(
                "present at Verigator, created earlier with {} (that answer was lost) but the file has {file}; not sent (--apply-changes replaces the user)",
                mask_phone(&earlier)
            ),
        ),
        (None, None) => return (Outcome::Present, true, true),
    };
    done.reason = Some(why);
    done.file_phone = Some(std::mem::replace(&mut done.change.phone_number, held));
    (Outcome::Changed, false, true)
}

/// A row whose answer was lost after an earlier lost answer with another phone: either phone may
/// be the one Verigator holds. The earlier one is kept, so that a 409 later reads as a change
/// (visible, and fixed by `--apply-changes`) rather than as the file's phone (silently wrong).
fn keep_earlier_phone(change: &mut Change, last_sent: Option<String>) -> Option<String> {
    last_sent.map(|earlier| std::mem::replace(&mut change.phone_number, earlier))
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
                written: None,
                id_in_service: "a".into(),
                phone_number: "+37255555555".into(),
            },
            replace: replace.then(|| Replace {
                old_user_id: "old".into(),
                old_phone: "+37255555550".into(),
            }),
            known,
            suspect: None,
            last_sent: None,
            trip: std::cell::Cell::default(),
            warning: None,
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
        answer.deleted = Some(Attempted {
            result: Retried::Done(Deleted::Gone),
            attempts: 1,
        });
        let done = settle(job(true, true), answer, false);
        assert_eq!(
            (done.outcome, done.replacement),
            (Outcome::Replaced, Some(3))
        );
        assert_eq!(done.reason.as_deref(), Some("UserID old replaced by new"));
        let mut answer = created(Retried::Stopped(None), 0);
        answer.deleted = Some(Attempted {
            result: Retried::Done(Deleted::Refused("no".into())),
            attempts: 1,
        });
        let done = settle(job(true, true), answer, false);
        assert_eq!((done.outcome, done.write), (Outcome::Failed, false));
        assert!(done.reason.is_some_and(|r| r.contains("refused")));
    }

    #[test]
    fn a_replacement_whose_delete_went_through_is_written_without_the_old_user_id() {
        let gone = || {
            Some(Attempted {
                result: Retried::Done(Deleted::Gone),
                attempts: 1,
            })
        };
        let mut answer = created(Retried::Done(Created::Fatal(Fatal::Unauthorized)), 1);
        answer.deleted = gone();
        let done = settle(job(true, true), answer, false);
        assert!(done.write && done.fatal.is_some());
        assert_eq!(
            (done.change.status, done.change.user_id.as_deref()),
            (Status::Retry, None)
        );
        assert_eq!(done.change.phone_number, "+37255555555", "the new phone");
        // A delete whose answer was lost may have gone through: no UserID, the old phone.
        let mut answer = created(Retried::Stopped(None), 0);
        answer.deleted = Some(Attempted {
            result: Retried::GaveUp("reset (after 6 attempts)".into()),
            attempts: 6,
        });
        let done = settle(job(true, true), answer, false);
        assert!(done.write);
        assert_eq!(
            (
                done.change.user_id.as_deref(),
                done.change.phone_number.as_str()
            ),
            (None, "+37255555550")
        );
    }

    #[test]
    fn a_409_after_an_accepted_delete_keeps_the_old_phone_and_is_a_change() {
        let mut answer = created(Retried::Done(Created::Exists), 1);
        answer.deleted = Some(Attempted {
            result: Retried::Done(Deleted::Gone),
            attempts: 1,
        });
        let done = settle(job(true, true), answer, false);
        assert_eq!((done.outcome, done.write), (Outcome::Changed, true));
        assert_eq!(
            (done.change.phone_number.as_str(), done.change.status),
            ("+37255555550", Status::Present)
        );
        assert_eq!(done.file_phone.as_deref(), Some("+37255555555"));
    }
}
