//! Build script shared by every package that runs libtorch code (`build = "../build/link_libtorch.rs"`).
//!
//! 1. Keeps `libtorch_cuda.so` linked. Nothing references it by symbol (CUDA kernels register
//!    themselves when the library loads), so the linker's default `--as-needed` drops it and then
//!    libtorch sees no GPU. Naming the file under `--no-as-needed` at the end of the link keeps it.
//! 2. Adds an absolute rpath to libtorch's `lib/`, beside the `$ORIGIN`-relative ones from
//!    `.cargo/config.toml`, so a binary copied elsewhere on this machine still starts.
//!
//! `rustc-link-arg` applies to this package's binaries, tests, examples and benches; in the root
//! package only to `rlvr-torch` and the tests (the `rlvr` launcher links no libtorch).

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Some(libtorch) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
        return;
    };
    let lib = libtorch.join("lib");
    let lib = lib.canonicalize().unwrap_or(lib);
    // The `rlvr` package's launcher binary links no libtorch (it execs `rlvr-torch`): the link
    // arguments go to `rlvr-torch` and the package's tests only.
    let targets: &[&str] = match std::env::var("CARGO_PKG_NAME").as_deref() {
        Ok("rlvr") => &["-bin=rlvr-torch=", "-tests="],
        _ => &["="],
    };
    let cuda = lib.join("libtorch_cuda.so");
    for target in targets {
        println!("cargo:rustc-link-arg{target}-Wl,-rpath,{}", lib.display());
        if cuda.exists() {
            println!("cargo:rustc-link-arg{target}-Wl,--push-state,--no-as-needed,{},--pop-state", cuda.display());
        }
    }
}
