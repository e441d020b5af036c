//! End-to-end tests: the real binary against the project's simulator on 127.0.0.1:0, checked by
//! reading the ledger and the simulator's state.

mod support;

use support::{Env, SERVICE, sample, users_csv};
use verigator_sync::simulator::SimConfig;

#[test]
fn fresh_import_registers_every_sample_user() {
    let env = Env::new();
    let run = env.import(&sample("users.csv"), &[]);
    run.expect_code(0);
    assert_eq!(
        (run.count("rows"), run.count("sent"), run.count("synced")),
        (300, 300, 300)
    );
    let rows = env.rows();
    assert_eq!(rows.len(), 300);
    assert!(
        rows.values()
            .all(|r| r.status == "synced" && r.attempts == 1)
    );
    assert_eq!(env.remote().len(), 300);
    env.assert_ledger_matches_remote();
    // Phones were normalised before sending: spaces and 00 are gone.
    assert!(
        rows.values()
            .all(|r| r.phone_number.starts_with('+') && !r.phone_number.contains(' '))
    );
}

#[test]
fn rerun_after_success_sends_nothing() {
    let env = Env::new();
    env.import(&sample("users.csv"), &[]).expect_code(0);
    let before = env.sim.stats().create_requests;
    let run = env.import(&sample("users.csv"), &[]);
    run.expect_code(0);
    assert_eq!((run.count("skipped"), run.count("sent")), (300, 0));
    assert_eq!(env.sim.stats().create_requests, before, "nothing was sent");
}

#[test]
fn incremental_file_sends_only_new_rows() {
    let env = Env::new();
    env.import(&env.file("a.csv", users_csv(0, 10)), &[])
        .expect_code(0);
    let run = env.import(&env.file("b.csv", users_csv(0, 15)), &[]);
    run.expect_code(0);
    assert_eq!(
        (run.count("skipped"), run.count("sent"), run.count("synced")),
        (10, 5, 5)
    );
    for i in 0..15 {
        assert_eq!(
            env.sim
                .create_attempts(SERVICE, &format!("user{i}@example.com")),
            1,
            "user{i}"
        );
    }
    env.assert_ledger_matches_remote();
}

#[test]
fn existing_users_become_present_with_their_user_id() {
    let env = Env::new();
    let existing: Vec<(String, String)> = [2, 5, 7]
        .iter()
        .map(|i| {
            let id = format!("user{i}@example.com");
            let uid = env.sim.insert_user(SERVICE, &id, &format!("+3725{i:07}"));
            (id, uid)
        })
        .collect();
    let run = env.import(&env.file("u.csv", users_csv(0, 10)), &[]);
    run.expect_code(0);
    assert_eq!(
        (
            run.count("synced"),
            run.count("present"),
            run.count("resolved")
        ),
        (7, 3, 3)
    );
    let rows = env.rows();
    for (id, uid) in &existing {
        assert_eq!(rows[id].status, "present");
        assert_eq!(
            rows[id].user_id.as_ref(),
            Some(uid),
            "{id} resolved to the existing UserID"
        );
    }
    assert_eq!(env.sim.stats().list_requests, 1, "one list per run");
    env.assert_ledger_matches_remote();
}

#[test]
fn rejected_rows_are_failed_with_the_reason_and_not_resent() {
    let env = Env::with(SimConfig {
        reject_phone: Some(regex::Regex::new(r"^\+37250000003$").expect("regex")),
        ..SimConfig::default()
    });
    let csv = env.file("u.csv", users_csv(0, 6));
    let run = env.import(&csv, &[]);
    run.expect_code(1);
    assert_eq!((run.count("synced"), run.count("failed")), (5, 1));
    let row = &env.rows()["user3@example.com"];
    assert_eq!(row.status, "failed");
    let reason = row.last_error.as_deref().unwrap_or_default();
    assert!(
        reason.starts_with("422: ") && reason.contains("Invalid phone number"),
        "{reason}"
    );
    let again = env.import(&csv, &[]);
    again.expect_code(1);
    assert_eq!(again.count("sent"), 0);
    assert_eq!(
        env.sim.create_attempts(SERVICE, "user3@example.com"),
        1,
        "a refused row is not resent"
    );
}

