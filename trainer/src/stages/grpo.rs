//! One GRPO step (see `docs/architecture.md` and `docs/model.md` for the formulas), along its data
//! flow:
//!
//! 1. **collect**: sample a group of completions per prompt from the colocated engine and judge
//!    them ([`crate::sampler::sample_and_judge`], shared with eval); DAPO's dynamic sampling drops
//!    groups whose rewards are all equal (no signal) and samples more prompts, at most
//!    `max_refills` times; its overlong penalty is added to the reward;
//! 2. **batch**: group-relative advantages and training rows ([`super::grpo_batch`]);
//! 3. **update**: `epochs × minibatches` optimizer steps on the clipped objective with the V3.2
//!    pieces the recipe turns on — unbiased KL to a frozen reference, off-policy sequence masking
//!    against the engine's own sampling log-probs (π_old), keep routing (the rollout's experts
//!    replayed in the training forward) and keep sampling mask (π_θ renormalised over the
//!    rollout's kept sets) — each through [`Optimizer::step`], as every stage;
//! 4. **sync**: publish the new weights to the engine, whose version is the policy version.
//!
//! The rollouts come from the colocated engine or, with `[rollout] backend = "service"`, from
//! `rlvr serve` servers ([`crate::pool`]); then `max_staleness = k ≥ 1` makes the servers sample
//! the next k steps' groups while this step trains ([`super::grpo_ahead`]), and a group with a
//! token more than k versions behind the trainer is discarded.

use super::grpo_ahead::{Ahead, ServiceMetrics, Staleness};
use super::grpo_batch::{group_rows, Batch, Layout, Row};
use crate::checkpoint;
use crate::data::Dataset;
use crate::grpo::Aggregation;
use crate::grpo::{self, LossInputs};
use crate::optim::Optimizer;
use crate::parallel::Dp;
use crate::policy::Policy;
use crate::pool::Pool;
use crate::recipe::RolloutBackend;
use crate::recipe::{Algorithm, Rollout};
use crate::rollouts::Rollouts;
use crate::sampler::{judge, sample_and_judge, Judged, Sampler, Settings};
use crate::session::{parallelism, Session};
use anyhow::{Context, Result};
use rlvr_model::indexer_loss::LayerIndexerLoss;
use rlvr_model::recompute::{head_chunk, token_entropy};
use rlvr_model::{AttentionMode, Checkpointing, DeepseekV32, ForwardOptions, IndexerStage, LossHead, MainHead};
use rlvr_verifiers::{Outcome, Verdict, Verifier, Weighted};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;
use tch::{Kind, Tensor};

/// The GRPO stage's rollout backend and frozen KL reference.
pub struct GrpoRunner {
    sampler: Rollouts,
    /// Groups being generated for the coming steps (`max_staleness` ≥ 1).
    ahead: Ahead,
    /// The reference model (main model, no MTP), when the KL term is on.
    reference: Option<(DeepseekV32, tch::nn::VarStore)>,
    /// Its weights, saved with every checkpoint of the stage.
    reference_tensors: Option<Vec<(String, Tensor)>>,
}

/// What one GRPO step logs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GrpoMetrics {
    /// Mean reward of every judged completion (refills included).
    pub reward: f64,
    /// Its standard deviation.
    pub reward_std: f64,
    /// Share of completions judged correct.
    pub accuracy: f64,
    /// With a weighted reward of several parts (`[[verifier]]`), each part's mean reward (before
    /// its weight) over the same completions, as `reward/<name>`.
    #[serde(flatten)]
    pub reward_parts: BTreeMap<String, f64>,
    /// Loss figures, weighted means over the step's micro-batches.
    #[serde(flatten)]
    pub loss: LossSums,
    /// Learning rate.
    pub lr: f64,
    /// Mean completion length in tokens.
    pub completion_len: f64,
    /// Groups trained on.
    pub groups_kept: usize,
    /// Verdicts whose verifier failed.
    pub verifier_errors: usize,
    /// Seconds generating.
    pub gen_s: f64,
    /// Seconds judging.
    pub score_s: f64,
    /// Seconds in forward, backward and updates.
    pub train_s: f64,
    /// Seconds publishing weights.
    pub sync_s: f64,
    /// Generated tokens per second of generation.
    pub tok_per_s: f64,
    /// Seconds of the whole step.
    pub step_time: f64,
    /// With the service backend: the pool's figures.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceMetrics>,
}

