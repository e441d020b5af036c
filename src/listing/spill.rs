//! A user list's entries sorted by `id_in_service` without holding them: entries gather in a
//! buffer of [`RUN_BYTES`]; a full buffer is sorted and written to an unnamed temporary file as
//! one run; reading merges the runs and hands over one id at a time with its [`Sightings`]. Memory
//! stays at one buffer plus a small read buffer per run, whatever the list's size. Ids come in
//! byte order, which is SQLite's order for TEXT, so the groups can be walked beside the ledger.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;

use super::Sightings;

/// Entries held in memory before they are sorted and written out: about 90,000 users, so a
/// million make a dozen runs, and ten million a hundred or so, each read back through
/// [`READ_BYTES`].
const RUN_BYTES: usize = 8 * 1024 * 1024;

/// What each run is read back through.
const READ_BYTES: usize = 32 * 1024;

/// A record's head: the lengths of its id and UserID (little-endian `u32`s), then their bytes.
const HEAD_BYTES: usize = 8;

/// The list's entries, as `(id_in_service, UserID)` pairs.
#[derive(Debug)]
pub struct Spill {
    /// The current run's records, back to back.
    arena: Vec<u8>,
    /// The current run's records in order: each one's first eight id bytes and its offset.
    order: Vec<(u64, u32)>,
    /// Whether `order` is sorted.
    sorted: bool,
    run_bytes: usize,
    /// The runs written so far (each is a byte range of the file, sorted).
    file: Option<File>,
    runs: Vec<(u64, u64)>,
    written: u64,
}

impl Default for Spill {
    fn default() -> Spill {
        Spill::with_run_bytes(RUN_BYTES)
    }
}

impl Spill {
    /// A spill whose runs hold about `run_bytes` of records each.
    pub fn with_run_bytes(run_bytes: usize) -> Spill {
        Spill {
            arena: Vec::new(),
            order: Vec::new(),
            sorted: true,
            run_bytes,
            file: None,
            runs: Vec::new(),
            written: 0,
        }
    }

    /// Forgets every entry (the temporary file goes too).
    pub fn clear(&mut self) {
        *self = Spill::with_run_bytes(self.run_bytes);
    }

    /// Adds one entry; a full buffer is written out as a run.
    pub fn push(&mut self, id: &str, user_id: &str) -> io::Result<()> {
        let too_long = || io::Error::new(io::ErrorKind::InvalidInput, "an entry over 4 GiB");
        let id_len = u32::try_from(id.len()).map_err(|_| too_long())?;
        let uid_len = u32::try_from(user_id.len()).map_err(|_| too_long())?;
        if !self.arena.is_empty() && self.arena.len() + HEAD_BYTES + id.len() > self.run_bytes {
            self.write_run()?;
        }
        let offset = u32::try_from(self.arena.len()).map_err(|_| too_long())?;
        self.order.push((prefix(id.as_bytes()), offset));
        self.arena.extend_from_slice(&id_len.to_le_bytes());
        self.arena.extend_from_slice(&uid_len.to_le_bytes());
        self.arena.extend_from_slice(id.as_bytes());
        self.arena.extend_from_slice(user_id.as_bytes());
        self.sorted = false;
        Ok(())
    }

    /// The entries grouped by id, in byte order of the ids; may be called again to read them
    /// again.
    pub fn groups(&mut self) -> io::Result<Groups<'_>> {
        if self.file.is_some() && !self.order.is_empty() {
            self.write_run()?;
        }
        self.sort();
        let mut sources: Vec<Source<'_>> = Vec::with_capacity(self.runs.len() + 1);
        if let Some(file) = &self.file {
            for &(start, end) in &self.runs {
                sources.push(Source::File(FileRun::new(file, start, end)));
            }
        }
        if !self.order.is_empty() {
            sources.push(Source::Memory {
                arena: &self.arena,
                order: &self.order,
                next: 0,
            });
        }
        Groups::new(sources)
    }

    fn sort(&mut self) {
        if self.sorted {
            return;
        }
        let arena = &self.arena;
        // Equal ids keep the list's order (by offset): "first" means first listed.
        self.order.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| record(arena, a.1).0.cmp(record(arena, b.1).0))
                .then(a.1.cmp(&b.1))
        });
        self.sorted = true;
    }

    /// Sorts the buffer and appends it to the file as one run.
    fn write_run(&mut self) -> io::Result<()> {
        self.sort();
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(tempfile::tempfile()?),
        };
        let start = self.written;
        let mut out = BufWriter::with_capacity(READ_BYTES, &*file);
        for &(_, offset) in &self.order {
            let (id, uid) = record(&self.arena, offset);
            out.write_all(&self.arena[offset as usize..offset as usize + HEAD_BYTES])?;
            out.write_all(id)?;
            out.write_all(uid)?;
            self.written += (HEAD_BYTES + id.len() + uid.len()) as u64;
        }
        out.flush()?;
        drop(out);
        self.runs.push((start, self.written));
        self.arena.clear();
        self.order.clear();
        self.sorted = true;
        Ok(())
    }
}

