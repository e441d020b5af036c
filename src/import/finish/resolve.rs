//! UserIDs for the `present` rows that lack one, from the service's user list as it streams
//! past: only the wanted rows' sightings are kept in memory; every listed id goes to a spill on
//! disk, only to be counted distinctly (an id listed twice must not hide a missing one). A row is
//! resolved only by one well-formed UserID; anything else leaves it unresolved with the reason.

use std::collections::HashMap;
use std::ops::ControlFlow;

use super::super::Run;
use crate::client::{Client, ListError, ListSink, Listed, ListedUser, MAX_ENTRY_BYTES, Retried};
use crate::ledger::{Ledger, LedgerError, Unresolved};
use crate::listing::{Groups, Sightings, Spill, Verdict};
use crate::signals::Signals;
use crate::user::escape;

/// Why a row was not looked up after a stop.
const STOPPED: &str = "its UserID was not looked up: the run stopped first";

/// What the end of a run keeps of the list: the wanted rows' sightings, every id on disk.
struct Resolution<'w> {
    /// Each wanted id and its place in `sightings`.
    wanted: HashMap<&'w str, usize>,
    sightings: Vec<Sightings>,
    ids: Spill,
    /// Why the spill stopped the reading.
    failed: Option<std::io::Error>,
}

impl ListSink for Resolution<'_> {
    fn restart(&mut self) {
        self.sightings.iter_mut().for_each(Sightings::clear);
        self.ids.clear();
    }

    fn user(&mut self, user: ListedUser) -> ControlFlow<()> {
        if let Some(&i) = self.wanted.get(user.id_in_service.as_str()) {
            self.sightings[i].see(&user.id, user.ctime.as_ref());
        }
        match self.ids.push(&user.id_in_service, b"") {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                self.failed = Some(e);
                ControlFlow::Break(())
            }
        }
    }
}

/// How much of the service the list showed.
#[derive(Clone, Copy, Debug)]
struct Coverage {
    /// Distinct ids listed.
    distinct: u64,
    /// The count it claims.
    total: Option<u64>,
    /// Entries skipped as malformed.
    malformed: u64,
}

impl Coverage {
    fn truncated(self) -> Option<u64> {
        self.total.filter(|t| *t > self.distinct)
    }
}

