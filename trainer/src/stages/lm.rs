//! The supervised stages, one optimizer step each:
//!
//! - `pretrain`: next-token loss on the packed token stream (plus λ·MTP loss when the model has
//!   MTP modules);
//! - `sft`: next-token loss on the response tokens only (prompt + reference + eos rows);
//! - `indexer_warmup` (DSA stage 1, docs/model.md §3.2): dense attention, every parameter frozen but
//!   the lightning indexers, loss = Σ_l KL(head-summed L1-normalised attention ‖ softmax(I));
//! - `sparse_train` (DSA stage 2): top-k attention, everything trains; the indexer reads detached
//!   inputs and learns from the KL over its selected set only, the rest from the LM loss only.
//!
//! The DSA stages' held-out figures are in [`super::dsa`]; the same losses with each layer
//! recomputed in the backward (`run.activation_checkpointing = "layer"`) in [`super::lm_recompute`].

use crate::batch::{masked_mean, pack_stream, pad_rows, span_mask};
use crate::data::{Dataset, Problem};
use crate::optim::Optimizer;
use crate::parallel::Dp;
use crate::policy::Policy;
use crate::recipe::{IndexerWarmupStage, PretrainStage, SftStage, SparseTrainStage, Stage};
use crate::session::Session;
use anyhow::Result;
use rlvr_model::{AttentionMode, Checkpointing, ForwardOptions, IndexerStage};
use serde::Serialize;
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
    let (tokens, used) = pack_texts(policy, |i| data.pretrain_text(*cursor + i), batch, seq_len)?;
    *cursor += used;
    Ok(tokens)
}

