//! `reconcile`: lists the service's users at Verigator once and compares them with the ledger,
//! user by user. Reports users Verigator has that the ledger does not know, ledger rows whose user
//! is gone at Verigator, and UserIDs that differ or are unknown. Changes the ledger only with
//! `--fix`. Knows nothing of CSV. Holds neither side: the list streams into a spill sorted by id
//! (`crate::listing`), the ledger's rows into another, and the two are walked side by side.
//!
//! - `compare.rs`: the walk, and what each step finds and fixes.
//! - `findings.rs`: what was found, and how it is shown.

mod compare;
mod findings;

use std::io::Write;
use std::ops::ControlFlow;

use thiserror::Error;

use crate::client::MAX_ENTRY_BYTES;
use crate::client::{Client, ClientError, ListError, ListSink, Listed, ListedUser, Retried};
use crate::config::ReconcileConfig;
use crate::ledger::{Ledger, LedgerError};
use crate::listing::{Groups, Spill, Verdict};
use crate::signals::Signals;
use crate::throttle::Stop;
use compare::{Walk, spill_ledger};

pub use findings::{Disagreement, Findings, Kind, Report};

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
    /// The list skipped malformed entries: comparing it would call their users missing.
    #[error(
        "the user list has {0} malformed entries (not an object with string id and id_in_service, or over {max} KiB): it is incomplete, so reconcile compared nothing and changed nothing",
        max = MAX_ENTRY_BYTES / 1024
    )]
    Malformed(u64),
    /// Interrupted by a signal; fixes made so far are committed.
    #[error("interrupted by a signal: {0}")]
    Interrupted(String),
    /// The list's temporary file could not be written or read.
    #[error("the user list could not be kept in a temporary file: {0}")]
    Spill(#[source] std::io::Error),
    /// The report could not be written: nothing was changed.
    #[error("the report could not be written, so nothing was changed: {0}")]
    Report(#[source] std::io::Error),
}

/// Lists the users, compares, and with `fix` corrects the ledger; writes each disagreement to
/// `report` (when given) as it is found. Nothing is changed until the whole list has been read
/// and found complete; what was fixed is committed at the end (or at a signal).
pub async fn run(
    config: &ReconcileConfig,
    report: Option<&mut dyn Write>,
) -> Result<Findings, ReconcileError> {
    // Fixing writes, so it takes the run lock like an import; a plain comparison only reads.
    let mut ledger = if config.fix {
        Ledger::open_for_import(&config.ledger)?
    } else {
        Ledger::open_read_only(&config.ledger)?
    };
    let stop = Stop::default();
    let signals = Signals::watch(stop.clone())
        .map_err(|e| ReconcileError::Interrupted(format!("cannot install signal handlers: {e}")))?;
    let mut remote = Remote::default();
    let listed = user_list(config, stop.clone(), &mut remote).await?;
    let census = census(&mut remote.spill, &listed, &signals)?;
    let mut rows = Spill::default();
    let (ledger_rows, with_user_id) = spill_ledger(&ledger, &config.service_id, &mut rows)?;
    let held_back = held_back(config, &census, with_user_id, listed.total);
    let fix = config.fix && held_back.is_none();
    let mut findings = Findings {
        service_id: config.service_id.clone(),
        verigator_users: census.usable,
        ledger_rows,
        ..Findings::default()
    };
    let groups = Groups::of(&mut remote.spill).map_err(ReconcileError::Spill)?;
    let rows = rows.records().map_err(ReconcileError::Spill)?;
    let report = report
        .map(Report::new)
        .transpose()
        .map_err(ReconcileError::Report)?;
    Walk {
        ledger: &mut ledger,
        config,
        findings: &mut findings,
        report,
        fix,
        signals: &signals,
    }
    .run(rows, groups)?;
    findings.held_back = held_back;
    ledger.commit()?;
    if signals.count() > 0 {
        return Err(ReconcileError::Interrupted(format!(
            "the {} fixes made before it are committed; run reconcile again",
            findings.fixed
        )));
    }
    Ok(findings)
}

/// Why `--fix` must not act on this list without `--force`, if it must not. An empty list for a
/// ledger full of UserIDs is more likely a broken answer than a service whose users were all
/// deleted: fixing on it would clear every UserID. A list that states no count, or one below what
/// it holds, cannot show that it is complete: a cut-short answer would look like users deleted.
fn held_back(
    config: &ReconcileConfig,
    census: &Census,
    with_user_id: u64,
    total: Option<u64>,
) -> Option<String> {
    if !config.fix || config.force {
        return None;
    }
    if let Some(total) = total.filter(|t| *t < census.distinct) {
        return Some(format!(
            "the user list holds {} users but says there are {total}: it contradicts itself, so --fix changed nothing; --fix --force applies these fixes anyway",
            census.distinct
        ));
    }
    if census.usable == 0 && with_user_id > 0 {
        return Some(format!(
            "the user list is empty but the ledger holds {with_user_id} UserIDs for this service: --fix changed nothing; --fix --force would mark those {with_user_id} rows retry (their UserIDs kept in the history) so that the next import registers them again"
        ));
    }
    total.is_none().then(|| {
        "the user list states no count (`total` or `count`), so nothing shows that it is complete: --fix changed nothing; --fix --force applies these fixes anyway".to_string()
    })
}

/// Verigator's side: the list's entries as `(id_in_service, UserID)`, spilled to disk in id order.
#[derive(Default)]
struct Remote {
    spill: Spill,
    /// Why the spill stopped the reading.
    failed: Option<std::io::Error>,
}

impl ListSink for Remote {
    fn restart(&mut self) {
        self.spill.clear();
    }

    fn user(&mut self, user: ListedUser) -> ControlFlow<()> {
        match self.spill.push(&user.id_in_service, user.id.as_bytes()) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                self.failed = Some(e);
                ControlFlow::Break(())
            }
        }
    }
}

