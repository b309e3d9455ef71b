//! RMSNorm and the two rotary layouts as one pass over their rows, for the rollout engine's CPU
//! steps.
//!
//! In tensor form an RMSNorm is seven libtorch ops (cast, square, mean, add, rsqrt, two
//! multiplies) and an interleaved rotation fourteen (unflatten, two selects, four multiplies, a
//! subtract, an add, a stack, a flatten, casts); at batch 1 each op moves a few hundred floats and
//! costs its dispatch and allocation, ~1–3 µs. A decode step of the `small` preset runs 33 norms
//! and 32 rotations: ~700 of its ~1,650 ops. Here each is one output allocation and one loop.
//!
//! Numerics: the rotations do the tensor form's arithmetic in its order (`a·cos − b·sin`, each
//! product rounded, no fused multiply-add), so they give the same bits. The norm's mean of squares
//! is summed in sixteen lanes over the row and the lanes then in a fixed order, where libtorch's
//! reduction uses its own order: the normalised values agree to float rounding (~1e-7 relative).
//! Each row is computed alone, so a row's result does not depend on the rows beside it (the
//! engine's batch invariance holds).
//!
//! Taken under the same conditions as [`crate::kernel`]: inside [`kernel::enabled`], f32 on the
//! CPU, no gradient wanted; every caller keeps the tensor form for everything else (training,
//! CUDA, bf16), so those forwards keep libtorch's rounding bit for bit.

use crate::attention::{Keys, KvB, Queries};
use crate::kernel;
use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

/// How a rotation pairs the dims it rotates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pairs {
    /// `(x[2i], x[2i+1])` (MLA).
    Interleaved,
    /// `(x[i], x[i+r/2])` (the DSA indexer).
    HalfSplit,
}

/// Whether every tensor is f32 on the CPU, the engine's fast paths are on for this thread and no
/// gradient would flow.
fn eligible(ts: &[&Tensor]) -> bool {
    kernel::active()
        && ts.iter().all(|t| t.device() == Device::Cpu && t.kind() == Kind::Float)
        && (!ts.iter().any(|t| t.requires_grad()) || !kernel::grad_mode())
}

/// Rows of `x (..., d)` as (row count, distance between rows in floats) when its last dim is
/// contiguous and its leading dims step uniformly (a narrow of the last dim qualifies).
fn rows(x: &Tensor) -> Option<(usize, usize)> {
    let (size, stride) = (x.size(), x.stride());
    let n = size.len();
    if n == 0 || (size[n - 1] > 1 && stride[n - 1] != 1) {
        return None;
    }
    let rows: i64 = size[..n - 1].iter().product();
    // Walking the leading dims from the innermost, each must step by the size of the ones inside.
    let row_stride = if n >= 2 { stride[n - 2] } else { size[n - 1] };
    let mut expect = row_stride;
    for i in (0..n - 1).rev() {
        if size[i] > 1 && stride[i] != expect {
            return None;
        }
        expect *= size[i];
    }
    (row_stride >= size[n - 1] || rows <= 1).then_some((rows as usize, row_stride as usize))
}

/// `weight ⊙ x / sqrt(mean(x²) + eps)` over the last dim of `x`, as [`crate::norm::RmsNorm`]
/// computes it; `None` where the fused form does not apply.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Option<Tensor> {
    if !eligible(&[x, weight]) || !weight.is_contiguous() {
        return None;
    }
    let d = *x.size().last()? as usize;
    let (n, step) = rows(x)?;
    if d == 0 || weight.numel() != d {
        return None;
    }
    let y = Tensor::empty(x.size(), (Kind::Float, Device::Cpu));
    // SAFETY: x holds n rows of d floats `step` apart, weight d floats, y n·d contiguous floats; y
    // is fresh, so nothing aliases it.
    unsafe {
        let (xp, wp, yp) = (x.data_ptr() as *const f32, weight.data_ptr() as *const f32, y.data_ptr() as *mut f32);
        let w = std::slice::from_raw_parts(wp, d);
        for r in 0..n {
            let row = std::slice::from_raw_parts(xp.add(r * step), d);
            let out = std::slice::from_raw_parts_mut(yp.add(r * d), d);
            let inv = 1.0 / (sum_of_squares(row) / d as f32 + eps as f32).sqrt();
            for ((o, &v), &g) in out.iter_mut().zip(row).zip(w) {
                *o = (v * inv) * g;
            }
        }
    }
    Some(y)
}

