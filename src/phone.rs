//! Phone numbers: normalisation to E.164 as the API wants them, and masking for log lines. Shared
//! by the input (which validates), the plan (which compares) and the demo (which seeds).

/// Normalises a phone number to E.164: drops spaces, dashes, dots and parentheses, turns a
/// leading `00` into `+`, and completes national numbers with `region` when given. The error is
/// a reason for the report that never repeats the number itself (reasons reach logs).
pub fn normalize_phone(
    raw: &str,
    region: Option<phonenumber::country::Id>,
) -> Result<String, String> {
    // Most exports hold E.164 already: then the number is its own normal form.
    if let Some(digits) = raw.strip_prefix('+')
        && (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
    {
        return Ok(raw.to_string());
    }
    let cleaned: String = raw
        .chars()
        .filter(|c| !matches!(c, '-' | '.' | '(' | ')') && !c.is_whitespace())
        .collect();
    if cleaned.is_empty() {
        return Err("phone_number is empty".into());
    }
    let (international, digits) = if let Some(rest) = cleaned.strip_prefix('+') {
        (true, rest)
    } else if let Some(rest) = cleaned.strip_prefix("00") {
        (true, rest)
    } else {
        (false, cleaned.as_str())
    };
    if let Some(bad) = digits.chars().find(|c| !c.is_ascii_digit()) {
        return Err(format!(
            "phone contains {bad:?}; only digits, spaces, dashes, dots, parentheses and a leading + or 00 are allowed"
        ));
    }
    let e164 = if international {
        format!("+{digits}")
    } else {
        let Some(region) = region else {
            return Err("phone has no country prefix (use +CC… or --default-region)".into());
        };
        let number = phonenumber::parse(Some(region), digits)
            .map_err(|_| format!("phone is not a national number of {region:?}"))?;
        number.format().mode(phonenumber::Mode::E164).to_string()
    };
    let count = e164.len() - 1;
    if !(8..=15).contains(&count) {
        return Err(format!(
            "phone has {count} digits after the +; E.164 allows 8 to 15"
        ));
    }
    Ok(e164)
}

/// Masks every phone number in a text for log lines (a server's reason may quote one): runs of 8
/// to 15 digits, with or without a leading `+`.
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
            if alone_after && (8..=15).contains(&digits.len()) {
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

/// Masks a phone number for log lines: `+3725****67`.
pub fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    if chars.len() <= 6 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..5].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}****{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_phones() {
        let cases = [
            ("+372 5555 5555", Ok("+37255555555")),
            ("00372-5555.5555", Ok("+37255555555")),
            ("+44 (0) 1234 567890", Ok("+4401234567890")),
            (
                "+1234567",
                Err("phone has 7 digits after the +; E.164 allows 8 to 15"),
            ),
            (
                "+1234567890123456",
                Err("phone has 16 digits after the +; E.164 allows 8 to 15"),
            ),
            (
                "5551234",
                Err("phone has no country prefix (use +CC… or --default-region)"),
            ),
            ("", Err("phone_number is empty")),
        ];
        for (raw, want) in cases {
            assert_eq!(
                normalize_phone(raw, None).as_deref(),
                want.map_err(str::to_string).as_deref(),
                "{raw}"
            );
        }
        assert!(normalize_phone("+372abc55555", None).is_err());
    }

    #[test]
    fn default_region_completes_national_numbers() {
        let ee = "EE".parse().expect("EE is a region");
        assert_eq!(
            normalize_phone("5551 2345", Some(ee)).as_deref(),
            Ok("+37255512345")
        );
        let gb = "GB".parse().expect("GB is a region");
        assert_eq!(
            normalize_phone("07400 123456", Some(gb)).as_deref(),
            Ok("+447400123456")
        );
    }

    #[test]
    fn masks_phones_inside_text() {
        assert_eq!(
            mask_phones_in("422: Invalid phone +37255555567 (also 37255555567), code 42"),
            "422: Invalid phone +3725****67 (also 37255****67), code 42"
        );
        assert_eq!(mask_phones_in("ünï 1234567 ok"), "ünï 1234567 ok");
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
    }

    proptest::proptest! {
        #[test]
        fn normalisation_never_panics(s in "\\PC*") {
            let _ = normalize_phone(&s, None);
            let _ = normalize_phone(&s, "EE".parse().ok());
        }

    }
}
