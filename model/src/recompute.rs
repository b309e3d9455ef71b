//! Layer-wise activation checkpointing and the chunked loss head: a training step's forward and
//! backward that keeps, for the backward, each decoder layer's input hidden state (B, T, d) and one
//! layer's activations at a time, and never the whole (B, T, V) log-softmax.
//!
//! tch has no custom autograd function, so the recomputation is a driver around the layers, not a
//! node of the graph ([`DeepseekV32::backward_checkpointed`]):
//!
//! 1. every decoder layer runs without autograd, keeping its input `h_l` (and the per-layer records
//!    the caller reads: selections, routings, indexer-loss values);
//! 2. the loss head runs on a detached copy of `h_L` that requires grad. The main head's log-probs of
//!    the targets are computed in chunks of positions, twice: once without autograd for the whole
//!    (B, T') log-prob tensor, whose loss (a detached leaf) is backpropagated to `∂L/∂logp`; then
//!    chunk by chunk with autograd, each chunk's `Σ logp_c · ∂L/∂logp_c` backpropagated before the
//!    next is computed. The MTP modules run whole with autograd, their terms joining the last
//!    chunk's backward. These backwards leave `∂L/∂h_L` in the copy's gradient;
//! 3. for l = L−1 … 0, layer l runs again with autograd from a detached copy of `h_l`, and
//!    `Σ out_l · ∂L/∂out_l + layer_loss_l` is backpropagated: the layer's parameter gradients
//!    accumulate and the copy's gradient is `∂L/∂h_l`;
//! 4. the embedding likewise.
//!
//! The forward draws nothing at random (no dropout; top-k ties go to the lower position, routing
//! is a deterministic top-k), so the recomputed layer is the forward's, bit for bit, and so are its
//! selections and routings. `Σ out · g` hands the layer exactly `g` (its gradient is `1 · g`). With
//! the head in one chunk, the head's parameters and every indexer (which reads its layer's detached
//! inputs) get the plain backward's gradients bit for bit; the others agree to float rounding: a
//! hidden state's gradient is a sum of three or more contributions (an RMSNorm's two uses, the
//! residual, MTP's read of h_L) that the autograd engine adds in arrival order, which one graph per
//! layer need not keep (model/tests/recompute.rs states the bound). With several chunks the
//! `lm_head` and final-norm gradients are also sums over chunks, another association of the same
//! float sum.
//!
//! Left out: checkpointing inside a layer (attention alone), the MTP layers (they run whole in the
//! head, one layer per depth), and a cache (generation runs no backward).

use crate::forward::ForwardOptions;
use crate::indexer_loss::{IndexerLosses, LayerIndexerLoss};
use crate::mlp::linear;
use crate::model::{check_options, head_input, DeepseekV32, Recorder, Trace};
use crate::vocab_mask::VocabMask;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// What a training step keeps for its backward, as recipes spell it (`run.activation_checkpointing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Checkpointing {
    /// Every activation (one autograd graph over the whole forward).
    #[default]
    None,
    /// Each decoder layer's input; the layer is recomputed in the backward, and the loss head runs
    /// in chunks of positions ([`head_chunk`]).
    Layer,
}

/// Elements of one chunk's (B, c, V) logits in the chunked head: 2^26 (256 MiB in f32).
pub const HEAD_CHUNK_ELEMENTS: i64 = 1 << 26;

/// Positions per chunk of the loss head for `batch` rows over a `vocab`-sized vocabulary: as many
/// as keep one chunk's logits within [`HEAD_CHUNK_ELEMENTS`], at least 1.
pub fn head_chunk(batch: i64, vocab: i64) -> i64 {
    (HEAD_CHUNK_ELEMENTS / (batch * vocab).max(1)).max(1)
}

/// The main head's part of the loss.
pub struct MainHead<'a> {
    /// Next-token targets: (B, T') i64, T' ≤ T, target j scored at position j.
    pub targets: &'a Tensor,
    /// Positions per chunk (≥ 1; T or more: one chunk).
    pub chunk: i64,
    /// Also return each position's entropy (no gradient).
    pub entropy: bool,
    /// The loss from `log π(targets)` (B, T') f32: scalar.
    pub loss: &'a mut dyn FnMut(&Tensor) -> Tensor,
}

