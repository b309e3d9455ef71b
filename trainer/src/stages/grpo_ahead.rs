//! Asynchronous rollouts (`[rollout] max_staleness = k ≥ 1`, service backend): while step t
//! trains, background threads have the servers generate the groups of steps t+1 … t+k, each from
//! the problems and stream seed that step would draw (the problem cursor advances by
//! `prompts_per_step` a step; dynamic sampling is refused with k ≥ 1), with whatever weights the
//! servers hold as tokens are drawn — the pushes after each update land between engine steps, so
//! one sample's tokens may carry several versions. Step t+j then takes its groups instead of
//! sampling, and [`Staleness::admit`] discards a group with a token more than k versions behind
//! the trainer. Nothing here is checkpointed: a resumed run samples its first step anew and
//! starts generating ahead again.
//!
//! Also here: the service's figures for `metrics.jsonl` ([`ServiceMetrics`]).

use crate::data::Dataset;
use crate::policy::Policy;
use crate::pool::{Pool, PoolStats};
use crate::sampler::{prompt_ids, Settings};
use anyhow::{anyhow, Result};
use rlvr_rollout::engine::RequestOutput;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

/// One step's groups being generated.
pub struct Pending {
    /// The global step they are for.
    step: u64,
    /// Their first problem (the problem cursor at that step).
    first: u64,
    prompts: Vec<Vec<i64>>,
    /// The generation: the outputs and the seconds they took.
    handle: JoinHandle<Result<(Vec<RequestOutput>, f64)>>,
}

impl Pending {
    /// Waits for the outputs: (prompts, outputs, seconds generating).
    pub fn wait(self) -> Result<(Vec<Vec<i64>>, Vec<RequestOutput>, f64)> {
        let (outputs, gen_s) = self.handle.join().map_err(|_| anyhow!("the rollout thread panicked"))??;
        Ok((self.prompts, outputs, gen_s))
    }
}

/// The steps being generated ahead, oldest first.
#[derive(Default)]
pub struct Ahead {
    queue: VecDeque<Pending>,
}

impl Ahead {
    /// Starts generating until `count` steps are queued: the steps from `first_step` on, whose
    /// problems start at `cursor` (the one after this step's), `per_step` problems each, with
    /// stream seed `seed(step)`.
    #[allow(clippy::too_many_arguments)]
    pub fn fill(
        &mut self,
        pool: &Arc<Pool>,
        policy: &Policy,
        data: &Dataset,
        settings: &Settings,
        count: usize,
        (first_step, cursor): (u64, u64),
        seed: impl Fn(u64) -> u64,
        per_step: usize,
    ) -> Result<()> {
        while self.queue.len() < count {
            let j = self.queue.len() as u64;
            let (step, first) = (first_step + j, cursor + j * per_step as u64);
            let prompts: Vec<Vec<i64>> = (0..per_step as u64)
                .map(|i| prompt_ids(policy, &data.train(first + i).prompt))
                .collect::<Result<_>>()?;
            let (pool, settings, stream_seed) = (pool.clone(), settings.clone(), seed(step));
            let owned = prompts.clone();
            let handle = std::thread::Builder::new().name(format!("rollout-step-{step}")).spawn(move || {
                let started = Instant::now();
                let outputs = pool.sample(&owned, &settings, stream_seed, first as usize)?;
                Ok((outputs, started.elapsed().as_secs_f64()))
            })?;
            self.queue.push_back(Pending { step, first, prompts, handle });
        }
        Ok(())
    }

    /// The groups generated for global step `step` starting at problem `first`, if they are the
    /// next in the queue; anything else queued is stale and dropped.
    pub fn take(&mut self, step: u64, first: u64) -> Option<Pending> {
        match self.queue.front() {
            Some(p) if p.step == step && p.first == first => self.queue.pop_front(),
            Some(_) => {
                self.queue.clear();
                None
            }
            None => None,
        }
    }

    /// Forgets the steps queued (their threads end on their own).
    pub fn clear(&mut self) {
        self.queue.clear();
    }
}

/// How far behind the trainer the step's samples were.
#[derive(Debug, Default)]
pub struct Staleness {
    /// Kept samples by the staleness of their oldest token.
    histogram: BTreeMap<u64, usize>,
    /// The largest staleness of any token kept.
    max: u64,
    /// Samples discarded for being too stale.
    discarded: usize,
}

impl Staleness {
    /// Whether a group is kept: every token at most `k` versions behind `version` (the trainer's).
    /// Counts the group either way.
    pub fn admit(&mut self, out: &RequestOutput, version: u64, k: u64) -> bool {
        let behind = |v: u64| version.saturating_sub(v);
        let oldest: Vec<u64> =
            out.samples.iter().map(|s| s.tokens.iter().map(|t| behind(t.version)).max().unwrap_or(0)).collect();
        if oldest.iter().any(|&b| b > k) {
            self.discarded += oldest.len();
            return false;
        }
        for b in oldest {
            *self.histogram.entry(b).or_default() += 1;
            self.max = self.max.max(b);
        }
        true
    }
}

