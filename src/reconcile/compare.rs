//! The comparison itself: the ledger's rows of the service (read a chunk at a time) and the user
//! list's ids (merged back from the spill) walked side by side, both in byte order of the id, as
//! a merge join. Each disagreement is counted, written to the report and, with `--fix`, fixed as
//! it is met; nothing is held but the current chunk of rows and the current id.

use std::io::Write;

use super::findings::{Disagreement, Findings, Kind, Report};
use super::{ReconcileError, apply};
use crate::config::ReconcileConfig;
use crate::ledger::{Ledger, Status};
use crate::listing::{Groups, Sightings, Verdict};
use crate::signals::Signals;

/// Ledger rows read at a time.
const CHUNK_ROWS: usize = 1000;

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
    /// Walks the ledger beside `groups`; stops early after a signal (fixes made are kept, to be
    /// committed by the caller).
    pub(super) fn run(mut self, mut groups: Groups<'_>) -> Result<(), ReconcileError> {
        let mut rows = Chunks::default();
        let mut group = groups.next_id().map_err(ReconcileError::Spill)?;
        loop {
            // Nothing here awaits: the signal handler's own flag says whether to stop.
            if self.signals.raised() {
                break;
            }
            let row = rows.peek(self.ledger, &self.config.service_id)?;
            let order = match (row, &group) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(row), Some((id, _))) => row.0.as_str().cmp(id),
            };
            match (order, &group) {
                (std::cmp::Ordering::Less, _) => {
                    let row = rows.take();
                    self.both(row, None)?;
                }
                (std::cmp::Ordering::Greater, Some((id, sightings))) => {
                    self.only_at_verigator(id, sightings)?;
                    group = groups.next_id().map_err(ReconcileError::Spill)?;
                }
                (_, Some((_, sightings))) => {
                    let row = rows.take();
                    self.both(row, Some(sightings))?;
                    group = groups.next_id().map_err(ReconcileError::Spill)?;
                }
                (_, None) => break,
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

/// The ledger's rows of the service, a chunk at a time, in id order.
#[derive(Default)]
struct Chunks {
    /// The current chunk, reversed (the next row last).
    rows: Vec<Row>,
    /// The last id read: the next chunk starts after it.
    after: Option<String>,
    /// The last chunk came short: there are no more rows.
    done: bool,
}

impl Chunks {
    /// The next row, reading a chunk when the current one is used up.
    fn peek(&mut self, ledger: &Ledger, service_id: &str) -> Result<Option<&Row>, ReconcileError> {
        if self.rows.is_empty() && !self.done {
            let mut chunk = ledger.rows_after(service_id, self.after.as_deref(), CHUNK_ROWS)?;
            self.done = chunk.len() < CHUNK_ROWS;
            self.after = chunk.last().map(|row| row.0.clone());
            chunk.reverse();
            self.rows = chunk;
        }
        Ok(self.rows.last())
    }

    fn take(&mut self) -> Option<Row> {
        self.rows.pop()
    }
}
