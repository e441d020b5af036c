//! The service's user list, read as a stream: how the import resolves the UserIDs of users that
//! existed already (409), and what `reconcile` compares the ledger with. The body is split as it
//! arrives (`split.rs`) and each entry handed to a [`ListSink`]; nothing here holds the list,
//! whose size only the service bounds. An entry that is not an object with string `id` and
//! `id_in_service`, or is longer than [`MAX_ENTRY_BYTES`], is skipped and counted.

mod scan;
mod split;

use std::ops::ControlFlow;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use thiserror::Error;

use super::Client;
use super::answers::{Fatal, Step, Stops, reason, transient};
use super::redact::Secrets;
use super::retry::{Answer, Attempted, Buffered, cut_off};
use super::wire::ListedUser;
use split::{Piece, SplitError, Splitter};

pub use split::MAX_ENTRY_BYTES;

/// The most entries a list may have: far beyond any service (the largest we plan for holds ten
/// million users, about 1 GB of list).
pub const MAX_ENTRIES: u64 = 50_000_000;
/// The most bytes a list may have: what it keeps on disk is bounded by this (a list of 64 KiB
/// entries, or of padding, brings few entries for many bytes).
pub const MAX_BYTES: u64 = 8 << 30;
/// A list must bring at least this much, and an entry, in every window of [`MIN_WINDOW`] (or
/// `--timeout`, if longer): a link as slow as 1 KB/s passes; a server that trickles a byte at a
/// time, or streams padding or a string that never ends, does not.
const MIN_BYTES_PER_WINDOW: usize = 64 * 1024;
/// The shortest window of that rule.
const MIN_WINDOW: Duration = Duration::from_secs(60);

/// What reads a user list, entry by entry, as it arrives.
pub trait ListSink {
    /// Forgets every entry handed over so far: the list is read again from its start (an
    /// attempt broke off part-way and is retried).
    fn restart(&mut self);

    /// Takes one well-formed entry (its UserID not checked yet). `Break` stops the reading; the
    /// sink keeps why.
    fn user(&mut self, user: ListedUser) -> ControlFlow<()>;
}

/// A list read to its end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listed {
    /// Entries handed to the sink.
    pub entries: u64,
    /// Entries skipped as malformed: a list that has any is incomplete.
    pub malformed: u64,
    /// The count the server claims (`total`, or `count` in some clients; the larger when both
    /// come); more than the distinct ids listed means the list was truncated.
    pub total: Option<u64>,
}

/// Why listing users failed for good.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ListError {
    /// The run must stop.
    #[error(transparent)]
    Fatal(Fatal),
    /// Another refusal or an unreadable body.
    #[error("listing users failed: {0}")]
    Other(String),
    /// The sink stopped the reading (it knows why).
    #[error("the user list was not read to its end")]
    Abandoned,
}

impl Client {
    /// Lists a service's users into `sink`, retrying transient failures (a body cut off
    /// part-way included: the sink then starts over).
    pub async fn list_users(
        &self,
        service_id: &str,
        sink: &mut impl ListSink,
    ) -> Attempted<Result<Listed, ListError>> {
        let url = self.users_url(service_id, None);
        let answer = Streamed {
            sink,
            service_id,
            window: self.timeout.max(MIN_WINDOW),
        };
        self.with_retries(Method::GET, url, None, answer).await
    }
}

/// The list's answer: a 2xx body streamed into the sink, any other answer read whole.
struct Streamed<'a, S> {
    sink: &'a mut S,
    service_id: &'a str,
    /// How long the list may take to bring [`MIN_BYTES_PER_WINDOW`].
    window: Duration,
}

impl Stops for Result<Listed, ListError> {
    fn stops(fatal: Fatal) -> Self {
        Err(ListError::Fatal(fatal))
    }
}

