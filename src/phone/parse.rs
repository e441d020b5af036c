//! A phone number as libphonenumber reads it (through the `phonenumber` crate): the E.164 form,
//! whether its length is possible for its country, whether it is in an assigned range, and what
//! kind of line it is. The checks of text the crate does not make (extensions, letters, stray
//! characters) come first, so that each rejection says what is wrong in words.

use phonenumber::{PhoneNumber, country};

use super::codes::Code;
use super::rules::{Fit, rules};

/// A number understood.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Phone {
    /// The number in E.164 (`+` and digits).
    pub e164: String,
    /// Whether it is in a range libphonenumber knows to be assigned.
    pub assigned: bool,
    /// What kind of line it is.
    pub line: Line,
}

/// What kind of line a number is, for an SMS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line {
    /// A mobile.
    Mobile,
    /// Possibly a mobile: the country's numbers do not tell (the US's fixed line or mobile).
    MaybeMobile,
    /// Not a mobile: fixed line, toll free, premium rate, …; the name of the kind.
    NotMobile(&'static str),
    /// Not in any known range (see [`Phone::assigned`]).
    Unknown,
}

/// A number as calling code and national significant number (leading zeros kept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Parts {
    pub(super) code: u16,
    pub(super) national: String,
}

impl Parts {
    fn e164(&self) -> String {
        format!("+{}{}", self.code, self.national)
    }
}

/// Reads a phone number as written into E.164, refusing what libphonenumber calls impossible.
/// The error is a reason that never repeats the number (reasons reach logs).
pub fn normalize(raw: &str, region: Option<country::Id>) -> Result<String, String> {
    // Most exports hold E.164 already: checked as it is, without a copy until the answer.
    if quick(raw)? {
        return Ok(raw.to_string());
    }
    let text = plain(raw.trim())?;
    let text = text.as_ref();
    if text.is_empty() {
        return Err("phone_number is empty".into());
    }
    check_characters(text)?;
    let compact: String = text
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '+')
        .collect();
    // The international prefix: the default region's own (00, 011, 0011, 810, carrier digits
    // included), or without one, 00 as most of the world dials it.
    // Without a region, `00` is taken as the international prefix only as written, not when
    // separators merely put two zeros together (`0-011…`).
    let double_zero = text
        .starts_with("00")
        .then(|| compact.strip_prefix("00"))
        .flatten();
    let compact = match (region, double_zero) {
        (Some(region), _) => match strip_idd(region, &compact) {
            Some(rest) => format!("+{rest}"),
            None => compact,
        },
        (None, Some(rest)) => format!("+{rest}"),
        (None, None) => compact,
    };
    if quick(&compact)? {
        return Ok(compact);
    }
    let parts = parts(&compact, region)?;
    let code = Code::of(parts.code)
        .ok_or_else(|| format!("phone has +{}, which is no country's code", parts.code))?;
    super::codes::possible(code, parts.national.len())?;
    Ok(parts.e164())
}

