//! One GRPO step (reference §3.3; DESIGN.md §6): sample a group of completions per prompt from the
//! colocated engine, judge them, turn group-relative rewards into advantages, then take
//! `epochs × minibatches` optimizer steps on the clipped objective with the V3.2 pieces the
//! recipe turns on — unbiased KL to a frozen reference, off-policy sequence masking against the
//! engine's own sampling log-probs (π_old), keep routing (the rollout's experts replayed in the
//! training forward) and keep sampling mask (π_θ renormalised over the rollout's kept sets) — and
//! publish the new weights to the engine.
//!
//! DAPO's dynamic sampling drops groups whose rewards are all equal (no signal) and samples more
//! prompts, at most `max_refills` times; its overlong penalty is added to the reward.
//!
//! Left out: asynchronous rollouts (sampling runs between updates, not beside them).

use crate::batch::pad_rows;
use crate::data::Dataset;
use crate::grpo::{self, LossInputs};
use crate::optim::{clip_grad_norm, AdamW};
use crate::policy::Policy;
use crate::sampler::{Sampler, Settings};
use crate::stages::eval::prompt_ids;
use anyhow::Result;
use rlvr_model::{AttentionMode, DeepseekV32, ForwardOptions, IndexerStage, VocabMask};
use rlvr_rollout::engine::RequestOutput;
use rlvr_verifiers::{score_batch, Outcome, Verifier};
use serde_json::{json, Map, Value};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// One sampled sequence, ready for training.
struct Row {
    /// Prompt then completion ids.
    tokens: Vec<i64>,
    /// Prompt length P.
    prompt_len: usize,
    /// The engine's log-prob of each completion token (π_old).
    logp_old: Vec<f32>,
    /// Each completion token's kept set (empty = whole vocabulary).
    kept: Vec<Vec<i64>>,
    /// Per main layer, the rollout's experts over positions 0..P+C−1: (1, P+C−1, K).
    replay: Option<Vec<Option<Tensor>>>,
    /// Its group-relative advantage.
    advantage: f32,
}

/// What the step needs besides the policy and optimizer.
pub struct GrpoInputs<'a> {
    /// The colocated engine.
    pub sampler: &'a mut Sampler,
    /// The reward.
    pub verifier: &'a dyn Verifier,
    /// Training problems.
    pub data: &'a Dataset,
    /// The frozen KL reference (main model, no MTP), when the KL term is on.
    pub reference: Option<&'a DeepseekV32>,
    /// Sampling settings (n = group size).
    pub settings: Settings,
    /// Prompts per step.
    pub prompts: usize,
    /// The loss.
    pub loss: grpo::LossConfig,
    /// Advantage normalisation.
    pub advantage: grpo::AdvantageMode,
    /// Attention of rollout and training forwards.
    pub mode: AttentionMode,
    /// Dynamic sampling on, and how many extra prompt batches it may draw.
    pub dynamic_sampling: Option<usize>,
    /// DAPO overlong shaping: (buffer, penalty factor), off when the buffer is 0.
    pub overlong: (usize, f64),
    /// Optimizer passes over the batch, and minibatches per pass.
    pub epochs: usize,
    /// Minibatches per pass.
    pub minibatches: usize,
    /// Rows per backward (gradient accumulation); 0 = the whole minibatch.
    pub micro_batch: usize,
    /// Gradient-norm clip (0 = off).
    pub grad_clip: f64,
    /// Verifier threads.
    pub parallel: usize,
}

