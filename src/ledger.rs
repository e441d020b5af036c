//! The SQLite ledger: opening (checks, pragmas, migrations), the per-file run lock, lookups,
//! recording outcomes in batched transactions, the runs table, and the queries behind `status` and
//! `export`. The only file with SQL; it knows nothing of HTTP or CSV.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, params};
use rusqlite_migration::{M, Migrations};
use serde::Serialize;
use thiserror::Error;

/// Marks a SQLite file as a ledger (`'VSNC'`), so that open() never migrates someone else's database.
const APPLICATION_ID: i64 = 0x5653_4E43;
/// The schema, append-only: never edit a released migration.
const MIGRATIONS: [&str; 3] = [
    include_str!("../migrations/0001_ledger.sql"),
    include_str!("../migrations/0002_replacements.sql"),
    include_str!("../migrations/0003_unresolved_index.sql"),
];
/// A batch of writes is committed after this many rows…
const BATCH_ROWS: usize = 1000;
/// …or after this long, whichever comes first (the issue allows about a second; less loses less).
const BATCH_AGE: Duration = Duration::from_millis(200);
/// The oldest schema that read-only commands (`status`, `export`, a dry run) can use as it is:
/// later migrations only add indexes.
const READABLE_FROM: i64 = 2;
/// The `present` rows of a service whose UserID is still unknown (served by a partial index).
const UNRESOLVED: &str = "SELECT id_in_service FROM users
     WHERE service_id = ?1 AND status = 'present' AND user_id IS NULL";
/// How long `status`/`export` wait for a writer's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The remote state of a user as the ledger knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created by us; the UserID is known.
    Synced,
    /// Existed already (409); the UserID is known once resolved.
    Present,
    /// Refused permanently (400/422, other 4xx); not resent.
    Failed,
    /// A transient failure outlasted the attempts; the next run sends it again.
    Retry,
}

impl Status {
    /// All statuses, in display order.
    pub const ALL: [Status; 4] = [
        Status::Synced,
        Status::Present,
        Status::Failed,
        Status::Retry,
    ];

    /// The name stored in the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Synced => "synced",
            Status::Present => "present",
            Status::Failed => "failed",
            Status::Retry => "retry",
        }
    }

    /// Parses a stored or user-given name.
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s.trim())
    }
}

