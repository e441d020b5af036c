//! An in-memory Verigator for tests, demos and benchmarks: the user routes of the real API
//! (create, list, get, delete) with its shapes and status codes, plus fault knobs (503s, dropped
//! connections, 429s, latency, rejected phones, pre-existing users). It owns no real service:
//! the service routes and the authentication flow of the API are not simulated.
//!
//! - `state`: services, users, create attempts, counters, the rate window.
//! - `routes`: the axum router and handlers (authentication, validation, faults).
//! - `list`: the user list, streamed a chunk of users at a time.
//! - `server`: the accept loop and hyper connections (needed to drop a connection unanswered).
//! - `seed`: seed users and their CSV loader.

mod create;
mod list;
mod rate;
mod routes;
mod seed;
mod server;
mod state;
mod tls;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use seed::{SeedError, SeedUser, load_seed};
pub use tls::SimTls;

use rate::RateWindow;
use routes::App;
use state::{Counters, Services, Store};

/// How the simulator behaves; the defaults are a well-behaved server, every fault knob off.
#[derive(Clone)]
pub struct SimConfig {
    /// The API username clients must send in `X-Service-Auth`.
    pub username: String,
    /// The API password clients must send in `X-Service-Auth`.
    pub password: String,
    /// Success status of a create: 201 as documented, or 200 as the Java client expects.
    pub create_status: u16,
    /// When set, only these services exist and any other answers 404; otherwise every service
    /// id is accepted and created on first use.
    pub service_ids: Option<Vec<String>>,
    /// Probability that a valid create answers 503 without creating anything.
    pub fail_rate: f64,
    /// Probability that a valid create drops the connection unanswered; in half of those the
    /// user is created first, so a retry meets 409 as it would after a lost answer.
    pub reset_rate: f64,
    /// Most create/list/get/delete requests per fixed one-second window (all clients together)
    /// before answering 429 with `Retry-After: 1`.
    pub rate_limit: Option<u32>,
    /// Delay added to every answer, to make concurrency matter.
    pub latency: Duration,
    /// Creates whose phone number matches answer 422, like a server-side validation rule.
    pub reject_phone: Option<regex::Regex>,
    /// Users that exist before any request, so importers meet 409s.
    pub seed: Vec<SeedUser>,
    /// The user list holds at most this many users, while its `total` stays the true count (a
    /// truncated list, as a server that pages silently would give).
    pub list_cap: Option<usize>,
    /// These ids appear twice in the user list, the second time with another UserID.
    pub list_repeat: Vec<String>,
    /// Every user route answers 503, as an API that is down (see [`Simulator::set_outage`]).
    pub outage: bool,
    /// Serve HTTPS with this certificate instead of plain HTTP.
    pub tls: Option<SimTls>,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            username: "demo".to_owned(),
            password: "demo".to_owned(),
            create_status: 201,
            service_ids: None,
            fail_rate: 0.0,
            reset_rate: 0.0,
            rate_limit: None,
            latency: Duration::ZERO,
            reject_phone: None,
            seed: Vec::new(),
            list_cap: None,
            list_repeat: Vec::new(),
            outage: false,
            tls: None,
        }
    }
}

impl std::fmt::Debug for SimConfig {
    /// Hides the password: configs end up in logs and test failure output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("username", &self.username)
            .field("password", &"***")
            .field("create_status", &self.create_status)
            .field("service_ids", &self.service_ids)
            .field("fail_rate", &self.fail_rate)
            .field("reset_rate", &self.reset_rate)
            .field("rate_limit", &self.rate_limit)
            .field("latency", &self.latency)
            .field("reject_phone", &self.reject_phone)
            .field("seed", &self.seed.len())
            .field("list_cap", &self.list_cap)
            .field("list_repeat", &self.list_repeat)
            .field("outage", &self.outage)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// A user as the simulator stores it, phone number included, so tests can check what was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimUser {
    /// The Verigator UserID (UUID v4) the API returned.
    pub id: String,
    /// The client's key for the user.
    pub id_in_service: String,
    /// As sent by the client; never returned over the API.
    pub phone_number: String,
    /// Creation time as the API shows it (naive UTC, microseconds).
    pub ctime: String,
}

/// What the simulator has seen, so tests can assert on the server side, not only on output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Every create request received, whatever its answer.
    pub create_requests: u64,
    /// Users created over the API (including those whose answer was lost to a reset).
    pub created: u64,
    /// Creates answered 409.
    pub conflicts: u64,
    /// Creates answered 422 (bad body or rejected phone).
    pub rejected: u64,
    /// Creates answered 503 by `fail_rate`.
    pub failures: u64,
    /// Creates whose connection was dropped by `reset_rate`.
    pub resets: u64,
    /// Requests answered 429 by `rate_limit`.
    pub throttled: u64,
    /// Requests answered 401.
    pub unauthorized: u64,
    /// Every list request received.
    pub list_requests: u64,
    /// Every get request received.
    pub get_requests: u64,
    /// Every delete request received.
    pub delete_requests: u64,
    /// Users deleted over the API.
    pub deleted: u64,
}

