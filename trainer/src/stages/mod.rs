//! The stages a recipe runs: every training stage goes through [`training`] (a supervised step
//! from [`lm`] — [`lm_recompute`] with activation checkpointing — or a GRPO step from [`grpo`] on
//! batches built by [`grpo_batch`]); the DSA stages' held-out figures are [`dsa`]'s; `eval` is
//! [`eval`]; [`add_indexer`] turns a V3 model into a V3.2 one before the first stage that needs the
//! lightning indexer.

pub(crate) mod add_indexer;
pub mod dsa;
pub mod eval;
pub mod grpo;
pub mod grpo_ahead;
pub mod grpo_batch;
pub mod lm;
pub mod lm_recompute;
pub(crate) mod training;
