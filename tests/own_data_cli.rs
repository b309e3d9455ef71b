//! Training on one's own data, end to end through the `rlvr` binary:
//!
//! * a recipe with relative paths (data, model, an external verifier's script) run from another
//!   directory trains, saves its recipe with absolute paths, and resumes from a third place; a
//!   `preset` is found wherever `rlvr` runs;
//! * verl's Parquet layout (chat-message prompts, `reward_model.ground_truth`, `data_source`,
//!   `extra_info`), written by pyarrow, trains a few GRPO steps with its prompts rendered by the
//!   model's chat template, and `rlvr eval` reads it (layout detected) with per-sample output;
//! * `rlvr eval --recipe RUN/recipe.toml` of a run's final checkpoint gives exactly the in-run
//!   eval's figures.
//!
//! The model directories are `rlvr init` of a small config with the printable-ASCII tokenizer
//! (`rlvr_trainer::data::write_text_tokenizer`, whose `tokenizer_config.json` has a chat template).

mod common;

use common::{root, TINY_ARITHMETIC};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `rlvr ARGS…` run in `cwd`.
fn rlvr_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rlvr")).args(args).current_dir(cwd).output().expect("running rlvr")
}

fn assert_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// A model directory: the tiny preset cut to 2 layers over the printable-ASCII tokenizer.
fn model_dir(dir: &Path) {
    let config_path = dir.with_extension("config.json");
    let mut config = read_json(&root().join("presets/tiny/config.json"));
    config["num_hidden_layers"] = 2.into();
    config["vocab_size"] = rlvr_trainer::data::TEXT_VOCAB.into();
    fs::write(&config_path, config.to_string()).unwrap();
    let out = rlvr_in(root(), &["init", "--config", config_path.to_str().unwrap(), "--out", dir.to_str().unwrap()]);
    assert_ok(&out, "rlvr init");
    rlvr_trainer::data::write_text_tokenizer(dir).unwrap();
}

/// The first `n` problems of the shipped GSM8K-form word problems, as a JSONL file.
fn word_problems(path: &Path, file: &str, n: usize) {
    let text = fs::read_to_string(root().join("data/word-problems").join(file)).unwrap();
    let lines: Vec<&str> = text.lines().take(n).collect();
    fs::write(path, lines.join("\n") + "\n").unwrap();
}

const RELATIVE_RECIPE: &str = r#"# Every path relative to this file's folder.
[run]
name = "relative"
seed = 3

[model]
path = "model"

[data]
source = "jsonl"
format = "gsm8k"
train = "data/train.jsonl"
test = "data/test.jsonl"
prompt_template = "{prompt}\n"

[[stages]]
kind = "sft"
steps = 2
batch_size = 4

[[stages]]
kind = "grpo"
steps = 2

[[stages]]
kind = "eval"
samples = 2
max_problems = 4

[rollout]
group_size = 2
prompts_per_step = 2
max_tokens = 8

[[verifier]]
kind = "math"

[[verifier]]
kind = "external"
name = "last_line"
weight = 0.5
command = "python3 reward.py"

[checkpoint]
every = 1

[logging]
plots = false
"#;

