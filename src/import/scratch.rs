//! A dry run's memory of the new ids it has planned to send. A real run forgets a new id once its
//! row is committed and lookups find it in the ledger; a dry run writes nothing, so it would hold
//! every new id of the file to tell a repeat from a first occurrence (10M new rows: gigabytes).
//! They go to a private temporary SQLite database instead, which SQLite keeps in a small cache and
//! spills to a file that is deleted when the run ends.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use rusqlite::{Connection, params};
use thiserror::Error;

/// The temporary database failed (the temporary directory is full or unwritable).
#[derive(Debug, Error)]
#[error(
    "the dry run's temporary database failed: {0} (it lives in $TMPDIR, or /var/tmp or /tmp; free some space there or point TMPDIR elsewhere)"
)]
pub struct ScratchError(#[from] rusqlite::Error);

/// New ids seen in this run, with the line and phone of their first occurrence.
#[derive(Debug)]
pub enum NewIds {
    /// A real run: few, since they leave once lookups see them in the ledger.
    Memory(HashMap<String, (u64, String), foldhash::fast::RandomState>),
    /// A dry run: all of the file's new ids, on disk.
    Disk(Connection),
}

/// A private database in a temporary file that SQLite deletes on close, kept in a small cache,
/// with `schema`: what a dry run holds of a file that grows with it.
pub(super) fn temporary(schema: &str) -> Result<Connection, ScratchError> {
    let conn = Connection::open("")?;
    conn.execute_batch(
        "PRAGMA cache_size = -2000; PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;",
    )?;
    conn.execute_batch(schema)?;
    Ok(conn)
}

impl NewIds {
    /// In memory for a real run, on disk for a dry run.
    pub fn new(dry_run: bool) -> Result<NewIds, ScratchError> {
        if !dry_run {
            return Ok(NewIds::Memory(HashMap::default()));
        }
        Ok(NewIds::Disk(temporary(
            "CREATE TABLE new_ids (id TEXT PRIMARY KEY, line INTEGER NOT NULL, phone TEXT NOT NULL)
                 WITHOUT ROWID;",
        )?))
    }

    /// Notes `id` at `line` with `phone` unless it was seen before; returns the first line and
    /// phone of an id seen before.
    pub fn first_or_insert(
        &mut self,
        id: &str,
        line: u64,
        phone: &str,
    ) -> Result<Option<(u64, String)>, ScratchError> {
        match self {
            // One hash of the id: the planner calls this for every new id it sends.
            NewIds::Memory(map) => match map.entry(id.to_string()) {
                Entry::Occupied(first) => Ok(Some(first.get().clone())),
                Entry::Vacant(slot) => {
                    slot.insert((line, phone.to_string()));
                    Ok(None)
                }
            },
            NewIds::Disk(conn) => {
                // One statement per row: the no-op update makes RETURNING give the row that was
                // there first, or the one just inserted.
                let (first, first_phone): (u64, String) = conn
                    .prepare_cached(
                        "INSERT INTO new_ids (id, line, phone) VALUES (?1, ?2, ?3)
                         ON CONFLICT (id) DO UPDATE SET line = line RETURNING line, phone",
                    )?
                    .query_row(params![id, line, phone], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok((first != line).then_some((first, first_phone)))
            }
        }
    }

    /// Forgets `id` (now found in the ledger by lookups).
    pub fn remove(&mut self, id: &str) {
        if let NewIds::Memory(map) = self {
            map.remove(id);
        }
    }

    /// The first line and phone of an id held in memory: a real run's new ids, which lookups may
    /// find in the ledger before the loop hears of their commit. (A dry run's ledger does not
    /// change, so an id it holds on disk is never found there.)
    pub fn in_memory(&self, id: &str) -> Option<&(u64, String)> {
        match self {
            NewIds::Memory(map) => map.get(id),
            NewIds::Disk(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_kinds_remember_the_first_occurrence() {
        for dry_run in [false, true] {
            let mut ids = NewIds::new(dry_run).expect("new");
            let mut first = |id, line, phone| ids.first_or_insert(id, line, phone).expect("ok");
            assert_eq!(first("a", 2, "+3725"), None);
            assert_eq!(first("b", 3, "+3726"), None);
            assert_eq!(first("a", 4, "+3727"), Some((2, "+3725".to_string())));
            assert_eq!(first("b", 5, "+3726"), Some((3, "+3726".to_string())));
            assert_eq!(first("a", 6, "+3725"), Some((2, "+3725".to_string())));
        }
    }
}
