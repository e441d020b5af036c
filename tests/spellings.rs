//! What real exports do: one person spelled twice (case, Unicode normalisation), within a file
//! and across nights, and files saved by Excel as "Unicode Text" (UTF-16 with tabs).

mod support;

use std::collections::BTreeMap;

use support::{Env, SERVICE};

/// `Alice@x.com` / `alice@x.com` (one phone), `José@x.com` composed then decomposed, and Bob.
const FOUR_SPELLINGS: &str = "id_in_service,phone_number\n\
    Alice@x.com,+37251234567\n\
    alice@x.com,+37251234567\n\
    Jos\u{e9}@x.com,+37251234568\n\
    Jose\u{301}@x.com,+37251234568\n\
    bob@x.com,+37251234569\n";

fn remote_ids(env: &Env) -> Vec<String> {
    let mut ids: Vec<String> = env
        .sim
        .users(SERVICE)
        .into_iter()
        .map(|u| u.id_in_service)
        .collect();
    ids.sort();
    ids
}

fn suspect_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains("suspect duplicate: the same as"))
        .collect()
}

#[test]
fn another_spelling_in_the_file_is_sent_with_a_warning_by_default() {
    let env = Env::new();
    let csv = env.file("users.csv", FOUR_SPELLINGS);
    let plan = env.import(&csv, &["--dry-run"]);
    plan.expect_code(0);
    assert_eq!(plan.count("suspect_duplicates"), 2);
    assert_eq!(env.sim.stats().create_requests, 0);
    let run = env.import(&csv, &[]);
    run.expect_code(0);
    assert_eq!(run.count("suspect_duplicates"), 2);
    assert_eq!(run.count("synced"), 5);
    let lines = suspect_lines(&run.stderr);
    assert_eq!(lines.len(), 2, "{}", run.stderr);
    assert!(
        lines[0].contains("users.csv:3: suspect duplicate: the same as line 2 (\"Alice@x.com\")")
            && lines[0].contains("\"alice@x.com\""),
        "{}",
        lines[0]
    );
    assert!(
        lines[1]
            .contains("users.csv:5: suspect duplicate: the same as line 4 (\"Jos\u{e9}@x.com\")"),
        "{}",
        lines[1]
    );
    // Ids are kept exact: every spelling is a user of its own, as the file spells it.
    assert_eq!(remote_ids(&env).len(), 5);
}

#[test]
fn skip_registers_the_first_spelling_only_and_reports_the_rest() {
    let env = Env::new();
    let csv = env.file("users.csv", FOUR_SPELLINGS);
    let report = env.dir.path().join("report.csv");
    let run = env.import(
        &csv,
        &[
            "--on-suspect-duplicate",
            "skip",
            "--report",
            report.to_str().expect("utf-8"),
        ],
    );
    run.expect_code(1);
    assert_eq!(run.count("suspect_duplicates"), 2);
    assert_eq!(run.count("duplicate"), 2);
    assert_eq!(
        remote_ids(&env),
        ["Alice@x.com", "Jos\u{e9}@x.com", "bob@x.com"]
    );
    let text = std::fs::read_to_string(&report).expect("report");
    let rows: BTreeMap<&str, &str> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(','))
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(
        rows["3"].starts_with(
            "alice@x.com,+37251234567,duplicate,\"suspect duplicate: the same as line 2 (\"\"Alice@x.com\"\")"
        ),
        "{text}"
    );
    assert!(
        rows["5"].contains("not sent (--on-suspect-duplicate skip)"),
        "{text}"
    );
    // Nothing of the skipped spellings is in the ledger: the next night skips them again.
    assert_eq!(env.rows().len(), 3);
    let again = env.import(&csv, &["--on-suspect-duplicate", "skip"]);
    again.expect_code(1);
    assert_eq!(again.count("suspect_duplicates"), 2);
    assert_eq!(remote_ids(&env).len(), 3);
}

