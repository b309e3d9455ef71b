//! What one call of [`crate::DeepseekV32::run`] is asked to do and what it returns: the training
//! hooks of docs/model.md §8 (indexer losses, §3.2; keep routing, §3.3.6; keep sampling mask, §3.3.7;
//! MTP, §2.10) as options of one forward, not as forward variants.

use crate::indexer_loss::{IndexerLosses, IndexerStage};
use crate::mla::{AttentionMode, MlaPath};
use crate::model::{logprobs_of, CacheSlots, Trace};
use crate::packing::Packing;
use crate::vocab_mask::VocabMask;
use tch::{Kind, Tensor};

/// The options of one forward.
pub struct ForwardOptions<'a> {
    /// Dense or sparse (DSA) attention.
    pub mode: AttentionMode,
    /// How attention over the full key set is computed.
    pub path: MlaPath,
    /// Append to these cache slots (positions continue each slot); `None`: positions `0..T`.
    pub cache: Option<CacheSlots<'a>>,
    /// Compute this stage's indexer losses (its mode must equal `mode`; no cache).
    pub indexer_loss: Option<IndexerStage>,
    /// Replay recorded expert ids, per layer (`None` for dense layers): each (B, T, K) i64 for this
    /// call's tokens. Every MoE layer that runs (MTP layers included) needs an entry.
    pub replay: Option<&'a [Option<Tensor>]>,
    /// Mask the main head's logits to each position's kept tokens.
    pub vocab_mask: Option<&'a VocabMask>,
    /// Run the MTP modules too (the model must have been built with them; no cache).
    pub mtp: bool,
    /// The main head covers positions `head_from..T` only: logits (B, T − head_from, V), the
    /// vocabulary mask over those positions. What a caller scores or samples from is often the
    /// tail (a completion after its prompt, a prefill's last position), and the head's
    /// `T × d × V` product and its (B, T, V) logits are then mostly waste. 0: every position.
    pub head_from: i64,
    /// Run the tokens as prefix trees ([`crate::packing`]): the tokens are the packed (N, T) ids,
    /// positions and mask come from the packing, and the head reads the row layout back, so the
    /// logits are (B, L') as [`Packing::head_rows`] says. `head_from` must be 0 (the head rows
    /// say where the head starts).
    pub packing: Option<&'a Packing>,
}

impl<'a> ForwardOptions<'a> {
    /// A plain forward in `mode`: naive MLA, no cache, no hooks.
    pub fn new(mode: AttentionMode) -> Self {
        ForwardOptions {
            mode,
            path: MlaPath::Naive,
            cache: None,
            indexer_loss: None,
            replay: None,
            vocab_mask: None,
            mtp: false,
            head_from: 0,
            packing: None,
        }
    }

    /// The forward of a DSA training stage, returning its indexer losses.
    pub fn indexer_training(stage: IndexerStage) -> Self {
        ForwardOptions { indexer_loss: Some(stage), ..ForwardOptions::new(stage.mode()) }
    }
}

/// What one forward returns.
#[derive(Debug)]
pub struct ForwardOutput {
    /// Main head logits: (B, T − head_from, V) (see [`ForwardOptions::head_from`]); −∞ outside
    /// the vocabulary mask when one was given.
    pub logits: Tensor,
    /// Selections and routings of the main layers, then of the MTP layers when they ran.
    pub trace: Trace,
    /// The rows the trace's routings are in (the call's B, or a packing's N).
    pub trace_rows: i64,
    /// Indexer losses (same layer order as `trace`) when a stage was asked for.
    pub indexer: Option<IndexerLosses>,
    /// Per MTP depth k = 1, 2, …: logits (B, T−k, V); row i predicts token i+k+1.
    pub mtp_logits: Vec<Tensor>,
}

impl ForwardOutput {
    /// The recorded expert ids per layer, each (B, T', K) for the layer's T' rows (`None` for dense
    /// layers): what [`ForwardOptions::replay`] takes back.
    pub fn expert_ids(&self) -> Vec<Option<Tensor>> {
        let b = self.trace_rows;
        self.trace
            .routings
            .iter()
            .map(|r| {
                r.as_ref().map(|r| {
                    let (n, k) = (r.experts.size()[0], r.experts.size()[1]);
                    r.experts.view([b, n / b, k]) // (B, T', K)
                })
            })
            .collect()
    }

    /// Mean next-token cross-entropy of the main head over `tokens (B, T)`: scalar.
    pub fn lm_loss(&self, tokens: &Tensor) -> Tensor {
        -logprobs_of(&self.logits, tokens).mean(Kind::Float)
    }

    /// `L_MTP = mean_k L^k`, `L^k` = mean CE of depth k's logits against `t_{i+k+1}` over the
    /// rows that have such a token; `None` when no MTP depth ran. Scalar.
    pub fn mtp_loss(&self, tokens: &Tensor) -> Option<Tensor> {
        mtp_loss_of(&self.mtp_logits, tokens)
    }
}

/// [`ForwardOutput::mtp_loss`] from the MTP depths' logits (depth k: (B, T−k, V)) and the
/// forward's `tokens (B, T)`. Scalar.
pub fn mtp_loss_of(mtp_logits: &[Tensor], tokens: &Tensor) -> Option<Tensor> {
    let t = tokens.size()[1];
    let per_depth: Vec<Tensor> = mtp_logits
        .iter()
        .enumerate()
        .filter(|(m, _)| t - *m as i64 - 2 >= 1)
        .map(|(m, logits)| {
            let k = m as i64 + 1;
            // Row i of depth k predicts t_{i+k+1}: the shifted sequence t_k.. lines up.
            -logprobs_of(logits, &tokens.narrow(1, k, t - k)).mean(Kind::Float)
        })
        .collect();
    (!per_depth.is_empty()).then(|| Tensor::stack(&per_depth, 0).mean(Kind::Float))
}
