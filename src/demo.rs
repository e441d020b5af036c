//! `demo`: the whole job on built-in defaults. Starts the simulator in-process on an ephemeral
//! loopback port, imports the embedded sample into a fresh ledger in a temporary directory, then
//! imports it again to show that a rerun sends nothing, and shows a few exported UserIDs.

use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use crate::commands::{Error, print_summary, runtime};
use crate::config::{ClientOptions, Credentials, ImportConfig, InputOptions, Secret, Source};
use crate::import;
use crate::ledger::Ledger;
use crate::report;
use crate::simulator::{SeedUser, SimConfig, Simulator};

/// Prints a line on stderr; a reader that went away (`demo | head`) does not stop the demo.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// The sample users, embedded so the demo works from any directory.
pub const SAMPLE: &str = include_str!("../samples/users.csv");
/// The demo's service id (any id works with the simulator).
const SERVICE_ID: &str = "81213bfd-b690-499e-b9d2-8754cb1550e8";
/// Sample users that already exist at the simulator, so the demo shows 409s being resolved.
const ALREADY_THERE: usize = 5;
/// Fast enough to finish in seconds, slow enough to watch.
const DEMO_RATE: f64 = 60.0;

/// Runs the demo; the exit code is the second run's.
pub fn run() -> Result<u8, Error> {
    runtime()?.block_on(demo())
}

async fn demo() -> Result<u8, Error> {
    let seed = existing_users();
    let sim = Simulator::start(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        SimConfig {
            seed,
            ..SimConfig::default()
        },
    )
    .await
    .map_err(Error::io("cannot start the simulator"))?;
    let dir = tempfile::tempdir().map_err(Error::io("cannot create a temporary directory"))?;
    let csv = dir.path().join("users.csv");
    std::fs::write(&csv, SAMPLE).map_err(Error::io("cannot write the sample"))?;
    let config = demo_config(csv, dir.path().join("verigator-sync.db"), &sim)?;
    say!(
        "demo: a simulated Verigator listens on {}; {ALREADY_THERE} of the sample's users exist there already.",
        sim.base_url()
    );
    say!("demo: importing samples/users.csv at {DEMO_RATE} requests/s into a fresh ledger…");
    let first = import::run(&config).await?;
    print_summary(&first, false)?;
    say!("\ndemo: the same import again: everything is in the ledger, so nothing is sent.");
    let second = import::run(&config).await?;
    print_summary(&second, false)?;
    say!(
        "\ndemo: `verigator-sync export` gives every UserID for your own database; the first rows:"
    );
    let ledger = Ledger::open_read_only(&config.ledger)?;
    let mut out = Vec::new();
    report::export(&ledger, None, &[], crate::cli::ExportFormat::Csv, &mut out)?;
    for line in String::from_utf8_lossy(&out).lines().take(6) {
        say!("  {line}");
    }
    // Checked, not claimed: every user the simulator holds, matched by its UserID in the export.
    let exported: std::collections::HashMap<String, String> = csv::Reader::from_reader(&out[..])
        .records()
        .filter_map(Result::ok)
        .filter_map(|r| Some((r.get(1)?.to_string(), r.get(3)?.to_string())))
        .collect();
    let remote = sim.users(SERVICE_ID);
    let matched = remote
        .iter()
        .filter(|u| exported.get(&u.id_in_service) == Some(&u.id))
        .count();
    say!(
        "demo: {matched} of the simulator's {} users have their UserID in the ledger.",
        remote.len()
    );
    sim.shutdown().await;
    Ok(if matched == remote.len() {
        second.exit_code()
    } else {
        crate::exit::INCOMPLETE
    })
}

/// The import's options: the sample into a fresh ledger, against the simulator, at [`DEMO_RATE`].
fn demo_config(
    csv: std::path::PathBuf,
    ledger: std::path::PathBuf,
    sim: &Simulator,
) -> Result<ImportConfig, Error> {
    Ok(ImportConfig {
        source: Source::File(csv),
        input: InputOptions::default(),
        service_id: SERVICE_ID.to_string(),
        ledger,
        client: ClientOptions {
            base_url: crate::config::base_url(&sim.base_url())?,
            credentials: Credentials {
                username: "demo".into(),
                password: Secret::new("demo"),
            },
            concurrency: crate::client::Concurrency::Auto { ceiling: 256 },
            rate: Some(DEMO_RATE),
            burst: NonZeroU32::MIN,
            max_attempts: NonZeroU32::new(6).unwrap_or(NonZeroU32::MIN),
            timeout: Duration::from_secs(30),
            outage_timeout: crate::config::DEFAULT_OUTAGE_TIMEOUT,
            proxy: None,
            trust: crate::config::TrustOptions::default(),
        },
        json: false,
        progress: true,
        progress_interval: crate::report::progress::LINE_EVERY,
        mode: crate::config::Mode::default(),
        report: None,
        metrics_file: None,
        verbosity: crate::config::Verbosity::Normal,
    })
}

/// The first few sample users, as seeds for the simulator.
fn existing_users() -> Vec<SeedUser> {
    let mut reader = csv::Reader::from_reader(SAMPLE.as_bytes());
    reader
        .records()
        .filter_map(Result::ok)
        .filter_map(|r| {
            let phone = crate::phone::normalize(r.get(1)?, None).ok()?;
            Some(SeedUser {
                service_id: None,
                id_in_service: r.get(0)?.to_string(),
                phone_number: phone,
                user_id: None,
            })
        })
        .step_by(37)
        .take(ALREADY_THERE)
        .collect()
}