/// A recipe with relative paths run from a sibling directory, then resumed from its own folder:
/// the same files are read both times and the saved recipe names them absolutely.
#[test]
fn relative_paths_resolve_against_the_recipe_and_resume_from_elsewhere() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("project");
    let elsewhere = tmp.path().join("elsewhere");
    for dir in [project.join("data"), elsewhere.clone()] {
        fs::create_dir_all(dir).unwrap();
    }
    model_dir(&project.join("model"));
    word_problems(&project.join("data/train.jsonl"), "train.jsonl", 16);
    word_problems(&project.join("data/test.jsonl"), "test.jsonl", 4);
    fs::copy(root().join("verifiers/examples/external_verifier.py"), project.join("reward.py")).unwrap();
    fs::write(project.join("recipe.toml"), RELATIVE_RECIPE).unwrap();

    let out = rlvr_in(&elsewhere, &["train", "../project/recipe.toml", "--out", "run", "--max-steps", "3"]);
    assert_ok(&out, "train from elsewhere");
    let run = elsewhere.join("run");
    let saved: toml::Table = fs::read_to_string(run.join("recipe.toml")).unwrap().parse().unwrap();
    let abs = |p: &str| project.join(p).display().to_string();
    assert_eq!(saved["data"]["train"].as_str(), Some(abs("data/train.jsonl").as_str()));
    assert_eq!(saved["data"]["test"].as_str(), Some(abs("data/test.jsonl").as_str()));
    assert_eq!(saved["model"]["path"].as_str(), Some(abs("model").as_str()));
    assert_eq!(saved["run"]["out"].as_str(), Some(run.display().to_string().as_str()));
    let command = format!("python3 {}", abs("reward.py"));
    assert_eq!(saved["verifier"][1]["command"].as_str(), Some(command.as_str()));
    let metrics = fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("reward/last_line"), "the external verifier ran:\n{metrics}");

    // Resumed from the recipe's own folder, the run directory named from there.
    let out = rlvr_in(&project, &["train", "recipe.toml", "--out", "../elsewhere/run", "--resume"]);
    assert_ok(&out, "resume from the recipe's folder");
    let report = read_json(&run.join("report.json"));
    assert_eq!(report["eval"]["n"], 4, "{report}");

    // A missing file: the error shows the resolved path and the working directory.
    fs::write(project.join("broken.toml"), RELATIVE_RECIPE.replace("data/test.jsonl", "data/nope.jsonl")).unwrap();
    let out = rlvr_in(&elsewhere, &["train", "../project/broken.toml", "--out", "run2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&abs("data/nope.jsonl")) && err.contains(&elsewhere.display().to_string()), "{err}");
}

/// `preset = "tiny"` and `rlvr init --config tiny` find the same preset outside the repository.
#[test]
fn presets_are_found_wherever_rlvr_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = format!(
        "[run]\nname = \"p\"\n{TINY_ARITHMETIC}\n[[stages]]\nkind = \"pretrain\"\nsteps = 1\nbatch_size = 2\nseq_len = 16\n\n[logging]\nplots = false\n"
    );
    fs::write(tmp.path().join("r.toml"), recipe).unwrap();
    assert_ok(&rlvr_in(tmp.path(), &["train", "r.toml", "--out", "run"]), "a preset recipe outside the repository");
    assert!(tmp.path().join("run/report.json").is_file());
    assert_ok(&rlvr_in(tmp.path(), &["init", "--config", "tiny", "--out", "m"]), "rlvr init --config tiny");
    assert!(tmp.path().join("m/config.json").is_file());
}

/// The project's Python, with pyarrow (`bash scripts/pip-pin.sh pyarrow 26.0.1`; `./x test` does it).
fn python_with_pyarrow() -> PathBuf {
    let python = root().join(".venv/bin/python");
    let ok = Command::new(&python).args(["-c", "import pyarrow"]).status().is_ok_and(|s| s.success());
    assert!(ok, "{} cannot import pyarrow: run `bash scripts/pip-pin.sh pyarrow 26.0.1`", python.display());
    python
}

/// verl's layout, as its gsm8k preprocessing writes it: chat-message prompts, the answer in
/// `reward_model.ground_truth`, `data_source`, `ability`, `extra_info`.
const WRITE_VERL: &str = r#"
import sys
import pyarrow as pa
import pyarrow.parquet as pq

def rows(split, start, n):
    out = []
    for i in range(start, start + n):
        a, b = i % 7 + 1, i % 5 + 2
        out.append({
            "data_source": "toy/add",
            "prompt": [
                {"role": "system", "content": "Answer with the number."},
                {"role": "user", "content": f"{a}+{b}=?"},
            ],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(a + b)},
            "extra_info": {"split": split, "index": i},
        })
    return out

pq.write_table(pa.Table.from_pylist(rows("train", 0, 12)), sys.argv[1] + "/train.parquet")
pq.write_table(pa.Table.from_pylist(rows("test", 100, 4)), sys.argv[1] + "/test.parquet")
"#;

const VERL_RECIPE: &str = r#"[run]
name = "verl"
seed = 5

[model]
path = "model"

[data]
source = "parquet"
format = "verl"
train = "train.parquet"
test = "test.parquet"

[[stages]]
kind = "grpo"
steps = 3

[[stages]]
kind = "eval"
samples = 2

[rollout]
group_size = 4
prompts_per_step = 2
max_tokens = 6

[verifier]
kind = "math"

[logging]
plots = false
"#;