/// The rows of one step and what judging them found.
#[derive(Default)]
struct Collected {
    rows: Vec<Row>,
    rewards: Vec<f32>,
    correct: usize,
    judged: usize,
    generated: usize,
    errors: usize,
    /// Verdicts `Malformed` (tasks the verifier cannot read).
    malformed: usize,
    /// The first broken verdict's detail, for the stop message.
    example: Option<serde_json::Value>,
    /// Per part of a weighted reward: the sum of its rewards and how many were summed.
    parts: BTreeMap<String, (f64, usize)>,
    gen_s: f64,
    score_s: f64,
    /// Staleness of the samples, and those discarded for it.
    staleness: Staleness,
    /// Seconds waiting for groups generated ahead.
    idle_s: f64,
}

impl GrpoRunner {
    /// The engine (at the run's policy version) and, when the KL term is on, the reference: the
    /// policy as the stage began, read from the checkpoint `resumed` when resuming mid-stage.
    pub(crate) fn new(session: &Session, resumed: Option<&Path>) -> Result<Self> {
        let r = &session.recipe.rollout;
        let (policy, version) = (&session.policy, session.state.policy_version);
        let sampler = match r.backend {
            RolloutBackend::Local => Rollouts::Local(Box::new(Sampler::new(
                policy,
                r.effective_slots(),
                r.sizing(),
                r.sampling.max_tokens,
                r.attention,
                version,
            )?)),
            RolloutBackend::Service => {
                if session.dp.world() > 1 {
                    anyhow::bail!(
                        "rollout.backend = \"service\" runs in a one-process run (this one has {} ranks)",
                        session.dp.world()
                    );
                }
                Rollouts::Service(std::sync::Arc::new(Pool::connect(
                    &session.recipe,
                    policy,
                    &session.run_dir,
                    version,
                )?))
            }
        };
        let ahead = Ahead::default();
        if session.recipe.algorithm.loss.kl().is_none() {
            return Ok(GrpoRunner { sampler, ahead, reference: None, reference_tensors: None });
        }
        let tensors = match resumed.filter(|_| session.state.stage_step > 0) {
            Some(dir) => checkpoint::read_reference(dir)?
                .with_context(|| format!("{} has no {}", dir.display(), checkpoint::REFERENCE_FILE))?,
            None => policy.engine_tensors().into_iter().map(|(n, t)| (n, t.detach().copy())).collect(),
        };
        let (model, vs) = policy.engine_copy()?;
        let vars = vs.variables();
        tch::no_grad(|| {
            for (name, t) in &tensors {
                vars[name].shallow_clone().copy_(t);
            }
        });
        Ok(GrpoRunner { sampler, ahead, reference: Some((model, vs)), reference_tensors: Some(tensors) })
    }

    /// The reference weights a checkpoint of this stage must hold.
    pub fn reference_tensors(&self) -> Option<&[(String, Tensor)]> {
        self.reference_tensors.as_deref()
    }

