//! End-to-end tests of the operator's view: plans, canaries, progress, logs, reports, status,
//! exports, retrying refused rows, applying phone changes and reconciling with Verigator.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use support::{Env, Run, SERVICE, users_csv};
use verigator_sync::simulator::{SimConfig, Simulator};

fn ledger_counts(env: &Env) -> (i64, i64) {
    let conn = rusqlite::Connection::open(env.ledger()).expect("ledger");
    let users = conn
        .query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))
        .expect("users");
    let runs = conn
        .query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))
        .expect("runs");
    (users, runs)
}

#[test]
fn dry_run_plans_without_requests_or_ledger_writes() {
    let env = Env::new();
    let mut plan_csv = users_csv(0, 10);
    plan_csv.push_str("bad,12345\nuser0@example.com,+37250000000\n");
    let csv = env.file("plan.csv", &plan_csv);

    let run = env.import(&csv, &["--dry-run"]);
    run.expect_code(1);
    assert_eq!(
        (
            run.count("rows"),
            run.count("sent"),
            run.count("invalid"),
            run.count("duplicate")
        ),
        (12, 10, 1, 1)
    );
    assert_eq!(run.json()["run_id"], serde_json::Value::Null);
    assert!(!env.ledger().exists(), "a plan creates no ledger");
    assert_eq!(env.sim.stats().create_requests, 0);
    assert!(
        run.stderr
            .contains("plan (dry run: nothing sent, nothing written)"),
        "{}",
        run.stderr
    );

    env.import(&env.file("half.csv", users_csv(0, 4)), &[])
        .expect_code(0);
    let before = (ledger_counts(&env), env.sim.stats().create_requests);
    let report = env.dir.path().join("plan-report.csv");
    let run = env.import(
        &csv,
        &["--dry-run", "--report", report.to_str().expect("utf8 path")],
    );
    assert_eq!((run.count("skipped"), run.count("sent")), (4, 6));
    assert_eq!(
        (ledger_counts(&env), env.sim.stats().create_requests),
        before,
        "no request, no write"
    );
    let report = std::fs::read_to_string(&report).expect("report written by a dry run too");
    assert_eq!(
        report.lines().count(),
        3,
        "header, the invalid row, the duplicate:\n{report}"
    );
}

#[test]
fn limit_sends_a_canary_and_leaves_the_rest_pending() {
    let env = Env::new();
    let csv = env.file("u.csv", users_csv(0, 12));
    let run = env.import(&csv, &["--limit", "5"]);
    run.expect_code(1);
    assert_eq!(
        (run.count("sent"), run.count("synced"), run.count("pending")),
        (5, 5, 7)
    );
    assert_eq!(env.sim.stats().create_requests, 5);
    let run = env.import(&csv, &["--limit", "5"]);
    run.expect_code(1);
    assert_eq!(
        (
            run.count("skipped"),
            run.count("sent"),
            run.count("pending")
        ),
        (5, 5, 2)
    );
    let run = env.import(&csv, &[]);
    run.expect_code(0);
    assert_eq!((run.count("skipped"), run.count("sent")), (10, 2));
    env.assert_ledger_matches_remote();
}

#[test]
fn report_lists_every_unfinished_row_and_can_be_fed_back() {
    let env = Env::with(SimConfig {
        reject_phone: Some(regex::Regex::new(r"^\+37250000001$").expect("regex")),
        ..SimConfig::default()
    });
    let mut data = users_csv(0, 4);
    data.push_str("nophone@example.com,\n");
    let csv = env.file("u.csv", &data);
    let report_path = env.dir.path().join("report.csv");
    let run = env.import(
        &csv,
        &["--report", report_path.to_str().expect("utf8 path")],
    );
    run.expect_code(1);
    let mut reader = csv::Reader::from_path(&report_path).expect("report");
    assert_eq!(
        reader.headers().expect("header").iter().collect::<Vec<_>>(),
        [
            "line",
            "id_in_service",
            "phone_number",
            "outcome",
            "reason",
            "phone_e164"
        ]
    );
    let mut rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.expect("row").iter().map(String::from).collect())
        .collect();
    // Rows are written as their outcomes arrive, not in file order.
    rows.sort_by_key(|r| r[0].parse::<u64>().unwrap_or_default());
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        rows[0][..4],
        ["3", "user1@example.com", "+37250000001", "failed"]
    );
    assert!(
        rows[0][4].contains("Invalid phone number"),
        "full reason: {}",
        rows[0][4]
    );
    assert_eq!(rows[1][..4], ["6", "nophone@example.com", "", "invalid"]);
    // The number as understood, empty where it is not.
    assert_eq!(
        (rows[0][5].as_str(), rows[1][5].as_str()),
        ("+37250000001", "")
    );

    // Fix the rows and feed the report back in: its columns are the importer's defaults.
    let fixed = std::fs::read_to_string(&report_path)
        .expect("report")
        .replace("+37250000001", "+37250000099")
        .replace("nophone@example.com,,", "nophone@example.com,+37250000098,");
    let run = env.import(&env.file("fixed.csv", fixed), &[]);
    run.expect_code(0);
    assert_eq!(run.count("synced"), 2);
    env.assert_ledger_matches_remote();
}

