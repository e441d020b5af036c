//! The domain type several stages share: a user to register, as the input hands it to the
//! pipeline and the client sends it. Knows nothing of where it came from or where it goes.

/// A row ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The user's id in the customer's service (usually an e-mail or login).
    pub id_in_service: String,
    /// The phone number, normalised to E.164 (`+` and 8–15 digits).
    pub phone_number: String,
}
