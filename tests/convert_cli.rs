//! `rlvr convert --add-indexer` through the built binary, and the CLI's attention-mode rules for
//! models without indexers (`rlvr score` on a deepseek_v3 fixture).

use rlvr_model::checkpoint::load_varstore;
use rlvr_model::{DeepseekV32, ModelConfig};
use std::path::{Path, PathBuf};
use std::process::Output;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn rlvr(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_rlvr")).args(args).output().unwrap()
}

#[test]
fn convert_writes_a_v32_checkpoint_that_loads_strictly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("v32");
    let src = fixture("tiny-v3");
    let args = ["convert", "--add-indexer", "--model", src.to_str().unwrap(), "--out", out.to_str().unwrap()];
    let small = ["--index-n-heads", "2", "--index-head-dim", "32", "--index-topk", "8", "--seed", "5"];
    let run = rlvr(&[&args[..], &small[..]].concat());
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let cfg = ModelConfig::from_path(&out).unwrap();
    assert!(cfg.has_indexer());
    assert_eq!((cfg.index_n_heads, cfg.index_head_dim, cfg.index_topk), (2, 32, 8));
    assert!(out.join("generation_config.json").exists(), "side files are copied");
    assert!(!out.join("reference.safetensors").exists(), "other safetensors files are not");
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _model = DeepseekV32::new(&vs.root(), &cfg).unwrap();
    load_varstore(&out, &cfg, &vs, true).unwrap();
    // The same seed gives the same bytes; converting again into an occupied directory is refused.
    let again = rlvr(&[&args[..], &small[..]].concat());
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
    let out2 = tmp.path().join("v32b");
    let args2 = ["convert", "--add-indexer", "--model", src.to_str().unwrap(), "--out", out2.to_str().unwrap()];
    assert!(rlvr(&[&args2[..], &small[..]].concat()).status.success());
    let bytes = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(bytes(&out) == bytes(&out2));
}

#[test]
fn convert_refuses_models_it_cannot_convert() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x");
    for (name, field) in [("tiny-v2", "model_type"), ("tiny-v3-noq", "q_lora_rank")] {
        let src = fixture(name);
        let run = rlvr(&["convert", "--add-indexer", "--model", src.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success() && err.contains("config.json") && err.contains(field), "{name}: {err}");
        assert!(!out.exists(), "nothing written");
    }
    let src = fixture("tiny-v3");
    let run = rlvr(&["convert", "--model", src.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(!run.status.success() && String::from_utf8_lossy(&run.stderr).contains("--add-indexer"));
}

#[test]
fn sparse_mode_on_a_model_without_indexers_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("seqs.jsonl");
    std::fs::write(&input, "{\"tokens\": [5, 6, 7, 8]}\n").unwrap();
    let model = fixture("tiny-v3");
    let base = ["score", "--model", model.to_str().unwrap(), "--input", input.to_str().unwrap()];
    let sparse = rlvr(&[&base[..], &["--mode", "sparse"]].concat());
    let err = String::from_utf8_lossy(&sparse.stderr);
    assert!(!sparse.status.success(), "{err}");
    assert!(err.contains("config.json") && err.contains("model_type") && err.contains("sparse attention"), "{err}");
    // Without --mode the model's own attention (dense) is used.
    let default = rlvr(&base);
    assert!(default.status.success(), "{}", String::from_utf8_lossy(&default.stderr));
    assert!(String::from_utf8_lossy(&default.stdout).contains("logprobs"));
}
