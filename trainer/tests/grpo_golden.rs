//! The GRPO-family losses against tests/fixtures/grpo/grpo.safetensors (made by make_grpo.py from
//! the equations, in float64 with torch autograd): values and gradients w.r.t. logp of every KL
//! estimator, the clipped surrogate under every aggregation, the off-policy mask, group advantages
//! and the full loss for the fixture's configs. Then invariants on hand-made inputs.

use rlvr_trainer::grpo::{
    aggregate, clipped_surrogate, group_advantages, groups_with_signal, grpo_loss, kl_per_token, off_policy_mask,
    overlong_penalty, AdvantageMode, Aggregation, KlEstimator, KlPenalty, LossConfig, LossInputs,
};
use safetensors::SafeTensors;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use tch::{Kind, Tensor};

/// |got − want| ≤ ATOL + RTOL·|want|, elementwise, in f32 against float64 references.
const ATOL: f64 = 1e-7;
const RTOL: f64 = 1e-6;

const ESTIMATORS: [KlEstimator; 4] = [KlEstimator::K1, KlEstimator::K2, KlEstimator::K3, KlEstimator::Unbiased];
const AGGREGATIONS: [Aggregation; 3] = [Aggregation::Sequence, Aggregation::Token, Aggregation::Constant];

/// The JSON in the fixture's "params" metadata.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    cases: Vec<String>,
    clip_low: f64,
    clip_high: f64,
    delta: f64,
    constant_norm: f64,
    loss_configs: BTreeMap<String, FixtureLoss>,
}

/// A loss config as the fixture script writes it (the KL penalty as one nested object).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureLoss {
    clip_low: f64,
    clip_high: f64,
    aggregation: Aggregation,
    #[serde(default)]
    constant_norm: Option<f64>,
    #[serde(default)]
    kl: Option<KlPenalty>,
    #[serde(default)]
    off_policy_delta: Option<f64>,
}

impl FixtureLoss {
    fn config(&self) -> LossConfig {
        let kl = self.kl.unwrap_or(KlPenalty { estimator: KlEstimator::Unbiased, coef: 0.0 });
        LossConfig {
            clip_low: self.clip_low,
            clip_high: self.clip_high,
            aggregation: self.aggregation,
            constant_norm: self.constant_norm,
            kl_estimator: kl.estimator,
            kl_coef: kl.coef,
            off_policy_delta: self.off_policy_delta,
        }
    }
}

struct Fixture {
    tensors: HashMap<String, Tensor>,
    params: Params,
}

impl Fixture {
    fn load() -> Fixture {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/grpo/grpo.safetensors");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let json = meta.metadata().as_ref().and_then(|m| m.get("params")).expect("fixture has no params metadata");
        let params = serde_json::from_str(json).unwrap();
        let tensors = Tensor::read_safetensors(&path).unwrap().into_iter().collect();
        Fixture { tensors, params }
    }

    fn get(&self, key: &str) -> &Tensor {
        self.tensors.get(key).unwrap_or_else(|| panic!("fixture has no tensor {key}"))
    }
}

/// The serde name of a config enum, which is also its fixture key.
fn key_of<T: serde::Serialize>(v: T) -> String {
    serde_json::to_value(v).unwrap().as_str().unwrap().to_string()
}

/// A fresh leaf copy of `t` that records gradients.
fn leaf(t: &Tensor) -> Tensor {
    t.detach().copy().set_requires_grad(true)
}

/// Asserts `got` matches `want` elementwise within ATOL + RTOL·|want|; returns the max abs error.
fn assert_close(what: &str, got: &Tensor, want: &Tensor) -> f64 {
    assert_eq!(got.size(), want.size(), "{what}: shape");
    let (g, w) = (got.detach().to_kind(Kind::Double), want.to_kind(Kind::Double));
    assert_eq!(g.isfinite().all().int64_value(&[]), 1, "{what}: non-finite values in {g}");
    let err = (&g - &w).abs();
    let excess = (&err - (w.abs() * RTOL + ATOL)).max().double_value(&[]);
    let max_err = err.max().double_value(&[]);
    assert!(excess <= 0.0, "{what}: max abs error {max_err:.3e} beyond tolerance\n got {g}\nwant {w}");
    max_err
}

