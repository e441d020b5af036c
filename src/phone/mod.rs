//! Phone numbers: normalisation to E.164 as the API wants them, and masking for log lines. Shared
//! by the input (which validates), the plan (which compares) and the demo (which seeds).
//!
//! - `parse.rs`: a number as written, read as libphonenumber reads it.
//! - `codes.rs`: what each calling code says about its numbers (lengths, trunk prefixes).
//! - `rules.rs`: a region's rules for reading a number (prefix for parsing, lengths), prepared once.
//! - `kind.rs`: what kind of line a number is, and whether it is in an assigned range.
//! - `table.rs`: the calling codes, generated from the crate's metadata.

mod codes;
mod kind;
mod parse;
mod rules;
mod table;

pub use kind::classify;
pub use parse::{Line, Phone, normalize, understand};

/// Masks every phone number in a text for log lines (a server's reason may quote one): a `+`
/// and 6 to 15 digits (the shortest numbers, Niue's, have 7 with the code), or a bare run of 8
/// to 15 digits (shorter bare runs are counts and line numbers more often than phones).
pub fn mask_phones_in(text: &str) -> String {
    let bytes = text.as_bytes();
    let joined = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let alone_before = i == 0 || !joined(bytes[i - 1]);
        if alone_before && let Some((end, digits)) = phone_at(bytes, i) {
            // `+` numbers may be written with spaces or dashes; bare digits must stand alone.
            let alone_after = bytes[i] == b'+' || end == bytes.len() || !joined(bytes[end]);
            let least = if bytes[i] == b'+' { 6 } else { 8 };
            if alone_after && (least..=15).contains(&digits.len()) {
                let prefix = if bytes[i] == b'+' { "+" } else { "" };
                out.push_str(&mask_phone(&format!("{prefix}{digits}")));
                i = end;
                continue;
            }
        }
        let next = text[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&text[i..i + next]);
        i += next;
    }
    out
}

/// A number starting at `at`: with a leading `+`, digits with the separators people write
/// between them; without, a run of digits. Returns where it ends and its digits.
fn phone_at(bytes: &[u8], at: usize) -> Option<(usize, String)> {
    let plus = bytes[at] == b'+';
    let mut i = if plus { at + 1 } else { at };
    let mut digits = String::new();
    let mut end = i;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_digit() {
            digits.push(char::from(b));
            i += 1;
            end = i;
        } else if plus && !digits.is_empty() && matches!(b, b' ' | b'-' | b'.' | b'(' | b')') {
            // Separators as people write them: `+372 5555 5501`, `+372.5555.5501`,
            // `+372 (5555) 5501`; at most two in a row, and a digit must follow.
            let next = bytes.get(i + 1).copied();
            let after = bytes.get(i + 2).copied();
            match (next, after) {
                (Some(n), _) if n.is_ascii_digit() => i += 1,
                (Some(n), Some(a)) if matches!(n, b' ' | b'(' | b')') && a.is_ascii_digit() => {
                    i += 2;
                }
                _ => break,
            }
        } else {
            break;
        }
    }
    (!digits.is_empty()).then_some((end, digits))
}

