//! "Keep sampling mask" (docs/model.md §3.3.7): the token ids that survived top-p/top-k when a
//! position was sampled, applied to the training forward's logits (others → −∞) so that π_θ's
//! log-probs are normalised over the same support as the sampler's π_old.
//!
//! The kept sets are a compressed sparse row record ([`KeptSets`]): one offset per (B, T)
//! position into one flat list of ids, held on the host. Sets are ragged — a confident position
//! keeps a handful of ids, a flat one (top-p near 1) nearly the whole vocabulary — so padding every
//! position to the widest set would cost B·T·V ids once one position is wide. The mask is applied
//! to the logits in place, a chunk of rows at a time: each chunk's ids go to the device and become
//! an additive (rows, V) bias of 0 (kept) and −∞ (dropped). Adding a constant keeps nothing for
//! the backward (its gradient passes through), so at no time does more than one chunk's mask
//! exist, and the masked logits, log-softmax and gradients are those of a whole (B, T, V) boolean
//! mask bit for bit (model/tests/vocab_mask.rs).
//!
//! A position whose mask keeps nothing (prompt tokens, padding, positions not sampled) is left
//! unmasked, so its log-softmax stays finite.
//!
//! Left out: applying the mask to π_ref (the reference marks it UNCONFIRMED; the caller may pass
//! the same mask to the reference model's forward).

use std::sync::Arc;
use tch::{Device, Kind, Tensor};

/// Elements of one chunk's (rows, V) bias: 2^24 (64 MiB in f32).
pub const MASK_CHUNK_ELEMENTS: i64 = 1 << 24;

/// Which vocabulary entries each position keeps.
#[derive(Debug)]
pub enum VocabMask {
    /// `true` where kept: (B, T, V) bool.
    Dense(Tensor),
    /// The kept ids of each position, compressed.
    Kept(KeptSets),
}

/// The kept sets of (B, T) positions as compressed sparse rows: position (b, t)'s ids are
/// `ids[offsets[r]..offsets[r + 1]]`, r = b·T + t; an empty set keeps everything. Host memory, a
/// window of the positions (cheap to narrow: the record is shared).
#[derive(Debug, Clone)]
pub struct KeptSets {
    record: Arc<Record>,
    /// The window `from..from + len` of the T positions this mask covers.
    from: usize,
    len: usize,
}

/// The shared CSR arrays.
#[derive(Debug)]
struct Record {
    batch: usize,
    positions: usize,
    /// B·T + 1 offsets into `ids`, non-decreasing, from 0 to `ids.len()`.
    offsets: Vec<usize>,
    ids: Vec<i64>,
}

impl KeptSets {
    /// The kept sets of `batch × positions` positions from `(b, t) → ids` entries (in any order;
    /// positions without an entry keep everything). Panics on a position outside the grid or
    /// given twice.
    pub fn new<'a>(
        batch: usize,
        positions: usize,
        sets: impl IntoIterator<Item = ((usize, usize), &'a [i64])>,
    ) -> Self {
        let mut at: Vec<(usize, &[i64])> = sets
            .into_iter()
            .map(|((b, t), ids)| {
                assert!(b < batch && t < positions, "kept set at ({b}, {t}) is outside ({batch}, {positions})");
                (b * positions + t, ids)
            })
            .collect();
        at.sort_unstable_by_key(|(r, _)| *r);
        assert!(at.windows(2).all(|w| w[0].0 != w[1].0), "a position has two kept sets");
        let mut offsets = Vec::with_capacity(batch * positions + 1);
        let mut ids = Vec::with_capacity(at.iter().map(|(_, s)| s.len()).sum());
        let mut next = at.into_iter().peekable();
        offsets.push(0);
        for r in 0..batch * positions {
            if let Some((_, set)) = next.next_if(|(at, _)| *at == r) {
                ids.extend_from_slice(set);
            }
            offsets.push(ids.len());
        }
        let record = Record { batch, positions, offsets, ids };
        KeptSets { record: Arc::new(record), from: 0, len: positions }
    }

    /// (B, T) of the positions covered.
    pub fn shape(&self) -> (usize, usize) {
        (self.record.batch, self.len)
    }

    /// Kept ids recorded in the whole record (every position, not only the window).
    pub fn total_ids(&self) -> usize {
        self.record.ids.len()
    }

    /// The kept set of position (b, t) of the window (empty: everything kept).
    pub fn set(&self, b: usize, t: usize) -> &[i64] {
        let (batch, len) = self.shape();
        assert!(b < batch && t < len, "position ({b}, {t}) is outside ({batch}, {len})");
        let r = b * self.record.positions + self.from + t;
        &self.record.ids[self.record.offsets[r]..self.record.offsets[r + 1]]
    }