#[test]
fn invalid_rows_are_never_sent_and_name_file_and_line() {
    let env = Env::new();
    let run = env.import(&sample("users-invalid.csv"), &[]);
    run.expect_code(1);
    assert_eq!(run.count("rows"), 15);
    assert_eq!(run.count("invalid"), 12);
    assert_eq!(run.count("duplicate"), 1);
    assert_eq!((run.count("sent"), run.count("synced")), (2, 2));
    assert_eq!(
        run.count("phone_warnings"),
        1,
        "the fixed line of the (0) row"
    );
    assert_eq!(
        env.sim.stats().create_requests,
        2,
        "only the valid rows reached the API"
    );
    assert_eq!(
        env.remote().len(),
        2,
        "the (0) row is registered as +442079460958"
    );
    assert_eq!(
        env.rows()["trunk.zero@example.com"].phone_number,
        "+442079460958"
    );
    run.expect_line(
        "users-invalid.csv:3: invalid: \"\"",
        "id_in_service is empty",
    );
    run.expect_line(
        "users-invalid.csv:4: invalid: \"national.number@example.com\"",
        "phone has no country prefix (use +CC… or --default-region)",
    );
    run.expect_line(
        "users-invalid.csv:12: invalid: \"extension@example.com\"",
        "an SMS cannot reach one: give the number alone",
    );
    run.expect_line(
        "users-invalid.csv:13: invalid: \"vanity@example.com\"",
        "(a vanity number?): write it in digits",
    );
    run.expect_line(
        "users-invalid.csv:14: invalid: \"wrong.country@example.com\"",
        "its numbers have 7, 8 or 10 digits after the country code",
    );
    run.expect_line(
        "users-invalid.csv:15: phone warning: \"trunk.zero@example.com\" (+44 (****58)",
        "the number is a fixed line, not a mobile: an SMS may never reach it",
    );
    run.expect_line(
        "users-invalid.csv:16: duplicate: \"valid.user@example.com\"",
        "the first occurrence wins",
    );
}

#[test]
fn both_200_and_201_are_synced() {
    for status in [200, 201] {
        let env = Env::with(SimConfig {
            create_status: status,
            ..SimConfig::default()
        });
        let run = env.import(&env.file("u.csv", users_csv(0, 5)), &[]);
        run.expect_code(0);
        assert_eq!(run.count("synced"), 5, "create status {status}");
        env.assert_ledger_matches_remote();
    }
}

#[test]
fn export_has_the_documented_header_and_every_user_id() {
    let env = Env::new();
    env.import(&sample("users.csv"), &[]).expect_code(0);
    let out = env.cmd().arg("export").output().expect("export runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut reader = csv::Reader::from_reader(&out.stdout[..]);
    let header: Vec<String> = reader
        .headers()
        .expect("header")
        .iter()
        .map(String::from)
        .collect();
    assert_eq!(
        header.join(","),
        "service_id,id_in_service,phone_number,user_id,status,ctime,updated_at,last_error"
    );
    let remote = env.remote();
    let mut exported = 0;
    for record in reader.records() {
        let record = record.expect("record");
        assert_eq!(&record[0], SERVICE);
        assert_eq!(
            remote.get(&record[1]).map(String::as_str),
            Some(&record[3]),
            "UserID of {}",
            &record[1]
        );
        assert_eq!(&record[4], "synced");
        assert!(!record[5].is_empty(), "ctime kept");
        exported += 1;
    }
    assert_eq!(exported, remote.len());

    let out_file = env.dir.path().join("failed.csv");
    let status = env
        .cmd()
        .args(["export", "--status", "failed,retry", "--out"])
        .arg(&out_file)
        .status()
        .expect("export runs");
    assert!(status.success());
    let text = std::fs::read_to_string(&out_file).expect("export file");
    assert_eq!(text.lines().count(), 1, "only the header: nothing failed");
}

#[test]
fn json_summary_has_exactly_the_documented_keys() {
    let env = Env::new();
    let run = env.import(&env.file("u.csv", users_csv(0, 3)), &[]);
    run.expect_code(0);
    let json = run.json();
    let mut keys: Vec<&str> = json
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "changed",
            "deleted",
            "duplicate",
            "elapsed_s",
            "exit_code",
            "failed",
            "invalid",
            "not_mobile",
            "pending",
            "phone_warnings",
            "present",
            "prune_refused",
            "replaced",
            "resolved",
            "retry",
            "rows",
            "run_id",
            "sent",
            "skipped",
            "suspect_duplicates",
            "synced",
            "unresolved"
        ]
    );
    assert_eq!(json["exit_code"], 0);
    assert_eq!(
        run.stdout.trim().lines().count(),
        1,
        "exactly one JSON object on stdout"
    );
}

