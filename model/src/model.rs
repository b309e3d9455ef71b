//! The DeepSeek-V3.2 causal LM (docs/model.md §2.1): embedding, pre-norm decoder layers
//! (`h = x + Attn(RMSNorm(x)); out = h + FFN(RMSNorm(h))`), final RMSNorm, untied `lm_head` on every
//! position. The module tree is the checkpoint: every VarStore path is the HF key.
//!
//! One forward, [`DeepseekV32::run`], serves training (full sequences, naive MLA), scoring, and
//! generation (with a [`KvCache`], absorbed MLA for single-token steps); its
//! [`ForwardOptions`] add the training hooks: indexer losses, routing replay, a vocabulary mask and
//! the MTP modules (built by [`DeepseekV32::with_mtp`]). The other forwards are thin wrappers.
//!
//! Left out: MTP with a cache (speculative decoding), indexer losses with a cache.

use crate::cache::KvCache;
use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::forward::{ForwardOptions, ForwardOutput};
use crate::indexer::Selection;
use crate::indexer_loss::IndexerLosses;
pub use crate::layer::{DecoderLayer, Ffn, LayerOptions, LayerOutput};
use crate::mla::{AttentionMode, MlaPath, Positions};
use crate::mlp::linear;
use crate::moe::Routing;
use crate::mtp::Mtp;
use crate::norm::RmsNorm;
use crate::rope::RopeTables;
use tch::{nn, Kind, Tensor};

/// What one forward decided, per layer: DSA selections (when the indexer ran) and MoE routings.
#[derive(Debug, Default)]
pub struct Trace {
    /// Layer `l`'s selection, `None` where the indexer did not run.
    pub selections: Vec<Option<Selection>>,
    /// Layer `l`'s routing (rows in `B·T` order), `None` for dense layers. MTP layers follow the
    /// main ones when they ran.
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
    /// The MTP modules (`model.layers.{L}…`), empty unless built by [`DeepseekV32::with_mtp`].
    pub mtp: Vec<Mtp>,
    /// The rotary tables shared by every layer.
    pub rope: RopeTables,
    /// The architecture.
    pub config: ModelConfig,
}

impl DeepseekV32 {
    /// Builds the main model under `root` (the VarStore root: paths `model.…` and `lm_head.weight`),
    /// without MTP.
    pub fn new(root: &nn::Path, cfg: &ModelConfig) -> Result<Self, ModelError> {
        Self::build(root, cfg, false)
    }

    /// Builds the main model and its `num_nextn_predict_layers` MTP modules.
    pub fn with_mtp(root: &nn::Path, cfg: &ModelConfig) -> Result<Self, ModelError> {
        Self::build(root, cfg, true)
    }

    fn build(root: &nn::Path, cfg: &ModelConfig, with_mtp: bool) -> Result<Self, ModelError> {
        cfg.validate()?;
        let rope = RopeTables::new(cfg)?;
        let (d, v) = (cfg.hidden_size as i64, cfg.vocab_size as i64);
        let model = root / "model";
        let embed_tokens = (&model / "embed_tokens").var("weight", &[v, d], nn::Init::Randn { mean: 0.0, stdev: 1.0 });
        let layers =
            (0..cfg.num_hidden_layers).map(|i| DecoderLayer::new(&(&model / "layers" / i), cfg, &rope, i)).collect();
        let norm = RmsNorm::new(&(&model / "norm"), d, cfg.rms_norm_eps);
        let lm_head = if cfg.tie_word_embeddings {
            embed_tokens.shallow_clone()
        } else {
            crate::mlp::linear_weight(&(root / "lm_head"), d, v)
        };
        let n_mtp = if with_mtp { cfg.num_nextn_predict_layers } else { 0 };
        let mtp = (cfg.num_hidden_layers..cfg.num_hidden_layers + n_mtp)
            .map(|i| Mtp::new(&(&model / "layers" / i), cfg, &rope, i))
            .collect();
        Ok(DeepseekV32 { embed_tokens, layers, norm, lm_head, mtp, rope, config: cfg.clone() })
    }

    /// Stacks each MoE layer's routed experts for grouped inference ([`crate::moe::Moe::pack_experts`]):
    /// what a generation engine does once its weights are in place (dtype and device final).
    pub fn pack_experts(&mut self) {
        let mtp_layers = self.mtp.iter_mut().map(|m| &mut m.layer);
        for layer in self.layers.iter_mut().chain(mtp_layers) {
            if let Ffn::Moe(moe) = &mut layer.mlp {
                moe.pack_experts();
            }
        }
    }

    /// The checkpoint names of every indexer parameter this model holds (MTP layers included
    /// when built): the dense warm-up's trainable set.
    pub fn indexer_parameter_names(&self) -> Vec<String> {
        crate::indexer_loss::indexer_parameter_names(&self.config, !self.mtp.is_empty())
    }

