//! `status`: counts per service and status, and the last runs, as a table or one JSON object.

use std::io::{self, Write};

use serde::Serialize;

use crate::ledger::{Ledger, LedgerError};
use crate::user::Escaped;

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
    writeln!(w, "ledger {}", Escaped(&view.ledger))?;
    if view.services.is_empty() {
        writeln!(w, "  no users recorded yet")?;
    }
    for s in &view.services {
        writeln!(w, "service {}", Escaped(&s.service_id))?;
        writeln!(
            w,
            "  synced {:>9}   present {:>9} ({} without UserID)   failed {:>7}   retry {:>7}   deleted {:>7}",
            s.synced, s.present, s.present_without_user_id, s.failed, s.retry, s.deleted
        )?;
        if s.replaced > 0 || s.fixed > 0 || s.deleted > 0 {
            writeln!(
                w,
                "  history: {} replaced (--apply-changes), {} fixed (reconcile --fix), {} deleted (--prune); export --history lists the UserIDs they took away",
                s.replaced, s.fixed, s.deleted
            )?;
        }
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
        let duration = r.duration_s.map_or("-".to_string(), |s| format!("{s:.1}s"));
        writeln!(
            w,
            "  {:>4}  {:<24}  {:>9}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>4}  {}",
            r.id,
            Escaped(&r.started_at),
            duration,
            r.counts.rows,
            r.counts.sent,
            r.counts.synced,
            r.counts.present,
            r.counts.failed,
            exit,
            Escaped(&r.input)
        )?;
    }
    Ok(())
}
