//! Where a run stands: everything besides the weights and the optimizer that a checkpoint must hold
//! for `--resume` to continue exactly as an uninterrupted run would (docs/architecture.md §6).
//!
//! Every random draw of a run derives from `seeds` and the step counters (data order, sampling
//! streams, initialisation), so saving the counters saves the random state: there is no hidden
//! generator state to carry.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The seeds a run draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seeds {
    /// `run.seed`: data order, rollout sampling streams, eval streams.
    pub run: u64,
    /// The model's initialisation seed (presets only).
    pub init: u64,
}

/// The resumable state of a run (`state.json` in every checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// The stage being run (index into the recipe's stages).
    pub stage_index: usize,
    /// Optimizer steps completed in that stage.
    pub stage_step: usize,
    /// Optimizer steps completed over the whole run (checkpoint names count these).
    pub global_step: u64,
    /// Next training problem to draw (GRPO, SFT).
    pub problem_cursor: u64,
    /// Next document of the token stream to draw (pretrain and the DSA stages).
    pub text_cursor: u64,
    /// Weight updates published to the rollout engine so far.
    pub policy_version: u64,
    /// The seeds.
    pub seeds: Seeds,
    /// Non-finite losses in a row (the step was skipped each time).
    pub bad_steps: usize,
    /// The summaries of the finished stages, by stage name (becomes `report.json`).
    pub report: Map<String, Value>,
    /// The running stage's own bookkeeping (e.g. the warm-up's starting KL).
    pub stage_notes: Map<String, Value>,
}

impl TrainState {
    /// The state of a run that has not started.
    pub fn new(seeds: Seeds) -> Self {
        TrainState {
            stage_index: 0,
            stage_step: 0,
            global_step: 0,
            problem_cursor: 0,
            text_cursor: 0,
            policy_version: 0,
            seeds,
            bad_steps: 0,
            report: Map::new(),
            stage_notes: Map::new(),
        }
    }

    /// Moves on to the next stage, recording `summary` under `name`.
    pub fn finish_stage(&mut self, name: &str, summary: Value) {
        self.report.insert(name.to_string(), summary);
        self.stage_index += 1;
        self.stage_step = 0;
        self.stage_notes.clear();
    }
}
