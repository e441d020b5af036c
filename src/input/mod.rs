//! CSV → validated users, each with its line number: opening the file or standard input, and the
//! records it yields. A bad row is data (a [`Rejected`] row), not an error; only problems with the
//! file as a whole are [`InputError`]s. Knows nothing of the ledger or the network.
//!
//! - `columns.rs`: delimiter and header detection.
//! - `lines.rs`: line numbering across blank lines.
//! - `validate.rs`: one row's checks.
//! - `thread.rs`: the reader thread and its chunks.

mod columns;
mod encoding;
mod lines;
mod thread;
mod validate;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Cursor, Read};

use csv::ByteRecord;
use thiserror::Error;

use crate::config::{InputOptions, Source};
use crate::report::ROW_REPORT_HEADER;
use crate::user::User;
use columns::{ID_HEADERS, PHONE_HEADERS, detect_delimiter, find_column};
use lines::Lines;

pub use thread::{ChunkResult, spawn};

/// The columns every version's `--report` begins with.
const REPORT_COLUMNS_ALWAYS: usize = 5;
/// The header line is read whole to detect the delimiter; a longer one is not a CSV header.
const MAX_HEADER_BYTES: u64 = 1024 * 1024;

/// A row rejected locally; it is never sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// The id as read (lossy, shortened), possibly empty.
    pub id_in_service: String,
    /// The phone as read (lossy, shortened), possibly empty.
    pub phone_number: String,
    /// Why it was rejected, without the phone number (reasons reach logs).
    pub reason: String,
    /// The id exactly as a valid row would carry it, when it could be read (only the phone, say,
    /// was wrong): the row still counts as in the file for `--prune`. `None` when the row is
    /// broken before its id (wrong field count, cut, not UTF-8, empty, unprintable).
    pub key: Option<String>,
}

/// One data row of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Row {
    /// A valid user.
    User(User),
    /// A row rejected locally.
    Invalid(Rejected),
}

/// A row with the line it starts on (1 is the header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The line the record starts on.
    pub line: u64,
    /// Its content.
    pub row: Row,
    /// Whether a field holds a line break, so that the record runs over several lines: rare in
    /// an export, and the mark of a quote that never closes, which swallows the rows after it.
    pub spans_lines: bool,
}

/// A problem with the file as a whole: nothing is sent.
#[derive(Debug, Error)]
pub enum InputError {
    /// The file cannot be opened.
    #[error("{path}: cannot open: {source}")]
    Open {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Reading failed part-way.
    #[error("{path}:{line}: read error: {source}")]
    Read {
        /// The file.
        path: String,
        /// The last line reached.
        line: u64,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// No header line.
    #[error("{0}: the file is empty; expected a header line naming an id and a phone column")]
    Empty(String),
    /// A quote opened in the header line never closes: the rest of the file would be one header.
    #[error("{0}: a quote opened in the header line (line 1) never closes; close it")]
    UnclosedHeaderQuote(String),
    /// The header line is absurdly long: not a CSV header.
    #[error("{0}: the first line is longer than 1 MiB; is this a CSV file?")]
    HeaderTooLong(String),
    /// A required column is missing.
    #[error("{path}: no {what} column (looked for {wanted}); headers found: {found}")]
    MissingColumn {
        /// The file.
        path: String,
        /// `id` or `phone`.
        what: &'static str,
        /// The names looked for.
        wanted: String,
        /// The headers the file has.
        found: String,
    },
}

/// Reads validated records from a CSV file or standard input, streaming.
/// The stream the parser reads: the header line read ahead, then the rest of the file, both
/// through [`Lines`].
type Stream = Lines<std::io::Chain<Cursor<Vec<u8>>, BufReader<Box<dyn Read + Send>>>>;

pub struct Reader {
    csv: csv::Reader<Stream>,
    name: String,
    /// Whether the file is one of our `--report`s, whose cells carry a spreadsheet guard.
    from_report: bool,
    width: usize,
    id_index: usize,
    phone_index: usize,
    region: Option<phonenumber::country::Id>,
    record: ByteRecord,
    stamp: Option<Stamp>,
}

/// A regular file's length and modification time when it was opened: a file cut short or
/// rewritten while it is read no longer matches (`--prune` then deletes nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            len: meta.len(),
            modified: meta.modified().ok(),
        }
    }

    /// Whether the file at `path` is still as it was.
    pub fn holds_for(&self, path: &std::path::Path) -> bool {
        std::fs::metadata(path).is_ok_and(|meta| Stamp::of(&meta) == *self)
    }
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Opens the source, detects the delimiter and finds the id and phone columns.
pub fn open(source: &Source, options: &InputOptions) -> Result<Reader, InputError> {
    let name = source.name();
    let (raw, stamp): (Box<dyn Read + Send>, Option<Stamp>) = match source {
        Source::Stdin => (Box::new(io::stdin()), None),
        Source::File(path) => {
            let file = File::open(path).map_err(|source| InputError::Open {
                path: name.clone(),
                source,
            })?;
            let meta = file.metadata().map_err(|source| InputError::Open {
                path: name.clone(),
                source,
            })?;
            if meta.is_dir() {
                return Err(InputError::Open {
                    path: name,
                    source: io::Error::other("is a directory"),
                });
            }
            (Box::new(file), meta.is_file().then(|| Stamp::of(&meta)))
        }
    };
    from_reader(raw, name, stamp, options)
}

