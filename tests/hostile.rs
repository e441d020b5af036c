//! Hostile environments, strings and sizes: proxies that must not see the password, control
//! characters from the CSV or the server, answers and rows too large to hold. Each test runs the
//! real binary against the simulator (or a stand-in server of its own) on loopback.

mod support;

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::FileTypeExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::{Env, Run, users_csv};

/// A server standing in for a proxy: counts the connections it is offered, for `for_how_long`.
fn proxy_standin(for_how_long: Duration) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    std::thread::spawn(move || {
        let until = Instant::now() + for_how_long;
        while Instant::now() < until {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let mut buf = [0u8; 1024];
                    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
                    let _ = stream.read(&mut buf);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    (url, seen)
}

#[test]
fn plain_http_to_loopback_never_goes_through_a_proxy() {
    let env = Env::new();
    let (proxy, seen) = proxy_standin(Duration::from_secs(30));
    let csv = env.file("u.csv", users_csv(0, 5));
    let mut cmd = env.cmd();
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env(var, &proxy);
    }
    cmd.args(["import", "--json", "--no-progress", "-v"])
        .arg(&csv);
    let run = Run::of(cmd.output().expect("runs"));
    run.expect_code(0);
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "the proxy was offered a connection"
    );
    assert_eq!(env.remote().len(), 5);
    assert!(
        run.stderr
            .contains("proxy: none, requests go directly to the API"),
        "{}",
        run.stderr
    );
}

/// Fails on any character that must never reach a terminal raw: C0/C1 controls but the line
/// break, and the bidi controls.
fn assert_printable(what: &str, text: &str) {
    let bad = text.chars().find(|&c| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    });
    assert!(bad.is_none(), "{what} holds {bad:?}:\n{text}");
}

fn seeded(id: &str, user_id: &str) -> verigator_sync::simulator::SeedUser {
    verigator_sync::simulator::SeedUser {
        service_id: None,
        id_in_service: id.into(),
        phone_number: "+37250000000".into(),
        user_id: Some(user_id.into()),
    }
}

#[test]
fn hostile_ids_and_user_ids_never_reach_the_ledger_or_a_terminal_raw() {
    let hostile = ["..", "a/../b", "\u{1b}[31mred\u{7}", "has space"];
    let mut seed: Vec<_> = hostile
        .iter()
        .enumerate()
        .map(|(i, uid)| seeded(&format!("user{i}@example.com"), uid))
        .collect();
    seed.push(seeded(
        "user4@example.com",
        "b0e6d2a4-9bd5-4c5e-9f2e-1b2c3d4e5f60",
    ));
    let env = Env::with(verigator_sync::simulator::SimConfig {
        seed,
        ..verigator_sync::simulator::SimConfig::default()
    });
    let mut text = users_csv(0, 5);
    text.push_str("esc\u{1b}]0;pwned\u{7}@example.com,+37251111111\n");
    text.push_str("bidi\u{202E}moc.elpmaxe@example.com,+37251111112\n");
    let csv = env.file("u.csv", text);
    let run = env.import(&csv, &["-v"]);
    run.expect_code(1);
    assert_eq!(
        (
            run.count("invalid"),
            run.count("unresolved"),
            run.count("resolved")
        ),
        (2, 4, 1)
    );
    assert_printable("import -v", &format!("{}{}", run.stdout, run.stderr));
    run.expect_line(
        "u.csv:7: invalid: ",
        "id_in_service contains the control character U+001B; ids must be printable",
    );
    run.expect_line(
        "u.csv:8: invalid: ",
        "id_in_service contains the control character U+202E; ids must be printable",
    );
    assert!(run.stderr.contains("malformed UserID"), "{}", run.stderr);
    // The ledger holds no hostile UserID and no hostile id.
    let rows = env.rows();
    for row in rows.values() {
        assert!(
            !hostile.contains(&row.user_id.as_deref().unwrap_or("")),
            "{row:?}"
        );
        assert_printable("a ledger id", &row.id_in_service);
    }
    assert_eq!(rows.len(), 5);
    assert!(rows["user4@example.com"].user_id.is_some());
    for args in [
        vec!["export"],
        vec!["export", "--history"],
        vec!["export", "--format", "ndjson"],
        vec!["status"],
        vec!["status", "--json"],
        vec!["reconcile", "--fix"],
        vec!["reconcile", "--json"],
    ] {
        let out = Run::of(env.cmd().args(&args).output().expect("runs"));
        assert_printable(&args.join(" "), &format!("{}{}", out.stdout, out.stderr));
        assert!(!out.stdout.contains("a/../b"), "{args:?}: {}", out.stdout);
    }
    // reconcile never takes a malformed UserID, even with --fix.
    let rows = env.rows();
    assert!(
        rows.values()
            .all(|r| !hostile.contains(&r.user_id.as_deref().unwrap_or("")))
    );
}

