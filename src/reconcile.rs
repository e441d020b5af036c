//! `reconcile`: lists the service's users at Verigator once and compares them with the ledger,
//! user by user. Reports users Verigator has that the ledger does not know, ledger rows whose user
//! is gone at Verigator, and UserIDs that differ or are unknown. Changes the ledger only with
//! `--fix`. Knows nothing of CSV.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use serde::Serialize;
use thiserror::Error;

use crate::client::{Client, ClientError, ListError, Retried, UserList, is_valid_user_id};
use crate::config::ReconcileConfig;
use crate::exit;
use crate::ledger::{Ledger, LedgerError, Status};
use crate::report::spreadsheet_safe;
use crate::signals::Signals;
use crate::throttle::Stop;
use crate::user::Escaped;

/// Why reconcile could not compare.
#[derive(Debug, Error)]
pub enum ReconcileError {
    /// The ledger.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The HTTP client.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The user list could not be had.
    #[error("{0}")]
    List(String),
    /// The list holds fewer users than it says: comparing it would call the rest missing.
    #[error(
        "the user list holds {held} users but says there are {total}: it is truncated, so reconcile compared nothing and changed nothing"
    )]
    Truncated {
        /// Users in the list.
        held: u64,
        /// The count it claims.
        total: u64,
    },
    /// Interrupted by a signal; fixes made so far are committed.
    #[error("interrupted by a signal: {0}")]
    Interrupted(String),
}

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
    /// The disagreements themselves.
    #[serde(skip)]
    pub disagreements: Vec<Disagreement>,
}

impl Findings {
    /// 0 when nothing disagrees after any fixes, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        let unfixed = (self.disagreements.len() as u64).saturating_sub(self.fixed);
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

