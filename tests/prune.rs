//! Full sync with `import --prune`: users who left the file are deleted at Verigator, with their
//! UserIDs kept in the history; the safety limit, a broken export, failing deletes and a kill in
//! the middle of pruning. Each test runs the real binary against the simulator.

mod support;

use std::collections::HashMap;
use std::process::Stdio;

use support::{Env, Run, users_csv, wait_until};
use verigator_sync::simulator::SimConfig;

fn run(env: &Env, args: &[&str]) -> Run {
    Run::of(env.cmd().args(args).output().expect("binary runs"))
}

/// The deletions history: id_in_service → the UserIDs deleted.
fn deleted_history(env: &Env) -> HashMap<String, Vec<String>> {
    let history = run(env, &["export", "--history", "--format", "ndjson"]);
    history.expect_code(0);
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for line in history.stdout.lines() {
        let entry: serde_json::Value = serde_json::from_str(line).expect("ndjson");
        if entry["kind"] == "deleted" {
            let id = entry["id_in_service"].as_str().expect("id").to_string();
            let uid = entry["old_user_id"].as_str().expect("uid").to_string();
            out.entry(id).or_default().push(uid);
        }
    }
    out
}

fn ids(from: usize, n: usize) -> Vec<String> {
    (from..from + n)
        .map(|i| format!("user{i}@example.com"))
        .collect()
}

#[test]
fn a_nightly_sync_adds_removes_and_brings_back_users() {
    let env = Env::new();
    // Night 1: 100 users.
    let night1 = env.import(&env.file("n1.csv", users_csv(0, 100)), &["--prune"]);
    night1.expect_code(0);
    assert_eq!((night1.count("synced"), night1.count("deleted")), (100, 0));
    let first_uids = env.remote();

    // Night 2: 5 users left, 5 joined (5 of 100 is the default limit of 5%).
    let night2 = env.import(&env.file("n2.csv", users_csv(5, 100)), &["--prune"]);
    night2.expect_code(0);
    assert_eq!(
        (
            night2.count("synced"),
            night2.count("deleted"),
            night2.json()["prune_refused"].as_bool()
        ),
        (5, 5, Some(false))
    );
    let remote = env.remote();
    let mut listed: Vec<String> = remote.keys().cloned().collect();
    listed.sort();
    let mut wanted = ids(5, 100);
    wanted.sort();
    assert_eq!(listed, wanted, "Verigator holds exactly the file's users");
    let rows = env.rows();
    let history = deleted_history(&env);
    for id in ids(0, 5) {
        let row = &rows[&id];
        assert_eq!(
            (row.status.as_str(), row.user_id.as_ref()),
            ("deleted", None)
        );
        assert_eq!(history[&id], [first_uids[&id].clone()], "{id}");
    }
    env.assert_ledger_matches_remote();
    // The ledger's views: status counts them, export lists them, reconcile leaves them alone.
    let status = run(&env, &["status", "--json"]);
    assert_eq!(status.json()["services"][0]["deleted"], 5);
    let export = run(&env, &["export", "--status", "deleted"]);
    assert_eq!(export.stdout.lines().count(), 1 + 5, "{}", export.stdout);
    run(&env, &["reconcile"]).expect_code(0);

    // Night 3: the 5 are back: registered again, with new UserIDs.
    let night3 = env.import(&env.file("n3.csv", users_csv(0, 105)), &["--prune"]);
    night3.expect_code(0);
    assert_eq!((night3.count("synced"), night3.count("deleted")), (5, 0));
    let remote = env.remote();
    assert_eq!(remote.len(), 105);
    for id in ids(0, 5) {
        assert_ne!(remote[&id], first_uids[&id], "{id} has a new UserID");
        assert_eq!(env.rows()[&id].status, "synced");
    }
    env.assert_ledger_matches_remote();
    assert_eq!(deleted_history(&env).len(), 5, "the old UserIDs stay");
}

