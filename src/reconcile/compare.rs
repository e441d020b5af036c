//! The comparison itself: the ledger's rows of the service and the user list's ids, each spilled
//! sorted by id, walked side by side as a merge join. Each disagreement is counted, written to
//! the report and, with `--fix`, fixed as it is met; nothing is held but the current row and the
//! current id. Also how a ledger row is spilled.

use std::io::Write;
use std::ops::ControlFlow;

use super::findings::{Disagreement, Findings, Kind, Report};
use super::{ReconcileError, apply};
use crate::config::ReconcileConfig;
use crate::ledger::{Ledger, Status};
use crate::listing::{Groups, Records, Sightings, Spill, Verdict};
use crate::signals::Signals;

/// One ledger row: `(id_in_service, status, user_id)`.
type Row = (String, Status, Option<String>);

/// Everything the walk reads and writes.
pub(super) struct Walk<'a, W: Write> {
    /// The ledger: read a chunk at a time, and fixed.
    pub ledger: &'a mut Ledger,
    /// The service and the options.
    pub config: &'a ReconcileConfig,
    /// The counts.
    pub findings: &'a mut Findings,
    /// `--report`, if asked for.
    pub report: Option<Report<W>>,
    /// Whether to fix what disagrees.
    pub fix: bool,
    /// Whether a signal came.
    pub signals: &'a Signals,
}

impl<W: Write> Walk<'_, W> {
    /// Walks the ledger's rows beside the list's `groups`; stops early after a signal (fixes
    /// made are kept, to be committed by the caller).
    pub(super) fn run(
        mut self,
        mut rows: Records<'_>,
        mut groups: Groups<'_>,
    ) -> Result<(), ReconcileError> {
        let mut row = next_row(&mut rows)?;
        let mut group = groups.next_id().map_err(ReconcileError::Spill)?;
        // Nothing here awaits: the signal handler's own flag says whether to stop.
        while !self.signals.raised() {
            let order = match (&row, &group) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(row), Some((id, _))) => row.0.as_str().cmp(id),
            };
            match (order, &group) {
                (std::cmp::Ordering::Less, _) | (_, None) => self.both(row.take(), None)?,
                (std::cmp::Ordering::Greater, Some((id, sightings))) => {
                    self.only_at_verigator(id, sightings)?;
                }
                (std::cmp::Ordering::Equal, Some((_, sightings))) => {
                    self.both(row.take(), Some(sightings))?;
                }
            }
            if row.is_none() {
                row = next_row(&mut rows)?;
            }
            if order != std::cmp::Ordering::Less {
                group = groups.next_id().map_err(ReconcileError::Spill)?;
            }
        }
        if let Some(report) = &mut self.report {
            report.flush().map_err(ReconcileError::Report)?;
        }
        Ok(())
    }

    /// A ledger row, and what the list says about its id (`None`: nothing).
    fn both(
        &mut self,
        row: Option<Row>,
        sightings: Option<&Sightings>,
    ) -> Result<(), ReconcileError> {
        let Some((id, status, ledger_uid)) = row else {
            return Ok(());
        };
        let remote_uid = match sightings.and_then(Sightings::verdict) {
            None => None,
            Some(Verdict::One { user_id, .. }) => Some(user_id),
            // Listed with a malformed UserID, or several: not compared, nothing taken.
            Some(_) => {
                self.findings.doubtful += 1;
                return Ok(());
            }
        };
        let Some(kind) = self
            .findings
            .classify(status, ledger_uid.as_deref(), remote_uid)
        else {
            return Ok(());
        };
        self.found(Disagreement {
            kind,
            id_in_service: id,
            ledger_status: Some(status),
            ledger_user_id: ledger_uid,
            verigator_user_id: remote_uid.map(str::to_string),
        })
    }

    /// An id the ledger does not know (nothing to fix: its phone is unknown). One listed with a
    /// malformed UserID or several is left out, as it is never taken.
    fn only_at_verigator(&mut self, id: &str, sightings: &Sightings) -> Result<(), ReconcileError> {
        let Some(Verdict::One { user_id, .. }) = sightings.verdict() else {
            return Ok(());
        };
        self.found(Disagreement {
            kind: Kind::AtVerigatorOnly,
            id_in_service: id.to_string(),
            ledger_status: None,
            ledger_user_id: None,
            verigator_user_id: Some(user_id.to_string()),
        })
    }

    /// Counts, fixes (when asked) and reports one disagreement.
    fn found(&mut self, d: Disagreement) -> Result<(), ReconcileError> {
        self.findings.count(d.kind);
        if self.fix && d.kind != Kind::AtVerigatorOnly {
            apply(
                self.ledger,
                self.config,
                d.kind,
                &d.id_in_service,
                d.verigator_user_id.as_deref(),
            )?;
            self.findings.fixed += 1;
        }
        if let Some(report) = &mut self.report {
            report.write(&d).map_err(ReconcileError::Report)?;
        }
        Ok(())
    }
}

/// Spills the ledger's rows of the service by id; returns how many there are, and how many of
/// them hold a UserID.
pub(super) fn spill_ledger(
    ledger: &Ledger,
    service_id: &str,
    spill: &mut Spill,
) -> Result<(u64, u64), ReconcileError> {
    let (mut rows, mut with_user_id) = (0, 0);
    let mut failed = None;
    let mut value = Vec::new();
    ledger.for_each_known(service_id, |id, status, user_id| {
        rows += 1;
        with_user_id += u64::from(user_id.is_some());
        value.clear();
        value.push(status_code(status));
        if let Some(uid) = user_id {
            value.push(b'+');
            value.extend_from_slice(uid.as_bytes());
        }
        match spill.push(id, &value) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failed = Some(e);
                ControlFlow::Break(())
            }
        }
    })?;
    match failed {
        Some(e) => Err(ReconcileError::Spill(e)),
        None => Ok((rows, with_user_id)),
    }
}

/// The next spilled ledger row.
fn next_row(rows: &mut Records<'_>) -> Result<Option<Row>, ReconcileError> {
    let Some((id, value)) = rows.next_record().map_err(ReconcileError::Spill)? else {
        return Ok(None);
    };
    let (status, user_id) = match value {
        [code, b'+', uid @ ..] => (*code, Some(uid)),
        [code] => (*code, None),
        _ => (0, None),
    };
    let user_id = match user_id.map(std::str::from_utf8).transpose() {
        Ok(user_id) => user_id.map(str::to_string),
        Err(e) => return Err(ReconcileError::Spill(std::io::Error::other(e))),
    };
    Ok(Some((id.to_string(), status_of(status), user_id)))
}

/// A status as one byte of a spilled row.
fn status_code(status: Status) -> u8 {
    match status {
        Status::Synced => b's',
        Status::Present => b'p',
        Status::Failed => b'f',
        Status::Retry => b'r',
        Status::Deleted => b'd',
    }
}

fn status_of(code: u8) -> Status {
    match code {
        b's' => Status::Synced,
        b'p' => Status::Present,
        b'f' => Status::Failed,
        b'd' => Status::Deleted,
        _ => Status::Retry,
    }
}
