//! `run.activation_checkpointing = "layer"` against the plain backward, through the trainer's own
//! losses on the tiny preset (3 layers, MoE, indexer, one MTP layer): pretrain (with λ·MTP), SFT
//! (response mask), the DSA warm-up and sparse stage (indexer KL + LM + MTP), and a GRPO
//! micro-batch with keep routing, keep sampling mask, the KL term and sparse attention's indexer
//! loss. The figures are the same numbers; every parameter gets the same gradient to float
//! rounding.
//!
//! Why not bit for bit: the head's own parameters and the indexers do match exactly
//! (model/tests/recompute.rs), but a hidden state's gradient is a sum of three or more
//! contributions (an RMSNorm's two uses, the residual, MTP's read of h_L) that the autograd engine
//! adds in arrival order, which one graph per layer need not keep. Measured ≤ 1e-6 of each
//! tensor's largest entry; the bound is 4e-6 (f32 eps 1.2e-7).

use rlvr_model::{AttentionMode, Checkpointing, Dtype, ModelConfig};
use rlvr_rollout::engine::{SamplingParams, Sizing};
use rlvr_trainer::data::write_arithmetic_tokenizer;
use rlvr_trainer::grpo::{AdvantageMode, LossConfig};
use rlvr_trainer::parallel::Dp;
use rlvr_trainer::policy::{Policy, Source};
use rlvr_trainer::recipe::Algorithm;
use rlvr_trainer::sampler::{Sampler, Settings};
use rlvr_trainer::stages::grpo::Update;
use rlvr_trainer::stages::grpo_batch::{group_rows, Row};
use rlvr_trainer::stages::lm::{self, LmMetrics, Objective, Weights};
use rlvr_trainer::stages::lm_recompute;
use std::path::Path;
use tch::{Device, Kind, Tensor};

const BOUND: f64 = 4e-6;

/// The tiny preset with its MTP module at random init, every parameter trainable.
fn policy(dir: &Path) -> Policy {
    tch::set_num_threads(2);
    let preset = Path::new(env!("CARGO_MANIFEST_DIR")).join("../presets/tiny");
    let config = ModelConfig::from_path(&preset).expect("tiny preset");
    write_arithmetic_tokenizer(dir).expect("tokenizer");
    let policy = Policy::build(&Source::Init { config, seed: 7 }, dir, true, Device::Cpu, Dtype::F32).expect("policy");
    policy.set_trainable(|_| true);
    policy
}

/// Every parameter's gradient (a copy), then all of them zeroed.
fn take_grads(policy: &Policy) -> Vec<(String, Option<Tensor>)> {
    policy
        .named()
        .into_iter()
        .map(|(n, t)| {
            let mut g = t.grad();
            let copy = g.defined().then(|| g.copy());
            if g.defined() {
                let _ = g.zero_();
            }
            (n, copy)
        })
        .collect()
}

/// Asserts the two gradient sets agree within [`BOUND`]; how many parameters got a gradient.
fn assert_same(want: &[(String, Option<Tensor>)], got: &[(String, Option<Tensor>)], what: &str) -> usize {
    let mut reached = 0;
    for ((name, a), (_, b)) in want.iter().zip(got) {
        let (a, b) = match (a, b) {
            (Some(a), Some(b)) => (a, b),
            (None, None) => continue,
            _ => panic!("{what}: {name} has a gradient in one backward only"),
        };
        let scale = a.abs().max().double_value(&[]);
        let diff = (a - b).abs().max().double_value(&[]);
        assert!(diff <= BOUND * scale, "{what}: {name}: max |Δ| = {diff:e}, max |g| = {scale:e}");
        reached += usize::from(scale > 0.0);
    }
    reached
}

fn assert_same_figures(a: &LmMetrics, b: &LmMetrics, what: &str) {
    let fig = |m: &LmMetrics| (m.lm_loss, m.mtp_loss, m.indexer_kl, m.recall, m.loss);
    assert_eq!(fig(a), fig(b), "{what}: the figures differ");
}

/// One supervised objective: plain and checkpointed gradients and figures agree.
fn check(policy: &Policy, objective: Objective, tokens: &Tensor, mask: Option<&Tensor>, what: &str) -> usize {
    let w = Weights { rows: 0.75, response: 0.6 };
    let (loss, plain) = lm::loss(policy, objective, tokens, mask, w);
    loss.backward();
    let want = take_grads(policy);
    let recomputed = lm_recompute::backward(policy, objective, tokens, mask, w);
    let got = take_grads(policy);
    assert_same_figures(&plain, &recomputed, what);
    assert_same(&want, &got, what)
}

