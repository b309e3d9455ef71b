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
