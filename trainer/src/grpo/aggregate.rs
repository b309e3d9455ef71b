//! How per-token terms become one scalar: the normaliser is what GRPO, DAPO and Dr. GRPO disagree on.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// The normaliser of a per-token objective.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// `(1/N) Σ_i (1/|o_i|) Σ_t x`: mean over sequences of each one's token mean (GRPO, V3.2).
    #[default]
    Sequence,
    /// `Σ_{i,t} x / Σ_i |o_i|`: mean over all tokens of the batch (DAPO).
    Token,
    /// `Σ_{i,t} x / (N · constant_norm)`: a length-independent constant, e.g. the maximum response
    /// length (Dr. GRPO).
    Constant,
}

/// `per_token`: (N, T) aggregated over the tokens where `mask` (N, T) is 1 → scalar f32,
/// differentiable in `per_token`. `constant_norm` is read by [`Aggregation::Constant`] only.
///
/// A sequence without masked tokens contributes 0 and still counts in N; a batch without any gives 0.
pub fn aggregate(per_token: &Tensor, mask: &Tensor, agg: Aggregation, constant_norm: f64) -> Tensor {
    assert_eq!(per_token.size(), mask.size(), "aggregate: per_token and mask differ in shape");
    let m = mask.to_kind(Kind::Float); // (N, T)
    let masked = per_token * &m; // (N, T)
    match agg {
        Aggregation::Sequence => {
            let len = m.sum_dim_intlist(1, false, Kind::Float).clamp_min(1.0); // (N)
            (masked.sum_dim_intlist(1, false, Kind::Float) / len).mean(Kind::Float)
        }
        Aggregation::Token => masked.sum(Kind::Float) / m.sum(Kind::Float).clamp_min(1.0),
        Aggregation::Constant => {
            assert!(constant_norm > 0.0, "aggregate: constant_norm must be > 0, got {constant_norm}");
            masked.sum(Kind::Float) / (per_token.size()[0] as f64 * constant_norm)
        }
    }
}