/// A running simulator; dropping it stops accepting too, but [`Simulator::shutdown`] also waits.
pub struct Simulator {
    addr: SocketAddr,
    /// Whether it serves HTTPS.
    https: bool,
    app: Arc<App>,
    /// Requests being answered now (their latency included).
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Simulator {
    /// Binds `listen` (use 127.0.0.1:0 for an ephemeral port) and serves on a task of the current tokio runtime.
    ///
    /// Fails with `InvalidInput` for a config the simulator cannot honour (rates outside 0..=1,
    /// a create status other than 200/201, seed users for unlisted services).
    pub async fn start(listen: SocketAddr, config: SimConfig) -> std::io::Result<Simulator> {
        let app = Arc::new(build_app(config)?);
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (shutdown, stop) = watch::channel(false);
        let router = routes::router(Arc::clone(&app));
        let latency = app.latency;
        let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tls = app.tls.clone();
        let task = tokio::spawn(server::serve(
            listener,
            (router, tls.clone()),
            (latency, Arc::clone(&in_flight)),
            stop,
        ));
        Ok(Simulator {
            addr,
            https: tls.is_some(),
            app,
            in_flight,
            shutdown,
            task,
        })
    }

    /// How many requests are being answered now: what a client keeps in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The bound address, with the real port when `listen` asked for port 0.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to give a client, e.g. `http://127.0.0.1:PORT` (`https` with TLS); an unspecified listen address
    /// (0.0.0.0 or ::) becomes loopback so the URL is connectable.
    pub fn base_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// The live users of a service in creation order (empty for a service that cannot exist).
    pub fn users(&self, service_id: &str) -> Vec<SimUser> {
        self.app.store.lock().users(service_id)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SimStats {
        self.app.stats.snapshot()
    }

    /// How many create requests named this user (whatever the answer): tests use it to prove nothing was sent twice.
    ///
    /// Counts every create whose body named `id_in_service` in an existing service, including
    /// those answered 401, 422, 429, 503 or reset; a body that does not name it is not counted.
    pub fn create_attempts(&self, service_id: &str, id_in_service: &str) -> u64 {
        self.app
            .store
            .lock()
            .service(service_id)
            .map_or(0, |service| service.attempts(id_in_service))
    }

    /// Inserts a user directly (as if created by another client), returning its UserID.
    ///
    /// An existing `id_in_service` is left alone and its UserID returned; the service is
    /// created if needed, even outside `service_ids`.
    pub fn insert_user(&self, service_id: &str, id_in_service: &str, phone_number: &str) -> String {
        let mut services = self.app.store.lock();
        let service = services.service_forced(service_id);
        if let Some(existing) = service.find(id_in_service) {
            return existing.id.to_string();
        }
        let user = state::StoredUser::new(id_in_service.to_owned(), phone_number.to_owned());
        let id = user.id.to_string();
        // The name was just checked to be free and the lock is held, so this cannot conflict.
        let _ = service.insert(user);
        id
    }

    /// Removes a user directly (as if deleted elsewhere).
    pub fn remove_user(&self, service_id: &str, user_id: &str) -> bool {
        self.app
            .store
            .lock()
            .service(service_id)
            .is_some_and(|service| {
                service
                    .key_of(user_id)
                    .is_some_and(|id| service.remove(&id))
            })
    }

    /// Starts or ends an outage: while it lasts every user route answers 503.
    pub fn set_outage(&self, down: bool) {
        self.app
            .outage
            .store(down, std::sync::atomic::Ordering::Relaxed);
    }

    /// Stops accepting and waits for the accept loop; open connections finish their in-flight
    /// request and then close.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// Validates the config and turns it into the handlers' shared state.
fn build_app(config: SimConfig) -> std::io::Result<App> {
    let invalid = |message: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, message);
    let create_status = match config.create_status {
        200 => StatusCode::OK,
        201 => StatusCode::CREATED,
        other => {
            return Err(invalid(format!(
                "create_status must be 200 or 201, not {other}"
            )));
        }
    };
    for (name, rate) in [
        ("fail_rate", config.fail_rate),
        ("reset_rate", config.reset_rate),
    ] {
        if !(0.0..=1.0).contains(&rate) {
            return Err(invalid(format!(
                "{name} must be between 0 and 1, not {rate}"
            )));
        }
    }
    let services = Services::new(config.service_ids.as_deref(), &config.seed).map_err(invalid)?;
    Ok(App {
        store: Store::new(services),
        stats: Counters::default(),
        rate: config.rate_limit.map(RateWindow::new),
        username: config.username,
        password: config.password,
        create_status,
        fail_rate: config.fail_rate,
        reset_rate: config.reset_rate,
        reject_phone: config.reject_phone,
        latency: config.latency,
        list_cap: config.list_cap,
        list_repeat: config.list_repeat,
        outage: std::sync::atomic::AtomicBool::new(config.outage),
        tls: config.tls,
    })
}

/// Runs the simulator for the `simulate` subcommand: prints `listening on http://ADDR` as the first line of stdout (flush it!), then serves until SIGINT/SIGTERM (tokio::signal) and returns.
pub async fn run(listen: SocketAddr, config: SimConfig) -> std::io::Result<()> {
    use std::io::Write as _;

    let simulator = Simulator::start(listen, config).await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {}", simulator.base_url())?;
    stdout.flush()?;
    drop(stdout);
    wait_for_signal().await?;
    simulator.shutdown().await;
    Ok(())
}

/// Waits for Ctrl-C or, on Unix, SIGTERM (what `kill` and service managers send).
async fn wait_for_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = terminate.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
