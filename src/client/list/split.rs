//! The user list's body, split as it arrives: the top-level object's keys in any order (unknown
//! ones skipped), each element of `users` handed over as its own bytes, `total` and `count` read
//! whenever they come. Only what finds a value's end is tracked (strings, escapes, bracket
//! depth); each element is parsed on its own by the caller. Nothing here grows with the list:
//! an element longer than [`MAX_ENTRY_BYTES`] is skipped while it streams past, not buffered.
//!
//! Brackets are counted, not matched: an element whose brackets do not match ends where the
//! count says, fails to parse, and is counted malformed; what follows then breaks the top level.

use std::ops::ControlFlow;

use thiserror::Error;

use super::scan::{Scan, is_whitespace};

/// The longest element of `users` read: a user is about a hundred bytes, and one that is longer
/// than this is damage or an attack, not a user.
pub const MAX_ENTRY_BYTES: usize = 64 * 1024;

/// The longest key compared with `users`, `total` and `count`: any spelling of those, each
/// character escaped as `\uXXXX`, fits; a longer key is another key.
const MAX_KEY_BYTES: usize = 64;

/// The longest `total` or `count` read: a `u64` is at most 20 digits.
const MAX_COUNT_BYTES: usize = 32;

/// One element of `users`.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// The element's bytes, from its first byte to its last (no surrounding whitespace).
    Entry(&'a [u8]),
    /// An element longer than [`MAX_ENTRY_BYTES`]: skipped unread.
    Oversized,
}

/// Why the body is not a user list: where it broke, never what it held (a server's body is not
/// shown).
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{what} at byte {at}")]
pub struct SplitError {
    /// What was wrong.
    pub what: &'static str,
    /// The offset in the body.
    pub at: u64,
}

/// The counts the list claims, read once the body has ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Claimed {
    /// `total`, or `count` in some clients: the larger when both come.
    pub total: Option<u64>,
}

/// Where the splitter is in the top-level object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    /// Before `{`.
    #[default]
    Open,
    /// Before a key (or, for the first, the closing `}`).
    Key { first: bool },
    /// Inside a key's quotes.
    InKey { escaped: bool },
    /// Between a key and its `:`.
    Colon(Slot),
    /// Before a value.
    Value(Slot),
    /// Inside a value other than `users`.
    InValue(Slot),
    /// After a value: `,` or `}`.
    AfterValue,
    /// Inside `users`, before an element (or, for the first, the closing `]`).
    Element { first: bool },
    /// Inside an element.
    InElement,
    /// After an element: `,` or `]`.
    AfterElement,
    /// After the closing `}`: only whitespace may follow.
    Done,
}

/// Which key a value belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Users,
    Total,
    Count,
    Other,
}

/// The list's body, split as it arrives (see the module's doc).
#[derive(Debug, Default)]
pub struct Splitter {
    state: State,
    scan: Scan,
    /// The element, key or count begun in an earlier chunk.
    held: Vec<u8>,
    /// Bytes of the current element so far.
    length: usize,
    /// The current element is longer than [`MAX_ENTRY_BYTES`]: its bytes are no longer kept.
    oversized: bool,
    /// The current key is longer than [`MAX_KEY_BYTES`]: it is none of ours.
    long_key: bool,
    /// Bytes of the body before the current chunk.
    offset: u64,
    /// Where the current value began in the body.
    started: u64,
    users: bool,
    total: Option<Option<u64>>,
    count: Option<Option<u64>>,
}

