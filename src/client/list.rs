//! The service's user list: how the import resolves the UserIDs of users that existed already
//! (409), and what `reconcile` compares the ledger with.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use thiserror::Error;

use super::Client;
use super::answers::{Fatal, Step, reason, transient};
use super::retry::Attempted;
use super::wire::UserList;

impl Client {
    /// Lists a service's users (to resolve the UserIDs of 409s), retrying transient failures.
    pub async fn list_users(&self, service_id: &str) -> Attempted<Result<UserList, ListError>> {
        let url = self.users_url(service_id, None);
        self.with_retries(Method::GET, url, None, |status, wait, body| {
            classify_list(status, wait, body, service_id)
        })
        .await
    }
}

/// Why listing users failed for good.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ListError {
    /// The run must stop.
    #[error(transparent)]
    Fatal(Fatal),
    /// Another refusal or an unreadable body.
    #[error("listing users failed: {0}")]
    Other(String),
}

/// Classifies one answer to a list.
pub fn classify_list(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
    service_id: &str,
) -> Step<Result<UserList, ListError>> {
    let fail = |e: ListError| Step::Done(Err(e));
    match status.as_u16() {
        200..=299 => match serde_json::from_slice::<UserList>(body) {
            Ok(list) => Step::Done(Ok(list)),
            // serde's message quotes the body: only where it broke is kept.
            Err(e) => fail(ListError::Other(format!(
                "unreadable user list ({:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            ))),
        },
        401 => fail(ListError::Fatal(Fatal::Unauthorized)),
        403 => fail(ListError::Fatal(Fatal::Forbidden(service_id.to_string()))),
        404 => fail(ListError::Fatal(Fatal::ServiceNotFound(
            service_id.to_string(),
        ))),
        429 | 500..=599 => transient(status, body, retry_after),
        _ => fail(ListError::Other(reason(status, body))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_accepts_total_or_count() {
        let body = br#"{"users":[{"id":"u","id_in_service":"a","ctime":"t"}],"count":1}"#;
        let Step::Done(Ok(list)) = classify_list(StatusCode::OK, None, body, "s") else {
            panic!("parsed")
        };
        assert_eq!((list.users.len(), list.total), (1, Some(1)));
        let both = br#"{"users":[],"total":3,"count":5}"#;
        let Step::Done(Ok(list)) = classify_list(StatusCode::OK, None, both, "s") else {
            panic!("parsed with both keys")
        };
        assert_eq!(list.total, Some(5));
    }
}
