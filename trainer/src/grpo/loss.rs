//! The full GRPO-family loss: `−J` from the module header, to minimise, and its statistics.

use super::aggregate::{aggregate, Aggregation};
use super::kl::{kl_per_token, KlEstimator};
use super::mask::off_policy_mask;
use super::surrogate::clipped_surrogate;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// The KL penalty `β · agg(D_KL)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KlPenalty {
    /// The per-token estimator.
    pub estimator: KlEstimator,
    /// β.
    pub coef: f64,
}

/// One variant of the loss, as plain data: the recipe's `[algorithm]` table holds these keys
/// (flattened beside the update schedule), and [`LossConfig::validate`] is its range check.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LossConfig {
    /// ε_low: the ratio is clipped below at `1 − clip_low`.
    pub clip_low: f64,
    /// ε_high: the ratio is clipped above at `1 + clip_high` (DAPO: > clip_low).
    pub clip_high: f64,
    /// The normaliser of both the policy-gradient and the KL term.
    pub aggregation: Aggregation,
    /// The constant of [`Aggregation::Constant`] (the maximum response length; a recipe fills in
    /// `rollout.max_tokens`); unused otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constant_norm: Option<f64>,
    /// The per-token KL estimator of the penalty.
    pub kl_estimator: KlEstimator,
    /// β; 0 leaves the penalty (and the reference model) out (V3.2 finds that best for some
    /// domains, e.g. maths).
    pub kl_coef: f64,
    /// δ of V3.2's off-policy sequence mask; `None` keeps every sequence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub off_policy_delta: Option<f64>,
}

impl Default for LossConfig {
    /// ε_low 0.2 and ε_high 0.28 (DAPO's clip-higher; the V3.2 paper uses one ε and does not
    /// publish it), per-sequence aggregation as V3.2, no KL, no off-policy mask.
    fn default() -> Self {
        LossConfig {
            clip_low: 0.2,
            clip_high: 0.28,
            aggregation: Aggregation::Sequence,
            constant_norm: None,
            kl_estimator: KlEstimator::Unbiased,
            kl_coef: 0.0,
            off_policy_delta: None,
        }
    }
}

impl LossConfig {
    /// The KL penalty, when β > 0.
    pub fn kl(&self) -> Option<KlPenalty> {
        (self.kl_coef > 0.0).then_some(KlPenalty { estimator: self.kl_estimator, coef: self.kl_coef })
    }

    /// Checks the ranges: the first field out of range, named as the recipe spells it.
    pub fn validate(&self) -> Result<(), InvalidField> {
        let real = |field: &'static str, value: f64, want: &str, ok: bool| match value.is_finite() && ok {
            true => Ok(()),
            false => Err(InvalidField { field, message: format!("must be {want}, got {value}") }),
        };
        real("clip_low", self.clip_low, "in [0, 1)", (0.0..1.0).contains(&self.clip_low))?;
        real("clip_high", self.clip_high, "≥ 0", self.clip_high >= 0.0)?;
        match (self.aggregation, self.constant_norm) {
            (_, Some(norm)) => real("constant_norm", norm, "> 0", norm > 0.0)?,
            (Aggregation::Constant, None) => {
                let message = "must be given (> 0) for aggregation \"constant\"".to_string();
                return Err(InvalidField { field: "constant_norm", message });
            }
            _ => {}
        }
        real("kl_coef", self.kl_coef, "≥ 0", self.kl_coef >= 0.0)?;
        match self.off_policy_delta {
            Some(delta) => real("off_policy_delta", delta, "≥ 0", delta >= 0.0),
            None => Ok(()),
        }
    }
}

/// A [`LossConfig`] field out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidField {
    /// The field, as the recipe spells it.
    pub field: &'static str,
    /// What is wrong with its value.
    pub message: String,
}

/// One minibatch's tensors. All (N, T) f32 unless noted.
#[derive(Debug, Clone, Copy)]
pub struct LossInputs<'a> {
    /// log π_θ of the sampled tokens; the only input with gradient.
    pub logp: &'a Tensor,
    /// log π_old: the rollout engine's sampling log-probs.
    pub logp_old: &'a Tensor,
    /// log π_ref of the frozen reference model; needed when the config has a KL penalty.
    pub logp_ref: Option<&'a Tensor>,
    /// Â per sequence: (N).
    pub advantages: &'a Tensor,
    /// 1 on response tokens that count, 0 elsewhere.
    pub mask: &'a Tensor,
}

