//! Where DSA sparse attention starts to pay on CPU, as the sequence grows: dense vs sparse
//! attention for one training step and for single-token decode, on a random-initialised model.
//!
//! `cargo run --release -p rlvr-trainer --example dsa_crossover -- [--preset small | --config PATH]
//!  [--layers 2] [--lengths 1024,2048,4096,8192] [--repeat 3] [--threads 2] [--mode both]
//!  [--steps 16] [--seed 0] [--mem-gib 12] [--attention both]`
//!
//! - train: one step on a (1, L) random token batch = forward with the LM loss + backward (no
//!   optimizer); the median of `--repeat` timed steps after one warm-up step.
//! - decode: L random tokens prefilled into a one-slot [`KvCache`] of capacity L + 64 (in chunks of
//!   [`PREFILL_CHUNK`], so prefill memory stays linear in L), then single-token
//!   `forward_cached` steps (absorbed MLA); the median ms of `--steps` timed steps after one warm-up.
//!
//! `--attention dense` (or `sparse`) runs one side only, the other's cells left empty.
//!
//! Dense and sparse steps alternate (dense, sparse, dense, …), so on a shared machine both see the
//! same load and their ratio stays meaningful when the absolute times do not.
//!
//! Dense attention scores every causal key: O(L²·H·(d_nope + d_rope)) per layer in training and
//! O(L·H·d_c) per decoded token. DSA adds the lightning indexer, O(L²·H_I·d_I) with small H_I·d_I
//! and no gradient, and attends to `index_topk` keys per query, O(L·k·H·d_c). Before a cell runs its
//! memory is estimated ([`train_bytes`], [`decode_bytes`]); one over `--mem-gib` prints a skip line
//! instead of running. Every timed step, and each benchmark's peak RSS beside its estimate, goes to
//! stderr.
//!
//! Left out: the optimizer step, batches above one sequence, bf16 and GPUs, the indexer losses of
//! the DSA training stages, and prefill timing.

use anyhow::{bail, Context, Result};
use rlvr_model::checkpoint::init_tensors;
use rlvr_model::{AttentionMode, DeepseekV32, ForwardOptions, KvCache, ModelConfig};
use rlvr_trainer::recipe::find_preset;
use std::path::PathBuf;
use std::time::Instant;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// Tokens per prefill call of the decode benchmark.
const PREFILL_CHUNK: i64 = 1024;

/// Cache room beyond the context, for the decode steps.
const DECODE_ROOM: i64 = 64;

const GIB: f64 = (1u64 << 30) as f64;

/// Which benchmarks run.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Bench {
    Train,
    Decode,
    Both,
}

/// The command line.
#[derive(Debug)]
struct Args {
    /// A preset name or a config path (file or model directory).
    source: String,
    layers: usize,
    lengths: Vec<i64>,
    repeat: usize,
    threads: i32,
    bench: Bench,
    steps: usize,
    seed: u64,
    mem_gib: f64,
    /// The one attention mode to run (`None`: both).
    attention: Option<AttentionMode>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        source: "small".into(),
        layers: 2,
        lengths: vec![1024, 2048, 4096, 8192],
        repeat: 3,
        threads: 2,
        bench: Bench::Both,
        steps: 16,
        seed: 0,
        mem_gib: 12.0,
        attention: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| anyhow::anyhow!("{flag} {value}: {e}");
        match flag.as_str() {
            "--preset" | "--config" => a.source = value.clone(),
            "--layers" => a.layers = value.parse().map_err(|e| bad(&e))?,
            "--lengths" => {
                a.lengths = value.split(',').map(|l| l.trim().parse()).collect::<Result<_, _>>().map_err(|e| bad(&e))?
            }
            "--repeat" => a.repeat = value.parse().map_err(|e| bad(&e))?,
            "--threads" => a.threads = value.parse().map_err(|e| bad(&e))?,
            "--steps" => a.steps = value.parse().map_err(|e| bad(&e))?,
            "--seed" => a.seed = value.parse().map_err(|e| bad(&e))?,
            "--mem-gib" => a.mem_gib = value.parse().map_err(|e| bad(&e))?,
            "--attention" if value == "both" => a.attention = None,
            "--attention" => a.attention = Some(value.parse().map_err(|e: String| bad(&e))?),
            "--mode" => {
                a.bench = match value.as_str() {
                    "train" => Bench::Train,
                    "decode" => Bench::Decode,
                    "both" => Bench::Both,
                    _ => bail!("--mode {value}: expected train, decode or both"),
                }
            }
            _ => bail!("unknown flag {flag} (see the header of trainer/examples/dsa_crossover.rs)"),
        }
    }
    if a.layers == 0 || a.repeat == 0 || a.steps == 0 || a.threads <= 0 || a.lengths.iter().any(|&l| l < 2) {
        bail!("--layers, --repeat, --steps and --threads must be positive and every length at least 2");
    }
    Ok(a)
}

