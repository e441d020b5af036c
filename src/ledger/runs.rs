//! The runs table: one row per import, opened when it starts (so `status` shows it while it runs)
//! and closed with its counts and exit code.

use rusqlite::params;
use serde::Serialize;

use super::{Ledger, LedgerError, WITH_DELETIONS, WITH_FIXES, now};

impl Ledger {
    /// Starts a run in the runs table (committed at once, so `status` shows it while it runs).
    pub fn begin_run(&mut self, service_id: &str, input: &str) -> Result<i64, LedgerError> {
        self.commit()?;
        self.conn
            .execute(
                "INSERT INTO runs (service_id, input, pid, started_at) VALUES (?1, ?2, ?3, ?4)",
                params![service_id, input, std::process::id(), now()],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Closes a run with its counts and exit code, committing everything.
    pub fn finish_run(
        &mut self,
        run_id: i64,
        counts: &RunCounts,
        exit_code: u8,
    ) -> Result<(), LedgerError> {
        self.commit()?;
        self.conn
            .execute(
                "UPDATE runs SET finished_at = ?2, rows = ?3, skipped = ?4, sent = ?5, synced = ?6,
                    present = ?7, failed = ?8, invalid = ?9, retry = ?10, duplicate = ?11, changed = ?12,
                    resolved = ?13, exit_code = ?14, pending = ?15, replaced = ?16, unresolved = ?17,
                    deleted = ?18
                 WHERE id = ?1",
                params![
                    run_id,
                    now(),
                    counts.rows,
                    counts.skipped,
                    counts.sent,
                    counts.synced,
                    counts.present,
                    counts.failed,
                    counts.invalid,
                    counts.retry,
                    counts.duplicate,
                    counts.changed,
                    counts.resolved,
                    exit_code,
                    counts.pending,
                    counts.replaced,
                    counts.unresolved,
                    counts.deleted
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The last `limit` runs, newest first.
    pub fn runs(
        &self,
        service_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RunRecord>, LedgerError> {
        // A ledger older than the column (read by `status` before an import upgraded it) had none.
        let unresolved = if self.schema >= WITH_FIXES {
            "unresolved"
        } else {
            "0"
        };
        let deleted = if self.schema >= WITH_DELETIONS {
            "deleted"
        } else {
            "0"
        };
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT id, service_id, input, pid, started_at, finished_at, rows, skipped, sent, synced,
                        present, failed, invalid, retry, duplicate, changed, resolved, exit_code, pending, replaced,
                        ROUND((julianday(finished_at) - julianday(started_at)) * 86400.0, 3), {unresolved}, {deleted}
                 FROM runs WHERE ?1 IS NULL OR service_id = ?1 ORDER BY id DESC LIMIT ?2"
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![service_id, limit], |r| {
                Ok(RunRecord {
                    id: r.get(0)?,
                    service_id: r.get(1)?,
                    input: r.get(2)?,
                    pid: r.get(3)?,
                    started_at: r.get(4)?,
                    finished_at: r.get(5)?,
                    counts: RunCounts {
                        rows: r.get(6)?,
                        skipped: r.get(7)?,
                        sent: r.get(8)?,
                        synced: r.get(9)?,
                        present: r.get(10)?,
                        failed: r.get(11)?,
                        invalid: r.get(12)?,
                        retry: r.get(13)?,
                        duplicate: r.get(14)?,
                        changed: r.get(15)?,
                        resolved: r.get(16)?,
                        pending: r.get(18)?,
                        replaced: r.get(19)?,
                        unresolved: r.get(21)?,
                        deleted: r.get(22)?,
                    },
                    exit_code: r.get(17)?,
                    duration_s: r.get(20)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }
}

/// What the finished runs of a service add up to, for monitoring.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunTotals {
    /// Every count, summed over the runs.
    pub counts: RunCounts,
    /// When the last run that exited 0 finished (RFC 3339), if one did.
    pub last_success: Option<String>,
}

impl Ledger {
    /// Sums the counts of every run of a service, and finds the last one that exited 0.
    pub fn run_totals(&self, service_id: &str) -> Result<RunTotals, LedgerError> {
        let newer = |schema, column| if self.schema >= schema { column } else { "0" };
        let sql = format!(
            "SELECT {}, {}, {} FROM runs WHERE service_id = ?1",
            "total(rows), total(skipped), total(sent), total(synced), total(present), total(failed),
             total(invalid), total(retry), total(duplicate), total(changed), total(resolved)",
            "total(pending), total(replaced)",
            format_args!(
                "total({}), {}",
                newer(WITH_FIXES, "unresolved"),
                // Counted where each is kept: a killed run never writes its counts.
                newer(
                    WITH_DELETIONS,
                    "(SELECT count(*) FROM deletions WHERE service_id = ?1 AND finished_at IS NOT NULL)"
                )
            )
        );
        let counts = self
            .conn
            .query_row(&sql, params![service_id], |r| {
                // total() is a float that never overflows; counts are far below 2^53.
                let n = |i| r.get::<_, f64>(i).map(|v| v as u64);
                Ok(RunCounts {
                    rows: n(0)?,
                    skipped: n(1)?,
                    sent: n(2)?,
                    synced: n(3)?,
                    present: n(4)?,
                    failed: n(5)?,
                    invalid: n(6)?,
                    retry: n(7)?,
                    duplicate: n(8)?,
                    changed: n(9)?,
                    resolved: n(10)?,
                    pending: n(11)?,
                    replaced: n(12)?,
                    unresolved: n(13)?,
                    deleted: n(14)?,
                })
            })
            .map_err(|e| self.err(e))?;
        let last_success = self
            .conn
            .query_row(
                "SELECT max(finished_at) FROM runs WHERE service_id = ?1 AND exit_code = 0",
                params![service_id],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        Ok(RunTotals {
            counts,
            last_success,
        })
    }
}

/// The counts a run ends with; the vocabulary of the summary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RunCounts {
    /// Data rows read.
    pub rows: u64,
    /// Already final in the ledger with the same phone.
    pub skipped: u64,
    /// Rows sent to the API.
    pub sent: u64,
    /// Created.
    pub synced: u64,
    /// Already existed (409).
    pub present: u64,
    /// Refused permanently.
    pub failed: u64,
    /// Rejected locally.
    pub invalid: u64,
    /// Left for the next run.
    pub retry: u64,
    /// Repeated ids within the file.
    pub duplicate: u64,
    /// Synced or present before with another phone.
    pub changed: u64,
    /// Present rows whose UserID was found in the user list.
    pub resolved: u64,
    /// Rows held back by `--limit`; the next run sends them.
    pub pending: u64,
    /// Users deleted and created again with a new phone (`--apply-changes`).
    pub replaced: u64,
    /// Rows of this input that ended `present` without a UserID.
    pub unresolved: u64,
    /// Users not in the input that `--prune` deleted at Verigator (a dry run: would delete).
    pub deleted: u64,
}

/// One row of the runs table.
#[derive(Clone, Debug, Serialize)]
pub struct RunRecord {
    /// The run id.
    pub id: i64,
    /// The ServiceID.
    pub service_id: String,
    /// The input file's name.
    pub input: String,
    /// The process id of the run.
    pub pid: i64,
    /// When it started.
    pub started_at: String,
    /// When it finished (none while running, or if it was killed).
    pub finished_at: Option<String>,
    /// How long it took, in seconds.
    pub duration_s: Option<f64>,
    /// Its counts.
    #[serde(flatten)]
    pub counts: RunCounts,
    /// Its exit code.
    pub exit_code: Option<i64>,
}
#[cfg(test)]
mod tests {
    use super::super::Status;
    use super::super::tests::{ledger, write};
    use super::*;

    #[test]
    fn counts_and_runs() {
        let (_d, mut l) = ledger();
        let run = l.begin_run("s", "in.csv").expect("run");
        l.record("s", &write("a", Status::Synced, Some("u")))
            .expect("a");
        l.record("s", &write("b", Status::Present, None))
            .expect("b");
        let counts = RunCounts {
            rows: 2,
            ..RunCounts::default()
        };
        l.finish_run(run, &counts, 1).expect("finish");
        let c = l.counts(None).expect("counts");
        assert_eq!(
            (
                c.len(),
                c[0].synced,
                c[0].present,
                c[0].present_without_user_id
            ),
            (1, 1, 1, 1)
        );
        let runs = l.runs(Some("s"), 10).expect("runs");
        assert_eq!((runs[0].counts.rows, runs[0].exit_code), (2, Some(1)));
        assert_eq!(l.run_totals("s").expect("totals").last_success, None);
        let ok = l.begin_run("s", "in.csv").expect("run");
        let more = RunCounts {
            rows: 5,
            deleted: 3,
            ..RunCounts::default()
        };
        l.finish_run(ok, &more, 0).expect("finish");
        let totals = l.run_totals("s").expect("totals");
        // Deletions are counted where they are kept, not from the runs' counts.
        assert_eq!((totals.counts.rows, totals.counts.deleted), (7, 0));
        let finished = l.runs(Some("s"), 1).expect("runs")[0].finished_at.clone();
        assert_eq!(totals.last_success, finished);
        assert_eq!(l.run_totals("other").expect("none"), RunTotals::default());
    }
}