#[test]
fn over_the_limit_nothing_is_deleted_and_a_plan_lists_what_would_be() {
    let env = Env::new();
    env.import(&env.file("all.csv", users_csv(0, 100)), &[])
        .expect_code(0);
    let part = env.file("part.csv", users_csv(0, 80));

    let refused = env.import(&part, &["--prune"]);
    refused
        .expect_code(1)
        .expect_line("--prune: 20 of the 100 users", "to list them first)");
    assert!(
        refused.stderr.contains("pass --max-delete 20"),
        "{}",
        refused.stderr
    );
    assert_eq!(refused.json()["prune_refused"], true);
    assert_eq!(refused.count("deleted"), 0);
    env.import(&part, &["--prune", "--max-delete", "19"])
        .expect_code(1);
    env.import(&part, &["--prune", "--max-delete", "19%"])
        .expect_code(1);
    assert_eq!(env.remote().len(), 100, "nothing deleted");

    // The plan lists the 20, without a line; fed back in, the report sends none of them.
    let plan = env.import(
        &part,
        &[
            "--prune",
            "--max-delete",
            "20",
            "--dry-run",
            "--report",
            "plan.csv",
        ],
    );
    plan.expect_code(0);
    assert_eq!(plan.count("deleted"), 20);
    let report = std::fs::read_to_string(env.dir.path().join("plan.csv")).expect("report");
    let rows: Vec<&str> = report.lines().skip(1).collect();
    assert_eq!(rows.len(), 20, "{report}");
    assert!(
        rows.iter()
            .all(|r| r.starts_with(",user") && r.contains(",delete,not in the file")),
        "{report}"
    );
    let again = env.import(&env.dir.path().join("plan.csv"), &[]);
    again.expect_code(0);
    assert_eq!(again.count("rows"), 0, "prune rows are not rows to import");

    let done = env.import(&part, &["--prune", "--max-delete", "20%"]);
    done.expect_code(0);
    assert_eq!(done.count("deleted"), 20);
    assert_eq!(env.remote().len(), 80);
    env.assert_ledger_matches_remote();
}

#[test]
fn a_row_whose_id_cannot_be_read_blocks_the_prune_but_a_bad_phone_does_not() {
    let env = Env::new();
    env.import(&env.file("all.csv", users_csv(0, 10)), &[])
        .expect_code(0);
    // user9 is gone; user8's phone is broken, but its id is there: it stays.
    let mut broken = users_csv(0, 8);
    broken.push_str("user8@example.com,not a phone\n");
    // Three fields where the header has two: which one is the id is anyone's guess.
    let unreadable = format!("{broken}half,a,row\n");
    let blocked = env.import(
        &env.file("unreadable.csv", &unreadable),
        &["--prune", "--max-delete", "100%"],
    );
    blocked.expect_code(1);
    assert!(
        blocked
            .stderr
            .contains("unreadable.csv:11: a row's id could not be read")
            && blocked
                .stderr
                .contains("a broken export must never delete users"),
        "{}",
        blocked.stderr
    );
    assert_eq!(blocked.json()["prune_refused"], true);
    assert_eq!(env.remote().len(), 10, "nothing deleted");

    let pruned = env.import(
        &env.file("broken.csv", &broken),
        &["--prune", "--max-delete", "100%"],
    );
    pruned.expect_code(1);
    assert_eq!(
        (pruned.count("invalid"), pruned.count("deleted")),
        (1, 1),
        "{}",
        pruned.stderr
    );
    let remote = env.remote();
    assert!(remote.contains_key("user8@example.com") && !remote.contains_key("user9@example.com"));
}

#[test]
fn deletes_that_keep_failing_are_left_for_the_next_run() {
    let env = Env::new();
    env.import(&env.file("all.csv", users_csv(0, 20)), &[])
        .expect_code(0);
    let part = env.file("part.csv", users_csv(0, 18));
    env.sim.set_outage(true);
    let failing = env.import(
        &part,
        &[
            "--prune",
            "--max-delete",
            "2",
            "--max-attempts",
            "2",
            "--report",
            "r.csv",
        ],
    );
    env.sim.set_outage(false);
    failing.expect_code(1);
    assert_eq!(failing.count("deleted"), 0);
    let report = std::fs::read_to_string(env.dir.path().join("r.csv")).expect("report");
    assert_eq!(
        report
            .lines()
            .filter(|l| l.contains(",delete,not deleted: 503"))
            .count(),
        2,
        "{report}"
    );
    assert_eq!(env.remote().len(), 20);
    // Whether a 503 was done or not is not known: the rows stay begun, their UserIDs kept.
    let rows = env.rows();
    let remote = env.remote();
    for id in ["user18@example.com", "user19@example.com"] {
        assert_eq!(rows[id].status, "deleted");
        assert_eq!(rows[id].user_id.as_ref(), Some(&remote[id]));
    }
    assert!(deleted_history(&env).is_empty(), "nothing finished");

    let next = env.import(&part, &["--prune", "--max-delete", "2"]);
    next.expect_code(0);
    assert_eq!(next.count("deleted"), 2);
    assert_eq!(env.remote().len(), 18);
    env.assert_ledger_matches_remote();
}

