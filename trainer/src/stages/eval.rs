//! The `eval` stage: k samples per held-out problem, judged by the recipe's verifier; pass@1 and
//! pass@k with the unbiased estimator of Chen et al. (2021), `pass@k = 1 − C(n−c, k) / C(n, k)` per
//! problem (n samples, c correct), averaged over problems.
//!
//! Every eval of a run draws from the same streams (seeded by the run seed and the problem index,
//! not the step), so `eval_before` and `eval_after` differ only by the policy.

use super::grpo::{add_parts, part_means};
use crate::data::Problem;
use crate::parallel::Dp;
use crate::policy::Policy;
use crate::recipe::EvalStage;
use crate::sampler::{sample_and_judge, Sampler, Settings};
use crate::session::{parallelism, Session};
use anyhow::{bail, Result};
use rlvr_rollout::engine::{SamplingParams, Sizing};
use rlvr_verifiers::{Outcome, Verifier};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Folded into the run seed for eval sampling streams.
const EVAL_STREAM: u64 = 0x00E7_A1E7_A1E7_A1E7;

/// The unbiased pass@k estimate for one problem with `n` samples of which `c` are correct.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    assert!(k >= 1 && k <= n, "pass@{k} needs 1 ≤ k ≤ n = {n}");
    if n - c < k {
        return 1.0;
    }
    // C(n−c, k) / C(n, k) = Π_{i=0}^{k−1} (n − c − i) / (n − i)
    1.0 - (0..k).map(|i| (n - c - i) as f64 / (n - i) as f64).product::<f64>()
}

/// What an eval measured.
#[derive(Debug, Clone)]
pub struct EvalResult {
    /// Mean pass@1 over problems.
    pub accuracy: f64,
    /// Mean pass@k for each asked k.
    pub pass_at_k: Vec<(usize, f64)>,
    /// Problems evaluated.
    pub n: usize,
    /// Samples per problem.
    pub samples: usize,
    /// Mean completion length in tokens.
    pub response_len: f64,
    /// Verdicts whose verifier failed (outcome `Error`).
    pub verifier_errors: usize,
    /// With a weighted reward of several parts, each part's mean reward as `reward/<name>`.
    pub reward_parts: BTreeMap<String, f64>,
}

impl EvalResult {
    /// The report form: `{"accuracy", "pass_at_k": {"1": …}, "n", …}`, plus `"reward/<name>"`
    /// for each part of a weighted reward.
    pub fn to_json(&self) -> Value {
        let pass: Map<String, Value> = self.pass_at_k.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        let mut report = json!({
            "accuracy": self.accuracy,
            "pass_at_k": pass,
            "n": self.n,
            "samples": self.samples,
            "completion_len": self.response_len,
            "verifier_errors": self.verifier_errors,
        });
        for (key, mean) in &self.reward_parts {
            report[key] = json!(mean);
        }
        report
    }
}

/// One judged sample of an eval, for per-sample output.
#[derive(Debug, Clone, Serialize)]
pub struct EvalSample {
    /// The problem's id.
    pub id: String,
    /// Which of the problem's samples.
    pub sample: usize,
    /// The prompt text as given to the model (after bos).
    pub prompt: String,
    /// The completion text.
    pub completion: String,
    /// Its reward.
    pub reward: f32,
    /// Its outcome.
    pub outcome: Outcome,
    /// The whole verdict (`reward`, `outcome`, `detail`).
    pub verdict: rlvr_verifiers::Verdict,
}

/// How an `eval` stage samples: `samples` per problem with the run's rollout settings at the
/// stage's temperature (shared by the stage and `rlvr eval --recipe`, which must agree exactly).
pub fn stage_settings(rollout: &SamplingParams, stage: &EvalStage) -> Settings {
    Settings {
        n: stage.samples,
        sampling: SamplingParams { temperature: stage.temperature.unwrap_or(rollout.temperature), ..*rollout },
        sampling_mask: false,
        routing: false,
    }
}

/// Engine slots of an eval over `problems` problems on one rank.
pub fn eval_slots(problems: usize, samples: usize) -> usize {
    (problems * samples).clamp(1, 512)
}

/// Samples and judges `settings.n` completions of each problem.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    policy: &Policy,
    sampler: &mut Sampler,
    verifier: &dyn Verifier,
    problems: &[Problem],
    settings: &Settings,
    pass_k: &[usize],
    run_seed: u64,
    parallel: usize,
    dp: &Dp,
) -> Result<EvalResult> {
    let args = (policy, sampler, verifier, problems, settings, pass_k, run_seed, parallel, dp);
    evaluate_samples(args, false).map(|(result, _)| result)
}

