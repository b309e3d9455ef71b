//! The supervised stages, one optimizer step each:
//!
//! - `pretrain`: next-token loss on the packed token stream (plus λ·MTP loss when the model has
//!   MTP modules);
//! - `sft`: next-token loss on the response tokens only (prompt + reference + eos rows);
//! - `indexer_warmup` (DSA stage 1, reference §3.2): dense attention, every parameter frozen but
//!   the lightning indexers, loss = Σ_l KL(head-summed L1-normalised attention ‖ softmax(I));
//! - `sparse_train` (DSA stage 2): top-k attention, everything trains; the indexer reads detached
//!   inputs and learns from the KL over its selected set only, the rest from the LM loss only.
//!
//! The held-out probes (`probe`) measure the DSA figures of issue-level interest on fixed text:
//! indexer KL and recall under the dense forward, LM loss dense vs sparse.

use crate::batch::{masked_mean, pack_stream, pad_rows, span_mask};
use crate::data::{Dataset, Problem};
use crate::policy::Policy;
use anyhow::Result;
use rlvr_model::{AttentionMode, ForwardOptions, IndexerStage};
use serde_json::{json, Map, Value};
use tch::{Kind, Tensor};

/// What one supervised step optimises.
#[derive(Debug, Clone, Copy)]
pub enum Objective {
    /// Next-token loss on every position (and MTP when present, weighted).
    Pretrain { mode: AttentionMode, mtp_weight: f64 },
    /// Next-token loss on response tokens.
    Sft { mode: AttentionMode, mtp_weight: f64 },
    /// Indexer KL under dense attention.
    IndexerWarmup,
    /// LM loss (+ λ·MTP) + weight · indexer KL over the selected set, sparse attention.
    SparseTrain { indexer_weight: f64, mtp_weight: f64 },
}

/// A token-stream batch of `batch × (seq_len + 1)` tokens starting at document `*cursor`.
pub fn stream_batch(policy: &Policy, data: &Dataset, cursor: &mut u64, batch: usize, seq_len: usize) -> Result<Tensor> {
    let start = *cursor;
    let mut i = start;
    let (tokens, used) = pack_stream(
        || {
            let ids = policy.encode(&data.pretrain_text(i))?;
            i += 1;
            Ok(ids)
        },
        policy.bos(),
        policy.eos(),
        batch,
        seq_len,
        policy.vs.device(),
    )?;
    *cursor = start + used;
    Ok(tokens)
}

/// SFT rows `bos, prompt, reference, eos` (right-padded) and their response mask (B, L−1).
pub fn sft_batch(policy: &Policy, problems: &[Problem]) -> Result<(Tensor, Tensor)> {
    let mut rows = Vec::new();
    let mut spans = Vec::new();
    for p in problems {
        let reference = p
            .reference
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("sft: training problem `{}` has no reference response in the data", p.id))?;
        let mut row = vec![policy.bos()];
        row.extend(policy.encode(&p.prompt)?);
        let from = row.len();
        row.extend(policy.encode(reference)?);
        row.push(policy.eos());
        spans.push((from, row.len()));
        rows.push(row);
    }
    let device = policy.vs.device();
    let (tokens, _) = pad_rows(&rows, policy.eos(), device); // (B, L)
    let mask = span_mask(&spans, tokens.size()[1] as usize, device); // (B, L−1)
    Ok((tokens, mask))
}

