//! Whether the run reaches the `--rate` asked, and if not, whether the window of requests in
//! flight is why: by Little's law `n` in flight at latency `l` allow at most `n / l` requests per
//! second, so a fixed `--concurrency` (or the `--max-concurrency` ceiling) set too low holds the
//! rate back silently. Said once, with the numbers and what to raise, for any stretch of 30 s
//! (or the whole run, when shorter) that ran below the rate with the window full.

use std::time::{Duration, Instant};

use crate::client::{Client, Concurrency};

/// How long a stretch is judged over.
const STRETCH: Duration = Duration::from_secs(30);
/// A run shorter than a stretch is judged as a whole when it sent for at least this long.
const SHORTEST: Duration = Duration::from_secs(3);
/// How often the window is looked at.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Below this share of the rate, the rate is not reached.
const REACHED: f64 = 0.9;
/// The window held the rate back when it was full, with rows waiting, this often.
const MOSTLY: f64 = 0.8;

/// The watch over one run.
#[derive(Debug)]
pub(super) struct PaceWatch {
    rate: Option<f64>,
    started: Instant,
    sent_at_start: u64,
    stretch: Instant,
    sent_at_stretch: u64,
    samples: u32,
    capped: u32,
    last_sample: Instant,
    warned: bool,
}

impl PaceWatch {
    /// A watch for a run paced at `rate` (`None`: unlimited, nothing to reach).
    pub(super) fn new(rate: Option<f64>) -> PaceWatch {
        let now = Instant::now();
        PaceWatch {
            rate,
            started: now,
            sent_at_start: 0,
            stretch: now,
            sent_at_stretch: 0,
            samples: 0,
            capped: 0,
            last_sample: now,
            warned: false,
        }
    }

    /// Looks at the window (`in_flight` requests, rows `waiting` to be sent); returns the warning
    /// once a stretch ran below the rate because of it.
    pub(super) fn sample(
        &mut self,
        client: &Client,
        in_flight: usize,
        waiting: bool,
    ) -> Option<String> {
        if self.warned || self.rate.is_none() || self.last_sample.elapsed() < SAMPLE_EVERY {
            return None;
        }
        self.last_sample = Instant::now();
        let window = client.window();
        self.samples += 1;
        self.capped += u32::from(waiting && window.at_cap() && in_flight >= window.limit());
        if self.stretch.elapsed() < STRETCH {
            return None;
        }
        let warning = self.judge(client, self.stretch.elapsed(), self.sent_at_stretch);
        (self.stretch, self.sent_at_stretch) = (Instant::now(), client.requests_sent());
        (self.samples, self.capped) = (0, 0);
        warning
    }

    /// At the end of a run shorter than a stretch: the same judgement over the whole of it.
    pub(super) fn finish(&mut self, client: &Client) -> Option<String> {
        let took = self.started.elapsed();
        if self.warned || took >= STRETCH || took < SHORTEST {
            return None;
        }
        self.judge(client, took, self.sent_at_start)
    }

    fn judge(&mut self, client: &Client, took: Duration, sent_before: u64) -> Option<String> {
        let rate = self.rate?;
        let achieved =
            client.requests_sent().saturating_sub(sent_before) as f64 / took.as_secs_f64();
        let capped = self.samples > 0 && f64::from(self.capped) >= MOSTLY * f64::from(self.samples);
        if achieved >= REACHED * rate || !capped {
            return None;
        }
        let window = client.window();
        let latency = window.p90()?.as_secs_f64();
        let limit = window.limit();
        // The window allows `limit / latency`; a run well below even that was held back by
        // something else (the API's 429s, a slow ledger): the window is not to blame.
        if achieved < 0.8 * limit as f64 / latency {
            return None;
        }
        let needed = (rate * latency * 1.5).ceil() as usize;
        let flag = match window.mode() {
            Concurrency::Fixed(_) => "--concurrency",
            Concurrency::Auto { .. } => "--max-concurrency",
        };
        self.warned = true;
        Some(format!(
            "warning: the rate asked is not reached: {limit} in flight at {:.0} ms allow {:.0}/s of the {rate}/s asked (ran at {achieved:.1}/s); raise {flag} to {needed}",
            latency * 1000.0,
            limit as f64 / latency
        ))
    }
}
