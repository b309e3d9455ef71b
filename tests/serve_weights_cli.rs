//! A weight push to `rlvr serve`, through the binary, on a model of ~270 MB (so that the model's
//! bytes dominate the process's own): the push never holds a second copy of the model in memory.
//!
//! The server's anonymous memory (`RssAnon` in /proc/PID/status; a mapped file's pages are not
//! anonymous) is polled while a push runs. The body goes to an unnamed spill file in the weights
//! directory (seen among the server's open files while the push runs, gone afterwards), is
//! mapped, hashed and applied from the map one tensor at a time, so the growth is one tensor's
//! transient copy (the largest, the embedding, is an eighth of the model) plus buffers. Holding
//! the body, then the tensors, then their snapshot — what the server did before — grew by two to
//! three times the model. After the push the server answers as a server started on the pushed
//! weights does (tokens and log-probs, exactly); a push with the wrong checksum is refused and
//! changes nothing.

mod common;

use common::{fixture, http, Server};
use rlvr_model::checkpoint::{init_tensors, save, SaveOptions};
use rlvr_model::ModelConfig;
use rlvr_rollout::engine::checksum_of;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tch::Kind;

const ADMIN: &str = "admin-key";

/// tiny-dense widened to 4 dense layers of width 1024 (MLP 4096) over 8192 tokens: 67M f32
/// parameters, the largest tensor (embedding, head) 33.5 MB.
fn wide_config() -> ModelConfig {
    let text = std::fs::read_to_string(fixture("tiny-dense").join("config.json")).unwrap();
    let mut json: Value = serde_json::from_str(&text).unwrap();
    let layers = 4;
    json["hidden_size"] = 1024.into();
    json["intermediate_size"] = 4096.into();
    json["vocab_size"] = 8192.into();
    json["num_hidden_layers"] = layers.into();
    json["first_k_dense_replace"] = layers.into();
    json["layer_types"] = vec!["indexed_attention"; layers].into();
    json["mlp_layer_types"] = vec!["dense"; layers].into();
    ModelConfig::from_json(&json.to_string()).unwrap()
}

/// A model directory `root/name` with random weights of `seed`; the checksum of its tensors and
/// their size in bytes.
fn model_dir(root: &Path, name: &str, cfg: &ModelConfig, seed: u64) -> (PathBuf, u64, usize) {
    let tensors = init_tensors(cfg, seed, Kind::Float).unwrap();
    let bytes = tensors.iter().map(|(_, t)| t.numel() * 4).sum();
    let dir = root.join(name);
    save(&dir, &tensors, cfg, &SaveOptions::default()).unwrap();
    (dir, checksum_of(&tensors), bytes)
}

fn start(model: &Path, weights_dir: &Path) -> Server {
    let (model, weights_dir) = (model.to_str().unwrap(), weights_dir.to_str().unwrap());
    Server::start(&[
        "--model",
        model,
        "--slots",
        "1",
        "--max-seq-len",
        "64",
        "--admin-key",
        ADMIN,
        "--weights-dir",
        weights_dir,
    ])
}

/// A greedy completion's choice (token ids and log-probs) and the policy version of each token.
fn greedy(server: &Server) -> (Value, Vec<u64>) {
    let body = r#"{"prompt": [3, 4, 5, 6], "max_tokens": 6, "temperature": 0, "ignore_eos": true, "logprobs": 1,
        "return_token_ids": true}"#;
    let (status, answer) = http(server.port, "POST", "/v1/completions", None, body);
    assert_eq!(status, 200, "{answer}");
    let mut answer: Value = serde_json::from_str(&answer).unwrap();
    let choice = answer["choices"][0].as_object_mut().unwrap();
    let versions = choice.remove("policy_versions").unwrap();
    (Value::from(choice.clone()), serde_json::from_value(versions).unwrap())
}

