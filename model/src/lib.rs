//! rlvr-model: DeepSeek-V3.2 on libtorch, with Hugging Face configs and checkpoints.
//!
//! It reads configs (both rope forms), lists a checkpoint's tensors from the config, counts
//! parameters, reads safetensors headers, and runs the network: [`DeepseekV32`] (MLA with the DSA
//! lightning indexer, DeepSeekMoE), with dense or sparse attention per call, generation caches
//! ([`KvCache`]) and a batched sampler ([`sample`]).

pub mod attention;
pub mod cache;
pub mod checkpoint;
pub mod config;
pub mod device;
pub mod error;
pub mod header;
pub mod indexer;
pub mod mla;
pub mod mlp;
pub mod model;
pub mod moe;
pub mod norm;
pub mod params;
pub mod rope;
pub mod sample;
pub mod spec;

pub use cache::KvCache;
pub use config::ModelConfig;
pub use mla::{AttentionMode, MlaPath};
pub use model::DeepseekV32;
pub use error::ModelError;
pub use params::ParamCounts;
