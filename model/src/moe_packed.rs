//! Grouped expert compute for inference: the routed experts of one MoE layer run on tokens
//! sorted by expert once, with gate and up fused into one GEMM, instead of a gather, three GEMMs
//! and a scatter-add per expert.
//!
//! [`PackedExperts::pack`] copies every expert's weights into two stacked tensors, `gate_up`
//! (E, 2I, d) (gate rows first, then up rows) and `down` (E, d, I), and then points each expert's
//! own variables (`experts.{e}.gate_proj.weight`, …) at its slice of that storage (`set_data`).
//! The checkpoint names, the VarStore and any in-place write to a variable (checkpoint loading, an
//! engine's weight update) keep working and the stacked tensors see the write; no second copy of
//! the weights is kept. A variable re-pointed afterwards (`set_data`, e.g. a dtype cast) no longer
//! shares the storage: [`PackedExperts::is_current`] notices and the caller falls back to the
//! per-expert path.
//!
//! [`PackedExperts::forward`] reads the routing on the host once (a counting sort by expert),
//! gathers the tokens in expert order, runs each expert's `down(silu(gate) ⊙ up)` on its contiguous
//! block, puts the rows back in assignment order and takes the gate-weighted sum over the K
//! experts of each token with one `bmm`. The stacked tensors carry no gradient to the per-expert
//! variables, so training (gradient mode on, expert weights trainable) keeps the per-expert path.
//!
//! The layer's shared expert joins the stack as its last entry when it has the routed experts'
//! shape (one shared expert, as in every V3-family config); the routing never names it, so the
//! path above skips it and runs it on its own. [`PackedExperts::forward_fused`], the engine's CPU
//! steps, runs it as one more expert of every token in the same two kernel calls, with the
//! gather, the SwiGLU and the weighted sum as plain loops.
//!
//! On CUDA in bf16, [`PackedExperts::forward_on_device`] keeps the grouping on the device: a stable
//! sort of the assignments, group ends from a scatter-add count, and libtorch's `_grouped_mm`
//! (CUTLASS's grouped GEMM there) for both products, so a MoE layer reads nothing back to the
//! host and a decode step can be captured as a CUDA graph.
//!
//! In f32 on CUDA (no `_grouped_mm` kernel there) or on a GPU that refuses it, a decode step's
//! few tokens run through every expert instead ([`PackedExperts::forward_dense`]: E/K times the
//! arithmetic, no sort, no synchronisation); larger calls group on the host.
//!
//! Left out: one batched GEMM over all experts on the CPU. Padding the groups to the largest one
//! for `bmm` was slower at batch 64 (the padding adds ~50 % FLOPs to GEMMs that are already
//! compute-bound there), and libtorch's `_grouped_mm` on the CPU is a loop of GEMMs.

use crate::kernel;
use crate::mlp::{linear, Mlp};
use std::sync::atomic::{AtomicBool, Ordering};
use tch::{Device, Kind, Tensor};

/// Set once libtorch refused `_grouped_mm` in this process (see
/// [`PackedExperts::forward_on_device`]).
static GROUPED_MM_REFUSED: AtomicBool = AtomicBool::new(false);

/// Most token × expert rows [`PackedExperts::forward_dense`] computes on CUDA (64 tokens of 64
/// experts, 16 of 256): beyond it the E/K-fold arithmetic costs more than the host grouping's
/// synchronisation.
const DENSE_ROWS: i64 = 4096;

/// One MoE layer's routed experts stacked for grouped compute (see the module notes).
#[derive(Debug)]
pub struct PackedExperts {
    /// (E, 2I, d): rows `0..I` of expert e are its `gate_proj`, rows `I..2I` its `up_proj`.
    gate_up: Tensor,
    /// (E, d, I): expert e's `down_proj`.
    down: Tensor,
    /// Where each expert's `gate_proj`, `up_proj` and `down_proj` slice starts, and the dtype:
    /// what [`Self::is_current`] compares the variables with, with no tensor op per forward.
    slots: Vec<[usize; 3]>,
}

