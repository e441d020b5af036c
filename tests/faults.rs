//! End-to-end tests of what goes wrong: faults from the API, fatal answers, signals, SIGKILL,
//! concurrent runs, hostile input and secrets. The real binary against the simulator on loopback.

mod support;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::{Env, Run, SERVICE, signal, users_csv};
use verigator_sync::simulator::SimConfig;

/// Imports until a run exits 0 (at most `runs` times), returning the runs.
fn import_until_done(env: &Env, csv: &std::path::Path, extra: &[&str], runs: usize) -> Vec<Run> {
    let mut done = Vec::new();
    for _ in 0..runs {
        let run = env.import(csv, extra);
        let code = run.code;
        assert!(code == 0 || code == 1, "exit {code}: {}", run.stderr);
        done.push(run);
        if code == 0 {
            break;
        }
    }
    done
}

/// Nobody was registered twice: one remote user per id, and the simulator created exactly as many.
fn assert_each_registered_once(env: &Env, n: usize) {
    assert_eq!(env.remote().len(), n);
    assert_eq!(
        env.sim.users(SERVICE).len(),
        n,
        "no id twice at the simulator"
    );
}

#[test]
fn transient_faults_are_retried_until_everything_is_synced() {
    let env = Env::with(SimConfig {
        fail_rate: 0.3,
        reset_rate: 0.1,
        ..SimConfig::default()
    });
    let csv = env.file("u.csv", users_csv(0, 200));
    let runs = import_until_done(
        &env,
        &csv,
        &["--max-attempts", "8", "--concurrency", "8"],
        5,
    );
    assert_eq!(
        runs.last().map(|r| r.code),
        Some(0),
        "finished within 5 runs"
    );
    let stats = env.sim.stats();
    assert!(
        stats.failures > 0 && stats.resets > 0,
        "faults happened: {stats:?}"
    );
    assert_each_registered_once(&env, 200);
    env.assert_ledger_matches_remote();
}

#[test]
fn throttled_run_backs_off_and_finishes() {
    let env = Env::with(SimConfig {
        rate_limit: Some(40),
        ..SimConfig::default()
    });
    let csv = env.file("u.csv", users_csv(0, 120));
    let run = env.import(&csv, &["--max-attempts", "10", "--concurrency", "16"]);
    run.expect_code(0);
    let stats = env.sim.stats();
    assert!(stats.throttled > 0, "the simulator throttled: {stats:?}");
    // With the shared pause, far fewer 429s than requests: the run does not stampede.
    assert!(stats.throttled < stats.created, "{stats:?}");
    assert_each_registered_once(&env, 120);
    env.assert_ledger_matches_remote();
}

#[test]
fn retries_give_up_as_retry_and_the_next_run_sends_again() {
    let env = Env::with(SimConfig {
        fail_rate: 1.0,
        ..SimConfig::default()
    });
    let csv = env.file("u.csv", users_csv(0, 3));
    let run = env.import(&csv, &["--max-attempts", "2"]);
    run.expect_code(1);
    assert_eq!(run.count("retry"), 3);
    let rows = env.rows();
    assert!(
        rows.values()
            .all(|r| r.status == "retry" && r.attempts == 2),
        "{rows:?}"
    );
    assert!(rows.values().all(|r| {
        r.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("503"))
    }));
    assert_eq!(
        env.sim.stats().failures,
        6,
        "2 attempts each, then given up"
    );
}

#[test]
fn wrong_credentials_stop_the_run_at_once() {
    let env = Env::new();
    let csv = env.file("u.csv", users_csv(0, 200));
    let out = env
        .cmd()
        .env("VERIGATOR_PASSWORD", "wrong")
        .args([
            "import",
            "--json",
            "--no-progress",
            "--rate",
            "0",
            "--concurrency",
            "4",
        ])
        .arg(&csv)
        .output()
        .expect("runs");
    let run = Run::of(out);
    run.expect_code(3);
    assert!(
        run.stderr.contains(
            "authentication failed (401): check VERIGATOR_USERNAME and VERIGATOR_PASSWORD"
        ),
        "{}",
        run.stderr
    );
    let stats = env.sim.stats();
    assert!(
        stats.unauthorized <= 5,
        "at most about --concurrency requests after the first 401: {stats:?}"
    );
    assert!(
        env.rows().values().all(|r| r.status != "failed"),
        "no row marked failed for a 401"
    );
    assert_eq!(run.count("failed"), 0);
}

