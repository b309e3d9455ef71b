//! The GRPO family of policy losses, as pure functions of per-token log-probabilities.
//!
//! The objective is the V3.2 paper's GRPO (§3.1; docs/model.md §3.3.3–3.3.5), to be
//! maximised, with the variants that share its shape:
//!
//! ```text
//! J = agg_{i,t}[ min(r Â_i, clip(r, 1−ε_low, 1+ε_high) Â_i) · M_i ] − β · agg_{i,t}[ D_KL ]
//! r_{i,t} = π_θ / π_old                       Â_i = R_i − mean(R)      (per group of G samples)
//! M_i = 0 iff Â_i < 0 and mean_t log(π_old/π_θ) > δ                    (V3.2 eq. 8–9)
//! D_KL = (π_θ/π_old)(π_ref/π_θ − log(π_ref/π_θ) − 1)                  (V3.2 eq. 7, unbiased K3)
//! ```
//!
//! - [`advantage`]: group-relative advantages, with or without the std division (DeepSeekMath GRPO).
//! - [`kl`]: the K1/K2/K3 estimators (Schulman 2020) and V3.2's importance-weighted K3 (eq. 7).
//! - [`mask`]: V3.2's off-policy sequence mask (eq. 9), without gradient.
//! - [`surrogate`]: the PPO clipped ratio objective, with DAPO's decoupled clip-higher (ε_high > ε_low).
//! - [`mod@aggregate`]: `agg` above — per-sequence mean (GRPO, V3.2), per-token mean (DAPO), or a
//!   constant normaliser (Dr. GRPO).
//! - [`dapo`]: DAPO's overlong reward shaping (eq. 13) and dynamic-sampling filter (eq. 11).
//! - [`loss`]: [`grpo_loss`], the scalar to minimise (−J) and its statistics.
//!
//! Shapes: N sequences (the B·G samples of a minibatch), T response positions. Per-token tensors are
//! (N, T) f32; `mask` (N, T) is 1 on response tokens that count; advantages are one per sequence, (N).
//! Padded positions must hold finite log-probabilities (0 is fine): the mask zeroes their value and
//! gradient by multiplication.
//!
//! Left out: computing log-probabilities from logits (the caller's forward, with V3.2's Keep Routing
//! and Keep Sampling Mask), dual-clip PPO for negative advantages, entropy bonuses, sequence-level
//! ratios (GSPO), batch-level advantage normalisation, a KL penalty folded into the reward, and V3.2's
//! length and language-consistency rewards (formulas not published). V3.2's ε, β and δ are not
//! disclosed either; [`LossConfig`] leaves them to the recipe.

pub mod advantage;
pub mod aggregate;
pub mod dapo;
pub mod kl;
pub mod loss;
pub mod mask;
pub mod surrogate;

pub use advantage::{group_advantages, AdvantageMode, STD_EPS};
pub use aggregate::{aggregate, Aggregation};
pub use dapo::{groups_with_signal, overlong_penalty};
pub use kl::{kl_per_token, KlEstimator};
pub use loss::{grpo_loss, InvalidField, KlPenalty, LossConfig, LossInputs, LossOutput, LossStats};
pub use mask::off_policy_mask;
pub use surrogate::{clipped_surrogate, Surrogate};
