//! Data-parallel training across processes (c10d over Gloo on 127.0.0.1, launched by torchrun
//! through `rlvr train --nproc N`, or by hand with torchrun's environment variables):
//!
//! - 2 ranks train what 1 rank trains: the same samples and rewards, the same losses and gradient
//!   norms up to f32 summation order, the same weights up to the bound below — sharded and
//!   replicated optimizer alike;
//! - a rank killed with SIGKILL after a checkpoint: the job resumes (by hand, and by torchrun's
//!   restart) and ends bit for bit where the uninterrupted 2-rank run ends; a 2-rank checkpoint
//!   resumes at 1 rank;
//! - the surviving rank names the lost one and exits; nothing hangs; the last checkpoint loads.
//!
//! The weight bound: the ranks sum their gradients in another order than one process does, so
//! gradients differ by f32 rounding (~1e-7 relative). AdamW divides by √v, so an element whose
//! gradient is itself at rounding level can move by up to `lr` differently at each step: the
//! largest possible gap is Σ_t lr_t (1e-2 here). The test asks for 1e-4, 1 % of that; measured
//! on the reference machine: 5e-6 over SFT and GRPO.

mod common;

use common::{root, TINY_ARITHMETIC};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Pretrain, the DSA warm-up, SFT, then GRPO (dense attention, a length reward that gives every
/// group a signal), then an eval: 10 optimizer steps at lr 1e-3, a checkpoint every 2.
fn recipe() -> String {
    format!(
        r#"[run]
name = "dist"
seed = 0
device = "cpu"
threads = 1
# Small gradient buckets: several per parameter group, so the bucketed paths are exercised.
bucket_mb = 0.01

{TINY_ARITHMETIC}
[[stages]]
kind = "pretrain"
steps = 2
batch_size = 4
seq_len = 32

[[stages]]
kind = "indexer_warmup"
steps = 1
batch_size = 2
seq_len = 32

[[stages]]
kind = "sft"
steps = 3
batch_size = 4

[[stages]]
kind = "grpo"
steps = 4

[[stages]]
kind = "eval"
name = "eval_after"
samples = 2
max_problems = 8

[rollout]
group_size = 4
prompts_per_step = 4
max_tokens = 8
top_p = 0.95

[verifier]
kind = "length"
max_length = 8
cache_length = 6

[optimizer]
lr = 1e-3

[checkpoint]
every = 2
keep_last = 5

[logging]
plots = false
"#
    )
}

const LAST: &str = "step_000010";

fn s(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `rlvr train RECIPE --out RUN ARGS…` with extra environment variables, waited for.
fn train(recipe: &Path, run: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rlvr"))
        .args(["train", s(recipe), "--out", s(run)])
        .args(args)
        .envs(env.iter().copied())
        .current_dir(root())
        .output()
        .expect("running rlvr")
}

fn assert_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed ({}):\n{}", out.status, stderr(out));
}

fn write_recipe(dir: &Path) -> PathBuf {
    let path = dir.join("dist.toml");
    fs::write(&path, recipe()).unwrap();
    path
}

/// metrics.jsonl's training lines by global step.
fn training_metrics(run: &Path) -> BTreeMap<u64, Value> {
    let text = fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| !v["stage"].as_str().unwrap().starts_with("eval"))
        .map(|v| (v["step"].as_u64().unwrap(), v))
        .collect()
}

/// A checkpoint's F32 tensors by name.
fn tensors(path: &Path) -> BTreeMap<String, Vec<f32>> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .filter(|(_, t)| t.dtype() == safetensors::Dtype::F32)
        .map(|(name, t)| (name, t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()))
        .collect()
}

/// The largest |a − b| over every weight of two model files (same names required).
fn max_weight_gap(a: &Path, b: &Path) -> f64 {
    let (a, b) = (tensors(a), tensors(b));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "the checkpoints hold different tensors");
    a.iter()
        .flat_map(|(name, x)| x.iter().zip(&b[name]).map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs()))
        .fold(0.0, f64::max)
}

