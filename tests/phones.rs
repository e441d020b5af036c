//! Phone numbers against the oracle: `tests/phones/corpus.csv` holds numbers of every region
//! libphonenumber knows (245) and of the international services' codes (+800, +881, …), written
//! the ways people write them, with what Google's libphonenumber (its Python port) makes of each,
//! produced by `tests/phones/make_corpus.py`. The importer must agree on every row, in the
//! library and end to end (every stored phone as libphonenumber writes it; `--strict-phones` and
//! `--mobile-only` refusing exactly the rows they should).

mod support;

use std::collections::HashMap;

use support::{Env, SERVICE};
use verigator_sync::phone::{Line, understand};

struct Row {
    text: String,
    region: String,
    e164: String,
    verdict: String,
    valid: String,
    kind: String,
}

fn corpus() -> Vec<Row> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/phones/corpus.csv");
    let mut reader = csv::Reader::from_path(path).expect("corpus");
    reader
        .records()
        .map(|r| {
            let r = r.expect("record");
            Row {
                text: r[0].to_string(),
                region: r[1].to_string(),
                e164: r[2].to_string(),
                verdict: r[3].to_string(),
                valid: r[4].to_string(),
                kind: r[5].to_string(),
            }
        })
        .collect()
}

fn line_of(kind: &str) -> Line {
    match kind {
        "MOBILE" => Line::Mobile,
        "FIXED_LINE_OR_MOBILE" | "PERSONAL_NUMBER" | "PAGER" => Line::MaybeMobile,
        "UNKNOWN" => Line::Unknown,
        _ => Line::NotMobile(""),
    }
}

