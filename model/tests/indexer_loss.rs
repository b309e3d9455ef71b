//! The DSA indexer training losses against `tiny-sparse/indexer_losses.safetensors` (made by
//! tests/fixtures/indexer_losses.py, plain PyTorch from the paper's equations; definitions in
//! tests/fixtures/README.md): per-layer KL, totals, recall and LM losses to 1e-5 relative, every
//! indexer gradient to 1e-5 of its tensor's largest entry, and the gradient isolation of the sparse
//! stage (indexer loss → indexer only, LM loss → everything but the indexer).

mod support;

use rlvr_model::indexer_loss::indexer_parameter_names;
use rlvr_model::spec::{self, Part};
use rlvr_model::{AttentionMode, ForwardOptions, IndexerStage, ModelConfig};
use std::collections::{BTreeSet, HashMap};
use support::{fixture, load, max_abs};
use tch::{nn::VarStore, Device, Kind, Tensor};

/// Relative tolerance on loss values, absolute-relative-to-max on gradients.
const REL: f64 = 1e-5;

fn fixture_tensors() -> HashMap<String, Tensor> {
    Tensor::read_safetensors(fixture("tiny-sparse").join("indexer_losses.safetensors")).unwrap().into_iter().collect()
}

/// |got − want| ≤ REL·|want|; returns the relative error.
fn assert_rel(what: &str, got: &Tensor, want: &Tensor) -> f64 {
    let (g, w) = (got.double_value(&[]), want.double_value(&[]));
    let rel = (g - w).abs() / w.abs();
    assert!(rel <= REL, "{what}: got {g}, want {w} (relative error {rel:.2e})");
    rel
}

/// max |g − want| ≤ REL · max |want|; returns that ratio.
fn assert_grad(name: &str, g: &Tensor, want: &Tensor) -> f64 {
    assert!(g.defined(), "{name} has no gradient");
    let scale = want.abs().max().double_value(&[]);
    let ratio = max_abs(g, want) / scale;
    assert!(ratio <= REL, "{name}: max error {ratio:.2e} of max |grad| {scale:.3e}");
    ratio
}

/// The trainable variables by name (the router bias is a buffer).
fn trainable(vs: &VarStore) -> Vec<(String, Tensor)> {
    vs.variables().into_iter().filter(|(_, v)| v.requires_grad()).collect()
}

/// Whether `t`'s gradient is absent or exactly zero.
fn no_grad_reached(t: &Tensor) -> bool {
    let g = t.grad();
    !g.defined() || g.abs().max().double_value(&[]) == 0.0
}

/// Runs stage `stage` on the fixture batch: the model's VarStore, total KL and LM loss.
fn run_stage(stage: IndexerStage, r: &HashMap<String, Tensor>, key: &str) -> (VarStore, Tensor) {
    let (cfg, vs, model) = load("tiny-sparse");
    let tokens = &r["tokens"];
    let out = model.run(tokens, ForwardOptions::indexer_training(stage));
    let losses = out.indexer.as_ref().expect("indexer losses were asked for");
    let per_layer = losses.per_layer(None);
    assert_eq!(per_layer.len(), cfg.num_hidden_layers);
    let mut worst: f64 = 0.0;
    for (l, kl) in per_layer.iter().enumerate() {
        worst = worst.max(assert_rel(&format!("{key}.{l}"), kl, &r[&format!("{key}.{l}")]));
    }
    let total = losses.total(None);
    worst = worst.max(assert_rel(key, &total, &r[&format!("{key}_total")]));
    let lm_key = if stage == IndexerStage::Sparse { "lm_loss_sparse" } else { "lm_loss_dense" };
    worst = worst.max(assert_rel(lm_key, &out.lm_loss(tokens), &r[lm_key]));
    if stage == IndexerStage::DenseWarmup {
        for (l, recall) in losses.recall(None).iter().enumerate() {
            let recall = recall.as_ref().expect("the dense stage reports recall");
            worst = worst.max(assert_rel(&format!("recall.{l}"), recall, &r[&format!("recall.{l}")]));
        }
    }
    println!("{key}: worst relative error of losses {worst:.2e}");
    // The training forward's logits are the plain forward's, bit for bit.
    let plain = tch::no_grad(|| model.forward(tokens, stage.mode()));
    assert_eq!(max_abs(&out.logits, &plain), 0.0, "{key}: logits changed");
    (vs, total)
}

