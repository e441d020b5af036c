//! CSV → validated users, each with its line number. Owns header mapping, delimiter detection and
//! phone normalisation. A bad row is data (a [`Rejected`] row), not an error; only problems with the
//! file as a whole are [`InputError`]s. Knows nothing of the ledger or the network.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Cursor, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use csv::ByteRecord;
use thiserror::Error;
use tokio::sync::mpsc::Receiver;

use crate::config::{InputOptions, Source};

/// Headers accepted for the id column when `--id-column` is not given, in order of preference.
pub const ID_HEADERS: [&str; 4] = ["id_in_service", "username", "email", "login"];
/// Headers accepted for the phone column when `--phone-column` is not given, in order of preference.
pub const PHONE_HEADERS: [&str; 4] = ["phone_number", "phone", "mobile", "msisdn"];
/// Longest field accepted: far above any real id or phone, low enough to keep hostile rows cheap.
pub const MAX_FIELD_BYTES: usize = 64 * 1024;
/// Delimiters detected from the header line, in order of preference on a tie.
const DELIMITERS: [u8; 4] = [b',', b';', b'\t', b'|'];
/// The header line is read whole to detect the delimiter; a longer one is not a CSV header.
const MAX_HEADER_BYTES: u64 = 1024 * 1024;
/// How much of a rejected field is kept for the report.
const MAX_SHOWN_CHARS: usize = 256;

/// A row ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The user's id in the customer's service (usually an e-mail or login).
    pub id_in_service: String,
    /// The phone number, normalised to E.164 (`+` and 8–15 digits).
    pub phone_number: String,
}

/// A row rejected locally; it is never sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// The id as read (lossy, shortened), possibly empty.
    pub id_in_service: String,
    /// The phone as read (lossy, shortened), possibly empty.
    pub phone_number: String,
    /// Why it was rejected, without the phone number (reasons reach logs).
    pub reason: String,
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
pub struct Reader {
    csv: csv::Reader<Box<dyn Read + Send>>,
    name: String,
    width: usize,
    id_index: usize,
    phone_index: usize,
    region: Option<phonenumber::country::Id>,
    record: ByteRecord,
    size: Option<u64>,
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
    let (raw, size): (Box<dyn Read + Send>, Option<u64>) = match source {
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
            (Box::new(file), meta.is_file().then_some(meta.len()))
        }
    };
    from_reader(raw, name, size, options)
}

/// Like [`open`], for any byte stream (used by `demo` for the embedded sample).
pub fn from_reader(
    raw: Box<dyn Read + Send>,
    name: String,
    size: Option<u64>,
    options: &InputOptions,
) -> Result<Reader, InputError> {
    let mut buffered = BufReader::with_capacity(256 * 1024, raw);
    let mut first = Vec::new();
    (&mut buffered)
        .take(MAX_HEADER_BYTES + 1)
        .read_until(b'\n', &mut first)
        .map_err(|source| InputError::Read {
            path: name.clone(),
            line: 1,
            source,
        })?;
    if first.len() as u64 > MAX_HEADER_BYTES {
        return Err(InputError::HeaderTooLong(name));
    }
    if let Some(rest) = first.strip_prefix(b"\xEF\xBB\xBF") {
        first = rest.to_vec();
    }
    let delimiter = options
        .delimiter
        .unwrap_or_else(|| detect_delimiter(&first));
    let chained: Box<dyn Read + Send> =
        Box::new(Cursor::new(first).chain(BlankLines::new(buffered)));
    let mut csv = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        // Records end at '\n' only: with CRLF, csv's line numbers would lag one line behind;
        // the '\r' left at the end of the last field is trimmed like other whitespace.
        .terminator(csv::Terminator::Any(b'\n'))
        .flexible(true)
        .has_headers(true)
        .from_reader(chained);
    let headers: Vec<String> = csv
        .byte_headers()
        .map_err(|e| csv_error(&name, 1, e))?
        .iter()
        .map(|h| {
            String::from_utf8_lossy(h)
                .replace('\0', "")
                .trim()
                .to_string()
        })
        .collect();
    if headers.iter().all(String::is_empty) {
        return Err(InputError::Empty(name));
    }
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
    Ok(Reader {
        csv,
        name,
        width: headers.len(),
        id_index,
        phone_index,
        region: options.default_region,
        record: ByteRecord::new(),
        size,
    })
}

