//! Pacing: the shared rate limiter (governor), the shared pause after a 429, backoff with full
//! jitter, and the stop flag that interrupts waiting. The only code that sleeps; it knows nothing of
//! HTTP status codes (the client decides when to pause or back off).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use std::time::Instant;

use governor::clock::{Clock, MonotonicClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// Governor on the OS's monotonic clock: its default TSC clock calibrates itself at start-up and
/// let the first second of a run through about 10% fast.
type Limiter = RateLimiter<NotKeyed, InMemoryState, MonotonicClock, NoOpMiddleware<Instant>>;
use rand::Rng;
use tokio::sync::{Notify, Semaphore};

/// First backoff step; doubles with each attempt.
pub const BASE_BACKOFF: Duration = Duration::from_millis(250);
/// Longest backoff step, so a long outage is probed at least this often.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The limiter every request goes through, retries included, plus the pause a 429 imposes on all.
///
/// With a rate, a pacer thread runs the governor limiter and turns its cells into semaphore permits,
/// one per waiting request and never ahead of demand, so `--burst` is governor's alone. Waiting for a token on the async timer (1 ms ticks) would lose
/// up to a millisecond per request, because GCRA with a burst of one never gives lost time back:
/// `--rate 100` came out near 90/s. The pacer sleeps with the OS's finer timer and then yields for
/// the last [`PACER_SPIN`], so the long-run rate is the one asked for.
pub struct Throttle {
    permits: Option<Arc<Semaphore>>,
    shared: Arc<Shared>,
}

/// How long before a token is due the pacer stops sleeping and yields instead (rates up to
/// 1,000/s; above that the OS timer is precise enough relative to the period).
const PACER_SPIN: Duration = Duration::from_micros(150);

#[derive(Debug, Default)]
struct Shared {
    paused_until: Mutex<Option<Instant>>,
    closed: AtomicBool,
    /// Requests waiting for a permit: the pacer's demand.
    waiting: AtomicUsize,
    /// The pacer thread, woken when demand appears.
    pacer: OnceLock<std::thread::Thread>,
}

/// Counts one waiting request for as long as it waits, even if the wait is cancelled.
struct Waiting<'a>(&'a Shared);

impl<'a> Waiting<'a> {
    fn new(shared: &'a Shared) -> Self {
        shared.waiting.fetch_add(1, Ordering::SeqCst);
        if let Some(pacer) = shared.pacer.get() {
            pacer.unpark();
        }
        Waiting(shared)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    fn pause_deadline(&self) -> Option<Instant> {
        let guard = self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        guard.filter(|until| *until > Instant::now())
    }
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("limited", &self.permits.is_some())
            .finish_non_exhaustive()
    }
}

impl Throttle {
    /// `rate` requests per second (`None`: unlimited), with `burst` allowed at once.
    pub fn new(rate: Option<f64>, burst: NonZeroU32) -> Throttle {
        let shared = Arc::new(Shared::default());
        let permits = rate.and_then(|r| {
            let period = Duration::from_secs_f64(1.0 / r);
            // GCRA with one cell per 1/rate: exact spacing, and `burst` cells of slack at most.
            let limiter = RateLimiter::direct_with_clock(
                Quota::with_period(period)?.allow_burst(burst),
                MonotonicClock,
            );
            let permits = Arc::new(Semaphore::new(0));
            let pacer = Pacer {
                limiter,
                period,
                permits: Arc::clone(&permits),
                shared: Arc::clone(&shared),
            };
            let thread = std::thread::Builder::new()
                .name("pacer".into())
                .spawn(move || pacer.run())
                .ok()?;
            let _ = shared.pacer.set(thread.thread().clone());
            Some(permits)
        });
        Throttle { permits, shared }
    }

    /// Waits until a request may go out: first through any shared pause, then for a permit.
    pub async fn acquire(&self) {
        loop {
            if let Some(until) = self.shared.pause_deadline() {
                tokio::time::sleep_until(until.into()).await;
                continue;
            }
            let Some(permits) = &self.permits else { return };
            let waiting = Waiting::new(&self.shared);
            let permit = permits.acquire().await;
            drop(waiting);
            match permit {
                Ok(permit) => permit.forget(),
                // Closed only when the throttle is dropped: nothing left to pace.
                Err(_) => return,
            }
            // A 429 may have paused everyone while this task waited for its permit.
            if self.shared.pause_deadline().is_none() {
                return;
            }
        }
    }