/// Checks the gradients of every indexer parameter against `grad_{key}.*`.
fn check_indexer_grads(vs: &VarStore, cfg: &ModelConfig, r: &HashMap<String, Tensor>, key: &str) {
    let vars = vs.variables();
    let mut worst: f64 = 0.0;
    for name in indexer_parameter_names(cfg, false) {
        let ratio = assert_grad(&name, &vars[&name].grad(), &r[&format!("grad_{key}.{name}")]);
        worst = worst.max(ratio);
    }
    println!("grad_{key}: worst error / max |grad| = {worst:.2e}");
}

#[test]
fn dense_warmup_losses_recall_and_gradients_match_the_reference() {
    let r = fixture_tensors();
    let (vs, total) = run_stage(IndexerStage::DenseWarmup, &r, "dense_kl");
    total.backward();
    let cfg = ModelConfig::from_path(&fixture("tiny-sparse")).unwrap();
    check_indexer_grads(&vs, &cfg, &r, "dense");
    // The indexer reads detached inputs: the warm-up loss trains nothing else.
    let indexer: BTreeSet<String> = indexer_parameter_names(&cfg, false).into_iter().collect();
    for (name, var) in trainable(&vs) {
        if !indexer.contains(&name) {
            assert!(no_grad_reached(&var), "dense indexer loss reaches {name}");
        }
    }
}

#[test]
fn sparse_stage_losses_gradients_and_isolation_match_the_reference() {
    let r = fixture_tensors();
    let (vs, total) = run_stage(IndexerStage::Sparse, &r, "sparse_kl");
    total.backward();
    let cfg = ModelConfig::from_path(&fixture("tiny-sparse")).unwrap();
    check_indexer_grads(&vs, &cfg, &r, "sparse");
    let indexer: BTreeSet<String> = indexer_parameter_names(&cfg, false).into_iter().collect();
    for (name, var) in trainable(&vs) {
        if !indexer.contains(&name) {
            assert!(no_grad_reached(&var), "sparse indexer loss reaches {name}");
        }
    }
}

#[test]
fn sparse_lm_loss_never_reaches_the_indexer() {
    let r = fixture_tensors();
    let (cfg, vs, model) = load("tiny-sparse");
    let out = model.run(&r["tokens"], ForwardOptions::new(AttentionMode::Sparse));
    out.lm_loss(&r["tokens"]).backward();
    let indexer: BTreeSet<String> = indexer_parameter_names(&cfg, false).into_iter().collect();
    let mut main_reached = 0;
    for (name, var) in trainable(&vs) {
        if indexer.contains(&name) {
            assert!(no_grad_reached(&var), "LM loss reaches indexer parameter {name}");
        } else if !no_grad_reached(&var) {
            main_reached += 1;
        }
    }
    assert!(main_reached > 20, "the LM loss trains the main model ({main_reached} tensors)");
}

#[test]
fn indexer_parameter_names_are_the_specs_indexer_tensors() {
    let tiny = ModelConfig::from_path(&fixture("../../presets/tiny")).unwrap();
    let sparse = ModelConfig::from_path(&fixture("tiny-sparse")).unwrap();
    for (cfg, with_mtp) in [(&tiny, true), (&tiny, false), (&sparse, false)] {
        let mut specs = spec::main_tensors(cfg);
        if with_mtp {
            specs.extend(spec::mtp_tensors(cfg));
        }
        let want: BTreeSet<String> = specs.into_iter().filter(|t| t.part == Part::Indexer).map(|t| t.name).collect();
        let got: Vec<String> = indexer_parameter_names(cfg, with_mtp);
        assert_eq!(got.len(), want.len());
        assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), want);
    }
    assert!(indexer_parameter_names(&tiny, true).iter().any(|n| n.starts_with("model.layers.3.")));
}

