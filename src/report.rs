//! What the user reads after the fact: the per-row [`Outcome`] vocabulary, the run summary (a short
//! table on stderr or one JSON object on stdout), and the `status` and `export` views of the ledger.
//! It decides nothing about what to send.

use std::io::{self, Write};
use std::time::Duration;

use serde::Serialize;

use crate::cli::ExportFormat;
use crate::exit;
use crate::ledger::{ExportError, Ledger, LedgerError, RunCounts, Status};

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
        }
    }
}

/// The per-row report of `import --report`: every row that did not end synced, present or
/// skipped, as CSV that can be fixed and fed back in (its columns are the importer's defaults).
/// Written to a temporary file beside the target and renamed at the end.
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
pub const ROW_REPORT_HEADER: [&str; 5] =
    ["line", "id_in_service", "phone_number", "outcome", "reason"];

impl RowReport {
    /// Starts a report that will be written to `path`.
    pub fn create(path: &std::path::Path) -> io::Result<RowReport> {
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

    /// Adds one row.
    pub fn write(
        &mut self,
        line: u64,
        id_in_service: &str,
        phone_number: &str,
        outcome: Outcome,
        reason: &str,
    ) -> io::Result<()> {
        self.writer.write_record([
            &line.to_string(),
            id_in_service,
            phone_number,
            outcome.as_str(),
            reason,
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

/// The end of a run.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The run's id in the ledger (`None` for a dry run).
    pub run_id: Option<i64>,
    /// A plan only: nothing was sent or written.
    pub dry_run: bool,
    /// The input's name.
    pub input: String,
    /// The ServiceID.
    pub service_id: String,
    /// The counts.
    pub counts: RunCounts,
    /// Rows whose state is not synced or present with the phone of the file.
    pub unsettled: u64,
    /// Present rows whose UserID is still unknown after this run.
    pub unresolved: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Why the run stopped early, if it did.
    pub aborted: Option<String>,
}

impl Summary {
    /// The exit code this run ends with; the only place that decides it for imports.
    pub fn exit_code(&self) -> u8 {
        if self.aborted.is_some() {
            exit::ABORTED
        } else if self.unsettled > 0 {
            exit::INCOMPLETE
        } else {
            exit::OK
        }
    }

    /// The one JSON object `--json` prints.
    pub fn to_json(&self) -> serde_json::Value {
        let c = &self.counts;
        serde_json::json!({
            "run_id": self.run_id,
            "rows": c.rows,
            "skipped": c.skipped,
            "sent": c.sent,
            "synced": c.synced,
            "present": c.present,
            "failed": c.failed,
            "invalid": c.invalid,
            "retry": c.retry,
            "duplicate": c.duplicate,
            "changed": c.changed,
            "resolved": c.resolved,
            "pending": c.pending,
            "replaced": c.replaced,
            "elapsed_s": (self.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            "exit_code": self.exit_code(),
        })
    }

    /// The short table for stderr.
    pub fn write_text(&self, w: &mut impl Write) -> io::Result<()> {
        let c = &self.counts;
        let title = match self.run_id {
            Some(id) if !self.dry_run => format!("run {id}"),
            _ => "plan (dry run: nothing sent, nothing written)".to_string(),
        };
        writeln!(
            w,
            "\n{title} · {} → service {} · {:.1} s",
            self.input,
            self.service_id,
            self.elapsed.as_secs_f64()
        )?;
        let rate = if self.elapsed.as_secs_f64() > 0.0 {
            c.sent as f64 / self.elapsed.as_secs_f64()
        } else {
            0.0
        };
        let sent_note = if self.dry_run {
            "would be sent".to_string()
        } else {
            format!("{rate:.1}/s")
        };
        let lines: [(&str, u64, String); 13] = [
            ("rows", c.rows, String::new()),
            ("skipped", c.skipped, "already in the ledger".into()),
            ("sent", c.sent, sent_note),
            ("synced", c.synced, "created, UserID recorded".into()),
            ("present", c.present, "existed already (409)".into()),
            (
                "resolved",
                c.resolved,
                "UserIDs found in the user list".into(),
            ),
            ("failed", c.failed, "refused by the API; not resent".into()),
            ("invalid", c.invalid, "rejected locally; never sent".into()),
            (
                "retry",
                c.retry,
                "transient failure; the next run resends".into(),
            ),
            ("duplicate", c.duplicate, "id repeated in this file".into()),
            (
                "changed",
                c.changed,
                "phone differs from the ledger; not sent".into(),
            ),
            (
                "replaced",
                c.replaced,
                "deleted and created again with the new phone".into(),
            ),
            (
                "pending",
                c.pending,
                "held back by --limit; the next run sends them".into(),
            ),
        ];
        for (name, n, note) in lines {
            let always = if self.dry_run {
                ["rows", "sent", "skipped"]
            } else {
                ["rows", "sent", "synced"]
            };
            if n == 0 && !always.contains(&name) {
                continue;
            }
            writeln!(w, "{}", format!("  {name:<10}{n:>10}  {note}").trim_end())?;
        }
        if self.unresolved > 0 {
            writeln!(
                w,
                "  {} present rows still lack a UserID; the next run looks them up again",
                self.unresolved
            )?;
        }
        match (&self.aborted, self.exit_code()) {
            (Some(why), code) => writeln!(w, "exit {code}: aborted: {why}"),
            (None, exit::OK) if self.dry_run => writeln!(
                w,
                "exit 0: every row can be sent or is in the ledger already"
            ),
            (None, code) if self.dry_run => writeln!(
                w,
                "exit {code}: {} rows would not end synced or present (see --report)",
                self.unsettled
            ),
            (None, exit::OK) => writeln!(w, "exit 0: every row is synced or present"),
            (None, code) => writeln!(
                w,
                "exit {code}: {} rows are not synced or present (the warnings say why; --report writes them to a file)",
                self.unsettled
            ),
        }
    }
}

/// `status` as one JSON object.
#[derive(Debug, Serialize)]
struct StatusView {
    ledger: String,
    services: Vec<crate::ledger::ServiceCounts>,
    runs: Vec<crate::ledger::RunRecord>,
}

/// Prints counts per service and status, and the last runs.
pub fn status(
    ledger: &Ledger,
    service_id: Option<&str>,
    json: bool,
    w: &mut impl Write,
) -> Result<(), LedgerError> {
    let view = StatusView {
        ledger: ledger.path().to_string(),
        services: ledger.counts(service_id)?,
        runs: ledger.runs(service_id, 10)?,
    };
    let io = |source| LedgerError::Io {
        path: "<stdout>".into(),
        source,
    };
    if json {
        serde_json::to_writer(&mut *w, &view).map_err(|e| io(e.into()))?;
        writeln!(w).map_err(io)?;
        return Ok(());
    }
    write_status(&view, w).map_err(io)
}

fn write_status(view: &StatusView, w: &mut impl Write) -> io::Result<()> {
    writeln!(w, "ledger {}", view.ledger)?;
    if view.services.is_empty() {
        writeln!(w, "  no users recorded yet")?;
    }
    for s in &view.services {
        writeln!(w, "service {}", s.service_id)?;
        writeln!(
            w,
            "  synced {:>9}   present {:>9} ({} without UserID)   failed {:>7}   retry {:>7}",
            s.synced, s.present, s.present_without_user_id, s.failed, s.retry
        )?;
    }
    if !view.runs.is_empty() {
        writeln!(w, "last runs:")?;
        writeln!(
            w,
            "  {:>4}  {:<24}  {:>9}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>4}  input",
            "run", "started", "duration", "rows", "sent", "synced", "present", "failed", "exit"
        )?;
    }
    for r in &view.runs {
        let exit = r.exit_code.map_or("-".to_string(), |c| c.to_string());
        writeln!(
            w,
            "  {:>4}  {:<24}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>4}  {}",
            r.id,
            r.started_at,
            r.counts.rows,
            r.counts.sent,
            r.counts.synced,
            r.counts.present,
            r.counts.failed,
            exit,
            r.input
        )?;
    }
    Ok(())
}

/// The header `export` writes: API for the user's own import scripts.
pub const EXPORT_HEADER: [&str; 8] = [
    "service_id",
    "id_in_service",
    "phone_number",
    "user_id",
    "status",
    "ctime",
    "updated_at",
    "last_error",
];

/// Writes the ledger's users as CSV (with [`EXPORT_HEADER`]) or as one JSON object per line.
pub fn export(
    ledger: &Ledger,
    service_id: Option<&str>,
    statuses: &[Status],
    format: ExportFormat,
    w: impl Write,
) -> Result<(), ExportError> {
    match format {
        ExportFormat::Csv => {
            let mut out = csv::Writer::from_writer(w);
            out.write_record(EXPORT_HEADER)
                .map_err(|e| ExportError::Write(e.into()))?;
            ledger.for_each_user(service_id, statuses, |row| {
                out.write_record([
                    row.service_id.as_str(),
                    &row.id_in_service,
                    &row.phone_number,
                    row.user_id.as_deref().unwrap_or(""),
                    row.status.as_str(),
                    row.ctime.as_deref().unwrap_or(""),
                    &row.updated_at,
                    row.last_error.as_deref().unwrap_or(""),
                ])
                .map_err(io::Error::from)
            })?;
            out.flush().map_err(ExportError::Write)
        }
        ExportFormat::Ndjson => {
            let mut out = io::BufWriter::new(w);
            ledger.for_each_user(service_id, statuses, |row| {
                serde_json::to_writer(&mut out, row)?;
                out.write_all(b"\n")
            })?;
            out.flush().map_err(ExportError::Write)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(counts: RunCounts, unsettled: u64, aborted: Option<String>) -> Summary {
        Summary {
            run_id: Some(1),
            dry_run: false,
            input: "in.csv".into(),
            service_id: "s".into(),
            counts,
            unsettled,
            unresolved: 0,
            elapsed: Duration::from_millis(1500),
            aborted,
        }
    }

    #[test]
    fn exit_codes_follow_the_outcomes() {
        assert_eq!(summary(RunCounts::default(), 0, None).exit_code(), 0);
        assert_eq!(summary(RunCounts::default(), 2, None).exit_code(), 1);
        assert_eq!(
            summary(RunCounts::default(), 0, Some("signal".into())).exit_code(),
            3
        );
    }

    #[test]
    fn json_has_exactly_the_documented_keys() {
        let v = summary(
            RunCounts {
                rows: 3,
                synced: 3,
                sent: 3,
                ..RunCounts::default()
            },
            0,
            None,
        )
        .to_json();
        let mut keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let mut want = vec![
            "run_id",
            "rows",
            "skipped",
            "sent",
            "synced",
            "present",
            "failed",
            "invalid",
            "retry",
            "duplicate",
            "changed",
            "resolved",
            "pending",
            "replaced",
            "elapsed_s",
            "exit_code",
        ];
        want.sort_unstable();
        assert_eq!(keys, want);
        assert_eq!(v["elapsed_s"], 1.5);
    }

    #[test]
    fn text_summary_is_short_and_names_the_exit() {
        let mut out = Vec::new();
        summary(
            RunCounts {
                rows: 3,
                sent: 3,
                synced: 2,
                failed: 1,
                ..RunCounts::default()
            },
            1,
            None,
        )
        .write_text(&mut out)
        .expect("write");
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.contains("failed             1"), "{text}");
        assert!(
            !text.contains("duplicate"),
            "zero lines are left out: {text}"
        );
        assert!(
            text.trim_end()
                .ends_with("(the warnings say why; --report writes them to a file)"),
            "{text}"
        );
    }
}
