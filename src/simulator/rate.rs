//! The simulator's own rate limit (`--rate-limit`): a fixed one-second window, as a server that
//! answers 429 past a request count per second would keep it.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

/// A fixed one-second window shared by all clients, packed into one atomic as
/// `window << 32 | count` so admitting a request is a single compare-and-swap.
pub(super) struct RateWindow {
    limit: u32,
    start: Instant,
    state: AtomicU64,
}

impl RateWindow {
    pub fn new(limit: u32) -> RateWindow {
        RateWindow {
            limit,
            start: Instant::now(),
            state: AtomicU64::new(0),
        }
    }

    /// Counts the request in the current window; false once the window already holds `limit`.
    pub fn admit(&self) -> bool {
        let now = self.start.elapsed().as_secs() & u64::from(u32::MAX);
        let mut current = self.state.load(Relaxed);
        loop {
            let (window, count) = (current >> 32, current & u64::from(u32::MAX));
            // A thread that read the clock earlier must not roll the window back.
            let next = if window >= now {
                if count >= u64::from(self.limit) {
                    return false;
                }
                current + 1
            } else {
                (now << 32) | 1
            };
            match self
                .state
                .compare_exchange_weak(current, next, Relaxed, Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_window_admits_limit_per_window() {
        let window = RateWindow::new(3);
        let admitted = (0..10).filter(|_| window.admit()).count();
        // Ten calls take microseconds; a window boundary in between could at most double it.
        assert!((3..=6).contains(&admitted), "{admitted}");
    }
}
