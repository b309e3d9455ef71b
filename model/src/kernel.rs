//! Few-row f32 matrix products on the CPU for inference: `y = x · Wᵀ` with `x (M, K)` of a
//! handful of rows (a decode step's tokens, or the tokens routed to one expert) and a weight
//! `W (N, K)` that is usually not in cache.
//!
//! Why not libtorch's GEMM here: for a few rows the BLAS copies each weight panel into its packed
//! layout before multiplying, so the weight crosses the memory bus about three times and the
//! multiply waits on it (measured on a 2-core AVX2 VM: 16 experts × 7 layers of the `small` preset
//! at 4 rows each took ~45 ms per step against ~17 ms to merely read the weights once). The kernel
//! below reads each weight row once, front to back with a software prefetch ahead, and multiplies
//! it into every row of `x` while it is in L1: with AVX2, two weight rows × up to four rows of `x`
//! per pass (eight accumulators); where the CPU has AVX-512F, four weight rows × up to four rows
//! (sixteen 16-lane accumulators; 15–25 % faster end to end than the AVX2 path on a 2-core
//! AVX-512 Xeon VM).
//!
//! Each output element is one dot product summed in a fixed order (eight or sixteen lanes over K,
//! then the lanes), so a row's result does not depend on which other rows share the call: a
//! request gives the same numbers alone or in any batch on a given CPU. The order differs from the
//! BLAS's, so results agree with libtorch's `linear` to float rounding (~1e-7 relative), not bit
//! for bit.
//!
//! Opt-in: only calls made inside [`enabled`] on the same thread use it (the rollout engine's
//! steps), so every other forward keeps libtorch's rounding bit for bit (a training forward and a
//! no-gradient forward of the same tokens give the same logits).
//!
//! Taken only when it applies (x86-64 with AVX2 and FMA, f32 on the CPU, a contiguous weight, no
//! gradient wanted, at most [`MAX_ROWS`] rows, K a multiple of 8); every caller keeps libtorch's
//! path for everything else (training, CUDA, bf16, long prefills). Large weights are split over
//! [`threads`] threads of rayon's pool by output rows; [`grouped`] splits whole groups instead.
//! A single row (batch-1 decode) stays on the calling thread: its product is a few hundred
//! microseconds of weight streaming, and handing half to another thread — which on a machine with
//! as many cores as libtorch threads competes with libtorch's spinning OpenMP worker — cost more
//! than it saved (batch-1 decode on the `small` preset, 2-core VM: 8–10 % more tokens/s on one
//! thread; batch 16 and 64 unchanged by the thread count there).

use std::sync::atomic::{AtomicUsize, Ordering};
use tch::{Device, Kind, Tensor};

/// Most rows of `x` the kernel takes; beyond it the GEMM is compute-bound and the BLAS wins.
pub const MAX_ROWS: i64 = 64;

/// Weight elements below which one call stays on one thread (handing work to another costs µs).
const PARALLEL_MIN: usize = 1 << 16;

/// Threads the kernel splits a large product over; 0 = libtorch's intra-op thread count.
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Sets how many threads the kernel uses (0: as many as libtorch's intra-op pool). A caller that
/// runs libtorch on one thread can still give the kernel several: its threads are its own.
pub fn set_threads(n: usize) {
    THREADS.store(n, Ordering::Relaxed);
}

/// The kernel's thread count (see [`set_threads`]).
pub fn threads() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => tch::get_num_threads().max(1) as usize,
        n => n,
    }
}

thread_local! {
    /// Whether this thread is inside [`enabled`].
    static ON: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the kernel enabled on this thread (see the module notes).
pub fn enabled<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ON.with(|on| on.set(self.0));
        }
    }
    let _restore = Restore(ON.with(|on| on.replace(true)));
    f()
}

/// The instruction set a product runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    /// AVX2 + FMA: 8 lanes, tiles of 2 weight rows × up to 4 rows of x.
    Avx2,
    /// AVX-512F: 16 lanes, tiles of 4 weight rows × up to 4 rows of x (32 registers hold them).
    Avx512,
}

