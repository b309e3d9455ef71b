//! `rlvr generate --model DIR (--prompt TEXT | --prompt-ids 1,2,3 | --input prompts.jsonl)
//! [--max-new-tokens N] [--temperature T] [--top-p P] [--top-k K] [--min-p P] [--n N] [--seed S]
//! [--ignore-eos] [--mode dense|sparse] [--device cpu|cuda] [--dtype f32|bf16] [--output FILE]
//! [--timing] [--repeat N] [--warmup] [--profile]` (docs/architecture.md §7).
//!
//! Writes one JSON object per completion, prompt-major (all samples of prompt 0, then prompt 1…):
//! `{"prompt_index", "tokens", "logprobs", "text", "finish_reason"}`. `tokens` are the generated
//! ids only; `logprobs` the log-probability of each under the distribution it was drawn from (after
//! temperature, top-k, top-p and min-p, renormalised), or for greedy (`--temperature 0`) under the
//! model's untruncated distribution; `finish_reason` is `"stop"` at an `eos_token_id` of the config
//! (unless `--ignore-eos`) and `"length"` otherwise. `text` is present when the model directory has
//! a `tokenizer.json` (decoded without special tokens); `--prompt TEXT` needs one (encoded with the
//! tokenizer's special tokens, e.g. BOS).
//!
//! Every prompt and option is checked before the weights load; a mistake names the flag or the
//! input line. All prompts go through the rollout engine (continuous batching over at most
//! `max(64, --n)` slots, sparse or dense as `--mode` says); prompt `i` is request index `i`, so its
//! sample `j` draws from a stream seeded from `(seed + i, j)`: prompt `i` of a file run with
//! `--seed s` gives what that prompt alone gives with `--seed s+i`, whatever its neighbours.
//!
//! For benchmarks (`benches/generate/`): `--warmup` first generates the first prompt alone, untimed;
//! `--repeat N` generates every prompt N times on the same engine (the last pass is written);
//! `--timing` prints each pass on stderr as `timing pass=i seconds=… tokens=… tokens_per_s=…
//! threads=…` (weights loading and engine set-up excluded, prefill included); `--profile` runs one
//! more pass with every libtorch operator counted (`rlvr_dist::profile`) and prints, per decode
//! step, the operator calls, the top operators by time and the engine's split into prefill, decode
//! forward, sampling and bookkeeping (`profile …` lines on stderr).

use super::score::{device, load_model, Compute};
use anyhow::{anyhow, bail, Context, Result};
use rlvr_model::ModelConfig;
use rlvr_rollout::engine::{
    DrawSite, Engine, EngineConfig, EngineError, FinishReason, Request, RequestOutput, Sample, SamplingParams, Sizing,
};
use serde::Deserialize;
use serde_json::json;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokenizers::Tokenizer;

/// Arguments of `rlvr generate`.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("prompts").required(true).args(["prompt", "prompt_ids", "input"])))]
pub struct Args {
    /// Hugging Face model directory (`config.json` + safetensors, optionally `tokenizer.json`).
    #[arg(long)]
    pub model: PathBuf,
    /// One prompt as text (needs the model's `tokenizer.json`).
    #[arg(long)]
    pub prompt: Option<String>,
    /// One prompt as comma-separated token ids.
    #[arg(long, value_delimiter = ',', num_args = 1)]
    pub prompt_ids: Option<Vec<i64>>,
    /// JSONL prompts, one `{"prompt": text}` or `{"prompt_ids": [ids...]}` per line.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Tokens to generate at most per completion.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 = greedy.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Nucleus sampling: keep the most likely ids up to this mass, in (0, 1]; 1 = off.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Keep the K most likely ids; 0 = off.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Keep ids with probability ≥ min_p · the largest, in [0, 1]; 0 = off.
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f64,
    /// Completions per prompt.
    #[arg(long, default_value_t = 1)]
    pub n: usize,
    /// Base seed of the sampling streams.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Generate `--max-new-tokens` tokens even past an end-of-sequence id.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Attention mode, device and dtype.
    #[command(flatten)]
    pub compute: Compute,
    /// Where tokens are drawn from the logits: `device` (tensor ops on the model's device; only
    /// ids and log-probs come back), `host` (the logits copied over), or `auto` (device on CUDA,
    /// host on the CPU). The same tokens either way.
    #[arg(long, default_value = "auto")]
    pub draw: DrawSite,
    /// Where to write the completions (stdout by default).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Print each pass's generation time on stderr.
    #[arg(long)]
    pub timing: bool,
    /// Generate every prompt this many times (benchmarks; the last pass is written).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub repeat: u64,
    /// Generate the first prompt alone once, untimed, before the timed passes.
    #[arg(long)]
    pub warmup: bool,
    /// After the timed passes, run one more with every libtorch operator counted and print where
    /// a decode step's time goes on stderr (benchmarks; that pass is slower and not written).
    #[arg(long)]
    pub profile: bool,
}