#[test]
fn progress_lines_are_plain_when_stderr_is_not_a_terminal() {
    let env = Env::with(SimConfig {
        latency: Duration::from_millis(20),
        ..SimConfig::default()
    });
    let csv = env.file("u.csv", users_csv(0, 60));
    let out = env
        .cmd()
        .args([
            "import",
            "--rate",
            "0",
            "--concurrency",
            "2",
            "--progress-interval",
            "0.2",
        ])
        .arg(&csv)
        .output()
        .expect("runs");
    let run = Run::of(out);
    run.expect_code(0);
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains(" progress ") && l.contains(" · synced "))
        .collect();
    assert!(lines.len() >= 2, "periodic progress lines:\n{}", run.stderr);
    assert!(lines.iter().all(|l| l.contains("/60 rows")), "{lines:?}");
    assert!(
        !run.stderr.contains('\u{1b}'),
        "no escape codes without a terminal"
    );
    let quiet = env
        .cmd()
        .args(["import", "--no-progress"])
        .arg(&csv)
        .output()
        .expect("runs");
    assert!(
        !String::from_utf8_lossy(&quiet.stderr).contains(" req/s · "),
        "--no-progress silences them"
    );
}

#[test]
fn quiet_prints_only_the_summary_and_verbose_every_request_masked() {
    let env = Env::new();
    let mut data = users_csv(0, 3);
    data.push_str("broken,123\n");
    let csv = env.file("u.csv", &data);
    let run = env.import(&csv, &["-q", "--dry-run"]);
    assert!(
        !run.stderr.contains("u.csv:5"),
        "quiet hides row warnings:\n{}",
        run.stderr
    );
    assert!(run.stderr.contains("rows"), "but keeps the summary");

    let run = env.import(&csv, &["-v"]);
    run.expect_code(1);
    run.expect_line(
        "u.csv:2: synced: \"user0@example.com\" (+3725****00)",
        "after 1 attempt(s)",
    );
    assert!(
        !run.stderr.contains("+37250000000"),
        "phones are masked in logs:\n{}",
        run.stderr
    );
    run.expect_line(
        "u.csv:5: invalid: \"broken\"",
        "(use +CC… or --default-region)",
    );
}

