//! Every tensor a DeepSeek-family checkpoint holds (V3.2, V3, V2: [`crate::config::Family`]), by
//! Hugging Face name and shape, derived from the config alone (docs/model.md §5.1): the indexer only
//! in V3.2, `e_score_correction_bias` only with `noaux_tc` routing, `q_proj` instead of the
//! `q_a`/`q_b` pair when `q_lora_rank` is null. The loader checks files against this list, `rlvr init`
//! creates it, and parameter counts are sums over it.
//!
//! FP8 `weight_scale_inv` partners are not listed: they are storage, not parameters.

use crate::config::ModelConfig;

/// What a tensor belongs to, for parameter accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Part {
    /// `model.embed_tokens`.
    Embedding,
    /// `lm_head`.
    Head,
    /// RMSNorm weights (layer norms, final norm, MTP norms).
    Norm,
    /// MLA projections and their latent norms.
    Attention,
    /// The DSA lightning indexer (`self_attn.indexer.*`).
    Indexer,
    /// The dense FFN of the first layers.
    DenseMlp,
    /// The MoE router (`mlp.gate.*`).
    Router,
    /// One routed expert; only `num_experts_per_tok` of them run per token.
    RoutedExpert,
    /// Shared experts (run for every token).
    SharedExpert,
    /// MTP's own projection `eh_proj`.
    MtpProjection,
    /// MTP's stored copies of the embedding and head (`embed_tokens`, `shared_head.head`).
    MtpSharedCopy,
}

/// One checkpoint tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    /// Hugging Face key, e.g. `model.layers.3.mlp.experts.17.up_proj.weight`.
    pub name: String,
    /// Shape, row-major as stored.
    pub shape: Vec<usize>,
    /// Accounting category.
    pub part: Part,
    /// Decoder layer index (`None` for global tensors); MTP layers follow the main ones.
    pub layer: Option<usize>,
}

impl TensorSpec {
    /// Number of elements.
    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
}

struct Specs<'a> {
    cfg: &'a ModelConfig,
    out: Vec<TensorSpec>,
}

