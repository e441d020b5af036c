//! Paths off the main road: lists that lie, replacements cut short, answers lost before a phone
//! changed, signals in every phase, outages, failures after sending, and ledgers reached through
//! other paths. Each test runs the real binary against the simulator and reads the ledger.

mod support;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::{Env, Run, SERVICE, signal, users_csv, wait_until};
use verigator_sync::simulator::SimConfig;

/// Runs `sql` on the test's ledger.
fn sql(env: &Env, sql: &str) {
    rusqlite::Connection::open(env.ledger())
        .and_then(|c| c.execute_batch(sql))
        .expect("sql on the ledger");
}

/// `import` with `args`, running in the background with its output piped.
fn spawn_import(env: &Env, args: &[&str]) -> Child {
    env.cmd()
        .args(["import", "--json", "--no-progress"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn import")
}

/// A value of one query on the test's ledger.
fn query<T: rusqlite::types::FromSql>(env: &Env, sql: &str) -> T {
    rusqlite::Connection::open(env.ledger())
        .and_then(|c| c.query_row(sql, [], |r| r.get(0)))
        .expect("query on the ledger")
}

#[test]
fn a_ledger_reached_through_a_symlink_or_another_path_has_one_lock() {
    let env = Env::new();
    let csv = env.file("u.csv", users_csv(0, 3));
    env.import(&csv, &[]).expect_code(0);
    // Hold the ledger's lock as a running import would.
    let lock = std::fs::File::open(env.dir.path().join("ledger.db.lock")).expect("lock file");
    lock.try_lock().expect("free before the test takes it");
    std::os::unix::fs::symlink(env.ledger(), env.dir.path().join("link.db")).expect("symlink");
    std::fs::create_dir(env.dir.path().join("sub")).expect("sub");
    for other in ["link.db", "sub/../ledger.db", "./ledger.db"] {
        let run = Run::of(
            env.cmd()
                .args(["import", "--json", "--no-progress", "--ledger", other])
                .arg(&csv)
                .output()
                .expect("runs"),
        );
        run.expect_code(3);
        assert!(
            run.stderr.contains("is in use by another run"),
            "{other}: {}",
            run.stderr
        );
    }
    assert_eq!(env.sim.stats().create_requests, 3, "nothing sent again");
}

#[test]
fn a_lock_file_that_is_a_symlink_is_refused_and_its_target_untouched() {
    let env = Env::new();
    let precious = env.file("precious.txt", "keep me\n");
    std::os::unix::fs::symlink(&precious, env.dir.path().join("ledger.db.lock")).expect("symlink");
    let run = env.import(&env.file("u.csv", users_csv(0, 3)), &[]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("ledger.db.lock") && run.stderr.contains("symbolic link"),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&precious).expect("read"),
        "keep me\n"
    );
    assert_eq!(env.sim.stats().create_requests, 0);
}

#[test]
fn a_dangling_symlink_ledger_gets_a_clear_message() {
    let env = Env::new();
    std::os::unix::fs::symlink(env.dir.path().join("nowhere/l.db"), env.ledger()).expect("symlink");
    let run = env.import(&env.file("u.csv", users_csv(0, 3)), &[]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("is a symbolic link to") && run.stderr.contains("which does not exist"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("os error 17"), "{}", run.stderr);
}

/// Seed users `from..from + n` of [`users_csv`], so that importing them meets 409s.
fn seeds(from: usize, n: usize) -> Vec<verigator_sync::simulator::SeedUser> {
    (from..from + n)
        .map(|i| verigator_sync::simulator::SeedUser {
            service_id: None,
            id_in_service: format!("user{i}@example.com"),
            phone_number: format!("+3725{i:07}"),
            user_id: None,
        })
        .collect()
}

#[test]
fn present_rows_of_this_file_without_user_id_make_the_run_incomplete() {
    let env = Env::with(SimConfig {
        seed: seeds(0, 5),
        list_cap: Some(2),
        ..SimConfig::default()
    });
    let csv = env.file("u.csv", users_csv(0, 5));
    let report = env.dir.path().join("report.csv");
    let run = env.import(&csv, &["--report", report.to_str().expect("utf-8 path")]);
    run.expect_code(1);
    assert_eq!(
        (
            run.count("present"),
            run.count("resolved"),
            run.count("unresolved")
        ),
        (5, 2, 3)
    );
    assert!(run.stderr.contains("it is truncated"), "{}", run.stderr);
    let text = std::fs::read_to_string(&report).expect("report");
    let listed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(",unresolved,"))
        .collect();
    assert_eq!(listed.len(), 3, "{text}");
    assert!(
        listed
            .iter()
            .all(|l| l.contains("truncated (2 of 5 users)")),
        "{text}"
    );
    let unresolved: i64 = query(&env, "SELECT count(*) FROM users WHERE user_id IS NULL");
    assert_eq!(unresolved, 3);
    assert_eq!(query::<i64>(&env, "SELECT unresolved FROM runs"), 3);

    // Another file: the old rows are warned about but do not fail tonight's run.
    let other = env.import(&env.file("v.csv", users_csv(100, 2)), &[]);
    other.expect_code(0);
    assert_eq!(other.count("unresolved"), 0);
    assert!(
        other
            .stderr
            .contains("3 present users of earlier runs (not in this file) still lack a UserID"),
        "{}",
        other.stderr
    );
}

#[test]
fn an_id_listed_twice_is_not_guessed_and_counts_never_wrap() {
    let env = Env::with(SimConfig {
        seed: seeds(0, 3),
        list_repeat: vec!["user1@example.com".into()],
        ..SimConfig::default()
    });
    let csv = env.file("u.csv", users_csv(0, 3));
    let run = env.import(&csv, &[]);
    run.expect_code(1);
    assert_eq!((run.count("resolved"), run.count("unresolved")), (2, 1));
    assert!(
        run.stderr
            .contains("the user list names it 2 times, with UserIDs "),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("18446744073709551615"),
        "{}",
        run.stderr
    );
    let rows = env.rows();
    assert_eq!(rows["user1@example.com"].user_id, None, "no guess");
    assert_eq!(
        rows["user0@example.com"].user_id.as_ref(),
        env.remote().get("user0@example.com")
    );
}

#[test]
fn resolution_through_a_list_much_larger_than_the_wanted_rows_finds_every_user_id() {
    // 20,000 users at Verigator, streamed in several chunks; 40 of them (spread through the
    // list) and 5 new ones in the file.
    let env = Env::with(SimConfig {
        seed: seeds(0, 20_000),
        ..SimConfig::default()
    });
    let mut csv = String::from("id_in_service,phone_number\n");
    for i in (0..20_000).step_by(500).chain(30_000..30_005) {
        csv.push_str(&format!("user{i}@example.com,+3725{i:07}\n"));
    }
    let run = env.import(&env.file("u.csv", csv), &[]);
    run.expect_code(0);
    assert_eq!(
        (
            run.count("present"),
            run.count("resolved"),
            run.count("synced")
        ),
        (40, 40, 5)
    );
    assert_eq!(env.sim.stats().list_requests, 1);
    let remote = env.remote();
    let rows = env.rows();
    assert_eq!(rows.len(), 45);
    for (id, row) in &rows {
        assert_eq!(row.user_id.as_ref(), remote.get(id), "{id}");
    }
}

/// `reconcile` with `args`.
fn reconcile(env: &Env, args: &[&str]) -> Run {
    Run::of(
        env.cmd()
            .arg("reconcile")
            .args(args)
            .output()
            .expect("reconcile runs"),
    )
}

#[test]
fn reconcile_refuses_a_truncated_list_and_changes_nothing() {
    let env = Env::with(SimConfig {
        list_cap: Some(2),
        ..SimConfig::default()
    });
    env.import(&env.file("u.csv", users_csv(0, 6)), &[])
        .expect_code(0);
    let before = env.rows();
    let run = reconcile(&env, &["--fix"]);
    run.expect_code(1);
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "one line: {}", run.stderr);
    assert!(
        lines[0].contains("holds 2 users but says there are 6: it is truncated"),
        "{}",
        run.stderr
    );
    assert_eq!(env.rows(), before, "nothing changed");
}

