//! bf16 training with f32 master weights (`run.master_weights`, the default):
//!
//! - at lr 1e-6, where every AdamW update (≈ lr per element) is far below half a bf16 ulp of a
//!   weight (~6e-5 at |w| ≈ 0.02), bf16 parameters stepped in place do not move at all, while the
//!   f32 masters move as the f32 run's weights do;
//! - at the smoke recipe's lr 1e-3 the bf16 run with masters tracks the f32 run's loss curve within
//!   3 % per step (bf16 keeps 8 bits of mantissa: activations and gradients carry ~0.4 % relative
//!   rounding per op, and the curves start from the same f32 initialisation rounded once);
//! - resuming a bf16 run restores the masters from the checkpoint and ends bit for bit where the
//!   uninterrupted run ends.

mod common;

use common::root;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn s(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

fn rlvr(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rlvr")).args(args).current_dir(root()).output().expect("running rlvr")
}

fn assert_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
}

/// A pretrain-only recipe on the model in `model_dir`.
fn recipe(dir: &Path, model_dir: &Path, lr: f64, steps: usize) -> PathBuf {
    let text = format!(
        r#"[run]
name = "precision"
seed = 0
device = "cpu"
threads = 1

[model]
path = "{}"

[data]
source = "arithmetic"
min_digits = 1
max_digits = 1
held_out = 8

[[stages]]
kind = "pretrain"
steps = {steps}
batch_size = 4
seq_len = 32

[optimizer]
lr = {lr}
warmup_steps = 0
schedule = "constant"

[checkpoint]
every = 2
keep_last = 10

[logging]
plots = false
"#,
        s(model_dir)
    );
    let path = dir.join(format!("lr{lr}.toml"));
    fs::write(&path, text).unwrap();
    path
}

/// A safetensors file's tensors as f32 values (bf16 widened exactly), by name.
fn values(path: &Path) -> BTreeMap<String, Vec<f32>> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .filter_map(|(name, t)| {
            let v: Vec<f32> = match t.dtype() {
                safetensors::Dtype::F32 => {
                    t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
                }
                safetensors::Dtype::BF16 => t
                    .data()
                    .chunks_exact(2)
                    .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
                    .collect(),
                _ => return None,
            };
            Some((name, v))
        })
        .collect()
}

fn checkpoint(run: &Path, step: u64) -> PathBuf {
    run.join("checkpoints").join(format!("step_{step:06}"))
}

/// Share of elements (over every tensor of `names`) with |b| ≥ `floor` where `a` and `b` differ.
fn changed_share(a: &BTreeMap<String, Vec<f32>>, b: &BTreeMap<String, Vec<f32>>, names: &[String], floor: f32) -> f64 {
    let (mut changed, mut all) = (0usize, 0usize);
    for name in names {
        for (x, y) in a[name].iter().zip(&b[name]).filter(|(_, y)| y.abs() >= floor) {
            changed += usize::from(x != y);
            all += 1;
        }
    }
    changed as f64 / all.max(1) as f64
}

/// The trained matrices: names of 2-D weights (what AdamW moves most), excluding the f32-kept ones.
fn matrices(weights: &BTreeMap<String, Vec<f32>>) -> Vec<String> {
    weights.keys().filter(|n| n.ends_with("proj.weight") && !n.contains("weights_proj")).cloned().collect()
}

