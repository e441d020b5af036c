//! The import's writes: batched transactions (committed every [`BATCH_ROWS`] rows or
//! [`BATCH_AGE`]), upserts of known rows, multi-row inserts of new ones, and the savepoints that
//! let a failing handful be undone alone.

use std::time::{Duration, Instant};

use rusqlite::params;

use super::{Ledger, LedgerError, Status, now, sqlite};

/// A batch of writes is committed after this many rows…
const BATCH_ROWS: usize = 1000;
/// …or this many while more rows wait to be written: inserts of ids in random order touch a leaf
/// page each, and a commit writes every page it touched, so a writer that falls behind catches up
/// by touching each page for more rows (1M random ids: 33,000 rows/s in batches of 1,000, 54,000
/// in batches of 16,000).
pub const BATCH_ROWS_BEHIND: usize = 8192;
/// …or after this long, whichever comes first (the issue allows about a second; less loses less).
const BATCH_AGE: Duration = Duration::from_millis(200);

/// One outcome to record. Owned, because it travels to the writer thread ([`super::writer`]).
#[derive(Clone, Debug)]
pub struct Change {
    /// The user's id in the customer's service.
    pub id_in_service: String,
    /// The phone number sent.
    pub phone_number: String,
    /// The new status.
    pub status: Status,
    /// The UserID, when the API returned one.
    pub user_id: Option<String>,
    /// The creation time the API returned.
    pub ctime: Option<String>,
    /// Requests made for this row in this run.
    pub attempts: u32,
    /// The last error, for failed and retry rows.
    pub last_error: Option<String>,
    /// Whether the ledger already has this row (an update) or not (a plain, cheaper insert).
    pub known: bool,
}

impl Ledger {
    pub(super) fn begin(&mut self) -> Result<(), LedgerError> {
        if !self.in_transaction {
            // Deferred: a plan's read-only connection uses it too, and the run lock already keeps
            // every other writer out.
            self.conn.execute_batch("BEGIN").map_err(|e| self.err(e))?;
            self.in_transaction = true;
            self.batch_rows = 0;
            self.batch_started = Instant::now();
            self.batch_time = now();
        }
        Ok(())
    }

    /// Records an outcome inside the current batch and returns the row's rowid: updates the row
    /// the ledger has, or inserts it. Rows known to be new go faster through [`Ledger::insert_new`].
    pub fn record(&mut self, service_id: &str, w: &Change) -> Result<i64, LedgerError> {
        self.begin()?;
        let rowid = self
            .conn
            .prepare_cached(
                "INSERT INTO users (service_id, id_in_service, phone_number, status, user_id, ctime,
                                    attempts, last_error, updated_at, folded)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (service_id, id_in_service) DO UPDATE SET
                    phone_number = excluded.phone_number, status = excluded.status,
                    user_id = excluded.user_id, ctime = excluded.ctime,
                    attempts = users.attempts + excluded.attempts,
                    last_error = excluded.last_error, updated_at = excluded.updated_at
                 RETURNING rowid",
            )
            .and_then(|mut stmt| {
                stmt.query_row(
                    params![
                        service_id,
                        w.id_in_service,
                        w.phone_number,
                        w.status.as_str(),
                        w.user_id,
                        w.ctime,
                        w.attempts,
                        w.last_error,
                        self.batch_time,
                        crate::user::fold_key(&w.id_in_service)
                    ],
                    |r| r.get(0),
                )
            })
            .map_err(|e| sqlite(&self.path, e))?;
        self.batch_rows += 1;
        Ok(rowid)
    }

    /// Inserts rows the ledger does not have yet, inside the current batch, and returns their
    /// `(id_in_service, rowid)`. Several rows per statement: per-statement work was a third of
    /// an insert's cost.
    pub fn insert_new(
        &mut self,
        service_id: &str,
        changes: Vec<Change>,
    ) -> Result<Vec<(String, i64)>, LedgerError> {
        self.begin()?;
        let count = changes.len();
        let mut rowids = Vec::with_capacity(count);
        let mut rest = changes.as_slice();
        while !rest.is_empty() {
            // The last size is 1, so one always fits.
            let (n, sql) = INSERTS
                .iter()
                .find(|(n, _)| *n <= rest.len())
                .unwrap_or(&INSERTS[INSERTS.len() - 1]);
            let (now, later) = rest.split_at(*n);
            rest = later;
            rowids.extend(self.insert_rows(sql, service_id, now)?);
        }
        self.batch_rows += count;
        Ok(changes
            .into_iter()
            .map(|c| c.id_in_service)
            .zip(rowids)
            .collect())
    }

    /// Runs one multi-row insert of exactly `rows.len()` rows; returns their rowids.
    fn insert_rows(
        &mut self,
        sql: &str,
        service_id: &str,
        rows: &[Change],
    ) -> Result<std::ops::RangeInclusive<i64>, LedgerError> {
        let path = &self.path;
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| sqlite(path, e))?;
        let bind = |stmt: &mut rusqlite::CachedStatement<'_>, at, value: &dyn rusqlite::ToSql| {
            stmt.raw_bind_parameter(at, value)
                .map_err(|e| sqlite(path, e))
        };
        bind(&mut stmt, 1, &service_id)?;
        bind(&mut stmt, 2, &self.batch_time)?;
        let mut at = 3;
        for w in rows {
            let folded = crate::user::fold_key(&w.id_in_service);
            let values: [&dyn rusqlite::ToSql; 8] = [
                &w.id_in_service,
                &w.phone_number,
                &w.status.as_str(),
                &w.user_id,
                &w.ctime,
                &w.attempts,
                &w.last_error,
                &folded,
            ];
            for value in values {
                bind(&mut stmt, at, value)?;
                at += 1;
            }
        }
        stmt.raw_execute().map_err(|e| sqlite(path, e))?;
        // New rows get max(rowid) + 1 each, in the order of VALUES (cheaper than RETURNING,
        // which fills a temporary table). SQLite picks at random only after i64::MAX.
        let last = self.conn.last_insert_rowid();
        let first = last.saturating_sub(rows.len() as i64 - 1);
        if first <= 0 || last == i64::MAX {
            return Err(LedgerError::Io {
                path: path.clone(),
                source: std::io::Error::other("the users table has run out of rowids"),
            });
        }
        Ok(first..=last)
    }

    /// Opens a savepoint inside the current batch, so that a failing handful of writes can be
    /// undone without the rest of the batch.
    pub fn savepoint(&mut self) -> Result<(), LedgerError> {
        self.begin()?;
        self.conn
            .execute_batch("SAVEPOINT handful")
            .map_err(|e| self.err(e))
    }

    /// Keeps what was written since [`Ledger::savepoint`].
    pub fn release(&mut self) -> Result<(), LedgerError> {
        self.conn
            .execute_batch("RELEASE handful")
            .map_err(|e| self.err(e))
    }

    /// Undoes what was written since [`Ledger::savepoint`]; the batch before it stays.
    pub fn roll_back_to_savepoint(&mut self) -> Result<(), LedgerError> {
        self.conn
            .execute_batch("ROLLBACK TO handful; RELEASE handful")
            .map_err(|e| self.err(e))
    }

    /// Commits the current batch if it is big or old enough (bigger when the writer is `behind`);
    /// returns whether it committed.
    pub fn commit_if_due(&mut self, behind: bool) -> Result<bool, LedgerError> {
        let rows = if behind {
            BATCH_ROWS_BEHIND
        } else {
            BATCH_ROWS
        };
        if self.in_transaction
            && (self.batch_rows >= rows || self.batch_started.elapsed() >= BATCH_AGE)
        {
            return self.commit();
        }
        Ok(false)
    }

    /// When the open batch is due to be committed; `None` when no batch is open.
    pub fn batch_deadline(&self) -> Option<Instant> {
        self.in_transaction.then(|| self.batch_started + BATCH_AGE)
    }

    /// Commits whatever is pending; returns whether there was anything.
    pub fn commit(&mut self) -> Result<bool, LedgerError> {
        if !self.in_transaction {
            return Ok(false);
        }
        self.conn.execute_batch("COMMIT").map_err(|e| self.err(e))?;
        self.in_transaction = false;
        Ok(true)
    }
}

