//! What a service's user list says, kept in bounded memory by the two that read it (the end of an
//! import, `reconcile`): the verdict on one id from every entry naming it (`Sightings`), and
//! records sorted by key on disk (`spill.rs`), from which a spilled list is read back one id at a
//! time (`Groups`). Knows nothing of HTTP or the ledger.

mod spill;

use std::io;

use crate::client::{MAX_USER_ID_BYTES, is_valid_user_id, plausible_ctime};

use spill::text;
pub use spill::{Records, Spill};

/// The most UserIDs an id listed with several is shown with.
const SHOWN: usize = 3;

/// What the entries naming one `id_in_service` say, in list order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sightings {
    /// Entries naming it.
    times: u64,
    /// The first well-formed UserID, with its entry's creation time (when it looks like one).
    first: Option<(String, Option<String>)>,
    /// Another well-formed UserID came after the first.
    differs: bool,
    /// The first malformed UserID (not storable: see [`is_valid_user_id`]).
    malformed: Option<String>,
    /// The smallest other UserIDs, sorted (at most [`SHOWN`]): to name them in a message.
    others: Vec<String>,
}

/// What a list's entries for one id come to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// One well-formed UserID, however often listed: the only one that may be taken.
    One {
        /// The UserID.
        user_id: &'a str,
        /// The creation time of its first entry.
        ctime: Option<&'a str>,
    },
    /// Only malformed UserIDs; the first of them.
    Malformed(&'a str),
    /// Different UserIDs (or a well-formed and a malformed one): never guessed at.
    Several {
        /// Entries naming the id.
        times: u64,
        /// The smallest of its UserIDs, sorted and distinct (at most three).
        shown: [Option<&'a str>; SHOWN],
    },
}

/// The longest prefix of `text` of at most `bytes` bytes that ends on a character boundary.
fn prefix(text: &str, bytes: usize) -> &str {
    let mut end = bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Sightings {
    /// Notes one more entry naming the id, with its UserID and creation time.
    pub fn see(&mut self, user_id: &str, ctime: Option<&serde_json::Value>) {
        // Only a bounded prefix is kept and named: entries may be 64 KiB, and a batch holds tens
        // of thousands of rows. One byte past the longest valid UserID keeps a cut one invalid.
        let user_id = prefix(user_id, MAX_USER_ID_BYTES + 1);
        self.times += 1;
        let is_first = |s: &Option<String>| s.as_deref() == Some(user_id);
        match (&self.first, is_valid_user_id(user_id)) {
            (Some((first, _)), true) if first == user_id => return,
            (None, true) => {
                self.first = Some((user_id.to_owned(), ctime.and_then(plausible_ctime)));
                return;
            }
            (Some(_), true) => self.differs = true,
            (_, false) if self.malformed.is_none() => {
                self.malformed = Some(user_id.to_owned());
                return;
            }
            (_, false) if is_first(&self.malformed) => return,
            (_, false) => {}
        }
        // A third UserID or more: only the smallest few are kept, to be named.
        if let Err(at) = self.others.binary_search_by(|o| o.as_str().cmp(user_id))
            && at < SHOWN
        {
            self.others.insert(at, user_id.to_owned());
            self.others.truncate(SHOWN);
        }
    }

    /// Forgets every entry, keeping the allocations.
    pub fn clear(&mut self) {
        self.times = 0;
        self.first = None;
        self.differs = false;
        self.malformed = None;
        self.others.clear();
    }

    /// What the entries come to; `None` when no entry named the id.
    pub fn verdict(&self) -> Option<Verdict<'_>> {
        match (&self.first, &self.malformed) {
            (None, None) => None,
            (Some((user_id, ctime)), None) if !self.differs => Some(Verdict::One {
                user_id,
                ctime: ctime.as_deref(),
            }),
            (None, Some(bad)) => Some(Verdict::Malformed(bad)),
            (first, bad) => {
                let mut all: Vec<&str> = first.iter().map(|(uid, _)| uid.as_str()).collect();
                all.extend(bad.as_deref());
                all.extend(self.others.iter().map(String::as_str));
                all.sort_unstable();
                all.dedup();
                let mut shown = [None; SHOWN];
                for (slot, uid) in shown.iter_mut().zip(all) {
                    *slot = Some(uid);
                }
                Some(Verdict::Several {
                    times: self.times,
                    shown,
                })
            }
        }
    }
}

/// A user list spilled as `(id_in_service, UserID)` records, read back one id at a time with
/// what its entries say, in byte order of the ids.
pub struct Groups<'a> {
    records: Records<'a>,
    id: String,
    sightings: Sightings,
}

