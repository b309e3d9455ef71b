//! A run as one TOML file (docs/architecture.md §6): the model, the data, the stages in order, and the
//! settings of rollout, verifier, algorithm, optimizer, checkpoints and logging.
//!
//! [`Recipe::load`] reads the file, applies `--set` overrides, rejects unknown keys, fills in the
//! defaults that depend on other keys, and checks everything that can be checked before any work
//! starts; every error names the file, the key, and the line or the `--set` at fault.
//! [`Recipe::to_toml`] writes the resolved recipe that the run directory keeps.
//!
//! Relative paths in a recipe (data files, `model.path`, `run.out`, verifier scripts) are relative
//! to the recipe file's folder (those given by `--set` to the working directory) and are saved
//! absolute (`paths`).

mod error;
mod keys;
mod load;
mod overrides;
mod paths;
mod preset;
mod stage;
mod validate;

pub use error::{At, RecipeError};
pub use paths::{absolute_in, resolve_command};
pub use preset::{find_preset, preset_dirs, resolve_model_arg};
pub use stage::{
    EvalStage, GrpoStage, IndexerWarmupStage, PretrainStage, SftStage, SparseTrainStage, Stage, INDEXER_WARMUP_LR,
    STAGE_KINDS,
};

use crate::data::DataSpec;
use crate::grpo::{AdvantageMode, LossConfig};
use crate::metrics::WandbMode;
use crate::optim::Schedule;
use rlvr_model::{AttentionMode, Checkpointing, DeviceSpec, Dtype};
use rlvr_rollout::engine::{SamplingParams, Sizing};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Name, seed, device and output directory.
    pub run: Run,
    /// The model to train: a preset or an HF model directory.
    pub model: ModelSection,
    /// Where problems come from.
    pub data: DataSpec,
    /// What to do, in order.
    pub stages: Vec<Stage>,
    /// Sampling for GRPO.
    #[serde(default)]
    pub rollout: Rollout,
    /// The reward: one `[verifier]` table (`kind = "math"`, ...), or a weighted list
    /// `[[verifier]]` (each a table plus `weight` and an optional `name`).
    #[serde(default)]
    pub verifier: Verifiers,
    /// The GRPO-family loss.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// AdamW and its schedule.
    #[serde(default)]
    pub optimizer: Optimizer,
    /// When checkpoints are written and how many are kept.
    #[serde(default)]
    pub checkpoint: Checkpoint,
    /// Console, plots and Weights & Biases.
    #[serde(default)]
    pub logging: Logging,
}

/// `[run]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    /// Run name (also the default output directory `runs/<name>`).
    pub name: String,
    /// Seed every random draw of the run derives from.
    #[serde(default)]
    pub seed: u64,
    /// Output directory (default `runs/<name>`; filled in on load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out: Option<PathBuf>,
    /// `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when available).
    #[serde(default)]
    pub device: DeviceSpec,
    /// Parameter dtype.
    #[serde(default)]
    pub dtype: Dtype,
    /// libtorch intra-op threads (0: libtorch's default).
    #[serde(default)]
    pub threads: usize,
    /// Non-finite losses in a row before the run stops.
    #[serde(default = "three")]
    pub max_bad_steps: usize,
    /// Largest share of a GRPO step's verdicts that may be `Error` or `Malformed` (a verifier that
    /// cannot judge, or tasks it cannot read) before the run stops; an eval stops when all are.
    #[serde(default = "half")]
    pub max_verifier_errors: f64,
    /// With `dtype = "bf16"`: step the weights in f32 master copies kept by the optimizer (and
    /// saved in its checkpoint file), rounding them into the bf16 parameters after each step.
    /// `false` steps the bf16 parameters themselves, which loses every update smaller than half a
    /// bf16 ulp of its weight.
    #[serde(default = "yes")]
    pub master_weights: bool,
    /// What every training stage's backward keeps (`rlvr_model::recompute`): `"none"` keeps every
    /// activation; `"layer"` keeps each decoder layer's input, recomputes the layer in the
    /// backward and runs the loss head (log-probs, entropy) in chunks of positions, so the
    /// (B, L, V) log-softmax is never whole. Same gradients to float rounding.
    #[serde(default)]
    pub activation_checkpointing: Checkpointing,
    /// In a multi-process run (torchrun, `--nproc`): shard AdamW's state across the ranks
    /// (ZeRO-2) instead of keeping all of it on every rank.
    #[serde(default = "yes")]
    pub shard_optimizer: bool,
    /// In a multi-process run: seconds a collective may wait for the other ranks before the run
    /// stops with an error naming the rank that did not answer.
    #[serde(default = "five_minutes")]
    pub collective_timeout_s: u64,
    /// In a multi-process run: MiB of gradients reduced per collective (the flat buckets of the
    /// all-reduce or, sharded, of the reduce-scatter).
    #[serde(default = "sixty_four")]
    pub bucket_mb: f64,
    /// libtorch's deterministic algorithms (`torch.use_deterministic_algorithms`, deterministic
    /// cuDNN, `CUBLAS_WORKSPACE_CONFIG=:4096:8` unless set): on CUDA the kernels that accumulate
    /// with float atomics (the sparse attention's backward `scatter_add`, MoE's `index_add`) take
    /// their deterministic paths, so a resumed run ends bit for bit where an uninterrupted one
    /// does. The CPU kernels rlvr uses are deterministic already.
    #[serde(default)]
    pub deterministic: bool,
}