#[test]
fn reconcile_fix_on_an_empty_list_needs_force_and_keeps_every_user_id_in_the_history() {
    let env = Env::new();
    env.import(&env.file("u.csv", users_csv(0, 4)), &[])
        .expect_code(0);
    let remote = env.remote();
    // One user has another UserID at Verigator now, then all of them are gone.
    let moved = &remote["user0@example.com"];
    assert!(env.sim.remove_user(SERVICE, moved));
    let new_uid = env
        .sim
        .insert_user(SERVICE, "user0@example.com", "+37250000000");
    let run = reconcile(&env, &["--fix"]);
    run.expect_code(0);
    assert_eq!(
        env.rows()["user0@example.com"].user_id.as_ref(),
        Some(&new_uid)
    );
    for user in env.sim.users(SERVICE) {
        assert!(env.sim.remove_user(SERVICE, &user.id));
    }

    let before = env.rows();
    let run = reconcile(&env, &["--fix"]);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("the user list is empty but the ledger holds 4 UserIDs")
            && run
                .stderr
                .contains("--fix --force would mark those 4 rows retry"),
        "{}",
        run.stderr
    );
    assert_eq!(env.rows(), before, "--fix alone changed nothing");

    reconcile(&env, &["--fix", "--force"]).expect_code(0);
    let rows = env.rows();
    assert!(
        rows.values()
            .all(|r| r.status == "retry" && r.user_id.is_none())
    );

    let history = Run::of(
        env.cmd()
            .args(["export", "--history"])
            .output()
            .expect("export"),
    );
    history.expect_code(0);
    let mut lines = history.stdout.lines();
    assert_eq!(
        lines.next(),
        Some("service_id,id_in_service,kind,old_user_id,new_user_id,old_phone,new_phone,at")
    );
    let entries: Vec<&str> = lines.collect();
    assert_eq!(entries.len(), 5, "{}", history.stdout);
    // Every UserID the ledger ever held is still there: the first one of user0 and all of the last.
    for uid in remote.values().chain(std::iter::once(&new_uid)) {
        assert!(
            history.stdout.contains(uid.as_str()),
            "{uid} kept: {}",
            history.stdout
        );
    }
    assert!(
        history.stdout.contains("user_id_differs")
            && history.stdout.contains("missing_at_verigator")
    );
    let status = Run::of(env.cmd().arg("status").output().expect("status"));
    assert!(
        status
            .stdout
            .contains("0 replaced (--apply-changes), 5 fixed (reconcile --fix)"),
        "{}",
        status.stdout
    );
    // The export's own header is a contract: unchanged.
    let export = Run::of(env.cmd().arg("export").output().expect("export"));
    assert!(export.stdout.starts_with(
        "service_id,id_in_service,phone_number,user_id,status,ctime,updated_at,last_error\n"
    ));
}