    /// One GRPO step at `lr`; its metrics and whether an update was skipped (non-finite loss or
    /// gradient). Advances the problem cursor and the policy version.
    pub(crate) fn step(
        &mut self,
        session: &mut Session,
        opt: &mut Optimizer,
        lr: f64,
        steps_left: usize,
    ) -> Result<(GrpoMetrics, bool)> {
        let started = Instant::now();
        let seed = step_seed(session.state.seeds.run, session.state.global_step);
        let (algorithm, rollout) = (&session.recipe.algorithm, &session.recipe.rollout);
        let mut cursor = session.state.problem_cursor;
        let collected = self.collect(
            &session.policy,
            &session.data,
            session.verifier.as_ref(),
            rollout,
            algorithm,
            &mut cursor,
            (seed, session.state.global_step),
            &session.dp,
        )?;
        session.state.problem_cursor = cursor;
        collected.check_reward(session.verifier.name(), session.recipe.run.max_verifier_errors)?;
        if let Some(pool) = self.sampler.pool() {
            let settings = rollout_settings(&session.policy, rollout, algorithm);
            let ahead = steps_left.saturating_sub(1).min(rollout.max_staleness as usize);
            let first_step = session.state.global_step + 1;
            let run_seed = session.state.seeds.run;
            self.ahead.fill(
                pool,
                &session.policy,
                &session.data,
                &settings,
                ahead,
                (first_step, cursor),
                |step| step_seed(run_seed, step),
                rollout.prompts_per_step,
            )?;
        }

        let t_train = Instant::now();
        let update = Update {
            policy: &session.policy,
            reference: self.reference.as_ref().map(|(m, _)| m),
            algorithm,
            micro_batch: session.micro_batch,
            mode: rollout.attention,
            checkpointing: session.recipe.run.activation_checkpointing,
            dp: &session.dp,
        };
        let (sums, skipped) = update.run(opt, &collected.rows, lr, session.recipe.optimizer.grad_clip)?;
        let train_s = t_train.elapsed().as_secs_f64();

        let t_sync = Instant::now();
        if sums.updates > 0 {
            self.sampler.sync(&session.policy)?;
        }
        session.state.policy_version = self.sampler.version();
        let sync_s = t_sync.elapsed().as_secs_f64();
        let mut metrics = collected.metrics(sums, rollout.group_size, lr, train_s, sync_s, started);
        if let Some(pool) = self.sampler.pool() {
            metrics.service = Some(ServiceMetrics::new(pool.take_stats(), &collected.staleness, collected.idle_s));
        }
        Ok((metrics, skipped))
    }

    /// Stops sampling ahead and the spawned servers (at the end of the stage).
    pub fn shutdown(&mut self) {
        self.ahead.clear();
        if let Some(pool) = self.sampler.pool() {
            pool.shutdown();
        }
    }

    /// Samples and judges groups until `prompts_per_step` groups are kept (dynamic sampling) or
    /// the refills run out.
    #[allow(clippy::too_many_arguments)]
    fn collect(
        &mut self,
        policy: &Policy,
        data: &Dataset,
        verifier: &dyn Verifier,
        r: &Rollout,
        a: &Algorithm,
        cursor: &mut u64,
        (seed, step): (u64, u64),
        dp: &Dp,
    ) -> Result<Collected> {
        let settings = rollout_settings(policy, r, a);
        let g = r.group_size;
        let mut c = Collected::default();
        let version = self.sampler.version();
        let refills = if a.dynamic_sampling { a.max_refills } else { 0 };
        for _ in 0..=refills {
            if r.prompts_per_step == c.rows.len() / g {
                break;
            }
            let first = *cursor;
            let problems: Vec<_> = (0..r.prompts_per_step as u64).map(|i| data.train(first + i)).collect();
            *cursor += r.prompts_per_step as u64;
            let judged = match self.ahead.take(step, first) {
                Some(pending) => {
                    let waited = Instant::now();
                    let (prompts, outputs, gen_s) = pending.wait()?;
                    c.idle_s += waited.elapsed().as_secs_f64();
                    let (verdicts, score_s) = judge(policy, verifier, &problems, &outputs, parallelism())?;
                    Judged { prompts, outputs, verdicts, gen_s, score_s }
                }
                None => sample_and_judge(
                    policy,
                    &mut self.sampler,
                    verifier,
                    &problems,
                    &settings,
                    seed,
                    first as usize,
                    parallelism(),
                    dp,
                )?,
            };
            c.gen_s += judged.gen_s;
            c.score_s += judged.score_s;
            c.note_errors(&judged.verdicts);
            add_parts(&mut c.parts, &judged.verdicts);
            for (gi, (prompt, out)) in judged.prompts.iter().zip(&judged.outputs).enumerate() {
                if !c.staleness.admit(out, version, r.max_staleness) {
                    continue;
                }
                let verdicts = &judged.verdicts[gi * g..(gi + 1) * g];
                let rewards = c.judge_group(verdicts, out, r.sampling.max_tokens, a);
                let keep = !a.dynamic_sampling || grpo::groups_with_signal(&rewards, g)[0];
                if keep && c.rows.len() / g < r.prompts_per_step {
                    c.rows.extend(group_rows(&policy.model, prompt, out, &rewards, a.advantage));
                }
            }
        }
        Ok(c)
    }
}

