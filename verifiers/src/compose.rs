//! Weighted sums of verifiers, with a per-verifier breakdown in the verdict's detail.

use crate::{Outcome, Task, Verdict, Verifier, VerifyError};
use serde_json::json;

/// `reward = Σ w_i · reward_i`. The outcome is that of the first (primary) verifier; `detail`
/// holds every part's name, weight and verdict, so metrics can report each reward separately.
pub struct Weighted {
    name: String,
    parts: Vec<(String, f32, Box<dyn Verifier>)>,
}

impl Weighted {
    /// A composition of `(weight, verifier)` parts, each named by its verifier; the first part is
    /// the primary one.
    pub fn new(parts: Vec<(f32, Box<dyn Verifier>)>) -> Self {
        Weighted::named(parts.into_iter().map(|(w, v)| (v.name().to_string(), w, v)).collect())
    }

    /// A composition of `(name, weight, verifier)` parts; `name` is the part's name in the
    /// breakdown and in metrics (`reward/<name>`). The first part is the primary one.
    pub fn named(parts: Vec<(String, f32, Box<dyn Verifier>)>) -> Self {
        let name = parts.iter().map(|(n, _, _)| n.as_str()).collect::<Vec<_>>().join("+");
        Weighted { name, parts }
    }

    /// Each part's `(name, reward)` in a verdict of a [`Weighted`] verifier (read from
    /// `detail.parts`); empty for any other verdict.
    pub fn part_rewards(verdict: &Verdict) -> Vec<(&str, f32)> {
        let Some(parts) = verdict.detail.get("parts").and_then(|p| p.as_array()) else { return Vec::new() };
        parts.iter().filter_map(|p| Some((p.get("name")?.as_str()?, p.get("reward")?.as_f64()? as f32))).collect()
    }
}

impl Verifier for Weighted {
    fn name(&self) -> &str {
        &self.name
    }

    /// What any part needs: a part that cannot judge would cost every verdict its share.
    fn needs(&self) -> Vec<&'static str> {
        let mut fields: Vec<&'static str> = self.parts.iter().flat_map(|(_, _, v)| v.needs()).collect();
        fields.sort_unstable();
        fields.dedup();
        fields
    }

    fn verify(&self, task: &Task, completion: &str) -> Result<Verdict, VerifyError> {
        let mut reward = 0.0f32;
        let mut outcome = None;
        let mut breakdown = Vec::with_capacity(self.parts.len());
        for (name, weight, verifier) in &self.parts {
            // A broken part costs its own share of the reward, not the whole verdict.
            let verdict = verifier.verify(task, completion).unwrap_or_else(|e| Verdict::from_error(&e));
            reward += weight * verdict.reward;
            outcome.get_or_insert(verdict.outcome);
            breakdown.push(json!({
                "name": name,
                "weight": weight,
                "reward": verdict.reward,
                "outcome": verdict.outcome,
                "detail": verdict.detail,
            }));
        }
        Ok(Verdict { reward, outcome: outcome.unwrap_or(Outcome::Error), detail: json!({ "parts": breakdown }) })
    }
}
