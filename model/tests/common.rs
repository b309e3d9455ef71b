//! Paths shared by the model crate's tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A shipped preset's directory.
pub fn preset(name: &str) -> PathBuf {
    root().join("presets").join(name)
}

/// A golden fixture's directory (made by tests/fixtures/make.sh).
pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}
