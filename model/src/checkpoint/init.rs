//! Random initialisation of every checkpoint tensor from a seed (`rlvr init`).
//!
//! Weights ~ N(0, `initializer_range`); RMSNorm and LayerNorm weights (`*norm.weight`) = 1; the
//! indexer's `k_norm.bias` and the router's `e_score_correction_bias` = 0. MTP tensors are included
//! when `num_nextn_predict_layers > 0`.
//!
//! Draws do not go through libtorch's global generator: each tensor has its own SplitMix64 stream
//! seeded from (seed, tensor name), so the result depends on nothing but the seed and the config
//! (not on other code drawing random numbers, nor on the order tensors are made in), and normals
//! come from the Box–Muller transform in f64.

use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::spec::{main_tensors, mtp_tensors, TensorSpec};
use tch::{Kind, Tensor};

/// SplitMix64 (Steele, Lea & Flood 2014): a tiny generator with full 64-bit output.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// FNV-1a of a tensor name, to give each tensor its own stream.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3))
}

/// `n` draws from N(0, std²) for the tensor `name`.
pub fn normal_values(seed: u64, name: &str, n: usize, std: f64) -> Vec<f32> {
    let mut rng = SplitMix64(seed ^ name_hash(name));
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        // Box–Muller: u1 in (0, 1] keeps the log finite.
        let u1 = 1.0 - rng.next_f64();
        let u2 = rng.next_f64();
        let radius = (-2.0 * u1.ln()).sqrt();
        let angle = std::f64::consts::TAU * u2;
        out.push((std * radius * angle.cos()) as f32);
        out.push((std * radius * angle.sin()) as f32);
    }
    out.truncate(n);
    out
}

/// How one tensor starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// N(0, std²).
    Normal(f64),
    /// All ones (norm weights).
    Ones,
    /// All zeros (biases).
    Zeros,
}

/// The rule for a tensor, by its name.
pub fn init_of(name: &str, cfg: &ModelConfig) -> Init {
    if name.ends_with("norm.weight") {
        Init::Ones
    } else if name.ends_with(".bias") || name.ends_with("e_score_correction_bias") {
        Init::Zeros
    } else {
        Init::Normal(cfg.initializer_range)
    }
}

/// The tensors `rlvr init` creates: the main model's, plus MTP's when the config has MTP layers.
pub fn init_specs(cfg: &ModelConfig) -> Vec<TensorSpec> {
    main_tensors(cfg).into_iter().chain(mtp_tensors(cfg)).collect()
}

/// One freshly initialised tensor of `kind` on the CPU.
pub fn init_tensor(spec: &TensorSpec, cfg: &ModelConfig, seed: u64, kind: Kind) -> Result<Tensor, ModelError> {
    let dims: Vec<i64> = spec.shape.iter().map(|&d| d as i64).collect();
    let numel = spec.numel() as usize;
    let values = match init_of(&spec.name, cfg) {
        Init::Normal(std) => normal_values(seed, &spec.name, numel, std),
        Init::Ones => vec![1.0; numel],
        Init::Zeros => vec![0.0; numel],
    };
    Tensor::from_slice(&values)
        .f_view(dims.as_slice())
        .and_then(|t| t.f_to_kind(kind))
        .map_err(|e| ModelError::field("initializer", &format!("`{}`: {e}", spec.name)))
}

/// Every tensor of [`init_specs`], initialised from `seed`, in checkpoint order.
pub fn init_tensors(cfg: &ModelConfig, seed: u64, kind: Kind) -> Result<Vec<(String, Tensor)>, ModelError> {
    init_specs(cfg).iter().map(|spec| Ok((spec.name.clone(), init_tensor(spec, cfg, seed, kind)?))).collect()
}