/// Why the ledger cannot be used.
#[derive(Debug, Error)]
pub enum LedgerError {
    /// Another run holds the lock.
    #[error("ledger {path} is in use by another run ({holder}); wait for it to finish")]
    Locked {
        /// The ledger.
        path: String,
        /// Who holds it, as written in the lock file.
        holder: String,
    },
    /// The file exists but is not a ledger (or is corrupt); it was left untouched.
    #[error(
        "{path} is not a verigator-sync ledger ({reason}); it was left untouched: pass another --ledger"
    )]
    NotALedger {
        /// The file.
        path: String,
        /// What was found.
        reason: String,
    },
    /// The ledger was written by a newer verigator-sync.
    #[error(
        "ledger {path} has schema version {found}, newer than this binary knows ({known}); upgrade verigator-sync"
    )]
    TooNew {
        /// The file.
        path: String,
        /// Its version.
        found: i64,
        /// Ours.
        known: i64,
    },
    /// `status`/`export` on a ledger that does not exist.
    #[error("ledger {0} does not exist: run an import first, or pass --ledger")]
    Missing(String),
    /// The ledger file or its lock cannot be created or opened.
    #[error("ledger {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// SQLite failed (disk full, I/O error, …).
    #[error("ledger {path}: {source}")]
    Sqlite {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
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

/// One outcome to record. Owned, because it travels to the writer thread ([`crate::writer`]).
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

/// An open ledger. Writes are batched into transactions committed every [`BATCH_ROWS`] rows or
/// [`BATCH_AGE`]; call [`Ledger::commit`] before dropping to keep the last batch.
pub struct Ledger {
    conn: Connection,
    path: String,
    in_transaction: bool,
    batch_rows: usize,
    batch_started: Instant,
    /// `updated_at` for the rows of the current batch: formatting a timestamp per row costs more
    /// than the insert's own bookkeeping, and a batch lasts at most [`BATCH_AGE`].
    batch_time: String,
    _lock: Option<File>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl Ledger {
    /// Opens (creating with mode 0600 if needed) and locks the ledger for an import. Fails with
    /// [`LedgerError::Locked`] at once if another run holds it; a lock left by a dead process is an
    /// OS lock that died with it, so it never blocks.
    pub fn open_for_import(path: &Path) -> Result<Ledger, LedgerError> {
        let shown = path.display().to_string();
        let io = |source| LedgerError::Io {
            path: shown.clone(),
            source,
        };
        let lock = acquire_lock(path, &shown)?;
        let fresh = match std::fs::metadata(path) {
            Ok(meta) => meta.len() == 0,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Created here, not by SQLite, so the phone numbers inside are private from the start.
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                true
            }
            Err(e) => return Err(io(e)),
        };
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| sqlite(&shown, source))?;
        if !fresh {
            check_is_ledger(&conn, &shown)?;
        }
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
        )
        .map_err(|source| sqlite(&shown, source))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|source| sqlite(&shown, source))?;
        migrations()
            .to_latest(&mut conn)
            .map_err(|e| LedgerError::NotALedger {
                path: shown.clone(),
                reason: format!("migration failed: {e}"),
            })?;
        // `insert_new` takes new rows' rowids to be max(rowid) + 1 onwards, which SQLite documents
        // for as long as the largest rowid is below i64::MAX: only a row inserted by hand nears it.
        let top: Option<i64> = conn
            .query_row("SELECT max(rowid) FROM users", [], |r| r.get(0))
            .map_err(|source| sqlite(&shown, source))?;
        if top.is_some_and(|top| top > i64::MAX / 2) {
            return Err(io(std::io::Error::other(
                "its users table holds a rowid near the largest possible (a row inserted by hand?); export it and start a new ledger",
            )));
        }
        Ok(Ledger {
            conn,
            path: shown,
            in_transaction: false,
            batch_rows: 0,
            batch_started: Instant::now(),
            batch_time: now(),
            _lock: Some(lock),
        })
    }

    /// Opens an existing ledger for reading (`status`, `export`), without taking the run lock, so
    /// it works while an import runs.
    pub fn open_read_only(path: &Path) -> Result<Ledger, LedgerError> {
        let shown = path.display().to_string();
        if !path.exists() {
            return Err(LedgerError::Missing(shown));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| sqlite(&shown, source))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|source| sqlite(&shown, source))?;
        check_is_ledger(&conn, &shown)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|source| sqlite(&shown, source))?;
        if version < READABLE_FROM {
            return Err(LedgerError::NotALedger {
                path: shown,
                reason: format!(
                    "schema version {version} is older than this binary's; run an import once to upgrade it"
                ),
            });
        }
        Ok(Ledger {
            conn,
            path: shown,
            in_transaction: false,
            batch_rows: 0,
            batch_started: Instant::now(),
            batch_time: now(),
            _lock: None,
        })
    }

    /// Opens the ledger for `--dry-run`: read-only, no lock, and `None` if it does not exist yet
    /// (a plan against an empty ledger).
    pub fn open_for_plan(path: &Path) -> Result<Option<Ledger>, LedgerError> {
        if !path.exists() {
            return Ok(None);
        }
        Ledger::open_read_only(path).map(Some)
    }

    /// The ledger's path as shown in messages.
    pub fn path(&self) -> &str {
        &self.path
    }

    fn err(&self, source: rusqlite::Error) -> LedgerError {
        sqlite(&self.path, source)
    }

    fn begin(&mut self) -> Result<(), LedgerError> {
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

    /// Looks up many users at once (a chunk of the file): one statement instead of one per row,
    /// which halves the cost of a nightly run where nearly every row is already synced. Returns
    /// what the ledger holds for each id, by position. Sees what this connection has written, and
    /// what other connections have committed.
    pub fn lookup_chunk(
        &mut self,
        service_id: &str,
        ids: &[&str],
    ) -> Result<Vec<Option<Entry>>, LedgerError> {
        let mut found = vec![None; ids.len()];
        if ids.is_empty() {
            return Ok(found);
        }
        let list = serde_json::to_string(ids).map_err(|e| LedgerError::Io {
            path: self.path.clone(),
            source: e.into(),
        })?;
        let path = &self.path;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT j.key, u.rowid, u.phone_number, u.status, u.user_id, u.last_error
                 FROM json_each(?2) AS j CROSS JOIN users AS u
                   ON u.service_id = ?1 AND u.id_in_service = j.value",
            )
            .map_err(|e| sqlite(path, e))?;
        let mut rows = stmt
            .query(params![service_id, list])
            .map_err(|e| sqlite(path, e))?;
        while let Some(r) = rows.next().map_err(|e| sqlite(path, e))? {
            let entry = (|| {
                let status = r.get_ref(3)?.as_str().unwrap_or_default();
                Ok::<_, rusqlite::Error>(Entry {
                    rowid: r.get(1)?,
                    phone_number: r.get(2)?,
                    status: Status::parse(status).unwrap_or(Status::Retry),
                    user_id: r.get(4)?,
                    last_error: r.get(5)?,
                })
            })()
            .map_err(|e| sqlite(path, e))?;
            let at: usize = r.get(0).map_err(|e| sqlite(path, e))?;
            if let Some(slot) = found.get_mut(at) {
                *slot = Some(entry);
            }
        }
        Ok(found)
    }

    /// Records an outcome inside the current batch and returns the row's rowid: updates the row
    /// the ledger has, or inserts it. Rows known to be new go faster through [`Ledger::insert_new`].
    pub fn record(&mut self, service_id: &str, w: &Change) -> Result<i64, LedgerError> {
        self.begin()?;
        let rowid = self
            .conn
            .prepare_cached(
                "INSERT INTO users (service_id, id_in_service, phone_number, status, user_id, ctime,
                                    attempts, last_error, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
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
                        self.batch_time
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
            let n = *n;
            let (now, later) = rest.split_at(n);
            rest = later;
            let path = &self.path;
            let mut stmt = self.conn.prepare_cached(sql).map_err(|e| sqlite(path, e))?;
            let bind =
                |stmt: &mut rusqlite::CachedStatement<'_>, at, value: &dyn rusqlite::ToSql| {
                    stmt.raw_bind_parameter(at, value)
                        .map_err(|e| sqlite(path, e))
                };
            bind(&mut stmt, 1, &service_id)?;
            bind(&mut stmt, 2, &self.batch_time)?;
            let mut at = 3;
            for w in now {
                let values: [&dyn rusqlite::ToSql; 7] = [
                    &w.id_in_service,
                    &w.phone_number,
                    &w.status.as_str(),
                    &w.user_id,
                    &w.ctime,
                    &w.attempts,
                    &w.last_error,
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
            let first = last.saturating_sub(n as i64 - 1);
            if first <= 0 || last == i64::MAX {
                return Err(LedgerError::Io {
                    path: path.clone(),
                    source: std::io::Error::other("the users table has run out of rowids"),
                });
            }
            rowids.extend(first..=last);
        }
        self.batch_rows += count;
        Ok(changes
            .into_iter()
            .map(|c| c.id_in_service)
            .zip(rowids)
            .collect())
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

    /// Commits the current batch if it is big or old enough; returns whether it committed.
    pub fn commit_if_due(&mut self) -> Result<bool, LedgerError> {
        if self.in_transaction
            && (self.batch_rows >= BATCH_ROWS || self.batch_started.elapsed() >= BATCH_AGE)
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
                    resolved = ?13, exit_code = ?14, pending = ?15, replaced = ?16
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
                    counts.replaced
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The `present` rows of a service whose UserID is still unknown.
    pub fn unresolved(&mut self, service_id: &str) -> Result<Vec<String>, LedgerError> {
        self.commit()?;
        let mut stmt = self
            .conn
            .prepare(UNRESOLVED)
            .map_err(|e| sqlite(&self.path, e))?;
        stmt.query_map(params![service_id], |r| r.get(0))
            .map_err(|e| sqlite(&self.path, e))?
            .collect::<Result<Vec<String>, _>>()
            .map_err(|e| sqlite(&self.path, e))
    }

    /// Fills in the UserID of a `present` row found in the service's user list.
    pub fn resolve(
        &mut self,
        service_id: &str,
        id_in_service: &str,
        user_id: &str,
        ctime: Option<&str>,
    ) -> Result<(), LedgerError> {
        self.begin()?;
        self.conn
            .prepare_cached(
                "UPDATE users SET user_id = ?3, ctime = COALESCE(?4, ctime), updated_at = ?5
                 WHERE service_id = ?1 AND id_in_service = ?2 AND status = 'present' AND user_id IS NULL",
            )
            .and_then(|mut s| s.execute(params![service_id, id_in_service, user_id, ctime, now()]))
            .map_err(|e| sqlite(&self.path, e))?;
        self.batch_rows += 1;
        Ok(())
    }

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

    /// Every row of a service as `(id_in_service, status, user_id)`, for `reconcile`.
    pub fn known_users(
        &self,
        service_id: &str,
    ) -> Result<Vec<(String, Status, Option<String>)>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id_in_service, status, user_id FROM users WHERE service_id = ?1 ORDER BY rowid")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![service_id], |r| {
                let status: String = r.get(1)?;
                Ok((
                    r.get(0)?,
                    Status::parse(&status).unwrap_or(Status::Retry),
                    r.get(2)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Marks a row whose user is gone at Verigator so that the next import registers it again.
    pub fn mark_gone(
        &mut self,
        service_id: &str,
        id_in_service: &str,
        why: &str,
    ) -> Result<(), LedgerError> {
        self.begin()?;
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
    /// failed or retry row whose user exists after all into `present`.
    pub fn set_user_id(
        &mut self,
        service_id: &str,
        id_in_service: &str,
        user_id: &str,
    ) -> Result<(), LedgerError> {
        self.begin()?;
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
                Some(Status::Retry) | None => c.retry += n,
            }
        }
        Ok(out)
    }

    /// The last `limit` runs, newest first.
    pub fn runs(
        &self,
        service_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RunRecord>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, service_id, input, pid, started_at, finished_at, rows, skipped, sent, synced,
                        present, failed, invalid, retry, duplicate, changed, resolved, exit_code, pending, replaced,
                        ROUND((julianday(finished_at) - julianday(started_at)) * 86400.0, 3)
                 FROM runs WHERE ?1 IS NULL OR service_id = ?1 ORDER BY id DESC LIMIT ?2",
            )
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
                    },
                    exit_code: r.get(17)?,
                    duration_s: r.get(20)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
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

/// Multi-row inserts of a few fixed sizes (so that the statement cache holds them all), largest
/// first, with their SQL.
static INSERTS: std::sync::LazyLock<[(usize, String); 4]> =
    std::sync::LazyLock::new(|| [64, 16, 4, 1].map(|n| (n, insert_sql(n))));

/// `INSERT … VALUES (…), …` for `rows` rows: `?1` is the service, `?2` the batch's time, and
/// each row has seven parameters of its own.
fn insert_sql(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|i| {
            let p = 3 + 7 * i;
            format!(
                "(?1, ?{}, ?{}, ?{}, ?{}, ?{}, ?{}, ?{}, ?2)",
                p,
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5,
                p + 6
            )
        })
        .collect();
    format!(
        "INSERT INTO users (service_id, id_in_service, phone_number, status, user_id, ctime,
                            attempts, last_error, updated_at)
         VALUES {}",
        values.join(", ")
    )
}

fn sqlite(path: &str, source: rusqlite::Error) -> LedgerError {
    LedgerError::Sqlite {
        path: path.to_string(),
        source,
    }
}

fn migrations() -> Migrations<'static> {
    Migrations::new(MIGRATIONS.iter().map(|sql| M::up(sql)).collect())
}