impl PackedExperts {
    /// Stacks `experts` (all of one shape, dtype and device) and re-points each expert's variables
    /// at its slice of the stacked storage.
    pub fn pack(experts: &[&Mlp]) -> Self {
        assert!(!experts.is_empty(), "packing needs at least one expert");
        let (inter, d) = (experts[0].gate_proj.size()[0], experts[0].gate_proj.size()[1]);
        let e = experts.len() as i64;
        let opts = (experts[0].gate_proj.kind(), experts[0].gate_proj.device());
        let gate_up = Tensor::empty([e, 2 * inter, d], opts); // (E, 2I, d)
        let down = Tensor::empty([e, d, inter], opts); // (E, d, I)
        let slots = tch::no_grad(|| {
            experts
                .iter()
                .enumerate()
                .map(|(j, m)| {
                    let (gate, up, dn) = Self::slices(&gate_up, &down, j as i64, inter);
                    let starts = [gate.data_ptr() as usize, up.data_ptr() as usize, dn.data_ptr() as usize];
                    for (var, slot) in [(&m.gate_proj, gate), (&m.up_proj, up), (&m.down_proj, dn)] {
                        slot.shallow_clone().copy_(var);
                        var.shallow_clone().set_data(&slot);
                    }
                    starts
                })
                .collect()
        });
        PackedExperts { gate_up, down, slots }
    }

    /// Expert `j`'s `gate_proj` (I, d), `up_proj` (I, d) and `down_proj` (d, I) slices.
    fn slices(gate_up: &Tensor, down: &Tensor, j: i64, inter: i64) -> (Tensor, Tensor, Tensor) {
        let gu = gate_up.get(j); // (2I, d)
        (gu.narrow(0, 0, inter), gu.narrow(0, inter, inter), down.get(j))
    }

    /// Whether every expert variable still lives in the packed storage, and no gradient is wanted
    /// for the experts (gradient mode off, or their weights frozen).
    pub fn usable(&self, experts: &[&Mlp]) -> bool {
        let trainable = experts.iter().any(|m| m.gate_proj.requires_grad() || m.up_proj.requires_grad());
        let trainable = trainable || experts.iter().any(|m| m.down_proj.requires_grad());
        !(kernel::grad_mode() && trainable) && self.is_current(experts)
    }

    /// Whether every expert variable still points into the packed storage (nothing re-pointed it).
    pub fn is_current(&self, experts: &[&Mlp]) -> bool {
        let kind = self.down.kind();
        experts.len() == self.slots.len()
            && experts.iter().zip(&self.slots).all(|(m, starts)| {
                [&m.gate_proj, &m.up_proj, &m.down_proj]
                    .iter()
                    .zip(starts)
                    .all(|(var, &start)| var.data_ptr() as usize == start && var.kind() == kind)
            })
    }

