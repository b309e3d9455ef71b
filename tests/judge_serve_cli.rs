//! The rubric judge against a real `rlvr serve` (tiny preset, random weights, the rollout crate's
//! fixture tokenizer): the plumbing of request and answer. A random model cannot keep the score
//! contract, so each judgement must come back as an `Error` verdict that carries the model's text;
//! a model name the server does not serve is an `Error` with the 404 and its body.

mod common;

use common::{rlvr, root};
use rlvr_verifiers::{score_batch, JudgeConfig, JudgeVerifier, Outcome, Task};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// `rlvr serve` on a free loopback port, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn judge_over_rlvr_serve() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("judge-model");
    let out = rlvr(&["init", "--config", "tiny", "--out", model.to_str().unwrap(), "--seed", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for file in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(root().join("rollout/tests/data").join(file), model.join(file)).unwrap();
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_rlvr"))
        .args(["serve", "--model", model.to_str().unwrap(), "--port", "0", "--slots", "4"])
        .env("OMP_NUM_THREADS", "1")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let server = Server(child);
    let mut lines = BufReader::new(stderr).lines();
    let base_url = loop {
        let line = lines.next().expect("rlvr serve exited before listening").unwrap();
        if let Some(url) = line.strip_prefix("rlvr serve: listening on ") {
            break url.trim().to_string();
        }
    };
    // Keep draining the server's stderr so that it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));

    let items: Vec<(Task, String)> = (0..4)
        .map(|i| (Task { prompt: Some(format!("What is {i} + {i}?")), ..Task::default() }, format!("{}", 2 * i)))
        .collect();
    let config = |model: &str| JudgeConfig {
        model: Some(model.into()),
        rubric: Some("The sum must be right.".into()),
        max_tokens: 16,
        max_concurrency: 2,
        timeout_s: 120.0,
        ..JudgeConfig::new(&base_url)
    };
    let judge = JudgeVerifier::new(config("judge-model")).unwrap();
    for verdict in score_batch(&judge, &items, 4) {
        assert!(verdict.detail["judgement"].is_string(), "the server answered a chat completion: {verdict:?}");
        assert!(verdict.detail["request"]["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("The sum must be right."));
        match verdict.outcome {
            Outcome::Error => {
                assert!(verdict.detail["error"].as_str().unwrap().starts_with("malformed judgement"), "{verdict:?}")
            }
            // A random model that happens to write one well-formed score line is scored.
            Outcome::Correct | Outcome::Incorrect => assert!(verdict.detail["score"].is_number()),
            other => panic!("unexpected outcome {other:?}: {verdict:?}"),
        }
    }
    let wrong = JudgeVerifier::new(config("not-served")).unwrap();
    let verdict = score_batch(&wrong, &items[..1], 1).remove(0);
    assert_eq!((verdict.outcome, verdict.detail["status"].clone()), (Outcome::Error, serde_json::json!(404)));
    drop(server);
}