/// Refuses files that are not our ledger, and ledgers newer than this binary, without writing.
fn check_is_ledger(conn: &Connection, shown: &str) -> Result<(), LedgerError> {
    let not_ledger = |reason: String| LedgerError::NotALedger {
        path: shown.to_string(),
        reason,
    };
    let app_id: i64 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(|e| not_ledger(e.to_string()))?;
    let tables: i64 = conn
        .query_row("SELECT COUNT(*) FROM sqlite_schema", [], |r| r.get(0))
        .map_err(|e| not_ledger(e.to_string()))?;
    if app_id != APPLICATION_ID && !(app_id == 0 && tables == 0) {
        return Err(not_ledger(if app_id == 0 {
            "a SQLite database with other tables".to_string()
        } else {
            format!("a SQLite database with application id {app_id:#x}")
        }));
    }
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| not_ledger(e.to_string()))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(LedgerError::TooNew {
            path: shown.to_string(),
            found: version,
            known,
        });
    }
    // No integrity check here: it reads the whole file, a second per million rows, and the nightly
    // no-op run must take about a second in all. Damage deeper in the file surfaces as SQLite's
    // "database disk image is malformed" on the first page that holds it.
    Ok(())
}

/// Takes the OS lock on `<ledger>.lock` and writes who holds it, for the next run's message.
fn acquire_lock(path: &Path, shown: &str) -> Result<File, LedgerError> {
    let lock_path = lock_path(path);
    let io = |source| LedgerError::Io {
        path: lock_path.display().to_string(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(LedgerError::Locked {
                path: shown.to_string(),
                holder: if holder.is_empty() {
                    "unknown process".to_string()
                } else {
                    holder.to_string()
                },
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    write!(file, "pid {}, started {}", std::process::id(), now()).map_err(io)?;
    file.flush().map_err(io)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    impl Ledger {
        fn lookup(&mut self, service_id: &str, id: &str) -> Result<Option<Entry>, LedgerError> {
            Ok(self.lookup_chunk(service_id, &[id])?.pop().flatten())
        }
    }

    fn ledger() -> (tempfile::TempDir, Ledger) {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = Ledger::open_for_import(&dir.path().join("l.db")).expect("open");
        (dir, l)
    }

    fn write(id: &str, status: Status, user_id: Option<&str>) -> Change {
        Change {
            id_in_service: id.into(),
            phone_number: "+37255555555".into(),
            status,
            user_id: user_id.map(Into::into),
            ctime: None,
            attempts: 1,
            last_error: None,
            known: false,
        }
    }

    #[test]
    fn bundled_sqlite_has_the_build_flags_of_cargo_config() {
        let (_d, l) = ledger();
        let options: Vec<String> = l
            .conn
            .prepare("PRAGMA compile_options")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .expect("compile options");
        // Set in .cargo/config.toml; a build from outside the repository silently lacks them.
        assert!(
            !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT")
                && options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
    }

    #[test]
    fn migrations_validate() {
        migrations().validate().expect("migrations are valid");
    }

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

    #[test]
    fn a_ledger_whose_rowids_could_run_out_is_refused() {
        let (dir, l) = ledger();
        l.conn
            .execute(
                "INSERT INTO users (rowid, service_id, id_in_service, phone_number, status, updated_at)
                 VALUES (9223372036854775807, 's', 'a', '+37255555555', 'synced', 'now')",
                [],
            )
            .expect("insert by hand");
        drop(l);
        let e = Ledger::open_for_import(&dir.path().join("l.db")).expect_err("refused");
        assert!(
            e.to_string().contains("rowid near the largest possible"),
            "{e}"
        );
    }

    #[test]
    fn resolve_fills_only_unknown_present_rows() {
        let (_d, mut l) = ledger();
        l.record("s", &write("p", Status::Present, None))
            .expect("record");
        l.record("s", &write("q", Status::Synced, Some("u2")))
            .expect("record");
        assert_eq!(
            l.unresolved("s").expect("unresolved"),
            vec!["p".to_string()]
        );
        l.resolve("s", "p", "u1", Some("t")).expect("resolve");
        l.resolve("s", "q", "zzz", None).expect("resolve");
        assert!(l.unresolved("s").expect("unresolved").is_empty());
        assert_eq!(
            l.lookup("s", "q")
                .expect("q")
                .expect("q")
                .user_id
                .as_deref(),
            Some("u2")
        );
    }

    #[test]
    fn finding_unresolved_rows_reads_only_them() {
        let (_d, l) = ledger();
        let plan: Vec<String> = l
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {UNRESOLVED}"))
            .and_then(|mut s| s.query_map(["s"], |r| r.get(3))?.collect())
            .expect("plan");
        assert!(
            plan.iter().any(|step| step.contains("users_unresolved")),
            "{plan:?}"
        );
    }

    #[test]
    fn second_open_is_locked_and_names_the_holder() {
        let (dir, _l) = ledger();
        let err = Ledger::open_for_import(&dir.path().join("l.db")).expect_err("must be refused");
        let msg = err.to_string();
        assert!(
            msg.contains("in use by another run")
                && msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
    }

    #[test]
    fn lock_is_released_on_drop() {
        let (dir, l) = ledger();
        drop(l);
        Ledger::open_for_import(&dir.path().join("l.db")).expect("reopens");
    }

    #[test]
    fn new_ledger_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, _l) = ledger();
        let mode = std::fs::metadata(dir.path().join("l.db"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn refuses_foreign_files_without_touching_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = dir.path().join("notes.txt");
        std::fs::write(
            &text,
            "hello, this is not sqlite at all, just some text to fill a page",
        )
        .expect("write");
        assert!(matches!(
            Ledger::open_for_import(&text),
            Err(LedgerError::NotALedger { .. })
        ));
        assert_eq!(
            std::fs::read_to_string(&text).expect("read"),
            "hello, this is not sqlite at all, just some text to fill a page"
        );

        let other = dir.path().join("other.db");
        Connection::open(&other)
            .and_then(|c| c.execute_batch("CREATE TABLE t (x)"))
            .expect("other db");
        let before = std::fs::read(&other).expect("read");
        assert!(matches!(
            Ledger::open_for_import(&other),
            Err(LedgerError::NotALedger { .. })
        ));
        assert_eq!(std::fs::read(&other).expect("read"), before);
    }

    #[test]
    fn refuses_newer_schema() {
        let (dir, l) = ledger();
        l.conn
            .pragma_update(None, "user_version", 99)
            .expect("bump");
        drop(l);
        let err = Ledger::open_for_import(&dir.path().join("l.db")).expect_err("must be refused");
        assert!(
            matches!(err, LedgerError::TooNew { found: 99, .. }),
            "{err}"
        );
    }

    #[test]
    fn an_older_ledger_is_readable_and_upgraded_by_the_next_import() {
        let (dir, l) = ledger();
        l.conn
            .execute_batch("DROP INDEX users_unresolved; PRAGMA user_version = 2;")
            .expect("downgrade to schema 2");
        drop(l);
        let path = dir.path().join("l.db");
        let mut old = Ledger::open_read_only(&path).expect("schema 2 is readable");
        assert!(old.unresolved("s").expect("unresolved").is_empty());
        drop(old);
        let l = Ledger::open_for_import(&path).expect("upgrade");
        let (version, indexed): (i64, i64) = l
            .conn
            .query_row(
                "SELECT (SELECT user_version FROM pragma_user_version),
                        (SELECT count(*) FROM sqlite_schema WHERE name = 'users_unresolved')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("schema");
        assert_eq!((version, indexed), (MIGRATIONS.len() as i64, 1));
    }

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
    }
}