    /// `Σ_k weights[n, k] · expert_{experts[n, k]}(x[n])` for tokens `x (N, d)`, expert ids
    /// `experts (N, K)` and gate weights `weights (N, K)`: (N, d).
    /// On CUDA in bf16 the grouping stays on the device ([`Self::forward_on_device`]); elsewhere it
    /// is a counting sort on the host.
    pub fn forward(&self, x: &Tensor, experts: &Tensor, weights: &Tensor) -> Tensor {
        if x.device().is_cuda() {
            if x.kind() == Kind::BFloat16 && self.grouped_mm_fits() {
                if let Some(y) = self.forward_on_device(x, experts, weights) {
                    return y;
                }
            }
            if x.size()[0] * self.down.size()[0] <= DENSE_ROWS {
                return self.forward_dense(x, experts, weights);
            }
        }
        let (n, d) = (x.size()[0], x.size()[1]);
        let (e, k) = (self.gate_up.size()[0], experts.size()[1]);
        let inter = self.down.size()[2];
        let groups = Groups::of(&host_ids(experts), e);
        let device = x.device();
        let xs = x.index_select(0, &Tensor::from_slice(&groups.tokens(k)).to_device(device)); // (N·K, d) by expert
        let (starts, counts) = (&groups.starts, &groups.counts);
        let h = kernel::grouped(&xs, &self.gate_up, starts, counts)
            .unwrap_or_else(|| per_group(&xs, &self.gate_up, starts, counts)); // (N·K, 2I)
        let act = h.narrow(-1, 0, inter).silu() * h.narrow(-1, inter, inter); // (N·K, I)
        let sorted = kernel::grouped(&act, &self.down, starts, counts)
            .unwrap_or_else(|| per_group(&act, &self.down, starts, counts)); // (N·K, d)
        let back = Tensor::from_slice(&groups.position).to_device(device); // (N·K)
        let y = sorted.index_select(0, &back).view([n, k, d]); // (N, K, d)
        weights.to_kind(x.kind()).unsqueeze(1).bmm(&y).squeeze_dim(1) // (N, d)
    }

    /// [`Self::forward`] with no host synchronisation: the assignments sorted by expert on their
    /// device (a stable sort, so each group keeps token order), the group ends a cumulative sum of
    /// per-expert counts, and both products one libtorch `_grouped_mm` each over the stacked
    /// weights (CUTLASS's grouped GEMM on CUDA in bf16; a loop of GEMMs elsewhere). What a decode
    /// step needs on a GPU for CUDA-graph capture: no per-layer copy of the routing to the host.
    /// None when libtorch refuses the grouped GEMM (a GPU older than its kernel's: CUTLASS's needs
    /// compute capability 9.0 for bf16); from then on this process does not ask again.
    pub fn forward_on_device(&self, x: &Tensor, experts: &Tensor, weights: &Tensor) -> Option<Tensor> {
        if GROUPED_MM_REFUSED.load(Ordering::Relaxed) {
            return None;
        }
        let (n, d) = (x.size()[0], x.size()[1]);
        let k = experts.size()[1];
        let inter = self.down.size()[2];
        let ids = experts.flatten(0, -1); // (N·K)
        let (_, order) = ids.sort_stable(true, 0, false); // assignments by expert
        let ends = group_sizes(&ids, self.down.size()[0]).cumsum(0, Kind::Int); // (E) i32
        let xs = x.index_select(0, &order.divide_scalar_mode(k, "floor")); // (N·K, d) by expert
        let grouped = |a: &Tensor, w: &Tensor| {
            let out = a.f_internal_grouped_mm(&w.transpose(1, 2), Some(&ends), None, None);
            out.map_err(|_| GROUPED_MM_REFUSED.store(true, Ordering::Relaxed)).ok()
        };
        let h = grouped(&xs, &self.gate_up)?; // (N·K, 2I)
        let act = h.narrow(-1, 0, inter).silu() * h.narrow(-1, inter, inter); // (N·K, I)
        let sorted = grouped(&act, &self.down)?; // (N·K, d)
        let y = sorted.zeros_like().index_copy(0, &order, &sorted).view([n, k, d]); // assignment order
        Some(weights.to_kind(x.kind()).unsqueeze(1).bmm(&y).squeeze_dim(1)) // (N, d)
    }

