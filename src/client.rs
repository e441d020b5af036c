//! The Verigator HTTP client: request building, status classification and the retry loop, paced
//! by the shared [`Throttle`]. Knows nothing of CSV or the ledger. Credentials go only into the
//! `X-Service-Auth` header, which is marked sensitive; error texts never include them.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use url::Url;

use crate::config::ClientOptions;
use crate::throttle::{Stop, Throttle, backoff};
use crate::user::User;

/// The header that carries `<username>:<password>` on every request.
pub const AUTH_HEADER: &str = "x-service-auth";
/// Longest error body kept as a reason: enough for any JSON message, not for an HTML page.
const MAX_REASON_CHARS: usize = 300;

/// An answer that makes every further request pointless: the run stops at once.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum Fatal {
    /// 401: wrong or missing credentials.
    #[error("authentication failed (401): check VERIGATOR_USERNAME and VERIGATOR_PASSWORD")]
    Unauthorized,
    /// 403: no access to this service.
    #[error(
        "access denied (403) to service {0}: check --service-id and that the API key may use it (IP whitelist)"
    )]
    Forbidden(String),
    /// 404 on the service: wrong ServiceID.
    #[error("service {0} not found (404): check --service-id / VERIGATOR_SERVICE_ID")]
    ServiceNotFound(String),
}

/// The final answer to creating one user, after retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Created {
    /// 2xx: registered. `user_id` is `None` only if the body lacked it.
    New {
        /// The new UserID.
        user_id: Option<String>,
        /// The creation time as the API wrote it.
        ctime: Option<String>,
    },
    /// 409: the user already exists.
    Exists,
    /// 400, 422 or another 4xx: refused; the reason is the server's message or body.
    Rejected(String),
    /// The run must stop.
    Fatal(Fatal),
}

/// How a request with retries ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Retried<T> {
    /// A final answer.
    Done(T),
    /// Transient failures outlasted the attempts, or the answer was unexpected but not a 4xx.
    GaveUp(String),
    /// The stop flag was raised before an answer; `None` if nothing was ever sent.
    Stopped(Option<String>),
}

/// A result together with how many requests it took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempted<T> {
    /// The result.
    pub result: Retried<T>,
    /// Requests sent.
    pub attempts: u32,
}

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

#[derive(Serialize)]
struct CreateBody<'a> {
    id_in_service: &'a str,
    phone_number: &'a str,
}

#[derive(Deserialize)]
struct CreatedBody {
    id: Option<String>,
    ctime: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ErrorBody {
    message: Option<serde_json::Value>,
}

/// What one exchange produced, before classification.
#[derive(Debug)]
pub enum Exchange {
    /// An HTTP answer.
    Answer {
        /// Its status.
        status: StatusCode,
        /// `Retry-After`, parsed.
        retry_after: Option<Duration>,
        /// Its body.
        body: bytes::Bytes,
    },
    /// No answer: timeout, refused, reset, closed early.
    Transport(String),
}

/// One step of the retry loop, as a classifier decides it.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<T> {
    /// Final.
    Done(T),
    /// Try again after at least `floor` (from `Retry-After`); `pause_all` for a 429.
    Again {
        /// Why.
        reason: String,
        /// The server's minimum wait.
        floor: Option<Duration>,
        /// Whether every worker should wait (429).
        pause_all: bool,
    },
    /// Not retried in this run, but not a permanent refusal either: the row is left as `retry`.
    Later(String),
}

/// A problem building the client.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The credentials cannot go into a header.
    #[error(
        "VERIGATOR_USERNAME or VERIGATOR_PASSWORD holds characters that cannot go into an HTTP header"
    )]
    BadCredentials,
    /// TLS or other setup failure.
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
}

/// The Verigator client. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    /// The last service's users URL: a run creates every user under the same one, and building
    /// it (percent-encoding each segment) is a measurable share of a request's cost.
    users: std::sync::Mutex<Option<(String, Url)>>,
    max_attempts: u32,
    throttle: Arc<Throttle>,
    stop: Stop,
}