/// The service backend's figures of one step.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServiceMetrics {
    /// Servers in the pool.
    pub servers_alive: usize,
    /// Servers dropped since the run started (failed a call twice).
    pub servers_dropped: usize,
    /// Prompts sent again because their server failed.
    pub prompts_resubmitted: usize,
    /// Samples discarded as more than `max_staleness` versions behind.
    pub samples_discarded: usize,
    /// The largest number of versions a kept token lagged behind the trainer.
    pub staleness_max: u64,
    /// The mean, over kept samples, of their oldest token's lag.
    pub staleness_mean: f64,
    /// Kept samples by their oldest token's lag: `staleness/<versions>`.
    #[serde(flatten)]
    pub staleness_hist: BTreeMap<String, usize>,
    /// Seconds the trainer waited for groups generated ahead.
    pub trainer_idle_s: f64,
    /// Per server `i`: `server<i>/tok_per_s` (tokens per busy second) and `server<i>/busy`
    /// (share of the period with a request in flight).
    #[serde(flatten)]
    pub per_server: BTreeMap<String, f64>,
}

impl ServiceMetrics {
    /// The figures from the pool's, the step's staleness and the trainer's waiting.
    pub fn new(stats: PoolStats, staleness: &Staleness, idle_s: f64) -> Self {
        let kept: usize = staleness.histogram.values().sum();
        let lag: u64 = staleness.histogram.iter().map(|(b, n)| b * *n as u64).sum();
        let mut per_server = BTreeMap::new();
        for (i, figures) in stats.servers.iter().enumerate() {
            if let Some((tokens, busy_s)) = figures {
                per_server.insert(format!("server{i}/tok_per_s"), *tokens as f64 / busy_s.max(1e-9));
                per_server.insert(format!("server{i}/busy"), (busy_s / stats.wall_s.max(1e-9)).min(1.0));
            }
        }
        ServiceMetrics {
            servers_alive: stats.alive,
            servers_dropped: stats.dropped,
            prompts_resubmitted: stats.resubmitted,
            samples_discarded: staleness.discarded,
            staleness_max: staleness.max,
            staleness_mean: lag as f64 / kept.max(1) as f64,
            staleness_hist: staleness.histogram.iter().map(|(b, n)| (format!("staleness/{b}"), *n)).collect(),
            trainer_idle_s: idle_s,
            per_server,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ServiceMetrics, Staleness};
    use crate::pool::PoolStats;
    use rlvr_rollout::engine::{FinishReason, RequestId, RequestOutput, Sample, Token};

    /// A group whose samples' tokens carry `versions` (one list per sample).
    fn group(versions: &[&[u64]]) -> RequestOutput {
        let token = |version| Token { id: 1, logprob: -0.5, top: None, version, kept: None, experts: None };
        let samples = versions
            .iter()
            .enumerate()
            .map(|(index, vs)| Sample {
                index,
                tokens: vs.iter().map(|&v| token(v)).collect(),
                finish_reason: FinishReason::Length,
                prompt_experts: None,
            })
            .collect();
        RequestOutput { id: RequestId(0), index: 0, samples }
    }

    #[test]
    fn a_group_is_kept_only_when_every_token_is_within_k() {
        let mut s = Staleness::default();
        // Trainer at version 5, k = 1: tokens of versions 4 and 5 are fine, 3 is two behind.
        assert!(s.admit(&group(&[&[4, 4, 5], &[5, 5]]), 5, 1));
        assert!(!s.admit(&group(&[&[5, 5], &[3, 4, 5]]), 5, 1), "one token two versions behind");
        assert!(s.admit(&group(&[&[5], &[]]), 5, 0), "an empty sample lags nothing");
        assert!(!s.admit(&group(&[&[4]]), 5, 0));
        assert_eq!(s.discarded, 3, "the discarded groups' samples");
        assert_eq!(s.histogram.get(&1), Some(&1), "the first group's first sample lags one");
        assert_eq!(s.histogram.get(&0), Some(&3));
        assert_eq!(s.max, 1);

        let stats =
            PoolStats { alive: 1, dropped: 1, resubmitted: 2, servers: vec![Some((300, 1.5)), None], wall_s: 3.0 };
        let m = ServiceMetrics::new(stats, &s, 0.25);
        assert_eq!((m.servers_alive, m.servers_dropped, m.prompts_resubmitted), (1, 1, 2));
        assert_eq!((m.samples_discarded, m.staleness_max), (3, 1));
        assert!((m.staleness_mean - 0.25).abs() < 1e-12, "one of four kept samples lags one: {m:?}");
        assert_eq!(m.staleness_hist["staleness/0"], 3);
        assert_eq!(m.per_server["server0/tok_per_s"], 200.0);
        assert_eq!(m.per_server["server0/busy"], 0.5);
        assert!(!m.per_server.contains_key("server1/busy"), "a dropped server has no figures");
        assert_eq!(m.trainer_idle_s, 0.25);
    }
}
