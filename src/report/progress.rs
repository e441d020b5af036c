//! Progress while a run goes: an indicatif bar on stderr when it is a terminal, a plain line every
//! few seconds otherwise (cron, CI, pipes: no escape codes), and warnings printed above the bar.
//! It only displays; the counts come from the caller.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::ledger::RunCounts;
use crate::user::printable;

/// How often a plain progress line is printed when stderr is not a terminal (by default).
pub const LINE_EVERY: Duration = Duration::from_secs(10);
/// How often the bar's message is rebuilt: the loop calls [`Progress::update`] for every answer,
/// and the bar draws at 10 Hz anyway.
const BAR_EVERY: Duration = Duration::from_millis(100);
/// Row warnings printed in full before the rest are only counted (the ledger and export keep all).
pub const MAX_WARNINGS: u64 = 50;

/// How often the window takes a sample (the loop updates the display far more often).
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// The window over which the rates are measured.
pub const WINDOW: Duration = Duration::from_secs(10);

/// What the display is fed: rows finished (they have their outcome), requests sent so far, and the
/// counts.
#[derive(Clone, Copy, Debug)]
pub struct Done<'a> {
    /// Rows with their outcome: skipped, answered, rejected, duplicate…; never rows merely read.
    pub rows: u64,
    /// Of those, the rows that needed a request: the ETA's pace (skipping is no guide to sending).
    pub answered: u64,
    /// Requests sent, retries included.
    pub requests: u64,
    /// The outcome counts.
    pub counts: &'a RunCounts,
}

/// Rates over a sliding window: samples of (time, rows answered, requests sent), the oldest
/// dropped once the window is covered without it.
#[derive(Debug, Default)]
pub struct Window {
    samples: VecDeque<(Instant, u64, u64)>,
}

impl Window {
    /// Adds a sample taken at `now`.
    pub fn note(&mut self, now: Instant, rows: u64, requests: u64) {
        self.samples.push_back((now, rows, requests));
        while self
            .samples
            .get(1)
            .is_some_and(|&(t, _, _)| now.saturating_duration_since(t) >= WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Rows answered and requests sent per second over the window; `None` before a second of it.
    pub fn rates(&self) -> Option<(f64, f64)> {
        let (&(t0, r0, q0), &(t1, r1, q1)) = (self.samples.front()?, self.samples.back()?);
        let secs = t1.saturating_duration_since(t0).as_secs_f64();
        (secs >= 1.0).then(|| {
            (
                r1.saturating_sub(r0) as f64 / secs,
                q1.saturating_sub(q0) as f64 / secs,
            )
        })
    }

    /// Seconds left for `remaining` rows at the window's answering rate: every row left is taken
    /// to need a request (the pessimistic and honest guess; a rerun that only skips has none).
    pub fn eta(&self, remaining: u64) -> Option<f64> {
        let (rows_per_s, _) = self.rates()?;
        (rows_per_s > 0.0).then(|| remaining as f64 / rows_per_s)
    }
}

/// The run's progress display.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
    last_refresh: Instant,
    last_sample: Instant,
    /// Rows in the file, when it is a regular file (counted up front).
    total: Option<u64>,
    /// Whether an ETA can be told (not with `--limit`, which stops sending part-way).
    eta: bool,
    window: Window,
    warnings: u64,
    every: Duration,
}

impl Progress {
    /// `enabled` is false with `--no-progress`; `total` is the input's row count when known;
    /// `every` spaces the plain lines used when stderr is not a terminal; `eta` is false when
    /// the run will stop sending part-way (`--limit`).
    pub fn new(enabled: bool, total: Option<u64>, every: Duration, eta: bool) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let bar = (enabled && terminal).then(|| {
            let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr_with_hz(10));
            let template = if total.is_some() {
                "{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}% · {msg}"
            } else {
                "{spinner} [{elapsed_precise}] {msg}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("█▉▊▋▌▍▎▏ "));
            }
            bar
        });
        let now = Instant::now();
        let mut window = Window::default();
        window.note(now, 0, 0);
        Progress {
            bar,
            lines: enabled && !terminal,
            last_refresh: now,
            last_sample: now,
            total,
            eta,
            window,
            warnings: 0,
            every,
        }
    }

    /// Refreshes the display from what is done so far.
    pub fn update(&mut self, done: Done<'_>) {
        if self.bar.is_none() && !self.lines {
            return;
        }
        let now = Instant::now();
        if now.duration_since(self.last_sample) >= SAMPLE_EVERY {
            self.last_sample = now;
            self.window.note(now, done.answered, done.requests);
        }
        if let Some(bar) = &self.bar {
            if now.duration_since(self.last_refresh) < BAR_EVERY {
                return;
            }
            self.last_refresh = now;
            // The message first: setting the position redraws, and both must agree.
            bar.set_message(status_line(done, self.total, &self.window, self.eta));
            bar.set_position(done.rows);
            bar.tick();
        } else if now.duration_since(self.last_refresh) >= self.every {
            self.last_refresh = now;
            let stamp = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
            // A closed stderr must not stop the run: the summary and the ledger still matter.
            let _ = writeln!(
                std::io::stderr().lock(),
                "{stamp} progress {}",
                status_line(done, self.total, &self.window, self.eta)
            );
        }
    }

    /// Prints a row warning above the bar; after [`MAX_WARNINGS`] only counts them.
    pub fn warn(&mut self, message: &str) {
        self.warnings += 1;
        if self.warnings <= MAX_WARNINGS {
            self.println(message);
        } else if self.warnings == MAX_WARNINGS + 1 {
            self.println(
                "further row warnings are not shown; `export` and the summary have them all",
            );
        }
    }

    /// Prints a line above the bar (or plainly). Every line passes here, so no control character
    /// from a file or a server reaches the terminal raw.
    pub fn println(&self, message: &str) {
        let message = printable(message);
        match &self.bar {
            Some(bar) => bar.suspend(|| {
                let _ = writeln!(std::io::stderr().lock(), "{message}");
            }),
            None => {
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "{message}");
            }
        }
    }

    /// Removes the bar before the summary is printed.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// `1000/2000 rows (50%) · 100.0 req/s · eta 10s · synced 990 · present 5 · failed 5 · retry 0`,
