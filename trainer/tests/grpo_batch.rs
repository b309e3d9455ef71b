//! The batch phase of a GRPO step checked against the engine's own records: completions sampled
//! by the colocated engine become rows whose response offsets, kept sets and routing replay line
//! up with what the engine recorded, and the first (on-policy) minibatch's importance ratio is 1
//! with nothing clipped — with the rows as rows and with each group's prompt shared in a tree.

use rlvr_model::{AttentionMode, Dtype, ForwardOptions, ModelConfig};
use rlvr_rollout::engine::{SamplingParams, Sizing};
use rlvr_trainer::data::write_arithmetic_tokenizer;
use rlvr_trainer::grpo::{self, AdvantageMode, LossConfig, LossInputs};
use rlvr_trainer::policy::{Policy, Source};
use rlvr_trainer::sampler::{Sampler, Settings};
use rlvr_trainer::stages::grpo_batch::{group_rows, Batch, Layout, Row};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The tiny preset (3 layers, the last two MoE) at random init, on the CPU.
fn policy(dir: &Path) -> Policy {
    let preset = Path::new(env!("CARGO_MANIFEST_DIR")).join("../presets/tiny");
    let config = ModelConfig::from_path(&preset).expect("tiny preset");
    write_arithmetic_tokenizer(dir).expect("tokenizer");
    Policy::build(&Source::Init { config, seed: 11 }, dir, false, Device::Cpu, Dtype::F32).expect("policy")
}

/// Groups of 3 samples for prompts of different lengths, with kept sets (top-p 0.9) and routing
/// recorded; rows in prompt order.
fn sampled_rows(policy: &Policy) -> Vec<Row> {
    let prompts: Vec<Vec<i64>> = vec![vec![0, 5, 9, 12], vec![0, 7, 3, 8, 20, 4, 6], vec![0, 30]];
    let mut sampler =
        Sampler::new(policy, 9, Sizing::explicit("slots", "max_tokens"), 8, AttentionMode::Dense, 0).expect("sampler");
    let settings = Settings {
        n: 3,
        sampling: SamplingParams { max_tokens: 8, top_p: 0.9, ..SamplingParams::default() },
        sampling_mask: true,
        routing: true,
    };
    let outputs = sampler.sample(&prompts, &settings, 42, 0).expect("samples");
    let mut rows = Vec::new();
    for (prompt, out) in prompts.iter().zip(&outputs) {
        rows.extend(group_rows(&policy.model, prompt, out, &[1.0, 0.0, 0.5], AdvantageMode::Mean));
    }
    rows
}