#[test]
fn a_malformed_user_id_already_in_a_ledger_is_never_put_into_a_delete() {
    let env = Env::new();
    env.import(&env.file("u.csv", users_csv(0, 2)), &[])
        .expect_code(0);
    let conn = rusqlite::Connection::open(env.ledger()).expect("ledger");
    conn.execute(
        "UPDATE users SET user_id = '..' WHERE id_in_service = 'user0@example.com'",
        [],
    )
    .expect("as an older version might have stored it");
    drop(conn);
    let changed = users_csv(0, 2).replace("+37250000000", "+37259999999");
    let run = env.import(&env.file("v.csv", changed), &["--apply-changes"]);
    run.expect_code(1);
    assert_eq!(
        env.sim.stats().delete_requests,
        0,
        "no DELETE of the collection"
    );
    assert_eq!(env.remote().len(), 2, "nobody deleted");
    assert!(
        run.stderr
            .contains("is malformed; it is not put into a URL"),
        "{}",
        run.stderr
    );
}

#[test]
fn status_shows_a_cell_under_every_header() {
    let env = Env::new();
    env.import(&env.file("u.csv", users_csv(0, 2)), &[])
        .expect_code(0);
    let out = Run::of(env.cmd().arg("status").output().expect("status"));
    let lines: Vec<&str> = out.stdout.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.trim_start().starts_with("run "))
        .expect("runs header");
    let names: Vec<&str> = lines[header].split_whitespace().collect();
    let cells: Vec<&str> = lines[header + 1].split_whitespace().collect();
    assert_eq!(names.len(), cells.len(), "{}", out.stdout);
    let at = |name| names.iter().position(|n| *n == name).expect(name);
    assert_eq!(cells[at("exit")], "0", "{}", out.stdout);
    assert_eq!(cells[at("rows")], "2", "{}", out.stdout);
    assert!(cells[at("duration")].ends_with('s'), "{}", out.stdout);
}

/// A server that answers every create with a 201 whose body never ends (it streams until the
/// client hangs up) and every list with an empty list. Returns its base URL.
fn endless_answers() -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut head = String::new();
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                let mut body = vec![0u8; length];
                let _ = reader.read_exact(&mut body);
                let mut out = stream;
                if head.starts_with("GET") {
                    let list = br#"{"users":[],"total":0}"#;
                    let _ = write!(
                        out,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        list.len()
                    );
                    let _ = out.write_all(list);
                    return;
                }
                let _ = out.write_all(
                    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"id\":\"",
                );
                let chunk = vec![b'x'; 64 * 1024];
                // At most 256 MiB, and only as long as the client reads.
                for _ in 0..4096 {
                    if out.write_all(&chunk).is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

/// Waits for a run (two minutes at most) while sampling its peak resident memory, in KiB.
fn finish_measuring_peak(mut child: std::process::Child) -> (Run, u64) {
    let started = Instant::now();
    let mut peak = 0;
    while child.try_wait().expect("wait").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the run never ended"
        );
        peak = peak.max(peak_rss_kib(child.id()).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(5));
    }
    (Run::of(child.wait_with_output().expect("output")), peak)
}

