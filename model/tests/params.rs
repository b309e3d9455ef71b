//! Parameter counts: the 671B preset against DeepSeek's published figures and a closed-form count
//! written out here independently of the per-tensor listing.

mod common;

use common::preset;
use rlvr_model::{ModelConfig, ParamCounts};

fn within(actual: u64, expected: f64, rel: f64) -> bool {
    ((actual as f64 - expected) / expected).abs() <= rel
}

/// docs/model.md §1, §5.1 and §6, multiplied out by hand.
struct ClosedForm {
    total: u64,
    active: u64,
    mtp_own: u64,
    mtp_copies: u64,
}

fn closed_form_671b() -> ClosedForm {
    let (d, v): (u64, u64) = (7168, 129_280);
    let attention = 1536 * d + 1536 + 24_576 * 1536 + 576 * d + 512 + 32_768 * 512 + d * 16_384;
    let indexer = 8192 * 1536 + 128 * d + 2 * 128 + 64 * d;
    let norms = 2 * d;
    let dense_ffn = 3 * d * 18_432;
    let expert = 3 * d * 2048;
    let router = 256 * d + 256;
    let moe_ffn = router + 256 * expert + expert; // 256 routed + 1 shared
    let moe_ffn_active = router + 8 * expert + expert;
    let per_layer = attention + indexer + norms;
    let embed_head = 2 * v * d;
    let total = embed_head + d + 61 * per_layer + 3 * dense_ffn + 58 * moe_ffn;
    let active = embed_head + d + 61 * per_layer + 3 * dense_ffn + 58 * moe_ffn_active;
    let mtp_own = per_layer + moe_ffn + 2 * d /* enorm, hnorm */ + d * 2 * d + d /* shared_head.norm */;
    ClosedForm { total, active, mtp_own, mtp_copies: embed_head }
}

#[test]
fn v32_counts_match_the_closed_form_exactly() {
    let cfg = ModelConfig::from_path(&preset("deepseek-v3.2")).unwrap();
    let counts = ParamCounts::of(&cfg);
    let expect = closed_form_671b();
    assert_eq!(counts.total, expect.total);
    assert_eq!(counts.active, expect.active);
    assert_eq!(counts.mtp, expect.mtp_own);
    assert_eq!(counts.mtp_with_shared_copies, expect.mtp_own + expect.mtp_copies);
    assert_eq!(counts.by_part.values().sum::<u64>(), counts.total);
}

#[test]
fn v32_counts_match_the_published_figures_within_one_percent() {
    let cfg = ModelConfig::from_path(&preset("deepseek-v3.2")).unwrap();
    let counts = ParamCounts::of(&cfg);
    // 671B published + 0.85B of indexers; 37B activated + indexers; MTP 11.6B own, 13.5B with copies.
    assert!(within(counts.total, 671.9e9, 0.01), "total {}", counts.total);
    assert!(within(counts.active, 38.4e9, 0.01), "active {}", counts.active);
    assert!(within(counts.mtp, 11.6e9, 0.01), "mtp {}", counts.mtp);
    assert!(within(counts.mtp_with_shared_copies, 13.5e9, 0.01), "mtp+copies {}", counts.mtp_with_shared_copies);
    // The indexers: 61 × ~13.96M (docs/model.md §6).
    let indexer = counts.by_part["Indexer"];
    assert!(within(indexer, 61.0 * 13.96e6, 0.01), "indexer {indexer}");
    // Main + MTP with copies ≈ the 685B of the open checkpoint (+ indexers).
    assert!(within(counts.total + counts.mtp_with_shared_copies, 685.4e9, 0.01));
}

