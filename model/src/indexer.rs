//! The DSA lightning indexer (docs/model.md §2.6–2.7; fixtures README "Indexer"):
//! `I[t,s] = Σ_j w[t,j] · ReLU(q[t,j]·k[s] · d_I^-0.5)` with `w = weights_proj(x) · H_I^-0.5`,
//! `q = wq_b(q_latent)`, `k = LayerNorm(wk(x))`, half-split RoPE on the first `qk_rope_head_dim`
//! dims of both (rope part first), all in f32. The causal mask goes into `I` before
//! `topk(min(index_topk, S))` (ties to the lower position), and the selection is masked causally
//! again, so a query with at most `index_topk` predecessors attends to all of them.
//!
//! Left out: the Hadamard rotation and FP8 emulation (exact to skip in full precision, §2.6.2) and
//! the indexer's training losses (the trainer builds them on [`Indexer::scores`]).

use crate::config::ModelConfig;
use crate::fused::{self, Pairs};
use crate::mlp::{linear, linear_weight};
use crate::norm::LayerNorm;
use crate::rope::rotate_half_split;
use tch::{nn, Kind, Tensor};

/// The keys each query attends to under DSA.
#[derive(Debug)]
pub struct Selection {
    /// Key positions: (B, T, k) i64; entries with `valid` false are placeholders.
    pub indices: Tensor,
    /// Whether each entry is a causal key: (B, T, k) bool.
    pub valid: Tensor,
}

/// `self_attn.indexer` of one layer.
#[derive(Debug)]
pub struct Indexer {
    /// `wq_b.weight`: (H_I·d_I, q_lora_rank).
    pub wq_b: Tensor,
    /// `wk.weight`: (d_I, d).
    pub wk: Tensor,
    /// `k_norm` (LayerNorm with bias, ε = 1e-6).
    pub k_norm: LayerNorm,
    /// `weights_proj.weight`: (H_I, d).
    pub weights_proj: Tensor,
    n_heads: i64,
    head_dim: i64,
    rope_dim: i64,
    /// Keys kept per query (`index_topk`).
    pub topk: i64,
}

/// Upper bound on the (rows × heads × keys) score block held at once.
const SCORE_BLOCK: i64 = 1 << 26;

impl Indexer {
    /// The indexer under `path` (= `model.layers.{i}.self_attn.indexer`).
    pub fn new(path: &nn::Path, cfg: &ModelConfig) -> Self {
        let d = cfg.hidden_size as i64;
        let q_rank = cfg.q_lora_rank.expect("validated config has q_lora_rank") as i64;
        let (h, hd) = (cfg.index_n_heads as i64, cfg.index_head_dim as i64);
        Indexer {
            wq_b: linear_weight(&(path / "wq_b"), q_rank, h * hd),
            wk: linear_weight(&(path / "wk"), d, hd),
            k_norm: LayerNorm::new(&(path / "k_norm"), hd, 1e-6),
            weights_proj: linear_weight(&(path / "weights_proj"), d, h),
            n_heads: h,
            head_dim: hd,
            rope_dim: cfg.qk_rope_head_dim as i64,
            topk: cfg.index_topk as i64,
        }
    }

