//! `import --metrics-file`: the file a textfile collector reads, parsed back with an independent
//! parser (`prometheus-parse`) and checked line by line against the text format's grammar, over a
//! successful run, an aborted one and one that failed on its input.

mod support;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use prometheus_parse::{Scrape, Value};
use support::{Env, SERVICE, users_csv};

/// The file parsed: `name{labels without service_id}` → value, each series checked to carry the
/// service and each family its type.
fn scrape(path: &Path) -> HashMap<String, f64> {
    let text = std::fs::read_to_string(path).expect("metrics file");
    let sample = regex::Regex::new(
        r#"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? -?[0-9.e+]+$"#,
    )
    .expect("regex");
    for line in text.lines() {
        let ok = line.starts_with("# HELP verigator_sync_")
            || line.starts_with("# TYPE verigator_sync_")
            || sample.is_match(line);
        assert!(ok, "not in the text format: {line:?}\n{text}");
    }
    assert!(text.ends_with('\n'), "the last line ends");
    let parsed =
        Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("prometheus-parse reads it");
    let mut out = HashMap::new();
    for s in parsed.samples {
        assert_eq!(s.labels.get("service_id"), Some(SERVICE), "{}", s.metric);
        let value = match s.value {
            Value::Counter(v) => {
                assert!(s.metric.ends_with("_total"), "{} is a counter", s.metric);
                v
            }
            Value::Gauge(v) => {
                assert!(!s.metric.ends_with("_total"), "{} is a gauge", s.metric);
                v
            }
            other => panic!("{} has no type: {other:?}", s.metric),
        };
        let mut labels: Vec<String> = s
            .labels
            .iter()
            .filter(|(k, _)| k.as_str() != "service_id")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        labels.sort();
        let key = match labels.is_empty() {
            true => s.metric.clone(),
            false => format!("{}{{{}}}", s.metric, labels.join(",")),
        };
        out.insert(key, value);
    }
    out
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

#[test]
fn the_metrics_file_follows_every_run_and_keeps_the_last_success() {
    let env = Env::new();
    let prom = env.dir.path().join("verigator.prom");
    let prom_arg = prom.to_str().expect("utf-8 path");
    let users = env.file("u.csv", users_csv(0, 10));
    let before = now();
    env.import(&users, &["--metrics-file", prom_arg])
        .expect_code(0);
    let first = scrape(&prom);
    let ran = first["verigator_sync_last_run_timestamp_seconds"];
    assert!(ran >= before && ran <= now(), "{ran}");
    assert_eq!(first["verigator_sync_last_run_exit_code"], 0.0);
    let success = first["verigator_sync_last_success_timestamp_seconds"];
    assert!((ran - success).abs() < 5.0, "{ran} {success}");
    assert!(first["verigator_sync_last_run_duration_seconds"] > 0.0);
    assert_eq!(first["verigator_sync_rows_total{outcome=synced}"], 10.0);
    assert_eq!(first["verigator_sync_sent_rows_total"], 10.0);
    assert_eq!(first["verigator_sync_deleted_users_total"], 0.0);
    assert_eq!(first["verigator_sync_ledger_users{status=synced}"], 10.0);
    assert_eq!(first["verigator_sync_ledger_users{status=retry}"], 0.0);
    let mode = std::fs::metadata(&prom).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o644, "the collector's user may read it");

    // A rerun that is refused by the API: aborted, written anyway; the last success stays.
    let more = env.file("more.csv", users_csv(0, 12));
    let refused = env
        .cmd()
        .env("VERIGATOR_PASSWORD", "wrong")
        .args([
            "import",
            "--no-progress",
            "--rate",
            "0",
            "--metrics-file",
            prom_arg,
        ])
        .arg(&more)
        .output()
        .expect("runs");
    assert_eq!(refused.status.code(), Some(3));
    let second = scrape(&prom);
    assert_eq!(second["verigator_sync_last_run_exit_code"], 3.0);
    assert_eq!(
        second["verigator_sync_last_success_timestamp_seconds"],
        success
    );
    assert!(second["verigator_sync_last_run_timestamp_seconds"] >= ran);
    assert_eq!(second["verigator_sync_rows_total{outcome=synced}"], 10.0);
    let text = std::fs::read_to_string(&prom).expect("file");
    assert!(
        !text.contains("wrong") && !text.contains("demo"),
        "no credentials: {text}"
    );

    // An input that cannot be opened: exit 2, still reported; the counters never fall.
    let missing = env.import(
        &env.dir.path().join("no-such.csv"),
        &["--metrics-file", prom_arg],
    );
    missing.expect_code(2);
    let third = scrape(&prom);
    assert_eq!(third["verigator_sync_last_run_exit_code"], 2.0);
    assert_eq!(
        third["verigator_sync_sent_rows_total"],
        second["verigator_sync_sent_rows_total"]
    );

    // Then a successful run moves the last success.
    env.import(&more, &["--metrics-file", prom_arg])
        .expect_code(0);
    let fourth = scrape(&prom);
    assert!(fourth["verigator_sync_last_success_timestamp_seconds"] > success);
    assert_eq!(fourth["verigator_sync_rows_total{outcome=synced}"], 12.0);
    // Each counter is the sum over the runs table, the aborted run included.
    let ledger = rusqlite::Connection::open(env.ledger()).expect("ledger");
    for outcome in ["skipped", "synced", "invalid", "retry", "sent"] {
        let sum: f64 = ledger
            .query_row(&format!("SELECT total({outcome}) FROM runs"), [], |r| {
                r.get(0)
            })
            .expect("sum");
        let name = match outcome {
            "sent" => "verigator_sync_sent_rows_total".to_string(),
            _ => format!("verigator_sync_rows_total{{outcome={outcome}}}"),
        };
        assert_eq!(fourth[&name], sum, "{outcome}");
    }
    assert!(fourth["verigator_sync_rows_total{outcome=skipped}"] >= 10.0);
    let left: Vec<String> = std::fs::read_dir(env.dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "no temporary file left: {left:?}");
}

#[test]
fn a_metrics_file_onto_the_ledger_the_input_or_the_report_is_refused() {
    let env = Env::new();
    let users = env.file("u.csv", users_csv(0, 2));
    let ledger = env.ledger();
    for (target, extra) in [
        (ledger.to_str().expect("utf-8"), vec![]),
        (users.to_str().expect("utf-8"), vec![]),
        ("r.csv", vec!["--report", "r.csv"]),
        (".", vec![]),
    ] {
        let mut args = vec!["--metrics-file", target];
        args.extend(extra);
        let run = env.import(&users, &args);
        run.expect_code(2);
        assert!(run.stderr.contains("--metrics-file"), "{}", run.stderr);
    }
    assert!(env.remote().is_empty(), "nothing sent");
    let dry = env.import(&users, &["--metrics-file", "m.prom", "--dry-run"]);
    dry.expect_code(2);
}
