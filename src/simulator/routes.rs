//! The HTTP face of the simulator: the axum router, authentication, the rate limit, and the
//! create/list/get/delete handlers with their fault knobs. Storage lives in `state`; sockets and
//! dropped connections live in `server`.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, Request, State};
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::state::{Counters, RateWindow, Service, Store, StoredUser, bump};

/// The header the real API authenticates with: `username:password`, unencoded.
const AUTH_HEADER: &str = "x-service-auth";

/// Create bodies are two short strings; anything this large is a client bug, not a user.
const MAX_BODY_BYTES: usize = 64 * 1024;

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
    fn refusal(&self, headers: &HeaderMap) -> Option<Response> {
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
    fn roll_fault(&self) -> Fault {
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

    fn is_rejected_phone(&self, phone_number: &str) -> bool {
        self.reject_phone
            .as_ref()
            .is_some_and(|pattern| pattern.is_match(phone_number))
    }

    /// Counts a create attempt on a path that answers before the main critical section.
    fn note_attempt(&self, service_id: &str, id_in_service: Option<&str>) {
        if let Some(name) = id_in_service
            && let Some(service) = self.store.lock().service(service_id)
        {
            service.note_attempt(name);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Fail,
    /// Drop the connection; with `create_first` the user is created and only the answer is lost.
    Reset {
        create_first: bool,
    },
}

/// The fields a valid create body carries.
struct NewUser {
    id_in_service: String,
    phone_number: String,
}

/// A 422: the message, plus the user the body named (if any) so the attempt still counts.
struct Invalid {
    message: String,
    id_in_service: Option<String>,
}

impl From<&str> for Invalid {
    fn from(message: &str) -> Invalid {
        Invalid {
            message: message.to_owned(),
            id_in_service: None,
        }
    }
}

/// Loose on purpose: types are checked by hand so each 422 names the field at fault.
#[derive(Deserialize)]
struct CreateBody {
    id_in_service: Option<Value>,
    phone_number: Option<Value>,
}

/// Parses a create body without trusting Content-Type, so malformed JSON gets our 422.
fn parse_new_user(body: &[u8]) -> Result<NewUser, Invalid> {
    let is_object = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let fields = match serde_json::from_slice::<CreateBody>(body) {
        Ok(fields) if is_object => fields,
        Err(e) if e.is_syntax() || e.is_eof() => {
            return Err(format!("Request body is not valid JSON: {e}")
                .as_str()
                .into());
        }
        Err(e) if is_object => return Err(format!("Invalid request body: {e}").as_str().into()),
        // serde would happily read a struct from an array; the API wants an object.
        _ => return Err("Request body must be a JSON object".into()),
    };
    let id_in_service = required_string(fields.id_in_service, "id_in_service");
    let phone_number = required_string(fields.phone_number, "phone_number");
    match (id_in_service, phone_number) {
        (Ok(id_in_service), Ok(phone_number)) => Ok(NewUser {
            id_in_service,
            phone_number,
        }),
        (Err(message), _) => Err(Invalid {
            message,
            id_in_service: None,
        }),
        (Ok(id_in_service), Err(message)) => Err(Invalid {
            message,
            id_in_service: Some(id_in_service),
        }),
    }
}

fn required_string(value: Option<Value>, field: &str) -> Result<String, String> {
    match value {
        None | Some(Value::Null) => Err(format!("Missing field: {field}")),
        Some(Value::String(text)) if text.trim().is_empty() => {
            Err(format!("Field {field} must not be empty"))
        }
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(format!("Field {field} must be a string")),
    }
}

/// A valid create, made ready before taking the lock: the user, the phone verdict and the
/// success body (built from the user before it moves into the store).
struct Prepared {
    user: StoredUser,
    phone_rejected: bool,
    answer: Vec<u8>,
}

/// What the create critical section decided; responses are built after the lock is released.
enum Outcome {
    Invalid(String),
    PhoneRejected(String),
    Unavailable,
    Reset,
    Created(Vec<u8>),
    Conflict,
}

async fn create(
    State(app): State<Arc<App>>,
    Path(service_id): Path<String>,
    request: Request,
) -> Response {
    bump(&app.stats.create_requests);
    let (parts, body) = request.into_parts();
    let Ok(body) = to_bytes(body, MAX_BODY_BYTES).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request body too large or unreadable",
        );
    };
    let parsed = parse_new_user(&body);
    if let Some(response) = app.refusal(&parts.headers) {
        let named = match &parsed {
            Ok(user) => Some(user.id_in_service.as_str()),
            Err(invalid) => invalid.id_in_service.as_deref(),
        };
        app.note_attempt(&service_id, named);
        return response;
    }

    let fault = app.roll_fault();
    let prepared = parsed.map(|new| {
        let phone_rejected = app.is_rejected_phone(&new.phone_number);
        let user = StoredUser::new(new.id_in_service, new.phone_number);
        let mut answer = Vec::with_capacity(128 + user.id_in_service.len());
        write_user(&mut answer, &user);
        Prepared {
            user,
            phone_rejected,
            answer,
        }
    });

    let mut services = app.store.lock();
    let Some(service) = services.service(&service_id) else {
        drop(services);
        return service_not_found();
    };
    let outcome = decide(service, prepared, fault, &app.stats);
    drop(services);
    respond(&app, outcome)
}

/// The create critical section: counts the attempt, then validation, faults, conflict, insert.
/// Validation comes before the faults so a 422 is deterministic whatever the knobs say.
fn decide(
    service: &mut Service,
    prepared: Result<Prepared, Invalid>,
    fault: Fault,
    stats: &Counters,
) -> Outcome {
    let prepared = match prepared {
        Ok(prepared) => prepared,
        Err(invalid) => {
            if let Some(name) = &invalid.id_in_service {
                service.note_attempt(name);
            }
            return Outcome::Invalid(invalid.message);
        }
    };
    service.note_attempt(&prepared.user.id_in_service);
    if prepared.phone_rejected {
        return Outcome::PhoneRejected(prepared.user.phone_number);
    }
    match fault {
        Fault::Fail => Outcome::Unavailable,
        Fault::Reset { create_first } => {
            if create_first && service.insert(prepared.user).is_ok() {
                bump(&stats.created);
            }
            Outcome::Reset
        }
        Fault::None => match service.insert(prepared.user) {
            Ok(()) => Outcome::Created(prepared.answer),
            Err(_) => Outcome::Conflict,
        },
    }
}

fn respond(app: &App, outcome: Outcome) -> Response {
    match outcome {
        Outcome::Invalid(message) => {
            bump(&app.stats.rejected);
            error(StatusCode::UNPROCESSABLE_ENTITY, &message)
        }
        Outcome::PhoneRejected(phone_number) => {
            bump(&app.stats.rejected);
            error(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("Invalid phone number: {phone_number}"),
            )
        }
        Outcome::Unavailable => {
            bump(&app.stats.failures);
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service temporarily unavailable",
            )
        }
        Outcome::Reset => {
            bump(&app.stats.resets);
            let mut response = Response::new(Body::empty());
            response.extensions_mut().insert(DropConnection);
            response
        }
        Outcome::Created(answer) => {
            bump(&app.stats.created);
            json(app.create_status, answer)
        }
        Outcome::Conflict => {
            bump(&app.stats.conflicts);
            error(StatusCode::CONFLICT, "User already exists")
        }
    }
}