/// An id's first eight bytes as a number that sorts as they do (shorter ids padded with zeros,
/// which sort first either way): most comparisons end here.
fn prefix(id: &[u8]) -> u64 {
    let mut bytes = [0; 8];
    let n = id.len().min(8);
    bytes[..n].copy_from_slice(&id[..n]);
    u64::from_be_bytes(bytes)
}

/// The id and UserID of the record at `offset` of a buffer `push` filled.
fn record(arena: &[u8], offset: u32) -> (&[u8], &[u8]) {
    let at = offset as usize;
    let (id_len, uid_len) = lengths(&arena[at..at + HEAD_BYTES]);
    let id_at = at + HEAD_BYTES;
    (
        &arena[id_at..id_at + id_len],
        &arena[id_at + id_len..id_at + id_len + uid_len],
    )
}

fn lengths(head: &[u8]) -> (usize, usize) {
    let word = |i: usize| {
        let mut w = [0; 4];
        w.copy_from_slice(&head[i..i + 4]);
        u32::from_le_bytes(w) as usize
    };
    (word(0), word(4))
}

/// One sorted run being read.
enum Source<'a> {
    Memory {
        arena: &'a [u8],
        order: &'a [(u64, u32)],
        next: usize,
    },
    File(FileRun<'a>),
}

impl Source<'_> {
    /// Reads the next record into `id` and `uid`; `false` at the run's end.
    fn read(&mut self, id: &mut Vec<u8>, uid: &mut Vec<u8>) -> io::Result<bool> {
        id.clear();
        uid.clear();
        match self {
            Source::Memory { arena, order, next } => {
                let Some(&(_, offset)) = order.get(*next) else {
                    return Ok(false);
                };
                *next += 1;
                let (i, u) = record(arena, offset);
                id.extend_from_slice(i);
                uid.extend_from_slice(u);
                Ok(true)
            }
            Source::File(run) => run.read(id, uid),
        }
    }
}

/// A run in the temporary file, read through a buffer of its own.
struct FileRun<'a> {
    file: &'a File,
    /// The next byte of the file to read, and the run's end.
    at: u64,
    end: u64,
    buffer: Vec<u8>,
    /// The unread part of `buffer`.
    from: usize,
}

impl<'a> FileRun<'a> {
    fn new(file: &'a File, start: u64, end: u64) -> FileRun<'a> {
        FileRun {
            file,
            at: start,
            end,
            buffer: Vec::new(),
            from: 0,
        }
    }

    fn read(&mut self, id: &mut Vec<u8>, uid: &mut Vec<u8>) -> io::Result<bool> {
        if !self.fill(HEAD_BYTES)? {
            return Ok(false);
        }
        let (id_len, uid_len) = lengths(&self.buffer[self.from..self.from + HEAD_BYTES]);
        self.from += HEAD_BYTES;
        if !self.fill(id_len + uid_len)? {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "a temporary file of the user list ends early",
            ));
        }
        id.extend_from_slice(&self.buffer[self.from..self.from + id_len]);
        self.from += id_len;
        uid.extend_from_slice(&self.buffer[self.from..self.from + uid_len]);
        self.from += uid_len;
        Ok(true)
    }

    /// Makes `n` unread bytes available; `false` if the run has fewer left.
    fn fill(&mut self, n: usize) -> io::Result<bool> {
        let held = self.buffer.len() - self.from;
        if held >= n {
            return Ok(true);
        }
        let left = usize::try_from(self.end - self.at).unwrap_or(usize::MAX);
        if held + left < n {
            return Ok(false);
        }
        self.buffer.drain(..self.from);
        self.from = 0;
        let want = (n - held).max(READ_BYTES).min(left);
        let old = self.buffer.len();
        self.buffer.resize(old + want, 0);
        self.file.read_exact_at(&mut self.buffer[old..], self.at)?;
        self.at += want as u64;
        Ok(true)
    }
}

/// The next record of one run, ordered by id and then by run (the earlier run was listed first).
#[derive(Debug, PartialEq, Eq)]
struct Head {
    id: Vec<u8>,
    uid: Vec<u8>,
    run: usize,
}

impl Ord for Head {
    fn cmp(&self, other: &Head) -> Ordering {
        self.id.cmp(&other.id).then(self.run.cmp(&other.run))
    }
}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Head) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The entries, one id at a time, in byte order.
pub struct Groups<'a> {
    sources: Vec<Source<'a>>,
    heap: BinaryHeap<Reverse<Head>>,
    /// The record taken last (its buffers are swapped with the heap's, never reallocated).
    id: Vec<u8>,
    uid: Vec<u8>,
    group: String,
    sightings: Sightings,
}