/// The fixture inputs of case `c`: logp, logp_old, logp_ref, advantages, mask.
fn inputs<'a>(fx: &'a Fixture, c: &str) -> [&'a Tensor; 5] {
    ["logp", "logp_old", "logp_ref", "advantages", "mask"].map(|k| fx.get(&format!("{c}/{k}")))
}

#[test]
fn kl_estimators_match_reference() {
    let fx = Fixture::load();
    for c in &fx.params.cases {
        let [logp, logp_old, logp_ref, _, mask] = inputs(&fx, c);
        for est in ESTIMATORS {
            let key = format!("{c}/kl/{}", key_of(est));
            let lp = leaf(logp);
            let kl = kl_per_token(&lp, logp_ref, logp_old, est);
            assert_close(&key, &kl, fx.get(&key));
            (&kl * mask).sum(Kind::Float).backward();
            assert_close(&format!("{key}/grad"), &lp.grad(), fx.get(&format!("{key}/grad")));
        }
    }
}

#[test]
fn unbiased_kl_stays_finite_where_policy_is_far_below_reference() {
    // π_θ = e^−200 on a token with π_ref = π_old = e^−1: ρ·K3 = ρ·π_ref/π_θ − ρ·log(π_ref/π_θ) − ρ → 1.
    let logp = leaf(&Tensor::from_slice(&[-200f32, -1.0, -1.5]).view([1, 3]));
    let logp_ref = Tensor::from_slice(&[-1f32, -1.0, -1.0]).view([1, 3]);
    let kl = kl_per_token(&logp, &logp_ref, &logp_ref, KlEstimator::Unbiased);
    kl.sum(Kind::Float).backward();
    // Middle: π_θ = π_ref, zero; right: ρ = π_θ/π_ref = e^−0.5, K3 = e^0.5 − 0.5 − 1.
    let k3 = 0.5f64.exp() - 1.5;
    assert_close("far-off value", &kl, &Tensor::from_slice(&[1.0, 0.0, (-0.5f64).exp() * k3]).view([1, 3]));
    // ∇ = ρ·(log π_θ − log π_ref).
    let grad = Tensor::from_slice(&[0.0, 0.0, -0.5 * (-0.5f64).exp()]).view([1, 3]);
    assert_close("far-off gradient", &logp.grad(), &grad);
}

#[test]
fn surrogate_and_aggregations_match_reference() {
    let fx = Fixture::load();
    let p = &fx.params;
    for c in &p.cases {
        let [logp, logp_old, _, adv, mask] = inputs(&fx, c);
        let sur = clipped_surrogate(logp, logp_old, adv, p.clip_low, p.clip_high);
        assert_close(&format!("{c}/objective"), &sur.objective, fx.get(&format!("{c}/surrogate/objective")));
        assert_close(&format!("{c}/ratio"), &sur.ratio, fx.get(&format!("{c}/surrogate/ratio")));
        for flag in ["clipped_low", "clipped_high"] {
            let got = if flag == "clipped_low" { &sur.clipped_low } else { &sur.clipped_high };
            let want = fx.get(&format!("{c}/surrogate/{flag}"));
            assert!(got.to_kind(Kind::Float).equal(want), "{c}/{flag}: got {got}, want {want}");
        }
        for agg in AGGREGATIONS {
            let key = format!("{c}/aggregate/{}", key_of(agg));
            let lp = leaf(logp);
            let objective = clipped_surrogate(&lp, logp_old, adv, p.clip_low, p.clip_high).objective;
            let value = aggregate(&objective, mask, agg, p.constant_norm);
            assert_eq!(value.size(), Vec::<i64>::new(), "{key}: a scalar");
            assert_close(&key, &value, fx.get(&key));
            value.backward();
            assert_close(&format!("{key}/grad"), &lp.grad(), fx.get(&format!("{key}/grad")));
        }
    }
}

