//! Finding a chunk of the file's ids in the ledger. A rerun meets its rows in the order it wrote
//! them, so their rowids follow the file whatever order the ids sort in: a chunk is first read as
//! one run of rowids, near where a probe of its first ids says it lies, and only the ids not met
//! there are looked up by key. Ids in random order would otherwise cost one B-tree descent to a
//! leaf page of their own each (a no-op rerun of 1M such ids: 2.2 s by key alone).

use std::collections::HashMap;

use rusqlite::params;

use super::{Entry, Ledger, LedgerError, Status, sqlite};

/// Ids probed by key to place a chunk; a chunk none of whose first ids the ledger holds is most
/// likely new, and is looked up by key alone.
const PROBES: usize = 8;
/// Rows read past a chunk's length, for the rows of other services or ids interleaved with it.
const SLACK: i64 = 64;

impl Ledger {
    /// Looks up many users at once (a chunk of the file) and returns what the ledger holds for
    /// each id, by position. Sees what this connection has written, and what other connections
    /// have committed.
    pub fn lookup_chunk(
        &mut self,
        service_id: &str,
        ids: &[&str],
    ) -> Result<Vec<Option<Entry>>, LedgerError> {
        let mut found = vec![None; ids.len()];
        let probed = ids.len().min(PROBES);
        let placed = self.by_key(service_id, &ids[..probed])?;
        let start = placed
            .iter()
            .enumerate()
            .find_map(|(at, entry)| entry.as_ref().map(|e| e.rowid - at as i64));
        for (slot, entry) in found.iter_mut().zip(placed) {
            *slot = entry;
        }
        let Some(start) = start else {
            let rest = self.by_key(service_id, &ids[probed..])?;
            for (slot, entry) in found[probed..].iter_mut().zip(rest) {
                *slot = entry;
            }
            return Ok(found);
        };
        let mut near = self.by_rowid(service_id, start, ids.len() as i64 + SLACK)?;
        let mut missed = Vec::new();
        for (at, id) in ids.iter().enumerate().skip(probed) {
            match near.get(*id) {
                Some(entry) => found[at] = Some(entry.clone()),
                None => missed.push(at),
            }
        }
        near.clear();
        let keys: Vec<&str> = missed.iter().map(|&at| ids[at]).collect();
        for (at, entry) in missed.into_iter().zip(self.by_key(service_id, &keys)?) {
            found[at] = entry;
        }
        Ok(found)
    }

    /// The rows of `service_id` among `count` rowids from `start`, by id.
    fn by_rowid(
        &mut self,
        service_id: &str,
        start: i64,
        count: i64,
    ) -> Result<HashMap<String, Entry>, LedgerError> {
        let path = &self.path;
        let mut stmt = self
            .conn
            .prepare_cached(
                // `+service_id`: a range of rowids, never a scan of the service's key index.
                "SELECT id_in_service, rowid, phone_number, status, user_id, last_error
                 FROM users WHERE rowid BETWEEN ?2 AND ?3 AND +service_id = ?1",
            )
            .map_err(|e| sqlite(path, e))?;
        let mut rows = stmt
            .query(params![service_id, start, start.saturating_add(count)])
            .map_err(|e| sqlite(path, e))?;
        let mut near = HashMap::new();
        while let Some(r) = rows.next().map_err(|e| sqlite(path, e))? {
            let id: String = r.get(0).map_err(|e| sqlite(path, e))?;
            near.insert(id, entry(r).map_err(|e| sqlite(path, e))?);
        }
        Ok(near)
    }

    /// Looks ids up by key: one statement for them all, which halves the cost of one per id.
    fn by_key(
        &mut self,
        service_id: &str,
        ids: &[&str],
    ) -> Result<Vec<Option<Entry>>, LedgerError> {
        let mut found = vec![None; ids.len()];
        if ids.is_empty() {
            return Ok(found);
        }
        let list = self.json_list(ids)?;
        let path = &self.path;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT j.key, u.rowid, u.phone_number, u.status, u.user_id, u.last_error
                 FROM json_each(?2) AS j CROSS JOIN users AS u
                   ON u.service_id = ?1 AND u.id_in_service = j.value",
            )
            .map_err(|e| sqlite(path, e))?;
        let mut rows = stmt
            .query(params![service_id, list])
            .map_err(|e| sqlite(path, e))?;
        while let Some(r) = rows.next().map_err(|e| sqlite(path, e))? {
            let at: usize = r.get(0).map_err(|e| sqlite(path, e))?;
            if let Some(slot) = found.get_mut(at) {
                *slot = Some(entry(r).map_err(|e| sqlite(path, e))?);
            }
        }
        Ok(found)
    }
}

/// Another spelling of an id that the ledger holds for the service: equal to it after Unicode
/// normalisation and case folding ([`crate::user::folded`]), but not the same id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Twin {
    /// Its ledger row.
    pub rowid: i64,
    /// The id as the ledger holds it.
    pub id_in_service: String,
    /// When its row was last written (UTC, as the ledger keeps it).
    pub since: String,
}

impl Ledger {
    /// Whether it keeps each id's folded key (schema 6), so that other spellings can be found.
    pub fn knows_spellings(&self) -> bool {
        self.schema >= super::WITH_FOLDED
    }

