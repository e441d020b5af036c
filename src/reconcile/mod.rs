//! `reconcile`: lists the service's users at Verigator once and compares them with the ledger,
//! user by user. Reports users Verigator has that the ledger does not know, ledger rows whose user
//! is gone at Verigator, and UserIDs that differ or are unknown. Changes the ledger only with
//! `--fix`. Knows nothing of CSV.
//!
//! - `findings.rs`: what was found, and how it is shown.

mod findings;

use std::collections::{HashMap, HashSet};

use thiserror::Error;

use crate::client::{Client, ClientError, ListError, Retried, UserList, is_valid_user_id};
use crate::config::ReconcileConfig;
use crate::ledger::{Ledger, LedgerError, Status};
use crate::signals::Signals;
use crate::throttle::Stop;

pub use findings::{Disagreement, Findings, Kind};

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
    let Remote {
        mut users,
        doubtful,
    } = Remote::from_list(list)?;
    let rows = ledger.known_users(&config.service_id)?;
    let with_user_id = rows.iter().filter(|(_, _, uid)| uid.is_some()).count() as u64;
    // An empty list for a ledger full of UserIDs is more likely a broken answer than a service
    // whose users were all deleted: fixing on it would clear every UserID.
    let fix = config.fix && (config.force || !(users.is_empty() && with_user_id > 0));
    let mut findings = Findings {
        service_id: config.service_id.clone(),
        verigator_users: users.len() as u64,
        ledger_rows: rows.len() as u64,
        ..Findings::default()
    };
    compare(
        &mut findings,
        rows,
        (&mut users, &doubtful),
        |kind, id, uid| {
            if !fix || signals.raised() {
                return Ok(false);
            }
            apply(&mut ledger, config, kind, id, uid)?;
            Ok(true)
        },
    )?;
    findings.only_at_verigator(users);
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

/// Goes through the ledger's rows against Verigator's users (taking the ones it meets), noting
/// each disagreement; `fix` corrects one and says whether it did (after a signal it does not:
/// nothing here awaits, so the handler's own flag is what tells).
fn compare(
    findings: &mut Findings,
    rows: Vec<(String, Status, Option<String>)>,
    (users, doubtful): (&mut HashMap<String, String>, &HashSet<String>),
    mut fix: impl FnMut(Kind, &str, Option<&str>) -> Result<bool, ReconcileError>,
) -> Result<(), ReconcileError> {
    for (id, status, ledger_uid) in rows {
        if doubtful.contains(&id) {
            findings.doubtful += 1;
            continue;
        }
        let remote_uid = users.remove(&id);
        let Some(kind) = findings.classify(status, ledger_uid.as_ref(), remote_uid.as_ref()) else {
            continue;
        };
        if fix(kind, &id, remote_uid.as_deref())? {
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
    Ok(())
}

/// Verigator's side of the comparison.
struct Remote {
    /// `id_in_service` → UserID, for the ids listed once with a well-formed UserID.
    users: HashMap<String, String>,
    /// Ids the list gives a malformed UserID, or several: never compared or taken, no guess.
    doubtful: HashSet<String>,
}

impl Remote {
    /// Sorts the list out; a list holding fewer distinct ids than its count says is truncated
    /// (an id listed twice must not hide a missing one).
    fn from_list(list: UserList) -> Result<Remote, ReconcileError> {
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
        let mut users: HashMap<String, String> = HashMap::new();
        let mut doubtful: HashSet<String> = HashSet::new();
        for user in list.users {
            if !is_valid_user_id(&user.id) {
                doubtful.insert(user.id_in_service);
                continue;
            }
            match users.get(&user.id_in_service) {
                Some(seen) if *seen != user.id => {
                    doubtful.insert(user.id_in_service);
                }
                _ => {
                    users.insert(user.id_in_service, user.id);
                }
            }
        }
        for id in &doubtful {
            users.remove(id);
        }
        Ok(Remote { users, doubtful })
    }
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
