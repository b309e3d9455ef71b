//! The supervised stages' backward under `run.activation_checkpointing = "layer"`: the terms of
//! [`super::lm::loss`] — next-token loss, λ·MTP, the indexer KL — handed one by one to
//! [`rlvr_model::DeepseekV32::backward_checkpointed`], each written as the plain loss writes it so
//! that the figures are the same numbers and the gradients the same to float rounding
//! (`trainer/tests/recompute.rs`).

use super::lm::{mean, LmMetrics, Objective, Weights};
use crate::batch::masked_mean;
use crate::policy::Policy;
use rlvr_model::forward::mtp_loss_of;
use rlvr_model::indexer_loss::LayerIndexerLoss;
use rlvr_model::recompute::head_chunk;
use rlvr_model::{ForwardOptions, IndexerStage, LossHead, MainHead};
use tch::{Kind, Tensor};

/// The step's loss terms as their values (no gradient), to make the figures.
#[derive(Default)]
struct Values {
    lm: Option<Tensor>,
    mtp: Option<Tensor>,
}

/// Backpropagates one supervised step's loss on `tokens (B, L)` (`mask (B, L−1)` for SFT),
/// weighted by `w`, recomputing each layer; the step's figures, as [`super::lm::loss`] gives them.
pub fn backward(
    policy: &Policy,
    objective: Objective,
    tokens: &Tensor,
    mask: Option<&Tensor>,
    w: Weights,
) -> LmMetrics {
    let model = &policy.model;
    let with_mtp = !model.mtp.is_empty();
    let t = tokens.size()[1];
    let targets = tokens.narrow(1, 1, t - 1); // (B, L−1)
    let chunk = head_chunk(tokens.size()[0], policy.config.vocab_size as i64);
    let mut v = Values::default();
    let mut m = LmMetrics::default();
    let total = match objective {
        Objective::Pretrain { mode, mtp_weight } | Objective::Sft { mode, mtp_weight } => {
            let mtp_on = with_mtp && mtp_weight > 0.0;
            let mut main = |logp: &Tensor| {
                let nll = -logp; // (B, L−1)
                let lm = match mask {
                    Some(mask) => masked_mean(&nll, mask) * w.response,
                    None => nll.mean(Kind::Float) * w.rows,
                };
                v.lm = Some(lm.detach());
                lm
            };
            let mut mtp = |logits: &[Tensor]| {
                let mtp = mtp_loss_of(logits, tokens)? * w.rows;
                v.mtp = Some(mtp.detach());
                Some(mtp * mtp_weight)
            };
            let head = LossHead {
                main: Some(MainHead { targets: &targets, chunk, entropy: false, loss: &mut main }),
                mtp: mtp_on.then_some(&mut mtp),
                indexer: None,
            };
            model.backward_checkpointed(tokens, ForwardOptions { mtp: mtp_on, ..ForwardOptions::new(mode) }, head);
            let lm = v.lm.expect("the main head ran");
            m.lm_loss = Some(lm.double_value(&[]));
            match v.mtp {
                Some(mtp) => {
                    m.mtp_loss = Some(mtp.double_value(&[]));
                    lm + mtp * mtp_weight
                }
                None => lm,
            }
        }
        Objective::IndexerWarmup => {
            let mut indexer = |l: &LayerIndexerLoss| l.mean(None) * w.rows;
            let head = LossHead { main: None, mtp: None, indexer: Some(&mut indexer) };
            let opts = ForwardOptions { mtp: with_mtp, ..ForwardOptions::indexer_training(IndexerStage::DenseWarmup) };
            let out = model.backward_checkpointed(tokens, opts, head);
            let losses = out.indexer.expect("the warm-up forward returns indexer losses");
            let kl = losses.total(None) * w.rows;
            m.indexer_kl = Some(kl.double_value(&[]));
            let recall: Vec<f64> = losses.recall(None).iter().flatten().map(|r| r.double_value(&[])).collect();
            m.recall = Some(mean(&recall) * w.rows);
            kl
        }
        Objective::SparseTrain { indexer_weight, mtp_weight } => {
            let mut main = |logp: &Tensor| {
                let lm = -logp.mean(Kind::Float) * w.rows;
                v.lm = Some(lm.detach());
                lm
            };
            let mut mtp = |logits: &[Tensor]| {
                let mtp = mtp_loss_of(logits, tokens)? * w.rows;
                v.mtp = Some(mtp.detach());
                Some(mtp * mtp_weight)
            };
            let mut indexer = |l: &LayerIndexerLoss| l.mean(None) * w.rows * indexer_weight;
            let head = LossHead {
                main: Some(MainHead { targets: &targets, chunk, entropy: false, loss: &mut main }),
                mtp: with_mtp.then_some(&mut mtp),
                indexer: Some(&mut indexer),
            };
            let opts = ForwardOptions { mtp: with_mtp, ..ForwardOptions::indexer_training(IndexerStage::Sparse) };
            let out = model.backward_checkpointed(tokens, opts, head);
            let indexer = out.indexer.expect("the sparse forward returns indexer losses").total(None) * w.rows;
            let lm = v.lm.expect("the main head ran");
            m.lm_loss = Some(lm.double_value(&[]));
            m.indexer_kl = Some(indexer.double_value(&[]));
            let main = match v.mtp {
                Some(mtp) => {
                    m.mtp_loss = Some(mtp.double_value(&[]));
                    lm + mtp * mtp_weight
                }
                None => lm,
            };
            main + indexer * indexer_weight
        }
    };
    m.loss = total.double_value(&[]);
    m
}
