//! `benches/gpu/run.sh --cpu`: the one-shot GPU check, dry-run at toy sizes on the CPU, so the
//! script a GPU session runs cannot rot. It must finish, and its results must hold what the GPU run
//! reports — with f32 parity against the fixtures' transformers log-probs within 1e-4.

mod common;

use common::root;
use serde_json::Value;
use std::process::Command;

#[test]
fn the_gpu_check_runs_on_the_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(root().join("benches/gpu/run.sh"))
        .arg("--cpu")
        .arg(tmp.path())
        .current_dir(root())
        .output()
        .expect("running benches/gpu/run.sh");
    assert!(out.status.success(), "benches/gpu/run.sh --cpu failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("results.json")).unwrap()).unwrap();
    let parity = results["parity"].as_array().unwrap();
    assert_eq!(parity.len(), 4, "two fixtures × f32, bf16");
    for p in parity.iter().filter(|p| p["dtype"] == "f32") {
        assert!(p["max_abs_logprob_diff"].as_f64().unwrap() <= 1e-4, "{p}");
    }
    for g in results["generation"].as_array().unwrap() {
        assert!(
            g["rlvr_tokens_per_s"].as_f64().unwrap() > 0.0 && g["transformers_tokens_per_s"].as_f64().unwrap() > 0.0
        );
    }
    assert!(results["training"]["tokens_per_s"].as_f64().unwrap() > 0.0);
    let md = std::fs::read_to_string(tmp.path().join("results.md")).unwrap();
    assert!(md.contains("| parity tiny-sparse f32 |"), "{md}");
}
