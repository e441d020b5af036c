//! Reads: the lookups that feed the plan, the `present` rows still unresolved, reconcile's read
//! of a service, the counts of `status` and the rows of `export`.

use std::ops::ControlFlow;

use rusqlite::params;
use serde::Serialize;
use thiserror::Error;

use super::{Ledger, LedgerError, Status, sqlite};

/// The `present` rows of a service whose UserID is still unknown, past a rowid, in rowid order
/// (served by a partial index, which holds them in that order).
const UNRESOLVED: &str = "SELECT rowid, id_in_service, phone_number FROM users
     WHERE service_id = ?1 AND status = 'present' AND user_id IS NULL AND rowid > ?2
     ORDER BY rowid LIMIT ?3";

/// A `present` row whose UserID is not known yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unresolved {
    /// Its rowid (the import's planner knows which rowids this input holds).
    pub rowid: i64,
    /// The user's id in the customer's service.
    pub id_in_service: String,
    /// The phone it was sent with.
    pub phone_number: String,
}

/// What the ledger knows about one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// SQLite's rowid: a dense small integer, used to mark rows seen in this run.
    pub rowid: i64,
    /// The phone number last sent.
    pub phone_number: String,
    /// The status.
    pub status: Status,
    /// The UserID, when known.
    pub user_id: Option<String>,
    /// The last error recorded (why it failed, for `failed` rows).
    pub last_error: Option<String>,
}

