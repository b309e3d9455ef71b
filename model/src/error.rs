//! The model crate's errors: every message names the file, field or tensor at fault.

use std::path::{Path, PathBuf};

/// Errors at the model crate's I/O edges (configs and checkpoints).
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A config is malformed or inconsistent.
    #[error("{}{message}", file.as_ref().map(|f| format!("{}: ", f.display())).unwrap_or_default())]
    Config {
        /// The config file, when known.
        file: Option<PathBuf>,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A safetensors file or index is malformed.
    #[error("{}: {message}", path.display())]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the tensor when there is one.
        message: String,
    },
    /// A checkpoint does not fit the model: every missing, unexpected, mis-shaped or unreadable
    /// tensor found, each naming the tensor and the file it lives in.
    #[error("{} does not match the model ({} problem{}):\n  {}", dir.display(), problems.len(), if problems.len() == 1 { "" } else { "s" }, problems.join("\n  "))]
    Mismatch {
        /// The checkpoint directory.
        dir: PathBuf,
        /// One line per problem.
        problems: Vec<String>,
    },
}

impl ModelError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        ModelError::Io { path: path.to_path_buf(), source }
    }

    /// A config error about `field`.
    pub fn field(field: &str, problem: &str) -> Self {
        ModelError::Config { file: None, message: format!("field `{field}`: {problem}") }
    }

    /// A checkpoint error in `path`.
    pub fn checkpoint(path: &Path, message: impl Into<String>) -> Self {
        ModelError::Checkpoint { path: path.to_path_buf(), message: message.into() }
    }

    /// Attaches the config file's name to a config error that lacks one.
    pub fn in_file(self, path: &Path) -> Self {
        match self {
            ModelError::Config { file: None, message } => {
                ModelError::Config { file: Some(path.to_path_buf()), message }
            }
            other => other,
        }
    }
}
