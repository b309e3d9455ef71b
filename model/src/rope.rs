//! Rotary position embeddings with optional YaRN (docs/model.md §2.4; fixtures README "RoPE tables").
//!
//! One table of width `qk_rope_head_dim` serves both users: MLA rotates interleaved pairs
//! `(x[2i], x[2i+1])`, the DSA indexer rotates half-split pairs `(x[i], x[i+d/2])`. The YaRN
//! frequency blend and the cos/sin `attention_factor` follow transformers 5.23 (YaRN is on whenever
//! the rope type is yarn; low/high are truncated to integers). The softmax-scale correction
//! `mscale(factor, mscale_all_dim)²` lives here too, because it is a rope setting.
//!
//! Left out: rope types other than default and yarn (the config rejects them), and the demo's
//! `max_seq_len > original` switch (transformers has none).

use crate::config::{ModelConfig, RopeFields, Yarn};
use crate::error::ModelError;
use std::f64::consts::PI;
use tch::{Device, Kind, Tensor};

/// `0.1·m·ln s + 1` (1 for s ≤ 1): YaRN's attention temperature.
pub fn yarn_mscale(scale: f64, m: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * m * scale.ln() + 1.0
    }
}

/// Inverse frequencies and scales of the model's rotary embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeTables {
    /// `inv_freq[i]`, i < d/2, after the YaRN blend.
    pub inv_freq: Vec<f64>,
    /// Multiplier on cos and sin (1 unless YaRN's mscale and mscale_all_dim differ).
    pub attention_factor: f64,
    /// Multiplier on MLA's `qk_head_dim^-0.5` softmax scale.
    pub softmax_mscale: f64,
    /// `inv_freq` as an f32 tensor on each device it was asked for.
    on_device: InvFreqCopies,
}

/// `inv_freq` as f32 tensors per device, made on first use: a forward builds its cos/sin from
/// them without copying the table from the host again (on CUDA that copy waits for the device).
/// Not part of the tables' identity: clones start empty, comparisons ignore it.
#[derive(Debug, Default)]
struct InvFreqCopies(std::sync::Mutex<Vec<(Device, Tensor)>>);

impl Clone for InvFreqCopies {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for InvFreqCopies {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl RopeTables {
    /// The tables for `cfg`'s rope settings.
    pub fn new(cfg: &ModelConfig) -> Result<Self, ModelError> {
        let rope = cfg.rope()?;
        let d = cfg.qk_rope_head_dim;
        let base: Vec<f64> = (0..d / 2).map(|i| 1.0 / rope.theta.powf((2 * i) as f64 / d as f64)).collect();
        let Some(yarn) = rope.yarn else {
            return Ok(RopeTables {
                inv_freq: base,
                attention_factor: 1.0,
                softmax_mscale: 1.0,
                on_device: Default::default(),
            });
        };
        let inv_freq = yarn_blend(&base, rope.theta, d, &yarn);
        let fields = cfg.rope_parameters.as_ref().or(cfg.rope_scaling.as_ref());
        let attention_factor = attention_factor(fields, &yarn);
        let softmax_mscale =
            if yarn.mscale_all_dim != 0.0 { yarn_mscale(yarn.factor, yarn.mscale_all_dim).powi(2) } else { 1.0 };
        Ok(RopeTables { inv_freq, attention_factor, softmax_mscale, on_device: Default::default() })
    }

    /// `inv_freq` as f32 on `device` (made once per device).
    fn inv_freq_on(&self, device: Device) -> Tensor {
        let mut copies = self.on_device.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, t)) = copies.iter().find(|(d, _)| *d == device) {
            return t.shallow_clone();
        }
        let t = Tensor::from_slice(&self.inv_freq).to_kind(Kind::Float).to_device(device);
        copies.push((device, t.shallow_clone()));
        t
    }