#[test]
fn rows_line_up_with_the_engine_records() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy(dir.path());
    let rows = sampled_rows(&policy);
    let refs: Vec<&Row> = rows.iter().collect();
    let k = policy.config.num_experts_per_tok as i64;
    let batch = Batch::new(&refs, k, Device::Cpu, Layout::Rows);
    let l = batch.inputs.size()[1] as usize;
    assert_eq!(l, rows.iter().map(|r| r.tokens.len()).max().unwrap() - 1);
    // The head starts where the earliest completion token is predicted.
    let from = rows.iter().map(|r| r.prompt_len).min().unwrap() - 1;
    assert_eq!(batch.head_from, from as i64);
    let hl = l - from; // the head's positions
    assert_eq!(batch.targets.size(), [rows.len() as i64, hl as i64]);

    let mask = Vec::<f32>::try_from(batch.mask.flatten(0, -1)).unwrap();
    let old = Vec::<f32>::try_from(batch.logp_old.flatten(0, -1)).unwrap();
    let targets = Vec::<i64>::try_from(batch.targets.flatten(0, -1)).unwrap();
    let real = Vec::<bool>::try_from(batch.real.flatten(0, -1)).unwrap();
    let completion_tokens: usize = rows.iter().map(|r| r.logp_old.len()).sum();
    assert_eq!(mask.iter().filter(|&&m| m == 1.0).count(), completion_tokens, "one masked position per token");
    for (r, row) in rows.iter().enumerate() {
        let (p, c) = (row.prompt_len, row.logp_old.len());
        assert_eq!(row.tokens.len(), p + c);
        for i in 0..l {
            assert_eq!(real[r * l + i], i + 1 < p + c, "row {r} position {i}: real");
            let response = i + 1 >= p && i + 1 < p + c;
            if i < from {
                assert!(!response, "row {r} position {i}: a response before the head's first position");
                continue;
            }
            let at = r * hl + i - from;
            assert_eq!(mask[at] == 1.0, response, "row {r} position {i}: mask");
            if response {
                let j = i + 1 - p;
                assert_eq!(targets[at], row.tokens[p + j], "row {r}: target of completion token {j}");
                assert_eq!(old[at], row.logp_old[j], "row {r}: π_old of completion token {j}");
            } else {
                assert_eq!(old[at], 0.0);
            }
        }
    }

    // π_old recomputed independently: each row alone, a plain forward, the log-softmax
    // renormalised over the token's kept set (top-p at temperature 1).
    let mut worst = 0f64;
    for row in &rows {
        let ids = Tensor::from_slice(&row.tokens[..row.tokens.len() - 1]).unsqueeze(0);
        let logp = tch::no_grad(|| policy.model.run(&ids, ForwardOptions::new(AttentionMode::Dense)).logits)
            .log_softmax(-1, Kind::Double)
            .squeeze_dim(0); // (P+C−1, V)
        for (j, kept) in row.kept.iter().enumerate() {
            let pos = logp.get((row.prompt_len - 1 + j) as i64);
            assert!(!kept.is_empty(), "top-p 0.9 records the kept set");
            assert!(kept.contains(&row.tokens[row.prompt_len + j]), "the sampled token is in its kept set");
            let kept_t = Tensor::from_slice(kept);
            let norm = pos.index_select(0, &kept_t).logsumexp([0], false).double_value(&[]);
            let want = pos.double_value(&[row.tokens[row.prompt_len + j]]) - norm;
            worst = worst.max((want - row.logp_old[j] as f64).abs());
        }
    }
    assert!(worst < 1e-4, "engine log-probs differ from the recomputed ones by {worst}");

    // Kept sets sit at the response positions, each once (no padding); other positions keep
    // everything.
    let Some(rlvr_model::VocabMask::Kept(kept)) = &batch.vocab_mask else { panic!("kept sets recorded") };
    assert_eq!(kept.shape(), (rows.len(), hl));
    assert_eq!(kept.total_ids(), rows.iter().flat_map(|r| &r.kept).map(Vec::len).sum::<usize>());
    for (r, row) in rows.iter().enumerate() {
        for i in from..l {
            let want: &[i64] = match (i + 1).checked_sub(row.prompt_len) {
                Some(j) if j < row.kept.len() => &row.kept[j],
                _ => &[],
            };
            assert_eq!(kept.set(r, i - from), want, "row {r} position {i}: kept set");
        }
    }

    // The replay holds the engine's routing at every real position: the same experts the
    // training forward's own router picks there (weights are the same).
    let replay = batch.replay.as_ref().expect("routing recorded");
    let plain = tch::no_grad(|| policy.model.run(&batch.inputs, ForwardOptions::new(AttentionMode::Dense)));
    let own = plain.expert_ids();
    let mut moe_layers = 0;
    for (layer, (rec, mine)) in replay.iter().zip(&own).enumerate() {
        let (Some(rec), Some(mine)) = (rec, mine) else {
            assert!(rec.is_none() && mine.is_none(), "layer {layer}: dense in both");
            continue;
        };
        moe_layers += 1;
        assert_eq!(rec.size(), [rows.len() as i64, l as i64, k]);
        let (rec, _) = rec.sort(-1, false);
        let (mine, _) = mine.sort(-1, false);
        for (r, row) in rows.iter().enumerate() {
            let n = (row.tokens.len() - 1) as i64;
            let a = rec.get(r as i64).narrow(0, 0, n);
            let b = mine.get(r as i64).narrow(0, 0, n);
            assert!(a.equal(&b), "layer {layer} row {r}: replayed experts differ from the router's own");
        }
    }
    assert_eq!(moe_layers, 2);
}

#[test]
fn first_minibatch_is_on_policy() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy(dir.path());
    let rows = sampled_rows(&policy);
    let refs: Vec<&Row> = rows.iter().collect();
    for layout in [Layout::Rows, Layout::Trees] {
        let batch = Batch::new(&refs, policy.config.num_experts_per_tok as i64, Device::Cpu, layout);
        assert_eq!(batch.packing.is_some(), layout == Layout::Trees, "3 groups of 3 rows pack into 3 trees");
        if layout == Layout::Trees {
            assert_eq!(batch.inputs.size()[0], 3);
        }
        on_policy(&policy, &batch, &format!("{layout:?}"));
    }
}

/// The policy's log-probs of the batch's targets (its own forward, dense) and the GRPO loss.
fn batch_loss(policy: &Policy, batch: &Batch, cfg: &LossConfig) -> (Tensor, grpo::LossOutput) {
    let logits = policy.model.run(&batch.inputs, batch.options(AttentionMode::Dense)).logits;
    let (logp, _) = batch.target_logprobs(&logits);
    let inputs = LossInputs {
        logp: &logp,
        logp_old: &batch.logp_old,
        logp_ref: None,
        advantages: &batch.advantages,
        mask: &batch.mask,
    };
    let out = grpo::grpo_loss(&inputs, cfg);
    (logp, out)
}

