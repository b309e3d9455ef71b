//! DeepSeek-V3 → V3.2 conversion (`rlvr_model::convert`, `rlvr convert --add-indexer`): the
//! converted checkpoint loads strictly as V3.2, its dense logits are exactly the V3 model's, its
//! indexers start as transformers initialises them, sparse training runs on it, and transformers'
//! `DeepseekV32ForCausalLM` loads it with no key problems and the V3 model's logits
//! (tests/fixtures/check_convert.py).

mod common;

use common::{fixture, root};
use rlvr_model::checkpoint::{load_varstore, read_all, save, SaveOptions};
use rlvr_model::config::Family;
use rlvr_model::convert::{add_indexer, v32_config, IndexerSpec};
use rlvr_model::{AttentionMode, DeepseekV32, ForwardOptions, IndexerStage, ModelConfig};
use std::path::Path;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// Converts `tiny-v3` with `spec` into `out`.
fn convert(out: &Path, spec: &IndexerSpec, seed: u64) -> ModelConfig {
    let src = fixture("tiny-v3");
    let v3 = ModelConfig::from_path(&src).unwrap();
    let tensors = read_all(&src, &v3, Kind::Float, Device::Cpu).unwrap().into_iter().collect();
    let (v32, tensors) = add_indexer(&v3, tensors, spec, seed).unwrap();
    save(out, &tensors, &v32, &SaveOptions::default()).unwrap();
    v32
}

fn model(dir: &Path) -> (ModelConfig, VarStore, DeepseekV32) {
    tch::set_num_threads(2);
    let cfg = ModelConfig::from_path(dir).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let m = DeepseekV32::new(&vs.root(), &cfg).unwrap();
    load_varstore(dir, &cfg, &vs, true).unwrap();
    (cfg, vs, m)
}

fn tokens() -> Tensor {
    let r: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(fixture("tiny-v3").join("reference.safetensors")).unwrap().into_iter().collect();
    r["tokens"].shallow_clone() // (3, 48), right-padded
}

#[test]
fn converted_model_is_v32_with_the_v3_dense_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("v32");
    let spec = IndexerSpec { n_heads: 4, head_dim: 32, topk: 8 };
    let cfg = convert(&out, &spec, 7);
    assert_eq!(cfg.family(), Family::V32);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["model_type"], "deepseek_v32");
    assert_eq!(saved["architectures"], serde_json::json!(["DeepseekV32ForCausalLM"]));
    assert_eq!((saved["index_n_heads"].as_u64(), saved["index_topk"].as_u64()), (Some(4), Some(8)));

    let (_, vs, v32) = model(&out);
    let (_, v3_vs, v3) = model(&fixture("tiny-v3"));
    // Every V3 tensor carried over bit for bit; the rest are the new indexers.
    let (new, old) = (vs.variables(), v3_vs.variables());
    for (name, t) in &old {
        assert!(t.equal(&new[name]), "{name} changed");
    }
    assert!(new.keys().filter(|n| !old.contains_key(*n)).all(|n| n.contains(".self_attn.indexer.")));
    assert_eq!(new.len() - old.len(), 5 * cfg.num_hidden_layers);
    // Initialised as transformers' _init_weights: LayerNorm 1 / 0, linear weights N(0, std²).
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}.self_attn.indexer");
        assert!(bool::try_from(new[&format!("{p}.k_norm.weight")].eq(1.0).all()).unwrap());
        assert!(bool::try_from(new[&format!("{p}.k_norm.bias")].eq(0.0).all()).unwrap());
        let wq = &new[&format!("{p}.wq_b.weight")]; // 128 × 32 draws
        let (mean, std) = (wq.mean(Kind::Double).double_value(&[]), wq.std(true).double_value(&[]));
        let want = cfg.initializer_range;
        assert!(mean.abs() < 0.1 * want && (std - want).abs() < 0.1 * want, "{p}: {mean} {std}");
    }
    // Dense attention never reads the indexer: the same logits, exactly.
    let t = tokens();
    tch::no_grad(|| {
        let a = v32.forward(&t, AttentionMode::Dense);
        let b = v3.forward(&t, AttentionMode::Dense);
        assert!(a.equal(&b), "dense logits differ by {}", (a - b).abs().max().double_value(&[]));
        // Sparse attention now runs: 48 keys > index_topk = 8, so it selects and changes things.
        let (sparse, trace) = v32.forward_traced(&t, AttentionMode::Sparse);
        assert!(trace.selections.iter().all(Option::is_some));
        assert!((sparse - v32.forward(&t, AttentionMode::Dense)).abs().max().double_value(&[]) > 1e-3);
    });
    // ... and so does the DSA training forward: the sparse stage's indexer loss reaches the indexers.
    let out = v32.run(&t, ForwardOptions::indexer_training(IndexerStage::Sparse));
    let loss = out.indexer.as_ref().unwrap().total(None) + out.lm_loss(&t);
    assert!(loss.double_value(&[]).is_finite());
    loss.backward();
    let g = new["model.layers.1.self_attn.indexer.wq_b.weight"].grad();
    assert!(g.defined() && g.abs().sum(Kind::Double).double_value(&[]) > 0.0);
}