fn csv_error(name: &str, line: u64, e: csv::Error) -> InputError {
    let line = e.position().map_or(line, |p| p.line());
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

fn find_column(
    name: &str,
    headers: &[String],
    what: &'static str,
    explicit: Option<&str>,
    defaults: &[&str],
) -> Result<usize, InputError> {
    let wanted: Vec<&str> = match explicit {
        Some(col) => vec![col.trim()],
        None => defaults.to_vec(),
    };
    wanted
        .iter()
        .find_map(|w| headers.iter().position(|h| h.eq_ignore_ascii_case(w)))
        .ok_or_else(|| InputError::MissingColumn {
            path: name.to_string(),
            what,
            wanted: wanted.join(", "),
            found: headers
                .iter()
                .map(|h| format!("{h:?}"))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Makes blank lines visible to the CSV parser as a record holding one space (which
/// [`Reader::next_record`] then skips): csv drops blank lines without counting them, so every line
/// number after one would be off. Tracks quotes, so blank lines inside a quoted field stay data.
struct BlankLines<R> {
    inner: R,
    buf: Vec<u8>,
    line_start: bool,
    quoted: bool,
    pending: Option<u8>,
}

impl<R: Read> BlankLines<R> {
    fn new(inner: R) -> Self {
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

/// Picks the delimiter that occurs most often outside quotes in the header line.
fn detect_delimiter(header: &[u8]) -> u8 {
    let mut counts = [0usize; DELIMITERS.len()];
    let mut quoted = false;
    for &b in header {
        if b == b'"' {
            quoted = !quoted;
        } else if !quoted && let Some(i) = DELIMITERS.iter().position(|&d| d == b) {
            counts[i] += 1;
        }
    }
    let best =
        (0..DELIMITERS.len()).fold(0, |best, i| if counts[i] > counts[best] { i } else { best });
    DELIMITERS[best]
}

impl Reader {
    /// The file's name as shown in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The size in bytes when the input is a regular file (for progress), else `None`.
    pub fn size(&self) -> Option<u64> {
        self.size
    }

    /// Bytes consumed so far.
    pub fn bytes_read(&self) -> u64 {
        self.csv.position().byte()
    }

    /// The next record, or `None` at the end of the file.
    pub fn next_record(&mut self) -> Option<Result<Record, InputError>> {
        loop {
            match self.csv.read_byte_record(&mut self.record) {
                Ok(false) => return None,
                // A blank CRLF line reads as one field holding "\r": not a row.
                Ok(true) if self.record.iter().all(|f| f.trim_ascii().is_empty()) => continue,
                Ok(true) => {
                    let line = self.record.position().map_or(0, |p| p.line());
                    return Some(Ok(Record {
                        line,
                        row: self.validate(),
                    }));
                }
                Err(e) => {
                    let line = self.csv.position().line();
                    return Some(Err(csv_error(&self.name, line, e)));
                }
            }
        }
    }

    fn validate(&self) -> Row {
        let id = self.record.get(self.id_index).unwrap_or_default();
        let phone = self.record.get(self.phone_index).unwrap_or_default();
        let reject = |reason: String| {
            Row::Invalid(Rejected {
                id_in_service: shown(id),
                phone_number: shown(phone),
                reason,
            })
        };
        if self.record.len() != self.width {
            return reject(format!(
                "has {} fields, the header has {}",
                self.record.len(),
                self.width
            ));
        }
        let id = match text_field(id, "id_in_service") {
            Ok(id) => id,
            Err(reason) => return reject(reason),
        };
        let phone = match text_field(phone, "phone_number") {
            Ok(p) => p,
            Err(reason) => return reject(reason),
        };
        if id.is_empty() {
            return reject("id_in_service is empty".into());
        }
        match normalize_phone(phone, self.region) {
            Ok(phone_number) => Row::User(User {
                id_in_service: id.to_string(),
                phone_number,
            }),
            Err(reason) => reject(reason),
        }
    }
}

fn text_field<'a>(bytes: &'a [u8], field: &str) -> Result<&'a str, String> {
    if bytes.len() > MAX_FIELD_BYTES {
        return Err(format!("{field} is longer than 64 KiB"));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| format!("{field} is not valid UTF-8"))?;
    if text.contains('\0') {
        return Err(format!("{field} contains a NUL byte"));
    }
    Ok(text.trim())
}

/// A rejected field as kept for the report: lossy, without NULs, shortened.
fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .filter(|&c| c != '\0')
        .take(MAX_SHOWN_CHARS)
        .collect::<String>()
        .trim()
        .to_string()
}

/// Normalises a phone number to E.164: drops spaces, dashes, dots and parentheses, turns a
/// leading `00` into `+`, and completes national numbers with `region` when given. The error is
/// a reason for the report that never repeats the number itself (reasons reach logs).
pub fn normalize_phone(
    raw: &str,
    region: Option<phonenumber::country::Id>,
) -> Result<String, String> {
    // Most exports hold E.164 already: then the number is its own normal form.
    if let Some(digits) = raw.strip_prefix('+')
        && (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
    {
        return Ok(raw.to_string());
    }
    let cleaned: String = raw
        .chars()
        .filter(|c| !matches!(c, '-' | '.' | '(' | ')') && !c.is_whitespace())
        .collect();
    if cleaned.is_empty() {
        return Err("phone_number is empty".into());
    }
    let (international, digits) = if let Some(rest) = cleaned.strip_prefix('+') {
        (true, rest)
    } else if let Some(rest) = cleaned.strip_prefix("00") {
        (true, rest)
    } else {
        (false, cleaned.as_str())
    };
    if let Some(bad) = digits.chars().find(|c| !c.is_ascii_digit()) {
        return Err(format!(
            "phone contains {bad:?}; only digits, spaces, dashes, dots, parentheses and a leading + or 00 are allowed"
        ));
    }
    let e164 = if international {
        format!("+{digits}")
    } else {
        let Some(region) = region else {
            return Err("phone has no country prefix (use +CC… or --default-region)".into());
        };
        let number = phonenumber::parse(Some(region), digits)
            .map_err(|_| format!("phone is not a national number of {region:?}"))?;
        number.format().mode(phonenumber::Mode::E164).to_string()
    };
    let count = e164.len() - 1;
    if !(8..=15).contains(&count) {
        return Err(format!(
            "phone has {count} digits after the +; E.164 allows 8 to 15"
        ));
    }
    Ok(e164)
}

/// Masks a phone number for log lines: `+3725****67`.
pub fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    if chars.len() <= 6 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..5].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}****{tail}")
}

/// Rows handed over at once by [`spawn`]: large enough to amortise the channel.
const CHUNK_ROWS: usize = 512;
/// Chunks buffered between the reader thread and the pipeline: bounds memory for any file size.
const CHUNKS_BUFFERED: usize = 4;

/// Reads and validates records on a thread of their own, so parsing overlaps the pipeline and a
/// slow stdin never blocks the event loop. Chunk `k` goes to lane `k % lanes`, so consumers that
/// take turns over the lanes see the file in order; an error goes to the lane whose turn it is.
/// The counter follows the bytes consumed, for progress.
pub fn spawn(mut reader: Reader, lanes: usize) -> (Vec<Receiver<ChunkResult>>, Arc<AtomicU64>) {
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..lanes.max(1))
        .map(|_| tokio::sync::mpsc::channel(CHUNKS_BUFFERED))
        .unzip();
    let bytes = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&bytes);
    std::thread::spawn(move || {
        for lane in (0..senders.len()).cycle() {
            let mut chunk = Vec::with_capacity(CHUNK_ROWS);
            let mut failure = None;
            while chunk.len() < CHUNK_ROWS {
                match reader.next_record() {
                    Some(Ok(record)) => chunk.push(record),
                    Some(Err(e)) => {
                        failure = Some(e);
                        break;
                    }
                    None => break,
                }
            }
            counter.store(reader.bytes_read(), Ordering::Relaxed);
            let last = chunk.len() < CHUNK_ROWS;
            let mut lane = lane;
            // A closed channel means the run stopped: nothing left to do.
            if !chunk.is_empty() {
                if senders[lane].blocking_send(Ok(chunk)).is_err() {
                    return;
                }
                lane = (lane + 1) % senders.len();
            }
            if let Some(e) = failure {
                let _ = senders[lane].blocking_send(Err(e));
                return;
            }
            if last {
                return;
            }
        }
    });
    (receivers, bytes)
}

