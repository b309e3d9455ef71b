//! What went wrong with a recipe, and where: a line of the file, a `--set` argument, or the file as
//! a whole.

use std::fmt;
use std::path::PathBuf;

/// A recipe that cannot be read, parsed or run.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// The recipe file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The recipe is malformed or fails a check.
    #[error("{}{at}: {message}", file.display())]
    Invalid {
        /// The recipe file.
        file: PathBuf,
        /// Where the mistake is.
        at: At,
        /// The key at fault (`optimizer.lr`, `stages[2] (grpo).steps`); empty for TOML syntax errors
        /// and malformed `--set` arguments.
        key: String,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A key of a recipe that does not resolve after loading (a preset directory that has gone, a
    /// verifier table built by hand that does not parse).
    #[error("{key}: {message}")]
    Field {
        /// The key, such as `model.preset` or `verifier.rel_tol`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl RecipeError {
    /// The key at fault, when the error names one.
    pub fn key(&self) -> Option<&str> {
        match self {
            RecipeError::Io { .. } => None,
            RecipeError::Invalid { key, .. } | RecipeError::Field { key, .. } => Some(key),
        }
    }
}

/// Where in the input a mistake lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum At {
    /// A position in the recipe file (1-based line and column).
    Line {
        /// Line, from 1.
        line: usize,
        /// Column in characters, from 1.
        column: usize,
    },
    /// A `--set` argument, as given.
    Set(String),
    /// The file as a whole (for example a section it lacks).
    File,
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            At::Line { line, column } => write!(f, ":{line}:{column}"),
            At::Set(arg) => write!(f, ": --set {arg}"),
            At::File => Ok(()),
        }
    }
}