impl<'a> Groups<'a> {
    /// Reads the list spilled into `spill`.
    pub fn of(spill: &'a mut Spill) -> io::Result<Groups<'a>> {
        Ok(Groups {
            records: spill.records()?,
            id: String::new(),
            sightings: Sightings::default(),
        })
    }

    /// The next id and what its entries say, or `None` after the last.
    pub fn next_id(&mut self) -> io::Result<Option<(&str, &Sightings)>> {
        let Some((id, user_id)) = self.records.next_record()? else {
            return Ok(None);
        };
        self.id.clear();
        self.id.push_str(id);
        self.sightings.clear();
        self.sightings.see(text(user_id)?, None);
        while self.records.peek_key() == Some(self.id.as_bytes()) {
            if let Some((_, user_id)) = self.records.next_record()? {
                self.sightings.see(text(user_id)?, None);
            }
        }
        Ok(Some((&self.id, &self.sightings)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(uids: &[&str]) -> Sightings {
        let mut s = Sightings::default();
        for uid in uids {
            s.see(uid, Some(&serde_json::json!("2024-01-02T03:04:05Z")));
        }
        s
    }

    #[test]
    fn a_spilled_list_comes_back_one_id_at_a_time_in_list_order() {
        let mut spill = Spill::with_run_bytes(64);
        for (id, uid) in [
            ("b", "u2"),
            ("a", "u1"),
            ("c", "u3"),
            ("a", "a b"),
            ("b", "u2"),
            ("c", "u4"),
        ] {
            spill.push(id, uid.as_bytes()).expect("push");
        }
        let mut groups = Groups::of(&mut spill).expect("groups");
        let mut seen = Vec::new();
        while let Some((id, sightings)) = groups.next_id().expect("next") {
            let verdict = match sightings.verdict() {
                Some(Verdict::One { user_id, .. }) => user_id.to_string(),
                Some(Verdict::Several { times, shown }) => {
                    let shown: Vec<&str> = shown.iter().flatten().copied().collect();
                    format!("{times}: {}", shown.join(" "))
                }
                other => format!("{other:?}"),
            };
            seen.push(format!("{id} {verdict}"));
        }
        assert_eq!(seen, ["a 2: a b u1", "b u2", "c 2: u3 u4"]);
    }

    #[test]
    fn one_user_id_however_often_listed_is_one() {
        let s = seen(&["u1", "u1", "u1"]);
        assert_eq!(
            s.verdict(),
            Some(Verdict::One {
                user_id: "u1",
                ctime: Some("2024-01-02T03:04:05Z")
            })
        );
        assert_eq!(Sightings::default().verdict(), None);
    }

    #[test]
    fn malformed_and_several_user_ids_are_never_taken() {
        assert_eq!(
            seen(&["a b", "../x"]).verdict(),
            Some(Verdict::Malformed("a b"))
        );
        let several = |uids: &[&str]| match seen(uids).verdict() {
            Some(Verdict::Several { times, shown }) => {
                let shown: Vec<String> = shown.iter().flatten().map(|s| s.to_string()).collect();
                (times, shown.join(" "))
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(several(&["u2", "u1"]), (2, "u1 u2".into()));
        assert_eq!(several(&["u1", "a b"]), (2, "a b u1".into()));
        assert_eq!(several(&["a b", "u1"]), (2, "a b u1".into()));
        let many = ["u9", "u8", "u9", "u7", "u1", "u5", "u1"];
        assert_eq!(several(&many), (7, "u1 u5 u7".into()));
        let mut s = seen(&["u1", "u2"]);
        s.clear();
        assert_eq!(s, Sightings::default());
    }

    #[test]
    fn only_a_prefix_of_a_long_user_id_is_kept() {
        let long = "é".repeat(30_000);
        let s = seen(&[&long, &format!("{long}x"), "u1", "u2"]);
        let kept = s.malformed.as_deref().expect("malformed kept");
        assert!(kept.len() <= MAX_USER_ID_BYTES + 1 && long.starts_with(kept));
        assert!(s.others.iter().all(|o| o.len() <= MAX_USER_ID_BYTES + 1));
    }
}
