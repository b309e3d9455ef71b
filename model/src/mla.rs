//! Multi-head Latent Attention with DSA (docs/model.md §2.5, §2.7; fixtures README "MLA").
//!
//! `q = q_b(RMSNorm(q_a(x)))` (or `q_proj(x)` when `q_lora_rank` is null, V2-Lite / Moonlight)
//! split `[nope | rope]` per head; `kv_a(x)` split `[latent | k_pe]`,
//! the latent RMS-normed (ε fixed at 1e-6), `k_pe` shared by all heads; interleaved RoPE on both
//! rope parts; `kv_b(latent)` split `[k_nope | v]` per head. Softmax scale
//! `qk_head_dim^-0.5 · mscale(factor, mscale_all_dim)²`.
//!
//! [`AttentionMode::Dense`] attends to every causal key and never runs the indexer; it is the only
//! mode of the families without one (V3, V2: no `indexer` here).
//! [`AttentionMode::Sparse`] is the architecture's own DSA: when there are more keys than
//! `index_topk`, the indexer picks each query's keys and attention gathers just those; otherwise
//! DSA selects every causal key, so the dense path is exact.
//!
//! [`Mla::attend_training`] adds the indexer's training losses (docs/model.md §3.2, see
//! [`crate::indexer_loss`]).
//!
//! Left out: FP8 KV.

use crate::attention::{self, causal, Keys, KvB, Mask, Queries};
use crate::config::ModelConfig;
use crate::fused::{self, Pairs};
use crate::indexer::{Indexer, Selection};
use crate::indexer_loss::{self, IndexerStage, LayerIndexerLoss, TargetAttention};
use crate::mlp::{linear, linear_weight};
use crate::norm::RmsNorm;
use crate::rope::{rotate_interleaved, RopeTables};
use tch::{nn, Tensor};

/// Which keys attention reads (recipes and the command line spell it `dense` / `sparse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionMode {
    /// Every causal key; the indexer is unused.
    #[default]
    Dense,
    /// DeepSeek Sparse Attention: the indexer's top-`index_topk` keys per query.
    Sparse,
}

impl std::str::FromStr for AttentionMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dense" => Ok(AttentionMode::Dense),
            "sparse" => Ok(AttentionMode::Sparse),
            other => Err(format!("must be dense or sparse, got {other:?}")),
        }
    }
}

/// How attention over the full (masked) key set is computed; the two agree to rounding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlaPath {
    /// Up-project keys and values per head (training, prefill).
    Naive,
    /// Fold `kv_b` into query and output and attend over the latent (decode).
    Absorbed,
}

/// Query positions of one call and their rope tables.
#[derive(Debug)]
pub struct Positions {
    /// Absolute positions: (B, T) i64.
    pub q_pos: Tensor,
    /// cos at `q_pos`: (B, T, d_rope/2).
    pub cos: Tensor,
    /// sin at `q_pos`: (B, T, d_rope/2).
    pub sin: Tensor,
    /// Which keys each query sees, when not the causal order of the call's own positions: a
    /// packed forward's tree mask (B, T, T) bool ([`crate::packing`]).
    pub allowed: Option<Tensor>,
    /// The causal mask over the last key count asked for: every layer of one forward attends over
    /// the same keys, so it is built once per forward, not once per layer.
    causal: std::cell::OnceCell<(i64, Tensor)>,
    /// [`Self::sees_every_key`] for the last key count asked for, read once per forward.
    every_key: std::cell::OnceCell<(i64, bool)>,
}

impl Positions {
    /// Tables for positions `q_pos (B, T)`.
    pub fn new(rope: &RopeTables, q_pos: Tensor) -> Self {
        let (cos, sin) = rope.cos_sin(&q_pos);
        Positions { q_pos, cos, sin, allowed: None, causal: Default::default(), every_key: Default::default() }
    }

    /// Which of keys `0..s` each query sees: the tree mask of a packed forward, else causal by
    /// position (B, T, S).
    pub fn allowed_over(&self, s: i64) -> Tensor {
        if let Some(tree) = &self.allowed {
            return tree.shallow_clone();
        }
        match self.causal.get_or_init(|| (s, causal(&self.q_pos, s))) {
            (n, mask) if *n == s => mask.shallow_clone(),
            _ => causal(&self.q_pos, s),
        }
    }

