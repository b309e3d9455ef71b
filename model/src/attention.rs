//! The attention kernels of MLA (docs/model.md §2.5.4, §2.7), in plain tensor ops.
//!
//! - [`naive`]: "MHA mode": keys and values up-projected per head, `(B, T, S)` mask. Training and
//!   short prefills.
//! - [`absorbed`]: "MQA mode": `kv_b`'s key half folded into the query and its value half into
//!   the output, so attention runs over the 512+64 latent directly. Decode over a latent cache.
//! - [`absorbed_gathered`]: MQA mode over each query's own DSA selection `(B, T, k)`, gathered from
//!   the latent: memory grows with `T·k`, never `T·S`.
//!
//! Scores are `(q_nope·k_nope + q_pe·k_pe) · scale`; softmax in f32. All three give the same result
//! up to float rounding. Left out: fused kernels (FlashMLA) and FP8 KV.

use tch::{Kind, Tensor};

/// The query side of one layer's attention.
#[derive(Debug)]
pub struct Queries {
    /// Non-rope part: (B, T, H, d_nope).
    pub nope: Tensor,
    /// Rotated rope part: (B, T, H, d_rope).
    pub pe: Tensor,
    /// The normed query latent (input of the indexer's `wq_b`): (B, T, q_lora_rank).
    pub latent: Tensor,
}

/// The key side: what a generation cache stores per token.
#[derive(Debug)]
pub struct Keys {
    /// `kv_a_layernorm`-normed KV latent: (B, S, kv_lora_rank).
    pub latent: Tensor,
    /// Rotated shared rope key: (B, S, d_rope).
    pub pe: Tensor,
    /// The indexer's keys (B, S, d_I) f32, when computed.
    pub index: Option<Tensor>,
}

/// `kv_b_proj` split per head: key half `(H, d_nope, C)` and value half `(H, d_v, C)`.
#[derive(Debug)]
pub struct KvB {
    /// W_UK: (H, d_nope, C).
    pub uk: Tensor,
    /// W_UV: (H, d_v, C).
    pub uv: Tensor,
}

/// `true` where key `s` is visible to the query at `q_pos (B, T)`: (B, T, S).
pub fn causal(q_pos: &Tensor, s: i64) -> Tensor {
    let key_pos = Tensor::arange(s, (Kind::Int64, q_pos.device())).view([1, 1, s]);
    key_pos.le_tensor(&q_pos.unsqueeze(-1))
}

/// Masked softmax over the last dim in f32, back in `kind`.
fn softmax(scores: &Tensor, allowed: &Tensor, kind: Kind) -> Tensor {
    let masked = scores.to_kind(Kind::Float).masked_fill(&allowed.logical_not(), f64::NEG_INFINITY);
    masked.softmax(-1, Kind::Float).to_kind(kind)
}

/// MHA mode. `k_nope (B, S, H, d_nope)`, `v (B, S, H, d_v)`, `k_pe (B, S, d_rope)`,
/// `allowed (B, T, S)` → (B, T, H, d_v).
pub fn naive(q: &Queries, k_nope: &Tensor, k_pe: &Tensor, v: &Tensor, allowed: &Tensor, scale: f64) -> Tensor {
    let nope = Tensor::einsum("bthd,bshd->bhts", &[&q.nope, k_nope], None::<&[i64]>);
    let pe = Tensor::einsum("bthr,bsr->bhts", &[&q.pe, k_pe], None::<&[i64]>);
    let p = softmax(&((nope + pe) * scale), &allowed.unsqueeze(1), v.kind()); // (B, H, T, S)
    Tensor::einsum("bhts,bshd->bthd", &[&p, v], None::<&[i64]>)
}

/// MQA mode over all keys `keys (B, S, ·)` with `allowed (B, T, S)` → (B, T, H, d_v).
pub fn absorbed(q: &Queries, keys: &Keys, w: &KvB, allowed: &Tensor, scale: f64) -> Tensor {
    let q_abs = Tensor::einsum("bthd,hdc->bthc", &[&q.nope, &w.uk], None::<&[i64]>); // (B, T, H, C)
    let nope = Tensor::einsum("bthc,bsc->bths", &[&q_abs, &keys.latent], None::<&[i64]>);
    let pe = Tensor::einsum("bthr,bsr->bths", &[&q.pe, &keys.pe], None::<&[i64]>);
    let p = softmax(&((nope + pe) * scale), &allowed.unsqueeze(2), keys.latent.kind()); // (B, T, H, S)
    let o_lat = Tensor::einsum("bths,bsc->bthc", &[&p, &keys.latent], None::<&[i64]>); // (B, T, H, C)
    Tensor::einsum("bthc,hdc->bthd", &[&o_lat, &w.uv], None::<&[i64]>)
}

/// Upper bound on gathered latent elements held at once (rows × k × C).
const GATHER_BLOCK: i64 = 1 << 27;

/// Upper bound on the (B × H × T × S) score block of the masked-dense route of DSA.
const DENSE_SCORES: i64 = 1 << 27;

/// The selection `indices, valid (B, T, k)` as a mask over keys `0..s`: (B, T, S) bool. Counted
/// with `scatter_add`, so a placeholder entry that repeats a selected position cannot clear it.
fn selection_mask(indices: &Tensor, valid: &Tensor, s: i64) -> Tensor {
    let (b, t) = (indices.size()[0], indices.size()[1]);
    let hits = valid.to_kind(Kind::Int);
    Tensor::zeros([b, t, s], (Kind::Int, indices.device())).scatter_add(2, indices, &hits).gt(0)
    // (B, T, S)
}