/// [`evaluate`]'s arguments, in its order.
pub type EvalArgs<'a> =
    (&'a Policy, &'a mut Sampler, &'a dyn Verifier, &'a [Problem], &'a Settings, &'a [usize], u64, usize, &'a Dp);

/// Like [`evaluate`], also returning every sample with its verdict when `keep` (else none).
pub fn evaluate_samples(args: EvalArgs<'_>, keep: bool) -> Result<(EvalResult, Vec<EvalSample>)> {
    let (policy, sampler, verifier, problems, settings, pass_k, run_seed, parallel, dp) = args;
    let seed = run_seed ^ EVAL_STREAM;
    let judged = sample_and_judge(policy, sampler, verifier, problems, settings, seed, 0, parallel, dp)?;
    let verdicts = &judged.verdicts;
    let broken = verdicts.iter().filter(|v| v.outcome.is_unjudged()).count();
    if !verdicts.is_empty() && broken == verdicts.len() {
        let example = &verdicts[0].detail;
        bail!(
            "verifier `{}` could not judge any of the {broken} completions (every verdict Error or InvalidInput); e.g. {example}",
            verifier.name()
        );
    }
    let mut samples = Vec::new();
    if keep {
        for (i, (problem, out)) in problems.iter().zip(&judged.outputs).enumerate() {
            for (j, sample) in out.samples.iter().enumerate() {
                let verdict = verdicts[i * settings.n + j].clone();
                samples.push(EvalSample {
                    id: problem.id.clone(),
                    sample: j,
                    prompt: problem.prompt.clone(),
                    completion: policy.decode(&sample.ids())?,
                    reward: verdict.reward,
                    outcome: verdict.outcome,
                    verdict,
                });
            }
        }
    }
    let mut parts = BTreeMap::new();
    add_parts(&mut parts, verdicts);
    let lens: usize = judged.outputs.iter().flat_map(|o| &o.samples).map(|s| s.tokens.len()).sum();
    let n = settings.n;
    let correct: Vec<usize> =
        verdicts.chunks(n).map(|g| g.iter().filter(|v| v.outcome == Outcome::Correct).count()).collect();
    let mean = |k: usize| correct.iter().map(|&c| pass_at_k(n, c, k)).sum::<f64>() / correct.len().max(1) as f64;
    let result = EvalResult {
        accuracy: mean(1),
        pass_at_k: pass_k.iter().map(|&k| (k, mean(k))).collect(),
        n: problems.len(),
        samples: n,
        response_len: lens as f64 / verdicts.len().max(1) as f64,
        verifier_errors: verdicts.iter().filter(|v| v.outcome == Outcome::Error).count(),
        reward_parts: part_means(&parts),
    };
    Ok((result, samples))
}

/// An `eval` stage of a run: samples the held-out problems with the run's rollout settings (the
/// stage's own temperature), logs one metrics record and returns the stage's report entry.
pub(crate) fn run(session: &mut Session, name: &str, stage: &EvalStage) -> Result<Value> {
    let r = &session.recipe.rollout;
    let held = session.data.held_out();
    let problems = &held[..stage.max_problems.unwrap_or(held.len()).min(held.len())];
    if problems.is_empty() {
        bail!("stage {name}: there are no held-out problems to evaluate (data.held_out / data.test)");
    }
    let settings = stage_settings(&r.sampling, stage);
    let slots = eval_slots(session.dp.share(problems.len()).len(), stage.samples);
    let version = session.state.policy_version;
    let sizing =
        Sizing::default_slots(stage.samples, "the eval's slots (problems × samples, ≤ 512)", "rollout.max_tokens");
    let mut sampler = Sampler::new(&session.policy, slots, sizing, r.sampling.max_tokens, r.attention, version)?;
    let start = std::time::Instant::now();
    let verifier = session.verifier.as_ref();
    let seed = session.state.seeds.run;
    let result = evaluate(
        &session.policy,
        &mut sampler,
        verifier,
        problems,
        &settings,
        &stage.pass_k(),
        seed,
        parallelism(),
        &session.dp,
    )?;
    let metrics = EvalMetrics {
        accuracy: result.accuracy,
        pass_at_k: result.pass_at_k.iter().map(|(k, v)| (format!("pass_at_{k}"), *v)).collect(),
        reward_parts: result.reward_parts.clone(),
        completion_len: result.response_len,
        gen_s: start.elapsed().as_secs_f64(),
    };
    session.log(name, &metrics)?;
    Ok(result.to_json())
}

/// What an `eval` stage logs.
#[derive(Debug, Clone, Serialize)]
struct EvalMetrics {
    accuracy: f64,
    #[serde(flatten)]
    pass_at_k: BTreeMap<String, f64>,
    #[serde(flatten)]
    reward_parts: BTreeMap<String, f64>,
    completion_len: f64,
    gen_s: f64,
}

#[cfg(test)]
mod tests {
    use super::pass_at_k;

    /// pass@k by enumerating every k-subset of n samples (c correct): the share with a correct one.
    fn brute(n: usize, c: usize, k: usize) -> f64 {
        let (mut hit, mut all) = (0u64, 0u64);
        for mask in 0u32..(1 << n) {
            if mask.count_ones() as usize == k {
                all += 1;
                hit += u64::from(mask & ((1 << c) - 1) != 0);
            }
        }
        hit as f64 / all as f64
    }

    #[test]
    fn pass_at_k_matches_enumeration() {
        for n in 1..=8 {
            for c in 0..=n {
                for k in 1..=n {
                    assert!((pass_at_k(n, c, k) - brute(n, c, k)).abs() < 1e-12, "n {n} c {c} k {k}");
                }
            }
        }
    }
}
