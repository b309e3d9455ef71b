//! DeepSeekMoE (docs/model.md §2.9; fixtures README "MoE routing"): a sigmoid router whose
//! `e_score_correction_bias` steers selection only, group-limited top-k (group score = sum of the
//! top-2 biased scores), gate weights from the unbiased scores, normalised with `+1e-20` and scaled
//! by `routed_scaling_factor`; routed experts plus the always-on shared experts.
//!
//! DeepSeek-V2's router (`scoring_func: softmax`) differs: softmax scores, no bias, `greedy` top-k
//! over all experts or `group_limited_greedy` (groups ranked by their best score), and weights
//! normalised *or* scaled (see `Moe::gate_weights`).
//!
//! The router runs in f32 whatever the weights' dtype. A [`Routing`] can be returned (rollout
//! "keep routing", docs/model.md §3.3.6) and its expert ids replayed with [`Moe::forward_replayed`]:
//! the ids are forced, the gate weights recomputed from the current router at those ids (the
//! reference marks this choice UNCONFIRMED; it is what open "R3" implementations do, and it keeps
//! the router trained). [`Moe::forward_routed`] takes a whole routing, weights included.
//!
//! Expert compute: the assignments sorted by expert on their device, then per active expert one
//! gather, its SwiGLU and one scatter-add (training: each expert's own variables get their
//! gradients); one host copy per layer, of the E group sizes. After [`Moe::pack_experts`] (the rollout engine
//! does it), inference runs the routed experts grouped over stacked weights instead, see
//! [`crate::moe_packed`].
//!
//! Left out: the aux-loss-free bias update and the sequence-wise balance loss (trainer's job),
//! expert parallelism, and a grouped path that trains (the stacked weights carry no gradient).

use crate::config::{ModelConfig, Scoring, TopkMethod};
use crate::mlp::Mlp;
use crate::moe_packed::{group_sizes, PackedExperts};
use tch::{nn, Device, Kind, Tensor};

/// Which experts each token uses and with what weight.
#[derive(Debug)]
pub struct Routing {
    /// Expert ids: (N, K) i64, in the router's top-k order.
    pub experts: Tensor,
    /// Gate weights aligned with `experts`: (N, K) f32 (normalised and scaled).
    pub weights: Tensor,
}