#[test]
fn usage_and_input_errors_exit_2_before_any_request() {
    let env = Env::new();
    let good = env.file("u.csv", users_csv(0, 3));
    let no_column = env.file("bad.csv", "user,tel\na,+37255555555\n");
    let run = env.import(&no_column, &[]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("bad.csv: no id column (looked for id_in_service, username, email, login); headers found: \"user\", \"tel\""),
        "{}",
        run.stderr
    );
    env.import(&env.dir.path().join("missing.csv"), &[])
        .expect_code(2);
    let out = env
        .cmd()
        .env_remove("VERIGATOR_PASSWORD")
        .args(["import", "--no-progress"])
        .arg(&good)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("VERIGATOR_PASSWORD is not set"));
    let run = env.import(&good, &["--concurrency", "0"]);
    run.expect_code(2);
    let out = env
        .cmd()
        .args(["import", "--no-such-flag"])
        .arg(&good)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "clap usage errors exit 2");
    assert_eq!(env.sim.stats().create_requests, 0);
}

#[test]
fn columns_can_be_named_and_detected() {
    let env = Env::new();
    let csv = env.file(
        "u.csv",
        "Login;Tel;MSISDN\nalice;x;+372 5555 0001\nbob;y;00372 5555 0002\n",
    );
    let run = env.import(&csv, &["--phone-column", "msisdn"]);
    run.expect_code(0);
    let rows = env.rows();
    assert_eq!(rows["alice"].phone_number, "+37255550001");
    assert_eq!(rows["bob"].phone_number, "+37255550002");
}