#[test]
fn off_policy_mask_matches_reference() {
    let fx = Fixture::load();
    for c in &fx.params.cases {
        let [logp, logp_old, _, adv, mask] = inputs(&fx, c);
        let lp = leaf(logp);
        let keep = off_policy_mask(logp_old, &lp, mask, adv, fx.params.delta);
        assert!(!keep.requires_grad(), "{c}: the mask is computed without gradient");
        assert_eq!(keep.kind(), Kind::Float);
        let want = fx.get(&format!("{c}/off_policy_mask"));
        assert!(keep.equal(want), "{c}: off-policy mask {keep}, want {want}");
    }
}

#[test]
fn grpo_loss_matches_reference() {
    let fx = Fixture::load();
    assert_eq!(fx.params.loss_configs.len(), 4);
    for c in &fx.params.cases {
        let [logp, logp_old, logp_ref, advantages, mask] = inputs(&fx, c);
        for (name, cfg) in &fx.params.loss_configs {
            let cfg = &cfg.config();
            cfg.validate().unwrap();
            let key = format!("{c}/loss/{name}");
            let lp = leaf(logp);
            let x = LossInputs { logp: &lp, logp_old, logp_ref: Some(logp_ref), advantages, mask };
            let out = grpo_loss(&x, cfg);
            assert_close(&key, &out.loss, fx.get(&key));
            out.loss.backward();
            assert_close(&format!("{key}/grad"), &lp.grad(), fx.get(&format!("{key}/grad")));
            let s = out.stats;
            let got = [s.pg_loss, s.kl_mean, s.clip_low_frac, s.clip_high_frac, s.masked_seq_frac, s.ratio_mean];
            assert_close(&format!("{key}/stats"), &Tensor::from_slice(&got), fx.get(&format!("{key}/stats")));
        }
    }
}

#[test]
fn group_advantages_match_reference() {
    let fx = Fixture::load();
    for tag in ["g4", "g3", "g1"] {
        let rewards = fx.get(&format!("adv/{tag}/rewards"));
        for mode in [AdvantageMode::Mean, AdvantageMode::MeanStd] {
            let key = format!("adv/{tag}/{}", key_of(mode));
            let adv = group_advantages(rewards, mode);
            assert_close(&key, &adv, fx.get(&key));
            // Flat groups are exactly zero, not merely close.
            let flat = rewards.amax(1, true).eq_tensor(&rewards.amin(1, true)).expand_as(&adv);
            assert_eq!(adv.masked_select(&flat).abs().sum(Kind::Double).double_value(&[]), 0.0, "{key}");
        }
    }
}

#[test]
fn zero_variance_groups_give_exactly_zero() {
    let cases = [
        Tensor::from_slice(&[0.1f32; 8]).view([1, 8]),
        Tensor::from_slice(&[0.7f32, 0.7, 0.7, 1e7, 1e7, 1e7, -0.3, -0.3, -0.3]).view([3, 3]),
        Tensor::from_slice(&[0.3f32, 1.0, -2.0]).view([3, 1]),
    ];
    for rewards in &cases {
        for mode in [AdvantageMode::Mean, AdvantageMode::MeanStd] {
            let adv = group_advantages(rewards, mode);
            assert_eq!(adv.size(), rewards.size());
            assert_eq!(adv.kind(), Kind::Float);
            assert!(adv.eq(0.0).all().int64_value(&[]) == 1, "{mode:?} on {rewards}: {adv}");
        }
    }
}

