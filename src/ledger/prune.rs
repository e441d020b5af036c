//! What `import --prune` reads and writes: the users a service holds that may be deleted (synced or
//! present with a UserID, and deletions a killed run left unfinished), how many the ledger holds,
//! and each deletion: begun (committed) before its request, with the UserID, phone and status it
//! takes away, then finished or undone once answered. Nothing the ledger knew is lost, and a kill
//! at any point leaves a row that says its deletion may have happened.

use rusqlite::params;

use super::{Ledger, LedgerError, now, sqlite};

/// The rows `--prune` may delete, past a rowid, in rowid order. The table is read straight
/// through (not through the key's index, which would fetch each row from wherever it was
/// inserted): a prune looks at every row of the service once.
const PRUNABLE: &str = "SELECT rowid, id_in_service, user_id, phone_number, status = 'deleted'
     FROM users NOT INDEXED
     WHERE rowid > ?2 AND service_id = ?1 AND status IN ('synced', 'present', 'deleted')
       AND user_id IS NOT NULL
     ORDER BY rowid";

/// A user the ledger registered (or found) at Verigator, with its UserID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prunable {
    /// Its rowid (the import knows which rowids its input had).
    pub rowid: i64,
    /// The user's id in the customer's service.
    pub id_in_service: String,
    /// Its UserID at Verigator.
    pub user_id: String,
    /// The phone it was registered with.
    pub phone_number: String,
    /// Its deletion was begun by a run that did not finish it (`deleted` with a UserID).
    pub begun: bool,
}

impl Ledger {
    /// How many users the ledger holds for a service that a prune could delete (synced or present
    /// with a UserID, or begun): what a share given to `--max-delete` is a share of. A `present`
    /// row without a UserID can never be deleted, so it must not widen the share.
    pub fn holding(&self, service_id: &str) -> Result<u64, LedgerError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM users NOT INDEXED
                 WHERE service_id = ?1 AND user_id IS NOT NULL
                   AND status IN ('synced', 'present', 'deleted')",
                params![service_id],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// Counts the rows [`Ledger::prunable`] would give for which `wanted` holds.
    pub fn count_prunable(
        &self,
        service_id: &str,
        wanted: impl Fn(i64) -> bool,
    ) -> Result<u64, LedgerError> {
        let mut stmt = self.conn.prepare(PRUNABLE).map_err(|e| self.err(e))?;
        let mut rows = stmt
            .query(params![service_id, 0])
            .map_err(|e| self.err(e))?;
        let mut n = 0u64;
        while let Some(r) = rows.next().map_err(|e| sqlite(&self.path, e))? {
            let rowid: i64 = r.get(0).map_err(|e| sqlite(&self.path, e))?;
            n += u64::from(wanted(rowid));
        }
        Ok(n)
    }

    /// The next rows that may be deleted for which `wanted` holds: at most `limit`, past rowid
    /// `after`, in rowid order. Also returns the last rowid read, to go on from (`None` once the
    /// table is read to its end).
    pub fn prunable(
        &self,
        service_id: &str,
        after: i64,
        limit: usize,
        wanted: impl Fn(i64) -> bool,
    ) -> Result<(Vec<Prunable>, Option<i64>), LedgerError> {
        let mut stmt = self.conn.prepare(PRUNABLE).map_err(|e| self.err(e))?;
        let mut rows = stmt
            .query(params![service_id, after])
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(|e| sqlite(&self.path, e))? {
            let rowid: i64 = r.get(0).map_err(|e| sqlite(&self.path, e))?;
            if !wanted(rowid) {
                continue;
            }
            let text = |i| r.get::<_, String>(i).map_err(|e| sqlite(&self.path, e));
            out.push(Prunable {
                rowid,
                id_in_service: text(1)?,
                user_id: text(2)?,
                phone_number: text(3)?,
                begun: r.get(4).map_err(|e| sqlite(&self.path, e))?,
            });
            if out.len() >= limit {
                return Ok((out, Some(rowid)));
            }
        }
        Ok((out, None))
    }