#[test]
fn master_weights_keep_updates_pure_bf16_loses_them() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("init");
    assert_ok(&rlvr(&["init", "--config", "tiny", "--out", s(&model), "--seed", "3"]), "rlvr init");
    let recipe = recipe(tmp.path(), &model, 1e-6, 4);
    let run = |name: &str, sets: &[&str]| {
        let dir = tmp.path().join(name);
        let mut args = vec!["train", s(&recipe), "--out", s(&dir)];
        for set in sets {
            args.extend(["--set", set]);
        }
        assert_ok(&rlvr(&args), name);
        dir
    };
    let f32_run = run("f32", &[]);
    let master = run("master", &["run.dtype=bf16"]);
    let pure = run("pure", &["run.dtype=bf16", "run.master_weights=false"]);

    let init = values(&model.join("model.safetensors"));
    let pure_w = values(&checkpoint(&pure, 4).join("model.safetensors"));
    // The main model's matrices. The init also holds MTP modules (layers from `num_hidden_layers`
    // on), which a pretrain stage does not train: the checkpoint carries them over bit for bit.
    let config: Value = serde_json::from_str(&fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    let layers = config["num_hidden_layers"].as_u64().unwrap();
    let layer_of = |n: &str| n.strip_prefix("model.layers.").and_then(|r| r.split('.').next()?.parse::<u64>().ok());
    let mtp: Vec<&String> = init.keys().filter(|n| layer_of(n).is_some_and(|l| l >= layers)).collect();
    assert!(!mtp.is_empty(), "the tiny preset has an MTP module");
    for name in &mtp {
        assert!(pure_w[*name] == init[*name], "the MTP tensor {name} changed in a pretrain stage");
    }
    let names: Vec<String> = matrices(&pure_w)
        .into_iter()
        .filter(|n| init.contains_key(n) && layer_of(n).is_none_or(|l| l < layers))
        .collect();
    assert!(names.len() > 10, "{names:?}");
    let init_bf16: BTreeMap<String, Vec<f32>> = init
        .iter()
        .map(|(n, v)| {
            (
                n.clone(),
                v.iter()
                    .map(|x| f32::from_bits(x.to_bits().wrapping_add(0x7fff + ((x.to_bits() >> 16) & 1)) & 0xffff_0000))
                    .collect(),
            )
        })
        .collect();

    // Pure bf16: a weight of magnitude ≥ 2e-3 has half a bf16 ulp ≥ 3.9e-6, more than an AdamW
    // update at lr 1e-6 can be: none of them moves (only the smallest weights can).
    let moved = changed_share(&pure_w, &init_bf16, &names, 2e-3);
    assert!(moved == 0.0, "pure bf16 at lr 1e-6 moved {:.3} % of the weights ≥ 2e-3", 100.0 * moved);
    let moved = changed_share(&pure_w, &init_bf16, &names, 0.0);
    assert!(moved < 0.05, "pure bf16 at lr 1e-6 moved {:.2} % of all weights", 100.0 * moved);

    // Masters: almost every element moved, in the f32 run's direction and by its amount.
    let opt = values(&checkpoint(&master, 4).join("optimizer.safetensors"));
    let f32_w = values(&checkpoint(&f32_run, 4).join("model.safetensors"));
    let (mut moved, mut agree, mut all) = (0usize, 0usize, 0usize);
    for name in &names {
        let m = &opt[&format!("master.{name}")];
        for (((m, w0), w), i0) in m.iter().zip(&init_bf16[name]).zip(&f32_w[name]).zip(&init[name]) {
            let (dm, dw) = (m - w0, w - i0);
            moved += usize::from(dm != 0.0);
            // Both moved by ~4e-6 (4 steps at 1e-6): the same sign, within 2 · Σ lr of each other.
            agree += usize::from(dm * dw > 0.0 && (dm - dw).abs() <= 8e-6);
            all += 1;
        }
    }
    let (moved, agree) = (moved as f64 / all as f64, agree as f64 / all as f64);
    assert!(moved > 0.99, "the masters moved on only {:.2} % of the elements", 100.0 * moved);
    assert!(agree > 0.95, "the masters follow the f32 run on only {:.2} % of the elements", 100.0 * agree);
}

/// (step, loss) of metrics.jsonl.
fn losses(run: &Path) -> Vec<(u64, f64)> {
    let text = fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

#[test]
fn bf16_with_masters_tracks_f32_and_resumes_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("init");
    assert_ok(&rlvr(&["init", "--config", "tiny", "--out", s(&model), "--seed", "3"]), "rlvr init");
    let recipe = recipe(tmp.path(), &model, 1e-3, 8);
    let train = |dir: &Path, extra: &[&str]| {
        let mut args = vec!["train", s(&recipe), "--out", s(dir)];
        args.extend(extra);
        rlvr(&args)
    };
    let f32_run = tmp.path().join("f32");
    assert_ok(&train(&f32_run, &[]), "f32");
    let bf16 = tmp.path().join("bf16");
    assert_ok(&train(&bf16, &["--set", "run.dtype=bf16"]), "bf16");
    let (a, b) = (losses(&f32_run), losses(&bf16));
    assert_eq!(a.len(), 8);
    for ((step, x), (_, y)) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 0.03 * x.abs(), "step {step}: f32 loss {x}, bf16 {y}");
    }
    // Stopped after step 4 (checkpoint with masters) and resumed: the same bits at step 8.
    let resumed = tmp.path().join("resumed");
    assert_ok(&train(&resumed, &["--set", "run.dtype=bf16", "--max-steps", "4"]), "bf16 to step 4");
    assert_ok(&train(&resumed, &["--set", "run.dtype=bf16", "--resume"]), "bf16 resumed");
    for file in ["model.safetensors", "optimizer.safetensors"] {
        let (x, y) = (checkpoint(&bf16, 8).join(file), checkpoint(&resumed, 8).join(file));
        assert!(fs::read(&x).unwrap() == fs::read(&y).unwrap(), "resumed bf16 run: {file} differs");
    }
}

/// `run.deterministic` turns libtorch's deterministic algorithms on (read back from libtorch), and
/// every stage kind runs under it: no op of the training, rollout or eval paths lacks a
/// deterministic kernel. On the CPU, whose kernels are deterministic already, the run is bit for
/// bit the one without it.
#[test]
fn deterministic_mode_runs_every_stage_and_changes_nothing_on_the_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, on: bool| {
        let dir = tmp.path().join(name);
        let set = format!("run.deterministic={on}");
        let out = rlvr(&["train", "recipes/smoke.toml", "--out", s(&dir), "--set", &set]);
        assert_ok(&out, name);
        (dir, String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (plain, plain_log) = run("plain", false);
    let (det, det_log) = run("deterministic", true);
    assert!(det_log.contains("deterministic algorithms on, CUBLAS_WORKSPACE_CONFIG=:4096:8"), "{det_log}");
    assert!(!plain_log.contains("run.deterministic"));
    let last = |dir: &Path| {
        let mut steps: Vec<PathBuf> =
            fs::read_dir(dir.join("checkpoints")).unwrap().map(|e| e.unwrap().path()).collect();
        steps.sort();
        fs::read(steps.last().unwrap().join("model.safetensors")).unwrap()
    };
    assert!(last(&plain) == last(&det), "deterministic mode changed a CPU run");
}
