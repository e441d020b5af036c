//! One row's checks: field count, size, encoding, an id, and a phone number that normalises to
//! E.164. A bad row becomes a [`Rejected`] row with its reason; nothing here fails the file.

use super::lines::MAX_RECORD_BYTES;
use super::{Reader, Rejected, Row};
use crate::phone::normalize;
use crate::user::{User, escape, first_unprintable};

/// Longest field accepted: far above any real id or phone, low enough to keep hostile rows cheap.
pub(super) const MAX_FIELD_BYTES: usize = 64 * 1024;
/// How much of a rejected field is kept for the report.
pub(super) const MAX_SHOWN_CHARS: usize = 256;

impl Reader {
    /// The record just read was cut at [`MAX_RECORD_BYTES`]: never sent, whatever its fields.
    pub(super) fn too_long(&self) -> Row {
        let field = |i: usize| shown(self.record.get(i).unwrap_or_default());
        Row::Invalid(Rejected {
            id_in_service: field(self.id_index),
            phone_number: field(self.phone_index),
            reason: format!(
                "the row is longer than {} MiB (an unterminated quote?); it was not read whole",
                MAX_RECORD_BYTES / (1024 * 1024)
            ),
            key: None,
        })
    }

    /// Validates the record just read.
    pub(super) fn validate(&self) -> Row {
        let id = self.record.get(self.id_index).unwrap_or_default();
        let phone = self.record.get(self.phone_index).unwrap_or_default();
        let reject_with = |reason: String, key: Option<&str>| {
            Row::Invalid(Rejected {
                id_in_service: shown(id),
                phone_number: shown(phone),
                reason,
                key: key.map(str::to_string),
            })
        };
        let reject = |reason: String| reject_with(reason, None);
        if self.record.len() != self.width {
            return reject(format!(
                "has {} fields, the header has {}",
                self.record.len(),
                self.width
            ));
        }
        let id = match text_field(id, "id_in_service") {
            Ok(id) => id,
            Err(reason) => return reject(reason),
        };
        // The one quote `--report` put before a cell a spreadsheet would run as a formula.
        let id = if self.from_report { unguard(id) } else { id };
        if id.is_empty() {
            return reject("id_in_service is empty".into());
        }
        // Such a character in an id is damage or an attack: it would reach terminals and files.
        if let Some(c) = first_unprintable(id) {
            return reject(format!(
                "id_in_service contains the control character U+{:04X}; ids must be printable",
                u32::from(c)
            ));
        }
        // What a decoder puts where the file's bytes were not of its encoding: the id as
        // written is lost, and registering the damaged one would make a user nobody has.
        if id.contains('\u{FFFD}') {
            return reject(
                "id_in_service contains U+FFFD, a character the file's encoding could not hold; save it as \"CSV UTF-8\" or \"Unicode Text\"".into(),
            );
        }
        let phone = match text_field(phone, "phone_number") {
            Ok(p) if self.from_report => unguard(p),
            Ok(p) => p,
            Err(reason) => return reject_with(reason, Some(id)),
        };
        match normalize(phone, self.region) {
            Ok(phone_number) => Row::User(User {
                id_in_service: id.to_string(),
                written: (phone_number != phone).then(|| phone.to_string()),
                phone_number,
            }),
            Err(reason) => reject_with(reason, Some(id)),
        }
    }
}

fn unguard(cell: &str) -> &str {
    cell.strip_prefix('\'').unwrap_or(cell)
}

fn text_field<'a>(bytes: &'a [u8], field: &str) -> Result<&'a str, String> {
    if bytes.len() > MAX_FIELD_BYTES {
        return Err(format!("{field} is longer than 64 KiB"));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| {
        format!(
            "{field} is not valid UTF-8 (an export in another encoding? save it as \"CSV UTF-8\" or \"Unicode Text\")"
        )
    })?;
    if text.contains('\0') {
        return Err(format!("{field} contains a NUL byte"));
    }
    Ok(trim(text))
}

/// A rejected field as kept for the report, which a person fixes and imports again: as read
/// (lossy UTF-8, without NULs, trimmed), so that the fixed row carries the same id. Only a field
/// holding unprintable characters (rejected for them, or too long to keep) is escaped and cut.
fn shown(bytes: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(bytes)
        .chars()
        .filter(|&c| c != '\0')
        .collect();
    let text = trim(&text);
    if bytes.len() <= MAX_FIELD_BYTES && first_unprintable(text).is_none() {
        return text.to_string();
    }
    escape(&text.chars().take(MAX_SHOWN_CHARS).collect::<String>())
}

/// Trims the spaces, tabs and carriage returns around a field, and nothing else: other
/// characters at its edges (NEL, VT, FF) are kept, to be rejected as unprintable, not hidden.
fn trim(text: &str) -> &str {
    text.trim_matches(|c| c == ' ' || c == '\t' || c == '\r')
}