/// `Σ v²` in sixteen lanes (lane `i` takes every element at `i` mod 16), the lanes then added
/// pairwise down to one: a fixed order for a given length.
fn sum_of_squares(row: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let mut chunks = row.chunks_exact(16);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += v * v;
        }
    }
    for (l, &v) in lanes.iter_mut().zip(chunks.remainder()) {
        *l += v * v;
    }
    let mut width = 16;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            lanes[i] += lanes[i + width];
        }
    }
    lanes[0]
}

/// `x (B, T, [H,] d)` with its first `r` dims rotated by `cos, sin (B, T, [1,] r/2)` in `pairs`
/// layout and the rest copied, as a new contiguous tensor; `None` where the fused form does not
/// apply. The same values as [`crate::rope::rotate_interleaved`] or
/// [`crate::rope::rotate_half_split`] on `x[..., :r]` (then the rest concatenated).
pub fn rotate(x: &Tensor, r: i64, cos: &Tensor, sin: &Tensor, pairs: Pairs) -> Option<Tensor> {
    if !eligible(&[x, cos, sin]) || !cos.is_contiguous() || !sin.is_contiguous() {
        return None;
    }
    let (size, cs) = (x.size(), cos.size());
    let dims = size.len();
    // cos and sin: x's leading (B, T), a 1 for the heads when x has them, then r/2.
    let heads = match dims {
        3 => 1,
        4 if cs.len() == 4 && cs[2] == 1 => size[2],
        _ => return None,
    };
    let half = r / 2;
    if r % 2 != 0 || r > size[dims - 1] || cs[..2] != size[..2] || cs.last() != Some(&half) || sin.size() != cs {
        return None;
    }
    let d = size[dims - 1] as usize;
    let (n, step) = rows(x)?;
    let (heads, half) = (heads as usize, half as usize);
    let y = Tensor::empty(size.as_slice(), (Kind::Float, Device::Cpu));
    // SAFETY: x holds n rows of d floats `step` apart; cos and sin n/heads rows of `half` floats;
    // y n·d fresh contiguous floats.
    unsafe {
        let (xp, yp) = (x.data_ptr() as *const f32, y.data_ptr() as *mut f32);
        let (cp, sp) = (cos.data_ptr() as *const f32, sin.data_ptr() as *const f32);
        for row in 0..n {
            let v = std::slice::from_raw_parts(xp.add(row * step), d);
            let out = std::slice::from_raw_parts_mut(yp.add(row * d), d);
            let at = row / heads * half;
            let (c, s) = (std::slice::from_raw_parts(cp.add(at), half), std::slice::from_raw_parts(sp.add(at), half));
            for i in 0..half {
                let (ia, ib) = match pairs {
                    Pairs::Interleaved => (2 * i, 2 * i + 1),
                    Pairs::HalfSplit => (i, i + half),
                };
                let (a, b) = (v[ia], v[ib]);
                out[ia] = a * c[i] - b * s[i];
                out[ib] = match pairs {
                    Pairs::Interleaved => a * s[i] + b * c[i],
                    Pairs::HalfSplit => b * c[i] + a * s[i],
                };
            }
            out[2 * half..].copy_from_slice(&v[2 * half..]);
        }
    }
    Some(y)
}

/// A tensor's data pointer and strides, for indexing by hand.
struct Strided {
    ptr: *const f32,
    stride: Vec<usize>,
}

// SAFETY: read-only views of tensors the caller keeps alive for the call.
unsafe impl Sync for Strided {}

impl Strided {
    fn of(t: &Tensor) -> Self {
        Strided { ptr: t.data_ptr() as *const f32, stride: t.stride().iter().map(|&s| s as usize).collect() }
    }

    /// The `len` floats from index `at` along the last dim (which must be contiguous).
    ///
    /// # Safety
    /// `at` (one index per dim but the last) must lie inside the tensor, with `len` floats after.
    unsafe fn row(&self, at: &[usize], len: usize) -> &[f32] {
        let offset: usize = at.iter().zip(&self.stride).map(|(i, s)| i * s).sum();
        std::slice::from_raw_parts(self.ptr.add(offset), len)
    }
}

/// Whether `t`'s last dim is contiguous (or of length ≤ 1) and no stride is negative.
fn last_dim_contiguous(t: &Tensor) -> bool {
    let (size, stride) = (t.size(), t.stride());
    !size.is_empty() && (*size.last().unwrap_or(&0) <= 1 || stride.last() == Some(&1)) && stride.iter().all(|&s| s >= 0)
}