impl Splitter {
    /// Splits the body's next chunk, handing each element of `users` to `each` (which may stop the
    /// split with `Break`).
    pub fn feed(
        &mut self,
        chunk: &[u8],
        each: &mut impl FnMut(Piece<'_>) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>, SplitError> {
        let mut i = 0;
        while i < chunk.len() {
            let step = match self.state {
                State::InKey { escaped } => self.key(chunk, i, escaped)?,
                State::InValue(slot) => self.value(chunk, i, slot)?,
                State::InElement => match self.element(chunk, i, each) {
                    (next, ControlFlow::Continue(())) => next,
                    (_, ControlFlow::Break(())) => return Ok(ControlFlow::Break(())),
                },
                _ if is_whitespace(chunk[i]) => i + 1,
                _ => self.punctuation(chunk[i], i)?,
            };
            i = step;
        }
        self.offset += chunk.len() as u64;
        Ok(ControlFlow::Continue(()))
    }

    /// Ends the body: it must be one whole object that had `users`.
    pub fn finish(&self) -> Result<Claimed, SplitError> {
        let at = self.offset;
        if self.state != State::Done {
            return Err(SplitError {
                what: "the list ends early",
                at,
            });
        }
        if !self.users {
            return Err(SplitError {
                what: "the answer has no users",
                at,
            });
        }
        let (total, count) = (self.total.flatten(), self.count.flatten());
        Ok(Claimed {
            total: total.max(count),
        })
    }

    fn error(&self, what: &'static str, i: usize) -> SplitError {
        SplitError {
            what,
            at: self.offset + i as u64,
        }
    }

    fn not_a_count(&self) -> SplitError {
        SplitError {
            what: "total or count is not a count",
            at: self.started,
        }
    }

    /// A byte outside keys and values: the object's structure. Returns where to go on.
    fn punctuation(&mut self, b: u8, i: usize) -> Result<usize, SplitError> {
        self.state = match (self.state, b) {
            (State::Open, b'{') => State::Key { first: true },
            (State::Open, _) => return Err(self.error("the answer is not a JSON object", i)),
            (State::Key { .. }, b'"') => {
                self.held.clear();
                self.long_key = false;
                State::InKey { escaped: false }
            }
            (State::Key { first: true }, b'}') => State::Done,
            (State::Key { .. }, _) => return Err(self.error("expected a key", i)),
            (State::Colon(slot), b':') => State::Value(slot),
            (State::Colon(_), _) => return Err(self.error("expected ':'", i)),
            (State::Value(_), b',' | b':' | b']' | b'}') => {
                return Err(self.error("expected a value", i));
            }
            (State::Value(Slot::Users), b'[') => State::Element { first: true },
            (State::Value(Slot::Users), _) => return Err(self.error("users is not an array", i)),
            (State::Value(slot), _) => {
                // The value starts here: its scan reads this byte again.
                self.started = self.offset + i as u64;
                self.held.clear();
                self.scan = Scan::default();
                self.state = State::InValue(slot);
                return Ok(i);
            }
            (State::AfterValue, b',') => State::Key { first: false },
            (State::AfterValue, b'}') => State::Done,
            (State::AfterValue, _) => return Err(self.error("expected ',' or '}'", i)),
            (State::Element { first: true }, b']') => State::AfterValue,
            (State::Element { .. }, b',' | b':' | b']' | b'}') => {
                return Err(self.error("expected a user", i));
            }
            (State::Element { .. }, _) => {
                self.held.clear();
                self.scan = Scan::default();
                self.length = 0;
                self.oversized = false;
                self.state = State::InElement;
                return Ok(i);
            }
            (State::AfterElement, b',') => State::Element { first: false },
            (State::AfterElement, b']') => State::AfterValue,
            (State::AfterElement, _) => return Err(self.error("expected ',' or ']'", i)),
            (State::Done, _) => return Err(self.error("data after the end of the list", i)),
            // `feed` reads these states' bytes itself.
            (State::InKey { .. } | State::InValue(_) | State::InElement, _) => {
                return Err(self.error("the splitter lost its place", i));
            }
        };
        Ok(i + 1)
    }

    /// Reads a key's bytes up to its closing quote; keeps at most [`MAX_KEY_BYTES`] of them.
    fn key(&mut self, chunk: &[u8], from: usize, mut escaped: bool) -> Result<usize, SplitError> {
        let mut i = from;
        while i < chunk.len() {
            if escaped {
                escaped = false;
                i += 1;
                continue;
            }
            match chunk[i] {
                b'\\' => escaped = true,
                b'"' => {
                    self.keep_key(&chunk[from..i]);
                    let slot = self.slot(i)?;
                    self.state = State::Colon(slot);
                    return Ok(i + 1);
                }
                _ => {}
            }
            i += 1;
        }
        self.keep_key(&chunk[from..]);
        self.state = State::InKey { escaped };
        Ok(i)
    }

    fn keep_key(&mut self, bytes: &[u8]) {
        if self.held.len() + bytes.len() > MAX_KEY_BYTES {
            self.long_key = true;
        } else {
            self.held.extend_from_slice(bytes);
        }
    }

    /// Which of our keys the key just read is (escapes decoded); each may come once.
    fn slot(&mut self, i: usize) -> Result<Slot, SplitError> {
        if self.long_key {
            return Ok(Slot::Other);
        }
        let decoded;
        let key: &[u8] = if self.held.contains(&b'\\') {
            let mut quoted = Vec::with_capacity(self.held.len() + 2);
            quoted.push(b'"');
            quoted.extend_from_slice(&self.held);
            quoted.push(b'"');
            decoded = serde_json::from_slice::<String>(&quoted)
                .map_err(|_| self.error("a key is not a JSON string", i))?;
            decoded.as_bytes()
        } else {
            &self.held
        };
        let (slot, seen) = match key {
            b"users" => (Slot::Users, self.users),
            b"total" => (Slot::Total, self.total.is_some()),
            b"count" => (Slot::Count, self.count.is_some()),
            _ => return Ok(Slot::Other),
        };
        if seen {
            return Err(self.error("a key is given twice", i));
        }
        if slot == Slot::Users {
            self.users = true;
        }
        Ok(slot)
    }

    /// Scans a value other than `users`; `total` and `count` are kept and read at their end.
    fn value(&mut self, chunk: &[u8], from: usize, slot: Slot) -> Result<usize, SplitError> {
        let end = self.scan.scan(&chunk[from..]);
        let to = end.map_or(chunk.len(), |n| from + n);
        if matches!(slot, Slot::Total | Slot::Count) {
            if self.held.len() + (to - from) > MAX_COUNT_BYTES {
                return Err(self.not_a_count());
            }
            self.held.extend_from_slice(&chunk[from..to]);
        }
        if end.is_none() {
            return Ok(to);
        }
        if matches!(slot, Slot::Total | Slot::Count) {
            let n = serde_json::from_slice::<Option<u64>>(&self.held)
                .map_err(|_| self.not_a_count())?;
            match slot {
                Slot::Total => self.total = Some(n),
                _ => self.count = Some(n),
            }
        }
        self.state = State::AfterValue;
        Ok(to)
    }

    /// Scans an element; at its end hands it over (from the chunk when it lies in it whole).
    fn element(
        &mut self,
        chunk: &[u8],
        from: usize,
        each: &mut impl FnMut(Piece<'_>) -> ControlFlow<()>,
    ) -> (usize, ControlFlow<()>) {
        let end = self.scan.scan(&chunk[from..]);
        let to = end.map_or(chunk.len(), |n| from + n);
        self.length = self.length.saturating_add(to - from);
        if !self.oversized && self.length > MAX_ENTRY_BYTES {
            self.oversized = true;
            self.held = Vec::new();
        }
        let whole_here = self.held.is_empty();
        // An element that starts and ends in this chunk is handed over from it, uncopied.
        if !(self.oversized || whole_here && end.is_some()) {
            self.held.extend_from_slice(&chunk[from..to]);
        }
        if end.is_none() {
            return (to, ControlFlow::Continue(()));
        }
        self.state = State::AfterElement;
        let piece = match (self.oversized, whole_here) {
            (true, _) => Piece::Oversized,
            (false, true) => Piece::Entry(&chunk[from..to]),
            (false, false) => Piece::Entry(&self.held),
        };
        (to, each(piece))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a split produced: each element as text (`<oversized>` for a skipped one).
    #[derive(Debug, Default, PartialEq, Eq)]
    struct Split {
        pieces: Vec<String>,
        total: Option<u64>,
    }

    fn split_in(body: &[u8], sizes: &[usize]) -> Result<Split, SplitError> {
        let mut splitter = Splitter::default();
        let mut pieces = Vec::new();
        let mut rest = body;
        let mut sizes = sizes.iter().copied().cycle();
        while !rest.is_empty() {
            let n = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
            let (chunk, tail) = rest.split_at(n);
            let flow = splitter.feed(chunk, &mut |piece| {
                pieces.push(match piece {
                    Piece::Entry(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                    Piece::Oversized => "<oversized>".into(),
                });
                ControlFlow::Continue(())
            })?;
            assert_eq!(flow, ControlFlow::Continue(()));
            rest = tail;
        }
        let claimed = splitter.finish()?;
        Ok(Split {
            pieces,
            total: claimed.total,
        })
    }

    /// Splits `body` whole and in chunks of every size up to 17 bytes: the result is the same.
    fn split(body: &str) -> Result<Split, SplitError> {
        let whole = split_in(body.as_bytes(), &[body.len()]);
        for size in 1..=17 {
            assert_eq!(
                split_in(body.as_bytes(), &[size]),
                whole,
                "chunks of {size}"
            );
        }
        assert_eq!(split_in(body.as_bytes(), &[1, 7, 2, 31]), whole);
        whole
    }

    #[test]
    fn elements_come_whole_whatever_the_chunks() {
        let body = r#" { "users" : [ {"id":"u1","id_in_service":"a","ctime":"t"} ,
            {"id":"u\"2\\","id_in_service":"b]},{","x":[1,{"y":[]}]}, 7 ,"s",null,[1,2] ] ,
            "total": 6 } "#;
        let out = split(body).expect("splits");
        assert_eq!(
            out.pieces,
            [
                r#"{"id":"u1","id_in_service":"a","ctime":"t"}"#,
                r#"{"id":"u\"2\\","id_in_service":"b]},{","x":[1,{"y":[]}]}"#,
                "7",
                r#""s""#,
                "null",
                "[1,2]",
            ]
        );
        assert_eq!(out.total, Some(6));
    }

    #[test]
    fn keys_come_in_any_order_and_unknown_ones_are_skipped() {
        let body = r#"{"count":2,"next":{"a":["]",{"users":[1]}]},"users":[{"id":"u"}],"n":-1.5e3,"ok":true,"total":1}"#;
        let out = split(body).expect("splits");
        assert_eq!(out.pieces, [r#"{"id":"u"}"#]);
        assert_eq!(out.total, Some(2), "the larger of total and count");
        let escaped = r#"{"\u0075sers":[],"t\u006ftal":null}"#;
        assert_eq!(split(escaped).expect("splits").total, None);
        let empty = split(r#"{"users":[]}"#).expect("splits");
        assert_eq!(empty, Split::default());
    }

    #[test]
    fn an_element_over_the_cap_is_skipped_unkept_and_the_next_one_still_comes() {
        let big = "x".repeat(MAX_ENTRY_BYTES);
        let body =
            format!(r#"{{"users":[{{"id":"{big}"}},[[["{big}"]]],{{"id":"after"}}],"total":3}}"#);
        for size in [1000, 4096, MAX_ENTRY_BYTES + 7, body.len()] {
            let out = split_in(body.as_bytes(), &[size]).expect("splits");
            assert_eq!(
                out.pieces,
                ["<oversized>", "<oversized>", r#"{"id":"after"}"#],
                "chunks of {size}"
            );
        }
        // Exactly at the cap is still an element.
        let fits = format!(r#"{{"users":["{}"]}}"#, "y".repeat(MAX_ENTRY_BYTES - 2));
        let out = split_in(fits.as_bytes(), &[999]).expect("splits");
        assert_eq!(out.pieces[0].len(), MAX_ENTRY_BYTES);
    }

    #[test]
    fn the_splitter_keeps_no_more_than_one_element() {
        let mut splitter = Splitter::default();
        let chunk = vec![b'7'; 1 << 20];
        let mut seen = 0;
        let mut count = |_: Piece<'_>| {
            seen += 1;
            ControlFlow::Continue(())
        };
        let go = ControlFlow::Continue(());
        let flow = splitter.feed(b"{\"users\":[\"", &mut count);
        assert_eq!(flow, Ok(go));
        for _ in 0..8 {
            assert_eq!(splitter.feed(&chunk, &mut count), Ok(go));
            assert!(splitter.held.capacity() <= 2 * MAX_ENTRY_BYTES);
        }
        assert_eq!(splitter.feed(b"\"]}", &mut count), Ok(go));
        assert_eq!(seen, 1);
        assert!(splitter.finish().is_ok());
    }

    #[test]
    fn what_is_not_a_list_is_an_error_with_its_offset() {
        for (body, what) in [
            ("", "the list ends early"),
            (r#"{"users":[{"id":"a"}"#, "the list ends early"),
            (r#"{"total":1}"#, "the answer has no users"),
            (r#"[]"#, "the answer is not a JSON object"),
            (r#"{"users":null}"#, "users is not an array"),
            (r#"{"users":[],"users":[]}"#, "a key is given twice"),
            (
                r#"{"users":[],"total":"5"}"#,
                "total or count is not a count",
            ),
            (
                r#"{"users":[],"count":-1}"#,
                "total or count is not a count",
            ),
            (
                r#"{"users":[],"total":1}x"#,
                "data after the end of the list",
            ),
            (r#"{"users":[1,]}"#, "expected a user"),
            (r#"{"users":[1 2]}"#, "expected ',' or ']'"),
            (r#"{"users":[],}"#, "expected a key"),
            (r#"{"users" []}"#, "expected ':'"),
            (r#"{"users":[{"a":1}}],"total":1}"#, "expected ',' or ']'"),
        ] {
            let err = split(body).expect_err(body);
            assert_eq!(err.what, what, "{body}");
        }
        let body = r#"{"users":[], "total":"#;
        assert_eq!(split(body).expect_err("ends early").at, body.len() as u64);
        let body = r#"{"users":[], "total": 123456789012345678901234567890123456789}"#;
        assert_eq!(split(body).expect_err("too long").at, 22);
    }

    #[test]
    fn a_break_stops_the_split() {
        let mut splitter = Splitter::default();
        let mut seen = 0;
        let flow = splitter
            .feed(br#"{"users":[1,2,3]}"#, &mut |_| {
                seen += 1;
                ControlFlow::Break(())
            })
            .expect("splits");
        assert_eq!((flow, seen), (ControlFlow::Break(()), 1));
    }
}
