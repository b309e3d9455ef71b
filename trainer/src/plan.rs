//! The memory plan of a recipe (`rlvr plan`, and the check `rlvr train` makes before any work):
//! bytes per device of every phase of the run, from the model's shapes and the recipe's sizes.
//!
//! Each training stage is one phase, priced at its training step: the weights (the policy's own
//! parameters, the MTP module carried in f32 when not trained), the trainable set's gradients,
//! AdamW's two moments and the f32 master copies (a 1/world slice each when the optimizer is
//! sharded), the activations of one micro-batch at the stage's longest sequence, and for GRPO the
//! rollout engine beside it (its copy of the main model and its KV caches, held through the stage:
//! the train ↔ generate switch), the KL reference, and the keep-sampling-mask records (their upper
//! bound: see [`kept_set_bytes`]). An eval is its engine. The peak is the
//! largest phase plus the runtime (libtorch as loaded, and on CUDA its context).
//!
//! The activation model counts what the forward materialises per token and layer (projections,
//! norms, attention outputs, expert inputs and outputs), twice (kept for backward, and the
//! gradients in flight of the layer being differentiated), plus the attention blocks: dense (fused
//! `scaled_dot_product_attention`) keeps its keys, padded values and output, O(T) per head, with
//! their gradients in flight; sparse (T > top-k) the gathered (T, k, C + d_rope) latent per layer,
//! with one row block of the indexer's selection and the latent's gradient in flight. With layer
//! checkpointing
//! only each layer's input is kept, and one layer is recomputed at a time. The figures are
//! estimates: `docs/architecture.md` lists how far they were from measured peak RSS.

use crate::data::Dataset;
use crate::recipe::{Recipe, RolloutBackend, Stage};
use anyhow::Result;
use rlvr_model::spec::{main_tensors, mtp_tensors, Part, TensorSpec};
use rlvr_model::{AttentionMode, Dtype, ModelConfig};
use serde::Serialize;

/// Longest prompt the rollout engine is sized for (the trainer's sampler).
const MAX_PROMPT: usize = crate::sampler::MAX_PROMPT_TOKENS;

/// Bytes of one phase on one device.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Phase {
    /// The stage it prices (`name (kind)`).
    pub phase: String,
    /// The policy's parameters (and the carried MTP module).
    pub weights: f64,
    /// f32 master copies of the trainable parameters (bf16 runs with `run.master_weights`).
    pub master: f64,
    /// Gradients of the trainable parameters.
    pub gradients: f64,
    /// AdamW's two moments.
    pub optimizer: f64,
    /// Activations of one micro-batch, everything kept for backward.
    pub activations: f64,
    /// The same with layer checkpointing (each layer's input kept, one layer recomputed at a time).
    pub activations_checkpointed: f64,
    /// The rollout engine's copy of the main model.
    pub engine_weights: f64,
    /// The rollout engine's KV caches (every slot at full length).
    pub kv_cache: f64,
    /// The KL reference model of a GRPO stage.
    pub reference: f64,
    /// A GRPO stage's keep-sampling-mask records, at most: every token's kept set in the step's
    /// rollout rows, the micro-batch's compressed copy, and one chunk of the mask on the device.
    pub kept_sets: f64,
    /// The sum, with the activations the run keeps (checkpointed or not).
    pub total: f64,
}

/// A recipe's plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Devices the run is planned for (data parallel ranks).
    pub world: usize,
    /// Where the run computes (`cpu` or `cuda`).
    pub device: String,
    /// Resident bytes of the runtime before any model is built.
    pub runtime_bytes: f64,
    /// Whether the run checkpoints activations (`run.activation_checkpointing = "layer"`): each
    /// phase's total then counts the checkpointed activations.
    pub checkpointing: bool,
    /// Every phase.
    pub phases: Vec<Phase>,
    /// The largest phase plus the runtime.
    pub peak_bytes: f64,
    /// That phase.
    pub peak_phase: String,
    /// The same peak with layer checkpointing.
    pub peak_bytes_checkpointed: f64,
    /// Rollout servers the run spawns on this host (`[rollout] spawn` with the service backend).
    pub servers: usize,
    /// Peak bytes of each (runtime, the model, KV caches for every slot).
    pub server_bytes: f64,
}