/// `n` users with the phones of [`users_csv`] shifted by `shift`: the same ids, other phones.
fn users_with_phones(n: usize, shift: usize) -> String {
    let mut s = String::from("id_in_service,phone_number\n");
    for i in 0..n {
        s.push_str(&format!("user{i}@example.com,+3726{:07}\n", i + shift));
    }
    s
}

#[test]
fn a_replacement_cut_short_after_its_delete_forgets_the_deleted_user_id() {
    let env = Env::with(SimConfig {
        latency: Duration::from_millis(400),
        ..SimConfig::default()
    });
    env.import(
        &env.file("u.csv", users_csv(0, 20)),
        &["--concurrency", "20"],
    )
    .expect_code(0);
    let old = env.remote();
    let changed = env.file("v.csv", users_with_phones(20, 0));
    let child = spawn_import(
        &env,
        &[
            "--rate",
            "0",
            "--concurrency",
            "20",
            "--apply-changes",
            changed.to_str().expect("utf-8"),
        ],
    );
    wait_until("every old user deleted", || env.sim.stats().deleted == 20);
    // The creates are in flight: a second signal stops at once, before their answers.
    signal(&child, "-INT");
    std::thread::sleep(Duration::from_millis(50));
    signal(&child, "-INT");
    let run = Run::of(child.wait_with_output().expect("wait"));
    run.expect_code(3);
    let rows = env.rows();
    for (id, uid) in &old {
        let row = &rows[id];
        assert_ne!(
            row.user_id.as_ref(),
            Some(uid),
            "{id} keeps a deleted UserID: {row:?}"
        );
    }
    // Every UserID the ledger hands out exists; the old ones are in the history.
    let remote = env.remote();
    for row in rows.values() {
        if let Some(uid) = &row.user_id {
            assert_eq!(remote.get(&row.id_in_service), Some(uid), "{row:?}");
        }
    }
    let history: i64 = query(&env, "SELECT count(*) FROM replacements");
    assert_eq!(history, 20);
    // A plain rerun settles every user with the new phone.
    env.import(&changed, &[]).expect_code(0);
    env.assert_ledger_matches_remote();
    for user in env.sim.users(SERVICE) {
        assert!(user.phone_number.starts_with("+3726"), "{user:?}");
    }
    assert_eq!(env.rows().len(), 20);
}

