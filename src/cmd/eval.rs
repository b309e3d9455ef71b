//! `rlvr eval --model DIR --data FILE --verifier KIND [--samples K]`: samples K completions of
//! every problem in FILE (JSONL or Parquet, GSM8K / MATH / DeepScaleR / HumanEval / APPS records)
//! and prints `{"accuracy", "pass_at_k": {"1": …, "K": …}, "n", …}` (pass@k by the unbiased
//! estimator), plus `"reward/<name>"`, the mean reward of each part, when `--config` holds a
//! weighted list of verifiers.

use super::score::{device, Compute};
use anyhow::{Context, Result};
use rlvr_rollout::engine::SamplingParams;
use rlvr_trainer::data::{DataSpec, Dataset};
use rlvr_trainer::parallel::Dp;
use rlvr_trainer::policy::{Policy, Source};
use rlvr_trainer::sampler::{Sampler, Settings};
use rlvr_trainer::stages::eval::evaluate;
use serde_json::json;
use std::path::PathBuf;

/// Arguments of `rlvr eval`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory (config.json, safetensors, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// Problems: `.jsonl` or `.parquet`.
    #[arg(long)]
    pub data: PathBuf,
    /// Record format for the field mapping: gsm8k, math, deepscaler, humaneval, apps.
    #[arg(long)]
    pub format: Option<String>,
    /// `math`, `code`, `format`, `length`, `language`, `judge`, or `external:<command>`; omit it
    /// when `--config` holds a weighted list.
    #[arg(long, required_unless_present = "config")]
    pub verifier: Option<String>,
    /// Inline JSON or a file path: a JSON object of `--verifier`'s settings, or (without
    /// `--verifier`) a weighted list as in `rlvr verify --config`:
    /// `[{"kind":"math"},{"kind":"format","weight":0.2}]`.
    #[arg(long)]
    pub config: Option<String>,
    /// Samples per problem (pass@1 and pass@K are reported).
    #[arg(long, default_value_t = 1)]
    pub samples: usize,
    /// Tokens per completion at most.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Nucleus mass.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Evaluate only the first N problems.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Seed of the sampling streams.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Engine slots (concurrent samples).
    #[arg(long, default_value_t = 64)]
    pub slots: usize,
    #[command(flatten)]
    pub compute: Compute,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    anyhow::ensure!(args.samples >= 1, "--samples must be ≥ 1");
    let source = match args.data.extension().and_then(|e| e.to_str()) {
        Some("parquet") => "parquet",
        _ => "jsonl",
    };
    let mut spec = json!({ "source": source, "train": args.data, "test": args.data });
    if let Some(format) = &args.format {
        spec["format"] = json!(format);
    }
    let spec: DataSpec = serde_json::from_value(spec).context("--format")?;
    let data = Dataset::load(&spec, args.seed).with_context(|| format!("loading {}", args.data.display()))?;
    let verifier = super::verify::build_verifier(args.verifier.as_deref(), args.config.as_deref())?;
    let policy = Policy::build(
        &Source::Dir(args.model.clone()),
        &args.model,
        false,
        device(args.compute.device)?,
        args.compute.dtype,
    )?;
    let problems = data.held_out();
    let problems = &problems[..args.limit.unwrap_or(problems.len()).min(problems.len())];
    let settings = Settings {
        n: args.samples,
        sampling: SamplingParams {
            max_tokens: args.max_tokens,
            temperature: args.temperature,
            top_p: args.top_p,
            ..SamplingParams::default()
        },
        sampling_mask: false,
        routing: false,
    };
    let mut sampler = Sampler::new(&policy, args.slots, args.max_tokens, args.compute.mode, 0)?;
    let pass_k: Vec<usize> = if args.samples > 1 { vec![1, args.samples] } else { vec![1] };
    let parallel = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let result = evaluate(
        &policy,
        &mut sampler,
        verifier.as_ref(),
        problems,
        &settings,
        &pass_k,
        args.seed,
        parallel,
        &Dp::single(),
    )?;
    println!("{}", serde_json::to_string(&result.to_json())?);
    Ok(())
}
