//! The SQLite ledger: the one place with SQL. This file owns the [`Ledger`] handle, its errors,
//! opening (checks, pragmas, migrations) and the statuses; the rest is split by what it does.
//! It knows nothing of HTTP; only the `lookup.rs` stage reads the input's chunks.
//!
//! - `schema.rs`: the migrations, and the one that computes in Rust.
//! - `lock.rs`: the per-file run lock.
//! - `write.rs`: the import's batched inserts, upserts, savepoints and commits.
//! - `runs.rs`: the runs table and the counts a run ends with.
//! - `history.rs`: what was replaced, kept before it is lost.
//! - `resolve.rs`: UserIDs learned after the fact (the user list, reconcile's fixes).
//! - `prune.rs`: the users `import --prune` deletes, found and recorded.
//! - `read.rs`: lookups, counts and the export's iteration.
//! - `writer.rs` and `lookup.rs`: the two thread stages that own connections.

mod find;
mod history;
mod lock;
pub mod lookup;
mod prune;
mod read;
mod resolve;
mod runs;
mod schema;
mod write;
pub mod writer;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use thiserror::Error;

pub use find::Twin;
pub use history::{HistoryCounts, HistoryRow};
pub use prune::Prunable;
pub use read::{Entry, ExportError, ServiceCounts, Unresolved, UserRow};
pub use runs::{RunCounts, RunRecord, RunTotals};
pub use write::{BATCH_ROWS_BEHIND, Change};

/// Marks a SQLite file as a ledger (`'VSNC'`), so that open() never migrates someone else's database.
const APPLICATION_ID: i64 = 0x5653_4E43;
/// The oldest schema that read-only commands (`status`, `export`, a dry run) can use: 3 only adds
/// an index, and what 4 adds (the `fixes` table, the runs' `unresolved`) reads as empty before it.
const READABLE_FROM: i64 = 2;
/// The schema that has the `fixes` table and the runs' `unresolved` column.
const WITH_FIXES: i64 = 4;
/// The schema that has the `deleted` status, the `deletions` table and the runs' `deleted` column.
const WITH_DELETIONS: i64 = 5;
/// The schema that keeps each id's folded key (`users.folded`), for other spellings of an id.
const WITH_FOLDED: i64 = 6;
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
    /// Deleted at Verigator by `import --prune` (the user left the source); the UserID it had is
    /// in the history. Registered again if it comes back.
    Deleted,
}

impl Status {
    /// All statuses, in display order.
    pub const ALL: [Status; 5] = [
        Status::Synced,
        Status::Present,
        Status::Failed,
        Status::Retry,
        Status::Deleted,
    ];

