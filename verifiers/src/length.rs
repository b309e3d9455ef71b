//! Overlong penalty: DAPO's soft overlong punishment (Yu et al. 2025, "DAPO", eq. 13).
//!
//! With `L_max = max_length` and `L_cache = cache_length`:
//! `R(y) = 0` for `|y| ≤ L_max − L_cache`; `(L_max − L_cache − |y|) / L_cache` in between;
//! `−1` for `|y| > L_max`. It is meant to be added (through [`crate::Weighted`]) to a correctness
//! reward. `|y|` is the token count in `task.extra["completion_tokens"]` when the caller provides
//! one (the rollout knows it exactly); otherwise it is measured in `unit`: characters (Unicode
//! scalar values) or whitespace-separated words, and `max_length`/`cache_length` are read in that
//! unit. Outcome: `Correct` when no penalty applies, `Incorrect` when one does.

use crate::{Outcome, Task, Verdict, Verifier, VerifyError};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// What a length is counted in when the task carries no token count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LengthUnit {
    /// Unicode scalar values.
    #[default]
    Chars,
    /// Whitespace-separated words.
    Words,
}

/// Settings of the overlong penalty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LengthConfig {
    /// `L_max`: at and beyond this length the penalty is −1.
    pub max_length: usize,
    /// `L_cache`: the width of the linear ramp before `max_length`.
    pub cache_length: usize,
    /// Unit used when `task.extra["completion_tokens"]` is absent.
    pub unit: LengthUnit,
}

impl Default for LengthConfig {
    /// DAPO's setting: 20 480 max, 4 096 cache (in tokens in the paper).
    fn default() -> Self {
        LengthConfig { max_length: 20_480, cache_length: 4_096, unit: LengthUnit::Chars }
    }
}

/// The soft overlong penalty as a verifier.
pub struct LengthPenalty {
    config: LengthConfig,
}

impl LengthPenalty {
    /// A penalty with these bounds; `Err` when `cache_length` is 0 or exceeds `max_length`.
    pub fn new(config: LengthConfig) -> Result<Self, VerifyError> {
        if config.cache_length == 0 || config.cache_length > config.max_length {
            return Err(VerifyError::InvalidTask(format!(
                "length penalty needs 0 < cache_length ({}) ≤ max_length ({})",
                config.cache_length, config.max_length
            )));
        }
        Ok(LengthPenalty { config })
    }

    /// The penalty for a completion of `len` units, in [−1, 0].
    pub fn penalty(&self, len: usize) -> f32 {
        let (max, cache) = (self.config.max_length as f64, self.config.cache_length as f64);
        let len = len as f64;
        if len <= max - cache {
            0.0
        } else if len <= max {
            ((max - cache - len) / cache) as f32
        } else {
            -1.0
        }
    }
}

impl Verifier for LengthPenalty {
    fn name(&self) -> &str {
        "length"
    }

    fn verify(&self, task: &Task, completion: &str) -> Result<Verdict, VerifyError> {
        let (len, unit) = match task.extra.get("completion_tokens") {
            Some(v) => {
                let n = v
                    .as_u64()
                    .ok_or_else(|| VerifyError::InvalidTask(format!("completion_tokens must be a count, got {v}")))?;
                (n as usize, "tokens")
            }
            None => match self.config.unit {
                LengthUnit::Chars => (completion.chars().count(), "chars"),
                LengthUnit::Words => (completion.split_whitespace().count(), "words"),
            },
        };
        let reward = self.penalty(len);
        let outcome = if reward == 0.0 { Outcome::Correct } else { Outcome::Incorrect };
        Ok(Verdict { reward, outcome, detail: json!({ "length": len, "unit": unit }) })
    }
}
