//! Generation caches: cached prefill and decode equal the full forward at every position (dense and
//! sparse, single and batched slots, prefill on top of an existing prefix), absorbed and naive MLA
//! agree over the cache, and cached greedy sampling reproduces transformers' greedy tokens.

mod support;

use rlvr_model::model::CacheSlots;
use rlvr_model::{AttentionMode, DeepseekV32, KvCache, MlaPath};
use support::{load, max_abs, reference, sequence};
use tch::{Device, Kind, Tensor};

const TOL: f64 = 1e-5;

/// Feeds `seq (1, L)` through a fresh cache in chunks of the given sizes (then one token at a
/// time) and returns the logits of every position: (L, V).
fn cached_logits(model: &DeepseekV32, seq: &Tensor, chunks: &[i64], mode: AttentionMode) -> Tensor {
    let len = seq.size()[1];
    let mut cache = KvCache::new(&model.config, 2, len as usize, Kind::Float, Device::Cpu);
    let mut parts = Vec::new();
    let mut at = 0;
    let mut sizes = chunks.iter().copied().chain(std::iter::repeat(1));
    while at < len {
        let n = sizes.next().unwrap().min(len - at);
        // Slot 1, so slot indexing is exercised.
        parts.push(model.forward_cached(&seq.narrow(1, at, n), &mut cache, &[1], mode).get(0));
        at += n;
    }
    assert_eq!(cache.len(1), len as usize);
    assert!(cache.is_empty(0));
    Tensor::cat(&parts, 0)
}

#[test]
fn cached_decode_equals_full_forward() {
    for (name, mode) in [
        ("tiny-sparse", AttentionMode::Sparse),
        ("tiny-sparse", AttentionMode::Dense),
        ("tiny-dense", AttentionMode::Sparse),
    ] {
        let (_, _, model) = load(name);
        let r = reference(name);
        let seq = sequence(&r, 1);
        tch::no_grad(|| {
            let full = model.forward(&seq, mode).get(0);
            // Prefill 5, then decode one by one (sparse selection starts at 9 keys in tiny-sparse).
            let d = max_abs(&cached_logits(&model, &seq, &[5], mode), &full);
            assert!(d <= TOL, "{name} {mode:?} decode: {d:e}");
            // Prefill in chunks on top of existing prefixes, some longer than index_topk.
            let d = max_abs(&cached_logits(&model, &seq, &[3, 7, 13, 20], mode), &full);
            assert!(d <= TOL, "{name} {mode:?} chunked prefill: {d:e}");
            eprintln!("{name} {mode:?}: cached vs full max abs {d:.2e}");
        });
    }
}

#[test]
fn batched_decode_over_slots_of_different_lengths() {
    let (_, _, model) = load("tiny-sparse");
    let r = reference("tiny-sparse");
    let seqs: Vec<Tensor> = (0..3).map(|b| sequence(&r, b)).collect();
    let prompts = [4i64, 11, 30];
    let steps = 10;
    let mut cache = KvCache::new(&model.config, 4, 64, Kind::Float, Device::Cpu);
    let slots = [3usize, 0, 2];
    tch::no_grad(|| {
        for ((seq, &p), &slot) in seqs.iter().zip(&prompts).zip(&slots) {
            let _ = model.forward_cached(&seq.narrow(1, 0, p), &mut cache, &[slot], AttentionMode::Sparse);
        }
        for step in 0..steps {
            let ids: Vec<Tensor> = seqs.iter().zip(&prompts).map(|(s, &p)| s.narrow(1, p + step, 1)).collect();
            let logits = model.forward_cached(&Tensor::cat(&ids, 0), &mut cache, &slots, AttentionMode::Sparse); // (3, 1, V)
            for (b, (seq, &p)) in seqs.iter().zip(&prompts).enumerate() {
                let full = model.forward(&seq.narrow(1, 0, p + step + 1), AttentionMode::Sparse);
                let d = max_abs(&logits.get(b as i64).get(0), &full.get(0).get(-1));
                assert!(d <= TOL, "row {b} step {step}: {d:e}");
            }
        }
    });
}

#[test]
fn absorbed_and_naive_decode_agree() {
    let (_, _, model) = load("tiny-sparse");
    let r = reference("tiny-sparse");
    let seq = sequence(&r, 0);
    let run = |path: MlaPath| {
        let mut cache = KvCache::new(&model.config, 1, 48, Kind::Float, Device::Cpu);
        let mut out = Vec::new();
        for t in 0..seq.size()[1] {
            let slots = CacheSlots { cache: &mut cache, slots: &[0] };
            let (logits, _) = model.forward_with(&seq.narrow(1, t, 1), Some(slots), AttentionMode::Dense, path);
            out.push(logits.get(0));
        }
        Tensor::cat(&out, 0)
    };
    tch::no_grad(|| {
        let d = max_abs(&run(MlaPath::Naive), &run(MlaPath::Absorbed));
        assert!(d <= TOL && d > 0.0, "{d:e} (0 would mean one path ran twice)");
    });
}

/// [`KvCache::bytes`] is what [`KvCache::new`] allocates, with and without indexers, f32 and bf16.
#[test]
fn the_cache_allocates_the_bytes_it_states() {
    for preset in ["tiny", "tiny-v3"] {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../presets").join(preset);
        let cfg = rlvr_model::ModelConfig::from_path(&dir).unwrap();
        for kind in [Kind::Float, Kind::BFloat16] {
            let cache = KvCache::new(&cfg, 3, 40, kind, Device::Cpu);
            let bytes = |t: &Tensor| t.numel() as u64 * t.kind().elt_size_in_bytes() as u64;
            let allocated: u64 = cache.layers.iter().map(|l| bytes(&l.latent) + bytes(&l.pe) + bytes(&l.index)).sum();
            assert_eq!(KvCache::bytes(&cfg, 3, 40, kind), allocated, "{preset} {kind:?}");
        }
    }
}
