//! The DeepSeek-V3.2 causal LM (reference §2.1): embedding, pre-norm decoder layers
//! (`h = x + Attn(RMSNorm(x)); out = h + FFN(RMSNorm(h))`), final RMSNorm, untied `lm_head` on every
//! position. The module tree is the checkpoint: every VarStore path is the HF key.
//!
//! One forward serves training (full sequences, naive MLA), scoring, and generation (with a
//! [`KvCache`], absorbed MLA for single-token steps).
//!
//! Left out: MTP (layer 61; transformers has no reference for it either) and routing replay in
//! the forward (the MoE block offers [`crate::moe::Moe::forward_routed`]).

use crate::attention::Keys;
use crate::cache::KvCache;
use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::indexer::Selection;
use crate::mla::{AttentionMode, Mla, MlaPath, Positions};
use crate::mlp::{linear, Mlp};
use crate::moe::{Moe, Routing};
use crate::norm::RmsNorm;
use crate::rope::RopeTables;
use tch::{nn, Kind, Tensor};

/// A layer's feed-forward block: dense SwiGLU before `first_k_dense_replace`, MoE after.
#[derive(Debug)]
pub enum Ffn {
    /// Dense MLP (`mlp.{gate,up,down}_proj`).
    Dense(Mlp),
    /// DeepSeekMoE (`mlp.gate`, `mlp.experts.{e}`, `mlp.shared_experts`).
    Moe(Moe),
}

/// `model.layers.{i}`.
#[derive(Debug)]
pub struct DecoderLayer {
    /// `input_layernorm`.
    pub input_layernorm: RmsNorm,
    /// `self_attn` (MLA + indexer).
    pub self_attn: Mla,
    /// `post_attention_layernorm`.
    pub post_attention_layernorm: RmsNorm,
    /// `mlp`.
    pub mlp: Ffn,
}

/// What one forward decided, per layer: DSA selections (when the indexer ran) and MoE routings.
#[derive(Debug, Default)]
pub struct Trace {
    /// Layer `l`'s selection, `None` where the indexer did not run.
    pub selections: Vec<Option<Selection>>,
    /// Layer `l`'s routing (rows in `B·T` order), `None` for dense layers.
    pub routings: Vec<Option<Routing>>,
}

/// The key source of one call: the call's own tokens, or a cache's slots.
pub struct CacheSlots<'a> {
    /// The cache, updated in place.
    pub cache: &'a mut KvCache,
    /// The slot each batch row writes to and reads from.
    pub slots: &'a [usize],
}

/// `DeepseekV32ForCausalLM`.
#[derive(Debug)]
pub struct DeepseekV32 {
    /// `model.embed_tokens.weight`: (V, d).
    pub embed_tokens: Tensor,
    /// `model.layers`.
    pub layers: Vec<DecoderLayer>,
    /// `model.norm`.
    pub norm: RmsNorm,
    /// `lm_head.weight` (V, d), or the embedding when tied.
    pub lm_head: Tensor,
    /// The rotary tables shared by every layer.
    pub rope: RopeTables,
    /// The architecture.
    pub config: ModelConfig,
}

impl DecoderLayer {
    fn new(path: &nn::Path, cfg: &ModelConfig, rope: &RopeTables, i: usize) -> Self {
        let d = cfg.hidden_size as i64;
        let mlp = if cfg.is_moe_layer(i) {
            Ffn::Moe(Moe::new(&(path / "mlp"), cfg))
        } else {
            Ffn::Dense(Mlp::new(&(path / "mlp"), d, cfg.intermediate_size as i64))
        };
        DecoderLayer {
            input_layernorm: RmsNorm::new(&(path / "input_layernorm"), d, cfg.rms_norm_eps),
            self_attn: Mla::new(&(path / "self_attn"), cfg, rope),
            post_attention_layernorm: RmsNorm::new(
                &(path / "post_attention_layernorm"),
                d,
                cfg.rms_norm_eps,
            ),
            mlp,
        }
    }

    /// `h (B, T, d) → (B, T, d)`, with the layer's selection and routing.
    fn forward(
        &self,
        h: &Tensor,
        pos: &Positions,
        cache: Option<(&mut KvCache, &[usize], usize)>,
        mode: AttentionMode,
        path: MlaPath,
    ) -> (Tensor, Option<Selection>, Option<Routing>) {
        let attn = &self.self_attn;
        let x = self.input_layernorm.forward(h);
        let q = attn.queries(&x, pos);
        let keys: Keys = match cache {
            None => attn.keys(&x, pos, attn.uses_indexer(mode, x.size()[1])),
            Some((cache, slots, layer)) => {
                let own = attn.keys(&x, pos, true);
                cache.write(layer, slots, &pos.q_pos, &own);
                cache.read(layer, slots, &pos.q_pos)
            }
        };
        let (a, selection) = attn.attend(&x, &q, &keys, pos, mode, path);
        let h = h + a;
        let x = self.post_attention_layernorm.forward(&h);
        let (f, routing) = match &self.mlp {
            Ffn::Dense(mlp) => (mlp.forward(&x), None),
            Ffn::Moe(moe) => {
                let (y, r) = moe.forward(&x);
                (y, Some(r))
            }
        };
        (h + f, selection, routing)
    }
}