/// Bytes of elements of the model's tensors in `dtype` (the kept-in-f32 ones in f32).
fn tensor_bytes(tensors: &[TensorSpec], dtype: Dtype) -> f64 {
    let low = if dtype == Dtype::F32 { 4.0 } else { 2.0 };
    tensors
        .iter()
        .map(|t| {
            let f32_kept = rlvr_model::device::KEEP_F32.iter().any(|k| t.name.contains(k));
            t.numel() as f64 * if f32_kept { 4.0 } else { low }
        })
        .sum()
}

/// Floats a forward materialises per token in one decoder layer besides the attention blocks.
fn floats_per_token(cfg: &ModelConfig, layer: usize) -> f64 {
    let d = cfg.hidden_size as f64;
    let h = cfg.num_attention_heads as f64;
    let (dn, dr, dv) = (cfg.qk_nope_head_dim as f64, cfg.qk_rope_head_dim as f64, cfg.v_head_dim as f64);
    let c = cfg.kv_lora_rank as f64;
    let q = cfg.q_lora_rank.map_or(0.0, |r| 2.0 * r as f64) + h * (dn + dr);
    // Norm in, query path, KV latent and its norm, keys and values, rope copies, output, residual.
    let attention = d + q + (c + dr) + c + h * (dn + dv) + 2.0 * h * dr + h * (dn + dr) + h * dv + 2.0 * d;
    let indexer = match cfg.has_indexer() {
        true => (cfg.index_n_heads * cfg.index_head_dim + cfg.index_head_dim + cfg.index_n_heads) as f64,
        false => 0.0,
    };
    let mlp = if cfg.is_moe_layer(layer) {
        let (e, k, i) = (cfg.n_routed_experts as f64, cfg.num_experts_per_tok as f64, cfg.moe_intermediate_size as f64);
        let shared = cfg.n_shared_experts as f64 * 4.0 * i;
        d + 3.0 * e + k * (2.0 * d + 4.0 * i) + shared + 2.0 * d
    } else {
        d + 4.0 * cfg.intermediate_size as f64 + 2.0 * d
    };
    attention + indexer + mlp
}

/// Activation bytes of one training micro-batch of `rows` sequences of `t` tokens: (plain,
/// checkpointed).
fn activation_bytes(cfg: &ModelConfig, layers: usize, rows: usize, t: usize, mode: AttentionMode) -> (f64, f64) {
    let (b, t) = (rows as f64, t as f64);
    let h = cfg.num_attention_heads as f64;
    let k = cfg.index_topk as f64;
    let latent = (cfg.kv_lora_rank + cfg.qk_rope_head_dim) as f64;
    let (dq, dv) = ((cfg.qk_nope_head_dim + cfg.qk_rope_head_dim) as f64, cfg.v_head_dim as f64);
    // Fused attention keeps its (T, H, w) keys, zero-padded values and output (w = the wider head
    // size); the backward's query, key and value gradients are in flight.
    let fused = 4.0 * t * h * 3.0 * dq.max(dv);
    let sparse = mode == AttentionMode::Sparse && cfg.has_indexer() && t > k;
    // Short key sets attend densely under the selection mask (the engine's masked-dense route).
    let masked_dense = sparse && t <= 4.0 * k && h * t * t <= (1u64 << 27) as f64;
    // The indexer's selection runs without autograd in row blocks of at most 2^26 per-head scores:
    // one block's per-head ReLU scores, then their head sum, its sort and mask, in flight.
    let heads = cfg.index_n_heads.max(1) as f64;
    let per_head = (t * t * heads).min((1u64 << 26) as f64);
    let selection = 4.0 * per_head + 3.0 * 4.0 * per_head / heads;
    // Kept per layer, and in flight for the layer being computed or differentiated.
    let (kept, flight) = match (sparse, masked_dense) {
        (false, _) => (fused, fused),
        // The selection mask kept as bool and as the f32 mask the fused kernel reads; its i32
        // counts in flight.
        (true, true) => (fused + 5.0 * t * t, fused + 4.0 * t * t + selection),
        // The gathered (T, k, C + d_rope) latent and (T, H, k) scores kept; in flight the
        // selection block and the gathered latent's gradient.
        (true, false) => (4.0 * t * k * (latent + 3.0 * h), selection + 4.0 * t * k * latent),
    };
    let per_layer: Vec<f64> = (0..layers).map(|l| 2.0 * 4.0 * t * floats_per_token(cfg, l) + kept).collect();
    // The head: logits, log-softmax and their gradient over the vocabulary.
    let head = 3.0 * 4.0 * t * cfg.vocab_size as f64;
    let all: f64 = per_layer.iter().sum();
    let widest = per_layer.iter().copied().fold(0.0, f64::max);
    let inputs = layers as f64 * 4.0 * t * cfg.hidden_size as f64;
    (b * (all + flight + head), b * (inputs + widest + flight + head))
}

