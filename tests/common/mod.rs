//! Helpers shared by the end-to-end tests of the `rlvr` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the built `rlvr` binary from the repository root.
pub fn rlvr(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rlvr"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running rlvr")
}

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A golden fixture's directory.
pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}
