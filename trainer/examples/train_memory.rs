//! Peak memory of one training step, with and without activation checkpointing: the DSA
//! benchmark's model (`benches/dsa/`), one (1, L) random batch, forward + loss + backward (no
//! optimizer), in this process; prints one line with the process's peak RSS and the step's time.
//! `benches/memory/run.sh` runs one process per cell under a memory cap and makes the table.
//!
//! `cargo run --release -p rlvr-trainer --example train_memory -- --length 4096 --mode sparse
//!  --checkpointing layer [--objective lm|sparse_stage] [--preset small] [--layers 2] [--seed 0]
//!  [--threads 2]`
//!
//! - `--objective lm`: the next-token loss (what `benches/dsa` times);
//! - `--objective sparse_stage`: the DSA sparse stage's loss, LM + the indexer KL over the selected
//!   set (sparse mode only).
//!
//! Peak RSS is the process's `VmHWM`, reset (Linux `clear_refs` 5) after the model is built: the
//! model, libtorch's runtime, and the step with its gradients.

use anyhow::{bail, Context, Result};
use rlvr_model::checkpoint::init_tensors;
use rlvr_model::recompute::head_chunk;
use rlvr_model::{indexer_loss::LayerIndexerLoss, ModelConfig};
use rlvr_model::{AttentionMode, Checkpointing, DeepseekV32, ForwardOptions, IndexerStage, LossHead, MainHead};
use rlvr_trainer::recipe::find_preset;
use std::path::PathBuf;
use std::time::Instant;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// The command line.
struct Args {
    source: String,
    layers: usize,
    length: i64,
    mode: AttentionMode,
    checkpointing: Checkpointing,
    indexer_loss: bool,
    seed: u64,
    threads: i32,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        source: "small".into(),
        layers: 2,
        length: 4096,
        mode: AttentionMode::Sparse,
        checkpointing: Checkpointing::None,
        indexer_loss: false,
        seed: 0,
        threads: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| anyhow::anyhow!("{flag} {value}: {e}");
        match flag.as_str() {
            "--preset" | "--config" => a.source = value,
            "--layers" => a.layers = value.parse().map_err(|e| bad(&e))?,
            "--length" => a.length = value.parse().map_err(|e| bad(&e))?,
            "--mode" => a.mode = serde_json::from_value(value.clone().into()).map_err(|e| bad(&e))?,
            "--checkpointing" => a.checkpointing = serde_json::from_value(value.clone().into()).map_err(|e| bad(&e))?,
            "--objective" => {
                a.indexer_loss = match value.as_str() {
                    "lm" => false,
                    "sparse_stage" => true,
                    _ => bail!("--objective {value}: expected lm or sparse_stage"),
                }
            }
            "--seed" => a.seed = value.parse().map_err(|e| bad(&e))?,
            "--threads" => a.threads = value.parse().map_err(|e| bad(&e))?,
            _ => bail!("unknown flag {flag}"),
        }
    }
    if a.indexer_loss && a.mode != AttentionMode::Sparse {
        bail!("--objective sparse_stage needs --mode sparse");
    }
    Ok(a)
}

/// The preset's or file's config with `num_hidden_layers` overridden (MTP off), as `benches/dsa`.
fn load_config(args: &Args) -> Result<ModelConfig> {
    let path = find_preset(&args.source).unwrap_or_else(|| PathBuf::from(&args.source));
    let mut cfg = ModelConfig::from_path(&path).with_context(|| format!("no preset or config `{}`", args.source))?;
    cfg.num_hidden_layers = args.layers;
    cfg.num_nextn_predict_layers = 0;
    cfg.validate()?;
    Ok(cfg)
}

/// The process's peak RSS (`VmHWM`), in GiB.
fn peak_rss_gib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kb.unwrap_or(0.0) / (1u64 << 20) as f64
}

/// One step's loss value: forward, loss and backward as `args` asks.
fn step(model: &DeepseekV32, args: &Args, tokens: &Tensor) -> f64 {
    let stage = args.indexer_loss.then_some(IndexerStage::Sparse);
    let opts = ForwardOptions { indexer_loss: stage, ..ForwardOptions::new(args.mode) };
    match args.checkpointing {
        Checkpointing::None => {
            let out = model.run(tokens, opts);
            let mut loss = out.lm_loss(tokens);
            if let Some(losses) = &out.indexer {
                loss += losses.total(None);
            }
            loss.backward();
            loss.double_value(&[])
        }
        Checkpointing::Layer => {
            let t = tokens.size()[1];
            let targets = tokens.narrow(1, 1, t - 1); // (1, L−1)
            let mut lm = 0.0;
            let mut main = |logp: &Tensor| {
                let loss = -logp.mean(Kind::Float);
                lm = loss.double_value(&[]);
                loss
            };
            let mut indexer = |l: &LayerIndexerLoss| l.mean(None);
            let chunk = head_chunk(1, model.config.vocab_size as i64);
            let head = LossHead {
                main: Some(MainHead { targets: &targets, chunk, entropy: false, loss: &mut main }),
                mtp: None,
                indexer: stage.map(|_| &mut indexer as &mut dyn FnMut(&LayerIndexerLoss) -> Tensor),
            };
            let out = model.backward_checkpointed(tokens, opts, head);
            lm + out.indexer.map_or(0.0, |l| l.total(None).double_value(&[]))
        }
    }
}

fn main() -> Result<()> {
    let args = parse_args()?;
    tch::set_num_threads(args.threads);
    let cfg = load_config(&args)?;
    let vs = VarStore::new(Device::Cpu);
    let model = DeepseekV32::new(&vs.root(), &cfg)?;
    let vars = vs.variables();
    tch::no_grad(|| -> Result<()> {
        for (name, t) in init_tensors(&cfg, args.seed, Kind::Float)? {
            if let Some(var) = vars.get(&name) {
                var.shallow_clone().copy_(&t);
            }
        }
        Ok(())
    })?;
    drop(vars);
    tch::manual_seed(args.seed as i64);
    let tokens = Tensor::randint(cfg.vocab_size as i64, [1, args.length], (Kind::Int64, Device::Cpu)); // (1, L)
                                                                                                       // The peak from here on: the step, on top of the resident model (the init copies are gone).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let start = Instant::now();
    let loss = step(&model, &args, &tokens);
    let secs = start.elapsed().as_secs_f64();
    let grad_norm: f64 = vs
        .trainable_variables()
        .iter()
        .map(|v| v.grad())
        .filter(|g| g.defined())
        .map(|g| g.square().sum(Kind::Double).double_value(&[]))
        .sum::<f64>()
        .sqrt();
    println!(
        "length {} mode {:?} checkpointing {:?} objective {}: peak RSS {:.2} GiB, step {:.1} s, loss {loss:.6}, grad norm {grad_norm:.6}",
        args.length,
        args.mode,
        args.checkpointing,
        if args.indexer_loss { "sparse_stage" } else { "lm" },
        peak_rss_gib(),
        secs
    );
    Ok(())
}
