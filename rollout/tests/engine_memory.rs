//! The engine's cache sized from the memory its device has (rollout/src/engine/memory.rs), with
//! the available figure given rather than read: V3.2's cache bytes against a hand count, a user's
//! slot setting that does not fit refused with the numbers and the setting named, a default lowered
//! to what fits (not below one request's samples), and an engine with fewer slots than requested
//! samples giving each request the tokens it gives alone.

mod support;

use rlvr_model::{KvCache, ModelConfig};
use rlvr_rollout::engine::{fit_slots, Engine, EngineConfig, EngineError, Sizing};
use std::path::PathBuf;
use support::{load, prompt, request, run_all};
use tch::Kind;

const GIB: u64 = 1 << 30;

fn v32() -> ModelConfig {
    ModelConfig::from_path(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../presets/deepseek-v3.2")).unwrap()
}

#[test]
fn v32s_cache_bytes_are_the_hand_count() {
    let cfg = v32();
    // Per layer and token: latent 512 + rope key 64 in bf16, indexer key 128 in f32; 61 layers.
    let per_token = 61 * ((512 + 64) * 2 + 128 * 4);
    assert_eq!(per_token, 101_504, "~101 KB a token");
    assert_eq!(KvCache::bytes_per_token(&cfg, Kind::BFloat16), per_token);
    assert_eq!(KvCache::bytes(&cfg, 512, 9216, Kind::BFloat16), 512 * 9216 * per_token);
    assert_eq!(KvCache::bytes_per_token(&cfg, Kind::Float), 61 * ((512 + 64) * 4 + 128 * 4));
}

#[test]
fn a_set_slot_count_that_does_not_fit_is_refused_with_the_numbers() {
    let cfg = v32();
    // 10 GiB available, 9 GiB after the margin; a 9216-token slot is 935,460,864 B: 10 fit.
    let sizing = Sizing::explicit("rollout.slots", "rollout.max_tokens");
    let err = fit_slots(&cfg, Kind::BFloat16, 512, 9216, &sizing, Some(10 * GIB)).unwrap_err();
    let EngineError::CacheDoesNotFit { slots, length, need, budget, available, .. } = &err else { panic!("{err}") };
    assert_eq!((*slots, *length, *need), (512, 9216, 512 * 935_460_864));
    assert_eq!((*budget, *available), (10 * GIB - GIB, 10 * GIB));
    let text = err.to_string();
    assert!(text.contains("set rollout.slots to at most 10, or lower rollout.max_tokens"), "{text}");
    assert!(text.contains("446.06 GiB") && text.contains("9.00 GiB") && text.contains("10.00 GiB"), "{text}");
    // Ten fit exactly: accepted as set.
    assert_eq!(fit_slots(&cfg, Kind::BFloat16, 10, 9216, &sizing, Some(10 * GIB)).unwrap(), 10);
    // Not one slot: the length is what to lower.
    let err = fit_slots(&cfg, Kind::BFloat16, 1, 9216, &sizing, Some(GIB / 2)).unwrap_err().to_string();
    assert!(err.contains("not one slot fits: lower rollout.max_tokens"), "{err}");
}

#[test]
fn a_default_slot_count_is_lowered_to_what_fits() {
    let cfg = v32();
    let sizing = Sizing::default_slots(8, "rollout.slots", "rollout.max_tokens");
    assert_eq!(fit_slots(&cfg, Kind::BFloat16, 512, 9216, &sizing, Some(10 * GIB)).unwrap(), 10);
    // Room to spare: the default as it is; nothing known: as configured.
    assert_eq!(fit_slots(&cfg, Kind::BFloat16, 4, 9216, &sizing, Some(10 * GIB)).unwrap(), 4);
    assert_eq!(fit_slots(&cfg, Kind::BFloat16, 512, 9216, &sizing, None).unwrap(), 512);
    // Fewer than one group's samples would fit: refused.
    let group = Sizing::default_slots(16, "rollout.slots", "rollout.max_tokens");
    let err = fit_slots(&cfg, Kind::BFloat16, 512, 9216, &group, Some(10 * GIB)).unwrap_err();
    assert!(matches!(err, EngineError::CacheDoesNotFit { slots: 16, .. }), "{err}");
    assert!(err.to_string().contains("10 slot(s) fit, fewer than the 16 a request needs"), "{err}");
}

#[test]
fn an_engine_with_fewer_slots_than_asked_gives_every_request_its_own_tokens() {
    let cfg = load("tiny-sparse").0.config.clone();
    let per_slot = KvCache::bytes(&cfg, 1, 96, Kind::Float);
    // Room for 3 slots of 96 tokens after the margin (the tenth of 3.4 slots is 0.34 of one).
    let available = per_slot * 34 / 10;
    let engine = |slots: usize, sizing: Sizing| {
        let (model, vs) = load("tiny-sparse");
        let sizing = Sizing { available: Some(available), ..sizing };
        Engine::new(model, &vs, EngineConfig { sizing, ..EngineConfig::new(slots, 96) })
    };
    let refused = engine(8, Sizing::explicit("--slots", "--max-seq-len")).err().expect("8 slots do not fit");
    assert!(refused.to_string().contains("set --slots to at most 3"), "{refused}");
    let mut small = engine(8, Sizing::default_slots(2, "--slots", "--max-seq-len")).unwrap();
    assert_eq!(small.slots(), 3);
    let requests =
        || (0..4).map(|i| rlvr_rollout::engine::Request { n: 2, ..request(&prompt(9 + i, i as u64), 6, 3, i) });
    let queued = run_all(&mut small, requests().collect());
    for (i, (req, got)) in requests().zip(&queued).enumerate() {
        let mut alone = engine(2, Sizing::explicit("--slots", "--max-seq-len")).unwrap();
        let want = &run_all(&mut alone, vec![req])[0];
        for (a, b) in want.samples.iter().zip(&got.samples) {
            assert_eq!(a.ids(), b.ids(), "request {i}: the same tokens with 3 slots as alone");
            let diff = support::max_diff(&a.logprobs(), &b.logprobs());
            assert!(diff <= 1e-5, "request {i}: log-probs differ by {diff}");
        }
    }
}
