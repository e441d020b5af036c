//! The retry loop: every attempt waits for the shared limiter (and, through an outage, for its
//! turn to probe), transient failures back off with jitter (at least `Retry-After`), a 429 pauses
//! every request, and the stop flag ends the wait.

use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use reqwest::{Method, StatusCode};
use tokio::sync::OwnedSemaphorePermit;
use url::Url;

use super::answers::{Fatal, Step, Stops, parse_retry_after};
use super::outage::Verdict;
use super::redact::{Redact, Secrets};
use super::window::Slot;
use super::{Client, describe};
use crate::throttle::backoff;

/// How a request with retries ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Retried<T> {
    /// A final answer.
    Done(T),
    /// Transient failures outlasted the attempts, or the answer was unexpected but not a 4xx.
    GaveUp(String),
    /// The stop flag was raised before an answer; `None` if nothing was ever sent.
    Stopped(Option<String>),
}

/// A result together with how many requests it took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempted<T> {
    /// The result.
    pub result: Retried<T>,
    /// Requests sent.
    pub attempts: u32,
}

/// How the answer to one attempt is read, and what it means for the retry loop.
pub(super) trait Answer<T> {
    /// Whether the body is streamed for as long as it takes (the user list): `--timeout` then
    /// bounds each wait for the next bytes, not the whole answer.
    const STREAMED: bool = false;

    /// Reads `response` (its body as far as it needs) into one step of the loop. A body cut off
    /// part-way is a transient failure: the loop sends the request again.
    async fn read(&mut self, response: reqwest::Response, secrets: &Secrets) -> Step<T>;
}

/// An answer read whole (at most [`MAX_ANSWER_BYTES`]) and judged by a classifier: every answer
/// but the user list's.
pub(super) struct Buffered<F>(pub(super) F);

impl<T, F> Answer<T> for Buffered<F>
where
    F: Fn(StatusCode, Option<Duration>, &[u8]) -> Step<T>,
{
    async fn read(&mut self, mut response: reqwest::Response, secrets: &Secrets) -> Step<T> {
        let status = response.status();
        let retry_after = retry_after(&response);
        let body = match read_body(&mut response, MAX_ANSWER_BYTES).await {
            Ok(Some(body)) => body,
            // Read no further: the connection is dropped with the response.
            Ok(None) => bytes::Bytes::from(format!(
                r#"{{"message":"the answer was longer than {} KiB; it was not read"}}"#,
                MAX_ANSWER_BYTES / 1024
            )),
            Err(e) => return cut_off(status, &e),
        };
        if status.is_success() {
            (self.0)(status, retry_after, &body)
        } else {
            // Reasons come from error answers: the secrets go before they are read.
            (self.0)(status, retry_after, &secrets.body(body))
        }
    }
}

/// An answer's `Retry-After`, parsed.
pub(super) fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after)
}

/// A body that broke off part-way: as transient as no answer at all.
pub(super) fn cut_off<T>(status: StatusCode, e: &reqwest::Error) -> Step<T> {
    Step::Again {
        reason: format!("{status} but the body was cut off: {}", describe(e)),
        floor: None,
        pause_all: false,
    }
}

/// Why a request's retries ended before an answer.
enum Cut {
    /// The run stopped (a signal, a fatal answer elsewhere).
    Stopped,
    /// The API is down past `--outage-timeout`.
    Down,
}

impl Client {
    /// Sends one request until `answer` calls it final, the attempts run out, or the run
    /// stops.
    pub(super) async fn with_retries<T: Redact + Stops, A: Answer<T>>(
        &self,
        method: Method,
        url: Result<Url, String>,
        body: Option<bytes::Bytes>,
        mut answer: A,
    ) -> Attempted<T> {
        let url = match url {
            Ok(url) => url,
            Err(e) => {
                return Attempted {
                    result: Retried::GaveUp(e),
                    attempts: 0,
                };
            }
        };
        let mut attempts = 0;
        let mut last_reason = None;
        loop {
            let (slot, place) = match self.ready().await {
                Ok(ready) => ready,
                Err(cut) => return self.cut(cut, last_reason, attempts),
            };
            attempts += 1;
            let sent = std::time::Instant::now();
            let step = match self.attempt(&method, &url, &body, &mut answer).await {
                Ok(step) => step.redact(&self.secrets),
                Err(cut) => return self.cut(cut, last_reason, attempts),
            };
            // Its place is free while it waits to try again.
            drop(place);
            let Some(probe_pause) = self.weigh::<T, A>(&step, slot.is_some(), sent) else {
                return self.cut(Cut::Down, last_reason, attempts);
            };
            let (reason, wait) = match self.after(step, attempts) {
                Ok(wait) => wait,
                Err(result) => return Attempted { result, attempts },
            };
            last_reason = Some(reason);
            if let Err(cut) = self.pause(slot, probe_pause, wait).await {
                return self.cut(cut, last_reason, attempts);
            }
        }
    }

