//! `--max-delete`: how many users one `import --prune` may delete, as a count or as a share of the
//! users the ledger holds for the service.

use super::ConfigError;

/// The limit when none is given: 5 % of the users held.
pub const DEFAULT_MAX_DELETE: MaxDelete = MaxDelete::Share(50_000);

/// Parts per million in 100 %.
const WHOLE: u64 = 1_000_000;

/// How many users one prune may delete; over it, nothing is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxDelete {
    /// At most this many.
    Count(u64),
    /// At most this share of the users held, in parts per million (rounded up, at least 1).
    Share(u32),
}

impl MaxDelete {
    /// Parses `N` or `P%` (P from 0 to 100, decimals allowed).
    pub fn parse(raw: &str) -> Result<MaxDelete, ConfigError> {
        let bad = |reason| ConfigError::BadNumber {
            flag: "max-delete",
            value: raw.to_string(),
            reason,
        };
        let text = raw.trim();
        if let Some(percent) = text.strip_suffix('%') {
            let p: f64 = percent
                .trim()
                .parse()
                .map_err(|_| bad("give a count (e.g. 500) or a share (e.g. 5%)"))?;
            if !(0.0..=100.0).contains(&p) {
                return Err(bad("a share is from 0% to 100%"));
            }
            // At most 1e6: fits.
            return Ok(MaxDelete::Share((p * 10_000.0).round() as u32));
        }
        text.parse()
            .map(MaxDelete::Count)
            .map_err(|_| bad("give a count (e.g. 500) or a share (e.g. 5%)"))
    }

    /// The most users that may be deleted when the ledger holds `held` for the service.
    pub fn of(self, held: u64) -> u64 {
        match self {
            MaxDelete::Count(n) => n,
            MaxDelete::Share(0) => 0,
            MaxDelete::Share(ppm) => {
                let most = (u128::from(held) * u128::from(ppm)).div_ceil(u128::from(WHOLE));
                u64::try_from(most).unwrap_or(u64::MAX).max(1)
            }
        }
    }
}

impl std::fmt::Display for MaxDelete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaxDelete::Count(n) => write!(f, "{n}"),
            MaxDelete::Share(ppm) => write!(f, "{}%", f64::from(*ppm) / 10_000.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_shares_rounded_up() {
        let parse = |s| MaxDelete::parse(s).expect(s);
        assert_eq!(parse("500"), MaxDelete::Count(500));
        assert_eq!(parse("5%"), DEFAULT_MAX_DELETE);
        assert_eq!(parse(" 0.5 % "), MaxDelete::Share(5_000));
        assert_eq!(DEFAULT_MAX_DELETE.of(1_000), 50);
        assert_eq!(DEFAULT_MAX_DELETE.of(1_001), 51, "rounded up");
        assert_eq!(DEFAULT_MAX_DELETE.of(3), 1, "at least 1");
        assert_eq!(DEFAULT_MAX_DELETE.of(0), 1, "at least 1");
        assert_eq!(parse("100%").of(u64::MAX), u64::MAX);
        assert_eq!(parse("0%").of(1_000), 0, "0% allows none");
        assert_eq!(parse("0").of(1_000), 0);
        assert_eq!(parse("2.5%").to_string(), "2.5%");
        for bad in ["", "-1", "101%", "five", "5%%", "NaN%", "1e400%"] {
            assert!(MaxDelete::parse(bad).is_err(), "{bad}");
        }
    }
}