/// The rows of a regular file, counted up front for progress (else `None`): its line breaks
/// after the header, plus a last line without one. An upper bound, and honestly so: a line
/// break inside a quoted field or a blank line counts as a row, since telling them apart
/// would mean parsing the file twice.
pub fn count_rows(source: &Source) -> Option<u64> {
    let Source::File(path) = source else {
        return None;
    };
    // Only a regular file can be read twice: a pipe, a FIFO or /dev/stdin would lose to this
    // count the rows the reader has not read yet.
    if !std::fs::metadata(path).is_ok_and(|meta| meta.is_file()) {
        return None;
    }
    let mut file = File::open(path).ok()?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut breaks, mut last) = (0u64, b'\n');
    loop {
        let n = file.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        breaks += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
        last = buf[n - 1];
    }
    let lines = breaks + u64::from(last != b'\n');
    Some(lines.saturating_sub(1))
}

/// Like [`open`], for any byte stream (used by `demo` for the embedded sample).
pub fn from_reader(
    raw: Box<dyn Read + Send>,
    name: String,
    stamp: Option<Stamp>,
    options: &InputOptions,
) -> Result<Reader, InputError> {
    let mut buffered = encoding::decoded(raw, &name)?;
    let first = header_line(&mut buffered, &name)?;
    let delimiter = options
        .delimiter
        .unwrap_or_else(|| detect_delimiter(&first));
    let stream = Lines::new(Cursor::new(first).chain(buffered), delimiter);
    let mut csv = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        // Records end at '\n' only (as `Lines` assumes); the '\r' left at the end of the last
        // field of a CRLF line is trimmed like other whitespace.
        .terminator(csv::Terminator::Any(b'\n'))
        .flexible(true)
        .has_headers(true)
        .from_reader(stream);
    let headers = headers(&mut csv, &name)?;
    let id_index = find_column(
        &name,
        &headers,
        "id",
        options.id_column.as_deref(),
        &ID_HEADERS,
    )?;
    let phone_index = find_column(
        &name,
        &headers,
        "phone",
        options.phone_column.as_deref(),
        &PHONE_HEADERS,
    )?;
    // A report of ours, fed back in after fixing: its cells carry one added quote.
    // Reports of earlier versions lack the last column.
    let from_report = headers.len() >= REPORT_COLUMNS_ALWAYS
        && headers
            .iter()
            .zip(&ROW_REPORT_HEADER[..REPORT_COLUMNS_ALWAYS])
            .all(|(h, r)| h == r);
    Ok(Reader {
        csv,
        name,
        from_report,
        width: headers.len(),
        id_index,
        phone_index,
        region: options.default_region,
        record: ByteRecord::new(),
        stamp,
    })
}