#[test]
fn verl_parquet_trains_and_evals() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let python = python_with_pyarrow();
    let script = dir.join("write_verl.py");
    fs::write(&script, WRITE_VERL).unwrap();
    let status = Command::new(&python).arg(&script).arg(dir).status().unwrap();
    assert!(status.success(), "writing the verl parquet files");
    model_dir(&dir.join("model"));
    fs::write(dir.join("recipe.toml"), VERL_RECIPE).unwrap();

    let out = rlvr_in(dir, &["train", "recipe.toml", "--out", "run"]);
    assert_ok(&out, "GRPO on verl parquet");
    let report = read_json(&dir.join("run/report.json"));
    assert_eq!(report["eval"]["n"], 4, "{report}");
    let grpo_steps = fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap().matches("\"stage\":\"grpo\"").count();
    assert_eq!(grpo_steps, 3);

    // rlvr eval: the layout detected from the rows, prompts rendered by the model's template.
    let model = dir.join("run/checkpoints/step_000003");
    let samples = dir.join("samples.jsonl");
    let args = ["eval", "--model", model.to_str().unwrap(), "--data", "test.parquet", "--verifier", "math"];
    let out = rlvr_in(dir, &[&args[..], &["--samples", "2", "--output", samples.to_str().unwrap()]].concat());
    assert_ok(&out, "rlvr eval on verl parquet");
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((result["n"].as_u64(), result["samples"].as_u64()), (Some(4), Some(2)), "{result}");
    let lines: Vec<Value> =
        fs::read_to_string(&samples).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 8, "4 problems × 2 samples");
    // The text tokenizer's chat template, rendered without its bos: "System: …\nUser: …\nAssistant: ".
    assert_eq!(lines[0]["prompt"], "System: Answer with the number.\nUser: 3+2=?\nAssistant: ", "{}", lines[0]);
    for line in &lines {
        assert!(line["completion"].is_string() && line["reward"].is_number(), "{line}");
        assert_eq!(line["verdict"]["outcome"], line["outcome"]);
    }
    let correct = lines.iter().filter(|l| l["outcome"] == "Correct").count() as f64;
    assert!((result["accuracy"].as_f64().unwrap() - correct / 8.0).abs() < 1e-12, "{result}");
}

/// `rlvr eval --recipe` takes data, prompts, verifier, sampling, attention and seed from the run:
/// evaluating its final checkpoint gives the in-run eval's figures exactly (the same completions:
/// their mean length agrees too).
#[test]
fn eval_with_the_run_recipe_reproduces_the_in_run_eval() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = format!(
        r#"[run]
name = "evalcheck"
seed = 11
{TINY_ARITHMETIC}
[[stages]]
kind = "pretrain"
steps = 6
batch_size = 8
seq_len = 32
lr = 3e-3

[[stages]]
kind = "grpo"
steps = 2

[[stages]]
kind = "eval"
name = "final"
samples = 3
max_problems = 6
temperature = 0.8

[rollout]
group_size = 2
prompts_per_step = 2
max_tokens = 6
attention = "sparse"

[[verifier]]
kind = "math"

[[verifier]]
kind = "length"
weight = 0.5
max_length = 6
cache_length = 3

[logging]
plots = false
"#
    );
    fs::write(tmp.path().join("r.toml"), recipe).unwrap();
    assert_ok(&rlvr_in(tmp.path(), &["train", "r.toml", "--out", "run"]), "train");
    let in_run = &read_json(&tmp.path().join("run/report.json"))["final"];

    let out = rlvr_in(tmp.path(), &["eval", "--recipe", "run/recipe.toml"]);
    assert_ok(&out, "rlvr eval --recipe");
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["accuracy", "pass_at_k", "n", "samples", "completion_len", "reward/math", "reward/length"] {
        assert_eq!(cli[key], in_run[key], "{key}: cli {cli} vs in-run {in_run}");
    }
    assert!(cli["model"].as_str().unwrap().ends_with("checkpoints/step_000008"), "{cli}");
}

/// The tensor names of a checkpoint's `model.safetensors` (its JSON header).
fn tensor_names(dir: &Path) -> Vec<String> {
    let bytes = fs::read(dir.join("model.safetensors")).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    header.keys().filter(|k| *k != "__metadata__").cloned().collect()
}

fn mtp_recipe(model: &str, mtp: bool) -> String {
    format!(
        "[run]\nname = \"mtp\"\n[model]\n{model}\nmtp = {mtp}\n[model.config]\nnum_hidden_layers = 2\nvocab_size = 32\n\n[data]\nsource = \"arithmetic\"\nheld_out = 4\n\n[[stages]]\nkind = \"pretrain\"\nsteps = 1\nbatch_size = 2\nseq_len = 16\n\n[logging]\nplots = false\n"
    )
}

