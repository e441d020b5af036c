//! `export`: the ledger's users as CSV (the header is a contract for the user's own scripts) or as
//! one JSON object per line.

use std::io::{self, Write};

use crate::cli::ExportFormat;
use crate::ledger::{ExportError, HistoryRow, Ledger, Status, UserRow};

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
    write_rows(
        format,
        w,
        EXPORT_HEADER,
        |each| ledger.for_each_user(service_id, statuses, each),
        |row: &UserRow| {
            [
                row.service_id.as_str(),
                &row.id_in_service,
                &row.phone_number,
                row.user_id.as_deref().unwrap_or(""),
                row.status.as_str(),
                row.ctime.as_deref().unwrap_or(""),
                &row.updated_at,
                row.last_error.as_deref().unwrap_or(""),
            ]
        },
    )
}

/// The header `export --history` writes.
pub const HISTORY_HEADER: [&str; 8] = [
    "service_id",
    "id_in_service",
    "kind",
    "old_user_id",
    "new_user_id",
    "old_phone",
    "new_phone",
    "at",
];

/// Writes the history (replacements and reconcile's fixes) as CSV (with [`HISTORY_HEADER`]) or as
/// one JSON object per line.
pub fn export_history(
    ledger: &Ledger,
    service_id: Option<&str>,
    format: ExportFormat,
    w: impl Write,
) -> Result<(), ExportError> {
    write_rows(
        format,
        w,
        HISTORY_HEADER,
        |each| ledger.for_each_history(service_id, each),
        |row: &HistoryRow| {
            [
                row.service_id.as_str(),
                &row.id_in_service,
                &row.kind,
                row.old_user_id.as_deref().unwrap_or(""),
                row.new_user_id.as_deref().unwrap_or(""),
                row.old_phone.as_deref().unwrap_or(""),
                row.new_phone.as_deref().unwrap_or(""),
                &row.at,
            ]
        },
    )
}

/// The one writer of both exports: `rows` walks the ledger and hands each row to the closure it
/// is given; as CSV, `cells` turns a row into the header's columns; as NDJSON, a row is one object.
fn write_rows<R: serde::Serialize>(
    format: ExportFormat,
    w: impl Write,
    header: [&str; 8],
    rows: impl FnOnce(&mut dyn FnMut(&R) -> io::Result<()>) -> Result<(), ExportError>,
    cells: impl for<'r> Fn(&'r R) -> [&'r str; 8],
) -> Result<(), ExportError> {
    match format {
        ExportFormat::Csv => {
            let mut out = csv::Writer::from_writer(w);
            out.write_record(header)
                .map_err(|e| ExportError::Write(csv_io(e)))?;
            rows(&mut |row| out.write_record(cells(row)).map_err(csv_io))?;
            out.flush().map_err(ExportError::Write)
        }
        ExportFormat::Ndjson => {
            let mut out = io::BufWriter::new(w);
            rows(&mut |row| {
                serde_json::to_writer(&mut out, row)?;
                out.write_all(b"\n")
            })?;
            out.flush().map_err(ExportError::Write)
        }
    }
}

/// The I/O error inside a csv writer's error, so that a closed pipe is seen as one (csv's own
/// conversion wraps it where the error chain cannot reach it).
fn csv_io(e: csv::Error) -> io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => io::Error::other(format!("{other:?}")),
    }
}
