//! `rlvr serve --model DIR [--host 127.0.0.1] [--port 8000] [--slots N] [--max-queue N]
//! [--max-seq-len N] [--grace-secs S] [--api-key KEY] [--admin-key KEY (or $RLVR_SERVE_ADMIN_KEY)] [--weights-dir DIR]
//! [--max-body-mb MB] [--mode dense|sparse] [--device cpu|cuda] [--dtype f32|bf16]`
//! (docs/architecture.md §7): the OpenAI-compatible HTTP service of `rlvr_rollout::service` over one engine.
//!
//! Loads the model as `rlvr generate` does; `tokenizer.json` in the directory enables text prompts,
//! chat and stop strings. Serves until ctrl-c or SIGTERM, then lets requests in flight finish for
//! `--grace-secs` before aborting them, and exits 0.

use super::score::{device, load_model, Compute};
use anyhow::{bail, Context, Result};
use rlvr_model::ModelConfig;
use rlvr_rollout::engine::{EngineConfig, Sizing};
use rlvr_rollout::service::{run_blocking, Service, ServiceConfig};
use rlvr_rollout::tokenizer::Tokenizer;
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `rlvr serve`.
#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face model directory (`config.json` + safetensors, optionally `tokenizer.json`).
    #[arg(long)]
    pub model: PathBuf,
    /// Address to bind (loopback by default; anything else exposes the server).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to bind (0 picks a free one).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Engine sequence slots (samples generated at once; the largest `n`). Refused when their KV
    /// cache does not fit the device; without it, 16 or as many as fit.
    #[arg(long)]
    pub slots: Option<usize>,
    /// With `--slots N`: lower N to the slots whose KV cache fits the device, down to this many,
    /// instead of refusing (a rollout pool's servers get it: at least one group's samples).
    #[arg(long, requires = "slots")]
    pub min_slots: Option<usize>,
    /// Requests that may wait beyond the slots; more are answered 429.
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    /// Tokens per slot, prompt + completion (default: the config's max_position_embeddings, at most 4096).
    #[arg(long)]
    pub max_seq_len: Option<usize>,
    /// Seconds requests in flight may run on after a shutdown signal before they are aborted.
    #[arg(long, default_value_t = 30)]
    pub grace_secs: u64,
    /// Name clients use in `model` (default: the model directory's name).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Key clients must send as `Authorization: Bearer KEY`; without
    /// one the client routes are open.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Administrator's key that `POST /v1/weights` needs (else the
    /// environment's RLVR_SERVE_ADMIN_KEY, which other users cannot read in the process list);
    /// without one weight pushes over HTTP are refused.
    #[arg(long)]
    pub admin_key: Option<String>,
    /// The only directory `POST /v1/weights` may read `{"path": ...}` from; raw pushes spill to
    /// it too (without one, to $TMPDIR or /tmp).
    #[arg(long)]
    pub weights_dir: Option<PathBuf>,
    /// Largest generation request body in MiB; larger ones are answered 413.
    #[arg(long, default_value_t = 16)]
    pub max_body_mb: usize,
    /// Attention mode, device and dtype.
    #[command(flatten)]
    pub compute: Compute,
}

/// Engine slots without `--slots` (fewer when their cache does not fit the device).
pub const DEFAULT_SLOTS: usize = 16;

/// The environment variable holding the administrator's key when `--admin-key` is not given.
pub const ADMIN_KEY_ENV: &str = "RLVR_SERVE_ADMIN_KEY";

/// Runs the command.
pub fn run(mut args: Args) -> Result<()> {
    let device = device(args.compute.device)?;
    if args.admin_key.is_none() {
        args.admin_key = std::env::var(ADMIN_KEY_ENV).ok().filter(|k| !k.is_empty());
    }
    let cfg = ModelConfig::from_path(&args.model)?;
    args.compute.mode = args.compute.mode_for(&args.model)?;
    if args.slots == Some(0) {
        bail!("--slots must be ≥ 1");
    }
    if let (Some(slots), Some(min)) = (args.slots, args.min_slots) {
        if min == 0 || min > slots {
            bail!("--min-slots {min} must be in 1..=--slots ({slots})");
        }
    }
    let max_seq_len = args.max_seq_len.unwrap_or(cfg.max_position_embeddings.min(4096));
    if max_seq_len < 2 || max_seq_len > cfg.max_position_embeddings {
        bail!("--max-seq-len {max_seq_len} must be in 2..={} (max_position_embeddings)", cfg.max_position_embeddings);
    }
    if let Some(dir) = &args.weights_dir {
        if !dir.is_dir() {
            bail!("--weights-dir {} is not a directory", dir.display());
        }
        if args.admin_key.is_none() {
            bail!("--weights-dir needs --admin-key (weight pushes are an administrator's action)");
        }
    }
    let tokenizer = if args.model.join("tokenizer.json").exists() {
        Some(
            Tokenizer::from_dir(&args.model)
                .with_context(|| format!("loading the tokenizer of {}", args.model.display()))?,
        )
    } else {
        None
    };
    let name = args.served_model_name.clone().unwrap_or_else(|| {
        let dir = args.model.canonicalize().unwrap_or_else(|_| args.model.clone());
        dir.file_name().map_or("rlvr".into(), |n| n.to_string_lossy().into_owned())
    });
    let (model, vs) = load_model(&args.model, device, args.compute.dtype)?;
    let sizing = match (args.slots, args.min_slots) {
        (Some(_), Some(min)) => Sizing::default_slots(min, "--slots", "--max-seq-len"),
        (Some(_), None) => Sizing::explicit("--slots", "--max-seq-len"),
        (None, _) => Sizing::default_slots(1, "--slots", "--max-seq-len"),
    };
    let slots = args.slots.unwrap_or(DEFAULT_SLOTS);
    let engine = EngineConfig { mode: args.compute.mode, sizing, ..EngineConfig::new(slots, max_seq_len) };
    let config = ServiceConfig {
        max_queue: args.max_queue,
        grace: Duration::from_secs(args.grace_secs),
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        admin_key: args.admin_key.clone().filter(|k| !k.is_empty()),
        weights_dir: args.weights_dir.clone(),
        max_body_bytes: args.max_body_mb.max(1) << 20,
        chat_template: chat_template(&args.model)?,
        ..ServiceConfig::new(name)
    };
    let service = Service::new(model, &vs, engine, tokenizer, config)?;
    run_blocking(service, &format!("{}:{}", args.host, args.port)).context("rlvr serve")?;
    Ok(())
}

/// The model's chat template for `/v1/chat/completions`: DeepSeek-V3.2 uses its own encoding;
/// a model of the families before it uses the Jinja `chat_template` of its tokenizer config (an
/// error naming the file when it does not compile).
fn chat_template(dir: &std::path::Path) -> Result<Option<std::sync::Arc<rlvr_rollout::template::ChatTemplate>>> {
    let config = rlvr_model::ModelConfig::from_path(dir)?;
    if config.has_indexer() {
        return Ok(None);
    }
    let template = rlvr_rollout::template::ChatTemplate::from_model_dir(dir)
        .with_context(|| format!("the chat template of {}", dir.display()))?;
    Ok(template.map(std::sync::Arc::new))
}
