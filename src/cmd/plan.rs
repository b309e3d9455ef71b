//! `rlvr plan RECIPE.toml [--set key=value]... [--world N] [--json]`: the recipe's memory plan per
//! device before any work (`rlvr_trainer::plan`): weights, master weights, gradients, AdamW state,
//! activations with and without layer checkpointing, the rollout engine's weights and KV caches,
//! the KL reference, per phase, and the peak. `--json` prints the same as one object with
//! `peak_bytes`.

use anyhow::{Context, Result};
use rlvr_trainer::data::Dataset;
use rlvr_trainer::plan::{plan, warm_resident_bytes};
use rlvr_trainer::recipe::Recipe;
use std::path::PathBuf;

/// Arguments of `rlvr plan`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The recipe (TOML).
    pub recipe: PathBuf,
    /// Override a recipe key, as `rlvr train --set`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Data-parallel devices the run would use (`--nproc`, torchrun's world size).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub world: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let recipe = Recipe::load(&args.recipe, &args.sets)?;
    let chat = rlvr_trainer::session::chat_renderer(&recipe)?;
    let data = Dataset::load_with(&recipe.data, recipe.run.seed, chat.as_ref()).context("loading the recipe's data")?;
    let device = rlvr_trainer::plan::device_name(recipe.run.device);
    let warm = warm_resident_bytes();
    let resident = rlvr_trainer::plan::idle_peak_bytes().map_or(warm, |idle| idle.max(warm));
    let runtime = rlvr_trainer::plan::runtime_bytes(device, resident);
    let plan = plan(&recipe, args.world as usize, device, runtime, &data)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", plan.table());
    }
    Ok(())
}
