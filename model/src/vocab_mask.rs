//! "Keep sampling mask" (docs/model.md §3.3.7): the token ids that survived top-p/top-k when a
//! position was sampled, applied to the training forward's logits (others → −∞) so that π_θ's
//! log-probs are normalised over the same support as the sampler's π_old.
//!
//! A position whose mask keeps nothing (prompt tokens, padding, positions not sampled) is left
//! unmasked, so its log-softmax stays finite.
//!
//! Left out: applying the mask to π_ref (the reference marks it UNCONFIRMED; the caller may pass
//! the same mask to the reference model's forward).

use tch::{Kind, Tensor};

/// Which vocabulary entries each position keeps.
#[derive(Debug)]
pub enum VocabMask {
    /// `true` where kept: (B, T, V) bool.
    Dense(Tensor),
    /// Kept token ids per position: (B, T, K) i64, padded with −1.
    Kept(Tensor),
}

impl VocabMask {
    /// The kept set as a (B, T, V) bool tensor on `device`; empty rows keep everything.
    pub fn keep(&self, vocab: i64, device: tch::Device) -> Tensor {
        let keep = match self {
            VocabMask::Dense(m) => {
                let v = m.size()[2];
                assert_eq!(v, vocab, "vocabulary mask is (B, T, {v}), logits have V = {vocab}");
                m.to_kind(Kind::Bool).to_device(device)
            }
            VocabMask::Kept(ids) => {
                let (b, t) = (ids.size()[0], ids.size()[1]);
                let ids = ids.to_kind(Kind::Int64).to_device(device);
                // Padding (−1) goes to an extra column V that is cut off afterwards.
                let ids = ids.where_scalarother(&ids.ge(0), vocab); // (B, T, K)
                Tensor::zeros([b, t, vocab + 1], (Kind::Bool, device)).scatter_value(2, &ids, 1).narrow(2, 0, vocab)
                // (B, T, V)
            }
        };
        let empty = keep.any_dim(-1, true).logical_not(); // (B, T, 1)
        keep.logical_or(&empty)
    }

    /// The mask of positions `from..from + len` (of its T): what a chunk of the positions reads.
    pub fn narrow(&self, from: i64, len: i64) -> VocabMask {
        match self {
            VocabMask::Dense(m) => VocabMask::Dense(m.narrow(1, from, len)), // (B, len, V)
            VocabMask::Kept(ids) => VocabMask::Kept(ids.narrow(1, from, len)), // (B, len, K)
        }
    }

    /// `logits (B, T, V)` with every entry outside the kept set at −∞.
    pub fn apply(&self, logits: &Tensor) -> Tensor {
        let size = logits.size();
        let keep = self.keep(size[2], logits.device());
        assert_eq!(
            keep.size()[..2],
            size[..2],
            "vocabulary mask covers {:?} positions, logits {:?}",
            &keep.size()[..2],
            &size[..2]
        );
        logits.masked_fill(&keep.logical_not(), f64::NEG_INFINITY)
    }
}
