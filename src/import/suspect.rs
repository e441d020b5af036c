//! Suspect duplicates: a new id that equals another of the file or of the ledger after Unicode
//! normalisation and case folding (`Alice@x.com` / `alice@x.com`, `José` composed and
//! decomposed). Ids stay exact, since they are the customer's keys; such a spelling is only
//! warned about, skipped, or made to stop the run (`--on-suspect-duplicate`).
//!
//! The ledger's spellings come with each chunk's lookup (its folded keys' index). This run's own,
//! not yet visible to lookups, are kept here by folded key until they are; a dry run writes
//! nothing to the ledger, so it keeps all of them, on disk (as [`super::scratch`] does its ids).

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension as _, params};

use super::scratch::{ScratchError, temporary};
use crate::user::{fold_key, folded};

/// The first spelling of each folded id this run sent that lookups may not see yet.
#[derive(Debug)]
pub enum Spellings {
    /// A real run: the new ids in flight or awaiting their commit's visibility.
    Memory(HashMap<i64, (u64, String), foldhash::fast::RandomState>),
    /// A dry run: every new id of the file.
    Disk(Connection),
}

impl Spellings {
    /// In memory for a real run, on disk for a dry run.
    pub fn new(dry_run: bool) -> Result<Spellings, ScratchError> {
        if !dry_run {
            return Ok(Spellings::Memory(HashMap::default()));
        }
        Ok(Spellings::Disk(temporary(
            "CREATE TABLE spellings (key INTEGER NOT NULL, id TEXT NOT NULL, line INTEGER NOT NULL,
                                     PRIMARY KEY (key, id)) WITHOUT ROWID;
             CREATE INDEX spellings_first ON spellings (key, line);",
        )?))
    }

    /// The line and id of an earlier spelling of `id` this run sent, if there is one.
    pub fn earlier(&self, id: &str) -> Result<Option<(u64, String)>, ScratchError> {
        let key = fold_key(id);
        match self {
            Spellings::Memory(map) => Ok(map
                .get(&key)
                .filter(|(_, spelling)| same_person(spelling, id))
                .cloned()),
            Spellings::Disk(conn) => {
                // The first by line, through the index: many spellings of one key cost no more
                // than one.
                let first: Option<(u64, String)> = conn
                    .prepare_cached(
                        "SELECT line, id FROM spellings WHERE key = ?1 AND id <> ?2
                         ORDER BY line LIMIT 1",
                    )?
                    .query_row(params![key, id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                Ok(first.filter(|(_, spelling)| same_person(spelling, id)))
            }
        }
    }

    /// Notes that `id`, at `line`, is sent (the first spelling of its key is kept).
    pub fn note(&mut self, id: &str, line: u64) -> Result<(), ScratchError> {
        let key = fold_key(id);
        match self {
            Spellings::Memory(map) => {
                map.entry(key).or_insert_with(|| (line, id.to_string()));
            }
            Spellings::Disk(conn) => {
                conn.prepare_cached(
                    "INSERT INTO spellings (key, id, line) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                )?
                .execute(params![key, id, line])?;
            }
        }
        Ok(())
    }

    /// Forgets `id` (now found in the ledger by lookups, with its folded key).
    pub fn remove(&mut self, id: &str) {
        if let Spellings::Memory(map) = self {
            let key = fold_key(id);
            if map.get(&key).is_some_and(|(_, first)| first == id) {
                map.remove(&key);
            }
        }
    }
}

/// Whether two different ids are spellings of one (the key is a hash: the text decides).
fn same_person(a: &str, b: &str) -> bool {
    a != b && folded(a) == folded(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_kinds_find_the_first_other_spelling() {
        for dry_run in [false, true] {
            let mut spellings = Spellings::new(dry_run).expect("new");
            let mut check = |id: &str, line| {
                let earlier = spellings.earlier(id).expect("ok");
                if earlier.is_none() {
                    spellings.note(id, line).expect("ok");
                }
                earlier
            };
            assert_eq!(check("Alice@x.com", 2), None);
            assert_eq!(check("bob@x.com", 3), None);
            assert_eq!(check("alice@x.com", 4), Some((2, "Alice@x.com".into())));
            assert_eq!(check("Jos\u{e9}", 5), None);
            assert_eq!(check("Jose\u{301}", 6), Some((5, "Jos\u{e9}".into())));
            // The same id again is a plain duplicate, not another spelling.
            assert_eq!(check("bob@x.com", 7), None);
        }
    }
}
