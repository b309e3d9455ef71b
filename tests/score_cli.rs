//! `rlvr score` through the built binary: its log-probs are `DeepseekV32::token_logprobs` of each
//! sequence alone and transformers' reference, right-padded batching changes nothing, and a bad
//! line is named.

mod common;

use common::{fixture, rlvr};
use rlvr_model::checkpoint::load_varstore;
use rlvr_model::{AttentionMode, DeepseekV32, ModelConfig};
use serde_json::Value;
use std::path::Path;
use tch::{nn::VarStore, Device, Tensor};

const TOL: f64 = 1e-4;

/// Reference tensors of a fixture by name.
fn reference(name: &str) -> Vec<(String, Tensor)> {
    Tensor::read_safetensors(fixture(name).join("reference.safetensors")).unwrap()
}

fn get<'a>(r: &'a [(String, Tensor)], key: &str) -> &'a Tensor {
    &r.iter().find(|(k, _)| k == key).unwrap_or_else(|| panic!("{key} missing")).1
}

/// The fixture's reference sequences at their own lengths.
fn sequences(r: &[(String, Tensor)]) -> Vec<Vec<i64>> {
    let lengths = Vec::<i64>::try_from(get(r, "lengths")).unwrap();
    let tokens = get(r, "tokens");
    lengths
        .iter()
        .enumerate()
        .map(|(b, &n)| Vec::<i64>::try_from(tokens.get(b as i64).narrow(0, 0, n)).unwrap())
        .collect()
}

/// Runs `rlvr score` on `seqs` with `extra` flags: one log-prob list per sequence.
fn score(model: &Path, seqs: &[Vec<i64>], extra: &[&str]) -> Vec<Vec<f64>> {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("seqs.jsonl");
    let body: String = seqs.iter().map(|s| format!("{}\n", serde_json::json!({ "tokens": s }))).collect();
    std::fs::write(&input, body).unwrap();
    let args = ["score", "--model", model.to_str().unwrap(), "--input", input.to_str().unwrap()];
    let out = rlvr(&[&args[..], extra].concat());
    assert!(out.status.success(), "rlvr score failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["logprobs"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
        })
        .collect()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

fn load(dir: &Path) -> DeepseekV32 {
    let cfg = ModelConfig::from_path(dir).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let model = DeepseekV32::new(&vs.root(), &cfg).unwrap();
    load_varstore(dir, &cfg, &vs, true).unwrap();
    model
}

#[test]
fn score_equals_the_library_and_the_transformers_reference() {
    for name in ["tiny-dense", "tiny-sparse", "tiny-sharded"] {
        let r = reference(name);
        let seqs = sequences(&r);
        let model = load(&fixture(name));
        let scored = score(&fixture(name), &seqs, &[]);
        assert_eq!(scored.len(), seqs.len());
        let golden = get(&r, "logprobs");
        for (b, (seq, ours)) in seqs.iter().zip(&scored).enumerate() {
            let ids = Tensor::from_slice(seq).unsqueeze(0); // (1, T)
            let lib = tch::no_grad(|| model.token_logprobs(&ids, AttentionMode::Sparse)).get(0); // (T−1)
            let lib = Vec::<f64>::try_from(lib.to_kind(tch::Kind::Double)).unwrap();
            let d = max_diff(ours, &lib);
            assert!(d <= TOL, "{name} seq {b}: score vs token_logprobs {d:e}");
            let want = golden.get(b as i64).narrow(0, 0, seq.len() as i64 - 1).to_kind(tch::Kind::Double);
            let d = max_diff(ours, &Vec::<f64>::try_from(want).unwrap());
            assert!(d <= TOL, "{name} seq {b}: score vs transformers {d:e}");
        }
    }
}

#[test]
fn batching_does_not_change_results() {
    let name = "tiny-sparse";
    let mut seqs = sequences(&reference(name));
    // Lengths 48, 64, 40 plus short ones, so batches mix lengths and pad.
    seqs.push(seqs[1][..20].to_vec());
    seqs.push(vec![7]);
    seqs.push(seqs[0][5..].to_vec());
    let alone = score(&fixture(name), &seqs, &["--batch-size", "1"]);
    assert!(alone[4].is_empty(), "a one-token sequence has no log-probs");
    for size in ["2", "8"] {
        for mode in ["sparse", "dense"] {
            let batched = score(&fixture(name), &seqs, &["--batch-size", size, "--mode", mode]);
            let one = score(&fixture(name), &seqs, &["--batch-size", "1", "--mode", mode]);
            for (i, (a, b)) in one.iter().zip(&batched).enumerate() {
                let d = max_diff(a, b);
                assert!(d <= 1e-5, "batch size {size}, {mode}, seq {i}: {d:e}");
            }
        }
    }
    // Sparse selection really happens in these lengths, so the modes differ.
    let dense = score(&fixture(name), &seqs, &["--mode", "dense"]);
    assert!(max_diff(&alone[1], &dense[1]) > 0.1);
}

#[test]
fn timing_reports_on_stderr_and_bad_lines_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("seqs.jsonl");
    std::fs::write(&input, "{\"tokens\": [3, 4, 5]}\n{\"tokens\": [3, 400]}\n").unwrap();
    let model = fixture("tiny-dense");
    let args = ["score", "--model", model.to_str().unwrap(), "--input", input.to_str().unwrap()];
    let out = rlvr(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2") && err.contains("400"), "{err}");
    std::fs::write(&input, "{\"tokens\": [3, 4, 5]}\n").unwrap();
    let out = rlvr(&[&args[..], &["--timing", "--repeat", "2"]].concat());
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let passes: Vec<&str> = err.lines().filter(|l| l.starts_with("timing pass=")).collect();
    assert_eq!(passes.len(), 2, "{err}");
    assert!(passes[1].contains("tokens=3") && passes[1].contains("tokens_per_s="), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1, "output written once");
}
