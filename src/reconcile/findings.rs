//! What reconcile found: the kinds of disagreement, each one, and the counts; as a short text on
//! stderr, one JSON object, or a CSV for people written as the disagreements are found (cells
//! guarded against spreadsheet formulas).

use std::io::Write;

use serde::Serialize;

use crate::exit;
use crate::ledger::Status;
use crate::report::spreadsheet_safe;
use crate::user::Escaped;

/// How a user's two records disagree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Verigator has the user; the ledger has no row for it (nothing to fix: its phone is unknown).
    AtVerigatorOnly,
    /// The ledger has a UserID that Verigator no longer lists (deleted elsewhere); `--fix` marks
    /// the row `retry` so that the next import registers it again.
    MissingAtVerigator,
    /// Both have the user with different UserIDs; `--fix` takes Verigator's.
    UserIdDiffers,
    /// Verigator has the user but the ledger lacks its UserID (present unresolved, or failed/retry
    /// rows that exist after all); `--fix` records it.
    UserIdUnknown,
}

/// One disagreement.
#[derive(Clone, Debug, Serialize)]
pub struct Disagreement {
    /// What kind.
    pub kind: Kind,
    /// The user.
    pub id_in_service: String,
    /// The ledger's status, if it has the row.
    pub ledger_status: Option<Status>,
    /// The ledger's UserID.
    pub ledger_user_id: Option<String>,
    /// Verigator's UserID.
    pub verigator_user_id: Option<String>,
}

/// The comparison.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Findings {
    /// The ServiceID.
    pub service_id: String,
    /// Users Verigator lists.
    pub verigator_users: u64,
    /// Rows the ledger has for the service.
    pub ledger_rows: u64,
    /// Users both agree on.
    pub agree: u64,
    /// Ledger rows never registered (failed or retry) that Verigator does not have either.
    pub not_registered: u64,
    /// Counts per kind of disagreement.
    pub at_verigator_only: u64,
    /// See [`Kind::MissingAtVerigator`].
    pub missing_at_verigator: u64,
    /// See [`Kind::UserIdDiffers`].
    pub user_id_differs: u64,
    /// See [`Kind::UserIdUnknown`].
    pub user_id_unknown: u64,
    /// Ledger rows not compared: the list gives their user a malformed UserID, or several.
    pub doubtful: u64,
    /// Ledger rows changed by `--fix`.
    pub fixed: u64,
    /// Why `--fix` did nothing, when it held back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_back: Option<String>,
}

impl Findings {
    /// 0 when nothing disagrees after any fixes, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        let unfixed = self.disagreements().saturating_sub(self.fixed);
        if unfixed == 0 && self.doubtful == 0 {
            exit::OK
        } else {
            exit::INCOMPLETE
        }
    }

    /// The short text summary.
    pub fn write_text(&self, w: &mut impl Write) -> std::io::Result<()> {
        writeln!(w, "reconcile · service {}", Escaped(&self.service_id))?;
        writeln!(w, "  verigator users       {:>9}", self.verigator_users)?;
        writeln!(w, "  ledger rows           {:>9}", self.ledger_rows)?;
        writeln!(w, "  agree                 {:>9}", self.agree)?;
        writeln!(
            w,
            "  not registered        {:>9}  failed or retry in the ledger, absent at Verigator",
            self.not_registered
        )?;
        writeln!(
            w,
            "  at Verigator only     {:>9}  unknown to the ledger",
            self.at_verigator_only
        )?;
        writeln!(
            w,
            "  missing at Verigator  {:>9}  deleted elsewhere; --fix re-registers on the next import",
            self.missing_at_verigator
        )?;
        writeln!(
            w,
            "  UserID differs        {:>9}  --fix takes Verigator's",
            self.user_id_differs
        )?;
        writeln!(
            w,
            "  UserID unknown        {:>9}  --fix records Verigator's",
            self.user_id_unknown
        )?;
        if self.doubtful > 0 {
            writeln!(
                w,
                "  UserID doubtful       {:>9}  not compared: the list gives them a malformed UserID, or several",
                self.doubtful
            )?;
        }
        if self.fixed > 0 {
            writeln!(
                w,
                "  fixed                 {:>9}  the values overwritten are kept: export --history",
                self.fixed
            )?;
        }
        if let Some(why) = &self.held_back {
            writeln!(w, "{why}")?;
        }
        Ok(())
    }

    /// The JSON object of `--json`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        v["exit_code"] = self.exit_code().into();
        v
    }
}

/// The CSV of `reconcile --report`: one line per disagreement, written as each is found.
pub struct Report<W: Write> {
    out: csv::Writer<W>,
}

impl<W: Write> Report<W> {
    /// Starts the CSV with its header.
    pub fn new(w: W) -> std::io::Result<Report<W>> {
        let mut out = csv::Writer::from_writer(w);
        out.write_record([
            "kind",
            "id_in_service",
            "ledger_status",
            "ledger_user_id",
            "verigator_user_id",
        ])?;
        Ok(Report { out })
    }

    /// Writes one disagreement.
    pub fn write(&mut self, d: &Disagreement) -> std::io::Result<()> {
        let kind = serde_json::to_value(d.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        self.out.write_record([
            kind.as_str(),
            &spreadsheet_safe(&d.id_in_service),
            d.ledger_status.map_or("", Status::as_str),
            &spreadsheet_safe(d.ledger_user_id.as_deref().unwrap_or("")),
            &spreadsheet_safe(d.verigator_user_id.as_deref().unwrap_or("")),
        ])?;
        Ok(())
    }

    /// Flushes what is buffered.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

impl Findings {
    /// How a ledger row and Verigator's user disagree; `None` when they agree (counted) or the row
    /// was never registered and is not there either (counted too).
    pub(super) fn classify(
        &mut self,
        status: Status,
        ledger_uid: Option<&str>,
        remote_uid: Option<&str>,
    ) -> Option<Kind> {
        match (status, ledger_uid, remote_uid) {
            (_, Some(l), Some(r)) if l == r => {
                self.agree += 1;
                None
            }
            (Status::Failed | Status::Retry | Status::Deleted, None, None) => {
                self.not_registered += 1;
                None
            }
            (_, Some(_), None) | (Status::Synced | Status::Present, None, None) => {
                Some(Kind::MissingAtVerigator)
            }
            (_, Some(_), Some(_)) => Some(Kind::UserIdDiffers),
            (_, None, Some(_)) => Some(Kind::UserIdUnknown),
        }
    }

    /// Counts one disagreement.
    pub(super) fn count(&mut self, kind: Kind) {
        let count = match kind {
            Kind::AtVerigatorOnly => &mut self.at_verigator_only,
            Kind::MissingAtVerigator => &mut self.missing_at_verigator,
            Kind::UserIdDiffers => &mut self.user_id_differs,
            Kind::UserIdUnknown => &mut self.user_id_unknown,
        };
        *count += 1;
    }

    /// Disagreements of every kind.
    pub fn disagreements(&self) -> u64 {
        self.at_verigator_only
            + self.missing_at_verigator
            + self.user_id_differs
            + self.user_id_unknown
    }
}