#[test]
fn a_kill_in_the_middle_of_pruning_loses_nothing_and_the_rerun_finishes_it() {
    let env = Env::with(SimConfig {
        latency: std::time::Duration::from_millis(5),
        ..SimConfig::default()
    });
    env.import(&env.file("all.csv", users_csv(0, 400)), &[])
        .expect_code(0);
    let first_uids = env.remote();
    let part = env.file("part.csv", users_csv(0, 100));
    let mut child = env
        .cmd()
        .args(["import", "--no-progress", "--prune", "--max-delete", "75%"])
        .args(["--rate", "100", "--concurrency", "4"])
        .arg(&part)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    wait_until("some users deleted", || env.remote().len() <= 330);
    child.kill().expect("kill -9");
    let _ = child.wait();
    let left = env.remote().len();
    assert!(left > 100, "killed before the end ({left} left)");

    let rerun = env.import(&part, &["--prune", "--max-delete", "75%"]);
    rerun.expect_code(0);
    assert_eq!(env.remote().len(), 100);
    env.assert_ledger_matches_remote();
    // Every user deleted has its UserID in the history exactly once, whichever run recorded it.
    let history = deleted_history(&env);
    let rows = env.rows();
    for id in ids(100, 300) {
        assert_eq!(
            history.get(&id),
            Some(&vec![first_uids[&id].clone()]),
            "{id}"
        );
        assert_eq!(rows[&id].status, "deleted");
    }
    assert_eq!(history.len(), 300);
}

#[test]
fn a_quote_that_never_closes_or_a_file_of_other_ids_deletes_nobody() {
    let env = Env::new();
    env.import(&env.file("all.csv", users_csv(0, 30)), &[])
        .expect_code(0);
    // A third column whose quote opens on user20's line and closes on user23's: one record
    // swallows three lines, every field still there.
    let mut text = String::from("id_in_service,phone_number,name\n");
    for i in 0..30 {
        let name = match i {
            20 => "\"Bob".to_string(),
            23 => "Dan\"".to_string(),
            _ => format!("n{i}"),
        };
        text.push_str(&format!("user{i}@example.com,+3725{i:07},{name}\n"));
    }
    let quoted = env.import(
        &env.file("quoted.csv", text),
        &["--prune", "--max-delete", "100%"],
    );
    quoted.expect_code(1);
    assert!(
        quoted
            .stderr
            .contains("quoted.csv:22: a record runs over several lines"),
        "{}",
        quoted.stderr
    );
    assert_eq!(env.remote().len(), 30, "nobody deleted");

    // A wrong export of 700 other ids: the share is of the 30 held before the run, not of the
    // 730 after it.
    let other = env.import(&env.file("other.csv", users_csv(1000, 700)), &["--prune"]);
    other.expect_code(1);
    assert_eq!(
        (other.count("synced"), other.count("deleted")),
        (700, 0),
        "{}",
        other.stderr
    );
    assert!(
        other.stderr.contains("30 of the 30 users this ledger held"),
        "{}",
        other.stderr
    );
    assert_eq!(env.remote().len(), 730);
}