fn sixty_four() -> f64 {
    64.0
}

fn yes() -> bool {
    true
}

fn five_minutes() -> u64 {
    300
}

/// `[model]`: exactly one of `preset` and `path`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    /// A preset under `presets/<name>/config.json`, randomly initialised.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// A Hugging Face model directory (config.json + safetensors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Seed of the random initialisation (default `run.seed`; filled in on load).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_seed: Option<u64>,
    /// Train the multi-token-prediction modules too.
    pub mtp: bool,
    /// Weight of the MTP loss next to the main loss.
    pub mtp_weight: f64,
    /// config.json keys merged over the preset's or directory's config before parsing
    /// (`vocab_size = 32`, `rope_parameters.factor = 2.0`, ...).
    pub config: toml::Table,
    /// Turn a `deepseek_v3` model into a `deepseek_v32` one by adding freshly initialised
    /// lightning indexers (what `rlvr convert --add-indexer` does to a checkpoint), when the first
    /// stage that needs them begins: the stages before it train the V3 model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub add_indexer: Option<AddIndexer>,
}

/// `[model] add_indexer = { n_heads = 64, head_dim = 128, topk = 2048, seed = 0 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddIndexer {
    /// Indexer heads H^I (`index_n_heads`).
    #[serde(default = "index_n_heads")]
    pub n_heads: usize,
    /// Indexer head width d^I (`index_head_dim`, at least the model's `qk_rope_head_dim`).
    #[serde(default = "index_head_dim")]
    pub head_dim: usize,
    /// Keys each query keeps under sparse attention (`index_topk`).
    #[serde(default = "index_topk")]
    pub topk: usize,
    /// Seed of the indexers' initialisation (default: the model's `init_seed`, else `run.seed`;
    /// filled in on load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl AddIndexer {
    /// The indexer shape to add.
    pub fn spec(&self) -> rlvr_model::convert::IndexerSpec {
        rlvr_model::convert::IndexerSpec { n_heads: self.n_heads, head_dim: self.head_dim, topk: self.topk }
    }
}

fn index_n_heads() -> usize {
    rlvr_model::convert::IndexerSpec::default().n_heads
}

fn index_head_dim() -> usize {
    rlvr_model::convert::IndexerSpec::default().head_dim
}

fn index_topk() -> usize {
    rlvr_model::convert::IndexerSpec::default().topk
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection {
            preset: None,
            path: None,
            init_seed: None,
            mtp: false,
            mtp_weight: 0.3,
            config: toml::Table::new(),
            add_indexer: None,
        }
    }
}

