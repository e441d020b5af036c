//! The simulator's create: parsing the body (each 422 names the field at fault), the decision made
//! under the store's lock (conflict, fault, rejection, creation) and the answer built after it.

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use super::routes::{App, DropConnection, Fault, error, json, service_not_found, write_user};
use super::state::{Counters, Service, StoredUser, bump};

/// Create bodies are two short strings; anything this large is a client bug, not a user.
const MAX_BODY_BYTES: usize = 64 * 1024;

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

/// `POST …/users`.
pub(super) async fn create(
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
}