    /// Rotates the leading `rope_dim` dims of `x (..., d_I)` half-split.
    fn rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
        if let Some(y) = fused::rotate(x, self.rope_dim, cos, sin, Pairs::HalfSplit) {
            return y;
        }
        let pe = rotate_half_split(&x.narrow(-1, 0, self.rope_dim), cos, sin);
        Tensor::cat(&[pe, x.narrow(-1, self.rope_dim, self.head_dim - self.rope_dim)], -1)
    }

    /// Keys of tokens `x (B, S, d)` at rope `cos, sin (B, S, r/2)`: (B, S, d_I) f32. These are what
    /// a generation cache stores.
    pub fn keys(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
        let k = self.k_norm.forward(&linear(x, &self.wk)); // (B, S, d_I) f32
        self.rope(&k, cos, sin)
    }

    /// Queries from the normed MLA query latent `q_latent (B, T, q_lora_rank)`: (B, T, H_I, d_I) f32.
    pub fn queries(&self, q_latent: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
        let (b, t) = (q_latent.size()[0], q_latent.size()[1]);
        let q = linear(q_latent, &self.wq_b).to_kind(Kind::Float).view([b, t, self.n_heads, self.head_dim]); // (B, T, H_I, d_I)
        self.rope(&q, &cos.unsqueeze(2), &sin.unsqueeze(2))
    }

    /// Per-head weights `weights_proj(x) · H_I^-0.5` from `x (B, T, d)`: (B, T, H_I) f32.
    pub fn head_weights(&self, x: &Tensor) -> Tensor {
        let w = self.weights_proj.to_kind(Kind::Float);
        linear(&x.to_kind(Kind::Float), &w) * (self.n_heads as f64).powf(-0.5)
    }

    /// Index scores `I (B, T, S)` f32 of queries at positions `q_pos (B, T)` against keys
    /// `0..S`; `-inf` where `s > q_pos` (causal). Differentiable in its inputs.
    pub fn scores(&self, q: &Tensor, w: &Tensor, keys: &Tensor, q_pos: &Tensor) -> Tensor {
        let (b, t) = (q.size()[0], q.size()[1]);
        let s = keys.size()[1];
        let block = (SCORE_BLOCK / (b * self.n_heads * s).max(1)).clamp(1, t.max(1));
        let kt = keys.to_kind(Kind::Float).transpose(1, 2); // (B, d_I, S)
        let mut parts = Vec::new();
        for start in (0..t).step_by(block as usize) {
            let len = block.min(t - start);
            let qb = q.narrow(1, start, len).reshape([b, len * self.n_heads, self.head_dim]); // (B, len·H_I, d_I)
            let relu = (qb.bmm(&kt) * (self.head_dim as f64).powf(-0.5)).relu();
            let relu = relu.view([b, len, self.n_heads, s]); // (B, len, H_I, S)
            let wb = w.narrow(1, start, len).unsqueeze(2); // (B, len, 1, H_I)
            parts.push(wb.matmul(&relu).squeeze_dim(2)); // (B, len, S)
        }
        let scores = Tensor::cat(&parts, 1); // (B, T, S)
        let key_pos = Tensor::arange(s, (Kind::Int64, q.device()));
        let future = key_pos.view([1, 1, s]).gt_tensor(&q_pos.unsqueeze(-1)); // (B, T, S)
        scores.masked_fill(&future, f64::NEG_INFINITY)
    }

    /// [`Self::select`] over [`Self::scores`] (the same arguments), without autograd and in the
    /// row blocks [`Self::scores`] itself uses, so that only one block's (B, rows, S) scores and
    /// their sort exist at once instead of the whole (B, T, S). Each row's scores and sort depend
    /// on that row alone and the blocks' products have the same shapes: the same selection.
    pub fn select_blocked(&self, q: &Tensor, w: &Tensor, keys: &Tensor, q_pos: &Tensor) -> Selection {
        let (b, t) = (q.size()[0], q.size()[1]);
        let s = keys.size()[1];
        let block = (SCORE_BLOCK / (b * self.n_heads * s).max(1)).clamp(1, t.max(1));
        tch::no_grad(|| {
            let (indices, valid): (Vec<Tensor>, Vec<Tensor>) = (0..t)
                .step_by(block as usize)
                .map(|start| {
                    let len = block.min(t - start);
                    let pos = q_pos.narrow(1, start, len); // (B, len)
                    let scores = self.scores(&q.narrow(1, start, len), &w.narrow(1, start, len), keys, &pos); // (B, len, S)
                    let sel = self.select(&scores, &pos);
                    (sel.indices, sel.valid)
                })
                .unzip();
            Selection { indices: Tensor::cat(&indices, 1), valid: Tensor::cat(&valid, 1) }
            // (B, T, k)
        })
    }

    /// The index scores of each query's keys `indices (B, T, k)` (into `keys (B, S, d_I)`): (B, T, k)
    /// f32, `scores(q, w, keys, q_pos).gather(-1, indices)` wherever that is causal (no causal
    /// mask here: the caller masks by the selection's `valid`). Computed at those keys only, so
    /// what autograd keeps for the backward is O(T·k) — the gathered keys (B, T, k, d_I) and the
    /// (B, T, H_I, k) ReLU — not the (B, T, H_I, S) of [`Self::scores`]. The same products, summed
    /// over d_I by another kernel: equal to rounding.
    pub fn scores_at(&self, q: &Tensor, w: &Tensor, keys: &Tensor, indices: &Tensor) -> Tensor {
        let (b, t, k) = (indices.size()[0], indices.size()[1], indices.size()[2]);
        let d = self.head_dim;
        let flat = indices.reshape([b, t * k, 1]).expand([b, t * k, d], false); // (B, T·k, d_I)
        let picked = keys.to_kind(Kind::Float).gather(1, &flat, false).view([b, t, k, d]); // (B, T, k, d_I)
        let dots = q.matmul(&picked.transpose(2, 3)); // (B, T, H_I, k)
        let relu = (dots * (d as f64).powf(-0.5)).relu();
        w.unsqueeze(2).matmul(&relu).squeeze_dim(2) // (B, T, k)
    }

    /// The top-`min(index_topk, S)` keys of each row of causal `scores (B, T, S)`, in descending
    /// score order. Equal scores (most often exact zeros, where every head's ReLU is 0) are ranked
    /// by position, the lower first, through a stable sort: `topk`'s own tie order depends on the
    /// row length and the kernel, so the same query could select other keys alone, in a padded
    /// batch, in prefill or in cached decode (docs/model.md §9, item 9). Where no tie sits at the
    /// boundary the set is `topk`'s.
    pub fn select(&self, scores: &Tensor, q_pos: &Tensor) -> Selection {
        let s = scores.size()[2];
        let order = scores.argsort_stable(true, -1, true); // (B, T, S)
        let indices = order.narrow(-1, 0, self.topk.min(s)); // (B, T, k)
        let valid = indices.le_tensor(&q_pos.unsqueeze(-1));
        Selection { indices, valid }
    }
}
