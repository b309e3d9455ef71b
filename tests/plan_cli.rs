//! `rlvr plan`: the memory plan printed before any work, against the peak resident memory
//! (`ru_maxrss` of the finished process) of the runs it plans, on the CPU: the smoke recipe, the
//! quickstart (every stage, a few steps each: its memory does not depend on the step count) and
//! a 4K-token sparse training step on the DSA benchmark's model, plain and with layer
//! checkpointing. Within 15 % each. And `rlvr train`
//! refuses, before any work, a run whose plan does not fit the host.

mod common;

use common::root;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};

fn s(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// `rlvr plan --json` of a recipe with `sets`.
fn planned(recipe: &str, sets: &[&str]) -> Value {
    let mut args = vec!["plan", recipe, "--json"];
    for set in sets {
        args.extend(["--set", set]);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_rlvr")).args(&args).current_dir(root()).output().unwrap();
    assert!(out.status.success(), "rlvr plan {recipe}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs `rlvr train` to the end; its peak resident bytes.
#[allow(clippy::zombie_processes)] // reaped by wait4, which std's `Child::wait` cannot replace here
fn measured(recipe: &str, out: &Path, sets: &[&str]) -> f64 {
    let mut args = vec!["train", recipe, "--out", s(out)];
    for set in sets {
        args.extend(["--set", set]);
    }
    let child = Command::new(env!("CARGO_BIN_EXE_rlvr"))
        .args(&args)
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain-data out-parameters; wait4 reaps the child (its handle is dropped unused).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::wait4(pid, &mut status, 0, &mut usage) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "rlvr train {recipe} failed");
    usage.ru_maxrss as f64 * 1024.0
}

fn check(what: &str, recipe: &str, sets: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let plan = planned(recipe, sets);
    let predicted = plan["peak_bytes"].as_f64().unwrap();
    let phases = plan["phases"].as_array().unwrap();
    assert!(!phases.is_empty());
    // The peak is the largest phase on top of the runtime, and each total is its parts' sum.
    let kept = if plan["checkpointing"] == true { "activations_checkpointed" } else { "activations" };
    let parts =
        ["weights", "master", "gradients", "optimizer", kept, "engine_weights", "kv_cache", "reference", "kept_sets"];
    for p in phases {
        let sum: f64 = parts.iter().map(|k| p[*k].as_f64().unwrap()).sum();
        assert!((sum - p["total"].as_f64().unwrap()).abs() <= 1e-6 * sum.max(1.0), "{p}");
        assert!(p["activations_checkpointed"].as_f64() <= p["activations"].as_f64(), "{p}");
    }
    let top = phases.iter().map(|p| p["total"].as_f64().unwrap()).fold(0.0, f64::max);
    assert!((predicted - plan["runtime_bytes"].as_f64().unwrap() - top).abs() < 1.0);
    let peak = measured(recipe, &tmp.path().join("run"), sets);
    let error = (predicted - peak) / peak;
    eprintln!(
        "{what}: planned {:.0} MiB, measured {:.0} MiB ({:+.1} %)",
        predicted / 1048576.0,
        peak / 1048576.0,
        100.0 * error
    );
    assert!(
        error.abs() <= 0.15,
        "{what}: planned {predicted:.0} B, measured peak RSS {peak:.0} B ({:+.1} %)",
        100.0 * error
    );
}

#[test]
fn the_plan_is_within_15_percent_of_the_smoke_recipes_peak() {
    check("smoke", "recipes/smoke.toml", &[]);
}

#[test]
fn the_plan_is_within_15_percent_of_the_quickstarts_peak() {
    let few = [
        "stages.pretrain.steps=2",
        "stages.indexer_warmup.steps=2",
        "stages.sparse_train.steps=2",
        "stages.sft.steps=2",
        "stages.grpo.steps=2",
        "run.threads=1",
    ];
    check("quickstart", "recipes/quickstart.toml", &few);
}

/// One sparse training step at 4,096 tokens on the DSA benchmark's model (the small preset, 2
/// layers): activations dominate.
const SPARSE_4K: &str = r#"[run]
name = "sparse4k"
device = "cpu"

[model]
preset = "small"

[model.config]
num_hidden_layers = 2
num_nextn_predict_layers = 0

[data]
source = "arithmetic"
held_out = 8

[[stages]]
kind = "sparse_train"
steps = 1
batch_size = 1
seq_len = 4096

[checkpoint]
every = 100

[logging]
plots = false
"#;

#[test]
fn the_plan_is_within_15_percent_of_a_4k_sparse_steps_peak() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tmp.path().join("sparse4k.toml");
    std::fs::write(&recipe, SPARSE_4K).unwrap();
    check("sparse 4K", s(&recipe), &[]);
}

#[test]
fn the_plan_is_within_15_percent_of_a_checkpointed_4k_sparse_steps_peak() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tmp.path().join("sparse4k.toml");
    std::fs::write(&recipe, SPARSE_4K).unwrap();
    check("sparse 4K, layer checkpointing", s(&recipe), &["run.activation_checkpointing=layer"]);
}

#[test]
fn a_run_that_does_not_fit_is_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tmp.path().join("huge.toml");
    // 64 rows of 64K tokens: ~6 GB of activations (the head's logits alone) per row.
    let huge = SPARSE_4K
        .replace("num_nextn_predict_layers = 0", "num_nextn_predict_layers = 0\nmax_position_embeddings = 65536")
        .replace("kind = \"sparse_train\"", "kind = \"pretrain\"")
        .replace("batch_size = 1", "batch_size = 64")
        .replace("seq_len = 4096", "seq_len = 65536");
    std::fs::write(&recipe, huge).unwrap();
    let run = tmp.path().join("run");
    let plan = planned(s(&recipe), &[]);
    assert!(plan["peak_bytes"].as_f64().unwrap() > 1e11, "{plan}");
    let args = ["train", s(&recipe), "--out", s(&run)];
    let out = Command::new(env!("CARGO_BIN_EXE_rlvr")).args(args).current_dir(root()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the run started");
    assert!(err.contains("does not fit") && err.contains("MemAvailable") && err.contains("peak:"), "{err}");
    assert!(!run.join("checkpoints").exists(), "no work before the refusal");
}
