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

/// The `[model]` and `[data]` of the short CLI recipes: the tiny preset cut to 2 layers and a
/// 32-id vocabulary, on 1-digit arithmetic with 8 held-out problems.
pub const TINY_ARITHMETIC: &str = r#"[model]
preset = "tiny"

[model.config]
num_hidden_layers = 2
vocab_size = 32

[data]
source = "arithmetic"
min_digits = 1
max_digits = 1
held_out = 8
"#;
