//! `rlvr score --model DIR --input seqs.jsonl [--output FILE] [--mode dense|sparse]
//! [--device cpu|cuda] [--dtype f32|bf16] [--batch-size N] [--timing] [--repeat N]`: teacher-forced
//! log-probabilities, one `{"logprobs":[...]}` line per input line `{"tokens":[...]}`, where
//! `logprobs[i-1] = log p(tokens[i] | tokens[..i])` for i ≥ 1 (docs/architecture.md §7).
//!
//! Every line is checked before any scoring; a bad line stops the run with its line number.
//! Sequences are sorted by length and scored in right-padded batches of up to `--batch-size`
//! neighbours. Padding is exact: attention is causal, DSA's top-k runs over causal keys only and
//! MoE routes each token alone, so a real position never sees a pad (only float rounding of the
//! larger matmuls can differ). The default mode is `sparse`: the architecture's own DSA.
//!
//! `--timing` reports each pass's forward time on stderr, and `--repeat N` scores the whole input
//! N times (output written once), for benchmarks: `timing pass=i seconds=… tokens=…
//! tokens_per_s=… threads=…` (tokens = real, unpadded input tokens; load and parsing excluded).

use anyhow::{bail, Context, Result};
use rlvr_model::checkpoint;
use rlvr_model::{AttentionMode, DeepseekV32, DeviceSpec, Dtype, ModelConfig};
use serde::Deserialize;
use serde_json::json;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// How a command runs the model: `--mode`, `--device`, `--dtype` (shared by score, generate, serve).
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct Compute {
    /// Attention mode: `dense` or `sparse` (default: sparse with V3.2 indexers, else dense).
    #[arg(long, default_value = "sparse")]
    pub mode: AttentionMode,
    /// Compute device: `cpu`, `cuda`, `cuda:N` or `auto`.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Compute dtype: `f32`, or `bf16` (router bias, indexer `weights_proj` and `k_norm` stay f32).
    #[arg(long, default_value = "f32")]
    pub dtype: Dtype,
}

impl Compute {
    /// The attention mode for the model in `dir`: `--mode` as given; without the flag, the
    /// architecture's own (sparse with the V3.2 lightning indexers, dense for deepseek_v3 /
    /// deepseek_v2 models, which have none). `--mode sparse` on a model without indexers is an
    /// error naming its config.json and the field.
    pub fn mode_for(&self, dir: &Path) -> Result<AttentionMode> {
        let file = dir.join("config.json");
        let cfg = ModelConfig::from_path(dir)?;
        if self.mode == AttentionMode::Sparse && !cfg.has_indexer() && !mode_flag_given() {
            return Ok(AttentionMode::Dense);
        }
        cfg.check_attention(self.mode).map_err(|e| e.in_file(&file))?;
        Ok(self.mode)
    }
}

/// Whether the command line names `--mode` (clap's default is `sparse` otherwise).
fn mode_flag_given() -> bool {
    std::env::args_os().any(|a| a.to_str().is_some_and(|a| a == "--mode" || a.starts_with("--mode=")))
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
    /// Attention mode, device and dtype.
    #[command(flatten)]
    pub compute: Compute,
    /// Sequences per forward (right-padded to the longest of the batch).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: u64,
    /// Report each pass's forward seconds and tokens/s on stderr.
    #[arg(long)]
    pub timing: bool,
    /// Score the input this many times (benchmarks; the output is written once).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub repeat: u64,
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
        let parsed: Line = serde_json::from_str(&line)
            .with_context(|| format!("{} line {n}: expected {{\"tokens\": [ids...]}}", path.display()))?;
        if parsed.tokens.is_empty() {
            bail!("{} line {n}: `tokens` is empty", path.display());
        }
        if let Some(bad) = parsed.tokens.iter().find(|&&t| t < 0 || t as usize >= vocab) {
            bail!("{} line {n}: token id {bad} is outside the vocabulary 0..{vocab}", path.display());
        }
        seqs.push((n, parsed.tokens));
    }
    Ok(seqs)
}