/// Runs one GRPO step at learning rate `lr`. `cursor` is the next training problem, `seed` the
/// step's sampling seed. Returns the step's metrics, or `None` in `skipped` form when the loss was
/// not finite (no update was applied; the caller counts it).
pub fn step(
    policy: &Policy,
    opt: &mut AdamW,
    inp: &mut GrpoInputs<'_>,
    lr: f64,
    cursor: &mut u64,
    seed: u64,
) -> Result<(Map<String, Value>, bool)> {
    let t0 = Instant::now();
    let g = inp.settings.n;
    // 1. Sample and judge groups, refilling when dynamic sampling drops some.
    let (mut rows, mut rewards_all, mut correct, mut judged, mut lens, mut errors) =
        (Vec::new(), Vec::new(), 0usize, 0usize, 0usize, 0usize);
    let (mut t_gen, mut t_score) = (0.0, 0.0);
    let mut generated = 0usize;
    let refills = inp.dynamic_sampling.unwrap_or(0);
    for round in 0..=refills {
        let missing = inp.prompts - rows.len() / g;
        if missing == 0 || (round > 0 && inp.dynamic_sampling.is_none()) {
            break;
        }
        let first = *cursor;
        let problems: Vec<_> = (0..inp.prompts as u64).map(|i| inp.data.train(first + i)).collect();
        *cursor += inp.prompts as u64;
        let prompts = problems.iter().map(|p| prompt_ids(policy, &p.prompt)).collect::<Result<Vec<_>>>()?;
        let tg = Instant::now();
        let outputs = inp.sampler.sample(&prompts, &inp.settings, seed, first as usize)?;
        t_gen += tg.elapsed().as_secs_f64();
        let ts = Instant::now();
        let mut items = Vec::new();
        for (p, out) in problems.iter().zip(&outputs) {
            for s in &out.samples {
                items.push((p.task.clone(), policy.decode(&s.ids())?));
            }
        }
        let verdicts = score_batch(inp.verifier, &items, inp.parallel);
        t_score += ts.elapsed().as_secs_f64();
        for v in verdicts.iter().filter(|v| v.outcome == Outcome::Error) {
            errors += 1;
            if errors == 1 {
                eprintln!("warning: the verifier failed on a completion (reward 0): {}", v.detail);
            }
        }
        for (gi, (prompt, out)) in prompts.iter().zip(&outputs).enumerate() {
            let verdicts = &verdicts[gi * g..(gi + 1) * g];
            let mut rewards: Vec<f32> = verdicts.iter().map(|v| v.reward).collect();
            for (r, s) in rewards.iter_mut().zip(&out.samples) {
                generated += s.tokens.len();
                if inp.overlong.0 > 0 {
                    *r +=
                        grpo::overlong_penalty(s.tokens.len(), inp.settings.max_tokens, inp.overlong.0, inp.overlong.1)
                            as f32;
                }
            }
            correct += verdicts.iter().filter(|v| v.outcome == Outcome::Correct).count();
            judged += g;
            lens += out.samples.iter().map(|s| s.tokens.len()).sum::<usize>();
            rewards_all.extend_from_slice(&rewards);
            let keep = inp.dynamic_sampling.is_none() || grpo::groups_with_signal(&rewards, g)[0];
            if keep && rows.len() / g < inp.prompts {
                rows.extend(group_rows(policy, prompt, out, &rewards, inp.advantage));
            }
        }
    }
    // 2. Optimise on the kept groups.
    let tt = Instant::now();
    let mut m = Map::new();
    let mut skipped = false;
    let mut sums = Sums::default();
    if !rows.is_empty() {
        let n = rows.len();
        let per_mb = n.div_ceil(inp.minibatches.max(1));
        for _ in 0..inp.epochs.max(1) {
            for mb in (0..n).step_by(per_mb) {
                let idx: Vec<usize> = (mb..(mb + per_mb).min(n)).collect();
                let chunk = if inp.micro_batch == 0 { idx.len() } else { inp.micro_batch };
                opt.zero_grad();
                let mut finite = true;
                for part in idx.chunks(chunk) {
                    let out = loss_of(policy, inp, &rows, part, policy.vs.device())?;
                    let scale = part.len() as f64 / idx.len() as f64;
                    finite &= out.0.double_value(&[]).is_finite();
                    if finite {
                        (&out.0 * scale).backward();
                    }
                    sums.add(&out.1, out.2, scale);
                }
                let params: Vec<Tensor> = opt.params().map(Tensor::shallow_clone).collect();
                let norm =
                    if inp.grad_clip > 0.0 { clip_grad_norm(&params, inp.grad_clip) } else { grad_norm(&params) };
                if !finite || !norm.is_finite() {
                    opt.zero_grad();
                    skipped = true;
                    continue;
                }
                sums.grad_norm += norm;
                sums.updates += 1;
                opt.step(lr);
            }
        }
    }
    let t_train = tt.elapsed().as_secs_f64();
    // 3. Publish the new weights.
    let tsync = Instant::now();
    if sums.updates > 0 {
        inp.sampler.sync(policy)?;
    }
    let t_sync = tsync.elapsed().as_secs_f64();
    let rewards = Tensor::from_slice(&rewards_all);
    let step_time = t0.elapsed().as_secs_f64();
    m.insert("reward".into(), json!(rewards.mean(Kind::Float).double_value(&[])));
    m.insert("reward_std".into(), json!(if rewards_all.len() > 1 { rewards.std(true).double_value(&[]) } else { 0.0 }));
    m.insert("accuracy".into(), json!(correct as f64 / judged.max(1) as f64));
    sums.write(&mut m);
    m.insert("lr".into(), json!(lr));
    m.insert("completion_len".into(), json!(lens as f64 / judged.max(1) as f64));
    m.insert("groups_kept".into(), json!(rows.len() / g));
    m.insert("verifier_errors".into(), json!(errors));
    m.insert("gen_s".into(), json!(t_gen));
    m.insert("score_s".into(), json!(t_score));
    m.insert("train_s".into(), json!(t_train));
    m.insert("sync_s".into(), json!(t_sync));
    m.insert("tok_per_s".into(), json!(generated as f64 / t_gen.max(1e-9)));
    m.insert("step_time".into(), json!(step_time));
    Ok((m, skipped))
}

