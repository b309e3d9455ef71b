//! Build script shared by every package that runs libtorch code (`build = "../build/link_libtorch.rs"`).
//!
//! 1. Keeps `libtorch_cuda.so` linked. Nothing references it by symbol (CUDA kernels register
//!    themselves when the library loads), so the linker's default `--as-needed` drops it and then
//!    libtorch sees no GPU. Naming the file under `--no-as-needed` at the end of the link keeps it.
//! 2. Adds an absolute rpath to libtorch's `lib/`, beside the `$ORIGIN`-relative ones from
//!    `.cargo/config.toml`, so a binary copied elsewhere on this machine still starts.
//!
//! `rustc-link-arg` applies to this package's binaries, tests, examples and benches.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Some(libtorch) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
        return;
    };
    let lib = libtorch.join("lib");
    let lib = lib.canonicalize().unwrap_or(lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    let cuda = lib.join("libtorch_cuda.so");
    if cuda.exists() {
        println!("cargo:rustc-link-arg=-Wl,--push-state,--no-as-needed,{},--pop-state", cuda.display());
    }
}
