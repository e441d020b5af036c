//! The retry loop: every attempt waits for the shared limiter (and, through an outage, for its
//! turn to probe), transient failures back off with jitter (at least `Retry-After`), a 429 pauses
//! every request, and the stop flag ends the wait.

use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use reqwest::{Method, StatusCode};
use tokio::sync::OwnedSemaphorePermit;
use url::Url;

use super::answers::{Step, parse_retry_after};
use super::outage::Verdict;
use super::redact::Redact;
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

/// What one exchange produced, before classification.
#[derive(Debug)]
pub enum Exchange {
    /// An HTTP answer.
    Answer {
        /// Its status.
        status: StatusCode,
        /// `Retry-After`, parsed.
        retry_after: Option<Duration>,
        /// Its body.
        body: bytes::Bytes,
    },
    /// No answer: timeout, refused, reset, closed early.
    Transport(String),
}

/// Why a request's retries ended before an answer.
enum Cut {
    /// The run stopped (a signal, a fatal answer elsewhere).
    Stopped,
    /// The API is down past `--outage-timeout`.
    Down,
}

impl Client {
    /// Sends one request until `classify` calls an answer final, the attempts run out, or the run
    /// stops.
    pub(super) async fn with_retries<T: Redact>(
        &self,
        method: Method,
        url: Result<Url, String>,
        body: Option<bytes::Bytes>,
        classify: impl Fn(StatusCode, Option<Duration>, &[u8]) -> Step<T>,
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
            let slot = match self.ready().await {
                Ok(slot) => slot,
                Err(cut) => return self.cut(cut, last_reason, attempts),
            };
            attempts += 1;
            let step = match self.attempt(&method, &url, &body, &classify).await {
                Ok(step) => step.redact(&self.secrets),
                Err(cut) => return self.cut(cut, last_reason, attempts),
            };
            let probe_pause = match &step {
                Step::Again { .. } => match self.health.transient(slot.is_some()) {
                    Verdict::Retry(pause) => pause,
                    Verdict::Down(_) => return self.cut(Cut::Down, last_reason, attempts),
                },
                Step::Done(_) | Step::Later(_) => {
                    self.health.good();
                    Duration::ZERO
                }
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

    /// Waits for the turn to send: a probe's slot through an outage, then a token of the limiter.
    async fn ready(&self) -> Result<Option<OwnedSemaphorePermit>, Cut> {
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
        Ok(slot)
    }

    /// One request and what its answer means.
    async fn attempt<T>(
        &self,
        method: &Method,
        url: &Url,
        body: &Option<bytes::Bytes>,
        classify: &impl Fn(StatusCode, Option<Duration>, &[u8]) -> Step<T>,
    ) -> Result<Step<T>, Cut> {
        let exchange = self.exchange(method.clone(), url.clone(), body.clone());
        // A read changes nothing at Verigator, so a stop abandons it (a large user list can take
        // minutes); a create or delete in flight is waited for, so its answer is recorded.
        let exchange = if *method == Method::GET {
            tokio::select! {
                biased;
                () = self.stop.wait() => return Err(Cut::Stopped),
                exchange = exchange => exchange,
            }
        } else {
            exchange.await
        };
        Ok(match exchange {
            Exchange::Transport(reason) => Step::Again {
                reason,
                floor: None,
                pause_all: false,
            },
            // Reasons come from error answers: the secrets go before they are read.
            Exchange::Answer {
                status,
                retry_after,
                body,
            } if !status.is_success() => classify(status, retry_after, &self.secrets.body(body)),
            Exchange::Answer {
                status,
                retry_after,
                body,
            } => classify(status, retry_after, &body),
        })
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

    async fn exchange(&self, method: Method, url: Url, body: Option<bytes::Bytes>) -> Exchange {
        // Only the user list may be long; any other answer fits in a few hundred bytes.
        let limit = if method == Method::GET {
            MAX_LIST_BYTES
        } else {
            MAX_ANSWER_BYTES
        };
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.body(body);
        }
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Exchange::Transport(describe(&e)),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = match read_body(&mut response, limit).await {
            Ok(Some(body)) => body,
            // Read no further: the connection is dropped with the response.
            Ok(None) => bytes::Bytes::from(format!(
                r#"{{"message":"the answer was longer than {} KiB; it was not read"}}"#,
                limit / 1024
            )),
            Err(e) => {
                return Exchange::Transport(format!(
                    "{status} but the body was cut off: {}",
                    describe(&e)
                ));
            }
        };
        Exchange::Answer {
            status,
            retry_after,
            body,
        }
    }
}

/// The longest answer read, but for the user list: a create, delete or error answer is a few
/// hundred bytes, and a hostile or broken server must not make the process hold more.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// The longest user list read (about ten million users); streaming it is the lasting answer.
pub const MAX_LIST_BYTES: usize = 1024 * 1024 * 1024;

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
