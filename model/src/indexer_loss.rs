//! The DSA lightning indexer's training losses (docs/model.md §3.2, DSA paper eq. 3–4; exact
//! definitions in tests/fixtures/README.md, "indexer_losses.safetensors").
//!
//! Per layer and query row t, the target `p[t,s] = Σ_h A[h,t,s] / Σ_{s'} Σ_h A[h,t,s']` is the
//! head-summed main attention probability, L1-normalised and detached (computed without gradient
//! from the layer's own queries and keys). The loss is `KL(p ‖ softmax_R(I[t,:]))` over a support
//! R_t, the log-softmax of the indexer scores running over R_t only:
//!
//! - [`IndexerStage::DenseWarmup`] (eq. 3): dense attention, R_t = every causal key. Also gives the
//!   recall `Σ_{s∈S_t} p[t,s]` of the indexer's own top-k set S_t.
//! - [`IndexerStage::Sparse`] (eq. 4): sparse attention over S_t, R_t = S_t, both distributions
//!   renormalised over S_t. S_t is chosen on scores computed without gradient, and the scores are
//!   recomputed with gradient at the selected keys only ([`crate::indexer::Indexer::scores_at`]),
//!   so what the backward keeps is O(T·k), not O(T·S).
//!
//! The indexer reads detached inputs (normed `x`, MLA query latent) in both stages, so these losses
//! train the indexer alone. The paper asks for it in the sparse stage; in the dense warm-up every
//! other parameter is frozen anyway and the indexer gradients are the same (the fixture script
//! asserts it). The LM loss never reaches the indexer: top-k is discrete.
//!
//! Reductions (not published, see docs/model.md §3.2; the fixture's choice): mean over query rows
//! (all B·T, or a caller's row mask), sum over layers, no coefficient.
//!
//! Left out: a row-blocked target (the dense target materialises (B, T, H, S) scores, the sparse one
//! the gathered latent (B, T, k, C), both transient and without autograd), fused kernels, and the
//! loss weight against the LM loss (the trainer's choice).

use crate::attention::{causal, Keys, KvB, Queries};
use crate::config::ModelConfig;
use crate::indexer::Selection;
use crate::mla::AttentionMode;
use tch::{Kind, Tensor};

/// Which DSA training stage's indexer loss a forward computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexerStage {
    /// Stage 1: dense attention, KL over the causal set, plus recall.
    DenseWarmup,
    /// Stage 2 (and post-training): sparse attention, KL over the selected set.
    Sparse,
}

impl IndexerStage {
    /// The attention mode of the stage's forward.
    pub fn mode(self) -> AttentionMode {
        match self {
            IndexerStage::DenseWarmup => AttentionMode::Dense,
            IndexerStage::Sparse => AttentionMode::Sparse,
        }
    }
}

/// One layer's indexer loss, per query row.
#[derive(Debug)]
pub struct LayerIndexerLoss {
    /// KL per query row: (B, T) f32; its gradient reaches the indexer parameters only.
    pub kl: Tensor,
    /// Share of the dense target's mass on the indexer's top-k set: (B, T) f32, no gradient.
    /// Dense warm-up only (rows with t+1 ≤ k are exactly 1).
    pub recall: Option<Tensor>,
}

/// The indexer losses of every layer that ran (main layers, then MTP layers when they ran).
#[derive(Debug, Default)]
pub struct IndexerLosses {
    /// Per layer.
    pub layers: Vec<LayerIndexerLoss>,
}

/// Mean of `x (B, T)` over all rows, or over the rows where `rows (B, T)` is true.
fn row_mean(x: &Tensor, rows: Option<&Tensor>) -> Tensor {
    match rows {
        None => x.mean(Kind::Float),
        Some(r) => {
            let w = r.to_kind(Kind::Float);
            (x * &w).sum(Kind::Float) / w.sum(Kind::Float)
        }
    }
}

impl LayerIndexerLoss {
    /// `KL_l`: the mean over query rows (all, or where `rows (B, T)` is true). Scalar.
    pub fn mean(&self, rows: Option<&Tensor>) -> Tensor {
        row_mean(&self.kl, rows)
    }
}

impl IndexerLosses {
    /// `KL_l`: each layer's mean over query rows (all, or where `rows (B, T)` is true). Scalars.
    pub fn per_layer(&self, rows: Option<&Tensor>) -> Vec<Tensor> {
        self.layers.iter().map(|l| l.mean(rows)).collect()
    }

    /// `Σ_l KL_l`: the loss to minimise. Scalar.
    pub fn total(&self, rows: Option<&Tensor>) -> Tensor {
        Tensor::stack(&self.per_layer(rows), 0).sum(Kind::Float)
    }

    /// Each layer's mean recall (dense warm-up; `None` in the sparse stage). Scalars.
    pub fn recall(&self, rows: Option<&Tensor>) -> Vec<Option<Tensor>> {
        self.layers.iter().map(|l| l.recall.as_ref().map(|r| row_mean(r, rows))).collect()
    }
}

/// The indexer's trainable tensors of every layer (incl. the MTP layers when `with_mtp`), by
/// checkpoint name: what the dense warm-up trains while everything else is frozen. Empty for a
/// model without indexers.
pub fn indexer_parameter_names(cfg: &ModelConfig, with_mtp: bool) -> Vec<String> {
    const LEAVES: [&str; 5] = ["wq_b.weight", "wk.weight", "k_norm.weight", "k_norm.bias", "weights_proj.weight"];
    let mtp = if with_mtp { cfg.num_nextn_predict_layers } else { 0 };
    let layers = if cfg.has_indexer() { cfg.num_hidden_layers + mtp } else { 0 };
    (0..layers)
        .flat_map(|l| LEAVES.iter().map(move |leaf| format!("model.layers.{l}.self_attn.indexer.{leaf}")))
        .collect()
}

