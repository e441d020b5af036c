//! Pacing: the shared rate limiter (governor), the shared pause after a 429, backoff with full
//! jitter, and the stop flag that interrupts waiting. The only code that sleeps; it knows nothing of
//! HTTP status codes (the client decides when to pause or back off).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use tokio::sync::Notify;
use tokio::time::Instant;

/// First backoff step; doubles with each attempt.
pub const BASE_BACKOFF: Duration = Duration::from_millis(250);
/// Longest backoff step, so a long outage is probed at least this often.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The limiter every request goes through, retries included, plus the pause a 429 imposes on all.
pub struct Throttle {
    limiter: Option<DefaultDirectRateLimiter>,
    clock: DefaultClock,
    paused_until: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("limited", &self.limiter.is_some())
            .finish_non_exhaustive()
    }
}

impl Throttle {
    /// `rate` requests per second (`None`: unlimited), with `burst` allowed at once.
    pub fn new(rate: Option<f64>, burst: NonZeroU32) -> Throttle {
        let limiter = rate.and_then(|r| {
            // GCRA with one cell per 1/rate: exact spacing, and `burst` cells of slack at most.
            Quota::with_period(Duration::from_secs_f64(1.0 / r))
                .map(|q| RateLimiter::direct(q.allow_burst(burst)))
        });
        Throttle {
            limiter,
            clock: DefaultClock::default(),
            paused_until: Mutex::new(None),
        }
    }

    /// Waits until a request may go out: first through any shared pause, then for a token.
    pub async fn acquire(&self) {
        loop {
            if let Some(until) = self.pause_deadline() {
                tokio::time::sleep_until(until).await;
                continue;
            }
            let Some(limiter) = &self.limiter else { return };
            match limiter.check() {
                Ok(()) => {
                    // A 429 may have paused everyone while this task waited for its token.
                    if self.pause_deadline().is_none() {
                        return;
                    }
                }
                Err(not_until) => {
                    tokio::time::sleep(not_until.wait_time_from(self.clock.now())).await;
                }
            }
        }
    }

    fn pause_deadline(&self) -> Option<Instant> {
        let guard = self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        guard.filter(|until| *until > Instant::now())
    }

    /// Pauses every request for `wait` (a 429 is about the whole client, not one request).
    pub fn pause_all(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut guard = self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none_or(|current| current < until) {
            *guard = Some(until);
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

    #[tokio::test(start_paused = true)]
    async fn pause_holds_every_acquire() {
        let t = Throttle::new(None, NonZeroU32::MIN);
        t.pause_all(Duration::from_secs(2));
        let start = Instant::now();
        t.acquire().await;
        assert!(start.elapsed() >= Duration::from_secs(2));
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
