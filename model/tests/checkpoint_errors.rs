//! Broken or mismatched checkpoints: every failure names the tensor and the file, several problems
//! come back in one error, and nothing panics.

mod ckpt_support;
mod common;

use ckpt_support::{copy_dir, raw_checkpoint, read_raw, spec_vars, Raw};
use common::fixture;
use rlvr_model::checkpoint::{load, load_varstore};
use rlvr_model::ModelConfig;
use safetensors::Dtype;
use std::collections::BTreeMap;
use tch::Kind;

/// Loads `dir` strictly into a spec VarStore of tiny-sparse's config; returns the error text.
fn load_err(dir: &std::path::Path) -> String {
    let cfg = ModelConfig::from_path(&fixture("tiny-sparse")).unwrap();
    let vs = spec_vars(&cfg, Kind::Float, false);
    let err = load_varstore(dir, &cfg, &vs, true).unwrap_err().to_string();
    // Nothing was copied: the variables are still zero.
    let untouched = vs.variables().values().all(|t| t.abs().sum(Kind::Double).double_value(&[]) == 0.0);
    assert!(untouched, "a failed load must not copy anything");
    err
}

fn sparse_raw() -> BTreeMap<String, Raw> {
    read_raw(&fixture("tiny-sparse/model.safetensors"))
}

fn assert_names(err: &str, needles: &[&str]) {
    for needle in needles {
        assert!(err.contains(needle), "`{needle}` not in:\n{err}");
    }
}

#[test]
fn truncated_file_is_named() {
    let tmp = copy_dir(&fixture("tiny-sparse"));
    let file = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 4]).unwrap();
    assert_names(&load_err(tmp.path()), &["model.safetensors"]);
}

#[test]
fn wrong_shape_names_tensor_file_and_both_shapes() {
    let mut raw = sparse_raw();
    let t = raw.get_mut("model.layers.1.self_attn.o_proj.weight").unwrap();
    t.shape = vec![t.shape[1], t.shape[0]]; // transposed: same bytes, wrong shape
    let tmp = raw_checkpoint(&fixture("tiny-sparse"), &raw);
    let err = load_err(tmp.path());
    assert_names(
        &err,
        &["mis-shaped `model.layers.1.self_attn.o_proj.weight`", "model.safetensors", "[64, 48]", "[48, 64]"],
    );
}

#[test]
fn missing_tensor_fails_strict_and_is_reported_otherwise() {
    let mut raw = sparse_raw();
    raw.remove("model.layers.2.mlp.experts.7.up_proj.weight");
    let tmp = raw_checkpoint(&fixture("tiny-sparse"), &raw);
    assert_names(&load_err(tmp.path()), &["missing `model.layers.2.mlp.experts.7.up_proj.weight`", "in no file"]);
    let cfg = ModelConfig::from_path(tmp.path()).unwrap();
    let vs = spec_vars(&cfg, Kind::Float, false);
    let report = load_varstore(tmp.path(), &cfg, &vs, false).unwrap();
    assert_eq!(report.missing.len(), 1);
    assert_eq!(report.loaded, vs.variables().len() - 1);
}

#[test]
fn unexpected_tensor_is_named_with_its_file() {
    let mut raw = sparse_raw();
    let extra = raw["model.norm.weight"].clone();
    raw.insert("model.final_norm.weight".into(), extra);
    let tmp = raw_checkpoint(&fixture("tiny-sparse"), &raw);
    let err = load_err(tmp.path());
    assert_names(&err, &["unexpected `model.final_norm.weight` in", "model.safetensors"]);
}