/// The widest instruction set this CPU runs the kernel on, if any (checked once).
fn isa() -> Option<Isa> {
    #[cfg(target_arch = "x86_64")]
    {
        static ISA: std::sync::OnceLock<Option<Isa>> = std::sync::OnceLock::new();
        *ISA.get_or_init(|| {
            if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
                None
            } else if is_x86_feature_detected!("avx512f") {
                Some(Isa::Avx512)
            } else {
                Some(Isa::Avx2)
            }
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// Whether this CPU runs the kernel: it has AVX2 and FMA (what [`crate::fused`]'s vector loops
/// use too).
pub(crate) fn supported() -> bool {
    isa().is_some()
}

/// Whether this thread is inside [`enabled`].
pub(crate) fn active() -> bool {
    ON.with(|on| on.get())
}

/// Whether autograd would record an op now (libtorch's thread-local gradient mode).
pub(crate) fn grad_mode() -> bool {
    // SAFETY: toggles libtorch's thread-local grad mode and puts the previous value back.
    unsafe {
        let prev = torch_sys::at_grad_set_enabled(1);
        torch_sys::at_grad_set_enabled(prev);
        prev != 0
    }
}

/// Whether `x` and a contiguous weight `w` of `dims` dimensions are both f32 on the CPU and no
/// gradient would flow through the product.
fn eligible(x: &Tensor, w: &Tensor, dims: usize) -> bool {
    let cpu_f32 = |t: &Tensor| t.device() == Device::Cpu && t.kind() == Kind::Float;
    active()
        && supported()
        && cpu_f32(x)
        && cpu_f32(w)
        && w.dim() == dims
        && w.is_contiguous()
        && (!(x.requires_grad() || w.requires_grad()) || !grad_mode())
}

/// `x (..., K) · w (N, K)ᵀ → (..., N)` by the kernel, or `None` where it does not apply (see the
/// module notes); the caller then uses libtorch.
pub fn linear(x: &Tensor, w: &Tensor) -> Option<Tensor> {
    if !eligible(x, w, 2) {
        return None;
    }
    linear_on(x, w, isa()?)
}

/// [`linear`] on a given instruction set, once eligibility is settled.
fn linear_on(x: &Tensor, w: &Tensor, isa: Isa) -> Option<Tensor> {
    let (n, k) = (w.size()[0], w.size()[1]);
    let shape = x.size();
    let m: i64 = shape[..shape.len() - 1].iter().product();
    if shape.last() != Some(&k) || m == 0 || m > MAX_ROWS || k % 8 != 0 || n == 0 {
        return None;
    }
    let x = x.contiguous();
    let y = Tensor::empty([m, n], (Kind::Float, Device::Cpu));
    let dims = Dims { m: m as usize, n: n as usize, k: k as usize };
    let threads = if dims.m > 1 && dims.n * dims.k >= PARALLEL_MIN { threads() } else { 1 };
    // SAFETY: x (m, k), w (n, k) and y (m, n) are contiguous f32 CPU tensors alive for the call.
    unsafe { product(Ptrs::of(&x, w, &y), dims, threads, isa) };
    let mut out = shape[..shape.len() - 1].to_vec();
    out.push(n);
    Some(y.view(out.as_slice()))
}

/// Row groups of `xs (R, K)` each multiplied by its own weight of `w (G, N, K)`: rows
/// `starts[g] .. starts[g] + counts[g]` by `w[g]ᵀ`, giving `(R, N)`; `None` where the kernel does
/// not apply. Groups are spread over [`threads`] threads by row count.
pub fn grouped(xs: &Tensor, w: &Tensor, starts: &[i64], counts: &[i64]) -> Option<Tensor> {
    if !eligible(xs, w, 3) || xs.dim() != 2 {
        return None;
    }
    let (g, n, k) = (w.size()[0], w.size()[1], w.size()[2]);
    let rows = xs.size()[0];
    let fits = starts.iter().zip(counts).all(|(&s, &c)| s >= 0 && c >= 0 && s + c <= rows);
    if xs.size()[1] != k || k % 8 != 0 || starts.len() != g as usize || counts.len() != g as usize || !fits {
        return None;
    }
    if counts.iter().any(|&c| c > MAX_ROWS) {
        return None;
    }
    let isa = isa()?;
    let xs = xs.contiguous();
    // Groups that tile the rows in order write every row of y, which then needs no zeroing.
    let tiled = starts.iter().zip(counts).try_fold(0, |at, (&s, &c)| (s == at).then_some(at + c)) == Some(rows);
    let y = if tiled {
        Tensor::empty([rows, n], (Kind::Float, Device::Cpu))
    } else {
        Tensor::zeros([rows, n], (Kind::Float, Device::Cpu))
    };
    let (n, k) = (n as usize, k as usize);
    let p = Ptrs::of(&xs, w, &y);
    let run = |groups: &[usize]| {
        for &j in groups {
            let (s, c) = (starts[j] as usize, counts[j] as usize);
            if c == 0 {
                continue;
            }
            let part = Ptrs { x: p.x + s * k * 4, w: p.w + j * n * k * 4, y: p.y + s * n * 4 };
            // SAFETY: group j's rows of x and y and weight j lie inside the tensors; groups write
            // disjoint rows of y.
            unsafe { product(part, Dims { m: c, n, k }, 1, isa) };
        }
    };
    let threads = if counts.iter().all(|&c| c <= 1) { 1 } else { threads().min(g as usize) };
    if threads == 1 {
        // On the calling thread: `rayon::scope` from outside the pool would move the call to a
        // pool thread and wait for it, a wake-up and a hand-back per call (−10 % tokens/s at
        // batch 1 on the `small` preset). Spreading the groups with `rayon::in_place_scope`
        // instead (the caller's share on the caller) was no faster at batch 16 and 64.
        run(&(0..g as usize).collect::<Vec<_>>());
        return Some(y);
    }
    let shares = balance(counts, threads);
    rayon::scope(|scope| {
        for share in shares.iter().skip(1) {
            scope.spawn(|_| run(share));
        }
        run(&shares[0]);
    });
    Some(y)
}

/// Splits group indices into `threads` lists of about equal total count (largest first, each to
/// the lightest list).
fn balance(counts: &[i64], threads: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..counts.len()).filter(|&j| counts[j] > 0).collect();
    order.sort_by_key(|&j| std::cmp::Reverse(counts[j]));
    let mut shares = vec![(0i64, Vec::new()); threads.max(1)];
    for j in order {
        let lightest = shares.iter_mut().min_by_key(|(load, _)| *load).expect("at least one share");
        lightest.0 += counts[j];
        lightest.1.push(j);
    }
    shares.into_iter().map(|(_, groups)| groups).collect()
}

/// Addresses of x, w and y (plain integers so they cross threads).
#[derive(Clone, Copy)]
struct Ptrs {
    x: usize,
    w: usize,
    y: usize,
}

impl Ptrs {
    fn of(x: &Tensor, w: &Tensor, y: &Tensor) -> Self {
        Ptrs { x: x.data_ptr() as usize, w: w.data_ptr() as usize, y: y.data_ptr() as usize }
    }
}

/// Sizes of one product: x (m, k), w (n, k), y (m, n).
#[derive(Clone, Copy)]
struct Dims {
    m: usize,
    n: usize,
    k: usize,
}

/// `y = x · wᵀ`, output rows of w split into `threads` column blocks of y (multiples of 4).
///
/// # Safety
/// `p` must address contiguous f32 buffers of the sizes `d` gives, `y` not aliasing the others,
/// and the CPU must support `isa`.
unsafe fn product(p: Ptrs, d: Dims, threads: usize, isa: Isa) {
    let threads = threads.clamp(1, d.n.div_ceil(4).max(1));
    if threads == 1 {
        columns(p, d, 0, d.n, isa);
        return;
    }
    let block = d.n.div_ceil(threads).next_multiple_of(4);
    rayon::scope(|scope| {
        for t in 1..threads {
            let (j0, j1) = ((t * block).min(d.n), ((t + 1) * block).min(d.n));
            // SAFETY: as for `product`; threads write disjoint columns of y.
            scope.spawn(move |_| unsafe { columns(p, d, j0, j1, isa) });
        }
        columns(p, d, 0, block.min(d.n), isa);
    });
}

/// Columns `j0..j1` of `y = x · wᵀ` (see [`product`]).
unsafe fn columns(p: Ptrs, d: Dims, j0: usize, j1: usize, isa: Isa) {
    #[cfg(target_arch = "x86_64")]
    {
        let (x, w, y) = (p.x as *const f32, p.w as *const f32, p.y as *mut f32);
        match isa {
            Isa::Avx2 => avx2::columns(x, w, y, d, j0, j1),
            Isa::Avx512 => avx512::columns(x, w, y, d, j0, j1),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (p, d, j0, j1, isa);
        unreachable!("the kernel is only taken on x86-64");
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::Dims;
    use std::arch::x86_64::*;

    /// Weight rows prefetched ahead of the pair being multiplied.
    const PREFETCH_ROWS: usize = 4;

    /// Columns `j0..j1` of `y (m, n) = x (m, k) · w (n, k)ᵀ`: weight rows in pairs, each pair
    /// against every block of up to four rows of x.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn columns(x: *const f32, w: *const f32, y: *mut f32, d: Dims, j0: usize, j1: usize) {
        let mut j = j0;
        while j < j1 {
            let mut i = 0;
            while i < d.m {
                match d.m - i {
                    1 => pair::<1>(x, w, y, d, i, j, j1),
                    2 => pair::<2>(x, w, y, d, i, j, j1),
                    3 => pair::<3>(x, w, y, d, i, j, j1),
                    _ => pair::<4>(x, w, y, d, i, j, j1),
                }
                i += 4;
            }
            j += 2;
        }
    }

    /// `y[i..i+R, j..j+2]` (only column j when `j + 1 == end`).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pair<const R: usize>(x: *const f32, w: *const f32, y: *mut f32, d: Dims, i: usize, j: usize, end: usize) {
        let k = d.k;
        let both = j + 1 < end;
        let w0 = w.add(j * k);
        let w1 = if both { w0.add(k) } else { w0 };
        let xp = x.add(i * k);
        // Prefetch while the first block of x rows walks the pair, if the rows ahead exist.
        let ahead = (i == 0 && j + 2 + PREFETCH_ROWS <= end).then_some(PREFETCH_ROWS * k);
        let mut acc0 = [_mm256_setzero_ps(); R];
        let mut acc1 = [_mm256_setzero_ps(); R];
        let mut p = 0;
        while p < k {
            if let Some(a) = ahead {
                if p % 16 == 0 {
                    _mm_prefetch::<_MM_HINT_T0>(w0.add(p + a) as *const i8);
                    _mm_prefetch::<_MM_HINT_T0>(w1.add(p + a) as *const i8);
                }
            }
            let a0 = _mm256_loadu_ps(w0.add(p));
            let a1 = _mm256_loadu_ps(w1.add(p));
            for r in 0..R {
                let xv = _mm256_loadu_ps(xp.add(r * k + p));
                acc0[r] = _mm256_fmadd_ps(a0, xv, acc0[r]);
                acc1[r] = _mm256_fmadd_ps(a1, xv, acc1[r]);
            }
            p += 8;
        }
        for r in 0..R {
            let row = y.add((i + r) * d.n + j);
            *row = sum_lanes(acc0[r]);
            if both {
                *row.add(1) = sum_lanes(acc1[r]);
            }
        }
    }

    /// The sum of the eight lanes, in a fixed order.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn sum_lanes(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::Dims;
    use std::arch::x86_64::*;

    /// Weight rows prefetched ahead of the tile being multiplied.
    const PREFETCH_ROWS: usize = 8;

    /// Columns `j0..j1` of `y (m, n) = x (m, k) · w (n, k)ᵀ`: weight rows four at a time, each
    /// four against every block of up to four rows of x.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn columns(x: *const f32, w: *const f32, y: *mut f32, d: Dims, j0: usize, j1: usize) {
        let mut j = j0;
        while j < j1 {
            let mut i = 0;
            while i < d.m {
                match (j1 - j).min(4) {
                    1 => rows::<1>(x, w, y, d, i, j, j1),
                    2 => rows::<2>(x, w, y, d, i, j, j1),
                    3 => rows::<3>(x, w, y, d, i, j, j1),
                    _ => rows::<4>(x, w, y, d, i, j, j1),
                }
                i += 4;
            }
            j += 4;
        }
    }

    /// Dispatches on how many rows of x are left, and whether to prefetch: while the first block
    /// of x rows walks the tile, if the rows ahead exist.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn rows<const W: usize>(x: *const f32, w: *const f32, y: *mut f32, d: Dims, i: usize, j: usize, end: usize) {
        if i == 0 && j + W + PREFETCH_ROWS <= end {
            match d.m - i {
                1 => tile::<W, 1, true>(x, w, y, d, i, j),
                2 => tile::<W, 2, true>(x, w, y, d, i, j),
                3 => tile::<W, 3, true>(x, w, y, d, i, j),
                _ => tile::<W, 4, true>(x, w, y, d, i, j),
            }
        } else {
            match d.m - i {
                1 => tile::<W, 1, false>(x, w, y, d, i, j),
                2 => tile::<W, 2, false>(x, w, y, d, i, j),
                3 => tile::<W, 3, false>(x, w, y, d, i, j),
                _ => tile::<W, 4, false>(x, w, y, d, i, j),
            }
        }
    }

    /// `y[i..i+R, j..j+W]`. Each output is one 16-lane dot product over K (a masked load for a
    /// last partial 16, zeros in the unused lanes), then the lanes summed in a fixed order.
    #[inline]
    #[target_feature(enable = "avx512f")]
    // The (weight row, x row) tile indexes several arrays with the same c and r; index loops are
    // the plain form of that.
    #[allow(clippy::needless_range_loop)]
    unsafe fn tile<const W: usize, const R: usize, const PF: bool>(
        x: *const f32,
        w: *const f32,
        y: *mut f32,
        d: Dims,
        i: usize,
        j: usize,
    ) {
        let k = d.k;
        let wp: [*const f32; W] = std::array::from_fn(|c| w.add((j + c) * k));
        let xp = x.add(i * k);
        let ahead = PREFETCH_ROWS * k;
        let mut acc = [[_mm512_setzero_ps(); R]; W];
        let full = k - k % 16;
        let mut p = 0;
        while p < full {
            if PF {
                for c in 0..W {
                    _mm_prefetch::<_MM_HINT_T0>(wp[c].add(p + ahead) as *const i8);
                }
            }
            let a: [__m512; W] = std::array::from_fn(|c| _mm512_loadu_ps(wp[c].add(p)));
            for r in 0..R {
                let xv = _mm512_loadu_ps(xp.add(r * k + p));
                for c in 0..W {
                    acc[c][r] = _mm512_fmadd_ps(a[c], xv, acc[c][r]);
                }
            }
            p += 16;
        }
        if full < k {
            let mask: __mmask16 = (1u16 << (k - full)) - 1;
            let a: [__m512; W] = std::array::from_fn(|c| _mm512_maskz_loadu_ps(mask, wp[c].add(full)));
            for r in 0..R {
                let xv = _mm512_maskz_loadu_ps(mask, xp.add(r * k + full));
                for c in 0..W {
                    acc[c][r] = _mm512_fmadd_ps(a[c], xv, acc[c][r]);
                }
            }
        }
        for r in 0..R {
            let row = y.add((i + r) * d.n + j);
            for c in 0..W {
                *row.add(c) = sum_lanes(acc[c][r]);
            }
        }
    }

    /// The sum of the sixteen lanes, in a fixed order (halves added pairwise down to one).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn sum_lanes(v: __m512) -> f32 {
        let lo = _mm512_castps512_ps256(v);
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
        let s = _mm256_add_ps(lo, hi);
        let s = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_rel(a: &Tensor, b: &Tensor) -> f64 {
        ((a - b).abs().max() / b.abs().max()).double_value(&[])
    }

    /// The instruction sets this CPU runs, narrowest first.
    fn isas() -> Vec<Isa> {
        match isa() {
            Some(Isa::Avx512) => vec![Isa::Avx2, Isa::Avx512],
            Some(Isa::Avx2) => vec![Isa::Avx2],
            None => vec![],
        }
    }

    /// On every instruction set the CPU has: every row count up to MAX_ROWS, N not a multiple of
    /// the tile, K not a multiple of 16, the threaded split and leading dims: equal to libtorch's
    /// linear to rounding; a row gives the same bits alone as in a batch. Gradient mode with a
    /// trainable weight, too many rows, or a ragged K fall back.
    #[test]
    fn equals_libtorch_linear_and_is_batch_invariant() {
        if !supported() {
            return;
        }
        tch::manual_seed(11);
        let f = (Kind::Float, Device::Cpu);
        for isa in isas() {
            for (n, k) in [(7, 16), (5, 40), (130, 64), (1024, 512)] {
                let w = Tensor::randn([n, k], f);
                let x = Tensor::randn([MAX_ROWS, k], f);
                tch::no_grad(|| {
                    for m in [1, 2, 3, 4, 5, 9, 16, 63, MAX_ROWS] {
                        let xm = x.narrow(0, 0, m);
                        let y = linear_on(&xm, &w, isa).expect("taken");
                        let r = max_rel(&y, &xm.linear::<&Tensor>(&w, None));
                        assert!(r < 1e-5, "{isa:?} ({m}, {k}) x ({n}, {k}): {r:e}");
                        let alone = linear_on(&xm.narrow(0, m - 1, 1), &w, isa).expect("taken");
                        assert!(alone.equal(&y.narrow(0, m - 1, 1)), "{isa:?}: row {m} alone vs in a batch of {m}");
                    }
                });
            }
        }
        let w = Tensor::randn([130, 64], f);
        let x = Tensor::randn([MAX_ROWS, 64], f);
        enabled(|| {
            tch::no_grad(|| {
                let x3 = x.narrow(0, 0, 6).view([2, 3, 64]);
                assert_eq!(linear(&x3, &w).expect("taken").size(), [2, 3, 130]);
                assert!(linear(&Tensor::randn([MAX_ROWS + 1, 64], f), &w).is_none(), "too many rows");
            })
        });
        assert!(tch::no_grad(|| linear(&x, &w)).is_none(), "outside `enabled`");
        enabled(|| {
            let w = Tensor::randn([8, 12], f).set_requires_grad(true);
            assert!(linear(&Tensor::randn([2, 12], f), &w).is_none(), "K not a multiple of 8");
            let w = Tensor::randn([8, 16], f).set_requires_grad(true);
            assert!(linear(&Tensor::randn([2, 16], f), &w).is_none(), "gradient wanted");
            assert!(tch::no_grad(|| linear(&Tensor::randn([2, 16], f), &w)).is_some(), "no gradient mode");
        });
    }

    /// Each group multiplied by its own weight, empty groups and threads included.
    #[test]
    fn grouped_equals_each_group_by_its_weight() {
        if !supported() {
            return;
        }
        tch::manual_seed(12);
        let f = (Kind::Float, Device::Cpu);
        let (g, n, k) = (5, 24, 32);
        let w = Tensor::randn([g, n, k], f);
        let counts = [3i64, 0, 9, 1, 4];
        let starts: Vec<i64> = counts.iter().scan(0, |a, &c| Some(std::mem::replace(a, *a + c))).collect();
        let xs = Tensor::randn([17, k], f);
        let y = enabled(|| tch::no_grad(|| grouped(&xs, &w, &starts, &counts))).expect("taken");
        for j in 0..g as usize {
            if counts[j] == 0 {
                continue;
            }
            let want = xs.narrow(0, starts[j], counts[j]).linear::<&Tensor>(&w.get(j as i64), None);
            let r = max_rel(&y.narrow(0, starts[j], counts[j]), &want);
            assert!(r < 1e-5, "group {j}: {r:e}");
        }
        assert_eq!(balance(&counts, 2).iter().map(|s| s.iter().map(|&j| counts[j]).sum::<i64>()).max(), Some(9));
    }
}
