//! The end of a run: the UserIDs of `present` rows filled in from one user list, the summary, the
//! run's record in the ledger and the report moved into place; or, for a run that failed part-way,
//! as much of that as can still be saved.

use std::collections::HashSet;
use std::time::Instant;

use super::{ImportError, Run, report_error};
use crate::client::{Client, ListError, Retried, UserList};
use crate::input::InputError;
use crate::ledger::{Ledger, LedgerError};
use crate::report::Summary;
use crate::throttle::Stop;

impl Run<'_> {
    /// Ends a run that failed part-way: the report still gets every row noted so far, and the run
    /// is marked aborted if the ledger still takes writes. Returns `error`, the one to show.
    pub(super) fn fail(&mut self, ledger: Option<Ledger>, error: ImportError) -> ImportError {
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
        error
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
        stop: &Stop,
        started: Instant,
    ) -> Result<Summary, ImportError> {
        let config = self.config;
        let mut ledger = match closed {
            Some(ledger) => Some(ledger),
            None => Ledger::open_for_plan(&config.ledger)?,
        };
        let unresolved = match self.finish(ledger.as_mut(), client, stop).await {
            Ok(unresolved) => unresolved,
            Err(e) if config.mode.dry_run => return Err(self.fail(None, e.into())),
            Err(e) => return Err(self.fail(ledger, ImportError::Recording(e))),
        };
        self.progress.finish();
        let summary = self.summary(unresolved, started);
        let code = if input_error.is_some() {
            crate::exit::USAGE
        } else {
            summary.exit_code()
        };
        if let (Some(ledger), Some(id)) = (&mut ledger, self.run_id)
            && let Err(e) = ledger.finish_run(id, &summary.counts, code)
        {
            return Err(self.fail(None, ImportError::Recording(e)));
        }
        if let Some(e) = self.report_failure.take() {
            return Err(report_error(config, e));
        }
        if let Some(report) = self.report.take() {
            report.finish().map_err(|e| report_error(config, e))?;
        }
        match input_error {
            Some(e) => Err(e.into()),
            None => Ok(summary),
        }
    }

    fn summary(&self, unresolved: u64, started: Instant) -> Summary {
        Summary {
            run_id: self.run_id,
            dry_run: self.config.mode.dry_run,
            input: self.input.clone(),
            service_id: self.config.service_id.clone(),
            counts: self.counts.clone(),
            unsettled: self.unsettled,
            unresolved,
            elapsed: started.elapsed(),
            aborted: self.aborted.clone(),
        }
    }

    /// Commits, then fills in the UserIDs of `present` rows (this run's and earlier ones') from one
    /// user list. Returns how many present rows still lack a UserID.
    async fn finish(
        &mut self,
        ledger: Option<&mut Ledger>,
        client: &Client,
        stop: &Stop,
    ) -> Result<u64, LedgerError> {
        let Some(ledger) = ledger else {
            return Ok(0);
        };
        let wanted = ledger.unresolved(&self.config.service_id)?;
        if self.config.mode.dry_run || wanted.is_empty() || stop.is_triggered() {
            return Ok(wanted.len() as u64);
        }
        let Some(list) = self.user_list(client).await else {
            return Ok(wanted.len() as u64);
        };
        let wanted: HashSet<String> = wanted.into_iter().collect();
        let mut resolved = 0;
        for user in list
            .users
            .iter()
            .filter(|u| wanted.contains(&u.id_in_service))
        {
            let ctime = user
                .ctime
                .as_ref()
                .map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_string));
            ledger.resolve(
                &self.config.service_id,
                &user.id_in_service,
                &user.id,
                ctime.as_deref(),
            )?;
            resolved += 1;
        }
        ledger.commit()?;
        self.counts.resolved += resolved;
        let missing = wanted.len() as u64 - resolved;
        if missing > 0 {
            self.progress.println(&format!(
                "warning: {missing} present users are not in the service's user list (another key or case?); they keep no UserID"
            ));
        }
        Ok(missing)
    }

    /// The service's user list, or `None` (with a warning, or an abort for a fatal answer) when it
    /// cannot be had; the next run tries again.
    async fn user_list(&mut self, client: &Client) -> Option<UserList> {
        let list = match client.list_users(&self.config.service_id).await.result {
            Retried::Done(Ok(list)) => list,
            Retried::Done(Err(ListError::Fatal(fatal))) => {
                self.abort(fatal.to_string());
                return None;
            }
            Retried::Done(Err(e)) => {
                self.progress
                    .println(&format!("warning: {e}; the next run tries again"));
                return None;
            }
            Retried::GaveUp(reason) | Retried::Stopped(Some(reason)) => {
                self.progress.println(&format!(
                    "warning: listing users failed: {reason}; the next run tries again"
                ));
                return None;
            }
            Retried::Stopped(None) => return None,
        };
        if let Some(total) = list.total.filter(|t| *t > list.users.len() as u64) {
            self.progress.println(&format!(
                "warning: the user list holds {} users but claims {total}: it may be truncated",
                list.users.len()
            ));
        }
        Some(list)
    }
}