#[test]
fn a_later_night_with_the_ids_lower_cased_warns_against_the_ledger() {
    let env = Env::new();
    let first = env.file(
        "night1.csv",
        FOUR_SPELLINGS.replace("alice@x.com,", "carol@x.com,"),
    );
    env.import(&first, &[]).expect_code(0);
    let lowered = "id_in_service,phone_number\nalice@x.com,+37251234567\nBOB@X.COM,+37251234569\n";
    let second = env.file("night2.csv", lowered);
    let plan = env.import(&second, &["--dry-run"]);
    assert_eq!(plan.count("suspect_duplicates"), 2, "{}", plan.stderr);
    let lines = suspect_lines(&plan.stderr);
    assert!(
        lines[0].contains(
            "night2.csv:2: suspect duplicate: the same as \"Alice@x.com\" (in the ledger since 20"
        ),
        "{}",
        lines[0]
    );
    let failed = env.import(&second, &["--on-suspect-duplicate", "fail"]);
    failed.expect_code(2);
    assert!(
        failed.stderr.contains(
            "night2.csv:3: \"BOB@X.COM\" is the same as \"bob@x.com\" (in the ledger since"
        ),
        "{}",
        failed.stderr
    );
    let before = env.sim.stats().create_requests;
    assert_eq!(before, 5, "the failing run sent nothing");
    let sent = env.import(&second, &[]);
    sent.expect_code(0);
    assert_eq!(sent.count("suspect_duplicates"), 2);
}

