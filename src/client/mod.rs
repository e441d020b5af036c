//! The Verigator HTTP client: one `Client` shared by every request, the URLs it builds, and the
//! three calls the import needs (create, list, delete). Knows nothing of CSV or the ledger.
//! Credentials go only into the `X-Service-Auth` header, which is marked sensitive; error texts
//! never include them.
//!
//! - `retry.rs`: the retry loop, paced by the shared [`Throttle`].
//! - `answers.rs`: what an answer means (classification, reasons, Retry-After).
//! - `wire.rs`: the request and answer bodies.
//! - `list/`: the service's user list, streamed.

mod answers;
mod list;
mod outage;
mod redact;
mod refused;
mod retry;
mod trust;
mod window;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use thiserror::Error;
use url::Url;

use crate::config::ClientOptions;
use crate::throttle::{Stop, Throttle};
use crate::user::User;
use answers::{classify_create, classify_delete};
use retry::Buffered;
use wire::CreateBody;

pub use answers::{Created, Deleted, Fatal, Step, parse_retry_after, reason};
pub use list::{ListError, ListSink, Listed, MAX_ENTRY_BYTES};
pub use retry::{Attempted, Retried};
pub use trust::TrustError;
pub use window::{AUTO_FLOOR, Concurrency, Window};
pub use wire::{ListedUser, MAX_USER_ID_BYTES, is_valid_user_id, plausible_ctime};

/// The header that carries `<username>:<password>` on every request.
pub const AUTH_HEADER: &str = "x-service-auth";

/// A problem building the client.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The credentials cannot go into a header.
    #[error(
        "VERIGATOR_USERNAME or VERIGATOR_PASSWORD holds characters that cannot go into an HTTP header"
    )]
    BadCredentials,
    /// The trusted certificates cannot be loaded.
    #[error(transparent)]
    Trust(#[from] TrustError),
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
    /// `--timeout`: a streamed list must make progress in windows at least this long.
    timeout: Duration,
    throttle: Arc<Throttle>,
    health: outage::Health,
    /// How many requests may be in flight.
    window: Window,
    /// The credentials, to take out of anything the server says back.
    secrets: redact::Secrets,
    /// Requests sent so far, retries included (for the progress display's rate).
    sent: std::sync::atomic::AtomicU64,
    /// Where the trusted certificates came from, for `-v`.
    trusted: Vec<String>,
    /// Who a refused certificate belongs to, for the message.
    peer: refused::Peer,
    stop: Stop,
}

impl Client {
    /// Builds a client: one keep-alive connection per concurrency slot, explicit timeouts, no
    /// redirects (a redirected POST would silently turn into a GET).
    pub fn new(options: &ClientOptions, stop: Stop) -> Result<Client, ClientError> {
        let (http, trusted) = http_client(options)?;
        let peer = refused::Peer {
            host: options.base_url.host_str().unwrap_or_default().to_string(),
            proxy: options
                .proxy
                .as_ref()
                .filter(|p| p.expose().starts_with("https:"))
                .map(ToString::to_string),
        };
        Ok(Client {
            http,
            base: options.base_url.clone(),
            users: std::sync::Mutex::new(None),
            max_attempts: options.max_attempts.get(),
            timeout: options.timeout,
            throttle: Arc::new(Throttle::new(options.rate, options.burst)),
            health: outage::Health::new(options.outage_timeout, options.concurrency.most()),
            window: Window::new(options.concurrency, options.rate),
            sent: std::sync::atomic::AtomicU64::new(0),
            trusted,
            peer,
            secrets: redact::Secrets::new(
                &options.credentials.username,
                options.credentials.password.expose(),
            ),
            stop,
        })
    }

    /// How many requests may be in flight now, and what the API's latency is.
    pub fn window(&self) -> &Window {
        &self.window
    }

    /// Where the trusted certificates came from, one line per source (counts, no contents).
    pub fn trusted(&self) -> &[String] {
        &self.trusted
    }

    /// Requests sent so far, retries included.
    pub fn requests_sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Why the client stopped the run for an outage (`--outage-timeout`), once it did.
    pub fn outage(&self) -> Option<&str> {
        self.health.down()
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
            // `..` as a path segment would address the collection: never build such a URL.
            Some(user_id) if !is_valid_user_id(user_id) => Err(format!(
                "the UserID {:?} is malformed; it is not put into a URL",
                crate::user::escape(&user_id.chars().take(64).collect::<String>())
            )),
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
        let answer =
            Buffered(|status, wait, body: &[u8]| classify_create(status, wait, body, service_id));
        self.with_retries(Method::POST, url, Some(body), answer)
            .await
    }

    /// Deletes a user (to replace it with a new phone), retrying transient failures.
    pub async fn delete_user(&self, service_id: &str, user_id: &str) -> Attempted<Deleted> {
        let url = self.users_url(service_id, Some(user_id));
        let answer =
            Buffered(|status, wait, body: &[u8]| classify_delete(status, wait, body, service_id));
        self.with_retries(Method::DELETE, url, None, answer).await
    }
}

/// The HTTP client with its headers, timeouts, proxy and trust; and where the trust came from.
fn http_client(options: &ClientOptions) -> Result<(reqwest::Client, Vec<String>), ClientError> {
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
        // Also between reads: the user list, which may stream for longer than `timeout`, is
        // bounded by this instead (see `retry::Answer::STREAMED`).
        .read_timeout(options.timeout)
        .connect_timeout(options.timeout.min(Duration::from_secs(10)))
        .pool_max_idle_per_host(options.concurrency.most())
        .redirect(reqwest::redirect::Policy::none());
    // The proxy was decided by the config; nothing here reads the environment.
    let http = match &options.proxy {
        None => http.no_proxy(),
        Some(proxy) => http.proxy(
            reqwest::Proxy::https(proxy.expose())
                .map_err(|_| ClientError::Setup(format!("proxy {proxy} is not usable")))?,
        ),
    };
    // Plain http (the simulator on loopback) needs no trust: nothing is loaded or refused.
    let (http, trusted) = if options.base_url.scheme() == "https" {
        let trust = trust::load(&options.trust)?;
        (http.use_preconfigured_tls(trust.config), trust.sources)
    } else {
        (http, vec!["not used: the API is plain http".to_string()])
    };
    let http = http.build().map_err(|e| ClientError::Setup(describe(&e)))?;
    Ok((http, trusted))
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
