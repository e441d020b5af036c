//! Outages: when every request has failed transiently (connection errors, timeouts, 5xx, 429) for
//! [`PROBE_AFTER`], requests go one at a time, as probes spaced by a growing pause, instead of each
//! burning its attempts; the first good answer reopens a window that doubles with each good answer
//! until it no longer limits. Past the outage timeout the run stops: the API is down, and holding
//! the ledger's lock for days would only block the next night's run.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// After this long with nothing but transient failures, only one request at a time goes out.
pub const PROBE_AFTER: Duration = Duration::from_secs(10);
/// The first pause between two failed probes; it doubles up to [`MAX_PROBE_PAUSE`].
const FIRST_PROBE_PAUSE: Duration = Duration::from_millis(250);
/// The longest pause between two failed probes.
const MAX_PROBE_PAUSE: Duration = Duration::from_secs(30);

/// `failing_since` while the last answer was good.
const HEALTHY: u64 = u64::MAX;

/// What a transient failure means for the run.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Retry; a probe holds its slot for this long first, so probes are spaced.
    Retry(Duration),
    /// The outage outlasted the timeout: the run stops, for this reason.
    Down(String),
}

/// The API's health as the answers show it, shared by every request of a client.
#[derive(Debug)]
pub(super) struct Health {
    origin: Instant,
    origin_wall: SystemTime,
    timeout: Duration,
    concurrency: usize,
    /// Milliseconds after `origin` of the first transient failure since the last answer that was
    /// not one ([`HEALTHY`] while there is none): an outage is timed from there, so a quiet spell
    /// without requests is no outage.
    failing_since: AtomicU64,
    /// Whether requests must pass the gate (probing or reopening); the fast path reads only this.
    limited: AtomicBool,
    gate: Mutex<Gate>,
    down: OnceLock<String>,
}

#[derive(Debug)]
struct Gate {
    probing: bool,
    window: usize,
    permits: Arc<Semaphore>,
    failed_probes: u32,
}

impl Health {
    /// Healthy until shown otherwise; `concurrency` is the window a recovery grows back to.
    pub(super) fn new(timeout: Duration, concurrency: usize) -> Health {
        Health {
            origin: Instant::now(),
            origin_wall: SystemTime::now(),
            timeout,
            concurrency: concurrency.max(1),
            failing_since: AtomicU64::new(HEALTHY),
            limited: AtomicBool::new(false),
            gate: Mutex::new(Gate {
                probing: false,
                window: usize::MAX,
                permits: Arc::new(Semaphore::new(0)),
                failed_probes: 0,
            }),
            down: OnceLock::new(),
        }
    }

    /// Why the run stopped for an outage, once it did.
    pub(super) fn down(&self) -> Option<&str> {
        self.down.get().map(String::as_str)
    }

    /// Waits for a slot while the API is being probed or the window reopens; at once otherwise.
    pub(super) async fn admit(&self) -> Option<OwnedSemaphorePermit> {
        while self.limited.load(Ordering::Acquire) {
            let permits = Arc::clone(&self.lock().permits);
            // A closed gate was replaced (a new outage) or opened (recovered): look again.
            if let Ok(permit) = permits.acquire_owned().await {
                return Some(permit);
            }
        }
        None
    }

    /// An answer that was not a transient failure.
    pub(super) fn good(&self) {
        if self.failing_since.load(Ordering::Relaxed) != HEALTHY {
            self.failing_since.store(HEALTHY, Ordering::Relaxed);
        }
        if self.limited.load(Ordering::Acquire) {
            self.widen();
        }
    }

    /// A transient failure (`probe`: of a request that held a probe's slot): decides whether to
    /// probe, and whether the outage is over the limit.
    pub(super) fn transient(&self, probe: bool) -> Verdict {
        let now = self.millis();
        let _ =
            self.failing_since
                .compare_exchange(HEALTHY, now, Ordering::Relaxed, Ordering::Relaxed);
        if let Some(why) = self.check() {
            return Verdict::Down(why);
        }
        if self.failing_for() < PROBE_AFTER.min(self.timeout) {
            return Verdict::Retry(Duration::ZERO);
        }
        let mut gate = self.lock();
        if !gate.probing {
            gate.permits.close();
            *gate = Gate {
                probing: true,
                window: 1,
                permits: Arc::new(Semaphore::new(1)),
                failed_probes: 0,
            };
            self.limited.store(true, Ordering::Release);
        }
        if !probe {
            // Failures of requests sent before probing began say nothing new about the API.
            return Verdict::Retry(Duration::ZERO);
        }
        let pause = FIRST_PROBE_PAUSE.saturating_mul(1 << gate.failed_probes.min(16));
        gate.failed_probes = gate.failed_probes.saturating_add(1);
        Verdict::Retry(pause.min(MAX_PROBE_PAUSE))
    }

