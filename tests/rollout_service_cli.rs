//! `[rollout] backend = "service"` end to end: `rlvr train` with `rlvr serve` children on
//! 127.0.0.1.
//!
//! - One spawned server, synchronous (`max_staleness = 0`): the smoke recipe ends exactly where
//!   the colocated engine's run ends — weights byte for byte, every metric of every step.
//! - Two servers, `max_staleness = 1`, one killed (SIGKILL) while it generates: the run finishes,
//!   every step still trains on all its groups (the lost prompts drawn again by the other server,
//!   same streams), the metrics count the drop and the resubmitted prompts, and every token
//!   trained on is at most one policy version behind the trainer, with some exactly one.
//! - A server that hangs on a weight push is dropped once the push times out.
//! - Recipe mistakes about the backend are errors naming the key.

mod common;

use common::{rlvr, TINY_ARITHMETIC};
use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const SMOKE: &str = "recipes/smoke.toml";

fn s(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed ({}):\n{}", out.status, stderr(out));
}

/// `rlvr train ARGS...` with `env` added, waited for.
fn train_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rlvr"))
        .arg("train")
        .args(args)
        .envs(env.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running rlvr train")
}

/// metrics.jsonl, one object a line.
fn metrics(run: &Path) -> Vec<Value> {
    let text = fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn grpo_lines(run: &Path) -> Vec<Value> {
    metrics(run).into_iter().filter(|l| l["stage"] == "grpo").collect()
}

/// Wall-clock measurements, which no two runs share.
fn is_timing(key: &str) -> bool {
    key == "time" || key == "step_time" || key.ends_with("_s")
}

/// The newest checkpoint directory of a run.
fn last_checkpoint(run: &Path) -> std::path::PathBuf {
    let mut dirs: Vec<_> = fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("step_"))
        .collect();
    dirs.sort();
    dirs.pop().expect("a checkpoint")
}

/// The addresses a run's log says it started servers at.
fn started_urls(log: &str) -> Vec<String> {
    let line = log.lines().find(|l| l.contains("rollout servers (")).expect("the pool's start line");
    let inner = line.split_once('(').unwrap().1.trim_end_matches(')');
    inner.split(", ").map(str::to_string).collect()
}

/// Whether anything answers at `http://127.0.0.1:PORT`.
fn answers(url: &str) -> bool {
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    common::http(port, "GET", "/health", None, "").0 != 0
}

#[test]
fn one_spawned_server_matches_the_local_engine_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let (local, service) = (tmp.path().join("local"), tmp.path().join("service"));
    assert_ok(&rlvr(&["train", SMOKE, "--out", s(&local)]), "smoke, local engine");
    let out =
        rlvr(&["train", SMOKE, "--out", s(&service), "--set", "rollout.backend=service", "--set", "rollout.spawn=1"]);
    assert_ok(&out, "smoke, one spawned server");
    let log = stderr(&out);
    let urls = started_urls(&log);
    assert_eq!(urls.len(), 1, "{log}");
    assert!(!answers(&urls[0]), "the spawned server is gone with the run");

    let (a, b) = (last_checkpoint(&local), last_checkpoint(&service));
    assert_eq!(a.file_name(), b.file_name());
    let (x, y) = (fs::read(a.join("model.safetensors")).unwrap(), fs::read(b.join("model.safetensors")).unwrap());
    assert!(x == y, "the final weights differ byte for byte");

    let (ml, ms) = (metrics(&local), metrics(&service));
    assert_eq!(ml.len(), ms.len());
    let mut grpo = 0;
    for (l, m) in ml.iter().zip(&ms) {
        for (key, value) in l.as_object().unwrap() {
            if !is_timing(key) {
                assert_eq!(&m[key], value, "`{key}` at step {} ({})", l["step"], l["stage"]);
            }
        }
        if l["stage"] == "grpo" {
            grpo += 1;
            assert!(l.get("servers_alive").is_none(), "the local run has no service figures");
            assert_eq!(m["servers_alive"], 1, "{m}");
            assert_eq!(m["staleness_max"], 0, "synchronous: every token from the trainer's version");
            assert_eq!(m["staleness/0"], 8, "2 prompts × 4 samples, none stale: {m}");
            assert_eq!(m["samples_discarded"], 0);
            assert!(m["server0/tok_per_s"].as_f64().unwrap() > 0.0, "{m}");
        }
    }
    assert_eq!(grpo, 4, "the smoke recipe's four GRPO steps");
}