/// The preset's or file's config with `num_hidden_layers` overridden (MTP off).
fn load_config(args: &Args) -> Result<ModelConfig> {
    let path = match find_preset(&args.source) {
        Some(dir) => dir,
        None => PathBuf::from(&args.source),
    };
    let mut cfg = ModelConfig::from_path(&path).with_context(|| format!("no preset or config `{}`", args.source))?;
    cfg.num_hidden_layers = args.layers;
    cfg.num_nextn_predict_layers = 0;
    cfg.validate()?;
    Ok(cfg)
}

/// The model in f32 on the CPU, every tensor from `init_tensors(cfg, seed)`.
fn build_model(cfg: &ModelConfig, seed: u64) -> Result<(VarStore, DeepseekV32)> {
    let vs = VarStore::new(Device::Cpu);
    let model = DeepseekV32::new(&vs.root(), cfg)?;
    let vars = vs.variables();
    let tensors = init_tensors(cfg, seed, Kind::Float)?;
    tch::no_grad(|| {
        for (name, t) in &tensors {
            if let Some(var) = vars.get(name) {
                var.shallow_clone().copy_(t);
            }
        }
    });
    Ok((vs, model))
}

/// `n` random token ids (1, n), seeded by (seed, length, purpose).
fn tokens(cfg: &ModelConfig, seed: u64, length: i64, purpose: u64, n: i64) -> Tensor {
    tch::manual_seed((seed ^ ((length as u64) << 8) ^ purpose) as i64);
    Tensor::randint(cfg.vocab_size as i64, [1, n], (Kind::Int64, Device::Cpu))
}

fn median(xs: &[f64]) -> f64 {
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Resets the process's peak RSS (Linux `clear_refs` 5); a no-op where unsupported.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The process's peak RSS since the last reset (`VmHWM`), in bytes.
fn peak_rss() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kb.unwrap_or(0.0) * 1024.0
}

/// Resident bytes before any cell: libtorch's runtime and allocator slack (measured: ~0.35 GiB).
const BASE_BYTES: f64 = 0.35 * GIB;