    /// Whether every query sees every one of keys `0..s`: no tree mask and each query at position
    /// `s − 1` or later (a decode step whose sequences all end at the last cached key, batch 1
    /// always). Read only where the positions are on the CPU (on CUDA it would wait for the
    /// device), so there it is always `false` and the mask is applied.
    pub fn sees_every_key(&self, s: i64) -> bool {
        match self.every_key.get_or_init(|| (s, self.read_every_key(s))) {
            (n, every) if *n == s => *every,
            _ => self.read_every_key(s),
        }
    }

    fn read_every_key(&self, s: i64) -> bool {
        let q_pos = &self.q_pos;
        if self.allowed.is_some()
            || q_pos.device() != tch::Device::Cpu
            || q_pos.kind() != tch::Kind::Int64
            || !q_pos.is_contiguous()
        {
            return false;
        }
        // SAFETY: `q_pos` is a contiguous CPU i64 tensor of `numel` elements, alive for the read.
        let pos = unsafe { std::slice::from_raw_parts(q_pos.data_ptr() as *const i64, q_pos.numel()) };
        pos.iter().all(|&p| p >= s - 1)
    }

    /// Tables for a packed forward: its positions and its tree mask.
    pub fn packed(rope: &RopeTables, packing: &crate::packing::Packing) -> Self {
        Positions {
            allowed: Some(packing.allowed.shallow_clone()),
            ..Self::new(rope, packing.positions.shallow_clone())
        }
    }
}

/// MLA's interleaved rotation of `x (..., d_rope)`: fused on the engine's CPU steps
/// ([`crate::fused`]), the tensor form elsewhere.
fn rotate(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let r = *x.size().last().expect("rope input has a last dim");
    fused::rotate(x, r, cos, sin, Pairs::Interleaved).unwrap_or_else(|| rotate_interleaved(x, cos, sin))
}

/// How queries are projected from the normed tokens.
#[derive(Debug)]
pub enum QueryProj {
    /// Through a normed latent (`q_lora_rank` set): `q_b(RMSNorm(q_a(x)))`.
    Lora {
        /// `q_a_proj.weight`: (q_lora_rank, d).
        q_a_proj: Tensor,
        /// `q_a_layernorm` (ε = 1e-6).
        q_a_layernorm: RmsNorm,
        /// `q_b_proj.weight`: (H·(d_nope+d_rope), q_lora_rank).
        q_b_proj: Tensor,
    },
    /// Directly (`q_lora_rank: null`, V2-Lite, Moonlight): `q_proj(x)`.
    Direct {
        /// `q_proj.weight`: (H·(d_nope+d_rope), d).
        q_proj: Tensor,
    },
}

/// `model.layers.{i}.self_attn`.
#[derive(Debug)]
pub struct Mla {
    /// The query projection (with or without the q latent).
    pub q: QueryProj,
    /// `kv_a_proj_with_mqa.weight`: (C + d_rope, d).
    pub kv_a_proj_with_mqa: Tensor,
    /// `kv_a_layernorm` (ε = 1e-6).
    pub kv_a_layernorm: RmsNorm,
    /// `kv_b_proj.weight`: (H·(d_nope+d_v), C).
    pub kv_b_proj: Tensor,
    /// `o_proj.weight`: (d, H·d_v).
    pub o_proj: Tensor,
    /// The DSA lightning indexer (V3.2 only).
    pub indexer: Option<Indexer>,
    heads: i64,
    nope: i64,
    rope: i64,
    v: i64,
    rank: i64,
    scale: f64,
}

impl Mla {
    /// The attention block under `path` (= `model.layers.{i}.self_attn`).
    pub fn new(path: &nn::Path, cfg: &ModelConfig, rope: &RopeTables) -> Self {
        let d = cfg.hidden_size as i64;
        let (h, nope, r, v) = (cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim);
        let (h, nope, r, v) = (h as i64, nope as i64, r as i64, v as i64);
        let rank = cfg.kv_lora_rank as i64;
        let q = match cfg.q_lora_rank {
            Some(q_rank) => {
                let q_rank = q_rank as i64;
                QueryProj::Lora {
                    q_a_proj: linear_weight(&(path / "q_a_proj"), d, q_rank),
                    q_a_layernorm: RmsNorm::new(&(path / "q_a_layernorm"), q_rank, 1e-6),
                    q_b_proj: linear_weight(&(path / "q_b_proj"), q_rank, h * (nope + r)),
                }
            }
            None => QueryProj::Direct { q_proj: linear_weight(&(path / "q_proj"), d, h * (nope + r)) },
        };
        Mla {
            q,
            kv_a_proj_with_mqa: linear_weight(&(path / "kv_a_proj_with_mqa"), d, rank + r),
            kv_a_layernorm: RmsNorm::new(&(path / "kv_a_layernorm"), rank, 1e-6),
            kv_b_proj: linear_weight(&(path / "kv_b_proj"), rank, h * (nope + v)),
            o_proj: linear_weight(&(path / "o_proj"), h * v, d),
            indexer: cfg.has_indexer().then(|| Indexer::new(&(path / "indexer"), cfg)),
            heads: h,
            nope,
            rope: r,
            v,
            rank,
            scale: ((nope + r) as f64).powf(-0.5) * rope.softmax_mscale,
        }
    }

