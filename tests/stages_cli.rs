//! What each training stage may change, checked on real runs of `recipes/smoke.toml` stopped at
//! stage boundaries with `--max-steps` (pretrain ends at step 4, indexer_warmup at 6,
//! sparse_train at 8, sft at 10; GRPO runs steps 11–14):
//!
//! - the dense indexer warm-up changes every indexer tensor (MTP's included) and nothing else,
//!   bit for bit;
//! - three GRPO steps (sparse attention, a verifier whose rewards vary within groups) change every
//!   tensor GRPO trains: everything but the MTP module and the router's balancing bias.

mod common;

use common::rlvr;
use std::collections::BTreeMap;
use std::path::Path;
use tch::Tensor;

fn weights(dir: &Path) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(dir.join("model.safetensors")).expect("model.safetensors").into_iter().collect()
}

fn train(out: &Path, extra: &[&str]) {
    let out_s = out.to_str().unwrap();
    let mut args = vec!["train", "recipes/smoke.toml", "--out", out_s, "--resume"];
    args.extend_from_slice(extra);
    let o = rlvr(&args);
    assert!(o.status.success(), "rlvr train failed: {}", String::from_utf8_lossy(&o.stderr));
}

fn is_indexer(name: &str) -> bool {
    [".indexer.wq_b.", ".indexer.wk.", ".indexer.k_norm.", ".indexer.weights_proj."].iter().any(|p| name.contains(p))
}

#[test]
fn warmup_changes_only_indexer_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    train(&run, &["--max-steps", "4"]);
    let before = weights(&run.join("checkpoints/step_000004"));
    train(&run, &["--max-steps", "6"]);
    let after = weights(&run.join("checkpoints/step_000006"));
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>());
    let mut indexers = 0;
    for (name, b) in &before {
        let a = &after[name];
        if is_indexer(name) {
            indexers += 1;
            assert!(!a.equal(b), "warm-up left indexer tensor {name} unchanged");
        } else {
            assert!(a.equal(b), "warm-up changed non-indexer tensor {name}");
        }
    }
    // 2 main layers + the MTP layer, 5 tensors each (wq_b, wk, k_norm weight/bias, weights_proj).
    assert_eq!(indexers, 15);
}

#[test]
fn three_grpo_steps_change_every_trainable_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    // Reward: the share of digits `1` in the completion, so groups almost never tie.
    let script = tmp.path().join("ones.py");
    std::fs::write(
        &script,
        "import sys, json\nfor line in sys.stdin:\n    r = json.loads(line)\n    c = r['completion']\n    \
         x = c.count('1') / max(1, len(c))\n    print(json.dumps({'id': r['id'], 'reward': x, 'outcome': \
         'Correct' if x > 0 else 'Incorrect', 'detail': {}}), flush=True)\n",
    )
    .unwrap();
    // Enough samples per step (8 prompts × 4) that every routed expert sees tokens.
    let verifier = [
        "--set".to_string(),
        "rollout.prompts_per_step=8".to_string(),
        "--set".to_string(),
        "verifier.kind=\"external\"".to_string(),
        "--set".to_string(),
        format!("verifier.command=\"python3 {}\"", script.display()),
    ];
    let verifier: Vec<&str> = verifier.iter().map(String::as_str).collect();
    let mut args = vec!["--max-steps", "10"];
    args.extend_from_slice(&verifier);
    train(&run, &args);
    let before = weights(&run.join("checkpoints/step_000010"));
    let mut args = vec!["--max-steps", "13"];
    args.extend_from_slice(&verifier);
    train(&run, &args);
    let after = weights(&run.join("checkpoints/step_000013"));
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let grpo: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["stage"] == "grpo")
        .collect();
    assert_eq!(grpo.len(), 3);
    for m in &grpo {
        assert!(m["reward_std"].as_f64().unwrap() > 0.0, "rewards must vary for this test: {m}");
        assert!(m["loss"].as_f64().unwrap().is_finite());
    }
    // A routed expert that no sampled token was sent to gets no gradient, so AdamW leaves it be:
    // experts count as one unit (all three projections change, or none), and most must change.
    let mtp_layer = "model.layers.2.";
    let mut trained = 0;
    let mut experts: BTreeMap<String, Vec<bool>> = BTreeMap::new();
    for (name, b) in &before {
        let changed = !after[name].equal(b);
        if name.starts_with(mtp_layer) || name.ends_with("e_score_correction_bias") {
            assert!(!changed, "GRPO changed {name}, which it does not train");
        } else if let Some(at) = name.find(".mlp.experts.") {
            let end = name[at + 13..].find('.').map(|i| at + 13 + i).unwrap();
            experts.entry(name[..end].to_string()).or_default().push(changed);
        } else {
            trained += 1;
            assert!(changed, "three GRPO steps left trainable tensor {name} unchanged");
        }
    }
    assert!(trained > 30, "only {trained} trainable non-expert tensors");
    let moved = experts.values().filter(|c| c.iter().all(|&x| x)).count();
    for (expert, c) in &experts {
        assert!(c.iter().all(|&x| x) || c.iter().all(|&x| !x), "{expert}: only some projections changed");
    }
    assert!(moved * 4 >= experts.len() * 3, "only {moved} of {} routed experts changed", experts.len());
}
