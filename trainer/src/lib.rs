//! rlvr-trainer: recipes, stages, GRPO-family losses, the optimizer, checkpoints and metrics.
//!
//! Empty until the trainer work lands; the crate exists so the workspace layout of DESIGN.md §1 holds.
