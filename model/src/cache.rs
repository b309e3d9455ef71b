//! Generation caches (docs/model.md §2.5.5): per sequence slot and layer, the normed KV latent
//! (`kv_lora_rank`), the rotated rope key (`qk_rope_head_dim`) and the indexer key
//! (`index_head_dim`, f32; none for a model without indexers), allocated once for a fixed number
//! of slots and a maximum length ([`KvCache::bytes`]: the engine sizes the slots from the memory
//! its device has); a step writes its tokens in place and never re-allocates.
//!
//! Each slot keeps its own length, so one call can extend slots of different lengths (prefill on
//! top of an existing prefix, or one decode step for many sequences). Rows of one call all add the
//! same number of tokens.
//!
//! Left out: FP8 KV storage, paging, and eviction (a finished slot is [`KvCache::reset`]).

use crate::attention::Keys;
use crate::config::ModelConfig;
use tch::{Device, Kind, Tensor};

/// One layer's cached keys for every slot.
#[derive(Debug)]
pub struct LayerCache {
    /// Normed KV latent: (N, S_max, C).
    pub latent: Tensor,
    /// Rotated rope key: (N, S_max, d_rope).
    pub pe: Tensor,
    /// Indexer keys: (N, S_max, d_I) f32; (N, S_max, 0) for a model without indexers.
    pub index: Tensor,
}

/// The cache of a whole model over a fixed set of sequence slots.
#[derive(Debug)]
pub struct KvCache {
    /// Per layer.
    pub layers: Vec<LayerCache>,
    lengths: Vec<i64>,
    capacity: i64,
    /// The last call's slots and their ids as a device tensor (B): every layer of one forward
    /// writes and reads the same slots, so the ids are copied to the device once per forward.
    last_ids: Option<(Vec<usize>, Tensor)>,
}

impl KvCache {
    /// Bytes one cached token takes over all layers: the latent and rope key in `kind`
    /// (`kv_lora_rank + qk_rope_head_dim` elements per layer), and the indexer key in f32
    /// (`index_head_dim`) when the model has indexers.
    pub fn bytes_per_token(cfg: &ModelConfig, kind: Kind) -> u64 {
        let low = (cfg.kv_lora_rank + cfg.qk_rope_head_dim) as u64 * kind.elt_size_in_bytes() as u64;
        let index = if cfg.has_indexer() { 4 * cfg.index_head_dim as u64 } else { 0 };
        cfg.num_hidden_layers as u64 * (low + index)
    }

    /// Bytes [`KvCache::new`] allocates for `slots` sequences of up to `capacity` tokens.
    pub fn bytes(cfg: &ModelConfig, slots: usize, capacity: usize, kind: Kind) -> u64 {
        Self::bytes_per_token(cfg, kind) * (slots * capacity) as u64
    }

    /// Room for `slots` sequences of up to `capacity` tokens, latent and rope key in `kind`.
    pub fn new(cfg: &ModelConfig, slots: usize, capacity: usize, kind: Kind, device: Device) -> Self {
        let (n, s) = (slots as i64, capacity as i64);
        let index_dim = if cfg.has_indexer() { cfg.index_head_dim as i64 } else { 0 };
        let layers = (0..cfg.num_hidden_layers)
            .map(|_| LayerCache {
                latent: Tensor::zeros([n, s, cfg.kv_lora_rank as i64], (kind, device)),
                pe: Tensor::zeros([n, s, cfg.qk_rope_head_dim as i64], (kind, device)),
                index: Tensor::zeros([n, s, index_dim], (Kind::Float, device)),
            })
            .collect();
        KvCache { layers, lengths: vec![0; slots], capacity: s, last_ids: None }
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.lengths.len()
    }

    /// Longest sequence a slot can hold.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// Tokens cached in `slot`.
    pub fn len(&self, slot: usize) -> usize {
        self.lengths[slot] as usize
    }

    /// Whether `slot` holds no tokens.
    pub fn is_empty(&self, slot: usize) -> bool {
        self.lengths[slot] == 0
    }

    /// Empties `slot` (its old entries are overwritten by the next sequence).
    pub fn reset(&mut self, slot: usize) {
        self.lengths[slot] = 0;
    }