    /// logits: (B, T, V) for `tokens (B, T)` i64 at positions `0..T`, naive MLA.
    pub fn forward(&self, tokens: &Tensor, mode: AttentionMode) -> Tensor {
        self.run(tokens, ForwardOptions::new(mode)).logits
    }

    /// Like [`Self::forward`], also returning each layer's selection and routing.
    pub fn forward_traced(&self, tokens: &Tensor, mode: AttentionMode) -> (Tensor, Trace) {
        let out = self.run(tokens, ForwardOptions::new(mode));
        (out.logits, out.trace)
    }

    /// logits: (B, T, V) for `tokens (B, T)` appended to cache `slots` (one per row), which are
    /// extended by T. Single-token steps use absorbed MLA over the latent cache, longer ones naive.
    pub fn forward_cached(&self, tokens: &Tensor, cache: &mut KvCache, slots: &[usize], mode: AttentionMode) -> Tensor {
        self.run(tokens, Self::cached_options(tokens, cache, slots, mode)).logits
    }

    /// The options [`Self::forward_cached`] uses (add hooks such as `replay` to them).
    pub fn cached_options<'a>(
        tokens: &Tensor,
        cache: &'a mut KvCache,
        slots: &'a [usize],
        mode: AttentionMode,
    ) -> ForwardOptions<'a> {
        let path = if tokens.size()[1] == 1 { MlaPath::Absorbed } else { MlaPath::Naive };
        ForwardOptions { path, cache: Some(CacheSlots { cache, slots }), ..ForwardOptions::new(mode) }
    }

    /// Logits (B, T, V) and the per-layer trace, with an optional cache and a chosen MLA path.
    pub fn forward_with(
        &self,
        tokens: &Tensor,
        cache: Option<CacheSlots<'_>>,
        mode: AttentionMode,
        path: MlaPath,
    ) -> (Tensor, Trace) {
        let out = self.run(tokens, ForwardOptions { path, cache, ..ForwardOptions::new(mode) });
        (out.logits, out.trace)
    }

    /// The general forward of `tokens (B, T)`. Without a cache the positions are `0..T`; with one,
    /// row b continues slot `slots[b]` from its current length. See [`ForwardOptions`] for the hooks.
    pub fn run(&self, tokens: &Tensor, mut opts: ForwardOptions<'_>) -> ForwardOutput {
        let size = tokens.size();
        assert_eq!(size.len(), 2, "tokens must be (B, T), got {size:?}");
        let (b, t) = (size[0], size[1]);
        check_options(&opts, !self.mtp.is_empty(), &self.config);
        let mut cache = opts.cache.take();
        let pos = match &cache {
            Some(c) => Positions::new(&self.rope, c.cache.positions(c.slots, t, tokens.device())),
            None => self.positions_of(tokens, &opts),
        };
        let mut h = Tensor::embedding(&self.embed_tokens, tokens, -1, false, false); // (B, T, d)
        let mut rec = Recorder::new(opts.indexer_loss.is_some());
        for (i, layer) in self.layers.iter().enumerate() {
            let c = cache.as_mut().map(|c| (&mut *c.cache, c.slots, i));
            let lo = self.layer_options(&opts, i);
            h = rec.push(layer.forward(&h, &pos, c, &lo));
        }
        if let Some(c) = cache {
            c.cache.advance(c.slots, t);
        }
        let mut logits = linear(&self.norm.forward(&head_input(&h, &opts)), &self.lm_head); // (B, T − f, V)
        if let Some(mask) = opts.vocab_mask {
            logits = mask.apply(logits);
        }
        let mtp_logits = if opts.mtp { self.run_mtp(tokens, &h, &pos, &opts, &mut rec) } else { Vec::new() };
        ForwardOutput { logits, trace: rec.trace, trace_rows: b, indexer: rec.indexer, mtp_logits }
    }

    /// The positions of a forward of `tokens (B, T)` without a cache under `opts`: `0..T` in every
    /// row, or the packing's.
    pub(crate) fn positions_of(&self, tokens: &Tensor, opts: &ForwardOptions<'_>) -> Positions {
        let (b, t) = (tokens.size()[0], tokens.size()[1]);
        match opts.packing {
            Some(packing) => Positions::packed(&self.rope, packing),
            None => Positions::new(
                &self.rope,
                Tensor::arange(t, (Kind::Int64, tokens.device())).unsqueeze(0).expand([b, t], true), // (B, T)
            ),
        }
    }

    /// The MTP depths over the main model's pre-norm hidden state `h (B, T, d)`.
    pub(crate) fn run_mtp(
        &self,
        tokens: &Tensor,
        h: &Tensor,
        pos: &Positions,
        opts: &ForwardOptions<'_>,
        rec: &mut Recorder,
    ) -> Vec<Tensor> {
        let t = tokens.size()[1];
        let mut prev = h.shallow_clone();
        let mut logits = Vec::new();
        for (m, module) in self.mtp.iter().enumerate() {
            let k = m as i64 + 1;
            if t - k < 1 {
                break;
            }
            let sub = Positions::new(&self.rope, pos.q_pos.narrow(1, 0, t - k)); // (B, T−k)
            let lo = self.layer_options(opts, self.layers.len() + m);
            let next = tokens.narrow(1, k, t - k); // t_{i+k}: (B, T−k)
            let (lg, out) = module.forward(&prev.narrow(1, 0, t - k), &next, &sub, &lo);
            prev = rec.push(out);
            logits.push(lg);
        }
        logits
    }

    /// Layer `i`'s options (main layers first, then MTP layers).
    pub(crate) fn layer_options<'a>(&self, opts: &ForwardOptions<'a>, i: usize) -> LayerOptions<'a> {
        let is_moe = match self.layers.get(i) {
            Some(layer) => matches!(layer.mlp, Ffn::Moe(_)),
            None => matches!(self.mtp[i - self.layers.len()].layer.mlp, Ffn::Moe(_)),
        };
        let replay = opts.replay.filter(|_| is_moe).map(|r| {
            r.get(i)
                .and_then(Option::as_ref)
                .unwrap_or_else(|| panic!("routing replay has no expert ids for MoE layer {i}"))
        });
        LayerOptions { mode: opts.mode, path: opts.path, stage: opts.indexer_loss, replay }
    }

    /// `log p(tokens[:, i+1] | tokens[:, ..=i])`: (B, T−1) f32, teacher-forced.
    pub fn token_logprobs(&self, tokens: &Tensor, mode: AttentionMode) -> Tensor {
        logprobs_of(&self.forward(tokens, mode), tokens)
    }
}