/// Bytes of the KV caches of `slots` sequences of up to `capacity` tokens.
fn cache_bytes(cfg: &ModelConfig, slots: usize, capacity: usize, dtype: Dtype) -> f64 {
    rlvr_model::KvCache::bytes(cfg, slots, capacity, dtype.kind()) as f64
}

/// Bytes of a GRPO step's kept sets (keep sampling mask), at most: each of the `step_rows` rows'
/// `max_tokens` completion tokens keeps `min(top_k, V)` ids, or up to the whole vocabulary under
/// top-p or min-p alone (8 bytes an id); a micro-batch of `rows` rows of `t` positions holds a
/// compressed copy (its ids and an offset per position), and the loss head one (rows, V) chunk of
/// the mask in the logits' dtype ([`rlvr_model::vocab_mask::MASK_CHUNK_ELEMENTS`]). None when the
/// mask is off or nothing is truncated.
fn kept_set_bytes(cfg: &ModelConfig, recipe: &Recipe, step_rows: usize, rows: usize, t: usize, dtype: Dtype) -> f64 {
    let s = &recipe.rollout.sampling;
    if !recipe.algorithm.keep_sampling_mask || s.temperature <= 0.0 || s.truncation().is_off() {
        return 0.0;
    }
    let v = cfg.vocab_size as f64;
    let width = if s.top_k > 0 { v.min(s.top_k as f64) } else { v };
    let tokens = |rows: usize| (rows * s.max_tokens) as f64;
    let low = if dtype == Dtype::F32 { 4.0 } else { 2.0 };
    let chunk = (rlvr_model::vocab_mask::MASK_CHUNK_ELEMENTS as f64).min((rows * t) as f64 * v);
    8.0 * width * (tokens(step_rows) + tokens(rows)) + 8.0 * (rows * t + 1) as f64 + low * chunk
}

/// The tensors a stage trains.
fn trainable(cfg: &ModelConfig, stage: &Stage, rollout: AttentionMode, mtp: &[TensorSpec]) -> Vec<TensorSpec> {
    let rule = crate::policy::stage_rule(stage, rollout);
    let mtp_names: Vec<&str> = mtp.iter().map(|t| t.name.as_str()).collect();
    main_tensors(cfg)
        .into_iter()
        .chain(mtp.iter().cloned())
        .filter(|t| !t.name.ends_with("e_score_correction_bias"))
        .filter(|t| crate::policy::stage_trains(rule, t.part == Part::Indexer, mtp_names.contains(&t.name.as_str())))
        .collect()
}

/// The longest prompt, and prompt + reference, of the data in characters (an upper bound of
/// their tokens, plus one for `bos`): every held-out problem and the training rows (up to 100 000;
/// the first 1 000 of a generated task).
fn longest_texts(data: &Dataset) -> (usize, usize) {
    let rows = data.train_len().map_or(1_000, |n| n.min(100_000)) as u64;
    let problems = (0..rows).map(|r| data.train(r)).chain(data.held_out().iter().cloned());
    problems.fold((0, 0), |(p, t), x| {
        let prompt = x.prompt.chars().count() + 1;
        (p.max(prompt), t.max(prompt + x.reference.as_deref().map_or(0, |r| r.chars().count())))
    })
}

