//! `--prune`: after a complete import, the users this ledger registered for the service whose id
//! was not in the file are deleted at Verigator (a plan lists them). Nothing is deleted when the
//! file was not read whole, when a row's id could not be read (a broken export must never delete
//! users), or when more users would go than `--max-delete` allows.
//!
//! Deletions go through the run's client (its rate limit, retries and stop rules). Each one is
//! recorded once answered, its UserID kept in the history; a deletion that happened but was not
//! recorded (a kill) meets 404 on the next run, which records it then.

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::Run;
use crate::client::{Attempted, Client, Deleted, Retried};
use crate::config::{MaxDelete, Verbosity};
use crate::ledger::{Ledger, LedgerError, Prunable};
use crate::phone::mask_phone;
use crate::report::Outcome;
use crate::signals::Signals;
use crate::throttle::Stop;
use crate::user::Escaped;

/// Users read from the ledger per batch of deletions, begun in one commit: small, so that rows
/// marked `deleted` ahead of their request stay few (at 20 requests/s, 13 seconds' worth).
const PRUNE_BATCH: usize = 256;
/// How often a prune waiting for answers looks for a second signal.
const SIGNAL_LOOK: std::time::Duration = std::time::Duration::from_millis(100);

impl Run<'_> {
    /// Deletes (or, on a dry run, lists) the users not in the file, if nothing forbids it.
    /// `ledger` is `None` when there is none yet (a plan before the first import).
    pub(super) async fn prune(
        &mut self,
        ledger: Option<&mut Ledger>,
        limit: MaxDelete,
        input_broke: bool,
        client: &Client,
        (stop, signals): (&Stop, &Signals),
    ) -> Result<(), LedgerError> {
        if let Some(why) = self.prune_blocked(input_broke, stop) {
            self.prune_refused = true;
            self.progress
                .println(&format!("warning: --prune: nothing deleted: {why}"));
            return Ok(());
        }
        let Some(ledger) = ledger else {
            return Ok(());
        };
        ledger.commit()?;
        let service = self.config.service_id.clone();
        // The share is of the users held before this run: those it just created would otherwise
        // let a wrong file of new ids delete every user there was (synced and present outcomes
        // are exactly the rows that were neither before).
        let mut held = ledger.holding(&service)?;
        if !self.config.mode.dry_run {
            held = held.saturating_sub(self.counts.synced + self.counts.present);
        }
        let planner = &self.planner;
        let gone = ledger.count_prunable(&service, |rowid| !planner.in_file(rowid))?;
        let most = limit.of(held);
        if gone > most {
            self.prune_refused = true;
            self.progress.println(&format!(
                "warning: --prune: {gone} of the {held} users this ledger held for service {service} before this run are not in the file, more than --max-delete {limit} allows ({most}); nothing deleted. If the file is complete, pass --max-delete {gone} (with --dry-run --report FILE to list them first)"
            ));
            return Ok(());
        }
        if gone == 0 {
            return Ok(());
        }
        if self.config.mode.dry_run {
            self.progress.println(&format!(
                "--prune: {gone} users not in the file would be deleted at Verigator (--report lists them)"
            ));
        } else {
            self.progress.println(&format!(
                "--prune: deleting {gone} users not in the file at Verigator"
            ));
        }
        self.delete_all(ledger, client, (stop, signals)).await
    }

    /// Why nothing may be deleted, if something forbids it.
    fn prune_blocked(&self, input_broke: bool, stop: &Stop) -> Option<String> {
        if input_broke {
            return Some("the file was not read to its end".into());
        }
        if self.aborted.is_some() || stop.is_triggered() {
            return Some("the run stopped before the end of the file".into());
        }
        let input = Escaped(&self.input);
        if let (Some(stamp), crate::config::Source::File(path)) = (self.stamp, &self.config.source)
            && !stamp.holds_for(path)
        {
            return Some(format!(
                "{input} changed while it was read (cut short or rewritten), so the users not in it are not known; run again once the export is complete"
            ));
        }
        let broken = |line, what| {
            format!(
                "{input}:{line}: {what}, so the users not in the file are not known; a broken export must never delete users. Fix the file and run again"
            )
        };
        if let Some(line) = self.unreadable {
            return Some(broken(
                line,
                "a row's id could not be read (see its warning)",
            ));
        }
        self.spans_lines.map(|line| {
            broken(
                line,
                "a record runs over several lines (a quote that never closes swallows the rows after it)",
            )
        })
    }

    /// Walks the users not in the file a batch at a time, deleting each batch with up to
    /// `--concurrency` requests in flight (a plan only lists them). A second signal stops at
    /// once: the deletions in flight stay begun, for the next run.
    async fn delete_all(
        &mut self,
        ledger: &mut Ledger,
        client: &Client,
        (stop, signals): (&Stop, &Signals),
    ) -> Result<(), LedgerError> {
        let owned = self.config.service_id.clone();
        let service = owned.as_str();
        let mut after = 0;
        while !stop.is_triggered() {
            let planner = &self.planner;
            let (batch, next) =
                ledger.prunable(service, after, PRUNE_BATCH, |rowid| !planner.in_file(rowid))?;
            if self.config.mode.dry_run {
                for user in &batch {
                    self.counts.deleted += 1;
                    let reason = format!(
                        "not in the file: --prune deletes it at Verigator (UserID {})",
                        user.user_id
                    );
                    self.note_pruned(user, Outcome::Delete, &reason, true);
                }
            } else {
                ledger.begin_deletions(self.run_id, service, &batch)?;
                self.delete_batch(ledger, batch, client, (stop, signals))
                    .await?;
            }
            match next {
                Some(last) => after = last,
                None => break,
            }
        }
        ledger.commit()?;
        Ok(())
    }

    /// Deletes one begun batch; those never sent (the run stopped) are undone.
    async fn delete_batch(
        &mut self,
        ledger: &mut Ledger,
        batch: Vec<Prunable>,
        client: &Client,
        (stop, signals): (&Stop, &Signals),
    ) -> Result<(), LedgerError> {
        let service = self.config.service_id.clone();
        let mut waiting = batch.into_iter();
        let mut flying = FuturesUnordered::new();
        loop {
            while flying.len() < client.window().limit() && !stop.is_triggered() {
                let Some(user) = waiting.next() else { break };
                let service = service.as_str();
                flying.push(async move {
                    let attempted = client.delete_user(service, &user.user_id).await;
                    (user, attempted)
                });
            }
            let answered = tokio::select! {
                answered = flying.next() => answered,
                () = tokio::time::sleep(SIGNAL_LOOK) => {
                    if signals.count() > 1 {
                        break;
                    }
                    continue;
                }
            };
            let Some((user, attempted)) = answered else {
                break;
            };
            self.settle_deletion(ledger, &user, attempted, stop)?;
            ledger.commit_if_due(false)?;
        }
        for user in waiting.filter(|user| !user.begun) {
            ledger.undo_deletion(&service, &user)?;
        }
        Ok(())
    }

    /// Records one deletion's answer; a fatal one stops the run.
    fn settle_deletion(
        &mut self,
        ledger: &mut Ledger,
        user: &Prunable,
        attempted: Attempted<Deleted>,
        stop: &Stop,
    ) -> Result<(), LedgerError> {
        let service = &self.config.service_id;
        let (outcome, reason) = match &attempted.result {
            Retried::Done(Deleted::Gone) => (
                Outcome::Deleted,
                format!(
                    "not in the file: deleted at Verigator (UserID {})",
                    user.user_id
                ),
            ),
            Retried::Done(Deleted::AlreadyGone) => (
                Outcome::Deleted,
                format!(
                    "not in the file: already gone at Verigator (404; UserID {})",
                    user.user_id
                ),
            ),
            Retried::Done(Deleted::Refused(why)) => {
                (Outcome::Delete, format!("not deleted: refused: {why}"))
            }
            Retried::Done(Deleted::Fatal(fatal)) => {
                self.abort(fatal.to_string());
                stop.trigger();
                (Outcome::Delete, format!("not deleted: {fatal}"))
            }
            // It may have happened (a timeout): left begun, for the next prune to finish.
            Retried::GaveUp(why) => (
                Outcome::Delete,
                format!("not deleted: {why}; the next run with --prune deletes it"),
            ),
            Retried::Stopped(_) => (
                Outcome::Delete,
                "not deleted: the run stopped first; the next run with --prune deletes it".into(),
            ),
        };
        let certain_not = matches!(
            attempted.result,
            Retried::Done(Deleted::Refused(_) | Deleted::Fatal(_))
        ) || attempted.attempts == 0;
        if outcome == Outcome::Deleted && !ledger.finish_deletion(service, user)? {
            // Changed since it was read (it cannot be, under the run lock): said, not hidden.
            let why =
                "deleted at Verigator, but the ledger row changed meanwhile; it was left as it is";
            self.note_pruned(user, Outcome::Delete, why, false);
            return Ok(());
        }
        if outcome == Outcome::Delete && certain_not && !user.begun {
            ledger.undo_deletion(service, user)?;
        }
        self.note_pruned(user, outcome, &reason, outcome == Outcome::Deleted);
        Ok(())
    }

    /// Counts, logs and reports one user not in the file. A row that ended as planned is logged
    /// only with -v; one that did not is a warning and makes the run incomplete.
    fn note_pruned(&mut self, user: &Prunable, outcome: Outcome, reason: &str, settled: bool) {
        outcome.count(&mut self.counts);
        if !settled {
            self.unsettled += 1;
        }
        let show = match self.config.verbosity {
            Verbosity::Quiet => false,
            Verbosity::Normal => !settled,
            Verbosity::Verbose => true,
        };
        if show {
            let message = format!(
                "--prune: {}: {:?} ({}): {reason}",
                outcome.as_str(),
                user.id_in_service,
                mask_phone(&user.phone_number)
            );
            if settled {
                self.progress.println(&message);
            } else {
                self.progress.warn(&message);
            }
        }
        if let Some(report) = &mut self.report
            && let Err(e) = report.write(
                None,
                &user.id_in_service,
                (&user.phone_number, &user.phone_number),
                outcome,
                reason,
            )
        {
            self.report_failure.get_or_insert(e);
            self.report = None;
        }
    }
}
