//! `[model] add_indexer`: a `deepseek_v3` model trained by the first stages of a run, turned into a
//! `deepseek_v32` one when the first stage that needs the lightning indexer begins.
//!
//! Checked against invariants: the conversion changes no V3 tensor and adds exactly the indexer
//! tensors (the dense LM loss before and after it is the same number); checkpoints before it are
//! V3 models and after it V3.2 models that transformers' `DeepseekV32ForCausalLM` loads with no
//! missing weights; a run stopped before or after the conversion and resumed ends bit for bit where
//! the uninterrupted run ends; recipes that cannot convert fail before any work.

mod common;

use common::{rlvr, root};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn s(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

fn assert_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
}

const RECIPE: &str = r#"[run]
name = "v3-to-v32"
seed = 2
device = "cpu"
threads = 1

[model]
preset = "tiny-v3"
mtp = true
add_indexer = { n_heads = 2, head_dim = 16, topk = 8 }

[model.config]
num_hidden_layers = 2
vocab_size = 32

[data]
source = "arithmetic"
min_digits = 1
max_digits = 1
held_out = 8

[[stages]]
kind = "pretrain"
steps = 4
batch_size = 4
seq_len = 32

[[stages]]
kind = "indexer_warmup"
steps = 4
batch_size = 4
seq_len = 32

[[stages]]
kind = "sparse_train"
steps = 2
batch_size = 4
seq_len = 32

[checkpoint]
every = 2
keep_last = 10

[logging]
plots = false
"#;

