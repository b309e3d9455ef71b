//! Gradient clipping by the global L2 norm, as `torch.nn.utils.clip_grad_norm_`
//! (torch/nn/utils/clip_grad.py): per-gradient norms, the norm of their stack, then every gradient
//! times `min(1, max_norm / (norm + 1e-6))`, computed as torch does (`reciprocal(norm + 1e-6) ·
//! max_norm` in the norm's dtype), so f32 results match torch bit for bit.
//!
//! Differences from torch: a non-finite norm leaves the gradients unchanged (torch would scale
//! them by NaN) so the caller can skip the step; bf16/f16 gradients have their norms taken in f32
//! (torch returns a norm in the gradients' dtype).

use tch::{Kind, Tensor};

/// Clips the gradients of `params` in place to a global L2 norm of at most `max_norm` and returns
/// the norm before clipping. Parameters without a gradient are ignored; with none at all the norm
/// is 0. A non-finite norm is returned as is and no gradient is touched.
pub fn clip_grad_norm(params: &[Tensor], max_norm: f64) -> f64 {
    tch::no_grad(|| {
        let mut grads: Vec<Tensor> = params.iter().map(Tensor::grad).filter(Tensor::defined).collect();
        let Some(first) = grads.first() else {
            return 0.0;
        };
        let device = first.device();
        let norms: Vec<Tensor> = grads.iter().map(|g| l2_norm(g).to_device(device)).collect();
        let total = Tensor::stack(&norms, 0).norm();
        let norm = total.double_value(&[]);
        if !norm.is_finite() {
            return norm;
        }
        // torch: `max_norm / (total + 1e-6)`, which Python evaluates as `reciprocal(total + 1e-6) · max_norm`.
        let coef = ((total + 1e-6).reciprocal() * max_norm).clamp_max(1.0);
        // Multiplying by exactly 1 (torch does it too) changes nothing, so it is skipped.
        if coef.double_value(&[]) < 1.0 {
            for g in &mut grads {
                let _ = g.g_mul_(&coef.to_device(g.device()));
            }
        }
        norm
    })
}

/// ‖g‖₂ as a 0-dim tensor: in g's dtype for f32/f64, in f32 for lower precisions.
fn l2_norm(g: &Tensor) -> Tensor {
    match g.kind() {
        Kind::Float | Kind::Double => g.norm(),
        _ => g.norm_scalaropt_dim_dtype(2.0, &[] as &[i64], false, Kind::Float),
    }
}
