//! One decoder layer, `model.layers.{i}` (docs/model.md §2.1): `h = x + Attn(RMSNorm(x));
//! out = h + FFN(RMSNorm(h))`, the FFN dense before `first_k_dense_replace` and MoE after. The main
//! model and the MTP modules share it.

use crate::attention::Keys;
use crate::cache::KvCache;
use crate::config::ModelConfig;
use crate::indexer::Selection;
use crate::indexer_loss::{IndexerStage, LayerIndexerLoss};
use crate::mla::{AttentionMode, Mla, MlaPath, Positions};
use crate::mlp::Mlp;
use crate::moe::{Moe, Routing};
use crate::norm::RmsNorm;
use crate::rope::RopeTables;
use tch::{nn, Tensor};

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

/// What one layer is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct LayerOptions<'a> {
    /// Dense or sparse attention.
    pub mode: AttentionMode,
    /// How full-set attention is computed.
    pub path: MlaPath,
    /// The indexer loss to compute, if any.
    pub stage: Option<IndexerStage>,
    /// Expert ids to replay (B, T, K), MoE layers only.
    pub replay: Option<&'a Tensor>,
}

/// What one layer returns.
#[derive(Debug)]
pub struct LayerOutput {
    /// The layer's output hidden state: (B, T, d).
    pub hidden: Tensor,
    /// The DSA selection, when sparse attention ran.
    pub selection: Option<Selection>,
    /// The MoE routing (rows in `B·T` order), MoE layers only.
    pub routing: Option<Routing>,
    /// The indexer loss, when asked for.
    pub indexer: Option<LayerIndexerLoss>,
}

impl DecoderLayer {
    /// `model.layers.{i}` under `path`.
    pub(crate) fn new(path: &nn::Path, cfg: &ModelConfig, rope: &RopeTables, i: usize) -> Self {
        let d = cfg.hidden_size as i64;
        let mlp = if cfg.is_moe_layer(i) {
            Ffn::Moe(Moe::new(&(path / "mlp"), cfg))
        } else {
            Ffn::Dense(Mlp::new(&(path / "mlp"), d, cfg.intermediate_size as i64))
        };
        DecoderLayer {
            input_layernorm: RmsNorm::new(&(path / "input_layernorm"), d, cfg.rms_norm_eps),
            self_attn: Mla::new(&(path / "self_attn"), cfg, rope),
            post_attention_layernorm: RmsNorm::new(&(path / "post_attention_layernorm"), d, cfg.rms_norm_eps),
            mlp,
        }
    }

    /// `h (B, T, d) → (B, T, d)`, with the layer's selection, routing and indexer loss.
    pub fn forward(
        &self,
        h: &Tensor,
        pos: &Positions,
        cache: Option<(&mut KvCache, &[usize], usize)>,
        opts: &LayerOptions<'_>,
    ) -> LayerOutput {
        let attn = &self.self_attn;
        let x = self.input_layernorm.forward(h);
        let q = attn.queries(&x, pos);
        // Training keeps the indexer keys out of `keys`: it recomputes them from detached inputs.
        let index_keys = opts.stage.is_none() && attn.uses_indexer(opts.mode, x.size()[1]);
        let keys: Keys = match cache {
            None => attn.keys(&x, pos, index_keys),
            Some((cache, slots, layer)) => {
                let own = attn.keys(&x, pos, true);
                cache.write(layer, slots, &pos.q_pos, &own);
                cache.read(layer, slots, &pos.q_pos)
            }
        };
        let (a, selection, indexer) = match opts.stage {
            None => {
                let (a, sel) = attn.attend(&x, &q, &keys, pos, opts.mode, opts.path);
                (a, sel, None)
            }
            Some(stage) => {
                let (a, sel, loss) = attn.attend_training(&x, &q, &keys, pos, stage, opts.path);
                (a, sel, Some(loss))
            }
        };
        let h = h + a;
        let x = self.post_attention_layernorm.forward(&h);
        let (f, routing) = match (&self.mlp, opts.replay) {
            (Ffn::Dense(mlp), _) => (mlp.forward(&x), None),
            (Ffn::Moe(moe), None) => {
                let (y, r) = moe.forward(&x);
                (y, Some(r))
            }
            (Ffn::Moe(moe), Some(ids)) => {
                let (y, r) = moe.forward_replayed(&x, ids);
                (y, Some(r))
            }
        };
        LayerOutput { hidden: h + f, selection, routing, indexer }
    }
}
