//! Hostile environments, strings and sizes: proxies that must not see the password, control
//! characters from the CSV or the server, answers and rows too large to hold. Each test runs the
//! real binary against the simulator (or a stand-in server of its own) on loopback.

mod support;

use std::io::Read;
use std::net::TcpListener;
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