/// Indices of the `k` largest of `v`, largest first; equal values by lower index.
fn best_first(v: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

/// One MoE feed-forward block (`model.layers.{i}.mlp`).
#[derive(Debug)]
pub struct Moe {
    /// `gate.weight`: (E, d), the router.
    pub gate: Tensor,
    /// `gate.e_score_correction_bias`: (E) f32, a non-trainable buffer used for selection only
    /// (`noaux_tc` routing; V2's routers have none).
    pub e_score_correction_bias: Option<Tensor>,
    /// `experts.{e}`.
    pub experts: Vec<Mlp>,
    /// `shared_experts` (width `moe_intermediate_size · n_shared_experts`), when there are any.
    pub shared_experts: Option<Mlp>,
    n_group: i64,
    topk_group: i64,
    top_k: i64,
    norm_topk_prob: bool,
    routed_scaling_factor: f64,
    scoring: Scoring,
    method: TopkMethod,
    packed: Option<PackedExperts>,
    /// Whether the packed stack holds the shared expert as its last entry.
    shared_packed: bool,
}

impl Moe {
    /// The block under `path` (= `model.layers.{i}.mlp`).
    pub fn new(path: &nn::Path, cfg: &ModelConfig) -> Self {
        let (d, e) = (cfg.hidden_size as i64, cfg.n_routed_experts as i64);
        let inter = cfg.moe_intermediate_size as i64;
        let gate_path = path / "gate";
        let gate = gate_path.var("weight", &[e, d], nn::init::DEFAULT_KAIMING_UNIFORM);
        let e_score_correction_bias =
            cfg.router_has_bias().then(|| gate_path.zeros_no_train("e_score_correction_bias", &[e]));
        let experts = (0..e).map(|j| Mlp::new(&(path / "experts" / j), d, inter)).collect();
        let shared_experts = (cfg.n_shared_experts > 0)
            .then(|| Mlp::new(&(path / "shared_experts"), d, inter * cfg.n_shared_experts as i64));
        Moe {
            gate,
            e_score_correction_bias,
            experts,
            shared_experts,
            n_group: cfg.n_group as i64,
            topk_group: cfg.topk_group as i64,
            top_k: cfg.num_experts_per_tok as i64,
            norm_topk_prob: cfg.norm_topk_prob(),
            routed_scaling_factor: cfg.routed_scaling_factor,
            scoring: cfg.scoring(),
            method: cfg.topk_method(),
            packed: None,
            shared_packed: false,
        }
    }

    /// Stacks the routed experts' weights for grouped inference and makes each expert's variables
    /// views of that storage (see [`crate::moe_packed`]); names, loading and in-place updates are
    /// unchanged. Call it after any dtype or device change of the variables.
    pub fn pack_experts(&mut self) {
        let same_shape = |m: &Mlp| {
            m.gate_proj.size() == self.experts[0].gate_proj.size()
                && m.down_proj.size() == self.experts[0].down_proj.size()
        };
        // The shared expert goes last in the stack when it has the routed experts' shape (one
        // shared expert), so the engine's fused path runs it in the same kernel calls.
        self.shared_packed = self.shared_experts.as_ref().is_some_and(same_shape);
        self.packed = Some(PackedExperts::pack(&self.packed_members()));
    }

    /// The experts in the packed stack, in its order: the routed ones, then the shared one when
    /// it was packed too.
    fn packed_members(&self) -> Vec<&Mlp> {
        let shared = self.shared_experts.iter().filter(|_| self.shared_packed);
        self.experts.iter().chain(shared).collect()
    }

    /// Routes tokens `x (N, d)`: the router's own top-k.
    pub fn route(&self, x: &Tensor) -> Routing {
        if let Some(routing) = self.route_fused(x) {
            return routing;
        }
        let scores = self.scores(x);
        let experts = tch::no_grad(|| self.select(&scores.detach()));
        self.gate_weights(&scores, experts)
    }

    /// [`Self::route`] for V3's sigmoid router with `noaux_tc` selection, one token at a time in
    /// plain loops on the host: the logits through the engine's kernel, then sigmoid, bias, group
    /// scores, the kept groups, the top-k and the normalised weights — the tensor form's ~26 small
    /// ops per MoE layer, one pass here. The same arithmetic in the same order except the logits
    /// (the kernel's sum order) and the sigmoid (the C library's `exp`), so scores agree to float
    /// rounding; ties go to the lower group and expert index. `None` outside the engine's CPU steps
    /// (the conditions of [`crate::kernel`]) and for the other routers.
    fn route_fused(&self, x: &Tensor) -> Option<Routing> {
        if self.scoring != Scoring::Sigmoid || self.method != TopkMethod::NoauxTc || !crate::fused::applies(&[x]) {
            return None;
        }
        let bias = match &self.e_score_correction_bias {
            Some(b) if b.kind() == Kind::Float && b.is_contiguous() => Some(Vec::<f32>::try_from(b).ok()?),
            Some(_) => return None,
            None => None,
        };
        let logits = crate::kernel::linear(x, &self.gate)?; // (N, E) f32
        let (n, e) = (logits.size()[0] as usize, logits.size()[1] as usize);
        let logits = Vec::<f32>::try_from(logits.view([-1])).ok()?;
        let (groups, keep, k) = (self.n_group as usize, self.topk_group as usize, self.top_k as usize);
        let per_group = e / groups;
        let (mut ids, mut weights) = (Vec::with_capacity(n * k), Vec::with_capacity(n * k));
        for row in logits.chunks_exact(e) {
            let scores: Vec<f32> = row.iter().map(|&l| 1.0 / (1.0 + (-l).exp())).collect();
            let biased: Vec<f32> = match &bias {
                Some(b) => scores.iter().zip(b).map(|(s, b)| s + b).collect(),
                None => scores.clone(),
            };
            // Group score: the sum of the group's two best biased scores (its one, for groups of 1).
            let group_score: Vec<f32> = biased
                .chunks_exact(per_group)
                .map(|g| {
                    let best = best_first(g, per_group.min(2));
                    best.iter().skip(1).fold(g[best[0]], |acc, &i| acc + g[i])
                })
                .collect();
            let mut kept = vec![false; e];
            for g in best_first(&group_score, keep) {
                kept[g * per_group..(g + 1) * per_group].iter_mut().for_each(|v| *v = true);
            }
            let masked: Vec<f32> =
                biased.iter().zip(&kept).map(|(&b, &on)| if on { b } else { f32::NEG_INFINITY }).collect();
            let chosen = best_first(&masked, k);
            let picked: Vec<f32> = chosen.iter().map(|&j| scores[j]).collect();
            let scale = self.routed_scaling_factor as f32;
            if self.norm_topk_prob {
                let denom = picked.iter().sum::<f32>() + 1e-20;
                weights.extend(picked.iter().map(|&w| w / denom * scale));
            } else {
                weights.extend(picked.iter().map(|&w| w * scale));
            }
            ids.extend(chosen.iter().map(|&j| j as i64));
        }
        let (n, k) = (n as i64, k as i64);
        let experts = Tensor::from_slice(&ids).view([n, k]);
        Some(Routing { experts, weights: Tensor::from_slice(&weights).view([n, k]) })
    }

    /// Replays expert ids `experts (N, K)` on tokens `x (N, d)` ("keep routing", reference
    /// §3.3.6): the given experts are used, their gate weights come from the current router's
    /// scores at those ids (normalised and scaled as in [`Self::route`]), so the router
    /// still receives gradient.
    pub fn route_replayed(&self, x: &Tensor, experts: &Tensor) -> Routing {
        let n = x.size()[0];
        assert_eq!(experts.size(), [n, self.top_k], "replayed expert ids must be (N, K) = ({n}, {})", self.top_k);
        let e = self.experts.len() as i64;
        let in_range = experts.ge(0).logical_and(&experts.lt(e)).all();
        assert!(bool::try_from(in_range).expect("bool"), "replayed expert ids must lie in 0..{e}");
        let experts = experts.to_kind(Kind::Int64).to_device(x.device());
        self.gate_weights(&self.scores(x), experts)
    }

    /// Router affinities of tokens `x (N, d)`: `sigmoid(x W_gateᵀ)` (V3, V3.2) or its softmax over
    /// the experts (V2): (N, E) f32.
    fn scores(&self, x: &Tensor) -> Tensor {
        let logits = x.to_kind(Kind::Float).linear::<&Tensor>(&self.gate.to_kind(Kind::Float), None);
        match self.scoring {
            Scoring::Sigmoid => logits.sigmoid(),
            Scoring::Softmax => logits.softmax(-1, Kind::Float),
        }
    }

    /// The top-k expert ids of `scores (N, E)` under the config's method (no gradient): (N, K).
    fn select(&self, scores: &Tensor) -> Tensor {
        match self.method {
            TopkMethod::NoauxTc => {
                let biased = match &self.e_score_correction_bias {
                    Some(bias) => scores + bias.to_kind(Kind::Float),
                    None => scores.shallow_clone(),
                };
                // Group score: the sum of each group's two best biased scores.
                let per_group = scores.size()[1] / self.n_group;
                let group_score =
                    |g: &Tensor| g.topk(per_group.min(2), -1, true, true).0.sum_dim_intlist(-1, false, Kind::Float);
                self.grouped_topk(&biased, group_score, f64::NEG_INFINITY)
            }
            TopkMethod::Greedy => scores.topk(self.top_k, -1, true, true).1, // (N, K)
            // V2: a group scores its best expert; experts of dropped groups get 0, as in DeepSeek's
            // code (below every softmax score, so the same as −∞ for K ≤ the kept experts).
            TopkMethod::GroupLimitedGreedy => self.grouped_topk(scores, |g: &Tensor| g.amax(-1, false), 0.0),
        }
    }

    /// Top-k of `scores (N, E)` within the `topk_group` groups with the best `group_score` of the
    /// grouped `(N, G, E/G)` view; experts of the other groups are set to `dropped` first.
    fn grouped_topk(&self, scores: &Tensor, group_score: impl Fn(&Tensor) -> Tensor, dropped: f64) -> Tensor {
        let (n, e) = (scores.size()[0], scores.size()[1]);
        let per_group = e / self.n_group;
        let group_score = group_score(&scores.view([n, self.n_group, per_group])); // (N, G)
        let keep_idx = group_score.topk(self.topk_group, -1, true, true).1; // (N, topk_group)
        let keep = Tensor::zeros([n, self.n_group], (Kind::Bool, scores.device())).scatter_value(1, &keep_idx, 1);
        let keep = keep.unsqueeze(-1).expand([n, self.n_group, per_group], false).reshape([n, e]); // (N, E)
        let masked = scores.masked_fill(&keep.logical_not(), dropped);
        masked.topk(self.top_k, -1, true, true).1 // (N, K)
    }

    /// Gate weights of `experts (N, K)` from the unbiased `scores (N, E)`. V3/V3.2: normalised
    /// (`norm_topk_prob`, `+1e-20`) and then always scaled by `routed_scaling_factor`. V2 (DeepSeek's
    /// own `MoEGate`): normalised when `norm_topk_prob` and K > 1, otherwise scaled — transformers
    /// 5.23's port always scales and never normalises, which agrees whenever `norm_topk_prob` is
    /// false, as in every published V2 config.
    fn gate_weights(&self, scores: &Tensor, experts: Tensor) -> Routing {
        let weights = scores.gather(1, &experts, false); // (N, K)
        let normalised = || &weights / (weights.sum_dim_intlist(-1, true, Kind::Float) + 1e-20);
        let weights = match self.scoring {
            Scoring::Sigmoid if self.norm_topk_prob => normalised() * self.routed_scaling_factor,
            Scoring::Softmax if self.norm_topk_prob && self.top_k > 1 => normalised(),
            _ => &weights * self.routed_scaling_factor,
        };
        Routing { experts, weights }
    }

    /// `x (B, T, d) → (B, T, d)`, with the routing it chose (rows in `B·T` order).
    pub fn forward(&self, x: &Tensor) -> (Tensor, Routing) {
        let flat = x.flatten(0, -2); // (B·T, d)
        let routing = self.route(&flat);
        (self.forward_routed(x, &routing), routing)
    }

    /// `x (B, T, d) → (B, T, d)` on the recorded expert ids `experts (B, T, K)`, with gate
    /// weights from the current router (see [`Self::route_replayed`]).
    pub fn forward_replayed(&self, x: &Tensor, experts: &Tensor) -> (Tensor, Routing) {
        let flat = x.flatten(0, -2); // (B·T, d)
        let routing = self.route_replayed(&flat, &experts.flatten(0, -2)); // ids (B·T, K)
        (self.forward_routed(x, &routing), routing)
    }

    /// `x (B, T, d) → (B, T, d)` with a given routing (replayed or freshly chosen).
    pub fn forward_routed(&self, x: &Tensor, routing: &Routing) -> Tensor {
        let flat = x.flatten(0, -2); // (B·T, d)
        if let Some(p) = self.packed.as_ref().filter(|p| p.usable(&self.packed_members())) {
            let shared = self.shared_packed;
            if let Some(y) = p.forward_fused(&flat, &routing.experts, &routing.weights, shared) {
                let y = match &self.shared_experts {
                    Some(m) if !shared => y + m.forward(&flat),
                    _ => y,
                };
                return y.view_as(x);
            }
        }
        let mut out = self.dispatch(&flat, routing);
        if let Some(shared) = &self.shared_experts {
            out += shared.forward(&flat);
        }
        out.view_as(x)
    }

    /// Σ_k w_k · expert_k(x) for tokens `x (N, d)`: grouped when packed and no expert gradient is
    /// wanted, else [`Self::dispatch_each`].
    fn dispatch(&self, x: &Tensor, routing: &Routing) -> Tensor {
        match &self.packed {
            Some(p) if p.usable(&self.packed_members()) => p.forward(x, &routing.experts, &routing.weights),
            _ => self.dispatch_each(x, routing),
        }
    }

    /// Σ_k w_k · expert_k(x) for tokens `x (N, d)`: gathers each expert's tokens and runs it once.
    /// The assignments are sorted by expert on their own device (a stable sort, so each expert
    /// sees its tokens in order); only the E group sizes come to the host, one copy per layer.
    fn dispatch_each(&self, x: &Tensor, routing: &Routing) -> Tensor {
        let k = routing.experts.size()[1];
        let ids = routing.experts.flatten(0, -1); // (N·K)
        let (_, order) = ids.sort_stable(true, 0, false); // assignments by expert
        let sizes = group_sizes(&ids, self.experts.len() as i64).to_device(Device::Cpu);
        let sizes = Vec::<i64>::try_from(sizes).expect("i64 group sizes");
        let weights = routing.weights.flatten(0, -1).to_kind(x.kind()); // (N·K)
        let mut out = x.zeros_like();
        let mut start = 0;
        for (expert, &size) in self.experts.iter().zip(&sizes) {
            if size == 0 {
                continue;
            }
            let flat = order.narrow(0, start, size);
            start += size;
            let tokens = flat.divide_scalar_mode(k, "floor"); // (n_e)
            let w = weights.index_select(0, &flat).unsqueeze(-1); // (n_e, 1)
            let y = expert.forward(&x.index_select(0, &tokens)) * w; // (n_e, d)
            out = out.index_add(0, &tokens, &y);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel;

    /// The host router against the tensor form on the `small` preset's router (16 experts in 4
    /// groups, 2 groups kept, top 4) and on one without groups: the same experts in the same
    /// order and the same weights to float rounding, for random tokens, a random bias and a
    /// router nudged so that some scores tie exactly; outside the engine's steps it is not taken.
    #[test]
    fn host_router_equals_the_tensor_form() {
        let small = crate::config::small_preset();
        let mut flat = small.clone();
        (flat.n_group, flat.topk_group) = (1, 1);
        for cfg in [small, flat] {
            tch::manual_seed(9);
            let vs = nn::VarStore::new(Device::Cpu);
            let moe = Moe::new(&vs.root(), &cfg);
            let e = cfg.n_routed_experts as i64;
            tch::no_grad(|| {
                let bias = moe.e_score_correction_bias.as_ref().expect("noaux_tc has a bias");
                bias.shallow_clone().copy_(&(Tensor::randn([e], (Kind::Float, Device::Cpu)) * 0.1));
                // Two experts with the same router row: equal scores, so ties are exercised.
                moe.gate.get(3).copy_(&moe.gate.get(5));
                bias.get(3).copy_(&bias.get(5));
            });
            let x = Tensor::randn([37, cfg.hidden_size as i64], (Kind::Float, Device::Cpu));
            tch::no_grad(|| {
                let want = moe.route(&x);
                let got = kernel::enabled(|| moe.route_fused(&x)).expect("taken in the engine's steps");
                // Experts 3 and 5 score the same: the tensor form's `topk` may list either first.
                let same = |t: &Tensor| t.masked_fill(&t.eq(5), 3);
                assert!(same(&got.experts).equal(&same(&want.experts)), "expert ids differ");
                assert!(bool::try_from(want.experts.eq(5).any()).unwrap(), "the tied experts were chosen somewhere");
                let d = (&got.weights - &want.weights).abs().max().double_value(&[]);
                assert!(d < 1e-5, "weights differ by {d:e}");
                assert!(moe.route_fused(&x).is_none(), "outside `kernel::enabled`");
            });
        }
    }
}