    /// Writes one CSV line per disagreement.
    pub fn write_report(&self, w: impl Write) -> std::io::Result<()> {
        let mut out = csv::Writer::from_writer(w);
        out.write_record([
            "kind",
            "id_in_service",
            "ledger_status",
            "ledger_user_id",
            "verigator_user_id",
        ])?;
        for d in &self.disagreements {
            let kind = serde_json::to_value(d.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            out.write_record([
                kind.as_str(),
                &spreadsheet_safe(&d.id_in_service),
                d.ledger_status.map_or("", Status::as_str),
                &spreadsheet_safe(d.ledger_user_id.as_deref().unwrap_or("")),
                &spreadsheet_safe(d.verigator_user_id.as_deref().unwrap_or("")),
            ])?;
        }
        out.flush()
    }
}

/// Lists the users, compares, and with `fix` corrects the ledger.
pub async fn run(config: &ReconcileConfig) -> Result<Findings, ReconcileError> {
    // Fixing writes, so it takes the run lock like an import; a plain comparison only reads.
    let mut ledger = if config.fix {
        Ledger::open_for_import(&config.ledger)?
    } else {
        Ledger::open_read_only(&config.ledger)?
    };
    let stop = Stop::default();
    let signals = Signals::watch(stop.clone())
        .map_err(|e| ReconcileError::Interrupted(format!("cannot install signal handlers: {e}")))?;
    let list = user_list(config, stop.clone()).await?;
    if signals.count() > 0 {
        return Err(ReconcileError::Interrupted("nothing was changed".into()));
    }
    // Counted by distinct ids: an id listed twice must not hide a missing one.
    let distinct = list
        .users
        .iter()
        .map(|u| u.id_in_service.as_str())
        .collect::<HashSet<_>>()
        .len() as u64;
    if let Some(total) = list.total.filter(|t| *t > distinct) {
        return Err(ReconcileError::Truncated {
            held: distinct,
            total,
        });
    }
    // An id the list gives a malformed UserID, or several UserIDs, is never compared or taken:
    // no guess, its ledger row is left alone.
    let mut remote: HashMap<String, String> = HashMap::new();
    let mut doubtful: HashSet<String> = HashSet::new();
    for user in list.users {
        if !is_valid_user_id(&user.id) {
            doubtful.insert(user.id_in_service);
            continue;
        }
        match remote.get(&user.id_in_service) {
            Some(seen) if *seen != user.id => {
                doubtful.insert(user.id_in_service);
            }
            _ => {
                remote.insert(user.id_in_service, user.id);
            }
        }
    }
    for id in &doubtful {
        remote.remove(id);
    }
    let rows = ledger.known_users(&config.service_id)?;
    let with_user_id = rows.iter().filter(|(_, _, uid)| uid.is_some()).count() as u64;
    // An empty list for a ledger full of UserIDs is more likely a broken answer than a service
    // whose users were all deleted: fixing on it would clear every UserID.
    let fix = config.fix && (config.force || !(remote.is_empty() && with_user_id > 0));
    let mut findings = Findings {
        service_id: config.service_id.clone(),
        verigator_users: remote.len() as u64,
        ledger_rows: rows.len() as u64,
        ..Findings::default()
    };
    for (id, status, ledger_uid) in rows {
        // Nothing awaits in this loop: the signal handler's own flag says whether to stop.
        if signals.raised() {
            break;
        }
        if doubtful.contains(&id) {
            findings.doubtful += 1;
            continue;
        }
        let remote_uid = remote.remove(&id);
        let Some(kind) = findings.classify(status, ledger_uid.as_ref(), remote_uid.as_ref()) else {
            continue;
        };
        if fix {
            apply(&mut ledger, config, kind, &id, remote_uid.as_deref())?;
            findings.fixed += 1;
        }
        findings.disagreements.push(Disagreement {
            kind,
            id_in_service: id,
            ledger_status: Some(status),
            ledger_user_id: ledger_uid,
            verigator_user_id: remote_uid,
        });
    }
    let mut only_there: Vec<(String, String)> = remote.into_iter().collect();
    only_there.sort();
    for (id, uid) in only_there {
        findings.disagreements.push(Disagreement {
            kind: Kind::AtVerigatorOnly,
            id_in_service: id,
            ledger_status: None,
            ledger_user_id: None,
            verigator_user_id: Some(uid),
        });
    }
    findings.count_kinds();
    if config.fix && !fix {
        findings.held_back = Some(format!(
            "the user list is empty but the ledger holds {with_user_id} UserIDs for this service: --fix changed nothing; --fix --force would mark those {with_user_id} rows retry (their UserIDs kept in the history) so that the next import registers them again"
        ));
    }
    ledger.commit()?;
    if signals.count() > 0 {
        return Err(ReconcileError::Interrupted(format!(
            "the {} fixes made before it are committed; run reconcile again",
            findings.fixed
        )));
    }
    Ok(findings)
}

/// The service's user list, or why it cannot be had.
async fn user_list(config: &ReconcileConfig, stop: Stop) -> Result<UserList, ReconcileError> {
    let client = Client::new(&config.client, stop)?;
    match client.list_users(&config.service_id).await.result {
        Retried::Done(Ok(list)) => Ok(list),
        Retried::Done(Err(ListError::Fatal(fatal))) => Err(ReconcileError::List(fatal.to_string())),
        Retried::Done(Err(e)) => Err(ReconcileError::List(e.to_string())),
        Retried::GaveUp(reason) => Err(ReconcileError::List(format!(
            "listing users failed: {reason}"
        ))),
        Retried::Stopped(_) => Err(ReconcileError::Interrupted("nothing was changed".into())),
    }
}

/// Corrects one ledger row with what Verigator lists (the old values go to the history).
fn apply(
    ledger: &mut Ledger,
    config: &ReconcileConfig,
    kind: Kind,
    id: &str,
    remote_uid: Option<&str>,
) -> Result<(), ReconcileError> {
    match (kind, remote_uid) {
        (Kind::MissingAtVerigator, _) => ledger.mark_gone(
            &config.service_id,
            id,
            "not at Verigator (reconcile --fix): the next import registers it again",
        )?,
        (_, Some(uid)) => ledger.set_user_id(&config.service_id, id, uid)?,
        (_, None) => {}
    }
    Ok(())
}

impl Findings {
    /// How a ledger row and Verigator's user disagree; `None` when they agree (counted) or the row
    /// was never registered and is not there either (counted too).
    fn classify(
        &mut self,
        status: Status,
        ledger_uid: Option<&String>,
        remote_uid: Option<&String>,
    ) -> Option<Kind> {
        match (status, ledger_uid, remote_uid) {
            (_, Some(l), Some(r)) if l == r => {
                self.agree += 1;
                None
            }
            (Status::Failed | Status::Retry, None, None) => {
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

    fn count_kinds(&mut self) {
        for d in &self.disagreements {
            match d.kind {
                Kind::AtVerigatorOnly => self.at_verigator_only += 1,
                Kind::MissingAtVerigator => self.missing_at_verigator += 1,
                Kind::UserIdDiffers => self.user_id_differs += 1,
                Kind::UserIdUnknown => self.user_id_unknown += 1,
            }
        }
    }
}