impl Specs<'_> {
    fn push(&mut self, name: String, shape: &[usize], part: Part, layer: Option<usize>) {
        self.out.push(TensorSpec { name, shape: shape.to_vec(), part, layer });
    }

    fn mlp(&mut self, prefix: &str, inter: usize, part: Part, layer: usize) {
        let d = self.cfg.hidden_size;
        self.push(format!("{prefix}.gate_proj.weight"), &[inter, d], part, Some(layer));
        self.push(format!("{prefix}.up_proj.weight"), &[inter, d], part, Some(layer));
        self.push(format!("{prefix}.down_proj.weight"), &[d, inter], part, Some(layer));
    }

    fn attention(&mut self, p: &str, i: usize) {
        let c = self.cfg;
        let (d, h) = (c.hidden_size, c.num_attention_heads);
        let l = Some(i);
        let a = Part::Attention;
        match c.q_lora_rank {
            Some(r) => {
                self.push(format!("{p}.self_attn.q_a_proj.weight"), &[r, d], a, l);
                self.push(format!("{p}.self_attn.q_a_layernorm.weight"), &[r], a, l);
                self.push(format!("{p}.self_attn.q_b_proj.weight"), &[h * c.qk_head_dim(), r], a, l);
            }
            None => self.push(format!("{p}.self_attn.q_proj.weight"), &[h * c.qk_head_dim(), d], a, l),
        }
        let kv_a = c.kv_lora_rank + c.qk_rope_head_dim;
        self.push(format!("{p}.self_attn.kv_a_proj_with_mqa.weight"), &[kv_a, d], a, l);
        self.push(format!("{p}.self_attn.kv_a_layernorm.weight"), &[c.kv_lora_rank], a, l);
        let kv_b = h * (c.qk_nope_head_dim + c.v_head_dim);
        self.push(format!("{p}.self_attn.kv_b_proj.weight"), &[kv_b, c.kv_lora_rank], a, l);
        self.push(format!("{p}.self_attn.o_proj.weight"), &[d, h * c.v_head_dim], a, l);
        if !c.has_indexer() {
            return;
        }
        // The indexer's query reads the MLA query latent (docs/model.md §2.6.2).
        let q_in = c.q_lora_rank.unwrap_or(d);
        let (hi, di) = (c.index_n_heads, c.index_head_dim);
        let x = Part::Indexer;
        self.push(format!("{p}.self_attn.indexer.wq_b.weight"), &[hi * di, q_in], x, l);
        self.push(format!("{p}.self_attn.indexer.wk.weight"), &[di, d], x, l);
        self.push(format!("{p}.self_attn.indexer.k_norm.weight"), &[di], x, l);
        self.push(format!("{p}.self_attn.indexer.k_norm.bias"), &[di], x, l);
        self.push(format!("{p}.self_attn.indexer.weights_proj.weight"), &[hi, d], x, l);
    }

    fn ffn(&mut self, p: &str, i: usize) {
        let c = self.cfg;
        if !c.is_moe_layer(i) {
            self.mlp(&format!("{p}.mlp"), c.intermediate_size, Part::DenseMlp, i);
            return;
        }
        let (d, e) = (c.hidden_size, c.n_routed_experts);
        self.push(format!("{p}.mlp.gate.weight"), &[e, d], Part::Router, Some(i));
        if c.router_has_bias() {
            self.push(format!("{p}.mlp.gate.e_score_correction_bias"), &[e], Part::Router, Some(i));
        }
        for j in 0..e {
            self.mlp(&format!("{p}.mlp.experts.{j}"), c.moe_intermediate_size, Part::RoutedExpert, i);
        }
        if c.n_shared_experts > 0 {
            let inter = c.moe_intermediate_size * c.n_shared_experts;
            self.mlp(&format!("{p}.mlp.shared_experts"), inter, Part::SharedExpert, i);
        }
    }

    fn decoder_layer(&mut self, i: usize) {
        let p = format!("model.layers.{i}");
        let d = self.cfg.hidden_size;
        self.push(format!("{p}.input_layernorm.weight"), &[d], Part::Norm, Some(i));
        self.attention(&p, i);
        self.push(format!("{p}.post_attention_layernorm.weight"), &[d], Part::Norm, Some(i));
        self.ffn(&p, i);
    }

    /// MTP module (docs/model.md §2.10): a full decoder layer plus its input norms, projection and
    /// copies of the embedding and head.
    fn mtp_layer(&mut self, i: usize) {
        let (d, v) = (self.cfg.hidden_size, self.cfg.vocab_size);
        let p = format!("model.layers.{i}");
        self.push(format!("{p}.embed_tokens.weight"), &[v, d], Part::MtpSharedCopy, Some(i));
        self.push(format!("{p}.enorm.weight"), &[d], Part::Norm, Some(i));
        self.push(format!("{p}.hnorm.weight"), &[d], Part::Norm, Some(i));
        self.push(format!("{p}.eh_proj.weight"), &[d, 2 * d], Part::MtpProjection, Some(i));
        self.decoder_layer(i);
        self.push(format!("{p}.shared_head.norm.weight"), &[d], Part::Norm, Some(i));
        self.push(format!("{p}.shared_head.head.weight"), &[v, d], Part::MtpSharedCopy, Some(i));
    }
}

/// The main model's tensors (embedding, decoder layers, final norm, head), in checkpoint order.
pub fn main_tensors(cfg: &ModelConfig) -> Vec<TensorSpec> {
    let (d, v) = (cfg.hidden_size, cfg.vocab_size);
    let mut s = Specs { cfg, out: Vec::new() };
    s.push("model.embed_tokens.weight".into(), &[v, d], Part::Embedding, None);
    for i in 0..cfg.num_hidden_layers {
        s.decoder_layer(i);
    }
    s.push("model.norm.weight".into(), &[d], Part::Norm, None);
    if !cfg.tie_word_embeddings {
        s.push("lm_head.weight".into(), &[v, d], Part::Head, None);
    }
    s.out
}

/// The MTP modules' tensors (layers `num_hidden_layers..num_hidden_layers + num_nextn_predict_layers`).
pub fn mtp_tensors(cfg: &ModelConfig) -> Vec<TensorSpec> {
    let mut s = Specs { cfg, out: Vec::new() };
    for m in 0..cfg.num_nextn_predict_layers {
        s.mtp_layer(cfg.num_hidden_layers + m);
    }
    s.out
}
