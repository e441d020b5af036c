//! Line numbering: every record keeps the line it starts on, blank lines included, so that messages
//! and reports point at the right line of the user's file.

use std::io::{self, Read};

/// Makes blank lines visible to the CSV parser as a record holding one space (which
/// [`Reader::next_record`] then skips): csv drops blank lines without counting them, so every line
/// number after one would be off. Tracks quotes, so blank lines inside a quoted field stay data.
pub(super) struct BlankLines<R> {
    inner: R,
    buf: Vec<u8>,
    line_start: bool,
    quoted: bool,
    pending: Option<u8>,
}

impl<R: Read> BlankLines<R> {
    pub(super) fn new(inner: R) -> Self {
        BlankLines {
            inner,
            buf: Vec::new(),
            line_start: true,
            quoted: false,
            pending: None,
        }
    }
}

impl<R: Read> Read for BlankLines<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        if let Some(b) = self.pending.take()
            && let Some(slot) = out.first_mut()
        {
            *slot = b;
            n = 1;
        }
        if n == out.len() {
            return Ok(n);
        }
        // Every input byte may become two output bytes.
        let want = ((out.len() - n) / 2).max(1);
        self.buf.resize(want, 0);
        let got = self.inner.read(&mut self.buf[..want])?;
        for &b in &self.buf[..got] {
            let blank = self.line_start && !self.quoted && (b == b'\n' || b == b'\r');
            if blank {
                out[n] = b' ';
                n += 1;
            }
            if b == b'"' {
                self.quoted = !self.quoted;
            }
            self.line_start = b == b'\n';
            if n == out.len() {
                self.pending = Some(b);
            } else {
                out[n] = b;
                n += 1;
            }
        }
        Ok(n)
    }
}
