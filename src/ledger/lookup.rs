//! The lookup stage: threads (one per lane), each with its own read-only ledger connection, that
//! attach to each chunk of records what the ledger holds for their ids, ahead of the loop's
//! decisions. On a nightly run
//! where nearly every row is synced these lookups are most of the work, and here they overlap with
//! reading the file and with deciding. Its view may trail this run's own writes; [`Looked::visible`]
//! says how far, and the import's planner covers the gap.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc::{Receiver, channel};

use crate::input::{ChunkResult, InputError, Record, Row};
use crate::ledger::{Entry, Ledger, LedgerError, Twin};

/// Chunks looked up ahead of the loop, per lane.
const CHUNKS_AHEAD: usize = 2;
/// Lookup threads: SQLite spends most of a nightly run here, and one connection uses one core.
pub const LANES: usize = 2;

/// A chunk of records with what the ledger held for them.
#[derive(Debug)]
pub struct Looked {
    /// The records, in file order.
    pub records: Vec<Record>,
    /// What the ledger held for each record's id, by position; `None` for rows whose id could not
    /// be read.
    pub found: Vec<Option<Entry>>,
    /// For each record the ledger does not hold, another spelling of its id that it does.
    pub twins: Vec<Option<Twin>>,
    /// This lookup, and every later one, saw at least the writer's first `visible` commits
    /// ([`super::writer::Writer::commits`]).
    pub visible: u64,
}

/// What the stage passes on.
#[derive(Debug)]
pub enum Chunk {
    /// A chunk of records, looked up.
    Looked(Looked),
    /// The file broke here; nothing follows.
    Input(InputError),
    /// The ledger could not be read; nothing follows.
    Ledger(LedgerError),
}

/// The stage's output: its lanes, read in turn, give the chunks in file order.
#[derive(Debug)]
pub struct Lookups {
    lanes: Vec<Receiver<Chunk>>,
    next: usize,
    /// The commits each lane's latest lookup saw.
    seen: Vec<u64>,
}

impl Lookups {
    fn new(lanes: Vec<Receiver<Chunk>>) -> Lookups {
        let seen = vec![0; lanes.len()];
        Lookups {
            lanes,
            next: 0,
            seen,
        }
    }

    /// The next chunk in file order; `None` after the last. Cancel-safe.
    ///
    /// Each lane loads the commit counter on its own, so a later chunk can come from an older
    /// snapshot than an earlier one (lane 1 idle and quick, lane 0 busy). A lane's own lookups
    /// only move forward, though, so the least of the lanes' latest counts holds for this chunk
    /// and for all that follow: that is the `visible` passed on.
    pub async fn recv(&mut self) -> Option<Chunk> {
        let lane = self.next;
        let mut chunk = self.lanes.get_mut(lane)?.recv().await;
        self.next = (lane + 1) % self.lanes.len();
        if let Some(Chunk::Looked(looked)) = &mut chunk {
            self.seen[lane] = looked.visible;
            looked.visible = self.seen.iter().copied().min().unwrap_or_default();
        }
        chunk
    }
}

/// Starts the stage between the reader's lanes and the loop: one thread per lane, each with its
/// own connection (`None`: no ledger yet, as on a dry run before the first import, so every id is
/// unknown). `commits` is the writer's commit counter.
pub fn spawn(
    ledgers: Vec<Option<Ledger>>,
    service_id: &str,
    commits: &Arc<AtomicU64>,
    lanes: Vec<Receiver<ChunkResult>>,
) -> Result<Lookups, std::io::Error> {
    let mut out = Vec::with_capacity(lanes.len());
    for (mut ledger, mut chunks) in ledgers.into_iter().zip(lanes) {
        let (tx, rx) = channel(CHUNKS_AHEAD);
        let (service_id, commits) = (service_id.to_string(), Arc::clone(commits));
        std::thread::Builder::new()
            .name("ledger-lookup".into())
            .spawn(move || {
                while let Some(chunk) = chunks.blocking_recv() {
                    let message = match chunk {
                        Err(e) => Chunk::Input(e),
                        Ok(records) => {
                            // Loaded before the lookup's read transaction starts: a lower bound.
                            let visible = commits.load(Ordering::Acquire);
                            match look_up(ledger.as_mut(), &service_id, &records) {
                                Ok((found, twins)) => Chunk::Looked(Looked {
                                    records,
                                    found,
                                    twins,
                                    visible,
                                }),
                                Err(e) => Chunk::Ledger(e),
                            }
                        }
                    };
                    let last = !matches!(message, Chunk::Looked(_));
                    // A closed channel means the run stopped: nothing left to do.
                    if tx.blocking_send(message).is_err() || last {
                        return;
                    }
                }
            })?;
        out.push(rx);
    }
    Ok(Lookups::new(out))
}

