//! Loading the golden fixtures (tests/fixtures, made by transformers 5.23.0) for the model tests.
//! Weights come in through tch's own safetensors reader; the crate's checkpoint loader has its own
//! tests.
#![allow(dead_code)]

use rlvr_model::{DeepseekV32, ModelConfig};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// A fixture's directory.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

/// The fixture's config, with its VarStore and model, weights loaded and upcast to f32
/// (tiny-fp8: its f32 `dequantized.safetensors`, which the reference was computed with).
pub fn load(name: &str) -> (ModelConfig, VarStore, DeepseekV32) {
    let cfg = ModelConfig::from_path(&fixture(name)).unwrap();
    load_with(name, cfg)
}

/// Like [`load`], with a config edited by the caller (same tensor shapes).
pub fn load_with(name: &str, cfg: ModelConfig) -> (ModelConfig, VarStore, DeepseekV32) {
    tch::set_num_threads(2);
    let dir = fixture(name);
    let mut vs = VarStore::new(Device::Cpu);
    let model = DeepseekV32::new(&vs.root(), &cfg).unwrap();
    let single = dir.join(if name == "tiny-fp8" { "dequantized.safetensors" } else { "model.safetensors" });
    if single.exists() {
        vs.load(&single).unwrap();
    } else {
        let index: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("model.safetensors.index.json")).unwrap()).unwrap();
        let shards: HashSet<&str> =
            index["weight_map"].as_object().unwrap().values().map(|v| v.as_str().unwrap()).collect();
        let mut loaded = 0;
        for shard in shards {
            let total = vs.variables().len();
            loaded += total - vs.load_partial(dir.join(shard)).unwrap().len();
        }
        assert_eq!(loaded, vs.variables().len(), "every variable is in exactly one shard");
    }
    // Loading adopts the file's dtype (BF16 in tiny-sharded); compute in f32.
    vs.float();
    (cfg, vs, model)
}

/// `reference.safetensors` of a fixture, by name.
pub fn reference(name: &str) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(fixture(name).join("reference.safetensors")).unwrap().into_iter().collect()
}

/// Max |a − b| as f64.
pub fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[])
}

/// Sequence b of the reference batch, unpadded: (1, L).
pub fn sequence(r: &HashMap<String, Tensor>, b: i64) -> Tensor {
    let len = r["lengths"].int64_value(&[b]);
    r["tokens"].get(b).narrow(0, 0, len).unsqueeze(0)
}
