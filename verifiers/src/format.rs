//! Format reward: the completion must be a reasoning block followed by a non-empty answer.
//!
//! Accepted shape (whitespace around the parts is ignored):
//! `[open] reasoning close answer`, where `open` (default `<think>`) is required unless
//! `require_open = false` (chat templates such as DeepSeek's put `<think>` in the prompt), `close`
//! (default `</think>`) appears exactly once, `open` at most once, and the answer after it is
//! non-empty. With `answer_open`/`answer_close` set, the answer must also be wrapped in them.
//! Reward 1 with `Correct`, else 0 with `Malformed` and the reason in `detail.reason`.

use crate::{Outcome, Task, Verdict, Verifier, VerifyError};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Settings of the format reward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FormatConfig {
    /// Tag opening the reasoning block.
    pub open: String,
    /// Tag closing the reasoning block.
    pub close: String,
    /// Whether the completion itself must start with `open`.
    pub require_open: bool,
    /// Optional tag the answer must start with (e.g. `<answer>`).
    pub answer_open: Option<String>,
    /// Optional tag the answer must end with (e.g. `</answer>`).
    pub answer_close: Option<String>,
}

impl Default for FormatConfig {
    fn default() -> Self {
        FormatConfig {
            open: "<think>".into(),
            close: "</think>".into(),
            require_open: true,
            answer_open: None,
            answer_close: None,
        }
    }
}

/// Rewards completions that follow the reasoning-then-answer structure.
pub struct FormatVerifier {
    config: FormatConfig,
}

impl FormatVerifier {
    /// A format verifier with these tags.
    pub fn new(config: FormatConfig) -> Self {
        FormatVerifier { config }
    }

    /// `Err(reason)` when `completion` does not have the required shape.
    fn check(&self, completion: &str) -> Result<(), &'static str> {
        let c = &self.config;
        let text = completion.trim();
        let opens = text.matches(c.open.as_str()).count();
        if opens > 1 {
            return Err("more than one opening tag");
        }
        if c.require_open && !text.starts_with(c.open.as_str()) {
            return Err("does not start with the opening tag");
        }
        if opens == 1 && !text.starts_with(c.open.as_str()) {
            return Err("text before the opening tag");
        }
        let (reasoning, answer) = match text.split_once(c.close.as_str()) {
            Some(parts) => parts,
            None => return Err("no closing tag"),
        };
        if answer.contains(c.close.as_str()) {
            return Err("more than one closing tag");
        }
        if reasoning.trim_start_matches(c.open.as_str()).trim().is_empty() {
            return Err("empty reasoning");
        }
        let mut answer = answer.trim();
        if let Some(open) = &c.answer_open {
            answer = answer.strip_prefix(open.as_str()).ok_or("answer lacks its opening tag")?;
        }
        if let Some(close) = &c.answer_close {
            answer = answer.trim_end().strip_suffix(close.as_str()).ok_or("answer lacks its closing tag")?;
        }
        if answer.trim().is_empty() {
            return Err("empty answer");
        }
        Ok(())
    }
}

impl Verifier for FormatVerifier {
    fn name(&self) -> &str {
        "format"
    }

    fn verify(&self, _task: &Task, completion: &str) -> Result<Verdict, VerifyError> {
        Ok(match self.check(completion) {
            Ok(()) => Verdict { reward: 1.0, outcome: Outcome::Correct, detail: json!({}) },
            Err(reason) => Verdict::zero(Outcome::Malformed, json!({ "reason": reason })),
        })
    }
}