/// Masks a phone number for log lines: `+3725****67`, `+68****1` for a short one, `079****56`
/// for one written nationally, so that at most half its national digits show (the country code
/// is no secret).
pub fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    if chars.len() <= 6 {
        return "*".repeat(chars.len());
    }
    let (head, tail) = match (phone.starts_with('+'), chars.len() >= 11) {
        (true, true) => (5, 2),
        (false, true) => (3, 2),
        (true, false) => (3, 1),
        (false, false) => (2, 1),
    };
    let head: String = chars[..head].iter().collect();
    let tail: String = chars[chars.len() - tail..].iter().collect();
    crate::user::escape(&format!("{head}****{tail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_phones_and_says_why_not() {
        let ee = "EE".parse().ok();
        let cases = [
            ("+372 5555 5555", None, Ok("+37255555555")),
            ("00372-5555.5555", None, Ok("+37255555555")),
            ("+44 (0) 20 7946 0958", None, Ok("+442079460958")),
            ("+44 (0) 20 7946 0958", ee, Ok("+442079460958")),
            ("5123 4567", ee, Ok("+37251234567")),
            // libphonenumber's prefix for parsing, once: Belarus's 0, Lithuania's 8.
            ("+375 0 29 491 19 11", None, Ok("+375294911911")),
            ("+370 8 612 34567", None, Ok("+37061234567")),
            ("tel:+372-5123-4567", None, Ok("+37251234567")),
            ("＋３７２　５１２３－４５６７", None, Ok("+37251234567")),
            ("٠١٠٠١٢٣٤٥٦٧", "EG".parse().ok(), Ok("+201001234567")),
            ("+881 6 1234 5678", None, Ok("+881612345678")),
            (
                "+881 6 1234",
                None,
                Err(
                    "phone is too short for an international service (+881): its numbers have 9 or 10 digits after the country code",
                ),
            ),
            (
                "tel:0201234567;phone-context=+31",
                None,
                Err("phone is a tel: URI with a phone-context: write it as +CC…"),
            ),
            (
                "0011 44 7911 123456",
                "AU".parse().ok(),
                Ok("+447911123456"),
            ),
            (
                "+1234567",
                None,
                Err(
                    "phone is too short for US (+1): its numbers have 10 digits after the country code",
                ),
            ),
            (
                "1-415-555-0133",
                ee,
                Err(
                    "phone is too long for EE (+372): its numbers have 7, 8 or 10 digits after the country code",
                ),
            ),
            (
                "5551234",
                None,
                Err("phone has no country prefix (use +CC… or --default-region)"),
            ),
            (
                "+372 5555 5555 ext. 12",
                None,
                Err("phone has an extension; an SMS cannot reach one: give the number alone"),
            ),
            (
                "+3725555555;ext=12",
                None,
                Err("phone has an extension; an SMS cannot reach one: give the number alone"),
            ),
            (
                "+3725555555 x12",
                None,
                Err("phone has an extension; an SMS cannot reach one: give the number alone"),
            ),
            (
                "1-800-FLOWERS",
                ee,
                Err("phone has letters (a vanity number?): write it in digits"),
            ),
            (
                "+372 5555*5555",
                None,
                Err(
                    "phone contains '*'; only digits, spaces, dashes, dots, slashes, parentheses and a leading + or 00 are allowed",
                ),
            ),
            ("", None, Err("phone_number is empty")),
        ];
        for (raw, region, want) in cases {
            assert_eq!(
                normalize(raw, region).as_deref(),
                want.map_err(str::to_string).as_deref(),
                "{raw}"
            );
        }
    }

    #[test]
    fn masks_phones_inside_text() {
        assert_eq!(
            mask_phones_in("422: Invalid phone +37255555567 (also 37255555567), code 42"),
            "422: Invalid phone +3725****67 (also 372****67), code 42"
        );
        assert_eq!(mask_phones_in("ünï 1234567 ok"), "ünï 1234567 ok");
        assert_eq!(
            mask_phones_in("422: Invalid phone number: +6836831"),
            "422: Invalid phone number: +68****1"
        );
        assert_eq!(
            mask_phones_in("phone=+37255555501-x or +372 5555 5501."),
            "phone=+3725****01-x or +3725****01."
        );
        assert_eq!(
            mask_phones_in("+372.5555.5501 and +372 (5555) 5501"),
            "+3725****01 and +3725****01"
        );
        // UserIDs keep their digits.
        for id in [
            "94019fab-af23-4f7f-8c4f-36d877143303",
            "8c4f-123456789012",
            "u123456789",
        ] {
            assert_eq!(mask_phones_in(id), id);
        }
    }

    #[test]
    fn masks_phones() {
        assert_eq!(mask_phone("+37255555567"), "+3725****67");
        assert_eq!(mask_phone("+123"), "****");
        // Niue's 7 digits: at most half of them show.
        assert_eq!(mask_phone("+6836831"), "+68****1");
        // Written nationally, every digit is the number's own.
        assert_eq!(mask_phone("07911 123456"), "079****56");
        assert_eq!(mask_phone("888 4012"), "88****2");
        // What the file wrote is shown escaped: a line separator breaks no log line.
        assert_eq!(mask_phone("+\u{2028}3725555555"), "+\\u{2028}372****55");
    }

    proptest::proptest! {
        #[test]
        fn normalisation_never_panics(s in "\\PC*") {
            let _ = normalize(&s, None);
            let _ = understand(&s, "EE".parse().ok());
        }

        /// A number once normalised is its own normal form, whatever the default region.
        #[test]
        fn normalising_twice_changes_nothing(
            s in "(\\+|00)?[1-9][0-9 ().-]{6,16}",
            region in proptest::sample::select(vec![None, Some("EE"), Some("GB"), Some("US"), Some("RU")]),
        ) {
            let region = region.and_then(|r| r.parse().ok());
            if let Ok(once) = normalize(&s, region) {
                proptest::prop_assert_eq!(normalize(&once, region), Ok(once.clone()));
                proptest::prop_assert_eq!(normalize(&once, None), Ok(once));
            }
        }
    }
}