#[test]
fn every_number_of_the_corpus_is_read_as_libphonenumber_reads_it() {
    let rows = corpus();
    assert!(rows.len() > 1000, "{}", rows.len());
    let mut wrong = Vec::new();
    for row in &rows {
        let region = (!row.region.is_empty()).then(|| row.region.parse().expect("region"));
        let ours = understand(&row.text, region);
        let agrees = match (&ours, row.verdict.as_str()) {
            (Ok(phone), "ok") => {
                let line = match phone.line {
                    Line::NotMobile(_) => Line::NotMobile(""),
                    other => other,
                };
                phone.e164 == row.e164
                    && phone.assigned == (row.valid == "true")
                    && line == line_of(&row.kind)
            }
            (Err(_), verdict) => verdict != "ok",
            (Ok(_), _) => false,
        };
        if !agrees {
            wrong.push(format!(
                "{:?} region {:?}: libphonenumber {} {} {} {}, ours {:?}",
                row.text, row.region, row.verdict, row.e164, row.valid, row.kind, ours
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} disagree:\n{}",
        wrong.len(),
        rows.len(),
        wrong.join("\n")
    );
}

/// The corpus rows read with one default region (`""`: none), as a CSV for the importer: each
/// row's id is its index in the corpus. Returns the file and the rows by id.
fn file_of<'a>(rows: &'a [Row], region: &str) -> (String, HashMap<String, &'a Row>) {
    let mut text = String::from("id_in_service,phone_number\n");
    let mut by_id = HashMap::new();
    for (i, row) in rows.iter().enumerate().filter(|(_, r)| r.region == region) {
        let id = format!("row{i}");
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record([id.as_str(), row.text.as_str()])
            .expect("csv");
        text.push_str(&String::from_utf8(w.into_inner().expect("csv")).expect("utf-8"));
        by_id.insert(id, row);
    }
    (text, by_id)
}

/// Imports the corpus rows of one default region with `flags`; returns the JSON summary and the
/// simulator's phones by id.
fn import(region: &str, flags: &[&str]) -> (serde_json::Value, HashMap<String, String>) {
    let rows = corpus();
    let env = Env::new();
    let (text, _) = file_of(&rows, region);
    let csv = env.file("phones.csv", text);
    let mut args = flags.to_vec();
    if !region.is_empty() {
        args.extend(["--default-region", region]);
    }
    let run = env.import(&csv, &args);
    let phones = env
        .sim
        .users(SERVICE)
        .into_iter()
        .map(|u| (u.id_in_service, u.phone_number))
        .collect();
    (run.json(), phones)
}

#[test]
fn every_form_imports_as_libphonenumber_writes_it() {
    let rows = corpus();
    for region in ["", "EE", "GB", "RU", "US"] {
        let (json, phones) = import(region, &[]);
        let (_, by_id) = file_of(&rows, region);
        let mut sent = 0;
        for (id, row) in &by_id {
            match row.verdict.as_str() {
                "ok" => {
                    sent += 1;
                    assert_eq!(
                        phones.get(id),
                        Some(&row.e164),
                        "{:?} ({region:?})",
                        row.text
                    );
                }
                _ => assert!(!phones.contains_key(id), "{:?} was sent", row.text),
            }
        }
        assert!(sent >= 5, "{region:?}: {sent}");
        let invalid = by_id.values().filter(|r| r.verdict != "ok").count() as u64;
        assert_eq!(json["invalid"].as_u64(), Some(invalid), "{region:?}");
        let warned = by_id
            .values()
            .filter(|r| r.verdict == "ok" && (r.valid == "false" || !could_be_mobile(&r.kind)))
            .count() as u64;
        assert_eq!(json["phone_warnings"].as_u64(), Some(warned), "{region:?}");
    }
}

fn could_be_mobile(kind: &str) -> bool {
    matches!(
        kind,
        "MOBILE" | "FIXED_LINE_OR_MOBILE" | "PERSONAL_NUMBER" | "PAGER" | "UNKNOWN"
    )
}

#[test]
fn strict_phones_and_mobile_only_refuse_exactly_their_rows() {
    let rows = corpus();
    let (_, by_id) = file_of(&rows, "");
    for (flag, refused) in [
        (
            "--strict-phones",
            (|r: &Row| r.valid == "false") as fn(&Row) -> bool,
        ),
        ("--mobile-only", |r: &Row| {
            r.valid == "true" && !could_be_mobile(&r.kind)
        }),
    ] {
        let (json, phones) = import("", &[flag]);
        let mut refused_rows = 0u64;
        for (id, row) in by_id.iter().filter(|(_, r)| r.verdict == "ok") {
            if refused(row) {
                refused_rows += 1;
                assert!(!phones.contains_key(id), "{flag}: {:?} was sent", row.text);
            } else {
                assert_eq!(phones.get(id), Some(&row.e164), "{flag}: {:?}", row.text);
            }
        }
        assert!(refused_rows > 5, "{flag}: {refused_rows}");
        let impossible = by_id.values().filter(|r| r.verdict != "ok").count() as u64;
        assert_eq!(
            json["invalid"].as_u64(),
            Some(impossible + refused_rows),
            "{flag}"
        );
    }
}

#[test]
fn a_plan_lists_the_numbers_that_are_not_mobiles() {
    let env = Env::new();
    // A mobile, a fixed line and a toll-free number of Great Britain, written three ways.
    let csv = env.file(
        "mixed.csv",
        "id_in_service,phone_number\nm,+44 7400 123456\nf,+44 (0)121 234 5678\nt,0800 123 4567\n",
    );
    let plan = env.import(
        &csv,
        &[
            "--dry-run",
            "--default-region",
            "GB",
            "--report",
            "plan.csv",
        ],
    );
    plan.expect_code(0);
    let json = plan.json();
    assert_eq!(
        (json["not_mobile"].as_u64(), json["phone_warnings"].as_u64()),
        (Some(2), Some(2))
    );
    let mut reader = csv::Reader::from_path(env.dir.path().join("plan.csv")).expect("report");
    let mut rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.expect("row").iter().map(String::from).collect())
        .collect();
    rows.sort();
    assert_eq!(rows.len(), 2, "{rows:?}");
    // As written (a cell starting with + gets the spreadsheet guard), and as understood.
    assert_eq!(
        [&rows[0][..4], &rows[0][5..]].concat(),
        ["3", "f", "'+44 (0)121 234 5678", "planned", "+441212345678"]
    );
    assert!(
        rows[0][4].starts_with("phone warning: the number is a fixed line"),
        "{rows:?}"
    );
    assert_eq!(
        [&rows[1][..4], &rows[1][5..]].concat(),
        ["4", "t", "0800 123 4567", "planned", "+448001234567"]
    );
    assert!(
        rows[1][4].contains("toll-free number, not a mobile"),
        "{rows:?}"
    );
    let refused = env.import(&csv, &["--mobile-only", "--default-region", "GB"]);
    refused.expect_code(1);
    assert_eq!((refused.count("synced"), refused.count("invalid")), (1, 2));
}

#[test]
fn a_number_registered_in_the_old_trunk_form_shows_as_changed_until_replaced() {
    let env = Env::new();
    // What earlier versions registered for `+44 (0) 20 7946 0958`: the trunk 0 kept.
    let old = "+4402079460958";
    let user_id = env.sim.insert_user(SERVICE, "alice", old);
    let csv = env.file(
        "first.csv",
        "id_in_service,phone_number\nbob,+447400123456\n",
    );
    env.import(&csv, &[]).expect_code(0);
    rusqlite::Connection::open(env.ledger())
        .and_then(|c| {
            c.execute(
                "INSERT INTO users (service_id, id_in_service, phone_number, status, user_id, updated_at)
                 VALUES (?1, 'alice', ?2, 'synced', ?3, 'then')",
                rusqlite::params![SERVICE, old, user_id],
            )
        })
        .expect("an old row");
    let csv = env.file(
        "now.csv",
        "id_in_service,phone_number\nalice,+44 (0) 20 7946 0958\n",
    );
    let run = env.import(&csv, &[]);
    run.expect_code(1);
    assert_eq!(run.count("changed"), 1);
    let replaced = env.import(&csv, &["--apply-changes"]);
    replaced.expect_code(0);
    assert_eq!(replaced.count("replaced"), 1);
    assert_eq!(env.rows()["alice"].phone_number, "+442079460958");
    env.assert_ledger_matches_remote();
}
