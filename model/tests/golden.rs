//! The model against transformers' `DeepseekV32ForCausalLM` on the tiny golden fixtures
//! (tests/fixtures/README.md): per-token log-probs, logits, greedy decoding, and the discrete
//! choices (DSA selections, MoE routes); plus the dense/sparse consistency rules of docs/architecture.md §8.

mod support;

use rlvr_model::model::logprobs_of;
use rlvr_model::spec;
use rlvr_model::{AttentionMode, DeepseekV32, MlaPath};
use std::collections::{BTreeMap, BTreeSet};
use support::{load, load_with, max_abs, reference, sequence};
use tch::{Kind, Tensor};

const TOL: f64 = 1e-4;
const FIXTURES: [&str; 3] = ["tiny-dense", "tiny-sparse", "tiny-sharded"];

#[test]
fn varstore_is_the_checkpoint_layout() {
    for name in FIXTURES {
        let (cfg, vs, _) = load(name);
        let ours: BTreeMap<String, Vec<i64>> = vs.variables().into_iter().map(|(k, v)| (k, v.size())).collect();
        let spec: BTreeMap<String, Vec<i64>> = spec::main_tensors(&cfg)
            .into_iter()
            .map(|t| (t.name, t.shape.iter().map(|&d| d as i64).collect()))
            .collect();
        assert_eq!(ours, spec, "{name}");
        // The router bias is a buffer: every variable but it is trainable.
        let buffers = (0..cfg.num_hidden_layers).filter(|&i| cfg.is_moe_layer(i)).count();
        assert_eq!(vs.trainable_variables().len(), ours.len() - buffers, "{name}");
        let bias = &vs.variables()["model.layers.1.mlp.gate.e_score_correction_bias"];
        assert!(!bias.requires_grad(), "{name}");
    }
}

/// Scores every reference sequence alone and checks log-probs, then logits.
fn check_scores(name: &str, mode: AttentionMode, key: &str) -> f64 {
    let (_, _, model) = load(name);
    let r = reference(name);
    let mut worst: f64 = 0.0;
    tch::no_grad(|| {
        for b in 0..r["lengths"].size()[0] {
            let seq = sequence(&r, b);
            let len = seq.size()[1];
            let logits = model.forward(&seq, mode);
            let lp = logprobs_of(&logits, &seq).squeeze_dim(0);
            worst = worst.max(max_abs(&lp, &r[key].get(b).narrow(0, 0, len - 1)));
            if key == "logprobs" {
                let last = logits.get(0).get(len - 1);
                worst = worst.max(max_abs(&last, &r["last_logits"].get(b)));
                if b == 0 {
                    worst = worst.max(max_abs(&logits.get(0), &r["logits_seq0"]));
                }
            }
        }
    });
    eprintln!("{name} {mode:?} vs `{key}`: max abs diff {worst:.2e}");
    worst
}

#[test]
fn logprobs_and_logits_match_transformers() {
    for name in FIXTURES {
        let worst = check_scores(name, AttentionMode::Sparse, "logprobs");
        assert!(worst <= TOL, "{name}: {worst:e}");
    }
}

#[test]
fn fp8_fixture_matches_its_dequantized_reference() {
    let (_, _, model) = load("tiny-fp8");
    let r = reference("tiny-fp8");
    let mut worst: f64 = 0.0;
    tch::no_grad(|| {
        for b in 0..r["lengths"].size()[0] {
            let seq = sequence(&r, b);
            let len = seq.size()[1];
            let logits = model.forward(&seq, AttentionMode::Sparse);
            let lp = logprobs_of(&logits, &seq).squeeze_dim(0);
            worst = worst.max(max_abs(&lp, &r["logprobs"].get(b).narrow(0, 0, len - 1)));
            worst = worst.max(max_abs(&logits.get(0).get(len - 1), &r["last_logits"].get(b)));
        }
    });
    eprintln!("tiny-fp8 (dequantized) Sparse vs `logprobs`/`last_logits`: max abs diff {worst:.2e}");
    assert!(worst <= TOL, "{worst:e}");
}

#[test]
fn dense_mode_matches_the_indexer_free_reference() {
    let worst = check_scores("tiny-sparse", AttentionMode::Dense, "dense_logprobs");
    assert!(worst <= TOL, "{worst:e}");
    // ... and is really different from the sparse reference (selection is active there).
    let off = check_scores("tiny-sparse", AttentionMode::Dense, "logprobs");
    assert!(off > 0.1, "dense and sparse agree ({off:e}): sparse selection never acted");
}