/// Whether `text` is `+`, a calling code and a national number without a trunk prefix, of a
/// possible length: most numbers, which then need no parsing (the crate's parser costs forty
/// times what the rest of the checks do). An impossible length is an error.
fn quick(text: &str) -> Result<bool, String> {
    match text.strip_prefix('+').and_then(split) {
        // A national number starting with a trunk prefix, or with 0 (where most countries'
        // prefixes for parsing begin), is read the long way.
        Some((code, national))
            if !code.has_trunk_prefix(national) && !national.starts_with('0') =>
        {
            super::codes::possible(code, national.len())?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Reads a phone number as written, and says what kind of number it is.
pub fn understand(raw: &str, region: Option<country::Id>) -> Result<Phone, String> {
    let e164 = normalize(raw, region)?;
    let (assigned, line) = super::classify(&e164);
    Ok(Phone {
        e164,
        assigned,
        line,
    })
}

/// Parses a number of digits and `+` (a leading `00` already made `+`).
fn parts(compact: &str, region: Option<country::Id>) -> Result<Parts, String> {
    if let Some(digits) = compact.strip_prefix('+') {
        return self::international(digits);
    }
    let Some(region) = region else {
        return Err("phone has no country prefix (use +CC… or --default-region)".into());
    };
    if compact.contains('+') {
        return Err("phone has a + that is not at its start".into());
    }
    national(compact, region)
}

/// A number without its country code, read by the default region's rules as libphonenumber's
/// parser reads it: the region's own calling code at the start is taken off only when the
/// number fits the region better without it (or is too long with it), then the prefix for
/// parsing (trunk prefix, carrier code) once, kept off only if the length still fits.
fn national(digits: &str, region: country::Id) -> Result<Parts, String> {
    let meta = phonenumber::metadata::DATABASE
        .by_id(region.as_ref())
        .ok_or_else(|| format!("phone is not a number of {}", region.as_ref()))?;
    let own = rules(meta);
    let mut number = None;
    let mut rules_of_number = own;
    if let Some(rest) = digits.strip_prefix(own.code.as_str()) {
        let potential = own
            .strip_prefix_for_parsing(rest)
            .unwrap_or_else(|| rest.to_string());
        let better = !own.general_matches(digits) && own.general_matches(&potential);
        if better || own.fit(digits.len()) == Fit::TooLong {
            // The number is now the calling code's: its main country's rules apply.
            if let Some(main) = Code::of(meta.country_code()).and_then(Code::metadata) {
                rules_of_number = rules(main);
            }
            number = Some(potential);
        }
    }
    let national = rules_of_number.strip_national_prefix(number.as_deref().unwrap_or(digits));
    if national.is_empty() {
        return Err(format!(
            "phone has no digits after the country code of {}",
            region.as_ref()
        ));
    }
    Ok(Parts {
        code: meta.country_code(),
        national,
    })
}

/// The digits after the region's international prefix, if they start with it: as
/// libphonenumber reads it (the prefix's pattern at the start, and no country code begins with 0).
fn strip_idd(region: country::Id, digits: &str) -> Option<String> {
    let meta = phonenumber::metadata::DATABASE.by_id(region.as_ref())?;
    let pattern = super::kind::leading(meta.international_prefix()?.as_str())?;
    let found = pattern.find(digits)?;
    let rest = &digits[found.end()..];
    (!rest.is_empty() && !rest.starts_with('0')).then(|| rest.to_string())
}

fn of(number: &PhoneNumber) -> Parts {
    Parts {
        code: number.code().value(),
        national: number.national().to_string(),
    }
}

/// The digits after an international prefix. Read without the default region: its national
/// prefix must not apply to another country's number.
fn international(digits: &str) -> Result<Parts, String> {
    if digits.contains('+') {
        return Err("phone has a + that is not at its start".into());
    }
    // The calling code's main country's rules, as libphonenumber reads a number with `+`.
    if let Some(whole) = split_code(digits)
        && let Some(code) = Code::of(whole.code)
        && let Some(meta) = code.metadata()
    {
        let national = rules(meta).strip_national_prefix(&whole.national);
        return Ok(Parts {
            code: whole.code,
            national,
        });
    }
    phonenumber::parse(None, format!("+{digits}"))
        .map(|number| of(&number))
        .map_err(|e| format!("phone is not a number libphonenumber can read ({e})"))
}

/// The calling code at the start of the digits (codes are prefix-free: the first that exists).
pub(super) fn split_code(digits: &str) -> Option<Parts> {
    split(digits).map(|(code, national)| Parts {
        code: code.code,
        national: national.to_string(),
    })
}

/// The calling code and the national number of digits (nothing else) after a `+`.
fn split(digits: &str) -> Option<(&'static Code, &str)> {
    if !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with('0') {
        return None;
    }
    (1..=3).find_map(|len| {
        let code = Code::of(digits.get(..len)?.parse().ok()?)?;
        Some((code, &digits[len..]))
    })
}

/// The number as ASCII, as libphonenumber reads it: a `tel:` URI's number, and the digits of
/// other scripts (full-width as Japanese input writes them, Arabic-Indic) as ASCII digits.
fn plain(text: &str) -> Result<std::borrow::Cow<'_, str>, String> {
    let text = match text.get(..4) {
        Some(scheme) if scheme.eq_ignore_ascii_case("tel:") => {
            if text.to_ascii_lowercase().contains(";phone-context=") {
                return Err("phone is a tel: URI with a phone-context: write it as +CC…".into());
            }
            &text[4..]
        }
        _ => text,
    };
    if text.is_ascii() {
        return Ok(text.into());
    }
    Ok(text.chars().map(ascii).collect::<String>().into())
}

/// A digit, plus or dash of another script as its ASCII twin; any other character as it is.
fn ascii(c: char) -> char {
    let digit = |zero: char| char::from_digit(u32::from(c) - u32::from(zero), 10);
    match c {
        '０'..='９' => digit('０'),
        '٠'..='٩' => digit('٠'),
        '۰'..='۹' => digit('۰'),
        '＋' => Some('+'),
        '－' | '‐'..='―' | '−' | 'ー' => Some('-'),
        '（' => Some('('),
        '）' => Some(')'),
        '／' => Some('/'),
        '\u{3000}' | '\u{a0}' => Some(' '),
        _ => None,
    }
    .unwrap_or(c)
}

/// Refuses what no phone number holds, each with its own reason.
fn check_characters(text: &str) -> Result<(), String> {
    const EXTENSION: &str =
        "phone has an extension; an SMS cannot reach one: give the number alone";
    // `~` and up to 9 digits at the end (trailing punctuation aside): libphonenumber's
    // extension (`~` elsewhere waits for a tone).
    let tilde_extension = text.rsplit_once('~').is_some_and(|(_, after)| {
        let digits = after
            .trim_start_matches([' ', ',', '-', ':', '.'])
            .trim_end_matches(|c: char| !c.is_ascii_digit());
        (1..=9).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
    });
    if tilde_extension {
        return Err(EXTENSION.into());
    }
    // What numbers are written with: nothing to name.
    if text.bytes().all(|b| {
        b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'(' | b')' | b'/' | b' ' | b'~')
    }) {
        return Ok(());
    }
    let lower = text.to_lowercase();
    let extension = lower.contains("ext")
        || lower.contains(';')
        || lower.contains('#')
        || lower.rfind('x').is_some_and(|at| {
            lower[at + 1..]
                .trim_start_matches(['.', ' '])
                .starts_with(|c: char| c.is_ascii_digit())
        });
    if extension {
        return Err(EXTENSION.into());
    }
    if text.chars().any(char::is_alphabetic) {
        return Err("phone has letters (a vanity number?): write it in digits".into());
    }
    if let Some(bad) = text.chars().find(|c| {
        // `~`: the wait for a dial tone, as Russia writes its international prefix (8~10).
        // Other whitespace than a space (tabs, line separators) is not a number's.
        !(c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | '(' | ')' | '/' | '~' | ' '))
    }) {
        return Err(format!(
            "phone contains {bad:?}; only digits, spaces, dashes, dots, slashes, parentheses and a leading + or 00 are allowed"
        ));
    }
    Ok(())
}