/// The header line, read whole (up to [`MAX_HEADER_BYTES`]) for delimiter detection, without a BOM.
fn header_line(buffered: &mut impl BufRead, name: &str) -> Result<Vec<u8>, InputError> {
    let mut first = Vec::new();
    buffered
        .take(MAX_HEADER_BYTES + 1)
        .read_until(b'\n', &mut first)
        .map_err(|source| InputError::Read {
            path: name.to_string(),
            line: 1,
            source,
        })?;
    if first.len() as u64 > MAX_HEADER_BYTES {
        return Err(InputError::HeaderTooLong(name.to_string()));
    }
    if let Some(rest) = first.strip_prefix(b"\xEF\xBB\xBF") {
        first = rest.to_vec();
    }
    Ok(first)
}

/// The header names, trimmed and without NULs; an all-blank header line is an empty file.
fn headers(csv: &mut csv::Reader<Stream>, name: &str) -> Result<Vec<String>, InputError> {
    let headers: Vec<String> = csv
        .byte_headers()
        .map_err(|e| csv_error(name, 1, e))?
        .iter()
        .map(|h| {
            String::from_utf8_lossy(h)
                .replace('\0', "")
                .trim()
                .to_string()
        })
        .collect();
    if headers.iter().all(String::is_empty) {
        return Err(InputError::Empty(name.to_string()));
    }
    // A header running over line breaks is a quote opened in the header line and never closed.
    if headers.iter().any(|h| h.contains('\n')) {
        return Err(InputError::UnclosedHeaderQuote(name.to_string()));
    }
    Ok(headers)
}

/// A `--report` row of `--prune` (outcome `delete` or `deleted`, no line).
fn is_prune_row(record: &ByteRecord) -> bool {
    let outcome = ROW_REPORT_HEADER
        .iter()
        .position(|h| *h == "outcome")
        .and_then(|i| record.get(i));
    matches!(outcome, Some(b"delete" | b"deleted"))
}

fn csv_error(name: &str, line: u64, e: csv::Error) -> InputError {
    let source = match e.into_kind() {
        csv::ErrorKind::Io(io) => io,
        other => io::Error::other(format!("{other:?}")),
    };
    InputError::Read {
        path: name.to_string(),
        line,
        source,
    }
}

impl Reader {
    /// The file's name as shown in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The length and modification time of a regular file when it was opened, else `None`.
    pub fn stamp(&self) -> Option<Stamp> {
        self.stamp
    }

