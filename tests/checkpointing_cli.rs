//! `run.activation_checkpointing = "layer"` end to end: a short run through every training stage
//! kind (pretrain with MTP, the DSA warm-up and sparse stage, SFT, GRPO with sparse attention,
//! keep routing and keep sampling mask) ends at the plain run's loss curve.
//!
//! The gradients agree to float rounding (≤ 4e-6 of each tensor's largest entry,
//! trainer/tests/recompute.rs), so the curves may part in the last digits after a few AdamW
//! steps (measured: the pretrain steps equal, the later figures within 4e-5 relative, the indexer
//! KL — ~4e-4, a small difference of two sums — within 6e-8 absolute). The bound per logged
//! figure is 1e-4 relative, 1e-7 absolute below 1e-3: far below any real difference (one step at
//! lr 1e-3 moves the pretrain loss by ~1e-2).

mod common;

use common::{rlvr, TINY_ARITHMETIC};
use serde_json::Value;
use std::fs;
use std::path::Path;

fn recipe(dir: &Path) -> std::path::PathBuf {
    let text = format!(
        r#"[run]
name = "ckpt"
seed = 0
device = "cpu"

{}
[[stages]]
kind = "pretrain"
steps = 3
batch_size = 4
seq_len = 32

[[stages]]
kind = "indexer_warmup"
steps = 2
batch_size = 2
seq_len = 32

[[stages]]
kind = "sparse_train"
steps = 2
batch_size = 2
seq_len = 32

[[stages]]
kind = "sft"
steps = 2
batch_size = 4

[[stages]]
kind = "grpo"
steps = 3

[rollout]
group_size = 4
prompts_per_step = 2
max_tokens = 8
top_p = 0.95
attention = "sparse"

[verifier]
kind = "math"

[optimizer]
lr = 1e-3

[checkpoint]
every = 0

[logging]
plots = false
"#,
        // The tiny model with its MTP module trained.
        TINY_ARITHMETIC.replacen("preset = \"tiny\"\n", "preset = \"tiny\"\nmtp = true\n", 1)
    );
    let path = dir.join("ckpt.toml");
    fs::write(&path, text).unwrap();
    path
}

/// (stage, step, figures) of each line of metrics.jsonl.
fn curve(run: &Path) -> Vec<(String, u64, serde_json::Map<String, Value>)> {
    fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| {
            let stage = v["stage"].as_str().unwrap().to_string();
            (stage, v["step"].as_u64().unwrap(), v.as_object().unwrap().clone())
        })
        .collect()
}

#[test]
fn layer_checkpointing_ends_at_the_plain_loss_curve() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = recipe(tmp.path());
    let run = |name: &str, extra: &[&str]| {
        let out = tmp.path().join(name);
        let mut args = vec!["train", recipe.to_str().unwrap(), "--out", out.to_str().unwrap()];
        args.extend(extra);
        let o = rlvr(&args);
        assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
        curve(&out)
    };
    let plain = run("plain", &[]);
    let layer = run("layer", &["--set", "run.activation_checkpointing=\"layer\""]);
    assert_eq!(plain.len(), 12, "3 + 2 + 2 + 2 + 3 steps");
    assert_eq!(plain.len(), layer.len());
    let stages: Vec<&str> = plain.iter().map(|(s, _, _)| s.as_str()).collect();
    for kind in ["pretrain", "indexer_warmup", "sparse_train", "sft", "grpo"] {
        assert!(stages.contains(&kind), "no {kind} step logged: {stages:?}");
    }
    for ((stage, step, a), (_, _, b)) in plain.iter().zip(&layer) {
        for key in ["loss", "lm_loss", "mtp_loss", "indexer_kl", "recall", "kl", "reward", "entropy", "grad_norm"] {
            let (Some(x), Some(y)) = (a.get(key).and_then(Value::as_f64), b.get(key).and_then(Value::as_f64)) else {
                assert_eq!(
                    a.contains_key(key),
                    b.contains_key(key),
                    "{stage} step {step}: {key} logged in one run only"
                );
                continue;
            };
            assert!(
                (x - y).abs() <= 1e-4 * x.abs().max(1e-3),
                "{stage} step {step}: {key} {x} plain, {y} checkpointed"
            );
        }
    }
}
