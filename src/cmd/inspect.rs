//! `rlvr inspect DIR|config.json|PRESET [--json]`.

use anyhow::{Context, Result};
use rlvr_model::device::DeviceReport;
use rlvr_model::header::{self, CheckpointHeaders};
use rlvr_model::{ModelConfig, ParamCounts};
use serde_json::json;
use std::path::{Path, PathBuf};

/// Arguments of `rlvr inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// A Hugging Face model directory, a `config.json`, or a preset name (`deepseek-v3.2`, `small`, `tiny`).
    pub model: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Resolves a model argument: an existing path, else a preset name (the recipes' lookup).
pub fn resolve_model(arg: &str) -> Result<PathBuf> {
    rlvr_trainer::recipe::resolve_model_arg(arg).map_err(anyhow::Error::msg)
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let path = resolve_model(&args.model)?;
    let cfg = ModelConfig::from_path(&path)?;
    let counts = ParamCounts::of(&cfg);
    let headers = if path.is_dir() && has_weights(&path) {
        Some(header::read_dir(&path).with_context(|| format!("reading weights in {}", path.display()))?)
    } else {
        None
    };
    let device = DeviceReport::probe();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report_json(&cfg, &counts, headers.as_ref(), &device)?)?);
    } else {
        print_table(&path, &cfg, &counts, headers.as_ref(), &device)?;
    }
    Ok(())
}

fn has_weights(dir: &Path) -> bool {
    dir.join(header::SINGLE_FILE).exists() || dir.join(header::INDEX_FILE).exists()
}

fn report_json(
    cfg: &ModelConfig,
    counts: &ParamCounts,
    headers: Option<&CheckpointHeaders>,
    device: &DeviceReport,
) -> Result<serde_json::Value> {
    let rope = cfg.rope()?;
    let dtypes = headers.map(|h| {
        h.dtype_summary()
            .into_iter()
            .map(|(k, (n, numel))| (k, json!({"tensors": n, "elements": numel})))
            .collect::<serde_json::Map<_, _>>()
    });
    Ok(json!({
        "architecture": cfg.extra.get("architectures").cloned().unwrap_or(json!(null)),
        "model_type": cfg.extra.get("model_type").cloned().unwrap_or(json!(null)),
        "family": cfg.family().model_type(),
        "q_lora_rank": cfg.q_lora_rank,
        "num_hidden_layers": cfg.num_hidden_layers,
        "hidden_size": cfg.hidden_size,
        "vocab_size": cfg.vocab_size,
        "moe_layers": (0..cfg.num_hidden_layers).filter(|&i| cfg.is_moe_layer(i)).count(),
        "n_routed_experts": cfg.n_routed_experts,
        "num_experts_per_tok": cfg.num_experts_per_tok,
        "index_topk": cfg.has_indexer().then_some(cfg.index_topk),
        "rope_theta": rope.theta,
        "yarn_factor": rope.yarn.map(|y| y.factor),
        "params_total": counts.total,
        "params_active": counts.active,
        "params_mtp": counts.mtp,
        "params_mtp_with_shared_copies": counts.mtp_with_shared_copies,
        "params_mtp_active": counts.mtp_active,
        "params_by_part": counts.by_part,
        "checkpoint_files": headers.map(|h| h.files.len()),
        "checkpoint_tensors": headers.map(|h| h.tensors.len()),
        "dtypes": dtypes,
        "cuda_available": device.cuda_available,
        "cuda_devices": device.cuda_devices,
        "cuda_runtime": device.cuda_runtime,
        "cuda_driver": device.cuda_driver,
        "device": device.summary(),
    }))
}

fn billions(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.2}B", n as f64 / 1e9)
    } else {
        format!("{:.2}M", n as f64 / 1e6)
    }
}

fn print_table(
    path: &Path,
    cfg: &ModelConfig,
    counts: &ParamCounts,
    headers: Option<&CheckpointHeaders>,
    device: &DeviceReport,
) -> Result<()> {
    let rope = cfg.rope()?;
    let moe = (0..cfg.num_hidden_layers).filter(|&i| cfg.is_moe_layer(i)).count();
    println!("model        {}", path.display());
    println!(
        "layers       {} ({} dense FFN, {} MoE) + {} MTP",
        cfg.num_hidden_layers,
        cfg.num_hidden_layers - moe,
        moe,
        cfg.num_nextn_predict_layers
    );
    println!("hidden       {}  vocab {}", cfg.hidden_size, cfg.vocab_size);
    println!(
        "MLA          {} heads, q_lora {:?}, kv_lora {}, qk {}+{}, v {}",
        cfg.num_attention_heads,
        cfg.q_lora_rank,
        cfg.kv_lora_rank,
        cfg.qk_nope_head_dim,
        cfg.qk_rope_head_dim,
        cfg.v_head_dim
    );
    println!("family       {} ({})", cfg.family().model_type(), cfg.family().architecture());
    if cfg.has_indexer() {
        println!("DSA indexer  {} heads × {}, top-k {}", cfg.index_n_heads, cfg.index_head_dim, cfg.index_topk);
    } else {
        println!("DSA indexer  none (dense attention only)");
    }
    println!(
        "MoE          {} routed (top {} of {} groups → {}), {} shared, scale {}, {:?} scores, {:?}",
        cfg.n_routed_experts,
        cfg.num_experts_per_tok,
        cfg.n_group,
        cfg.topk_group,
        cfg.n_shared_experts,
        cfg.routed_scaling_factor,
        cfg.scoring(),
        cfg.topk_method()
    );
    match rope.yarn {
        Some(y) => {
            println!("RoPE         θ {} YaRN ×{} from {}", rope.theta, y.factor, y.original_max_position_embeddings)
        }
        None => println!("RoPE         θ {}", rope.theta),
    }
    println!("params       total {}  active {}", billions(counts.total), billions(counts.active));
    println!(
        "MTP          {} own (+ embedding/head copies: {})",
        billions(counts.mtp),
        billions(counts.mtp_with_shared_copies)
    );
    for (part, n) in &counts.by_part {
        println!("  {part:<14} {}", billions(*n));
    }
    match headers {
        Some(h) => {
            println!("weights      {} tensors in {} file(s)", h.tensors.len(), h.files.len());
            for (dtype, (n, numel)) in h.dtype_summary() {
                println!("  {dtype:<8} {n} tensors, {}", billions(numel));
            }
        }
        None => println!("weights      none (config only)"),
    }
    println!("device       {}", device.summary());
    println!(
        "CUDA         runtime {} (libtorch's), driver {}",
        device.cuda_runtime.as_deref().unwrap_or("not loaded"),
        device.cuda_driver.as_deref().map_or("none (no libcuda.so.1)".to_string(), |v| format!("supports {v}"))
    );
    Ok(())
}