/// The peak resident memory of a running process, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[test]
fn an_endless_answer_is_read_no_further_than_64_kib() {
    let env = Env::new();
    let base = endless_answers();
    let csv = env.file("u.csv", users_csv(0, 4));
    let child = env
        .cmd()
        .env("VERIGATOR_BASE_URL", &base)
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
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let (run, peak) = finish_measuring_peak(child);
    // Created, but no UserID could be read: present, and unresolved (the list is empty).
    run.expect_code(1);
    assert_eq!((run.count("present"), run.count("unresolved")), (4, 4));
    assert!(peak < 48 * 1024, "peak RSS {peak} KiB");
}

#[test]
fn report_cells_a_spreadsheet_would_run_are_quoted_and_reimport_losslessly() {
    let env = Env::new();
    let ids = [
        "=HYPERLINK(\"http://x\")",
        "-2+3",
        "@SUM(A1)",
        "+cmd",
        "'quoted",
        "plain",
    ];
    let mut text = String::from("id_in_service,phone_number\n");
    for id in ids {
        text.push_str(&format!("\"{}\",12\n", id.replace('"', "\"\"")));
    }
    let report = env.dir.path().join("fix-me.csv");
    let run = env.import(
        &env.file("u.csv", text),
        &["--report", report.to_str().expect("utf-8")],
    );
    run.expect_code(1);
    let written = std::fs::read_to_string(&report).expect("report");
    let cells: Vec<String> = csv::Reader::from_reader(written.as_bytes())
        .records()
        .map(|r| r.expect("row")[1].to_string())
        .collect();
    assert_eq!(
        cells,
        [
            "'=HYPERLINK(\"http://x\")",
            "'-2+3",
            "'@SUM(A1)",
            "'+cmd",
            "''quoted",
            "plain"
        ],
        "{written}"
    );
    // Fix the phones in the report and feed it back: the ids arrive exactly as they were.
    let fixed: String = written
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 0 {
                format!("{l}\n")
            } else {
                format!("{}\n", l.replacen(",12,", &format!(",+3725000000{i},"), 1))
            }
        })
        .collect();
    env.import(&env.file("fixed.csv", fixed), &[])
        .expect_code(0);
    let mut remote: Vec<String> = env.remote().into_keys().collect();
    remote.sort();
    let mut want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(remote, want);
}

#[test]
fn reconcile_report_is_private_written_whole_and_never_follows_a_symlink() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    env.import(&env.file("u.csv", users_csv(0, 2)), &[])
        .expect_code(0);
    env.sim
        .insert_user(support::SERVICE, "=stranger", "+37250000009");
    let precious = env.file("precious.txt", "keep me\n");
    let link = env.dir.path().join("disagreements.csv");
    std::os::unix::fs::symlink(&precious, &link).expect("symlink");
    let run = Run::of(
        env.cmd()
            .args(["reconcile", "--report", "disagreements.csv"])
            .output()
            .expect("reconcile"),
    );
    run.expect_code(1);
    assert_eq!(
        std::fs::read_to_string(&precious).expect("read"),
        "keep me\n"
    );
    let meta = std::fs::symlink_metadata(&link).expect("report");
    assert!(meta.is_file(), "the link was replaced by the report");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&link).expect("report");
    assert!(text.contains("at_verigator_only,'=stranger,"), "{text}");
}

