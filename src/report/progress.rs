//! Progress while a run goes: an indicatif bar on stderr when it is a terminal, a plain line every
//! few seconds otherwise (cron, CI, pipes: no escape codes), and warnings printed above the bar.
//! It only displays; the counts come from the caller.

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

/// The run's progress display.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
    started: Instant,
    last_refresh: Instant,
    size: Option<u64>,
    warnings: u64,
    every: Duration,
}

impl Progress {
    /// `enabled` is false with `--no-progress`; `size` is the input's byte size when known;
    /// `every` spaces the plain lines used when stderr is not a terminal.
    pub fn new(enabled: bool, size: Option<u64>, every: Duration) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let bar = (enabled && terminal).then(|| {
            let bar = ProgressBar::with_draw_target(size, ProgressDrawTarget::stderr_with_hz(10));
            let template = if size.is_some() {
                "{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}% eta {eta} · {msg}"
            } else {
                "{spinner} [{elapsed_precise}] {msg}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("█▉▊▋▌▍▎▏ "));
            }
            bar
        });
        let now = Instant::now();
        Progress {
            bar,
            lines: enabled && !terminal,
            started: now,
            last_refresh: now,
            size,
            warnings: 0,
            every,
        }
    }

    /// Refreshes the display from the bytes read and the counts so far.
    pub fn update(&mut self, bytes: u64, counts: &RunCounts) {
        if let Some(bar) = &self.bar {
            if self.last_refresh.elapsed() < BAR_EVERY {
                return;
            }
            self.last_refresh = Instant::now();
            if self.size.is_some() {
                bar.set_position(bytes);
            }
            bar.set_message(status_line(counts, None, self.started.elapsed()));
            bar.tick();
        } else if self.lines && self.last_refresh.elapsed() >= self.every {
            self.last_refresh = Instant::now();
            let total = estimate_total(counts.rows, bytes, self.size);
            // A closed stderr must not stop the run: the summary and the ledger still matter.
            let _ = writeln!(
                std::io::stderr().lock(),
                "{}",
                status_line(counts, total, self.started.elapsed())
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

/// Estimated rows in the file, from the share of its bytes read so far.
fn estimate_total(rows: u64, bytes: u64, size: Option<u64>) -> Option<u64> {
    let size = size?;
    if bytes == 0 {
        return None;
    }
    Some(((rows as f64) * (size as f64) / (bytes as f64)).round() as u64)
}

/// `12000/50000 rows · 19.8 req/s · synced 11800 · present 150 · failed 50 · eta 32m`
pub fn status_line(counts: &RunCounts, total: Option<u64>, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = counts.sent as f64 / secs;
    let mut line = match total {
        Some(t) => format!("{}/{} rows", counts.rows, t.max(counts.rows)),
        None => format!("{} rows", counts.rows),
    };
    line.push_str(&format!(
        " · {rate:.1} req/s · synced {} · present {} · failed {}",
        counts.synced, counts.present, counts.failed
    ));
    if counts.retry > 0 {
        line.push_str(&format!(" · retry {}", counts.retry));
    }
    if let Some(t) = total {
        let row_rate = counts.rows as f64 / secs;
        if row_rate > 0.0 && t > counts.rows {
            line.push_str(&format!(
                " · eta {}",
                human((t - counts.rows) as f64 / row_rate)
            ));
        }
    }
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

    #[test]
    fn status_line_has_the_documented_shape() {
        let counts = RunCounts {
            rows: 12000,
            sent: 12000,
            synced: 11800,
            present: 150,
            failed: 50,
            ..RunCounts::default()
        };
        let line = status_line(&counts, Some(50000), Duration::from_secs(606));
        assert_eq!(
            line,
            "12000/50000 rows · 19.8 req/s · synced 11800 · present 150 · failed 50 · eta 32m"
        );
    }

    #[test]
    fn totals_are_estimated_from_bytes() {
        assert_eq!(estimate_total(100, 1000, Some(10_000)), Some(1000));
        assert_eq!(estimate_total(100, 0, Some(10_000)), None);
        assert_eq!(estimate_total(100, 10, None), None);
    }

    #[test]
    fn durations_read_like_a_person_would_say_them() {
        assert_eq!(human(42.0), "42s");
        assert_eq!(human(1921.0), "33m");
        assert_eq!(human(7300.0), "2h01m");
    }
}
