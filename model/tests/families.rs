//! The DeepSeek-V3 and DeepSeek-V2 families against transformers 5.23.0's `DeepseekV3ForCausalLM`
//! and `DeepseekV2ForCausalLM` on tiny random checkpoints (tests/fixtures/make_families.py;
//! tests/fixtures/README.md, "Families"): log-probs and logits, greedy decoding (full forwards and
//! the cached decode path), router selections and weights; plus the config rules of the families
//! (which model a config is, sparse attention refused without indexers, V2 top-k methods).

mod support;

use rlvr_model::config::{Family, Scoring, TopkMethod};
use rlvr_model::model::logprobs_of;
use rlvr_model::{checkpoint, spec, AttentionMode, DeepseekV32, KvCache, ModelConfig};
use std::collections::{BTreeMap, BTreeSet};
use support::{fixture, load, max_abs, reference, sequence};
use tch::{Device, Kind, Tensor};

const TOL: f64 = 1e-4;
/// (fixture, family, q-LoRA, grouped routing, YaRN)
const FIXTURES: [(&str, Family, bool, bool, bool); 4] = [
    ("tiny-v3", Family::V3, true, true, true),
    ("tiny-v3-noq", Family::V3, false, false, false),
    ("tiny-v2-lite", Family::V2, false, false, true),
    ("tiny-v2", Family::V2, true, true, true),
];

#[test]
fn family_configs_parse_as_their_family() {
    for (name, family, q_lora, grouped, yarn) in FIXTURES {
        let cfg = ModelConfig::from_path(&fixture(name)).unwrap();
        assert_eq!(cfg.family(), family, "{name}");
        assert!(!cfg.has_indexer(), "{name}");
        assert_eq!(cfg.q_lora_rank.is_some(), q_lora, "{name}");
        assert_eq!(cfg.n_group > 1, grouped, "{name}");
        assert_eq!(cfg.rope().unwrap().yarn.is_some(), yarn, "{name}");
        let (scoring, bias) = if family == Family::V2 { (Scoring::Softmax, false) } else { (Scoring::Sigmoid, true) };
        assert_eq!((cfg.scoring(), cfg.router_has_bias()), (scoring, bias), "{name}");
    }
    let v2 = ModelConfig::from_path(&fixture("tiny-v2")).unwrap();
    assert_eq!(v2.topk_method(), TopkMethod::GroupLimitedGreedy);
    assert!(!v2.norm_topk_prob());
    assert_eq!(ModelConfig::from_path(&fixture("tiny-v2-lite")).unwrap().topk_method(), TopkMethod::Greedy);
}

#[test]
fn family_checkpoints_are_the_spec_and_load_strictly() {
    for (name, family, q_lora, _, _) in FIXTURES {
        let (cfg, vs, _) = load(name);
        let ours: BTreeMap<String, Vec<i64>> = vs.variables().into_iter().map(|(k, v)| (k, v.size())).collect();
        let listed: BTreeMap<String, Vec<i64>> = spec::main_tensors(&cfg)
            .into_iter()
            .map(|t| (t.name, t.shape.iter().map(|&d| d as i64).collect()))
            .collect();
        assert_eq!(ours, listed, "{name}");
        assert!(!ours.keys().any(|k| k.contains(".indexer.")), "{name}: no indexer");
        assert_eq!(ours.contains_key("model.layers.0.self_attn.q_proj.weight"), !q_lora, "{name}");
        assert_eq!(ours.contains_key("model.layers.0.self_attn.q_a_proj.weight"), q_lora, "{name}");
        let bias = ours.contains_key("model.layers.1.mlp.gate.e_score_correction_bias");
        assert_eq!(bias, family == Family::V3, "{name}");
        // The crate's own strict loader takes transformers' files as they are.
        let report = checkpoint::load_varstore(&fixture(name), &cfg, &vs, true).unwrap();
        assert_eq!(report.loaded, ours.len(), "{name}");
    }
}