/// `Σ a·b` in sixteen lanes, the lanes then added pairwise: a fixed order for a given length.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            lanes[i] += x[i] * y[i];
        }
    }
    for (l, (&x, &y)) in lanes.iter_mut().zip(ra.iter().zip(rb)) {
        *l += x * y;
    }
    let mut width = 16;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            lanes[i] += lanes[i + width];
        }
    }
    lanes[0]
}

/// Softmax of `row` in place: `exp(x − max) / Σ`, `−∞` entries giving 0 (a row of them NaN, as
/// libtorch's; none occur, a query always sees its own key).
fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    row.iter_mut().for_each(|v| *v /= sum);
}

/// `acc += a · x`, element by element.
fn axpy(acc: &mut [f32], a: f32, x: &[f32]) {
    for (o, &v) in acc.iter_mut().zip(x) {
        *o += a * v;
    }
}

/// MLA's absorbed attention (the same contractions as [`crate::attention::absorbed`]) with each
/// query row's products done here: queries `q` (nope `(B, T, H, d_nope)`, pe `(B, T, H, d_rope)`)
/// over `keys` (latent `(B, S, C)`, pe `(B, S, d_rope)`) with `allowed (B, T, S)` and the `kv_b`
/// halves `w` → `(B, T, H, d_v)`; `None` where the fused form does not apply.
///
/// Per query row and head: `q_abs = q_nope · W_UK[h]` (accumulated over `d_nope` in order), each
/// key's score `(q_abs·latent + q_pe·pe) · scale` (sixteen-lane dots), `−∞` where not allowed; the
/// softmax over keys in f32 (the exponential from the C library, not libtorch's vectorised one:
/// the probabilities agree to float rounding); then `o_lat = Σ_s p_s · latent_s` (in key order) and
/// `o = W_UV[h] · o_lat`. Rows are independent (batch invariance) and spread over rayon's pool.
/// What it saves at batch 1 is ~25 small ops per layer, five of them BLAS calls and a softmax of
/// ~7–15 µs each (mostly waking libtorch's second thread) for a few thousand multiply-adds.
pub fn absorbed(q: &Queries, keys: &Keys, w: &KvB, allowed: &Tensor, scale: f64) -> Option<Tensor> {
    let tensors = [&q.nope, &q.pe, &keys.latent, &keys.pe, &w.uk, &w.uv];
    if !eligible(&tensors) || !tensors.iter().all(|t| last_dim_contiguous(t)) {
        return None;
    }
    let (b, t, h, d) = q.nope.size4().ok()?;
    let (r, c, dv) = (q.pe.size()[3], w.uk.size()[2], w.uv.size()[1]);
    let s = keys.latent.size()[1];
    let shapes_agree = q.pe.size() == [b, t, h, r]
        && keys.latent.size() == [b, s, c]
        && keys.pe.size() == [b, s, r]
        && w.uk.size() == [h, d, c]
        && w.uv.size() == [h, dv, c]
        && allowed.size() == [b, t, s]
        && allowed.kind() == Kind::Bool
        && allowed.device() == Device::Cpu;
    if !shapes_agree || s == 0 {
        return None;
    }
    let allowed = allowed.contiguous();
    let (b, t, h, d, r, c, dv, s) =
        (b as usize, t as usize, h as usize, d as usize, r as usize, c as usize, dv as usize, s as usize);
    let (nope, pe, lat, kpe, uk, uv) = (
        Strided::of(&q.nope),
        Strided::of(&q.pe),
        Strided::of(&keys.latent),
        Strided::of(&keys.pe),
        Strided::of(&w.uk),
        Strided::of(&w.uv),
    );
    let seen = allowed.data_ptr() as usize;
    let run = |rows: usize, width: usize, f: &(dyn Fn(usize, &mut [f32]) + Sync), out: &Tensor| {
        // SAFETY: `out` is a fresh contiguous (rows · width) f32 tensor; each row is written once.
        let all = unsafe { std::slice::from_raw_parts_mut(out.data_ptr() as *mut f32, rows * width) };
        if rows > 1 {
            all.par_chunks_mut(width).enumerate().for_each(|(i, row)| f(i, row));
        } else {
            all.chunks_mut(width).enumerate().for_each(|(i, row)| f(i, row));
        }
    };
    // Probabilities (B, T, H, S), one (b, t) row of H·S at a time.
    let scores = Tensor::empty([b as i64, t as i64, h as i64, s as i64], (Kind::Float, Device::Cpu));
    let score_row = |i: usize, out: &mut [f32]| {
        let (bi, ti) = (i / t, i % t);
        // SAFETY: every index below lies inside its tensor (shapes checked above).
        unsafe {
            let visible = std::slice::from_raw_parts((seen as *const bool).add(i * s), s);
            let mut q_abs = vec![0f32; c];
            for hi in 0..h {
                q_abs.iter_mut().for_each(|v| *v = 0.0);
                for (di, &qd) in nope.row(&[bi, ti, hi], d).iter().enumerate() {
                    axpy(&mut q_abs, qd, uk.row(&[hi, di], c));
                }
                let q_pe = pe.row(&[bi, ti, hi], r);
                let head = &mut out[hi * s..(hi + 1) * s];
                for (si, o) in head.iter_mut().enumerate() {
                    *o = if visible[si] {
                        (dot(&q_abs, lat.row(&[bi, si], c)) + dot(q_pe, kpe.row(&[bi, si], r))) * scale as f32
                    } else {
                        f32::NEG_INFINITY
                    };
                }
                softmax(head);
            }
        }
    };
    run(b * t, h * s, &score_row, &scores); // softmax-ed
    let probs = Strided::of(&scores);
    let y = Tensor::empty([b as i64, t as i64, h as i64, dv as i64], (Kind::Float, Device::Cpu));
    let output_row = |i: usize, out: &mut [f32]| {
        let (bi, ti) = (i / t, i % t);
        // SAFETY: as above; the probabilities are contiguous (B, T, H, S).
        unsafe {
            let mut o_lat = vec![0f32; c];
            for hi in 0..h {
                o_lat.iter_mut().for_each(|v| *v = 0.0);
                for (si, &ps) in probs.row(&[bi, ti, hi], s).iter().enumerate() {
                    if ps != 0.0 {
                        axpy(&mut o_lat, ps, lat.row(&[bi, si], c));
                    }
                }
                for (j, o) in out[hi * dv..(hi + 1) * dv].iter_mut().enumerate() {
                    *o = dot(uv.row(&[hi, j], c), &o_lat);
                }
            }
        }
    };
    run(b * t, h * dv, &output_row, &y);
    Some(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::norm::RmsNorm;
    use crate::rope::{rotate_half_split, rotate_interleaved};

    fn f32s() -> (Kind, Device) {
        (Kind::Float, Device::Cpu)
    }

    /// On a contiguous input, a narrow of the last dim and a 4-d input: within float rounding of
    /// the tensor form; a row alone gives the same bits as in a batch; outside `enabled`, with a
    /// gradient wanted or in f64 the fused form is not taken.
    #[test]
    fn rms_norm_equals_the_tensor_form() {
        tch::manual_seed(5);
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let norm = RmsNorm::new(&vs.root(), 40, 1e-6);
        tch::no_grad(|| norm.weight.shallow_clone().copy_(&Tensor::randn([40], f32s())));
        let wide = Tensor::randn([3, 5, 57], f32s()) * 3.0;
        let cases =
            [wide.narrow(-1, 0, 40), wide.narrow(-1, 17, 40).contiguous(), Tensor::randn([2, 3, 4, 40], f32s())];
        tch::no_grad(|| {
            for x in &cases {
                let fused = kernel::enabled(|| rms_norm(x, &norm.weight, norm.eps)).expect("taken");
                let want = norm.forward(x);
                let d = ((&fused - &want).abs().max() / want.abs().max()).double_value(&[]);
                assert!(d < 1e-6, "{:?}: {d:e}", x.size());
                let flat = x.reshape([-1, 40]);
                let alone = kernel::enabled(|| rms_norm(&flat.narrow(0, 1, 1), &norm.weight, norm.eps)).expect("taken");
                assert!(alone.equal(&fused.reshape([-1, 40]).narrow(0, 1, 1)), "row 1 alone vs in the batch");
            }
            assert!(rms_norm(&cases[0], &norm.weight, 1e-6).is_none(), "outside `enabled`");
            let x64 = cases[2].to_kind(Kind::Double);
            assert!(kernel::enabled(|| rms_norm(&x64, &norm.weight, 1e-6)).is_none(), "f64");
        });
        let x = Tensor::randn([2, 40], f32s()).set_requires_grad(true);
        assert!(kernel::enabled(|| rms_norm(&x, &norm.weight, 1e-6)).is_none(), "gradient wanted");
    }

    /// Against `attention::absorbed` on strided inputs like the engine's (a narrow of the query
    /// projection, a cache's first S positions) and a mask that hides some keys: within float
    /// rounding; a row gives the same bits alone as in the batch; with a gradient wanted it is not
    /// taken.
    #[test]
    fn absorbed_equals_the_bmm_form() {
        tch::manual_seed(7);
        let (b, t, h, d, r, c, dv, s) = (3, 2, 4, 24, 8, 40, 16, 19);
        let q_all = Tensor::randn([b, t, h, d + r], f32s());
        let q = Queries {
            nope: q_all.narrow(-1, 0, d),
            pe: q_all.narrow(-1, d, r).contiguous(),
            latent: Tensor::zeros([b, t, 0], f32s()),
        };
        let cache = Tensor::randn([b + 1, s + 5, c + r], f32s());
        let keys = Keys {
            latent: cache.narrow(0, 1, b).narrow(1, 0, s).narrow(-1, 0, c),
            pe: cache.narrow(0, 1, b).narrow(1, 0, s).narrow(-1, c, r),
            index: None,
        };
        let kv_b = Tensor::randn([h, d + dv, c], f32s()) * 0.2;
        let w = KvB { uk: kv_b.narrow(1, 0, d), uv: kv_b.narrow(1, d, dv) };
        let allowed =
            Tensor::rand([b, t, s], f32s()).gt(0.3).logical_or(&Tensor::arange(s, (Kind::Int64, Device::Cpu)).eq(0));
        tch::no_grad(|| {
            let fused = kernel::enabled(|| absorbed(&q, &keys, &w, &allowed, 0.3)).expect("taken");
            let want = crate::attention::absorbed(&q, &keys, &w, &allowed, 0.3);
            let diff = ((&fused - &want).abs().max() / want.abs().max()).double_value(&[]);
            assert!(diff < 1e-5, "{diff:e}");
            let one = |x: &Tensor| x.narrow(0, 1, 1);
            let q1 = Queries { nope: one(&q.nope), pe: one(&q.pe), latent: one(&q.latent) };
            let k1 = Keys { latent: one(&keys.latent), pe: one(&keys.pe), index: None };
            let alone = kernel::enabled(|| absorbed(&q1, &k1, &w, &one(&allowed), 0.3)).expect("taken");
            assert!(alone.equal(&one(&fused)), "row 1 alone vs in the batch");
        });
        let w_grad = KvB { uk: w.uk.detach().set_requires_grad(true), uv: w.uv.shallow_clone() };
        assert!(kernel::enabled(|| absorbed(&q, &keys, &w_grad, &allowed, 0.3)).is_none(), "gradient wanted");
    }

    /// Both layouts, with and without heads, on a narrow of a wider tensor and with a tail left
    /// unrotated: the same bits as the tensor form.
    #[test]
    fn rotations_equal_the_tensor_form_bit_for_bit() {
        tch::manual_seed(6);
        let (b, t, h, r) = (2, 3, 4, 8);
        let cos = Tensor::randn([b, t, r / 2], f32s());
        let sin = Tensor::randn([b, t, r / 2], f32s());
        let q = Tensor::randn([b, t, h, 12 + r], f32s());
        let k = Tensor::randn([b, t, 5 + r], f32s());
        let (c4, s4) = (cos.unsqueeze(2), sin.unsqueeze(2));
        tch::no_grad(|| {
            let on = |x: &Tensor, c: &Tensor, s: &Tensor, p| kernel::enabled(|| rotate(x, r, c, s, p)).expect("taken");
            // MLA: the rope part of a query (a narrow) and of a key.
            let qp = q.narrow(-1, 12, r);
            assert!(on(&qp, &c4, &s4, Pairs::Interleaved).equal(&rotate_interleaved(&qp, &c4, &s4)));
            let kp = k.narrow(-1, 5, r);
            assert!(on(&kp, &cos, &sin, Pairs::Interleaved).equal(&rotate_interleaved(&kp, &cos, &sin)));
            // Indexer: the first r dims rotated, the rest kept.
            let tail = |x: &Tensor, c: &Tensor, s: &Tensor| {
                let d = *x.size().last().unwrap();
                Tensor::cat(&[rotate_half_split(&x.narrow(-1, 0, r), c, s), x.narrow(-1, r, d - r)], -1)
            };
            assert!(on(&q, &c4, &s4, Pairs::HalfSplit).equal(&tail(&q, &c4, &s4)));
            assert!(on(&k, &cos, &sin, Pairs::HalfSplit).equal(&tail(&k, &cos, &sin)));
            assert!(rotate(&k, r, &cos, &sin, Pairs::HalfSplit).is_none(), "outside `enabled`");
            let wrong = Tensor::randn([b, t, r], f32s());
            assert!(kernel::enabled(|| rotate(&k, r, &wrong, &wrong, Pairs::HalfSplit)).is_none(), "cos of width r");
        });
    }
}