/// What the ledger holds for each record's id, and for the new ids another spelling it holds.
type Found = (Vec<Option<Entry>>, Vec<Option<Twin>>);

/// Looks a chunk up: see [`Found`].
fn look_up(
    ledger: Option<&mut Ledger>,
    service_id: &str,
    records: &[Record],
) -> Result<Found, LedgerError> {
    let mut found = Vec::with_capacity(records.len());
    found.resize_with(records.len(), || None);
    let mut twins = Vec::with_capacity(records.len());
    twins.resize_with(records.len(), || None);
    let Some(ledger) = ledger else {
        return Ok((found, twins));
    };
    let (at, ids): (Vec<usize>, Vec<&str>) = records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match &r.row {
            Row::User(user) => Some((i, user.id_in_service.as_str())),
            // Looked up too: a row whose id could be read is in the file for `--prune`.
            Row::Invalid(r) => r.key.as_deref().map(|key| (i, key)),
        })
        .unzip();
    for (i, entry) in at.into_iter().zip(ledger.lookup_chunk(service_id, &ids)?) {
        found[i] = entry;
    }
    // Only ids about to be sent are checked for other spellings: a rerun's known ids cost nothing.
    let (at, new): (Vec<usize>, Vec<&str>) = records
        .iter()
        .zip(&found)
        .enumerate()
        .filter_map(|(i, (r, entry))| match (&r.row, entry) {
            (Row::User(user), None) => Some((i, user.id_in_service.as_str())),
            _ => None,
        })
        .unzip();
    for (i, twin) in at.into_iter().zip(ledger.twins(service_id, &new)?) {
        twins[i] = twin;
    }
    Ok((found, twins))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn looked(visible: u64) -> Chunk {
        Chunk::Looked(Looked {
            records: Vec::new(),
            found: Vec::new(),
            twins: Vec::new(),
            visible,
        })
    }

    #[tokio::test]
    async fn visible_never_runs_ahead_of_a_lane_that_lags() {
        let (tx0, rx0) = channel(4);
        let (tx1, rx1) = channel(4);
        let mut lookups = Lookups::new(vec![rx0, rx1]);
        // Lane 0 (chunks 0, 2, 4) is slow and saw commits 0, 5, 6; lane 1 (chunks 1, 3) was
        // quick and looked chunk 3 up before lane 0 got to chunk 2, at commit 3.
        for (tx, visible) in [(&tx0, 0), (&tx1, 3), (&tx0, 5), (&tx1, 3), (&tx0, 6)] {
            tx.send(looked(visible)).await.expect("send");
        }
        let mut passed = Vec::new();
        while passed.len() < 5 {
            match lookups.recv().await {
                Some(Chunk::Looked(l)) => passed.push(l.visible),
                other => panic!("unexpected {other:?}"),
            }
        }
        // Chunk 2 alone would say 5, but chunk 3 saw only 3: nothing past 3 may leave pending.
        assert_eq!(passed, [0, 0, 3, 3, 3]);
        drop((tx0, tx1));
        assert!(lookups.recv().await.is_none());
    }
}