impl Client {
    /// Builds a client: one keep-alive connection per concurrency slot, explicit timeouts, no
    /// redirects (a redirected POST would silently turn into a GET).
    pub fn new(options: &ClientOptions, stop: Stop) -> Result<Client, ClientError> {
        let mut auth = HeaderValue::from_str(&format!(
            "{}:{}",
            options.credentials.username,
            options.credentials.password.expose()
        ))
        .map_err(|_| ClientError::BadCredentials)?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTH_HEADER, auth);
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("verigator-sync/", env!("CARGO_PKG_VERSION")))
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(options.concurrency.get())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientError::Setup(describe(&e)))?;
        Ok(Client {
            http,
            base: options.base_url.clone(),
            users: std::sync::Mutex::new(None),
            max_attempts: options.max_attempts.get(),
            throttle: Arc::new(Throttle::new(options.rate, options.burst)),
            stop,
        })
    }

    /// `{base}/v1/service/service/{sid}/users[/{uid}]`, each id percent-encoded as one segment.
    fn users_url(&self, service_id: &str, user_id: Option<&str>) -> Result<Url, String> {
        let mut last = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let url = match &*last {
            Some((service, url)) if service == service_id => url.clone(),
            _ => {
                let url = self.build_url(service_id)?;
                *last = Some((service_id.to_string(), url.clone()));
                url
            }
        };
        drop(last);
        match user_id {
            None => Ok(url),
            Some(user_id) => {
                let mut url = url;
                url.path_segments_mut()
                    .map_err(|()| format!("{} cannot take a path", self.base))?
                    .push(user_id);
                Ok(url)
            }
        }
    }

    fn build_url(&self, service_id: &str) -> Result<Url, String> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| format!("{} cannot take a path", self.base))?
            .pop_if_empty()
            .extend(["v1", "service", "service", service_id, "users"]);
        Ok(url)
    }

    /// Registers one user, retrying transient failures.
    pub async fn create_user(&self, service_id: &str, user: &User) -> Attempted<Created> {
        let body = CreateBody {
            id_in_service: &user.id_in_service,
            phone_number: &user.phone_number,
        };
        let body = match serde_json::to_vec(&body) {
            Ok(b) => bytes::Bytes::from(b),
            Err(e) => {
                return Attempted {
                    result: Retried::GaveUp(e.to_string()),
                    attempts: 0,
                };
            }
        };
        let url = self.users_url(service_id, None);
        self.with_retries(Method::POST, url, Some(body), |status, wait, body| {
            classify_create(status, wait, body, service_id)
        })
        .await
    }

    /// Lists a service's users (to resolve the UserIDs of 409s), retrying transient failures.
    pub async fn list_users(&self, service_id: &str) -> Attempted<Result<UserList, ListError>> {
        let url = self.users_url(service_id, None);
        self.with_retries(Method::GET, url, None, |status, wait, body| {
            classify_list(status, wait, body, service_id)
        })
        .await
    }

    /// Deletes a user (to replace it with a new phone), retrying transient failures.
    pub async fn delete_user(&self, service_id: &str, user_id: &str) -> Attempted<Deleted> {
        let url = self.users_url(service_id, Some(user_id));
        self.with_retries(Method::DELETE, url, None, |status, wait, body| {
            classify_delete(status, wait, body, service_id)
        })
        .await
    }

    async fn with_retries<T>(
        &self,
        method: Method,
        url: Result<Url, String>,
        body: Option<bytes::Bytes>,
        classify: impl Fn(StatusCode, Option<Duration>, &[u8]) -> Step<T>,
    ) -> Attempted<T> {
        let url = match url {
            Ok(url) => url,
            Err(e) => {
                return Attempted {
                    result: Retried::GaveUp(e),
                    attempts: 0,
                };
            }
        };
        let mut attempts = 0;
        let mut last_reason = None;
        loop {
            tokio::select! {
                biased;
                () = self.stop.wait() => return Attempted { result: Retried::Stopped(last_reason), attempts },
                () = self.throttle.acquire() => {}
            }
            attempts += 1;
            let exchange = self
                .exchange(method.clone(), url.clone(), body.clone())
                .await;
            let step = match exchange {
                Exchange::Transport(reason) => Step::Again {
                    reason,
                    floor: None,
                    pause_all: false,
                },
                Exchange::Answer {
                    status,
                    retry_after,
                    body,
                } => classify(status, retry_after, &body),
            };
            let (reason, floor, pause_all) = match step {
                Step::Done(t) => {
                    return Attempted {
                        result: Retried::Done(t),
                        attempts,
                    };
                }
                Step::Later(reason) => {
                    return Attempted {
                        result: Retried::GaveUp(reason),
                        attempts,
                    };
                }
                Step::Again {
                    reason,
                    floor,
                    pause_all,
                } => (reason, floor, pause_all),
            };
            let wait = backoff(attempts, &mut rand::rng()).max(floor.unwrap_or_default());
            if pause_all {
                self.throttle.pause_all(wait);
            }
            if attempts >= self.max_attempts {
                return Attempted {
                    result: Retried::GaveUp(format!("{reason} (after {attempts} attempts)")),
                    attempts,
                };
            }
            last_reason = Some(reason);
            tokio::select! {
                biased;
                () = self.stop.wait() => return Attempted { result: Retried::Stopped(last_reason), attempts },
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn exchange(&self, method: Method, url: Url, body: Option<bytes::Bytes>) -> Exchange {
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Exchange::Transport(describe(&e)),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        match response.bytes().await {
            Ok(body) => Exchange::Answer {
                status,
                retry_after,
                body,
            },
            Err(e) => Exchange::Transport(format!(
                "{status} but the body was cut off: {}",
                describe(&e)
            )),
        }
    }
}

/// Describes a transport error without its URL (which is not secret, but noisy) and with its causes.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "broken answer"
    } else {
        "request failed"
    };
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !causes.contains(&text) {
            causes.push(text);
        }
        source = s.source();
    }
    if causes.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {}", causes.join(": "))
    }
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(3600)));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
            .min(Duration::from_secs(3600)),
    )
}

