//! The checkpointed backward (`rlvr_model::recompute`) against the plain one on the tiny preset
//! (3 layers, MoE, indexer, one MTP layer): the same loss — main head, MTP and every layer's
//! sparse-stage indexer KL, with routing replay and a vocabulary mask — gives every parameter the
//! same gradient, bit for bit with the head in one chunk, within float rounding with it in chunks.

mod common;

use rlvr_model::indexer_loss::LayerIndexerLoss;
use rlvr_model::recompute::{token_entropy, LossHead, MainHead};
use rlvr_model::{AttentionMode, DeepseekV32, ForwardOptions, IndexerStage, KeptSets, ModelConfig, VocabMask};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// The tiny preset with its MTP module, randomly initialised (seed 5).
fn tiny() -> (VarStore, DeepseekV32) {
    tch::set_num_threads(2);
    tch::manual_seed(5);
    let cfg = ModelConfig::from_path(&common::preset("tiny")).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let model = DeepseekV32::with_mtp(&vs.root(), &cfg).unwrap();
    (vs, model)
}

/// 2 rows of 40 tokens (> index_topk = 16: sparse selection happens), the targets (B, T−1), the
/// rollout's routing to replay and a kept-set mask on some positions.
struct Inputs {
    tokens: Tensor,
    targets: Tensor,
    replay: Vec<Option<Tensor>>,
    mask: VocabMask,
}

fn inputs(model: &DeepseekV32) -> Inputs {
    tch::manual_seed(11);
    let tokens = Tensor::randint_low(2, 500, [2, 40], (Kind::Int64, Device::Cpu)); // (B, T)
    let targets = tokens.narrow(1, 1, 39);
    let replay = tch::no_grad(|| {
        model.run(&tokens, ForwardOptions { mtp: true, ..ForwardOptions::new(AttentionMode::Sparse) }).expert_ids()
    });
    // Positions 10.. keep the target and 7 more ids; earlier ones keep everything (no set).
    let kept = Tensor::randint_low(0, 512, [2, 40, 7], (Kind::Int64, Device::Cpu));
    let kept = Vec::<i64>::try_from(kept.flatten(0, -1)).unwrap();
    let target = Vec::<i64>::try_from(targets.flatten(0, -1)).unwrap();
    let sets: Vec<((usize, usize), Vec<i64>)> = (0..2)
        .flat_map(|b| (10..40).map(move |t| (b, t)))
        .map(|(b, t)| {
            let mut set = vec![if t < 39 { target[b * 39 + t] } else { 0 }];
            set.extend_from_slice(&kept[(b * 40 + t) * 7..(b * 40 + t + 1) * 7]);
            ((b, t), set)
        })
        .collect();
    let kept = KeptSets::new(2, 40, sets.iter().map(|(at, s)| (*at, s.as_slice())));
    Inputs { tokens, targets, replay, mask: VocabMask::Kept(kept) }
}

/// The loss's parts as the plain forward gives them (weights made up: any scalars do).
fn main_loss(logp: &Tensor) -> Tensor {
    // A loss that is not a plain mean: per-row weights, squared terms.
    let w = Tensor::from_slice(&[0.7f32, 1.3]).unsqueeze(1);
    (-(logp * w) + logp.square() * 0.01).mean(Kind::Float)
}

fn mtp_term(logits: &[Tensor], tokens: &Tensor) -> Option<Tensor> {
    rlvr_model::forward::mtp_loss_of(logits, tokens).map(|m| m * 0.3)
}

fn indexer_term(l: &LayerIndexerLoss) -> Tensor {
    l.kl.mean(Kind::Float) * 0.5
}

fn options<'a>(x: &'a Inputs) -> ForwardOptions<'a> {
    ForwardOptions {
        replay: Some(&x.replay),
        vocab_mask: Some(&x.mask),
        mtp: true,
        ..ForwardOptions::indexer_training(IndexerStage::Sparse)
    }
}

/// Every parameter's gradient after the plain backward, and log π(targets).
fn plain(vs: &VarStore, model: &DeepseekV32, x: &Inputs) -> (Vec<(String, Tensor)>, Tensor, Tensor) {
    zero_grads(vs);
    let out = model.run(&x.tokens, options(x));
    let logp_all = out.logits.narrow(1, 0, 39).log_softmax(-1, Kind::Float); // (B, T−1, V)
    let logp = logp_all.gather(-1, &x.targets.unsqueeze(-1), false).squeeze_dim(-1); // (B, T−1)
    let indexer = out.indexer.as_ref().unwrap();
    let idx = Tensor::stack(&indexer.layers.iter().map(indexer_term).collect::<Vec<_>>(), 0).sum(Kind::Float);
    let loss = main_loss(&logp) + mtp_term(&out.mtp_logits, &x.tokens).unwrap() + idx;
    loss.backward();
    (grads(vs), logp.detach(), token_entropy(&logp_all))
}

