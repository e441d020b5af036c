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
use super::answers::{Fatal, Step, reason, transient};
use super::redact::Secrets;
use super::retry::{Answer, Attempted, Buffered, cut_off};
use super::wire::ListedUser;
use split::{Piece, SplitError, Splitter};

pub use split::MAX_ENTRY_BYTES;

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
        let answer = Streamed { sink, service_id };
        self.with_retries(Method::GET, url, None, answer).await
    }
}

/// The list's answer: a 2xx body streamed into the sink, any other answer read whole.
struct Streamed<'a, S> {
    sink: &'a mut S,
    service_id: &'a str,
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
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => return cut_off(status, &e),
            };
            let mut each = |piece: Piece<'_>| take(piece, &mut listed, self.sink, secrets);
            match splitter.feed(&chunk, &mut each) {
                Ok(ControlFlow::Continue(())) => {}
                Ok(ControlFlow::Break(())) => return Step::Done(Err(ListError::Abandoned)),
                Err(e) => return Step::Done(Err(unreadable(&e))),
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
}