    /// Begins the deletion of these users, and commits it, before any request: each row's UserID,
    /// phone and status go to `deletions`, and the row becomes `deleted`, still with its UserID.
    /// A run killed after its request then leaves a row that says so: the next prune deletes it
    /// again (404 finishes it), and a file that has the user again registers it again.
    pub fn begin_deletions(
        &mut self,
        run_id: Option<i64>,
        service_id: &str,
        users: &[Prunable],
    ) -> Result<(), LedgerError> {
        self.begin()?;
        let at = now();
        for user in users.iter().filter(|u| !u.begun) {
            self.conn
                .prepare_cached(
                    "INSERT INTO deletions (run_id, service_id, id_in_service, user_id, phone_number,
                                           old_status, started_at)
                     SELECT ?1, service_id, id_in_service, user_id, phone_number, status, ?5 FROM users
                     WHERE rowid = ?3 AND service_id = ?2 AND user_id = ?4
                       AND status IN ('synced', 'present')",
                )
                .and_then(|mut s| {
                    s.execute(params![run_id, service_id, user.rowid, user.user_id, at])
                })
                .map_err(|e| sqlite(&self.path, e))?;
            self.conn
                .prepare_cached(
                    "UPDATE users SET status = 'deleted', updated_at = ?4
                     WHERE rowid = ?2 AND service_id = ?1 AND user_id = ?3
                       AND status IN ('synced', 'present')",
                )
                .and_then(|mut s| s.execute(params![service_id, user.rowid, user.user_id, at]))
                .map_err(|e| sqlite(&self.path, e))?;
        }
        self.commit()?;
        Ok(())
    }

    /// Finishes a deletion Verigator confirmed (2xx, or 404: gone already), inside the current
    /// batch: the row drops its UserID, kept in `deletions`. Returns whether the row was still
    /// the one begun.
    pub fn finish_deletion(
        &mut self,
        service_id: &str,
        user: &Prunable,
    ) -> Result<bool, LedgerError> {
        self.begin()?;
        let at = now();
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE users SET user_id = NULL, ctime = NULL, last_error = NULL, updated_at = ?4
                 WHERE rowid = ?1 AND service_id = ?2 AND user_id = ?3 AND status = 'deleted'",
            )
            .and_then(|mut s| s.execute(params![user.rowid, service_id, user.user_id, at]))
            .map_err(|e| sqlite(&self.path, e))?;
        self.conn
            .prepare_cached(
                "UPDATE deletions SET finished_at = ?4
                 WHERE service_id = ?1 AND id_in_service = ?2 AND user_id = ?3 AND finished_at IS NULL",
            )
            .and_then(|mut s| s.execute(params![service_id, user.id_in_service, user.user_id, at]))
            .map_err(|e| sqlite(&self.path, e))?;
        self.batch_rows += 1;
        Ok(changed > 0)
    }

    /// Undoes a deletion that certainly did not happen (refused, or never sent), inside the
    /// current batch: the row gets its status back and the begun entry goes.
    pub fn undo_deletion(&mut self, service_id: &str, user: &Prunable) -> Result<(), LedgerError> {
        self.begin()?;
        self.conn
            .prepare_cached(
                "UPDATE users SET status = COALESCE(
                    (SELECT old_status FROM deletions
                     WHERE service_id = ?2 AND id_in_service = ?4 AND user_id = ?3
                       AND finished_at IS NULL ORDER BY id DESC LIMIT 1), status)
                 WHERE rowid = ?1 AND service_id = ?2 AND user_id = ?3 AND status = 'deleted'",
            )
            .and_then(|mut s| {
                s.execute(params![
                    user.rowid,
                    service_id,
                    user.user_id,
                    user.id_in_service
                ])
            })
            .map_err(|e| sqlite(&self.path, e))?;
        self.conn
            .prepare_cached(
                "DELETE FROM deletions
                 WHERE service_id = ?1 AND id_in_service = ?3 AND user_id = ?2
                   AND finished_at IS NULL",
            )
            .and_then(|mut s| s.execute(params![service_id, user.user_id, user.id_in_service]))
            .map_err(|e| sqlite(&self.path, e))?;
        self.batch_rows += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Status;
    use super::super::tests::{ledger, write};
    use super::*;

    #[test]
    fn a_deletion_keeps_the_user_id_and_the_row_can_come_back() {
        let (_d, mut l) = ledger();
        for (id, status, user_id) in [
            ("a", Status::Synced, Some("u1")),
            ("b", Status::Present, Some("u2")),
            ("c", Status::Present, None),
            ("d", Status::Retry, None),
            ("e", Status::Synced, Some("u5")),
        ] {
            l.record("s", &write(id, status, user_id)).expect("record");
        }
        l.record("other", &write("a", Status::Synced, Some("x")))
            .expect("record");
        assert_eq!(
            l.holding("s").expect("holding"),
            3,
            "c has no UserID to delete"
        );
        // Rowid 5 ("e") is in the file.
        let not_in_file = |rowid| rowid != 5;
        assert_eq!(l.count_prunable("s", not_in_file).expect("count"), 2);
        let (first, next) = l.prunable("s", 0, 1, not_in_file).expect("prunable");
        assert_eq!((first[0].id_in_service.as_str(), next), ("a", Some(1)));
        let (rest, end) = l.prunable("s", 1, 10, not_in_file).expect("prunable");
        assert_eq!((rest[0].user_id.as_str(), rest.len(), end), ("u2", 1, None));

        l.begin_deletions(Some(7), "s", &[first[0].clone(), rest[0].clone()])
            .expect("begin");
        // Begun: deleted, still with its UserID, and prunable again (a killed run's rows).
        let a = l.lookup("s", "a").expect("a").expect("a");
        assert_eq!(
            (a.status, a.user_id.as_deref()),
            (Status::Deleted, Some("u1"))
        );
        let (again, _) = l.prunable("s", 0, 10, not_in_file).expect("prunable");
        assert!(
            again.iter().all(|u| u.begun) && again.len() == 2,
            "{again:?}"
        );
        assert_eq!(
            l.holding("s").expect("holding"),
            3,
            "c has no UserID to delete"
        );
        assert!(l.finish_deletion("s", &first[0]).expect("finish"));
        // A row whose UserID changed since it was read is left alone.
        let stale = Prunable {
            user_id: "not-u2".into(),
            ..rest[0].clone()
        };
        assert!(!l.finish_deletion("s", &stale).expect("stale"));
        // Refused: b gets its status back, and nothing of it stays in the history.
        l.undo_deletion("s", &rest[0]).expect("undo");
        l.commit().expect("commit");
        let a = l.lookup("s", "a").expect("a").expect("a");
        assert_eq!((a.status, a.user_id), (Status::Deleted, None));
        let b = l.lookup("s", "b").expect("b").expect("b");
        assert_eq!(
            (b.status, b.user_id.as_deref()),
            (Status::Present, Some("u2"))
        );
        assert_eq!(l.count_prunable("s", not_in_file).expect("count"), 1);
        let mut history = Vec::new();
        l.for_each_history(Some("s"), |h| {
            history.push((h.kind.clone(), h.old_user_id.clone(), h.old_phone.clone()));
            Ok(())
        })
        .expect("history");
        assert_eq!(
            history,
            [(
                "deleted".to_string(),
                Some("u1".to_string()),
                Some("+37255555555".to_string())
            )]
        );
        assert_eq!(l.history_counts("s").expect("counts").deleted, 1);
        assert_eq!(l.counts(Some("s")).expect("counts")[0].deleted, 1);
        // Back in the file: registered again with a new UserID.
        let back = super::super::Change {
            known: true,
            ..write("a", Status::Synced, Some("u9"))
        };
        l.record("s", &back).expect("again");
        let a = l.lookup("s", "a").expect("a").expect("a");
        assert_eq!(
            (a.status, a.user_id.as_deref()),
            (Status::Synced, Some("u9"))
        );
    }
}
