//! The ledger filter: decides for each valid row whether to send it, or why not (skipped,
//! duplicate, changed). Tracks which ids this run has seen so that duplicates inside one file are
//! caught without holding every id in memory. Reads the ledger; never writes it or the network.

use std::cell::Cell;
use std::collections::VecDeque;

use super::scratch::{NewIds, ScratchError};
use super::seen::Seen;
use super::suspect::Spellings;

use crate::config::{Mode, OnSuspect};
use crate::ledger::{Entry, Status, Twin};
use crate::phone::mask_phone;
use crate::report::Outcome;
use crate::user::User;

/// A row to send.
#[derive(Clone, Debug)]
pub struct Job {
    /// Its line in the file.
    pub line: u64,
    /// The user.
    pub user: User,
    /// Set when the user exists with another phone and `--apply-changes` replaces it.
    pub replace: Option<Replace>,
    /// Whether the ledger already has a row for this id (retry, failed or replaced rows).
    pub known: bool,
    /// For a `retry` row, the phone its last create sent when the file now has another: if that
    /// create reached Verigator (its answer was lost), Verigator holds this phone.
    pub last_sent: Option<String>,
    /// How far a replacement got, for a run that stops before its answer.
    pub trip: Cell<Trip>,
    /// A phone warning, for the row's report line.
    pub warning: Option<String>,
    /// The other spelling of its id, when it is a suspect duplicate sent anyway.
    pub suspect: Option<String>,
}

/// How far a replacement's requests got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Trip {
    /// Nothing sent yet.
    #[default]
    Waiting,
    /// The delete of the old user may have reached Verigator.
    Deleting,
    /// The old user is gone; the create may have reached Verigator.
    Deleted,
}

/// The user to delete before creating it again with the new phone.
#[derive(Clone, Debug)]
pub struct Replace {
    /// The UserID to delete.
    pub old_user_id: String,
    /// The phone it was registered with.
    pub old_phone: String,
}

/// What to do with a row.
#[derive(Debug)]
pub enum Decision {
    /// Send it.
    Send(Job),
    /// Do not send it; this is its outcome.
    Keep {
        /// The user.
        user: User,
        /// What happened to it.
        outcome: Outcome,
        /// Why, for the report and the warning (phones masked).
        reason: Option<String>,
        /// Whether the row is nevertheless synced or present as the file says.
        settled: bool,
    },
}

/// The per-run state of the filter.
#[derive(Debug)]
pub struct Planner {
    mode: Mode,
    seen: Seen,
    /// New ids sent by this run that lookups may not see yet (queued, in flight, or written but
    /// committed after the snapshot of the chunk being decided): line and phone of their first
    /// occurrence. On a dry run, every new id.
    pending: NewIds,
    /// Ids of `pending` already committed, by commit number: they leave `pending` once the
    /// lookups' snapshot includes their commit.
    committed: VecDeque<(u64, Vec<String>)>,
    /// New ids sent by this run, by folded key, that lookups may not see yet.
    spellings: Spellings,
    /// Suspect duplicates held back so far (those sent anyway are counted by the run).
    suspects: u64,
    /// The first [`MAX_SUSPECTS_LISTED`] suspect duplicates met, held back or not, one line each.
    listed: Vec<String>,
}

/// Suspect duplicates a run lists for `--on-suspect-duplicate fail` (the count is exact).
pub const MAX_SUSPECTS_LISTED: usize = 100;

impl Planner {
    /// A filter for one run.
    pub fn new(mode: Mode) -> Result<Planner, ScratchError> {
        Ok(Planner {
            mode,
            seen: Seen::default(),
            pending: NewIds::new(mode.dry_run)?,
            committed: VecDeque::new(),
            spellings: Spellings::new(mode.dry_run)?,
            suspects: 0,
            listed: Vec::new(),
        })
    }

    /// Notes that commit number `commit` put these new rows `(id_in_service, rowid)` in the ledger.
    pub fn committed(&mut self, commit: u64, added: Vec<(String, i64)>) {
        let mut ids = Vec::with_capacity(added.len());
        for (id, rowid) in added {
            if let Some((line, phone)) = self.pending.in_memory(&id) {
                self.seen.mark(rowid, *line, phone, phone);
            }
            ids.push(id);
        }
        self.committed.push_back((commit, ids));
    }

