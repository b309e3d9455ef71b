//! GRPO's source of rollouts, as `[rollout] backend` chooses: the colocated engine
//! ([`Sampler`]) or a pool of `rlvr serve` servers ([`Pool`]). Both draw prompt `i`'s sample `j`
//! from stream (`seed`, `first_index + i`, `j`) and return the same records, so the rest of GRPO
//! does not know which one it uses.

use crate::policy::Policy;
use crate::pool::Pool;
use crate::sampler::{Generate, Sampler, Settings};
use anyhow::Result;
use rlvr_rollout::engine::RequestOutput;
use std::sync::Arc;

/// The rollout backend of a GRPO stage.
pub enum Rollouts {
    /// An engine in this process.
    Local(Box<Sampler>),
    /// `rlvr serve` servers (shared with the thread that samples ahead).
    Service(Arc<Pool>),
}

impl Rollouts {
    /// Publishes `policy`'s current weights; the version then advances by one.
    pub fn sync(&mut self, policy: &Policy) -> Result<()> {
        match self {
            Rollouts::Local(sampler) => sampler.sync(policy),
            Rollouts::Service(pool) => pool.sync(policy),
        }
    }

    /// The policy version the next samples come from.
    pub fn version(&self) -> u64 {
        match self {
            Rollouts::Local(sampler) => sampler.version(),
            Rollouts::Service(pool) => pool.version(),
        }
    }

    /// The pool, with the service backend.
    pub fn pool(&self) -> Option<&Arc<Pool>> {
        match self {
            Rollouts::Local(_) => None,
            Rollouts::Service(pool) => Some(pool),
        }
    }
}

impl Generate for Rollouts {
    fn generate(
        &mut self,
        prompts: &[Vec<i64>],
        settings: &Settings,
        seed: u64,
        first_index: usize,
    ) -> Result<Vec<RequestOutput>> {
        match self {
            Rollouts::Local(sampler) => sampler.sample(prompts, settings, seed, first_index),
            Rollouts::Service(pool) => pool.sample(prompts, settings, seed, first_index),
        }
    }
}