/// Random (N, T) inputs with ragged prefix masks (one empty row) and mixed-sign advantages.
fn random_batch(n: i64, t: i64) -> (Tensor, Tensor, Tensor) {
    tch::manual_seed(11);
    let logp = -Tensor::rand([n, t], (Kind::Float, tch::Device::Cpu)) * 2.0;
    let lengths = Tensor::from_slice(&[t, 1, t / 2, 0, t - 1, 3][..n as usize]); // (N)
    let mask = Tensor::arange(t, (Kind::Int64, tch::Device::Cpu)).unsqueeze(0).lt_tensor(&lengths.unsqueeze(1));
    let adv = Tensor::from_slice(&[1.5f32, -0.5, 0.25, -2.0, 0.0, -1.0][..n as usize]);
    (logp, mask.to_kind(Kind::Float), adv)
}

#[test]
fn unit_ratio_gradient_is_minus_advantage_over_normaliser() {
    let (logp, mask, adv) = random_batch(6, 7);
    let (n, c) = (6.0, 10.0);
    let lengths = mask.sum_dim_intlist(1, true, Kind::Float); // (N, 1)
    for agg in AGGREGATIONS {
        let cfg = LossConfig {
            clip_low: 0.2,
            clip_high: 0.28,
            aggregation: agg,
            constant_norm: Some(c),
            off_policy_delta: None,
            ..LossConfig::default()
        };
        let lp = leaf(&logp);
        // π_old = π_θ: every ratio is exactly 1, inside the clip range.
        let out =
            grpo_loss(&LossInputs { logp: &lp, logp_old: &logp, logp_ref: None, advantages: &adv, mask: &mask }, &cfg);
        out.loss.backward();
        let norm = match agg {
            Aggregation::Sequence => lengths.clamp_min(1.0) * n, // (N, 1)
            Aggregation::Token => mask.sum(Kind::Float).expand([6, 1], false),
            Aggregation::Constant => Tensor::full([6, 1], n * c, (Kind::Float, tch::Device::Cpu)),
        };
        let want = -adv.unsqueeze(1) * &mask / norm; // (N, T)
        assert_close(&format!("unit ratio, {agg:?}"), &lp.grad(), &want);
        assert_eq!((out.stats.ratio_mean, out.stats.clip_low_frac, out.stats.clip_high_frac), (1.0, 0.0, 0.0));
        assert_eq!((out.stats.kl_mean, out.stats.masked_seq_frac), (0.0, 0.0));
    }
}

#[test]
fn clip_fractions_on_a_hand_example() {
    // Row 0 (A > 0): r = 1.5 clips high; 1.1 is inside; 0.5 is below but the min keeps r·A.
    // Row 1 (A < 0): r = 0.5 clips low; 0.9 is inside; 0.3 would clip low but is masked out.
    let ratios = Tensor::from_slice(&[1.5f32, 1.1, 0.5, 0.5, 0.9, 0.3]).view([2, 3]);
    let logp_old = Tensor::zeros([2, 3], (Kind::Float, tch::Device::Cpu)) - 1.0;
    let logp = leaf(&(ratios.log() + &logp_old));
    let mask = Tensor::from_slice(&[1f32, 1., 1., 1., 1., 0.]).view([2, 3]);
    let adv = Tensor::from_slice(&[1.0f32, -1.0]);

    let sur = clipped_surrogate(&logp, &logp_old, &adv, 0.2, 0.28);
    let low = Tensor::from_slice(&[false, false, false, true, false, true]).view([2, 3]);
    let high = Tensor::from_slice(&[true, false, false, false, false, false]).view([2, 3]);
    assert!(sur.clipped_low.equal(&low) && sur.clipped_high.equal(&high));
    let want = Tensor::from_slice(&[1.28f32, 1.1, 0.5, -0.8, -0.9, -0.8]).view([2, 3]);
    assert_close("hand objective", &sur.objective, &want);
    // Clipped tokens carry no gradient; the others d(r·A)/dlogp = r·A.
    (&sur.objective * &mask).sum(Kind::Float).backward();
    let grad = Tensor::from_slice(&[0f32, 1.1, 0.5, 0.0, -0.9, 0.0]).view([2, 3]);
    assert_close("hand gradient", &logp.grad(), &grad);

    let cfg = LossConfig {
        clip_low: 0.2,
        clip_high: 0.28,
        aggregation: Aggregation::Token,
        constant_norm: None,
        off_policy_delta: None,
        ..LossConfig::default()
    };
    let x = LossInputs { logp: &logp, logp_old: &logp_old, logp_ref: None, advantages: &adv, mask: &mask };
    let s = grpo_loss(&x, &cfg).stats;
    assert!((s.clip_low_frac - 0.2).abs() < 1e-7 && (s.clip_high_frac - 0.2).abs() < 1e-7, "{s:?}");
    assert!((s.ratio_mean - (1.5 + 1.1 + 0.5 + 0.5 + 0.9) / 5.0).abs() < 1e-6, "{s:?}");
    assert!((s.pg_loss + (1.28 + 1.1 + 0.5 - 0.8 - 0.9) / 5.0).abs() < 1e-6, "{s:?}");
}

