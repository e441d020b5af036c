//! Line numbers and record sizes, between the file and the csv parser. Every record keeps the line
//! of the file it starts on, blank lines and quoted line breaks included, so that messages and
//! reports point at the right line; and no record can make the parser hold more than
//! [`MAX_RECORD_BYTES`]: a longer one is cut there, and the reader reports it as invalid.
//!
//! The parser's own line count cannot serve: it skips blank lines without counting them, and it
//! never sees the lines of a cut record. So this layer follows the parser's quoting rules byte by
//! byte and notes where each record starts, in the parser's stream and in the file.

use std::collections::VecDeque;
use std::io::{self, Read};

/// The most bytes of one record passed to the parser; the rest of a longer record is skipped.
/// Far above any real row (two fields of at most 64 KiB), low enough to keep memory flat.
pub(super) const MAX_RECORD_BYTES: u64 = 1024 * 1024;

/// Where a record starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Start {
    /// Its first byte's offset in the stream the parser reads.
    at: u64,
    /// The line of the file it starts on (1 is the header).
    pub line: u64,
    /// Whether it was longer than [`MAX_RECORD_BYTES`] and cut.
    pub cut: bool,
}

/// The parser's state within a record, as the csv crate defines it (RFC 4180, `""` escapes a
/// quote, a quote inside an unquoted field is data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Quoting {
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: the next byte says whether it closed the field.
    QuoteInQuoted,
}

/// The layer itself: reads the file, passes it on, and makes two changes. A blank line becomes a
/// record holding one space (the reader skips it), so the parser counts it; and a record past
/// [`MAX_RECORD_BYTES`] is closed there (its quote too) and the rest of it skipped.
pub(super) struct Lines<R> {
    inner: R,
    delimiter: u8,
    buf: Vec<u8>,
    /// Unprocessed input: `buf[pos..len]`.
    pos: usize,
    len: usize,
    /// Bytes owed to the parser before the next input byte.
    owed: VecDeque<u8>,
    /// Bytes ever queued for the parser: the offset, in its stream, of the next one.
    queued: u64,
    line: u64,
    quoting: Quoting,
    at_record_start: bool,
    record_bytes: u64,
    skipping: bool,
    starts: VecDeque<Start>,
    eof: bool,
    /// At the end of the file, inside a quoted field: the line of the row whose quote never
    /// closed. The rest of the file cannot be read as rows, which is an error, never a silence.
    unclosed: Option<u64>,
}

impl<R: Read> Lines<R> {
    /// Wraps the whole file, header included; `delimiter` is the one the parser uses.
    pub(super) fn new(inner: R, delimiter: u8) -> Self {
        Lines {
            inner,
            delimiter,
            buf: vec![0; 64 * 1024],
            pos: 0,
            len: 0,
            owed: VecDeque::new(),
            queued: 0,
            line: 1,
            quoting: Quoting::FieldStart,
            at_record_start: true,
            record_bytes: 0,
            skipping: false,
            starts: VecDeque::new(),
            eof: false,
            unclosed: None,
        }
    }

    /// The start of the record the parser began at offset `at`; forgets those before it.
    pub(super) fn start_of(&mut self, at: u64) -> Option<Start> {
        while let Some(start) = self.starts.front() {
            if start.at < at {
                self.starts.pop_front();
            } else {
                return (start.at == at).then(|| self.starts.pop_front()).flatten();
            }
        }
        None
    }

    /// The line reached in the file, for errors.
    pub(super) fn line(&self) -> u64 {
        self.line
    }

    /// Takes one input byte: notes record starts, follows the quoting, and returns what the
    /// parser gets for it (at most two bytes).
    fn take(&mut self, b: u8) -> ([u8; 2], usize) {
        let mut give = ([0u8; 2], 0);
        let push = |give: &mut ([u8; 2], usize), byte: u8| {
            give.0[give.1] = byte;
            give.1 += 1;
        };
        if self.at_record_start {
            self.at_record_start = false;
            self.record_bytes = 0;
            self.starts.push_back(Start {
                at: self.queued,
                line: self.line,
                cut: false,
            });
            if b == b'\n' || b == b'\r' {
                push(&mut give, b' ');
            }
        }
        self.record_bytes += 1;
        if !self.skipping && self.record_bytes > MAX_RECORD_BYTES {
            self.skipping = true;
            if let Some(start) = self.starts.back_mut() {
                start.cut = true;
            }
            if self.quoting == Quoting::Quoted {
                push(&mut give, b'"');
            }
        }
        let ends_record = self.follow(b);
        if b == b'\n' {
            self.line += 1;
        }
        if !self.skipping {
            push(&mut give, b);
        } else if ends_record {
            self.skipping = false;
            push(&mut give, b'\n');
        }
        if ends_record {
            self.at_record_start = true;
            self.quoting = Quoting::FieldStart;
        }
        self.queued += give.1 as u64;
        give
    }