/// The server's `message`, or else the raw body, shortened: the reason kept for a refused row.
pub fn reason(status: StatusCode, body: &[u8]) -> String {
    let message = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .and_then(|b| b.message)
        .map(|m| match m {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        });
    let text = message.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    let text: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REASON_CHARS)
        .collect();
    if text.is_empty() {
        status.as_u16().to_string()
    } else {
        format!("{}: {text}", status.as_u16())
    }
}

fn transient<T>(status: StatusCode, body: &[u8], retry_after: Option<Duration>) -> Step<T> {
    Step::Again {
        reason: reason(status, body),
        floor: retry_after,
        pause_all: status == StatusCode::TOO_MANY_REQUESTS,
    }
}

/// Classifies one answer to a create.
pub fn classify_create(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
    service_id: &str,
) -> Step<Created> {
    match status.as_u16() {
        200..=299 => {
            let parsed = serde_json::from_slice::<CreatedBody>(body).ok();
            let (id, ctime) = parsed.map_or((None, None), |b| (b.id, b.ctime));
            Step::Done(Created::New {
                user_id: id.filter(|id| !id.is_empty()),
                // Opaque: a string as it is, anything else as its JSON text.
                ctime: ctime.map(|c| match c {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                }),
            })
        }
        409 => Step::Done(Created::Exists),
        401 => Step::Done(Created::Fatal(Fatal::Unauthorized)),
        403 => Step::Done(Created::Fatal(Fatal::Forbidden(service_id.to_string()))),
        404 => Step::Done(Created::Fatal(Fatal::ServiceNotFound(
            service_id.to_string(),
        ))),
        429 | 500..=599 => transient(status, body, retry_after),
        400..=499 => Step::Done(Created::Rejected(reason(status, body))),
        _ => Step::Later(format!("unexpected answer {}", reason(status, body))),
    }
}

/// The final answer to deleting a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deleted {
    /// 2xx (the docs say 202).
    Gone,
    /// 404: not there (deleted before, or by an interrupted earlier replacement).
    AlreadyGone,
    /// Another 4xx.
    Refused(String),
    /// The run must stop.
    Fatal(Fatal),
}