/// Multi-row inserts of a few fixed sizes (so that the statement cache holds them all), largest
/// first, with their SQL.
static INSERTS: std::sync::LazyLock<[(usize, String); 4]> =
    std::sync::LazyLock::new(|| [64, 16, 4, 1].map(|n| (n, insert_sql(n))));

/// `INSERT … VALUES (…), …` for `rows` rows: `?1` is the service, `?2` the batch's time, and
/// each row has eight parameters of its own.
fn insert_sql(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|i| {
            let p = 3 + 8 * i;
            format!(
                "(?1, ?{}, ?{}, ?{}, ?{}, ?{}, ?{}, ?{}, ?2, ?{})",
                p,
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5,
                p + 6,
                p + 7
            )
        })
        .collect();
    format!(
        "INSERT INTO users (service_id, id_in_service, phone_number, status, user_id, ctime,
                            attempts, last_error, updated_at, folded)
         VALUES {}",
        values.join(", ")
    )
}
#[cfg(test)]
mod tests {
    use super::super::tests::{ledger, write};
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn record_and_lookup_round_trip() {
        let (_d, mut l) = ledger();
        assert_eq!(l.lookup("s", "a").expect("lookup"), None);
        let rowid = l
            .record("s", &write("a", Status::Synced, Some("u1")))
            .expect("record");
        let e = l.lookup("s", "a").expect("lookup").expect("found");
        assert_eq!(
            (e.rowid, e.status, e.user_id.as_deref()),
            (rowid, Status::Synced, Some("u1"))
        );
        assert_eq!(l.lookup("other", "a").expect("lookup"), None);
        let again = Change {
            known: true,
            ..write("a", Status::Retry, None)
        };
        assert_eq!(
            l.record("s", &again).expect("record"),
            rowid,
            "an update keeps the rowid"
        );
        l.commit().expect("commit");
        let n: i64 = l
            .conn
            .query_row("SELECT attempts FROM users", [], |r| r.get(0))
            .expect("attempts");
        assert_eq!(n, 2, "attempts accumulate over runs");
    }

    #[test]
    fn many_new_rows_at_once_get_their_own_rowids() {
        let (_d, mut l) = ledger();
        let ids: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
        let changes: Vec<Change> = ids
            .iter()
            .map(|id| write(id, Status::Synced, Some("x")))
            .collect();
        let added = l.insert_new("s", changes).expect("insert");
        assert_eq!(added.len(), 101);
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let found = l.lookup_chunk("s", &refs).expect("lookup");
        let by_id: HashMap<&str, i64> = added.iter().map(|(id, r)| (id.as_str(), *r)).collect();
        for (id, entry) in refs.iter().zip(found) {
            assert_eq!(entry.map(|e| e.rowid), by_id.get(id).copied(), "{id}");
        }
    }
}