impl Collected {
    /// Counts verifier failures and unreadable tasks, warning at the first.
    fn note_errors(&mut self, verdicts: &[Verdict]) {
        for v in verdicts.iter().filter(|v| v.outcome.is_unjudged()) {
            match v.outcome {
                Outcome::Error => self.errors += 1,
                _ => self.malformed += 1,
            }
            if self.example.is_none() {
                eprintln!("warning: the verifier could not judge a completion (reward 0): {}", v.detail);
                self.example = Some(v.detail.clone());
            }
        }
    }

    /// Stops the run when more than `max_share` of the step's verdicts are `Error` or
    /// `Malformed`: a reward that cannot be computed must not train the policy on zeros.
    fn check_reward(&self, verifier: &str, max_share: f64) -> Result<()> {
        let broken = self.errors + self.malformed;
        if self.judged == 0 || broken as f64 / self.judged as f64 <= max_share {
            return Ok(());
        }
        anyhow::bail!(
            "stopping: verifier `{verifier}` could not judge {broken} of {} completions this step ({} errors, {} malformed tasks; run.max_verifier_errors = {max_share}); e.g. {}",
            self.judged,
            self.errors,
            self.malformed,
            self.example.as_ref().map_or_else(String::new, ToString::to_string)
        )
    }

    /// One group's rewards (verdicts plus DAPO's overlong penalty), counted into the totals.
    fn judge_group(
        &mut self,
        verdicts: &[Verdict],
        out: &rlvr_rollout::engine::RequestOutput,
        max_tokens: usize,
        a: &Algorithm,
    ) -> Vec<f32> {
        let mut rewards: Vec<f32> = verdicts.iter().map(|v| v.reward).collect();
        for (r, s) in rewards.iter_mut().zip(&out.samples) {
            self.generated += s.tokens.len();
            if a.overlong_buffer > 0 {
                *r += grpo::overlong_penalty(s.tokens.len(), max_tokens, a.overlong_buffer, a.overlong_penalty) as f32;
            }
        }
        self.correct += verdicts.iter().filter(|v| v.outcome == Outcome::Correct).count();
        self.judged += verdicts.len();
        self.rewards.extend_from_slice(&rewards);
        rewards
    }

    /// The step's metrics.
    fn metrics(&self, loss: LossSums, g: usize, lr: f64, train_s: f64, sync_s: f64, started: Instant) -> GrpoMetrics {
        let rewards = Tensor::from_slice(&self.rewards);
        let n = self.rewards.len();
        GrpoMetrics {
            reward: rewards.mean(Kind::Float).double_value(&[]),
            reward_std: if n > 1 { rewards.std(true).double_value(&[]) } else { 0.0 },
            accuracy: self.correct as f64 / self.judged.max(1) as f64,
            reward_parts: part_means(&self.parts),
            loss,
            lr,
            completion_len: self.generated as f64 / self.judged.max(1) as f64,
            groups_kept: self.rows.len() / g,
            verifier_errors: self.errors,
            gen_s: self.gen_s,
            score_s: self.score_s,
            train_s,
            sync_s,
            tok_per_s: self.generated as f64 / self.gen_s.max(1e-9),
            step_time: started.elapsed().as_secs_f64(),
            service: None,
        }
    }
}

