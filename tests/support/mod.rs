//! Test support: a simulator on 127.0.0.1:0 in a runtime of its own, a temporary directory with a
//! ledger, and the real binary run against them. Assertions read the ledger and the simulator.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rusqlite::Connection;
use tempfile::TempDir;
use verigator_sync::simulator::{SimConfig, Simulator};

/// The service every test imports into.
pub const SERVICE: &str = "81213bfd-b690-499e-b9d2-8754cb1550e8";

/// A simulator and a scratch directory for one test.
pub struct Env {
    pub sim: Simulator,
    pub dir: TempDir,
    rt: tokio::runtime::Runtime,
}

/// One ledger row as the tests read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerRow {
    pub id_in_service: String,
    pub phone_number: String,
    pub status: String,
    pub user_id: Option<String>,
    pub attempts: i64,
    pub last_error: Option<String>,
}

impl Env {
    /// A simulator with the default configuration (demo/demo, 201).
    pub fn new() -> Env {
        Env::with(SimConfig::default())
    }

    /// A simulator with this configuration.
    pub fn with(config: SimConfig) -> Env {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let sim = rt
            .block_on(Simulator::start(
                SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                config,
            ))
            .expect("simulator starts");
        Env {
            sim,
            dir: tempfile::tempdir().expect("tempdir"),
            rt,
        }
    }

    /// The ledger path.
    pub fn ledger(&self) -> PathBuf {
        self.dir.path().join("ledger.db")
    }

    /// Writes a file into the scratch directory.
    pub fn file(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).expect("write test file");
        path
    }

    /// The binary with the environment pointing at this simulator and ledger.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_verigator-sync"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("VERIGATOR_USERNAME", "demo")
            .env("VERIGATOR_PASSWORD", "demo")
            .env("VERIGATOR_BASE_URL", self.sim.base_url())
            .env("VERIGATOR_SERVICE_ID", SERVICE)
            .env("VERIGATOR_LEDGER", self.ledger())
            .current_dir(self.dir.path());
        cmd
    }

    /// Like [`Env::cmd`], but no file the binary writes may grow beyond `bytes`, as on a disk that
    /// fills up: writes beyond it fail with EFBIG (an ignored SIGXFSZ stays ignored across exec).
    pub fn cmd_with_file_limit(&self, bytes: u64) -> Command {
        let cmd = self.cmd();
        let program = cmd.get_program().to_owned();
        let mut limited = Command::new("sh");
        // POSIX sh counts `ulimit -f` in 512-byte blocks (bash does too, as sh). If the limit
        // cannot be set (a lower hard limit), exit 97 rather than run unlimited.
        limited
            .arg("-c")
            .arg(format!(
                r#"trap '' XFSZ; ulimit -f {} || exit 97; exec "$0" "$@""#,
                bytes / 512
            ))
            .arg(program)
            .env_clear()
            .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .current_dir(self.dir.path());
        limited
    }

    /// `import --json --no-progress --rate 0 <csv> <extra…>`.
    pub fn import(&self, csv: &Path, extra: &[&str]) -> Run {
        let mut cmd = self.cmd();
        cmd.args(["import", "--json", "--no-progress", "--rate", "0"])
            .args(extra)
            .arg(csv);
        Run::of(cmd.output().expect("binary runs"))
    }

    /// The ledger's user rows, keyed by id.
    pub fn rows(&self) -> HashMap<String, LedgerRow> {
        let conn = Connection::open(self.ledger()).expect("ledger opens");
        let mut stmt = conn
            .prepare(
                "SELECT id_in_service, phone_number, status, user_id, attempts, last_error FROM users
                 WHERE service_id = ?1",
            )
            .expect("query");
        stmt.query_map([SERVICE], |r| {
            Ok(LedgerRow {
                id_in_service: r.get(0)?,
                phone_number: r.get(1)?,
                status: r.get(2)?,
                user_id: r.get(3)?,
                attempts: r.get(4)?,
                last_error: r.get(5)?,
            })
        })
        .expect("rows")
        .map(|r| {
            let r = r.expect("row");
            (r.id_in_service.clone(), r)
        })
        .collect()
    }

    /// The simulator's users of the test service: id_in_service → UserID.
    pub fn remote(&self) -> HashMap<String, String> {
        self.sim
            .users(SERVICE)
            .into_iter()
            .map(|u| (u.id_in_service, u.id))
            .collect()
    }

    /// Every remote user has its UserID in the ledger, and every ledger UserID exists remotely.
    pub fn assert_ledger_matches_remote(&self) {
        let rows = self.rows();
        let remote = self.remote();
        for (id, uid) in &remote {
            let row = rows
                .get(id)
                .unwrap_or_else(|| panic!("{id} exists remotely but not in the ledger"));
            assert_eq!(row.user_id.as_ref(), Some(uid), "UserID of {id}");
            assert!(
                row.status == "synced" || row.status == "present",
                "{id} is {}",
                row.status
            );
        }
        for (id, row) in &rows {
            if let Some(uid) = &row.user_id {
                assert_eq!(
                    remote.get(id),
                    Some(uid),
                    "ledger UserID of {id} exists remotely"
                );
            }
        }
    }

    /// Blocks on a future in the simulator's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}

/// A finished run of the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn of(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The `--json` summary.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is one JSON object ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    /// A count from the JSON summary.
    pub fn count(&self, key: &str) -> u64 {
        self.json()[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} in {}", self.stdout))
    }

    /// Asserts that stderr has a line containing `start` and ending with `end`.
    pub fn expect_line(&self, start: &str, end: &str) -> &Run {
        assert!(
            self.stderr
                .lines()
                .any(|l| l.contains(start) && l.ends_with(end)),
            "no stderr line {start:?} … {end:?} in:\n{}",
            self.stderr
        );
        self
    }

    /// Asserts the exit code, showing stderr when it differs.
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "exit code; stderr:\n{}\nstdout:\n{}",
            self.stderr, self.stdout
        );
        self
    }
}

/// Sends `sig` (`-INT`, `-TERM`) to a running binary.
pub fn signal(child: &std::process::Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Waits until `done` holds, for at most 30 s.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "never happened: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `n` valid users starting at `from`: `user{i}@example.com,+3725{i:07}`.
pub fn users_csv(from: usize, n: usize) -> String {
    let mut s = String::from("id_in_service,phone_number\n");
    for i in from..from + n {
        s.push_str(&format!("user{i}@example.com,+3725{i:07}\n"));
    }
    s
}

/// The repository's sample file.
pub fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples")
        .join(name)
}
