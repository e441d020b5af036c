//! What an answer means: the classification of create and delete answers into final results,
//! retries and fatal stops, the reason kept for a refused row, and `Retry-After`.

use std::time::Duration;

use reqwest::StatusCode;
use thiserror::Error;

use super::wire::{CreatedBody, ErrorBody, is_valid_user_id, plausible_ctime};

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
    /// The server's TLS certificate is not trusted: no retry can change that.
    #[error("the TLS certificate of {host} was refused: {problem}; {advice}")]
    Certificate {
        /// The host the request went to.
        host: String,
        /// What is wrong with the certificate.
        problem: String,
        /// What to do.
        advice: &'static str,
    },
    /// The TLS handshake failed for another reason (no TLS on that port, no protocol in
    /// common, a client certificate asked for): no retry can change that either.
    #[error(
        "the TLS handshake with {host} failed: {problem}; check --base-url (https:// and the port) and the proxy"
    )]
    Handshake {
        /// The host the request went to.
        host: String,
        /// What failed.
        problem: String,
    },
}

/// A final result that stops the run, for the answers of every call.
pub(super) trait Stops {
    /// The result that carries `fatal`.
    fn stops(fatal: Fatal) -> Self;
}

impl Stops for Created {
    fn stops(fatal: Fatal) -> Self {
        Created::Fatal(fatal)
    }
}

impl Stops for Deleted {
    fn stops(fatal: Fatal) -> Self {
        Deleted::Fatal(fatal)
    }
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
        .filter(|&c| !crate::user::is_unprintable(c))
        .take(MAX_REASON_CHARS)
        .collect();
    if text.is_empty() {
        status.as_u16().to_string()
    } else {
        format!("{}: {text}", status.as_u16())
    }
}

pub(super) fn transient<T>(
    status: StatusCode,
    body: &[u8],
    retry_after: Option<Duration>,
) -> Step<T> {
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
            // A malformed UserID is not stored: the row is then like a 409, resolved (or left
            // unresolved, with the reason) from the user list.
            Step::Done(Created::New {
                user_id: id.filter(|id| is_valid_user_id(id)),
                ctime: ctime.as_ref().and_then(plausible_ctime),
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
                    r#"{"id":"u1","ctime":"2017-09-15T08:13:26.965341","id_in_service":"a"}"#
                )),
                Step::Done(Created::New {
                    user_id: Some("u1".into()),
                    ctime: Some("2017-09-15T08:13:26.965341".into())
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
        // A UserID that could not be stored or put into a path, and a ctime that is no time, are
        // dropped.
        for body in [
            r#"{"id":"","ctime":"t\"z"}"#,
            r#"{"id":"..","ctime":"\u001b[2J"}"#,
            r#"{"id":"a/../b"}"#,
        ] {
            assert_eq!(
                create(answer(201, body)),
                Step::Done(Created::New {
                    user_id: None,
                    ctime: None
                }),
                "{body}"
            );
        }
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
}