    /// The line where this run's input first had the ledger row `rowid`, if it had it (rows this
    /// run inserted count once their commit is announced).
    pub fn first_line(&self, rowid: i64) -> Option<u64> {
        self.seen.line(rowid)
    }

    /// Notes that a row rejected for another field than its id named the ledger row `rowid`: it
    /// is in the file for `--prune`.
    pub fn mention(&mut self, rowid: i64) {
        self.seen.mention(rowid);
    }

    /// Whether this run's input had the ledger row `rowid` (valid or not): `--prune` leaves it.
    pub fn in_file(&self, rowid: i64) -> bool {
        self.seen.in_file(rowid)
    }

    /// Notes that the next lookups saw at least the first `commits` commits: the new ids those
    /// hold are found by lookup from now on, so `pending` lets go of them.
    pub fn visible(&mut self, commits: u64) {
        while self.committed.front().is_some_and(|(c, _)| *c <= commits) {
            if let Some((_, ids)) = self.committed.pop_front() {
                for id in ids {
                    self.pending.remove(&id);
                    self.spellings.remove(&id);
                }
            }
        }
    }

    /// Decides what to do with one valid row, given what the ledger holds for its id. The lookup
    /// may miss this run's latest writes: [`Planner::visible`] must have been told how many commits
    /// it saw.
    pub fn decide(
        &mut self,
        (entry, twin): (Option<Entry>, Option<Twin>),
        line: u64,
        user: User,
    ) -> Result<Decision, ScratchError> {
        if let Some((first, phone)) = self.pending.in_memory(&user.id_in_service) {
            let (first, same) = (*first, *phone == user.phone_number);
            return Ok(duplicate(user, first, same));
        }
        let Some(entry) = entry else {
            // A new id: the first occurrence is sent, a repeat is a duplicate of it.
            if let Some((first, phone)) =
                self.pending
                    .first_or_insert(&user.id_in_service, line, &user.phone_number)?
            {
                let same = phone == user.phone_number;
                return Ok(duplicate(user, first, same));
            }
            return self.decide_new(line, user, twin);
        };
        Ok(self.decide_known(entry, line, user))
    }

    /// Decides for the first occurrence of an id the ledger does not hold: sent, unless it is
    /// another spelling of an id of the file or the ledger and `--on-suspect-duplicate` holds
    /// it back.
    fn decide_new(
        &mut self,
        line: u64,
        user: User,
        twin: Option<Twin>,
    ) -> Result<Decision, ScratchError> {
        let twin_row = twin.as_ref().map(|t| t.rowid);
        let suspect = self.other_spelling(&user.id_in_service, twin)?;
        if let Some(other) = &suspect {
            // One sent anyway is counted when it is sent (its phone or --limit may hold it back).
            if self.listed.len() < MAX_SUSPECTS_LISTED {
                self.listed.push(format!(
                    "{line}: {:?} is the same as {other}",
                    user.id_in_service
                ));
            }
            if self.mode.on_suspect != OnSuspect::Send {
                self.suspects += 1;
                // Held back, it is no first occurrence (a repeat is judged again), and the
                // spelling that stands for this person stays in the file for `--prune`.
                self.pending.remove(&user.id_in_service);
                if let Some(rowid) = twin_row {
                    self.seen.mention(rowid);
                }
                let reason = format!(
                    "suspect duplicate: the same as {other} after Unicode normalisation and case folding; not sent (--on-suspect-duplicate {})",
                    self.mode.on_suspect.as_str()
                );
                return Ok(Decision::Keep {
                    user,
                    outcome: Outcome::Duplicate,
                    reason: Some(reason),
                    settled: false,
                });
            }
        }
        Ok(Decision::Send(Job {
            line,
            user,
            replace: None,
            known: false,
            last_sent: None,
            trip: Cell::default(),
            warning: None,
            suspect,
        }))
    }

    /// Notes that a new id is sent (not refused for its phone or held back by `--limit`): its
    /// spelling is the one later spellings are compared with.
    pub fn sending(&mut self, job: &Job) -> Result<(), ScratchError> {
        if job.known {
            return Ok(());
        }
        self.spellings.note(&job.user.id_in_service, job.line)
    }

    /// Suspect duplicates held back so far (skipped, or to stop the run).
    pub fn suspects(&self) -> u64 {
        self.suspects
    }