    /// What an answer says about the API, for the window and the outage rule; returns how long a
    /// probe holds its slot before trying again, or `None` once the API is down.
    fn weigh<T, A: Answer<T>>(
        &self,
        step: &Step<T>,
        probe: bool,
        sent: std::time::Instant,
    ) -> Option<Duration> {
        match step {
            Step::Again { pause_all, .. } => {
                // A 429 pauses everyone already; timeouts and 5xx shrink the window.
                if !pause_all {
                    self.window.pressured();
                }
                match self.health.transient(probe) {
                    Verdict::Retry(pause) => Some(pause),
                    Verdict::Down(_) => None,
                }
            }
            Step::Done(_) | Step::Later(_) => {
                // The list streams for as long as it takes: no latency of one answer.
                if !A::STREAMED {
                    self.window.answered(sent.elapsed());
                }
                self.health.good();
                Some(Duration::ZERO)
            }
        }
    }

    /// Waits for the turn to send: a probe's slot through an outage, then a token of the limiter.
    async fn ready(&self) -> Result<(Option<OwnedSemaphorePermit>, Slot<'_>), Cut> {
        // A place in the window first: a request that waits for one takes no token.
        let place = tokio::select! {
            biased;
            () = self.stop.wait() => return Err(Cut::Stopped),
            place = self.window.admit() => place,
        };
        let slot = tokio::select! {
            biased;
            () = self.stop.wait() => return Err(Cut::Stopped),
            slot = self.health.admit() => slot,
        };
        tokio::select! {
            biased;
            () = self.stop.wait() => return Err(Cut::Stopped),
            () = self.throttle.acquire() => {}
        }
        self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok((slot, place))
    }

    /// One request and what its answer means.
    async fn attempt<T: Stops, A: Answer<T>>(
        &self,
        method: &Method,
        url: &Url,
        body: &Option<bytes::Bytes>,
        answer: &mut A,
    ) -> Result<Step<T>, Cut> {
        let exchange = async {
            let streamed = <A as Answer<T>>::STREAMED;
            match self
                .send(method.clone(), url.clone(), body.clone(), streamed)
                .await
            {
                Ok(response) => answer.read(response, &self.secrets).await,
                Err(Unsent::Refused(fatal)) => Step::Done(T::stops(fatal)),
                Err(Unsent::Failed(reason)) => Step::Again {
                    reason,
                    floor: None,
                    pause_all: false,
                },
            }
        };
        // A read changes nothing at Verigator, so a stop abandons it (a large user list can take
        // minutes); a create or delete in flight is waited for, so its answer is recorded.
        if *method == Method::GET {
            tokio::select! {
                biased;
                () = self.stop.wait() => Err(Cut::Stopped),
                step = exchange => Ok(step),
            }
        } else {
            Ok(exchange.await)
        }
    }