    /// How long only transient failures have come back (zero while healthy).
    fn failing_for(&self) -> Duration {
        match self.failing_since.load(Ordering::Relaxed) {
            HEALTHY => Duration::ZERO,
            since => Duration::from_millis(self.millis().saturating_sub(since)),
        }
    }

    /// Why the run must stop, once only transient failures have come back for the timeout.
    pub(super) fn check(&self) -> Option<String> {
        if let Some(why) = self.down.get() {
            return Some(why.clone());
        }
        let failing = self.failing_for();
        (failing >= self.timeout).then(|| self.down.get_or_init(|| self.reason(failing)).clone())
    }

    /// How long a request may wait before the outage could reach its timeout (a waiting request
    /// checks then, rather than sleep through it on a long `Retry-After`).
    pub(super) fn until_timeout(&self) -> Duration {
        match self.failing_since.load(Ordering::Relaxed) {
            HEALTHY => self.timeout,
            _ => self.timeout.saturating_sub(self.failing_for()),
        }
    }

    /// After a good answer while limited: probing ends, and the window doubles until it no longer
    /// limits anything.
    fn widen(&self) {
        let mut gate = self.lock();
        gate.probing = false;
        gate.failed_probes = 0;
        let more = gate.window;
        gate.window = gate.window.saturating_mul(2);
        if gate.window >= self.concurrency {
            self.limited.store(false, Ordering::Release);
            gate.permits.close();
        } else {
            gate.permits.add_permits(more);
        }
    }

    fn reason(&self, quiet: Duration) -> String {
        let since = self.origin_wall
            + Duration::from_millis(
                self.failing_since
                    .load(Ordering::Relaxed)
                    .min(self.millis()),
            );
        let since = chrono::DateTime::<chrono::Utc>::from(since).format("%Y-%m-%d %H:%M:%S UTC");
        format!(
            "the API is unreachable since {since}: every request failed (connection errors, timeouts, 5xx or 429) for {} s, past --outage-timeout; every answer so far is recorded",
            quiet.as_secs()
        )
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's health as if its first transient failure came `age` ago.
    fn failing_for(age: Duration) -> Health {
        let health = Health {
            origin: Instant::now() - age,
            ..Health::new(Duration::from_secs(60), 8)
        };
        health.failing_since.store(0, Ordering::Relaxed);
        health
    }

    #[tokio::test]
    async fn a_short_failure_or_a_long_quiet_spell_changes_nothing() {
        let health = failing_for(Duration::from_secs(1));
        assert_eq!(health.transient(false), Verdict::Retry(Duration::ZERO));
        assert!(health.admit().await.is_none(), "no gate");
        // Long without requests, then one failure: the outage starts now, not at the start.
        let idle = Health {
            origin: Instant::now() - Duration::from_secs(600),
            ..Health::new(Duration::from_secs(60), 8)
        };
        assert_eq!(idle.transient(false), Verdict::Retry(Duration::ZERO));
        assert_eq!(idle.check(), None);
    }

    #[tokio::test]
    async fn an_outage_probes_one_at_a_time_then_the_window_grows_back() {
        let health = failing_for(PROBE_AFTER + Duration::from_secs(1));
        assert_eq!(health.transient(false), Verdict::Retry(Duration::ZERO));
        assert_eq!(health.transient(true), Verdict::Retry(FIRST_PROBE_PAUSE));
        assert_eq!(
            health.transient(true),
            Verdict::Retry(FIRST_PROBE_PAUSE * 2)
        );
        let probe = health.admit().await.expect("a probe's slot");
        let second = tokio::time::timeout(Duration::from_millis(20), health.admit()).await;
        assert!(second.is_err(), "a second request waits while one probes");
        drop(probe);
        health.good();
        let a = health.admit().await.expect("window of 2");
        let b = health.admit().await.expect("window of 2");
        let third = tokio::time::timeout(Duration::from_millis(20), health.admit()).await;
        assert!(third.is_err(), "the window is 2");
        drop((a, b));
        health.good();
        health.good();
        assert!(
            health.admit().await.is_none(),
            "grown past the concurrency: open"
        );
    }

    #[test]
    fn past_the_timeout_the_api_is_down_and_says_since_when() {
        let health = failing_for(Duration::from_secs(61));
        assert_eq!(health.until_timeout(), Duration::ZERO);
        let Verdict::Down(why) = health.transient(true) else {
            panic!("past the timeout")
        };
        assert!(
            why.starts_with("the API is unreachable since ") && why.contains("for 61 s"),
            "{why}"
        );
        assert_eq!(health.check(), Some(why));
    }
}