    /// The first suspect duplicates, one line each.
    pub fn listed_suspects(&self) -> Vec<String> {
        self.listed.clone()
    }

    /// Another spelling of a new id, named for a message: an earlier line of this file, or an id
    /// the ledger holds (`twin`, from the lookup).
    fn other_spelling(&self, id: &str, twin: Option<Twin>) -> Result<Option<String>, ScratchError> {
        if let Some((line, spelling)) = self.spellings.earlier(id)? {
            return Ok(Some(format!("line {line} ({spelling:?})")));
        }
        Ok(twin.map(|twin| match self.seen.line(twin.rowid) {
            Some(line) => format!("line {line} ({:?})", twin.id_in_service),
            None => format!(
                "{:?} (in the ledger since {})",
                twin.id_in_service,
                twin.since.get(..10).unwrap_or(&twin.since)
            ),
        }))
    }

    /// Decides for a row the ledger holds.
    fn decide_known(&mut self, entry: Entry, line: u64, user: User) -> Decision {
        if let Some((first, phone)) = self.seen.get(entry.rowid, &entry.phone_number) {
            let same = phone == user.phone_number;
            return duplicate(user, first, same);
        }
        self.seen
            .mark(entry.rowid, line, &user.phone_number, &entry.phone_number);
        let same_phone = entry.phone_number == user.phone_number;
        let keep = |user, outcome, reason: Option<String>, settled| Decision::Keep {
            user,
            outcome,
            reason,
            settled,
        };
        match (entry.status, same_phone) {
            (Status::Synced | Status::Present, true) => keep(user, Outcome::Skipped, None, true),
            (Status::Synced | Status::Present, false) => self.changed(entry, line, user),
            (Status::Failed, true) if !self.mode.retry_failed => {
                let reason = format!(
                    "refused in an earlier run ({}); fix the row or pass --retry-failed",
                    entry.last_error.as_deref().unwrap_or("no reason recorded")
                );
                keep(user, Outcome::Skipped, Some(reason), false)
            }
            // Deleted by `--prune` and back in the file: registered again.
            (Status::Failed | Status::Retry | Status::Deleted, _) => Decision::Send(Job {
                // A retry's lost create, or a deletion begun and never answered, may have left
                // Verigator holding this phone: a 409 with another in the file is a change.
                last_sent: (!same_phone
                    && (entry.status == Status::Retry
                        || (entry.status == Status::Deleted && entry.user_id.is_some())))
                .then_some(entry.phone_number),
                line,
                user,
                replace: None,
                known: true,
                trip: Cell::default(),
                warning: None,
                suspect: None,
            }),
        }
    }

    /// A synced or present user whose phone differs from the ledger's: replaced with
    /// `--apply-changes` when its UserID is known, else kept as `changed`.
    fn changed(&self, entry: Entry, line: u64, user: User) -> Decision {
        let changed = format!(
            "{} with {} but the file has {}",
            entry.status.as_str(),
            mask_phone(&entry.phone_number),
            mask_phone(&user.phone_number)
        );
        let reason = match (entry.user_id, self.mode.apply_changes) {
            (Some(old_user_id), true) => {
                return Decision::Send(Job {
                    line,
                    user,
                    known: true,
                    replace: Some(Replace {
                        old_user_id,
                        old_phone: entry.phone_number,
                    }),
                    last_sent: None,
                    trip: Cell::default(),
                    warning: None,
                    suspect: None,
                });
            }
            (None, true) => {
                format!("{changed}; its UserID is not known yet, so it cannot be replaced: rerun")
            }
            (_, false) => format!(
                "{changed}; not sent (the API cannot update a phone; --apply-changes replaces the user)"
            ),
        };
        Decision::Keep {
            user,
            outcome: Outcome::Changed,
            reason: Some(reason),
            settled: false,
        }
    }
}