#[test]
fn an_unterminated_quote_in_a_large_file_costs_no_memory_and_names_its_line() {
    let env = Env::new();
    let path = env.dir.path().join("big.csv");
    {
        use std::io::Write;
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
        file.write_all(users_csv(0, 3).as_bytes()).expect("write");
        file.write_all(b"\"broken,+37250000009\n").expect("write");
        let line = [b'x'; 1023];
        for _ in 0..(64 * 1024) {
            file.write_all(&line).expect("write");
            file.write_all(b"\n").expect("write");
        }
    }
    let child = env
        .cmd()
        .args(["import", "--json", "--no-progress", "--rate", "0"])
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let (run, peak) = finish_measuring_peak(child);
    // The row is cut and reported; its quote never closes, so the rest of the file cannot be read
    // as rows: that is said, and since rows were sent the run ends aborted, with its summary.
    run.expect_code(3);
    assert_eq!((run.count("synced"), run.count("invalid")), (3, 1));
    run.expect_line(
        "big.csv:5: invalid: ",
        "(an unterminated quote?); it was not read whole",
    );
    assert!(
        run.stderr
            .contains("the quote opened in the row on line 5 is never closed, so the 65537 lines"),
        "{}",
        run.stderr
    );
    assert!(peak < 32 * 1024, "peak RSS {peak} KiB for a 64 MiB file");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    #[test]
    fn hostile_csv_bytes_never_panic_or_reach_the_terminal_raw(
        body in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::prelude::any::<u8>(),
                proptest::sample::select(vec![b'"', b',', b'\n', b'\r', 0x1b, 0x07, b'+', b'1']),
            ],
            0..2048,
        ),
        with_header in proptest::bool::ANY,
    ) {
        let env = Env::new();
        let mut data = if with_header {
            b"id_in_service,phone_number\n".to_vec()
        } else {
            Vec::new()
        };
        data.extend_from_slice(&body);
        data.extend_from_slice("\u{1b}[2Jevil\u{202e},+37255555555\n".as_bytes());
        let csv = env.file("h\u{1b}]0;x\u{7}.csv", &data);
        for extra in [["--dry-run", "-v"], ["--dry-run", "-q"]] {
            let run = Run::of(
                env.cmd()
                    .args(["import", "--json", "--no-progress"])
                    .args(extra)
                    .arg(&csv)
                    .output()
                    .expect("runs"),
            );
            proptest::prop_assert!([0, 1, 2].contains(&run.code), "exit {}: {}", run.code, run.stderr);
            proptest::prop_assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
            assert_printable("import", &format!("{}{}", run.stdout, run.stderr));
        }
    }
}