fn model(run: &Path, step: &str) -> PathBuf {
    run.join("checkpoints").join(step).join("model.safetensors")
}

/// Within `rel` of each other, or 1e-6 apart: a small figure (the warm-up's KL) is a difference
/// of O(1) f32 terms, so its rounding is absolute.
fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()) + 1e-6
}

/// Checks that `two` (2 ranks) trained what `one` (1 rank) did.
fn assert_same_training(one: &Path, two: &Path, what: &str) {
    let (m1, m2) = (training_metrics(one), training_metrics(two));
    assert_eq!(m1.keys().collect::<Vec<_>>(), m2.keys().collect::<Vec<_>>(), "{what}: different steps logged");
    for (step, a) in &m1 {
        let b = &m2[step];
        // The same completions were sampled and judged: identical rewards and lengths.
        for key in ["reward", "reward_std", "accuracy", "completion_len", "groups_kept"] {
            assert_eq!(a.get(key), b.get(key), "{what}: step {step} `{key}`");
        }
        for key in ["lm_loss", "indexer_kl", "recall", "grad_norm", "entropy", "ratio_mean"] {
            if let (Some(x), Some(y)) = (a.get(key).and_then(Value::as_f64), b.get(key).and_then(Value::as_f64)) {
                assert!(close(x, y, 1e-5), "{what}: step {step} `{key}` {x} (1 rank) vs {y} (2 ranks)");
            }
        }
    }
    let gap = max_weight_gap(&model(one, LAST), &model(two, LAST));
    assert!(gap <= 1e-4, "{what}: the final weights differ by up to {gap} (allowed 1e-4)");
}

#[test]
fn two_ranks_train_what_one_rank_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = write_recipe(tmp.path());
    let one = tmp.path().join("one");
    assert_ok(&train(&recipe, &one, &[], &[]), "1 rank");
    let sharded = tmp.path().join("sharded");
    let out = train(&recipe, &sharded, &["--nproc", "2"], &[]);
    assert_ok(&out, "2 ranks, sharded optimizer");
    assert!(stderr(&out).contains("data parallel over 2 ranks (optimizer state sharded)"), "{}", stderr(&out));
    // Each rank holds half the optimizer state and says so.
    for rank in 0..2 {
        assert!(stderr(&out).contains(&format!("rank {rank}/2: optimizer state")), "{}", stderr(&out));
    }
    assert_same_training(&one, &sharded, "sharded");
    let replicated = tmp.path().join("replicated");
    let out = train(&recipe, &replicated, &["--nproc", "2", "--set", "run.shard_optimizer=false"], &[]);
    assert_ok(&out, "2 ranks, replicated optimizer");
    assert_same_training(&one, &replicated, "replicated");
    // Only rank 0 writes the run's files, once.
    let report: Value = serde_json::from_str(&fs::read_to_string(sharded.join("report.json")).unwrap()).unwrap();
    let one_report: Value = serde_json::from_str(&fs::read_to_string(one.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["eval_after"]["accuracy"], one_report["eval_after"]["accuracy"]);
    let lines = fs::read_to_string(sharded.join("metrics.jsonl")).unwrap().lines().count();
    assert_eq!(lines, 11, "10 training lines and one eval line");
}

