//! The user list, streamed: the body is written a few thousand users at a time, each chunk under
//! the store's lock, as the client reads it. No copy of the whole list is ever held, and creates
//! go on between chunks. A user created while the list streams is listed if the stream has not
//! passed its slot yet; `total` comes last and counts the users live at the end.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;

use futures::StreamExt;

use super::routes::{App, json, service_not_found, write_user};
use super::state::{StoredUser, bump};

/// Users written per chunk: large enough that the lock and the write are a small share of the
/// cost, small enough that a chunk is about half a megabyte.
const CHUNK_USERS: usize = 4096;

/// `GET /v1/service/service/{sid}/users`.
pub(super) async fn list(
    State(app): State<Arc<App>>,
    Path(service_id): Path<String>,
    request: Request,
) -> Response {
    bump(&app.stats.list_requests);
    if let Some(response) = app.refusal(request.headers()) {
        return response;
    }
    match app.store.lock().service(&service_id) {
        Some(service) => service.hold_slots(),
        None => return service_not_found(),
    }
    let mut cursor = Cursor {
        app,
        service_id,
        next_slot: 0,
        shown: 0,
        started: false,
        done: false,
    };
    let first = cursor.next_chunk().unwrap_or_default();
    if cursor.done {
        // A list that fits in one chunk goes out whole, with its length, as any small answer.
        return json(StatusCode::OK, first.into());
    }
    let rest = futures::stream::unfold(cursor, |mut cursor| async move {
        let chunk = cursor.next_chunk()?;
        Some((chunk, cursor))
    });
    let chunks = futures::stream::once(async { first })
        .chain(rest)
        .map(Ok::<_, Infallible>);
    let mut response = Response::new(Body::from_stream(chunks));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Where one list's stream is. Dropped at the end, or when the client goes away: either way the
/// service's slots are released.
struct Cursor {
    app: Arc<App>,
    service_id: String,
    /// The slot the next chunk starts at.
    next_slot: usize,
    /// Users listed so far (for `--list-cap`).
    shown: usize,
    started: bool,
    done: bool,
}

impl Cursor {
    /// The body's next chunk: the next users, then `total` and the end.
    fn next_chunk(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let cap = self.app.list_cap.unwrap_or(usize::MAX);
        let mut out = Vec::with_capacity(CHUNK_USERS * 128);
        if !self.started {
            self.started = true;
            out.extend_from_slice(b"{\"users\":[");
        }
        let mut services = self.app.store.lock();
        let Some(service) = services.service(&self.service_id) else {
            // Services are never removed: this cannot happen, but the JSON still closes.
            self.done = true;
            out.extend_from_slice(b"]}");
            return Some(Bytes::from(out));
        };
        let mut taken = 0;
        let mut users = service.users_from(self.next_slot);
        while taken < CHUNK_USERS && self.shown < cap {
            let Some((slot, user)) = users.next() else {
                break;
            };
            if self.shown > 0 {
                out.push(b',');
            }
            write_user(&mut out, user);
            if self.app.list_repeat.contains(&user.id_in_service) {
                out.push(b',');
                let twin = StoredUser::new(user.id_in_service.clone(), user.phone_number.clone());
                write_user(&mut out, &twin);
            }
            self.shown += 1;
            self.next_slot = slot + 1;
            taken += 1;
        }
        let more = users.next().is_some();
        drop(users);
        if !more || self.shown >= cap {
            out.extend_from_slice(b"],\"total\":");
            out.extend_from_slice(service.len().to_string().as_bytes());
            out.push(b'}');
            self.done = true;
        }
        drop(services);
        Some(Bytes::from(out))
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        if let Some(service) = self.app.store.lock().service(&self.service_id) {
            service.release_slots();
        }
    }
}
