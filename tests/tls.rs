//! HTTPS against a private CA, as behind a TLS-inspecting proxy: the simulator serves a
//! certificate from a CA made here (rcgen), and the real binary trusts it only when told to
//! (`SSL_CERT_FILE`, `SSL_CERT_DIR`, `--ca-cert`). A certificate it cannot trust stops the run at
//! once (exit 3), with nothing recorded for requests that never reached the server.

mod support;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use support::{Env, Run, users_csv};
use verigator_sync::simulator::{SimConfig, SimTls};

/// A private CA and a server certificate it issued, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA, and a certificate for `names` valid from `not_before` to `not_after` (days from now).
    fn new(names: &[&str], (not_before, not_after): (i64, i64)) -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_key = KeyPair::generate().expect("key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "Example Corp TLS Inspection CA");
        let ca_cert = ca.self_signed(&ca_key).expect("CA");
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut leaf = CertificateParams::new(names).expect("params");
        let now = time_now();
        leaf.not_before = now + time::Duration::days(not_before);
        leaf.not_after = now + time::Duration::days(not_after);
        let cert = leaf.signed_by(&key, &issuer).expect("leaf");
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).expect("write");
        std::fs::write(dir.path().join("server.pem"), cert.pem()).expect("write");
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).expect("write");
        Pki { dir }
    }

    /// A certificate for the simulator's address, valid now.
    fn loopback() -> Pki {
        Pki::new(&["127.0.0.1", "localhost"], (-1, 30))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A simulator serving this certificate.
    fn env(&self) -> Env {
        let tls = SimTls::from_files(&self.path("server.pem"), &self.path("server.key"))
            .expect("TLS config");
        Env::with(SimConfig {
            tls: Some(tls),
            ..SimConfig::default()
        })
    }
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// `import` of 50 users, with `extra` arguments and environment.
fn import(env: &Env, extra: &[&str], vars: &[(&str, &Path)]) -> (Run, Duration) {
    let csv = env.file("users.csv", users_csv(0, 50));
    let mut cmd = env.cmd();
    cmd.args(["import", "--json", "--no-progress", "--rate", "0"])
        .args(extra)
        .arg(&csv);
    for (name, value) in vars {
        cmd.env(name, value);
    }
    let started = Instant::now();
    let run = Run::of(cmd.output().expect("binary runs"));
    (run, started.elapsed())
}

#[test]
fn a_private_ca_is_trusted_through_ssl_cert_file_ssl_cert_dir_or_ca_cert() {
    let pki = Pki::loopback();
    let ca = pki.path("ca.pem");
    let dir = pki.dir.path().to_path_buf();
    for (extra, vars) in [
        (vec![], vec![("SSL_CERT_FILE", ca.as_path())]),
        (vec![], vec![("SSL_CERT_DIR", dir.as_path())]),
        (vec!["--ca-cert", ca.to_str().expect("utf-8")], vec![]),
        (vec![], vec![("VERIGATOR_CA_CERT", ca.as_path())]),
    ] {
        let env = pki.env();
        assert!(env.sim.base_url().starts_with("https://"));
        let (run, _) = import(&env, &extra, &vars);
        run.expect_code(0);
        assert_eq!(run.count("synced"), 50, "{extra:?} {vars:?}");
        assert_eq!(env.sim.users(support::SERVICE).len(), 50);
    }
}

#[test]
fn an_untrusted_issuer_stops_at_once_with_nothing_recorded() {
    let pki = Pki::loopback();
    let env = pki.env();
    let (run, took) = import(&env, &[], &[]);
    run.expect_code(3);
    // Before, every row was retried to --max-attempts: 50 rows took 14 s.
    assert!(took < Duration::from_secs(1), "took {took:?}");
    run.expect_line(
        "the TLS certificate of 127.0.0.1 was refused: it is issued by a CA this machine does not trust",
        "pass --ca-cert",
    );
    assert_eq!(env.sim.stats().create_requests, 0);
    let rows = env.rows();
    assert!(
        rows.values().all(|r| r.status != "retry"),
        "requests that never reached the server are not retry rows: {rows:?}"
    );
    // The next run, trusting the CA, registers every user.
    let (run, _) = import(
        &env,
        &["--ca-cert", pki.path("ca.pem").to_str().expect("utf-8")],
        &[],
    );
    run.expect_code(0);
    assert_eq!(run.count("synced"), 50);
}

#[test]
fn a_certificate_for_another_name_or_out_of_date_stops_the_run() {
    for (names, validity, problem) in [
        (["api.example.com"], (-1, 30), "it is for another name"),
        (["127.0.0.1"], (-30, -1), "it has expired"),
        (["127.0.0.1"], (2, 30), "it is not valid yet"),
    ] {
        let pki = Pki::new(&names, validity);
        let env = pki.env();
        let ca = pki.path("ca.pem");
        let (run, took) = import(&env, &["--ca-cert", ca.to_str().expect("utf-8")], &[]);
        run.expect_code(3);
        assert!(took < Duration::from_secs(1), "{problem}: took {took:?}");
        assert!(
            run.stderr.contains(&format!("refused: {problem};")),
            "{problem}: {}",
            run.stderr
        );
        assert_eq!(env.sim.stats().create_requests, 0);
    }
}

#[test]
fn a_ca_file_that_cannot_be_used_stops_before_any_request() {
    let pki = Pki::loopback();
    let env = pki.env();
    let not_pem = env.file("notes.txt", "not a certificate\n");
    let missing = env.dir.path().join("missing.pem");
    // A FIFO no one writes to would block the run for ever; /dev/zero would never end.
    let fifo = env.dir.path().join("fifo.pem");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let huge = env.file("huge.pem", vec![b'A'; 17 << 20]);
    for (flag_or_var, path, says) in [
        ("--ca-cert", missing.as_path(), "which cannot be read"),
        (
            "--ca-cert",
            not_pem.as_path(),
            "which holds no usable certificate",
        ),
        ("SSL_CERT_FILE", missing.as_path(), "which cannot be read"),
        (
            "SSL_CERT_FILE",
            not_pem.as_path(),
            "which holds no usable certificate",
        ),
        (
            "SSL_CERT_FILE",
            Path::new("/dev/zero"),
            "it is not a regular file",
        ),
        ("--ca-cert", fifo.as_path(), "it is not a regular file"),
        ("SSL_CERT_FILE", huge.as_path(), "it is over 16 MiB"),
    ] {
        let (run, _) = if flag_or_var.starts_with("--") {
            import(&env, &[flag_or_var, path.to_str().expect("utf-8")], &[])
        } else {
            import(&env, &[], &[(flag_or_var, path)])
        };
        run.expect_code(2);
        assert!(
            run.stderr.contains(&format!("{flag_or_var} names ")) && run.stderr.contains(says),
            "{flag_or_var} {path:?}: {}",
            run.stderr
        );
    }
    assert_eq!(env.sim.stats().create_requests, 0);
}

#[test]
fn a_port_that_does_not_speak_tls_stops_at_once() {
    // The plain-http simulator, addressed as https.
    let env = Env::new();
    let plain = env.sim.base_url().replace("http://", "https://");
    let csv = env.file("users.csv", users_csv(0, 50));
    let started = Instant::now();
    let run = Run::of(
        env.cmd()
            .env("VERIGATOR_BASE_URL", &plain)
            .args(["import", "--json", "--no-progress", "--rate", "0"])
            .arg(&csv)
            .output()
            .expect("binary runs"),
    );
    run.expect_code(3);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    run.expect_line(
        "the TLS handshake with 127.0.0.1 failed: the server does not speak TLS on that port (plain http?)",
        "and the proxy",
    );
    assert!(env.rows().values().all(|r| r.status != "retry"));
}

#[test]
fn verbose_says_where_trust_comes_from_without_certificate_contents() {
    let pki = Pki::loopback();
    let env = pki.env();
    let ca = pki.path("ca.pem");
    let (run, _) = import(
        &env,
        &["-v", "--ca-cert", ca.to_str().expect("utf-8")],
        &[("SSL_CERT_FILE", ca.as_path())],
    );
    run.expect_code(0);
    let shown = ca.display().to_string();
    run.expect_line(&format!("trust: SSL_CERT_FILE {shown}"), ": 1 certificate");
    run.expect_line(&format!("trust: --ca-cert {shown}"), ": 1 certificate");
    assert!(!run.stderr.contains("BEGIN CERTIFICATE"));
}

#[test]
fn the_simulate_command_serves_https_with_the_given_certificate() {
    let pki = Pki::loopback();
    let mut sim = Command::new(env!("CARGO_BIN_EXE_verigator-sync"))
        .args(["simulate", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(pki.path("server.pem"))
        .arg("--tls-key")
        .arg(pki.path("server.key"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("simulator starts");
    let mut first = String::new();
    BufReader::new(sim.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("first line");
    let url = first
        .trim()
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_string();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    // A client with the ledger of an in-process simulator, pointed at the child instead.
    let env = support::Env::new();
    let csv = env.file("users.csv", users_csv(0, 5));
    let run = Run::of(
        env.cmd()
            .env("VERIGATOR_BASE_URL", &url)
            .env("SSL_CERT_FILE", pki.path("ca.pem"))
            .args(["import", "--json", "--no-progress"])
            .arg(&csv)
            .output()
            .expect("binary runs"),
    );
    let _ = sim.kill();
    let _ = sim.wait();
    run.expect_code(0);
    assert_eq!(run.count("synced"), 5);
}