#[test]
fn a_kill_after_a_delete_then_the_user_back_in_the_file_leaves_the_ledger_right() {
    let env = Env::new();
    env.import(&env.file("all.csv", users_csv(0, 20)), &[])
        .expect_code(0);
    let first_uids = env.remote();
    let part = env.file("part.csv", users_csv(0, 10));
    let mut child = env
        .cmd()
        .args(["import", "--no-progress", "--prune", "--max-delete", "100%"])
        .args(["--rate", "4", "--concurrency", "1"])
        .arg(&part)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    wait_until("a user deleted", || env.remote().len() < 20);
    child.kill().expect("kill -9");
    let _ = child.wait();
    // The next night the users are all back in the file, and no prune.
    let back = env.import(&env.file("back.csv", users_csv(0, 20)), &[]);
    back.expect_code(0);
    env.assert_ledger_matches_remote();
    assert_eq!(env.remote().len(), 20);
    let rows = env.rows();
    for (id, uid) in &first_uids {
        let row = &rows[id];
        assert!(
            row.status == "synced" || row.status == "present",
            "{id}: {row:?}"
        );
        // Deleted ones came back with a new UserID; the old one is in the history, finished
        // or (killed before the answer was recorded) begun.
        if row.user_id.as_ref() != Some(uid) {
            let history = run(&env, &["export", "--history"]).stdout;
            assert!(
                history.lines().any(|l| l.contains(id.as_str())
                    && l.contains(uid.as_str())
                    && l.contains(",delete")),
                "{id} {uid}: {history}"
            );
        }
    }
    run(&env, &["reconcile"]).expect_code(0);
}

#[test]
fn a_second_signal_during_the_prune_stops_at_once_and_the_rerun_finishes() {
    let env = Env::with(SimConfig {
        latency: std::time::Duration::from_secs(3),
        ..SimConfig::default()
    });
    env.import(
        &env.file("all.csv", users_csv(0, 12)),
        &["--concurrency", "12"],
    )
    .expect_code(0);
    let part = env.file("part.csv", users_csv(0, 6));
    let child = env
        .cmd()
        .args(["import", "--no-progress", "--prune", "--max-delete", "100%"])
        .args(["--concurrency", "2", "--rate", "0"])
        .arg(&part)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_until("deletes in flight", || env.sim.stats().delete_requests >= 2);
    support::signal(&child, "-INT");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let asked = std::time::Instant::now();
    support::signal(&child, "-INT");
    let out = child.wait_with_output().expect("wait");
    let took = asked.elapsed();
    assert_eq!(out.status.code(), Some(3));
    assert!(took < std::time::Duration::from_secs(2), "{took:?}");
    let rerun = env.import(
        &part,
        &["--prune", "--max-delete", "100%", "--concurrency", "6"],
    );
    rerun.expect_code(0);
    assert_eq!(env.remote().len(), 6);
    env.assert_ledger_matches_remote();
    assert_eq!(deleted_history(&env).len(), 6);
}

#[test]
fn a_file_changed_while_it_is_read_deletes_nobody() {
    let env = Env::new();
    env.import(&env.file("all.csv", users_csv(0, 40)), &[])
        .expect_code(0);
    // 30 of the 40, then 40 new ones sent slowly; the export is rewritten meanwhile.
    let mut text = users_csv(0, 30);
    text.push_str(&users_csv(100, 40).replace("id_in_service,phone_number\n", ""));
    let path = env.file("growing.csv", &text);
    let child = env
        .cmd()
        .args(["import", "--no-progress", "--prune", "--max-delete", "100%"])
        .args(["--rate", "20"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_until("new users sent", || env.remote().len() >= 45);
    std::fs::write(&path, users_csv(0, 5)).expect("rewrite the export");
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("growing.csv changed while it was read"),
        "{stderr}"
    );
    assert_eq!(env.remote().len(), 80, "nobody deleted");
}

#[test]
fn a_begun_deletion_then_the_user_back_with_another_phone_is_a_change() {
    let env = Env::new();
    env.import(&env.file("all.csv", users_csv(0, 3)), &[])
        .expect_code(0);
    env.sim.set_outage(true);
    env.import(
        &env.file("two.csv", users_csv(0, 2)),
        &["--prune", "--max-delete", "1", "--max-attempts", "1"],
    )
    .expect_code(1);
    env.sim.set_outage(false);
    assert_eq!(env.rows()["user2@example.com"].status, "deleted", "begun");
    // Back, with another phone: Verigator still has the user with the old one.
    let back = env.file(
        "back.csv",
        format!("{}user2@example.com,+37259999999\n", users_csv(0, 2)),
    );
    let run = env.import(&back, &[]);
    run.expect_code(1);
    assert_eq!(run.count("changed"), 1, "{}", run.stderr);
    let row = &env.rows()["user2@example.com"];
    assert_eq!(
        row.phone_number, "+37250000002",
        "the phone Verigator holds"
    );
    env.assert_ledger_matches_remote();
}
