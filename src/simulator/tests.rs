//! The simulator over real HTTP: each test starts one on 127.0.0.1:0 and talks to it with reqwest.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

const SERVICE: &str = "81213bfd-b690-499e-b9d2-8754cb1550e8";

fn ephemeral() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn start(config: SimConfig) -> Simulator {
    Simulator::start(ephemeral(), config)
        .await
        .expect("simulator starts on an ephemeral port")
}

/// A client bound to one simulator, with the default demo credentials.
struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(sim: &Simulator) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: sim.base_url(),
        }
    }

    fn users_url(&self, service: &str) -> String {
        format!("{}/v1/service/service/{service}/users", self.base)
    }

    async fn create_raw(&self, service: &str, body: &str) -> reqwest::Result<reqwest::Response> {
        self.http
            .post(self.users_url(service))
            .header("X-Service-Auth", "demo:demo")
            .header("Content-Type", "application/json")
            .body(body.to_owned())
            .send()
            .await
    }

    async fn create(&self, service: &str, id: &str, phone: &str) -> (StatusCode, Value) {
        let body = json!({"id_in_service": id, "phone_number": phone}).to_string();
        let response = self
            .create_raw(service, &body)
            .await
            .expect("create answered");
        read(response).await
    }

    async fn get(&self, url: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(url)
            .header("X-Service-Auth", "demo:demo")
            .send()
            .await
            .expect("get answered");
        read(response).await
    }
}

async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let is_json = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v == "application/json");
    let text = response.text().await.expect("body readable");
    let value = if text.is_empty() {
        Value::Null
    } else {
        assert!(is_json, "non-empty bodies are JSON: {text}");
        serde_json::from_str(&text).expect("body is JSON")
    };
    (status, value)
}

fn message(body: &Value) -> &str {
    body["message"].as_str().expect("error body has a message")
}

#[tokio::test]
async fn create_answers_201_with_user_object() {
    let sim = start(SimConfig::default()).await;
    let client = Client::new(&sim);
    let (status, body) = client.create(SERVICE, "alice", "+3725555555").await;
    assert_eq!(status, StatusCode::CREATED);
    let object = body.as_object().expect("object");
    assert_eq!(object.len(), 3, "only id, ctime, id_in_service: {body}");
    assert_eq!(body["id_in_service"], "alice");
    let id = body["id"].as_str().expect("id is a string");
    assert_eq!(
        uuid::Uuid::parse_str(id).map(|u| u.get_version_num()),
        Ok(4)
    );
    let ctime = body["ctime"].as_str().expect("ctime is a string");
    assert!(chrono::NaiveDateTime::parse_from_str(ctime, "%Y-%m-%dT%H:%M:%S%.6f").is_ok());

    let users = sim.users(SERVICE);
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].id, id);
    assert_eq!(users[0].phone_number, "+3725555555");
    assert_eq!(users[0].ctime, ctime);
    assert_eq!(sim.create_attempts(SERVICE, "alice"), 1);
    let stats = sim.stats();
    assert_eq!((stats.create_requests, stats.created), (1, 1));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn create_status_200_is_configurable() {
    let sim = start(SimConfig {
        create_status: 200,
        ..SimConfig::default()
    })
    .await;
    let (status, body) = Client::new(&sim).create(SERVICE, "bob", "+1555").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["id_in_service"], "bob");
    sim.shutdown().await;
}