/// Rough peak bytes of one training step at length `l`, from the shapes the forward materialises.
///
/// Dense: per layer, the fused attention (`scaled_dot_product_attention`) keeps its (L, H, w) f32
/// keys, zero-padded values and output (w = the wider head size), and the layer being
/// differentiated holds their gradients; besides, ~23k floats per token and layer of what the
/// step keeps that the shared per-token term below undercounts (fitted to the dense peak RSS at
/// 4K–16K: 1.71, 2.88, 5.00 GiB; the (H, L, L) blocks the dense path kept before hid it). Sparse
/// (L > k): the indexer's (L, L) f32 scores, masked copy and mask (no gradient), the gathered
/// (L, k, C + d_rope) latent per layer kept for backward, and one row block of it and its gradient
/// in flight. Both: ~2 V-wide rows per token for the logits, ~2k floats per token per layer of other
/// activations, parameters ×4 (weights, gradients, init copies). Checked against peak RSS at
/// L = 1k–4k on `small` with 2 layers (within ~10 %).
fn train_bytes(cfg: &ModelConfig, l: i64, mode: AttentionMode) -> f64 {
    let (l, n) = (l as f64, cfg.num_hidden_layers as f64);
    let h = cfg.num_attention_heads as f64;
    let k = cfg.index_topk as f64;
    let (c, latent) = (cfg.kv_lora_rank as f64, (cfg.kv_lora_rank + cfg.qk_rope_head_dim) as f64);
    let w = (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim).max(cfg.v_head_dim) as f64;
    let dense = (n + 1.0) * 4.0 * l * h * 3.0 * w + n * 4.0 * l * 23_000.0;
    // The masked-dense route of `absorbed_gathered` (S ≤ 4k, H·L² ≤ 2^27) costs what dense does.
    let masked_dense = l <= 4.0 * k && h * l * l <= (1u64 << 27) as f64;
    let attention = match mode {
        AttentionMode::Dense => dense,
        AttentionMode::Sparse if l <= k => dense,
        AttentionMode::Sparse if masked_dense => dense + 9.0 * l * l,
        AttentionMode::Sparse => {
            let rows = l.min((1u64 << 27) as f64 / (k * c)); // the gather's row block
            9.0 * l * l + n * l * k * (latent + 3.0 * h) * 4.0 + 2.0 * rows * k * latent * 4.0
        }
    };
    let per_token = 4.0 * (2.0 * cfg.vocab_size as f64 + n * 2000.0);
    BASE_BYTES + attention + l * per_token + 4.0 * 4.0 * params(cfg)
}

/// Bytes of one cache slot of capacity `l` + [`DECODE_ROOM`].
fn cache_bytes(cfg: &ModelConfig, l: i64) -> f64 {
    let per_token = cfg.kv_lora_rank + cfg.qk_rope_head_dim + cfg.index_head_dim;
    (cfg.num_hidden_layers * per_token) as f64 * (l + DECODE_ROOM) as f64 * 4.0
}

/// Rough peak bytes of the decode benchmark at context `l` besides its caches: one prefill chunk's
/// dense attention (its (chunk, L) causal mask as bool and f32, every key and value up-projected
/// per head: (L, H, d_nope + d_v) and the fused kernel's (L, H, w) keys and padded values), or
/// its indexer scores and gathered latent.
fn decode_bytes(cfg: &ModelConfig, l: i64, mode: AttentionMode) -> f64 {
    let (l, c) = ((l + DECODE_ROOM) as f64, PREFILL_CHUNK as f64);
    let h = cfg.num_attention_heads as f64;
    let latent = (cfg.kv_lora_rank + cfg.qk_rope_head_dim) as f64;
    let attention = match mode {
        AttentionMode::Dense => {
            let (dn, dv) = (cfg.qk_nope_head_dim as f64, cfg.v_head_dim as f64);
            let w = (dn + cfg.qk_rope_head_dim as f64).max(dv);
            5.0 * c * l + 4.0 * l * h * (dn + dv + 2.0 * w)
        }
        AttentionMode::Sparse => 9.0 * 4.0 * c * l + 2.0 * c * cfg.index_topk as f64 * latent * 4.0,
    };
    BASE_BYTES + attention + c * 4.0 * 2.0 * cfg.vocab_size as f64 + 4.0 * params(cfg)
}

/// Parameters of the (layer-overridden) model.
fn params(cfg: &ModelConfig) -> f64 {
    rlvr_model::ParamCounts::of(cfg).total as f64
}

/// Runs `step(i)` for modes `0..n` in turn, one warm-up round and then `rounds` timed rounds, so
/// every mode sees the same share of a shared machine's load: the timed values per mode.
fn interleaved(n: usize, rounds: usize, mut step: impl FnMut(usize) -> f64) -> Vec<Vec<f64>> {
    let mut times = vec![Vec::with_capacity(rounds); n];
    for round in 0..=rounds {
        for (i, t) in times.iter_mut().enumerate() {
            let secs = step(i);
            if round > 0 {
                t.push(secs);
            }
        }
    }
    times
}

