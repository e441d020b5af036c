//! The HTTP face of the simulator: the axum router, authentication, the rate limit, the fault
//! knobs, and the get/delete handlers. The create lives in `create`, the streamed list in `list`,
//! storage in `state`, sockets and dropped connections in `server`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use regex::Regex;

use super::create::create;
use super::list::list;
use super::rate::RateWindow;
use super::state::{Counters, Store, StoredUser, bump};

/// The header the real API authenticates with: `username:password`, unencoded.
const AUTH_HEADER: &str = "x-service-auth";

/// Everything the handlers share: the store, the counters and the knobs from `SimConfig`.
pub(super) struct App {
    pub store: Store,
    pub stats: Counters,
    pub rate: Option<RateWindow>,
    pub username: String,
    pub password: String,
    pub create_status: StatusCode,
    pub fail_rate: f64,
    pub reset_rate: f64,
    pub reject_phone: Option<Regex>,
    /// Applied by the server around every answer, resets included.
    pub latency: std::time::Duration,
    /// The user list's cap (its `total` stays true).
    pub list_cap: Option<usize>,
    /// Ids listed twice, the second time with another UserID.
    pub list_repeat: Vec<String>,
    /// While set, every user route answers 503.
    pub outage: std::sync::atomic::AtomicBool,
    /// HTTPS, when configured.
    pub tls: Option<super::SimTls>,
}

/// Marks a response that must never reach the client: the server drops the connection instead.
#[derive(Clone, Copy, Debug)]
pub(super) struct DropConnection;

pub(super) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route(
            "/v1/service/service/{sid}/users",
            post(create).get(list).fallback(method_not_allowed),
        )
        .route(
            "/v1/service/service/{sid}/users/{uid}",
            get(get_user)
                .delete(delete_user)
                .fallback(method_not_allowed),
        )
        .fallback(not_found)
        .with_state(app)
}

impl App {
    /// The gate in front of every user route: the rate limit first (as a front proxy would),
    /// then the credentials. Returns the refusal to send, if any.
    pub(super) fn refusal(&self, headers: &HeaderMap) -> Option<Response> {
        if self.outage.load(std::sync::atomic::Ordering::Relaxed) {
            bump(&self.stats.failures);
            return Some(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service Unavailable",
            ));
        }
        if let Some(rate) = &self.rate
            && !rate.admit()
        {
            bump(&self.stats.throttled);
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            return Some(response);
        }
        let message = self.authenticate(headers).err()?;
        bump(&self.stats.unauthorized);
        Some(error(StatusCode::UNAUTHORIZED, message))
    }

    /// Checks `X-Service-Auth`, split on the first colon so passwords may contain colons.
    fn authenticate(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        let Some(value) = headers.get(AUTH_HEADER) else {
            return Err("Missing authentication headers (X-Service-Auth)");
        };
        let value = value.as_bytes();
        let Some(colon) = value.iter().position(|&b| b == b':') else {
            return Err("Malformed X-Service-Auth header: expected username:password");
        };
        if &value[..colon] == self.username.as_bytes()
            && &value[colon + 1..] == self.password.as_bytes()
        {
            Ok(())
        } else {
            Err("Invalid credentials")
        }
    }

    /// Rolls the dice for the create fault knobs; a 503 is tried before a reset.
    pub(super) fn roll_fault(&self) -> Fault {
        if self.fail_rate > 0.0 && rand::random_bool(self.fail_rate) {
            Fault::Fail
        } else if self.reset_rate > 0.0 && rand::random_bool(self.reset_rate) {
            Fault::Reset {
                create_first: rand::random_bool(0.5),
            }
        } else {
            Fault::None
        }
    }

    pub(super) fn is_rejected_phone(&self, phone_number: &str) -> bool {
        self.reject_phone
            .as_ref()
            .is_some_and(|pattern| pattern.is_match(phone_number))
    }

    /// Counts a create attempt on a path that answers before the main critical section.
    pub(super) fn note_attempt(&self, service_id: &str, id_in_service: Option<&str>) {
        if let Some(name) = id_in_service
            && let Some(service) = self.store.lock().service(service_id)
        {
            service.note_attempt(name);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    None,
    Fail,
    /// Drop the connection; with `create_first` the user is created and only the answer is lost.
    Reset {
        create_first: bool,
    },
}

async fn get_user(
    State(app): State<Arc<App>>,
    Path((service_id, user_id)): Path<(String, String)>,
    request: Request,
) -> Response {
    bump(&app.stats.get_requests);
    if let Some(response) = app.refusal(request.headers()) {
        return response;
    }
    let mut services = app.store.lock();
    let Some(service) = services.service(&service_id) else {
        drop(services);
        return service_not_found();
    };
    let mut body = Vec::new();
    if let Some(user) = service.key_of(&user_id).and_then(|id| service.get(&id)) {
        write_user(&mut body, user);
    }
    drop(services);
    if body.is_empty() {
        user_not_found()
    } else {
        json(StatusCode::OK, body)
    }
}

async fn delete_user(
    State(app): State<Arc<App>>,
    Path((service_id, user_id)): Path<(String, String)>,
    request: Request,
) -> Response {
    bump(&app.stats.delete_requests);
    if let Some(response) = app.refusal(request.headers()) {
        return response;
    }
    let mut services = app.store.lock();
    let Some(service) = services.service(&service_id) else {
        drop(services);
        return service_not_found();
    };
    let removed = service
        .key_of(&user_id)
        .is_some_and(|id| service.remove(&id));
    drop(services);
    if removed {
        bump(&app.stats.deleted);
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::ACCEPTED;
        response
    } else {
        user_not_found()
    }
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "Not found")
}

async fn method_not_allowed() -> Response {
    error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
}

pub(super) fn service_not_found() -> Response {
    error(StatusCode::NOT_FOUND, "Service not found")
}

fn user_not_found() -> Response {
    error(StatusCode::NOT_FOUND, "User not found")
}

/// The user object as the API shows it: never the phone number.
pub(super) fn write_user(out: &mut Vec<u8>, user: &StoredUser) {
    let mut id = [0; uuid::fmt::Hyphenated::LENGTH];
    out.extend_from_slice(b"{\"id\":");
    match &user.given {
        Some(given) => serde_json::to_writer(&mut *out, given)
            .expect("serialising a string into a Vec cannot fail"),
        None => {
            out.push(b'"');
            out.extend_from_slice(user.id.hyphenated().encode_lower(&mut id).as_bytes());
            out.push(b'"');
        }
    }
    out.extend_from_slice(b",\"ctime\":\"");
    out.extend_from_slice(user.ctime.as_bytes());
    out.extend_from_slice(b"\",\"id_in_service\":");
    serde_json::to_writer(&mut *out, &user.id_in_service)
        .expect("serialising a string into a Vec cannot fail");
    out.push(b'}');
}

pub(super) fn error(status: StatusCode, message: &str) -> Response {
    let mut body = Vec::with_capacity(message.len() + 16);
    body.extend_from_slice(b"{\"message\":");
    serde_json::to_writer(&mut body, message).expect("serialising a string into a Vec cannot fail");
    body.push(b'}');
    json(status, body)
}

pub(super) fn json(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_json_escapes_and_omits_phone() {
        let user = StoredUser::new("a\"b".to_owned(), "+1".to_owned());
        let mut out = Vec::new();
        write_user(&mut out, &user);
        let value: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(value["id_in_service"], "a\"b");
        assert_eq!(value["id"], user.id.to_string());
        assert_eq!(value.as_object().map(|o| o.len()), Some(3));
    }
}