#[test]
fn unknown_service_stops_the_run_at_once() {
    let env = Env::with(SimConfig {
        service_ids: Some(vec!["another-service".into()]),
        ..SimConfig::default()
    });
    let csv = env.file("u.csv", users_csv(0, 100));
    let run = env.import(&csv, &["--concurrency", "4"]);
    run.expect_code(3);
    assert!(
        run.stderr
            .contains(&format!("service {SERVICE} not found (404)")),
        "{}",
        run.stderr
    );
    assert!(env.sim.stats().create_requests <= 5);
    assert!(env.rows().is_empty(), "nothing recorded as failed");
}

fn spawn_slow_import(env: &Env, csv: &std::path::Path) -> Child {
    env.cmd()
        .args([
            "import",
            "--json",
            "--no-progress",
            "--rate",
            "0",
            "--concurrency",
            "4",
        ])
        .arg(csv)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn import")
}

/// Waits until the ledger holds at least `n` committed rows.
fn wait_for_rows(env: &Env, n: usize) {
    let start = Instant::now();
    loop {
        if env.ledger().exists() {
            let count = rusqlite::Connection::open(env.ledger())
                .and_then(|c| c.query_row("SELECT COUNT(*) FROM users", [], |r| r.get::<_, i64>(0)))
                .unwrap_or(0);
            if count as usize >= n {
                return;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "ledger never reached {n} rows"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigint_stops_sending_commits_and_exits_3_then_a_rerun_finishes() {
    let env = Env::with(SimConfig {
        latency: Duration::from_millis(50),
        ..SimConfig::default()
    });
    let csv = env.file("u.csv", users_csv(0, 400));
    let child = spawn_slow_import(&env, &csv);
    wait_for_rows(&env, 20);
    signal(&child, "-INT");
    let run = Run::of(child.wait_with_output().expect("wait"));
    run.expect_code(3);
    assert!(run.stderr.contains("interrupted"), "{}", run.stderr);
    let first = run.count("synced");
    assert!((20..400).contains(&first), "stopped part-way: {first}");
    // Every answer that arrived was committed: the ledger holds exactly what the simulator made.
    env.assert_ledger_matches_remote();
    let created_before = env.sim.stats().created;
    assert_eq!(created_before as usize, env.rows().len());

    let rerun = env.import(&csv, &[]);
    rerun.expect_code(0);
    assert_each_registered_once(&env, 400);
    env.assert_ledger_matches_remote();
}

#[test]
fn sigkill_mid_run_loses_no_user_id_after_a_rerun() {
    let env = Env::with(SimConfig {
        latency: Duration::from_millis(50),
        ..SimConfig::default()
    });
    let csv = env.file("u.csv", users_csv(0, 400));
    let mut child = spawn_slow_import(&env, &csv);
    wait_for_rows(&env, 30);
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let remote_after_kill = env.remote().len();
    assert!(remote_after_kill < 400, "killed part-way");
    // Requests in flight at the kill reached the simulator but not the ledger: the rerun meets 409s.
    let rerun = env.import(&csv, &[]);
    rerun.expect_code(0);
    assert_each_registered_once(&env, 400);
    env.assert_ledger_matches_remote();
    let rows = env.rows();
    assert!(
        rows.values().all(|r| r.user_id.is_some()),
        "every UserID recovered"
    );
    assert_eq!(
        rerun.count("present"),
        rerun.count("resolved"),
        "every 409 after the kill was resolved through the user list"
    );
}

#[test]
fn a_ledger_that_fills_up_part_way_exits_3_keeps_the_report_and_the_rerun_loses_nothing() {
    let env = Env::new();
    let n = 20_000;
    let csv = env.file("u.csv", users_csv(0, n));
    let report = env.dir.path().join("report.csv");
    // 1 MiB: the ledger's write-ahead log outgrows it after a few thousand rows.
    let mut cmd = env.cmd_with_file_limit(1 << 20);
    cmd.args([
        "import",
        "--json",
        "--no-progress",
        "--rate",
        "0",
        "--report",
    ])
    .arg(&report)
    .arg(&csv);
    let full = Run::of(cmd.output().expect("sh runs the binary"));
    // Requests were sent: the run still ends with its summary, aborted with the failure's reason.
    full.expect_code(3).expect_line(
        "exit 3: aborted: ledger ",
        "the run stopped: rows answered since the last commit are not in the ledger, and the next run finds them again (409 and the user list)",
    );
    assert_eq!(full.count("exit_code"), 3);
    let recorded = env.rows();
    assert!(
        !recorded.is_empty() && recorded.len() < n,
        "stopped part-way"
    );
    // The rows it could not finish are in the report, which was saved despite the failure.
    let text = std::fs::read_to_string(&report).expect("the report was saved");
    let unfinished: Vec<&str> = text.lines().skip(1).collect();
    assert!(!unfinished.is_empty(), "queued rows are reported");
    for line in &unfinished {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields[3], "retry", "{line}");
        assert!(!recorded.contains_key(fields[1]), "{line} is not recorded");
    }
    let rerun = env.import(&csv, &[]);
    rerun.expect_code(0);
    assert_each_registered_once(&env, n);
    env.assert_ledger_matches_remote();
    assert!(env.rows().values().all(|r| r.user_id.is_some()));
    assert!(
        rerun.count("present") > 0,
        "answers lost with the failed commit come back as 409"
    );
    assert_eq!(rerun.count("present"), rerun.count("resolved"));
}

#[test]
fn present_rows_without_user_id_are_resolved_by_the_next_run() {
    let env = Env::new();
    let csv = env.file("u.csv", users_csv(0, 5));
    env.import(&csv, &[]).expect_code(0);
    // As if an earlier run had met 409s and died before listing users.
    rusqlite::Connection::open(env.ledger())
        .and_then(|c| c.execute("UPDATE users SET status = 'present', user_id = NULL WHERE id_in_service IN ('user1@example.com', 'user3@example.com')", []))
        .expect("update");
    let run = env.import(&csv, &[]);
    run.expect_code(0);
    assert_eq!((run.count("sent"), run.count("resolved")), (0, 2));
    env.assert_ledger_matches_remote();
}

#[test]
fn a_second_run_on_a_busy_ledger_exits_3_and_status_still_works() {
    let env = Env::with(SimConfig {
        latency: Duration::from_millis(50),
        ..SimConfig::default()
    });
    let csv = env.file("u.csv", users_csv(0, 300));
    let mut child = spawn_slow_import(&env, &csv);
    wait_for_rows(&env, 5);
    let second = env.import(&env.file("v.csv", users_csv(1000, 3)), &[]);
    second.expect_code(3);
    assert!(
        second.stderr.contains("is in use by another run (pid ")
            && second.stderr.contains(&child.id().to_string()),
        "{}",
        second.stderr
    );
    let status = env
        .cmd()
        .args(["status", "--json"])
        .output()
        .expect("status");
    assert!(
        status.status.success(),
        "status works during an import: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let export = env.cmd().arg("export").output().expect("export");
    assert!(export.status.success(), "export works during an import");
    child.kill().expect("kill");
    let _ = child.wait();
    // The lock died with the process.
    env.import(&csv, &[]).expect_code(0);
}

#[test]
fn a_file_that_is_not_a_ledger_is_refused_and_left_untouched() {
    let env = Env::new();
    let csv = env.file("u.csv", users_csv(0, 2));
    let bogus = env.file(
        "ledger.db",
        "this is a spreadsheet, not a ledger; please do not overwrite me\n",
    );
    let before = std::fs::read(&bogus).expect("read");
    let run = env.import(&csv, &[]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("is not a verigator-sync ledger"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read(&bogus).expect("read"), before);
    assert_eq!(env.sim.stats().create_requests, 0);
}

#[test]
fn plain_http_to_a_remote_host_is_refused_before_any_connection() {
    let env = Env::new();
    let csv = env.file("u.csv", users_csv(0, 2));
    let out = env
        .cmd()
        .env("VERIGATOR_BASE_URL", "http://api.verigator.com")
        .args(["import", "--no-progress"])
        .arg(&csv)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("plain http:// is allowed only for loopback hosts")
    );
    assert!(
        !env.ledger().exists(),
        "refused before the ledger was even created"
    );
}

#[test]
fn secrets_never_reach_output_or_the_ledger() {
    const PASSWORD: &str = "Zq9-distinctive-S3cret";
    let env = Env::with(SimConfig {
        password: PASSWORD.into(),
        ..SimConfig::default()
    });
    let csv = env.file("u.csv", users_csv(0, 5));
    let mut outputs = Vec::new();
    let mut run = |base: &str, password: &str, csv: &std::path::Path, expect: i32| {
        let out = env
            .cmd()
            .env("VERIGATOR_PASSWORD", password)
            .env("VERIGATOR_BASE_URL", base)
            .args([
                "import",
                "--json",
                "--no-progress",
                "--rate",
                "0",
                "--max-attempts",
                "2",
                "--timeout",
                "2",
            ])
            .arg(csv)
            .output()
            .expect("runs");
        assert_eq!(
            out.status.code(),
            Some(expect),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.push(out.stdout);
        outputs.push(out.stderr);
    };
    let base = env.sim.base_url();
    let other = env.file("v.csv", users_csv(100, 2));
    run(&base, &format!("{PASSWORD}x"), &csv, 3); // 401 with a password that contains the real one
    run(&base, PASSWORD, &csv, 0); // success
    run("not a url", PASSWORD, &csv, 2); // bad URL
    run("http://127.0.0.1:1", PASSWORD, &other, 1); // unreachable: connection refused, rows left as retry
    let export = env.cmd().arg("export").output().expect("export");
    let status = env
        .cmd()
        .args(["status", "--json"])
        .output()
        .expect("status");
    outputs.extend([export.stdout, export.stderr, status.stdout, status.stderr]);
    for (name, bytes) in std::fs::read_dir(env.dir.path())
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| (e.path(), std::fs::read(e.path()).unwrap_or_default()))
    {
        assert!(
            !contains(&bytes, PASSWORD.as_bytes()),
            "{} holds the password",
            name.display()
        );
    }
    for out in outputs {
        assert!(
            !contains(&out, PASSWORD.as_bytes()),
            "output holds the password: {}",
            String::from_utf8_lossy(&out)
        );
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn hostile_files_never_panic_and_good_rows_still_go_through() {
    let env = Env::new();
    let mut data = b"\xEF\xBB\xBFid_in_service;phone_number\r\n".to_vec();
    data.extend_from_slice(b"good1;+372 5555 0001\r\n");
    data.extend_from_slice(b"\"quoted;with\nnewline\";+372 5555 0002\r\n");
    data.extend_from_slice(b"nul\0id;+372 5555 0003\r\n");
    data.extend_from_slice(b"bad\xff\xfe;+372 5555 0004\r\n");
    data.extend_from_slice(format!("{};+372 5555 0005\r\n", "x".repeat(70_000)).as_bytes());
    data.extend_from_slice(b"ragged;+372 5555 0006;extra\r\n");
    data.extend_from_slice(b"  spaced  ;  +372 5555 0007  \r\n");
    let csv = env.file("hostile.csv", &data);
    let run = env.import(&csv, &[]);
    run.expect_code(1);
    assert_eq!((run.count("synced"), run.count("invalid")), (2, 5));
    let rows = env.rows();
    assert!(rows.contains_key("spaced") && rows.contains_key("good1"));
    run.expect_line(
        "hostile.csv:3: invalid: ",
        "id_in_service contains the control character U+000A; ids must be printable",
    );
    run.expect_line(
        "hostile.csv:5: invalid: ",
        "id_in_service contains a NUL byte",
    );
    assert!(!run.stderr.contains("panicked"));

    let garbage: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let run = env.import(&env.file("garbage.bin", &garbage), &[]);
    assert!(
        run.code == 2 || run.code == 1,
        "exit {}: {}",
        run.code,
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    for empty in ["", "\n", "\u{feff}"] {
        let run = env.import(&env.file("empty.csv", empty), &[]);
        run.expect_code(2);
        assert!(
            run.stderr.contains("empty.csv: the file is empty"),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn duplicates_keep_the_first_and_name_both_lines_on_conflict() {
    let env = Env::new();
    let csv = env.file(
        "d.csv",
        "id_in_service,phone_number\na,+37255550001\nb,+37255550002\na,+37255550001\na,+37255559999\n",
    );
    let run = env.import(&csv, &[]);
    run.expect_code(1);
    assert_eq!((run.count("synced"), run.count("duplicate")), (2, 2));
    run.expect_line(
        "d.csv:5: duplicate: \"a\" (+3725****99): conflict: line 2 has the same id with another phone",
        "the first occurrence wins",
    );
    assert_eq!(env.rows()["a"].phone_number, "+37255550001");
    assert_eq!(env.sim.create_attempts(SERVICE, "a"), 1);
    // Same-phone duplicates alone do not make a run incomplete.
    let csv = env.file(
        "d2.csv",
        "id_in_service,phone_number\nc,+37255550003\nc,+37255550003\n",
    );
    env.import(&csv, &[]).expect_code(0);
}

#[test]
fn duplicates_far_apart_are_caught_whatever_the_ledger_has_committed() {
    // Lookups run ahead of decisions on their own connection, so the second half of this file is
    // looked up while the first half is being answered and committed: every repeat must still be
    // recognised (same phone: a duplicate; another phone: a conflict), and nothing sent twice.
    let env = Env::new();
    let n = 3000;
    let mut csv = users_csv(0, n);
    for i in 0..n {
        let phone = if i % 2 == 0 { i } else { i + 5_000_000 };
        csv.push_str(&format!("user{i}@example.com,+3725{phone:07}\n"));
    }
    let run = env.import(&env.file("twice.csv", csv), &["--concurrency", "16"]);
    run.expect_code(1);
    assert_eq!(
        (
            run.count("synced"),
            run.count("duplicate"),
            run.count("sent")
        ),
        (n as u64, n as u64, n as u64),
        "{}",
        run.stdout
    );
    run.expect_line(
        &format!("twice.csv:{}: duplicate: \"user1@example.com\"", n + 3),
        "conflict: line 3 has the same id with another phone; the first occurrence wins",
    );
    for i in (0..n).step_by(7) {
        let id = format!("user{i}@example.com");
        assert_eq!(env.sim.create_attempts(SERVICE, &id), 1, "{id}");
    }
    assert_eq!(env.sim.stats().created, n as u64);
    env.assert_ledger_matches_remote();
}

#[test]
fn default_region_completes_national_numbers() {
    let env = Env::new();
    let csv = env.file("n.csv", "id_in_service,phone_number\nx,5123 4567\n");
    let run = env.import(&csv, &[]);
    run.expect_code(1);
    assert!(run.stderr.contains("(use +CC… or --default-region)"));
    let run = env.import(&csv, &["--default-region", "EE"]);
    run.expect_code(0);
    assert_eq!(env.rows()["x"].phone_number, "+37251234567");
}

#[test]
fn a_changed_phone_is_reported_not_sent() {
    let env = Env::new();
    env.import(
        &env.file("a.csv", "id_in_service,phone_number\nz,+37255550001\n"),
        &[],
    )
    .expect_code(0);
    let run = env.import(
        &env.file("b.csv", "id_in_service,phone_number\nz,+37255550002\n"),
        &[],
    );
    run.expect_code(1);
    assert_eq!((run.count("changed"), run.count("sent")), (1, 0));
    run.expect_line(
        "b.csv:2: changed: \"z\" (+3725****02): synced with +3725****01 but the file has +3725****02",
        "--apply-changes replaces the user)",
    );
}

#[test]
fn sigterm_stops_like_sigint_and_a_second_signal_stops_at_once() {
    let env = Env::with(SimConfig {
        latency: Duration::from_secs(5),
        ..SimConfig::default()
    });
    let csv = env.file("u.csv", users_csv(0, 20));
    let child = spawn_slow_import(&env, &csv);
    // Requests are in flight (the simulator holds each for 5 s) once the run is recorded.
    let start = Instant::now();
    while !env.ledger().exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the run never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, "-TERM");
    std::thread::sleep(Duration::from_millis(200));
    let stopped = Instant::now();
    signal(&child, "-INT");
    let run = Run::of(child.wait_with_output().expect("wait"));
    assert!(
        stopped.elapsed() < Duration::from_secs(3),
        "the second signal did not wait for the 5 s answers"
    );
    run.expect_code(3);
    assert!(
        run.stderr.contains("second signal: stopping now"),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.count("retry"),
        20,
        "rows in flight or unsent are left as retry"
    );
    // The ledger is consistent and the next run finishes the job.
    let rerun = env.import(&csv, &["--concurrency", "32"]);
    rerun.expect_code(0);
    assert_each_registered_once(&env, 20);
    env.assert_ledger_matches_remote();
}