/// A group's rows with their advantages.
fn group_rows(
    policy: &Policy,
    prompt: &[i64],
    out: &RequestOutput,
    rewards: &[f32],
    mode: grpo::AdvantageMode,
) -> Vec<Row> {
    let g = rewards.len() as i64;
    let adv = grpo::group_advantages(&Tensor::from_slice(rewards).view([1, g]), mode); // (1, G)
    let adv: Vec<f32> = Vec::<f32>::try_from(adv.flatten(0, -1)).expect("f32 advantages");
    out.samples
        .iter()
        .zip(adv)
        .map(|(s, advantage)| {
            let mut tokens = prompt.to_vec();
            tokens.extend(s.ids());
            Row {
                tokens,
                prompt_len: prompt.len(),
                logp_old: s.logprobs(),
                kept: s.tokens.iter().map(|t| t.kept.clone().unwrap_or_default()).collect(),
                replay: s.replay(&policy.model),
                advantage,
            }
        })
        .collect()
}

/// The loss of rows `part`, its statistics and the mean entropy of their response positions.
fn loss_of(
    policy: &Policy,
    inp: &GrpoInputs<'_>,
    rows: &[Row],
    part: &[usize],
    device: Device,
) -> Result<(Tensor, grpo::LossStats, f64)> {
    let rows: Vec<&Row> = part.iter().map(|&i| &rows[i]).collect();
    // Inputs are each row minus its last token; targets the row shifted by one.
    let inputs: Vec<Vec<i64>> = rows.iter().map(|r| r.tokens[..r.tokens.len() - 1].to_vec()).collect();
    let targets: Vec<Vec<i64>> = rows.iter().map(|r| r.tokens[1..].to_vec()).collect();
    let (x, _) = pad_rows(&inputs, 0, device); // (B, L)
    let (y, _) = pad_rows(&targets, 0, device); // (B, L)
    let (b, l) = (x.size()[0], x.size()[1]);
    let mut mask = vec![0f32; (b * l) as usize];
    let mut old = vec![0f32; (b * l) as usize];
    for (r, row) in rows.iter().enumerate() {
        for (j, lp) in row.logp_old.iter().enumerate() {
            let at = r * l as usize + row.prompt_len - 1 + j;
            mask[at] = 1.0;
            old[at] = *lp;
        }
    }
    let mask = Tensor::from_slice(&mask).view([b, l]).to_device(device); // (B, L)
    let logp_old = Tensor::from_slice(&old).view([b, l]).to_device(device); // (B, L)
    let adv: Vec<f32> = rows.iter().map(|r| r.advantage).collect();
    let advantages = Tensor::from_slice(&adv).to_device(device); // (B)
    let vocab_mask = kept_mask(&rows, l, device);
    let replay = replay_of(&rows, l, policy, device);
    // Sparse attention trains the indexer as the sparse stage does (post-training "employs sparse
    // attention in the same way", reference §3.2): its KL over the selected set, detached inputs.
    let stage = (inp.mode == AttentionMode::Sparse).then_some(IndexerStage::Sparse);
    let opts = ForwardOptions {
        vocab_mask: vocab_mask.as_ref(),
        replay: replay.as_deref(),
        indexer_loss: stage,
        ..ForwardOptions::new(inp.mode)
    };
    let forward = policy.model.run(&x, opts);
    let logits = &forward.logits; // (B, L, V)
    let logp_all = logits.log_softmax(-1, Kind::Float); // (B, L, V)
    let logp = logp_all.gather(-1, &y.unsqueeze(-1), false).squeeze_dim(-1); // (B, L)
    let entropy = tch::no_grad(|| {
        let finite = logp_all.masked_fill(&logp_all.isinf(), 0.0);
        let h = -(logp_all.exp() * finite).sum_dim_intlist(-1, false, Kind::Float); // (B, L)
        ((h * &mask).sum(Kind::Float) / mask.sum(Kind::Float).clamp_min(1.0)).double_value(&[])
    });
    let logp_ref = inp.reference.map(|reference| {
        tch::no_grad(|| {
            let opts = ForwardOptions {
                vocab_mask: vocab_mask.as_ref(),
                replay: replay.as_deref(),
                ..ForwardOptions::new(inp.mode)
            };
            let lg = reference.run(&x, opts).logits.log_softmax(-1, Kind::Float); // (B, L, V)
            lg.gather(-1, &y.unsqueeze(-1), false).squeeze_dim(-1) // (B, L)
        })
    });
    let out = grpo::grpo_loss(
        &LossInputs {
            logp: &logp,
            logp_old: &logp_old,
            logp_ref: logp_ref.as_ref(),
            advantages: &advantages,
            mask: &mask,
        },
        &inp.loss,
    );
    let real = Tensor::from_slice(&real_positions(&rows, l)).view([b, l]).to_device(device); // (B, L)
    let loss = match &forward.indexer {
        Some(losses) => out.loss + losses.total(Some(&real)),
        None => out.loss,
    };
    Ok((loss, out.stats, entropy))
}