#[test]
fn a_409_after_a_lost_answer_with_another_phone_is_a_change_not_present() {
    let env = Env::new();
    env.import(&env.file("u.csv", users_csv(0, 3)), &[])
        .expect_code(0);
    // The first create of user1 reached Verigator with its old phone, but its answer was lost.
    sql(
        &env,
        "UPDATE users SET status = 'retry', user_id = NULL WHERE id_in_service = 'user1@example.com'",
    );
    let mut text = users_csv(0, 3);
    text = text.replace(
        "user1@example.com,+37250000001",
        "user1@example.com,+37259999999",
    );
    let csv = env.file("v.csv", text);
    let run = env.import(&csv, &[]);
    run.expect_code(1);
    assert_eq!((run.count("changed"), run.count("present")), (1, 0));
    assert!(
        run.stderr.contains("created earlier with +3725****01"),
        "{}",
        run.stderr
    );
    let row = &env.rows()["user1@example.com"];
    assert_eq!(
        (
            row.status.as_str(),
            row.phone_number.as_str(),
            row.user_id.as_ref()
        ),
        (
            "present",
            "+37250000001",
            env.remote().get("user1@example.com")
        )
    );
    // The next run sees the change again, and --apply-changes replaces the user.
    env.import(&csv, &[]).expect_code(1);
    env.import(&csv, &["--apply-changes"]).expect_code(0);
    let user1 = env
        .sim
        .users(SERVICE)
        .into_iter()
        .find(|u| u.id_in_service == "user1@example.com")
        .expect("user1");
    assert_eq!(user1.phone_number, "+37259999999");
    env.assert_ledger_matches_remote();
}

#[test]
fn a_signal_during_the_final_user_list_interrupts_the_run() {
    let env = Env::with(SimConfig {
        seed: seeds(0, 3),
        latency: Duration::from_millis(1500),
        ..SimConfig::default()
    });
    let csv = env.file("u.csv", users_csv(0, 3));
    let child = spawn_import(&env, &["--rate", "0", csv.to_str().expect("utf-8")]);
    wait_until("the user list is asked for", || {
        env.sim.stats().list_requests > 0
    });
    let signalled = Instant::now();
    signal(&child, "-INT");
    let run = Run::of(child.wait_with_output().expect("wait"));
    run.expect_code(3);
    assert!(
        signalled.elapsed() < Duration::from_millis(1400),
        "the list was abandoned, not awaited: {:?}",
        signalled.elapsed()
    );
    assert!(
        run.stderr.contains("aborted: interrupted by a signal"),
        "{}",
        run.stderr
    );
    assert_eq!((run.count("present"), run.count("unresolved")), (3, 3));
    // Everything answered is committed; the next run resolves the UserIDs.
    assert_eq!(env.rows().len(), 3);
    assert_eq!(query::<i64>(&env, "SELECT exit_code FROM runs"), 3);
    env.import(&csv, &[]).expect_code(0);
    env.assert_ledger_matches_remote();
}