#[test]
fn a_killed_rank_resumes_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = write_recipe(tmp.path());
    let whole = tmp.path().join("whole");
    assert_ok(&train(&recipe, &whole, &["--nproc", "2"], &[]), "uninterrupted 2 ranks");

    // Rank 1 dies after step 7, mid-GRPO (the newest checkpoint is step 6): the job fails,
    // naming it.
    let kill = [("RLVR_FAULT_KILL", "1:7")];
    let by_hand = tmp.path().join("by_hand");
    let out = train(&recipe, &by_hand, &["--nproc", "2"], &kill);
    assert!(!out.status.success(), "a job with a killed rank must fail");
    assert!(stderr(&out).contains("lost rank 1"), "the survivor names the lost rank:\n{}", stderr(&out));
    assert!(!model(&by_hand, "step_000008").exists(), "nothing was saved after the kill");
    assert_ok(&train(&recipe, &by_hand, &["--nproc", "2", "--resume"], &[]), "resume by hand");
    for file in ["model.safetensors", "optimizer.safetensors"] {
        let (a, b) =
            (whole.join("checkpoints").join(LAST).join(file), by_hand.join("checkpoints").join(LAST).join(file));
        assert!(fs::read(&a).unwrap() == fs::read(&b).unwrap(), "resumed by hand: {file} differs");
    }

    // The same kill under torchrun's restart: the job restarts from step 6 on its own.
    let restarted = tmp.path().join("restarted");
    let out = train(&recipe, &restarted, &["--nproc", "2", "--max-restarts", "1"], &kill);
    assert_ok(&out, "restart by torchrun");
    assert!(stderr(&out).contains("resuming from"), "{}", stderr(&out));
    assert!(
        fs::read(model(&whole, LAST)).unwrap() == fs::read(model(&restarted, LAST)).unwrap(),
        "restarted run differs"
    );

    // A 2-rank checkpoint resumes at 1 rank (the optimizer state is world-size independent).
    let one = tmp.path().join("to_one");
    assert!(!train(&recipe, &one, &["--nproc", "2"], &kill).status.success());
    assert_ok(&train(&recipe, &one, &["--resume"], &[]), "resume at 1 rank");
    let gap = max_weight_gap(&model(&whole, LAST), &model(&one, LAST));
    assert!(gap <= 1e-4, "resumed at 1 rank, the weights differ from the 2-rank run's by {gap}");
}

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn the_survivor_names_a_lost_rank_and_nothing_hangs() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = write_recipe(tmp.path());
    let run = tmp.path().join("run");
    // Launched by hand, as torchrun would (rank 0 hosts the store): no agent to kill the others.
    let port = free_port().to_string();
    let started = Instant::now();
    let mut ranks: Vec<_> = (0..2)
        .map(|rank| {
            Command::new(env!("CARGO_BIN_EXE_rlvr"))
                .args(["train", s(&recipe), "--out", s(&run), "--set", "run.collective_timeout_s=30"])
                .envs([
                    ("RANK", rank.to_string()),
                    ("LOCAL_RANK", rank.to_string()),
                    ("WORLD_SIZE", "2".into()),
                    ("LOCAL_WORLD_SIZE", "2".into()),
                    ("MASTER_ADDR", "127.0.0.1".into()),
                    ("MASTER_PORT", port.clone()),
                    ("RLVR_FAULT_KILL", "1:7".into()),
                ])
                .current_dir(root())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Neither may hang: both end well within the collective timeout.
    let deadline = started + Duration::from_secs(120);
    while ranks.iter_mut().any(|c| c.try_wait().unwrap().is_none()) {
        if Instant::now() > deadline {
            for c in &mut ranks {
                let _ = c.kill();
            }
            panic!("a rank was still running 120 s after the start");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let outs: Vec<Output> = ranks.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    assert!(!outs[0].status.success(), "rank 0 must fail when rank 1 is lost");
    let err = stderr(&outs[0]);
    assert!(err.contains("rank 0") && err.contains("lost rank 1"), "rank 0's error names rank 1:\n{err}");
    assert!(started.elapsed() < Duration::from_secs(60), "took {:?}", started.elapsed());
    // The last checkpoint is whole: one process resumes from it and finishes.
    let out = train(&recipe, &run, &["--resume"], &[]);
    assert_ok(&out, "resuming the survivor's run");
    assert!(stderr(&out).contains("step_000006"), "{}", stderr(&out));
}

#[test]
fn a_batch_too_small_for_the_ranks_fails_before_work() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = write_recipe(tmp.path());
    let run = tmp.path().join("run");
    let out = train(&recipe, &run, &["--nproc", "2", "--set", "stages.sft.batch_size=1"], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("batch_size = 1 cannot be shared by 2 ranks"), "{err}");
    assert!(!run.join("checkpoints").exists(), "no work was done");
}