/// A server that refuses every create with a 422 quoting the request's `X-Service-Auth`, its
/// first character JSON-escaped when `escaped`.
fn echoing_server(escaped: bool) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let (mut auth, mut length) = (String::new(), 0usize);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("x-service-auth:") {
                    auth = line[line.len() - v.len()..].trim().to_string();
                }
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            let auth = match (escaped, auth.chars().next()) {
                (true, Some(first)) => {
                    format!("\\u{:04x}{}", u32::from(first), &auth[first.len_utf8()..])
                }
                _ => auth,
            };
            let answer = format!(r#"{{"message":"bad user {auth}"}}"#);
            let mut out = stream;
            let _ = write!(
                out,
                "HTTP/1.1 422 Unprocessable Entity\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    url
}

#[test]
fn a_password_the_server_echoes_never_reaches_the_ledger_the_report_or_the_terminal() {
    for escaped in [false, true] {
        echoed_password_is_taken_out(escaped);
    }
}

fn echoed_password_is_taken_out(escaped: bool) {
    let env = Env::new();
    let base = echoing_server(escaped);
    let csv = env.file("u.csv", users_csv(0, 2));
    let run = Run::of(
        env.cmd()
            .env("VERIGATOR_BASE_URL", &base)
            .env("VERIGATOR_PASSWORD", "hunter2-XYZ")
            .args([
                "import",
                "--json",
                "--no-progress",
                "-v",
                "--report",
                "r.csv",
            ])
            .arg(&csv)
            .output()
            .expect("runs"),
    );
    run.expect_code(1);
    assert_eq!(run.count("failed"), 2);
    assert!(run.stderr.contains("bad user ***"), "{}", run.stderr);
    let report = std::fs::read_to_string(env.dir.path().join("r.csv")).expect("report");
    let ledger = std::fs::read(env.ledger()).expect("ledger");
    for (what, text) in [
        ("output", format!("{}{}", run.stdout, run.stderr)),
        ("report", report),
        ("ledger", String::from_utf8_lossy(&ledger).into_owned()),
    ] {
        assert!(
            !text.contains("hunter2-XYZ"),
            "the password is in the {what}"
        );
    }
}

#[test]
fn a_report_row_fed_back_keeps_its_id_exactly() {
    let env = Env::new();
    let csv = env.file("a.csv", "id_in_service,phone_number\nCORP\\jdoe,12\n");
    let run = env.import(&csv, &["--report", "r.csv"]);
    run.expect_code(1);
    let report = std::fs::read_to_string(env.dir.path().join("r.csv")).expect("report");
    assert!(report.contains("2,CORP\\jdoe,12,invalid,"), "{report}");
    let fixed = report.replace(",12,invalid,", ",+37250000001,invalid,");
    env.import(&env.file("r2.csv", fixed), &[]).expect_code(0);
    assert!(
        env.remote().contains_key("CORP\\jdoe"),
        "{:?}",
        env.remote()
    );
    // The original file, fixed, meets the same user: nobody registered twice.
    let again = env.file(
        "b.csv",
        "id_in_service,phone_number\nCORP\\jdoe,+37250000001\n",
    );
    let run = env.import(&again, &[]);
    run.expect_code(0);
    assert_eq!((run.count("skipped"), env.sim.stats().created), (1, 1));
}

#[test]
fn outputs_that_are_not_regular_files_and_odd_numbers_are_refused_cleanly() {
    let env = Env::new();
    env.import(&env.file("u.csv", users_csv(0, 2)), &[])
        .expect_code(0);
    let fifo = env.dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    for args in [
        vec!["export", "--out", "fifo"],
        vec!["reconcile", "--fix", "--report", "fifo"],
        vec!["reconcile", "--fix", "--report", "missing/dir/r.csv"],
    ] {
        let run = Run::of(env.cmd().args(&args).output().expect("runs"));
        run.expect_code(2);
        assert_eq!(
            env.sim.stats().list_requests,
            0,
            "{args:?}: checked before the list"
        );
    }
    assert!(
        std::fs::symlink_metadata(&fifo)
            .expect("fifo")
            .file_type()
            .is_fifo()
    );
    let run = env.import(
        &env.file("v.csv", users_csv(0, 2)),
        &["--progress-interval", "NaN"],
    );
    run.expect_code(0);
    // An id whose edges hold NEL or a form feed is rejected, not trimmed into another id.
    let run = env.import(
        &env.file(
            "w.csv",
            "id_in_service,phone_number\n\u{85}lead,+37250000007\n\u{c}ff,+37250000008\n",
        ),
        &[],
    );
    run.expect_code(1);
    assert_eq!(run.count("invalid"), 2);
}

/// One request's method line, after its head and body were read off `reader`.
fn read_request(reader: &mut impl std::io::BufRead) -> Option<String> {
    let mut first = String::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
        if first.is_empty() {
            first = line;
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some(first)
}

/// A server on which every user exists (a create is a 409) and whose user list is `list`, sent in
/// pieces of `piece` bytes with `pause` after each. The first list answer, `first`, is cut off
/// half-way (a body shorter than its length): the client must read the list again from its start.
/// Returns the base URL and the count of list requests.
fn listing_server(
    first: Vec<u8>,
    list: Vec<u8>,
    (piece, pause): (usize, Duration),
) -> (String, Arc<AtomicUsize>) {
    use std::io::{BufReader, Write};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let lists = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&lists);
    let (first, list) = (Arc::new(first), Arc::new(list));
    std::thread::spawn(move || {
        for stream in listener.incoming().take(256) {
            let Ok(stream) = stream else { continue };
            let (counter, first, list) =
                (Arc::clone(&counter), Arc::clone(&first), Arc::clone(&list));
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut out = stream;
                while let Some(request) = read_request(&mut reader) {
                    if !request.starts_with("GET") {
                        let body = br#"{"message":"exists"}"#;
                        let head = format!(
                            "HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                            body.len()
                        );
                        let _ = out
                            .write_all(head.as_bytes())
                            .and_then(|()| out.write_all(body));
                        continue;
                    }
                    let cut = counter.fetch_add(1, Ordering::SeqCst) == 0;
                    let body = if cut { &first } else { &list };
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let sent = if cut { body.len() / 2 } else { body.len() };
                    let _ = out.write_all(head.as_bytes());
                    for piece in body[..sent].chunks(piece) {
                        if out.write_all(piece).is_err() {
                            break;
                        }
                        std::thread::sleep(pause);
                    }
                    return;
                }
            });
        }
    });
    (url, lists)
}

