//! Compiles the C++ shim (`shim/`) that binds PyTorch's c10d, and links libtorch.
//!
//! * `shim/profile.cpp` (an operator profiler on libtorch's RecordFunction hooks, for benchmarks)
//!   always;
//! * `shim/c10d.cpp` (stores, Gloo, the C ABI) always; it needs gloo's headers, which the torch wheel
//!   lacks: `RLVR_GLOO_INCLUDE`, else `.deps/gloo/usr/include` (Debian's libgloo-dev, unpacked there by
//!   `scripts/dist-deps.sh`).
//! * `shim/nccl.cpp` (ProcessGroupNCCL) when libtorch is a CUDA build and the CUDA headers are found:
//!   the wheel's `nvidia/cu13/include` and `nvidia/nccl/include`, plus `crt/` and `nv/target` from
//!   `RLVR_CUDA_INCLUDE`, else `.deps/cuda/include` (PyPI's nvidia-cuda-crt and -cccl, also fetched by
//!   `scripts/dist-deps.sh`). Otherwise a cargo warning says why, and creating an NCCL group fails
//!   with an error at run time.
//!
//! The translation units compile in parallel into one static library. Like
//! `build/link_libtorch.rs`, this also gives the package's tests an absolute rpath to libtorch and
//! keeps `libtorch_cuda.so` linked.

use std::path::{Path, PathBuf};

const FLAGS: &[&str] = &["-D_GLIBCXX_USE_CXX11_ABI=1", "-DGLOG_USE_GLOG_EXPORT", "-DUSE_C10D_GLOO"];

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().expect("dist/ sits in the workspace root").to_path_buf();
    for var in ["LIBTORCH", "RLVR_GLOO_INCLUDE", "RLVR_CUDA_INCLUDE"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    for file in ["shim/c10d.cpp", "shim/nccl.cpp", "shim/profile.cpp", "shim/shim.hpp"] {
        println!("cargo:rerun-if-changed={file}");
    }

    let libtorch = match std::env::var_os("LIBTORCH") {
        Some(path) => resolve(&root, PathBuf::from(path)),
        None => fail("LIBTORCH is not set (run through ./x, which sets it up with scripts/libtorch.sh)"),
    };
    let include = libtorch.join("include");
    if !include.join("torch/csrc/distributed/c10d/ProcessGroupGloo.hpp").is_file() {
        fail(&format!("{} has no c10d headers; is LIBTORCH a torch wheel's torch/ folder?", libtorch.display()));
    }
    let gloo = match std::env::var_os("RLVR_GLOO_INCLUDE") {
        Some(path) => resolve(&root, PathBuf::from(path)),
        None => root.join(".deps/gloo/usr/include"),
    };
    if !gloo.join("gloo/config.h").is_file() {
        fail(&format!(
            "gloo headers not found in {} (no gloo/config.h): run scripts/dist-deps.sh, or point RLVR_GLOO_INCLUDE at them",
            gloo.display()
        ));
    }
    println!("cargo:rerun-if-changed={}", gloo.join("gloo/config.h").display());

    let lib = libtorch.join("lib");
    let has_cuda = lib.join("libtorch_cuda.so").exists();
    let nccl_includes = if has_cuda { cuda_includes(&root, &libtorch) } else { Err("libtorch is a CPU build".into()) };

    let base = |file: &str| {
        let mut build = cc::Build::new();
        build
            .cpp(true)
            .std("c++17")
            .file(manifest.join(file))
            .include(&include)
            .include(include.join("torch/csrc/api/include"))
            .include(&gloo)
            .pic(true)
            // The shim only forwards calls: -O1 is plenty, and compiles libtorch's heavy headers faster.
            .opt_level(1)
            .debug(false)
            .warnings(false)
            .extra_warnings(false)
            .flag_if_supported("-Wno-interference-size");
        for flag in FLAGS {
            build.flag(flag);
        }
        build
    };

    // Both units compile at once; c10d.cpp assumes the NCCL unit builds and is compiled again
    // without it in the (unexpected) case that it does not.
    let mut main_unit = base("shim/c10d.cpp");
    let nccl_unit = nccl_includes.as_ref().ok().map(|dirs| {
        let mut build = base("shim/nccl.cpp");
        build.define("USE_C10D_NCCL", None).define("USE_CUDA", None);
        for dir in dirs {
            build.include(dir);
        }
        build
    });
    if nccl_unit.is_some() {
        main_unit.define("RLVR_HAVE_NCCL", None);
    }
    let (main_objects, nccl_objects, profile_objects) = std::thread::scope(|scope| {
        let nccl = scope.spawn(|| nccl_unit.as_ref().map(|build| build.try_compile_intermediates()));
        let profile = scope.spawn(|| base("shim/profile.cpp").try_compile_intermediates());
        let main = main_unit.try_compile_intermediates();
        (
            main,
            nccl.join().expect("the NCCL compile thread panicked"),
            profile.join().expect("the profiler compile thread panicked"),
        )
    });
    let mut objects = profile_objects.unwrap_or_else(|e| fail(&format!("compiling shim/profile.cpp: {e}")));
    let nccl_reason = match (nccl_objects, nccl_includes) {
        (Some(Ok(nccl)), _) => {
            objects.extend(main_objects.unwrap_or_else(|e| fail(&format!("compiling shim/c10d.cpp: {e}"))));
            objects.extend(nccl);
            None
        }
        (Some(Err(e)), _) => {
            objects.extend(
                base("shim/c10d.cpp")
                    .try_compile_intermediates()
                    .unwrap_or_else(|e| fail(&format!("compiling shim/c10d.cpp: {e}"))),
            );
            Some(format!("shim/nccl.cpp did not compile: {e}"))
        }
        (None, Err(reason)) => {
            objects.extend(main_objects.unwrap_or_else(|e| fail(&format!("compiling shim/c10d.cpp: {e}"))));
            Some(reason)
        }
        (None, Ok(_)) => unreachable!("an NCCL unit exists whenever its includes were found"),
    };
    if let Some(reason) = &nccl_reason {
        if has_cuda {
            println!("cargo:warning=rlvr-dist builds without NCCL ({reason}); Backend::Nccl will return an error");
        }
    }
    cc::Build::new().cpp(true).objects(&objects).compile("rlvr_c10d");

    // libtorch: what the shim calls, then what build/link_libtorch.rs does for the tests.
    let lib = lib.canonicalize().unwrap_or(lib);
    println!("cargo:rustc-link-search=native={}", lib.display());
    if nccl_reason.is_none() {
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
    }
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if has_cuda {
        println!(
            "cargo:rustc-link-arg=-Wl,--push-state,--no-as-needed,{},--pop-state",
            lib.join("libtorch_cuda.so").display()
        );
    }
}

