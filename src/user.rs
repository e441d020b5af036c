//! The domain type several stages share: a user to register, as the input hands it to the
//! pipeline and the client sends it, and what makes text printable. Knows nothing of where it
//! came from or where it goes.

use std::fmt;

/// A row ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The user's id in the customer's service (usually an e-mail or login).
    pub id_in_service: String,
    /// The phone number, normalised to E.164 (`+` and 8–15 digits).
    pub phone_number: String,
    /// The phone as the file writes it, when that is not its E.164 form: what a report shows,
    /// for a person to fix and import again.
    pub written: Option<String>,
}

impl User {
    /// The phone as the file writes it.
    pub fn phone_as_written(&self) -> &str {
        self.written.as_deref().unwrap_or(&self.phone_number)
    }
}

/// Whether a character must never reach a terminal or a stored id as it is: C0 and C1 controls
/// (ESC starts terminal escape sequences, BEL rings), the Unicode bidi controls, which reorder
/// what a terminal or a spreadsheet shows, and invisible characters (two ids that look the same).
pub fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
        // Invisible, or breaking a line where no line break is seen: zero-width spaces and
        // joiners, the word joiner, the byte order mark, the line and paragraph separators.
        || matches!(c, '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{2028}' | '\u{2029}')
}

/// The first unprintable character of `text`, if any.
pub fn first_unprintable(text: &str) -> Option<char> {
    // Most ids are ASCII: a byte scan then suffices (bidi controls are never ASCII).
    if text.is_ascii() {
        return text
            .bytes()
            .find(|&b| b < 0x20 || b == 0x7f)
            .map(char::from);
    }
    text.chars().find(|&c| is_unprintable(c))
}

/// Text from outside, for a terminal or a log: every unprintable character written as `\u{1b}`,
/// and backslashes doubled so that the escape cannot be forged.
#[derive(Clone, Copy, Debug)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.0.chars().any(|c| c == '\\' || is_unprintable(c)) {
            return f.write_str(self.0);
        }
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                c if is_unprintable(c) => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                c => fmt::Write::write_char(f, c)?,
            }
        }
        Ok(())
    }
}

/// A whole line for a terminal: unprintable characters written as `\u{1b}`, the rest as it is (the
/// parts of the line that came from outside are already quoted or [`Escaped`]).
pub fn printable(line: &str) -> std::borrow::Cow<'_, str> {
    if first_unprintable(line).is_none() {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 8);
    for c in line.chars() {
        if is_unprintable(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// [`Escaped`] as an owned string.
pub fn escape(text: &str) -> String {
    Escaped(text).to_string()
}

/// An id as a person would read it: Unicode NFC of its case folding (canonical caseless
/// matching), so that `Alice@x.com` and `alice@x.com`, or `José` composed and decomposed, are
/// one. Ids stay exact; this only finds spellings that are probably the same person.
pub fn folded(id: &str) -> std::borrow::Cow<'_, str> {
    use unicode_normalization::UnicodeNormalization as _;
    if id.is_ascii() {
        return match id.bytes().any(|b| b.is_ascii_uppercase()) {
            true => std::borrow::Cow::Owned(id.to_ascii_lowercase()),
            false => std::borrow::Cow::Borrowed(id),
        };
    }
    // Leading and trailing spaces of other scripts (no-break, ideographic) are not the id's.
    let decomposed: String = id.trim().nfd().collect();
    caseless::default_case_fold_str(&decomposed)
        .nfc()
        .collect::<String>()
        .into()
}

/// A 64-bit key of [`folded`], stable across versions and machines (FNV-1a): the ledger keeps
/// it for each id, so it must never change. Equal keys are checked on the text itself.
pub fn fold_key(id: &str) -> i64 {
    use std::hash::Hasher as _;
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(folded(id).as_bytes());
    i64::from_le_bytes(hasher.finish().to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_person_fold_alike_and_the_key_never_changes() {
        let nfc = "Jos\u{e9}@x.com";
        let nfd = "Jose\u{301}@x.com";
        assert_ne!(nfc, nfd);
        assert_eq!(folded(nfc), folded(nfd));
        assert_eq!(folded("Alice@X.com"), "alice@x.com");
        assert_eq!(folded("STRASSE"), folded("stra\u{df}e"));
        assert_eq!(fold_key("Alice@x.com"), fold_key("alice@x.com"));
        assert_ne!(fold_key("alice@x.com"), fold_key("alice@y.com"));
        // Stored in ledgers: a change of hash would hide every earlier spelling.
        assert_eq!(fold_key("alice@x.com"), 5_556_693_677_922_512_584);
    }

    #[test]
    fn controls_and_bidi_are_escaped_and_the_escape_cannot_be_forged() {
        assert_eq!(escape("plain ünïcode"), "plain ünïcode");
        assert_eq!(escape("a\u{1b}[31mred\u{7}"), "a\\u{1b}[31mred\\u{7}");
        assert_eq!(escape("evil\u{202E}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(escape("\u{85}x\u{9b}"), "\\u{85}x\\u{9b}");
        assert_eq!(escape("a\\u{1b}"), "a\\\\u{1b}");
        assert_eq!(first_unprintable("ok\u{2066}"), Some('\u{2066}'));
        assert_eq!(first_unprintable("ok"), None);
        assert_eq!(printable("a\\b\u{1b}c\u{2069}"), "a\\b\\u{1b}c\\u{2069}");
    }
}