#[test]
fn a_signal_during_reconcile_stops_it_with_exit_3() {
    let env = Env::with(SimConfig {
        latency: Duration::from_millis(1500),
        ..SimConfig::default()
    });
    env.import(&env.file("u.csv", users_csv(0, 3)), &["--concurrency", "3"])
        .expect_code(0);
    let before = env.rows();
    let child = env
        .cmd()
        .args(["reconcile", "--fix"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("reconcile");
    wait_until("the user list is asked for", || {
        env.sim.stats().list_requests > 0
    });
    signal(&child, "-TERM");
    let run = Run::of(child.wait_with_output().expect("wait"));
    run.expect_code(3);
    assert!(
        run.stderr
            .contains("interrupted by a signal: nothing was changed"),
        "{}",
        run.stderr
    );
    assert_eq!(env.rows(), before);
}

#[test]
fn a_report_path_that_is_a_directory_is_refused_before_any_request() {
    let env = Env::new();
    std::fs::create_dir(env.dir.path().join("out")).expect("dir");
    let run = env.import(&env.file("u.csv", users_csv(0, 3)), &["--report", "out"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("--report out: is a directory"),
        "{}",
        run.stderr
    );
    assert_eq!(env.sim.stats().create_requests, 0);
}

#[test]
fn a_report_that_cannot_be_saved_after_sending_aborts_with_a_summary() {
    let env = Env::with(SimConfig {
        latency: Duration::from_millis(30),
        ..SimConfig::default()
    });
    let csv = env.file("u.csv", users_csv(0, 200));
    let child = spawn_import(
        &env,
        &[
            "--rate",
            "0",
            "--concurrency",
            "2",
            "--report",
            "r.csv",
            csv.to_str().expect("utf-8"),
        ],
    );
    wait_until("some users created", || env.sim.stats().created >= 5);
    // The report's place is taken by a directory: moving the report there fails at the end.
    std::fs::create_dir(env.dir.path().join("r.csv")).expect("dir");
    let run = Run::of(child.wait_with_output().expect("wait"));
    run.expect_code(3);
    assert_eq!(run.count("synced"), 200);
    assert!(
        run.stderr
            .contains("aborted: the report could not be written: --report r.csv"),
        "{}",
        run.stderr
    );
    assert_eq!(query::<i64>(&env, "SELECT exit_code FROM runs"), 3);
    env.assert_ledger_matches_remote();
}

#[test]
fn an_input_that_breaks_after_sending_aborts_with_a_summary() {
    use std::io::Write;
    let env = Env::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let mut feed =
        std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (input, _) = listener.accept().expect("accept");
    let back = input.try_clone().expect("clone");
    let child = env
        .cmd()
        .args(["import", "--json", "--no-progress", "--rate", "0", "-"])
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(input)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // The reader hands over 512 rows at a time: feed several chunks.
    feed.write_all(users_csv(0, 2000).as_bytes()).expect("feed");
    wait_until("the rows fed are registered", || {
        env.sim.stats().created >= 1536
    });
    // Unread data in `feed` turns its close into a reset: the importer's next read fails.
    (&back).write_all(b"x").expect("write back");
    std::thread::sleep(Duration::from_millis(50));
    drop(feed);
    drop(back);
    let run = Run::of(child.wait_with_output().expect("wait"));
    run.expect_code(3);
    assert!(run.count("synced") >= 1536, "{}", run.stdout);
    assert!(
        run.stderr
            .contains("aborted: the input broke part-way: <stdin>:"),
        "{}",
        run.stderr
    );
    assert_eq!(query::<i64>(&env, "SELECT exit_code FROM runs"), 3);
    env.assert_ledger_matches_remote();
}

#[test]
fn an_api_that_stays_down_stops_the_run_at_the_outage_timeout() {
    let env = Env::with(SimConfig {
        outage: true,
        ..SimConfig::default()
    });
    let csv = env.file("u.csv", users_csv(0, 300));
    let started = Instant::now();
    let run = env.import(&csv, &["--outage-timeout", "2"]);
    run.expect_code(3);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with("exit 3: aborted: the API is unreachable since ")),
        "{}",
        run.stderr
    );
    let sent = env.sim.stats().create_requests;
    assert!(sent < 300, "rows were not burnt through: {sent} requests");
    // Rows sent are recorded (as retry: the server may have them); rows never sent are untouched.
    let rows = env.rows();
    assert!(
        rows.values().all(|r| r.status == "retry" && r.attempts > 0),
        "{rows:?}"
    );
    assert!(rows.len() < 300);
    assert_eq!(query::<i64>(&env, "SELECT exit_code FROM runs"), 3);
}

#[test]
fn through_an_outage_one_probe_at_a_time_then_the_run_finishes() {
    let env = Env::with(SimConfig {
        outage: true,
        ..SimConfig::default()
    });
    let csv = env.file("u.csv", users_csv(0, 30));
    let child = spawn_import(
        &env,
        &[
            "--rate",
            "0",
            "--concurrency",
            "8",
            "--max-attempts",
            "100",
            csv.to_str().expect("utf-8"),
        ],
    );
    std::thread::sleep(Duration::from_secs(11));
    let before = env.sim.stats().create_requests;
    std::thread::sleep(Duration::from_secs(2));
    let probes = env.sim.stats().create_requests - before;
    assert!(
        probes <= 4,
        "one request at a time, spaced: {probes} in 2 s"
    );
    env.sim.set_outage(false);
    let run = Run::of(child.wait_with_output().expect("wait"));
    run.expect_code(0);
    assert_eq!(run.count("synced"), 30);
    env.assert_ledger_matches_remote();
    assert_eq!(env.sim.stats().created, 30, "each created once");
}

#[test]
fn random_kills_at_any_moment_lose_no_user_id_and_register_nobody_twice() {
    use rand::{Rng, SeedableRng};
    let seed: u64 = rand::random();
    eprintln!("random kills with seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let env = Env::with(SimConfig {
        fail_rate: 0.1,
        reset_rate: 0.05,
        latency: Duration::from_millis(5),
        ..SimConfig::default()
    });
    let n = 1500;
    let csv = env.file("u.csv", users_csv(0, n));
    let args = [
        "--rate",
        "0",
        "--concurrency",
        "8",
        csv.to_str().expect("utf-8"),
    ];
    for kill in 0..12 {
        let mut child = spawn_import(&env, &args);
        // Some kills land during start-up, the rest while sending.
        let before = if kill % 4 == 0 {
            rng.random_range(0..30)
        } else {
            rng.random_range(30..400)
        };
        std::thread::sleep(Duration::from_millis(before));
        // Every third run is killed during its graceful stop.
        if kill % 3 == 1 {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            std::thread::sleep(Duration::from_millis(rng.random_range(0..40)));
        }
        child.kill().expect("kill -9");
        child.wait().expect("reaped");
    }
    // The faults go on during the rerun: with 15% of attempts failing, six attempts leave about
    // one row in a hundred thousand as `retry`, which over a thousand rows failed about one run in
    // a hundred. Twenty attempts make that practically impossible without changing what is tested.
    let run = env.import(&csv, &["--concurrency", "8", "--max-attempts", "20"]);
    run.expect_code(0);
    env.assert_ledger_matches_remote();
    let remote = env.remote();
    assert_eq!(remote.len(), n, "every user registered");
    assert_eq!(env.sim.stats().created, n as u64, "nobody registered twice");
    let rows = env.rows();
    assert!(
        rows.values().all(|r| r.user_id.is_some()),
        "every UserID known"
    );
    let check: String = query(&env, "PRAGMA integrity_check");
    assert_eq!(check, "ok");
}

