//! Multi-Token Prediction modules (docs/model.md §2.10; DeepSeek-V3 paper §2.2 eq. 21–25), checkpoint
//! layers `model.layers.{L + m}` after the L main layers.
//!
//! Depth k (k = m + 1) reads the previous depth's hidden state `h^{k−1}_i` and the embedding of
//! token `t_{i+k}`, in the checkpoint's order (embedding first, the reverse of the paper's notation):
//!
//! ```text
//! z_i = eh_proj([enorm(embed_tokens(t_{i+k})) ; hnorm(h^{k−1}_i)])   i = 0 .. T−k−1
//! h^k = DecoderLayer(z)                                             causal, positions 0 .. T−k−1
//! logits^k_i = shared_head.head(shared_head.norm(h^k_i))            predicts t_{i+k+1}
//! ```
//!
//! `h^0` is the main model's last hidden state **before** its final RMSNorm. The reference marks
//! pre- vs. post-norm UNCONFIRMED (vLLM passes the target model's returned hidden states); we take
//! pre-norm because `hnorm` normalises it anyway and the paper feeds the block output, not the
//! head's input. The loss is `L^k = mean CE(logits^k_i, t_{i+k+1})`, `L_MTP = mean_k L^k` (the
//! paper's λ is left to the caller).
//!
//! Each module owns its `embed_tokens` and `shared_head.head`, loaded from the checkpoint's copies
//! (the paper shares them with the main model; the checkpoint stores them per module).
//!
//! Left out: MTP with a generation cache (speculative decoding) and vLLM's zeroed embedding at
//! position 0 (an inference-time shift convention).

use crate::config::ModelConfig;
use crate::layer::{DecoderLayer, LayerOptions, LayerOutput};
use crate::mla::Positions;
use crate::mlp::{linear, linear_weight};
use crate::norm::RmsNorm;
use crate::rope::RopeTables;
use tch::{nn, Tensor};

/// `model.layers.{i}.shared_head`.
#[derive(Debug)]
pub struct SharedHead {
    /// `shared_head.norm`.
    pub norm: RmsNorm,
    /// `shared_head.head.weight`: (V, d).
    pub head: Tensor,
}

/// One MTP module, `model.layers.{i}` with i ≥ `num_hidden_layers`.
#[derive(Debug)]
pub struct Mtp {
    /// `embed_tokens.weight`: (V, d), the module's copy of the embedding.
    pub embed_tokens: Tensor,
    /// `enorm`: RMSNorm of the token embedding.
    pub enorm: RmsNorm,
    /// `hnorm`: RMSNorm of the previous depth's hidden state.
    pub hnorm: RmsNorm,
    /// `eh_proj.weight`: (d, 2d), input `[embedding ; hidden]`.
    pub eh_proj: Tensor,
    /// The full decoder layer (`input_layernorm`, `self_attn`, `mlp`, …) at the same path.
    pub layer: DecoderLayer,
    /// `shared_head`.
    pub shared_head: SharedHead,
}

impl Mtp {
    /// The module under `path` (= `model.layers.{i}`).
    pub fn new(path: &nn::Path, cfg: &ModelConfig, rope: &RopeTables, i: usize) -> Self {
        let (d, v) = (cfg.hidden_size as i64, cfg.vocab_size as i64);
        let eps = cfg.rms_norm_eps;
        let head = path / "shared_head";
        Mtp {
            embed_tokens: linear_weight(&(path / "embed_tokens"), d, v),
            enorm: RmsNorm::new(&(path / "enorm"), d, eps),
            hnorm: RmsNorm::new(&(path / "hnorm"), d, eps),
            eh_proj: linear_weight(&(path / "eh_proj"), 2 * d, d),
            layer: DecoderLayer::new(path, cfg, rope, i),
            shared_head: SharedHead {
                norm: RmsNorm::new(&(&head / "norm"), d, eps),
                head: linear_weight(&(&head / "head"), d, v),
            },
        }
    }

    /// One depth: `h_prev (B, T', d)` (previous depth, pre-norm) and `next (B, T')` (token
    /// `t_{i+k}` for row i) at positions `pos` → logits (B, T', V) and the layer's output (its
    /// `hidden` is `h^k`, the next depth's input).
    pub fn forward(
        &self,
        h_prev: &Tensor,
        next: &Tensor,
        pos: &Positions,
        opts: &LayerOptions<'_>,
    ) -> (Tensor, LayerOutput) {
        let e = Tensor::embedding(&self.embed_tokens, next, -1, false, false); // (B, T', d)
        let joined = Tensor::cat(&[self.enorm.forward(&e), self.hnorm.forward(h_prev)], -1); // (B, T', 2d)
        let z = linear(&joined, &self.eh_proj); // (B, T', d)
        let out = self.layer.forward(&z, pos, None, opts);
        let logits = linear(&self.shared_head.norm.forward(&out.hidden), &self.shared_head.head);
        (logits, out)
    }
}
