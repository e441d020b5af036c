//! The bodies on the wire: what a create sends, and what creates, lists and errors answer. Parsing
//! is lenient where the API's answers vary (`total` or `count`, a ctime of any JSON type).

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

/// The answer to listing a service's users.
#[derive(Clone, Debug, Deserialize)]
pub struct UserList {
    /// The users.
    pub users: Vec<ListedUser>,
    /// The count the server claims (`total`, or `count` in some clients); more than `users.len()`
    /// means the list was truncated.
    #[serde(default, alias = "count")]
    pub total: Option<u64>,
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
