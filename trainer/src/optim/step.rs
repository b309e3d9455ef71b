//! The one optimizer step every training stage takes once its gradients are accumulated: the
//! global gradient norm (clipped to `grad_clip` when that is > 0, in the arithmetic of
//! [`clip_grad_norm`] either way), then AdamW at `lr` unless the norm is not finite.

use super::{clip_grad_norm, AdamW};
use tch::Tensor;

/// What one [`apply`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Applied {
    /// The global L2 norm of the gradients before clipping (may be non-finite).
    pub grad_norm: f64,
    /// Whether AdamW stepped (false when the norm was not finite: the step is skipped).
    pub stepped: bool,
}

/// Clips the accumulated gradients and steps `opt` at `lr` when their norm is finite.
pub fn apply(opt: &mut AdamW, lr: f64, grad_clip: f64) -> Applied {
    let params: Vec<Tensor> = opt.params().map(Tensor::shallow_clone).collect();
    let max_norm = if grad_clip > 0.0 { grad_clip } else { f64::INFINITY };
    let grad_norm = clip_grad_norm(&params, max_norm);
    let stepped = grad_norm.is_finite();
    if stepped {
        opt.step(lr);
    }
    Applied { grad_norm, stepped }
}