    /// The name stored in the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Synced => "synced",
            Status::Present => "present",
            Status::Failed => "failed",
            Status::Retry => "retry",
            Status::Deleted => "deleted",
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

/// An open ledger. Writes are batched into transactions (see [`write`]); call [`Ledger::commit`]
/// before dropping to keep the last batch.
pub struct Ledger {
    conn: Connection,
    path: String,
    /// The schema version it has (read-only commands accept older ones).
    schema: i64,
    in_transaction: bool,
    batch_rows: usize,
    batch_started: Instant,
    /// `updated_at` for the rows of the current batch: formatting a timestamp per row costs more
    /// than the insert's own bookkeeping, and a batch lasts at most [`write::BATCH_AGE`].
    batch_time: String,
    _lock: Option<File>,
    /// The ledger file itself, locked too: a hard link is another path to the same file. Declared
    /// after the connection, so it is closed after it.
    _file_lock: Option<File>,
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

impl Ledger {
    /// Opens (creating with mode 0600 if needed) and locks the ledger for an import. Fails with
    /// [`LedgerError::Locked`] at once if another run holds it; a lock left by a dead process is an
    /// OS lock that died with it, so it never blocks.
    pub fn open_for_import(path: &Path) -> Result<Ledger, LedgerError> {
        let shown = path.display().to_string();
        let real = lock::canonical(path, &shown)?;
        if std::fs::metadata(&real).is_ok_and(|meta| !meta.is_file()) {
            return Err(LedgerError::NotALedger {
                path: shown,
                reason: "not a regular file".into(),
            });
        }
        let lock = lock::acquire(&real, &shown)?;
        let fresh = create_private(&real, &shown)?;
        let file_lock = lock::acquire_file(&real, &shown)?;
        let mut conn = Connection::open_with_flags(
            &real,
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
        schema::migrations()
            .to_latest(&mut conn)
            .map_err(|e| LedgerError::NotALedger {
                path: shown.clone(),
                reason: format!("migration failed: {e}"),
            })?;
        check_rowid_headroom(&conn, &shown)?;
        let mut ledger = Ledger::with(conn, shown, Some(lock), schema::MIGRATIONS.len() as i64);
        ledger._file_lock = Some(file_lock);
        Ok(ledger)
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
        Ok(Ledger::with(conn, shown, None, version))
    }

    fn with(conn: Connection, path: String, lock: Option<File>, schema: i64) -> Ledger {
        Ledger {
            conn,
            path,
            schema,
            in_transaction: false,
            batch_rows: 0,
            batch_started: Instant::now(),
            batch_time: now(),
            _lock: lock,
            _file_lock: None,
        }
    }

    /// Opens the ledger for `--dry-run`: read-only, no lock, and `None` if it does not exist yet
    /// (a plan against an empty ledger).
    pub fn open_for_plan(path: &Path) -> Result<Option<Ledger>, LedgerError> {
        if !path.exists() {
            return Ok(None);
        }
        let ledger = Ledger::open_read_only(path)?;
        // Half of SQLite's default cache: the B-tree's inner pages fit; the leaves that ids in
        // random order touch would not fit in any cache within the memory target anyway.
        ledger
            .conn
            .execute_batch("PRAGMA cache_size = -1024")
            .map_err(|e| ledger.err(e))?;
        Ok(Some(ledger))
    }

    /// The ledger's path as shown in messages.
    pub fn path(&self) -> &str {
        &self.path
    }

    fn err(&self, source: rusqlite::Error) -> LedgerError {
        sqlite(&self.path, source)
    }
}

/// Creates the file with mode 0600 if it does not exist; returns whether it is new (or empty).
fn create_private(path: &Path, shown: &str) -> Result<bool, LedgerError> {
    let io = |source| LedgerError::Io {
        path: shown.to_string(),
        source,
    };
    match std::fs::metadata(path) {
        Ok(meta) => Ok(meta.len() == 0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Created here, not by SQLite, so the phone numbers inside are private from the start.
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            Ok(true)
        }
        Err(e) => Err(io(e)),
    }
}

/// `insert_new` takes new rows' rowids to be max(rowid) + 1 onwards, which SQLite documents for as
/// long as the largest rowid is below i64::MAX: only a row inserted by hand nears it.
fn check_rowid_headroom(conn: &Connection, shown: &str) -> Result<(), LedgerError> {
    let top: Option<i64> = conn
        .query_row("SELECT max(rowid) FROM users", [], |r| r.get(0))
        .map_err(|source| sqlite(shown, source))?;
    if top.is_some_and(|top| top > i64::MAX / 2) {
        return Err(LedgerError::Io {
            path: shown.to_string(),
            source: std::io::Error::other(
                "its users table holds a rowid near the largest possible (a row inserted by hand?); export it and start a new ledger",
            ),
        });
    }
    Ok(())
}

fn sqlite(path: &str, source: rusqlite::Error) -> LedgerError {
    LedgerError::Sqlite {
        path: path.to_string(),
        source,
    }
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
    let known = schema::MIGRATIONS.len() as i64;
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    impl Ledger {
        /// One id's entry.
        pub(crate) fn lookup(
            &mut self,
            service_id: &str,
            id: &str,
        ) -> Result<Option<Entry>, LedgerError> {
            Ok(self.lookup_chunk(service_id, &[id])?.pop().flatten())
        }
    }

    /// A new ledger in a temporary directory (which lives as long as it).
    pub(crate) fn ledger() -> (tempfile::TempDir, Ledger) {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = Ledger::open_for_import(&dir.path().join("l.db")).expect("open");
        (dir, l)
    }

    /// A change for `id` with a fixed phone.
    pub(crate) fn write(id: &str, status: Status, user_id: Option<&str>) -> Change {
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
        schema::migrations()
            .validate()
            .expect("migrations are valid");
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
            .execute_batch(
                "DROP INDEX users_unresolved; DROP INDEX users_key; DROP TABLE fixes; DROP TABLE deletions;
                 ALTER TABLE runs DROP COLUMN unresolved; ALTER TABLE runs DROP COLUMN deleted;
                 PRAGMA user_version = 2;",
            )
            .expect("downgrade to schema 2");
        drop(l);
        let path = dir.path().join("l.db");
        let mut old = Ledger::open_read_only(&path).expect("schema 2 is readable");
        assert!(
            old.unresolved("s", 0, usize::MAX)
                .expect("unresolved")
                .is_empty()
        );
        assert_eq!(
            old.history_counts("s").expect("history"),
            HistoryCounts::default()
        );
        assert!(old.runs(None, 5).expect("runs").is_empty());
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
        assert_eq!((version, indexed), (schema::MIGRATIONS.len() as i64, 1));
    }
}