impl<S: ListSink> Answer<Result<Listed, ListError>> for Streamed<'_, S> {
    const STREAMED: bool = true;

    async fn read(
        &mut self,
        mut response: reqwest::Response,
        secrets: &Secrets,
    ) -> Step<Result<Listed, ListError>> {
        let status = response.status();
        if !status.is_success() {
            let service_id = self.service_id;
            let mut refusal = Buffered(|status, wait, body: &[u8]| {
                classify_refusal(status, wait, body, service_id)
            });
            return refusal.read(response, secrets).await;
        }
        self.sink.restart();
        let mut splitter = Splitter::default();
        let mut listed = Listed::default();
        let mut pace = Pace::new(self.window);
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => return cut_off(status, &e),
            };
            if let Err(why) = pace.took(chunk.len(), listed.entries + listed.malformed) {
                return Step::Done(Err(ListError::Other(why)));
            }
            let mut each = |piece: Piece<'_>| take(piece, &mut listed, self.sink, secrets);
            match splitter.feed(&chunk, &mut each) {
                Ok(ControlFlow::Continue(())) => {}
                Ok(ControlFlow::Break(())) => return Step::Done(Err(ListError::Abandoned)),
                Err(e) => return Step::Done(Err(unreadable(&e))),
            }
            if listed.entries + listed.malformed > MAX_ENTRIES || pace.total > MAX_BYTES {
                return Step::Done(Err(ListError::Other(format!(
                    "the user list goes on past {MAX_ENTRIES} entries or {} GiB: refused as endless",
                    MAX_BYTES >> 30
                ))));
            }
        }
        match splitter.finish() {
            Ok(claimed) => Step::Done(Ok(Listed {
                total: claimed.total,
                ..listed
            })),
            Err(e) => Step::Done(Err(unreadable(&e))),
        }
    }
}

/// Whether a streamed list keeps coming fast enough: the client's read timeout ends it when
/// bytes stop, this when they only trickle.
struct Pace {
    window: Duration,
    since: std::time::Instant,
    bytes: usize,
    /// Entries seen when the window began.
    items: u64,
    /// Bytes of the whole list.
    total: u64,
}

impl Pace {
    fn new(window: Duration) -> Pace {
        Pace {
            window,
            since: std::time::Instant::now(),
            bytes: 0,
            items: 0,
            total: 0,
        }
    }

    /// Counts `bytes` more, with `items` entries so far; says why the list is given up if a whole
    /// window brought too few bytes or no entry.
    fn took(&mut self, bytes: usize, items: u64) -> Result<(), String> {
        self.bytes = self.bytes.saturating_add(bytes);
        self.total = self.total.saturating_add(bytes as u64);
        if self.since.elapsed() < self.window {
            return Ok(());
        }
        if self.bytes < MIN_BYTES_PER_WINDOW || items == self.items {
            return Err(format!(
                "the user list came too slowly ({} bytes and {} entries in {:.0?}; it must bring {} KiB and an entry a minute)",
                self.bytes,
                items - self.items,
                self.since.elapsed(),
                MIN_BYTES_PER_WINDOW / 1024
            ));
        }
        self.since = std::time::Instant::now();
        self.bytes = 0;
        self.items = items;
        Ok(())
    }
}

/// Hands one element to the sink, or counts it malformed.
fn take(
    piece: Piece<'_>,
    listed: &mut Listed,
    sink: &mut impl ListSink,
    secrets: &Secrets,
) -> ControlFlow<()> {
    let user = match piece {
        Piece::Entry(bytes) => parse_entry(bytes),
        Piece::Oversized => None,
    };
    let Some(mut user) = user else {
        listed.malformed += 1;
        return ControlFlow::Continue(());
    };
    secrets.clean_user(&mut user);
    if user.id.is_empty() {
        // No UserID, or one holding the credentials (taken out): nothing can be told of this
        // user, so the list is incomplete rather than silently short of it.
        listed.malformed += 1;
        return ControlFlow::Continue(());
    }
    listed.entries += 1;
    sink.user(user)
}

/// An entry, if it is an object with string `id` and `id_in_service` (an array would also fill
/// the struct, by position: it is not an entry).
fn parse_entry(bytes: &[u8]) -> Option<ListedUser> {
    if bytes.first() != Some(&b'{') {
        return None;
    }
    serde_json::from_slice(bytes).ok()
}

fn unreadable(e: &SplitError) -> ListError {
    ListError::Other(format!("unreadable user list ({e})"))
}