#[test]
fn dense_model_has_active_equal_to_total() {
    let text = std::fs::read_to_string(preset("tiny").join("config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["n_routed_experts"] = 0.into();
    v["num_nextn_predict_layers"] = 0.into();
    let cfg = ModelConfig::from_json(&v.to_string()).unwrap();
    let counts = ParamCounts::of(&cfg);
    assert_eq!(counts.total, counts.active);
    assert_eq!(counts.mtp, 0);
}

/// The published configs of other DeepSeek-family models (tests/fixtures/published-configs, the
/// fields of each hub `config.json` that shape the network).
fn published(name: &str) -> (serde_json::Value, ModelConfig) {
    let path = common::fixture("published-configs").join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap();
    (serde_json::from_str(&text).unwrap(), ModelConfig::from_path(&path).unwrap_or_else(|e| panic!("{e}")))
}

/// Total and activated parameters multiplied out from the JSON fields by hand (MLA with or
/// without the q latent, dense FFN before `first_k_dense_replace`, routed + shared experts after,
/// a router bias only with `noaux_tc`), without the crate's tensor listing.
fn closed_form(v: &serde_json::Value) -> (u64, u64) {
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k}"));
    let (d, vocab, layers, dense) =
        (n("hidden_size"), n("vocab_size"), n("num_hidden_layers"), n("first_k_dense_replace"));
    let (h, nope, rope, vd, kv) =
        (n("num_attention_heads"), n("qk_nope_head_dim"), n("qk_rope_head_dim"), n("v_head_dim"), n("kv_lora_rank"));
    let q = match v["q_lora_rank"].as_u64() {
        Some(r) => d * r + r + r * h * (nope + rope),
        None => d * h * (nope + rope),
    };
    let attention = q + d * (kv + rope) + kv + kv * h * (nope + vd) + h * vd * d;
    let expert = 3 * d * n("moe_intermediate_size");
    let e = n("n_routed_experts");
    let bias = if v["topk_method"] == "noaux_tc" { e } else { 0 };
    let router = e * d + bias;
    let shared = n("n_shared_experts") * expert;
    let per_layer = attention + 2 * d;
    let common = 2 * vocab * d + d + layers * per_layer + dense * 3 * d * n("intermediate_size");
    let moe_layers = layers - dense;
    let total = common + moe_layers * (router + e * expert + shared);
    let active = common + moe_layers * (router + n("num_experts_per_tok") * expert + shared);
    (total, active)
}

#[test]
fn family_counts_match_the_closed_form_exactly() {
    for name in ["deepseek-v3", "deepseek-v2-lite", "moonlight-16b-a3b", "kimi-k2"] {
        let (json, cfg) = published(name);
        let counts = ParamCounts::of(&cfg);
        assert_eq!((counts.total, counts.active), closed_form(&json), "{name}");
        assert_eq!(counts.by_part.get("Indexer"), None, "{name} has no indexer");
        assert_eq!(counts.by_part.values().sum::<u64>(), counts.total, "{name}");
    }
}

/// Published figures, to the precision they were published with: DeepSeek-V3 671B + 14B MTP =
/// 685B in the HF repo, 37B activated (V3 report); DeepSeek-V2-Lite 15.7B, 2.4B activated (V2
/// report, activated without the 0.21B embedding); Moonlight-16B-A3B "16B / 3B" (model card);
/// Kimi-K2 1.04T total (K2 report; its config gives 1.026T) and 32B activated.
#[test]
fn family_counts_match_the_published_figures() {
    let (_, v3) = published("deepseek-v3");
    let c = ParamCounts::of(&v3);
    eprintln!("deepseek-v3: total {} active {} mtp+copies {}", c.total, c.active, c.mtp_with_shared_copies);
    assert!(within(c.total, 671e9, 0.005), "V3 total {}", c.total);
    assert!(
        within(c.total + c.mtp_with_shared_copies, 685e9, 0.005),
        "V3 + MTP {}",
        c.total + c.mtp_with_shared_copies
    );
    assert!(within(c.active, 37e9, 0.02), "V3 active {}", c.active);
    // V3 is V3.2 without its indexers: the same count less 61 × 13.96M.
    let v32 = ParamCounts::of(&ModelConfig::from_path(&preset("deepseek-v3.2")).unwrap());
    assert_eq!(v32.total - c.total, v32.by_part["Indexer"]);

    let (_, lite) = published("deepseek-v2-lite");
    let c = ParamCounts::of(&lite);
    eprintln!("deepseek-v2-lite: total {} active {}", c.total, c.active);
    assert!(within(c.total, 15.7e9, 0.005), "V2-Lite total {}", c.total);
    assert!(within(c.active - c.by_part["Embedding"], 2.4e9, 0.03), "V2-Lite active {}", c.active);

    let (_, moon) = published("moonlight-16b-a3b");
    let c = ParamCounts::of(&moon);
    eprintln!("moonlight-16b-a3b: total {} active {}", c.total, c.active);
    assert!(within(c.total, 16e9, 0.03), "Moonlight total {}", c.total);
    assert!(within(c.active, 3e9, 0.05), "Moonlight active {}", c.active);

    let (_, kimi) = published("kimi-k2");
    let c = ParamCounts::of(&kimi);
    eprintln!("kimi-k2: total {} active {}", c.total, c.active);
    assert!(within(c.total, 1.04e12, 0.015), "Kimi-K2 total {}", c.total);
    assert!(within(c.active, 32e9, 0.03), "Kimi-K2 active {}", c.active);
}
