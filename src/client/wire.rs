//! The bodies on the wire: what a create sends, and what creates, lists and errors answer. Parsing
//! is lenient where the API's answers vary (a ctime of any JSON type); the list's own shape
//! (`total` or `count`, in any order) is read by `list/split.rs`.

use serde::{Deserialize, Serialize};

/// A user as listed by the API.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ListedUser {
    /// The UserID.
    pub id: String,
    /// The id in the customer's service.
    pub id_in_service: String,
    /// The creation time, opaque.
    #[serde(default)]
    pub ctime: Option<serde_json::Value>,
}

/// The body of a create.
#[derive(Serialize)]
pub(super) struct CreateBody<'a> {
    pub(super) id_in_service: &'a str,
    pub(super) phone_number: &'a str,
}

/// The answer to a create (the fields the import keeps).
#[derive(Deserialize)]
pub(super) struct CreatedBody {
    pub(super) id: Option<String>,
    pub(super) ctime: Option<serde_json::Value>,
}

/// An error answer: its `message`, of any JSON type.
#[derive(Deserialize)]
pub(super) struct ErrorBody {
    pub(super) message: Option<serde_json::Value>,
}

/// The longest UserID accepted (real ones are 36-character UUIDs).
pub const MAX_USER_ID_BYTES: usize = 128;

/// Whether a UserID from the server can be stored, exported and put into a URL path: 1 to 128
/// printable ASCII characters, no whitespace, none of `/ ? # % \\`, and not `.` or `..` (which a
/// URL path would drop, turning a delete of one user into a delete of the collection).
pub fn is_valid_user_id(id: &str) -> bool {
    (1..=MAX_USER_ID_BYTES).contains(&id.len())
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b'?' | b'#' | b'%' | b'\\'))
}

/// A creation time as the server wrote it, kept only when it looks like one: an ISO 8601 /
/// RFC 3339 date and time (with or without zone and fraction), or Unix seconds. Opaque
/// otherwise: it is shown, never computed with.
pub fn plausible_ctime(value: &serde_json::Value) -> Option<String> {
    let text = match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let is_seconds = (1..=13).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit());
    let is_datetime = text.len() <= 40
        && (chrono::DateTime::parse_from_rfc3339(&text).is_ok()
            || ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
                .iter()
                .any(|f| chrono::NaiveDateTime::parse_from_str(&text, f).is_ok()));
    (is_seconds || is_datetime).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_that_could_not_be_stored_or_put_in_a_path_are_refused() {
        for ok in ["81213bfd-b690-499e-b9d2-8754cb1550e8", "u1", "A_b.c~d"] {
            assert!(is_valid_user_id(ok), "{ok}");
        }
        let long = "x".repeat(MAX_USER_ID_BYTES + 1);
        for bad in [
            "",
            ".",
            "..",
            "a/../b",
            "a b",
            "a\u{1b}[2J",
            "a?b",
            "a#b",
            "50%",
            "a\\b",
            "é",
            &long,
        ] {
            assert!(!is_valid_user_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn ctimes_are_kept_only_when_they_look_like_times() {
        let keep = |v: serde_json::Value| plausible_ctime(&v);
        assert_eq!(
            keep("2017-09-15T08:13:26.965341".into()).as_deref(),
            Some("2017-09-15T08:13:26.965341")
        );
        assert!(keep("2024-01-02T03:04:05Z".into()).is_some());
        assert!(keep("2024-01-02 03:04:05".into()).is_some());
        assert_eq!(keep(1_700_000_000.into()).as_deref(), Some("1700000000"));
        for bad in ["t", "\u{1b}[31m", "2024-13-45T99:99:99", ""] {
            assert_eq!(keep(bad.into()), None, "{bad:?}");
        }
        assert_eq!(keep(serde_json::json!({"a": 1})), None);
    }
}
