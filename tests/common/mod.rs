//! Helpers shared by the end-to-end tests of the `rlvr` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

/// Runs the built `rlvr` binary from the repository root.
pub fn rlvr(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rlvr"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running rlvr")
}

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A golden fixture's directory.
pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

/// The `[model]` and `[data]` of the short CLI recipes: the tiny preset cut to 2 layers and a
/// 32-id vocabulary, on 1-digit arithmetic with 8 held-out problems.
pub const TINY_ARITHMETIC: &str = r#"[model]
preset = "tiny"

[model.config]
num_hidden_layers = 2
vocab_size = 32

[data]
source = "arithmetic"
min_digits = 1
max_digits = 1
held_out = 8
"#;

/// One HTTP/1.1 request to 127.0.0.1:`port` (JSON body, optional bearer `key`); (status, body).
/// Status 0 when nothing answered.
pub fn http(port: u16, method: &str, path: &str, key: Option<&str>, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return (0, String::new()) };
    let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    if stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(body.as_bytes())).is_err() {
        return (0, String::new());
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// The project's `.venv` python when it imports transformers; else why not.
pub fn python_with_transformers() -> Result<PathBuf, String> {
    let python = root().join(".venv/bin/python");
    match Command::new(&python).args(["-c", "import transformers"]).output() {
        Ok(out) if out.status.success() => Ok(python),
        Ok(out) => Err(format!(
            "{} cannot import transformers: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("{}: {e}", python.display())),
    }
}

/// The python that imports transformers, or `None` (with the reason on stderr) when there is none
/// and the suite does not require it; under `RLVR_REQUIRE_TRANSFORMERS` (what `./x test` sets) a
/// missing transformers fails the test instead.
pub fn transformers_or_skip(what: &str) -> Option<PathBuf> {
    match python_with_transformers() {
        Ok(python) => Some(python),
        Err(why) if std::env::var_os("RLVR_REQUIRE_TRANSFORMERS").is_some() => panic!("{why}"),
        Err(why) => {
            eprintln!("{what} skipped: {why}");
            None
        }
    }
}

/// A spawned `rlvr serve` and its port, killed when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
}

impl Server {
    /// `rlvr serve ARGS --port P` on a free port P, once `/health` answers 200 (at most 60 s; a
    /// server that exits first fails the test).
    pub fn start(args: &[&str]) -> Server {
        use std::time::{Duration, Instant};
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(env!("CARGO_BIN_EXE_rlvr"))
            .arg("serve")
            .args(args)
            .args(["--port", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting rlvr serve");
        let mut server = Server { child, port };
        let started = Instant::now();
        while http(port, "GET", "/health", None, "").0 != 200 {
            assert!(server.child.try_wait().unwrap().is_none(), "rlvr serve exited");
            assert!(started.elapsed() < Duration::from_secs(60), "rlvr serve did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