#[test]
fn family_logprobs_and_logits_match_transformers() {
    for (name, ..) in FIXTURES {
        let (_, _, model) = load(name);
        let r = reference(name);
        let mut worst: f64 = 0.0;
        tch::no_grad(|| {
            for b in 0..r["lengths"].size()[0] {
                let seq = sequence(&r, b);
                let len = seq.size()[1];
                let logits = model.forward(&seq, AttentionMode::Dense);
                let lp = logprobs_of(&logits, &seq).squeeze_dim(0);
                worst = worst.max(max_abs(&lp, &r["logprobs"].get(b).narrow(0, 0, len - 1)));
                worst = worst.max(max_abs(&logits.get(0).get(len - 1), &r["last_logits"].get(b)));
                if b == 0 {
                    worst = worst.max(max_abs(&logits.get(0), &r["logits_seq0"]));
                }
            }
            // The right-padded batch gives every row its own log-probs.
            let lp = model.token_logprobs(&r["tokens"], AttentionMode::Dense);
            for b in 0..r["lengths"].size()[0] {
                let n = r["lengths"].int64_value(&[b]) - 1;
                worst = worst.max(max_abs(&lp.get(b).narrow(0, 0, n), &r["logprobs"].get(b).narrow(0, 0, n)));
            }
        });
        eprintln!("{name}: max abs diff {worst:.2e}");
        assert!(worst <= TOL, "{name}: {worst:e}");
    }
}

/// Greedy decoding by repeated full forwards (as the reference was made), and through the cache:
/// prefill of the prompt, then one absorbed-MLA step per token.
fn greedy(model: &DeepseekV32, prompt: &Tensor, steps: usize) -> (Vec<i64>, Vec<i64>) {
    let mut ids = prompt.unsqueeze(0);
    let mut full = Vec::new();
    for _ in 0..steps {
        let next = model.forward(&ids, AttentionMode::Dense).get(0).get(-1).argmax(-1, false);
        full.push(next.int64_value(&[]));
        ids = Tensor::cat(&[ids, next.view([1, 1])], 1);
    }
    let p = prompt.size()[0] as usize;
    let mut cache = KvCache::new(&model.config, 1, p + steps, Kind::Float, Device::Cpu);
    let mut cached = Vec::new();
    let mut input = prompt.unsqueeze(0);
    for _ in 0..steps {
        let logits = model.forward_cached(&input, &mut cache, &[0], AttentionMode::Dense);
        let next = logits.get(0).get(-1).argmax(-1, false);
        cached.push(next.int64_value(&[]));
        input = next.view([1, 1]);
    }
    (full, cached)
}

#[test]
fn family_greedy_decoding_reproduces_the_reference() {
    for (name, ..) in FIXTURES {
        let (_, _, model) = load(name);
        let r = reference(name);
        let expected = Vec::<i64>::try_from(&r["greedy_tokens"]).unwrap();
        let (full, cached) = tch::no_grad(|| greedy(&model, &r["greedy_prompt"], expected.len()));
        assert_eq!(full, expected, "{name}: full forwards");
        assert_eq!(cached, expected, "{name}: prefill + cached decode");
    }
}

fn row_sets(t: &Tensor) -> Vec<BTreeSet<i64>> {
    let rows = Vec::<Vec<i64>>::try_from(t.to_kind(Kind::Int64)).unwrap();
    rows.into_iter().map(|r| r.into_iter().collect()).collect()
}

#[test]
fn family_router_choices_match() {
    for (name, ..) in FIXTURES {
        let (cfg, _, model) = load(name);
        let r = reference(name);
        let (_, trace) = tch::no_grad(|| model.forward_traced(&sequence(&r, 0), AttentionMode::Dense));
        assert!(trace.selections.iter().all(Option::is_none), "{name}: no indexer ran");
        let mut moe = 0;
        for (l, routing) in trace.routings.iter().enumerate() {
            let Some(routing) = routing else { continue };
            moe += 1;
            assert_eq!(row_sets(&routing.experts), row_sets(&r[&format!("router_experts.{l}")]), "{name} layer {l}");
            let (_, order) = routing.experts.sort(-1, false);
            let d = max_abs(&routing.weights.gather(1, &order, false), &r[&format!("router_weights.{l}")]);
            // The weights carry `routed_scaling_factor` (16 for tiny-v2): 1e-5 of the unscaled
            // probabilities, f32 rounding of a hidden state computed in another order than transformers'.
            let bound = 1e-5 * cfg.routed_scaling_factor.max(1.0);
            assert!(d <= bound, "{name} layer {l} router weights: {d:e} (bound {bound:e})");
        }
        assert_eq!(moe, (0..cfg.num_hidden_layers).filter(|&i| cfg.is_moe_layer(i)).count(), "{name}");
    }
}