/// Refuses option combinations the forward does not support.
pub(crate) fn check_options(opts: &ForwardOptions<'_>, has_mtp: bool, cfg: &ModelConfig) {
    if let Err(e) = cfg.check_attention(opts.mode) {
        panic!("{e}");
    }
    if let Some(stage) = opts.indexer_loss {
        assert_eq!(stage.mode(), opts.mode, "indexer loss {stage:?} needs attention mode {:?}", stage.mode());
        assert!(opts.cache.is_none(), "indexer losses are computed without a cache");
    }
    assert!(opts.head_from >= 0, "head_from must be ≥ 0, got {}", opts.head_from);
    if let Some(p) = opts.packing {
        assert!(opts.head_from == 0, "a packed forward's head rows say where the head starts (head_from must be 0)");
        assert!(
            opts.cache.is_none() && opts.indexer_loss.is_none() && !opts.mtp,
            "a packed forward runs without a cache, indexer losses or MTP"
        );
        let t = p.positions.size()[1];
        assert!(
            opts.mode == AttentionMode::Dense || t <= cfg.index_topk as i64,
            "a packed forward with the indexer selecting keys (sparse attention over {t} > index_topk keys)"
        );
    }
    if opts.mtp {
        assert!(has_mtp, "MTP asked for, but the model was built without it (DeepseekV32::with_mtp)");
        assert!(opts.cache.is_none(), "MTP runs without a cache");
    }
}

/// Collects the per-layer outputs of one forward.
pub(crate) struct Recorder {
    pub(crate) trace: Trace,
    pub(crate) indexer: Option<IndexerLosses>,
}

impl Recorder {
    pub(crate) fn new(losses: bool) -> Self {
        Recorder { trace: Trace::default(), indexer: losses.then(IndexerLosses::default) }
    }

    /// Keeps what layer `out` decided; returns its hidden state.
    pub(crate) fn push(&mut self, out: LayerOutput) -> Tensor {
        self.trace.selections.push(out.selection);
        self.trace.routings.push(out.routing);
        if let (Some(all), Some(loss)) = (self.indexer.as_mut(), out.indexer) {
            all.layers.push(loss);
        }
        out.hidden
    }
}

/// The main head's input from the last hidden state `h`: the positions `head_from..`, or a
/// packing's rows read back into the row layout.
pub(crate) fn head_input(h: &Tensor, opts: &ForwardOptions<'_>) -> Tensor {
    match (opts.packing, opts.head_from) {
        (Some(packing), _) => packing.head_input(h), // (B, L', d)
        (None, 0) => h.shallow_clone(),
        (None, f) => h.narrow(1, f, h.size()[1] - f), // (B, T − f, d)
    }
}

/// Log-probabilities of `tokens[:, 1:]` under `logits (B, T, V)`: (B, T−1) f32.
pub fn logprobs_of(logits: &Tensor, tokens: &Tensor) -> Tensor {
    let t = tokens.size()[1];
    let logp = logits.narrow(1, 0, t - 1).log_softmax(-1, Kind::Float); // (B, T−1, V)
    logp.gather(-1, &tokens.narrow(1, 1, t - 1).unsqueeze(-1), false).squeeze_dim(-1)
}
