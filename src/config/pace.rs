//! The numeric flags of `import` (how many requests in flight, how fast, how many attempts, how
//! long to wait), checked into a [`Pace`].

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use super::ConfigError;
use crate::cli::ImportArgs;
use crate::client::Concurrency;

/// The pace of an import's requests, as the numeric flags give it.
pub(super) struct Pace {
    pub(super) concurrency: Concurrency,
    pub(super) rate: Option<f64>,
    pub(super) burst: NonZeroU32,
    pub(super) max_attempts: NonZeroU32,
    pub(super) timeout: Duration,
    pub(super) outage_timeout: Duration,
}

impl Pace {
    /// Checks the numeric flags of `import`.
    pub(super) fn from_args(args: &ImportArgs) -> Result<Pace, ConfigError> {
        let bad = |flag, value: String, reason| ConfigError::BadNumber {
            flag,
            value,
            reason,
        };
        let count = |flag, text: &str| {
            text.trim()
                .parse::<usize>()
                .ok()
                .and_then(NonZeroUsize::new)
                .filter(|c| c.get() <= 1024)
                .map(NonZeroUsize::get)
                .ok_or_else(|| bad(flag, text.to_string(), "use auto, or 1 to 1024"))
        };
        let ceiling = count("max-concurrency", &args.max_concurrency.to_string())?;
        let concurrency = match args.concurrency.trim() {
            "auto" => Concurrency::Auto { ceiling },
            n => Concurrency::Fixed(count("concurrency", n)?),
        };
        // Below one request per 100 s the limiter's period overflows; nobody wants that rate.
        if !args.rate.is_finite()
            || !(args.rate == 0.0 || (0.01..=1_000_000.0).contains(&args.rate))
        {
            return Err(bad(
                "rate",
                args.rate.to_string(),
                "use 0 (unlimited) or 0.01 to 1000000 requests per second",
            ));
        }
        let burst = NonZeroU32::new(args.burst)
            .ok_or_else(|| bad("burst", args.burst.to_string(), "use 1 or more"))?;
        let max_attempts = NonZeroU32::new(args.max_attempts)
            .filter(|n| n.get() <= 100)
            .ok_or_else(|| {
                bad(
                    "max-attempts",
                    args.max_attempts.to_string(),
                    "use 1 to 100",
                )
            })?;
        Ok(Pace {
            concurrency,
            rate: (args.rate > 0.0).then_some(args.rate),
            burst,
            max_attempts,
            timeout: timeout(args.timeout)?,
            outage_timeout: outage_timeout(args.outage_timeout)?,
        })
    }
}

/// Checks a `--timeout` in seconds.
pub(super) fn timeout(seconds: f64) -> Result<Duration, ConfigError> {
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 3600.0 {
        return Err(ConfigError::BadNumber {
            flag: "timeout",
            value: seconds.to_string(),
            reason: "use more than 0 and at most 3600 seconds",
        });
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Checks an `--outage-timeout` in seconds (up to a week).
pub(super) fn outage_timeout(seconds: f64) -> Result<Duration, ConfigError> {
    if !seconds.is_finite() || !(1.0..=7.0 * 86400.0).contains(&seconds) {
        return Err(ConfigError::BadNumber {
            flag: "outage-timeout",
            value: seconds.to_string(),
            reason: "use 1 to 604800 seconds",
        });
    }
    Ok(Duration::from_secs_f64(seconds))
}