    /// cos and sin at `positions` (any shape, i64): each `(..., d/2)`, f32, scaled by the
    /// attention factor.
    pub fn cos_sin(&self, positions: &Tensor) -> (Tensor, Tensor) {
        let inv = self.inv_freq_on(positions.device());
        let angle = positions.to_kind(Kind::Float).unsqueeze(-1) * inv; // (..., d/2)
        let f = self.attention_factor;
        (angle.cos() * f, angle.sin() * f)
    }

    /// cos and sin for positions `0..n` on `device`: each `(n, d/2)`.
    pub fn cos_sin_range(&self, n: i64, device: Device) -> (Tensor, Tensor) {
        self.cos_sin(&Tensor::arange(n, (Kind::Int64, device)))
    }
}

/// YaRN: keep high frequencies, divide low ones by `factor`, blend linearly between the
/// dimensions that make β_fast and β_slow rotations over the original context.
fn yarn_blend(base: &[f64], theta: f64, d: usize, yarn: &Yarn) -> Vec<f64> {
    let orig = yarn.original_max_position_embeddings as f64;
    let corr = |rot: f64| d as f64 * (orig / (rot * 2.0 * PI)).ln() / (2.0 * theta.ln());
    let low = corr(yarn.beta_fast).floor().max(0.0);
    let mut high = corr(yarn.beta_slow).ceil().min(d as f64 - 1.0);
    if low == high {
        high += 0.001;
    }
    base.iter()
        .enumerate()
        .map(|(i, &inv)| {
            let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
            inv / yarn.factor * ramp + inv * (1.0 - ramp)
        })
        .collect()
}

/// transformers: an explicit `attention_factor`, else `mscale(s, mscale)/mscale(s, mscale_all_dim)`
/// when both are given and non-zero, else `mscale(s, 1)`. Read from the raw fields, because the
/// parsed [`Yarn`] fills a missing `mscale` with 1.
fn attention_factor(fields: Option<&RopeFields>, yarn: &Yarn) -> f64 {
    if let Some(f) = fields.and_then(|f| f.extra.get("attention_factor")).and_then(|v| v.as_f64()) {
        return f;
    }
    let ms = fields.and_then(|f| f.mscale).filter(|&m| m != 0.0);
    let msa = fields.and_then(|f| f.mscale_all_dim).filter(|&m| m != 0.0);
    match (ms, msa) {
        (Some(m), Some(a)) => yarn_mscale(yarn.factor, m) / yarn_mscale(yarn.factor, a),
        _ => yarn_mscale(yarn.factor, 1.0),
    }
}

/// MLA's interleaved rotation of `x (..., d)` with `cos, sin (..., d/2)` broadcastable to `x`'s
/// pairs: `y[2i] = x[2i]c − x[2i+1]s`, `y[2i+1] = x[2i]s + x[2i+1]c`.
pub fn rotate_interleaved(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let d = *x.size().last().expect("rope input has a last dim");
    let pairs = x.unflatten(-1, [d / 2, 2]); // (..., d/2, 2)
    let a = pairs.select(-1, 0);
    let b = pairs.select(-1, 1);
    let (cos, sin) = (cos.to_kind(x.kind()), sin.to_kind(x.kind()));
    let ya = &a * &cos - &b * &sin;
    let yb = &a * &sin + &b * &cos;
    Tensor::stack(&[ya, yb], -1).flatten(-2, -1) // (..., d)
}

/// The indexer's half-split rotation of `x (..., d)`: pairs `(x[i], x[i+d/2])`.
pub fn rotate_half_split(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let d = *x.size().last().expect("rope input has a last dim");
    let a = x.narrow(-1, 0, d / 2);
    let b = x.narrow(-1, d / 2, d / 2);
    let (cos, sin) = (cos.to_kind(x.kind()), sin.to_kind(x.kind()));
    Tensor::cat(&[&a * &cos - &b * &sin, &b * &cos + &a * &sin], -1)
}
