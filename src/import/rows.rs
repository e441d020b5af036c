//! Every row's outcome: decided for rows that are not sent, settled for rows that are; counted,
//! logged (phones masked), written to the report, and queued for the ledger. The one place every
//! row passes through.

use tokio::sync::oneshot;

use super::plan::{Decision, Job};
use super::send::{self, Answer};
use super::{ImportError, Run};
use crate::config::Verbosity;
use crate::input::{Record, Row};
use crate::ledger::writer::{self, Replacement};
use crate::ledger::{Entry, Twin};
use crate::phone::{Line, mask_phone, mask_phones_in};
use crate::report::Outcome;
use crate::throttle::Stop;
use crate::user::Escaped;

impl Run<'_> {
    /// Counts, logs and reports one row's outcome: the one place every row passes through.
    pub(super) fn note(
        &mut self,
        line: u64,
        id: &str,
        phone: &str,
        outcome: Outcome,
        reason: Option<&str>,
        settled: bool,
    ) {
        self.note_warned((line, id, phone), outcome, reason, settled, None);
    }

    /// [`Run::note`], for a row with a phone warning (logged when it was decided): the report
    /// has the row whatever its outcome, the warning in its reason. `phone` is as the file writes
    /// it.
    pub(super) fn note_warned(
        &mut self,
        (line, id, phone): (u64, &str, &str),
        outcome: Outcome,
        reason: Option<&str>,
        settled: bool,
        warning: Option<&str>,
    ) {
        let joined;
        let reason = match (reason, warning) {
            (Some(reason), Some(warning)) => {
                joined = format!("{reason}; {warning}");
                Some(joined.as_str())
            }
            (reason, warning) => reason.or(warning),
        };
        outcome.count(&mut self.counts);
        // An unresolved note at the end is about a row already finished.
        if outcome != Outcome::Unresolved {
            self.finished += 1;
        }
        if !settled {
            self.unsettled += 1;
        }
        if outcome == Outcome::Changed {
            self.changed.insert(id.to_string());
        }
        self.log(line, (id, phone), outcome, reason, settled);
        if settled
            && warning.is_none()
            && matches!(
                outcome,
                Outcome::Synced | Outcome::Present | Outcome::Skipped
            )
        {
            return;
        }
        let e164 = crate::phone::normalize(phone, self.config.input.default_region).ok();
        let cells = (phone, e164.as_deref().unwrap_or_default());
        if let Some(report) = &mut self.report
            && let Err(e) = report.write(Some(line), id, cells, outcome, reason.unwrap_or_default())
        {
            self.report_failure.get_or_insert(e);
            self.report = None;
        }
    }

    /// Logs a row's outcome: rows that went as planned only with -v (replacements always); phone
    /// numbers masked, the reason's too.
    fn log(
        &mut self,
        line: u64,
        (id, phone): (&str, &str),
        outcome: Outcome,
        reason: Option<&str>,
        settled: bool,
    ) {
        let routine = (settled && outcome != Outcome::Replaced) || outcome == Outcome::Pending;
        let show = match self.config.verbosity {
            Verbosity::Quiet => false,
            Verbosity::Normal => !routine,
            Verbosity::Verbose => true,
        };
        if !show {
            return;
        }
        let input = Escaped(&self.input);
        let message = match reason {
            Some(reason) => format!(
                "{input}:{line}: {}: {id:?} ({}): {}",
                outcome.as_str(),
                mask_phone(phone),
                mask_phones_in(reason)
            ),
            None => format!(
                "{input}:{line}: {}: {id:?} ({})",
                outcome.as_str(),
                mask_phone(phone)
            ),
        };
        if self.config.verbosity == Verbosity::Verbose {
            self.progress.println(&message);
        } else {
            self.progress.warn(&message);
        }
    }

    /// Decides what to do with one record; returns the job if it must be sent now.
    pub(super) fn decide(
        &mut self,
        record: Record,
        (entry, twin): (Option<Entry>, Option<Twin>),
    ) -> Result<Option<Job>, ImportError> {
        self.counts.rows += 1;
        let line = record.line;
        if record.spans_lines {
            self.spans_lines.get_or_insert(line);
        }
        let user = match record.row {
            Row::Invalid(r) => {
                match (&entry, &r.key) {
                    (Some(entry), _) => self.planner.mention(entry.rowid),
                    (None, Some(_)) => {}
                    (None, None) => {
                        self.unreadable.get_or_insert(line);
                    }
                }
                self.note(
                    line,
                    &r.id_in_service,
                    &r.phone_number,
                    Outcome::Invalid,
                    Some(&r.reason),
                    false,
                );
                return Ok(None);
            }
            Row::User(user) => user,
        };
        Ok(match self.planner.decide((entry, twin), line, user)? {
            Decision::Keep {
                user,
                outcome,
                reason,
                settled,
            } => {
                self.note(
                    line,
                    &user.id_in_service,
                    user.phone_as_written(),
                    outcome,
                    reason.as_deref(),
                    settled,
                );
                None
            }
            Decision::Send(job) => self.sendable(job)?,
        })
    }

    /// A row the plan would send: held back past `--limit`, only counted on a dry run.
    fn sendable(&mut self, job: Job) -> Result<Option<Job>, ImportError> {
        if self
            .config
            .mode
            .limit
            .is_some_and(|n| self.counts.sent >= n)
        {
            let reason = "held back by --limit";
            let (line, id, phone) = (
                job.line,
                &job.user.id_in_service,
                job.user.phone_as_written(),
            );
            self.note(line, id, phone, Outcome::Pending, Some(reason), false);
            return Ok(None);
        }
        let Some(job) = self.check_phone(job) else {
            return Ok(None);
        };
        let mut job = self.check_suspect(job);
        self.planner.sending(&job)?;
        // Counted when decided, so that --limit holds back exactly the rows beyond N.
        self.counts.sent += 1;
        if self.config.mode.dry_run {
            // A plan's row is done once decided; one with a phone warning is reported.
            match job.warning.take() {
                Some(warning) => self.note_warned(
                    (
                        job.line,
                        &job.user.id_in_service,
                        job.user.phone_as_written(),
                    ),
                    Outcome::Planned,
                    None,
                    true,
                    Some(&warning),
                ),
                None => self.finished += 1,
            }
            return Ok(None);
        }
        Ok(Some(job))
    }

    /// Checks a row about to be sent against what libphonenumber knows of its number: one in no
    /// assigned range, or not a mobile, is sent with a phone warning, or refused as `invalid`
    /// with `--strict-phones` or `--mobile-only`. Returns the job to send, if it is sent.
    fn check_phone(&mut self, mut job: Job) -> Option<Job> {
        let (assigned, line) = crate::phone::classify(&job.user.phone_number);
        let mode = self.config.mode;
        let (warning, refused) = match line {
            _ if !assigned => (
                "the number is in no range its country assigns (libphonenumber's list may lag behind new ranges): check it".to_string(),
                mode.strict_phones.then_some("--strict-phones"),
            ),
            Line::NotMobile(kind) => {
                self.not_mobile += 1;
                (
                    format!("the number is {kind}, not a mobile: an SMS may never reach it"),
                    mode.mobile_only.then_some("--mobile-only"),
                )
            }
            Line::Mobile | Line::MaybeMobile | Line::Unknown => return Some(job),
        };
        let (id, phone) = (&job.user.id_in_service, job.user.phone_as_written());
        if let Some(flag) = refused {
            let reason = format!("{warning} (refused by {flag})");
            self.note(job.line, id, phone, Outcome::Invalid, Some(&reason), false);
            return None;
        }
        self.phone_warnings += 1;
        if self.config.verbosity != Verbosity::Quiet {
            self.progress.warn(&format!(
                "{}:{}: phone warning: {id:?} ({}): {warning}",
                Escaped(&self.input),
                job.line,
                mask_phone(phone)
            ));
        }
        job.warning = Some(format!("phone warning: {warning}"));
        Some(job)
    }

    /// A suspect duplicate sent anyway (`--on-suspect-duplicate send`): a warning line, and the
    /// warning in the row's report line.
    fn check_suspect(&mut self, mut job: Job) -> Job {
        let Some(other) = job.suspect.take() else {
            return job;
        };
        self.suspects_sent += 1;
        let warning = format!(
            "suspect duplicate: the same as {other} after Unicode normalisation and case folding"
        );
        if self.config.verbosity != Verbosity::Quiet {
            self.progress.warn(&format!(
                "{}:{}: {warning}: {:?} ({}); sent (--on-suspect-duplicate skip or fail to hold it back)",
                Escaped(&self.input),
                job.line,
                job.user.id_in_service,
                mask_phone(job.user.phone_as_written())
            ));
        }
        job.warning = Some(match job.warning.take() {
            Some(phone) => format!("{warning}; {phone}"),
            None => warning,
        });
        job
    }

    /// For a replacement, asks the writer to commit its history row; the delete waits for it.
    pub(super) fn replacement(&self, job: &Job) -> Option<oneshot::Receiver<i64>> {
        let (replace, writer) = (job.replace.as_ref()?, self.writer.as_ref()?);
        Some(writer.begin_replacement(Replacement {
            run_id: self.run_id,
            id_in_service: job.user.id_in_service.clone(),
            old_user_id: replace.old_user_id.clone(),
            old_phone: replace.old_phone.clone(),
            new_phone: job.user.phone_number.clone(),
        }))
    }

    /// Counts, logs and queues for the ledger one row's answer.
    pub(super) fn settle(&mut self, slot: usize, answer: Answer, stop: &Stop) {
        let Some(mut job) = self.flying.remove(slot) else {
            return;
        };
        let (warning, written) = (job.warning.take(), job.user.written.take());
        let done = send::settle(job, answer, self.config.verbosity == Verbosity::Verbose);
        self.answered += 1;
        if let Some(fatal) = done.fatal {
            self.abort(fatal);
            stop.trigger();
        }
        let phone = written
            .as_deref()
            .or(done.file_phone.as_deref())
            .unwrap_or(&done.change.phone_number);
        self.note_warned(
            (done.line, &done.change.id_in_service, phone),
            done.outcome,
            done.reason.as_deref(),
            done.settled,
            warning.as_deref(),
        );
        if done.write {
            self.keep(writer::Row {
                change: done.change,
                replacement: done.replacement,
            });
        }
    }
}