    /// Positions `(B, T)` of `t` new tokens appended to each of `slots`.
    pub(crate) fn positions(&self, slots: &[usize], t: i64, device: Device) -> Tensor {
        let mut sorted = slots.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), slots.len(), "a cache slot appears twice in one call: {slots:?}");
        let mut pos = Vec::with_capacity(slots.len() * t as usize);
        for &slot in slots {
            let start = self.lengths[slot];
            assert!(
                start + t <= self.capacity,
                "slot {slot} would hold {} tokens, capacity {}",
                start + t,
                self.capacity
            );
            pos.extend(start..start + t);
        }
        Tensor::from_slice(&pos).view([slots.len() as i64, t]).to_device(device)
        // (B, T)
    }

    fn slot_index(slots: &[usize], device: Device) -> Tensor {
        let ids: Vec<i64> = slots.iter().map(|&s| s as i64).collect();
        Tensor::from_slice(&ids).to_device(device) // (B)
    }

    /// The ids of `slots` on `device`: the last call's when they are the same slots.
    fn cached_ids(&self, slots: &[usize], device: Device) -> Tensor {
        match &self.last_ids {
            Some((last, ids)) if last == slots && ids.device() == device => ids.shallow_clone(),
            _ => Self::slot_index(slots, device),
        }
    }

    /// Stores `keys (B, T, ·)` of layer `layer` at `q_pos (B, T)` in `slots`.
    pub(crate) fn write(&mut self, layer: usize, slots: &[usize], q_pos: &Tensor, keys: &Keys) {
        if self.write_rows(layer, slots, q_pos, keys) {
            return;
        }
        let ids = self.cached_ids(slots, q_pos.device());
        let rows = ids.unsqueeze(1).expand_as(q_pos); // (B, T)
        if self.last_ids.as_ref().is_none_or(|(last, kept)| last != slots || kept.device() != ids.device()) {
            self.last_ids = Some((slots.to_vec(), ids));
        }
        let c = &mut self.layers[layer];
        let at = [Some(rows), Some(q_pos.shallow_clone())];
        let _ = c.latent.index_put_(&at, &keys.latent.to_kind(c.latent.kind()), false);
        let _ = c.pe.index_put_(&at, &keys.pe.to_kind(c.pe.kind()), false);
        if c.index.size()[2] > 0 {
            let index = keys.index.as_ref().expect("cached calls compute the indexer keys");
            let _ = c.index.index_put_(&at, &index.to_kind(Kind::Float), false);
        }
    }

    /// [`Self::write`] as plain row copies on the engine's CPU steps (f32 keys and cache, the
    /// conditions of `crate::fused`): the same values land at the same places, without the three
    /// `index_put_` calls and their index tensors. False, with nothing written, where it does not
    /// apply.
    fn write_rows(&self, layer: usize, slots: &[usize], q_pos: &Tensor, keys: &Keys) -> bool {
        let c = &self.layers[layer];
        let mut pairs = vec![(&c.latent, &keys.latent), (&c.pe, &keys.pe)];
        if c.index.size()[2] > 0 {
            match &keys.index {
                Some(index) => pairs.push((&c.index, index)),
                None => return false,
            }
        }
        let (b, t, cap) = (slots.len(), q_pos.size()[1] as usize, self.capacity);
        let positions_ok = q_pos.kind() == Kind::Int64
            && q_pos.device() == Device::Cpu
            && q_pos.is_contiguous()
            && q_pos.size()[0] as usize == b
            && slots.iter().all(|&s| s < self.lengths.len());
        // Each store with the distance between its keys' rows, when every one can be copied.
        let strides: Option<Vec<usize>> = pairs
            .iter()
            .map(|(store, src)| {
                let fits = crate::fused::applies(&[store, src])
                    && store.is_contiguous()
                    && store.size()[..2] == [self.lengths.len() as i64, cap]
                    && src.size()[..2] == [b as i64, t as i64]
                    && src.size().last() == store.size().last();
                let (count, stride) = crate::fused::rows(src).filter(|_| fits)?;
                (count == b * t).then_some(stride)
            })
            .collect();
        let Some(strides) = strides.filter(|_| positions_ok) else { return false };
        // SAFETY: q_pos is a contiguous (B, T) i64 CPU tensor.
        let pos = unsafe { std::slice::from_raw_parts(q_pos.data_ptr() as *const i64, b * t) };
        if pos.iter().any(|&p| p < 0 || p >= cap) {
            return false;
        }
        for ((store, src), stride) in pairs.into_iter().zip(strides) {
            let width = *store.size().last().expect("3-d cache") as usize;
            let (from, to) = (src.data_ptr() as *const f32, store.data_ptr() as *mut f32);
            for (row, &p) in pos.iter().enumerate() {
                let at = (slots[row / t] as i64 * cap + p) as usize * width;
                // SAFETY: row < B·T rows of `src`, `stride` floats apart; `at` addresses position
                // p < capacity of slot slots[row / t] < slots in the contiguous (slots, cap, width)
                // store; the store and the keys are distinct tensors.
                unsafe { std::ptr::copy_nonoverlapping(from.add(row * stride), to.add(at), width) };
            }
        }
        true
    }

    /// Keys of `slots` at positions `0..S` (S = the longest slot after this call's tokens at
    /// `q_pos (B, T)`); entries past a slot's own length are masked causally by the caller.
    pub(crate) fn read(&self, layer: usize, slots: &[usize], q_pos: &Tensor) -> Keys {
        let c = &self.layers[layer];
        let t = q_pos.size()[1];
        let s = slots.iter().map(|&slot| self.lengths[slot]).max().unwrap_or(0) + t;
        // Slots `a, a+1, …` in order (the engine's usual batch) are a view of the cache; any other
        // set is gathered, its first S positions only. Either way row b holds slot `slots[b]`'s keys.
        let run = !slots.is_empty() && slots.windows(2).all(|w| w[1] == w[0] + 1);
        let rows = (!run).then(|| self.cached_ids(slots, q_pos.device()));
        let take = |x: &Tensor| match &rows {
            None => x.narrow(0, slots[0] as i64, slots.len() as i64).narrow(1, 0, s), // (B, S, ·)
            Some(rows) => x.narrow(1, 0, s).index_select(0, rows),                    // (B, S, ·)
        };
        let index = (c.index.size()[2] > 0).then(|| take(&c.index));
        Keys { latent: take(&c.latent), pe: take(&c.pe), index }
    }

    /// Records that `slots` grew by `t` tokens.
    pub(crate) fn advance(&mut self, slots: &[usize], t: i64) {
        for &slot in slots {
            self.lengths[slot] += t;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel;

    /// The row copies of the engine's CPU steps write what `index_put_` writes: two caches fed the
    /// same keys (a prefill of 3 tokens into slots 2 and 0, then one token into 0, 1 and 3, where
    /// the keys are a narrowed, non-contiguous view), one with the fast path and one without,
    /// are bit-identical.
    #[test]
    fn row_copies_equal_index_put() {
        let cfg = crate::config::small_preset();
        let (mut plain, mut fast) =
            (KvCache::new(&cfg, 4, 16, Kind::Float, Device::Cpu), KvCache::new(&cfg, 4, 16, Kind::Float, Device::Cpu));
        tch::manual_seed(2);
        let f = (Kind::Float, Device::Cpu);
        let keys = |b: i64, t: i64| Keys {
            latent: Tensor::randn([b, t, cfg.kv_lora_rank as i64 + 8], f).narrow(2, 4, cfg.kv_lora_rank as i64),
            pe: Tensor::randn([b, t, cfg.qk_rope_head_dim as i64], f),
            index: Some(Tensor::randn([b, t, cfg.index_head_dim as i64], f)),
        };
        for (slots, t) in [(vec![2usize, 0], 3i64), (vec![0, 1, 3], 1)] {
            let k = keys(slots.len() as i64, t);
            for layer in [0, 5] {
                let q_pos = plain.positions(&slots, t, Device::Cpu);
                plain.write(layer, &slots, &q_pos, &k);
                assert!(!plain.write_rows(layer, &slots, &q_pos, &k), "not taken outside the engine's steps");
                kernel::enabled(|| {
                    assert!(fast.write_rows(layer, &slots, &q_pos, &k), "taken inside them");
                });
            }
            plain.advance(&slots, t);
            fast.advance(&slots, t);
        }
        for (a, b) in plain.layers.iter().zip(&fast.layers) {
            assert!(a.latent.equal(&b.latent) && a.pe.equal(&b.pe) && a.index.equal(&b.index));
        }
        assert!(plain.layers[5].latent.abs().sum(Kind::Float).double_value(&[]) > 0.0, "something was written");
    }
}
