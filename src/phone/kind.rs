//! What kind of number a phone is (mobile, fixed line, toll free, …) and whether it is in an
//! assigned range at all, decided as libphonenumber's `getNumberType` decides: the crate's own
//! answer matches a pattern's prefix only, ignores the lengths, and loses Italian leading zeros.

use std::collections::HashMap;
use std::sync::Mutex;

use phonenumber::metadata::{DATABASE, Descriptor};
use phonenumber::{Metadata, Type};

use super::Line;
use super::codes::kinds;
use super::parse::{Parts, split_code};

/// Whether a number [`super::normalize`] gave is in an assigned range, and what kind of line it is.
pub fn classify(e164: &str) -> (bool, Line) {
    let kind = e164
        .strip_prefix('+')
        .and_then(split_code)
        .map_or(Type::Unknown, |parts| kind(&parts));
    (kind != Type::Unknown, line(kind))
}

/// A metadata pattern anchored at the start only (libphonenumber's `lookingAt`), compiled once
/// per pattern and kept for the life of the process (one per region at most).
pub(super) fn leading(pattern: &str) -> Option<&'static regex::Regex> {
    static CACHE: std::sync::LazyLock<Mutex<HashMap<String, &'static regex::Regex>>> =
        std::sync::LazyLock::new(Mutex::default);
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(compiled) = cache.get(pattern) {
        return Some(*compiled);
    }
    let source: String = pattern.split_whitespace().collect();
    let compiled: &'static regex::Regex =
        Box::leak(Box::new(regex::Regex::new(&format!("^(?:{source})")).ok()?));
    cache.insert(pattern.to_string(), compiled);
    Some(compiled)
}

/// What kind of number it is, as libphonenumber's `getNumberType` decides: `Unknown` when it is
/// in no assigned range of its country.
fn kind(parts: &Parts) -> Type {
    match region_of(parts.code, &parts.national) {
        Some(meta) => kind_in(meta, &parts.national),
        None => Type::Unknown,
    }
}

/// The country a number belongs to, as libphonenumber's `getRegionCodeForNumber` decides for a
/// calling code that several share: the first whose leading digits, or else whose numbers, it
/// matches. (The crate's own choice drops the leading zeros of Italian numbers.)
fn region_of(code: u16, national: &str) -> Option<&'static Metadata> {
    let all = DATABASE.by_code(&code)?;
    if let [only] = all.as_slice() {
        return Some(*only);
    }
    all.into_iter().find(|meta| match meta.leading_digits() {
        Some(leading) => leading.find(national).is_some_and(|m| m.start() == 0),
        None => kind_in(meta, national) != Type::Unknown,
    })
}

fn kind_in(meta: &Metadata, national: &str) -> Type {
    if !matches(meta.descriptors().general(), national) {
        return Type::Unknown;
    }
    let d = meta.descriptors();
    let mobile = d.mobile().is_some_and(|m| matches(m, national));
    for (desc, kind) in kinds(meta) {
        if !desc.is_some_and(|desc| matches(desc, national)) {
            continue;
        }
        return match kind {
            Type::FixedLine if mobile || same_pattern(meta) => Type::FixedLineOrMobile,
            other => other,
        };
    }
    Type::Unknown
}

/// Whether a region's fixed lines and mobiles share one pattern (libphonenumber then calls its
/// numbers fixed line or mobile): decided once per region, the patterns being kilobytes long.
fn same_pattern(meta: &Metadata) -> bool {
    static CACHE: std::sync::LazyLock<Mutex<HashMap<usize, bool>>> =
        std::sync::LazyLock::new(Mutex::default);
    let key = std::ptr::from_ref(meta) as usize;
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *cache.entry(key).or_insert_with(|| {
        let d = meta.descriptors();
        let compact = |d: &Descriptor| -> String {
            d.national_number().as_str().split_whitespace().collect()
        };
        match (d.fixed_line(), d.mobile()) {
            (Some(a), Some(b)) => compact(a) == compact(b),
            _ => false,
        }
    })
}

/// Whether a national number is one a description describes: a length it has and its pattern,
/// matched whole (the crate matches a prefix only).
fn matches(desc: &Descriptor, national: &str) -> bool {
    let possible = desc.possible_length();
    if !possible.is_empty() && !possible.contains(&(national.len() as u16)) {
        return false;
    }
    whole(desc).is_some_and(|pattern| pattern.is_match(national))
}

/// A description's pattern anchored at both ends, compiled once per description and kept for
/// the life of the process (a few thousand at most: the database is static).
pub(super) fn whole(desc: &Descriptor) -> Option<&'static regex::Regex> {
    static CACHE: std::sync::LazyLock<Mutex<HashMap<usize, &'static regex::Regex>>> =
        std::sync::LazyLock::new(Mutex::default);
    // The database is static: a description's address names it for the life of the process.
    let key = std::ptr::from_ref(desc) as usize;
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(pattern) = cache.get(&key) {
        return Some(*pattern);
    }
    // The metadata keeps the XML's layout: libphonenumber drops the whitespace when it builds.
    let source: String = desc.national_number().as_str().split_whitespace().collect();
    // A regex per description, never freed: a clone would rebuild its match cache every time.
    let pattern: &'static regex::Regex = Box::leak(Box::new(
        regex::Regex::new(&format!("^(?:{source})$")).ok()?,
    ));
    cache.insert(key, pattern);
    Some(pattern)
}

fn line(kind: Type) -> Line {
    match kind {
        Type::Mobile => Line::Mobile,
        Type::FixedLineOrMobile | Type::PersonalNumber | Type::Pager => Line::MaybeMobile,
        Type::Unknown => Line::Unknown,
        Type::FixedLine => Line::NotMobile("a fixed line"),
        Type::TollFree => Line::NotMobile("a toll-free number"),
        Type::PremiumRate => Line::NotMobile("a premium-rate number"),
        Type::SharedCost => Line::NotMobile("a shared-cost number"),
        Type::Voip => Line::NotMobile("a VoIP number"),
        Type::Uan => Line::NotMobile("a company number (UAN)"),
        Type::Voicemail => Line::NotMobile("a voicemail number"),
        _ => Line::NotMobile("not a mobile"),
    }
}
