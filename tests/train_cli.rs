//! End-to-end tests of `rlvr train`: the smoke recipe through every stage kind, resuming
//! bit-identically, SIGKILL during checkpoint writes, non-finite losses, a full disk on save, and
//! recipes that are wrong before any work starts.
//!
//! Every test runs the built binary from the repository root (so `recipes/` and `presets/`
//! resolve) into its own temporary directory. Checkpoint weights are read back with a small
//! safetensors reader written here, independent of the code that wrote them.
//!
//! Left out: CUDA, W&B, plots (the smoke recipe turns them off) and the values of the losses
//! themselves, which the trainer's own golden tests pin down.

mod common;

use common::{rlvr, root};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SMOKE: &str = "recipes/smoke.toml";

/// The smoke recipe's training steps: (stage, first global step, last global step).
const SMOKE_TRAINING: [(&str, u64, u64); 5] =
    [("pretrain", 1, 4), ("indexer_warmup", 5, 6), ("sparse_train", 7, 8), ("sft", 9, 10), ("grpo", 11, 14)];
/// The smoke recipe's eval stages and the global step each is logged at (the step before it).
const SMOKE_EVALS: [(&str, u64); 2] = [("eval_before", 10), ("eval_after", 14)];
/// Every stage of the smoke recipe, in order.
const SMOKE_STAGES: [&str; 7] =
    ["pretrain", "indexer_warmup", "sparse_train", "sft", "eval_before", "grpo", "eval_after"];

/// A pretrain-only run on the tiny preset: 20 steps, a checkpoint after each.
const PRETRAIN_RECIPE: &str = r#"# Pretrain-only run for the CLI tests.
[run]
name = "pretrain-only"
seed = 0
device = "cpu"
max_bad_steps = 3

[model]
preset = "tiny"

[data]
source = "arithmetic"

[[stages]]
kind = "pretrain"
steps = 20
batch_size = 4
seq_len = 32

[checkpoint]
every = 1
keep_last = 3

[logging]
plots = false
"#;

// ---------------------------------------------------------------------------------------------
// Running the binary.

/// `rlvr train ARGS...`, waited for.
fn train(args: &[&str]) -> Output {
    rlvr(&[&["train"], args].concat())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Fails the test (with rlvr's stderr) unless `out` is a success.
fn assert_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed ({}):\n{}", out.status, stderr(out));
}

fn s(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// Writes `text` as `name` under `dir`; returns its path.
fn write_recipe(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    path
}

// ---------------------------------------------------------------------------------------------
// Reading a run directory.

fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// metrics.jsonl, one object a line.
fn metrics(run: &Path) -> Vec<Value> {
    let path = run.join("metrics.jsonl");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("metrics line {l}: {e}"))).collect()
}

fn is_eval(stage: &str) -> bool {
    stage.starts_with("eval")
}

/// (stage, global step) of each line, in file order; training lines or eval lines.
fn steps_of(lines: &[Value], evals: bool) -> Vec<(String, u64)> {
    lines
        .iter()
        .map(|l| (l["stage"].as_str().unwrap().to_string(), l["step"].as_u64().unwrap()))
        .filter(|(stage, _)| is_eval(stage) == evals)
        .collect()
}

/// The smoke recipe's training lines as they must appear: each global step once, in order.
fn smoke_training_steps() -> Vec<(String, u64)> {
    SMOKE_TRAINING
        .iter()
        .flat_map(|&(stage, first, last)| (first..=last).map(move |s| (stage.to_string(), s)))
        .collect()
}

fn smoke_eval_steps() -> Vec<(String, u64)> {
    SMOKE_EVALS.iter().map(|&(stage, step)| (stage.to_string(), step)).collect()
}

/// Wall-clock measurements, which no two runs share: `time`, `step_time`, and `*_s` (seconds and
/// tokens per second).
fn is_timing(key: &str) -> bool {
    key == "time" || key == "step_time" || key.ends_with("_s")
}

/// `v` with every timing key removed, at any depth.
fn without_timings(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !is_timing(k))
                .map(|(k, v)| (k.clone(), without_timings(v)))
                .collect::<Map<_, _>>(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_timings).collect()),
        other => other.clone(),
    }
}

/// A finite number at `key` of `v`.
fn num(v: &Value, key: &str) -> f64 {
    let x = v[key].as_f64().unwrap_or_else(|| panic!("`{key}` is not a number in {v}"));
    assert!(x.is_finite(), "`{key}` = {x} in {v}");
    x
}

fn in_unit(v: &Value, key: &str) -> f64 {
    let x = num(v, key);
    assert!((0.0..=1.0).contains(&x), "`{key}` = {x} is outside [0, 1] in {v}");
    x
}

