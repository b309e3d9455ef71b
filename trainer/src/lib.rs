//! rlvr-trainer: recipes, stages, GRPO-family losses, the optimizer, checkpoints and metrics.
//!
//! - [`recipe`]: the TOML run description (`--set` overrides, checks before any work);
//! - [`data`]: problems and token streams (JSONL, Parquet, the built-in arithmetic task);
//! - [`grpo`]: the GRPO family's loss pieces as pure functions;
//! - [`optim`]: AdamW with saveable state, schedules, gradient clipping;
//! - [`policy`], [`sampler`]: the trained model and its colocated rollout engine;
//! - [`pool`], [`rollouts`]: `rlvr serve` servers as GRPO's rollout backend;
//! - [`stages`]: pretrain / SFT / DSA stages, GRPO, eval;
//! - [`checkpoint`], [`state`]: atomic checkpoints and what `--resume` needs;
//! - [`metrics`]: `metrics.jsonl`, console, progress bars, W&B, plots;
//! - [`session`]: `rlvr train`, top to bottom; [`report`]: its closing table;
//! - [`parallel`]: data parallelism over c10d (torchrun's ranks);
//! - [`plan`]: the memory plan of a recipe (`rlvr plan`, checked by `rlvr train`).

pub mod batch;
pub mod checkpoint;
pub mod data;
pub mod grpo;
pub mod metrics;
pub mod optim;
pub mod parallel;
pub mod plan;
pub mod policy;
pub mod pool;
pub mod recipe;
pub mod report;
pub mod resume;
pub mod rollouts;
pub mod sampler;
pub mod session;
pub mod stages;
pub mod state;