async fn list(
    State(app): State<Arc<App>>,
    Path(service_id): Path<String>,
    request: Request,
) -> Response {
    bump(&app.stats.list_requests);
    if let Some(response) = app.refusal(request.headers()) {
        return response;
    }
    let mut services = app.store.lock();
    let Some(service) = services.service(&service_id) else {
        drop(services);
        return service_not_found();
    };
    let mut body = Vec::with_capacity(32 + service.len() * 112);
    body.extend_from_slice(b"{\"users\":[");
    for (index, user) in service.users().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        write_user(&mut body, user);
    }
    body.extend_from_slice(b"],\"total\":");
    body.extend_from_slice(service.len().to_string().as_bytes());
    drop(services);
    body.push(b'}');
    json(StatusCode::OK, body)
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
    if let Some(user) = Uuid::try_parse(&user_id)
        .ok()
        .and_then(|id| service.get(&id))
    {
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
    let removed = Uuid::try_parse(&user_id).is_ok_and(|id| service.remove(&id));
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

fn service_not_found() -> Response {
    error(StatusCode::NOT_FOUND, "Service not found")
}

fn user_not_found() -> Response {
    error(StatusCode::NOT_FOUND, "User not found")
}

/// The user object as the API shows it: never the phone number.
fn write_user(out: &mut Vec<u8>, user: &StoredUser) {
    let mut id = [0; uuid::fmt::Hyphenated::LENGTH];
    out.extend_from_slice(b"{\"id\":\"");
    out.extend_from_slice(user.id.hyphenated().encode_lower(&mut id).as_bytes());
    out.extend_from_slice(b"\",\"ctime\":\"");
    out.extend_from_slice(user.ctime.as_bytes());
    out.extend_from_slice(b"\",\"id_in_service\":");
    serde_json::to_writer(&mut *out, &user.id_in_service)
        .expect("serialising a string into a Vec cannot fail");
    out.push(b'}');
}

fn error(status: StatusCode, message: &str) -> Response {
    let mut body = Vec::with_capacity(message.len() + 16);
    body.extend_from_slice(b"{\"message\":");
    serde_json::to_writer(&mut body, message).expect("serialising a string into a Vec cannot fail");
    body.push(b'}');
    json(status, body)
}

fn json(status: StatusCode, body: Vec<u8>) -> Response {
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

    fn message(body: &str) -> String {
        match parse_new_user(body.as_bytes()) {
            Ok(_) => "ok".to_owned(),
            Err(invalid) => invalid.message,
        }
    }

    #[test]
    fn create_body_problems_are_named() {
        let cases = [
            (r#"{"id_in_service":"a","phone_number":"+1"}"#, "ok"),
            (r#"{"id_in_service":"a"}"#, "Missing field: phone_number"),
            (r#"{"phone_number":"+1"}"#, "Missing field: id_in_service"),
            (
                r#"{"id_in_service":"","phone_number":"+1"}"#,
                "Field id_in_service must not be empty",
            ),
            (
                r#"{"id_in_service":7,"phone_number":"+1"}"#,
                "Field id_in_service must be a string",
            ),
            (
                r#"{"id_in_service":"a","phone_number":null}"#,
                "Missing field: phone_number",
            ),
            (r#"["a","+1"]"#, "Request body must be a JSON object"),
            ("42", "Request body must be a JSON object"),
        ];
        for (body, expected) in cases {
            assert_eq!(message(body), expected, "body {body}");
        }
        assert!(message("{\"id_in_service\":").starts_with("Request body is not valid JSON"));
        assert!(message("").starts_with("Request body is not valid JSON"));
        assert!(message("nope").starts_with("Request body is not valid JSON"));
    }

    #[test]
    fn invalid_body_still_names_its_user() {
        let invalid = parse_new_user(br#"{"id_in_service":"a"}"#)
            .err()
            .expect("phone missing");
        assert_eq!(invalid.id_in_service.as_deref(), Some("a"));
    }

    #[test]
    fn user_json_escapes_and_omits_phone() {
        let user = StoredUser::new("a\"b".to_owned(), "+1".to_owned());
        let mut out = Vec::new();
        write_user(&mut out, &user);
        let value: Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(value["id_in_service"], "a\"b");
        assert_eq!(value["id"], user.id.to_string());
        assert_eq!(value.as_object().map(|o| o.len()), Some(3));
    }
}