/// The MTP term of a [`LossHead`]: from the depths' logits to a scalar (`None`: no term).
pub type MtpTerm<'a> = &'a mut dyn FnMut(&[Tensor]) -> Option<Tensor>;

/// The loss a checkpointed backward optimises: `main + mtp + Σ_l indexer_l`, each part optional.
#[derive(Default)]
pub struct LossHead<'a> {
    /// The main head's term.
    pub main: Option<MainHead<'a>>,
    /// The MTP term from the depths' logits (depth k: (B, T−k, V)); `None` from the closure when no
    /// depth has a target. Needs `ForwardOptions::mtp`.
    pub mtp: Option<MtpTerm<'a>>,
    /// One layer's indexer-loss term (main layers, then MTP): scalar. Needs
    /// `ForwardOptions::indexer_loss`.
    pub indexer: Option<&'a mut dyn FnMut(&LayerIndexerLoss) -> Tensor>,
}

/// What a checkpointed step returns besides the gradients (all without gradient).
#[derive(Debug)]
pub struct Recomputed {
    /// `log π(targets)` of the main head: (B, T') f32.
    pub logp: Option<Tensor>,
    /// The entropy of the main head's distribution at those positions (B, T') f32, when asked.
    pub entropy: Option<Tensor>,
    /// Selections and routings, as [`crate::ForwardOutput::trace`].
    pub trace: Trace,
    /// The indexer losses' values, as [`crate::ForwardOutput::indexer`].
    pub indexer: Option<IndexerLosses>,
}

impl DeepseekV32 {
    /// The backward of `head`'s loss over the forward of `tokens (B, T)` under `opts` (no cache),
    /// recomputing each layer (module header): the parameters' gradients accumulate as
    /// `head`'s loss's `backward()` would make them.
    pub fn backward_checkpointed(&self, tokens: &Tensor, opts: ForwardOptions<'_>, head: LossHead<'_>) -> Recomputed {
        let size = tokens.size();
        assert_eq!(size.len(), 2, "tokens must be (B, T), got {size:?}");
        check_options(&opts, !self.mtp.is_empty(), &self.config);
        assert!(opts.cache.is_none(), "a checkpointed backward runs without a cache");
        assert!(head.mtp.is_none() || opts.mtp, "an MTP loss needs ForwardOptions::mtp");
        let LossHead { main, mtp, mut indexer } = head;
        let pos = self.positions_of(tokens, &opts);

        // 1. The forward without autograd, keeping each layer's input.
        let mut rec = Recorder::new(opts.indexer_loss.is_some());
        let mut inputs = Vec::with_capacity(self.layers.len());
        let h = tch::no_grad(|| {
            let mut h = Tensor::embedding(&self.embed_tokens, tokens, -1, false, false); // (B, T, d)
            for (i, layer) in self.layers.iter().enumerate() {
                inputs.push(h.shallow_clone());
                h = rec.push(layer.forward(&h, &pos, None, &self.layer_options(&opts, i)));
            }
            h
        });

        // 2. The head on a leaf copy of h_L. The MTP terms are built after the main head's last
        // chunk and join its backward: a one-chunk head is one backward over a graph built in the
        // plain forward's order, so its gradient contributions are summed in the same order.
        let h_last = h.detach().set_requires_grad(true);
        let mut mtp_rec = Recorder::new(opts.indexer_loss.is_some());
        let mtp_terms = || {
            let mut terms = Vec::new();
            if opts.mtp {
                let logits = self.run_mtp(tokens, &h_last, &pos, &opts, &mut mtp_rec);
                terms.extend(mtp.and_then(|f| f(&logits)));
                if let (Some(f), Some(losses)) = (indexer.as_mut(), &mtp_rec.indexer) {
                    terms.extend(losses.layers.iter().map(&mut *f));
                }
            }
            terms
        };
        let (logp, entropy) = match main {
            Some(main) => {
                let (logp, entropy) = match opts.packing {
                    None => self.main_head(&head_input(&h_last, &opts), main, opts.vocab_mask, mtp_terms),
                    // The head's chunks each backpropagate on their own, so the read-back of the
                    // packed rows is a leaf of its own, its gradient carried to h_L after them.
                    Some(packing) => {
                        let rows = packing.head_input(&h_last.detach()).set_requires_grad(true); // (B, L', d)
                        let out = self.main_head(&rows, main, opts.vocab_mask, mtp_terms);
                        if let Some(g) = defined(rows.grad()) {
                            backward_sum(vec![(packing.head_input(&h_last) * g).sum(Kind::Float)]);
                        }
                        out
                    }
                };
                (Some(logp), entropy)
            }
            None => {
                backward_sum(mtp_terms());
                (None, None)
            }
        };
        rec.trace.selections.extend(mtp_rec.trace.selections);
        rec.trace.routings.extend(mtp_rec.trace.routings);
        if let (Some(all), Some(losses)) = (rec.indexer.as_mut(), mtp_rec.indexer) {
            all.layers.extend(losses.layers.into_iter().map(detached));
        }
        let mut grad = defined(h_last.grad());

        // 3. The layers in reverse, each recomputed with autograd.
        for (i, layer) in self.layers.iter().enumerate().rev() {
            let x = inputs[i].detach().set_requires_grad(grad.is_some());
            let out = layer.forward(&x, &pos, None, &self.layer_options(&opts, i));
            let mut terms = Vec::new();
            if let Some(g) = &grad {
                terms.push((&out.hidden * g).sum(Kind::Float));
            }
            if let (Some(f), Some(loss)) = (indexer.as_mut(), &out.indexer) {
                terms.push(f(loss));
            }
            backward_sum(terms);
            grad = grad.and_then(|_| defined(x.grad()));
            inputs.pop();
        }

        // 4. The embedding.
        if let (Some(g), true) = (grad, self.embed_tokens.requires_grad()) {
            let e = Tensor::embedding(&self.embed_tokens, tokens, -1, false, false); // (B, T, d)
            (e * g).sum(Kind::Float).backward();
        }
        Recomputed { logp, entropy, trace: rec.trace, indexer: rec.indexer }
    }