/// The longest sequence a stage trains on: its `seq_len`; for SFT the longest prompt and
/// reference of the data; for GRPO the longest prompt (at most the engine's limit) plus
/// `max_tokens`.
fn longest(stage: &Stage, recipe: &Recipe, (prompt, text): (usize, usize)) -> usize {
    let prompt = prompt.min(MAX_PROMPT);
    match stage {
        Stage::Pretrain(s) => s.seq_len,
        Stage::IndexerWarmup(s) => s.seq_len,
        Stage::SparseTrain(s) => s.seq_len,
        Stage::Sft(_) => text,
        Stage::Grpo(_) | Stage::Eval(_) => prompt + recipe.rollout.sampling.max_tokens,
    }
}

/// The plan of `recipe` on `world` devices of `device` (`cpu` or `cuda`), with `runtime_bytes`
/// already resident; `data` gives the longest prompts and the held-out problems.
pub fn plan(recipe: &Recipe, world: usize, device: &str, runtime_bytes: f64, data: &Dataset) -> Result<Plan> {
    let source = recipe.model.model_config()?;
    let cfg = match &recipe.model.add_indexer {
        Some(add) if source.family() == rlvr_model::Family::V3 => {
            rlvr_model::convert::v32_config(&source, &add.spec())?
        }
        _ => source,
    };
    let dtype = recipe.run.dtype;
    let world = world.max(1);
    let shard = if world > 1 && recipe.run.shard_optimizer { world as f64 } else { 1.0 };
    let main = main_tensors(&cfg);
    let mtp = mtp_tensors(&cfg);
    let trained_mtp: &[TensorSpec] = if recipe.model.mtp { &mtp } else { &[] };
    let carried = if recipe.model.mtp { 0.0 } else { tensor_bytes(&mtp, Dtype::F32) };
    let weights = tensor_bytes(&main, dtype) + tensor_bytes(trained_mtp, dtype) + carried;
    let engine_weights = tensor_bytes(&main, dtype);
    let layers = cfg.num_hidden_layers + if recipe.model.mtp { cfg.num_nextn_predict_layers } else { 0 };
    let r = &recipe.rollout;
    let checkpointing = recipe.run.activation_checkpointing == rlvr_model::Checkpointing::Layer;
    let texts = longest_texts(data);
    let mut phases = Vec::new();
    for stage in &recipe.stages {
        let mut p = Phase { phase: format!("{} ({})", stage.name(), stage.kind()), weights, ..Phase::default() };
        let t = longest(stage, recipe, texts);
        let capacity = (MAX_PROMPT + r.sampling.max_tokens).min(cfg.max_position_embeddings);
        match stage {
            Stage::Eval(e) => {
                let held_out = data.held_out().len();
                let problems = e.max_problems.map_or(held_out, |m| m.min(held_out)).div_ceil(world);
                let slots = crate::stages::eval::eval_slots(problems, e.samples);
                p.engine_weights = engine_weights;
                p.kv_cache = cache_bytes(&cfg, slots, capacity, dtype);
            }
            _ => {
                let train = trainable(&cfg, stage, r.attention, trained_mtp);
                let n: f64 = train.iter().map(|t| t.numel() as f64).sum();
                p.gradients = tensor_bytes(&train, dtype);
                p.optimizer = 8.0 * n / shard;
                if dtype != Dtype::F32 && recipe.run.master_weights {
                    p.master = 4.0 * n / shard;
                }
                let (rows, mode) = match stage {
                    Stage::Grpo(_) => {
                        let a = &recipe.algorithm;
                        let batch = (r.prompts_per_step * r.group_size).div_ceil(a.minibatches.max(1));
                        let share = batch.div_ceil(world);
                        (if a.micro_batch > 0 { a.micro_batch.min(share) } else { share }, r.attention)
                    }
                    Stage::Pretrain(s) => (s.batch_size.div_ceil(world), s.attention),
                    Stage::Sft(s) => (s.batch_size.div_ceil(world), s.attention),
                    Stage::IndexerWarmup(s) => (s.batch_size.div_ceil(world), AttentionMode::Dense),
                    Stage::SparseTrain(s) => (s.batch_size.div_ceil(world), AttentionMode::Sparse),
                    Stage::Eval(_) => unreachable!("priced above"),
                };
                (p.activations, p.activations_checkpointed) = activation_bytes(&cfg, layers, rows, t, mode);
                if let Stage::Grpo(_) = stage {
                    // With rollout servers the engine lives in their processes, not here.
                    if r.backend == RolloutBackend::Local {
                        p.engine_weights = engine_weights;
                        p.kv_cache = cache_bytes(&cfg, r.effective_slots().div_ceil(world).max(1), capacity, dtype);
                    }
                    if recipe.algorithm.loss.kl().is_some() {
                        p.reference = engine_weights;
                    }
                    let step_rows = (r.prompts_per_step * r.group_size).div_ceil(world);
                    p.kept_sets = kept_set_bytes(&cfg, recipe, step_rows, rows, t, dtype);
                }
            }
        }
        let kept = if checkpointing { p.activations_checkpointed } else { p.activations };
        p.total = p.weights
            + p.master
            + p.gradients
            + p.optimizer
            + kept
            + p.engine_weights
            + p.kv_cache
            + p.reference
            + p.kept_sets;
        phases.push(p);
    }
    let (peak_phase, top) = phases.iter().map(|p| (p.phase.clone(), p.total)).fold((String::new(), 0.0), |best, x| {
        if x.1 > best.1 {
            x
        } else {
            best
        }
    });
    let plain = |p: &Phase| if checkpointing { p.total - p.activations_checkpointed + p.activations } else { p.total };
    let checkpointed = phases.iter().map(|p| plain(p) - p.activations + p.activations_checkpointed).fold(0.0, f64::max);
    // Each spawned server: the engine the colocated one would be, in its own process with its
    // own runtime.
    let has_grpo = recipe.stages.iter().any(|s| matches!(s, Stage::Grpo(_)));
    let servers = if r.backend == RolloutBackend::Service && has_grpo { r.spawn } else { 0 };
    let capacity = (MAX_PROMPT + r.sampling.max_tokens).min(cfg.max_position_embeddings);
    let server_bytes = match servers {
        0 => 0.0,
        _ => runtime_bytes + engine_weights + cache_bytes(&cfg, r.effective_slots().max(1), capacity, dtype),
    };
    Ok(Plan {
        checkpointing,
        servers,
        server_bytes,
        world,
        device: device.to_string(),
        runtime_bytes,
        phases,
        peak_bytes: top + runtime_bytes,
        peak_phase,
        peak_bytes_checkpointed: checkpointed + runtime_bytes,
    })
}