/// Classifies an answer to a list that is not a 2xx.
fn classify_refusal(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
    service_id: &str,
) -> Step<Result<Listed, ListError>> {
    let fail = |e: ListError| Step::Done(Err(e));
    match status.as_u16() {
        401 => fail(ListError::Fatal(Fatal::Unauthorized)),
        403 => fail(ListError::Fatal(Fatal::Forbidden(service_id.to_string()))),
        404 => fail(ListError::Fatal(Fatal::ServiceNotFound(
            service_id.to_string(),
        ))),
        429 | 500..=599 => transient(status, body, retry_after),
        _ => fail(ListError::Other(reason(status, body))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_an_object_with_string_id_and_id_in_service() {
        let user = parse_entry(br#"{"ctime":{"a":[1]},"id_in_service":"a","x":null,"id":"u"}"#)
            .expect("an entry");
        assert_eq!((user.id.as_str(), user.id_in_service.as_str()), ("u", "a"));
        for bad in [
            &br#"["u","a"]"#[..],
            br#""u""#,
            b"7",
            br#"{"id":"u"}"#,
            br#"{"id":5,"id_in_service":"a"}"#,
            br#"{"id":"u","id_in_service":null}"#,
            br#"{"id":"u","id_in_service":"a","id":"v"}"#,
            br#"{"id":"u","id_in_service":"a",}"#,
        ] {
            assert_eq!(parse_entry(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn refusals_are_classified() {
        let step = classify_refusal(StatusCode::UNAUTHORIZED, None, b"", "s");
        assert_eq!(step, Step::Done(Err(ListError::Fatal(Fatal::Unauthorized))));
        let step = classify_refusal(StatusCode::SERVICE_UNAVAILABLE, None, b"", "s");
        assert!(matches!(step, Step::Again { .. }));
        let step = classify_refusal(StatusCode::IM_A_TEAPOT, None, br#"{"message":"no"}"#, "s");
        assert_eq!(step, Step::Done(Err(ListError::Other("418: no".into()))));
    }

    /// Keeps what it is handed.
    #[derive(Default)]
    struct Kept(Vec<ListedUser>);

    impl ListSink for Kept {
        fn restart(&mut self) {
            self.0.clear();
        }

        fn user(&mut self, user: ListedUser) -> ControlFlow<()> {
            self.0.push(user);
            ControlFlow::Continue(())
        }
    }

    #[test]
    fn a_list_must_keep_coming() {
        let mut pace = Pace::new(Duration::from_millis(50));
        assert!(pace.took(10, 1).is_ok());
        std::thread::sleep(Duration::from_millis(60));
        let why = pace.took(10, 2).expect_err("20 bytes in 60 ms");
        assert!(why.contains("20 bytes"), "{why}");
        // Bytes enough, but no entry: padding, or a string that never ends.
        let mut pace = Pace::new(Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(60));
        let why = pace
            .took(MIN_BYTES_PER_WINDOW, 0)
            .expect_err("no entry in 60 ms");
        assert!(why.contains("0 entries"), "{why}");
        let mut pace = Pace::new(Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(60));
        assert!(pace.took(MIN_BYTES_PER_WINDOW, 3).is_ok());
        assert!(pace.took(1, 3).is_ok(), "a new window starts");
        assert_eq!(pace.total, MIN_BYTES_PER_WINDOW as u64 + 1);
    }

    #[test]
    fn an_entry_without_a_usable_user_id_counts_as_malformed() {
        let secrets = Secrets::new("demo", "hunter2");
        let (mut listed, mut kept) = (Listed::default(), Kept::default());
        for entry in [
            &br#"{"id":"uid-hunter2","id_in_service":"a"}"#[..],
            br#"{"id":"","id_in_service":"b"}"#,
            br#"{"id":"u","id_in_service":"c"}"#,
            br#"{"id":"v","id_in_service":"d-hunter2"}"#,
        ] {
            let _ = take(Piece::Entry(entry), &mut listed, &mut kept, &secrets);
        }
        assert_eq!((listed.entries, listed.malformed), (1, 3));
        let ids: Vec<&str> = kept.0.iter().map(|u| u.id_in_service.as_str()).collect();
        assert_eq!(ids, ["c"]);
    }
}