/// Every `step_*` entry of the run's checkpoints folder, complete or not, by step.
fn step_dirs(run: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = fs::read_dir(run.join("checkpoints")) else { return Vec::new() };
    let mut found: Vec<(u64, PathBuf)> = entries
        .map(|e| e.unwrap())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            Some((name.strip_prefix("step_")?.parse().ok()?, e.path()))
        })
        .collect();
    found.sort();
    found
}

fn steps(dirs: &[(u64, PathBuf)]) -> Vec<u64> {
    dirs.iter().map(|(s, _)| *s).collect()
}

/// Names in the checkpoints folder left by an interrupted save (`.step_N.tmp-PID`, and the model
/// writer's own `..step_N.tmp-PID.rlvr-tmp-PID`).
fn temporaries(run: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(run.join("checkpoints")) else { return Vec::new() };
    entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.contains(".tmp-")).collect()
}

/// Every file of a directory, by name.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), fs::read(e.path()).unwrap()))
        .collect()
}

/// One tensor of a safetensors file, as stored.
#[derive(Debug, PartialEq)]
struct StoredTensor {
    dtype: String,
    shape: Vec<u64>,
    bytes: Vec<u8>,
}

/// Reads a safetensors file without the code under test: an 8-byte little-endian header length,
/// a JSON header `{name: {dtype, shape, data_offsets}}` (plus `__metadata__`), then the data,
/// which the tensors' offsets must tile exactly, each span as long as its dtype and shape say.
fn read_safetensors(path: &Path) -> BTreeMap<String, StoredTensor> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert!(bytes.len() >= 8, "{} is shorter than a header length", path.display());
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert!(8 + n <= bytes.len(), "{}: header of {n} bytes runs past the file", path.display());
    let header: Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let mut spans = Vec::new();
    let mut tensors = BTreeMap::new();
    for (name, info) in header.iter().filter(|(k, _)| *k != "__metadata__") {
        let dtype = info["dtype"].as_str().unwrap().to_string();
        let width = match dtype.as_str() {
            "F64" | "I64" | "U64" => 8,
            "F32" | "I32" => 4,
            "BF16" | "F16" => 2,
            other => panic!("{}: {name} has dtype {other}", path.display()),
        };
        let shape: Vec<u64> = info["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect();
        let offsets = info["data_offsets"].as_array().unwrap();
        let (a, b) = (offsets[0].as_u64().unwrap() as usize, offsets[1].as_u64().unwrap() as usize);
        assert_eq!((b - a) as u64, width * shape.iter().product::<u64>(), "{}: {name}", path.display());
        spans.push((a, b));
        tensors.insert(name.clone(), StoredTensor { dtype, shape, bytes: data[a..b].to_vec() });
    }
    spans.sort();
    let mut end = 0;
    for (a, b) in spans {
        assert_eq!(a, end, "{}: the tensors' data leave a gap or overlap", path.display());
        end = b;
    }
    assert_eq!(end, data.len(), "{}: data past the last tensor", path.display());
    tensors
}

/// What an independent read of a model's F32 weights found.
#[derive(Debug, PartialEq)]
struct Weights {
    tensors: u64,
    elements: u64,
    non_finite: u64,
}

fn read_f32_weights(path: &Path) -> Weights {
    let mut w = Weights { tensors: 0, elements: 0, non_finite: 0 };
    for (name, t) in read_safetensors(path) {
        assert_eq!(t.dtype, "F32", "{}: {name}", path.display());
        let values = t.bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()));
        w.non_finite += values.filter(|x| !x.is_finite()).count() as u64;
        w.tensors += 1;
        w.elements += t.shape.iter().product::<u64>();
    }
    w
}

/// Checks that `dir` is a complete checkpoint of global step `step`: its state.json says so,
/// `rlvr inspect` reads it and counts the tensors and elements an independent read of
/// model.safetensors finds, and every weight is finite. Returns its state.
fn assert_loadable_checkpoint(dir: &Path, step: u64) -> Value {
    let state_path = dir.join("state.json");
    assert!(state_path.is_file(), "{} has no state.json", dir.display());
    let state = read_json(&state_path);
    assert_eq!(state["global_step"], step, "{}", dir.display());
    let stored = read_f32_weights(&dir.join("model.safetensors"));
    assert_eq!(stored.non_finite, 0, "{}: non-finite weights", dir.display());
    let out = rlvr(&["inspect", s(dir), "--json"]);
    assert_ok(&out, &format!("rlvr inspect {}", dir.display()));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["checkpoint_tensors"], stored.tensors, "{}", dir.display());
    assert_eq!(report["dtypes"]["F32"]["elements"], stored.elements, "{}", dir.display());
    state
}

