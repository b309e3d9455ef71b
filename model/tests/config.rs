//! Config parsing: the shipped presets, both rope forms, and errors that name the field.

mod common;

use common::{fixture, preset};
use rlvr_model::config::{Rope, Yarn};
use rlvr_model::{ModelConfig, ModelError};

fn parse(text: &str) -> Result<ModelConfig, ModelError> {
    ModelConfig::from_json(text)
}

#[test]
fn v32_preset_is_the_published_config_in_hub_form() {
    let cfg = ModelConfig::from_path(&preset("deepseek-v3.2")).unwrap();
    assert_eq!(cfg.hidden_size, 7168);
    assert_eq!(cfg.num_hidden_layers, 61);
    assert_eq!(cfg.n_routed_experts, 256);
    assert_eq!((cfg.n_group, cfg.topk_group, cfg.num_experts_per_tok), (8, 4, 8));
    assert_eq!((cfg.index_n_heads, cfg.index_head_dim, cfg.index_topk), (64, 128, 2048));
    assert_eq!(cfg.qk_head_dim(), 192);
    assert_eq!(cfg.eos_ids(), vec![1]);
    assert!(cfg.rope_parameters.is_none() && cfg.rope_scaling.is_some());
    let rope = cfg.rope().unwrap();
    let yarn = Yarn {
        factor: 40.0,
        original_max_position_embeddings: 4096,
        beta_fast: 32.0,
        beta_slow: 1.0,
        mscale: 1.0,
        mscale_all_dim: 1.0,
    };
    assert_eq!(rope, Rope { theta: 10_000.0, yarn: Some(yarn) });
    // Layers 0..3 dense, 3..61 MoE, MTP layer 61 MoE.
    assert!(!cfg.is_moe_layer(2) && cfg.is_moe_layer(3) && cfg.is_moe_layer(61));
    let q = cfg.quantization_config.as_ref().unwrap();
    assert_eq!(q.quant_method, "fp8");
    assert_eq!(q.weight_block_size.as_deref(), Some(&[128, 128][..]));
}

#[test]
fn every_shipped_preset_parses() {
    for name in ["deepseek-v3.2", "small", "tiny"] {
        let cfg = ModelConfig::from_path(&preset(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(cfg.rope().is_ok(), "{name}");
    }
    // tiny and small use the transformers-5 form.
    let tiny = ModelConfig::from_path(&preset("tiny")).unwrap();
    assert!(tiny.rope_parameters.is_some() && tiny.rope_scaling.is_none());
    assert_eq!(tiny.rope().unwrap().yarn.unwrap().factor, 4.0);
}

#[test]
fn hub_form_and_transformers5_form_give_the_same_rope() {
    // The same architecture written by transformers 5.23 (rope_parameters) and in hub form.
    let t5 = ModelConfig::from_path(&fixture("tiny-sparse/config.json")).unwrap();
    let hub = ModelConfig::from_path(&fixture("tiny-sparse/hub-config.json")).unwrap();
    assert!(t5.rope_parameters.is_some() && hub.rope_scaling.is_some());
    assert_eq!(t5.rope().unwrap(), hub.rope().unwrap());
    assert_eq!(t5.rope().unwrap().yarn.unwrap().original_max_position_embeddings, 1024);
    for i in 0..3 {
        assert_eq!(t5.is_moe_layer(i), hub.is_moe_layer(i), "layer {i}");
    }
}

#[test]
fn default_rope_without_scaling() {
    let base = std::fs::read_to_string(fixture("tiny-dense/config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&base).unwrap();
    v["rope_parameters"] = serde_json::json!({"rope_type": "default", "rope_theta": 500.0});
    assert_eq!(parse(&v.to_string()).unwrap().rope().unwrap(), Rope { theta: 500.0, yarn: None });
    // Hub form with no rope_scaling at all.
    let obj = v.as_object_mut().unwrap();
    obj.remove("rope_parameters");
    obj.insert("rope_theta".into(), 2000.0.into());
    assert_eq!(parse(&v.to_string()).unwrap().rope().unwrap(), Rope { theta: 2000.0, yarn: None });
}

fn tiny_with(edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> String {
    let text = std::fs::read_to_string(preset("tiny").join("config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(v.as_object_mut().unwrap());
    v.to_string()
}

#[test]
fn bad_configs_name_the_field() {
    let cases: Vec<(String, &str)> = vec![
        (tiny_with(|o| drop(o.insert("n_group".into(), 3.into()))), "n_group"),
        (tiny_with(|o| drop(o.insert("topk_group".into(), 5.into()))), "topk_group"),
        (tiny_with(|o| drop(o.insert("num_experts_per_tok".into(), 9.into()))), "num_experts_per_tok"),
        (tiny_with(|o| drop(o.insert("qk_rope_head_dim".into(), 7.into()))), "qk_rope_head_dim"),
        (tiny_with(|o| drop(o.insert("num_key_value_heads".into(), 2.into()))), "num_key_value_heads"),
        (tiny_with(|o| drop(o.insert("q_lora_rank".into(), serde_json::Value::Null))), "q_lora_rank"),
        (tiny_with(|o| drop(o.insert("rope_scaling".into(), serde_json::json!({"type": "yarn"})))), "rope_parameters"),
        (
            tiny_with(|o| {
                drop(o.insert("rope_parameters".into(), serde_json::json!({"rope_type": "llama3", "rope_theta": 1.0})))
            }),
            "llama3",
        ),
        (
            tiny_with(|o| drop(o.insert("mlp_layer_types".into(), serde_json::json!(["dense", "moe"])))),
            "mlp_layer_types",
        ),
        (tiny_with(|o| drop(o.remove("hidden_size"))), "hidden_size"),
        (tiny_with(|o| drop(o.insert("vocab_size".into(), "many".into()))), "vocab_size"),
    ];
    for (text, field) in cases {
        let err = parse(&text).expect_err(field).to_string();
        assert!(err.contains(field), "error for {field} does not name it: {err}");
    }
}

#[test]
fn file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, tiny_with(|o| drop(o.insert("n_group".into(), 3.into())))).unwrap();
    let err = ModelConfig::from_path(&path).unwrap_err().to_string();
    assert!(err.contains("config.json") && err.contains("n_group"), "{err}");
    let missing = ModelConfig::from_path(&dir.path().join("nope")).unwrap_err().to_string();
    assert!(missing.contains("nope"), "{missing}");
}

#[test]
fn transformers5_layer_types_override_the_hub_rule() {
    // moe_layer_freq would make layer 2 dense; the per-layer list says MoE.
    let text = tiny_with(|o| {
        o.insert("moe_layer_freq".into(), 2.into());
        o.insert("mlp_layer_types".into(), serde_json::json!(["dense", "sparse", "sparse"]));
    });
    let cfg = parse(&text).unwrap();
    assert!(!cfg.is_moe_layer(0) && cfg.is_moe_layer(1) && cfg.is_moe_layer(2));
    // Beyond the list (the MTP layer) the hub rule applies: 3 % 2 != 0, so dense.
    assert!(!cfg.is_moe_layer(3));
}
