//! The lookup stage: a thread with its own read-only ledger connection that attaches to each chunk
//! of records what the ledger holds for their ids, ahead of the loop's decisions. On a nightly run
//! where nearly every row is synced these lookups are most of the work, and here they overlap with
//! reading the file and with deciding. Its view may trail this run's own writes; [`Looked::visible`]
//! says how far, and [`crate::plan::Planner`] covers the gap.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc::{Receiver, channel};

use crate::input::{ChunkResult, InputError, Record, Row};
use crate::ledger::{Entry, Ledger, LedgerError};

/// Chunks looked up ahead of the loop, per lane.
const CHUNKS_AHEAD: usize = 2;
/// Lookup threads: SQLite spends most of a nightly run here, and one connection uses one core.
pub const LANES: usize = 2;

/// A chunk of records with what the ledger held for them.
#[derive(Debug)]
pub struct Looked {
    /// The records, in file order.
    pub records: Vec<Record>,
    /// What the ledger held for each record's id, by position; `None` for invalid rows.
    pub found: Vec<Option<Entry>>,
    /// The lookup saw at least the writer's first `visible` commits ([`crate::writer::Writer::commits`]).
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
}

impl Lookups {
    /// The next chunk in file order; `None` after the last. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Chunk> {
        let lane = self.lanes.get_mut(self.next)?;
        let chunk = lane.recv().await;
        self.next = (self.next + 1) % self.lanes.len();
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
                                Ok(found) => Chunk::Looked(Looked {
                                    records,
                                    found,
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
    Ok(Lookups {
        lanes: out,
        next: 0,
    })
}

fn look_up(
    ledger: Option<&mut Ledger>,
    service_id: &str,
    records: &[Record],
) -> Result<Vec<Option<Entry>>, LedgerError> {
    let mut found = Vec::with_capacity(records.len());
    found.resize_with(records.len(), || None);
    let Some(ledger) = ledger else {
        return Ok(found);
    };
    let (at, ids): (Vec<usize>, Vec<&str>) = records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match &r.row {
            Row::User(user) => Some((i, user.id_in_service.as_str())),
            Row::Invalid(_) => None,
        })
        .unzip();
    for (i, entry) in at.into_iter().zip(ledger.lookup_chunk(service_id, &ids)?) {
        found[i] = entry;
    }
    Ok(found)
}
