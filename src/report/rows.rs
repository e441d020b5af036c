//! The per-row report of `import --report`: every row that did not end synced, present or
//! skipped, as CSV that can be fixed and fed back in, and the users `--prune` deleted or would
//! delete (no line: they are not in the file; `import` passes over them). Written beside the target and renamed at the
//! end, so a report is never half a file.

use std::io;

use super::{Outcome, spreadsheet_safe};

/// The report being written (its columns are the importer's defaults).
pub struct RowReport {
    path: std::path::PathBuf,
    writer: csv::Writer<tempfile::NamedTempFile>,
}

impl std::fmt::Debug for RowReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowReport")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The header of the per-row report.
pub const ROW_REPORT_HEADER: [&str; 6] = [
    "line",
    "id_in_service",
    "phone_number",
    "outcome",
    "reason",
    "phone_e164",
];

impl RowReport {
    /// Starts a report that will be written to `path`.
    /// A path that cannot take the report (a directory, a file that cannot be written) is refused
    /// here, before the first request.
    pub fn create(path: &std::path::Path) -> io::Result<RowReport> {
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => {
                return Err(io::Error::other(
                    "is a directory; name a file for the report",
                ));
            }
            // Opened without truncating: the old report stays until the new one replaces it.
            Ok(meta) if meta.is_file() => {
                drop(std::fs::OpenOptions::new().append(true).open(path)?);
            }
            Ok(_) => return Err(io::Error::other("is not a regular file")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let mut writer = csv::Writer::from_writer(tempfile::NamedTempFile::new_in(dir)?);
        writer.write_record(ROW_REPORT_HEADER)?;
        Ok(RowReport {
            path: path.to_path_buf(),
            writer,
        })
    }

    /// Adds one row; `line` is `None` for a user not in the file (`--prune`).
    pub fn write(
        &mut self,
        line: Option<u64>,
        id_in_service: &str,
        (phone_number, e164): (&str, &str),
        outcome: Outcome,
        reason: &str,
    ) -> io::Result<()> {
        self.writer.write_record([
            line.map(|l| l.to_string()).unwrap_or_default().as_str(),
            &spreadsheet_safe(id_in_service),
            &spreadsheet_safe(phone_number),
            outcome.as_str(),
            &spreadsheet_safe(reason),
            e164,
        ])?;
        Ok(())
    }

    /// Flushes and moves the report into place.
    pub fn finish(self) -> io::Result<()> {
        let file = self.writer.into_inner().map_err(|e| e.into_error())?;
        file.persist(&self.path).map_err(|e| e.error)?;
        Ok(())
    }
}
