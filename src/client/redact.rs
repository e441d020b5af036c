//! Secrets a server says back: a server that echoes the request (a debugging proxy, a broken
//! error page) would put the credentials into reasons, and from there into the terminal, the
//! ledger and the report. What the server says is cleaned here after it is decoded (an escaped
//! echo would slip past a search of the raw body), and a UserID that holds a secret is not kept.

use super::answers::{Created, Deleted, Step};
use super::list::{ListError, Listed};
use super::wire::ListedUser;

/// The shortest password also searched for on its own: a shorter one would match too much
/// ordinary text; `username:password`, the header's value, is always searched for.
const MIN_PASSWORD_SEARCHED: usize = 6;

/// What must never come back out.
#[derive(Debug, Default)]
pub(super) struct Secrets {
    needles: Vec<String>,
}

impl Secrets {
    /// The header's value and, when long enough to be told from ordinary text, the password.
    pub(super) fn new(username: &str, password: &str) -> Secrets {
        let mut needles = Vec::new();
        if !password.is_empty() {
            needles.push(format!("{username}:{password}"));
            if password.len() >= MIN_PASSWORD_SEARCHED {
                needles.push(password.to_string());
            }
        }
        Secrets { needles }
    }

    /// Whether `text` holds a secret.
    pub(super) fn holds(&self, text: &str) -> bool {
        self.needles.iter().any(|n| text.contains(n.as_str()))
    }

    /// `text` with every secret replaced by `***`.
    pub(super) fn text(&self, text: String) -> String {
        if !self.holds(&text) {
            return text;
        }
        self.needles
            .iter()
            .fold(text, |text, needle| text.replace(needle.as_str(), "***"))
    }
}

impl Secrets {
    /// An error answer's body with the secrets taken out of every string in it, before anything
    /// is shortened, filtered or re-serialised (each of which would hide a secret from a search).
    pub(super) fn body(&self, body: bytes::Bytes) -> bytes::Bytes {
        if self.needles.is_empty() {
            return body;
        }
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(mut value) => {
                self.value(&mut value);
                serde_json::to_vec(&value).map_or(body, bytes::Bytes::from)
            }
            Err(_) => {
                let text = String::from_utf8_lossy(&body).into_owned();
                bytes::Bytes::from(self.text(text))
            }
        }
    }

    fn value(&self, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(s) => *s = self.text(std::mem::take(s)),
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.value(v)),
            serde_json::Value::Object(map) => map.values_mut().for_each(|v| self.value(v)),
            _ => {}
        }
    }
}

/// An answer with the secrets taken out of what the server said.
pub(super) trait Redact {
    /// The same answer, cleaned.
    fn redact(self, secrets: &Secrets) -> Self;
}

impl<T: Redact> Redact for Step<T> {
    fn redact(self, secrets: &Secrets) -> Self {
        match self {
            Step::Done(t) => Step::Done(t.redact(secrets)),
            Step::Again {
                reason,
                floor,
                pause_all,
            } => Step::Again {
                reason: secrets.text(reason),
                floor,
                pause_all,
            },
            Step::Later(reason) => Step::Later(secrets.text(reason)),
        }
    }
}

impl Redact for Created {
    fn redact(self, secrets: &Secrets) -> Self {
        match self {
            Created::Rejected(reason) => Created::Rejected(secrets.text(reason)),
            // A UserID or ctime holding a secret is an echo, not a value: not kept.
            Created::New { user_id, ctime } => Created::New {
                user_id: user_id.filter(|id| !secrets.holds(id)),
                ctime: ctime.filter(|c| !secrets.holds(c)),
            },
            other => other,
        }
    }
}

impl Redact for Deleted {
    fn redact(self, secrets: &Secrets) -> Self {
        match self {
            Deleted::Refused(reason) => Deleted::Refused(secrets.text(reason)),
            other => other,
        }
    }
}

impl Redact for Result<Listed, ListError> {
    fn redact(self, secrets: &Secrets) -> Self {
        match self {
            Err(ListError::Other(reason)) => Err(ListError::Other(secrets.text(reason))),
            other => other,
        }
    }
}

impl Secrets {
    /// A listed user with the secrets taken out, as it streams past: an entry whose UserID or id
    /// holds one loses its UserID and its id, which makes it malformed (counted, never stored or
    /// compared). An id rewritten to `***` instead would stand for a user that is not there.
    pub(super) fn clean_user(&self, user: &mut ListedUser) {
        if self.needles.is_empty() {
            return;
        }
        if self.holds(&user.id) || self.holds(&user.id_in_service) {
            user.id.clear();
            user.id_in_service.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_taken_out_of_what_the_server_says() {
        let secrets = Secrets::new("demo", "hunter2");
        assert_eq!(
            secrets.text("auth was demo:hunter2, password hunter2".into()),
            "auth was ***, password ***"
        );
        let created = Created::New {
            user_id: Some("demo:hunter2".into()),
            ctime: None,
        }
        .redact(&secrets);
        assert_eq!(
            created,
            Created::New {
                user_id: None,
                ctime: None
            }
        );
        // Inside an object, with characters JSON escapes: taken out before it is re-serialised.
        let body = bytes::Bytes::from_static(br#"{"message":{"hdr":"demo:hunter2","n":1}}"#);
        let clean = secrets.body(body);
        assert!(!String::from_utf8_lossy(&clean).contains("hunter2"));
        let quoted = Secrets::new("demo", "pa\"ss\tword");
        let body = serde_json::to_vec(&serde_json::json!({"message": "bad demo:pa\"ss\tword"}))
            .expect("json");
        let clean = quoted.body(bytes::Bytes::from(body));
        assert_eq!(&clean[..], br#"{"message":"bad ***"}"#);
        // A short password is searched for only with its username: UserIDs stay whole.
        let short = Secrets::new("demo", "a");
        assert_eq!(short.text("4a5b-a".into()), "4a5b-a");
        assert_eq!(short.text("x demo:a y".into()), "x *** y");
    }
}
