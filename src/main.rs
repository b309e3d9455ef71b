//! `rlvr`, the command users run (docs/architecture.md §7). It links no libtorch: loading libtorch
//! costs ~0.4 s before `main`, longer than scoring thousands of answers, and a verifier needs none.
//! So `rlvr verify` runs here, and every other command (and `--help`, `--version`) runs in
//! `rlvr-torch`, the binary beside this one, exec'd with the same arguments. Commands that run the
//! generation engine get `OMP_WAIT_POLICY=PASSIVE` with a short spin (`GOMP_SPINCOUNT`) when the
//! policy is unset, and glibc's `MALLOC_MMAP_THRESHOLD_` when that is unset (see `rlvr-torch`): set
//! here, before libtorch is loaded, so libtorch is loaded once.

use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

#[path = "cmd/verify.rs"]
mod verify;

/// The commands this launcher runs itself.
#[derive(Parser)]
#[command(name = "rlvr", version)]
struct Cli {
    #[command(subcommand)]
    command: Own,
}

#[derive(Subcommand)]
enum Own {
    /// Score completions with a verifier: one verdict JSON per input line.
    Verify(verify::Args),
}

/// Subcommands that run the generation engine (their OpenMP wait policy matters).
const ENGINE_COMMANDS: [&str; 4] = ["generate", "serve", "train", "eval"];

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    let command = args.get(1).and_then(|a| a.to_str()).unwrap_or("");
    if command == "verify" {
        let Own::Verify(args) = Cli::parse().command;
        if let Err(err) = verify::run(args) {
            eprintln!("rlvr: error: {err:#}");
            std::process::exit(1);
        }
        return;
    }
    let err = exec_torch(&args[1..], ENGINE_COMMANDS.contains(&command));
    eprintln!("rlvr: error: {err:#}");
    std::process::exit(1);
}

/// Replaces this process with `rlvr-torch ARGS`; returns only on failure.
fn exec_torch(args: &[OsString], engine: bool) -> anyhow::Error {
    let torch = match torch_binary() {
        Ok(path) => path,
        Err(err) => return err,
    };
    let mut command = std::process::Command::new(&torch);
    command.args(args);
    if engine && std::env::var_os("OMP_WAIT_POLICY").is_none() {
        command.env("OMP_WAIT_POLICY", "PASSIVE");
        if std::env::var_os("GOMP_SPINCOUNT").is_none() {
            // The same short spin as `rlvr-torch`'s re-run (its `ENGINE_SPINCOUNT`).
            command.env("GOMP_SPINCOUNT", "30000");
        }
    }
    if engine && std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // `rlvr-torch`'s `ENGINE_MMAP_THRESHOLD`: glibc reads it at start-up only.
        command.env("MALLOC_MMAP_THRESHOLD_", "268435456");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let err = command.exec();
        anyhow::anyhow!("could not run {}: {err}", torch.display())
    }
    #[cfg(not(unix))]
    match command.status() {
        Ok(status) => std::process::exit(status.code().unwrap_or(1)),
        Err(err) => anyhow::anyhow!("could not run {}: {err}", torch.display()),
    }
}

/// `rlvr-torch` beside this executable.
fn torch_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(format!("rlvr-torch{}", std::env::consts::EXE_SUFFIX));
    if !path.is_file() {
        anyhow::bail!(
            "{} is missing: rlvr runs every command but `verify` through it; build both with `cargo build --release --bins`",
            path.display()
        );
    }
    Ok(path)
}
