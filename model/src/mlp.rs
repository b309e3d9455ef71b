//! The SwiGLU feed-forward block (docs/model.md §2.8): `down(silu(gate(x)) ⊙ up(x))`. It is the dense
//! FFN of the first `first_k_dense_replace` layers and every routed and shared expert.

use tch::{nn, Tensor};

/// One SwiGLU MLP with HF names `gate_proj`, `up_proj`, `down_proj` (no biases).
#[derive(Debug)]
pub struct Mlp {
    /// `gate_proj.weight`: (inter, d).
    pub gate_proj: Tensor,
    /// `up_proj.weight`: (inter, d).
    pub up_proj: Tensor,
    /// `down_proj.weight`: (d, inter).
    pub down_proj: Tensor,
}

/// A bias-free linear weight `(out, in)` at `path.weight`, with torch's default init.
pub fn linear_weight(path: &nn::Path, inp: i64, out: i64) -> Tensor {
    path.var("weight", &[out, inp], nn::init::DEFAULT_KAIMING_UNIFORM)
}

/// `x (..., in) @ weight (out, in)ᵀ → (..., out)`: the few-row CPU kernel where it applies
/// (inference on a handful of rows, see [`crate::kernel`]), else libtorch.
pub fn linear(x: &Tensor, weight: &Tensor) -> Tensor {
    crate::kernel::linear(x, weight).unwrap_or_else(|| x.linear::<&Tensor>(weight, None))
}

impl Mlp {
    /// An MLP `d → inter → d` under `path`.
    pub fn new(path: &nn::Path, d: i64, inter: i64) -> Self {
        Mlp {
            gate_proj: linear_weight(&(path / "gate_proj"), d, inter),
            up_proj: linear_weight(&(path / "up_proj"), d, inter),
            down_proj: linear_weight(&(path / "down_proj"), inter, d),
        }
    }

    /// `x (..., d) → (..., d)`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (gate, up) = (linear(x, &self.gate_proj), linear(x, &self.up_proj));
        let act = crate::fused::swiglu(&gate, &up).unwrap_or_else(|| gate.silu() * up);
        linear(&act, &self.down_proj)
    }
}