/// The same after the checkpointed backward with the head in chunks of `chunk` positions.
fn checkpointed(vs: &VarStore, model: &DeepseekV32, x: &Inputs, chunk: i64) -> (Vec<(String, Tensor)>, Tensor, Tensor) {
    zero_grads(vs);
    let mut main = main_loss;
    let mut mtp = |logits: &[Tensor]| mtp_term(logits, &x.tokens);
    let mut indexer = indexer_term;
    let head = LossHead {
        main: Some(MainHead { targets: &x.targets, chunk, entropy: true, loss: &mut main }),
        mtp: Some(&mut mtp),
        indexer: Some(&mut indexer),
    };
    let out = model.backward_checkpointed(&x.tokens, options(x), head);
    assert_eq!(out.indexer.as_ref().unwrap().layers.len(), 4, "3 main layers and the MTP layer");
    (grads(vs), out.logp.unwrap(), out.entropy.unwrap())
}

fn zero_grads(vs: &VarStore) {
    for (_, t) in vs.variables() {
        let mut g = t.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
}

fn grads(vs: &VarStore) -> Vec<(String, Tensor)> {
    let copy = |g: Tensor| if g.defined() { g.copy() } else { g };
    let mut all: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(n, t)| (n, copy(t.grad()))).collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

/// The head's parameters (lm_head, final norm, the MTP module) and every indexer (which reads its
/// layer's detached inputs) get the plain gradients bit for bit. The others match to float
/// rounding: a hidden state's gradient is a sum of three or more contributions (the RMSNorm's two
/// uses, the residual, MTP's read of h_L), which the autograd engine adds in the order they arrive;
/// one graph per layer (a leaf input instead of the previous layer's node) need not keep that
/// order, and which order the plain graph takes changes with libtorch's thread count. Measured:
/// ≤ 1e-6 of each tensor's largest entry (f32 eps 1.2e-7); the bound is 4e-6.
#[test]
fn layer_recompute_gives_the_plain_gradients() {
    let (vs, model) = tiny();
    let x = inputs(&model);
    let (want, logp, entropy) = plain(&vs, &model, &x);
    let (got, logp_c, entropy_c) = checkpointed(&vs, &model, &x, 1000);
    assert!(logp.equal(&logp_c) && entropy.equal(&entropy_c), "log-probs and entropies differ");
    let mass = |g: &Tensor| if g.defined() { g.abs().sum(Kind::Double).double_value(&[]) } else { 0.0 };
    let exact =
        |n: &str| n == "lm_head.weight" || n == "model.norm.weight" || n.contains("layers.3.") || n.contains("indexer");
    let mut reached = 0;
    for ((name, a), (_, b)) in want.iter().zip(&got) {
        assert_eq!(a.defined(), b.defined(), "{name}: gradient defined in one backward only");
        if !a.defined() {
            continue;
        }
        let rel = (a - b).abs().max().double_value(&[]) / a.abs().max().double_value(&[]).max(1e-30);
        match exact(name) {
            true => assert!(a.equal(b), "{name}: not bit for bit, max |Δ| / max |g| = {rel:e}"),
            false => assert!(rel <= 4e-6, "{name}: max |Δ| / max |g| = {rel:e}"),
        }
        reached += (mass(a) > 0.0) as usize;
    }
    // Every part of the model: embedding, layers (indexers included), head, MTP.
    for part in ["embed_tokens", "layers.0.", "layers.2.mlp.experts", "indexer.wk", "lm_head", "layers.3.eh_proj"] {
        assert!(want.iter().any(|(n, g)| n.contains(part) && mass(g) > 0.0), "{part} got no gradient");
    }
    assert!(reached > 50, "only {reached} parameters got a gradient");
}

/// In chunks of 7 positions the lm_head and final-norm gradients are sums of 6 partial products
/// instead of one (B·T−row) GEMM: the same float sum, associated differently. Every gradient
/// downstream inherits that rounding, so the bound is relative to each tensor's magnitude: 1e-5 of
/// its largest entry (f32 eps is 1.2e-7; sums over ≤ 80 rows reassociated, then 3 layers).
#[test]
fn chunked_head_gives_the_plain_gradients_within_rounding() {
    let (vs, model) = tiny();
    let x = inputs(&model);
    let (want, logp, entropy) = plain(&vs, &model, &x);
    let (got, logp_c, entropy_c) = checkpointed(&vs, &model, &x, 7);
    let close = |a: &Tensor, b: &Tensor| {
        let scale = a.abs().max().double_value(&[]).max(1e-30);
        (a - b).abs().max().double_value(&[]) / scale
    };
    assert!(close(&logp, &logp_c) < 1e-6 && close(&entropy, &entropy_c) < 1e-6);
    for ((name, a), (_, b)) in want.iter().zip(&got) {
        if a.defined() {
            let rel = close(a, b);
            assert!(rel <= 1e-5, "{name}: max |Δ| / max |g| = {rel:e}");
        }
    }
}

/// The frozen reference's log-probs in chunks (`target_logprobs_chunked`, no autograd) against the
/// plain forward's: bit for bit in one chunk, to rounding (1e-6 of the largest) in chunks of 7.
#[test]
fn chunked_reference_logprobs_equal_the_plain_ones() {
    let (_, model) = tiny();
    let x = inputs(&model);
    let opts = || ForwardOptions {
        replay: Some(&x.replay),
        vocab_mask: Some(&x.mask),
        ..ForwardOptions::new(AttentionMode::Sparse)
    };
    let want = tch::no_grad(|| {
        let logits = model.run(&x.tokens, opts()).logits;
        logits.narrow(1, 0, 39).log_softmax(-1, Kind::Float).gather(-1, &x.targets.unsqueeze(-1), false).squeeze_dim(-1)
    });
    let whole = model.target_logprobs_chunked(&x.tokens, opts(), &x.targets, 1000);
    assert!(whole.equal(&want), "one chunk: {}", (&whole - &want).abs().max().double_value(&[]));
    let chunked = model.target_logprobs_chunked(&x.tokens, opts(), &x.targets, 7);
    let scale = want.abs().max().double_value(&[]);
    assert!((&chunked - &want).abs().max().double_value(&[]) <= 1e-6 * scale);
    assert!(!whole.requires_grad() && !chunked.requires_grad());
}

/// `head_from = 10`: the head over positions 10.. only. Its logits are the full forward's rows
/// 10.. (the same hidden states, the lm_head GEMM over fewer rows: equal to rounding, 1e-6 of the
/// largest); a loss on those positions gives the gradients the full head gives it (1e-5 relative,
/// the lm_head and norm gradients summed over fewer rows, no terms at rows < 10 either way); the
/// checkpointed backward and the chunked reference take the same offset.
#[test]
fn a_head_from_an_offset_scores_only_the_tail() {
    let (vs, model) = tiny();
    let x = inputs(&model);
    let from = 10;
    let targets = x.targets.narrow(1, from, 39 - from); // (B, 29): target of position from + i
    let tail_mask = x.mask.narrow(from, 40 - from);
    let full_opts = || ForwardOptions {
        replay: Some(&x.replay),
        vocab_mask: Some(&x.mask),
        ..ForwardOptions::new(AttentionMode::Sparse)
    };
    let tail_opts = || ForwardOptions {
        replay: Some(&x.replay),
        vocab_mask: Some(&tail_mask),
        head_from: from,
        ..ForwardOptions::new(AttentionMode::Sparse)
    };
    let close = |a: &Tensor, b: &Tensor| {
        let scale = a.abs().max().double_value(&[]).max(1e-30);
        (a - b).abs().max().double_value(&[]) / scale
    };
    let score = |logits: &Tensor| {
        let n = targets.size()[1];
        logits.narrow(1, 0, n).log_softmax(-1, Kind::Float).gather(-1, &targets.unsqueeze(-1), false).squeeze_dim(-1)
    };
    let run = |opts: ForwardOptions<'_>, skip: i64| {
        zero_grads(&vs);
        let logits = model.run(&x.tokens, opts).logits;
        let logp = score(&logits.narrow(1, skip, logits.size()[1] - skip));
        main_loss(&logp).backward();
        (logits.detach(), logp.detach(), grads(&vs))
    };
    let (full_logits, want_logp, want) = run(full_opts(), from);
    let (tail_logits, logp, got) = run(tail_opts(), 0);
    assert_eq!(tail_logits.size(), [2, 40 - from, full_logits.size()[2]]);
    let finite = |t: &Tensor| t.masked_fill(&t.isinf(), 0.0);
    assert!(close(&finite(&full_logits.narrow(1, from, 40 - from)), &finite(&tail_logits)) <= 1e-6);
    assert!(close(&want_logp, &logp) <= 1e-6);
    for ((name, a), (_, b)) in want.iter().zip(&got) {
        assert_eq!(a.defined(), b.defined(), "{name}");
        if a.defined() {
            assert!(close(a, b) <= 1e-5, "{name}: max |Δ| / max |g| = {:e}", close(a, b));
        }
    }
    // Checkpointed, the same offset: the same log-probs and gradients as the plain trimmed head.
    zero_grads(&vs);
    let mut main = main_loss;
    let head = LossHead {
        main: Some(MainHead { targets: &targets, chunk: 1000, entropy: false, loss: &mut main }),
        mtp: None,
        indexer: None,
    };
    let out = model.backward_checkpointed(&x.tokens, tail_opts(), head);
    assert!(close(&logp, &out.logp.unwrap()) <= 1e-6);
    for ((name, a), (_, b)) in got.iter().zip(&grads(&vs)) {
        if a.defined() {
            assert!(close(a, b) <= 4e-6, "{name}: checkpointed max |Δ| / max |g| = {:e}", close(a, b));
        }
    }
    // The frozen reference in chunks of 7 from the same offset.
    let chunked = model.target_logprobs_chunked(&x.tokens, tail_opts(), &targets, 7);
    assert!(close(&logp, &chunked) <= 1e-6);
}