#[test]
fn a_report_or_export_onto_the_ledger_is_refused_and_the_ledger_kept() {
    let env = Env::new();
    let csv = env.file("u.csv", users_csv(0, 3));
    env.import(&csv, &[]).expect_code(0);
    let before = env.rows();
    std::os::unix::fs::symlink(env.ledger(), env.dir.path().join("alias.csv")).expect("link");
    for args in [
        vec![
            "import",
            "--report",
            "ledger.db",
            csv.to_str().expect("utf-8"),
        ],
        vec![
            "import",
            "--report",
            "alias.csv",
            csv.to_str().expect("utf-8"),
        ],
        vec!["export", "--out", "./ledger.db"],
        vec!["export", "--out", "ledger.db-wal"],
        vec!["reconcile", "--report", "ledger.db"],
    ] {
        let run = Run::of(env.cmd().args(&args).output().expect("runs"));
        run.expect_code(2);
        assert!(
            run.stderr.contains("is the ledger"),
            "{args:?}: {}",
            run.stderr
        );
    }
    assert_eq!(env.rows(), before, "every UserID still there");
}

#[test]
fn reconcile_never_takes_a_user_id_the_list_gives_twice_nor_a_list_shortened_by_a_repeat() {
    let env = Env::with(SimConfig {
        list_repeat: vec!["user1@example.com".into()],
        ..SimConfig::default()
    });
    env.import(&env.file("u.csv", users_csv(0, 3)), &[])
        .expect_code(0);
    let before = env.rows();
    let run = reconcile(&env, &["--fix", "--json"]);
    run.expect_code(1);
    assert_eq!(run.json()["doubtful"], 1, "{}", run.stdout);
    assert_eq!(env.rows(), before, "no UserID taken from the twin");

    let capped = Env::with(SimConfig {
        list_repeat: vec!["user0@example.com".into()],
        list_cap: Some(2),
        ..SimConfig::default()
    });
    capped
        .import(&capped.file("u.csv", users_csv(0, 3)), &[])
        .expect_code(0);
    let before = capped.rows();
    // Three entries for three users, but only two distinct ids: truncated.
    let run = reconcile(&capped, &["--fix"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("holds 2 users but says there are 3"),
        "{}",
        run.stderr
    );
    assert_eq!(capped.rows(), before);
}

#[test]
fn a_hard_link_to_a_busy_ledger_is_refused() {
    let env = Env::new();
    let csv = env.file("u.csv", users_csv(0, 3));
    env.import(&csv, &[]).expect_code(0);
    std::fs::hard_link(env.ledger(), env.dir.path().join("hard.db")).expect("hard link");
    // Hold the ledger file's own lock as a running import does.
    let held = std::fs::File::open(env.ledger()).expect("ledger");
    held.try_lock().expect("free");
    let run = Run::of(
        env.cmd()
            .args(["import", "--json", "--no-progress", "--ledger", "hard.db"])
            .arg(&csv)
            .output()
            .expect("runs"),
    );
    run.expect_code(3);
    assert!(run.stderr.contains("a hard link?"), "{}", run.stderr);
}

#[test]
fn a_create_cut_short_by_a_second_signal_is_recorded_with_the_phone_it_sent() {
    let env = Env::with(SimConfig {
        latency: Duration::from_millis(1500),
        ..SimConfig::default()
    });
    let csv = env.file("u.csv", users_csv(0, 3));
    let child = spawn_import(
        &env,
        &[
            "--rate",
            "0",
            "--concurrency",
            "3",
            csv.to_str().expect("utf-8"),
        ],
    );
    wait_until("the creates are in flight", || {
        env.sim.stats().create_requests == 3
    });
    signal(&child, "-INT");
    std::thread::sleep(Duration::from_millis(50));
    signal(&child, "-INT");
    Run::of(child.wait_with_output().expect("wait")).expect_code(3);
    let rows = env.rows();
    assert_eq!(
        rows.len(),
        3,
        "every create that may have gone out is recorded"
    );
    assert!(
        rows.values()
            .all(|r| r.status == "retry" && r.user_id.is_none())
    );
    // The users were created with the first phones: a file with new phones meets a change.
    std::thread::sleep(Duration::from_millis(1600));
    let changed = users_csv(0, 3).replace("+37250000001", "+37259999999");
    let run = env.import(&env.file("v.csv", changed), &[]);
    run.expect_code(1);
    assert_eq!(run.count("changed"), 1);
    assert_eq!(env.rows()["user1@example.com"].phone_number, "+37250000001");
}

#[test]
fn a_closed_stderr_does_not_stop_the_run() {
    let env = Env::new();
    let csv = env.file("u.csv", users_csv(0, 200));
    let mut child = env
        .cmd()
        .args(["import", "--json", "--no-progress", "-v", "--rate", "0"])
        .arg(&csv)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stderr.take());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(env.rows().len(), 200);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"exit_code\":0"));
}