    /// Queries of normed tokens `x (B, T, d)`.
    pub fn queries(&self, x: &Tensor, pos: &Positions) -> Queries {
        let (b, t) = (x.size()[0], x.size()[1]);
        let (latent, q) = match &self.q {
            QueryProj::Lora { q_a_proj, q_a_layernorm, q_b_proj } => {
                let latent = q_a_layernorm.forward(&linear(x, q_a_proj)); // (B, T, q_rank)
                let q = linear(&latent, q_b_proj);
                (latent, q)
            }
            // No latent: an empty one keeps `Queries` uniform (only the indexer reads it).
            QueryProj::Direct { q_proj } => (x.narrow(-1, 0, 0), linear(x, q_proj)),
        };
        let q = q.view([b, t, self.heads, self.nope + self.rope]); // (B, T, H, d_nope+d_rope)
        let pe = rotate(&q.narrow(-1, self.nope, self.rope), &pos.cos.unsqueeze(2), &pos.sin.unsqueeze(2));
        Queries { nope: q.narrow(-1, 0, self.nope), pe, latent }
    }

    /// Keys of normed tokens `x (B, T, d)`; the indexer keys only when `with_index`.
    pub fn keys(&self, x: &Tensor, pos: &Positions, with_index: bool) -> Keys {
        let kv = linear(x, &self.kv_a_proj_with_mqa); // (B, T, C + d_rope)
        let latent = self.kv_a_layernorm.forward(&kv.narrow(-1, 0, self.rank)); // (B, T, C)
        let pe = rotate(&kv.narrow(-1, self.rank, self.rope), &pos.cos, &pos.sin); // (B, T, d_rope)
        let index = self.indexer.as_ref().filter(|_| with_index).map(|idx| idx.keys(x, &pos.cos, &pos.sin));
        Keys { latent, pe, index }
    }

    /// Whether `mode` needs the indexer over `s` keys. Sparse mode on a layer without an indexer
    /// is a caller's error ([`ModelConfig::check_attention`] refuses it up front).
    pub fn uses_indexer(&self, mode: AttentionMode, s: i64) -> bool {
        mode == AttentionMode::Sparse && s > self.indexer().topk
    }

    /// The layer's indexer; panics on a model without one (sparse attention there is refused
    /// before any forward by [`ModelConfig::check_attention`]).
    pub fn indexer(&self) -> &Indexer {
        self.indexer.as_ref().expect(
            "sparse attention (DSA) asked of a model without lightning indexers (deepseek_v3 / deepseek_v2); \
             use dense attention or convert with `rlvr convert --add-indexer`",
        )
    }

    /// `kv_b_proj` viewed per head for the absorbed path.
    pub fn kv_b(&self) -> KvB {
        let w = self.kv_b_proj.view([self.heads, self.nope + self.v, self.rank]); // (H, d_nope+d_v, C)
        KvB { uk: w.narrow(1, 0, self.nope), uv: w.narrow(1, self.nope, self.v) }
    }

    /// The DSA selection of queries `q` (from normed tokens `x (B, T, d)`) over `keys`.
    /// Outside autograd: top-k passes no gradient (docs/model.md §2.7).
    pub fn select(&self, x: &Tensor, q: &Queries, keys: &Keys, pos: &Positions) -> Selection {
        let index_keys = keys.index.as_ref().expect("sparse attention needs the indexer keys");
        let idx = self.indexer();
        tch::no_grad(|| {
            let iq = idx.queries(&q.latent, &pos.cos, &pos.sin);
            let w = idx.head_weights(x);
            idx.select_blocked(&iq, &w, index_keys, &pos.q_pos)
        })
    }

    /// Attention output (B, T, d) of normed tokens `x (B, T, d)` with queries `q` over `keys`
    /// (positions `0..S`), and the DSA selection when the indexer ran.
    pub fn attend(
        &self,
        x: &Tensor,
        q: &Queries,
        keys: &Keys,
        pos: &Positions,
        mode: AttentionMode,
        path: MlaPath,
    ) -> (Tensor, Option<Selection>) {
        let s = keys.latent.size()[1];
        let selection = self.uses_indexer(mode, s).then(|| self.select(x, q, keys, pos));
        let o = self.attend_over(q, keys, pos, path, selection.as_ref());
        (o, selection)
    }

