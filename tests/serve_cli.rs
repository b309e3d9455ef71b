//! `rlvr serve`'s access flags, through the binary: `--api-key` guards the client routes (401),
//! `--admin-key` and `--weights-dir` guard weight pushes, `--max-body-mb` answers 413. (What each
//! route does is the rollout crate's service tests'.)

mod common;

use common::{fixture, Server};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn start(weights_dir: &std::path::Path) -> Server {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let args = [
        "serve",
        "--model",
        fixture("tiny-dense").to_str().unwrap(),
        "--port",
        &port.to_string(),
        "--slots",
        "2",
        "--api-key",
        "client-key",
        "--admin-key",
        "admin-key",
        "--weights-dir",
        weights_dir.to_str().unwrap(),
        "--max-body-mb",
        "1",
    ]
    .map(String::from);
    let child = Command::new(env!("CARGO_BIN_EXE_rlvr"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting rlvr serve");
    let mut server = Server { child, port };
    let started = Instant::now();
    while request(&server, "GET", "/health", None, "").0 != 200 {
        assert!(server.child.try_wait().unwrap().is_none(), "rlvr serve exited");
        assert!(started.elapsed() < Duration::from_secs(60), "rlvr serve did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

/// One HTTP/1.1 request; (status, body). Status 0 when nothing answered.
fn request(server: &Server, method: &str, path: &str, key: Option<&str>, body: &str) -> (u16, String) {
    common::http(server.port, method, path, key, body)
}

#[test]
fn access_flags_guard_the_routes() {
    let weights = tempfile::tempdir().unwrap();
    let server = start(weights.path());
    let completion = r#"{"prompt": [3, 4, 5], "max_tokens": 2, "temperature": 0}"#;
    assert_eq!(request(&server, "POST", "/v1/completions", None, completion).0, 401);
    assert_eq!(request(&server, "POST", "/v1/completions", Some("wrong"), completion).0, 401);
    let (status, body) = request(&server, "POST", "/v1/completions", Some("client-key"), completion);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"choices\""), "{body}");

    let push = r#"{"path": "/etc/passwd", "checksum": "00"}"#;
    assert_eq!(
        request(&server, "POST", "/v1/weights", Some("client-key"), push).0,
        401,
        "a client key is not an admin key"
    );
    let (status, body) = request(&server, "POST", "/v1/weights", Some("admin-key"), push);
    assert_eq!(status, 400, "{body}");
    assert!(!body.contains("root:"), "no file contents in the answer: {body}");

    let big = format!(r#"{{"prompt": "{}", "max_tokens": 1}}"#, "x".repeat(2 << 20));
    assert_eq!(request(&server, "POST", "/v1/completions", Some("client-key"), &big).0, 413);
    assert_eq!(request(&server, "GET", "/health", None, "").0, 200, "the server still answers");
}