#[tokio::test]
async fn invalid_create_status_is_refused_at_start() {
    let config = SimConfig {
        create_status: 204,
        ..SimConfig::default()
    };
    let err = Simulator::start(ephemeral(), config)
        .await
        .err()
        .expect("204 is not a create status");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn missing_or_wrong_credentials_are_401() {
    let sim = start(SimConfig {
        password: "pa:ss".into(),
        ..SimConfig::default()
    })
    .await;
    let client = Client::new(&sim);
    let url = client.users_url(SERVICE);
    let attempts = [None, Some("demo:wrong"), Some("demo"), Some("demo:pa")];
    for header in attempts {
        let mut request = client.http.get(&url);
        if let Some(header) = header {
            request = request.header("X-Service-Auth", header);
        }
        let (status, body) = read(request.send().await.expect("answered")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "header {header:?}");
        assert!(!message(&body).is_empty());
    }
    // The password contains a colon: only the first one separates.
    let response = client
        .http
        .get(&url)
        .header("X-Service-Auth", "demo:pa:ss")
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(sim.stats().unauthorized, 4);
    sim.shutdown().await;
}

#[tokio::test]
async fn unauthorized_create_creates_nothing_but_counts_the_attempt() {
    let sim = start(SimConfig::default()).await;
    let client = Client::new(&sim);
    let response = client
        .http
        .post(client.users_url(SERVICE))
        .body(r#"{"id_in_service":"eve","phone_number":"+1"}"#)
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(sim.users(SERVICE).is_empty());
    assert_eq!(sim.create_attempts(SERVICE, "eve"), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn second_create_is_409() {
    let sim = start(SimConfig::default()).await;
    let client = Client::new(&sim);
    assert_eq!(
        client.create(SERVICE, "alice", "+1").await.0,
        StatusCode::CREATED
    );
    let (status, body) = client.create(SERVICE, "alice", "+2").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(message(&body), "User already exists");
    // Another service is another namespace.
    assert_eq!(
        client.create("other", "alice", "+1").await.0,
        StatusCode::CREATED
    );
    assert_eq!(sim.users(SERVICE).len(), 1);
    assert_eq!(sim.users(SERVICE)[0].phone_number, "+1");
    assert_eq!(sim.create_attempts(SERVICE, "alice"), 2);
    assert_eq!(sim.stats().conflicts, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn bad_bodies_are_422_with_a_message() {
    let sim = start(SimConfig::default()).await;
    let client = Client::new(&sim);
    let cases = [
        ("{not json", "not valid JSON"),
        (r#"{"id_in_service":"a"}"#, "phone_number"),
        (
            r#"{"id_in_service":"","phone_number":"+1"}"#,
            "id_in_service",
        ),
        (r#"{"id_in_service":"a","phone_number":5}"#, "phone_number"),
        (r#"["a","+1"]"#, "JSON object"),
    ];
    for (body, expected) in cases {
        let response = client.create_raw(SERVICE, body).await.expect("answered");
        let (status, value) = read(response).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "body {body}");
        assert!(message(&value).contains(expected), "body {body}: {value}");
    }
    // No Content-Type at all is still parsed as JSON.
    let response = client
        .http
        .post(client.users_url(SERVICE))
        .header("X-Service-Auth", "demo:demo")
        .body(r#"{"id_in_service":"a","phone_number":"+1"}"#)
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(sim.stats().rejected, 5);
    sim.shutdown().await;
}

#[tokio::test]
async fn list_get_and_delete() {
    let sim = start(SimConfig::default()).await;
    let client = Client::new(&sim);
    let (_, empty) = client.get(&client.users_url(SERVICE)).await;
    assert_eq!(empty, json!({"users": [], "total": 0}));

    let mut ids = Vec::new();
    for name in ["c", "a", "b"] {
        let (_, body) = client.create(SERVICE, name, "+1").await;
        ids.push(body["id"].as_str().expect("id").to_owned());
    }
    let (status, list) = client.get(&client.users_url(SERVICE)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["total"], 3);
    let names: Vec<_> = list["users"]
        .as_array()
        .expect("users array")
        .iter()
        .map(|u| u["id_in_service"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["c", "a", "b"], "creation order");
    assert!(list["users"][0].get("phone_number").is_none());

    let user_url = format!("{}/{}", client.users_url(SERVICE), ids[1]);
    let (status, user) = client.get(&user_url).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(user, list["users"][1]);

    let delete = |url: String| {
        let http = client.http.clone();
        async move {
            http.delete(url)
                .header("X-Service-Auth", "demo:demo")
                .send()
                .await
                .expect("answered")
        }
    };
    let response = delete(user_url.clone()).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(response.text().await.expect("body"), "");
    assert_eq!(
        delete(user_url.clone()).await.status(),
        StatusCode::NOT_FOUND
    );
    let (status, body) = client.get(&user_url).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(message(&body), "User not found");
    let bogus = format!("{}/not-a-uuid", client.users_url(SERVICE));
    assert_eq!(client.get(&bogus).await.0, StatusCode::NOT_FOUND);

    let (_, list) = client.get(&client.users_url(SERVICE)).await;
    assert_eq!(list["total"], 2);
    // A deleted name can be registered again, with a new UserID.
    let (status, again) = client.create(SERVICE, "a", "+1").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_ne!(again["id"], ids[1].as_str());

    let stats = sim.stats();
    assert_eq!((stats.list_requests, stats.get_requests), (3, 3));
    assert_eq!((stats.delete_requests, stats.deleted), (2, 1));
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_service_is_404_when_restricted() {
    let sim = start(SimConfig {
        service_ids: Some(vec![SERVICE.to_owned()]),
        ..SimConfig::default()
    })
    .await;
    let client = Client::new(&sim);
    let (status, body) = client.create("nope", "alice", "+1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(message(&body), "Service not found");
    let (status, body) = client.get(&client.users_url("nope")).await;
    assert_eq!(
        (status, message(&body)),
        (StatusCode::NOT_FOUND, "Service not found")
    );
    let user_url = format!("{}/{}", client.users_url("nope"), uuid::Uuid::new_v4());
    let (status, body) = client.get(&user_url).await;
    assert_eq!(
        (status, message(&body)),
        (StatusCode::NOT_FOUND, "Service not found")
    );
    assert_eq!(
        client.create(SERVICE, "alice", "+1").await.0,
        StatusCode::CREATED
    );
    assert!(sim.users("nope").is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn other_paths_are_json_404() {
    let sim = start(SimConfig::default()).await;
    let client = Client::new(&sim);
    let (status, body) = client
        .get(&format!("{}/v1/service/service", sim.base_url()))
        .await;
    assert_eq!(
        (status, message(&body)),
        (StatusCode::NOT_FOUND, "Not found")
    );
    let response = client
        .http
        .put(client.users_url(SERVICE))
        .header("X-Service-Auth", "demo:demo")
        .send()
        .await
        .expect("answered");
    let (status, body) = read(response).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(!message(&body).is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn fail_rate_one_gives_503_and_creates_nothing() {
    let sim = start(SimConfig {
        fail_rate: 1.0,
        ..SimConfig::default()
    })
    .await;
    let client = Client::new(&sim);
    let (status, body) = client.create(SERVICE, "alice", "+1").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(message(&body), "Service temporarily unavailable");
    assert!(sim.users(SERVICE).is_empty());
    assert_eq!(sim.stats().failures, 1);
    assert_eq!(sim.create_attempts(SERVICE, "alice"), 1);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reset_rate_one_drops_connections_and_sometimes_creates() {
    let sim = start(SimConfig {
        reset_rate: 1.0,
        ..SimConfig::default()
    })
    .await;
    let client = Client::new(&sim);
    const ATTEMPTS: usize = 24;
    for i in 0..ATTEMPTS {
        let body = json!({"id_in_service": format!("u{i}"), "phone_number": "+1"}).to_string();
        let result = client.create_raw(SERVICE, &body).await;
        assert!(result.is_err(), "attempt {i} got an answer: {result:?}");
    }
    let created = sim.users(SERVICE).len();
    // Each reset creates with probability 1/2; all-or-nothing has odds 2^-23.
    assert!(0 < created && created < ATTEMPTS, "{created} created");
    let stats = sim.stats();
    assert_eq!(stats.resets, ATTEMPTS as u64);
    assert_eq!(stats.created, created as u64);
    // Reads are never reset, so the client can still find out what happened.
    let (status, list) = client.get(&client.users_url(SERVICE)).await;
    assert_eq!(
        (status, list["total"].as_u64()),
        (StatusCode::OK, Some(created as u64))
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn reset_closes_the_socket_without_any_bytes() {
    let sim = start(SimConfig {
        reset_rate: 1.0,
        ..SimConfig::default()
    })
    .await;
    let body = r#"{"id_in_service":"a","phone_number":"+1"}"#;
    let request = format!(
        "POST /v1/service/service/{SERVICE}/users HTTP/1.1\r\nHost: x\r\nX-Service-Auth: demo:demo\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(sim.addr())
        .await
        .expect("connects");
    stream.write_all(request.as_bytes()).await.expect("sent");
    let mut answer = Vec::new();
    // Either a clean EOF or a reset: what matters is that no byte of an answer arrives.
    let _ = stream.read_to_end(&mut answer).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    sim.shutdown().await;
}

#[tokio::test]
async fn connections_are_kept_alive() {
    let sim = start(SimConfig::default()).await;
    let mut stream = tokio::net::TcpStream::connect(sim.addr())
        .await
        .expect("connects");
    let request = format!(
        "GET /v1/service/service/{SERVICE}/users HTTP/1.1\r\nHost: x\r\nX-Service-Auth: demo:demo\r\n\r\n"
    );
    let expected = "{\"users\":[],\"total\":0}";
    for _ in 0..3 {
        stream.write_all(request.as_bytes()).await.expect("sent");
        let mut answer = Vec::new();
        while !answer.ends_with(expected.as_bytes()) {
            let mut chunk = [0; 1024];
            let read = stream.read(&mut chunk).await.expect("reads");
            assert!(read > 0, "connection closed after {answer:?}");
            answer.extend_from_slice(&chunk[..read]);
        }
        assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"));
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn rate_limit_gives_429_with_retry_after() {
    let sim = start(SimConfig {
        rate_limit: Some(3),
        ..SimConfig::default()
    })
    .await;
    let client = Client::new(&sim);
    let mut throttled = 0;
    for _ in 0..10 {
        let response = client
            .http
            .get(client.users_url(SERVICE))
            .header("X-Service-Auth", "demo:demo")
            .send()
            .await
            .expect("answered");
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            throttled += 1;
            assert_eq!(
                response.headers().get("retry-after").map(|v| v.as_bytes()),
                Some(&b"1"[..])
            );
            let (_, body) = read(response).await;
            assert_eq!(message(&body), "Too Many Requests");
        }
    }
    // Ten requests fit in at most two windows, so at most six are admitted.
    assert!(throttled >= 4, "{throttled} throttled");
    assert_eq!(sim.stats().throttled, throttled);
    sim.shutdown().await;
}

#[tokio::test]
async fn latency_delays_answers() {
    let latency = Duration::from_millis(60);
    let sim = start(SimConfig {
        latency,
        ..SimConfig::default()
    })
    .await;
    let client = Client::new(&sim);
    let started = Instant::now();
    let (status, _) = client.get(&client.users_url(SERVICE)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() >= latency, "{:?}", started.elapsed());
    sim.shutdown().await;
}

#[tokio::test]
async fn rejected_phone_is_422_and_creates_nothing() {
    let sim = start(SimConfig {
        reject_phone: Some(regex::Regex::new(r"^\+999").expect("valid regex")),
        ..SimConfig::default()
    })
    .await;
    let client = Client::new(&sim);
    let (status, body) = client.create(SERVICE, "alice", "+9991234").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(message(&body), "Invalid phone number: +9991234");
    assert!(sim.users(SERVICE).is_empty());
    assert_eq!(
        client.create(SERVICE, "alice", "+3721234").await.0,
        StatusCode::CREATED
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn seed_users_make_409() {
    let seed = vec![
        SeedUser {
            service_id: None,
            id_in_service: "everywhere".into(),
            phone_number: "+1".into(),
            user_id: None,
        },
        SeedUser {
            service_id: Some(SERVICE.into()),
            id_in_service: "here".into(),
            phone_number: "+2".into(),
            user_id: None,
        },
    ];
    let sim = start(SimConfig {
        seed,
        ..SimConfig::default()
    })
    .await;
    let client = Client::new(&sim);
    assert_eq!(
        client.create(SERVICE, "here", "+2").await.0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        client.create(SERVICE, "everywhere", "+1").await.0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        client.create("lazy", "everywhere", "+1").await.0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        client.create("lazy", "here", "+2").await.0,
        StatusCode::CREATED
    );
    let (_, list) = client.get(&client.users_url(SERVICE)).await;
    assert_eq!(list["total"], 2);
    assert_eq!(sim.stats().created, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn seed_file_round_trip() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("seed.csv");
    std::fs::write(&path, "id_in_service,phone_number\nalice,+1\n").expect("written");
    let seed = load_seed(&path).expect("valid seed");
    let sim = start(SimConfig {
        seed,
        ..SimConfig::default()
    })
    .await;
    assert_eq!(
        Client::new(&sim).create(SERVICE, "alice", "+1").await.0,
        StatusCode::CONFLICT
    );

    std::fs::write(&path, "id_in_service,phone_number\nalice,+1\n,+2\n").expect("written");
    let err = load_seed(&path).expect_err("empty id");
    assert!(
        err.to_string().contains("seed.csv:3: id_in_service"),
        "{err}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn direct_insert_and_remove_are_visible_over_http() {
    let sim = start(SimConfig::default()).await;
    let client = Client::new(&sim);
    let id = sim.insert_user(SERVICE, "alice", "+1");
    assert_eq!(
        sim.insert_user(SERVICE, "alice", "+2"),
        id,
        "existing user is kept"
    );
    assert_eq!(
        client.create(SERVICE, "alice", "+1").await.0,
        StatusCode::CONFLICT
    );
    let user_url = format!("{}/{id}", client.users_url(SERVICE));
    assert_eq!(client.get(&user_url).await.1["id_in_service"], "alice");
    assert!(sim.remove_user(SERVICE, &id));
    assert!(!sim.remove_user(SERVICE, &id));
    assert_eq!(client.get(&user_url).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        client.create(SERVICE, "alice", "+1").await.0,
        StatusCode::CREATED
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_creates_of_one_user_create_it_once() {
    let sim = start(SimConfig::default()).await;
    let client = Client::new(&sim);
    let answers =
        futures::future::join_all((0..16).map(|_| client.create(SERVICE, "race", "+1"))).await;
    let created = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    let conflicts = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, conflicts), (1, 15));
    assert_eq!(sim.create_attempts(SERVICE, "race"), 16);
    sim.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let sim = start(SimConfig::default()).await;
    let addr = sim.addr();
    sim.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[test]
fn config_debug_hides_the_password() {
    let config = SimConfig {
        password: "hunter2".into(),
        ..SimConfig::default()
    };
    assert!(!format!("{config:?}").contains("hunter2"));
}

fn seeds(n: usize) -> Vec<SeedUser> {
    (0..n)
        .map(|i| SeedUser {
            service_id: None,
            id_in_service: format!("user{i}"),
            phone_number: "+3725000000".into(),
            user_id: None,
        })
        .collect()
}

/// The ids a list body names, in order, and its total.
fn listed(body: &[u8]) -> (Vec<String>, u64) {
    let list: Value = serde_json::from_slice(body).expect("the list is JSON");
    let ids = list["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| u["id_in_service"].as_str().expect("id").to_owned())
        .collect();
    (ids, list["total"].as_u64().expect("total"))
}

async fn list_body(sim: &Simulator) -> Vec<u8> {
    let client = Client::new(sim);
    let response = client
        .http
        .get(client.users_url(SERVICE))
        .header("X-Service-Auth", "demo:demo")
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::OK);
    response.bytes().await.expect("body").to_vec()
}

#[tokio::test]
async fn a_list_of_many_chunks_names_every_user_once_with_cap_and_repeat_kept() {
    let sim = start(SimConfig {
        seed: seeds(10_000),
        list_repeat: vec!["user9000".into()],
        ..SimConfig::default()
    })
    .await;
    let (ids, total) = listed(&list_body(&sim).await);
    assert_eq!(total, 10_000);
    let mut want: Vec<String> = (0..10_000).map(|i| format!("user{i}")).collect();
    want.insert(9001, "user9000".into());
    assert_eq!(ids, want, "creation order, the repeat right after its twin");
    sim.shutdown().await;

    let capped = start(SimConfig {
        seed: seeds(10_000),
        list_cap: Some(5_000),
        ..SimConfig::default()
    })
    .await;
    let (ids, total) = listed(&list_body(&capped).await);
    assert_eq!((ids.len(), total), (5_000, 10_000));
    assert_eq!(ids.last().map(String::as_str), Some("user4999"));
    capped.shutdown().await;
}

#[tokio::test]
async fn users_deleted_while_a_list_streams_are_never_listed_twice_or_skipped_when_alive() {
    let sim = start(SimConfig {
        seed: seeds(60_000),
        ..SimConfig::default()
    })
    .await;
    let client = Client::new(&sim);
    let mut response = client
        .http
        .get(client.users_url(SERVICE))
        .header("X-Service-Auth", "demo:demo")
        .send()
        .await
        .expect("answered");
    let mut body = response
        .chunk()
        .await
        .expect("first chunk")
        .expect("some")
        .to_vec();
    // Most users go while the list streams: enough to compact the store, were it not held.
    let users = sim.users(SERVICE);
    for user in &users[..50_000] {
        assert!(sim.remove_user(SERVICE, &user.id));
    }
    while let Some(chunk) = response.chunk().await.expect("chunk") {
        body.extend_from_slice(&chunk);
    }
    let (ids, total) = listed(&body);
    assert_eq!(total, 10_000);
    let mut seen = std::collections::HashSet::new();
    assert!(
        ids.iter().all(|id| seen.insert(id.clone())),
        "no user twice"
    );
    for i in 50_000..60_000 {
        assert!(
            seen.contains(&format!("user{i}")),
            "user{i} is alive and listed"
        );
    }
    // The list has ended: the store compacts again, and lists stay right.
    assert!(sim.remove_user(SERVICE, &users[50_000].id));
    let (ids, total) = listed(&list_body(&sim).await);
    assert_eq!((ids.len(), total), (9_999, 9_999));
    sim.shutdown().await;
}