/// One line of `--input`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    prompt: Option<String>,
    prompt_ids: Option<Vec<i64>>,
}

/// A prompt before tokenisation, with where it came from (for error messages).
enum Prompt {
    Text(String),
    Ids(Vec<i64>),
}

/// Reads the prompts of whichever source was given: (origin, prompt).
fn read_prompts(args: &Args) -> Result<Vec<(String, Prompt)>> {
    if let Some(text) = &args.prompt {
        return Ok(vec![("--prompt".into(), Prompt::Text(text.clone()))]);
    }
    if let Some(ids) = &args.prompt_ids {
        return Ok(vec![("--prompt-ids".into(), Prompt::Ids(ids.clone()))]);
    }
    let path = args.input.as_ref().expect("clap requires one prompt source");
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut prompts = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let origin = format!("{} line {}", path.display(), i + 1);
        let line = line.with_context(|| format!("reading {origin}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Line = serde_json::from_str(&line)
            .with_context(|| format!("{origin}: expected {{\"prompt\": text}} or {{\"prompt_ids\": [ids...]}}"))?;
        let prompt = match (parsed.prompt, parsed.prompt_ids) {
            (Some(text), None) => Prompt::Text(text),
            (None, Some(ids)) => Prompt::Ids(ids),
            _ => bail!("{origin}: give exactly one of `prompt` and `prompt_ids`"),
        };
        prompts.push((origin, prompt));
    }
    if prompts.is_empty() {
        bail!("{}: no prompts", path.display());
    }
    Ok(prompts)
}

/// The model's `tokenizer.json`, when it has one.
fn load_tokenizer(dir: &Path) -> Result<Option<Tokenizer>> {
    let path = dir.join("tokenizer.json");
    if !path.exists() {
        return Ok(None);
    }
    let tok = Tokenizer::from_file(&path).map_err(|e| anyhow!("loading {}: {e}", path.display()))?;
    Ok(Some(tok))
}

/// Token ids of every prompt, checked against the config: non-empty, in the vocabulary, and short
/// enough for `max_new_tokens` more within `max_position_embeddings`.
fn tokenize(
    prompts: Vec<(String, Prompt)>,
    tok: Option<&Tokenizer>,
    cfg: &ModelConfig,
    args: &Args,
) -> Result<Vec<Vec<i64>>> {
    let mut out = Vec::with_capacity(prompts.len());
    for (origin, prompt) in prompts {
        let ids = match prompt {
            Prompt::Ids(ids) => ids,
            Prompt::Text(text) => {
                let Some(tok) = tok else {
                    bail!(
                        "{origin}: a text prompt needs {}/tokenizer.json (give token ids instead)",
                        args.model.display()
                    );
                };
                let enc = tok.encode(text, true).map_err(|e| anyhow!("{origin}: tokenizing: {e}"))?;
                enc.get_ids().iter().map(|&id| id as i64).collect()
            }
        };
        if ids.is_empty() {
            bail!("{origin}: the prompt is empty");
        }
        if let Some(bad) = ids.iter().find(|&&t| t < 0 || t as usize >= cfg.vocab_size) {
            bail!("{origin}: token id {bad} is outside the vocabulary 0..{}", cfg.vocab_size);
        }
        let total = ids.len() + args.max_new_tokens;
        if total > cfg.max_position_embeddings {
            bail!(
                "{origin}: {} prompt tokens + --max-new-tokens {} exceed max_position_embeddings {}",
                ids.len(),
                args.max_new_tokens,
                cfg.max_position_embeddings
            );
        }
        out.push(ids);
    }
    Ok(out)
}

/// Checks the sampling options (the engine checks them again, but before the weights load is
/// where the flag can be named).
fn check_sampling(args: &Args) -> Result<()> {
    if !(args.temperature.is_finite() && args.temperature >= 0.0) {
        bail!("--temperature must be ≥ 0, got {}", args.temperature);
    }
    if !(args.top_p > 0.0 && args.top_p <= 1.0) {
        bail!("--top-p must be in (0, 1], got {}", args.top_p);
    }
    if !(0.0..=1.0).contains(&args.min_p) {
        bail!("--min-p must be in [0, 1], got {}", args.min_p);
    }
    if args.n == 0 {
        bail!("--n must be ≥ 1");
    }
    Ok(())
}

/// The engine request of prompt `index`.
fn request(args: &Args, cfg: &ModelConfig, prompt: Vec<i64>, index: usize) -> Request {
    Request {
        n: args.n,
        sampling: SamplingParams {
            max_tokens: args.max_new_tokens,
            temperature: args.temperature,
            top_p: args.top_p,
            top_k: args.top_k,
            min_p: args.min_p,
        },
        stop_ids: if args.ignore_eos { Vec::new() } else { cfg.eos_ids() },
        seed: args.seed,
        index,
        ..Request::new(prompt)
    }
}

/// Generates every prompt's samples on an engine made by `engine_of` (`--warmup`, then `--repeat`
/// passes, timed with `--timing`); the last pass's outputs in prompt order and its seconds.
fn generate(
    args: &Args,
    cfg: &ModelConfig,
    engine_of: impl FnOnce(EngineConfig) -> Result<Engine, EngineError>,
    prompts: Vec<Vec<i64>>,
) -> Result<(Vec<RequestOutput>, f64)> {
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let slots = (prompts.len() * args.n).min(args.n.max(64));
    // Every sample at once, at most 64 (fewer when their cache does not fit the device; one
    // prompt's `--n` samples need their slots together).
    let sizing = Sizing::default_slots(args.n, "the batch (prompts × --n, at most 64)", "--max-new-tokens");
    let config = EngineConfig {
        mode: args.compute.mode,
        sizing,
        draw: args.draw,
        ..EngineConfig::new(slots, longest + args.max_new_tokens)
    };
    let mut engine = engine_of(config)?;
    if args.warmup {
        engine.submit(request(args, cfg, prompts[0].clone(), 0)).context("warm-up prompt")?;
        engine.run_until_done();
    }
    let (mut out, mut secs) = (Vec::new(), 0.0);
    for pass in 1..=args.repeat {
        let start = Instant::now();
        for (i, prompt) in prompts.iter().enumerate() {
            engine.submit(request(args, cfg, prompt.clone(), i)).with_context(|| format!("prompt {i}"))?;
        }
        out = engine.run_until_done();
        secs = start.elapsed().as_secs_f64();
        if args.timing {
            let tokens: usize = out.iter().flat_map(|o| &o.samples).map(|s| s.tokens.len()).sum();
            eprintln!(
                "timing pass={pass} seconds={secs:.4} tokens={tokens} tokens_per_s={:.1} threads={}",
                tokens as f64 / secs.max(1e-9),
                tch::get_num_threads()
            );
        }
    }
    if args.profile {
        profile_pass(args, cfg, &mut engine, &prompts)?;
    }
    out.sort_by_key(|o| o.index);
    Ok((out, secs))
}

/// `--profile`: one more pass with the operator profiler on; prints per decode step the operator
/// calls, the top operators by time, and the engine's own split of the pass.
fn profile_pass(args: &Args, cfg: &ModelConfig, engine: &mut Engine, prompts: &[Vec<i64>]) -> Result<()> {
    for (i, prompt) in prompts.iter().enumerate() {
        engine.submit(request(args, cfg, prompt.clone(), i)).with_context(|| format!("prompt {i}"))?;
    }
    let before = engine.step_times();
    let start = Instant::now();
    let ((), ops) = rlvr_dist::profile::profile_ops(|| {
        engine.run_until_done();
    });
    let wall = start.elapsed().as_secs_f64();
    let after = engine.step_times();
    let decode = (after.decode_steps - before.decode_steps).max(1) as f64;
    let per_step = |d: std::time::Duration| d.as_secs_f64() * 1e3 / decode;
    eprintln!(
        "profile steps={} decode_steps={decode} wall_ms_per_decode_step={:.3} ops_per_decode_step={:.1} \
         ops_all_depths_per_decode_step={:.1} op_ms_per_decode_step={:.3}",
        after.steps - before.steps,
        wall * 1e3 / decode,
        ops.calls() as f64 / decode,
        ops.all_calls as f64 / decode,
        ops.seconds() * 1e3 / decode,
    );
    eprintln!(
        "profile split_ms_per_decode_step prefill={:.3} decode_forward={:.3} sampling={:.3} bookkeeping={:.3}",
        per_step(after.prefill - before.prefill),
        per_step(after.decode_forward - before.decode_forward),
        per_step(after.sampling - before.sampling),
        per_step(after.bookkeeping - before.bookkeeping),
    );
    for op in ops.ops.iter().take(25) {
        eprintln!(
            "profile op={} calls_per_decode_step={:.2} us_per_decode_step={:.1}",
            op.name,
            op.calls as f64 / decode,
            op.seconds * 1e6 / decode
        );
    }
    Ok(())
}

/// The JSON line of one completion.
fn record(prompt_index: usize, sample: &Sample, tok: Option<&Tokenizer>) -> Result<serde_json::Value> {
    let finish = match sample.finish_reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::Abort => "abort",
    };
    let mut obj = json!({
        "prompt_index": prompt_index,
        "tokens": sample.ids(),
        "logprobs": sample.logprobs(),
        "finish_reason": finish,
    });
    if let Some(tok) = tok {
        let ids: Vec<u32> = sample.tokens.iter().map(|t| t.id as u32).collect();
        let text = tok.decode(&ids, true).map_err(|e| anyhow!("decoding prompt {prompt_index}: {e}"))?;
        obj["text"] = json!(text);
    }
    Ok(obj)
}