    /// Copies a run of bytes that change nothing but the counts straight through; returns how
    /// many. In an unquoted field that is everything up to the next quote or line break (a
    /// delimiter matters only when a quote follows it: a field opening with a quote); in a quoted
    /// field, up to the next quote or line break; never past the record limit. Most of a file goes
    /// this way: a byte at a time was too slow for a nightly rerun.
    fn copy_run(&mut self, out: &mut [u8]) -> usize {
        if self.at_record_start || self.skipping {
            return 0;
        }
        let room = usize::try_from(MAX_RECORD_BYTES - self.record_bytes.min(MAX_RECORD_BYTES))
            .unwrap_or(usize::MAX)
            .min(out.len());
        let available = &self.buf[self.pos..self.len];
        let available = &available[..available.len().min(room)];
        let Some(&first) = available.first() else {
            return 0;
        };
        let run = match self.quoting {
            Quoting::Quoted => memchr::memchr2(b'"', b'\n', available).unwrap_or(available.len()),
            Quoting::Unquoted => memchr::memchr2(b'"', b'\n', available).unwrap_or(available.len()),
            // A field's first byte: a quote opens it, anything else makes it unquoted.
            Quoting::FieldStart if first != b'"' && first != b'\n' && first != self.delimiter => {
                self.quoting = Quoting::Unquoted;
                memchr::memchr2(b'"', b'\n', available).unwrap_or(available.len())
            }
            Quoting::FieldStart | Quoting::QuoteInQuoted => return 0,
        };
        if run == 0 {
            return 0;
        }
        out[..run].copy_from_slice(&available[..run]);
        // Skipped delimiters change nothing but this: a quote right after one opens a field.
        if self.quoting == Quoting::Unquoted && available[run - 1] == self.delimiter {
            self.quoting = Quoting::FieldStart;
        }
        self.pos += run;
        self.record_bytes += run as u64;
        self.queued += run as u64;
        run
    }

    /// Moves the quoting state on by one byte; returns whether the byte ends the record.
    fn follow(&mut self, b: u8) -> bool {
        use Quoting::*;
        let (next, ends) = match (self.quoting, b) {
            (FieldStart, b'"') => (Quoted, false),
            (FieldStart | Unquoted | QuoteInQuoted, b'\n') => (FieldStart, true),
            (FieldStart | Unquoted | QuoteInQuoted, d) if d == self.delimiter => {
                (FieldStart, false)
            }
            (FieldStart | Unquoted, _) => (Unquoted, false),
            (Quoted, b'"') => (QuoteInQuoted, false),
            (Quoted, _) => (Quoted, false),
            (QuoteInQuoted, b'"') => (Quoted, false),
            (QuoteInQuoted, _) => (Unquoted, false),
        };
        self.quoting = next;
        ends
    }
}

impl<R: Read> Read for Lines<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.owed.is_empty()
            && let Some(line) = self.unclosed.take()
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the quote opened in the row on line {line} is never closed, so the {} lines after it cannot be read as rows; close the quote",
                    self.line.saturating_sub(line)
                ),
            ));
        }
        let mut n = 0;
        while n < out.len() {
            if let Some(b) = self.owed.pop_front() {
                out[n] = b;
                n += 1;
                continue;
            }
            if self.pos == self.len {
                // Hand over what is ready before blocking on a slow input (stdin).
                if n > 0 || self.eof {
                    break;
                }
                self.len = self.inner.read(&mut self.buf)?;
                self.pos = 0;
                if self.len == 0 {
                    self.eof = true;
                    if self.quoting == Quoting::Quoted {
                        self.unclosed = self.starts.back().map(|s| s.line);
                    }
                    // A cut record that ran to the end of the file still ends as a record.
                    if self.skipping {
                        self.skipping = false;
                        self.owed.push_back(b'\n');
                        self.queued += 1;
                        continue;
                    }
                    break;
                }
            }
            let copied = self.copy_run(&mut out[n..]);
            if copied > 0 {
                n += copied;
                continue;
            }
            let b = self.buf[self.pos];
            self.pos += 1;
            let (give, count) = self.take(b);
            for &g in &give[..count] {
                if n < out.len() {
                    out[n] = g;
                    n += 1;
                } else {
                    self.owed.push_back(g);
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(data: &[u8]) -> (Vec<u8>, Vec<Start>) {
        let mut lines = Lines::new(data, b',');
        let mut out = Vec::new();
        lines.read_to_end(&mut out).expect("read");
        (out, lines.starts.into_iter().collect())
    }

    #[test]
    fn blank_lines_become_records_and_quoted_ones_stay_data() {
        let (out, starts) = pass(b"h\n\na\n\"b\n\nc\"\n\r\nd");
        assert_eq!(out, b"h\n \na\n\"b\n\nc\"\n \r\nd");
        let lines: Vec<u64> = starts.iter().map(|s| s.line).collect();
        assert_eq!(lines, [1, 2, 3, 4, 7, 8]);
    }

    #[test]
    fn a_stray_quote_in_an_unquoted_field_is_data() {
        let (_, starts) = pass(b"h\no\"brien,1\n\nbob,2\n");
        let lines: Vec<u64> = starts.iter().map(|s| s.line).collect();
        assert_eq!(lines, [1, 2, 3, 4]);
    }

    #[test]
    fn a_record_past_the_limit_is_closed_there_and_the_rest_skipped() {
        let mut data = b"h\n\"".to_vec();
        data.extend(std::iter::repeat_n(b'x', MAX_RECORD_BYTES as usize));
        data.extend_from_slice(b"\nmore\"\nnext\n");
        let (out, starts) = pass(&data);
        assert!(out.len() < MAX_RECORD_BYTES as usize + 32);
        assert!(out.ends_with(b"x\"\nnext\n"));
        assert_eq!(
            starts.iter().map(|s| (s.line, s.cut)).collect::<Vec<_>>(),
            [(1, false), (2, true), (4, false)]
        );
        // An unterminated quote cut at the limit ends the row with the file, then says so.
        let mut data = b"h\n\"".to_vec();
        data.extend(std::iter::repeat_n(b'x', 2 * MAX_RECORD_BYTES as usize));
        let mut lines = Lines::new(&data[..], b',');
        let mut out = Vec::new();
        let err = lines.read_to_end(&mut out).expect_err("an unclosed quote");
        assert!(
            err.to_string().contains("on line 2 is never closed"),
            "{err}"
        );
        assert!(out.ends_with(b"x\"\n"));
    }
}