/// POSTs the file at `path` as a raw weight push with `checksum`, streamed from disk; (status,
/// body).
fn push_file(port: u16, path: &Path, checksum: u64) -> (u16, String) {
    let mut file = std::fs::File::open(path).unwrap();
    let len = file.metadata().unwrap().len();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let head = format!(
        "POST /v1/weights HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Type: application/octet-stream\r\nx-rlvr-checksum: {checksum:016x}\r\nContent-Length: {len}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    std::io::copy(&mut file, &mut stream).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// A process's anonymous resident memory in bytes.
fn rss_anon(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).expect("RssAnon in /proc/PID/status");
    let kb: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Whether any open file or mapping of the process lies in `dir`.
fn holds_a_file_in(pid: u32, dir: &Path) -> bool {
    let dir = dir.to_str().unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default();
    let open = fds.iter().filter_map(|e| std::fs::read_link(e.path()).ok()).any(|p| p.starts_with(dir));
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    open || maps.contains(dir)
}

/// Pushes `path` while polling the server: (status, answer, peak anonymous growth in bytes,
/// whether a spill file in `spill_dir` was seen).
fn measured_push(server: &Server, path: &Path, checksum: u64, spill_dir: &Path) -> (u16, String, usize, bool) {
    let pid = server.child.id();
    let before = rss_anon(pid);
    let (port, file) = (server.port, path.to_path_buf());
    let push = std::thread::spawn(move || push_file(port, &file, checksum));
    let (mut peak, mut spilled) = (before, false);
    while !push.is_finished() {
        peak = peak.max(rss_anon(pid));
        spilled |= holds_a_file_in(pid, spill_dir);
        std::thread::sleep(Duration::from_millis(2));
    }
    let (status, answer) = push.join().unwrap();
    (status, answer, peak.max(rss_anon(pid)).saturating_sub(before), spilled)
}

#[test]
fn a_pushed_model_is_never_held_twice_and_serves_exactly_as_loaded() {
    let root = tempfile::tempdir().unwrap();
    let spill_dir = tempfile::tempdir().unwrap();
    let spill = spill_dir.path().canonicalize().unwrap();
    let cfg = wide_config();
    let (old, _, _) = model_dir(root.path(), "old", &cfg, 1);
    let (new, checksum, model_bytes) = model_dir(root.path(), "new", &cfg, 2);
    let pushed = new.join("model.safetensors");
    assert!(pushed.is_file() && model_bytes > 250 << 20, "one file of {model_bytes} bytes");

    let (reference, _) = greedy(&start(&new, &spill));
    let server = start(&old, &spill);
    let (before, versions) = greedy(&server);
    assert_eq!(versions, [0; 6]);
    assert_ne!(before, reference, "the two models answer differently");

    let (status, answer, growth, spilled) = measured_push(&server, &pushed, checksum ^ 1, &spill);
    eprintln!("refused push of {model_bytes} bytes: peak anonymous growth {growth} bytes");
    assert_eq!(status, 409, "{answer}");
    assert!(spilled, "the body was spilled to the weights directory");
    assert!(growth < model_bytes / 2, "a refused push grew anonymous memory by {growth} bytes");
    assert_eq!(greedy(&server), (before, vec![0; 6]), "a refused push changes nothing");
    assert!(!holds_a_file_in(server.child.id(), &spill), "the refused push's spill file is gone");

    let (status, answer, growth, spilled) = measured_push(&server, &pushed, checksum, &spill);
    assert_eq!(status, 200, "{answer}");
    assert!(spilled);
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["version"], 1, "{answer}");
    eprintln!("push of {model_bytes} bytes: peak anonymous growth {growth} bytes");
    // One tensor's transient copy at a time: the largest is an eighth of the model.
    assert!(growth < model_bytes / 2, "the push grew anonymous memory by {growth} of {model_bytes} bytes");
    assert!(!holds_a_file_in(server.child.id(), &spill), "the applied push's spill file is gone");
    assert_eq!(greedy(&server), (reference, vec![1; 6]), "the pushed weights answer as when loaded");
    assert_eq!(std::fs::read_dir(&spill).unwrap().count(), 0, "nothing left in the spill directory");
}
