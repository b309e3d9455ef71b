//! `rlvr convert --add-indexer --model V3DIR --out DIR [--index-n-heads 64 --index-head-dim 128
//! --index-topk 2048] [--seed S]`: a `deepseek_v3` checkpoint (DeepSeek-V3 / V3.1 / R1, Kimi-K2,
//! ...) turned into a `deepseek_v32` one by adding freshly initialised lightning indexers
//! (`rlvr_model::convert`), ready for the DSA warm-up and sparse training. Every V3 tensor is
//! copied unchanged (FP8 blocks dequantised, stored as the checkpoint's dtype); in dense mode the
//! result computes exactly the V3 model's logits. Tokenizer and generation files are copied;
//! the hub's remote-code files (`*.py`) are not (the V3.2 config names no `auto_map`).
//!
//! The whole checkpoint passes through memory once.

use anyhow::{bail, Context, Result};
use rlvr_model::checkpoint::{read_all, save, SaveOptions};
use rlvr_model::convert::{add_indexer, IndexerSpec};
use rlvr_model::header::{INDEX_FILE, SINGLE_FILE};
use rlvr_model::{ModelConfig, ParamCounts};
use std::path::{Path, PathBuf};
use tch::{Device, Kind};

/// Arguments of `rlvr convert`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Add DeepSeek-V3.2 lightning indexers (the only conversion there is; required).
    #[arg(long)]
    pub add_indexer: bool,
    /// The `deepseek_v3` model directory to convert.
    #[arg(long)]
    pub model: PathBuf,
    /// The `deepseek_v32` model directory to write (atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// Indexer heads H^I.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub index_n_heads: u64,
    /// Indexer head width d^I (≥ `qk_rope_head_dim`).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..))]
    pub index_head_dim: u64,
    /// Keys each query attends to under DSA.
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u64).range(1..))]
    pub index_topk: u64,
    /// Seed of the indexers' initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Largest shard in bytes.
    #[arg(long, default_value_t = 5_000_000_000)]
    pub max_shard_bytes: u64,
    /// Replace `--out` if it exists and is not empty.
    #[arg(long)]
    pub overwrite: bool,
}

/// The dtype the source stores its weights in (`dtype` / `torch_dtype`): f32 stays f32, anything
/// else (bf16, FP8 blocks) is written as bf16.
fn stored_kind(cfg: &ModelConfig) -> Kind {
    let named = cfg.extra.get("dtype").or_else(|| cfg.extra.get("torch_dtype")).and_then(|v| v.as_str());
    match named {
        Some("float32") => Kind::Float,
        Some("float16") => Kind::Half,
        _ if cfg.quantization_config.is_none() && named.is_none() => Kind::Float,
        _ => Kind::BFloat16,
    }
}

/// Copies the files a model directory carries besides its weights and config (tokenizer,
/// generation config, chat template), not the hub's remote code.
fn copy_side_files(from: &Path, to: &Path) -> Result<usize> {
    let mut copied = 0;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let skip = name == "config.json"
            || name == SINGLE_FILE
            || name == INDEX_FILE
            || name.ends_with(".safetensors")
            || name.ends_with(".py")
            || name.starts_with('.');
        if skip || !path.is_file() {
            continue;
        }
        std::fs::copy(&path, to.join(name)).with_context(|| format!("copying {}", path.display()))?;
        copied += 1;
    }
    Ok(copied)
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    if !args.add_indexer {
        bail!("rlvr convert: nothing to do; the conversion is --add-indexer (deepseek_v3 → deepseek_v32)");
    }
    let file = args.model.join("config.json");
    let v3 = ModelConfig::from_path(&args.model)?;
    let spec = IndexerSpec {
        n_heads: args.index_n_heads as usize,
        head_dim: args.index_head_dim as usize,
        topk: args.index_topk as usize,
    };
    // Check the conversion before reading any weights.
    rlvr_model::convert::v32_config(&v3, &spec).map_err(|e| e.in_file(&file))?;
    let occupied = std::fs::read_dir(&args.out).map(|mut d| d.next().is_some()).unwrap_or(args.out.exists());
    if occupied && !args.overwrite {
        bail!("{} exists and is not empty; refusing to overwrite (pass --overwrite)", args.out.display());
    }
    let kind = stored_kind(&v3);
    let tensors = read_all(&args.model, &v3, kind, Device::Cpu)
        .with_context(|| format!("reading the weights of {}", args.model.display()))?;
    let (v32, tensors) = add_indexer(&v3, tensors.into_iter().collect(), &spec, args.seed)?;
    let counts = ParamCounts::of(&v32);
    eprintln!(
        "rlvr convert: {} → deepseek_v32 with {}×{} indexer heads, top-{} ({} new parameters), seed {}",
        args.model.display(),
        spec.n_heads,
        spec.head_dim,
        spec.topk,
        counts.by_part.get("Indexer").copied().unwrap_or(0),
        args.seed
    );
    let opts = SaveOptions { dtype: None, max_shard_bytes: args.max_shard_bytes, overwrite: args.overwrite };
    let report = save(&args.out, &tensors, &v32, &opts).with_context(|| format!("writing {}", args.out.display()))?;
    let side = copy_side_files(&args.model, &args.out)?;
    println!(
        "wrote {} tensors ({} bytes) in {} file(s) and {side} other file(s) to {}",
        tensors.len(),
        report.total_size,
        report.files.len(),
        args.out.display()
    );
    Ok(())
}