#[test]
fn off_policy_mask_only_drops_drifted_negative_sequences() {
    // Per row: mean of logp_old − logp over its masked tokens, and its advantage.
    //   0: drift 0.5,  A > 0  → kept (only negative advantages are dropped)
    //   1: drift 0.5,  A < 0  → dropped
    //   2: drift 0.05, A < 0  → kept (within δ)
    //   3: drift 0.5,  A = 0  → kept
    //   4: drift 0.5 only on its masked-out token, A < 0 → kept
    //   5: drift −0.5 (π_θ above π_old), A < 0 → kept
    let drift = Tensor::from_slice(&[0.5f32, 0.5, 0.05, 0.5, 0.0, -0.5]).view([6, 1]).expand([6, 2], false).copy();
    let _ = drift.get(4).get(1).fill_(0.5);
    let logp_old = Tensor::full([6, 2], -1.0, (Kind::Float, tch::Device::Cpu));
    let logp = &logp_old - &drift;
    let mask = Tensor::from_slice(&[1f32, 1., 1., 1., 1., 1., 1., 1., 1., 0., 1., 1.]).view([6, 2]);
    let adv = Tensor::from_slice(&[1.0f32, -1.0, -1.0, 0.0, -1.0, -1.0]);
    let keep = off_policy_mask(&logp_old, &logp, &mask, &adv, 0.1);
    assert!(keep.equal(&Tensor::from_slice(&[1f32, 0., 1., 1., 1., 1.])), "{keep}");
}

#[test]
fn off_policy_mask_spares_the_kl_term() {
    let fx = Fixture::load();
    let cfg = fx.params.loss_configs["v32"].config();
    let penalty = cfg.kl().expect("v32 has a KL penalty");
    let [logp, logp_old, logp_ref, advantages, mask] = inputs(&fx, "a");
    let dropped = fx.get("a/off_policy_mask").eq(0.0); // (N)
    assert!(dropped.any().int64_value(&[]) == 1);

    let lp = leaf(logp);
    grpo_loss(&LossInputs { logp: &lp, logp_old, logp_ref: Some(logp_ref), advantages, mask }, &cfg).loss.backward();
    let lk = leaf(logp);
    let kl = aggregate(&kl_per_token(&lk, logp_ref, logp_old, penalty.estimator), mask, cfg.aggregation, 0.0);
    (kl * penalty.coef).backward();
    // Dropped rows get the KL gradient and nothing else; it is not zero.
    let (got, want) = (lp.grad().index_select(0, &dropped.nonzero().squeeze_dim(1)), lk.grad());
    let want = want.index_select(0, &dropped.nonzero().squeeze_dim(1));
    assert!(want.abs().max().double_value(&[]) > 1e-4);
    assert_close("dropped rows' gradient", &got, &want);
}

