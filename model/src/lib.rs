//! rlvr-model: DeepSeek-V3.2 on libtorch, with Hugging Face configs and checkpoints.
//!
//! It reads configs (both rope forms), lists a checkpoint's tensors from the config, counts
//! parameters, reads safetensors headers, and runs the network: [`DeepseekV32`] (MLA with the DSA
//! lightning indexer, DeepSeekMoE, MTP), with dense or sparse attention per call, generation caches
//! ([`KvCache`]), a batched sampler ([`sample`], and [`draw`] for its draw as tensor ops) and the training hooks of one forward
//! ([`ForwardOptions`]: indexer losses, routing replay, vocabulary mask, MTP), and a training step's backward with each layer recomputed
//! ([`recompute`]).

pub mod attention;
pub mod cache;
pub mod checkpoint;
pub mod config;
pub mod convert;
pub mod device;
pub mod draw;
pub mod error;
pub mod forward;
pub mod fused;
pub mod header;
pub mod indexer;
pub mod indexer_loss;
pub mod kernel;
pub mod layer;
pub mod mla;
pub mod mlp;
pub mod model;
pub mod moe;
pub mod moe_packed;
pub mod mtp;
pub mod norm;
pub mod packing;
pub mod params;
pub mod recompute;
pub mod rope;
pub mod sample;
pub mod spec;
pub mod vocab_mask;

pub use cache::KvCache;
pub use config::{Family, ModelConfig};
pub use device::{DeviceSpec, Dtype};
pub use error::ModelError;
pub use forward::{ForwardOptions, ForwardOutput};
pub use indexer_loss::{IndexerLosses, IndexerStage};
pub use mla::{AttentionMode, MlaPath};
pub use model::DeepseekV32;
pub use packing::{Bundle, Packed, Packing};
pub use params::ParamCounts;
pub use recompute::{Checkpointing, LossHead, MainHead, Recomputed};
pub use vocab_mask::{KeptSets, VocabMask};