/// MQA mode over each query's selected keys: `indices, valid (B, T, k)` → (B, T, H, d_v).
///
/// When the selection covers a sizeable share of short key sets (prefill, scoring: S ≤ 4k and the
/// score block fits [`DENSE_SCORES`]), it is cheaper to attend densely under the selection mask in
/// MHA mode than to gather `T·k` latent rows; both compute the same softmax over the same keys. Else
/// query rows are processed in blocks so the gathered latent stays bounded.
pub fn absorbed_gathered(q: &Queries, keys: &Keys, w: &KvB, indices: &Tensor, valid: &Tensor, scale: f64) -> Tensor {
    let (b, t, k) = (indices.size()[0], indices.size()[1], indices.size()[2]);
    let (s, c) = (keys.latent.size()[1], keys.latent.size()[2]);
    let h = q.nope.size()[2];
    if t > 1 && s <= 4 * k && b * h * t * s <= DENSE_SCORES {
        let allowed = selection_mask(indices, valid, s);
        let k_nope = Tensor::einsum("bsc,hdc->bshd", &[&keys.latent, &w.uk], None::<&[i64]>); // (B, S, H, d_nope)
        let v = Tensor::einsum("bsc,hdc->bshd", &[&keys.latent, &w.uv], None::<&[i64]>); // (B, S, H, d_v)
        return naive(q, &k_nope, &keys.pe, &v, &allowed, scale);
    }
    let block = (GATHER_BLOCK / (b * k * c).max(1)).clamp(1, t.max(1));
    let mut parts = Vec::new();
    for start in (0..t).step_by(block as usize) {
        let len = block.min(t - start);
        let qb = Queries {
            nope: q.nope.narrow(1, start, len),
            pe: q.pe.narrow(1, start, len),
            latent: q.latent.narrow(1, start, len),
        };
        let idx = indices.narrow(1, start, len);
        parts.push(gathered_block(&qb, keys, w, &idx, &valid.narrow(1, start, len), scale));
    }
    Tensor::cat(&parts, 1)
}

/// Rows `x[b, idx[b, t, j]]` of `x (B, S, D)` for `idx (B, T, k)`: (B, T, k, D).
fn gather_rows(x: &Tensor, idx: &Tensor) -> Tensor {
    let (b, t, k) = (idx.size()[0], idx.size()[1], idx.size()[2]);
    let d = x.size()[2];
    let flat = idx.reshape([b, t * k, 1]).expand([b, t * k, d], false); // (B, T·k, D)
    x.gather(1, &flat, false).view([b, t, k, d]) // (B, T, k, D)
}

fn gathered_block(q: &Queries, keys: &Keys, w: &KvB, idx: &Tensor, valid: &Tensor, scale: f64) -> Tensor {
    let lat = gather_rows(&keys.latent, idx); // (B, T, k, C)
    let pe = gather_rows(&keys.pe, idx); // (B, T, k, d_rope)
    let q_abs = Tensor::einsum("bthd,hdc->bthc", &[&q.nope, &w.uk], None::<&[i64]>); // (B, T, H, C)
    let s_nope = Tensor::einsum("bthc,btkc->bthk", &[&q_abs, &lat], None::<&[i64]>);
    let s_pe = Tensor::einsum("bthr,btkr->bthk", &[&q.pe, &pe], None::<&[i64]>);
    let p = softmax(&((s_nope + s_pe) * scale), &valid.unsqueeze(2), lat.kind()); // (B, T, H, k)
    let o_lat = Tensor::einsum("bthk,btkc->bthc", &[&p, &lat], None::<&[i64]>); // (B, T, H, C)
    Tensor::einsum("bthc,hdc->bthd", &[&o_lat, &w.uv], None::<&[i64]>)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// The masked-dense route of DSA equals gathering the selected keys.
    #[test]
    fn masked_dense_selection_equals_the_gathered_keys() {
        tch::manual_seed(5);
        let (b, t, h, c, dn, dr, dv, k) = (2, 12, 3, 8, 4, 2, 5, 6);
        let f = (Kind::Float, Device::Cpu);
        let q = Queries {
            nope: Tensor::randn([b, t, h, dn], f),
            pe: Tensor::randn([b, t, h, dr], f),
            latent: Tensor::randn([b, t, 4], f),
        };
        let keys = Keys { latent: Tensor::randn([b, t, c], f), pe: Tensor::randn([b, t, dr], f), index: None };
        let w = KvB { uk: Tensor::randn([h, dn, c], f), uv: Tensor::randn([h, dv, c], f) };
        let q_pos = Tensor::arange(t, (Kind::Int64, Device::Cpu)).unsqueeze(0).expand([b, t], true); // (B, T)
        let scores = Tensor::randn([b, t, t], f).masked_fill(&causal(&q_pos, t).logical_not(), f64::NEG_INFINITY);
        let indices = scores.topk(k, -1, true, true).1; // (B, T, k)
        let valid = indices.le_tensor(&q_pos.unsqueeze(-1));
        assert!(t > 1 && t <= 4 * k, "the masked-dense route is taken");
        let dense = absorbed_gathered(&q, &keys, &w, &indices, &valid, 0.3);
        let gathered = gathered_block(&q, &keys, &w, &indices, &valid, 0.3);
        let d = (dense - gathered).abs().max().double_value(&[]);
        assert!(d < 1e-5, "{d:e}");
    }
}
