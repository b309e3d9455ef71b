//! The `eval` stage: k samples per held-out problem, judged by the recipe's verifier; pass@1 and
//! pass@k with the unbiased estimator of Chen et al. (2021), `pass@k = 1 − C(n−c, k) / C(n, k)` per
//! problem (n samples, c correct), averaged over problems.
//!
//! Every eval of a run draws from the same streams (seeded by the run seed and the problem index,
//! not the step), so `eval_before` and `eval_after` differ only by the policy.

use crate::data::Problem;
use crate::policy::Policy;
use crate::sampler::{Sampler, Settings};
use anyhow::Result;
use rlvr_verifiers::{score_batch, Outcome, Verifier};
use serde_json::{json, Map, Value};

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
}

impl EvalResult {
    /// The report form: `{"accuracy", "pass_at_k": {"1": …}, "n", …}`.
    pub fn to_json(&self) -> Value {
        let pass: Map<String, Value> = self.pass_at_k.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        json!({
            "accuracy": self.accuracy,
            "pass_at_k": pass,
            "n": self.n,
            "samples": self.samples,
            "completion_len": self.response_len,
            "verifier_errors": self.verifier_errors,
        })
    }
}

/// Samples and judges `samples` completions of each problem.
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
) -> Result<EvalResult> {
    let prompts = problems.iter().map(|p| prompt_ids(policy, &p.prompt)).collect::<Result<Vec<_>>>()?;
    let outputs = sampler.sample(&prompts, settings, run_seed ^ EVAL_STREAM, 0)?;
    let mut items = Vec::new();
    let mut lens = 0usize;
    for (problem, out) in problems.iter().zip(&outputs) {
        for s in &out.samples {
            lens += s.tokens.len();
            items.push((problem.task.clone(), policy.decode(&s.ids())?));
        }
    }
    let verdicts = score_batch(verifier, &items, parallel);
    let n = settings.n;
    let correct: Vec<usize> =
        verdicts.chunks(n).map(|g| g.iter().filter(|v| v.outcome == Outcome::Correct).count()).collect();
    let mean = |k: usize| correct.iter().map(|&c| pass_at_k(n, c, k)).sum::<f64>() / correct.len().max(1) as f64;
    Ok(EvalResult {
        accuracy: mean(1),
        pass_at_k: pass_k.iter().map(|&k| (k, mean(k))).collect(),
        n: problems.len(),
        samples: n,
        response_len: lens as f64 / items.len().max(1) as f64,
        verifier_errors: verdicts.iter().filter(|v| v.outcome == Outcome::Error).count(),
    })
}

/// A prompt's ids as the model sees them: `bos` then the text.
pub fn prompt_ids(policy: &Policy, text: &str) -> Result<Vec<i64>> {
    let mut ids = vec![policy.bos()];
    ids.extend(policy.encode(text)?);
    Ok(ids)
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