/// What the target needs from one layer's main attention.
pub struct TargetAttention<'a> {
    /// The layer's queries.
    pub q: &'a Queries,
    /// The layer's keys (positions `0..S`).
    pub keys: &'a Keys,
    /// `kv_b_proj` per head.
    pub kv_b: KvB,
    /// MLA's softmax scale.
    pub scale: f64,
}

/// Rows `x[b, idx[b, t, j]]` of `x (B, S, D)` for `idx (B, T, k)`: (B, T, k, D).
fn gather_rows(x: &Tensor, idx: &Tensor) -> Tensor {
    let (b, t, k) = (idx.size()[0], idx.size()[1], idx.size()[2]);
    let d = x.size()[2];
    let flat = idx.reshape([b, t * k, 1]).expand([b, t * k, d], false); // (B, T·k, D)
    x.gather(1, &flat, false).view([b, t, k, d]) // (B, T, k, D)
}

/// `p` from attention logits `scores (B, T, H, N)` allowed where `allowed (B, T, 1, N)`:
/// per-head softmax, summed over heads, L1-normalised over keys: (B, T, N) f32.
fn head_summed(scores: &Tensor, allowed: &Tensor) -> Tensor {
    let a = scores.to_kind(Kind::Float).masked_fill(&allowed.logical_not(), f64::NEG_INFINITY).softmax(-1, Kind::Float); // (B, T, H, N)
    let summed = a.sum_dim_intlist(2, false, Kind::Float); // (B, T, N)
    &summed / summed.sum_dim_intlist(-1, true, Kind::Float)
}

impl TargetAttention<'_> {
    /// The target over all keys `0..S` with `allowed (B, T, S)`: (B, T, S), no gradient.
    fn over_keys(&self, allowed: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let (q, keys) = (self.q, self.keys);
            let q_abs = Tensor::einsum("bthd,hdc->bthc", &[&q.nope, &self.kv_b.uk], None::<&[i64]>); // (B, T, H, C)
            let nope = Tensor::einsum("bthc,bsc->bths", &[&q_abs, &keys.latent], None::<&[i64]>);
            let pe = Tensor::einsum("bthr,bsr->bths", &[&q.pe, &keys.pe], None::<&[i64]>);
            head_summed(&((nope + pe) * self.scale), &allowed.unsqueeze(2))
        })
    }

    /// The target over each query's selected keys: (B, T, k) aligned with `sel.indices`, no gradient.
    fn over_selection(&self, sel: &Selection) -> Tensor {
        tch::no_grad(|| {
            let (q, keys) = (self.q, self.keys);
            let lat = gather_rows(&keys.latent, &sel.indices); // (B, T, k, C)
            let pe = gather_rows(&keys.pe, &sel.indices); // (B, T, k, d_rope)
            let q_abs = Tensor::einsum("bthd,hdc->bthc", &[&q.nope, &self.kv_b.uk], None::<&[i64]>); // (B, T, H, C)
            let nope = Tensor::einsum("bthc,btkc->bthk", &[&q_abs, &lat], None::<&[i64]>);
            let pe = Tensor::einsum("bthr,btkr->bthk", &[&q.pe, &pe], None::<&[i64]>);
            head_summed(&((nope + pe) * self.scale), &sel.valid.unsqueeze(2))
        })
    }
}

/// `Σ_{s∈R} p (log p − log_softmax_R(logits))` per row, for `p, logits, support (B, T, N)`:
/// (B, T). Terms with p = 0 count 0; keys outside R are excluded from the log-softmax.
fn kl_rows(p: &Tensor, logits: &Tensor, support: &Tensor) -> Tensor {
    let outside = support.logical_not();
    let log_q = logits.masked_fill(&outside, f64::NEG_INFINITY).log_softmax(-1, Kind::Float).masked_fill(&outside, 0.0); // (B, T, N)
    let p_log_p = p * p.clamp_min(f32::MIN_POSITIVE as f64).log();
    (p_log_p - p * log_q).sum_dim_intlist(-1, false, Kind::Float)
}

/// Dense warm-up loss of one layer from its indexer `scores (B, T, S)` (causal, −inf above the
/// diagonal) and their top-k `selection`, for queries at `q_pos (B, T)`.
pub fn dense_stage(
    target: &TargetAttention<'_>,
    scores: &Tensor,
    selection: &Selection,
    q_pos: &Tensor,
) -> LayerIndexerLoss {
    let allowed = causal(q_pos, scores.size()[2]); // (B, T, S)
    let p = target.over_keys(&allowed);
    let recall = tch::no_grad(|| {
        let picked = p.gather(-1, &selection.indices, false); // (B, T, k)
        (picked * selection.valid.to_kind(Kind::Float)).sum_dim_intlist(-1, false, Kind::Float)
    });
    LayerIndexerLoss { kl: kl_rows(&p, scores, &allowed), recall: Some(recall) }
}

/// Sparse-stage loss of one layer: KL over the `selection`, from the index scores of the selected
/// keys `picked (B, T, k)` (aligned with `selection.indices`; entries not `valid` are ignored).
pub fn sparse_stage(target: &TargetAttention<'_>, picked: &Tensor, selection: &Selection) -> LayerIndexerLoss {
    let p = target.over_selection(selection); // (B, T, k)
    LayerIndexerLoss { kl: kl_rows(&p, picked, &selection.valid), recall: None }
}
