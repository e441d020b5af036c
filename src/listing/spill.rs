//! Records sorted by key without holding them: `(key, value)` records gather in a buffer of
//! [`RUN_BYTES`]; a full buffer is sorted and written to an unnamed temporary file (in `TMPDIR`)
//! as one run; reading merges the runs. Memory stays at one buffer plus a small read buffer per
//! run, whatever the number of records. Keys come in byte order; equal keys in the order they
//! were pushed. The user list's entries are spilled by `id_in_service` (with their UserID), and
//! so are the ledger's rows of a service, so that reconcile can walk the two side by side.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;

/// Entries held in memory before they are sorted and written out: about 90,000 users, so a
/// million make a dozen runs, and ten million a hundred or so, each read back through
/// [`READ_BYTES`].
const RUN_BYTES: usize = 8 * 1024 * 1024;

/// What each run is read back through.
const READ_BYTES: usize = 32 * 1024;

/// A record's head: the lengths of its key and value (little-endian `u32`s), then their bytes.
const HEAD_BYTES: usize = 8;

/// Records, as `(key, value)` pairs, sorted by key on the way to disk.
#[derive(Debug)]
pub struct Spill {
    /// The current run's records, back to back.
    arena: Vec<u8>,
    /// The current run's records in order: each one's first eight key bytes and its offset.
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

    /// Forgets every record (the temporary file goes too).
    pub fn clear(&mut self) {
        *self = Spill::with_run_bytes(self.run_bytes);
    }

    /// Adds one record; a full buffer is written out as a run.
    pub fn push(&mut self, key: &str, value: &[u8]) -> io::Result<()> {
        let too_long = || io::Error::new(io::ErrorKind::InvalidInput, "a record over 4 GiB");
        let key_len = u32::try_from(key.len()).map_err(|_| too_long())?;
        let value_len = u32::try_from(value.len()).map_err(|_| too_long())?;
        let size = HEAD_BYTES + key.len() + value.len();
        if !self.arena.is_empty() && self.arena.len() + size > self.run_bytes {
            self.write_run()?;
        }
        let offset = u32::try_from(self.arena.len()).map_err(|_| too_long())?;
        self.order.push((prefix(key.as_bytes()), offset));
        self.arena.extend_from_slice(&key_len.to_le_bytes());
        self.arena.extend_from_slice(&value_len.to_le_bytes());
        self.arena.extend_from_slice(key.as_bytes());
        self.arena.extend_from_slice(value);
        self.sorted = false;
        Ok(())
    }

    /// The records in byte order of their keys; may be called again to read them again.
    pub fn records(&mut self) -> io::Result<Records<'_>> {
        if self.file.is_some() && !self.order.is_empty() {
            self.write_run()?;
            // Every record is on disk now: the buffer's memory goes back.
            self.arena = Vec::new();
            self.order = Vec::new();
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
        Records::new(sources)
    }