/// The loss of one step on `tokens (B, L)` (`mask (B, L−1)` for SFT) and its metrics.
pub fn loss(
    policy: &Policy,
    objective: Objective,
    tokens: &Tensor,
    mask: Option<&Tensor>,
) -> (Tensor, Map<String, Value>) {
    let mut m = Map::new();
    let with_mtp = !policy.model.mtp.is_empty();
    let total = match objective {
        Objective::Pretrain { mode, mtp_weight } | Objective::Sft { mode, mtp_weight } => {
            let out = policy.model.run(tokens, ForwardOptions { mtp: with_mtp, ..ForwardOptions::new(mode) });
            let nll = -rlvr_model::model::logprobs_of(&out.logits, tokens); // (B, L−1)
            let lm = match mask {
                Some(mask) => masked_mean(&nll, mask),
                None => nll.mean(Kind::Float),
            };
            m.insert("lm_loss".into(), json!(lm.double_value(&[])));
            match out.mtp_loss(tokens) {
                Some(mtp) if mtp_weight > 0.0 => {
                    m.insert("mtp_loss".into(), json!(mtp.double_value(&[])));
                    lm + mtp * mtp_weight
                }
                _ => lm,
            }
        }
        Objective::IndexerWarmup => {
            // The MTP modules run too, so that their indexers warm up with the main ones.
            let opts = ForwardOptions { mtp: with_mtp, ..ForwardOptions::indexer_training(IndexerStage::DenseWarmup) };
            let out = policy.model.run(tokens, opts);
            let losses = out.indexer.expect("the warm-up forward returns indexer losses");
            let kl = losses.total(None);
            m.insert("indexer_kl".into(), json!(kl.double_value(&[])));
            let recall: Vec<f64> = losses.recall(None).iter().flatten().map(|r| r.double_value(&[])).collect();
            m.insert("recall".into(), json!(mean(&recall)));
            kl
        }
        Objective::SparseTrain { indexer_weight, mtp_weight } => {
            let SparseLosses { lm, mtp, indexer } = sparse_losses(policy, tokens);
            m.insert("lm_loss".into(), json!(lm.double_value(&[])));
            m.insert("indexer_kl".into(), json!(indexer.double_value(&[])));
            let main = match mtp {
                Some(mtp) => {
                    m.insert("mtp_loss".into(), json!(mtp.double_value(&[])));
                    lm + mtp * mtp_weight
                }
                None => lm,
            };
            main + indexer * indexer_weight
        }
    };
    m.insert("loss".into(), json!(total.double_value(&[])));
    (total, m)
}

/// The three losses of a sparse-training forward, kept apart so that their gradient routing can
/// be checked: the LM (and MTP) losses reach everything but the indexers (top-k is discrete), the
/// indexer KL only the indexers (their inputs are detached).
pub struct SparseLosses {
    /// Next-token loss of the main head.
    pub lm: Tensor,
    /// MTP loss, when the model has MTP modules.
    pub mtp: Option<Tensor>,
    /// Σ over layers (MTP's included) of the indexer KL over the selected set.
    pub indexer: Tensor,
}

/// The sparse-training losses of `tokens (B, L)`.
pub fn sparse_losses(policy: &Policy, tokens: &Tensor) -> SparseLosses {
    let with_mtp = !policy.model.mtp.is_empty();
    let opts = ForwardOptions { mtp: with_mtp, ..ForwardOptions::indexer_training(IndexerStage::Sparse) };
    let out = policy.model.run(tokens, opts);
    let indexer = out.indexer.as_ref().expect("the sparse forward returns indexer losses").total(None);
    SparseLosses { lm: out.lm_loss(tokens), mtp: out.mtp_loss(tokens), indexer }
}

/// Held-out text for the DSA probes: `batch × (seq_len + 1)` tokens packed from the held-out
/// problems (prompt + reference), cycling through them.
pub fn probe_tokens(policy: &Policy, data: &Dataset, batch: usize, seq_len: usize) -> Result<Tensor> {
    let held = data.held_out();
    anyhow::ensure!(!held.is_empty(), "the DSA probes need held-out problems (data.held_out > 0)");
    let mut i = 0usize;
    let (tokens, _) = pack_stream(
        || {
            let p = &held[i % held.len()];
            i += 1;
            let text = format!("{}{}", p.prompt, p.reference.as_deref().unwrap_or(""));
            policy.encode(&text)
        },
        policy.bos(),
        policy.eos(),
        batch,
        seq_len,
        policy.vs.device(),
    )?;
    Ok(tokens)
}

/// The DSA figures on held-out `tokens`: per-layer and mean indexer KL and recall under dense
/// attention, and the LM loss dense and sparse.
pub fn probe(policy: &Policy, tokens: &Tensor) -> Map<String, Value> {
    tch::no_grad(|| {
        let mut m = Map::new();
        let out = policy.model.run(tokens, ForwardOptions::indexer_training(IndexerStage::DenseWarmup));
        let losses = out.indexer.as_ref().expect("the warm-up forward returns indexer losses");
        let kl: Vec<f64> = losses.per_layer(None).iter().map(|t| t.double_value(&[])).collect();
        let recall: Vec<f64> = losses.recall(None).iter().flatten().map(|t| t.double_value(&[])).collect();
        m.insert("kl".into(), json!(kl.iter().sum::<f64>()));
        m.insert("kl_per_layer".into(), json!(kl));
        m.insert("recall".into(), json!(mean(&recall)));
        m.insert("recall_per_layer".into(), json!(recall));
        m.insert("lm_loss_dense".into(), json!(out.lm_loss(tokens).double_value(&[])));
        let sparse = policy.model.run(tokens, ForwardOptions::new(AttentionMode::Sparse));
        m.insert("lm_loss_sparse".into(), json!(sparse.lm_loss(tokens).double_value(&[])));
        m
    })
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len().max(1) as f64
}