/// The sparse stage's O(T·k) scores ([`Indexer::scores_at`], differentiated at the selected keys
/// only) against the full (B, T, S) scores gathered at the same keys: the same values and the same
/// gradients in the queries, head weights and keys, to rounding (the d_I-long dot products are
/// summed by another kernel: 1e-5 of the largest entry, as the fixture comparisons above).
#[test]
fn scores_at_the_selected_keys_equal_the_gathered_full_scores() {
    let (cfg, _, model) = load("tiny-sparse");
    let idx = model.layers[0].self_attn.indexer.as_ref().expect("tiny-sparse has an indexer");
    tch::manual_seed(3);
    let (b, t) = (2, 40);
    let (h, d) = (cfg.index_n_heads as i64, cfg.index_head_dim as i64);
    let f = (Kind::Float, Device::Cpu);
    let q = Tensor::randn([b, t, h, d], f).set_requires_grad(true);
    let w = Tensor::randn([b, t, h], f).set_requires_grad(true);
    let keys = Tensor::randn([b, t, d], f).set_requires_grad(true);
    let q_pos = Tensor::arange(t, (Kind::Int64, Device::Cpu)).unsqueeze(0).expand([b, t], true);
    let full = idx.scores(&q, &w, &keys, &q_pos); // (B, T, S)
    let sel = tch::no_grad(|| idx.select(&full, &q_pos));
    assert!(sel.valid.logical_not().any().int64_value(&[]) == 1, "some rows have fewer than k keys");
    let valid = sel.valid.to_kind(Kind::Float);
    let weights = Tensor::randn(sel.indices.size(), f) * &valid; // a loss on the valid entries only
    let gathered = full.gather(-1, &sel.indices, false).masked_fill(&sel.valid.logical_not(), 0.0);
    let at = idx.scores_at(&q, &w, &keys, &sel.indices).masked_fill(&sel.valid.logical_not(), 0.0);
    let scale = gathered.abs().max().double_value(&[]);
    assert!(max_abs(&gathered, &at) <= REL * scale, "values: {:e}", max_abs(&gathered, &at));
    let grads = |x: &Tensor| {
        let g = Tensor::run_backward(&[(x * &weights).sum(Kind::Float)], &[&q, &w, &keys], false, false);
        g.into_iter().collect::<Vec<_>>()
    };
    for (name, (a, b)) in ["q", "w", "keys"].iter().zip(grads(&gathered).iter().zip(&grads(&at))) {
        let scale = a.abs().max().double_value(&[]);
        assert!(scale > 0.0 && max_abs(a, b) <= REL * scale, "{name}: {:e} of {scale:e}", max_abs(a, b));
    }
}

/// The row-blocked selection (what sparse attention uses) against the selection over the whole
/// (B, T, S) scores, at a length where the blocks are several (2 heads × 6000² > 2^26): the same
/// keys, bit for bit.
#[test]
fn blocked_selection_is_the_whole_selection() {
    let (cfg, _, model) = load("tiny-sparse");
    let idx = model.layers[0].self_attn.indexer.as_ref().expect("tiny-sparse has an indexer");
    tch::manual_seed(4);
    let t = 6000;
    let (h, d) = (cfg.index_n_heads as i64, cfg.index_head_dim as i64);
    assert!(h * t * t > 1 << 26, "one block would cover everything");
    let f = (Kind::Float, Device::Cpu);
    let (q, w, keys) = (Tensor::randn([1, t, h, d], f), Tensor::randn([1, t, h], f), Tensor::randn([1, t, d], f));
    // Exact zeros (every head's ReLU 0) tie: the stable order must survive the blocking too.
    let _ = w.narrow(1, 100, 50).fill_(0.0);
    let q_pos = Tensor::arange(t, (Kind::Int64, Device::Cpu)).unsqueeze(0);
    let whole = tch::no_grad(|| idx.select(&idx.scores(&q, &w, &keys, &q_pos), &q_pos));
    let blocked = idx.select_blocked(&q, &w, &keys, &q_pos);
    assert!(whole.indices.equal(&blocked.indices) && whole.valid.equal(&blocked.valid));
}