    /// [`Self::forward`] with every stacked expert run on every token and the outputs weighted by
    /// the gates, zero for the experts a token did not choose: one batched GEMM per product over
    /// the stack, no sort, no host synchronisation. E/K times the routed arithmetic, so
    /// [`Self::forward`] takes it on CUDA only for at most [`DENSE_ROWS`] token × expert rows (a
    /// decode step) where `_grouped_mm` does not serve (f32, or a GPU it refuses).
    pub fn forward_dense(&self, x: &Tensor, experts: &Tensor, weights: &Tensor) -> Tensor {
        let (n, d) = (x.size()[0], x.size()[1]);
        let (e, inter) = (self.down.size()[0], self.down.size()[2]);
        let gates = Tensor::zeros([n, e], (x.kind(), x.device())).scatter(1, experts, &weights.to_kind(x.kind())); // (N, E)
        let h = x.unsqueeze(0).expand([e, n, d], false).bmm(&self.gate_up.transpose(1, 2)); // (E, N, 2I)
        let act = h.narrow(-1, 0, inter).silu() * h.narrow(-1, inter, inter); // (E, N, I)
        let y = act.bmm(&self.down.transpose(1, 2)); // (E, N, d)
        gates.unsqueeze(1).bmm(&y.transpose(0, 1)).squeeze_dim(1) // (N, d)
    }

    /// Whether the stacked weights meet `_grouped_mm`'s layout rule: every row stride a multiple
    /// of 16 bytes.
    fn grouped_mm_fits(&self) -> bool {
        let bytes = self.down.kind().elt_size_in_bytes() as i64;
        let (d, inter) = (self.down.size()[1], self.down.size()[2]);
        (d * bytes) % 16 == 0 && (inter * bytes) % 16 == 0
    }

    /// [`Self::forward`] plus, when `shared` (the stack's last expert is the layer's shared
    /// expert, see [`crate::moe::Moe::pack_experts`]), that expert on every token, for the
    /// engine's CPU steps: the routed and shared experts in two kernel calls over the stack
    /// (`gate_up`, then `down`), the rows gathered, the SwiGLU and the gate-weighted sum done in
    /// plain loops — ~30 small ops of a MoE layer at batch 1 become ~10. Each token's output is
    /// `Σ_k w_k · expert_k(x)` in the router's order, then `+ shared(x)`, as the tensor path adds
    /// them; `None` where the kernel or the fused forms do not apply (the caller then runs the
    /// tensor path).
    pub fn forward_fused(&self, x: &Tensor, experts: &Tensor, weights: &Tensor, shared: bool) -> Option<Tensor> {
        if !crate::fused::applies(&[x, weights]) || x.dim() != 2 || weights.kind() != tch::Kind::Float {
            return None;
        }
        let (n, d) = (x.size()[0] as usize, x.size()[1] as usize);
        let (e, k) = (self.gate_up.size()[0], experts.size()[1] as usize);
        let inter = self.down.size()[2] as usize;
        let routed = host_ids(experts);
        let gate = Vec::<f32>::try_from(weights.flatten(0, -1).to_device(Device::Cpu)).ok()?;
        // Per token: its K routed experts, then the shared one (the stack's last) with weight 1.
        let per = k + usize::from(shared);
        let (mut ids, mut w) = (Vec::with_capacity(n * per), Vec::with_capacity(n * per));
        for t in 0..n {
            ids.extend_from_slice(&routed[t * k..(t + 1) * k]);
            w.extend_from_slice(&gate[t * k..(t + 1) * k]);
            if shared {
                ids.push(e - 1);
                w.push(1.0);
            }
        }
        let groups = Groups::of(&ids, e);
        let x = x.contiguous();
        let xs = Tensor::empty([(n * per) as i64, d as i64], (tch::Kind::Float, Device::Cpu));
        // SAFETY: x (n, d) and xs (n·per, d) are contiguous f32; every sorted row is written once.
        unsafe {
            let (src, dst) = (x.data_ptr() as *const f32, xs.data_ptr() as *mut f32);
            for (at, &a) in groups.order.iter().enumerate() {
                let token = a as usize / per;
                std::ptr::copy_nonoverlapping(src.add(token * d), dst.add(at * d), d);
            }
        }
        let h = kernel::grouped(&xs, &self.gate_up, &groups.starts, &groups.counts)?; // (N·per, 2I)
        let act = Tensor::empty([(n * per) as i64, inter as i64], (tch::Kind::Float, Device::Cpu));
        // SAFETY: h (n·per, 2I) and act (n·per, I) are fresh contiguous f32 tensors.
        unsafe {
            let (hp, ap) = (h.data_ptr() as *const f32, act.data_ptr() as *mut f32);
            for r in 0..n * per {
                let row = std::slice::from_raw_parts(hp.add(r * 2 * inter), 2 * inter);
                let out = std::slice::from_raw_parts_mut(ap.add(r * inter), inter);
                let (g, u) = row.split_at(inter);
                for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
                    *o = g / (1.0 + (-g).exp()) * u;
                }
            }
        }
        let sorted = kernel::grouped(&act, &self.down, &groups.starts, &groups.counts)?; // (N·per, d)
        let y = Tensor::zeros([n as i64, d as i64], (tch::Kind::Float, Device::Cpu));
        // SAFETY: sorted (n·per, d) and y (n, d) are fresh contiguous f32 tensors.
        unsafe {
            let (sp, yp) = (sorted.data_ptr() as *const f32, y.data_ptr() as *mut f32);
            for t in 0..n {
                let out = std::slice::from_raw_parts_mut(yp.add(t * d), d);
                for j in 0..per {
                    let a = t * per + j;
                    let row = std::slice::from_raw_parts(sp.add(groups.position[a] as usize * d), d);
                    // The shared expert's weight is 1: `1·v` is `v`, so it is added as the tensor path adds it.
                    let wa = w[a];
                    out.iter_mut().zip(row).for_each(|(o, &v)| *o += wa * v);
                }
            }
        }
        Some(y)
    }
}