/// A GRPO-only recipe on the tiny model: `steps` steps of 4 prompts × 4 samples, served by
/// `spawn` servers with `max_staleness`.
fn grpo_recipe(dir: &Path, steps: usize, spawn: usize, staleness: u64, extra: &str) -> std::path::PathBuf {
    let text = format!(
        r#"[run]
name = "service"
seed = 3
device = "cpu"

{TINY_ARITHMETIC}
[[stages]]
kind = "grpo"
steps = {steps}

[rollout]
group_size = 4
prompts_per_step = 4
max_tokens = 6
backend = "service"
spawn = {spawn}
max_staleness = {staleness}
{extra}

[verifier]
kind = "math"

[optimizer]
lr = 1e-3

[checkpoint]
every = 0

[logging]
plots = false
"#
    );
    let path = dir.join("recipe.toml");
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_killed_server_loses_no_prompts_and_staleness_stays_within_k() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = grpo_recipe(tmp.path(), 6, 2, 1, "");
    let run = tmp.path().join("run");
    // Sampling call 3 generates step 3's groups while step 2 trains; server 1 dies during it.
    let out = train_env(&[s(&recipe), "--out", s(&run)], &[("RLVR_FAULT_KILL_SERVER", "1:3")]);
    assert_ok(&out, "two servers, one killed");
    let log = stderr(&out);
    assert!(log.contains("RLVR_FAULT_KILL_SERVER: killing rollout server 1"), "{log}");
    assert!(log.contains("dropped from the pool"), "{log}");
    let lines = grpo_lines(&run);
    assert_eq!(lines.len(), 6);
    let mut resubmitted = 0;
    let mut one_behind = 0;
    for l in &lines {
        assert_eq!(l["groups_kept"], 4, "every step trains on all its groups: {l}");
        let max = l["staleness_max"].as_u64().unwrap();
        assert!(max <= 1, "a token more than max_staleness = 1 versions behind was trained on: {l}");
        let kept: u64 = (0..=max).map(|b| l[format!("staleness/{b}")].as_u64().unwrap_or(0)).sum();
        assert_eq!(kept, 16, "every kept sample is in the histogram: {l}");
        one_behind += l["staleness/1"].as_u64().unwrap_or(0);
        assert_eq!(l["samples_discarded"], 0, "{l}");
        resubmitted += l["prompts_resubmitted"].as_u64().unwrap();
        assert!(l["trainer_idle_s"].as_f64().unwrap() >= 0.0);
    }
    assert!(one_behind > 0, "generating ahead, some samples come from the previous version");
    assert!(resubmitted > 0, "the dead server's prompts were sent again");
    assert_eq!(lines[0]["servers_alive"], 2);
    assert_eq!(lines[0]["staleness_max"], 0, "the first step samples synchronously");
    let last = lines.last().unwrap();
    assert_eq!((last["servers_alive"].as_u64(), last["servers_dropped"].as_u64()), (Some(1), Some(1)), "{last}");
    assert!(last.get("server1/tok_per_s").is_none() && last.get("server0/tok_per_s").is_some(), "{last}");
}