/// Bytes as a table shows them.
pub fn show_bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

impl Plan {
    /// The plan as a table, one row per phase.
    pub fn table(&self) -> String {
        let mut out = format!(
            "memory plan per device ({} × {}; runtime {}: libtorch alone at its peak, or on CUDA its context):\n",
            self.world,
            self.device,
            show_bytes(self.runtime_bytes)
        );
        let head = [
            "phase",
            "weights",
            "master",
            "grads",
            "adamw",
            "activ.",
            "activ.(ckpt)",
            "engine",
            "kv cache",
            "reference",
            "kept sets",
            "total",
        ];
        let width = self.phases.iter().map(|p| p.phase.len()).max().unwrap_or(5).max(5);
        out.push_str(&format!("{:<width$}", head[0]));
        for h in &head[1..] {
            out.push_str(&format!(" {h:>12}"));
        }
        out.push('\n');
        for p in &self.phases {
            out.push_str(&format!("{:<width$}", p.phase));
            let cells = [
                p.weights,
                p.master,
                p.gradients,
                p.optimizer,
                p.activations,
                p.activations_checkpointed,
                p.engine_weights,
                p.kv_cache,
                p.reference,
                p.kept_sets,
                p.total,
            ];
            for c in cells {
                out.push_str(&format!(" {:>12}", if c == 0.0 { "-".to_string() } else { show_bytes(c) }));
            }
            out.push('\n');
        }
        if self.servers > 0 {
            out.push_str(&format!(
                "rollout servers: {} spawned on this host, {} each (runtime, model, KV caches)\n",
                self.servers,
                show_bytes(self.server_bytes)
            ));
        }
        let how = if self.checkpointing { "the run checkpoints each layer" } else { "with layer checkpointing" };
        out.push_str(&format!(
            "peak: {} at {} ({how}: {})\n",
            show_bytes(self.peak_bytes),
            self.peak_phase,
            show_bytes(self.peak_bytes_checkpointed)
        ));
        out
    }
}