/// How many of `ids` (any shape, i64) name each of experts `0..e`, on their device: (E) i64. A
/// scatter-add, not `bincount`, which reads its input's maximum back to the host on CUDA.
pub fn group_sizes(ids: &Tensor, e: i64) -> Tensor {
    let flat = ids.flatten(0, -1);
    Tensor::zeros([e], (Kind::Int64, flat.device())).index_add(0, &flat, &flat.ones_like())
}

/// Expert ids `(N, K)` on the host, token-major.
fn host_ids(experts: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(experts.flatten(0, -1).to_device(Device::Cpu)).expect("expert ids are i64")
}

/// Rows `starts[g] .. starts[g] + counts[g]` of `xs (R, K)` times `w[g]ᵀ` for `w (G, N, K)`, one
/// libtorch GEMM per non-empty group (the groups tile `xs` in order): (R, N).
fn per_group(xs: &Tensor, w: &Tensor, starts: &[i64], counts: &[i64]) -> Tensor {
    let parts: Vec<Tensor> = (0..counts.len())
        .filter(|&j| counts[j] > 0)
        .map(|j| linear(&xs.narrow(0, starts[j], counts[j]), &w.get(j as i64)))
        .collect();
    Tensor::cat(&parts, 0)
}

/// The assignments of one routing grouped by expert (a stable counting sort on the host).
struct Groups {
    /// Assignment (flat index `n·K + k`) at each sorted position.
    order: Vec<i64>,
    /// Sorted position of each assignment (the inverse of `order`).
    position: Vec<i64>,
    /// First sorted position of each expert's group.
    starts: Vec<i64>,
    /// Size of each expert's group.
    counts: Vec<i64>,
}

impl Groups {
    /// Groups the expert ids `ids` (N·K, token-major) over `e` experts.
    fn of(ids: &[i64], e: i64) -> Self {
        let mut counts = vec![0i64; e as usize];
        for &j in ids {
            counts[j as usize] += 1;
        }
        let starts: Vec<i64> = counts.iter().scan(0, |acc, &c| Some(std::mem::replace(acc, *acc + c))).collect();
        let (mut next, mut order, mut position) = (starts.clone(), vec![0i64; ids.len()], vec![0i64; ids.len()]);
        for (a, &j) in ids.iter().enumerate() {
            let at = next[j as usize];
            next[j as usize] += 1;
            order[at as usize] = a as i64;
            position[a] = at;
        }
        Groups { order, position, starts, counts }
    }

