//! RMSNorm, the indexer keys' LayerNorm, the two rotary layouts and the dense MLP's SwiGLU as one
//! pass over their rows, for the rollout engine's CPU steps.
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
//!
//! Left out: MLA's absorbed attention as one such pass per query row. Written and measured on the
//! `small` preset's shapes (8 heads, 160 cached keys), it took 33 µs a layer at batch 1 against
//! 35 µs for the BLAS form, and twice as long at batch 16 and 64, where the BLAS's tiled products
//! win; a row of sixteen-lane dot products pays a horizontal sum per key and head.

use crate::kernel;
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
/// gradient would flow (the conditions every fused pass here, and [`crate::moe`]'s host router,
/// are taken under).
pub(crate) fn applies(ts: &[&Tensor]) -> bool {
    kernel::active()
        && ts.iter().all(|t| t.device() == Device::Cpu && t.kind() == Kind::Float)
        && (!ts.iter().any(|t| t.requires_grad()) || !kernel::grad_mode())
}

/// Rows of `x (..., d)` as (row count, distance between rows in floats) when its last dim is
/// contiguous and its leading dims step uniformly (a narrow of the last dim qualifies).
pub(crate) fn rows(x: &Tensor) -> Option<(usize, usize)> {
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
    if !applies(&[x, weight]) || !weight.is_contiguous() {
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

/// `(x − mean) / sqrt(var + eps) ⊙ weight + bias` over the last dim of `x` (the biased variance,
/// as [`crate::norm::LayerNorm`] computes it through libtorch's `layer_norm`); `None` where the
/// fused form does not apply. Mean and variance are two passes over the row, each summed in
/// sixteen lanes in a fixed order (libtorch's kernel has its own order: ~1e-7 relative).
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Option<Tensor> {
    if !applies(&[x, weight, bias]) || !weight.is_contiguous() || !bias.is_contiguous() {
        return None;
    }
    let d = *x.size().last()? as usize;
    let (n, step) = rows(x)?;
    if d == 0 || weight.numel() != d || bias.numel() != d {
        return None;
    }
    let y = Tensor::empty(x.size(), (Kind::Float, Device::Cpu));
    // SAFETY: x holds n rows of d floats `step` apart, weight and bias d floats each, y n·d fresh
    // contiguous floats.
    unsafe {
        let (xp, yp) = (x.data_ptr() as *const f32, y.data_ptr() as *mut f32);
        let w = std::slice::from_raw_parts(weight.data_ptr() as *const f32, d);
        let b = std::slice::from_raw_parts(bias.data_ptr() as *const f32, d);
        for r in 0..n {
            let row = std::slice::from_raw_parts(xp.add(r * step), d);
            let out = std::slice::from_raw_parts_mut(yp.add(r * d), d);
            let mean = lane_sum(row, |v| v) / d as f32;
            let var = lane_sum(row, |v| (v - mean) * (v - mean)) / d as f32;
            let inv = 1.0 / (var + eps as f32).sqrt();
            for (((o, &v), &g), &c) in out.iter_mut().zip(row).zip(w).zip(b) {
                *o = (v - mean) * inv * g + c;
            }
        }
    }
    Some(y)
}

/// `silu(gate) ⊙ up` of two equal-shaped f32 tensors (the SwiGLU between an MLP's products), as a
/// new contiguous tensor; `None` where the fused form does not apply. `silu(g) = g / (1 + e^−g)`
/// with the standard library's `exp` (libtorch's vectorised `exp` rounds its own way: ~1e-7).
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Option<Tensor> {
    if !applies(&[gate, up]) || gate.size() != up.size() {
        return None;
    }
    let d = *gate.size().last()? as usize;
    let ((n, gs), (m, us)) = (rows(gate)?, rows(up)?);
    if n != m {
        return None;
    }
    let y = Tensor::empty(gate.size(), (Kind::Float, Device::Cpu));
    // SAFETY: gate and up hold n rows of d floats (`gs` and `us` apart), y n·d fresh contiguous
    // floats.
    unsafe {
        let (gp, up, yp) = (gate.data_ptr() as *const f32, up.data_ptr() as *const f32, y.data_ptr() as *mut f32);
        for r in 0..n {
            let g = std::slice::from_raw_parts(gp.add(r * gs), d);
            let u = std::slice::from_raw_parts(up.add(r * us), d);
            let out = std::slice::from_raw_parts_mut(yp.add(r * d), d);
            for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
                *o = g / (1.0 + (-g).exp()) * u;
            }
        }
    }
    Some(y)
}

/// `x (B, T, [H,] d)` with its first `r` dims rotated by `cos, sin (B, T, [1,] r/2)` in `pairs`
/// layout and the rest copied, as a new contiguous tensor; `None` where the fused form does not
/// apply. The same values as [`crate::rope::rotate_interleaved`] or
/// [`crate::rope::rotate_half_split`] on `x[..., :r]` (then the rest concatenated).
pub fn rotate(x: &Tensor, r: i64, cos: &Tensor, sin: &Tensor, pairs: Pairs) -> Option<Tensor> {
    if !applies(&[x, cos, sin]) || !cos.is_contiguous() || !sin.is_contiguous() {
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

/// `Σ v²` in sixteen lanes (lane `i` takes the elements at `i` mod 16, the tail included), the
/// lanes then added pairwise down to one: a fixed order for a given length on a given CPU (with
/// AVX2 the lanes are two fused multiply-add registers).
fn sum_of_squares(v: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if kernel::supported() {
        // SAFETY: the CPU has AVX2 and FMA; `v` holds v.len() floats.
        return unsafe { simd::sum_of_squares(v.as_ptr(), v.len()) };
    }
    lane_sum(v, |x| x * x)
}

/// `Σ f(v)` in sixteen lanes (lane `i` takes the elements at `i` mod 16), the lanes then added
/// pairwise down to one: a fixed order for a given length.
fn lane_sum(v: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; 16];
    for (i, &x) in v.iter().enumerate() {
        lanes[i % 16] += f(x);
    }
    sum_lanes(lanes)
}

/// Lanes added pairwise down to one (8 + 8, then 4 + 4, …).
fn sum_lanes(mut lanes: [f32; 16]) -> f32 {
    let mut width = 16;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            lanes[i] += lanes[i + width];
        }
    }
    lanes[0]
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// [`super::sum_of_squares`] over the `n` floats at `v`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sum_of_squares(v: *const f32, n: usize) -> f32 {
        let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 16 <= n {
            let (a, b) = (_mm256_loadu_ps(v.add(i)), _mm256_loadu_ps(v.add(i + 8)));
            lo = _mm256_fmadd_ps(a, a, lo);
            hi = _mm256_fmadd_ps(b, b, hi);
            i += 16;
        }
        let mut lanes = [0f32; 16];
        _mm256_storeu_ps(lanes.as_mut_ptr(), lo);
        _mm256_storeu_ps(lanes.as_mut_ptr().add(8), hi);
        for (l, j) in (i..n).enumerate() {
            lanes[l] += *v.add(j) * *v.add(j);
        }
        super::sum_lanes(lanes)
    }
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

    /// LayerNorm (with bias) on a contiguous input, a narrow of the last dim and rows far from
    /// zero mean: within float rounding of libtorch's `layer_norm`; a row alone gives the bits it
    /// gets in a batch; not taken outside `enabled` or with a gradient wanted.
    #[test]
    fn layer_norm_equals_the_tensor_form() {
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let norm = crate::norm::LayerNorm::new(&vs.root(), 40, 1e-6);
        let fill = |shape: &[i64], k: f64| {
            let n: i64 = shape.iter().product();
            (Tensor::arange(n, f32s()) * k).sin().view(shape)
        };
        tch::no_grad(|| {
            norm.weight.shallow_clone().copy_(&(fill(&[40], 0.7) + 1.0));
            norm.bias.shallow_clone().copy_(&fill(&[40], 1.3));
        });
        let wide = fill(&[3, 5, 57], 0.37) * 3.0;
        let cases = [wide.narrow(-1, 0, 40), wide.narrow(-1, 17, 40) + 25.0, fill(&[2, 3, 4, 40], 0.11)];
        tch::no_grad(|| {
            for x in &cases {
                let fused = kernel::enabled(|| layer_norm(x, &norm.weight, &norm.bias, norm.eps)).expect("taken");
                let want = norm.forward(x);
                let d = ((&fused - &want).abs().max() / want.abs().max()).double_value(&[]);
                assert!(d < 1e-5, "{:?}: {d:e}", x.size());
                let flat = x.reshape([-1, 40]);
                let alone = kernel::enabled(|| layer_norm(&flat.narrow(0, 2, 1), &norm.weight, &norm.bias, 1e-6))
                    .expect("taken");
                assert!(alone.equal(&fused.reshape([-1, 40]).narrow(0, 2, 1)), "row 2 alone vs in the batch");
            }
            assert!(layer_norm(&cases[0], &norm.weight, &norm.bias, 1e-6).is_none(), "outside `enabled`");
        });
        let x = cases[2].detach().set_requires_grad(true);
        assert!(kernel::enabled(|| layer_norm(&x, &norm.weight, &norm.bias, 1e-6)).is_none(), "gradient wanted");
    }

    /// `silu(gate) ⊙ up` on contiguous inputs and on the two halves of one wider tensor (the
    /// packed layout): within float rounding of libtorch's `silu` and `mul`, over large positive
    /// and negative gates; not taken outside `enabled`.
    #[test]
    fn swiglu_equals_the_tensor_form() {
        let n = 3 * 7 * 96;
        let wide = ((Tensor::arange(n, f32s()) * 0.61).sin() * 30.0).view([3, 7, 96]);
        let (gate, up) = (wide.narrow(-1, 0, 48), wide.narrow(-1, 48, 48));
        tch::no_grad(|| {
            for (g, u) in [(gate.shallow_clone(), up.shallow_clone()), (gate.contiguous(), up.contiguous() * 0.1)] {
                let fused = kernel::enabled(|| swiglu(&g, &u)).expect("taken");
                let want = g.silu() * &u;
                let d = ((&fused - &want).abs() / (want.abs() + 1e-30)).max().double_value(&[]);
                assert!(d < 1e-6, "{d:e}");
            }
            assert!(swiglu(&gate, &up).is_none(), "outside `enabled`");
        });
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
