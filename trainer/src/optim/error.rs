//! Errors at the optimizer's only I/O edge: its state file.

use std::path::{Path, PathBuf};

/// Saving or loading an optimizer state file failed; every message names the file, and the tensor
/// when one is at fault.
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The state file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file as a whole is unusable (not safetensors, or it could not be serialised).
    #[error("{}: {message}", path.display())]
    File {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// One tensor is missing, unexpected, or of the wrong dtype, shape or value.
    #[error("{}: tensor `{tensor}`: {message}", path.display())]
    Tensor {
        /// The state file.
        path: PathBuf,
        /// The tensor's name in the file.
        tensor: String,
        /// What is wrong with it.
        message: String,
    },
}

impl OptimError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        OptimError::Io { path: path.to_path_buf(), source }
    }

    pub(crate) fn file(path: &Path, message: impl Into<String>) -> Self {
        OptimError::File { path: path.to_path_buf(), message: message.into() }
    }

    pub(crate) fn tensor(path: &Path, tensor: &str, message: impl Into<String>) -> Self {
        OptimError::Tensor { path: path.to_path_buf(), tensor: tensor.to_string(), message: message.into() }
    }
}
