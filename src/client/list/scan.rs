//! Where one JSON value ends, found a piece at a time without parsing it: only strings, escapes
//! and bracket depth are tracked (brackets are counted, not matched). The splitter uses it for
//! every element of `users` and every other value of the list's object.

/// Finds where one JSON value ends, whatever it is, a piece at a time.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Scan {
    kind: Kind,
    depth: u64,
    in_string: bool,
    escaped: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Kind {
    /// Nothing seen yet.
    #[default]
    Fresh,
    /// An object or an array.
    Nested,
    /// A string.
    Text,
    /// A number or a literal: ends before the first delimiter.
    Scalar,
}

impl Scan {
    /// Scans the value's next bytes; `Some(n)` when it ends after `bytes[..n]` (a scalar ends
    /// before its delimiter, which is left unread).
    pub(super) fn scan(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < bytes.len() {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                    i += 1;
                    continue;
                }
                // Strings are most of a list: jump to the next quote or backslash.
                let k = memchr::memchr2(b'"', b'\\', &bytes[i..])?;
                i += k + 1;
                if bytes[i - 1] == b'\\' {
                    self.escaped = true;
                } else {
                    self.in_string = false;
                    if self.depth == 0 {
                        return Some(i);
                    }
                }
                continue;
            }
            let b = bytes[i];
            match (self.kind, b) {
                (Kind::Scalar, _) if is_delimiter(b) => return Some(i),
                (Kind::Scalar, _) => {}
                (Kind::Fresh, b'{' | b'[') => {
                    self.kind = Kind::Nested;
                    self.depth = 1;
                }
                (Kind::Fresh, b'"') => {
                    self.kind = Kind::Text;
                    self.in_string = true;
                }
                (Kind::Fresh, _) => self.kind = Kind::Scalar,
                (_, b'"') => self.in_string = true,
                (_, b'{' | b'[') => self.depth += 1,
                (_, b'}' | b']') => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        return Some(i + 1);
                    }
                }
                _ => {}
            }
            i += 1;
        }
        None
    }
}

pub(super) fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// A byte that ends a scalar.
fn is_delimiter(b: u8) -> bool {
    is_whitespace(b) || matches!(b, b',' | b']' | b'}')
}