/// Checks every `step_*` entry of a run with [`assert_loadable_checkpoint`]; returns their steps.
fn assert_all_loadable(run: &Path) -> Vec<u64> {
    let dirs = step_dirs(run);
    for (step, dir) in &dirs {
        assert_loadable_checkpoint(dir, *step);
    }
    steps(&dirs)
}

// ---------------------------------------------------------------------------------------------
// 1. The smoke recipe.

#[test]
fn smoke_recipe_runs_every_stage() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let out = train(&[SMOKE, "--out", s(&run)]);
    assert_ok(&out, "rlvr train smoke");

    // report.json: every stage, in order.
    let report = read_json(&run.join("report.json"));
    let keys: Vec<&str> = report.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, SMOKE_STAGES);
    for (name, _) in SMOKE_EVALS {
        let e = &report[name];
        let accuracy = in_unit(e, "accuracy");
        let pass = e["pass_at_k"].as_object().unwrap_or_else(|| panic!("{name}: no pass_at_k object: {e}"));
        let mut ks: Vec<&str> = pass.keys().map(String::as_str).collect();
        ks.sort();
        assert_eq!(ks, ["1", "2"], "{name}");
        let (p1, p2) = (in_unit(&e["pass_at_k"], "1"), in_unit(&e["pass_at_k"], "2"));
        // pass@1 estimated from 2 samples a problem is the mean correctness, i.e. the accuracy.
        assert!((p1 - accuracy).abs() < 1e-12, "{name}: pass@1 {p1} vs accuracy {accuracy}");
        assert!(p2 >= p1, "{name}: pass@2 {p2} < pass@1 {p1}");
        assert!(e["n"].is_u64() && e["n"] == 8, "{name}: n = {} (max_problems = 8)", e["n"]);
    }
    let warmup = &report["indexer_warmup"];
    for key in ["kl_start", "kl_end"] {
        assert!(num(warmup, key) >= 0.0, "indexer_warmup.{key} is a KL divergence: {warmup}");
    }
    in_unit(warmup, "recall_start");
    in_unit(warmup, "recall_end");
    let sparse = &report["sparse_train"];
    for key in ["lm_loss_dense", "lm_loss_sparse"] {
        assert!(num(sparse, key) > 0.0, "sparse_train.{key}: {sparse}");
    }

    // metrics.jsonl: each training step once, in order; each eval once, at the step before it.
    let lines = metrics(&run);
    assert_eq!(steps_of(&lines, false), smoke_training_steps());
    assert_eq!(steps_of(&lines, true), smoke_eval_steps());
    for line in lines.iter().filter(|l| is_eval(l["stage"].as_str().unwrap())) {
        let name = line["stage"].as_str().unwrap();
        assert_eq!(line["accuracy"], report[name]["accuracy"], "{name}: metrics line vs report");
    }
    let grpo: Vec<&Value> = lines.iter().filter(|l| l["stage"] == "grpo").collect();
    for line in &grpo {
        let keys = [
            "reward",
            "reward_std",
            "accuracy",
            "loss",
            "kl",
            "entropy",
            "clip_low",
            "clip_high",
            "masked_seq_frac",
            "grad_norm",
            "lr",
            "completion_len",
            "gen_s",
            "score_s",
            "train_s",
            "sync_s",
            "tok_per_s",
        ];
        for key in keys {
            num(line, key);
        }
        for key in ["reward", "accuracy", "clip_low", "clip_high", "masked_seq_frac"] {
            in_unit(line, key);
        }
        for key in ["reward_std", "entropy", "grad_norm", "gen_s", "score_s", "train_s", "sync_s", "tok_per_s"] {
            assert!(num(line, key) >= 0.0, "{key}: {line}");
        }
        assert_eq!(num(line, "lr"), 1e-3, "constant schedule at optimizer.lr: {line}");
        let len = num(line, "completion_len");
        assert!((0.0..=8.0).contains(&len), "completion_len {len} past rollout.max_tokens = 8");
        assert_eq!(line["skipped"], false);
    }

    // Checkpoints: saves at 2 (every = 2) and at each stage end 4, 6, 8, 10, then 12, 14; the
    // newest keep_last = 3 remain, each complete.
    assert_eq!(steps(&step_dirs(&run)), [10, 12, 14]);
    assert_eq!(assert_all_loadable(&run), [10, 12, 14]);
    assert!(temporaries(&run).is_empty(), "{:?}", temporaries(&run));
    // The last checkpoint is taken at GRPO's end: it holds the report up to there.
    let last = read_json(&run.join("checkpoints/step_000014/state.json"));
    let mut upto_grpo = without_timings(&report);
    upto_grpo.as_object_mut().unwrap().remove("eval_after");
    assert_eq!(without_timings(&last["report"]), upto_grpo, "the last checkpoint's report");
    assert_eq!(last["stage_index"], 6, "the last checkpoint resumes at eval_after");

    // The resolved recipe the run dir keeps is a recipe: it runs, resolves to itself, and
    // reproduces the run's first step.
    let again = tmp.path().join("again");
    let saved = run.join("recipe.toml");
    let out = train(&[s(&saved), "--out", s(&again), "--max-steps", "1"]);
    assert_ok(&out, "rlvr train <run>/recipe.toml");
    // Equal but for `run.out`, which names the directory each ran in.
    let without_out = |p: &Path| -> String {
        fs::read_to_string(p).unwrap().lines().filter(|l| !l.starts_with("out = ")).collect::<Vec<_>>().join("\n")
    };
    assert_eq!(without_out(&again.join("recipe.toml")), without_out(&saved));
    assert!(fs::read_to_string(&saved).unwrap().contains(&format!("out = \"{}\"", run.display())));
    assert_eq!(steps(&step_dirs(&again)), [1]);
    assert_loadable_checkpoint(&again.join("checkpoints/step_000001"), 1);
    let first = metrics(&again);
    assert_eq!(first.len(), 1);
    assert_eq!(without_timings(&first[0]), without_timings(&lines[0]), "step 1 of the re-run vs the run");
}