fn write_recipe(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("recipe.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn checkpoint(run: &Path, step: u64) -> PathBuf {
    run.join("checkpoints").join(format!("step_{step:06}"))
}

fn config(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

/// A checkpoint's tensors as raw bytes with their element counts, by name.
fn tensors(dir: &Path) -> BTreeMap<String, (Vec<u8>, usize)> {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(name, t)| {
            let n = t.shape().iter().product();
            (name, (t.data().to_vec(), n))
        })
        .collect()
}

#[test]
fn a_v3_run_gains_indexers_at_its_first_dsa_stage() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = write_recipe(tmp.path(), RECIPE);
    let run = tmp.path().join("run");
    let out = rlvr(&["train", s(&recipe), "--out", s(&run)]);
    assert_ok(&out, "the run");

    let report: Value = serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    let conv = &report["add_indexer"];
    assert_eq!(conv["before_stage"], "indexer_warmup");
    assert_eq!(conv["at_step"], 4);
    assert_eq!(conv["seed"], 2, "the seed defaults to the model's init seed (run.seed)");
    // The indexer plays no part in dense attention: the converted model's loss is the V3 one.
    let (v3, dense) = (conv["lm_loss_v3"].as_f64().unwrap(), conv["lm_loss_dense"].as_f64().unwrap());
    assert!(v3.is_finite() && v3 == dense, "V3 {v3} vs converted {dense}");
    for stage in ["pretrain", "indexer_warmup", "sparse_train"] {
        assert!(report.get(stage).is_some(), "stage {stage} ran: {report}");
    }

    // Before: a V3 checkpoint without indexers. After: V3.2, the same V3 tensors plus indexers.
    let before = checkpoint(&run, 4);
    let after = checkpoint(&run, 6);
    let (c3, c32) = (config(&before), config(&after));
    assert_eq!(c3["model_type"], "deepseek_v3");
    assert!(c3.get("index_n_heads").is_none(), "{c3}");
    assert_eq!(c32["model_type"], "deepseek_v32");
    assert_eq!(c32["architectures"], serde_json::json!(["DeepseekV32ForCausalLM"]));
    let index: Vec<&Value> = ["index_n_heads", "index_head_dim", "index_topk"].iter().map(|k| &c32[*k]).collect();
    assert_eq!(index, [&Value::from(2), &Value::from(16), &Value::from(8)]);
    let (t3, t32) = (tensors(&before), tensors(&after));
    assert!(!t3.keys().any(|n| n.contains(".indexer.")));
    let mut added = 0;
    for (name, (bytes, n)) in &t32 {
        match t3.get(name) {
            // The warm-up trains only the indexers: everything else is the V3 model's, bit for bit.
            Some((old, _)) => assert!(old == bytes, "{name} changed in the conversion or the warm-up"),
            None => {
                assert!(name.contains(".indexer."), "{name} is new but not an indexer tensor");
                added += n;
            }
        }
    }
    assert_eq!(t3.len() + t32.keys().filter(|n| n.contains(".indexer.")).count(), t32.len());
    // Indexers on the 2 main layers and the MTP layer.
    for layer in 0..3 {
        assert!(t32.contains_key(&format!("model.layers.{layer}.self_attn.indexer.wk.weight")), "layer {layer}");
    }
    assert_eq!(conv["indexer_params"].as_u64().unwrap() as usize, added);

    // Stopped before the conversion (at the end of pretraining) or inside the converted stage, and
    // resumed: the same end, bit for bit.
    let end = std::fs::read(checkpoint(&run, 10).join("model.safetensors")).unwrap();
    for stop in ["4", "6"] {
        let split = tmp.path().join(format!("split{stop}"));
        let first = rlvr(&["train", s(&recipe), "--out", s(&split), "--max-steps", stop]);
        assert_ok(&first, "the first part");
        let second = rlvr(&["train", s(&recipe), "--out", s(&split), "--resume"]);
        assert_ok(&second, "the resumed part");
        let resumed = std::fs::read(checkpoint(&split, 10).join("model.safetensors")).unwrap();
        assert!(resumed == end, "stopped at step {stop} and resumed: a different model");
        let report: Value = serde_json::from_str(&std::fs::read_to_string(split.join("report.json")).unwrap()).unwrap();
        assert_eq!(report["add_indexer"]["lm_loss_v3"].as_f64(), Some(v3), "stopped at {stop}");
    }

    // The converted run's checkpoint loads whole in transformers as a V3.2 model.
    let Some(python) = common::transformers_or_skip("the transformers check") else { return };
    let check = root().join("tests/fixtures/check_hf_load.py");
    let py = Command::new(python).arg(check).arg(checkpoint(&run, 10)).arg("1+2=3").output().unwrap();
    assert!(py.status.success(), "transformers could not load it:\n{}", String::from_utf8_lossy(&py.stderr));
    let got: Value = serde_json::from_str(String::from_utf8_lossy(&py.stdout).trim().lines().last().unwrap()).unwrap();
    assert_eq!(got["class"], "DeepseekV32ForCausalLM");
    assert_eq!(got["missing"], serde_json::json!([]), "weights transformers found missing");
}

#[test]
fn recipes_that_cannot_convert_fail_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        // Already a V3.2 model.
        (RECIPE.replace("preset = \"tiny-v3\"", "preset = \"tiny\""), "model.add_indexer", "indexers already"),
        // An indexer narrower than the rope part it reads.
        (RECIPE.replace("head_dim = 16", "head_dim = 4"), "model.add_indexer", "index_head_dim"),
        // A key the table does not have.
        (RECIPE.replace("topk = 8 }", "topk = 8, heads = 2 }"), "heads", "unknown field"),
        // A V3 model asked for a DSA stage, without add_indexer.
        (
            RECIPE.replace("add_indexer = { n_heads = 2, head_dim = 16, topk = 8 }\n", ""),
            "indexer_warmup",
            "deepseek_v3",
        ),
    ];
    for (i, (text, key, what)) in cases.iter().enumerate() {
        let dir = tmp.path().join(format!("case{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let recipe = write_recipe(&dir, text);
        let run = dir.join("run");
        let out = rlvr(&["train", s(&recipe), "--out", s(&run)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} ran");
        assert!(err.contains(key) && err.contains(what), "case {i}: expected `{key}` and `{what}` in:\n{err}");
        assert!(!run.join("checkpoints").exists(), "case {i}: no work before the error");
    }
}
