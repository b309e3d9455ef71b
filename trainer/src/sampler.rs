//! The colocated rollout: an engine over a copy of the policy in the same process, updated from the
//! trainer's tensors in memory after each GRPO step (checksummed, no disk), which samples groups of
//! completions with their sampling log-probs, kept sets and routings; and [`sample_and_judge`],
//! the collect phase that GRPO and eval share (prompts → completions → verdicts).

use crate::data::Problem;
use crate::parallel::Dp;
use crate::policy::Policy;
use anyhow::{bail, Context, Result};
use rlvr_model::AttentionMode;
use rlvr_rollout::engine::{Engine, EngineConfig, Request, RequestOutput, SamplingParams, Sizing};
use rlvr_verifiers::{score_batch, Verdict, Verifier};
use std::time::Instant;

/// Longest prompt (in tokens) a rollout engine is sized for.
pub const MAX_PROMPT_TOKENS: usize = 1024;

/// What to sample for each prompt and what to record.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Samples per prompt.
    pub n: usize,
    /// How each sample is drawn.
    pub sampling: SamplingParams,
    /// Record kept sets (keep sampling mask).
    pub sampling_mask: bool,
    /// Record routings (keep routing).
    pub routing: bool,
}

/// Where samples come from: the colocated [`Sampler`] or the service pool
/// ([`crate::rollouts::Rollouts`]); prompt `i`'s sample `j` draws from stream (`seed`,
/// `first_index + i`, `j`) either way.
pub trait Generate {
    /// Samples `settings.n` completions of every prompt; outputs in prompt order.
    fn generate(
        &mut self,
        prompts: &[Vec<i64>],
        settings: &Settings,
        seed: u64,
        first_index: usize,
    ) -> Result<Vec<RequestOutput>>;
}

impl Generate for Sampler {
    fn generate(
        &mut self,
        prompts: &[Vec<i64>],
        settings: &Settings,
        seed: u64,
        first_index: usize,
    ) -> Result<Vec<RequestOutput>> {
        self.sample(prompts, settings, seed, first_index)
    }
}

/// A rollout engine bound to a policy.
pub struct Sampler {
    engine: Engine,
    eos: Vec<i64>,
}

impl Sampler {
    /// An engine of `slots` slots over a copy of `policy`'s current weights, attention `mode`, at
    /// policy version `version`; `sizing` says whether the slots are the user's setting (refused
    /// when their cache does not fit the device) or a default (lowered to what fits).
    pub fn new(
        policy: &Policy,
        slots: usize,
        sizing: Sizing,
        max_tokens: usize,
        mode: AttentionMode,
        version: u64,
    ) -> Result<Self> {
        let (model, vs) = policy.engine_copy()?;
        let capacity = (MAX_PROMPT_TOKENS + max_tokens).min(policy.config.max_position_embeddings);
        let config = EngineConfig { mode, sizing, ..EngineConfig::new(slots.max(1), capacity) };
        let engine = Engine::new(model, &vs, config)?.with_version(version);
        let mut eos = policy.config.eos_ids();
        if eos.is_empty() {
            eos.push(policy.eos());
        }
        Ok(Sampler { engine, eos })
    }

    /// Publishes `policy`'s current weights to the engine (applied before its next step); the
    /// engine's version then advances by one.
    pub fn sync(&mut self, policy: &Policy) -> Result<()> {
        let tensors = policy.engine_tensors();
        self.engine.set_weights(&tensors).context("publishing weights to the rollout engine")?;
        Ok(())
    }

    /// The policy version the next samples come from.
    pub fn version(&self) -> u64 {
        self.engine.next_version()
    }