/// Seconds per training step at length `l`, per mode.
fn time_train(
    model: &DeepseekV32,
    vs: &VarStore,
    cfg: &ModelConfig,
    args: &Args,
    l: i64,
    modes: &[AttentionMode],
) -> Vec<Vec<f64>> {
    let batch = tokens(cfg, args.seed, l, 1, l); // (1, L)
    interleaved(modes.len(), args.repeat, |i| {
        let start = Instant::now();
        let out = model.run(&batch, ForwardOptions::new(modes[i]));
        out.lm_loss(&batch).backward();
        let secs = start.elapsed().as_secs_f64();
        drop(out);
        for mut var in vs.trainable_variables() {
            var.zero_grad();
        }
        secs
    })
}

/// Milliseconds per decoded token after an L-token prefill, per mode (one cache each, the same
/// tokens).
fn time_decode(model: &DeepseekV32, cfg: &ModelConfig, args: &Args, l: i64, modes: &[AttentionMode]) -> Vec<Vec<f64>> {
    let prompt = tokens(cfg, args.seed, l, 2, l); // (1, L)
    let next = tokens(cfg, args.seed, l, 3, args.steps as i64 + 1); // (1, steps + 1)
    tch::no_grad(|| {
        let mut caches: Vec<KvCache> = modes
            .iter()
            .map(|&mode| {
                let mut cache = KvCache::new(cfg, 1, (l + DECODE_ROOM) as usize, Kind::Float, Device::Cpu);
                for start in (0..l).step_by(PREFILL_CHUNK as usize) {
                    let chunk = prompt.narrow(1, start, PREFILL_CHUNK.min(l - start)); // (1, ≤ chunk)
                    let _ = model.forward_cached(&chunk, &mut cache, &[0], mode);
                }
                cache
            })
            .collect();
        interleaved(modes.len(), args.steps, |i| {
            let done = caches[i].len(0) as i64 - l; // decode steps this cache has taken
            let start = Instant::now();
            let _ = model.forward_cached(&next.narrow(1, done, 1), &mut caches[i], &[0], modes[i]); // (1, 1, V)
            start.elapsed().as_secs_f64() * 1e3
        })
    })
}

/// One measured (or skipped) cell of the table.
type Cell = Option<f64>;

/// Times the modes whose memory estimate fits the budget (a skip line for the others) with
/// `time`; logs the timings and the peak RSS beside the estimate to stderr.
fn bench_pair(
    args: &Args,
    what: &str,
    l: i64,
    estimates: [f64; 2],
    extra: f64,
    time: impl FnOnce(&[AttentionMode]) -> Vec<Vec<f64>>,
) -> [Cell; 2] {
    let modes = [AttentionMode::Dense, AttentionMode::Sparse];
    let names = ["dense", "sparse"];
    let asked: Vec<usize> = (0..2).filter(|&i| args.attention.is_none_or(|m| m == modes[i])).collect();
    let runs: Vec<usize> = asked.iter().copied().filter(|&i| estimates[i] + extra <= args.mem_gib * GIB).collect();
    for i in asked.into_iter().filter(|i| !runs.contains(i)) {
        let need = (estimates[i] + extra) / GIB;
        println!(
            "skip: {what} {} L={l}: needs ~{need:.1} GiB by estimate, over the {} GiB budget (--mem-gib)",
            names[i], args.mem_gib
        );
    }
    let mut out = [None; 2];
    if runs.is_empty() {
        return out;
    }
    reset_peak_rss();
    let run_modes: Vec<AttentionMode> = runs.iter().map(|&i| modes[i]).collect();
    let values = time(&run_modes);
    let estimate = runs.iter().map(|&i| estimates[i]).fold(0.0, f64::max) + extra;
    for (&i, v) in runs.iter().zip(&values) {
        let each: Vec<String> = v.iter().map(|x| format!("{x:.3}")).collect();
        eprintln!("# {what} {} L={l}: median {:.4} of [{}]", names[i], median(v), each.join(", "));
        out[i] = Some(median(v));
    }
    eprintln!("# {what} L={l}: peak RSS {:.2} GiB (estimate {:.2} GiB)", peak_rss() / GIB, estimate / GIB);
    out
}