/// Which of the (B, L) input positions hold real tokens (not padding).
fn real_positions(rows: &[&Row], l: i64) -> Vec<bool> {
    rows.iter().flat_map(|r| (0..l as usize).map(move |i| i + 1 < r.tokens.len())).collect()
}

/// The rows' kept sets as a vocabulary mask over (B, L) positions; `None` when nothing was truncated.
fn kept_mask(rows: &[&Row], l: i64, device: Device) -> Option<VocabMask> {
    let widest = rows.iter().flat_map(|r| r.kept.iter().map(Vec::len)).max().unwrap_or(0);
    if widest == 0 {
        return None;
    }
    let b = rows.len();
    let mut ids = vec![-1i64; b * l as usize * widest];
    for (r, row) in rows.iter().enumerate() {
        for (j, kept) in row.kept.iter().enumerate() {
            let at = (r * l as usize + row.prompt_len - 1 + j) * widest;
            ids[at..at + kept.len()].copy_from_slice(kept);
        }
    }
    let ids = Tensor::from_slice(&ids).view([b as i64, l, widest as i64]).to_device(device); // (B, L, K)
    Some(VocabMask::Kept(ids))
}

/// The rows' recorded routings stacked per layer, padded to L positions with experts 0..K.
fn replay_of(rows: &[&Row], l: i64, policy: &Policy, device: Device) -> Option<Vec<Option<Tensor>>> {
    let per_row: Vec<&Vec<Option<Tensor>>> = rows.iter().map(|r| r.replay.as_ref()).collect::<Option<_>>()?;
    let k = policy.config.num_experts_per_tok as i64;
    let layers = per_row[0].len();
    Some(
        (0..layers)
            .map(|layer| {
                per_row[0][layer].as_ref()?;
                let parts: Vec<Tensor> = per_row
                    .iter()
                    .map(|r| {
                        let t = r[layer].as_ref().expect("every row routes the same layers").to_device(device); // (1, n, K)
                        let n = t.size()[1];
                        let pad = Tensor::arange(k, (Kind::Int64, device)).view([1, 1, k]).expand([1, l - n, k], true);
                        Tensor::cat(&[t, pad], 1) // (1, L, K)
                    })
                    .collect();
                Some(Tensor::cat(&parts, 0)) // (B, L, K)
            })
            .collect(),
    )
}

/// The global L2 norm of the gradients.
fn grad_norm(params: &[Tensor]) -> f64 {
    let sq: f64 = params
        .iter()
        .filter(|p| p.grad().defined())
        .map(|p| p.grad().to_kind(Kind::Double).square().sum(Kind::Double).double_value(&[]))
        .sum();
    sq.sqrt()
}

/// Running sums of the loss statistics over a step's micro-batches.
#[derive(Default)]
struct Sums {
    weight: f64,
    loss: f64,
    kl: f64,
    clip_low: f64,
    clip_high: f64,
    masked: f64,
    ratio: f64,
    entropy: f64,
    grad_norm: f64,
    updates: usize,
}

impl Sums {
    fn add(&mut self, s: &grpo::LossStats, entropy: f64, w: f64) {
        self.weight += w;
        self.loss += w * s.pg_loss;
        self.kl += w * s.kl_mean;
        self.clip_low += w * s.clip_low_frac;
        self.clip_high += w * s.clip_high_frac;
        self.masked += w * s.masked_seq_frac;
        self.ratio += w * s.ratio_mean;
        self.entropy += w * entropy;
    }

    fn write(&self, m: &mut Map<String, Value>) {
        let w = self.weight.max(1e-12);
        m.insert("loss".into(), json!(self.loss / w));
        m.insert("kl".into(), json!(self.kl / w));
        m.insert("clip_low".into(), json!(self.clip_low / w));
        m.insert("clip_high".into(), json!(self.clip_high / w));
        m.insert("masked_seq_frac".into(), json!(self.masked / w));
        m.insert("ratio_mean".into(), json!(self.ratio / w));
        m.insert("entropy".into(), json!(self.entropy / w));
        m.insert("grad_norm".into(), json!(self.grad_norm / self.updates.max(1) as f64));
        m.insert("updates".into(), json!(self.updates));
    }
}
