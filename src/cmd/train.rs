//! `rlvr train RECIPE.toml [--set key=value]... [--resume] [--out DIR] [--max-steps N]`: runs a recipe's stages
//! (see `rlvr_trainer::session`) into a run directory with checkpoints, `metrics.jsonl`, plots and
//! `report.json`.

use anyhow::Result;
use rlvr_trainer::session::{train, TrainArgs};
use std::path::PathBuf;

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
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    train(&TrainArgs {
        recipe: args.recipe,
        sets: args.sets,
        resume: args.resume,
        out: args.out,
        max_steps: args.max_steps,
    })?;
    Ok(())
}