    /// Pauses every request for `wait` (a 429 is about the whole client, not one request).
    pub fn pause_all(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut guard = self
            .shared
            .paused_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if guard.is_none_or(|current| current < until) {
            *guard = Some(until);
        }
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        if let Some(permits) = &self.permits {
            permits.close();
        }
        if let Some(pacer) = self.shared.pacer.get() {
            pacer.unpark();
        }
    }
}

/// The pacer thread: turns governor's cells into permits for the requests waiting for one.
struct Pacer {
    limiter: Limiter,
    period: Duration,
    permits: Arc<Semaphore>,
    shared: Arc<Shared>,
}

impl Pacer {
    fn run(self) {
        let clock = MonotonicClock;
        while !self.shared.closed.load(Ordering::SeqCst) {
            if let Some(until) = self.shared.pause_deadline() {
                std::thread::sleep(until.saturating_duration_since(Instant::now()));
                continue;
            }
            if self.shared.waiting.load(Ordering::SeqCst) <= self.permits.available_permits() {
                // No demand: a permit made now would be a burst governor did not allow.
                std::thread::park_timeout(Duration::from_millis(100));
                continue;
            }
            match self.limiter.check() {
                Ok(()) => self.permits.add_permits(1),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(clock.now());
                    if self.period >= Duration::from_millis(1) && wait <= PACER_SPIN {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(wait.saturating_sub(PACER_SPIN));
                    }
                }
            }
        }
    }
}

/// The wait before retry number `retry` (1 = the first retry): full jitter, uniform in
/// `[0, min(MAX_BACKOFF, BASE_BACKOFF·2^(retry-1))]`, so that retrying workers spread out.
pub fn backoff(retry: u32, rng: &mut impl Rng) -> Duration {
    let ceiling = backoff_ceiling(retry);
    ceiling.mul_f64(rng.random::<f64>())
}

/// The upper bound of [`backoff`] for a given retry.
pub fn backoff_ceiling(retry: u32) -> Duration {
    let doublings = retry.saturating_sub(1).min(16);
    BASE_BACKOFF
        .saturating_mul(1u32 << doublings)
        .min(MAX_BACKOFF)
}

/// A one-way flag that stops new requests and interrupts waits (fatal answers, signals).
#[derive(Clone, Debug, Default)]
pub struct Stop(Arc<StopInner>);

#[derive(Debug, Default)]
struct StopInner {
    flag: AtomicBool,
    notify: Notify,
}

impl Stop {
    /// Raises the flag and wakes every waiter.
    pub fn trigger(&self) {
        self.0.flag.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    /// Whether the flag is raised.
    pub fn is_triggered(&self) -> bool {
        self.0.flag.load(Ordering::SeqCst)
    }

    /// Resolves once the flag is raised.
    pub async fn wait(&self) {
        loop {
            let notified = self.0.notify.notified();
            if self.is_triggered() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_250ms_and_caps_at_30s() {
        let ceilings: Vec<u64> = (1..=9)
            .map(|r| backoff_ceiling(r).as_millis() as u64)
            .collect();
        assert_eq!(
            ceilings,
            [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]
        );
        assert_eq!(backoff_ceiling(1000), MAX_BACKOFF);
    }

    #[test]
    fn backoff_is_full_jitter_within_the_ceiling() {
        let mut rng = rand::rng();
        let waits: Vec<Duration> = (0..200).map(|_| backoff(3, &mut rng)).collect();
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(1)));
        assert!(
            waits.iter().any(|w| *w < Duration::from_millis(300)),
            "spread to the low end"
        );
        assert!(
            waits.iter().any(|w| *w > Duration::from_millis(700)),
            "spread to the high end"
        );
    }

    #[tokio::test]
    async fn pause_holds_every_acquire() {
        let t = Throttle::new(Some(1000.0), NonZeroU32::MIN);
        t.pause_all(Duration::from_millis(150));
        let start = Instant::now();
        t.acquire().await;
        assert!(start.elapsed() >= Duration::from_millis(150));
    }

    #[tokio::test]
    async fn permits_never_exceed_the_burst() {
        let t = Throttle::new(Some(50.0), NonZeroU32::new(3).expect("3 > 0"));
        // An idle pacer must not bank permits beyond governor's burst.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let start = Instant::now();
        for _ in 0..5 {
            t.acquire().await;
        }
        // Governor's three cells go at once; the next two wait a period (20 ms) each.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(35), "{took:?}");
    }

    #[tokio::test]
    async fn stop_wakes_waiters() {
        let stop = Stop::default();
        let waiter = tokio::spawn({
            let stop = stop.clone();
            async move { stop.wait().await }
        });
        tokio::task::yield_now().await;
        stop.trigger();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined");
    }
}