    /// Waits before the next attempt: a failed probe holds its slot for `probe_pause` first, so
    /// probes are spaced; a long wait (a large `Retry-After`) wakes when the outage would reach
    /// its timeout.
    async fn pause(
        &self,
        slot: Option<OwnedSemaphorePermit>,
        probe_pause: Duration,
        wait: Duration,
    ) -> Result<(), Cut> {
        if slot.is_some() && !probe_pause.is_zero() {
            tokio::select! {
                biased;
                () = self.stop.wait() => return Err(Cut::Stopped),
                () = tokio::time::sleep(probe_pause) => {}
            }
        }
        drop(slot);
        let wake = tokio::time::Instant::now() + wait;
        loop {
            let nap = wake
                .saturating_duration_since(tokio::time::Instant::now())
                .min(self.health.until_timeout().max(Duration::from_millis(10)));
            tokio::select! {
                biased;
                () = self.stop.wait() => return Err(Cut::Stopped),
                () = tokio::time::sleep(nap) => {}
            }
            if self.health.check().is_some() {
                return Err(Cut::Down);
            }
            if tokio::time::Instant::now() >= wake {
                return Ok(());
            }
        }
    }

    /// How a request cut short ends.
    fn cut<T>(&self, cut: Cut, last_reason: Option<String>, attempts: u32) -> Attempted<T> {
        match cut {
            Cut::Stopped => Attempted {
                result: Retried::Stopped(last_reason),
                attempts,
            },
            Cut::Down => self.down(attempts),
        }
    }

    /// The API is down past `--outage-timeout`: the run stops (the reason is the client's, said
    /// once at the end; each row only says why it was not sent).
    fn down<T>(&self, attempts: u32) -> Attempted<T> {
        self.stop.trigger();
        Attempted {
            result: Retried::Stopped(Some(
                "no answer: the API is unreachable (see the last line)".into(),
            )),
            attempts,
        }
    }

    /// What follows one attempt's step: the result that ends the loop, or the reason to retry and
    /// how long to wait first (pausing every request for a 429).
    fn after<T>(&self, step: Step<T>, attempts: u32) -> Result<(String, Duration), Retried<T>> {
        let (reason, floor, pause_all) = match step {
            Step::Done(t) => return Err(Retried::Done(t)),
            Step::Later(reason) => return Err(Retried::GaveUp(reason)),
            Step::Again {
                reason,
                floor,
                pause_all,
            } => (reason, floor, pause_all),
        };
        let wait = backoff(attempts, &mut rand::rng()).max(floor.unwrap_or_default());
        if pause_all {
            self.throttle.pause_all(wait);
        }
        if attempts >= self.max_attempts {
            return Err(Retried::GaveUp(format!(
                "{reason} (after {attempts} attempts)"
            )));
        }
        Ok((reason, wait))
    }

    /// Sends one request; its answer's head, or why none came (timeout, refused, reset, a
    /// certificate not trusted).
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<bytes::Bytes>,
        streamed: bool,
    ) -> Result<reqwest::Response, Unsent> {
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.body(body);
        }
        if streamed {
            request = request.timeout(MAX_STREAMED_TIME);
        }
        request
            .send()
            .await
            .map_err(|e| match super::refused::refused(&e, &self.peer) {
                Some(fatal) => Unsent::Refused(fatal),
                None => Unsent::Failed(describe(&e)),
            })
    }
}

/// Why a request got no answer.
enum Unsent {
    /// The server's certificate is not trusted: the run stops.
    Refused(Fatal),
    /// A transient failure (timeout, refused, reset), described.
    Failed(String),
}

/// The longest a streamed answer may take while bytes keep coming (the client's read timeout,
/// `--timeout`, ends it when they stop): a user list of millions over a slow link takes minutes.
const MAX_STREAMED_TIME: Duration = Duration::from_secs(4 * 3600);

/// The longest answer read whole: a create, delete or error answer is a few hundred bytes, and
/// a hostile or broken server must not make the process hold more. (The user list is streamed,
/// each of its entries bounded: see `list`.)
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A body of at most `limit` bytes, or `None` when it is longer (announced or as it arrives).
async fn read_body(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<Option<bytes::Bytes>, reqwest::Error> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Ok(None);
    }
    let Some(first) = response.chunk().await? else {
        return Ok(Some(bytes::Bytes::new()));
    };
    if first.len() > limit {
        return Ok(None);
    }
    // Most answers arrive in one piece: no copy then.
    let Some(second) = response.chunk().await? else {
        return Ok(Some(first));
    };
    let mut body = bytes::BytesMut::from(&first[..]);
    let mut next = Some(second);
    while let Some(chunk) = next {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
        next = response.chunk().await?;
    }
    Ok(Some(body.freeze()))
}
