//! What the user reads: the per-row [`Outcome`] vocabulary shared by import, ledger and report, and
//! the views built on it. It decides nothing about what to send.
//!
//! - `summary.rs`: the end of a run (a short table on stderr, or one JSON object on stdout).
//! - `rows.rs`: the per-row report of `import --report`.
//! - `status.rs` and `export.rs`: the ledger's views.
//! - `progress.rs`: the bar or the progress lines while a run goes.
//! - `metrics.rs`: `--metrics-file`, for monitoring.

mod export;
mod metrics;
pub mod progress;
mod rows;
mod status;
mod summary;

use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;

use crate::ledger::RunCounts;

pub use export::{EXPORT_HEADER, HISTORY_HEADER, export, export_history};
pub use metrics::{RunEnd, write_metrics};
pub use rows::{ROW_REPORT_HEADER, RowReport};
pub use status::status;
pub use summary::Summary;

/// What happened to one row of the input: the vocabulary shared by import, ledger and report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Already final in the ledger with the same phone; not sent.
    Skipped,
    /// Created (any 2xx).
    Synced,
    /// Already existed (409).
    Present,
    /// Refused permanently (400/422, other 4xx).
    Failed,
    /// Rejected locally; never sent.
    Invalid,
    /// A transient failure outlasted the attempts, or the run stopped first; the next run retries.
    Retry,
    /// The id appeared earlier in this file.
    Duplicate,
    /// Synced or present before with another phone; not sent (the API has no update).
    Changed,
    /// Held back by `--limit`; the next run sends it.
    Pending,
    /// Deleted and created again with the new phone (`--apply-changes`).
    Replaced,
    /// Present, but its UserID could not be found in the user list; the next run looks again.
    Unresolved,
    /// Not in the file: `--prune` would delete it (a plan), or could not (the reason says why).
    Delete,
    /// Not in the file: deleted at Verigator by `--prune`.
    Deleted,
    /// A plan's row that would be sent, reported for its phone warning.
    Planned,
}

impl Outcome {
    /// Adds one row with this outcome to the counts.
    pub fn count(self, counts: &mut RunCounts) {
        let slot = match self {
            Outcome::Skipped => &mut counts.skipped,
            Outcome::Synced => &mut counts.synced,
            Outcome::Present => &mut counts.present,
            Outcome::Failed => &mut counts.failed,
            Outcome::Invalid => &mut counts.invalid,
            Outcome::Retry => &mut counts.retry,
            Outcome::Duplicate => &mut counts.duplicate,
            Outcome::Changed => &mut counts.changed,
            Outcome::Pending => &mut counts.pending,
            Outcome::Replaced => &mut counts.replaced,
            Outcome::Unresolved => &mut counts.unresolved,
            Outcome::Deleted => &mut counts.deleted,
            // Only a plan counts what it would delete, and it says so itself; a plan's rows to
            // send are counted as sent.
            Outcome::Delete | Outcome::Planned => return,
        };
        *slot += 1;
    }

    /// The name used in reports and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Skipped => "skipped",
            Outcome::Synced => "synced",
            Outcome::Present => "present",
            Outcome::Failed => "failed",
            Outcome::Invalid => "invalid",
            Outcome::Retry => "retry",
            Outcome::Duplicate => "duplicate",
            Outcome::Changed => "changed",
            Outcome::Pending => "pending",
            Outcome::Replaced => "replaced",
            Outcome::Unresolved => "unresolved",
            Outcome::Delete => "delete",
            Outcome::Deleted => "deleted",
            Outcome::Planned => "planned",
        }
    }
}

/// Writes a file the way every report and export is written: to a private (0600) temporary file
/// beside `path`, renamed into place at the end, so a failure never leaves half a file and a
/// symlink at `path` is replaced, never followed.
pub fn write_file<E: From<io::Error>>(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<(), E>,
) -> Result<(), E> {
    let mut file = Pending::create(path)?;
    write(file.writer())?;
    file.persist()?;
    Ok(())
}

/// A file being written as [`write_file`] writes one, for a writer that streams into it over a
/// longer time: it appears at its path only when persisted, and vanishes if dropped before.
pub struct Pending {
    path: std::path::PathBuf,
    out: io::BufWriter<tempfile::NamedTempFile>,
}

impl Pending {
    /// Creates the private temporary file beside `path` (refused as [`check_target`] says).
    pub fn create(path: &Path) -> io::Result<Pending> {
        check_target(path)?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = tempfile::NamedTempFile::new_in(dir)?;
        Ok(Pending {
            path: path.to_owned(),
            out: io::BufWriter::new(tmp),
        })
    }

    /// Where to write.
    pub fn writer(&mut self) -> &mut dyn Write {
        &mut self.out
    }

    /// Sets the file's mode (it is created 0600).
    pub fn set_mode(&self, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        self.out
            .get_ref()
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
    }

    /// Flushes the file and renames it into place.
    pub fn persist(self) -> io::Result<()> {
        let tmp = self
            .out
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        tmp.persist(&self.path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Refuses an output path that is not a regular file (a directory, a device such as `/dev/null`,
/// a FIFO, a symlink to one) or whose directory does not exist: renaming a file over it would
/// replace it, or fail only at the end. A symlink to a file is fine: it is replaced, not followed.
/// Called before anything is written or sent.
pub fn check_target(path: &Path) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(io::Error::other("its directory does not exist"));
    }
    match std::fs::symlink_metadata(path) {
        // A symlink to a device or a directory (`/dev/stdout`) names that thing, not a file:
        // replacing the link would damage the system. A dangling one is replaced.
        Ok(meta) if meta.file_type().is_symlink() => match std::fs::metadata(path) {
            Ok(target) if !target.is_file() => Err(io::Error::other(
                "is a symlink to something that is not a regular file (a device or a directory?)",
            )),
            _ => Ok(()),
        },
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(meta) if meta.is_dir() => Err(io::Error::other("is a directory; name a file")),
        Ok(_) => Err(io::Error::other(
            "is not a regular file (a device or a FIFO?)",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// A cell for a CSV a person opens in a spreadsheet (`--report`, `reconcile --report`): one that
/// a spreadsheet would run as a formula (first character `=`, `+`, `-`, `@`, tab or CR) gets a
/// leading `'`, except an E.164 phone number. A cell that already starts with `'` gets one too, so
/// that `import` can take exactly one quote off any cell of a report and lose nothing.
pub fn spreadsheet_safe(cell: &str) -> std::borrow::Cow<'_, str> {
    let is_phone = cell
        .strip_prefix('+')
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r' | '\'') if !is_phone => {
            std::borrow::Cow::Owned(format!("'{cell}"))
        }
        _ => std::borrow::Cow::Borrowed(cell),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_quoted_and_phones_are_not() {
        for (cell, safe) in [
            ("=HYPERLINK(\"x\")", "'=HYPERLINK(\"x\")"),
            ("+1 (555) 0100", "'+1 (555) 0100"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("'quoted", "''quoted"),
            ("+37255555555", "+37255555555"),
            ("alice@example.com", "alice@example.com"),
            ("", ""),
        ] {
            assert_eq!(spreadsheet_safe(cell), safe, "{cell:?}");
        }
    }
}
