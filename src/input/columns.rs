//! Which columns hold the id and the phone, and which delimiter separates them: detected from the
//! header line unless the options name them.

use super::InputError;

/// Headers accepted for the id column when `--id-column` is not given, in order of preference.
pub(super) const ID_HEADERS: [&str; 4] = ["id_in_service", "username", "email", "login"];
/// Headers accepted for the phone column when `--phone-column` is not given, in order of preference.
pub(super) const PHONE_HEADERS: [&str; 4] = ["phone_number", "phone", "mobile", "msisdn"];
/// Delimiters detected from the header line, in order of preference on a tie.
const DELIMITERS: [u8; 4] = [b',', b';', b'\t', b'|'];

/// Picks the delimiter that occurs most often outside quotes in the header line.
pub(super) fn detect_delimiter(header: &[u8]) -> u8 {
    let mut counts = [0usize; DELIMITERS.len()];
    let mut quoted = false;
    for &b in header {
        if b == b'"' {
            quoted = !quoted;
        } else if !quoted && let Some(i) = DELIMITERS.iter().position(|&d| d == b) {
            counts[i] += 1;
        }
    }
    let best =
        (0..DELIMITERS.len()).fold(0, |best, i| if counts[i] > counts[best] { i } else { best });
    DELIMITERS[best]
}

/// The index of the `what` column: the one `explicit` names, else the first of `defaults` found
/// (case-insensitively).
pub(super) fn find_column(
    name: &str,
    headers: &[String],
    what: &'static str,
    explicit: Option<&str>,
    defaults: &[&str],
) -> Result<usize, InputError> {
    let wanted: Vec<&str> = match explicit {
        Some(col) => vec![col.trim()],
        None => defaults.to_vec(),
    };
    wanted
        .iter()
        .find_map(|w| headers.iter().position(|h| h.eq_ignore_ascii_case(w)))
        .ok_or_else(|| InputError::MissingColumn {
            path: name.to_string(),
            what,
            wanted: wanted.join(", "),
            // Bounded: a header line may be long, and the message is one line.
            found: headers
                .iter()
                .take(20)
                .map(|h| format!("{:?}", h.chars().take(40).collect::<String>()))
                .collect::<Vec<_>>()
                .join(", "),
        })
}
