//! What libphonenumber's parser needs of a region, prepared once per region: its prefix for
//! parsing and transform rule, its general pattern, its lengths. A national number is read
//! with these for every row of a file, so nothing is looked up by text or allocated twice.

use std::collections::HashMap;
use std::sync::Mutex;

use phonenumber::Metadata;

use super::codes::lengths;
use super::kind::{leading, whole};

/// A region's rules for reading a number.
#[derive(Debug)]
pub(super) struct Rules {
    /// Its calling code, as digits.
    pub(super) code: String,
    /// Its prefix for parsing, anchored at the start.
    prefix: Option<&'static regex::Regex>,
    /// Its transform rule, in the regex crate's syntax.
    transform: Option<String>,
    /// Its general pattern, anchored at both ends.
    general: Option<&'static regex::Regex>,
    /// Every length its numbers have, sorted.
    pub(super) all: Vec<u16>,
    /// The lengths of its local numbers only.
    pub(super) local: Vec<u16>,
}

/// The rules of a region, prepared at its first number and kept for the life of the process.
pub(super) fn rules(meta: &'static Metadata) -> &'static Rules {
    static CACHE: std::sync::LazyLock<Mutex<HashMap<usize, &'static Rules>>> =
        std::sync::LazyLock::new(Mutex::default);
    // The database is static: a region's address names it.
    let key = std::ptr::from_ref(meta) as usize;
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    cache
        .entry(key)
        .or_insert_with(|| Box::leak(Box::new(prepare(meta))))
}

fn prepare(meta: &'static Metadata) -> Rules {
    // Without a pattern of its own, the prefix for parsing is the national prefix (as
    // libphonenumber's metadata build sets it).
    let prefix = match (meta.national_prefix_for_parsing(), meta.national_prefix()) {
        (Some(pattern), _) => leading(pattern.as_str()),
        (None, Some(prefix)) => leading(&regex::escape(prefix)),
        (None, None) => None,
    };
    // Java's `$1` is the regex crate's `${1}`; an empty rule is none.
    let transform = meta
        .national_prefix_transform_rule()
        .filter(|rule| !rule.is_empty())
        .map(|rule| rule.replace("$1", "${1}").replace("$2", "${2}"));
    let (all, local) = lengths(meta);
    Rules {
        code: meta.country_code().to_string(),
        prefix,
        transform,
        general: whole(meta.descriptors().general()),
        all,
        local,
    }
}

impl Rules {
    /// Whether the general pattern matches a national number whole (libphonenumber's
    /// `matchNationalNumber`, lengths aside).
    pub(super) fn general_matches(&self, national: &str) -> bool {
        self.general
            .is_some_and(|pattern| pattern.is_match(national))
    }

    /// How a length fits the region's numbers.
    pub(super) fn fit(&self, length: usize) -> Fit {
        fit(length, &self.all, &self.local)
    }

    /// libphonenumber's `maybeStripNationalPrefixAndCarrierCode`: the prefix for parsing,
    /// matched at the start once, with the transform rule; `None` when it does not match, or
    /// when the number was one of the region's before and would no longer be.
    pub(super) fn strip_prefix_for_parsing(&self, national: &str) -> Option<String> {
        let found = self.prefix?.captures(national)?;
        let last = found.len() - 1;
        let end = found.get(0).map_or(0, |m| m.end());
        let candidate = match (&self.transform, found.get(last)) {
            (Some(rule), Some(_)) if last > 0 => {
                let mut expanded = String::new();
                found.expand(rule, &mut expanded);
                expanded.push_str(&national[end..]);
                expanded
            }
            _ => national[end..].to_string(),
        };
        if self.general_matches(national) && !self.general_matches(&candidate) {
            return None;
        }
        Some(candidate)
    }

    /// [`Rules::strip_prefix_for_parsing`], then the length test libphonenumber's parser keeps
    /// the result by: the prefix comes off unless the number is then too short, local only or
    /// of a length no number has.
    pub(super) fn strip_national_prefix(&self, national: &str) -> String {
        match self.strip_prefix_for_parsing(national) {
            Some(stripped)
                if !matches!(
                    self.fit(stripped.len()),
                    Fit::TooShort | Fit::LocalOnly | Fit::InvalidLength
                ) =>
            {
                stripped
            }
            _ => national.to_string(),
        }
    }
}

/// How a national number's length fits its country: libphonenumber's `testNumberLength`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fit {
    /// A length its numbers have.
    Possible,
    /// Shorter than any.
    TooShort,
    /// The length of local numbers only (without an area code).
    LocalOnly,
    /// Between the shortest and the longest, but no number has it.
    InvalidLength,
    /// Longer than any.
    TooLong,
}

/// libphonenumber's `testNumberLength` for a country's lengths (`all`, sorted) and local-only
/// lengths.
pub(super) fn fit(length: usize, all: &[u16], local: &[u16]) -> Fit {
    let length = u16::try_from(length).unwrap_or(u16::MAX);
    let (Some(&shortest), Some(&longest)) = (all.first(), all.last()) else {
        return Fit::InvalidLength;
    };
    if local.contains(&length) {
        Fit::LocalOnly
    } else if length < shortest {
        Fit::TooShort
    } else if length > longest {
        Fit::TooLong
    } else if all.contains(&length) {
        Fit::Possible
    } else {
        Fit::InvalidLength
    }
}