impl Ledger {
    /// The `present` rows of a service whose UserID is still unknown: at most `limit` of them,
    /// those past rowid `after`, in rowid order (so that a caller can take them a batch at a time).
    pub fn unresolved(
        &mut self,
        service_id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Unresolved>, LedgerError> {
        self.commit()?;
        let mut stmt = self
            .conn
            .prepare(UNRESOLVED)
            .map_err(|e| sqlite(&self.path, e))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        stmt.query_map(params![service_id, after, limit], |r| {
            Ok(Unresolved {
                rowid: r.get(0)?,
                id_in_service: r.get(1)?,
                phone_number: r.get(2)?,
            })
        })
        .map_err(|e| sqlite(&self.path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| sqlite(&self.path, e))
    }

    /// Hands every row of a service to `each` as `(id_in_service, status, user_id)`, in the
    /// table's own order, until `each` breaks: how `reconcile` reads its side. One statement, so
    /// one consistent snapshot. `deleted` rows are left out: their users are meant to be gone,
    /// and one that is listed again is not the ledger's.
    pub fn for_each_known(
        &self,
        service_id: &str,
        mut each: impl FnMut(&str, Status, Option<&str>) -> ControlFlow<()>,
    ) -> Result<(), LedgerError> {
        // The table read straight through: walking the key's index instead would fetch each row
        // from wherever it was inserted, a page read per row when ids came in random order.
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id_in_service, status, user_id FROM users NOT INDEXED
                 WHERE service_id = ?1 AND status <> 'deleted'",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query(params![service_id]).map_err(|e| self.err(e))?;
        while let Some(r) = rows.next().map_err(|e| sqlite(&self.path, e))? {
            let text = |i| text_at(r, i).map_err(|e| sqlite(&self.path, e));
            let (id, status, user_id) = (text(0)?, text(1)?, text(2)?);
            let status = status.and_then(Status::parse).unwrap_or(Status::Retry);
            if each(id.unwrap_or_default(), status, user_id).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// Counts per service and status, with how many `present` rows lack a UserID.
    pub fn counts(&self, service_id: Option<&str>) -> Result<Vec<ServiceCounts>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT service_id, status, COUNT(*), SUM(user_id IS NULL) FROM users
                 WHERE ?1 IS NULL OR service_id = ?1
                 GROUP BY service_id, status ORDER BY service_id",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query(params![service_id]).map_err(|e| self.err(e))?;
        let mut out: Vec<ServiceCounts> = Vec::new();
        while let Some(r) = rows.next().map_err(|e| sqlite(&self.path, e))? {
            let service: String = r.get(0).map_err(|e| sqlite(&self.path, e))?;
            let status: String = r.get(1).map_err(|e| sqlite(&self.path, e))?;
            let n: u64 = r.get(2).map_err(|e| sqlite(&self.path, e))?;
            let missing: u64 = r.get(3).map_err(|e| sqlite(&self.path, e))?;
            if out.last().is_none_or(|c| c.service_id != service) {
                out.push(ServiceCounts {
                    service_id: service,
                    ..ServiceCounts::default()
                });
            }
            let Some(c) = out.last_mut() else { continue };
            match Status::parse(&status) {
                Some(Status::Synced) => c.synced = n,
                Some(Status::Present) => {
                    c.present = n;
                    c.present_without_user_id = missing;
                }
                Some(Status::Failed) => c.failed = n,
                Some(Status::Deleted) => c.deleted = n,
                Some(Status::Retry) | None => c.retry += n,
            }
        }
        for c in &mut out {
            let history = self.history_counts(&c.service_id)?;
            (c.replaced, c.fixed) = (history.replaced, history.fixed);
        }
        Ok(out)
    }

    /// Calls `each` for every user row, ordered by service and id, optionally filtered.
    pub fn for_each_user(
        &self,
        service_id: Option<&str>,
        statuses: &[Status],
        mut each: impl FnMut(&UserRow) -> std::io::Result<()>,
    ) -> Result<(), ExportError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT service_id, id_in_service, phone_number, user_id, status, ctime, updated_at, last_error
                 FROM users WHERE ?1 IS NULL OR service_id = ?1 ORDER BY service_id, rowid",
            )
            .map_err(|e| ExportError::Ledger(self.err(e)))?;
        let mut rows = stmt
            .query(params![service_id])
            .map_err(|e| ExportError::Ledger(self.err(e)))?;
        while let Some(r) = rows
            .next()
            .map_err(|e| ExportError::Ledger(sqlite(&self.path, e)))?
        {
            let get = |i| -> Result<Option<String>, ExportError> {
                r.get(i)
                    .map_err(|e| ExportError::Ledger(sqlite(&self.path, e)))
            };
            let status_text = get(4)?.unwrap_or_default();
            let status = Status::parse(&status_text).unwrap_or(Status::Retry);
            if !statuses.is_empty() && !statuses.contains(&status) {
                continue;
            }
            let row = UserRow {
                service_id: get(0)?.unwrap_or_default(),
                id_in_service: get(1)?.unwrap_or_default(),
                phone_number: get(2)?.unwrap_or_default(),
                user_id: get(3)?,
                status,
                ctime: get(5)?,
                updated_at: get(6)?.unwrap_or_default(),
                last_error: get(7)?,
            };
            each(&row).map_err(ExportError::Write)?;
        }
        Ok(())
    }
}

/// Column `i` of a row as text, borrowed (or `None` for NULL).
fn text_at<'r>(r: &'r rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<&'r str>> {
    r.get_ref(i)?.as_str_or_null().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// A failed export: the ledger or the output.
#[derive(Debug, Error)]
pub enum ExportError {
    /// Reading the ledger failed.
    #[error(transparent)]
    Ledger(LedgerError),
    /// Writing the output failed.
    #[error("cannot write the export: {0}")]
    Write(#[source] std::io::Error),
}

/// One row of the users table, as exported.
#[derive(Clone, Debug, Serialize)]
pub struct UserRow {
    /// The ServiceID.
    pub service_id: String,
    /// The user's id in the customer's service.
    pub id_in_service: String,
    /// The phone number sent.
    pub phone_number: String,
    /// The Verigator UserID.
    pub user_id: Option<String>,
    /// The status.
    pub status: Status,
    /// When Verigator created the user.
    pub ctime: Option<String>,
    /// When the ledger row last changed.
    pub updated_at: String,
    /// The last error.
    pub last_error: Option<String>,
}

/// Per-service counts for `status`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServiceCounts {
    /// The ServiceID.
    pub service_id: String,
    /// Rows synced.
    pub synced: u64,
    /// Rows present.
    pub present: u64,
    /// Present rows whose UserID is unknown yet.
    pub present_without_user_id: u64,
    /// Rows failed.
    pub failed: u64,
    /// Rows to retry.
    pub retry: u64,
    /// Rows whose users `import --prune` deleted at Verigator.
    pub deleted: u64,
    /// History: users replaced by `--apply-changes` (their old UserIDs are kept).
    pub replaced: u64,
    /// History: rows changed by `reconcile --fix` (the values overwritten are kept).
    pub fixed: u64,
}
#[cfg(test)]
mod tests {
    use super::super::tests::ledger;
    use super::*;

    #[test]
    fn finding_unresolved_rows_reads_only_them() {
        let (_d, l) = ledger();
        let plan: Vec<String> = l
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {UNRESOLVED}"))
            .and_then(|mut s| {
                s.query_map(rusqlite::params!["s", 0, 10], |r| r.get(3))?
                    .collect()
            })
            .expect("plan");
        assert!(
            plan.iter().any(|step| step.contains("users_unresolved")),
            "{plan:?}"
        );
    }
}