    /// `log π(targets)` (B, T') of the forward of `tokens (B, T)` under `opts` (no cache, no
    /// hooks but replay and the vocabulary mask), without autograd and with the head in chunks of
    /// `chunk` positions: a frozen reference's log-probs without its (B, T, V) log-softmax.
    pub fn target_logprobs_chunked(
        &self,
        tokens: &Tensor,
        opts: ForwardOptions<'_>,
        targets: &Tensor,
        chunk: i64,
    ) -> Tensor {
        check_options(&opts, !self.mtp.is_empty(), &self.config);
        assert!(opts.cache.is_none() && opts.indexer_loss.is_none() && !opts.mtp, "a plain forward only");
        tch::no_grad(|| {
            let pos = self.positions_of(tokens, &opts);
            let mut h = Tensor::embedding(&self.embed_tokens, tokens, -1, false, false); // (B, T, d)
            for (i, layer) in self.layers.iter().enumerate() {
                h = layer.forward(&h, &pos, None, &self.layer_options(&opts, i)).hidden;
            }
            let h = head_input(&h, &opts); // (B, T', d)
            let t = h.size()[1];
            let chunk = chunk.max(1);
            let parts: Vec<Tensor> = (0..targets.size()[1])
                .step_by(chunk as usize)
                .map(|s| self.head_chunk(&h.narrow(1, s, chunk.min(t - s)), targets, opts.vocab_mask, s, false).0)
                .collect();
            Tensor::cat(&parts, 1) // (B, T')
        })
    }