// ---------------------------------------------------------------------------------------------
// 2. Resume.

const LAST: &str = "checkpoints/step_000014";

/// Checks that runs `a` and `b` ended in the same place: the last checkpoint's weights byte for
/// byte, its optimizer state (with `step_counts`, the whole file byte for byte; else every tensor
/// but the per-parameter `step.*` counts), its state, the report and every metrics line (timings
/// aside).
fn assert_same_run(a: &Path, b: &Path, step_counts: bool) {
    assert_same_run_at(a, b, step_counts, LAST);
}

/// [`assert_same_run`] with the last checkpoint at `last` (`checkpoints/step_NNNNNN`).
fn assert_same_run_at(a: &Path, b: &Path, step_counts: bool, last: &str) {
    let (x, y) = (fs::read(a.join(last).join("model.safetensors")), fs::read(b.join(last).join("model.safetensors")));
    assert!(x.unwrap() == y.unwrap(), "model.safetensors differs between {} and {}", a.display(), b.display());
    let (x, y) = (
        read_safetensors(&a.join(last).join("optimizer.safetensors")),
        read_safetensors(&b.join(last).join("optimizer.safetensors")),
    );
    assert!(x.keys().eq(y.keys()), "the optimizer files hold different tensors");
    let differ: Vec<&String> = x
        .iter()
        .filter(|(name, t)| (step_counts || !name.starts_with("step.")) && y[*name] != **t)
        .map(|(name, _)| name)
        .collect();
    assert!(differ.is_empty(), "optimizer tensors differ between {} and {}: {differ:?}", a.display(), b.display());
    if step_counts {
        let (x, y) = (
            fs::read(a.join(last).join("optimizer.safetensors")),
            fs::read(b.join(last).join("optimizer.safetensors")),
        );
        assert!(x.unwrap() == y.unwrap(), "optimizer.safetensors bytes differ");
    }
    for file in [format!("{last}/state.json"), "report.json".to_string()] {
        let (x, y) = (read_json(&a.join(&file)), read_json(&b.join(&file)));
        assert_eq!(without_timings(&x), without_timings(&y), "{file}");
    }
    let strip = |run: &Path| metrics(run).iter().map(without_timings).collect::<Vec<_>>();
    assert_eq!(strip(a), strip(b), "metrics.jsonl");
}

/// Runs smoke into `run` with `--max-steps stop`, checks where it stopped, then resumes it to the
/// end.
fn stop_and_resume(run: &Path, stop: u64, stage_index: u64) {
    let stop_arg = stop.to_string();
    let out = train(&[SMOKE, "--out", s(run), "--max-steps", &stop_arg]);
    assert_ok(&out, &format!("smoke --max-steps {stop}"));
    assert!(stderr(&out).contains(&format!("stopped after step {stop}")), "{}", stderr(&out));
    assert!(!run.join("report.json").exists(), "a stopped run has no report");
    let dirs = step_dirs(run);
    let (newest, dir) = dirs.last().unwrap();
    assert_eq!(*newest, stop);
    let state = assert_loadable_checkpoint(dir, stop);
    assert_eq!(state["stage_index"], stage_index, "stopped one step into stage {stage_index}");
    assert_eq!(state["stage_step"], 1);

    let out = train(&[SMOKE, "--out", s(run), "--resume"]);
    assert_ok(&out, &format!("smoke --resume after --max-steps {stop}"));
    assert!(stderr(&out).contains(&format!("resuming from {}", dir.display())), "{}", stderr(&out));
}