#[test]
fn stdin_is_read_with_a_dash() {
    use std::io::Write;
    use std::process::Stdio;
    let env = Env::new();
    let mut child = env
        .cmd()
        .args(["import", "--json", "--no-progress", "--rate", "0", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(users_csv(0, 4).as_bytes())
        .expect("write stdin");
    let run = support::Run::of(child.wait_with_output().expect("wait"));
    run.expect_code(0);
    assert_eq!(run.count("synced"), 4);
}

#[test]
fn status_shows_counts_and_runs() {
    let env = Env::new();
    env.import(&env.file("u.csv", users_csv(0, 4)), &[])
        .expect_code(0);
    let out = env
        .cmd()
        .args(["status", "--json"])
        .output()
        .expect("status runs");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["services"][0]["service_id"], SERVICE);
    assert_eq!(v["services"][0]["synced"], 4);
    assert_eq!(v["runs"][0]["synced"], 4);
    assert_eq!(v["runs"][0]["exit_code"], 0);
    let out = env.cmd().arg("status").output().expect("status runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(SERVICE) && text.contains("synced"), "{text}");
}

#[test]
fn simulate_prints_its_address_first() {
    use std::io::BufRead;
    use std::process::Stdio;
    let env = Env::new();
    let mut child = env
        .cmd()
        .args(["simulate", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn simulate");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_string();
    let run = Run::of(
        env.cmd()
            .env("VERIGATOR_BASE_URL", &url)
            .args(["import", "--json", "--no-progress"])
            .arg(env.file("u.csv", users_csv(0, 2)))
            .output()
            .expect("import"),
    );
    let _ = child.kill();
    let _ = child.wait();
    run.expect_code(0);
    assert_eq!(run.count("synced"), 2);
}

use support::Run;

#[test]
fn demo_runs_from_any_directory_and_accounts_for_every_user_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_verigator-sync"))
        .arg("demo")
        .current_dir(dir.path())
        .env_remove("VERIGATOR_USERNAME")
        .env_remove("VERIGATOR_PASSWORD")
        .output()
        .expect("demo runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("skipped          300"),
        "the second run skips everything:\n{stderr}"
    );
    assert!(
        stderr.contains("300 of the simulator's 300 users have their UserID in the ledger"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("dir").count(),
        0,
        "nothing left behind"
    );
}

#[test]
fn a_reader_that_goes_away_ends_an_export_quietly() {
    use std::io::BufRead;
    let env = Env::new();
    env.import(
        &env.file("u.csv", users_csv(0, 1000)),
        &["--concurrency", "32"],
    )
    .expect_code(0);
    let mut child = env
        .cmd()
        .arg("export")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("export");
    {
        // One line, then the reader goes away, as `| head -1` does.
        let stdout = child.stdout.take().expect("stdout");
        let mut first = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut first)
            .expect("one line");
        assert!(first.starts_with("service_id,"), "{first}");
    }
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "quiet");
}

#[test]
fn every_missing_setting_is_named_at_once() {
    let env = Env::new();
    let csv = env.file("u.csv", users_csv(0, 1));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_verigator-sync"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .current_dir(env.dir.path())
        .arg("import")
        .arg(&csv)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().next().unwrap_or_default();
    for wanted in [
        "--service-id or set VERIGATOR_SERVICE_ID",
        "VERIGATOR_USERNAME is not set",
        "VERIGATOR_PASSWORD is not set",
    ] {
        assert!(line.contains(wanted), "{wanted} in one line: {stderr}");
    }
    assert!(
        !env.dir.path().join("verigator-sync.db").exists(),
        "nothing opened"
    );
}

#[test]
fn help_teaches_and_colour_follows_the_terminal_and_no_color() {
    let help = |args: &[&str], no_color: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_verigator-sync"));
        cmd.args(args);
        if no_color {
            cmd.env("NO_COLOR", "1");
        } else {
            cmd.env_remove("NO_COLOR");
        }
        let out = cmd.output().expect("runs");
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        out.stdout
    };
    let top = String::from_utf8(help(&["--help"], false)).expect("utf-8");
    assert!(
        top.contains("Examples:") && top.contains("Exit codes:"),
        "{top}"
    );
    for sub in [
        "export",
        "status",
        "reconcile",
        "simulate",
        "import",
        "demo",
        "",
    ] {
        let args: Vec<&str> = [sub, "--help"]
            .into_iter()
            .filter(|a| !a.is_empty())
            .collect();
        let text = String::from_utf8(help(&args, false)).expect("utf-8");
        let examples = text.split("Examples:").nth(1).unwrap_or_default();
        assert!(!examples.is_empty(), "{sub}: {text}");
        // Short enough never to be wrapped (and broken) on an 80-column terminal.
        for line in examples.lines() {
            assert!(line.chars().count() < 80, "{sub}: {line:?}");
        }
    }
    // After `--` a file may be called `--color`: it colours nothing.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_verigator-sync"))
        .args([
            "--color",
            "never",
            "import",
            "--rate",
            "abc",
            "--",
            "--color=always",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        !out.stderr.contains(&0x1b),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Off a terminal there is no colour; NO_COLOR and --color never keep it off even when forced.
    assert!(!help(&["--help"], false).contains(&0x1b));
    assert!(!help(&["--color", "never", "--help"], false).contains(&0x1b));
    assert!(!help(&["--help"], true).contains(&0x1b));
    assert!(help(&["--color", "always", "--help"], false).contains(&0x1b));
}

#[test]
fn completions_and_the_man_page_come_from_the_command_line_itself() {
    let env = Env::new();
    let run = |args: &[&str]| {
        let out = env.cmd().args(args).output().expect("runs");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("text")
    };
    let bash = run(&["completions", "bash"]);
    // The function that bash calls, and its registration for the command.
    assert!(bash.contains("_verigator__sync() {"), "{bash}");
    assert!(
        bash.lines().any(
            |l| l.trim_start().starts_with("complete -F _verigator__sync")
                && l.ends_with(" verigator-sync")
        ),
        "{bash}"
    );
    assert!(bash.contains("--dry-run"), "the options are completed");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        assert!(
            run(&["completions", shell]).contains("verigator-sync"),
            "{shell}"
        );
    }
    let page = run(&["man"]);
    assert!(
        page.starts_with(".ie") || page.starts_with(".TH"),
        "{}",
        &page[..80]
    );
    for sub in [
        "import",
        "status",
        "export",
        "reconcile",
        "simulate",
        "demo",
        "completions",
    ] {
        assert!(
            page.contains(&format!(".SH \"VERIGATOR\\-SYNC {}\"", sub.to_uppercase())),
            "no section for {sub}"
        );
    }
    for needed in [
        "\\-\\-dry\\-run",
        "EXIT STATUS",
        "VERIGATOR_PASSWORD",
        "HTTPS_PROXY",
    ] {
        assert!(page.contains(needed), "the man page lacks {needed}");
    }
    // An unknown shell is a usage error.
    let out = env
        .cmd()
        .args(["completions", "tcsh"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
}
