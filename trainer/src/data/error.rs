//! Errors of the data pipeline: each names the file, the row (JSONL line or Parquet row) and the
//! field, so a bad dataset is fixed from the message alone.

use std::fmt;
use std::path::PathBuf;

/// Which row of a file: JSONL lines and Parquet rows, both counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowRef {
    /// A line of a JSONL file.
    Line(usize),
    /// A row of a Parquet file.
    Row(usize),
}

impl RowRef {
    /// The 1-based number.
    pub fn number(self) -> usize {
        match self {
            RowRef::Line(n) | RowRef::Row(n) => n,
        }
    }
}

impl fmt::Display for RowRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RowRef::Line(n) => write!(f, "line {n}"),
            RowRef::Row(n) => write!(f, "row {n}"),
        }
    }
}

/// A data spec that cannot be honoured, or a file that cannot be read; names file, row and field.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A setting of the `[data]` table is out of range.
    #[error("[data] {field}: {message}")]
    Spec {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSONL line is not a JSON object.
    #[error("{path} {at}: invalid JSON: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The line.
        at: RowRef,
        /// What the parser said.
        message: String,
    },
    /// The Parquet reader failed.
    #[error("{path}: parquet: {message}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What the reader said (with the row when it failed mid-file).
        message: String,
    },
    /// A row lacks a field the mapping needs.
    #[error("{path} {at}: missing field `{field}`")]
    MissingField {
        /// The file.
        path: PathBuf,
        /// The row.
        at: RowRef,
        /// The field.
        field: String,
    },
    /// A field is present but unusable.
    #[error("{path} {at}: field `{field}`: {message}")]
    BadField {
        /// The file.
        path: PathBuf,
        /// The row.
        at: RowRef,
        /// The field.
        field: String,
        /// What is wrong with its value.
        message: String,
    },
    /// A file gave no usable rows.
    #[error("{path}: no problems")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The tokenizer could not be serialised.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}