    /// The next record, or `None` at the end of the file.
    pub fn next_record(&mut self) -> Option<Result<Record, InputError>> {
        loop {
            match self.csv.read_byte_record(&mut self.record) {
                Ok(false) => return None,
                Ok(true) => {
                    let at = self.record.position().map_or(0, |p| p.byte());
                    let start = self.csv.get_mut().start_of(at);
                    let cut = start.is_some_and(|s| s.cut);
                    // A blank line (CRLF: one field holding "\r") is not a row.
                    if !cut && self.record.iter().all(|f| f.trim_ascii().is_empty()) {
                        continue;
                    }
                    // A report's prune rows are about users not in the file: not rows to import.
                    if self.from_report && !cut && is_prune_row(&self.record) {
                        continue;
                    }
                    let row = if cut {
                        self.too_long()
                    } else {
                        self.validate()
                    };
                    let line = start.map_or(0, |s| s.line);
                    let spans_lines = self
                        .record
                        .iter()
                        .any(|field| memchr::memchr(b'\n', field).is_some());
                    return Some(Ok(Record {
                        line,
                        row,
                        spans_lines,
                    }));
                }
                Err(e) => {
                    let line = self.csv.get_ref().line();
                    return Some(Err(csv_error(&self.name, line, e)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::validate::{MAX_FIELD_BYTES, MAX_SHOWN_CHARS};
    use super::*;

    fn read_all(data: &[u8], options: &InputOptions) -> Result<Vec<Record>, InputError> {
        let mut r = from_reader(
            Box::new(Cursor::new(data.to_vec())),
            "t.csv".into(),
            None,
            options,
        )?;
        let mut out = Vec::new();
        while let Some(rec) = r.next_record() {
            out.push(rec?);
        }
        Ok(out)
    }

    fn users(data: &[u8]) -> Vec<(u64, Row)> {
        read_all(data, &InputOptions::default())
            .expect("readable")
            .into_iter()
            .map(|r| (r.line, r.row))
            .collect()
    }

    fn user(id: &str, phone: &str) -> Row {
        Row::User(User {
            written: None,
            id_in_service: id.into(),
            phone_number: phone.into(),
        })
    }

    #[test]
    fn reads_default_columns_case_insensitively() {
        let rows = users(b"Name,Email,Mobile\nA,a@x.com,+37255555555\n");
        assert_eq!(rows, vec![(2, user("a@x.com", "+37255555555"))]);
    }

    #[test]
    fn prefers_id_in_service_over_email() {
        let rows = users(b"email,id_in_service,phone\ne,i,+37255555555\n");
        assert_eq!(rows, vec![(2, user("i", "+37255555555"))]);
    }

    #[test]
    fn handles_bom_crlf_quotes_and_whitespace() {
        let data = b"\xEF\xBB\xBFid_in_service,phone_number\r\n\"a,b\",\" +372 5555 5555 \"\r\n\"multi\nline\",+37266666666\r\nnext,+37277777777\r\n";
        let rows = users(data);
        assert_eq!(
            rows,
            vec![
                (
                    2,
                    Row::User(User {
                        written: Some("+372 5555 5555".into()),
                        id_in_service: "a,b".into(),
                        phone_number: "+37255555555".into(),
                    })
                ),
                // A line break inside quotes is CSV, but a control character in an id.
                (
                    3,
                    Row::Invalid(Rejected {
                        id_in_service: "multi\\u{a}line".into(),
                        phone_number: "+37266666666".into(),
                        reason: "id_in_service contains the control character U+000A; ids must be printable".into(),
                        key: None,
                    })
                ),
                (5, user("next", "+37277777777")),
            ]
        );
        let rows = users(b"id_in_service,phone_number\n\na,+37255555555\r\n\r\n\"b\n\n\",+37266666666\nc,+37277777777\n");
        let lines: Vec<u64> = rows.iter().map(|(l, _)| *l).collect();
        assert_eq!(
            lines,
            [3, 5, 8],
            "blank lines count, blank lines inside quotes are data"
        );
    }

    #[test]
    fn detects_delimiters() {
        for d in [";", "\t", "|"] {
            let data = format!("id_in_service{d}phone_number\na{d}+37255555555\n");
            assert_eq!(
                users(data.as_bytes()),
                vec![(2, user("a", "+37255555555"))],
                "{d:?}"
            );
        }
    }

    #[test]
    fn rejects_bad_rows_and_keeps_going() {
        let data = b"id_in_service,phone_number\n,+37255555555\na,12\nb,+37255555555,extra\nc\xff,+37255555555\nd\0,+37255555555\ne,+37255555555\n";
        let rows = users(data);
        let reasons: Vec<(u64, String)> = rows
            .iter()
            .filter_map(|(l, r)| match r {
                Row::Invalid(x) => Some((*l, x.reason.clone())),
                Row::User(_) => None,
            })
            .collect();
        assert_eq!(
            reasons,
            vec![
                (2, "id_in_service is empty".to_string()),
                (
                    3,
                    "phone has no country prefix (use +CC… or --default-region)".to_string()
                ),
                (4, "has 3 fields, the header has 2".to_string()),
                (
                    5,
                    "id_in_service is not valid UTF-8 (an export in another encoding? save it as \"CSV UTF-8\" or \"Unicode Text\")"
                        .to_string()
                ),
                (6, "id_in_service contains a NUL byte".to_string()),
            ]
        );
        assert_eq!(rows.last(), Some(&(7, user("e", "+37255555555"))));
    }

    #[test]
    fn rejects_overlong_fields() {
        let long = "x".repeat(MAX_FIELD_BYTES + 1);
        let data = format!("id_in_service,phone_number\n{long},+37255555555\n");
        match &users(data.as_bytes())[0].1 {
            Row::Invalid(r) => {
                assert_eq!(r.reason, "id_in_service is longer than 64 KiB");
                assert_eq!(r.id_in_service.len(), MAX_SHOWN_CHARS);
            }
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn file_level_errors_name_the_file_and_headers() {
        let err = read_all(b"", &InputOptions::default()).expect_err("must be refused");
        assert_eq!(
            err.to_string(),
            "t.csv: the file is empty; expected a header line naming an id and a phone column"
        );
        let err = read_all(b"user,tel\n", &InputOptions::default()).expect_err("must be refused");
        assert_eq!(
            err.to_string(),
            "t.csv: no id column (looked for id_in_service, username, email, login); headers found: \"user\", \"tel\""
        );
        let opts = InputOptions {
            id_column: Some("user".into()),
            ..InputOptions::default()
        };
        let err = read_all(b"user,tel\n", &opts).expect_err("must be refused");
        assert!(
            err.to_string()
                .contains("no phone column (looked for phone_number, phone, mobile, msisdn)")
        );
    }

    /// One generated id cell: quoted (line breaks, commas and `""` inside) or not (a stray quote
    /// inside is data), with the line breaks it holds.
    fn id_cell() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            "[a-z][a-z\"' ]{0,8}",
            "[a-z\n,\" ]{0,10}".prop_map(|s| format!("\"x{}\"", s.replace('"', "\"\""))),
        ]
    }

    #[test]
    fn a_quote_left_open_in_the_header_is_named_not_dumped() {
        let mut data = b"id_in_service,\"phone_number\n".to_vec();
        for i in 0..1000 {
            data.extend_from_slice(format!("c{i},+3725{i:07}\n").as_bytes());
        }
        let err = read_all(&data, &InputOptions::default()).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "t.csv: a quote opened in the header line (line 1) never closes; close it"
        );
    }

    #[test]
    fn a_record_longer_than_the_limit_is_invalid_and_the_next_keeps_its_line() {
        let mut data = b"id_in_service,phone_number\n\"".to_vec();
        data.extend(std::iter::repeat_n(b'x', 3 * 1024 * 1024));
        data.extend_from_slice(b"\n\n\",+37255555555\n\nnext,+37266666666\n");
        let rows = users(&data);
        assert_eq!(
            rows.len(),
            2,
            "{:?}",
            rows.iter().map(|r| r.0).collect::<Vec<_>>()
        );
        match &rows[0] {
            (2, Row::Invalid(r)) => assert!(r.reason.starts_with("the row is longer than 1 MiB")),
            other => panic!("expected an invalid row on line 2, got {other:?}"),
        }
        assert_eq!(rows[1], (6, user("next", "+37266666666")));
    }

    proptest::proptest! {
        #[test]
        fn every_row_keeps_the_line_it_starts_on(
            rows in proptest::collection::vec((id_cell(), 0..3usize, proptest::bool::ANY), 1..30)
        ) {
            // The expected lines are counted on the text as it is written, independently of the
            // reader: one plus the line breaks before the row.
            let mut text = String::from("id_in_service,phone_number\n");
            let mut want = Vec::new();
            for (id, blanks, crlf) in &rows {
                want.push(1 + text.matches('\n').count() as u64);
                text.push_str(&format!("{id},+37255555555{}\n", if *crlf { "\r" } else { "" }));
                text.push_str(&"\n".repeat(*blanks));
            }
            let got: Vec<u64> = read_all(text.as_bytes(), &InputOptions::default())
                .expect("readable")
                .into_iter()
                .map(|r| r.line)
                .collect();
            proptest::prop_assert_eq!(got, want, "{}", text);
        }

        #[test]
        fn parsing_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let mut input = b"id_in_service,phone_number\n".to_vec();
            input.extend_from_slice(&data);
            let _ = read_all(&input, &InputOptions::default());
            let _ = read_all(&data, &InputOptions::default());
        }

        #[test]
        fn valid_rows_round_trip(id in "[a-z0-9@._]{1,20}", digits in "5[0-9]{7}") {
            let data = format!("id_in_service,phone_number\n{id},+372{digits}\n");
            let rows = users(data.as_bytes());
            proptest::prop_assert_eq!(rows, vec![(2, user(&id, &format!("+372{digits}")))]);
        }
    }
}