    /// Like [`Self::attend`] (keys from this call only, no cache), also returning the layer's
    /// indexer training loss for `stage` (docs/model.md §3.2). The indexer runs on detached inputs
    /// (`x`, the query latent), so its loss trains the indexer alone; the attention target is
    /// computed without gradient. Attention is dense or sparse as `stage.mode()` says.
    pub fn attend_training(
        &self,
        x: &Tensor,
        q: &Queries,
        keys: &Keys,
        pos: &Positions,
        stage: IndexerStage,
        path: MlaPath,
    ) -> (Tensor, Option<Selection>, LayerIndexerLoss) {
        let (t, s) = (x.size()[1], keys.latent.size()[1]);
        assert_eq!(t, s, "indexer losses need the call's own keys (no cache)");
        let idx = self.indexer();
        let (xd, qd) = (x.detach(), q.latent.detach());
        let iq = idx.queries(&qd, &pos.cos, &pos.sin); // (B, T, H_I, d_I)
        let ik = idx.keys(&xd, &pos.cos, &pos.sin); // (B, S, d_I)
        let w = idx.head_weights(&xd); // (B, T, H_I)
        let target = TargetAttention { q, keys, kv_b: self.kv_b(), scale: self.scale };
        let (selection, loss) = match stage {
            // The KL over every causal key: the scores are differentiated whole.
            IndexerStage::DenseWarmup => {
                let scores = idx.scores(&iq, &w, &ik, &pos.q_pos); // (B, T, S)
                let selection = tch::no_grad(|| idx.select(&scores.detach(), &pos.q_pos));
                let loss = indexer_loss::dense_stage(&target, &scores, &selection, &pos.q_pos);
                (selection, loss)
            }
            // The KL over the selected keys: top-k on scores without gradient, the scores
            // recomputed with gradient at the k selected keys only (O(T·k) kept, not O(T·S)).
            IndexerStage::Sparse => {
                let selection = idx.select_blocked(&iq, &w, &ik, &pos.q_pos);
                let picked = idx.scores_at(&iq, &w, &ik, &selection.indices); // (B, T, k)
                let loss = indexer_loss::sparse_stage(&target, &picked, &selection);
                (selection, loss)
            }
        };
        let sparse = self.uses_indexer(stage.mode(), s);
        let o = self.attend_over(q, keys, pos, path, sparse.then_some(&selection));
        (o, sparse.then_some(selection), loss)
    }

    /// Attention output (B, T, d) over each query's `selection`, or over every causal key when
    /// `None`.
    pub fn attend_over(
        &self,
        q: &Queries,
        keys: &Keys,
        pos: &Positions,
        path: MlaPath,
        selection: Option<&Selection>,
    ) -> Tensor {
        let (b, t) = (q.nope.size()[0], q.nope.size()[1]);
        let s = keys.latent.size()[1];
        let o = if let Some(sel) = selection {
            attention::absorbed_gathered(q, keys, &self.kv_b(), &sel.indices, &sel.valid, self.scale)
        } else {
            match path {
                MlaPath::Naive => {
                    let kv = linear(&keys.latent, &self.kv_b_proj).view([b, s, self.heads, self.nope + self.v]); // (B, S, H, d_nope+d_v)
                    let (k_nope, v) = (kv.narrow(-1, 0, self.nope), kv.narrow(-1, self.nope, self.v));
                    // Keys sit at positions 0..S and every query sees its own key; a cache's S is the
                    // longest slot plus T, so S = T means every query position is 0..T: plain causal,
                    // no (B, T, S) mask.
                    let allowed = (pos.allowed.is_some() || s != t).then(|| pos.allowed_over(s)); // (B, T, S)
                    let mask = allowed.as_ref().map_or(Mask::Causal, Mask::Allowed);
                    attention::naive(q, &k_nope, &keys.pe, &v, mask, self.scale)
                }
                MlaPath::Absorbed => {
                    let allowed = (!pos.sees_every_key(s)).then(|| pos.allowed_over(s)); // (B, T, S)
                    attention::absorbed(q, keys, &self.kv_b(), allowed.as_ref(), self.scale)
                }
            }
        };
        let o = o.reshape([b, t, self.heads * self.v]); // (B, T, H·d_v)
        linear(&o, &self.o_proj)
    }
}