/// Adds each part's reward in `verdicts` (verdicts of a [`Weighted`] reward) to `sums`.
pub(crate) fn add_parts(sums: &mut BTreeMap<String, (f64, usize)>, verdicts: &[Verdict]) {
    for v in verdicts {
        for (name, reward) in Weighted::part_rewards(v) {
            let entry = sums.entry(name.to_string()).or_default();
            entry.0 += f64::from(reward);
            entry.1 += 1;
        }
    }
}

/// `reward/<name>` → mean, when the reward has several parts (none for a single verifier).
pub(crate) fn part_means(sums: &BTreeMap<String, (f64, usize)>) -> BTreeMap<String, f64> {
    if sums.len() < 2 {
        return BTreeMap::new();
    }
    sums.iter().map(|(name, (sum, n))| (format!("reward/{name}"), sum / (*n).max(1) as f64)).collect()
}

/// The sampling settings of GRPO's rollouts: the recipe's, recording kept sets only when the
/// sampler truncates (keep sampling mask) and routings only for MoE models (keep routing).
fn rollout_settings(policy: &Policy, r: &Rollout, a: &Algorithm) -> Settings {
    let has_moe = (0..policy.config.num_hidden_layers).any(|i| policy.config.is_moe_layer(i));
    Settings {
        n: r.group_size,
        sampling: r.sampling,
        sampling_mask: a.keep_sampling_mask && r.sampling.truncates(),
        routing: a.keep_routing && has_moe,
    }
}

/// The update phase: what it reads.
pub struct Update<'a> {
    /// The policy trained.
    pub policy: &'a Policy,
    /// The frozen KL reference, when the loss has a KL term.
    pub reference: Option<&'a DeepseekV32>,
    /// The loss and its update schedule.
    pub algorithm: &'a Algorithm,
    /// Sequences per backward (0: the whole minibatch share); the session's resolved value.
    pub micro_batch: usize,
    /// The training forward's attention (the rollout's).
    pub mode: AttentionMode,
    /// What the backward keeps (`run.activation_checkpointing`).
    pub checkpointing: Checkpointing,
    /// The ranks.
    pub dp: &'a Dp,
}