#[test]
fn unknown_dtypes_are_named() {
    let mut raw = sparse_raw();
    let norm = raw.get_mut("model.norm.weight").unwrap();
    norm.dtype = Dtype::I64; // a well-formed I64 tensor of the right shape
    norm.bytes = norm.bytes.repeat(2);
    let e5m2 = raw.get_mut("model.layers.0.mlp.up_proj.weight").unwrap();
    let n = e5m2.bytes.len() / 4;
    e5m2.bytes.truncate(n);
    e5m2.dtype = Dtype::F8_E5M2;
    let tmp = raw_checkpoint(&fixture("tiny-sparse"), &raw);
    let err = load_err(tmp.path());
    assert_names(
        &err,
        &["`model.norm.weight` in", "has dtype I64", "`model.layers.0.mlp.up_proj.weight` in", "has dtype F8_E5M2"],
    );
}

#[test]
fn index_naming_a_missing_shard_names_shard_and_tensors() {
    let tmp = copy_dir(&fixture("tiny-sharded"));
    std::fs::remove_file(tmp.path().join("model-00003-of-00003.safetensors")).unwrap();
    let err = load_err(tmp.path());
    assert_names(
        &err,
        &["model.safetensors.index.json", "model-00003-of-00003.safetensors", "does not exist", "`model."],
    );
}

#[test]
fn fp8_without_or_with_a_bad_scale_is_named() {
    let dir = fixture("tiny-fp8");
    let cfg = ModelConfig::from_path(&dir).unwrap();
    let mut raw = read_raw(&dir.join("model.safetensors"));
    raw.remove("model.layers.0.self_attn.o_proj.weight_scale_inv");
    let scale = raw.get_mut("model.layers.1.mlp.experts.0.gate_proj.weight_scale_inv").unwrap();
    scale.shape = vec![scale.shape.iter().product()]; // flattened grid
    let tmp = raw_checkpoint(&dir, &raw);
    let vs = spec_vars(&cfg, Kind::Float, false);
    let err = load_varstore(tmp.path(), &cfg, &vs, true).unwrap_err().to_string();
    assert_names(
        &err,
        &[
            "FP8 `model.layers.0.self_attn.o_proj.weight` in",
            "has no `model.layers.0.self_attn.o_proj.weight_scale_inv`",
            "`model.layers.1.mlp.experts.0.gate_proj.weight_scale_inv` in",
            "expected a float of shape [1, 2]",
            "2 problems",
        ],
    );
}

#[test]
fn several_problems_come_back_in_one_error() {
    let mut raw = sparse_raw();
    raw.remove("lm_head.weight");
    raw.remove("model.layers.0.self_attn.kv_b_proj.weight");
    raw.insert("model.layers.0.self_attn.rotary.inv_freq".into(), raw["model.norm.weight"].clone());
    raw.get_mut("model.embed_tokens.weight").unwrap().shape = vec![96, 96];
    raw.get_mut("model.layers.1.mlp.gate.e_score_correction_bias").unwrap().dtype = Dtype::U32;
    let tmp = raw_checkpoint(&fixture("tiny-sparse"), &raw);
    let err = load_err(tmp.path());
    assert_names(
        &err,
        &[
            "5 problems",
            "missing `lm_head.weight`",
            "missing `model.layers.0.self_attn.kv_b_proj.weight`",
            "unexpected `model.layers.0.self_attn.rotary.inv_freq`",
            "mis-shaped `model.embed_tokens.weight`",
            "`model.layers.1.mlp.gate.e_score_correction_bias` in",
        ],
    );
    assert_eq!(err.lines().count(), 6, "{err}");
}

#[test]
fn garbage_file_and_model_without_weights_are_errors_not_panics() {
    let tmp = copy_dir(&fixture("tiny-sparse"));
    std::fs::write(tmp.path().join("model.safetensors"), b"\xff\xff\xff\xff\xff\xff\xff\xffnot a header").unwrap();
    assert_names(&load_err(tmp.path()), &["model.safetensors"]);
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    assert_names(&load_err(tmp.path()), &["neither model.safetensors nor model.safetensors.index.json"]);
    let cfg = ModelConfig::from_path(tmp.path()).unwrap();
    assert!(load(tmp.path(), &cfg, &Default::default(), true).is_err());
}