    fn sort(&mut self) {
        if self.sorted {
            return;
        }
        let arena = &self.arena;
        // Equal keys keep the order they came in (by offset): "first" means first listed.
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
            let (key, value) = record(&self.arena, offset);
            out.write_all(&self.arena[offset as usize..offset as usize + HEAD_BYTES])?;
            out.write_all(key)?;
            out.write_all(value)?;
            self.written += (HEAD_BYTES + key.len() + value.len()) as u64;
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

/// A key's first eight bytes as a number that sorts as they do (shorter keys padded with zeros,
/// which sort first either way): most comparisons end here.
fn prefix(key: &[u8]) -> u64 {
    let mut bytes = [0; 8];
    let n = key.len().min(8);
    bytes[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(bytes)
}

/// The key and value of the record at `offset` of a buffer `push` filled.
fn record(arena: &[u8], offset: u32) -> (&[u8], &[u8]) {
    let at = offset as usize;
    let (key_len, value_len) = lengths(&arena[at..at + HEAD_BYTES]);
    let key_at = at + HEAD_BYTES;
    (
        &arena[key_at..key_at + key_len],
        &arena[key_at + key_len..key_at + key_len + value_len],
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
    /// Reads the next record into `key` and `value`; `false` at the run's end.
    fn read(&mut self, key: &mut Vec<u8>, value: &mut Vec<u8>) -> io::Result<bool> {
        key.clear();
        value.clear();
        match self {
            Source::Memory { arena, order, next } => {
                let Some(&(_, offset)) = order.get(*next) else {
                    return Ok(false);
                };
                *next += 1;
                let (k, v) = record(arena, offset);
                key.extend_from_slice(k);
                value.extend_from_slice(v);
                Ok(true)
            }
            Source::File(run) => run.read(key, value),
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

    fn read(&mut self, key: &mut Vec<u8>, value: &mut Vec<u8>) -> io::Result<bool> {
        if !self.fill(HEAD_BYTES)? {
            return Ok(false);
        }
        let (key_len, value_len) = lengths(&self.buffer[self.from..self.from + HEAD_BYTES]);
        self.from += HEAD_BYTES;
        if !self.fill(key_len + value_len)? {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "a temporary file of the user list ends early",
            ));
        }
        key.extend_from_slice(&self.buffer[self.from..self.from + key_len]);
        self.from += key_len;
        value.extend_from_slice(&self.buffer[self.from..self.from + value_len]);
        self.from += value_len;
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

/// The next record of one run, ordered by key and then by run (the earlier run came first).
#[derive(Debug, PartialEq, Eq)]
struct Head {
    key: Vec<u8>,
    value: Vec<u8>,
    run: usize,
}

impl Ord for Head {
    fn cmp(&self, other: &Head) -> Ordering {
        self.key.cmp(&other.key).then(self.run.cmp(&other.run))
    }
}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Head) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The records, merged from every run, in byte order of their keys.
pub struct Records<'a> {
    sources: Vec<Source<'a>>,
    heap: BinaryHeap<Reverse<Head>>,
    /// The record taken last (its buffers are swapped with the heap's, never reallocated).
    key: Vec<u8>,
    value: Vec<u8>,
}

impl<'a> Records<'a> {
    fn new(mut sources: Vec<Source<'a>>) -> io::Result<Records<'a>> {
        let mut heap = BinaryHeap::with_capacity(sources.len());
        for (run, source) in sources.iter_mut().enumerate() {
            let mut head = Head {
                key: Vec::new(),
                value: Vec::new(),
                run,
            };
            if source.read(&mut head.key, &mut head.value)? {
                heap.push(Reverse(head));
            }
        }
        Ok(Records {
            sources,
            heap,
            key: Vec::new(),
            value: Vec::new(),
        })
    }

    /// The next record, or `None` after the last.
    pub fn next_record(&mut self) -> io::Result<Option<(&str, &[u8])>> {
        let Some(Reverse(mut head)) = self.heap.pop() else {
            return Ok(None);
        };
        std::mem::swap(&mut self.key, &mut head.key);
        std::mem::swap(&mut self.value, &mut head.value);
        if self.sources[head.run].read(&mut head.key, &mut head.value)? {
            self.heap.push(Reverse(head));
        }
        Ok(Some((text(&self.key)?, &self.value)))
    }

    /// The next record's key, without taking it.
    pub fn peek_key(&self) -> Option<&[u8]> {
        self.heap.peek().map(|head| head.0.key.as_slice())
    }
}

/// Bytes written from a `&str`, read back.
pub(super) fn text(bytes: &[u8]) -> io::Result<&str> {
    std::str::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record as `(key, value)`.
    fn read_all(spill: &mut Spill) -> Vec<(String, String)> {
        let mut records = spill.records().expect("records");
        let mut out = Vec::new();
        while let Some((key, value)) = records.next_record().expect("next") {
            out.push((key.to_string(), String::from_utf8_lossy(value).into_owned()));
        }
        out
    }

    #[test]
    fn records_come_back_in_byte_order_across_runs_equal_keys_in_push_order() {
        let keys: Vec<String> = (0..500u32)
            .map(|i| format!("{}@example.com", (i * 7919) % 500))
            .collect();
        for run_bytes in [1, 64, 1000, 1 << 20] {
            let mut spill = Spill::with_run_bytes(run_bytes);
            for (i, key) in keys.iter().enumerate() {
                spill.push(key, format!("v{i}").as_bytes()).expect("push");
            }
            spill.push("7@example.com", b"again").expect("push");
            let mut want: Vec<(String, String)> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| (k.clone(), format!("v{i}")))
                .collect();
            want.push(("7@example.com".into(), "again".into()));
            want.sort_by(|a, b| a.0.cmp(&b.0));
            let got = read_all(&mut spill);
            assert_eq!(got, want, "runs of {run_bytes} bytes");
            assert_eq!(read_all(&mut spill), got, "read twice");
        }
    }

    #[test]
    fn prefixes_do_not_confuse_the_order() {
        let mut spill = Spill::with_run_bytes(40);
        for key in ["abcdefgh2", "abcdefgh", "abcdefgh\0", "", "é", "abcdefgh"] {
            spill.push(key, b"").expect("push");
        }
        let keys: Vec<String> = read_all(&mut spill).into_iter().map(|r| r.0).collect();
        assert_eq!(
            keys,
            ["", "abcdefgh", "abcdefgh", "abcdefgh\0", "abcdefgh2", "é"]
        );
        spill.clear();
        assert!(read_all(&mut spill).is_empty());
    }
}