/// or without a total `1000 rows · 100.0 req/s · …`. Log readers grep for it: keep the names.
pub fn status_line(done: Done<'_>, total: Option<u64>, window: &Window, eta: bool) -> String {
    let c = done.counts;
    let mut line = match total {
        Some(t) => {
            let t = t.max(done.rows);
            let percent = (done.rows * 100).checked_div(t).unwrap_or(100);
            format!("{}/{t} rows ({percent}%)", done.rows)
        }
        None => format!("{} rows", done.rows),
    };
    // Before a second of measuring there is no rate to tell.
    if let Some((_, rate)) = window.rates() {
        line.push_str(&format!(" · {rate:.1} req/s"));
    }
    let left = total.filter(|_| eta).map(|t| t.saturating_sub(done.rows));
    if let Some(eta) = left.and_then(|left| window.eta(left)) {
        line.push_str(&format!(" · eta {}", human(eta)));
    }
    line.push_str(&format!(
        " · synced {} · present {} · failed {} · retry {}",
        c.synced, c.present, c.failed, c.retry
    ));
    line
}

fn human(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s.div_ceil(60)),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A window fed `rows` and `requests` per second for `secs` seconds, on a fake clock.
    fn steady(rows: u64, requests: u64, secs: u64) -> Window {
        let start = Instant::now();
        let mut window = Window::default();
        for s in 0..=secs * 5 {
            let t = start + Duration::from_millis(200 * s);
            window.note(t, rows * s / 5, requests * s / 5);
        }
        window
    }

    #[test]
    fn rates_come_from_the_last_ten_seconds_and_the_eta_from_the_rows_left() {
        let window = steady(100, 200, 60);
        let (rows, requests) = window.rates().expect("rates");
        assert!(
            (rows - 100.0).abs() < 1.0 && (requests - 200.0).abs() < 1.0,
            "{rows} {requests}"
        );
        assert_eq!(window.samples.len(), 51, "only the window is kept");
        let eta = window.eta(1000).expect("eta");
        assert!((eta - 10.0).abs() < 0.2, "{eta}");
        // A rerun that skipped most rows quickly, then sends 20 a second: the pace is the sending.
        let start = Instant::now();
        let mut window = Window::default();
        for s in 0..=20u64 {
            window.note(start + Duration::from_secs(s), 20 * s, 20 * s);
        }
        let eta = window.eta(600).expect("eta");
        assert!((eta - 30.0).abs() < 0.5, "{eta}");
        assert_eq!(Window::default().rates(), None);
    }

    #[test]
    fn status_line_has_the_documented_shape() {
        let counts = RunCounts {
            rows: 1000,
            sent: 1000,
            synced: 990,
            present: 5,
            failed: 5,
            ..RunCounts::default()
        };
        let done = Done {
            rows: 1000,
            answered: 1000,
            requests: 1000,
            counts: &counts,
        };
        let window = steady(100, 100, 30);
        assert_eq!(
            status_line(done, Some(2000), &window, true),
            "1000/2000 rows (50%) · 100.0 req/s · eta 10s · synced 990 · present 5 · failed 5 · retry 0"
        );
        assert_eq!(
            status_line(done, None, &window, true),
            "1000 rows · 100.0 req/s · synced 990 · present 5 · failed 5 · retry 0"
        );
        // Before a second of measuring: no rate and no ETA, rather than a false 0.
        let mut young = Window::default();
        young.note(Instant::now(), 0, 0);
        assert_eq!(
            status_line(done, Some(2000), &young, true),
            "1000/2000 rows (50%) · synced 990 · present 5 · failed 5 · retry 0"
        );
    }

    #[test]
    fn durations_read_like_a_person_would_say_them() {
        assert_eq!(human(42.0), "42s");
        assert_eq!(human(1921.0), "33m");
        assert_eq!(human(7300.0), "2h01m");
    }
}
