//! V3.2's off-policy sequence mask (eq. 9): drop a sequence from the policy-gradient term when its
//! advantage is negative and the sampler's policy has drifted from π_θ by more than δ on average.

use tch::{Kind, Tensor};

/// The per-sequence mask `M_i`: (N) f32, 1 = keep, 0 = drop; computed without gradient.
///
/// `M_i = 0` iff `advantages[i] < 0` and the mean over the sequence's masked tokens of
/// `logp_old − logp` (a sample estimate of `KL(π_old ‖ π_θ)`) exceeds `delta`. A sequence with no
/// masked tokens has mean 0 and is kept. logp_old, logp, mask: (N, T); advantages: (N).
pub fn off_policy_mask(logp_old: &Tensor, logp: &Tensor, mask: &Tensor, advantages: &Tensor, delta: f64) -> Tensor {
    tch::no_grad(|| {
        let m = mask.to_kind(Kind::Float); // (N, T)
        let len = m.sum_dim_intlist(1, false, Kind::Float).clamp_min(1.0); // (N)
        let drift = ((logp_old - logp) * &m).sum_dim_intlist(1, false, Kind::Float) / len; // (N)
        let drop = advantages.lt(0.0).logical_and(&drift.gt(delta)); // (N)
        drop.logical_not().to_kind(Kind::Float)
    })
}