/// What the reader thread hands over: a chunk of records, or the error that ended the file.
pub type ChunkResult = Result<Vec<Record>, InputError>;

#[cfg(test)]
mod tests {
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
            id_in_service: id.into(),
            phone_number: phone.into(),
        })
    }

    #[test]
    fn normalises_phones() {
        let cases = [
            ("+372 5555 5555", Ok("+37255555555")),
            ("00372-5555.5555", Ok("+37255555555")),
            ("+44 (0) 1234 567890", Ok("+4401234567890")),
            (
                "+1234567",
                Err("phone has 7 digits after the +; E.164 allows 8 to 15"),
            ),
            (
                "+1234567890123456",
                Err("phone has 16 digits after the +; E.164 allows 8 to 15"),
            ),
            (
                "5551234",
                Err("phone has no country prefix (use +CC… or --default-region)"),
            ),
            ("", Err("phone_number is empty")),
        ];
        for (raw, want) in cases {
            assert_eq!(
                normalize_phone(raw, None).as_deref(),
                want.map_err(str::to_string).as_deref(),
                "{raw}"
            );
        }
        assert!(normalize_phone("+372abc55555", None).is_err());
    }

    #[test]
    fn default_region_completes_national_numbers() {
        let ee = "EE".parse().expect("EE is a region");
        assert_eq!(
            normalize_phone("5551 2345", Some(ee)).as_deref(),
            Ok("+37255512345")
        );
        let gb = "GB".parse().expect("GB is a region");
        assert_eq!(
            normalize_phone("07400 123456", Some(gb)).as_deref(),
            Ok("+447400123456")
        );
    }

    #[test]
    fn masks_phones() {
        assert_eq!(mask_phone("+37255555567"), "+3725****67");
        assert_eq!(mask_phone("+123"), "****");
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
                (2, user("a,b", "+37255555555")),
                (3, user("multi\nline", "+37266666666")),
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
                (5, "id_in_service is not valid UTF-8".to_string()),
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

    proptest::proptest! {
        #[test]
        fn normalisation_never_panics(s in "\\PC*") {
            let _ = normalize_phone(&s, None);
            let _ = normalize_phone(&s, "EE".parse().ok());
        }

        #[test]
        fn parsing_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let mut input = b"id_in_service,phone_number\n".to_vec();
            input.extend_from_slice(&data);
            let _ = read_all(&input, &InputOptions::default());
            let _ = read_all(&data, &InputOptions::default());
        }

        #[test]
        fn valid_rows_round_trip(id in "[a-z0-9@._]{1,20}", digits in "[1-9][0-9]{7,14}") {
            let data = format!("id_in_service,phone_number\n{id},+{digits}\n");
            let rows = users(data.as_bytes());
            proptest::prop_assert_eq!(rows, vec![(2, user(&id, &format!("+{digits}")))]);
        }
    }
}
