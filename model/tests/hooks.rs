//! The forward's RL hooks on tiny-sparse: routing record and replay ("keep routing", reference
//! §3.3.6), in full and cached forwards, and the vocabulary mask ("keep sampling mask", §3.3.7).

mod support;

use rlvr_model::mla::Positions;
use rlvr_model::model::{Ffn, LayerOptions};
use rlvr_model::{AttentionMode, DeepseekV32, ForwardOptions, KeptSets, KvCache, MlaPath, VocabMask};
use support::{load, max_abs, reference, sequence};
use tch::{Device, Kind, Tensor};

const SPARSE: AttentionMode = AttentionMode::Sparse;

/// Reference sequence 0 (48 tokens: sparse selection happens).
fn tokens() -> Tensor {
    sequence(&reference("tiny-sparse"), 0)
}

/// Adds N(0, 0.5²/d) noise to layer `l`'s router weight.
fn perturb_router(model: &DeepseekV32, l: usize) {
    let Ffn::Moe(moe) = &model.layers[l].mlp else { panic!("layer {l} is MoE") };
    tch::no_grad(|| {
        tch::manual_seed(7);
        let mut gate = moe.gate.shallow_clone();
        let noise = gate.randn_like() * (0.5 / (gate.size()[1] as f64).sqrt());
        let _ = gate.g_add_(&noise);
    });
}

fn same_ids(a: &[Option<Tensor>], b: &[Option<Tensor>]) -> bool {
    a.iter().zip(b).all(|(x, y)| match (x, y) {
        (Some(x), Some(y)) => x.equal(y),
        (None, None) => true,
        _ => false,
    })
}

#[test]
fn replaying_the_recorded_routing_reproduces_the_forward_bit_for_bit() {
    let (_, _, model) = load("tiny-sparse");
    let seq = tokens();
    tch::no_grad(|| {
        let first = model.run(&seq, ForwardOptions::new(SPARSE));
        let ids = first.expert_ids();
        assert_eq!(ids.iter().flatten().count(), 2, "two MoE layers recorded");
        assert_eq!(ids[1].as_ref().unwrap().size(), [1, 48, 4]);
        let again = model.run(&seq, ForwardOptions { replay: Some(&ids), ..ForwardOptions::new(SPARSE) });
        assert_eq!(max_abs(&first.logits, &again.logits), 0.0);
        assert!(same_ids(&ids, &again.expert_ids()));
    });
}

/// Layer 1's MoE input for `seq`, recomputed from the public layer pieces: (T, d).
fn moe_input_of_layer_1(model: &DeepseekV32, seq: &Tensor) -> Tensor {
    let t = seq.size()[1];
    let pos = Positions::new(&model.rope, Tensor::arange(t, (Kind::Int64, Device::Cpu)).unsqueeze(0));
    let lo = LayerOptions { mode: SPARSE, path: MlaPath::Naive, stage: None, replay: None };
    let h0 = Tensor::embedding(&model.embed_tokens, seq, -1, false, false); // (1, T, d)
    let h1 = model.layers[0].forward(&h0, &pos, None, &lo).hidden;
    let layer = &model.layers[1];
    let x = layer.input_layernorm.forward(&h1);
    let q = layer.self_attn.queries(&x, &pos);
    let keys = layer.self_attn.keys(&x, &pos, true);
    let (a, _) = layer.self_attn.attend(&x, &q, &keys, &pos, SPARSE, MlaPath::Naive);
    layer.post_attention_layernorm.forward(&(h1 + a)).flatten(0, 1) // (T, d)
}

#[test]
fn replay_keeps_the_experts_and_recomputes_weights_from_the_current_router() {
    let (cfg, _, model) = load("tiny-sparse");
    let seq = tokens();
    tch::no_grad(|| {
        let recorded = model.run(&seq, ForwardOptions::new(SPARSE));
        let ids = recorded.expert_ids();
        perturb_router(&model, 1);
        let fresh = model.run(&seq, ForwardOptions::new(SPARSE));
        assert!(!same_ids(&ids, &fresh.expert_ids()), "the perturbed router chooses differently");
        let replayed = model.run(&seq, ForwardOptions { replay: Some(&ids), ..ForwardOptions::new(SPARSE) });
        assert!(same_ids(&ids, &replayed.expert_ids()), "replay forces the recorded experts");
        // Layer 1's weights: the new router's sigmoid scores at the recorded ids, normalised, scaled.
        let Ffn::Moe(moe) = &model.layers[1].mlp else { unreachable!() };
        let x = moe_input_of_layer_1(&model, &seq);
        let experts = ids[1].as_ref().unwrap().flatten(0, 1); // (T, K)
        let s = x.matmul(&moe.gate.tr()).sigmoid().gather(1, &experts, false); // (T, K)
        let manual = &s / (s.sum_dim_intlist(-1, true, Kind::Float) + 1e-20) * cfg.routed_scaling_factor;
        let got = &replayed.trace.routings[1].as_ref().unwrap().weights;
        let err = max_abs(got, &manual);
        println!("replayed gate weights vs manual: {err:.2e}");
        assert!(err <= 1e-6, "{err}");
        let old = &recorded.trace.routings[1].as_ref().unwrap().weights;
        assert!(max_abs(got, old) > 1e-3, "the weights follow the new router");
    });
}