/// A run stopped at step 11 (GRPO's first) and resumed ends exactly where the uninterrupted run
/// does: weights, optimizer moments, state, report with its eval numbers, every metric of every
/// step. The optimizer's step counts and a second stop point are
/// `resume_restores_optimizer_state_exactly`'s.
#[test]
fn resume_is_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    assert_ok(&train(&[SMOKE, "--out", s(&whole)]), "smoke");
    let mid_grpo = tmp.path().join("mid_grpo");
    stop_and_resume(&mid_grpo, 11, 5);
    assert_same_run(&whole, &mid_grpo, false);
}

/// Resume, bit for bit, at two points: mid-GRPO (step 11) and across the pretrain → DSA boundary
/// (step 5, the indexer warm-up's first, whose starting probe the checkpoint keeps), including the
/// optimizer's per-parameter step counts. (Which parameters AdamW steps and what the clipping norm
/// sums must not depend on what the process ran before the checkpoint.)
#[test]
fn resume_restores_optimizer_state_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    assert_ok(&train(&[SMOKE, "--out", s(&whole)]), "smoke");
    let mid_grpo = tmp.path().join("mid_grpo");
    stop_and_resume(&mid_grpo, 11, 5);
    let warmup = tmp.path().join("warmup");
    stop_and_resume(&warmup, 5, 1);
    assert_same_run(&whole, &warmup, true);
    assert_same_run(&whole, &mid_grpo, true);
}

/// A run killed after an eval stage finished but before the next checkpoint resumes from the
/// checkpoint before the eval and runs it again; metrics.jsonl must then hold the eval once (its
/// line carries the checkpoint's own step). The kill is simulated by deleting checkpoint 11 of a
/// run stopped there.
#[test]
fn resume_does_not_log_an_eval_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    assert_ok(&train(&[SMOKE, "--out", s(&run), "--max-steps", "11"]), "smoke --max-steps 11");
    fs::remove_dir_all(run.join("checkpoints/step_000011")).unwrap();
    assert_ok(&train(&[SMOKE, "--out", s(&run), "--resume"]), "smoke --resume from step 10");
    let lines = metrics(&run);
    assert_eq!(steps_of(&lines, false), smoke_training_steps());
    assert_eq!(steps_of(&lines, true), smoke_eval_steps());
}

// ---------------------------------------------------------------------------------------------
// 3. SIGKILL while a checkpoint is written.

/// `rlvr train ARGS...` as a child, stderr to `log`.
fn spawn_train(args: &[&str], log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rlvr"))
        .arg("train")
        .args(args)
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).unwrap())
        .spawn()
        .expect("starting rlvr train")
}

/// Where a kill landed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kill {
    /// While the checkpoint's temporary directory existed.
    Writing,
    /// Just after the checkpoint was complete (the poll missed the write).
    AfterSave,
    /// Wherever the run was after 60 s.
    Timeout,
}