    /// Samples `settings.n` completions of every prompt; outputs in prompt order. Prompt `i`'s
    /// sample `j` draws from stream (`seed`, `first_index + i`, `j`), whatever else is batched.
    pub fn sample(
        &mut self,
        prompts: &[Vec<i64>],
        settings: &Settings,
        seed: u64,
        first_index: usize,
    ) -> Result<Vec<RequestOutput>> {
        for (i, prompt) in prompts.iter().enumerate() {
            if prompt.len() > MAX_PROMPT_TOKENS {
                bail!(
                    "prompt {} has {} tokens; at most {MAX_PROMPT_TOKENS} are supported",
                    first_index + i,
                    prompt.len()
                );
            }
            let request = Request {
                n: settings.n,
                sampling: settings.sampling,
                stop_ids: self.eos.clone(),
                seed,
                index: first_index + i,
                return_sampling_mask: settings.sampling_mask,
                return_routing: settings.routing,
                ..Request::new(prompt.clone())
            };
            self.engine.submit(request).with_context(|| format!("rollout request for prompt {}", first_index + i))?;
        }
        let mut outputs = self.engine.run_until_done();
        outputs.sort_by_key(|o| o.index);
        Ok(outputs)
    }

    /// Tokens generated so far by this engine.
    pub fn tokens_generated(&self) -> u64 {
        self.engine.tokens_generated()
    }
}

/// A batch of problems sampled and judged.
pub struct Judged {
    /// Each problem's prompt ids (`bos` then the prompt text).
    pub prompts: Vec<Vec<i64>>,
    /// Each problem's `n` samples, in problem order.
    pub outputs: Vec<RequestOutput>,
    /// One verdict per sample, problem-major (`n` per problem).
    pub verdicts: Vec<Verdict>,
    /// Seconds spent generating.
    pub gen_s: f64,
    /// Seconds spent judging.
    pub score_s: f64,
}

/// Samples `settings.n` completions of every problem from streams (`seed`, `first_index + i`, j)
/// and judges them with `verifier` on `parallel` threads. In a multi-process run each rank samples
/// and judges its share of the problems and the results are gathered: every rank returns all of
/// them, in problem order (the seconds are this rank's).
#[allow(clippy::too_many_arguments)]
pub fn sample_and_judge<G: Generate + ?Sized>(
    policy: &Policy,
    sampler: &mut G,
    verifier: &dyn Verifier,
    problems: &[Problem],
    settings: &Settings,
    seed: u64,
    first_index: usize,
    parallel: usize,
    dp: &Dp,
) -> Result<Judged> {
    let share = dp.share(problems.len());
    let mine = &problems[share.clone()];
    let prompts = mine.iter().map(|p| prompt_ids(policy, &p.prompt)).collect::<Result<Vec<_>>>()?;
    let started = Instant::now();
    let outputs = sampler.generate(&prompts, settings, seed, first_index + share.start)?;
    let gen_s = started.elapsed().as_secs_f64();
    let (verdicts, score_s) = judge(policy, verifier, mine, &outputs, parallel)?;
    if dp.world() == 1 {
        return Ok(Judged { prompts, outputs, verdicts, gen_s, score_s });
    }
    let sampled = dp.gather((prompts, outputs)).context("gathering the ranks' completions")?;
    let judged = dp.gather_json(verdicts).context("gathering the ranks' verdicts")?;
    let (prompts, outputs) = sampled.into_iter().fold((Vec::new(), Vec::new()), |(mut p, mut o), (pi, oi)| {
        p.extend(pi);
        o.extend(oi);
        (p, o)
    });
    Ok(Judged { prompts, outputs, verdicts: judged.into_iter().flatten().collect(), gen_s, score_s })
}

/// Judges every sample of `outputs` (problem `i`'s in `outputs[i]`) with `verifier` on `parallel`
/// threads; the verdicts, problem-major, and the seconds it took.
pub fn judge(
    policy: &Policy,
    verifier: &dyn Verifier,
    problems: &[Problem],
    outputs: &[RequestOutput],
    parallel: usize,
) -> Result<(Vec<Verdict>, f64)> {
    let started = Instant::now();
    let mut items = Vec::new();
    for (problem, out) in problems.iter().zip(outputs) {
        for sample in &out.samples {
            items.push((problem.task.clone(), policy.decode(&sample.ids())?));
        }
    }
    let verdicts = score_batch(verifier, &items, parallel);
    Ok((verdicts, started.elapsed().as_secs_f64()))
}

/// A prompt's ids as the model sees them: `bos` then the text.
pub fn prompt_ids(policy: &Policy, text: &str) -> Result<Vec<i64>> {
    let mut ids = vec![policy.bos()];
    ids.extend(policy.encode(text)?);
    Ok(ids)
}