/// A `kB` field of this process's `/proc/self/status` (`VmRSS`, `VmHWM`), in KiB.
pub fn status_kib(field: &str) -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    kib_field(&text, field)
}

/// The value of `field:` in `/proc`-style text whose values are in kB.
fn kib_field(text: &str, field: &str) -> Option<f64> {
    let value = text.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    value.trim().trim_end_matches("kB").trim().parse().ok()
}

/// Resident bytes of this process now (`VmRSS`), the runtime a plan adds to every phase.
pub fn resident_bytes() -> f64 {
    status_kib("VmRSS").map_or(0.0, |kb| kb * 1024.0)
}

/// Resident bytes of the runtime on `device` before any model: on the CPU this process's own
/// (`resident`: libtorch as loaded); on CUDA the context and libtorch's kernel images on the GPU,
/// taken as 512 MiB (an estimate: it varies with the driver and the GPU).
pub fn runtime_bytes(device: &str, resident: f64) -> f64 {
    match device {
        "cpu" => resident,
        _ => 512.0 * 1024.0 * 1024.0,
    }
}

/// This process's resident bytes once libtorch's runtime is up as every run has it: the CUDA probe
/// (`run.device` is checked before any work) and a small forward and backward (matmul,
/// log-softmax: the thread pools and CPU kernels), then `VmRSS`.
pub fn warm_resident_bytes() -> f64 {
    let _ = tch::Cuda::is_available();
    let x = tch::Tensor::ones([64, 64], (tch::Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
    let y = x.matmul(&x).log_softmax(-1, tch::Kind::Float).sum(tch::Kind::Float);
    y.backward();
    resident_bytes()
}

/// Peak resident bytes of a process of this executable that loads libtorch and does nothing
/// (`--version`, run as a child; its `ru_maxrss` from `wait4`): libtorch's runtime at its worst
/// moment, which on the CPU is above what it holds while working (its exit touches more pages).
/// `None` when this executable is not the `rlvr` CLI or the child fails.
pub fn idle_peak_bytes() -> Option<f64> {
    let exe = std::env::current_exe().ok()?;
    if !exe.file_name()?.to_str()?.starts_with("rlvr") {
        return None;
    }
    let child = std::process::Command::new(exe)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: `rusage` is plain data, zero is a valid value; wait4 writes it and reaps the child
    // (whose `Child` handle, dropped after, neither waits nor kills).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    (reaped == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0)
        .then_some(usage.ru_maxrss as f64 * 1024.0)
}

/// `cpu` or `cuda`: where a run with `spec` computes (`auto`: CUDA when libtorch sees a device).
pub fn device_name(spec: rlvr_model::DeviceSpec) -> &'static str {
    match spec {
        rlvr_model::DeviceSpec::Cpu => "cpu",
        rlvr_model::DeviceSpec::Cuda(_) => "cuda",
        rlvr_model::DeviceSpec::Auto if tch::Cuda::is_available() => "cuda",
        rlvr_model::DeviceSpec::Auto => "cpu",
    }
}

/// What a run's plan is checked against before any work: the memory of the device this process
/// computes on, and which of the run's processes on this host draw from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// Bytes the device can still give: the host's `MemAvailable` on the CPU, the GPU's free
    /// bytes (`cudaMemGetInfo`, with this process's CUDA context already counted as used) on CUDA.
    pub available: f64,
    /// Ranks of the run that compute on it: every rank on this host for the CPU, this one for a
    /// GPU (each rank has its own).
    pub ranks: usize,
    /// Whether the rollout servers the run spawns compute on it too (the host's memory on the
    /// CPU; on CUDA when they were given this rank's GPU).
    pub servers: bool,
    /// The device in words, for the messages (`the host`, `CUDA device 1`).
    pub device: String,
    /// Where `available` was read (`MemAvailable`, `cudaMemGetInfo`).
    pub source: &'static str,
}

impl Budget {
    /// The budget of a rank computing on `device` with `local_ranks` ranks of the run on this host,
    /// whose spawned rollout servers (if any) compute on `server_device`; `None` when the device's
    /// free memory cannot be read.
    pub fn of(device: tch::Device, local_ranks: usize, server_device: tch::Device) -> Option<Budget> {
        let available = rlvr_model::device::available_bytes(device)? as f64;
        Some(match device {
            tch::Device::Cuda(index) => Budget {
                available,
                ranks: 1,
                servers: server_device == device,
                device: format!("CUDA device {index}"),
                source: "cudaMemGetInfo",
            },
            _ => Budget::host(available, local_ranks),
        })
    }