/// `[rollout]`: how GRPO samples completions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rollout {
    /// Completions per prompt (G).
    pub group_size: usize,
    /// Prompts per rollout step.
    pub prompts_per_step: usize,
    /// How each completion is drawn: `max_tokens`, `temperature` (0: greedy), `top_p`, `top_k`
    /// (0: all), `min_p` — the engine's own request settings.
    #[serde(flatten)]
    pub sampling: SamplingParams,
    /// Attention used while sampling.
    pub attention: AttentionMode,
    /// Sequences decoded at once (0: `prompts_per_step · group_size`, fewer when their KV cache
    /// does not fit the device; a value set here that does not fit is refused); with `spawn`, each
    /// server's slots.
    pub slots: usize,
    /// Where GRPO's rollouts are generated: an engine in this process, or `rlvr serve` servers.
    pub backend: RolloutBackend,
    /// `service`: URLs of running `rlvr serve` servers (`http://host:port`).
    pub endpoints: Vec<String>,
    /// `service`: start this many `rlvr serve` children on 127.0.0.1 (killed with the run).
    pub spawn: usize,
    /// `service` with `endpoints`: the servers' administrator key (weight pushes); else the
    /// environment's [`ADMIN_KEY_ENV`].
    pub admin_key: Option<String>,
    /// `service`: policy versions a sample's oldest token may lag behind the trainer's; with
    /// k ≥ 1 the servers generate the next k steps' groups while the trainer trains (0: the
    /// synchronous loop).
    pub max_staleness: u64,
    /// `service`: seconds a generation request may take before the server counts as failed.
    pub request_timeout_s: f64,
    /// `service`: seconds a weight push may take before the server counts as failed.
    pub sync_timeout_s: f64,
    /// `service` with `spawn`: seconds the servers get to come up.
    pub startup_timeout_s: f64,
}

/// The environment variable holding the administrator key of `rollout.endpoints` when the recipe
/// has no `rollout.admin_key`.
pub const ADMIN_KEY_ENV: &str = "RLVR_ROLLOUT_ADMIN_KEY";

/// `[rollout] backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutBackend {
    /// The colocated engine ([`crate::sampler::Sampler`]).
    #[default]
    Local,
    /// A pool of `rlvr serve` servers ([`crate::pool::Pool`]).
    Service,
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout {
            group_size: 8,
            prompts_per_step: 8,
            sampling: SamplingParams::default(),
            attention: AttentionMode::Dense,
            slots: 0,
            backend: RolloutBackend::Local,
            endpoints: Vec::new(),
            spawn: 0,
            admin_key: None,
            max_staleness: 0,
            request_timeout_s: 600.0,
            sync_timeout_s: 60.0,
            startup_timeout_s: 120.0,
        }
    }
}

impl Rollout {
    /// Sequences decoded at once: `slots`, or every sequence of a step when it is 0.
    pub fn effective_slots(&self) -> usize {
        if self.slots == 0 {
            self.prompts_per_step * self.group_size
        } else {
            self.slots
        }
    }

    /// How the engine's slots meet the device: `slots` as set is refused when its cache does not
    /// fit; the default (0) is lowered to what fits, down to one group.
    pub fn sizing(&self) -> Sizing {
        match self.slots {
            0 => Sizing::default_slots(self.group_size, "rollout.slots", "rollout.max_tokens"),
            _ => Sizing::explicit("rollout.slots", "rollout.max_tokens"),
        }
    }
}

/// `[algorithm]`: the GRPO-family loss and its update schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Algorithm {
    /// Group advantage.
    pub advantage: AdvantageMode,
    /// The loss: clips, aggregation (`constant_norm` defaults to `rollout.max_tokens`, filled in
    /// on load), KL estimator and β (0: no reference model), off-policy δ.
    #[serde(flatten)]
    pub loss: LossConfig,
    /// Replay the MoE routing chosen during sampling in training.
    pub keep_routing: bool,
    /// Restrict training log-probs to the tokens the sampler's top-p/top-k kept.
    pub keep_sampling_mask: bool,
    /// DAPO dynamic sampling: refill groups whose rewards are all equal.
    pub dynamic_sampling: bool,
    /// Refill rounds per step under dynamic sampling.
    pub max_refills: usize,
    /// DAPO overlong buffer: tokens before `max_tokens` where the length penalty ramps up.
    pub overlong_buffer: usize,
    /// Penalty at `max_tokens` under the overlong buffer.
    pub overlong_penalty: f64,
    /// Optimizer steps per rollout step.
    pub minibatches: usize,
    /// Passes over each rollout batch.
    pub epochs: usize,
    /// Sequences per micro-batch for gradient accumulation (0: the whole minibatch, or the largest
    /// halving of it whose memory plan fits the device: `plan::fit_micro_batch`).
    pub micro_batch: usize,
}

impl Default for Algorithm {
    fn default() -> Self {
        Algorithm {
            advantage: AdvantageMode::Mean,
            loss: LossConfig::default(),
            keep_routing: true,
            keep_sampling_mask: true,
            dynamic_sampling: false,
            max_refills: 2,
            overlong_buffer: 0,
            overlong_penalty: 1.0,
            minibatches: 1,
            epochs: 1,
            micro_batch: 0,
        }
    }
}

