//! `rlvr init --config <config.json|model dir|preset> --out DIR [--seed N] [--dtype f32|bf16]`:
//! a randomly initialised checkpoint (every tensor of the config, MTP included when
//! `num_nextn_predict_layers > 0`) written in the Hugging Face layout. The same seed gives
//! byte-identical files.

use anyhow::{Context, Result};
use rlvr_model::checkpoint::{init, save, SaveOptions};
use rlvr_model::{Dtype, ModelConfig, ParamCounts};
use std::path::PathBuf;

/// Arguments of `rlvr init`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A `config.json`, a model directory holding one, or a preset name (`tiny`, `small`, ...).
    #[arg(long)]
    pub config: String,
    /// The model directory to create (written atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of the initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stored dtype (the router's `e_score_correction_bias` is always f32).
    #[arg(long, default_value = "f32")]
    pub dtype: Dtype,
    /// Largest shard in bytes; larger models are split with a `model.safetensors.index.json`.
    #[arg(long, default_value_t = 5_000_000_000)]
    pub max_shard_bytes: u64,
    /// Replace `--out` if it exists and is not empty.
    #[arg(long)]
    pub overwrite: bool,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let path = rlvr_trainer::recipe::resolve_model_arg(&args.config).map_err(anyhow::Error::msg)?;
    let cfg = ModelConfig::from_path(&path)?;
    let occupied = std::fs::read_dir(&args.out).map(|mut d| d.next().is_some()).unwrap_or(args.out.exists());
    if occupied && !args.overwrite {
        anyhow::bail!("{} exists and is not empty; refusing to overwrite (pass --overwrite)", args.out.display());
    }
    let counts = ParamCounts::of(&cfg);
    let kind = args.dtype.kind();
    eprintln!(
        "rlvr init: {} parameters (+{} MTP) from {}, seed {}, {:?}",
        counts.total,
        counts.mtp_with_shared_copies,
        path.display(),
        args.seed,
        args.dtype
    );
    let tensors = init::init_tensors(&cfg, args.seed, kind)?;
    let opts = SaveOptions { dtype: Some(kind), max_shard_bytes: args.max_shard_bytes, overwrite: args.overwrite };
    let report = save(&args.out, &tensors, &cfg, &opts).with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {} tensors ({} bytes) in {} file(s) to {}",
        tensors.len(),
        report.total_size,
        report.files.len(),
        args.out.display()
    );
    Ok(())
}