/// A run that does not train the MTP module (`mtp = false`) still saves its weights, so the
/// checkpoint matches its config (`num_nextn_predict_layers = 1`); an `mtp = true` run on a model
/// directory without MTP weights says it initialises them afresh, and a checkpoint of an `mtp =
/// false` run from there drops `num_nextn_predict_layers` with them.
#[test]
fn mtp_weights_are_kept_and_missing_ones_announced() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(dir.join("a.toml"), mtp_recipe("preset = \"tiny\"", false)).unwrap();
    assert_ok(&rlvr_in(dir, &["train", "a.toml", "--out", "a"]), "mtp = false on the tiny preset");
    let checkpoint = dir.join("a/checkpoints/step_000001");
    let names = tensor_names(&checkpoint);
    assert!(names.iter().any(|n| n.starts_with("model.layers.2.")), "the MTP layer (2) is saved: {names:?}");
    assert_eq!(read_json(&checkpoint.join("config.json"))["num_nextn_predict_layers"], 1);

    // The checkpoint as a model dir: mtp = true finds its MTP weights, no warning.
    let model = format!("path = {:?}", checkpoint.display().to_string());
    fs::write(
        dir.join("b.toml"),
        mtp_recipe(&model, true).replace("[model.config]\nnum_hidden_layers = 2\nvocab_size = 32\n", ""),
    )
    .unwrap();
    let out = rlvr_in(dir, &["train", "b.toml", "--out", "b"]);
    assert_ok(&out, "mtp = true from a checkpoint with MTP weights");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("fresh random initialisation"));

    // A model dir whose config promises an MTP layer its weights lack.
    let mut config = read_json(&root().join("presets/tiny/config.json"));
    config["num_hidden_layers"] = 2.into();
    config["vocab_size"] = 32.into();
    config["num_nextn_predict_layers"] = 0.into();
    fs::write(dir.join("no-mtp.json"), config.to_string()).unwrap();
    assert_ok(&rlvr_in(dir, &["init", "--config", "no-mtp.json", "--out", "bare"]), "init without MTP");
    config["num_nextn_predict_layers"] = 1.into();
    fs::write(dir.join("bare/config.json"), config.to_string()).unwrap();
    rlvr_trainer::data::write_arithmetic_tokenizer(&dir.join("bare")).unwrap();
    let bare = "path = \"bare\"";
    fs::write(
        dir.join("c.toml"),
        mtp_recipe(bare, true).replace("[model.config]\nnum_hidden_layers = 2\nvocab_size = 32\n", ""),
    )
    .unwrap();
    let out = rlvr_in(dir, &["train", "c.toml", "--out", "c"]);
    assert_ok(&out, "mtp = true without MTP weights");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds no weights for") && err.contains("fresh random initialisation"), "{err}");
    fs::write(
        dir.join("d.toml"),
        mtp_recipe(bare, false).replace("[model.config]\nnum_hidden_layers = 2\nvocab_size = 32\n", ""),
    )
    .unwrap();
    assert_ok(&rlvr_in(dir, &["train", "d.toml", "--out", "d"]), "mtp = false without MTP weights");
    let saved = dir.join("d/checkpoints/step_000001");
    assert_eq!(read_json(&saved.join("config.json"))["num_nextn_predict_layers"], 0, "the config says what is saved");
    assert!(!tensor_names(&saved).iter().any(|n| n.starts_with("model.layers.2.")));
}

/// A tokenizer smaller than the model's vocabulary is a warning naming both sizes.
#[test]
fn a_tokenizer_smaller_than_the_vocabulary_is_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = mtp_recipe("preset = \"tiny\"", false).replace("vocab_size = 32", "vocab_size = 40");
    fs::write(tmp.path().join("r.toml"), recipe).unwrap();
    let out = rlvr_in(tmp.path(), &["train", "r.toml", "--out", "run"]);
    assert_ok(&out, "train with vocab_size 40");
    let err = String::from_utf8_lossy(&out.stderr);
    let tokens = rlvr_trainer::data::ARITHMETIC_VOCAB;
    assert!(err.contains(&format!("has {tokens} tokens, the model's vocab_size is 40")), "{err}");
}