/// How many ids the list names, and how many of them with one well-formed UserID.
struct Census {
    usable: u64,
    /// Distinct ids listed.
    distinct: u64,
}

/// Counts the list's distinct ids; a list that skipped malformed entries, or holds fewer
/// distinct ids than its count says, is refused before anything is compared (an id listed twice
/// must not hide a missing one).
fn census(spill: &mut Spill, listed: &Listed, signals: &Signals) -> Result<Census, ReconcileError> {
    if signals.count() > 0 {
        return Err(ReconcileError::Interrupted("nothing was changed".into()));
    }
    if listed.malformed > 0 {
        return Err(ReconcileError::Malformed(listed.malformed));
    }
    let mut groups = Groups::of(spill).map_err(ReconcileError::Spill)?;
    let (mut distinct, mut usable) = (0, 0);
    while let Some((_, sightings)) = groups.next_id().map_err(ReconcileError::Spill)? {
        distinct += 1;
        if matches!(sightings.verdict(), Some(Verdict::One { .. })) {
            usable += 1;
        }
    }
    if let Some(total) = listed.total.filter(|t| *t > distinct) {
        return Err(ReconcileError::Truncated {
            held: distinct,
            total,
        });
    }
    Ok(Census { usable, distinct })
}

/// The service's user list, streamed into `remote`, or why it cannot be had.
async fn user_list(
    config: &ReconcileConfig,
    stop: Stop,
    remote: &mut Remote,
) -> Result<Listed, ReconcileError> {
    let client = Client::new(&config.client, stop)?;
    match client.list_users(&config.service_id, remote).await.result {
        Retried::Done(Ok(listed)) => Ok(listed),
        Retried::Done(Err(ListError::Fatal(fatal))) => Err(ReconcileError::List(fatal.to_string())),
        Retried::Done(Err(ListError::Abandoned)) => Err(match remote.failed.take() {
            Some(e) => ReconcileError::Spill(e),
            None => ReconcileError::List(ListError::Abandoned.to_string()),
        }),
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