impl DeepseekV32 {
    /// Builds the model under `root` (the VarStore root: paths `model.…` and `lm_head.weight`).
    pub fn new(root: &nn::Path, cfg: &ModelConfig) -> Result<Self, ModelError> {
        cfg.validate()?;
        let rope = RopeTables::new(cfg)?;
        let (d, v) = (cfg.hidden_size as i64, cfg.vocab_size as i64);
        let model = root / "model";
        let embed_tokens = (&model / "embed_tokens").var(
            "weight",
            &[v, d],
            nn::Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        );
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(&(&model / "layers" / i), cfg, &rope, i))
            .collect();
        let norm = RmsNorm::new(&(&model / "norm"), d, cfg.rms_norm_eps);
        let lm_head = if cfg.tie_word_embeddings {
            embed_tokens.shallow_clone()
        } else {
            crate::mlp::linear_weight(&(root / "lm_head"), d, v)
        };
        Ok(DeepseekV32 {
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope,
            config: cfg.clone(),
        })
    }

    /// logits: (B, T, V) for `tokens (B, T)` i64 at positions `0..T`, naive MLA.
    pub fn forward(&self, tokens: &Tensor, mode: AttentionMode) -> Tensor {
        self.forward_with(tokens, None, mode, MlaPath::Naive).0
    }

    /// Like [`Self::forward`], also returning each layer's selection and routing.
    pub fn forward_traced(&self, tokens: &Tensor, mode: AttentionMode) -> (Tensor, Trace) {
        self.forward_with(tokens, None, mode, MlaPath::Naive)
    }

    /// logits: (B, T, V) for `tokens (B, T)` appended to cache `slots` (one per row), which are
    /// extended by T. Single-token steps use absorbed MLA over the latent cache, longer ones naive.
    pub fn forward_cached(
        &self,
        tokens: &Tensor,
        cache: &mut KvCache,
        slots: &[usize],
        mode: AttentionMode,
    ) -> Tensor {
        let path = if tokens.size()[1] == 1 {
            MlaPath::Absorbed
        } else {
            MlaPath::Naive
        };
        self.forward_with(tokens, Some(CacheSlots { cache, slots }), mode, path)
            .0
    }

    /// The general forward: logits (B, T, V) and the per-layer trace. Without a cache the
    /// positions are `0..T`; with one, row b continues slot `slots[b]` from its current length.
    pub fn forward_with(
        &self,
        tokens: &Tensor,
        mut cache: Option<CacheSlots<'_>>,
        mode: AttentionMode,
        path: MlaPath,
    ) -> (Tensor, Trace) {
        let size = tokens.size();
        assert_eq!(size.len(), 2, "tokens must be (B, T), got {size:?}");
        let (b, t) = (size[0], size[1]);
        let q_pos = match &cache {
            None => Tensor::arange(t, (Kind::Int64, tokens.device()))
                .unsqueeze(0)
                .expand([b, t], true), // (B, T)
            Some(c) => c.cache.positions(c.slots, t, tokens.device()),
        };
        let pos = Positions::new(&self.rope, q_pos);
        let mut h = Tensor::embedding(&self.embed_tokens, tokens, -1, false, false); // (B, T, d)
        let mut trace = Trace::default();
        for (i, layer) in self.layers.iter().enumerate() {
            let c = cache.as_mut().map(|c| (&mut *c.cache, c.slots, i));
            let (next, selection, routing) = layer.forward(&h, &pos, c, mode, path);
            h = next;
            trace.selections.push(selection);
            trace.routings.push(routing);
        }
        if let Some(c) = cache {
            c.cache.advance(c.slots, t);
        }
        (linear(&self.norm.forward(&h), &self.lm_head), trace)
    }

    /// `log p(tokens[:, i+1] | tokens[:, ..=i])`: (B, T−1) f32, teacher-forced.
    pub fn token_logprobs(&self, tokens: &Tensor, mode: AttentionMode) -> Tensor {
        logprobs_of(&self.forward(tokens, mode), tokens)
    }
}

/// Log-probabilities of `tokens[:, 1:]` under `logits (B, T, V)`: (B, T−1) f32.
pub fn logprobs_of(logits: &Tensor, tokens: &Tensor) -> Tensor {
    let t = tokens.size()[1];
    let logp = logits.narrow(1, 0, t - 1).log_softmax(-1, Kind::Float); // (B, T−1, V)
    logp.gather(-1, &tokens.narrow(1, 1, t - 1).unsqueeze(-1), false)
        .squeeze_dim(-1)
}
