//! The colocated rollout: an engine over a copy of the policy in the same process, updated from the
//! trainer's tensors in memory after each GRPO step (checksummed, no disk), which samples groups of
//! completions with their sampling log-probs, kept sets and routings.

use crate::policy::Policy;
use anyhow::{bail, Context, Result};
use rlvr_model::AttentionMode;
use rlvr_rollout::engine::{checksum_of, Engine, EngineConfig, Request, RequestOutput};

/// Longest prompt (in tokens) a rollout engine is sized for.
pub const MAX_PROMPT_TOKENS: usize = 1024;

/// How to sample.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Samples per prompt.
    pub n: usize,
    /// Tokens per sample at most.
    pub max_tokens: usize,
    /// Softmax temperature (0 = greedy).
    pub temperature: f64,
    /// Nucleus mass.
    pub top_p: f64,
    /// Top-k (0 = off).
    pub top_k: usize,
    /// Min-p (0 = off).
    pub min_p: f64,
    /// Record kept sets (keep sampling mask).
    pub sampling_mask: bool,
    /// Record routings (keep routing).
    pub routing: bool,
}

/// A rollout engine bound to a policy.
pub struct Sampler {
    engine: Engine,
    eos: Vec<i64>,
}

impl Sampler {
    /// An engine of `slots` slots over a copy of `policy`'s current weights, attention `mode`, at
    /// policy version `version`.
    pub fn new(policy: &Policy, slots: usize, max_tokens: usize, mode: AttentionMode, version: u64) -> Result<Self> {
        let (model, vs) = policy.engine_copy()?;
        let capacity = (MAX_PROMPT_TOKENS + max_tokens).min(policy.config.max_position_embeddings);
        let config = EngineConfig { mode, ..EngineConfig::new(slots.max(1), capacity) };
        let engine = Engine::new(model, &vs, config).with_version(version);
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
        let sum = checksum_of(&tensors);
        self.engine.update_weights(&tensors, sum).context("publishing weights to the rollout engine")?;
        Ok(())
    }

    /// The policy version the next samples come from.
    pub fn version(&self) -> u64 {
        self.engine.version()
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
                max_tokens: settings.max_tokens,
                temperature: settings.temperature,
                top_p: settings.top_p,
                top_k: settings.top_k,
                min_p: settings.min_p,
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
