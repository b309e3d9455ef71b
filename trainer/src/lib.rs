//! rlvr-trainer: recipes, stages, GRPO-family losses, the optimizer, checkpoints and metrics.