/// A relative path is relative to the workspace root (as `.cargo/config.toml` writes `.libtorch`).
fn resolve(root: &Path, path: PathBuf) -> PathBuf {
    let path = if path.is_relative() { root.join(path) } else { path };
    path.canonicalize().unwrap_or(path)
}

/// The include folders the NCCL unit needs, or why they are not all there.
fn cuda_includes(root: &Path, libtorch: &Path) -> Result<Vec<PathBuf>, String> {
    let nvidia = libtorch.join("../nvidia");
    let nvidia = nvidia.canonicalize().unwrap_or(nvidia);
    let extra = match std::env::var_os("RLVR_CUDA_INCLUDE") {
        Some(path) => resolve(root, PathBuf::from(path)),
        None => root.join(".deps/cuda/include"),
    };
    let runtime = nvidia.join("cu13/include");
    let nccl = nvidia.join("nccl/include");
    let cccl = extra.join("cccl");
    let wanted = [
        (runtime.join("cuda_runtime_api.h"), "the CUDA runtime headers of the torch wheel"),
        (nccl.join("nccl.h"), "nccl.h of the torch wheel"),
        (extra.join("crt/host_defines.h"), "crt/ (nvidia-cuda-crt; run scripts/dist-deps.sh)"),
        (cccl.join("nv/target"), "nv/target (nvidia-cuda-cccl; run scripts/dist-deps.sh)"),
    ];
    for (file, what) in &wanted {
        println!("cargo:rerun-if-changed={}", file.display());
        if !file.exists() {
            return Err(format!("{what} not found at {}", file.display()));
        }
    }
    Ok(vec![runtime, extra, cccl, nccl])
}

fn fail(message: &str) -> ! {
    eprintln!("rlvr-dist: {message}");
    println!("cargo:warning=rlvr-dist: {message}");
    std::process::exit(1);
}
