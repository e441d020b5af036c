//! History: nothing the ledger knew is lost. The replacements of `--apply-changes` (the old UserID
//! and phone, committed before the delete) and reconcile's fixes (the UserID and status a fix
//! overwrote) are kept here, counted by `status` and listed by `export --history`.

use rusqlite::params;
use serde::Serialize;

use super::{ExportError, Ledger, LedgerError, WITH_DELETIONS, WITH_FIXES, now, sqlite};

/// One entry of the history, as `export --history` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct HistoryRow {
    /// The ServiceID.
    pub service_id: String,
    /// The user's id in the customer's service.
    pub id_in_service: String,
    /// `replaced`, `deleted` (by `--prune`), `delete_begun` (a deletion whose answer a killed or
    /// interrupted run never had: it may have happened), or the kind of reconcile's fix.
    pub kind: String,
    /// The UserID before.
    pub old_user_id: Option<String>,
    /// The UserID after (none once cleared, or while a replacement is unfinished).
    pub new_user_id: Option<String>,
    /// The phone before (replacements and deletions).
    pub old_phone: Option<String>,
    /// The phone after (replacements only).
    pub new_phone: Option<String>,
    /// When it happened.
    pub at: String,
}

/// How much history a service has, for `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HistoryCounts {
    /// Users replaced by `--apply-changes`.
    pub replaced: u64,
    /// Rows changed by `reconcile --fix`.
    pub fixed: u64,
    /// Users deleted by `import --prune`.
    pub deleted: u64,
}

impl Ledger {
    /// Writes down, and commits at once, that `id_in_service` is about to be deleted at Verigator
    /// and created again with `new_phone`: if the run dies in between, the old UserID is still known.
    pub fn begin_replacement(
        &mut self,
        run_id: Option<i64>,
        service_id: &str,
        id_in_service: &str,
        old_user_id: &str,
        old_phone: &str,
        new_phone: &str,
    ) -> Result<i64, LedgerError> {
        self.begin()?;
        self.conn
            .execute(
                "INSERT INTO replacements (run_id, service_id, id_in_service, old_user_id, old_phone, new_phone, started_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![run_id, service_id, id_in_service, old_user_id, old_phone, new_phone, now()],
            )
            .map_err(|e| sqlite(&self.path, e))?;
        let id = self.conn.last_insert_rowid();
        self.commit()?;
        Ok(id)
    }