impl Update<'_> {
    /// `epochs × minibatches` optimizer steps over `rows`, each accumulating micro-batches; the
    /// loss figures and whether any update was skipped. Each rank trains on its share of every
    /// minibatch; a part's loss counts by its share of the minibatch's normaliser (its response
    /// tokens for token aggregation, else its rows), so the gradient summed over parts and ranks
    /// is that of the whole minibatch.
    fn run(&self, opt: &mut Optimizer, rows: &[Row], lr: f64, grad_clip: f64) -> Result<(LossSums, bool)> {
        let mut sums = LossSums::default();
        let mut skipped = false;
        if rows.is_empty() {
            return Ok((sums, skipped));
        }
        let (a, dp) = (self.algorithm, self.dp);
        let n = rows.len();
        let per_mb = n.div_ceil(a.minibatches.max(1));
        let tokens = |idx: &[usize]| -> f64 { idx.iter().map(|&i| rows[i].logp_old.len() as f64).sum() };
        let weight = |idx: &[usize]| -> f64 {
            match a.loss.aggregation {
                Aggregation::Token => tokens(idx),
                Aggregation::Sequence | Aggregation::Constant => idx.len() as f64,
            }
        };
        for _ in 0..a.epochs.max(1) {
            for mb in (0..n).step_by(per_mb) {
                let idx: Vec<usize> = (mb..(mb + per_mb).min(n)).collect();
                let whole =
                    Share { loss: weight(&idx).max(1e-12), tokens: tokens(&idx).max(1.0), rows: idx.len() as f64 };
                let mine = &idx[dp.share(idx.len())];
                let chunk = if self.micro_batch == 0 { mine.len().max(1) } else { self.micro_batch };
                opt.zero_grad();
                let mut finite = true;
                for part in mine.chunks(chunk) {
                    let rows: Vec<&Row> = part.iter().map(|&i| &rows[i]).collect();
                    let share = Share {
                        loss: weight(part) / whole.loss,
                        tokens: tokens(part) / whole.tokens,
                        rows: part.len() as f64 / whole.rows,
                    };
                    let (stats, entropy) = self.backward(&rows, share.loss, &mut finite);
                    sums.add(&stats, entropy, share);
                }
                if !dp.all(finite)? {
                    opt.zero_grad();
                    skipped = true;
                    continue;
                }
                let applied = opt.step(lr, grad_clip, dp)?;
                if !applied.stepped {
                    opt.zero_grad();
                    skipped = true;
                    continue;
                }
                sums.grad_norm_sum += applied.grad_norm;
                sums.updates += 1;
            }
        }
        sums.sum_over(dp)?;
        Ok((sums.finish(), skipped))
    }

    /// Backpropagates the loss of `rows` weighted by `share`; its statistics and the mean entropy of
    /// the response positions. `finite` turns false when the loss is not finite; the plain backward
    /// is skipped from then on, the checkpointed one has run with the loss (the caller drops the
    /// gradients of a non-finite minibatch).
    pub fn backward(&self, rows: &[&Row], share: f64, finite: &mut bool) -> (grpo::LossStats, f64) {
        let device = self.policy.vs.device();
        // Sparse attention trains the indexer as the sparse stage does (post-training "employs
        // sparse attention in the same way", docs/model.md): its KL over the selected set. Its
        // forward keeps one row per sequence; a dense one shares each group's prompt.
        let stage = (self.mode == AttentionMode::Sparse).then_some(IndexerStage::Sparse);
        let layout = if stage.is_some() { Layout::Rows } else { Layout::Trees };
        let batch = Batch::new(rows, self.policy.config.num_experts_per_tok as i64, device, layout);
        let opts = ForwardOptions { indexer_loss: stage, ..batch.options(self.mode) };
        let chunk = head_chunk(batch.targets.size()[0], self.policy.config.vocab_size as i64);
        let logp_ref = self.reference.map(|reference| {
            let opts = batch.options(self.mode);
            match self.checkpointing {
                Checkpointing::None => {
                    tch::no_grad(|| batch.target_logprobs(&reference.run(&batch.inputs, opts).logits).0)
                }
                Checkpointing::Layer => reference.target_logprobs_chunked(&batch.inputs, opts, &batch.targets, chunk),
            }
        });
        match self.checkpointing {
            Checkpointing::None => {
                let forward = self.policy.model.run(&batch.inputs, opts);
                let (logp, logp_all) = batch.target_logprobs(&forward.logits);
                let entropy = batch.mean_entropy(&token_entropy(&logp_all));
                let out = grpo::grpo_loss(&loss_inputs(&batch, &logp, logp_ref.as_ref()), &self.algorithm.loss);
                let loss = match &forward.indexer {
                    Some(losses) => out.loss + losses.total(Some(&batch.real)),
                    None => out.loss,
                };
                *finite &= loss.double_value(&[]).is_finite();
                if *finite {
                    (&loss * share).backward();
                }
                (out.stats, entropy)
            }
            Checkpointing::Layer => {
                let mut result = None;
                let mut main = |logp: &Tensor| {
                    let out = grpo::grpo_loss(&loss_inputs(&batch, logp, logp_ref.as_ref()), &self.algorithm.loss);
                    result = Some((out.loss.detach(), out.stats));
                    out.loss * share
                };
                let mut indexer = |l: &LayerIndexerLoss| l.mean(Some(&batch.real)) * share;
                let head = LossHead {
                    main: Some(MainHead { targets: &batch.targets, chunk, entropy: true, loss: &mut main }),
                    mtp: None,
                    indexer: stage.map(|_| &mut indexer as &mut dyn FnMut(&LayerIndexerLoss) -> Tensor),
                };
                let out = self.policy.model.backward_checkpointed(&batch.inputs, opts, head);
                let (loss, stats) = result.expect("the main head ran");
                let loss = match &out.indexer {
                    Some(losses) => loss + losses.total(Some(&batch.real)),
                    None => loss,
                };
                *finite &= loss.double_value(&[]).is_finite();
                (stats, batch.mean_entropy(&out.entropy.expect("the head returns entropies")))
            }
        }
    }
}

