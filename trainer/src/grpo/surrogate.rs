//! The PPO clipped surrogate with DAPO's decoupled clip range ("clip-higher", DAPO eq. 10): the
//! ratio may rise to 1 + ε_high, fall to 1 − ε_low; GRPO and V3.2 use ε_high = ε_low.

use tch::{Kind, Tensor};

/// Bound of `|log π_θ − log π_old|` before exponentiation: e^20 ≈ 4.9e8 is far beyond any clip
/// range, so the clipped objective is unchanged, and the ratio stays finite in f32.
pub const MAX_LOG_RATIO: f64 = 20.0;

/// The clipped objective and where clipping bit.
#[derive(Debug)]
pub struct Surrogate {
    /// `min(r·A, clip(r, 1−ε_low, 1+ε_high)·A)`: (N, T) f32, differentiable in `logp`.
    pub objective: Tensor,
    /// `r = exp(logp − logp_old)`: (N, T) f32, differentiable in `logp`.
    pub ratio: Tensor,
    /// Where the lower clip is active, `A < 0 and r < 1 − ε_low`: (N, T) bool.
    pub clipped_low: Tensor,
    /// Where the upper clip is active, `A > 0 and r > 1 + ε_high`: (N, T) bool.
    pub clipped_high: Tensor,
}

/// The clipped surrogate of each token.
///
/// logp, logp_old: (N, T), `logp_old` detached; advantages: (N), one per sequence, detached.
/// Clipping is active where the clipped branch is the min and differs from `r·A`, i.e. exactly the
/// two conditions on [`Surrogate`]'s flags; there the token has no gradient. (A < 0 with a large
/// ratio is not clipped: that would be dual-clip PPO, left out.)
pub fn clipped_surrogate(
    logp: &Tensor,
    logp_old: &Tensor,
    advantages: &Tensor,
    clip_low: f64,
    clip_high: f64,
) -> Surrogate {
    assert_eq!(logp.size(), logp_old.size(), "clipped_surrogate: logp and logp_old differ in shape");
    assert_eq!(advantages.size(), [logp.size()[0]], "clipped_surrogate: advantages must be (N)");
    let a = advantages.detach().to_kind(Kind::Float).unsqueeze(1); // (N, 1)
                                                                   // The log-ratio is clamped before `exp` so one far off-policy token cannot make the ratio (and
                                                                   // the loss) infinite; inside the bound the values and gradients are untouched.
    let ratio = (logp - logp_old.detach()).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO).exp(); // (N, T)
    let (low, high) = (1.0 - clip_low, 1.0 + clip_high);
    let objective = (&ratio * &a).minimum(&(ratio.clamp(low, high) * &a)); // (N, T)
    let (clipped_low, clipped_high) = tch::no_grad(|| {
        (a.lt(0.0).logical_and(&ratio.lt(low)), a.gt(0.0).logical_and(&ratio.gt(high)))
        // (N, T) each
    });
    Surrogate { objective, ratio, clipped_low, clipped_high }
}
