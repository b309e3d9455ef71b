//! The attention kernels of MLA (docs/model.md §2.5.4, §2.7).
//!
//! - [`naive`]: "MHA mode": keys and values up-projected per head, attention through libtorch's
//!   `scaled_dot_product_attention` ([`Mask::Causal`], or a `(B, T, S)` mask). Training and
//!   prefills.
//! - [`absorbed`]: "MQA mode": `kv_b`'s key half folded into the query and its value half into
//!   the output, so attention runs over the 512+64 latent directly. Decode over a latent cache.
//! - [`absorbed_gathered`]: MQA mode over each query's own DSA selection `(B, T, k)`, gathered from
//!   the latent: memory grows with `T·k`, never `T·S`.
//!
//! Scores are `(q_nope·k_nope + q_pe·k_pe) · scale`; softmax in f32. All three give the same result
//! up to float rounding.
//!
//! Why [`naive`] goes through `scaled_dot_product_attention`: training runs in MHA mode, and an
//! einsum softmax keeps the `(B, H, T, S)` probabilities for backward (8.2 GB per layer for 8 heads
//! at 16K tokens). libtorch's fused kernels (flash attention on the CPU and CUDA) walk the keys in
//! blocks with an online softmax and keep only their inputs, the output and one log-sum-exp per
//! query row and head: O(T) per head. Three details of the kernels shape the call:
//! - The flash kernels need one head size for queries, keys and values; MLA's differ
//!   (`d_nope + d_rope` = 192 against `d_v` = 128 for V3.2). With unequal sizes libtorch silently
//!   takes its math kernel, which materialises and keeps the probabilities, so the values are
//!   zero-padded to the query size and the output's padding sliced off: zero columns of `v` give
//!   zero output columns and change neither the other columns nor any gradient.
//! - bf16: the CPU kernel accumulates `q·k`, the softmax and `p·v` in f32 and rounds the
//!   probabilities to bf16 for the `p·v` product, which is what the einsum path did (its softmax
//!   in f32, then back in the input kind); its scores are more exact (accumulated in f32, not
//!   rounded to bf16 first).
//! - A query row with no visible key gets zeros (the einsum softmax gave NaN). None occur: a query
//!   always sees its own key, and a DSA selection always holds one causal key.
//!
//! Left out: FlashMLA-style kernels over the latent, FP8 KV.

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

/// Which keys each query of [`naive`] sees.
#[derive(Debug, Clone, Copy)]
pub enum Mask<'a> {
    /// Queries and keys at positions `0..T` (S = T): key s is visible to query t iff s ≤ t.
    Causal,
    /// `true` where key s is visible to query t: (B, T, S) bool.
    Allowed(&'a Tensor),
}

/// MHA mode. `k_nope (B, S, H, d_nope)`, `v (B, S, H, d_v)`, `k_pe (B, S, d_rope)` → (B, T, H, d_v).
pub fn naive(q: &Queries, k_nope: &Tensor, k_pe: &Tensor, v: &Tensor, mask: Mask<'_>, scale: f64) -> Tensor {
    let (b, s, h, dv) = v.size4().expect("values are (B, S, H, d_v)");
    let dr = k_pe.size()[2];
    let query = Tensor::cat(&[&q.nope, &q.pe], -1); // (B, T, H, d_qk)
    let key = Tensor::cat(&[k_nope, &k_pe.unsqueeze(2).expand([b, s, h, dr], false)], -1); // (B, S, H, d_qk)
                                                                                           // One head size for all three, or libtorch falls back to its O(T·S) math kernel (module docs).
    let width = query.size()[3].max(dv);
    let pad = |x: &Tensor| match width - x.size()[3] {
        0 => x.shallow_clone(),
        n => x.constant_pad_nd([0, n]),
    };
    let (query, key, value) = (pad(&query), pad(&key), pad(v)); // (B, ·, H, width)
    let attn_mask = match mask {
        Mask::Causal => None,
        Mask::Allowed(allowed) => Some(allowed.unsqueeze(1)), // (B, 1, T, S)
    };
    let is_causal = matches!(mask, Mask::Causal);
    let o = Tensor::scaled_dot_product_attention(
        &query.transpose(1, 2), // (B, H, T, width)
        &key.transpose(1, 2),   // (B, H, S, width)
        &value.transpose(1, 2), // (B, H, S, width)
        attn_mask,
        0.0,
        is_causal,
        scale,
        false,
    ); // (B, H, T, width)
    o.transpose(1, 2).narrow(-1, 0, dv) // (B, T, H, d_v)
}

