//! `rlvr serve`'s access flags, through the binary: `--api-key` guards the client routes (401),
//! `--admin-key` and `--weights-dir` guard weight pushes, `--max-body-mb` answers 413. (What each
//! route does is the rollout crate's service tests'.)

mod common;

use common::{fixture, Server};

fn start(weights_dir: &std::path::Path) -> Server {
    let tiny = fixture("tiny-dense");
    let args = [
        "--model",
        tiny.to_str().unwrap(),
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
    ];
    Server::start(&args)
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

/// `--min-slots` needs `--slots` and must be in 1..=it; refused before the model is served.
#[test]
fn min_slots_is_checked_against_slots() {
    let tiny = fixture("tiny-dense");
    let serve = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rlvr"))
            .args(["serve", "--model", tiny.to_str().unwrap(), "--port", "0"])
            .args(extra)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{extra:?} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = serve(&["--slots", "2", "--min-slots", "3"]);
    assert!(err.contains("--min-slots 3 must be in 1..=--slots (2)"), "{err}");
    let err = serve(&["--slots", "2", "--min-slots", "0"]);
    assert!(err.contains("--min-slots 0"), "{err}");
    let err = serve(&["--min-slots", "1"]);
    assert!(err.contains("--slots"), "{err}");
}
