//! rlvr-rollout: the generation engine (continuous batching over the model's caches), the
//! tokenizer, the DeepSeek-V3.2 chat encoding and Hugging Face chat templates (`template`); the HTTP
//! service builds on these.

pub mod chat;
pub mod engine;
pub mod service;
pub mod template;
pub mod tokenizer;