/// A user list with good entries, malformed ones (not objects, no string `id`, one of 32 MiB)
/// and its count after the users, between unknown keys.
fn hostile_list(user0: &str) -> Vec<u8> {
    let entry = |i: u32, uid: &str| {
        format!(
            r#"{{"id":"{uid}","ctime":"2024-01-02T03:04:05Z","id_in_service":"user{i}@example.com"}}"#
        )
    };
    let huge = "x".repeat(32 << 20);
    let users = [
        entry(0, user0),
        entry(1, "uid-1"),
        r#"{"extra":{"deep":[1,2,{"id":"no"}]},"id":"uid-2","id_in_service":"user2@example.com"}"#
            .to_string(),
        r#"{"id_in_service":"user3@example.com"}"#.to_string(),
        format!(r#"{{"id":"{huge}","id_in_service":"user4@example.com"}}"#),
        r#"{"id":{"x":1},"id_in_service":"user5@example.com"}"#.to_string(),
        entry(6, "uid-6"),
        "7".to_string(),
        r#""user8@example.com""#.to_string(),
        r#"["uid-9","user9@example.com"]"#.to_string(),
    ];
    format!(
        r#"{{"page":{{"next":null}},"users":[{}],"note":"the count comes last","count":7}}"#,
        users.join(",\n")
    )
    .into_bytes()
}

#[test]
fn malformed_list_entries_are_skipped_unheld_and_make_the_list_incomplete() {
    let env = Env::new();
    let (base, lists) = listing_server(
        hostile_list("uid-stale"),
        hostile_list("uid-0"),
        (64 * 1024, Duration::ZERO),
    );
    let csv = env.file("u.csv", users_csv(0, 10));
    let child = env
        .cmd()
        .env("VERIGATOR_BASE_URL", &base)
        .args(["import", "--json", "--no-progress", "--rate", "0"])
        .arg(&csv)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let (run, peak) = finish_measuring_peak(child);
    run.expect_code(1);
    assert_eq!(
        lists.load(Ordering::SeqCst),
        2,
        "the cut-off list was read again"
    );
    assert_eq!((run.count("present"), run.count("resolved")), (10, 4));
    assert!(
        peak < 48 * 1024,
        "the 32 MiB entry was held: peak RSS {peak} KiB"
    );
    let rows = env.rows();
    for (i, uid) in [(0, "uid-0"), (1, "uid-1"), (2, "uid-2"), (6, "uid-6")] {
        let row = &rows[&format!("user{i}@example.com")];
        assert_eq!(row.user_id.as_deref(), Some(uid), "{row:?}");
    }
    assert!(
        run.stderr
            .contains("the user list has 6 malformed entries (not an object with string id and id_in_service, or over 64 KiB), skipped: it is incomplete"),
        "{}",
        run.stderr
    );
    run.expect_line(
        "u.csv:5: unresolved: \"user3@example.com\"",
        "not in the user list, which is truncated (4 of 7 users) and had 6 malformed entries; the next run looks again",
    );

    // reconcile refuses such a list: nothing compared, nothing fixed, no report.
    let before = env.rows();
    let run = Run::of(
        env.cmd()
            .env("VERIGATOR_BASE_URL", &base)
            .args(["reconcile", "--fix", "--report", "r.csv"])
            .output()
            .expect("reconcile"),
    );
    run.expect_code(1);
    assert!(
        run.stderr.contains(
            "the user list has 6 malformed entries (not an object with string id and id_in_service, or over 64 KiB): it is incomplete, so reconcile compared nothing and changed nothing"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(env.rows(), before);
    assert!(!env.dir.path().join("r.csv").exists());
}

#[test]
fn a_list_that_streams_for_longer_than_the_timeout_is_read_while_bytes_keep_coming() {
    let env = Env::new();
    let users: Vec<String> = (0..5)
        .map(|i| format!(r#"{{"id":"uid-{i}","id_in_service":"user{i}@example.com"}}"#))
        .collect();
    let list = format!(r#"{{"users":[{}],"total":5}}"#, users.join(",")).into_bytes();
    // The whole list takes about 1.6 s to arrive, in pieces 0.2 s apart; --timeout is 0.6 s.
    let piece = list.len() / 8 + 1;
    let (base, lists) = listing_server(b"{}".to_vec(), list, (piece, Duration::from_millis(200)));
    let run = Run::of(
        env.cmd()
            .env("VERIGATOR_BASE_URL", &base)
            .args([
                "import",
                "--json",
                "--no-progress",
                "--rate",
                "0",
                "--timeout",
                "0.6",
            ])
            .arg(env.file("u.csv", users_csv(0, 5)))
            .output()
            .expect("import"),
    );
    run.expect_code(0);
    assert_eq!(run.count("resolved"), 5);
    assert_eq!(
        lists.load(Ordering::SeqCst),
        2,
        "the cut-off first answer, then the list"
    );
}

/// A list of `user{i}@example.com` for `ids`, with UserIDs `uid-{i}` and no count.
fn uncounted_list(ids: std::ops::Range<u32>) -> Vec<u8> {
    let users: Vec<String> = ids
        .map(|i| format!(r#"{{"id":"uid-{i}","id_in_service":"user{i}@example.com"}}"#))
        .collect();
    format!(r#"{{"users":[{}]}}"#, users.join(",")).into_bytes()
}

#[test]
fn reconcile_fixes_nothing_on_a_list_that_states_no_count_unless_forced() {
    let env = Env::new();
    let whole = uncounted_list(0..4);
    let (base, _) = listing_server(whole.clone(), whole, (64 * 1024, Duration::ZERO));
    let csv = env.file("u.csv", users_csv(0, 4));
    let run = Run::of(
        env.cmd()
            .env("VERIGATOR_BASE_URL", &base)
            .args(["import", "--json", "--no-progress", "--rate", "0"])
            .arg(&csv)
            .output()
            .expect("import"),
    );
    run.expect_code(0);
    assert_eq!(run.count("resolved"), 4);
    // A count below what the list holds contradicts it: no fix either.
    let below = uncounted_list(0..2)
        .strip_suffix(b"}")
        .map(|l| [l, br#","total":1}"#].concat())
        .expect("a list");
    let (base, _) = listing_server(below.clone(), below, (64 * 1024, Duration::ZERO));
    let before = env.rows();
    let run = Run::of(
        env.cmd()
            .env("VERIGATOR_BASE_URL", &base)
            .args(["reconcile", "--fix"])
            .output()
            .expect("reconcile"),
    );
    assert!(
        run.stderr
            .contains("it contradicts itself, so --fix changed nothing"),
        "{}",
        run.stderr
    );
    assert_eq!(env.rows(), before);
    // Half the users, and nothing to say that is all of them: a cut-short answer looks the same.
    let half = uncounted_list(0..2);
    let (base, _) = listing_server(half.clone(), half, (64 * 1024, Duration::ZERO));
    let before = env.rows();
    let reconcile = |extra: &[&str]| {
        Run::of(
            env.cmd()
                .env("VERIGATOR_BASE_URL", &base)
                .args(["reconcile", "--fix"])
                .args(extra)
                .output()
                .expect("reconcile"),
        )
    };
    let run = reconcile(&[]);
    assert!(
        run.stderr
            .contains("the user list states no count (`total` or `count`), so nothing shows that it is complete: --fix changed nothing"),
        "{}",
        run.stderr
    );
    assert_eq!(env.rows(), before);
    reconcile(&["--force"]);
    let rows = env.rows();
    assert_eq!(rows["user3@example.com"].status, "retry");
    assert_eq!(rows["user1@example.com"].user_id.as_deref(), Some("uid-1"));
}