#[test]
fn sparse_attention_without_indexers_is_refused() {
    for (name, family, ..) in FIXTURES {
        let cfg = ModelConfig::from_path(&fixture(name)).unwrap();
        assert!(cfg.check_attention(AttentionMode::Dense).is_ok());
        let err = cfg.check_attention(AttentionMode::Sparse).unwrap_err().in_file(&fixture(name).join("config.json"));
        let msg = err.to_string();
        assert!(
            msg.contains("config.json") && msg.contains("model_type") && msg.contains(family.model_type()),
            "{msg}"
        );
        assert!(msg.contains("sparse attention") && msg.contains("indexer"), "{msg}");
    }
    let (_, _, model) = load("tiny-v3");
    let tokens = Tensor::from_slice(&[2i64, 3, 4]).unsqueeze(0);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tch::no_grad(|| model.forward(&tokens, AttentionMode::Sparse))
    }));
    let payload = caught.expect_err("a sparse forward on a V3 model must fail");
    let msg = payload.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("sparse attention") && msg.contains("deepseek_v3"), "{msg}");
}

fn edited(name: &str, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture(name).join("config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(v.as_object_mut().unwrap());
    v
}

/// Writes `v` as a config.json in a temporary directory and parses it from there.
fn parse_file(v: &serde_json::Value) -> Result<ModelConfig, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, v.to_string()).unwrap();
    ModelConfig::from_path(&path).map_err(|e| e.to_string())
}

#[test]
fn family_config_errors_name_file_and_field() {
    let cases = [
        (edited("tiny-v2", |o| drop(o.insert("topk_method".into(), "noaux_tc".into()))), "topk_method"),
        (edited("tiny-v2", |o| drop(o.insert("topk_method".into(), "best_effort".into()))), "topk_method"),
        (edited("tiny-v2", |o| drop(o.insert("scoring_func".into(), "sigmoid".into()))), "scoring_func"),
        (edited("tiny-v3", |o| drop(o.insert("topk_method".into(), "greedy".into()))), "topk_method"),
        (edited("tiny-v3", |o| drop(o.insert("rope_interleave".into(), false.into()))), "rope_interleave"),
        (edited("tiny-v3", |o| drop(o.insert("model_type".into(), "deepseek_v2".into()))), "architectures"),
        (
            edited("tiny-v3", |o| {
                o.remove("architectures");
                o.insert("model_type".into(), "llama".into());
            }),
            "model_type",
        ),
        // A V3.2 config must carry its indexer fields, and one without them says what it is.
        (edited("tiny-v3", |o| drop(o.insert("model_type".into(), "deepseek_v32".into()))), "architectures"),
        (
            edited("tiny-v3", |o| {
                o.insert("model_type".into(), "deepseek_v32".into());
                o.insert("architectures".into(), serde_json::json!(["DeepseekV32ForCausalLM"]));
            }),
            "index_n_heads",
        ),
        (
            edited("tiny-v3-noq", |o| {
                o.insert("model_type".into(), "deepseek_v32".into());
                o.insert("architectures".into(), serde_json::json!(["DeepseekV32ForCausalLM"]));
                o.insert("index_n_heads".into(), 2.into());
                o.insert("index_head_dim".into(), 32.into());
                o.insert("index_topk".into(), 8.into());
            }),
            "q_lora_rank",
        ),
    ];
    for (v, field) in cases {
        let err = parse_file(&v).expect_err(field);
        assert!(err.contains("config.json") && err.contains(field), "error for {field}: {err}");
    }
    // Kimi-K2 writes its own model_type with the DeepSeek-V3 classes: the architecture decides.
    let kimi = edited("tiny-v3", |o| drop(o.insert("model_type".into(), "kimi_k2".into())));
    assert_eq!(parse_file(&kimi).unwrap().family(), Family::V3);
    // Without model_type and architectures a config is rlvr's own V3.2 (the presets' form).
    let bare = edited("tiny-v2", |o| {
        o.remove("model_type");
        o.remove("architectures");
    });
    assert!(parse_file(&bare).unwrap_err().contains("index_n_heads"));
}

#[test]
fn v2_norm_topk_prob_normalises_instead_of_scaling() {
    // DeepSeek-V2's MoEGate: with norm_topk_prob the top-k weights sum to 1 and are not scaled.
    let dir = fixture("tiny-v2");
    let mut cfg = ModelConfig::from_path(&dir).unwrap();
    cfg.norm_topk_prob = Some(true);
    let (_, _, model) = support::load_with("tiny-v2", cfg);
    let r = reference("tiny-v2");
    let (_, trace) = tch::no_grad(|| model.forward_traced(&sequence(&r, 0), AttentionMode::Dense));
    let routing = trace.routings[1].as_ref().unwrap();
    let sums = routing.weights.sum_dim_intlist(-1, false, Kind::Double);
    assert!(max_abs(&sums, &sums.ones_like()) < 1e-6);
    // The selection is the same as without normalisation (the reference's).
    assert_eq!(row_sets(&routing.experts), row_sets(&r["router_experts.1"]));
}