#[test]
#[should_panic(expected = "no logp_ref")]
fn kl_penalty_without_reference_is_refused() {
    let (logp, mask, adv) = random_batch(2, 3);
    let cfg = LossConfig {
        clip_low: 0.2,
        clip_high: 0.2,
        aggregation: Aggregation::Sequence,
        constant_norm: None,
        kl_estimator: KlEstimator::Unbiased,
        kl_coef: 0.01,
        off_policy_delta: None,
    };
    grpo_loss(&LossInputs { logp: &logp, logp_old: &logp, logp_ref: None, advantages: &adv, mask: &mask }, &cfg);
}

#[test]
fn overlong_penalty_is_dapo_eq_13() {
    // max 100, buffer 20, factor 1: flat to 80, linear to −1 at 100, −1 beyond.
    for (len, want) in [(0, 0.0), (80, 0.0), (81, -0.05), (90, -0.5), (100, -1.0), (101, -1.0), (10_000, -1.0)] {
        assert!((overlong_penalty(len, 100, 20, 1.0) - want).abs() < 1e-12, "len {len}");
    }
    assert_eq!(overlong_penalty(95, 100, 20, 0.5), -0.375);
    // No buffer: a hard step past max_len. A buffer longer than max_len starts at 0.
    assert_eq!((overlong_penalty(100, 100, 0, 1.0), overlong_penalty(101, 100, 0, 1.0)), (0.0, -1.0));
    assert_eq!((overlong_penalty(5, 10, 50, 1.0), overlong_penalty(10, 10, 50, 1.0)), (-0.5, -1.0));
}

#[test]
fn groups_with_signal_drop_flat_groups() {
    let rewards = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.0, 0.1, 0.1, 0.1];
    assert_eq!(groups_with_signal(&rewards, 3), [false, false, true, false]);
    assert_eq!(groups_with_signal(&rewards, 6), [true, true]);
    assert_eq!(groups_with_signal(&rewards, 1), [false; 12]);
    assert_eq!(groups_with_signal(&rewards, 12), [true]);
}

#[test]
fn config_is_plain_data() {
    let json = r#"{"clip_low": 0.2, "clip_high": 0.28, "aggregation": "token",
                   "kl_estimator": "unbiased", "kl_coef": 0.01, "off_policy_delta": 0.5}"#;
    let cfg: LossConfig = serde_json::from_str(json).unwrap();
    assert_eq!(cfg.kl(), Some(KlPenalty { estimator: KlEstimator::Unbiased, coef: 0.01 }));
    assert_eq!((cfg.aggregation, cfg.constant_norm, cfg.off_policy_delta), (Aggregation::Token, None, Some(0.5)));
    cfg.validate().unwrap();
    let back: LossConfig = serde_json::from_value(serde_json::to_value(cfg).unwrap()).unwrap();
    assert_eq!(back, cfg);
    assert_eq!(key_of(AdvantageMode::MeanStd), "mean_std");

    // Unknown keys are refused by the table that holds the loss (the recipe's `[algorithm]`, see
    // tests/recipe.rs `unknown_algorithm_key_is_named`), since the loss shares it with other keys.
    let bad = LossConfig { aggregation: Aggregation::Constant, constant_norm: Some(0.0), ..cfg };
    assert!(bad.validate().unwrap_err().to_string().contains("constant_norm: must be > 0, got 0"));
    let bad = LossConfig { aggregation: Aggregation::Constant, ..cfg };
    assert!(bad.validate().unwrap_err().to_string().contains("constant_norm: must be given"));
    let bad = LossConfig { clip_low: 1.0, ..cfg };
    assert!(bad.validate().unwrap_err().to_string().contains("clip_low: must be in [0, 1), got 1"));
}