impl<'a> Groups<'a> {
    fn new(mut sources: Vec<Source<'a>>) -> io::Result<Groups<'a>> {
        let mut heap = BinaryHeap::with_capacity(sources.len());
        for (run, source) in sources.iter_mut().enumerate() {
            let mut head = Head {
                id: Vec::new(),
                uid: Vec::new(),
                run,
            };
            if source.read(&mut head.id, &mut head.uid)? {
                heap.push(Reverse(head));
            }
        }
        Ok(Groups {
            sources,
            heap,
            id: Vec::new(),
            uid: Vec::new(),
            group: String::new(),
            sightings: Sightings::default(),
        })
    }

    /// The next id and what its entries say, or `None` after the last.
    pub fn next_id(&mut self) -> io::Result<Option<(&str, &Sightings)>> {
        if !self.take()? {
            return Ok(None);
        }
        self.group.clear();
        self.group.push_str(text(&self.id)?);
        self.sightings.clear();
        self.sightings.see(text(&self.uid)?, None);
        while self
            .heap
            .peek()
            .is_some_and(|top| top.0.id == self.group.as_bytes())
        {
            self.take()?;
            self.sightings.see(text(&self.uid)?, None);
        }
        Ok(Some((&self.group, &self.sightings)))
    }

    /// Takes the smallest record into `id` and `uid`, and its run's next one into the heap.
    fn take(&mut self) -> io::Result<bool> {
        let Some(Reverse(mut head)) = self.heap.pop() else {
            return Ok(false);
        };
        std::mem::swap(&mut self.id, &mut head.id);
        std::mem::swap(&mut self.uid, &mut head.uid);
        if self.sources[head.run].read(&mut head.id, &mut head.uid)? {
            self.heap.push(Reverse(head));
        }
        Ok(true)
    }
}

/// Bytes written from a `&str`, read back.
fn text(bytes: &[u8]) -> io::Result<&str> {
    std::str::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::super::Verdict;
    use super::*;

    /// Every group as `(id, times, UserID or "?")`.
    fn read_all(spill: &mut Spill) -> Vec<(String, u64, String)> {
        let mut groups = spill.groups().expect("groups");
        let mut out = Vec::new();
        while let Some((id, sightings)) = groups.next_id().expect("next") {
            let (times, uid) = match sightings.verdict() {
                Some(Verdict::One { user_id, .. }) => (0, user_id.to_string()),
                Some(Verdict::Several { times, .. }) => (times, "?".into()),
                other => panic!("{other:?}"),
            };
            out.push((id.to_string(), times, uid));
        }
        out
    }

    #[test]
    fn entries_come_back_grouped_in_byte_order_across_runs() {
        let ids: Vec<String> = (0..500u32)
            .map(|i| format!("{}@example.com", (i * 7919) % 500))
            .collect();
        for run_bytes in [1, 64, 1000, 1 << 20] {
            let mut spill = Spill::with_run_bytes(run_bytes);
            for id in &ids {
                spill.push(id, &format!("u-{id}")).expect("push");
            }
            // One id listed again with the same UserID, one with another.
            spill
                .push("7@example.com", "u-7@example.com")
                .expect("push");
            spill.push("9@example.com", "other").expect("push");
            let groups = read_all(&mut spill);
            let mut want: Vec<String> = ids.clone();
            want.sort();
            assert_eq!(
                groups.iter().map(|g| g.0.clone()).collect::<Vec<_>>(),
                want,
                "runs of {run_bytes} bytes"
            );
            for (id, times, uid) in &groups {
                match id.as_str() {
                    "9@example.com" => assert_eq!((*times, uid.as_str()), (2, "?")),
                    _ => assert_eq!(uid, &format!("u-{id}")),
                }
            }
            assert_eq!(read_all(&mut spill), groups, "read twice");
        }
    }

    #[test]
    fn equal_ids_keep_the_list_order_and_prefixes_do_not_confuse_the_order() {
        let mut spill = Spill::with_run_bytes(40);
        for (id, uid) in [
            ("abcdefgh2", "x"),
            ("abcdefgh", "first"),
            ("abcdefgh\0", "y"),
            ("abcdefgh", "a b"),
            ("", "z"),
            ("é", "w"),
        ] {
            spill.push(id, uid).expect("push");
        }
        let mut groups = spill.groups().expect("groups");
        let mut ids = Vec::new();
        while let Some((id, sightings)) = groups.next_id().expect("next") {
            if id == "abcdefgh" {
                // The first listed UserID is the well-formed one, the malformed one came later.
                assert!(matches!(
                    sightings.verdict(),
                    Some(Verdict::Several { times: 2, .. })
                ));
            }
            ids.push(id.to_string());
        }
        assert_eq!(ids, ["", "abcdefgh", "abcdefgh\0", "abcdefgh2", "é"]);
        spill.clear();
        assert!(read_all(&mut spill).is_empty());
    }
}
