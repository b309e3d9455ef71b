//! The learning-rate schedule: linear warmup, then constant or cosine decay.

use serde::{Deserialize, Serialize};

/// How the learning rate moves after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// `base_lr` until the end.
    #[default]
    Constant,
    /// Half a cosine from `base_lr` down to `base_lr · min_lr_ratio`.
    Cosine,
}

/// The learning rate for `step` (0-based: the step about to run) of `total_steps`.
///
/// With `w = warmup_steps`, `r = min_lr_ratio` and `d = total_steps − w` decay steps:
///
/// - warmup, `step < w`: `base_lr · (step + 1) / w`, so the first step is not wasted at lr 0 and
///   step `w − 1` runs at `base_lr`;
/// - [`Schedule::Constant`], `step ≥ w`: `base_lr`;
/// - [`Schedule::Cosine`], `step ≥ w`: with progress `p = min(1, (step − w) / max(1, d − 1))`,
///   `base_lr · (r + (1 − r) · (1 + cos(π·p)) / 2)`: step `w` runs at `base_lr`, the last step
///   (`total_steps − 1`) at `base_lr · r`, and any step past the end stays there.
pub fn lr_at(
    schedule: Schedule,
    base_lr: f64,
    step: usize,
    total_steps: usize,
    warmup_steps: usize,
    min_lr_ratio: f64,
) -> f64 {
    if step < warmup_steps {
        return base_lr * (step + 1) as f64 / warmup_steps as f64;
    }
    match schedule {
        Schedule::Constant => base_lr,
        Schedule::Cosine => {
            let decay_steps = total_steps.saturating_sub(warmup_steps);
            let progress = ((step - warmup_steps) as f64 / decay_steps.saturating_sub(1).max(1) as f64).min(1.0);
            let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
            base_lr * (min_lr_ratio + (1.0 - min_lr_ratio) * cosine)
        }
    }
}
