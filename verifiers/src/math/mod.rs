//! The math verifier: extracts the final answer from a completion, normalises it and the gold
//! (through the same normaliser), and decides equivalence (exact text, exact or numeric value,
//! identity at sample points, same equation or inequality, or item by item). See `extract`,
//! `normalize`, `latex` and `equiv` for each step and for what each leaves out.
//!
//! Time bound: every step is linear or capped — extraction is a linear scan over at most the last
//! 32 candidates, answers over 4096 bytes are compared as raw strings only, the expression parser
//! refuses answers over 1000 bytes, 400 tokens or nesting depth 48, structures are capped at 64
//! items and 4 levels, exact rationals at 4096 bits (beyond that a value is a float, so
//! `2^{2^{2^{100}}}` is `inf`, which is no value), factorials and binomials at 1000 factors. On top
//! of that a [`Deadline`] of `timeout_ms` is checked between steps and before every comparison;
//! when it passes the verdict is `Outcome::Timeout`, reward 0.
//!
//! Left out: symbolic simplification proper (identities are checked by value at four sample
//! points, exactly when everything stays rational), answers that are proofs or free text beyond a
//! word or a choice letter.

mod equiv;
mod extract;
mod latex;
mod normalize;

pub use equiv::{Judgement, Method};
pub use extract::{extract, Extracted};
pub use normalize::{normalize, Normalized};

use crate::{Outcome, Task, Verdict, Verifier, VerifyError};
use serde::Deserialize;
use serde_json::json;
use std::time::{Duration, Instant};

/// Answers (gold or extracted) longer than this are compared as raw strings, unnormalised.
const MAX_ANSWER_BYTES: usize = 4096;

/// Settings of [`MathVerifier`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MathConfig {
    /// Use the last number in the completion when no boxed, `####` or "answer is" answer exists.
    pub last_number_fallback: bool,
    /// Relative tolerance of numeric equality. 1e-6 absorbs `f64` evaluation noise (~1e-15) and
    /// answers written to 7 or more significant digits, while keeping `3.14` apart from `\pi`
    /// and `0.333` apart from `1/3`. Plain integers are always compared exactly.
    pub rel_tol: f64,
    /// Time bound of one check, in milliseconds.
    pub timeout_ms: u64,
    /// Reward of a correct answer (anything else scores 0).
    pub reward_correct: f32,
}

impl Default for MathConfig {
    fn default() -> Self {
        MathConfig { last_number_fallback: true, rel_tol: 1e-6, timeout_ms: 1000, reward_correct: 1.0 }
    }
}

/// A point in time after which a check gives up.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Instant);

impl Deadline {
    /// A deadline `budget` from now.
    pub fn after(budget: Duration) -> Self {
        Deadline(Instant::now() + budget)
    }

    /// Whether the deadline has passed.
    pub fn passed(&self) -> bool {
        Instant::now() >= self.0
    }
}

/// Verifier of final answers to math problems (`Task::answer` is the gold).
#[derive(Debug, Clone, Default)]
pub struct MathVerifier {
    config: MathConfig,
}

impl MathVerifier {
    /// A verifier with the given settings.
    pub fn new(config: MathConfig) -> Self {
        MathVerifier { config }
    }

    /// The settings in use.
    pub fn config(&self) -> &MathConfig {
        &self.config
    }

    /// Judge `completion` against `gold` (the body of [`Verifier::verify`]).
    pub fn check(&self, gold: &str, completion: &str) -> Verdict {
        let deadline = Deadline::after(Duration::from_millis(self.config.timeout_ms));
        let Some(mut found) = extract(completion, self.config.last_number_fallback) else {
            return Verdict::zero(Outcome::NoAnswer, json!({ "extracted": null, "gold": gold }));
        };
        if gold.len().max(found.text.len()) > MAX_ANSWER_BYTES {
            return self.judge_raw(gold, found);
        }
        let norm_gold = normalize(gold);
        let mut source = found.source;
        if found.boxes.len() > 1 {
            // Several boxes (or, with no box, the last math spans) answer a gold list together
            // (`\boxed{3}, \boxed{5}` for `3, 5`) when the last one alone holds fewer items than the gold.
            let wanted = equiv::form(&norm_gold.text, true).item_count();
            let last = equiv::form(&normalize(&found.text).text, false).item_count();
            let from = found.boxes.len().saturating_sub(wanted);
            let joined_len: usize = found.boxes[from..].iter().map(|b| b.len() + 2).sum();
            if wanted > 1 && last < wanted && joined_len <= MAX_ANSWER_BYTES {
                found.text = found.boxes[from..].join(", ");
                source = if source == "boxed" { "boxed_list" } else { "math_span_list" };
            }
        }
        let norm_pred = normalize(&found.text);
        let judgement = if norm_gold.text.is_empty() {
            // An empty gold matches nothing, an empty answer included.
            Judgement::Different
        } else if deadline.passed() {
            Judgement::OutOfTime
        } else {
            equiv::equivalent(&norm_gold, &norm_pred, self.config.rel_tol, &deadline)
        };
        let (outcome, method) = match judgement {
            Judgement::Equal(m) => (Outcome::Correct, Some(m.as_str())),
            Judgement::Different => (Outcome::Incorrect, None),
            Judgement::OutOfTime => (Outcome::Timeout, None),
        };
        let detail = json!({
            "extracted": found.text,
            "source": source,
            "gold": gold,
            "normalized_pred": norm_pred.text,
            "normalized_gold": norm_gold.text,
            "method": method,
        });
        let reward = if outcome == Outcome::Correct { self.config.reward_correct } else { 0.0 };
        Verdict { reward, outcome, detail }
    }

    /// Verdict for answers too long to normalise within the time bound: equal trimmed strings only.
    fn judge_raw(&self, gold: &str, found: Extracted) -> Verdict {
        let equal = !gold.trim().is_empty() && gold.trim() == found.text.trim();
        let (outcome, reward) =
            if equal { (Outcome::Correct, self.config.reward_correct) } else { (Outcome::Incorrect, 0.0) };
        let detail = json!({
            "extracted": found.text,
            "source": found.source,
            "gold": gold,
            "normalized_pred": null,
            "normalized_gold": null,
            "method": if equal { Some("exact") } else { None },
        });
        Verdict { reward, outcome, detail }
    }
}

impl Verifier for MathVerifier {
    fn name(&self) -> &str {
        "math"
    }

    fn verify(&self, task: &Task, completion: &str) -> Result<Verdict, VerifyError> {
        let gold = task.answer.as_deref().ok_or(VerifyError::MissingField("answer"))?;
        Ok(self.check(gold, completion))
    }

    fn needs(&self) -> Vec<&'static str> {
        vec!["answer"]
    }
}