/// Prefill 20 tokens then decode 4, one slot; returns each call's logits and expert ids.
fn cached_calls(
    model: &DeepseekV32,
    seq: &Tensor,
    replay: Option<&[Vec<Option<Tensor>>]>,
) -> Vec<(Tensor, Vec<Option<Tensor>>)> {
    let mut cache = KvCache::new(&model.config, 1, 32, Kind::Float, Device::Cpu);
    let chunks = [(0, 20), (20, 1), (21, 1), (22, 1), (23, 1)];
    let mut out = Vec::new();
    for (c, &(at, n)) in chunks.iter().enumerate() {
        let part = seq.narrow(1, at, n);
        let mut opts = DeepseekV32::cached_options(&part, &mut cache, &[0], SPARSE);
        opts.replay = replay.map(|r| r[c].as_slice());
        let o = model.run(&part, opts);
        let ids = o.expert_ids();
        out.push((o.logits, ids));
    }
    out
}

#[test]
fn replay_works_through_the_cached_forward() {
    let (_, _, model) = load("tiny-sparse");
    let seq = tokens();
    tch::no_grad(|| {
        let recorded = cached_calls(&model, &seq, None);
        let ids: Vec<Vec<Option<Tensor>>> =
            recorded.iter().map(|(_, i)| i.iter().map(|t| t.as_ref().map(Tensor::copy)).collect()).collect();
        assert_eq!(ids[1][1].as_ref().unwrap().size(), [1, 1, 4], "decode steps record (B, 1, K)");
        let replayed = cached_calls(&model, &seq, Some(&ids));
        for ((a, _), (b, _)) in recorded.iter().zip(&replayed) {
            assert_eq!(max_abs(a, b), 0.0);
        }
        perturb_router(&model, 2);
        let moved = cached_calls(&model, &seq, Some(&ids));
        for (c, (_, got)) in moved.iter().enumerate() {
            assert!(same_ids(&ids[c], got), "call {c} keeps the recorded experts");
        }
    });
}

/// Kept sets for (1, T, V): position t keeps `(7·t + 3j) mod V` for j < 5, except every fourth
/// position, which keeps nothing (and so stays unmasked).
fn kept_sets(t: i64, v: i64) -> Vec<Vec<i64>> {
    (0..t).map(|p| if p % 4 == 3 { Vec::new() } else { (0..5).map(|j| (7 * p + 3 * j) % v).collect() }).collect()
}

/// The sets as a mask.
fn kept_mask(sets: &[Vec<i64>]) -> VocabMask {
    VocabMask::Kept(KeptSets::new(1, sets.len(), sets.iter().enumerate().map(|(p, s)| ((0, p), s.as_slice()))))
}

/// The sets as a (1, T, V) bool tensor, built by hand (an empty set keeps everything).
fn kept_bool(sets: &[Vec<i64>], v: i64) -> Tensor {
    let mut keep = vec![false; sets.len() * v as usize];
    for (p, set) in sets.iter().enumerate() {
        let row = &mut keep[p * v as usize..(p + 1) * v as usize];
        match set.is_empty() {
            true => row.fill(true),
            false => set.iter().for_each(|&id| row[id as usize] = true),
        }
    }
    Tensor::from_slice(&keep).view([1, sets.len() as i64, v])
}

#[test]
fn vocab_mask_renormalises_over_the_kept_tokens() {
    let (cfg, _, model) = load("tiny-sparse");
    let seq = tokens();
    let (t, v) = (seq.size()[1], cfg.vocab_size as i64);
    let sets = kept_sets(t, v);
    let kept = kept_mask(&sets);
    let plain = tch::no_grad(|| model.forward(&seq, SPARSE));
    let masked = tch::no_grad(|| {
        model.run(&seq, ForwardOptions { vocab_mask: Some(&kept), ..ForwardOptions::new(SPARSE) }).logits
    });
    assert!(masked.equal(&kept.apply(plain.copy())), "the forward masks its logits");
    let by_hand = plain.masked_fill(&kept_bool(&sets, v).logical_not(), f64::NEG_INFINITY);
    assert!(by_hand.equal(&masked), "the mask drops exactly the ids outside each set");
    let dense = VocabMask::Dense(kept_bool(&sets, v));
    assert!(dense.apply(plain.copy()).equal(&masked), "both mask forms agree");
    let logp = masked.log_softmax(-1, Kind::Float);
    for p in 0..t {
        let (want, got) = if p % 4 == 3 {
            (plain.get(0).get(p).log_softmax(-1, Kind::Float), logp.get(0).get(p))
        } else {
            let row_ids = Tensor::from_slice(&sets[p as usize]);
            let by_hand = plain.get(0).get(p).index_select(0, &row_ids).log_softmax(-1, Kind::Float);
            (by_hand, logp.get(0).get(p).index_select(0, &row_ids))
        };
        assert!(max_abs(&got, &want) <= 1e-6, "position {p}");
        if p % 4 != 3 {
            let finite = logp.get(0).get(p).isfinite().sum(Kind::Int64).int64_value(&[]);
            assert_eq!(finite, 5, "position {p}: only kept tokens have finite log-probs");
        }
    }
}

#[test]
fn vocab_mask_gradients_flow_only_through_kept_logits() {
    let (t, v) = (8, 32);
    tch::manual_seed(3);
    let logits = Tensor::randn([1, t, v], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let sets = kept_sets(t, v);
    // The mask is applied in place, so to a copy of the leaf.
    let logp = kept_mask(&sets).apply(&logits * 1.0).log_softmax(-1, Kind::Float);
    // A kept token per position; unmasked positions take id 0.
    let target: Vec<i64> = sets.iter().map(|s| s.first().copied().unwrap_or(0)).collect();
    let target = Tensor::from_slice(&target).view([1, t]);
    logp.gather(-1, &target.unsqueeze(-1), false).sum(Kind::Float).backward();
    let g = logits.grad();
    let keep = kept_bool(&sets, v);
    assert_eq!(g.masked_select(&keep.logical_not()).abs().max().double_value(&[]), 0.0);
    assert!(g.masked_select(&keep).abs().min().double_value(&[]) > 0.0, "every kept logit gets gradient");
}