/// Diagnostics of one loss evaluation (plain numbers, no gradient).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct LossStats {
    /// The policy-gradient part of the loss, `−agg(surrogate · M)`.
    pub pg_loss: f64,
    /// The KL estimate aggregated like the loss (0 without a penalty): `loss = pg_loss + β·kl_mean`.
    pub kl_mean: f64,
    /// Share of masked tokens where the lower clip is active.
    pub clip_low_frac: f64,
    /// Share of masked tokens where the upper clip is active.
    pub clip_high_frac: f64,
    /// Share of the N sequences the off-policy mask dropped (0 without it).
    pub masked_seq_frac: f64,
    /// Mean of π_θ/π_old over masked tokens.
    pub ratio_mean: f64,
}

/// The loss and its statistics.
#[derive(Debug)]
pub struct LossOutput {
    /// `−J`: scalar f32, differentiable in `logp`.
    pub loss: Tensor,
    /// Diagnostics.
    pub stats: LossStats,
}

/// `−J = −agg(min(rÂ, clip(r)Â) · M) + β · agg(D_KL)`, with the off-policy mask M on the
/// policy-gradient term only (V3.2 eq. 8–9) and one aggregation for both terms.
pub fn grpo_loss(x: &LossInputs, cfg: &LossConfig) -> LossOutput {
    let size = x.logp.size();
    assert_eq!(size.len(), 2, "grpo_loss: logp must be (N, T), got {size:?}");
    assert_eq!(x.logp_old.size(), size, "grpo_loss: logp_old must match logp {size:?}");
    assert_eq!(x.mask.size(), size, "grpo_loss: mask must match logp {size:?}");
    assert_eq!(x.advantages.size(), [size[0]], "grpo_loss: advantages must be (N) = ({})", size[0]);
    let (agg, norm) = (cfg.aggregation, cfg.constant_norm.unwrap_or(0.0));

    let sur = clipped_surrogate(x.logp, x.logp_old, x.advantages, cfg.clip_low, cfg.clip_high);
    let keep = cfg.off_policy_delta.map(|d| off_policy_mask(x.logp_old, x.logp, x.mask, x.advantages, d)); // (N)
    let pg_loss = match &keep {
        Some(k) => -aggregate(&(&sur.objective * k.unsqueeze(1)), x.mask, agg, norm),
        None => -aggregate(&sur.objective, x.mask, agg, norm),
    };
    let kl = cfg.kl().map(|p| {
        let logp_ref = x.logp_ref.expect("grpo_loss: the config has a KL penalty but no logp_ref was given");
        assert_eq!(logp_ref.size(), size, "grpo_loss: logp_ref must match logp {size:?}");
        (p.coef, aggregate(&kl_per_token(x.logp, logp_ref, x.logp_old, p.estimator), x.mask, agg, norm))
    });
    let loss = match &kl {
        Some((coef, k)) => &pg_loss + k * *coef,
        None => pg_loss.shallow_clone(),
    };

    let stats = tch::no_grad(|| {
        let zero = || Tensor::zeros([], (Kind::Float, x.logp.device()));
        let token_mean = |t: &Tensor| aggregate(&t.to_kind(Kind::Float), x.mask, Aggregation::Token, 0.0);
        let row = [
            pg_loss.detach(),
            kl.as_ref().map_or_else(zero, |(_, k)| k.detach()),
            token_mean(&sur.clipped_low),
            token_mean(&sur.clipped_high),
            keep.as_ref().map_or_else(zero, |k| 1.0 - k.mean(Kind::Float)),
            token_mean(&sur.ratio.detach()),
        ];
        // One device sync for all six numbers.
        let v = Vec::<f64>::try_from(Tensor::stack(&row, 0).to_kind(Kind::Double)).expect("stats are a vector");
        LossStats {
            pg_loss: v[0],
            kl_mean: v[1],
            clip_low_frac: v[2],
            clip_high_frac: v[3],
            masked_seq_frac: v[4],
            ratio_mean: v[5],
        }
    });
    LossOutput { loss, stats }
}