/// The tch device of a command-line choice; an error when CUDA is asked for but absent.
pub fn device(spec: DeviceSpec) -> Result<Device> {
    match spec.device() {
        Device::Cuda(n) if !tch::Cuda::is_available() || n as i64 >= tch::Cuda::device_count() => {
            bail!("--device {spec}: libtorch sees {} CUDA device(s)", tch::Cuda::device_count())
        }
        device => Ok(device),
    }
}

/// Builds the model on `device`, loads the checkpoint strictly, and casts to `dtype`.
pub fn load_model(dir: &Path, device: Device, dtype: Dtype) -> Result<(DeepseekV32, VarStore)> {
    let cfg = ModelConfig::from_path(dir)?;
    let vs = VarStore::new(device);
    let model = DeepseekV32::new(&vs.root(), &cfg)?;
    checkpoint::load_varstore(dir, &cfg, &vs, true).with_context(|| format!("loading {}", dir.display()))?;
    dtype.cast(&vs);
    Ok((model, vs))
}

/// Batches of indices into `seqs`: sorted by length, `size` neighbours each.
fn batches(seqs: &[Vec<i64>], size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..seqs.len()).collect();
    order.sort_by_key(|&i| seqs[i].len());
    order.chunks(size).map(<[usize]>::to_vec).collect()
}

/// Log-probs of each sequence of one batch (right-padded with id 0, scored in one forward).
fn score_batch(model: &DeepseekV32, seqs: &[&[i64]], mode: AttentionMode, device: Device) -> Result<Vec<Vec<f32>>> {
    let longest = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
    if longest < 2 {
        return Ok(vec![Vec::new(); seqs.len()]);
    }
    let mut flat = vec![0i64; seqs.len() * longest];
    for (row, seq) in seqs.iter().enumerate() {
        flat[row * longest..row * longest + seq.len()].copy_from_slice(seq);
    }
    let ids = Tensor::from_slice(&flat).view([seqs.len() as i64, longest as i64]).to_device(device); // (B, T)
    let lp = tch::no_grad(|| model.token_logprobs(&ids, mode)); // (B, T−1)
    let lp = Vec::<f32>::try_from(lp.to_kind(Kind::Float).to_device(Device::Cpu).flatten(0, -1))?;
    let width = longest - 1;
    Ok(seqs
        .iter()
        .enumerate()
        .map(|(row, seq)| lp[row * width..row * width + seq.len().saturating_sub(1)].to_vec())
        .collect())
}

/// Scores every sequence in batches of `size`; element `i` belongs to `seqs[i]`.
pub fn score_all(
    model: &DeepseekV32,
    seqs: &[Vec<i64>],
    size: usize,
    mode: AttentionMode,
    device: Device,
) -> Result<Vec<Vec<f32>>> {
    let mut out = vec![Vec::new(); seqs.len()];
    for batch in batches(seqs, size) {
        let rows: Vec<&[i64]> = batch.iter().map(|&i| seqs[i].as_slice()).collect();
        for (i, lp) in batch.iter().zip(score_batch(model, &rows, mode, device)?) {
            out[*i] = lp;
        }
    }
    Ok(out)
}

/// Runs the command.
pub fn run(mut args: Args) -> Result<()> {
    let device = device(args.compute.device)?;
    args.compute.mode = args.compute.mode_for(&args.model)?;
    let (model, _vs) = load_model(&args.model, device, args.compute.dtype)?;
    let seqs: Vec<Vec<i64>> = read_input(&args.input, model.config.vocab_size)?.into_iter().map(|(_, t)| t).collect();
    let tokens: usize = seqs.iter().map(Vec::len).sum();
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let mut scored = Vec::new();
    for pass in 1..=args.repeat {
        let start = Instant::now();
        scored = score_all(&model, &seqs, args.batch_size as usize, args.compute.mode, device)?;
        let secs = start.elapsed().as_secs_f64();
        if args.timing {
            eprintln!(
                "timing pass={pass} seconds={secs:.4} tokens={tokens} tokens_per_s={:.1} threads={}",
                tokens as f64 / secs,
                tch::get_num_threads()
            );
        }
    }
    for logprobs in &scored {
        writeln!(out, "{}", json!({ "logprobs": logprobs }))?;
    }
    out.flush()?;
    Ok(())
}
