//! rlvr-rollout: the generation engine (continuous batching over the model's caches), the
//! tokenizer and the DeepSeek-V3.2 chat encoding; the HTTP service builds on these.

pub mod chat;
pub mod engine;
pub mod service;
pub mod tokenizer;
