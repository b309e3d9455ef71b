//! rlvr-rollout: the generation engine, sampler, tokenizer + chat format and the HTTP service.
//!
//! Empty until the rollout work lands; the crate exists so the workspace layout of DESIGN.md §1 holds.