    /// The host's memory, `available` bytes, shared by `local_ranks` ranks and the servers.
    pub fn host(available: f64, local_ranks: usize) -> Budget {
        Budget { available, ranks: local_ranks, servers: true, device: "the host".into(), source: "MemAvailable" }
    }

    /// Bytes a run with `plan` still needs from this device beyond what this process holds: the
    /// peak less the runtime (resident already: libtorch on the CPU, the CUDA context on a GPU)
    /// times the ranks on it, and the rollout servers spawned onto it.
    pub fn needed(&self, plan: &Plan) -> f64 {
        let servers = if self.servers { plan.servers as f64 * plan.server_bytes } else { 0.0 };
        (plan.peak_bytes - plan.runtime_bytes) * self.ranks as f64 + servers
    }

    fn fits(&self, plan: &Plan) -> bool {
        self.needed(plan) <= self.available
    }
}

/// Refuses, before any work, a run whose planned peak does not fit the memory of its device
/// (`budget`; nothing is checked without one), with the plan's table.
pub fn check_fits(plan: &Plan, budget: Option<&Budget>) -> Result<()> {
    let Some(budget) = budget else { return Ok(()) };
    if !budget.fits(plan) {
        anyhow::bail!(
            "the run does not fit {}: its planned peak needs {} more per rank × {} rank(s){}, and {} has {} available ({}); shrink a batch or micro_batch, use fewer slots, or turn on layer checkpointing\n{}",
            budget.device,
            show_bytes((plan.peak_bytes - plan.runtime_bytes).max(0.0)),
            budget.ranks,
            match budget.servers && plan.servers > 0 {
                true => format!(" + {} rollout server(s) × {}", plan.servers, show_bytes(plan.server_bytes)),
                false => String::new(),
            },
            budget.device,
            show_bytes(budget.available),
            budget.source,
            plan.table()
        );
    }
    Ok(())
}

/// The micro-batch GRPO runs with, and the plan with it. A recipe's `algorithm.micro_batch` > 0 is
/// kept. 0 (the default) means: the whole minibatch share when the plan fits the device's
/// `budget` (or when nothing is known of it, or the run has no GRPO stage); else the largest of
/// share/2, share/4, …, 1 that fits, said on stderr. When none fits, 0 and the plan at the whole
/// share, which [`check_fits`] then refuses with its table. The micro-batch changes memory and
/// time only: a minibatch's gradient is the same sum however it is split.
pub fn fit_micro_batch(
    recipe: &Recipe,
    world: usize,
    device: &str,
    runtime_bytes: f64,
    data: &Dataset,
    budget: Option<&Budget>,
) -> Result<(usize, Plan)> {
    let whole = plan(recipe, world, device, runtime_bytes, data)?;
    let a = &recipe.algorithm;
    let has_grpo = recipe.stages.iter().any(|s| matches!(s, Stage::Grpo(_)));
    let Some(budget) = budget.filter(|_| a.micro_batch == 0 && has_grpo) else {
        return Ok((a.micro_batch, whole));
    };
    if budget.fits(&whole) {
        return Ok((0, whole));
    }
    let r = &recipe.rollout;
    let share = (r.prompts_per_step * r.group_size).div_ceil(a.minibatches.max(1)).div_ceil(world);
    let mut micro = share / 2;
    while micro >= 1 {
        let mut smaller = recipe.clone();
        smaller.algorithm.micro_batch = micro;
        let p = plan(&smaller, world, device, runtime_bytes, data)?;
        if budget.fits(&p) {
            eprintln!(
                "algorithm.micro_batch: {micro} sequences per backward (the whole minibatch share of {share} would need {} on {}, {} available)",
                show_bytes(budget.needed(&whole) / budget.ranks as f64),
                budget.device,
                show_bytes(budget.available)
            );
            return Ok((micro, p));
        }
        micro /= 2;
    }
    Ok((0, whole))
}
