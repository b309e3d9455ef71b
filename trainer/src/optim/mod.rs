//! The optimizer and what drives it: [`AdamW`] over named parameter groups with state that is
//! saved to and restored from one safetensors file (so training resumes bit-identically),
//! [`clip_grad_norm`] over the global L2 norm, the learning-rate [`Schedule`], and [`Optimizer`]:
//! the one step every stage takes, with AdamW replicated on every rank or sharded across them.
//!
//! Written here rather than taken from libtorch's optimizers because those cannot export their
//! state. The update matches `torch.optim.AdamW` (single-tensor path, `amsgrad=False`,
//! `maximize=False`) bit for bit on f32 CPU tensors; see `trainer/tests/adamw_golden.rs`.
//!
//! A replicated optimizer lays each group end to end ([`AdamW::flattened`], `flat.rs`), so a step
//! costs AdamW's tensor operations once per group, not once per parameter, with the same values.
//!
//! What this omits: AMSGrad, `maximize`, libtorch's fused/foreach kernels (tch exposes neither;
//! the flat groups stand in for them), gradient scaling, and setting gradients to `None`
//! ([`AdamW::zero_grad`] zeroes them).

mod adamw;
mod clip;
mod error;
mod flat;
mod schedule;
mod sharded;
mod state_file;

pub use adamw::{AdamW, AdamWConfig, ParamGroup, ParamState};
pub use clip::clip_grad_norm;
pub use error::OptimError;
pub use schedule::{lr_at, Schedule};
pub use sharded::{Applied, Optimizer};