/// The batch's first forward reproduces the engine's log-probs: every ratio is 1.
fn on_policy(policy: &Policy, batch: &Batch, layout: &str) {
    let (logp, out) =
        batch_loss(policy, batch, &LossConfig { clip_low: 0.2, clip_high: 0.28, ..LossConfig::default() });
    let s = out.stats;
    // The engine decodes with its own matrix kernel (a different summation order from the
    // training forward's GEMM), so "exactly 1" holds to f32 rounding of the log-probs.
    assert!((s.ratio_mean - 1.0).abs() < 1e-5, "{layout}: ratio mean {}", s.ratio_mean);
    let ratio: Tensor = (&logp - &batch.logp_old).exp() * &batch.mask + (-&batch.mask + 1.0);
    let spread = (ratio - 1.0).abs().max().double_value(&[]);
    assert!(spread < 1e-4, "{layout}: every token's ratio is 1 (largest |r − 1| = {spread})");
    let clipped = (s.clip_low_frac, s.clip_high_frac, s.masked_seq_frac);
    assert_eq!(clipped, (0.0, 0.0, 0.0), "{layout}: nothing is clipped");
}

#[test]
fn a_far_off_policy_token_keeps_the_loss_finite() {
    // One token whose log-ratio is 200: exp would overflow f32; the clamped ratio does not.
    let logp_old = Tensor::from_slice(&[-1.0f32, -201.0, -0.5, -2.0]).view([2, 2]);
    let logp = Tensor::from_slice(&[-1.0f32, -1.0, -0.5, -2.0]).view([2, 2]).set_requires_grad(true);
    let advantages = Tensor::from_slice(&[-1.0f32, 1.0]);
    let mask = Tensor::ones([2, 2], (Kind::Float, Device::Cpu));
    let inputs = LossInputs { logp: &logp, logp_old: &logp_old, logp_ref: None, advantages: &advantages, mask: &mask };
    let out = grpo::grpo_loss(&inputs, &LossConfig::default());
    assert!(out.loss.double_value(&[]).is_finite(), "loss {}", out.loss.double_value(&[]));
    out.loss.backward();
    let grad = logp.grad();
    assert!(bool::try_from(grad.isfinite().all()).unwrap(), "gradient {grad:?}");
    // Inside the bound nothing changes: tokens with ratio 1 still get −A/(N·|o_i|).
    let g = Vec::<f32>::try_from(grad.flatten(0, -1)).unwrap();
    assert_eq!((g[2], g[3]), (-0.25, -0.25));
    assert!(g[1] == 0.0, "the clamped token has no gradient, got {}", g[1]);
}

/// The GRPO loss of the sampled rows gives every parameter the same gradient with each group's
/// prompt shared in a tree as with one row per sequence (to f32 rounding: 1e-4 of each tensor's
/// largest entry), routing replay and kept sets included.
#[test]
fn trees_and_rows_give_the_same_gradients() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy(dir.path());
    let mut rows = sampled_rows(&policy);
    // Off-policy by a little, so the clips and the advantages all take part.
    for (r, row) in rows.iter_mut().enumerate() {
        row.logp_old.iter_mut().for_each(|lp| *lp += 0.05 * (r as f32 % 3.0 - 1.0));
    }
    let refs: Vec<&Row> = rows.iter().collect();
    let k = policy.config.num_experts_per_tok as i64;
    let grads = |layout: Layout| {
        let batch = Batch::new(&refs, k, Device::Cpu, layout);
        batch_loss(&policy, &batch, &LossConfig::default()).1.loss.backward();
        let mut out: Vec<(String, Tensor)> = policy
            .vs
            .variables()
            .into_iter()
            .filter(|(_, v)| v.grad().defined())
            .map(|(n, v)| (n, v.grad().copy()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        policy.vs.variables().into_values().for_each(|mut v| v.zero_grad());
        out
    };
    let (rows_grads, tree_grads) = (grads(Layout::Rows), grads(Layout::Trees));
    assert_eq!(rows_grads.len(), tree_grads.len());
    assert!(!rows_grads.is_empty());
    for ((name, a), (_, b)) in rows_grads.iter().zip(&tree_grads) {
        let scale = a.abs().max().double_value(&[]).max(1e-12);
        let d = (a - b).abs().max().double_value(&[]);
        assert!(d <= 1e-4 * scale, "{name}: gradients differ by {d:e} (largest entry {scale:e})");
    }
}