/// `[optimizer]`: AdamW.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Optimizer {
    /// Peak learning rate of stages that give none.
    pub lr: f64,
    /// β₁, β₂.
    pub betas: [f64; 2],
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Schedule after warm-up.
    pub schedule: Schedule,
    /// Linear warm-up steps at the start of each stage.
    pub warmup_steps: usize,
    /// Floor of the cosine schedule, as a fraction of the peak.
    pub min_lr_ratio: f64,
    /// Global gradient-norm clip (0: off).
    pub grad_clip: f64,
}

impl Default for Optimizer {
    fn default() -> Self {
        Optimizer {
            lr: 1e-3,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.0,
            schedule: Schedule::Constant,
            warmup_steps: 0,
            min_lr_ratio: 0.1,
            grad_clip: 1.0,
        }
    }
}

/// `[checkpoint]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Checkpoint {
    /// Optimizer steps between checkpoints (0: only at the end of each training stage). Default
    /// [`CHECKPOINT_EVERY`]: a stage interrupted any way but a signal (which checkpoints itself)
    /// loses at most that many steps.
    pub every: usize,
    /// Checkpoints kept; older ones are deleted.
    pub keep_last: usize,
}

impl Default for Checkpoint {
    fn default() -> Self {
        Checkpoint { every: CHECKPOINT_EVERY, keep_last: 3 }
    }
}

/// Default of `checkpoint.every`: frequent enough that a crash loses little (at most 100 steps, a
/// few minutes of a small model's GRPO), rare enough that saving (weights and twice their size in
/// AdamW state) stays a small share of a large model's run. The end of every training stage is
/// checkpointed too, whatever `every` says.
pub const CHECKPOINT_EVERY: usize = 100;

/// `[logging]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Logging {
    /// Steps between console lines.
    pub console_every: usize,
    /// Write PNG plots to the run directory.
    pub plots: bool,
    /// Weights & Biases.
    pub wandb: Wandb,
}

impl Default for Logging {
    fn default() -> Self {
        Logging { console_every: 1, plots: true, wandb: Wandb::default() }
    }
}

/// `[logging.wandb]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Wandb {
    /// Log to Weights & Biases.
    pub enabled: bool,
    /// Online or offline.
    pub mode: WandbMode,
    /// Project name.
    pub project: String,
    /// Team or user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    /// Python with `wandb` installed (default: the repository's `.venv/bin/python`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub python: Option<PathBuf>,
}

impl Default for Wandb {
    fn default() -> Self {
        Wandb { enabled: false, mode: WandbMode::Offline, project: "rlvr".into(), entity: None, python: None }
    }
}

/// `[verifier]` or `[[verifier]]`, as written: each table is a `rlvr_verifiers::VerifierSpec`
/// (`kind = "math"`, ...); list entries add `weight` (default 1) and `name` (default the
/// verifier's name), and the reward is `Σ weight · reward` with the first entry's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Verifiers {
    /// One verifier, `[verifier]`.
    One(toml::Table),
    /// A weighted list, `[[verifier]]`.
    Weighted(Vec<toml::Table>),
}

impl Default for Verifiers {
    /// `[verifier] kind = "math"`.
    fn default() -> Self {
        let mut table = toml::Table::new();
        table.insert("kind".into(), "math".into());
        Verifiers::One(table)
    }
}

/// The reward a recipe describes, read and checked: one verifier, or named, weighted parts.
#[derive(Debug, Clone)]
pub enum Reward {
    /// `[verifier]`.
    One(rlvr_verifiers::VerifierSpec),
    /// `[[verifier]]`: `(name, weight, spec)`, names unique, the first part's outcome.
    Weighted(Vec<(String, f32, rlvr_verifiers::VerifierSpec)>),
}

impl Reward {
    /// Builds the verifier.
    pub fn build(self) -> Result<Box<dyn rlvr_verifiers::Verifier>, rlvr_verifiers::VerifyError> {
        match self {
            Reward::One(spec) => spec.build(),
            Reward::Weighted(parts) => rlvr_verifiers::VerifierSpec::build_weighted(parts),
        }
    }

    /// The parts' names (one name for a single verifier).
    pub fn names(&self) -> Vec<&str> {
        match self {
            Reward::One(spec) => vec![spec.name()],
            Reward::Weighted(parts) => parts.iter().map(|(n, _, _)| n.as_str()).collect(),
        }
    }
}
fn half() -> f64 {
    0.5
}
fn three() -> usize {
    3
}