#[test]
fn status_counts_unresolved_present_rows_and_lists_runs() {
    let env = Env::new();
    env.sim
        .insert_user(SERVICE, "user1@example.com", "+37250000001");
    let csv = env.file("u.csv", users_csv(0, 3));
    env.import(&csv, &[]).expect_code(0);
    rusqlite::Connection::open(env.ledger())
        .and_then(|c| {
            c.execute(
                "UPDATE users SET user_id = NULL WHERE status = 'present'",
                [],
            )
        })
        .expect("forget a UserID");
    let out = env
        .cmd()
        .args(["status", "--json"])
        .output()
        .expect("status");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let s = &v["services"][0];
    assert_eq!(
        (
            s["synced"].as_u64(),
            s["present"].as_u64(),
            s["present_without_user_id"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    let run = &v["runs"][0];
    assert!(run["input"].as_str().is_some_and(|i| i.ends_with("u.csv")));
    assert!(run["duration_s"].as_f64().is_some());
    assert_eq!(run["exit_code"], 0);
    let text = env.cmd().arg("status").output().expect("status");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("present") && text.contains("(1 without UserID)") && text.contains("u.csv"),
        "{text}"
    );
}

#[test]
fn export_writes_ndjson_too() {
    let env = Env::new();
    env.import(&env.file("u.csv", users_csv(0, 3)), &[])
        .expect_code(0);
    let out = env
        .cmd()
        .args(["export", "--format", "ndjson", "--status", "synced"])
        .output()
        .expect("export");
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one object per line"))
        .collect();
    assert_eq!(lines.len(), 3);
    let remote = env.remote();
    for l in &lines {
        let id = l["id_in_service"].as_str().expect("id");
        assert_eq!(l["user_id"].as_str(), remote.get(id).map(String::as_str));
        assert_eq!(l["status"], "synced");
    }
}

#[test]
fn retry_failed_sends_refused_rows_again() {
    let env = Env::with(SimConfig {
        reject_phone: Some(regex::Regex::new(r"^\+37250000002$").expect("regex")),
        ..SimConfig::default()
    });
    let csv = env.file("u.csv", users_csv(0, 4));
    env.import(&csv, &[]).expect_code(1);
    env.import(&csv, &[]).expect_code(1);
    assert_eq!(
        env.sim.create_attempts(SERVICE, "user2@example.com"),
        1,
        "not resent by default"
    );
    // The cause is fixed on the server side: a server that accepts the phone.
    let fixed = env
        .block_on(Simulator::start(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            SimConfig::default(),
        ))
        .expect("second simulator");
    let out = env
        .cmd()
        .env("VERIGATOR_BASE_URL", fixed.base_url())
        .args(["import", "--json", "--no-progress", "--retry-failed"])
        .arg(&csv)
        .output()
        .expect("runs");
    let run = Run::of(out);
    run.expect_code(0);
    assert_eq!(
        (run.count("sent"), run.count("synced"), run.count("skipped")),
        (1, 1, 3)
    );
    assert_eq!(env.rows()["user2@example.com"].status, "synced");
}

#[test]
fn apply_changes_replaces_the_user_and_keeps_the_old_user_id() {
    let env = Env::new();
    env.import(
        &env.file(
            "a.csv",
            "id_in_service,phone_number\nz,+37255550001\ny,+37255550003\n",
        ),
        &[],
    )
    .expect_code(0);
    let old = env.remote()["z"].clone();
    let changed = env.file(
        "b.csv",
        "id_in_service,phone_number\nz,+37255550002\ny,+37255550003\n",
    );
    env.import(&changed, &[]).expect_code(1);
    assert_eq!(
        env.remote()["z"],
        old,
        "without --apply-changes nothing changes"
    );

    let report = env.dir.path().join("r.csv");
    let run = env.import(
        &changed,
        &[
            "--apply-changes",
            "--report",
            report.to_str().expect("utf8"),
        ],
    );
    run.expect_code(0);
    assert_eq!((run.count("replaced"), run.count("skipped")), (1, 1));
    let new = env.remote()["z"].clone();
    assert_ne!(new, old, "a new UserID");
    assert_eq!(env.sim.users(SERVICE).len(), 2, "the old user is gone");
    let row = &env.rows()["z"];
    assert_eq!(
        (row.phone_number.as_str(), row.user_id.as_deref()),
        ("+37255550002", Some(new.as_str()))
    );
    let history: (String, String, String, Option<String>) =
        rusqlite::Connection::open(env.ledger())
            .and_then(|c| {
                c.query_row(
                    "SELECT old_user_id, old_phone, new_phone, new_user_id FROM replacements",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
            })
            .expect("history row");
    assert_eq!(
        history,
        (
            old.clone(),
            "+37255550001".into(),
            "+37255550002".into(),
            Some(new.clone())
        )
    );
    let report = std::fs::read_to_string(&report).expect("report");
    assert!(
        report.contains(&format!("replaced,UserID {old} replaced by {new}")),
        "{report}"
    );
    run.expect_line(
        "b.csv:2: replaced: \"z\"",
        &format!("UserID {old} replaced by {new}"),
    );
    env.assert_ledger_matches_remote();
}

#[test]
fn reconcile_finds_disagreements_and_fixes_them_only_when_asked() {
    let env = Env::new();
    let csv = env.file("u.csv", users_csv(0, 5));
    env.import(&csv, &[]).expect_code(0);
    let gone = env.remote()["user1@example.com"].clone();
    assert!(env.sim.remove_user(SERVICE, &gone), "deleted elsewhere");
    env.sim
        .insert_user(SERVICE, "stranger@example.com", "+37250009999");
    rusqlite::Connection::open(env.ledger())
        .and_then(|c| c.execute("UPDATE users SET status = 'retry', user_id = NULL WHERE id_in_service = 'user3@example.com'", []))
        .expect("a row that exists after all");

    let report = env.dir.path().join("rec.csv");
    let out = env
        .cmd()
        .args([
            "reconcile",
            "--json",
            "--report",
            report.to_str().expect("utf8"),
        ])
        .output()
        .expect("reconcile");
    let run = Run::of(out);
    run.expect_code(1);
    let v = run.json();
    assert_eq!(
        (
            v["agree"].as_u64(),
            v["missing_at_verigator"].as_u64(),
            v["at_verigator_only"].as_u64(),
            v["user_id_unknown"].as_u64()
        ),
        (Some(3), Some(1), Some(1), Some(1))
    );
    assert_eq!(v["fixed"], 0);
    assert_eq!(
        env.rows()["user1@example.com"].user_id.as_deref(),
        Some(gone.as_str()),
        "unchanged without --fix"
    );
    let report = std::fs::read_to_string(&report).expect("report");
    assert!(
        report.contains(&format!(
            "missing_at_verigator,user1@example.com,synced,{gone},"
        )),
        "{report}"
    );
    assert!(
        report.contains("at_verigator_only,stranger@example.com,,,"),
        "{report}"
    );

    let run = Run::of(
        env.cmd()
            .args(["reconcile", "--json", "--fix"])
            .output()
            .expect("reconcile --fix"),
    );
    assert_eq!(run.json()["fixed"], 2);
    let rows = env.rows();
    assert_eq!(
        (
            rows["user1@example.com"].status.as_str(),
            rows["user1@example.com"].user_id.as_deref()
        ),
        ("retry", None)
    );
    assert_eq!(
        rows["user3@example.com"].user_id.as_ref(),
        Some(&env.remote()["user3@example.com"])
    );
    // The next import registers the user deleted elsewhere again.
    let run = env.import(&csv, &[]);
    run.expect_code(0);
    assert_eq!(run.count("synced"), 1);
    let run = Run::of(
        env.cmd()
            .args(["reconcile", "--json"])
            .output()
            .expect("reconcile"),
    );
    assert_eq!(
        (
            run.json()["agree"].as_u64(),
            run.json()["at_verigator_only"].as_u64()
        ),
        (Some(5), Some(1))
    );
}

/// Runs an import with progress lines every second; returns each progress line with the time it
/// arrived, the whole run's duration and the run's outcome.
fn watch_progress(env: &Env, args: &[&str], stdin: Option<&str>) -> (Vec<(f64, String)>, f64, Run) {
    use std::io::{BufRead, Write};
    let mut cmd = env.cmd();
    cmd.args(["import", "--json", "--progress-interval", "1"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .stdin(std::process::Stdio::piped());
    let started = std::time::Instant::now();
    let mut child = cmd.spawn().expect("spawn");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("feed");
    }
    drop(input);
    let stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            lines.push((started.elapsed().as_secs_f64(), line));
        }
        lines
    });
    let out = child.wait_with_output().expect("wait");
    let total = started.elapsed().as_secs_f64();
    let lines = reader.join().expect("reader");
    let progress = lines
        .iter()
        .filter(|(_, l)| l.contains(" progress "))
        .cloned()
        .collect();
    let run = Run::of(out);
    (progress, total, run)
}

/// The number after `key` in a progress line (`(50%)`, `100.0 req/s`, `eta 10s`).
fn field(line: &str, before: &str, after: &str) -> Option<f64> {
    let start = line.find(before)? + before.len();
    let rest = &line[start..];
    rest[..rest.find(after)?].trim().parse().ok()
}

#[test]
fn progress_lines_tell_the_truth_about_done_rate_and_eta() {
    let env = Env::new();
    let csv = env.file("u.csv", users_csv(0, 400));
    let (lines, total, run) =
        watch_progress(&env, &["--rate", "20", csv.to_str().expect("utf-8")], None);
    run.expect_code(0);
    assert!(total > 15.0, "the limiter holds 20/s: {total}");
    // The line nearest the middle of the run.
    let (at, line) = lines
        .iter()
        .min_by(|a, b| {
            (a.0 - total / 2.0)
                .abs()
                .total_cmp(&(b.0 - total / 2.0).abs())
        })
        .expect("progress lines");
    assert!(line.contains("/400 rows ("), "{line}");
    let percent = field(line, "rows (", "%)").expect("percent");
    let expected = at / total * 100.0;
    assert!(
        (percent - expected).abs() <= 10.0,
        "{percent}% at {at:.1}s of {total:.1}s: {line}"
    );
    let rate = field(line, "· ", " req/s").expect("rate");
    assert!((19.0..=21.0).contains(&rate), "{rate} req/s: {line}");
    let eta = field(line, "eta ", "s ·").expect("eta in seconds");
    let left = total - at;
    assert!(
        (eta - left).abs() <= left * 0.3 + 1.0,
        "eta {eta}s, {left:.1}s left: {line}"
    );

    // A rerun that skips everything promises nothing long.
    let (lines, _, run) = watch_progress(&env, &[csv.to_str().expect("utf-8")], None);
    run.expect_code(0);
    for (_, line) in &lines {
        if let Some(eta) = field(line, "eta ", "s ·") {
            assert!(eta <= 1.0, "{line}");
        }
    }

    // Standard input has no total: no percent, no ETA.
    let (lines, _, run) = watch_progress(&env, &["--rate", "20", "-"], Some(&users_csv(1000, 40)));
    run.expect_code(0);
    assert!(!lines.is_empty(), "progress lines for stdin");
    for (_, line) in &lines {
        assert!(!line.contains('%') && !line.contains("eta"), "{line}");
    }
}

#[test]
fn a_fifo_is_read_once_even_with_progress_on() {
    use std::io::Write;
    let env = Env::new();
    let fifo = env.dir.path().join("users.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(&fifo)
                .expect("open fifo");
            f.write_all(users_csv(0, 3000).as_bytes())
                .expect("write fifo");
        })
    };
    let run = Run::of(
        env.cmd()
            .args([
                "import",
                "--json",
                "--rate",
                "0",
                "--progress-interval",
                "1",
            ])
            .arg(&fifo)
            .output()
            .expect("runs"),
    );
    writer.join().expect("writer");
    run.expect_code(0);
    assert_eq!(run.count("synced"), 3000, "no row lost to a second reader");
}