/// Runs the command.
pub fn run(mut args: Args) -> Result<()> {
    device(args.compute.device)?;
    let cfg = ModelConfig::from_path(&args.model)?;
    args.compute.mode = args.compute.mode_for(&args.model)?;
    check_sampling(&args)?;
    let tok = load_tokenizer(&args.model)?;
    let prompts = tokenize(read_prompts(&args)?, tok.as_ref(), &cfg, &args)?;
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let (model, vs) = load_model(&args.model, device(args.compute.device)?, args.compute.dtype)?;
    let (completions, secs): (Vec<(usize, Sample)>, f64) = if args.max_new_tokens == 0 {
        let empty = |index| Sample { index, tokens: vec![], finish_reason: FinishReason::Length, prompt_experts: None };
        ((0..prompts.len()).flat_map(|i| (0..args.n).map(move |j| (i, empty(j)))).collect(), 0.0)
    } else {
        // The last pass's time (engine set-up and `--warmup` excluded).
        let (outputs, secs) = generate(&args, &cfg, |config| Engine::new(model, &vs, config), prompts)?;
        (outputs.into_iter().flat_map(|o| o.samples.into_iter().map(move |s| (o.index, s))).collect(), secs)
    };
    let generated: usize = completions.iter().map(|(_, s)| s.tokens.len()).sum();
    for (i, sample) in &completions {
        writeln!(out, "{}", record(*i, sample, tok.as_ref())?)?;
    }
    out.flush()?;
    eprintln!(
        "generated {generated} tokens in {} completions in {secs:.3} s ({:.1} tokens/s)",
        completions.len(),
        generated as f64 / secs.max(1e-9)
    );
    Ok(())
}