    /// The main head's two passes over `h (B, T, d)` (a leaf): log-probs (B, T') and entropies
    /// without autograd, the loss's gradient in them, then each chunk's backward (the last one's
    /// with the `other` terms).
    fn main_head(
        &self,
        h: &Tensor,
        main: MainHead<'_>,
        mask: Option<&VocabMask>,
        other: impl FnOnce() -> Vec<Tensor>,
    ) -> (Tensor, Option<Tensor>) {
        let MainHead { targets, chunk, entropy, loss } = main;
        let (t, t_out) = (h.size()[1], targets.size()[1]);
        assert!(t_out <= t, "the head has {t} positions, the targets {t_out}");
        let chunk = chunk.max(1);
        let chunks: Vec<(i64, i64)> = (0..t_out).step_by(chunk as usize).map(|s| (s, chunk.min(t - s))).collect();
        let (parts, entropies): (Vec<Tensor>, Vec<Option<Tensor>>) = tch::no_grad(|| {
            chunks.iter().map(|&(s, c)| self.head_chunk(&h.narrow(1, s, c), targets, mask, s, entropy)).unzip()
        });
        let logp = Tensor::cat(&parts, 1); // (B, T')
        let entropy = entropy.then(|| Tensor::cat(&entropies.into_iter().flatten().collect::<Vec<_>>(), 1));
        let leaf = logp.detach().set_requires_grad(true);
        backward_sum(vec![loss(&leaf)]);
        let mut other = Some(other);
        if let Some(g) = defined(leaf.grad()) {
            for (i, &(s, c)) in chunks.iter().enumerate() {
                let (part, _) = self.head_chunk(&h.narrow(1, s, c), targets, mask, s, false);
                let n = part.size()[1];
                let mut terms = vec![(part * g.narrow(1, s, n)).sum(Kind::Float)];
                if i + 1 == chunks.len() {
                    terms.extend(other.take().map_or_else(Vec::new, |f| f()));
                }
                backward_sum(terms);
            }
        }
        if let Some(f) = other {
            backward_sum(f());
        }
        (logp, entropy)
    }

    /// `log π(targets)` at positions `from..` of `h (B, c, d)`, those that have a target
    /// ((B, c') f32), and their entropies when asked.
    fn head_chunk(
        &self,
        h: &Tensor,
        targets: &Tensor,
        mask: Option<&VocabMask>,
        from: i64,
        entropy: bool,
    ) -> (Tensor, Option<Tensor>) {
        let c = h.size()[1];
        let mut logits = linear(&self.norm.forward(h), &self.lm_head); // (B, c, V)
        if let Some(mask) = mask {
            logits = mask.narrow(from, c).apply(logits);
        }
        let n = c.min(targets.size()[1] - from);
        let logp_all = logits.narrow(1, 0, n).log_softmax(-1, Kind::Float); // (B, c', V)
        let logp = logp_all.gather(-1, &targets.narrow(1, from, n).unsqueeze(-1), false).squeeze_dim(-1); // (B, c')
        (logp, entropy.then(|| token_entropy(&logp_all)))
    }
}

/// `H = −Σ_v p log p` per position of `logp_all (B, T, V)` (−∞ entries count 0): (B, T) f32, no
/// gradient.
pub fn token_entropy(logp_all: &Tensor) -> Tensor {
    tch::no_grad(|| {
        let finite = logp_all.masked_fill(&logp_all.isinf(), 0.0);
        -(logp_all.exp() * finite).sum_dim_intlist(-1, false, Kind::Float) // (B, T)
    })
}

/// Backpropagates the sum of `terms` (nothing when there are none or none has a gradient).
fn backward_sum(terms: Vec<Tensor>) {
    let mut terms = terms.into_iter();
    let Some(first) = terms.next() else { return };
    let total = terms.fold(first, |acc, t| acc + t);
    if total.requires_grad() {
        total.backward();
    }
}

/// `Some(g)` when the gradient `g` is defined.
fn defined(g: Tensor) -> Option<Tensor> {
    g.defined().then_some(g)
}

/// A layer's indexer loss without its graph.
fn detached(l: LayerIndexerLoss) -> LayerIndexerLoss {
    LayerIndexerLoss { kl: l.kl.detach(), recall: l.recall.map(|r| r.detach()) }
}