/// Two rows of 48 tokens: more than index_topk = 16, so the sparse selection is a strict subset.
fn tokens() -> Tensor {
    tch::manual_seed(1);
    Tensor::randint_low(2, 500, [2, 48], (Kind::Int64, Device::Cpu)) // (B, T)
}

#[test]
fn pretrain_and_sft_losses() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy(dir.path());
    let tokens = tokens();
    let pretrain = Objective::Pretrain { mode: AttentionMode::Dense, mtp_weight: 0.3 };
    assert!(check(&policy, pretrain, &tokens, None, "pretrain") > 60);
    let mask = Tensor::ones([2, 47], (Kind::Float, Device::Cpu));
    let _ = mask.narrow(1, 0, 20).fill_(0.0);
    let sft = Objective::Sft { mode: AttentionMode::Sparse, mtp_weight: 0.0 };
    assert!(check(&policy, sft, &tokens, Some(&mask), "sft") > 50);
}

#[test]
fn dsa_stage_losses() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy(dir.path());
    let tokens = tokens();
    let indexer_params = policy.model.indexer_parameter_names().len();
    // The warm-up's KL reaches the indexers only (all 4 layers' 5 tensors).
    assert_eq!(check(&policy, Objective::IndexerWarmup, &tokens, None, "indexer_warmup"), indexer_params);
    let sparse = Objective::SparseTrain { indexer_weight: 0.5, mtp_weight: 0.3 };
    assert!(check(&policy, sparse, &tokens, None, "sparse_train") > 60 + indexer_params);
}

/// Groups of 2 samples for two prompts longer than index_topk, with kept sets (top-p 0.9) and the
/// routing recorded.
fn sampled_rows(policy: &Policy) -> Vec<Row> {
    let prompts: Vec<Vec<i64>> = vec![(0..24).map(|i| 3 + (i * 7) % 40).collect(), (0..19).map(|i| 5 + i).collect()];
    let mut sampler =
        Sampler::new(policy, 4, Sizing::explicit("slots", "max_tokens"), 8, AttentionMode::Sparse, 0).expect("sampler");
    let settings = Settings {
        n: 2,
        sampling: SamplingParams { max_tokens: 8, top_p: 0.9, ..SamplingParams::default() },
        sampling_mask: true,
        routing: true,
    };
    let outputs = sampler.sample(&prompts, &settings, 42, 0).expect("samples");
    let mut rows = Vec::new();
    for (prompt, out) in prompts.iter().zip(&outputs) {
        rows.extend(group_rows(&policy.model, prompt, out, &[1.0, 0.0], AdvantageMode::Mean));
    }
    rows
}

#[test]
fn grpo_loss_with_keep_routing_and_sparse_attention() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy(dir.path());
    let rows = sampled_rows(&policy);
    assert!(rows.iter().all(|r| r.replay.is_some()), "the routing was recorded");
    assert!(rows.iter().any(|r| r.kept.iter().any(|k| !k.is_empty())), "some kept sets are truncated");
    let refs: Vec<&Row> = rows.iter().collect();
    // The reference: the policy itself (the KL term's gradient is not zero: the unbiased
    // estimator's is, at π_ref = π_θ, only in expectation).
    let algorithm = Algorithm {
        loss: LossConfig { kl_coef: 0.05, off_policy_delta: Some(1.0), ..LossConfig::default() },
        ..Algorithm::default()
    };
    let dp = Dp::single();
    let update = |checkpointing| Update {
        policy: &policy,
        reference: Some(&policy.model),
        algorithm: &algorithm,
        micro_batch: 0,
        mode: AttentionMode::Sparse,
        checkpointing,
        dp: &dp,
    };
    let mut finite = true;
    let (stats, entropy) = update(Checkpointing::None).backward(&refs, 0.5, &mut finite);
    let want = take_grads(&policy);
    let (stats_c, entropy_c) = update(Checkpointing::Layer).backward(&refs, 0.5, &mut finite);
    let got = take_grads(&policy);
    assert!(finite);
    assert_eq!((stats, entropy), (stats_c, entropy_c), "the figures differ");
    let reached = assert_same(&want, &got, "grpo");
    assert!(reached > 60, "only {reached} parameters got a gradient");
}
