//! Per-token KL estimators of `KL(π_θ ‖ π_ref)` from the sampled token's log-probabilities
//! (Schulman 2020, "Approximating KL divergence"), and V3.2's unbiased correction (eq. 7).

use serde::{Deserialize, Serialize};
use tch::Tensor;

/// Above this `log(π_ref/π_θ)` the unbiased estimator switches to its log-space form.
const LOG_SPACE_ABOVE: f64 = 20.0;

/// Which per-token estimate of `KL(π_θ ‖ π_ref)` the penalty uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KlEstimator {
    /// `log π_θ − log π_ref`.
    K1,
    /// `½ (log π_θ − log π_ref)²`.
    K2,
    /// `π_ref/π_θ − log(π_ref/π_θ) − 1` (DeepSeekMath GRPO).
    K3,
    /// V3.2 eq. 7: `(π_θ/π_old) · K3`. Tokens are sampled from π_old, so the importance ratio makes
    /// the gradient `ρ (log π_θ − log π_ref) ∇log π_θ` an unbiased estimate of `∇KL`, bounded where
    /// plain K3's `(1 − π_ref/π_θ)` is not.
    #[default]
    Unbiased,
}

/// The per-token KL estimate: (N, T) f32, differentiable in `logp`.
///
/// logp, logp_ref, logp_old: (N, T) log-probabilities of the sampled tokens under π_θ, the frozen
/// reference and the sampler. `logp_ref` and `logp_old` are detached; only `Unbiased` reads `logp_old`.
pub fn kl_per_token(logp: &Tensor, logp_ref: &Tensor, logp_old: &Tensor, est: KlEstimator) -> Tensor {
    assert_eq!(logp.size(), logp_ref.size(), "kl_per_token: logp and logp_ref differ in shape");
    let lr = logp_ref.detach();
    let d = &lr - logp; // log(π_ref/π_θ), (N, T)
    match est {
        KlEstimator::K1 => -d,
        KlEstimator::K2 => d.square() * 0.5,
        // expm1 keeps K3's relative precision where π_ref ≈ π_θ (exp(d) − 1 would round it away).
        KlEstimator::K3 => d.expm1() - d,
        KlEstimator::Unbiased => {
            assert_eq!(logp.size(), logp_old.size(), "kl_per_token: logp and logp_old differ in shape");
            let lo = logp_old.detach();
            let rho = (logp - &lo).exp(); // (N, T)
                                          // ρ·K3 directly is the accurate form, but exp(d) overflows where π_θ ≪ π_ref; there the
                                          // log-space form of docs/model.md §3.3.4, exp(ℓ_ref − ℓ_old) − ρ·d − ρ, is exact enough (its
                                          // first term dominates). The clamp keeps the unused branch finite, so its zero gradient
                                          // stays zero rather than 0·∞.
            let dc = d.clamp_max(LOG_SPACE_ABOVE);
            let direct = &rho * (dc.expm1() - dc);
            let log_space = (lr - lo).exp() - &rho * &d - &rho;
            direct.where_self(&d.le(LOG_SPACE_ABOVE), &log_space)
        }
    }
}