    /// The token of each sorted assignment, for `k` experts per token.
    fn tokens(&self, k: i64) -> Vec<i64> {
        self.order.iter().map(|a| a / k).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::VarStore;

    /// Σ_k w_k · expert_k(x), one expert and token at a time: the reference.
    fn reference(experts: &[Mlp], x: &Tensor, ids: &[i64], w: &Tensor, k: usize) -> Tensor {
        let rows: Vec<Tensor> = (0..x.size()[0])
            .map(|t| {
                let xt = x.narrow(0, t, 1);
                let terms =
                    (0..k).map(|j| experts[ids[t as usize * k + j] as usize].forward(&xt) * w.get(t).get(j as i64));
                terms.reduce(|a, b| a + b).expect("k ≥ 1")
            })
            .collect();
        Tensor::cat(&rows, 0)
    }

    /// Grouped equals per-expert; a write into a variable reaches the packed weights; a re-pointed
    /// variable or gradient mode turns the grouped path off.
    #[test]
    fn grouped_matches_each_expert_and_follows_the_variables() {
        tch::manual_seed(3);
        let vs = VarStore::new(Device::Cpu);
        let experts: Vec<Mlp> = (0..5).map(|e| Mlp::new(&(vs.root() / "experts" / e), 8, 6)).collect();
        let members: Vec<&Mlp> = experts.iter().collect();
        let packed = PackedExperts::pack(&members);
        let x = Tensor::randn([7, 8], (Kind::Float, Device::Cpu));
        let ids = [0i64, 3, 3, 1, 4, 0, 2, 4, 1, 3, 0, 2, 4, 1];
        let w = Tensor::rand([7, 2], (Kind::Float, Device::Cpu));
        let experts_t = Tensor::from_slice(&ids).view([7, 2]); // (N, K)
        let diff = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
        tch::no_grad(|| {
            assert!(packed.usable(&members));
            let d = diff(&packed.forward(&x, &experts_t, &w), &reference(&experts, &x, &ids, &w, 2));
            assert!(d < 1e-6, "grouped vs per-expert: {d:e}");
            let fast = crate::kernel::enabled(|| packed.forward(&x, &experts_t, &w));
            let d = diff(&fast, &reference(&experts, &x, &ids, &w, 2));
            assert!(d < 1e-6, "grouped with the kernel vs per-expert: {d:e}");
            experts[3].up_proj.shallow_clone().copy_(&Tensor::randn([6, 8], (Kind::Float, Device::Cpu)));
            let d = diff(&packed.forward(&x, &experts_t, &w), &reference(&experts, &x, &ids, &w, 2));
            assert!(d < 1e-5, "after an in-place update: {d:e}");
        });
        assert!(!packed.usable(&members), "gradient mode with trainable experts");
        tch::no_grad(|| {
            experts[1].down_proj.shallow_clone().set_data(&Tensor::zeros([8, 6], (Kind::Float, Device::Cpu)))
        });
        assert!(!tch::no_grad(|| packed.usable(&members)), "a re-pointed variable");
    }

    /// The device-grouped form (`_grouped_mm`, libtorch's loop of GEMMs on the CPU) against the
    /// host-grouped one and the per-expert reference, with an expert no token chose, in f32 and
    /// bf16.
    #[test]
    fn device_grouping_equals_host_grouping() {
        tch::manual_seed(5);
        let vs = VarStore::new(Device::Cpu);
        let experts: Vec<Mlp> = (0..6).map(|e| Mlp::new(&(vs.root() / "experts" / e), 16, 8)).collect();
        let members: Vec<&Mlp> = experts.iter().collect();
        let packed = PackedExperts::pack(&members);
        assert!(packed.grouped_mm_fits());
        let x = Tensor::randn([9, 16], (Kind::Float, Device::Cpu));
        let ids = [0i64, 3, 3, 1, 4, 0, 2, 4, 1, 3, 0, 2, 4, 1, 3, 0, 1, 2]; // expert 5: none
        let routed = Tensor::from_slice(&ids).view([9, 2]);
        let w = Tensor::rand([9, 2], (Kind::Float, Device::Cpu));
        let sizes = Vec::<i64>::try_from(group_sizes(&routed, 6)).unwrap();
        assert_eq!(sizes, vec![4, 4, 3, 4, 3, 0]);
        tch::no_grad(|| {
            // f32: the three sum in different orders (outputs of order 1–10, so ~1e-6 apart).
            let host = packed.forward(&x, &routed, &w);
            let device = packed.forward_on_device(&x, &routed, &w).expect("libtorch's CPU grouped GEMM");
            let d = (&device - &host).abs().max().double_value(&[]);
            assert!(d < 1e-5, "device vs host grouping in f32: {d:e}");
            let d = (&device - reference(&experts, &x, &ids, &w, 2)).abs().max().double_value(&[]);
            assert!(d < 1e-5, "device grouping vs per-expert: {d:e}");
            // Every expert on every token, the unchosen ones weighted zero (CUDA's f32 decode).
            let dense = packed.forward_dense(&x, &routed, &w);
            let d = (&dense - reference(&experts, &x, &ids, &w, 2)).abs().max().double_value(&[]);
            assert!(d < 1e-5, "dense vs per-expert: {d:e}");
            let bf = PackedExperts {
                gate_up: packed.gate_up.to_kind(Kind::BFloat16),
                down: packed.down.to_kind(Kind::BFloat16),
                slots: Vec::new(),
            };
            let xb = x.to_kind(Kind::BFloat16);
            let (host, device) = (bf.forward(&xb, &routed, &w), bf.forward_on_device(&xb, &routed, &w).unwrap());
            assert_eq!(device.kind(), Kind::BFloat16);
            let d = (device.to_kind(Kind::Float) - host.to_kind(Kind::Float)).abs().max().double_value(&[]);
            let scale = host.to_kind(Kind::Float).abs().max().double_value(&[]);
            assert!(d <= 1e-2 * scale, "device vs host grouping in bf16: {d:e} of {scale}");
        });
    }

    /// The fused form, the stack's last expert a shared one every token also runs: equal to
    /// Σ_k w_k · expert_k(x) + shared(x) expert by expert; a token gives the same bits alone as
    /// in the batch; outside the engine's steps it is not taken.
    #[test]
    fn fused_adds_the_shared_expert_and_is_batch_invariant() {
        tch::manual_seed(4);
        let vs = VarStore::new(Device::Cpu);
        let experts: Vec<Mlp> = (0..5).map(|e| Mlp::new(&(vs.root() / "experts" / e), 16, 8)).collect();
        let members: Vec<&Mlp> = experts.iter().collect();
        let packed = PackedExperts::pack(&members);
        let f = (Kind::Float, Device::Cpu);
        let x = Tensor::randn([7, 16], f);
        let ids = [0i64, 3, 3, 1, 2, 0, 2, 3, 1, 3, 0, 2, 3, 1];
        let routed = Tensor::from_slice(&ids).view([7, 2]);
        let w = Tensor::rand([7, 2], f);
        tch::no_grad(|| {
            let fused = crate::kernel::enabled(|| packed.forward_fused(&x, &routed, &w, true)).expect("taken");
            let want = reference(&experts, &x, &ids, &w, 2) + experts[4].forward(&x);
            let d = (&fused - &want).abs().max().double_value(&[]);
            assert!(d < 1e-5, "fused with a shared expert: {d:e}");
            let one = |t: &Tensor| t.narrow(0, 2, 1);
            let alone = crate::kernel::enabled(|| packed.forward_fused(&one(&x), &one(&routed), &one(&w), true));
            assert!(alone.expect("taken").equal(&one(&fused)), "token 2 alone vs in the batch");
            assert!(packed.forward_fused(&x, &routed, &w, true).is_none(), "outside `kernel::enabled`");
        });
    }
}