/// `batch × (seq_len + 1)` tokens packed from documents `text(0)`, `text(1)`, … (each `bos`, its
/// ids, `eos`); also how many documents were used.
pub(crate) fn pack_texts(
    policy: &Policy,
    mut text: impl FnMut(u64) -> String,
    batch: usize,
    seq_len: usize,
) -> Result<(Tensor, u64)> {
    let mut i = 0;
    pack_stream(
        || {
            let ids = policy.encode(&text(i))?;
            i += 1;
            Ok(ids)
        },
        policy.bos(),
        policy.eos(),
        batch,
        seq_len,
        policy.vs.device(),
    )
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

/// What one supervised step logs (absent figures are left out of the record).
#[derive(Debug, Clone, Default, Serialize)]
pub struct LmMetrics {
    /// Next-token loss of the main head.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lm_loss: Option<f64>,
    /// MTP loss.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtp_loss: Option<f64>,
    /// Σ over layers of the indexer KL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub indexer_kl: Option<f64>,
    /// Mean indexer recall of the dense attention mass (warm-up).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recall: Option<f64>,
    /// The optimised total.
    pub loss: f64,
    /// Gradient norm before clipping (absent when the loss was not finite).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    /// Learning rate of the step.
    pub lr: f64,
    /// Seconds of forward, backward and update.
    pub train_s: f64,
    /// Tokens of the batch per second.
    pub tok_per_s: f64,
}

/// The weights of this rank's share of a batch in the global loss: its part of the global
/// normaliser of each kind of term (1 and 1 in a single process).
#[derive(Debug, Clone, Copy)]
pub struct Weights {
    /// Of terms averaged over rows (every next-token position of a row counts the same).
    pub rows: f64,
    /// Of terms averaged over the masked (response) positions.
    pub response: f64,
}

impl Weights {
    /// The whole batch: nothing to weigh.
    pub const WHOLE: Weights = Weights { rows: 1.0, response: 1.0 };

    /// The weights of rows `share` of a batch of `rows` rows with response `mask (B, L−1)`.
    fn of_share(share: &std::ops::Range<usize>, rows: usize, mask: Option<&Tensor>) -> Weights {
        let rows_w = share.len() as f64 / rows.max(1) as f64;
        let response = match mask {
            Some(mask) => {
                let local = mask.narrow(0, share.start as i64, share.len() as i64).sum(Kind::Double).double_value(&[]);
                local / mask.sum(Kind::Double).double_value(&[]).max(1.0)
            }
            None => rows_w,
        };
        Weights { rows: rows_w, response }
    }
}

/// The loss of one step on `tokens (B, L)` (`mask (B, L−1)` for SFT), each term weighted by
/// `w` (this rank's share of the global loss), and its figures (weighted alike, so that summing
/// them over the ranks gives the global figures).
pub fn loss(
    policy: &Policy,
    objective: Objective,
    tokens: &Tensor,
    mask: Option<&Tensor>,
    w: Weights,
) -> (Tensor, LmMetrics) {
    let mut m = LmMetrics::default();
    let with_mtp = !policy.model.mtp.is_empty();
    let total = match objective {
        Objective::Pretrain { mode, mtp_weight } | Objective::Sft { mode, mtp_weight } => {
            let out = policy.model.run(tokens, ForwardOptions { mtp: with_mtp, ..ForwardOptions::new(mode) });
            let nll = -rlvr_model::model::logprobs_of(&out.logits, tokens); // (B, L−1)
            let lm = match mask {
                Some(mask) => masked_mean(&nll, mask) * w.response,
                None => nll.mean(Kind::Float) * w.rows,
            };
            m.lm_loss = Some(lm.double_value(&[]));
            match out.mtp_loss(tokens) {
                Some(mtp) if mtp_weight > 0.0 => {
                    let mtp = mtp * w.rows;
                    m.mtp_loss = Some(mtp.double_value(&[]));
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
            let kl = losses.total(None) * w.rows;
            m.indexer_kl = Some(kl.double_value(&[]));
            let recall: Vec<f64> = losses.recall(None).iter().flatten().map(|r| r.double_value(&[])).collect();
            m.recall = Some(mean(&recall) * w.rows);
            kl
        }
        Objective::SparseTrain { indexer_weight, mtp_weight } => {
            let SparseLosses { lm, mtp, indexer } = sparse_losses(policy, tokens);
            let (lm, indexer) = (lm * w.rows, indexer * w.rows);
            m.lm_loss = Some(lm.double_value(&[]));
            m.indexer_kl = Some(indexer.double_value(&[]));
            let main = match mtp {
                Some(mtp) => {
                    let mtp = mtp * w.rows;
                    m.mtp_loss = Some(mtp.double_value(&[]));
                    lm + mtp * mtp_weight
                }
                None => lm,
            };
            main + indexer * indexer_weight
        }
    };
    m.loss = total.double_value(&[]);
    (total, m)
}

impl LmMetrics {
    /// The weighted figures of every rank summed: the global figures.
    fn sum_over(&mut self, dp: &Dp) -> Result<()> {
        if dp.world() == 1 {
            return Ok(());
        }
        let fields = [&mut self.lm_loss, &mut self.mtp_loss, &mut self.indexer_kl, &mut self.recall];
        let mut values: Vec<f64> = fields.iter().map(|f| f.unwrap_or(0.0)).collect();
        values.push(self.loss);
        dp.sum(&mut values)?;
        for (field, v) in fields.into_iter().zip(&values) {
            if field.is_some() {
                *field = Some(*v);
            }
        }
        self.loss = values[4];
        Ok(())
    }
}

/// The batch and objective of the next step of supervised `stage`; advances the data cursors.
fn next_batch(session: &mut Session, stage: &Stage) -> Result<(Tensor, Option<Tensor>, Objective)> {
    let mtp_weight = session.recipe.model.mtp_weight;
    let (policy, data, state) = (&session.policy, &session.data, &mut session.state);
    Ok(match stage {
        Stage::Pretrain(PretrainStage { batch_size, seq_len, attention, .. }) => {
            let t = stream_batch(policy, data, &mut state.text_cursor, *batch_size, *seq_len)?;
            (t, None, Objective::Pretrain { mode: *attention, mtp_weight })
        }
        Stage::Sft(SftStage { batch_size, attention, .. }) => {
            let first = state.problem_cursor;
            let problems: Vec<_> = (0..*batch_size as u64).map(|i| data.train(first + i)).collect();
            state.problem_cursor += *batch_size as u64;
            let (t, m) = sft_batch(policy, &problems)?;
            (t, Some(m), Objective::Sft { mode: *attention, mtp_weight })
        }
        Stage::IndexerWarmup(IndexerWarmupStage { batch_size, seq_len, .. }) => {
            let t = stream_batch(policy, data, &mut state.text_cursor, *batch_size, *seq_len)?;
            (t, None, Objective::IndexerWarmup)
        }
        Stage::SparseTrain(SparseTrainStage { batch_size, seq_len, indexer_loss_weight, .. }) => {
            let t = stream_batch(policy, data, &mut state.text_cursor, *batch_size, *seq_len)?;
            (t, None, Objective::SparseTrain { indexer_weight: *indexer_loss_weight, mtp_weight })
        }
        Stage::Grpo(_) | Stage::Eval(_) => unreachable!("not a supervised stage"),
    })
}

/// One optimizer step of supervised `stage` at `lr`: its figures, and whether it was skipped (a
/// non-finite loss or gradient norm on any rank; no update was applied). Each rank trains on its
/// share of the global batch.
pub(crate) fn step(session: &mut Session, stage: &Stage, opt: &mut Optimizer, lr: f64) -> Result<(LmMetrics, bool)> {
    let (tokens, mask, objective) = next_batch(session, stage)?;
    let dp = &session.dp;
    let rows = tokens.size()[0] as usize;
    let share = dp.share(rows);
    let (w, tokens_here, mask_here) = match dp.world() {
        1 => (Weights::WHOLE, tokens.shallow_clone(), mask.as_ref().map(Tensor::shallow_clone)),
        _ => {
            let (from, len) = (share.start as i64, share.len() as i64);
            let w = Weights::of_share(&share, rows, mask.as_ref());
            (w, tokens.narrow(0, from, len), mask.as_ref().map(|m| m.narrow(0, from, len)))
        }
    };
    let start = std::time::Instant::now();
    opt.zero_grad();
    let policy = &session.policy;
    let (mut m, mut skipped) = match session.recipe.run.activation_checkpointing {
        Checkpointing::None => {
            let (loss, m) = loss(policy, objective, &tokens_here, mask_here.as_ref(), w);
            let finite = dp.all(m.loss.is_finite())?;
            if finite {
                loss.backward();
            }
            (m, !finite)
        }
        // The backward runs with the loss; a non-finite one's gradients are dropped below.
        Checkpointing::Layer => {
            let m = super::lm_recompute::backward(policy, objective, &tokens_here, mask_here.as_ref(), w);
            let finite = dp.all(m.loss.is_finite())?;
            (m, !finite)
        }
    };
    if !skipped {
        let applied = opt.step(lr, session.recipe.optimizer.grad_clip, dp)?;
        m.grad_norm = Some(applied.grad_norm);
        skipped = !applied.stepped;
    }
    opt.zero_grad();
    m.sum_over(dp)?;
    let secs = start.elapsed().as_secs_f64();
    m.lr = lr;
    m.train_s = secs;
    m.tok_per_s = tokens.numel() as f64 / secs.max(1e-9);
    Ok((m, skipped))
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

/// The arithmetic mean (0 of nothing).
pub(crate) fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len().max(1) as f64
}
