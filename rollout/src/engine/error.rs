//! The engine's errors: a cache its device cannot hold, a request it cannot serve, or new weights
//! it refuses. Each message names the setting, field or tensor at fault.

use super::memory::show;

/// Errors of [`crate::engine::Engine`]'s calls.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The KV cache of the configured slots does not fit the device's memory (module `memory`).
    #[error(
        "the rollout engine's KV cache of {slots} slot(s) × {length} tokens needs {}, but {} of the {} free on the device are left for it (a tenth is kept as a working margin): {fix}",
        show(*need), show(*budget), show(*available)
    )]
    CacheDoesNotFit {
        /// Slots asked for.
        slots: usize,
        /// Tokens per slot.
        length: usize,
        /// Bytes their cache needs.
        need: u64,
        /// Bytes left for the cache.
        budget: u64,
        /// Bytes the device could still give.
        available: u64,
        /// What to change, naming the settings.
        fix: String,
    },
    /// A submitted request is invalid for this engine (the field and why).
    #[error("request field `{field}`: {problem}")]
    BadRequest {
        /// The [`crate::engine::Request`] field.
        field: &'static str,
        /// What is wrong with its value.
        problem: String,
    },
    /// New weights whose checksum is not the one announced; nothing was changed.
    #[error("weight checksum mismatch: expected {expected:#018x}, the tensors hash to {actual:#018x}")]
    ChecksumMismatch {
        /// The checksum the caller announced.
        expected: u64,
        /// [`crate::engine::checksum_of`] of the tensors received.
        actual: u64,
    },
    /// New weights that do not fit the engine's model (missing, unexpected or mis-shaped tensors,
    /// one line each); nothing was changed.
    #[error("new weights do not fit the model ({} problem(s)):\n  {}", problems.len(), problems.join("\n  "))]
    WeightMismatch {
        /// One line per tensor at fault.
        problems: Vec<String>,
    },
    /// New weights given as a file that is not a usable safetensors file; nothing was changed.
    #[error("the new weights are not a usable safetensors file: {problem}")]
    WeightsFile {
        /// What is wrong with it.
        problem: String,
    },
}

impl EngineError {
    /// A [`EngineError::BadRequest`] about `field`.
    pub fn bad(field: &'static str, problem: impl Into<String>) -> Self {
        EngineError::BadRequest { field, problem: problem.into() }
    }
}