    /// The additive bias of the window's flat rows `first..first + n` (row o = b·len + t): (n, V)
    /// of `kind` on `device`, 0 where kept (everywhere on an empty row), −∞ elsewhere.
    fn bias(&self, first: usize, n: usize, vocab: i64, kind: Kind, device: Device) -> Tensor {
        let (mut rows, mut ids, mut open) = (Vec::new(), Vec::new(), Vec::new());
        for o in first..first + n {
            let (b, t) = (o / self.len, o % self.len);
            let set = self.set(b, t);
            if let Some(&bad) = set.iter().find(|&&id| id < 0 || id >= vocab) {
                panic!("kept set at ({b}, {}) holds id {bad}, outside the vocabulary of {vocab}", self.from + t);
            }
            rows.extend(std::iter::repeat_n((o - first) as i64, set.len()));
            ids.extend_from_slice(set);
            if set.is_empty() {
                open.push((o - first) as i64);
            }
        }
        let bias = Tensor::full([n as i64, vocab], f64::NEG_INFINITY, (kind, device)); // (n, V)
        let at = [Some(Tensor::from_slice(&rows).to_device(device)), Some(Tensor::from_slice(&ids).to_device(device))];
        let zero = Tensor::zeros([], (kind, device));
        let bias = bias.index_put(&at, &zero, false);
        bias.index_fill(0, &Tensor::from_slice(&open).to_device(device), 0.0)
    }
}

impl VocabMask {
    /// The mask of positions `from..from + len` (of its T): what a chunk of the positions reads.
    pub fn narrow(&self, from: i64, len: i64) -> VocabMask {
        match self {
            VocabMask::Dense(m) => VocabMask::Dense(m.narrow(1, from, len)), // (B, len, V)
            VocabMask::Kept(k) => {
                let (from, len) = (from as usize, len as usize);
                assert!(from + len <= k.len, "positions {from}..{} of a mask over {}", from + len, k.len);
                VocabMask::Kept(KeptSets { record: k.record.clone(), from: k.from + from, len })
            }
        }
    }

    /// `logits (B, T, V)` with every entry outside the kept set at −∞, in place, in chunks of
    /// [`MASK_CHUNK_ELEMENTS`] (module notes). `logits` must not be a leaf that requires grad.
    pub fn apply(&self, logits: Tensor) -> Tensor {
        let rows = (MASK_CHUNK_ELEMENTS / logits.size()[2].max(1)).max(1);
        self.apply_in_chunks(logits, rows)
    }

    /// [`VocabMask::apply`] with `rows` positions per chunk (≥ 1).
    pub fn apply_in_chunks(&self, logits: Tensor, rows: i64) -> Tensor {
        let size = logits.size();
        assert_eq!(size.len(), 3, "logits must be (B, T, V), got {size:?}");
        let (b, t, v) = (size[0], size[1], size[2]);
        let covered = match self {
            VocabMask::Dense(m) => [m.size()[0], m.size()[1]],
            VocabMask::Kept(k) => [k.shape().0 as i64, k.shape().1 as i64],
        };
        assert_eq!(covered, [b, t], "vocabulary mask covers {covered:?} positions, logits {:?}", [b, t]);
        if let VocabMask::Dense(m) = self {
            assert_eq!(m.size()[2], v, "vocabulary mask is (B, T, {}), logits have V = {v}", m.size()[2]);
        }
        assert!(logits.is_contiguous(), "the vocabulary mask is applied in place: logits must be contiguous");
        assert!(
            !(logits.is_leaf() && logits.requires_grad()),
            "the vocabulary mask is applied in place: logits must not be a leaf that requires grad"
        );
        let flat = logits.view([b * t, v]); // (B·T, V), shares the logits' storage
        let dense = match self {
            VocabMask::Dense(m) => Some(m.reshape([b * t, v])), // (B·T, V)
            VocabMask::Kept(_) => None,
        };
        let (kind, device) = (logits.kind(), logits.device());
        let rows = rows.max(1);
        for first in (0..b * t).step_by(rows as usize) {
            let n = rows.min(b * t - first);
            let bias = tch::no_grad(|| match (self, &dense) {
                (_, Some(m)) => dense_bias(&m.narrow(0, first, n), kind, device),
                (VocabMask::Kept(k), None) => k.bias(first as usize, n as usize, v, kind, device),
                (VocabMask::Dense(_), None) => unreachable!("reshaped above"),
            }); // (n, V)
            let _ = flat.narrow(0, first, n).g_add_(&bias); // (n, V), in place
        }
        logits
    }
}

/// The additive bias of `keep (n, V)` bool rows: 0 where kept (everywhere on a row that keeps
/// nothing), −∞ elsewhere.
fn dense_bias(keep: &Tensor, kind: Kind, device: Device) -> Tensor {
    let keep = keep.to_kind(Kind::Bool).to_device(device);
    let keep = keep.logical_or(&keep.any_dim(-1, true).logical_not()); // (n, V)
    Tensor::zeros(keep.size(), (kind, device)).masked_fill(&keep.logical_not(), f64::NEG_INFINITY)
}