/// Kills `child` (SIGKILL) while the checkpoint of global step `step` is being written: as soon
/// as its temporary directory shows. When the poll misses that window it kills as soon as the
/// checkpoint is complete, and after 60 s wherever the run is.
fn kill_at_save(child: &mut Child, run: &Path, step: u64, log: &Path) -> Kill {
    let checkpoints = run.join("checkpoints");
    let writing = format!("step_{step:06}.tmp-{}", child.id());
    let done = checkpoints.join(format!("step_{step:06}/state.json"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let kill = loop {
        if let Ok(entries) = fs::read_dir(&checkpoints) {
            if entries.filter_map(Result::ok).any(|e| e.file_name().to_string_lossy().contains(&writing)) {
                break Kill::Writing;
            }
        }
        if done.is_file() {
            break Kill::AfterSave;
        }
        if Instant::now() > deadline {
            break Kill::Timeout;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("rlvr exited ({status}) before checkpoint {step}:\n{}", fs::read_to_string(log).unwrap());
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    kill
}

#[test]
fn kill_during_checkpoint_leaves_last_checkpoint_loadable() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let base = [SMOKE, "--out", s(&run), "--set", "checkpoint.every=1"];
    // Kill at the first save of all (nothing to fall back to), inside the indexer warm-up (back to
    // the end of pretrain) and at GRPO's first save (back to before eval_before). Each process
    // resumes what the one before it left, so each resume is also checked to get past the next kill.
    for (i, step) in [1u64, 5, 11].into_iter().enumerate() {
        let newest = step_dirs(&run).last().cloned();
        let log = tmp.path().join(format!("train-{i}.log"));
        let args: Vec<&str> = if i == 0 { base.to_vec() } else { [&base[..], &["--resume"]].concat() };
        let mut child = spawn_train(&args, &log);
        let kill = kill_at_save(&mut child, &run, step, &log);
        println!("kill {i} at checkpoint {step}: {kill:?}");

        let log_text = fs::read_to_string(&log).unwrap();
        match &newest {
            Some((_, dir)) => assert!(log_text.contains(&format!("resuming from {}", dir.display())), "{log_text}"),
            None if i > 0 => assert!(log_text.contains("no checkpoint in"), "{log_text}"),
            None => {}
        }
        let complete = assert_all_loadable(&run);
        let newest = complete.last().copied();
        // Killed while writing `step` (or just after): the newest is `step - 1` or `step` itself.
        // After a timeout it is older, or none.
        let expected = match kill {
            Kill::Writing | Kill::AfterSave => newest.map_or(step == 1, |n| n + 1 == step || n == step),
            Kill::Timeout => newest.is_none_or(|n| n <= step),
        };
        assert!(expected, "after a kill ({kill:?}) at checkpoint {step} the newest is {newest:?}");
        assert!(complete.len() <= 4, "keep_last = 3, plus one a kill between rename and pruning can leave");
    }

    let out = train(&[&base[..], &["--resume"]].concat());
    assert_ok(&out, "smoke --resume after three kills");
    let report = read_json(&run.join("report.json"));
    let keys: Vec<&str> = report.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, SMOKE_STAGES);
    // Steps redone after a kill replace their lines: each training step is logged once. An eval
    // redone after a kill is logged again (see `resume_does_not_log_an_eval_twice`), so only its
    // presence and step are checked here.
    let lines = metrics(&run);
    assert_eq!(steps_of(&lines, false), smoke_training_steps());
    let mut evals = steps_of(&lines, true);
    evals.dedup();
    assert_eq!(evals, smoke_eval_steps());
    assert_eq!(assert_all_loadable(&run), [12, 13, 14]);
    assert!(temporaries(&run).is_empty(), "a later save removes what a kill left: {:?}", temporaries(&run));
}

// ---------------------------------------------------------------------------------------------
// 4. Non-finite losses.

#[test]
fn nan_loss_stops_after_k_bad_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = write_recipe(tmp.path(), "pretrain.toml", PRETRAIN_RECIPE);
    let run = tmp.path().join("run");
    // One AdamW step at lr 1e30 moves every weight by ~1e30 (still finite in f32); from the next
    // step on the gradient overflows, so every step is skipped and the weights stay put.
    let sets = ["--set", "optimizer.lr=1e30", "--set", "optimizer.grad_clip=0"];
    let out = train(&[&[s(&recipe), "--out", s(&run)][..], &sets].concat());
    let err = stderr(&out);
    assert!(!out.status.success(), "a run of non-finite steps must fail:\n{err}");
    assert!(err.contains("non-finite") && err.contains('3'), "{err}");
    assert_eq!(err.matches("step skipped").count(), 3, "stops at the 3rd bad step in a row:\n{err}");

    let lines = metrics(&run);
    let skipped: Vec<bool> = lines.iter().map(|l| l["skipped"].as_bool().unwrap()).collect();
    let good = skipped.iter().take_while(|s| !**s).count();
    assert!(good >= 1, "the first step is finite: {skipped:?}");
    assert!(skipped[good..].iter().all(|s| *s), "the bad steps are the last ones, in a row: {skipped:?}");
    assert!((2..=3).contains(&(skipped.len() - good)), "{skipped:?}");

    // Checkpoints: only after good steps, each finite, the newest at the last good step and named
    // in the error.
    let dirs = step_dirs(&run);
    assert!(!dirs.is_empty());
    for (step, dir) in &dirs {
        let state = assert_loadable_checkpoint(dir, *step);
        assert_eq!(state["bad_steps"], 0, "{}", dir.display());
        assert!(*step <= good as u64, "checkpoint {step} is past the last good step {good}");
    }
    let (newest, dir) = dirs.last().unwrap();
    assert_eq!(*newest, good as u64);
    assert!(err.contains(s(dir)), "the error names the newest checkpoint {}:\n{err}", dir.display());
}

/// A step whose loss and gradient are finite but whose update overflows the weights (AdamW moves
/// each weight by about lr = 1e39 > f32::MAX) must not be checkpointed: the run stops instead, and
/// every checkpoint left holds finite weights.
#[test]
fn update_that_overflows_the_weights_is_not_checkpointed() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = write_recipe(tmp.path(), "pretrain.toml", PRETRAIN_RECIPE);
    let run = tmp.path().join("run");
    let out = train(&[s(&recipe), "--out", s(&run), "--set", "optimizer.lr=1e39", "--set", "optimizer.grad_clip=0"]);
    assert!(!out.status.success(), "{}", stderr(&out));
    for (step, dir) in step_dirs(&run) {
        assert_loadable_checkpoint(&dir, step);
    }
}