impl Run<'_> {
    /// Lists the service's users and records the UserID of each wanted row the list names with
    /// exactly one; returns the rows left, each with why.
    pub(super) async fn resolve(
        &mut self,
        ledger: &mut Ledger,
        wanted: Vec<Unresolved>,
        client: &Client,
        (signals, unlisted): (&Signals, &mut Option<String>),
    ) -> Result<Vec<(Unresolved, String)>, LedgerError> {
        let mut sink = Resolution {
            wanted: wanted
                .iter()
                .enumerate()
                .map(|(i, u)| (u.id_in_service.as_str(), i))
                .collect(),
            sightings: vec![Sightings::default(); wanted.len()],
            ids: Spill::default(),
            failed: None,
        };
        let coverage = match self.list(client, &mut sink).await {
            Ok(coverage) => coverage,
            Err(why) => {
                *unlisted = Some(why.clone());
                return Ok(wanted.into_iter().map(|u| (u, why.clone())).collect());
            }
        };
        let mut left = Vec::new();
        for (row, sightings) in wanted.iter().zip(&sink.sightings) {
            // Nothing awaits in this loop: the signal handler's own flag says whether to stop.
            if signals.raised() {
                unlisted.get_or_insert_with(|| STOPPED.to_string());
                left.push((row.clone(), STOPPED.to_string()));
                continue;
            }
            let why = match sightings.verdict() {
                Some(Verdict::One { user_id, ctime }) => {
                    let service = &self.config.service_id;
                    ledger.resolve(service, &row.id_in_service, user_id, ctime)?;
                    self.counts.resolved += 1;
                    continue;
                }
                Some(Verdict::Malformed(bad)) => malformed_id(bad),
                Some(Verdict::Several { times, shown }) => listed_twice(times, &shown),
                None => not_listed(coverage),
            };
            left.push((row.clone(), why));
        }
        ledger.commit()?;
        Ok(left)
    }

    /// Reads the list into `sink` and counts its ids, or says why it cannot be had (a fatal
    /// answer also aborts the run); the next run tries again.
    async fn list(
        &mut self,
        client: &Client,
        sink: &mut Resolution<'_>,
    ) -> Result<Coverage, String> {
        let listed = match client
            .list_users(&self.config.service_id, sink)
            .await
            .result
        {
            Retried::Done(Ok(listed)) => listed,
            Retried::Done(Err(ListError::Fatal(fatal))) => {
                self.abort(fatal.to_string());
                return Err(format!("the user list could not be had: {fatal}"));
            }
            Retried::Done(Err(ListError::Abandoned)) => {
                let why = sink.failed.take().map_or_else(
                    || "the user list was not read to its end".to_string(),
                    |e| format!("the user list could not be kept on disk: {e}"),
                );
                return Err(self.warn_list(why));
            }
            Retried::Done(Err(e)) => return Err(self.warn_list(e.to_string())),
            Retried::GaveUp(reason) | Retried::Stopped(Some(reason)) => {
                return Err(self.warn_list(format!("listing users failed: {reason}")));
            }
            Retried::Stopped(None) => return Err(STOPPED.into()),
        };
        let distinct = count_distinct(&mut sink.ids)
            .map_err(|e| self.warn_list(format!("the user list could not be read back: {e}")))?;
        let coverage = Coverage {
            distinct,
            total: listed.total,
            malformed: listed.malformed,
        };
        self.warn_incomplete(&listed, coverage);
        Ok(coverage)
    }

    /// Says once why the list cannot be had; returns the reason each row is left with.
    fn warn_list(&mut self, why: String) -> String {
        self.progress
            .println(&format!("warning: {why}; the next run tries again"));
        format!("the user list could not be had: {why}")
    }

    fn warn_incomplete(&mut self, listed: &Listed, coverage: Coverage) {
        if let Some(total) = coverage.truncated() {
            self.progress.println(&format!(
                "warning: the user list holds {} users but claims {total}: it is truncated",
                coverage.distinct
            ));
        }
        if listed.malformed > 0 {
            self.progress.println(&format!(
                "warning: the user list has {} malformed entries (not an object with string id and id_in_service, or over {} KiB), skipped: it is incomplete",
                listed.malformed,
                MAX_ENTRY_BYTES / 1024
            ));
        }
    }
}

/// How many distinct ids the spill holds.
fn count_distinct(ids: &mut Spill) -> std::io::Result<u64> {
    let mut groups = Groups::of(ids)?;
    let mut distinct = 0;
    while groups.next_id()?.is_some() {
        distinct += 1;
    }
    Ok(distinct)
}

/// Why a wanted row is not in the list.
fn not_listed(coverage: Coverage) -> String {
    let Coverage {
        distinct,
        malformed,
        ..
    } = coverage;
    match (coverage.truncated(), malformed) {
        (Some(total), 0) => format!(
            "not in the user list, which is truncated ({distinct} of {total} users); the next run looks again"
        ),
        (Some(total), _) => format!(
            "not in the user list, which is truncated ({distinct} of {total} users) and had {malformed} malformed entries; the next run looks again"
        ),
        (None, 0) => {
            "not in the service's user list (another key or case?); the next run looks again"
                .to_string()
        }
        (None, _) => format!(
            "not in the user list, which had {malformed} malformed entries (skipped); the next run looks again"
        ),
    }
}

/// Why a row whose listed UserID cannot be stored is not resolved.
fn malformed_id(id: &str) -> String {
    let shown: String = id.chars().take(64).collect();
    format!(
        "the user list gives it a malformed UserID ({:?}): not stored; check the service",
        escape(&shown)
    )
}

/// Why a row listed more than once, with different UserIDs, is not resolved.
fn listed_twice(times: u64, shown: &[Option<&str>]) -> String {
    let shown: Vec<String> = shown
        .iter()
        .flatten()
        .map(|id| escape(&id.chars().take(64).collect::<String>()))
        .collect();
    format!(
        "the user list names it {times} times, with UserIDs {}: not guessed; check the service",
        shown.join(" and ")
    )
}
