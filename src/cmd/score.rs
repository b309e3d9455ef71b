//! `rlvr score --model DIR --input seqs.jsonl [--output FILE] [--mode dense|sparse]
//! [--device cpu|cuda] [--dtype f32|bf16]`: teacher-forced log-probabilities, one
//! `{"logprobs":[...]}` line per input line `{"tokens":[...]}`, where `logprobs[i-1] =
//! log p(tokens[i] | tokens[..i])` for i ≥ 1 (DESIGN.md §7).
//!
//! Every line is checked before any scoring; a bad line stops the run with its line number.
//! Sequences are scored one at a time (exact, no padding). The default mode is `sparse`: the
//! architecture's own DSA.

use anyhow::{bail, Context, Result};
use rlvr_model::checkpoint;
use rlvr_model::{AttentionMode, DeepseekV32, ModelConfig};
use serde::Deserialize;
use serde_json::json;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use tch::{nn::VarStore, Device, Kind, Tensor};

/// Attention mode on the command line.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Mode {
    /// Every causal key (indexer unused).
    Dense,
    /// DeepSeek Sparse Attention (the model's own top-k selection).
    Sparse,
}

/// Compute device on the command line.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum DeviceArg {
    /// The CPU.
    Cpu,
    /// The first CUDA device.
    Cuda,
}

/// Weight and activation dtype on the command line.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Dtype {
    /// float32 everywhere.
    F32,
    /// bfloat16 weights and activations (router bias, indexer `weights_proj` and `k_norm` stay f32).
    Bf16,
}

/// Arguments of `rlvr score`.
#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face model directory (`config.json` + safetensors).
    #[arg(long)]
    pub model: PathBuf,
    /// JSONL input, one `{"tokens": [ids...]}` per line.
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the log-probs (stdout by default).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Attention mode.
    #[arg(long, value_enum, default_value = "sparse")]
    pub mode: Mode,
    /// Compute device.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    /// Compute dtype.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: Dtype,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    tokens: Vec<i64>,
}

/// Parses and checks every line: (line number, tokens).
fn read_input(path: &Path, vocab: usize) -> Result<Vec<(usize, Vec<i64>)>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut seqs = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let n = i + 1;
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Line = serde_json::from_str(&line).with_context(|| {
            format!(
                "{} line {n}: expected {{\"tokens\": [ids...]}}",
                path.display()
            )
        })?;
        if parsed.tokens.is_empty() {
            bail!("{} line {n}: `tokens` is empty", path.display());
        }
        if let Some(bad) = parsed
            .tokens
            .iter()
            .find(|&&t| t < 0 || t as usize >= vocab)
        {
            bail!(
                "{} line {n}: token id {bad} is outside the vocabulary 0..{vocab}",
                path.display()
            );
        }
        seqs.push((n, parsed.tokens));
    }
    Ok(seqs)
}

fn device(arg: DeviceArg) -> Result<Device> {
    match arg {
        DeviceArg::Cpu => Ok(Device::Cpu),
        DeviceArg::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        DeviceArg::Cuda => bail!("--device cuda: libtorch sees no CUDA device"),
    }
}

/// Builds the model on `device`, loads the checkpoint strictly, and casts to `dtype`.
pub fn load_model(dir: &Path, device: Device, dtype: Dtype) -> Result<(DeepseekV32, VarStore)> {
    let cfg = ModelConfig::from_path(dir)?;
    let vs = VarStore::new(device);
    let model = DeepseekV32::new(&vs.root(), &cfg)?;
    checkpoint::load_varstore(dir, &cfg, &vs, true)
        .with_context(|| format!("loading {}", dir.display()))?;
    if let Dtype::Bf16 = dtype {
        // transformers keeps these in f32 (`_keep_in_fp32_modules`); the model casts at use.
        let keep = [
            "e_score_correction_bias",
            "indexer.weights_proj",
            "indexer.k_norm",
        ];
        for (name, mut var) in vs.variables() {
            if !keep.iter().any(|k| name.contains(k)) {
                tch::no_grad(|| var.set_data(&var.to_kind(Kind::BFloat16)));
            }
        }
    }
    Ok((model, vs))
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let device = device(args.device)?;
    let (model, _vs) = load_model(&args.model, device, args.dtype)?;
    let seqs = read_input(&args.input, model.config.vocab_size)?;
    let mode = match args.mode {
        Mode::Dense => AttentionMode::Dense,
        Mode::Sparse => AttentionMode::Sparse,
    };
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    for (_, tokens) in &seqs {
        let ids = Tensor::from_slice(tokens).to_device(device).unsqueeze(0); // (1, T)
        let logprobs: Vec<f32> = if tokens.len() < 2 {
            Vec::new()
        } else {
            let lp = tch::no_grad(|| model.token_logprobs(&ids, mode)); // (1, T−1)
            Vec::<f32>::try_from(lp.get(0).to_kind(Kind::Float).to_device(Device::Cpu))?
        };
        writeln!(out, "{}", json!({ "logprobs": logprobs }))?;
    }
    out.flush()?;
    Ok(())
}