    /// Completes a replacement with the new UserID.
    pub fn finish_replacement(
        &mut self,
        replacement_id: i64,
        new_user_id: Option<&str>,
    ) -> Result<(), LedgerError> {
        self.begin()?;
        self.conn
            .prepare_cached(
                "UPDATE replacements SET new_user_id = ?2, finished_at = ?3 WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![replacement_id, new_user_id, now()]))
            .map_err(|e| sqlite(&self.path, e))?;
        Ok(())
    }

    /// Marks a row whose user is gone at Verigator so that the next import registers it again;
    /// its UserID and status go to the history first.
    pub fn mark_gone(
        &mut self,
        service_id: &str,
        id_in_service: &str,
        why: &str,
    ) -> Result<(), LedgerError> {
        self.begin()?;
        self.keep_fix(service_id, id_in_service, "missing_at_verigator", None)?;
        self.conn
            .prepare_cached(
                "UPDATE users SET status = 'retry', user_id = NULL, ctime = NULL, last_error = ?3, updated_at = ?4
                 WHERE service_id = ?1 AND id_in_service = ?2",
            )
            .and_then(|mut s| s.execute(params![service_id, id_in_service, why, now()]))
            .map_err(|e| sqlite(&self.path, e))?;
        Ok(())
    }

    /// Takes the UserID Verigator lists for a row: corrects a synced or present row, and turns a
    /// failed or retry row whose user exists after all into `present`. What it had goes to the
    /// history first.
    pub fn set_user_id(
        &mut self,
        service_id: &str,
        id_in_service: &str,
        user_id: &str,
    ) -> Result<(), LedgerError> {
        self.begin()?;
        self.keep_fix(service_id, id_in_service, "", Some(user_id))?;
        self.conn
            .prepare_cached(
                "UPDATE users SET user_id = ?3, updated_at = ?4, last_error = NULL,
                    status = CASE status WHEN 'synced' THEN 'synced' ELSE 'present' END
                 WHERE service_id = ?1 AND id_in_service = ?2",
            )
            .and_then(|mut s| s.execute(params![service_id, id_in_service, user_id, now()]))
            .map_err(|e| sqlite(&self.path, e))?;
        Ok(())
    }

    /// Copies a row's status and UserID into `fixes` before a fix overwrites them. An empty `kind`
    /// is decided by the row: `user_id_differs` when it has a UserID, else `user_id_unknown`.
    fn keep_fix(
        &mut self,
        service_id: &str,
        id_in_service: &str,
        kind: &str,
        new_user_id: Option<&str>,
    ) -> Result<(), LedgerError> {
        self.conn
            .prepare_cached(
                "INSERT INTO fixes (service_id, id_in_service, kind, old_status, old_user_id, new_user_id, fixed_at)
                 SELECT service_id, id_in_service,
                        CASE WHEN ?3 <> '' THEN ?3
                             WHEN user_id IS NULL THEN 'user_id_unknown' ELSE 'user_id_differs' END,
                        status, user_id, ?4, ?5
                 FROM users WHERE service_id = ?1 AND id_in_service = ?2",
            )
            .and_then(|mut s| {
                s.execute(params![service_id, id_in_service, kind, new_user_id, now()])
            })
            .map_err(|e| sqlite(&self.path, e))?;
        Ok(())
    }

    /// Per service, how many replacements and fixes the history holds.
    pub fn history_counts(&self, service_id: &str) -> Result<HistoryCounts, LedgerError> {
        let count = |sql: &str| -> Result<u64, LedgerError> {
            self.conn
                .query_row(sql, params![service_id], |r| r.get(0))
                .map_err(|e| self.err(e))
        };
        Ok(HistoryCounts {
            replaced: count("SELECT count(*) FROM replacements WHERE service_id = ?1")?,
            fixed: if self.schema >= WITH_FIXES {
                count("SELECT count(*) FROM fixes WHERE service_id = ?1")?
            } else {
                0
            },
            deleted: if self.schema >= WITH_DELETIONS {
                count(
                    "SELECT count(*) FROM deletions WHERE service_id = ?1 AND finished_at IS NOT NULL",
                )?
            } else {
                0
            },
        })
    }

    /// Calls `each` for every history entry, oldest first, optionally of one service.
    pub fn for_each_history(
        &self,
        service_id: Option<&str>,
        mut each: impl FnMut(&HistoryRow) -> std::io::Result<()>,
    ) -> Result<(), ExportError> {
        let fixes = if self.schema >= WITH_FIXES {
            "UNION ALL
             SELECT service_id, id_in_service, kind, old_user_id, new_user_id, NULL, NULL, fixed_at
             FROM fixes WHERE ?1 IS NULL OR service_id = ?1"
        } else {
            ""
        };
        let deletions = if self.schema >= WITH_DELETIONS {
            "UNION ALL
             SELECT service_id, id_in_service,
                    CASE WHEN finished_at IS NULL THEN 'delete_begun' ELSE 'deleted' END,
                    user_id, NULL, phone_number, NULL, COALESCE(finished_at, started_at)
             FROM deletions WHERE ?1 IS NULL OR service_id = ?1"
        } else {
            ""
        };
        let sql = format!(
            "SELECT service_id, id_in_service, 'replaced', old_user_id, new_user_id, old_phone, new_phone, started_at AS at
             FROM replacements WHERE ?1 IS NULL OR service_id = ?1
             {fixes}
             {deletions}
             ORDER BY at"
        );
        let ledger = |e| ExportError::Ledger(sqlite(&self.path, e));
        let mut stmt = self.conn.prepare(&sql).map_err(ledger)?;
        let mut rows = stmt.query(params![service_id]).map_err(ledger)?;
        while let Some(r) = rows.next().map_err(ledger)? {
            let row = (|| {
                Ok::<_, rusqlite::Error>(HistoryRow {
                    service_id: r.get(0)?,
                    id_in_service: r.get(1)?,
                    kind: r.get(2)?,
                    old_user_id: r.get(3)?,
                    new_user_id: r.get(4)?,
                    old_phone: r.get(5)?,
                    new_phone: r.get(6)?,
                    at: r.get(7)?,
                })
            })()
            .map_err(ledger)?;
            each(&row).map_err(ExportError::Write)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Status;
    use super::super::tests::{ledger, write};
    use super::*;

    #[test]
    fn fixes_keep_what_they_overwrite() {
        let (_d, mut l) = ledger();
        l.record("s", &write("gone", Status::Synced, Some("u1")))
            .expect("record");
        l.record("s", &write("other", Status::Present, Some("u2")))
            .expect("record");
        l.record("s", &write("late", Status::Retry, None))
            .expect("record");
        l.mark_gone("s", "gone", "not there").expect("gone");
        l.set_user_id("s", "other", "u3").expect("differs");
        l.set_user_id("s", "late", "u4").expect("unknown");
        l.commit().expect("commit");
        let mut seen = Vec::new();
        l.for_each_history(Some("s"), |h| {
            seen.push((
                h.id_in_service.clone(),
                h.kind.clone(),
                h.old_user_id.clone(),
                h.new_user_id.clone(),
            ));
            Ok(())
        })
        .expect("history");
        let some = |s: &str| Some(s.to_string());
        assert_eq!(
            seen,
            [
                (
                    "gone".into(),
                    "missing_at_verigator".into(),
                    some("u1"),
                    None
                ),
                (
                    "other".into(),
                    "user_id_differs".into(),
                    some("u2"),
                    some("u3")
                ),
                ("late".into(), "user_id_unknown".into(), None, some("u4")),
            ]
        );
        assert_eq!(
            l.history_counts("s").expect("counts"),
            HistoryCounts {
                replaced: 0,
                fixed: 3,
                deleted: 0
            }
        );
    }
}