#[test]
fn conversion_refuses_what_it_cannot_convert() {
    let spec = IndexerSpec::default();
    for (name, field) in [("tiny-v3-noq", "q_lora_rank"), ("tiny-v2", "model_type"), ("tiny-sparse", "model_type")] {
        let cfg = ModelConfig::from_path(&fixture(name)).unwrap();
        let err = v32_config(&cfg, &spec).unwrap_err().to_string();
        assert!(err.contains(field), "{name}: {err}");
    }
    // An indexer narrower than the rope part is refused by the V3.2 config rules.
    let cfg = ModelConfig::from_path(&fixture("tiny-v3")).unwrap();
    let err = v32_config(&cfg, &IndexerSpec { n_heads: 2, head_dim: 8, topk: 4 }).unwrap_err().to_string();
    assert!(err.contains("index_head_dim"), "{err}");
}

/// The workspace's Python, when it can import transformers (else why not, for the skip message).
fn python_with_transformers() -> Result<std::path::PathBuf, String> {
    let python = root().join(".venv/bin/python");
    let probe = std::process::Command::new(&python).args(["-c", "import transformers, safetensors"]).output();
    match probe {
        Ok(out) if out.status.success() => Ok(python),
        Ok(out) => Err(format!(
            "{} cannot import transformers: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("{}: {e}", python.display())),
    }
}

/// transformers' `DeepseekV32ForCausalLM` loads the converted checkpoint with no missing or
/// unexpected keys and computes the V3 model's logits. Skipped, saying why, only when transformers
/// is unavailable and `RLVR_REQUIRE_TRANSFORMERS` is unset.
#[test]
fn transformers_loads_the_converted_checkpoint() {
    let python = match python_with_transformers() {
        Ok(p) => p,
        Err(why) if std::env::var_os("RLVR_REQUIRE_TRANSFORMERS").is_some() => panic!("{why}"),
        Err(why) => {
            eprintln!("skipped transformers_loads_the_converted_checkpoint: {why}");
            return;
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("v32");
    // index_topk ≥ every reference length: DSA selects every key, so V3.2 must equal V3.
    convert(&out, &IndexerSpec { n_heads: 4, head_dim: 32, topk: 64 }, 3);
    let script = root().join("tests/fixtures/check_convert.py");
    let run = std::process::Command::new(python)
        .arg(script)
        .arg(fixture("tiny-v3"))
        .arg(&out)
        .env("OMP_NUM_THREADS", "1")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let summary: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    eprintln!("check_convert.py: {summary}");
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(summary["loading_info"], serde_json::json!({}));
    assert!(summary["max_logit_diff_v32_vs_v3"].as_f64().unwrap() <= 1e-5, "{summary}");
}