/// The loss's inputs: `logp (B, L)` of the policy, the rest from `batch` and the reference.
fn loss_inputs<'b>(batch: &'b Batch, logp: &'b Tensor, logp_ref: Option<&'b Tensor>) -> LossInputs<'b> {
    LossInputs { logp, logp_old: &batch.logp_old, logp_ref, advantages: &batch.advantages, mask: &batch.mask }
}

/// A part's share of its minibatch: of the loss's normaliser, of its response tokens, of its rows.
#[derive(Debug, Clone, Copy)]
struct Share {
    loss: f64,
    tokens: f64,
    rows: f64,
}

/// The loss figures of a step: weighted means over its micro-batches, and the updates taken.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LossSums {
    /// Policy-gradient loss.
    pub loss: f64,
    /// KL estimate.
    pub kl: f64,
    /// Share of tokens at the lower clip.
    pub clip_low: f64,
    /// Share of tokens at the upper clip.
    pub clip_high: f64,
    /// Share of sequences the off-policy mask dropped.
    pub masked_seq_frac: f64,
    /// Mean importance ratio.
    pub ratio_mean: f64,
    /// Mean entropy of the response positions.
    pub entropy: f64,
    /// Mean gradient norm of the updates.
    pub grad_norm: f64,
    /// Optimizer steps taken.
    pub updates: usize,
    #[serde(skip)]
    weight: f64,
    #[serde(skip)]
    grad_norm_sum: f64,
}

impl LossSums {
    /// Adds a part's figures, each weighted by the part's share of what it averages over.
    fn add(&mut self, s: &grpo::LossStats, entropy: f64, w: Share) {
        self.weight += w.rows;
        self.loss += w.loss * s.pg_loss;
        self.kl += w.loss * s.kl_mean;
        self.clip_low += w.tokens * s.clip_low_frac;
        self.clip_high += w.tokens * s.clip_high_frac;
        self.masked_seq_frac += w.rows * s.masked_seq_frac;
        self.ratio_mean += w.tokens * s.ratio_mean;
        self.entropy += w.tokens * entropy;
    }

    /// The weighted sums of every rank added up (the update counts and norms are global already).
    fn sum_over(&mut self, dp: &Dp) -> Result<()> {
        if dp.world() == 1 {
            return Ok(());
        }
        let mut fields = [
            &mut self.loss,
            &mut self.kl,
            &mut self.clip_low,
            &mut self.clip_high,
            &mut self.masked_seq_frac,
            &mut self.ratio_mean,
            &mut self.entropy,
            &mut self.weight,
        ];
        let mut values: Vec<f64> = fields.iter().map(|f| **f).collect();
        dp.sum(&mut values)?;
        for (field, v) in fields.iter_mut().zip(values) {
            **field = v;
        }
        Ok(())
    }

    /// The sums turned into means.
    fn finish(mut self) -> Self {
        let w = self.weight.max(1e-12);
        for x in [
            &mut self.loss,
            &mut self.kl,
            &mut self.clip_low,
            &mut self.clip_high,
            &mut self.masked_seq_frac,
            &mut self.ratio_mean,
            &mut self.entropy,
        ] {
            *x /= w;
        }
        self.grad_norm = self.grad_norm_sum / self.updates.max(1) as f64;
        self
    }
}

/// The step's sampling seed, from the run seed and the global step.
fn step_seed(seed: u64, step: u64) -> u64 {
    rlvr_model::sample::stream_seed(seed, step as usize, usize::MAX)
}
