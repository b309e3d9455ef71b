//! Hugging Face checkpoints in and out (docs/architecture.md §3, docs/model.md §5.1–5.2).
//!
//! - [`load()`]: name-for-name copy of safetensors (single file or sharded with an index) into a
//!   model's variables, converting BF16/F16/F32 and FP8 e4m3 with 128×128 block scales into each
//!   variable's dtype and device; strict by default, with every problem listed in one error.
//! - [`save()`]: the same layout back (config + one file or shards + index), atomically.
//! - [`init_tensors`]: seeded random initialisation of every tensor the config implies.
//!
//! What this omits: writing FP8 (saved weights are BF16/F16/F32 and the saved config drops
//! `quantization_config`), and E5M2 or other quantised formats on load (they are reported as
//! unsupported dtypes).

pub mod fp8;
pub mod init;
pub mod load;
mod plan;
pub mod save;
mod write;

pub use init::init_tensors;
pub use load::{load, load_varstore, read_all, LoadReport};
pub use plan::SCALE_SUFFIX;
pub use save::{save, save_varstore, SaveOptions, SaveReport};
