//! The end of a run: its counts as a short table on stderr or one JSON object on stdout, and the
//! exit code it ends with.

use std::io::{self, Write};
use std::time::Duration;

use crate::exit;
use crate::ledger::RunCounts;
use crate::user::Escaped;

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
    /// Present rows of other inputs whose UserID is still unknown after this run.
    pub unresolved_elsewhere: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Why the run stopped early, if it did.
    pub aborted: Option<String>,
    /// `--prune` was given and deleted nothing because a safety rule forbade it (a row's id
    /// could not be read, more users than `--max-delete` allows, or the run did not finish).
    pub prune_refused: bool,
    /// Rows sent (or, in a plan, to send) with a phone warning.
    pub phone_warnings: u64,
    /// `--rate` (`None`: unlimited), shown next to the rate achieved.
    pub asked_rate: Option<f64>,
    /// Rows checked before sending whose number is not a mobile (sent with a warning, or
    /// refused with `--mobile-only`).
    pub not_mobile: u64,
    /// New ids that are another spelling of an id of the file or the ledger (sent with a
    /// warning, skipped, or, with `--on-suspect-duplicate fail`, the reason nothing was sent).
    pub suspect_duplicates: u64,
    /// The first of them, one line each (for `--on-suspect-duplicate fail`).
    pub suspects_listed: Vec<String>,
}

impl Summary {
    /// The exit code this run ends with; the only place that decides it for imports.
    pub fn exit_code(&self) -> u8 {
        if self.aborted.is_some() {
            exit::ABORTED
        } else if self.unsettled > 0 || self.prune_refused {
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
            "unresolved": c.unresolved,
            "pending": c.pending,
            "replaced": c.replaced,
            "deleted": c.deleted,
            "prune_refused": self.prune_refused,
            "phone_warnings": self.phone_warnings,
            "not_mobile": self.not_mobile,
            "suspect_duplicates": self.suspect_duplicates,
            "elapsed_s": (self.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            "exit_code": self.exit_code(),
        })
    }

    /// The short table for stderr.
    /// The short table for stderr.
    pub fn write_text(&self, w: &mut impl Write) -> io::Result<()> {
        let title = match self.run_id {
            Some(id) if !self.dry_run => format!("run {id}"),
            _ => "plan (dry run: nothing sent, nothing written)".to_string(),
        };
        writeln!(
            w,
            "\n{title} · {} → service {} · {:.1} s",
            Escaped(&self.input),
            self.service_id,
            self.elapsed.as_secs_f64()
        )?;
        let always = if self.dry_run {
            ["rows", "sent", "skipped"]
        } else {
            ["rows", "sent", "synced"]
        };
        for (name, n, note) in self.lines() {
            if n == 0 && !always.contains(&name) {
                continue;
            }
            writeln!(w, "{}", format!("  {name:<10}{n:>10}  {note}").trim_end())?;
        }
        if self.suspect_duplicates > 0 {
            writeln!(
                w,
                "  {} suspect duplicates: ids equal to another after Unicode normalisation and case folding (see the warnings; --report lists them)",
                self.suspect_duplicates
            )?;
        }
        if self.unresolved_elsewhere > 0 {
            writeln!(
                w,
                "  {} present rows of earlier runs (not in this file) still lack a UserID; the next run looks them up again",
                self.unresolved_elsewhere
            )?;
        }
        self.write_exit(w)
    }

    /// Each count with its name and what it means.
    fn lines(&self) -> [(&'static str, u64, String); 15] {
        let c = &self.counts;
        [
            ("rows", c.rows, String::new()),
            ("skipped", c.skipped, "already in the ledger".into()),
            ("sent", c.sent, self.sent_note()),
            ("synced", c.synced, "created, UserID recorded".into()),
            ("present", c.present, "existed already (409)".into()),
            (
                "resolved",
                c.resolved,
                "UserIDs found in the user list".into(),
            ),
            (
                "unresolved",
                c.unresolved,
                "present, but the UserID is not in the user list; the next run looks again".into(),
            ),
            ("failed", c.failed, "refused by the API; not resent".into()),
            ("invalid", c.invalid, "rejected locally; never sent".into()),
            (
                "retry",
                c.retry,
                "transient failure; the next run resends".into(),
            ),
            (
                "duplicate",
                c.duplicate,
                "id repeated in this file, or held back as another spelling of one".into(),
            ),
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
            (
                "deleted",
                c.deleted,
                if self.dry_run {
                    "not in the file: --prune would delete them at Verigator".into()
                } else {
                    "not in the file: deleted at Verigator (--prune)".into()
                },
            ),
        ]
    }

    /// A plan's rows would be sent; a run's were, at this rate.
    fn sent_note(&self) -> String {
        let seconds = self.elapsed.as_secs_f64();
        match self.dry_run {
            true => "would be sent".to_string(),
            false => {
                let achieved = match seconds > 0.0 {
                    true => self.counts.sent as f64 / seconds,
                    false => 0.0,
                };
                match self.asked_rate {
                    Some(asked) => format!("{achieved:.1}/s of {asked}/s asked"),
                    None => format!("{achieved:.1}/s"),
                }
            }
        }
    }

    /// The last line: the exit code and what it means.
    fn write_exit(&self, w: &mut impl Write) -> io::Result<()> {
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
            (None, code) if self.prune_refused && self.unsettled == 0 => writeln!(
                w,
                "exit {code}: --prune deleted nothing (the warning above says why)"
            ),
            (None, code) => writeln!(
                w,
                "exit {code}: {} rows are not synced or present (the warnings say why; --report writes them to a file)",
                self.unsettled
            ),
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
            unresolved_elsewhere: 0,
            elapsed: Duration::from_millis(1500),
            aborted,
            prune_refused: false,
            phone_warnings: 0,
            asked_rate: None,
            not_mobile: 0,
            suspect_duplicates: 0,
            suspects_listed: Vec::new(),
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
            "unresolved",
            "pending",
            "replaced",
            "deleted",
            "prune_refused",
            "phone_warnings",
            "not_mobile",
            "suspect_duplicates",
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