#[test]
fn right_padded_batch_gives_the_same_logprobs() {
    for name in ["tiny-dense", "tiny-sparse"] {
        let (_, _, model) = load(name);
        let r = reference(name);
        let lp = tch::no_grad(|| model.token_logprobs(&r["tokens"], AttentionMode::Sparse));
        for b in 0..r["lengths"].size()[0] {
            let n = r["lengths"].int64_value(&[b]) - 1;
            let d = max_abs(&lp.get(b).narrow(0, 0, n), &r["logprobs"].get(b).narrow(0, 0, n));
            assert!(d <= TOL, "{name} row {b}: {d:e}");
        }
    }
}

/// Greedy decoding by repeated full forwards, as the reference was made.
fn greedy_full(model: &DeepseekV32, prompt: &Tensor, steps: i64) -> Vec<i64> {
    let mut ids = prompt.unsqueeze(0);
    let mut out = Vec::new();
    for _ in 0..steps {
        let logits = tch::no_grad(|| model.forward(&ids, AttentionMode::Sparse));
        let next = logits.get(0).get(-1).argmax(-1, false);
        out.push(next.int64_value(&[]));
        ids = Tensor::cat(&[ids, next.view([1, 1])], 1);
    }
    out
}

#[test]
fn greedy_decoding_reproduces_the_reference() {
    for name in FIXTURES {
        let (_, _, model) = load(name);
        let r = reference(name);
        let expected = Vec::<i64>::try_from(&r["greedy_tokens"]).unwrap();
        assert_eq!(greedy_full(&model, &r["greedy_prompt"], expected.len() as i64), expected, "{name}");
    }
}

/// Rows of `t (N, K)` as sets, dropping negative entries (padding).
fn row_sets(t: &Tensor) -> Vec<BTreeSet<i64>> {
    let rows = Vec::<Vec<i64>>::try_from(t.to_kind(Kind::Int64)).unwrap();
    rows.into_iter().map(|r| r.into_iter().filter(|&x| x >= 0).collect()).collect()
}

#[test]
fn indexer_and_router_choices_match() {
    for name in ["tiny-sparse", "tiny-sharded", "tiny-dense"] {
        let (cfg, _, model) = load(name);
        let r = reference(name);
        let seq = sequence(&r, 0);
        let (_, trace) = tch::no_grad(|| model.forward_traced(&seq, AttentionMode::Sparse));
        let ran = seq.size()[1] as usize > cfg.index_topk;
        for l in 0..cfg.num_hidden_layers {
            let expected = row_sets(&r[&format!("indexer_topk.{l}")]);
            match (&trace.selections[l], ran) {
                (Some(sel), true) => {
                    let picked = sel.indices.get(0).where_self(&sel.valid.get(0), &Tensor::from(-1i64));
                    assert_eq!(row_sets(&picked), expected, "{name} layer {l} indexer");
                }
                (None, false) => {
                    // Every causal key, as the reference says.
                    let all: Vec<BTreeSet<i64>> = (0..seq.size()[1]).map(|t| (0..=t).collect()).collect();
                    assert_eq!(all, expected, "{name} layer {l} indexer");
                }
                (sel, _) => panic!("{name} layer {l}: indexer ran = {}, expected {ran}", sel.is_some()),
            }
            if let Some(routing) = &trace.routings[l] {
                let weights = &r[&format!("router_weights.{l}")];
                assert_eq!(
                    row_sets(&routing.experts),
                    row_sets(&r[&format!("router_experts.{l}")]),
                    "{name} layer {l}"
                );
                // Weights aligned with experts: sort both by expert id.
                let (_, order) = routing.experts.sort(-1, false);
                let ours = routing.weights.gather(1, &order, false);
                let d = max_abs(&ours, weights);
                assert!(d <= 1e-5, "{name} layer {l} router weights: {d:e}");
            }
        }
        assert_eq!(
            trace.routings.iter().filter(|r| r.is_some()).count(),
            (0..cfg.num_hidden_layers).filter(|&i| cfg.is_moe_layer(i)).count()
        );
    }
}

#[test]
fn sparse_with_topk_at_least_length_equals_dense() {
    let mut cfg = load("tiny-sparse").0;
    cfg.index_topk = 64;
    let (_, _, model) = load_with("tiny-sparse", cfg);
    let r = reference("tiny-sparse");
    tch::no_grad(|| {
        let sparse = model.forward(&r["tokens"], AttentionMode::Sparse);
        let dense = model.forward(&r["tokens"], AttentionMode::Dense);
        assert_eq!(max_abs(&sparse, &dense), 0.0);
        let seq = sequence(&r, 1);
        let lp = logprobs_of(&model.forward(&seq, AttentionMode::Sparse), &seq).squeeze_dim(0);
        let d = max_abs(&lp, &r["dense_logprobs"].get(1));
        assert!(d <= TOL, "{d:e}");
    });
}