#[test]
fn fail_stops_before_any_request_with_the_list() {
    let env = Env::new();
    let csv = env.file("users.csv", FOUR_SPELLINGS);
    let run = env.import(&csv, &["--on-suspect-duplicate", "fail"]);
    run.expect_code(2);
    assert_eq!(env.sim.stats().create_requests, 0);
    assert!(
        run.stderr
            .contains("users.csv:3: \"alice@x.com\" is the same as line 2 (\"Alice@x.com\")"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("2 suspect duplicates"),
        "{}",
        run.stderr
    );
    assert!(!env.ledger().exists(), "nothing written");
    // A file without them goes through.
    let clean = env.file("clean.csv", support::users_csv(0, 3));
    env.import(&clean, &["--on-suspect-duplicate", "fail"])
        .expect_code(0);
    assert_eq!(env.sim.users(SERVICE).len(), 3);
}

/// A UTF-8 file with tabs, as Excel's "Unicode Text" lays it out, with a bad row at line 4.
const TABBED: &str = "id_in_service\tphone_number\r\n\
    ann@x.com\t+37251234501\r\n\
    J\u{f6}rg@x.com\t+37251234502\r\n\
    bad@x.com\tnot a phone\r\n\
    \u{6f22}\u{5b57}@x.com\t+37251234503\r\n";

fn utf16(text: &str, big_endian: bool) -> Vec<u8> {
    let mut bytes = if big_endian {
        vec![0xFE, 0xFF]
    } else {
        vec![0xFF, 0xFE]
    };
    for unit in text.encode_utf16() {
        let pair = if big_endian {
            unit.to_be_bytes()
        } else {
            unit.to_le_bytes()
        };
        bytes.extend_from_slice(&pair);
    }
    bytes
}

/// Imports `bytes` into a simulator of its own; returns its users and the report.
fn import_bytes(bytes: &[u8]) -> (Vec<(String, String)>, String) {
    let env = Env::new();
    let csv = env.file("users.txt", bytes);
    let report = env.dir.path().join("report.csv");
    let run = env.import(&csv, &["--report", report.to_str().expect("utf-8")]);
    run.expect_code(1);
    assert_eq!(run.count("synced"), 3, "{}", run.stderr);
    let mut users: Vec<(String, String)> = env
        .sim
        .users(SERVICE)
        .into_iter()
        .map(|u| (u.id_in_service, u.phone_number))
        .collect();
    users.sort();
    (users, std::fs::read_to_string(&report).expect("report"))
}

#[test]
fn files_saved_as_utf16_by_excel_import_like_their_utf8_twin() {
    let (users, report) = import_bytes(TABBED.as_bytes());
    assert_eq!(users.len(), 3);
    assert!(
        report.contains("\n4,bad@x.com,not a phone,invalid,"),
        "{report}"
    );
    for big_endian in [false, true] {
        let (twin_users, twin_report) = import_bytes(&utf16(TABBED, big_endian));
        assert_eq!(twin_users, users, "big endian: {big_endian}");
        assert_eq!(twin_report, report, "big endian: {big_endian}");
    }
}

#[test]
fn an_id_in_another_encoding_says_which_to_save_as() {
    let env = Env::new();
    // Windows-1252: "Jörg" with ö as 0xF6; the phone's column is plain ASCII.
    let mut bytes = b"id_in_service,phone_number,note\nJ".to_vec();
    bytes.extend_from_slice(b"\xF6rg@x.com,+37251234501,x\nann@x.com,+37251234502,caf\xE9\n");
    let csv = env.file("legacy.csv", bytes);
    let run = env.import(&csv, &[]);
    run.expect_code(1);
    run.expect_line(
        "legacy.csv:2: invalid:",
        "id_in_service is not valid UTF-8 (an export in another encoding? save it as \"CSV UTF-8\" or \"Unicode Text\")",
    );
    // Bytes of another encoding in a column the importer does not use pass.
    assert_eq!(run.count("synced"), 1);
}

#[test]
fn a_spelling_held_back_keeps_the_first_from_prune_and_a_deleted_one_blocks_nothing() {
    let env = Env::new();
    let night1 = "id_in_service,phone_number\nAlice@x.com,+37251234567\nbob@x.com,+37251234568\n";
    env.import(&env.file("n1.csv", night1), &[]).expect_code(0);
    // The export now spells Alice in lower case: held back, and Alice stands for her.
    let night2 = env.file("n2.csv", night1.replace("Alice", "alice"));
    let run = env.import(
        &night2,
        &[
            "--prune",
            "--max-delete",
            "100%",
            "--on-suspect-duplicate",
            "skip",
        ],
    );
    assert_eq!(run.count("suspect_duplicates"), 1, "{}", run.stderr);
    assert_eq!(run.count("deleted"), 0, "{}", run.stderr);
    assert_eq!(remote_ids(&env), ["Alice@x.com", "bob@x.com"]);
    // Alice leaves; once deleted she is no one's other spelling.
    let night3 = env.file(
        "n3.csv",
        "id_in_service,phone_number\nbob@x.com,+37251234568\n",
    );
    let run = env.import(&night3, &["--prune", "--max-delete", "100%"]);
    assert_eq!(run.count("deleted"), 1, "{}", run.stderr);
    let run = env.import(&night2, &["--on-suspect-duplicate", "skip"]);
    run.expect_code(0);
    assert_eq!(run.count("suspect_duplicates"), 0, "{}", run.stderr);
    assert_eq!(remote_ids(&env), ["alice@x.com", "bob@x.com"]);
}

#[test]
fn a_spelling_refused_for_its_phone_is_no_first_spelling() {
    let env = Env::new();
    // A fixed line, refused by --mobile-only, then the same person with a mobile.
    let csv = env.file(
        "users.csv",
        "id_in_service,phone_number\nAlice@x.com,+3726123456\nalice@x.com,+37251234567\n",
    );
    let run = env.import(&csv, &["--mobile-only", "--on-suspect-duplicate", "skip"]);
    run.expect_code(1);
    assert_eq!(run.count("invalid"), 1);
    assert_eq!(run.count("suspect_duplicates"), 0, "{}", run.stderr);
    assert_eq!(remote_ids(&env), ["alice@x.com"]);
    // The other way round: the later spelling refused for its phone is no suspect sent.
    let csv = env.file(
        "again.csv",
        "id_in_service,phone_number
bob@x.com,+37251234568
BOB@x.com,+3726123456
",
    );
    let run = env.import(&csv, &["--mobile-only"]);
    assert_eq!(run.count("suspect_duplicates"), 0, "{}", run.stderr);
    assert!(
        !run.stderr.contains("suspect duplicate: the same as"),
        "{}",
        run.stderr
    );
}

#[test]
fn fail_upgrades_an_older_ledger_before_looking() {
    let env = Env::new();
    let night1 = env.file(
        "n1.csv",
        "id_in_service,phone_number\nAlice@x.com,+37251234567\n",
    );
    env.import(&night1, &[]).expect_code(0);
    // As a ledger of the version before folded keys.
    rusqlite::Connection::open(env.ledger())
        .and_then(|c| {
            c.execute_batch(
                "DROP INDEX users_folded; ALTER TABLE users DROP COLUMN folded; PRAGMA user_version = 5;",
            )
        })
        .expect("downgrade");
    let night2 = env.file(
        "n2.csv",
        "id_in_service,phone_number\naLIce@x.com,+37251234567\ncarol@x.com,+37251234569\n",
    );
    let plan = env.import(&night2, &["--dry-run"]);
    assert!(
        plan.stderr
            .contains("this ledger predates suspect duplicates"),
        "{}",
        plan.stderr
    );
    let run = env.import(&night2, &["--on-suspect-duplicate", "fail"]);
    run.expect_code(2);
    assert_eq!(env.sim.stats().create_requests, 1, "only night 1's");
}
