//! How many requests may be in flight at once. A number given with `--concurrency` fixes it. Else
//! (`auto`) it is what the rate limiter needs: by Little's law, requests in flight = rate ×
//! latency, so about `--rate` × the recent 90th-percentile latency × 1.5, between 4 and
//! `--max-concurrency`; and, as TCP does, it halves when the API answers timeouts or 5xx and grows
//! back by about one per window of good answers, so an API under pressure sees fewer requests.
//! 429 is not pressure here: it pauses every request already (`throttle.rs`).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The least an automatic window allows.
pub const AUTO_FLOOR: usize = 4;
/// Where an automatic window starts, before any latency is known.
const AUTO_START: usize = 16;
/// Without a rate limit (`--rate 0`: rehearsals against a simulator, benchmarks) latency says
/// nothing about what is needed; this many keep a loopback API busy (the benchmark's figure).
const UNLIMITED: usize = 64;
/// The margin over rate × latency: latency varies, and a slot must be free when a token is.
const MARGIN: f64 = 1.5;
/// Answers weighed for pressure, at least this many before any, and the share of failures
/// among them (1 in this many) that is pressure.
const RECENT: usize = 64;
const RECENT_LEAST: usize = 8;
const PRESSURE_SHARE: usize = 5;
/// Latencies kept, and how often (in answers) the window is worked out again from them.
const SAMPLES: usize = 256;
const RECOMPUTE_EVERY: u32 = 32;

/// `--concurrency`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Concurrency {
    /// Sized by the rate and the latency, at most this many.
    Auto {
        /// `--max-concurrency`.
        ceiling: usize,
    },
    /// Exactly this many.
    Fixed(usize),
}

impl Concurrency {
    /// The most requests that can ever be in flight.
    pub fn most(self) -> usize {
        match self {
            Concurrency::Auto { ceiling } => ceiling,
            Concurrency::Fixed(n) => n,
        }
    }
}

/// The window, shared by every request of a client.
#[derive(Debug)]
pub struct Window {
    mode: Concurrency,
    rate: Option<f64>,
    limit: AtomicUsize,
    /// Requests on the wire now: each attempt holds a [`Slot`], retries included, so that an API
    /// under pressure sees the smaller window at once, not only once the rows in flight end.
    active: AtomicUsize,
    wake: tokio::sync::Notify,
    state: Mutex<State>,
}

/// One request's place in the window, given back when dropped.
#[derive(Debug)]
pub struct Slot<'w>(&'w Window);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
        self.0.wake.notify_waiters();
    }
}

#[derive(Debug)]
struct State {
    /// The congestion window: additive increase, multiplicative decrease.
    aimd: f64,
    latencies: VecDeque<Duration>,
    since_recompute: u32,
    /// The last answers, `true` for a transient failure: pressure is a share of them, not one.
    recent: VecDeque<bool>,
    /// When the window was last halved: at most once per round trip, as TCP does.
    last_cut: Option<std::time::Instant>,
}

impl Window {
    /// A window for requests paced at `rate` per second (`None`: unlimited).
    pub fn new(mode: Concurrency, rate: Option<f64>) -> Window {
        let start = match mode {
            Concurrency::Fixed(n) => n,
            Concurrency::Auto { ceiling } => AUTO_START.min(ceiling),
        };
        Window {
            mode,
            rate,
            limit: AtomicUsize::new(start.max(1)),
            active: AtomicUsize::new(0),
            wake: tokio::sync::Notify::new(),
            state: Mutex::new(State {
                aimd: mode.most() as f64,
                latencies: VecDeque::with_capacity(SAMPLES),
                since_recompute: 0,
                recent: VecDeque::with_capacity(RECENT),
                last_cut: None,
            }),
        }
    }

