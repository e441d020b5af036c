//! The end of a run: the UserIDs of `present` rows filled in from one user list (`resolve.rs`),
//! the summary, the run's record in the ledger and the report moved into place; or, for a run that
//! failed part-way, as much of that as can still be saved.

mod resolve;

use std::time::Instant;

use super::{ImportError, Run, report_error};
use crate::client::Client;
use crate::input::InputError;
use crate::ledger::{Ledger, LedgerError, Unresolved};
use crate::report::{Outcome, Summary};
use crate::signals::Signals;
use crate::throttle::Stop;

/// Rows resolved per reading of the user list: a few hundred bytes each while the list streams.
const RESOLVE_BATCH: usize = 32_768;

impl Run<'_> {
    /// Ends a run that failed part-way: the report still gets every row noted so far, and the run
    /// is marked aborted if the ledger still takes writes. Once requests were sent the run still
    /// ends with its summary, aborted with `error` as the reason; before, `error` is returned.
    pub(super) fn fail(
        &mut self,
        ledger: Option<Ledger>,
        error: ImportError,
        started: Instant,
    ) -> Result<Summary, ImportError> {
        // The writer's connection may be gone with the failure: a new one may still take this.
        let ledger = ledger.or_else(|| {
            self.run_id
                .and_then(|_| Ledger::open_for_import(&self.config.ledger).ok())
        });
        if let (Some(mut ledger), Some(id)) = (ledger, self.run_id) {
            // Best effort: a ledger that just failed may refuse this too, and `error` says more.
            let _ = ledger.finish_run(id, &self.counts, crate::exit::ABORTED);
        }
        let unsaved = match self.report.take() {
            Some(report) => report.finish().err(),
            None => self.report_failure.take(),
        };
        if let Some(e) = unsaved {
            self.progress
                .println(&format!("warning: the report could not be written: {e}"));
        }
        self.progress.finish();
        if self.launched == 0 {
            return Err(error);
        }
        if matches!(error, ImportError::Recording(_)) && self.unrecorded > 0 {
            // The summary counts them as answered; the ledger does not hold them.
            self.progress.println(&format!(
                "warning: {} answered rows are not in the ledger: the summary counts them, the next run finds their UserIDs again (409 and the user list)",
                self.unrecorded
            ));
        }
        self.abort(error.to_string());
        Ok(self.summary(0, started))
    }

    pub(super) fn abort(&mut self, why: String) {
        self.aborted.get_or_insert(why);
    }

    /// Ends a run whose loop stopped normally (or on bad input): resolves UserIDs, builds the
    /// summary, records the run and saves the report. `closed` is the writer's ledger (`None` on a
    /// dry run, which opens its own to count what is unresolved).
    pub(super) async fn conclude(
        &mut self,
        closed: Option<Ledger>,
        input_error: Option<InputError>,
        client: &Client,
        (stop, signals): (&Stop, &Signals),
        started: Instant,
    ) -> Result<Summary, ImportError> {
        let config = self.config;
        let mut ledger = match closed {
            Some(ledger) => Some(ledger),
            None => Ledger::open_for_plan(&config.ledger)?,
        };
        let input_broke = input_error.is_some();
        let wound = self
            .wind_up(ledger.as_mut(), input_broke, client, (stop, signals))
            .await;
        let unresolved = match wound {
            Ok(unresolved) => unresolved,
            Err(e) if config.mode.dry_run => return self.fail(None, e.into(), started),
            Err(e) => return self.fail(ledger, ImportError::Recording(e), started),
        };
        self.progress.finish();
        let input_error =
            input_error.filter(|e| !self.is_late(format!("the input broke part-way: {e}")));
        let unsaved = self.save_report().filter(|e| {
            let path = config
                .report
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            !self.is_late(format!(
                "the report could not be written: --report {path}: {e}"
            ))
        });
        let summary = self.summary(unresolved, started);
        let code = if input_error.is_some() || unsaved.is_some() {
            crate::exit::USAGE
        } else {
            summary.exit_code()
        };
        if let (Some(ledger), Some(id)) = (&mut ledger, self.run_id)
            && let Err(e) = ledger.finish_run(id, &summary.counts, code)
        {
            return self.fail(None, ImportError::Recording(e), started);
        }
        if let Some(e) = unsaved {
            return Err(report_error(config, e));
        }
        match input_error {
            Some(e) => Err(e.into()),
            None => Ok(summary),
        }
    }

    /// The run's last requests: the UserIDs still unknown, then `--prune`. Returns how many rows
    /// of other inputs still lack a UserID.
    async fn wind_up(
        &mut self,
        mut ledger: Option<&mut Ledger>,
        input_broke: bool,
        client: &Client,
        (stop, signals): (&Stop, &Signals),
    ) -> Result<u64, LedgerError> {
        let unresolved = self
            .finish(ledger.as_deref_mut(), client, (stop, signals))
            .await?;
        self.note_stops(client, signals);
        if let Some(limit) = self.config.mode.prune {
            self.prune(ledger, limit, input_broke, client, (stop, signals))
                .await?;
            self.note_stops(client, signals);
        }
        Ok(unresolved)
    }

    /// An outage or a signal, in any phase (the user list, the last commit, a prune), makes the
    /// run aborted.
    fn note_stops(&mut self, client: &Client, signals: &Signals) {
        if let Some(why) = client.outage() {
            self.abort(why.to_string());
        }
        if signals.count() > 0 {
            self.abort("interrupted by a signal".into());
        }
    }

    /// Whether a failure comes after requests were sent: then it aborts the run (which still ends
    /// with its summary), and `why` says so. Before any request, it is a usage error.
    fn is_late(&mut self, why: String) -> bool {
        if self.launched == 0 {
            return false;
        }
        self.abort(why);
        true
    }

    /// Moves the report into place; returns why it could not be written, if it could not.
    fn save_report(&mut self) -> Option<std::io::Error> {
        match (self.report_failure.take(), self.report.take()) {
            (Some(e), _) => Some(e),
            (None, Some(report)) => report.finish().err(),
            (None, None) => None,
        }
    }

    fn summary(&self, unresolved_elsewhere: u64, started: Instant) -> Summary {
        Summary {
            run_id: self.run_id,
            dry_run: self.config.mode.dry_run,
            input: self.input.clone(),
            service_id: self.config.service_id.clone(),
            counts: self.counts.clone(),
            unsettled: self.unsettled,
            unresolved_elsewhere,
            elapsed: started.elapsed(),
            aborted: self.aborted.clone(),
            prune_refused: self.prune_refused,
            phone_warnings: self.phone_warnings,
            asked_rate: self.config.client.rate,
            not_mobile: self.not_mobile,
            suspect_duplicates: self.planner.suspects() + self.suspects_sent,
            suspects_listed: self.planner.listed_suspects(),
        }
    }

    /// Commits, then fills in the UserIDs of `present` rows (this run's and earlier ones') from the
    /// user list, [`RESOLVE_BATCH`] rows at a time (each batch reads the list again, so that a
    /// run recovering a lost ledger, with every row `present`, holds a batch and not every row).
    /// Rows of this input left without one are noted as `unresolved` (the run is not a success);
    /// returns how many rows of other inputs still lack one.
    async fn finish(
        &mut self,
        ledger: Option<&mut Ledger>,
        client: &Client,
        (stop, signals): (&Stop, &Signals),
    ) -> Result<u64, LedgerError> {
        let Some(ledger) = ledger else {
            return Ok(0);
        };
        let service = self.config.service_id.clone();
        let (mut after, mut elsewhere, mut here) = (0, 0u64, 0u64);
        // Set once the list cannot be had: the batches after it are not listed again.
        let mut unlisted = stop
            .is_triggered()
            .then(|| "its UserID was not looked up: the run stopped first".to_string());
        loop {
            let wanted = ledger.unresolved(&service, after, RESOLVE_BATCH)?;
            let Some(last) = wanted.last() else { break };
            after = last.rowid;
            let full = wanted.len() == RESOLVE_BATCH;
            if self.config.mode.dry_run {
                // A plan asks no list: this file's rows are looked up by the run itself.
                let mine = wanted
                    .iter()
                    .filter(|u| self.planner.first_line(u.rowid).is_some())
                    .count() as u64;
                here += mine;
                elsewhere += wanted.len() as u64 - mine;
            } else {
                let left = match &unlisted {
                    Some(why) => wanted.into_iter().map(|u| (u, why.clone())).collect(),
                    None => {
                        self.resolve(ledger, wanted, client, (signals, &mut unlisted))
                            .await?
                    }
                };
                elsewhere += self.note_unresolved(left);
            }
            if !full {
                break;
            }
        }
        if here > 0 {
            self.progress.println(&format!(
                "{here} present rows of this file lack a UserID; the run looks them up in the service's user list"
            ));
        }
        if elsewhere > 0 && !self.config.mode.dry_run {
            self.progress.println(&format!(
                "warning: {elsewhere} present users of earlier runs (not in this file) still lack a UserID; the next run looks them up again"
            ));
        }
        Ok(elsewhere)
    }

    /// Notes the rows of this input left without a UserID (they make the run incomplete); returns
    /// how many rows of earlier inputs are left.
    fn note_unresolved(&mut self, left: Vec<(Unresolved, String)>) -> u64 {
        let mut elsewhere: u64 = 0;
        for (row, why) in left {
            // A changed row is unsettled already, and its reason says more.
            if self.changed.contains(&row.id_in_service) {
                continue;
            }
            match self.planner.first_line(row.rowid) {
                Some(line) => self.note(
                    line,
                    &row.id_in_service,
                    &row.phone_number,
                    Outcome::Unresolved,
                    Some(&why),
                    false,
                ),
                None => elsewhere = elsewhere.saturating_add(1),
            }
        }
        elsewhere
    }
}
