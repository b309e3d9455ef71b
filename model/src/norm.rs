//! RMSNorm and the indexer key's LayerNorm (docs/model.md §2.2–2.3), both computed in f32 and cast
//! back to the input's dtype, as transformers and the official demo do.

use tch::{nn, Kind, Tensor};

/// `y = weight ⊙ x / sqrt(mean(x²) + eps)`.
#[derive(Debug)]
pub struct RmsNorm {
    /// `weight`: (dim).
    pub weight: Tensor,
    /// ε inside the square root.
    pub eps: f64,
}

impl RmsNorm {
    /// A norm of width `dim` whose weight sits at `path.weight`.
    pub fn new(path: &nn::Path, dim: i64, eps: f64) -> Self {
        RmsNorm { weight: path.ones("weight", &[dim]), eps }
    }

    /// Normalises the last dimension of `x`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        if let Some(y) = crate::fused::rms_norm(x, &self.weight, self.eps) {
            return y;
        }
        let xf = x.to_kind(Kind::Float);
        let var = xf.square().mean_dim(-1, true, Kind::Float);
        let normed = (xf * (var + self.eps).rsqrt()).to_kind(x.kind());
        normed * self.weight.to_kind(x.kind())
    }
}

/// LayerNorm with weight and bias (the indexer's `k_norm`).
#[derive(Debug)]
pub struct LayerNorm {
    /// `weight`: (dim).
    pub weight: Tensor,
    /// `bias`: (dim).
    pub bias: Tensor,
    /// ε added to the variance.
    pub eps: f64,
}

impl LayerNorm {
    /// A LayerNorm of width `dim` at `path.{weight,bias}`.
    pub fn new(path: &nn::Path, dim: i64, eps: f64) -> Self {
        LayerNorm { weight: path.ones("weight", &[dim]), bias: path.zeros("bias", &[dim]), eps }
    }

    /// Normalises the last dimension of `x` in f32; returns f32.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        if let Some(y) = crate::fused::layer_norm(x, &self.weight, &self.bias, self.eps) {
            return y;
        }
        let dim = *x.size().last().expect("layer norm input has a last dim");
        let (w, b) = (self.weight.to_kind(Kind::Float), self.bias.to_kind(Kind::Float));
        x.to_kind(Kind::Float).layer_norm([dim], Some(&w), Some(&b), self.eps, false)
    }
}
