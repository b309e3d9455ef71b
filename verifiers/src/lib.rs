//! rlvr-verifiers: checkable rewards for RLVR.
//!
//! A [`Verifier`] turns a (task, completion) pair into a [`Verdict`]. Model mistakes are verdicts
//! (`Incorrect`, `NoAnswer`, `Timeout`, ...); `Err` is kept for a verifier that is itself broken or
//! was handed a task it cannot read. Verifiers compose by weighted sum ([`Weighted`]) and score
//! batches in parallel with a bound on concurrency ([`score_batch`]).
//!
//! This crate does not depend on libtorch.

use serde::{Deserialize, Serialize};

mod batch;
pub mod code;
mod compose;
pub mod external;
pub mod format;
pub mod judge;
pub mod language;
pub mod length;
pub mod math;
mod registry;

pub use batch::score_batch;
pub use code::{CodeConfig, CodeVerifier};
pub use compose::Weighted;
pub use external::{ExternalConfig, ExternalVerifier};
pub use format::{FormatConfig, FormatVerifier};
pub use judge::{JudgeConfig, JudgeVerifier};
pub use language::{LanguageConfig, LanguageVerifier};
pub use length::{LengthConfig, LengthPenalty};
pub use math::MathVerifier;
pub use registry::VerifierSpec;

/// How a completion fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// The answer is right (or every test passed).
    Correct,
    /// An answer was found and it is wrong (or some test failed).
    Incorrect,
    /// No answer could be extracted from the completion.
    NoAnswer,
    /// The model's completion is not in the required form (the format verifier's verdict): the
    /// model's fault.
    Malformed,
    /// Checking ran out of time.
    Timeout,
    /// The verifier itself failed (a process that died, an endpoint that errored): the reward's
    /// fault, not the model's.
    Error,
    /// The task or input line cannot be read (a missing field — `code` on math data —, an
    /// invalid task, a line of `rlvr verify` input that is not JSON): the data's fault.
    InvalidInput,
    /// The model's program crashed, had a syntax error or flooded its output (the code verifier):
    /// the model's fault.
    Crashed,
}

impl Outcome {
    /// Whether the verdict is no judgement of the model at all — the verifier failed (`Error`) or
    /// could not read the task (`InvalidInput`) — so its reward 0 must not train the policy.
    pub fn is_unjudged(self) -> bool {
        matches!(self, Outcome::Error | Outcome::InvalidInput)
    }
}

/// A verifier's judgement of one completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Scalar reward, usually in [0, 1].
    pub reward: f32,
    /// Categorical outcome.
    pub outcome: Outcome,
    /// Verifier-specific detail (extracted answer, per-test results, breakdown, ...).
    pub detail: serde_json::Value,
}

impl Verdict {
    /// A verdict with reward 0 and the given outcome and detail.
    pub fn zero(outcome: Outcome, detail: serde_json::Value) -> Self {
        Verdict { reward: 0.0, outcome, detail }
    }

    /// The verdict for a verifier that failed: reward 0, outcome `Error` (`InvalidInput` when the task
    /// lacks a field or is invalid, `Timeout` on a timeout), the message in `detail.error`.
    pub fn from_error(err: &VerifyError) -> Self {
        let outcome = match err {
            VerifyError::Timeout(_) => Outcome::Timeout,
            VerifyError::MissingField(_) | VerifyError::InvalidTask(_) => Outcome::InvalidInput,
            _ => Outcome::Error,
        };
        Verdict::zero(outcome, serde_json::json!({ "error": err.to_string() }))
    }
}

/// One stdin/stdout test case (APPS / TACO / LiveCodeBench style).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdioCase {
    /// Text fed to the program's standard input.
    pub input: String,
    /// Expected standard output (compared after trimming trailing whitespace on each line).
    pub output: String,
}

/// Tests for a code task: stdin/stdout cases and/or an assert-style test (HumanEval / MBPP form).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeTests {
    /// Stdin/stdout cases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stdio: Vec<StdioCase>,
    /// Test code defining `check(candidate)` (HumanEval) or plain asserts (MBPP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assert: Option<String>,
    /// The function that `check` is called on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_point: Option<String>,
}

/// What a completion is checked against. Each verifier reads the fields it needs and reports a
/// [`VerifyError::MissingField`] when one is absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// The prompt the completion answers (used by some custom verifiers; optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// The gold answer of a math task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// The tests of a code task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<CodeTests>,
    /// Anything else on the input line, passed through to external verifiers.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// A verifier that is itself broken, or a task it cannot read. Model mistakes are never errors.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The task lacks a field this verifier needs.
    #[error("task has no `{0}` field")]
    MissingField(&'static str),
    /// The task's fields are present but unusable.
    #[error("invalid task: {0}")]
    InvalidTask(String),
    /// The check did not finish in time.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// An I/O failure of the verifier's own machinery (spawning a process, a pipe, a temp dir).
    #[error("verifier I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The verifier's own settings are invalid (unknown kind, bad config field).
    #[error("invalid verifier settings: {0}")]
    Config(String),
    /// Anything else that broke inside the verifier.
    #[error("verifier failed: {0}")]
    Failed(String),
}

/// A checkable reward.
pub trait Verifier: Send + Sync {
    /// Short name used in metrics and breakdowns.
    fn name(&self) -> &str;
    /// Judge one completion. Model mistakes are verdicts; `Err` only when the verifier itself is
    /// broken or the task is unreadable.
    fn verify(&self, task: &Task, completion: &str) -> Result<Verdict, VerifyError>;
    /// The task fields every task must have for this verifier to judge it (`answer`, `tests`, or
    /// a key of [`Task::extra`]), so that data lacking them is refused before any work.
    fn needs(&self) -> Vec<&'static str> {
        Vec::new()
    }
}

impl Task {
    /// Whether the task has `field`: `prompt`, `answer`, `tests`, or a key of [`Task::extra`].
    pub fn has(&self, field: &str) -> bool {
        match field {
            "prompt" => self.prompt.is_some(),
            "answer" => self.answer.is_some(),
            "tests" => self.tests.is_some(),
            other => self.extra.contains_key(other),
        }
    }
}