/// MQA mode over all keys `keys (B, S, ·)` with `allowed (B, T, S)` (`None`: every query sees
/// every key, as in a decode step whose sequences all end at the last key) → (B, T, H, d_v).
///
/// Every product is one `bmm` over explicit shapes: per head for the two `kv_b` halves, per
/// sequence for the scores and the latent output. The same contractions as einsum's
/// (`bthd,hdc->bthc`, `bthc,bsc->bths`, `bths,bsc->bthc`, `bthc,hdc->bthd`), without its
/// per-call planning, which cost a decode step more than the products themselves at batch 1.
pub fn absorbed(q: &Queries, keys: &Keys, w: &KvB, allowed: Option<&Tensor>, scale: f64) -> Tensor {
    let (b, t, h, d) = q.nope.size4().expect("query nope part is (B, T, H, d_nope)");
    let (r, c, dv) = (q.pe.size()[3], w.uk.size()[2], w.uv.size()[1]);
    let s = keys.latent.size()[1];
    let q_abs = q.nope.reshape([b * t, h, d]).transpose(0, 1).bmm(&w.uk); // (H, B·T, C)
    let q_abs = q_abs.transpose(0, 1).reshape([b, t * h, c]); // (B, T·H, C)
    let nope = q_abs.bmm(&keys.latent.transpose(1, 2)); // (B, T·H, S)
    let pe = q.pe.reshape([b, t * h, r]).bmm(&keys.pe.transpose(1, 2)); // (B, T·H, S)
    let scores = ((nope + pe) * scale).view([b, t, h, s]);
    let p = match allowed {
        Some(allowed) => softmax(&scores, &allowed.unsqueeze(2), keys.latent.kind()),
        None => scores.softmax(-1, Kind::Float).to_kind(keys.latent.kind()),
    }; // (B, T, H, S)
    let o_lat = p.view([b, t * h, s]).bmm(&keys.latent); // (B, T·H, C)
    let o = o_lat.view([b * t, h, c]).transpose(0, 1).bmm(&w.uv.transpose(1, 2)); // (H, B·T, d_v)
    o.transpose(0, 1).reshape([b, t, h, dv])
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
        return naive(q, &k_nope, &keys.pe, &v, Mask::Allowed(&allowed), scale);
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

    /// The einsum formulation `naive` replaced, as the reference: the (B, H, T, S) scores in the
    /// inputs' kind, the masked softmax in f32 (f64 for f64 inputs), the probabilities back in the
    /// inputs' kind.
    fn einsum_naive(q: &Queries, k_nope: &Tensor, k_pe: &Tensor, v: &Tensor, allowed: &Tensor, scale: f64) -> Tensor {
        let nope = Tensor::einsum("bthd,bshd->bhts", &[&q.nope, k_nope], None::<&[i64]>);
        let pe = Tensor::einsum("bthr,bsr->bhts", &[&q.pe, k_pe], None::<&[i64]>);
        let acc = if v.kind() == Kind::Double { Kind::Double } else { Kind::Float };
        let scores = ((nope + pe) * scale).to_kind(acc); // (B, H, T, S)
        let p = scores.masked_fill(&allowed.unsqueeze(1).logical_not(), f64::NEG_INFINITY).softmax(-1, acc);
        Tensor::einsum("bhts,bshd->bthd", &[&p.to_kind(v.kind()), v], None::<&[i64]>)
    }

    /// Random inputs of one attention call: queries (B, T, H, ·), keys and values (B, S, H, ·), all
    /// leaves requiring grad, in f64 (cast per test).
    struct Inputs {
        q_nope: Tensor,
        q_pe: Tensor,
        k_nope: Tensor,
        k_pe: Tensor,
        v: Tensor,
    }

    impl Inputs {
        /// Standard normal inputs from a stream of this test's own (Box–Muller over SplitMix64),
        /// not the global generator, which tests running in parallel draw from between another
        /// test's seed and its draws.
        fn new(b: i64, t: i64, s: i64) -> Self {
            let (h, dn, dr, dv) = (3, 8, 4, 6);
            let mut stream = crate::sample::Stream::new(0x5EED ^ (b * 1_000_003 + t * 1_009 + s) as u64);
            let mut normal = |shape: &[i64]| {
                let n: i64 = shape.iter().product();
                let v: Vec<f64> = (0..n)
                    .map(|_| {
                        let (u1, u2) = (1.0 - stream.uniform(), stream.uniform());
                        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
                    })
                    .collect();
                Tensor::from_slice(&v).view(shape)
            };
            Inputs {
                q_nope: normal(&[b, t, h, dn]),
                q_pe: normal(&[b, t, h, dr]),
                k_nope: normal(&[b, s, h, dn]),
                k_pe: normal(&[b, s, dr]),
                v: normal(&[b, s, h, dv]),
            }
        }

        /// The inputs as fresh leaves in `kind` requiring grad.
        fn leaves(&self, kind: Kind) -> [Tensor; 5] {
            [&self.q_nope, &self.q_pe, &self.k_nope, &self.k_pe, &self.v]
                .map(|x| x.to_kind(kind).detach().set_requires_grad(true))
        }

        /// Output and input gradients of `attend` under the loss `Σ o · g` for a fixed `g`, all in f64.
        fn run(&self, kind: Kind, attend: impl Fn(&Queries, &[Tensor; 5]) -> Tensor) -> Vec<Tensor> {
            let x = self.leaves(kind);
            let q = Queries { nope: x[0].shallow_clone(), pe: x[1].shallow_clone(), latent: x[0].narrow(-1, 0, 0) };
            let o = attend(&q, &x); // (B, T, H, d_v)

            // A fixed upstream gradient from a formula, not the global generator: tests run in
            // parallel, and another test's draws between a seed and a `randn` would give each run
            // of the comparison a different `g`.
            let g =
                (Tensor::arange(o.numel() as i64, (Kind::Double, Device::Cpu)) * 0.7).sin().view(o.size().as_slice());
            (o.to_kind(Kind::Double) * g).sum(Kind::Double).backward();
            std::iter::once(o.detach()).chain(x.iter().map(|x| x.grad())).map(|x| x.to_kind(Kind::Double)).collect()
        }
    }

    /// Largest |a − b| of each pair of tensors, relative to the largest |b| of the pair.
    fn errors(a: &[Tensor], b: &[Tensor]) -> Vec<f64> {
        let rel = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]) / b.abs().max().double_value(&[]);
        a.iter().zip(b).map(|(a, b)| rel(a, b)).collect()
    }

    /// Checks `naive` in f32 and bf16 against the einsum path in f64 (output, then the gradients
    /// of q_nope, q_pe, k_nope, k_pe, v; each relative to the tensor's largest entry): f32 within
    /// 1e-5 (float rounding over a few hundred terms); bf16 within 2^-6 (a few bf16 roundings,
    /// where the einsum path in bf16 also lands) and the output no further off than the einsum
    /// path's.
    fn check_against_einsum(x: &Inputs, allowed: &Tensor, mask: Mask<'_>) {
        let exact = x.run(Kind::Double, |q, x| einsum_naive(q, &x[2], &x[3], &x[4], allowed, 0.3));
        let sdpa = |kind| errors(&x.run(kind, |q, x| naive(q, &x[2], &x[3], &x[4], mask, 0.3)), &exact);
        let einsum = |kind| errors(&x.run(kind, |q, x| einsum_naive(q, &x[2], &x[3], &x[4], allowed, 0.3)), &exact);
        let f32 = sdpa(Kind::Float);
        assert!(f32.iter().all(|&e| e <= 1e-5), "f32: {f32:?}");
        let (new, old) = (sdpa(Kind::BFloat16), einsum(Kind::BFloat16));
        eprintln!("f32 {f32:?}\nbf16 {new:?}\nbf16 einsum {old:?}");
        let bound = 1.0 / 64.0;
        assert!(new.iter().chain(&old).all(|&e| e <= bound), "bf16: {new:?}, einsum {old:?}");
        assert!(new[0] <= old[0], "bf16 output: {new:?}, einsum {old:?}");
    }

    /// A fixed mask of `shape` keeping about half the entries in a scattered pattern (a formula,
    /// not the global generator, for the reason given in [`Inputs::new`]).
    fn scattered(shape: &[i64]) -> Tensor {
        let n: i64 = shape.iter().product();
        (Tensor::arange(n, (Kind::Int64, Device::Cpu)) * 7919).remainder(13).lt(6).view(shape)
    }

    /// Training shapes (T = S, causal), over more than one of the CPU kernel's 512-key blocks:
    /// values and the gradients of queries, keys and values equal the einsum softmax's
    /// ([`check_against_einsum`]).
    #[test]
    fn causal_sdpa_equals_the_einsum_softmax() {
        let (b, t) = (2, 600);
        let x = Inputs::new(b, t, t);
        let q_pos = Tensor::arange(t, (Kind::Int64, Device::Cpu)).unsqueeze(0).expand([b, t], true); // (B, T)
        check_against_einsum(&x, &causal(&q_pos, t), Mask::Causal);
    }

    /// A cached prefill: 5 new queries per row at different offsets over 40 keys with an arbitrary
    /// mask (each query sees its own key): the same bounds as the causal case.
    #[test]
    fn masked_sdpa_equals_the_einsum_softmax() {
        let (b, t, s) = (2, 5, 40);
        let x = Inputs::new(b, t, s);
        let q_pos = Tensor::from_slice(&[30i64, 35]).view([b, 1]) + Tensor::arange(t, (Kind::Int64, Device::Cpu)); // (B, T)
        let own = Tensor::arange(s, (Kind::Int64, Device::Cpu)).view([1, 1, s]).eq_tensor(&q_pos.unsqueeze(-1));
        let allowed = scattered(&[b, t, s]).logical_or(&own); // (B, T, S)
        check_against_einsum(&x, &allowed, Mask::Allowed(&allowed));
    }

    /// A query with no visible key gets zeros and finite gradients, where the einsum softmax gave NaN;
    /// the other rows are unchanged.
    #[test]
    fn a_row_without_keys_is_zero_not_nan() {
        let x = Inputs::new(1, 3, 7);
        let allowed = scattered(&[1, 3, 7]);
        let _ = allowed.get(0).get(1).fill_(0);
        let _ = allowed.get(0).get(0).get(0).fill_(1);
        let _ = allowed.get(0).get(2).get(6).fill_(1);
        let sdpa = x.run(Kind::Float, |q, x| naive(q, &x[2], &x[3], &x[4], Mask::Allowed(&allowed), 0.3));
        let einsum = x.run(Kind::Float, |q, x| einsum_naive(q, &x[2], &x[3], &x[4], &allowed, 0.3));
        assert!(einsum[0].get(0).get(1).isnan().all().int64_value(&[]) == 1, "the einsum softmax gave NaN");
        assert!(sdpa.iter().all(|g| g.isfinite().all().int64_value(&[]) == 1));
        assert_eq!(sdpa[0].get(0).get(1).abs().max().double_value(&[]), 0.0);
        let rows = Tensor::from_slice(&[0i64, 2]);
        let d = (sdpa[0].index_select(1, &rows) - einsum[0].index_select(1, &rows)).abs().max().double_value(&[]);
        assert!(d <= 1e-6, "{d:e}");
    }

    /// Why `naive` pads the values: with MLA's unequal head sizes libtorch picks its math kernel
    /// (which keeps the (B, H, T, S) probabilities), with equal ones the flash kernel.
    #[test]
    fn padded_values_take_the_flash_kernel() {
        const MATH: i64 = 0;
        const FLASH: i64 = 1;
        let f = (Kind::Float, Device::Cpu);
        let (q, v) = (Tensor::randn([1, 8, 64, 96], f), Tensor::randn([1, 8, 64, 64], f));
        let choice = |v: &Tensor| Tensor::internal_fused_sdp_choice(&q, &q, v, None::<Tensor>, 0.0, true, 0.1, false);
        assert_eq!(choice(&v), MATH);
        assert_eq!(choice(&v.constant_pad_nd([0, 32])), FLASH);
    }

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

    /// A decode step whose queries all sit at the last key: attention without a mask gives the
    /// bits of attention under an all-true mask (nothing is masked, so nothing differs), and a
    /// mask that hides keys changes the result (the mask is applied when given).
    #[test]
    fn absorbed_without_a_mask_equals_an_all_true_mask() {
        let (b, h, c, dn, dr, dv, s) = (3, 4, 8, 5, 2, 6, 9);
        let f = (Kind::Float, Device::Cpu);
        let fill = |shape: &[i64], k: f64| {
            let n: i64 = shape.iter().product();
            (Tensor::arange(n, f) * k).sin().view(shape)
        };
        let q =
            Queries { nope: fill(&[b, 1, h, dn], 0.37), pe: fill(&[b, 1, h, dr], 0.91), latent: fill(&[b, 1, 4], 0.5) };
        let keys = Keys { latent: fill(&[b, s, c], 0.13), pe: fill(&[b, s, dr], 0.71), index: None };
        let w = KvB { uk: fill(&[h, dn, c], 0.29), uv: fill(&[h, dv, c], 0.53) };
        let q_pos = Tensor::full([b, 1], s - 1, (Kind::Int64, Device::Cpu));
        let all = causal(&q_pos, s);
        assert!(all.all().int64_value(&[]) == 1);
        let masked = absorbed(&q, &keys, &w, Some(&all), 0.3);
        assert!(absorbed(&q, &keys, &w, None, 0.3).equal(&masked));
        let shorter = causal(&(q_pos - 2), s);
        let d = (absorbed(&q, &keys, &w, Some(&shorter), 0.3) - masked).abs().max().double_value(&[]);
        assert!(d > 1e-3, "{d:e}");
    }
}
