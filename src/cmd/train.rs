//! `rlvr train RECIPE.toml [--set key=value]... [--resume] [--out DIR] [--max-steps N]
//! [--nproc N [--max-restarts R]]`: runs a recipe's stages (see `rlvr_trainer::session`) into a
//! run directory with checkpoints, `metrics.jsonl`, plots and `report.json`.
//!
//! Under torchrun (`torchrun --nproc-per-node N --no-python rlvr train …`) each process is one
//! rank of a data-parallel run; `--nproc N` starts that for the user with the project's torchrun.

use anyhow::{bail, Context, Result};
use rlvr_trainer::session::{train, TrainArgs};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Arguments of `rlvr train`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The recipe (TOML).
    pub recipe: PathBuf,
    /// Override a recipe key: `--set optimizer.lr=3e-4`, `--set stages.grpo.steps=5` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Continue from the newest complete checkpoint in the run directory.
    #[arg(long)]
    pub resume: bool,
    /// The run directory (default: the recipe's `run.out`, else `runs/<run.name>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Stop after this many optimizer steps of the whole run, with a checkpoint (continue later
    /// with `--resume`).
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Run N data-parallel processes on this machine (through torchrun; one per GPU on CUDA).
    #[arg(long, value_name = "N")]
    pub nproc: Option<usize>,
    /// With --nproc: restart the whole job from its newest checkpoint up to R times when a rank
    /// fails.
    #[arg(long, value_name = "R", requires = "nproc")]
    pub max_restarts: Option<u32>,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    if let Some(n) = args.nproc {
        return launch(n, args.max_restarts.unwrap_or(0));
    }
    train(&TrainArgs {
        recipe: args.recipe,
        sets: args.sets,
        resume: args.resume,
        out: args.out,
        max_steps: args.max_steps,
    })?;
    Ok(())
}

/// Replaces this process with torchrun starting `n` ranks of this same command (without
/// `--nproc`/`--max-restarts`), on this machine. Returns only on failure.
fn launch(n: usize, max_restarts: u32) -> Result<()> {
    if n == 0 {
        bail!("--nproc must be ≥ 1");
    }
    if std::env::var_os("RANK").is_some() {
        bail!("--nproc starts torchrun itself; under torchrun, leave it out");
    }
    let torchrun = torchrun()?;
    let exe = std::env::current_exe().context("locating this executable")?;
    let mut forwarded: Vec<OsString> = Vec::new();
    let mut skip = false;
    for arg in std::env::args_os().skip(1) {
        if skip {
            skip = false;
            continue;
        }
        let text = arg.to_string_lossy();
        if text == "--nproc" || text == "--max-restarts" {
            skip = true;
        } else if !(text.starts_with("--nproc=") || text.starts_with("--max-restarts=")) {
            forwarded.push(arg);
        }
    }
    let mut command = std::process::Command::new(&torchrun);
    command
        .args(["--standalone", "--nproc-per-node", &n.to_string(), "--max-restarts", &max_restarts.to_string()])
        .arg("--no-python")
        .arg(&exe)
        .args(&forwarded)
        // Restarts need a fresh store per round (the shared agent store keeps stale addresses).
        .env("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1");
    if std::env::var_os("OMP_NUM_THREADS").is_none() {
        // torchrun would set 1; share the cores instead (a recipe's run.threads still wins).
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        command.env("OMP_NUM_THREADS", (cores / n).max(1).to_string());
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let err = command.exec();
        bail!("could not run {}: {err}", torchrun.display())
    }
    #[cfg(not(unix))]
    {
        let status = command.status().with_context(|| format!("running {}", torchrun.display()))?;
        std::process::exit(status.code().unwrap_or(1));
    }
}

/// torchrun: `$RLVR_TORCHRUN`, else the project's `.venv/bin/torchrun` above this executable or in
/// the repository it was built from, else `torchrun` on the PATH.
fn torchrun() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("RLVR_TORCHRUN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("locating this executable")?;
    let beside = exe.ancestors().skip(1).map(|dir| dir.join(".venv/bin/torchrun")).find(|p| p.is_file());
    // The repository this binary was built from (a build directory outside it has no .venv above).
    let built_from = Some(Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/torchrun")).filter(|p| p.is_file());
    if let Some(path) = beside.or(built_from) {
        return Ok(path);
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|d| d.join("torchrun")).find(|p| is_file(p)));
    on_path.flatten().context(
        "--nproc needs torchrun (it comes with PyPI's torch): none in the project's .venv, none on PATH; set RLVR_TORCHRUN",
    )
}

fn is_file(path: &Path) -> bool {
    path.is_file()
}