#[test]
fn a_server_hanging_on_a_weight_push_is_dropped_after_the_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = grpo_recipe(tmp.path(), 4, 2, 0, "sync_timeout_s = 3");
    let run = tmp.path().join("run");
    let started = Instant::now();
    // Server 1 answers two pushes (after steps 1 and 2), then hangs on each one after.
    let out = train_env(&[s(&recipe), "--out", s(&run)], &[("RLVR_FAULT_HANG_WEIGHTS", "1:2")]);
    assert_ok(&out, "two servers, one hanging");
    assert!(started.elapsed() < Duration::from_secs(240), "the trainer did not wait on the hung server");
    let log = stderr(&out);
    assert!(log.contains("weight push failed twice"), "{log}");
    let alive: Vec<u64> = grpo_lines(&run).iter().map(|l| l["servers_alive"].as_u64().unwrap()).collect();
    assert_eq!(alive, [2, 2, 1, 1], "dropped at step 3's push");
    assert!(grpo_lines(&run).iter().all(|l| l["groups_kept"] == 4));
}

#[test]
fn backend_mistakes_name_their_key() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = grpo_recipe(tmp.path(), 1, 1, 0, "");
    let cases: [(&[&str], &str); 6] = [
        (&["rollout.backend=local"], "rollout.spawn"),
        (&["rollout.backend=local", "rollout.spawn=0", "rollout.max_staleness=1"], "rollout.max_staleness"),
        (&["rollout.spawn=0"], "rollout.spawn"),
        (&["rollout.spawn=0", "rollout.endpoints=[\"localhost:8000\"]"], "rollout.endpoints[0]"),
        (&["rollout.max_staleness=1", "algorithm.dynamic_sampling=true"], "algorithm.dynamic_sampling"),
        (&["rollout.sync_timeout_s=0"], "rollout.sync_timeout_s"),
    ];
    for (sets, key) in cases {
        let mut args = vec![s(&recipe), "--out", s(tmp.path())];
        for set in sets {
            args.extend(["--set", set]);
        }
        let out = train_env(&args, &[]);
        assert!(!out.status.success(), "{sets:?} was accepted");
        assert!(stderr(&out).contains(key), "{sets:?}: the error names {key}: {}", stderr(&out));
    }
}

#[test]
fn a_resumed_service_run_ends_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = grpo_recipe(tmp.path(), 4, 1, 0, "");
    let every = ["--set", "checkpoint.every=2"];
    let (whole, resumed) = (tmp.path().join("whole"), tmp.path().join("resumed"));
    assert_ok(&train_env(&[&[s(&recipe), "--out", s(&whole)], &every[..]].concat(), &[]), "uninterrupted");
    let stop = [&[s(&recipe), "--out", s(&resumed), "--max-steps", "2"], &every[..]].concat();
    assert_ok(&train_env(&stop, &[]), "stopped after step 2");
    let out = train_env(&[&[s(&recipe), "--out", s(&resumed), "--resume"], &every[..]].concat(), &[]);
    assert_ok(&out, "resumed");
    assert!(stderr(&out).contains("resuming from"), "{}", stderr(&out));
    let (a, b) = (last_checkpoint(&whole), last_checkpoint(&resumed));
    assert_eq!(a.file_name().unwrap(), "step_000004");
    assert_eq!(b.file_name().unwrap(), "step_000004");
    let (x, y) = (fs::read(a.join("model.safetensors")).unwrap(), fs::read(b.join("model.safetensors")).unwrap());
    assert!(x == y, "the resumed run's weights differ");
    let strip = |run: &Path| -> Vec<Vec<(String, Value)>> {
        grpo_lines(run)
            .iter()
            .map(|l| {
                l.as_object()
                    .unwrap()
                    .iter()
                    .filter(|(k, _)| !is_timing(k) && !k.contains("server"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .collect()
    };
    assert_eq!(strip(&whole), strip(&resumed), "metrics.jsonl");
    let versions: Vec<u64> = [&a, &b]
        .iter()
        .map(|dir| {
            let state: Value = serde_json::from_str(&fs::read_to_string(dir.join("state.json")).unwrap()).unwrap();
            state["policy_version"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(versions, [4, 4], "one policy version per step, carried over the resume");
}