/// Classifies one answer to a delete.
pub fn classify_delete(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
    service_id: &str,
) -> Step<Deleted> {
    match status.as_u16() {
        200..=299 => Step::Done(Deleted::Gone),
        404 => Step::Done(Deleted::AlreadyGone),
        401 => Step::Done(Deleted::Fatal(Fatal::Unauthorized)),
        403 => Step::Done(Deleted::Fatal(Fatal::Forbidden(service_id.to_string()))),
        429 | 500..=599 => transient(status, body, retry_after),
        400..=499 => Step::Done(Deleted::Refused(reason(status, body))),
        _ => Step::Later(format!("unexpected answer {}", reason(status, body))),
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
            Err(e) => fail(ListError::Other(format!("unreadable user list: {e}"))),
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

    fn answer(status: u16, body: &str) -> (StatusCode, Option<Duration>, Vec<u8>) {
        (
            StatusCode::from_u16(status).expect("valid status"),
            None,
            body.as_bytes().to_vec(),
        )
    }

    fn create((status, wait, body): (StatusCode, Option<Duration>, Vec<u8>)) -> Step<Created> {
        classify_create(status, wait, &body, "s")
    }

    #[test]
    fn any_2xx_is_created() {
        for status in [200, 201, 202] {
            assert_eq!(
                create(answer(
                    status,
                    r#"{"id":"u1","ctime":"t","id_in_service":"a"}"#
                )),
                Step::Done(Created::New {
                    user_id: Some("u1".into()),
                    ctime: Some("t".into())
                })
            );
        }
        assert_eq!(
            create(answer(201, "not json")),
            Step::Done(Created::New {
                user_id: None,
                ctime: None
            })
        );
        // An escaped id is unescaped; a ctime that is not a string is kept as its JSON text.
        assert_eq!(
            create(answer(201, r#"{"id":"u\u0031","ctime":1700000000}"#)),
            Step::Done(Created::New {
                user_id: Some("u1".into()),
                ctime: Some("1700000000".into())
            })
        );
        assert_eq!(
            create(answer(201, r#"{"id":"","ctime":"t\"z"}"#)),
            Step::Done(Created::New {
                user_id: None,
                ctime: Some("t\"z".into())
            })
        );
    }

    #[test]
    fn permanent_and_fatal_answers_are_not_retried() {
        assert_eq!(create(answer(409, "{}")), Step::Done(Created::Exists));
        assert_eq!(
            create(answer(422, r#"{"message":"Invalid phone"}"#)),
            Step::Done(Created::Rejected("422: Invalid phone".into()))
        );
        assert_eq!(
            create(answer(400, "bad things")),
            Step::Done(Created::Rejected("400: bad things".into()))
        );
        assert_eq!(
            create(answer(418, "")),
            Step::Done(Created::Rejected("418".into()))
        );
        assert_eq!(
            create(answer(401, "")),
            Step::Done(Created::Fatal(Fatal::Unauthorized))
        );
        assert_eq!(
            create(answer(403, "")),
            Step::Done(Created::Fatal(Fatal::Forbidden("s".into())))
        );
        assert_eq!(
            create(answer(404, "")),
            Step::Done(Created::Fatal(Fatal::ServiceNotFound("s".into())))
        );
        assert!(matches!(create(answer(302, "")), Step::Later(_)));
    }

    #[test]
    fn throttling_and_server_errors_are_retried() {
        let Step::Again { pause_all, .. } = create(answer(429, "")) else {
            panic!("429 is retried")
        };
        assert!(pause_all, "a 429 pauses everyone");
        for status in [500, 502, 503, 504] {
            assert!(
                matches!(
                    create(answer(status, "")),
                    Step::Again {
                        pause_all: false,
                        ..
                    }
                ),
                "{status}"
            );
        }
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        let wait = parse_retry_after(&httpdate::fmt_http_date(later)).expect("date");
        assert!(
            wait > Duration::from_secs(100) && wait <= Duration::from_secs(120),
            "{wait:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn reasons_prefer_the_message_and_stay_short() {
        assert_eq!(
            reason(StatusCode::UNPROCESSABLE_ENTITY, br#"{"message":"nope"}"#),
            "422: nope"
        );
        let long = "x".repeat(5000);
        assert_eq!(
            reason(StatusCode::BAD_REQUEST, long.as_bytes()).len(),
            5 + MAX_REASON_CHARS
        );
    }

    #[test]
    fn list_accepts_total_or_count() {
        let body = br#"{"users":[{"id":"u","id_in_service":"a","ctime":"t"}],"count":1}"#;
        let Step::Done(Ok(list)) = classify_list(StatusCode::OK, None, body, "s") else {
            panic!("parsed")
        };
        assert_eq!((list.users.len(), list.total), (1, Some(1)));
    }
}