    /// For each id, another spelling of it the ledger holds for the service for a user who has an
    /// account (else may have one: `retry`), the first written, if any: one statement for the
    /// chunk, one index step per id. A ledger older than schema 6 (a dry run does not upgrade
    /// it) has no keys: nothing is found.
    pub fn twins(
        &mut self,
        service_id: &str,
        ids: &[&str],
    ) -> Result<Vec<Option<Twin>>, LedgerError> {
        let mut found = vec![None; ids.len()];
        if ids.is_empty() || !self.knows_spellings() {
            return Ok(found);
        }
        let pairs: Vec<(i64, &str)> = ids
            .iter()
            .map(|id| (crate::user::fold_key(id), *id))
            .collect();
        let list = self.json_list(&pairs)?;
        let path = &self.path;
        let mut stmt = self
            .conn
            .prepare_cached(
                // One row per id, the first written, through the folded keys' index: many
                // spellings of one key cost no more than one. Only users who hold (or may hold)
                // an account at Verigator count: not those refused or deleted.
                "SELECT j.key, u.rowid, u.id_in_service, u.updated_at
                 FROM json_each(?2) AS j CROSS JOIN users AS u
                   ON u.rowid = (SELECT rowid FROM users
                                 WHERE service_id = ?1 AND folded = j.value ->> 0
                                   AND status IN ('synced', 'present', 'retry')
                                   AND id_in_service <> j.value ->> 1
                                 ORDER BY status = 'retry', rowid LIMIT 1)",
            )
            .map_err(|e| sqlite(path, e))?;
        let mut rows = stmt
            .query(params![service_id, list])
            .map_err(|e| sqlite(path, e))?;
        while let Some(r) = rows.next().map_err(|e| sqlite(path, e))? {
            let at: usize = r.get(0).map_err(|e| sqlite(path, e))?;
            let (Some(slot), Some(id)) = (found.get_mut(at), ids.get(at)) else {
                continue;
            };
            let twin: String = r.get(2).map_err(|e| sqlite(path, e))?;
            // The key is a hash: the spellings themselves must fold alike.
            if crate::user::folded(&twin) != crate::user::folded(id) {
                continue;
            }
            *slot = Some(Twin {
                rowid: r.get(1).map_err(|e| sqlite(path, e))?,
                id_in_service: twin,
                since: r.get(3).map_err(|e| sqlite(path, e))?,
            });
        }
        Ok(found)
    }
}

impl Ledger {
    /// A chunk's values as the JSON array `json_each` reads: one statement for the chunk.
    fn json_list<T: serde::Serialize + ?Sized>(&self, values: &T) -> Result<String, LedgerError> {
        serde_json::to_string(values).map_err(|e| LedgerError::Io {
            path: self.path.clone(),
            source: e.into(),
        })
    }
}

/// An entry from columns 1 to 5: rowid, phone, status, UserID, last error.
fn entry(r: &rusqlite::Row<'_>) -> Result<Entry, rusqlite::Error> {
    let status = r.get_ref(3)?.as_str().unwrap_or_default();
    Ok(Entry {
        rowid: r.get(1)?,
        phone_number: r.get(2)?,
        status: Status::parse(status).unwrap_or(Status::Retry),
        user_id: r.get(4)?,
        last_error: r.get(5)?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{ledger, write};
    use super::*;

    /// What each id is found as: its user id, or `-` when the ledger does not hold it.
    fn seen(l: &mut Ledger, service: &str, ids: &[&str]) -> Vec<String> {
        l.lookup_chunk(service, ids)
            .expect("lookup")
            .into_iter()
            .map(|e| e.and_then(|e| e.user_id).unwrap_or_else(|| "-".into()))
            .collect()
    }

    #[test]
    fn other_spellings_are_found_by_folded_key_in_their_service_only() {
        let (_d, mut l) = ledger();
        for (service, id) in [("s", "Alice@x.com"), ("s", "bob"), ("other", "CAROL")] {
            l.record(service, &write(id, Status::Synced, Some("u")))
                .expect("record");
        }
        l.commit().expect("commit");
        let twins: Vec<Option<String>> = l
            .twins("s", &["alice@x.com", "Alice@x.com", "BOB", "carol", "dave"])
            .expect("twins")
            .into_iter()
            .map(|t| t.map(|t| t.id_in_service))
            .collect();
        assert_eq!(
            twins,
            [
                Some("Alice@x.com".into()),
                None,
                Some("bob".into()),
                None,
                None
            ]
        );
    }

    #[test]
    fn rows_are_found_wherever_they_lie_and_only_in_their_service() {
        let (_d, mut l) = ledger();
        // Rowids 1..=200 for service s in this order, with another service's rows among them
        // and a stretch of s written much later (far from the rest).
        for i in 0..200 {
            let service = if i % 7 == 3 { "other" } else { "s" };
            let id = format!("id{i:03}");
            l.record(service, &write(&id, Status::Synced, Some(&format!("u{i}"))))
                .expect("record");
        }
        l.record("s", &write("late", Status::Synced, Some("u-late")))
            .expect("record");
        l.commit().expect("commit");
        // In write order, with new ids among them, an id of the other service (not ours), and
        // the late row: everything is found by rowid or by key, and nothing of "other" leaks.
        let ids = [
            "id011", "new1", "id012", "id003", "late", "id013", "new2", "id198",
        ];
        assert_eq!(
            seen(&mut l, "s", &ids),
            ["u11", "-", "u12", "-", "u-late", "u13", "-", "u198"]
        );
        // A chunk whose first ids are all new is looked up by key alone.
        let mut fresh: Vec<String> = (0..PROBES).map(|i| format!("n{i}")).collect();
        fresh.push("id100".into());
        let fresh: Vec<&str> = fresh.iter().map(String::as_str).collect();
        let found = seen(&mut l, "s", &fresh);
        assert_eq!(found.last().map(String::as_str), Some("u100"));
        assert!(found[..PROBES].iter().all(|u| u == "-"));
        // Repeats and reversed order find the same rows.
        assert_eq!(
            seen(&mut l, "s", &["id151", "id020", "id151", "id017"]),
            ["u151", "u20", "u151", "-"]
        );
        assert_eq!(seen(&mut l, "other", &["id017", "id151"]), ["u17", "-"]);
    }
}