// ---------------------------------------------------------------------------------------------
// 5. A full disk while saving.

#[test]
fn full_disk_on_save_keeps_previous_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = write_recipe(tmp.path(), "pretrain.toml", PRETRAIN_RECIPE);
    let run = tmp.path().join("run");
    assert_ok(&train(&[s(&recipe), "--out", s(&run), "--max-steps", "2"]), "pretrain --max-steps 2");
    let before: Vec<_> = step_dirs(&run).iter().map(|(step, dir)| (*step, snapshot(dir))).collect();
    assert_eq!(before.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 2]);
    let model_bytes = before[1].1["model.safetensors"].len() as u64;

    // `ulimit -f` (KiB) below the model file and far above everything else the run writes
    // (metrics lines, the recipe, the tokenizer); SIGXFSZ ignored so writes fail with EFBIG.
    let limit_kib = model_bytes / 2 / 1024;
    let metrics_bytes = fs::metadata(run.join("metrics.jsonl")).unwrap().len();
    assert!(limit_kib * 1024 > 16 * metrics_bytes && limit_kib * 1024 < model_bytes, "{limit_kib} KiB");
    let script = format!("trap '' XFSZ; ulimit -f {limit_kib}; exec \"$0\" \"$@\"");
    let out = Command::new("bash")
        .args(["-c", &script, env!("CARGO_BIN_EXE_rlvr"), "train", s(&recipe), "--out", s(&run), "--resume"])
        .current_dir(root())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success(), "a save that cannot be written must fail:\n{err}");
    let failed = run.join("checkpoints/step_000003");
    assert!(err.contains(s(&failed)) && err.contains("previous checkpoints are untouched"), "{err}");

    // Checkpoints 1 and 2 byte for byte; no half-written step_3, no temporaries.
    let after: Vec<_> = step_dirs(&run).iter().map(|(step, dir)| (*step, snapshot(dir))).collect();
    assert!(after == before, "checkpoints changed: {:?}", steps(&step_dirs(&run)));
    assert_eq!(assert_all_loadable(&run), [1, 2]);
    assert!(temporaries(&run).is_empty(), "{:?}", temporaries(&run));

    // With space again, the run continues from step 2 to the end.
    let out = train(&[s(&recipe), "--out", s(&run), "--resume"]);
    assert_ok(&out, "pretrain --resume after the failed save");
    assert!(stderr(&out).contains("resuming from") && stderr(&out).contains("step_000002"), "{}", stderr(&out));
    assert_eq!(assert_all_loadable(&run), [18, 19, 20]);
    let lines = metrics(&run);
    assert_eq!(steps_of(&lines, false), (1..=20).map(|s| ("pretrain".to_string(), s)).collect::<Vec<_>>());
    assert!(run.join("report.json").is_file());
}

// ---------------------------------------------------------------------------------------------
// 6. Mistakes caught before any work.

#[test]
fn bad_recipe_fails_before_work() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");

    // An unknown key: the file, the key and its line.
    let text = format!("{PRETRAIN_RECIPE}\n[optimizer]\nlr = 1e-3\nlearning_rate = 1e-3\n");
    let line = text.lines().count();
    assert!(text.lines().last().unwrap().starts_with("learning_rate"));
    let recipe = write_recipe(tmp.path(), "typo.toml", &text);
    let out = train(&[s(&recipe), "--out", s(&run)]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains(s(&recipe)) && err.contains("learning_rate"), "{err}");
    assert!(err.contains(&format!(":{line}:")), "line {line}: {err}");
    assert!(!run.exists(), "nothing is written for a bad recipe");

    // A bad --set value: the --set argument.
    let recipe = write_recipe(tmp.path(), "pretrain.toml", PRETRAIN_RECIPE);
    let out = train(&[s(&recipe), "--out", s(&run), "--set", "optimizer.lr=abc"]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("--set optimizer.lr=abc"), "{err}");
    assert!(!run.exists(), "nothing is written for a bad --set");

    // A run dir holding checkpoints, without --resume: refused, and left as it was.
    assert_ok(&train(&[s(&recipe), "--out", s(&run), "--max-steps", "1"]), "pretrain --max-steps 1");
    let before = (snapshot(&run), snapshot(&run.join("checkpoints/step_000001")));
    let out = train(&[s(&recipe), "--out", s(&run)]);
    let err = stderr(&out);
    assert!(!out.status.success(), "a second run into the same dir must be refused");
    assert!(err.contains("--resume") && err.contains(s(&run)), "{err}");
    assert!(
        (snapshot(&run), snapshot(&run.join("checkpoints/step_000001"))) == before,
        "the refused run changed files"
    );
}

