//! Group-relative advantages. V3.2 (§3.1) writes `Â_i = R_i − mean(R)` over the G samples of one
//! prompt, with no std term (docs/model.md §3.3.3: follow the paper); DeepSeekMath's GRPO also divides
//! by the group's std, kept here as [`AdvantageMode::MeanStd`].

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Added to the group's std before dividing in [`AdvantageMode::MeanStd`]. It only matters for
/// groups with a tiny nonzero spread: groups with none get exactly 0 without dividing.
pub const STD_EPS: f64 = 1e-6;

/// How a group's rewards become advantages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdvantageMode {
    /// `R_i − mean(R)`: the V3.2 paper.
    #[default]
    Mean,
    /// `(R_i − mean(R)) / (std(R) + STD_EPS)`, std with Bessel's correction (DeepSeekMath GRPO).
    MeanStd,
}

/// Advantages of `rewards`: (P, G), one row per prompt's group of G samples → (P, G) f32, no grad.
///
/// A group whose rewards are all equal (including G = 1) gets exactly 0, never NaN: it is set
/// explicitly, since the float mean of equal values need not equal them (0.1 + 0.1 + 0.1 ≠ 0.3).
pub fn group_advantages(rewards: &Tensor, mode: AdvantageMode) -> Tensor {
    let size = rewards.size();
    assert!(size.len() == 2 && size[1] >= 1, "group_advantages: rewards must be (P, G) with G ≥ 1, got {size:?}");
    let r = rewards.detach().to_kind(Kind::Float); // (P, G)
    let flat = r.amax(1, true).eq_tensor(&r.amin(1, true)); // (P, 1)
    let centred = &r - r.mean_dim(1, true, Kind::Float); // (P, G)
    let adv = match mode {
        // With G = 1 every group is flat, and Bessel's std is undefined: skip it.
        AdvantageMode::MeanStd if size[1] > 1 => centred / (r.std_dim(1, true, true) + STD_EPS),
        AdvantageMode::Mean | AdvantageMode::MeanStd => centred,
    };
    adv.masked_fill(&flat, 0.0)
}