    /// How many requests may be in flight now.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Waits for a place in the window. Cancel-safe.
    pub async fn admit(&self) -> Slot<'_> {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            // Registered before looking, so that a place freed in between wakes it.
            notified.as_mut().enable();
            let active = self.active.load(Ordering::Acquire);
            if active < self.limit()
                && self
                    .active
                    .compare_exchange(active, active + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                return Slot(self);
            }
            if active < self.limit() {
                continue;
            }
            notified.await;
        }
    }

    /// Whether the window is fixed, or at its ceiling: then it, not the API, may hold the rate back.
    pub fn at_cap(&self) -> bool {
        self.limit() >= self.mode.most()
    }

    /// `--concurrency` as given.
    pub fn mode(&self) -> Concurrency {
        self.mode
    }

    /// A good answer (anything but a transient failure) after `latency`.
    pub fn answered(&self, latency: Duration) {
        let mut state = self.lock();
        if state.latencies.len() == SAMPLES {
            state.latencies.pop_front();
        }
        // Kept for a fixed window too: the warning that it holds the rate back quotes it.
        state.latencies.push_back(latency);
        remember(&mut state.recent, false);
        if let Concurrency::Fixed(_) = self.mode {
            return;
        }
        state.aimd = (state.aimd + 1.0 / state.aimd.max(1.0)).min(self.mode.most() as f64);
        state.since_recompute += 1;
        if state.since_recompute >= RECOMPUTE_EVERY
            || state.latencies.len() < RECOMPUTE_EVERY as usize
        {
            state.since_recompute = 0;
            self.recompute(&state);
        }
    }

    /// A timeout, a connection error or a 5xx: the API is under pressure.
    pub fn pressured(&self) {
        if let Concurrency::Fixed(_) = self.mode {
            return;
        }
        let mut state = self.lock();
        remember(&mut state.recent, true);
        // A few failures among many answers are the API's noise, not its load: a window halved
        // for each would run a slightly faulty API at a fraction of the rate.
        let failed = state.recent.iter().filter(|&&f| f).count();
        if state.recent.len() < RECENT_LEAST || failed * PRESSURE_SHARE < state.recent.len() {
            return;
        }
        let round_trip = p90(&state.latencies).unwrap_or(Duration::from_secs(1));
        if state.last_cut.is_some_and(|cut| cut.elapsed() < round_trip) {
            return;
        }
        state.last_cut = Some(std::time::Instant::now());
        // Halved from what was in use, not from a window grown past it.
        state.aimd = (self.limit() as f64 / 2.0).max(AUTO_FLOOR as f64);
        self.recompute(&state);
    }

    /// The recent 90th-percentile latency, once there are answers.
    pub fn p90(&self) -> Option<Duration> {
        p90(&self.lock().latencies)
    }

    /// What the window should be: rate × latency × margin, within the AIMD window and the bounds.
    fn recompute(&self, state: &State) {
        let Concurrency::Auto { ceiling } = self.mode else {
            return;
        };
        let needed = match (self.rate, p90(&state.latencies)) {
            (None, _) => UNLIMITED,
            (Some(rate), Some(latency)) => (rate * latency.as_secs_f64() * MARGIN).ceil() as usize,
            (Some(_), None) => AUTO_START,
        };
        let limit = needed
            .min(state.aimd as usize)
            .clamp(AUTO_FLOOR.min(ceiling), ceiling);
        if self.limit.swap(limit, Ordering::Relaxed) < limit {
            self.wake.notify_waiters();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn remember(recent: &mut VecDeque<bool>, failed: bool) {
    if recent.len() == RECENT {
        recent.pop_front();
    }
    recent.push_back(failed);
}

fn p90(latencies: &VecDeque<Duration>) -> Option<Duration> {
    if latencies.is_empty() {
        return None;
    }
    let mut sorted: Vec<Duration> = latencies.iter().copied().collect();
    sorted.sort_unstable();
    let at = (sorted.len() * 9 / 10).min(sorted.len() - 1);
    Some(sorted[at])
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTO: Concurrency = Concurrency::Auto { ceiling: 256 };

    #[test]
    fn auto_follows_littles_law_with_a_margin() {
        let w = Window::new(AUTO, Some(100.0));
        assert_eq!(w.limit(), AUTO_START);
        for _ in 0..100 {
            w.answered(Duration::from_millis(200));
        }
        // 100/s × 0.2 s × 1.5.
        assert_eq!(w.limit(), 30);
        for _ in 0..300 {
            w.answered(Duration::from_millis(20));
        }
        assert_eq!(w.limit(), AUTO_FLOOR, "3/s needed, 4 at least");
        let capped = Window::new(Concurrency::Auto { ceiling: 10 }, Some(100.0));
        for _ in 0..100 {
            capped.answered(Duration::from_millis(200));
        }
        assert!(capped.limit() == 10 && capped.at_cap());
    }

    #[test]
    fn pressure_halves_the_window_once_a_round_trip_and_good_answers_grow_it_back() {
        let w = Window::new(AUTO, Some(100.0));
        for _ in 0..100 {
            w.answered(Duration::from_millis(200));
        }
        assert_eq!(w.limit(), 30);
        // One failure among many answers is noise, not load.
        w.pressured();
        assert_eq!(w.limit(), 30);
        // Many: halved, once within a round trip however many come back together.
        for _ in 0..20 {
            w.pressured();
        }
        assert_eq!(w.limit(), 15);
        // A round trip later, halved again, down to the floor.
        let fast = Window::new(AUTO, None);
        for _ in 0..40 {
            fast.answered(Duration::from_millis(1));
        }
        for _ in 0..10 {
            for _ in 0..20 {
                fast.pressured();
            }
            std::thread::sleep(Duration::from_millis(3));
        }
        assert_eq!(fast.limit(), AUTO_FLOOR);
        // About one more per window of good answers: additive, not a jump back.
        for _ in 0..100 {
            fast.answered(Duration::from_millis(1));
        }
        let grown = fast.limit();
        assert!((12..=20).contains(&grown), "{grown}");
        for _ in 0..5000 {
            fast.answered(Duration::from_millis(1));
        }
        assert_eq!(
            fast.limit(),
            UNLIMITED,
            "back to the whole window, no further"
        );
    }

    #[test]
    fn a_number_fixes_it_exactly() {
        let w = Window::new(Concurrency::Fixed(8), Some(100.0));
        for _ in 0..100 {
            w.answered(Duration::from_millis(200));
            w.pressured();
        }
        assert!(w.limit() == 8 && w.at_cap());
        let unlimited = Window::new(AUTO, None);
        unlimited.answered(Duration::from_millis(1));
        assert_eq!(unlimited.limit(), UNLIMITED);
    }
}