/// Runs the cells of one length: (train dense, train sparse, decode dense, decode sparse).
fn measure(model: &DeepseekV32, vs: &VarStore, cfg: &ModelConfig, args: &Args, l: i64) -> [Cell; 4] {
    let (dense, sparse) = (AttentionMode::Dense, AttentionMode::Sparse);
    let mut out = [None; 4];
    if args.bench != Bench::Decode {
        let est = [train_bytes(cfg, l, dense), train_bytes(cfg, l, sparse)];
        let [d, s] = bench_pair(args, "train", l, est, 0.0, |m| time_train(model, vs, cfg, args, l, m));
        (out[0], out[1]) = (d, s);
    }
    let max = cfg.max_position_embeddings as i64;
    if args.bench != Bench::Train && l + args.steps as i64 + 1 > max {
        println!("skip: decode L={l}: the decode steps would pass max_position_embeddings {max}");
    } else if args.bench != Bench::Train {
        let est = [decode_bytes(cfg, l, dense), decode_bytes(cfg, l, sparse)];
        let caches = 2.0 * cache_bytes(cfg, l);
        let [d, s] = bench_pair(args, "decode", l, est, caches, |m| time_decode(model, cfg, args, l, m));
        (out[2], out[3]) = (d, s);
    }
    out
}

fn show(c: Cell, digits: usize) -> String {
    c.map_or("skipped".into(), |v| format!("{v:.digits$}"))
}

fn ratio(dense: Cell, sparse: Cell) -> Cell {
    Some(sparse? / dense?)
}

/// The smallest measured length where sparse beats dense, noting any longer length where it does
/// not.
fn crossover(rows: &[(i64, Cell)]) -> String {
    let measured: Vec<(i64, f64)> = rows.iter().filter_map(|&(l, r)| Some((l, r?))).collect();
    let Some(pos) = measured.iter().position(|&(_, r)| r < 1.0) else {
        return "not within the measured range".into();
    };
    let (l, r) = measured[pos];
    let later: Vec<String> = measured[pos..].iter().filter(|&&(_, r)| r >= 1.0).map(|(l, _)| l.to_string()).collect();
    let mut s = format!("L = {l} (sparse/dense {r:.2})");
    if !later.is_empty() {
        s += &format!(", though not at L = {}", later.join(", "));
    }
    s
}

fn print_table(results: &[(i64, [Cell; 4])]) {
    println!();
    println!(
        "| L | train dense s | train sparse s | sparse/dense | decode dense ms | decode sparse ms | sparse/dense |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (l, [td, ts, dd, ds]) in results {
        let (rt, rd) = (ratio(*td, *ts), ratio(*dd, *ds));
        println!(
            "| {l} | {} | {} | {} | {} | {} | {} |",
            show(*td, 3),
            show(*ts, 3),
            show(rt, 2),
            show(*dd, 2),
            show(*ds, 2),
            show(rd, 2)
        );
    }
    let train: Vec<(i64, Cell)> = results.iter().map(|(l, c)| (*l, ratio(c[0], c[1]))).collect();
    let decode: Vec<(i64, Cell)> = results.iter().map(|(l, c)| (*l, ratio(c[2], c[3]))).collect();
    println!();
    println!("crossover, train: {}", crossover(&train));
    println!("crossover, decode: {}", crossover(&decode));
}

fn main() -> Result<()> {
    let args = parse_args()?;
    tch::set_num_threads(args.threads);
    let cfg = load_config(&args)?;
    let (vs, model) = build_model(&cfg, args.seed)?;
    println!(
        "# dsa_crossover: {} with {} layers, hidden {}, {} heads, kv_lora_rank {}, index {}×{}, index_topk {}; \
         f32 CPU, {} threads, seed {}, train median of {}, decode median of {} steps",
        args.source,
        cfg.num_hidden_layers,
        cfg.hidden_size,
        cfg.num_attention_heads,
        cfg.kv_lora_rank,
        cfg.index_n_heads,
        cfg.index_head_dim,
        cfg.index_topk,
        tch::get_num_threads(),
        args.seed,
        args.repeat,
        args.steps
    );
    let results: Vec<(i64, [Cell; 4])> =
        args.lengths.iter().map(|&l| (l, measure(&model, &vs, &cfg, &args, l))).collect();
    print_table(&results);
    Ok(())
}