#[test]
fn reconcile_walks_a_large_list_beside_the_ledger_and_reports_in_id_order() {
    // 10,000 users at Verigator; the ledger knows 2,500 of them (more than one chunk of rows).
    let seed = (0..10_000)
        .map(|i| verigator_sync::simulator::SeedUser {
            service_id: None,
            id_in_service: format!("user{i}@example.com"),
            phone_number: format!("+3725{i:07}"),
            user_id: None,
        })
        .collect();
    let env = Env::with(SimConfig {
        seed,
        ..SimConfig::default()
    });
    env.import(
        &env.file("u.csv", users_csv(0, 2_500)),
        &["--concurrency", "32"],
    )
    .expect_code(0);
    let remote = env.remote();
    assert!(env.sim.remove_user(SERVICE, &remote["user7@example.com"]));
    rusqlite::Connection::open(env.ledger())
        .and_then(|c| {
            c.execute_batch(
                "UPDATE users SET user_id = 'stale' WHERE id_in_service = 'user1000@example.com';
                 UPDATE users SET status = 'retry', user_id = NULL WHERE id_in_service = 'user2000@example.com';
                 INSERT INTO users (service_id, id_in_service, phone_number, status, updated_at)
                   SELECT service_id, 'zz-never@example.com', phone_number, 'failed', updated_at
                   FROM users LIMIT 1;",
            )
        })
        .expect("disagreements");
    let report = env.dir.path().join("rec.csv");
    let run = Run::of(
        env.cmd()
            .args(["reconcile", "--json", "--fix", "--report"])
            .arg(&report)
            .output()
            .expect("reconcile"),
    );
    run.expect_code(1);
    let v = run.json();
    let counts = [
        "agree",
        "at_verigator_only",
        "missing_at_verigator",
        "user_id_differs",
        "user_id_unknown",
        "not_registered",
        "fixed",
        "verigator_users",
        "ledger_rows",
    ]
    .map(|k| v[k].as_u64().unwrap_or(u64::MAX));
    assert_eq!(counts, [2_497, 7_500, 1, 1, 1, 1, 3, 9_999, 2_501], "{v}");
    let text = std::fs::read_to_string(&report).expect("report");
    let ids: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).expect("id"))
        .collect();
    assert_eq!(ids.len(), 7_503);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in id order");
    let rows = env.rows();
    assert_eq!(rows["user7@example.com"].status, "retry");
    assert_eq!(
        rows["user1000@example.com"].user_id.as_ref(),
        Some(&remote["user1000@example.com"])
    );
    assert_eq!(rows["user2000@example.com"].status, "present");
}