#[test]
fn a_report_onto_the_input_file_is_refused() {
    let env = Env::new();
    let csv = env.file("u.csv", users_csv(0, 3));
    let run = env.import(&csv, &["--report", "./u.csv"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("is the file being imported"),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&csv).expect("read"),
        users_csv(0, 3)
    );
    let tiny = env.import(&csv, &["--rate", "1e-12"]);
    tiny.expect_code(2);
    assert!(!tiny.stderr.contains("panicked"), "{}", tiny.stderr);
}

/// A ledger that stops taking writes (a slow or stalled disk, here another connection holding
/// SQLite's write lock) stops the requests too: what was answered and not committed stays under
/// the bound the README gives as the loss window of a kill, and nothing is lost once it resumes.
#[test]
fn a_stalled_ledger_holds_requests_back_and_loses_nothing() {
    /// The README's loss window: answered or in flight, and not committed.
    const MOST_UNRECORDED: u64 = 20_480;
    let env = Env::new();
    let rows = 50_000;
    let csv = env.file("many.csv", users_csv(0, rows));
    // Paced, so that the stall begins early in the file.
    let child = env
        .cmd()
        .args(["import", "--json", "--no-progress", "--rate", "5000"])
        .arg(&csv)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("binary runs");
    let committed = |conn: &rusqlite::Connection| -> u64 {
        conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0))
            .unwrap_or(0)
    };
    wait_until("a first commit", || {
        rusqlite::Connection::open(env.ledger()).is_ok_and(|c| committed(&c) > 0)
    });
    let stall = rusqlite::Connection::open(env.ledger()).expect("open");
    stall
        .busy_timeout(std::time::Duration::from_secs(10))
        .expect("busy timeout");
    stall.execute_batch("BEGIN IMMEDIATE").expect("write lock");
    let held = committed(&stall);
    // Requests go on until the bound is reached, then stop.
    let mut created = env.sim.stats().created;
    loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let now = env.sim.stats().created;
        if now == created {
            break;
        }
        created = now;
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(env.sim.stats().created, created, "requests went on");
    assert!(
        created < rows as u64 && created - held <= MOST_UNRECORDED,
        "{created} created while the ledger held {held}"
    );
    stall.execute_batch("ROLLBACK").expect("release");
    let out = child.wait_with_output().expect("import ends");
    let run = Run::of(out);
    run.expect_code(0);
    assert_eq!(run.count("synced"), rows as u64);
    assert_eq!(env.rows().len(), rows);
    env.assert_ledger_matches_remote();
}
