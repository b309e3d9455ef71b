//! rlvr-model: DeepSeek-V3.2 on libtorch, with Hugging Face configs and checkpoints.
//!
//! Today this crate reads configs (both rope forms), lists a checkpoint's tensors from the config,
//! counts parameters, and reads safetensors headers; the tch model itself builds on these.

pub mod checkpoint;
pub mod config;
pub mod device;
pub mod error;
pub mod header;
pub mod params;
pub mod spec;

pub use config::ModelConfig;
pub use error::ModelError;
pub use params::ParamCounts;