// ---------------------------------------------------------------------------------------------
// SIGTERM / SIGINT: finish the step, checkpoint, stop; --resume ends as an uninterrupted run.

/// SIGTERM in the middle of a GRPO stage (40 steps instead of smoke's 4, so the signal lands
/// inside it): the run finishes its step, writes a checkpoint, says how to resume and exits
/// non-zero; `--resume` then ends bit for bit where the uninterrupted run ends.
#[test]
fn sigterm_mid_grpo_checkpoints_and_resumes_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let long = ["--set", "stages.grpo.steps=40", "--set", "checkpoint.every=0"];
    let whole = tmp.path().join("whole");
    assert_ok(&train(&[&[SMOKE, "--out", s(&whole)], &long[..]].concat()), "smoke, long grpo");

    let run = tmp.path().join("run");
    let log = tmp.path().join("log");
    let mut child = spawn_train(&[&[SMOKE, "--out", s(&run)], &long[..]].concat(), &log);
    // Wait for the third GRPO step's record, then signal.
    let start = Instant::now();
    let grpo_steps = || metrics(&run).iter().filter(|m| m["stage"] == "grpo").count();
    while run.join("metrics.jsonl").exists().then(grpo_steps).unwrap_or(0) < 3 {
        assert!(start.elapsed() < Duration::from_secs(120), "GRPO never started");
        assert!(child.try_wait().unwrap().is_none(), "the run ended early: {}", fs::read_to_string(&log).unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let status = child.wait().unwrap();
    let err = fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "an interrupted run exits non-zero:\n{err}");
    assert!(err.contains("interrupted by a signal") && err.contains("--resume"), "{err}");
    let (stopped, dir) = step_dirs(&run).pop().expect("a checkpoint was written");
    assert!((14..50).contains(&stopped), "stopped inside GRPO (steps 11..=50), at step {stopped}");
    let state = assert_loadable_checkpoint(&dir, stopped);
    assert!(state["stage_step"].as_u64().unwrap() > 0, "mid-stage: {state}");
    assert!(!run.join("report.json").exists(), "an interrupted run has no report");

    let out = train(&[&[SMOKE, "--out", s(&run), "--resume"], &long[..]].concat());
    assert_ok(&out, "resume after SIGTERM");
    assert_same_run_at(&whole, &run, true, "checkpoints/step_000050");
}

/// `--resume` continues the run that was started: a recipe changed since (here by `--set`) is
/// refused with the difference shown, before any work; keys that change nothing computed
/// (`checkpoint.keep_last`) may differ; a finished run says so and reprints its report.
#[test]
fn resume_refuses_a_changed_recipe_and_reports_a_finished_run() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    assert_ok(&train(&[SMOKE, "--out", s(&run), "--max-steps", "3"]), "smoke --max-steps 3");
    let out = train(&[SMOKE, "--out", s(&run), "--resume", "--set", "stages.sft.steps=30"]);
    assert!(!out.status.success(), "a changed recipe must be refused");
    let err = stderr(&out);
    assert!(err.contains("differs from its saved recipe") && err.contains("stages[3].steps: saved 2, now 30"), "{err}");
    assert_eq!(metrics(&run).len(), 3, "nothing ran");

    let out = train(&[SMOKE, "--out", s(&run), "--resume", "--set", "checkpoint.keep_last=5"]);
    assert_ok(&out, "resume with a changed keep_last");
    let report = fs::read_to_string(run.join("report.json")).unwrap();
    let lines = metrics(&run).len();
    let out = train(&[SMOKE, "--out", s(&run), "--resume"]);
    assert_ok(&out, "resume of a finished run");
    assert!(stderr(&out).contains("is finished"), "{}", stderr(&out));
    assert_eq!(metrics(&run).len(), lines, "a finished run runs nothing again");
    assert_eq!(fs::read_to_string(run.join("report.json")).unwrap(), report);
}