fn duplicate(user: User, first: u64, same_phone: bool) -> Decision {
    let (reason, settled) = if same_phone {
        (format!("repeats line {first}"), true)
    } else {
        (
            format!(
                "conflict: line {first} has the same id with another phone; the first occurrence wins"
            ),
            false,
        )
    };
    Decision::Keep {
        user,
        outcome: Outcome::Duplicate,
        reason: Some(reason),
        settled,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn user(id: &str, phone: &str) -> User {
        User {
            written: None,
            id_in_service: id.into(),
            phone_number: phone.into(),
        }
    }

    fn synced(rowid: i64, phone: &str) -> Entry {
        Entry {
            rowid,
            phone_number: phone.into(),
            status: Status::Synced,
            user_id: Some("u".into()),
            last_error: None,
        }
    }

    fn outcome(d: &Decision) -> (Option<Outcome>, Option<&str>) {
        match d {
            Decision::Send(_) => (None, None),
            Decision::Keep {
                outcome, reason, ..
            } => (Some(*outcome), reason.as_deref()),
        }
    }

    fn memory(p: &Planner) -> &HashMap<String, (u64, String), foldhash::fast::RandomState> {
        match &p.pending {
            NewIds::Memory(map) => map,
            NewIds::Disk(_) => panic!("a real run keeps new ids in memory"),
        }
    }

    const A: &str = "+37255555555";
    const B: &str = "+37255555556";

    #[test]
    fn a_new_id_is_a_duplicate_until_lookups_see_its_commit() {
        let mut p = Planner::new(Mode::default()).expect("planner");
        assert!(matches!(
            p.decide((None, None), 2, user("a", A)).expect("decide"),
            Decision::Send(_)
        ));
        // Written and committed, but this chunk's lookup ran before the commit.
        p.committed(1, vec![("a".into(), 7)]);
        p.visible(0);
        let d = p.decide((None, None), 5, user("a", A)).expect("decide");
        assert_eq!(
            outcome(&d),
            (Some(Outcome::Duplicate), Some("repeats line 2"))
        );
        // Once lookups see the commit, the ledger's row (by rowid) carries the first line.
        p.visible(1);
        assert!(memory(&p).is_empty());
        let d = p
            .decide((Some(synced(7, A)), None), 9, user("a", B))
            .expect("decide");
        let (o, why) = outcome(&d);
        assert_eq!(o, Some(Outcome::Duplicate));
        assert!(why.is_some_and(|w| w.contains("line 2")), "{why:?}");
    }

    #[test]
    fn commits_are_released_in_order_and_only_when_seen() {
        let mut p = Planner::new(Mode::default()).expect("planner");
        for (line, id) in [(2, "a"), (3, "b"), (4, "c")] {
            assert!(matches!(
                p.decide((None, None), line, user(id, A)).expect("decide"),
                Decision::Send(_)
            ));
        }
        p.committed(1, vec![("a".into(), 1)]);
        p.committed(2, vec![("b".into(), 2)]);
        p.visible(1);
        assert!(!memory(&p).contains_key("a"));
        assert!(memory(&p).contains_key("b") && memory(&p).contains_key("c"));
        // "c" was never committed (no answer yet): it stays however far lookups get.
        p.visible(5);
        assert_eq!(memory(&p).keys().collect::<Vec<_>>(), ["c"]);
    }

    #[test]
    fn ledger_rows_are_skipped_once_then_duplicates() {
        let mut p = Planner::new(Mode::default()).expect("planner");
        let d = p
            .decide((Some(synced(3, A)), None), 2, user("a", A))
            .expect("decide");
        assert_eq!(outcome(&d), (Some(Outcome::Skipped), None));
        let d = p
            .decide((Some(synced(3, A)), None), 8, user("a", A))
            .expect("decide");
        assert_eq!(
            outcome(&d),
            (Some(Outcome::Duplicate), Some("repeats line 2"))
        );
    }

    #[test]
    fn a_dry_run_tells_repeats_of_new_ids_from_disk() {
        let dry = Mode {
            dry_run: true,
            ..Mode::default()
        };
        let mut p = Planner::new(dry).expect("planner");
        assert!(matches!(&p.pending, NewIds::Disk(_)));
        for (line, id) in [(2, "a"), (3, "b")] {
            let d = p.decide((None, None), line, user(id, A)).expect("decide");
            assert!(matches!(d, Decision::Send(_)));
        }
        let d = p.decide((None, None), 4, user("a", A)).expect("decide");
        assert_eq!(
            outcome(&d),
            (Some(Outcome::Duplicate), Some("repeats line 2"))
        );
        let d = p.decide((None, None), 5, user("b", B)).expect("decide");
        let (o, why) = outcome(&d);
        assert_eq!(o, Some(Outcome::Duplicate));
        assert!(
            why.is_some_and(|w| w.contains("conflict: line 3")),
            "{why:?}"
        );
    }
}
