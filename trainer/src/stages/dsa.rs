//! The held-out figures of the two DSA stages, measured on fixed text at a stage's start and end:
//! the indexer's KL to the head-summed dense attention and its recall of that attention's mass
//! (under the dense forward), and the LM loss dense vs sparse. They make the `indexer_warmup`
//! and `sparse_train` summaries in `report.json`.

use super::lm::{mean, pack_texts};
use crate::data::Dataset;
use crate::policy::Policy;
use crate::recipe::{IndexerWarmupStage, SparseTrainStage, Stage};
use anyhow::Result;
use rlvr_model::{AttentionMode, ForwardOptions, IndexerStage};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// The figures of one probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeFigures {
    /// Σ over layers of KL(head-summed attention ‖ indexer softmax).
    pub kl: f64,
    /// That KL per layer (main layers, then MTP).
    pub kl_per_layer: Vec<f64>,
    /// Mean share of the dense attention mass on the indexer's top-k.
    pub recall: f64,
    /// That share per layer.
    pub recall_per_layer: Vec<f64>,
    /// Next-token loss with dense attention.
    pub lm_loss_dense: f64,
    /// Next-token loss with sparse attention.
    pub lm_loss_sparse: f64,
}

/// What a DSA stage adds to its summary.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum DsaSummary {
    /// `indexer_warmup`: how far the indexer moved toward the dense attention.
    Warmup {
        /// KL at the start.
        kl_start: f64,
        /// KL at the end.
        kl_end: f64,
        /// Recall at the start.
        recall_start: f64,
        /// Recall at the end.
        recall_end: f64,
        /// Every figure at the start.
        probe_start: ProbeFigures,
        /// Every figure at the end.
        probe_end: ProbeFigures,
    },
    /// `sparse_train`: sparse against dense on the same text.
    Sparse {
        /// LM loss with dense attention at the end.
        lm_loss_dense: f64,
        /// LM loss with sparse attention at the end.
        lm_loss_sparse: f64,
        /// Recall at the end.
        recall_end: f64,
        /// KL at the end.
        kl_end: f64,
        /// Every figure at the start.
        probe_start: ProbeFigures,
        /// Every figure at the end.
        probe_end: ProbeFigures,
    },
}

/// The probe text of a DSA stage (`None` for other stages).
pub fn probe_text(policy: &Policy, data: &Dataset, stage: &Stage) -> Result<Option<Tensor>> {
    match stage {
        Stage::IndexerWarmup(IndexerWarmupStage { batch_size, seq_len, .. })
        | Stage::SparseTrain(SparseTrainStage { batch_size, seq_len, .. }) => {
            Ok(Some(probe_tokens(policy, data, *batch_size, *seq_len)?))
        }
        _ => Ok(None),
    }
}

/// The summary entries of a DSA stage from its start and end figures.
pub fn summary(stage: &Stage, start: ProbeFigures, end: ProbeFigures) -> DsaSummary {
    match stage {
        Stage::IndexerWarmup(_) => DsaSummary::Warmup {
            kl_start: start.kl,
            kl_end: end.kl,
            recall_start: start.recall,
            recall_end: end.recall,
            probe_start: start,
            probe_end: end,
        },
        _ => DsaSummary::Sparse {
            lm_loss_dense: end.lm_loss_dense,
            lm_loss_sparse: end.lm_loss_sparse,
            recall_end: end.recall,
            kl_end: end.kl,
            probe_start: start,
            probe_end: end,
        },
    }
}

/// Held-out text for the DSA probes: `batch × (seq_len + 1)` tokens packed from the held-out
/// problems (prompt + reference), cycling through them.
pub fn probe_tokens(policy: &Policy, data: &Dataset, batch: usize, seq_len: usize) -> Result<Tensor> {
    let held = data.held_out();
    anyhow::ensure!(!held.is_empty(), "the DSA probes need held-out problems (data.held_out > 0)");
    let text = |i: u64| {
        let p = &held[i as usize % held.len()];
        format!("{}{}", p.prompt, p.reference.as_deref().unwrap_or(""))
    };
    let (tokens, _) = pack_texts(policy, text, batch, seq_len)?;
    Ok(tokens)
}

/// The DSA figures on held-out `tokens`: per-layer and total indexer KL and mean recall under
/// dense attention, and the LM loss dense and sparse.
pub fn probe(policy: &Policy, tokens: &Tensor) -> ProbeFigures {
    tch::no_grad(|| {
        let out = policy.model.run(tokens, ForwardOptions::indexer_training(IndexerStage::DenseWarmup));
        let losses = out.indexer.as_ref().expect("the warm-up forward returns indexer losses");
        let kl: Vec<f64> = losses.per_layer(None).iter().map(|t| t.double_value(&[])).collect();
        let recall: Vec<f64> = losses.recall(None).iter().flatten().map(|t| t.double_value(&[])).collect();
        let sparse = policy.model.run(tokens, ForwardOptions::new(AttentionMode::Sparse));
        ProbeFigures {
            kl: kl.iter().sum::<f64>(),
            recall: mean(&recall),
            kl_per_layer: kl,
            recall_per_layer: recall,
            lm_loss_dense: out.lm_loss(tokens).double_value(&[]),
            lm_loss_sparse: sparse.lm_loss(tokens).double_value(&[]),
        }
    })
}
