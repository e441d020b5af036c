//! Issue 13's lines: real exports at real scale. Ids in random order (1M rows, against the same
//! count in sort order), a service that already holds 1M users (2,000 rows resolved through its
//! list, and `reconcile`), ten million rows (import, no-op rerun, dry run), and the simulator
//! loading a seed of 1M users.

use std::fs;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use verigator_sync::simulator::{SeedUser, SimConfig};

use super::*;

type Row = (String, String, String, bool);

/// An id in random order relative to its sort order, as hashed emails are (splitmix64).
fn random_id(i: usize) -> String {
    let mut z = (i as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    format!("{:016x}@example.com", z ^ (z >> 31))
}

fn random_csv(dir: &Path, rows: usize) -> PathBuf {
    write_csv(dir.join(format!("random-{rows}.csv")), rows, random_id)
}

fn fresh(ledger: &Path) {
    for ext in ["", "-wal", "-shm"] {
        let _ = fs::remove_file(format!("{}{ext}", ledger.display()));
    }
}

const FULL: [&str; 4] = ["--rate", "0", "--concurrency", "64"];

/// Every line of issue 13, measured; `sorted_rate` is the 1M sorted import's rows/s of this run.
pub fn rows(rt: &tokio::runtime::Runtime, data: &Path, sorted_rate: f64) -> Vec<Row> {
    let mut rows = random_order(rt, data, sorted_rate);
    rows.extend(large_service(rt, data));
    rows.extend(seed_load(data));
    rows.extend(ten_million(rt, data));
    rows
}

fn random_order(rt: &tokio::runtime::Runtime, data: &Path, sorted_rate: f64) -> Vec<Row> {
    eprintln!("bench: 1,000,000 rows with ids in random order, {RUNS} imports and {RUNS} reruns");
    let csv = random_csv(data, 1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("l.db");
    let imports: Vec<Measured> = (0..RUNS)
        .map(|_| {
            with_simulator(rt, SimConfig::default(), |sim| {
                fresh(&ledger);
                let m = import(sim, &csv, &ledger, &FULL);
                assert_eq!(m.summary["synced"], 1_000_000, "{}", m.summary);
                m
            })
        })
        .collect();
    let reruns: Vec<Measured> = (0..RUNS)
        .map(|_| {
            with_simulator(rt, SimConfig::default(), |sim| {
                let m = import(sim, &csv, &ledger, &[]);
                assert_eq!(m.summary["skipped"], 1_000_000, "{}", m.summary);
                m
            })
        })
        .collect();
    let rate = median(imports.iter().map(|m| 1_000_000.0 / m.wall).collect());
    let rss = median(imports.iter().map(|m| m.rss_mb).collect());
    let ratio = rate / sorted_rate;
    let noop = median(reruns.iter().map(|m| m.wall).collect());
    let noop_rss = median(reruns.iter().map(|m| m.rss_mb).collect());
    vec![
        row(
            "1,000,000 random-order ids: import",
            format!("{rate:.0} rows/s, {rss:.1} MB"),
            format!("≤ {MAX_RANDOM_RSS_MB} MB"),
            rss <= MAX_RANDOM_RSS_MB,
        ),
        row(
            "random-order / sorted import, 1,000,000 rows",
            format!("{ratio:.2} ({sorted_rate:.0} rows/s sorted)"),
            format!("≥ {MIN_RANDOM_VS_SORTED}"),
            ratio >= MIN_RANDOM_VS_SORTED,
        ),
        row(
            "no-op rerun, 1,000,000 random-order ids",
            format!("{noop:.2} s, {noop_rss:.1} MB"),
            format!("≤ {MAX_NOOP_SECONDS} s, ≤ {MAX_NOOP_RSS_MB} MB"),
            noop <= MAX_NOOP_SECONDS && noop_rss <= MAX_NOOP_RSS_MB,
        ),
    ]
}

/// A service holding 1M users; the first `LIST_ROWS` of them are in the CSV.
fn large_service(rt: &tokio::runtime::Runtime, data: &Path) -> Vec<Row> {
    eprintln!(
        "bench: a service of {SERVICE_USERS} users: {LIST_ROWS} rows resolved through its list, then reconcile"
    );
    let seed: Vec<SeedUser> = (0..SERVICE_USERS)
        .map(|i| SeedUser {
            service_id: Some(SERVICE.into()),
            id_in_service: random_id(i),
            phone_number: format!("+3725{:07}", i % 10_000_000),
            user_id: None,
        })
        .collect();
    let csv = write_csv(
        data.join(format!("existing-{LIST_ROWS}.csv")),
        LIST_ROWS,
        random_id,
    );
    let config = SimConfig {
        seed,
        ..SimConfig::default()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("l.db");
    let report = dir.path().join("reconcile.csv");
    let (resolve, reconcile) = with_simulator(rt, config, |sim| {
        let m = import(sim, &csv, &ledger, &FULL);
        assert_eq!(m.summary["present"], LIST_ROWS, "{}", m.summary);
        assert_eq!(m.summary["unresolved"], 0, "{}", m.summary);
        let base = sim.base_url();
        let args: Vec<std::ffi::OsString> = [
            "reconcile",
            "--json",
            "--base-url",
            &base,
            "--service-id",
            SERVICE,
            "--ledger",
        ]
        .iter()
        .map(Into::into)
        .chain([
            ledger.clone().into(),
            "--report".into(),
            report.clone().into(),
        ])
        .collect();
        // Exit 1: the users only at Verigator are disagreements.
        let (wall, rss, out) = measure_exiting(&args, 1);
        let found: serde_json::Value = serde_json::from_slice(&out).expect("reconcile's JSON");
        assert_eq!(found["verigator_users"], SERVICE_USERS, "{found}");
        ((m.wall, m.rss_mb), (wall, rss))
    });
    vec![
        row(
            &format!("{LIST_ROWS} rows resolved through a 1M-user list"),
            format!("{:.2} s, {:.1} MB", resolve.0, resolve.1),
            format!("≤ {MAX_LIST_RSS_MB} MB"),
            resolve.1 <= MAX_LIST_RSS_MB,
        ),
        row(
            "reconcile of a 1M-user service",
            format!("{:.2} s, {:.1} MB", reconcile.0, reconcile.1),
            format!("≤ {MAX_LIST_RSS_MB} MB"),
            reconcile.1 <= MAX_LIST_RSS_MB,
        ),
    ]
}

/// `simulate --seed` of a service of 1M users, until it says where it listens.
fn seed_load(data: &Path) -> Vec<Row> {
    eprintln!("bench: simulate --seed with {SERVICE_USERS} users");
    let path = data.join(format!("seed-{SERVICE_USERS}.csv"));
    if !path.exists() {
        let mut text = String::from("service_id,id_in_service,phone_number\n");
        for i in 0..SERVICE_USERS {
            text.push_str(&format!(
                "{SERVICE},{},+3725{:07}\n",
                random_id(i),
                i % 10_000_000
            ));
        }
        fs::write(&path, text).expect("seed file");
    }
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_verigator-sync"))
        .args(["simulate", "--listen", "127.0.0.1:0", "--seed"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("simulator runs");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("simulator prints its address");
    let seconds = start.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.starts_with("listening on "), "{line:?}");
    vec![row(
        "simulate --seed, 1,000,000 users",
        format!("{seconds:.2} s"),
        format!("≤ {MAX_SEED_SECONDS} s"),
        seconds <= MAX_SEED_SECONDS,
    )]
}

/// Ten million rows, sorted and in random order: import, no-op rerun, and a dry run of them new.
fn ten_million(rt: &tokio::runtime::Runtime, data: &Path) -> Vec<Row> {
    eprintln!("bench: {HUGE_ROWS} rows, sorted and in random order: import, rerun, dry run");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rows = Vec::new();
    for (order, csv, max_noop) in [
        (
            "sorted",
            generate(data, HUGE_ROWS),
            MAX_HUGE_NOOP_SORTED_SECONDS,
        ),
        (
            "random-order",
            random_csv(data, HUGE_ROWS),
            MAX_HUGE_NOOP_RANDOM_SECONDS,
        ),
    ] {
        let ledger = dir.path().join(format!("{order}.db"));
        let (first, rerun) = with_simulator(rt, SimConfig::default(), |sim| {
            let first = import(sim, &csv, &ledger, &FULL);
            assert_eq!(first.summary["synced"], HUGE_ROWS, "{}", first.summary);
            let rerun = import(sim, &csv, &ledger, &[]);
            assert_eq!(rerun.summary["skipped"], HUGE_ROWS, "{}", rerun.summary);
            (first, rerun)
        });
        fresh(&ledger);
        rows.push(row(
            &format!("10,000,000 {order} ids: import"),
            format!(
                "{:.0} rows/s, {:.1} MB",
                HUGE_ROWS as f64 / first.wall,
                first.rss_mb
            ),
            format!("≤ {MAX_HUGE_RSS_MB} MB"),
            first.rss_mb <= MAX_HUGE_RSS_MB,
        ));
        rows.push(row(
            &format!("10,000,000 {order} ids: no-op rerun"),
            format!("{:.2} s, {:.1} MB", rerun.wall, rerun.rss_mb),
            format!("≤ {max_noop} s, ≤ {MAX_HUGE_RSS_MB} MB"),
            rerun.wall <= max_noop && rerun.rss_mb <= MAX_HUGE_RSS_MB,
        ));
    }
    let csv = random_csv(data, HUGE_ROWS);
    let dry = with_simulator(rt, SimConfig::default(), |sim| {
        let m = import(sim, &csv, &dir.path().join("none.db"), &["--dry-run"]);
        assert_eq!(m.summary["sent"], HUGE_ROWS, "{}", m.summary);
        m
    });
    rows.push(row(
        "--dry-run of 10,000,000 new random-order ids",
        format!("{:.1} s, {:.1} MB", dry.wall, dry.rss_mb),
        format!("≤ {MAX_HUGE_RSS_MB} MB"),
        dry.rss_mb <= MAX_HUGE_RSS_MB,
    ));
    rows
}
