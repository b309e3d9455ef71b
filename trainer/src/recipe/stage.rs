//! The stages a recipe runs in order (`[[stages]]`, tagged by `kind`).

use super::Optimizer;
use rlvr_model::AttentionMode;
use serde::{Deserialize, Serialize};

/// Learning rate of `indexer_warmup` when the stage gives none: the indexer trains alone from a
/// random start, so it takes a larger step than the model's fine-tuning rate.
pub const INDEXER_WARMUP_LR: f64 = 1e-3;

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Stage {
    /// Next-token loss on every token.
    Pretrain(PretrainStage),
    /// Next-token loss on response tokens only.
    Sft(SftStage),
    /// GRPO-family policy optimisation with rewards from the verifier (uses `[rollout]` and
    /// `[algorithm]`).
    Grpo(GrpoStage),
    /// Sampling on held-out problems, scored by the verifier: pass@k.
    Eval(EvalStage),
    /// Trains only the lightning indexer to match dense attention (V3.2 §2.1.1, dense warm-up).
    IndexerWarmup(IndexerWarmupStage),
    /// Trains the model under sparse attention with the indexer's KL loss (V3.2 §2.1.1).
    SparseTrain(SparseTrainStage),
}

/// Every stage kind, as recipes spell it.
pub const STAGE_KINDS: [&str; 6] = ["pretrain", "sft", "grpo", "eval", "indexer_warmup", "sparse_train"];

/// `kind = "pretrain"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainStage {
    /// Stage name (default: the kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Optimizer steps.
    pub steps: usize,
    /// Sequences per step.
    #[serde(default = "sixteen")]
    pub batch_size: usize,
    /// Tokens per sequence.
    #[serde(default = "sixty_four")]
    pub seq_len: usize,
    /// Peak learning rate (default `optimizer.lr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Attention used in training.
    #[serde(default)]
    pub attention: AttentionMode,
}

/// `kind = "sft"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftStage {
    /// Stage name (default: the kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Optimizer steps.
    pub steps: usize,
    /// Prompt/response pairs per step.
    #[serde(default = "sixteen")]
    pub batch_size: usize,
    /// Peak learning rate (default `optimizer.lr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Attention used in training.
    #[serde(default)]
    pub attention: AttentionMode,
}

/// `kind = "grpo"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpoStage {
    /// Stage name (default: the kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Rollout steps (each one or more optimizer steps, per `[algorithm]`).
    pub steps: usize,
    /// Peak learning rate (default `optimizer.lr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Learning-rate schedule of this stage (default `optimizer.schedule`): RL often runs at a
    /// constant rate after a decaying supervised stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<crate::optim::Schedule>,
}

/// `kind = "eval"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalStage {
    /// Stage name (default: the kind); it keys the stage's summary in `report.json`, so runs with
    /// two evals name them (`eval_before`, `eval_after`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Completions sampled per problem.
    #[serde(default = "four")]
    pub samples: usize,
    /// The k of each pass@k reported (default `[1, samples]`; filled in on load).
    #[serde(default)]
    pub pass_k: Vec<usize>,
    /// Sampling temperature (default `rollout.temperature`; filled in on load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// At most this many held-out problems (default all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_problems: Option<usize>,
}

/// `kind = "indexer_warmup"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexerWarmupStage {
    /// Stage name (default: the kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Optimizer steps.
    pub steps: usize,
    /// Sequences per step.
    #[serde(default = "eight")]
    pub batch_size: usize,
    /// Tokens per sequence.
    #[serde(default = "one_twenty_eight")]
    pub seq_len: usize,
    /// Learning rate of the indexer (default [`INDEXER_WARMUP_LR`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
}

/// `kind = "sparse_train"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparseTrainStage {
    /// Stage name (default: the kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Optimizer steps.
    pub steps: usize,
    /// Sequences per step.
    #[serde(default = "eight")]
    pub batch_size: usize,
    /// Tokens per sequence.
    #[serde(default = "one_twenty_eight")]
    pub seq_len: usize,
    /// Peak learning rate (default `optimizer.lr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Weight of the indexer's KL loss next to the LM loss.
    #[serde(default = "unit")]
    pub indexer_loss_weight: f64,
}

impl Stage {
    /// The stage's name: its `name`, else its kind.
    pub fn name(&self) -> &str {
        let name = match self {
            Stage::Pretrain(s) => &s.name,
            Stage::Sft(s) => &s.name,
            Stage::Grpo(s) => &s.name,
            Stage::Eval(s) => &s.name,
            Stage::IndexerWarmup(s) => &s.name,
            Stage::SparseTrain(s) => &s.name,
        };
        name.as_deref().unwrap_or(self.kind())
    }

    /// The kind, as recipes spell it (`pretrain`, `indexer_warmup`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Stage::Pretrain(_) => "pretrain",
            Stage::Sft(_) => "sft",
            Stage::Grpo(_) => "grpo",
            Stage::Eval(_) => "eval",
            Stage::IndexerWarmup(_) => "indexer_warmup",
            Stage::SparseTrain(_) => "sparse_train",
        }
    }

    /// Steps of a training stage; `None` for `eval`.
    pub fn steps(&self) -> Option<usize> {
        match self {
            Stage::Pretrain(s) => Some(s.steps),
            Stage::Sft(s) => Some(s.steps),
            Stage::Grpo(s) => Some(s.steps),
            Stage::Eval(_) => None,
            Stage::IndexerWarmup(s) => Some(s.steps),
            Stage::SparseTrain(s) => Some(s.steps),
        }
    }

    /// Rows per step of a supervised stage (GRPO and eval have prompts instead).
    pub fn batch_size(&self) -> Option<usize> {
        match self {
            Stage::Pretrain(s) => Some(s.batch_size),
            Stage::Sft(s) => Some(s.batch_size),
            Stage::IndexerWarmup(s) => Some(s.batch_size),
            Stage::SparseTrain(s) => Some(s.batch_size),
            Stage::Grpo(_) | Stage::Eval(_) => None,
        }
    }

    /// The stage's own `lr`, when it gives one.
    pub fn own_lr(&self) -> Option<f64> {
        match self {
            Stage::Pretrain(s) => s.lr,
            Stage::Sft(s) => s.lr,
            Stage::Grpo(s) => s.lr,
            Stage::Eval(_) => None,
            Stage::IndexerWarmup(s) => s.lr,
            Stage::SparseTrain(s) => s.lr,
        }
    }

    /// The peak learning rate a training stage uses: its own `lr`, else `optimizer.lr`
    /// ([`INDEXER_WARMUP_LR`] for `indexer_warmup`); `None` for `eval`.
    pub fn lr(&self, optimizer: &Optimizer) -> Option<f64> {
        match self {
            Stage::Eval(_) => None,
            Stage::IndexerWarmup(s) => Some(s.lr.unwrap_or(INDEXER_WARMUP_LR)),
            other => Some(other.own_lr().unwrap_or(optimizer.lr)),
        }
    }
}

impl EvalStage {
    /// The k values reported: `pass_k`, or `[1, samples]` when it is empty.
    pub fn pass_k(&self) -> Vec<usize> {
        if !self.pass_k.is_empty() {
            return self.pass_k.clone();
        }
        let mut ks = vec![1, self.samples];
        ks.dedup();
        ks
    }
}

fn four() -> usize {
    4
}
fn eight() -> usize {
    8
}
fn sixteen() -> usize {
    16
}
fn sixty_four() -> usize {
    64
}
fn one_twenty_eight() -> usize {
    128
}
fn unit() -> f64 {
    1.0
}