#[test]
fn absorbed_and_naive_mla_agree() {
    let (_, _, model) = load("tiny-sparse");
    let r = reference("tiny-sparse");
    tch::no_grad(|| {
        let naive = model.forward_with(&r["tokens"], None, AttentionMode::Dense, MlaPath::Naive).0;
        let absorbed = model.forward_with(&r["tokens"], None, AttentionMode::Dense, MlaPath::Absorbed).0;
        let d = max_abs(&naive, &absorbed);
        assert!(d <= 1e-5 && d > 0.0, "{d:e} (0 would mean one path ran twice)");
    });
}

/// The layer parameters' gradients of a dense forward agree between the MHA path (fused
/// `scaled_dot_product_attention`) and the MQA path (einsum softmax over the latent), within 1e-5 of
/// each tensor's largest gradient: two float roundings of the same sums.
#[test]
fn absorbed_and_naive_mla_gradients_agree() {
    let (_, vs, model) = load("tiny-sparse");
    let r = reference("tiny-sparse");
    let tokens = &r["tokens"];
    let grads = |path: MlaPath| {
        for mut v in vs.trainable_variables() {
            v.zero_grad();
        }
        let logits = model.forward_with(tokens, None, AttentionMode::Dense, path).0;
        logprobs_of(&logits, tokens).sum(Kind::Float).backward();
        // Every trained tensor but the indexers' (dense attention does not run them).
        let mut out: Vec<(String, Tensor)> =
            vs.variables().into_iter().filter(|(_, v)| v.grad().defined()).map(|(k, v)| (k, v.grad().copy())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    };
    let (naive, absorbed) = (grads(MlaPath::Naive), grads(MlaPath::Absorbed));
    let names = |g: &[(String, Tensor)]| g.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(names(&naive), names(&absorbed));
    assert!(naive.iter().any(|(k, _)| k.ends_with("self_attn.kv_b_proj.weight")));
    let mut worst: f64 = 0.0;
    for ((name, a), (_, b)) in naive.iter().zip(&absorbed) {
        let scale = b.abs().max().double_value(&[]);
        assert!(scale > 0.0, "{name} has no gradient");
        let d = max_abs(a, b) / scale;
        assert!(d <= 1e-5, "{name}: {d:e}");
        worst = worst.max(d);
    }
    assert!(worst > 0.0, "0 would mean one path ran twice");
}

#[test]
fn routing_replay_reproduces_the_forward() {
    let (_, _, model) = load("tiny-sparse");
    let rlvr_model::model::Ffn::Moe(moe) = &model.layers[1].mlp else { panic!("layer 1 is MoE") };
    tch::no_grad(|| {
        tch::manual_seed(0);
        let x = Tensor::randn([1, 5, 48], (Kind::Float, tch::Device::Cpu));
        let (fresh, routing) = moe.forward(&x);
        assert_eq!(max_abs(&fresh, &moe.forward_routed(&x, &routing)), 0.0);
        // Another token's routing gives another output: the replayed routes are what is used.
        let other = rlvr_model::moe::Routing { experts: routing.experts.flip([0]), weights: routing.weights.flip([0]) };
        assert!(max_abs(&fresh, &moe.forward_routed(&x, &other)) > 1e-3);
    });
}

/// Sequences no longer than 4 × index_topk take DSA's masked-dense route (attention.rs) rather than
/// the gathered one; a causal prefix of a reference sequence has the reference's own log-probs.
#[test]
fn short_sparse_prefixes_match_transformers() {
    let (cfg, _, model) = load("tiny-sparse");
    let r = reference("tiny-sparse");
    let len = 4 * cfg.index_topk as i64; // longer than index_topk, so selection is active
    let mut worst: f64 = 0.0;
    tch::no_grad(|| {
        for b in 0..r["lengths"].size()[0] {
            let prefix = sequence(&r, b).narrow(1, 0, len);
            let lp = model.token_logprobs(&prefix, AttentionMode::Sparse).squeeze_dim(0);
            worst = worst.max(max_abs(&lp, &r["logprobs"].get(b).narrow(0, 0, len - 1)));
            let dense = model.token_logprobs(&prefix, AttentionMode::Dense).squeeze_dim(0);
            assert!(max_abs(&lp, &dense) > 1e-2, "selection must change the result");
        }
    });
    assert!(worst <= TOL, "max abs diff {worst:e}");
}
