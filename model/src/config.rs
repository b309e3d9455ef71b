//! The model's architecture: a Hugging Face `config.json` deserialised as-is.
//!
//! Field names are the checkpoint's own (`hidden_size`, `kv_lora_rank`, `index_topk`, ...), so a
//! config read from the hub, written by transformers 5, or shipped as a preset needs no renaming.
//! RoPE comes in two forms and both are accepted:
//! - hub form: top-level `rope_theta` plus an optional `rope_scaling` object (`"type": "yarn"`);
//! - transformers-5 form: one `rope_parameters` object (`"rope_type": "yarn" | "default"`, with
//!   `rope_theta` inside it).
//!
//! [`ModelConfig::rope`] folds either into one [`Rope`]. Keys this crate does not use
//! (`architectures`, `transformers_version`, `use_cache`, ...) are kept in [`ModelConfig::extra`]
//! so `rlvr inspect` can list them and saving can write them back.

use crate::error::ModelError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One integer or a list of them (`eos_token_id` is either, depending on the writer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    /// A single id.
    One(i64),
    /// Several ids.
    Many(Vec<i64>),
}

impl TokenIds {
    /// The ids as a list.
    pub fn to_vec(&self) -> Vec<i64> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// The rope settings of either form, as written in the file. Hub `rope_scaling` and transformers-5
/// `rope_parameters` share these field names, apart from `type` vs `rope_type` and where
/// `rope_theta` lives.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RopeFields {
    /// `"yarn"`, `"default"`, ... (transformers-5 spelling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_type: Option<String>,
    /// `"yarn"`, ... (hub spelling).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Base of the rotary frequencies (transformers-5 form only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// Context extension factor s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// Context length the frequencies were trained at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_max_position_embeddings: Option<usize>,
    /// YaRN β_fast (rotations above which a dimension keeps its frequency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta_fast: Option<f64>,
    /// YaRN β_slow (rotations below which a dimension is fully interpolated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta_slow: Option<f64>,
    /// mscale numerator coefficient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mscale: Option<f64>,
    /// mscale coefficient applied to all dims (DeepSeek's softmax-scale correction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mscale_all_dim: Option<f64>,
    /// Any other rope key, kept as written.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// YaRN context extension (DeepSeek-V3.2 docs/model.md §2.4).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Yarn {
    /// Extension factor s (40 for V3.2).
    pub factor: f64,
    /// Original training context (4096 for V3.2).
    pub original_max_position_embeddings: usize,
    /// β_fast (32).
    pub beta_fast: f64,
    /// β_slow (1).
    pub beta_slow: f64,
    /// mscale (1.0).
    pub mscale: f64,
    /// mscale_all_dim (1.0).
    pub mscale_all_dim: f64,
}

/// Rotary embedding settings, whichever form the file used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rope {
    /// Frequency base θ.
    pub theta: f64,
    /// YaRN scaling, when the config asks for it.
    pub yarn: Option<Yarn>,
}

/// A DeepSeek-V3.2 `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Rows of the embedding and of `lm_head`.
    pub vocab_size: usize,
    /// Model width d.
    pub hidden_size: usize,
    /// Width of the dense FFN (layers before `first_k_dense_replace`).
    pub intermediate_size: usize,
    /// Width of each routed and shared expert.
    pub moe_intermediate_size: usize,
    /// Main decoder layers L (MTP layers come after these).
    pub num_hidden_layers: usize,
    /// Attention heads n_h.
    pub num_attention_heads: usize,
    /// Written by HF; MLA has no grouped KV heads, so it must equal `num_attention_heads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<usize>,
    /// Shared experts per MoE layer.
    #[serde(default)]
    pub n_shared_experts: usize,
    /// Routed experts per MoE layer (0: no MoE at all).
    #[serde(default)]
    pub n_routed_experts: usize,
    /// Experts each token is routed to (K_r).
    #[serde(default)]
    pub num_experts_per_tok: usize,
    /// Expert groups for group-limited routing.
    #[serde(default = "one")]
    pub n_group: usize,
    /// Groups kept per token.
    #[serde(default = "one")]
    pub topk_group: usize,
    /// Multiplier on the normalised routing weights.
    #[serde(default = "unit")]
    pub routed_scaling_factor: f64,
    /// Whether the top-k routing weights are renormalised to sum to one.
    #[serde(default = "yes")]
    pub norm_topk_prob: bool,
    /// Layers `0..first_k_dense_replace` use the dense FFN.
    #[serde(default)]
    pub first_k_dense_replace: usize,
    /// Every `moe_layer_freq`-th layer from `first_k_dense_replace` on is MoE.
    #[serde(default = "one")]
    pub moe_layer_freq: usize,
    /// Router scoring function (`sigmoid` for V3/V3.2).
    #[serde(default = "sigmoid")]
    pub scoring_func: String,
    /// Routing method (`noaux_tc`: bias-corrected, aux-loss free).
    #[serde(default = "noaux_tc")]
    pub topk_method: String,
    /// KV latent width d_c (cached).
    pub kv_lora_rank: usize,
    /// Query latent width d_c' (`None`: queries projected directly from x).
    #[serde(default)]
    pub q_lora_rank: Option<usize>,
    /// Per-head non-rope query/key width d_h.
    pub qk_nope_head_dim: usize,
    /// Decoupled rope width d_h^R.
    pub qk_rope_head_dim: usize,
    /// Per-head value width.
    pub v_head_dim: usize,
    /// Lightning indexer heads H^I.
    pub index_n_heads: usize,
    /// Lightning indexer head width d^I.
    pub index_head_dim: usize,
    /// Keys each query attends to under DSA.
    pub index_topk: usize,
    /// MTP modules stored after the main layers.
    #[serde(default)]
    pub num_nextn_predict_layers: usize,
    /// FFN activation (`silu`).
    #[serde(default = "silu")]
    pub hidden_act: String,
    /// Longest context the rope tables are built for.
    pub max_position_embeddings: usize,
    /// RMSNorm ε.
    #[serde(default = "rms_eps")]
    pub rms_norm_eps: f64,
    /// Whether projections carry biases (false for DeepSeek).
    #[serde(default)]
    pub attention_bias: bool,
    /// Whether `lm_head` shares the embedding (false for DeepSeek).
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<i64>,
    /// End-of-sequence id(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<TokenIds>,
    /// Std of the normal initialisation.
    #[serde(default = "init_std")]
    pub initializer_range: f64,
    /// Hub-form rope base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// Hub-form rope scaling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeFields>,
    /// Transformers-5 form rope settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<RopeFields>,
    /// FP8 block quantisation settings of the checkpoint, when quantised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization_config: Option<QuantizationConfig>,
    /// Every other key, kept as written (metadata such as `architectures`).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// `quantization_config` of an FP8 checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantizationConfig {
    /// `fp8`.
    pub quant_method: String,
    /// `e4m3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fmt: Option<String>,
    /// Block shape of `weight_scale_inv` (`[128, 128]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_block_size: Option<Vec<usize>>,
    /// Any other key.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn one() -> usize {
    1
}
fn unit() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}
fn sigmoid() -> String {
    "sigmoid".into()
}
fn noaux_tc() -> String {
    "noaux_tc".into()
}
fn silu() -> String {
    "silu".into()
}
fn rms_eps() -> f64 {
    1e-6
}
fn init_std() -> f64 {
    0.02
}

impl ModelConfig {
    /// Parses a `config.json` (or a model directory holding one) and checks it.
    pub fn from_path(path: &Path) -> Result<Self, ModelError> {
        let file = if path.is_dir() { path.join("config.json") } else { path.to_path_buf() };
        let text = std::fs::read_to_string(&file).map_err(|e| ModelError::io(&file, e))?;
        Self::from_json(&text).map_err(|e| e.in_file(&file))
    }

    /// Parses config JSON text and checks it.
    pub fn from_json(text: &str) -> Result<Self, ModelError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let cfg: ModelConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let message = match e.path().to_string().as_str() {
                "." => e.inner().to_string(),
                path => format!("field `{path}`: {}", e.inner()),
            };
            ModelError::Config { file: None, message }
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The rope settings, from whichever form the file used.
    pub fn rope(&self) -> Result<Rope, ModelError> {
        let (theta, fields) = match (&self.rope_parameters, &self.rope_scaling) {
            (Some(_), Some(_)) => {
                return Err(ModelError::field("rope_parameters", "given together with rope_scaling; use one form"))
            }
            (Some(p), None) => {
                let theta = p
                    .rope_theta
                    .or(self.rope_theta)
                    .ok_or_else(|| ModelError::field("rope_parameters.rope_theta", "missing"))?;
                (theta, Some(p))
            }
            (None, scaling) => (self.rope_theta.unwrap_or(10_000.0), scaling.as_ref()),
        };
        let kind = fields.and_then(|f| f.rope_type.as_deref().or(f.kind.as_deref()));
        let yarn = match kind {
            None | Some("default") => None,
            Some("yarn") => Some(yarn_from(fields.expect("kind implies fields"))?),
            Some(other) => {
                return Err(ModelError::field("rope type", &format!("`{other}` is not supported (default, yarn)")))
            }
        };
        Ok(Rope { theta, yarn })
    }

    /// Full query/key head width (nope + rope).
    pub fn qk_head_dim(&self) -> usize {
        self.qk_nope_head_dim + self.qk_rope_head_dim
    }

    /// Whether layer `i` (main or MTP) uses the MoE FFN. Transformers 5 writes the decision per
    /// layer (`mlp_layer_types`: `"dense"` / `"sparse"`) and then ignores `moe_layer_freq`; when that
    /// list covers layer `i` it wins, otherwise the hub rule applies.
    pub fn is_moe_layer(&self, i: usize) -> bool {
        if let Some(kind) = self.mlp_layer_types().and_then(|types| types.get(i).cloned()) {
            return kind == "sparse";
        }
        self.n_routed_experts > 0 && i >= self.first_k_dense_replace && i.is_multiple_of(self.moe_layer_freq)
    }

    fn mlp_layer_types(&self) -> Option<Vec<String>> {
        let list = self.extra.get("mlp_layer_types")?.as_array()?;
        list.iter().map(|v| v.as_str().map(str::to_string)).collect()
    }

    /// Experts in each routing group.
    pub fn experts_per_group(&self) -> usize {
        self.n_routed_experts / self.n_group
    }

    /// End-of-sequence ids (empty when the config names none).
    pub fn eos_ids(&self) -> Vec<i64> {
        self.eos_token_id.as_ref().map(TokenIds::to_vec).unwrap_or_default()
    }

    /// Checks the relations between fields that the model relies on.
    pub fn validate(&self) -> Result<(), ModelError> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("kv_lora_rank", self.kv_lora_rank),
            ("qk_nope_head_dim", self.qk_nope_head_dim),
            ("qk_rope_head_dim", self.qk_rope_head_dim),
            ("v_head_dim", self.v_head_dim),
            ("index_n_heads", self.index_n_heads),
            ("index_head_dim", self.index_head_dim),
            ("index_topk", self.index_topk),
            ("max_position_embeddings", self.max_position_embeddings),
            ("n_group", self.n_group),
            ("topk_group", self.topk_group),
            ("moe_layer_freq", self.moe_layer_freq),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ModelError::field(name, "must be positive, got 0"));
            }
        }
        if !self.qk_rope_head_dim.is_multiple_of(2) {
            return Err(ModelError::field("qk_rope_head_dim", &format!("must be even, got {}", self.qk_rope_head_dim)));
        }
        if self.index_head_dim < self.qk_rope_head_dim {
            return Err(ModelError::field(
                "index_head_dim",
                &format!("{} is smaller than qk_rope_head_dim {}", self.index_head_dim, self.qk_rope_head_dim),
            ));
        }
        if let Some(kv) = self.num_key_value_heads {
            if kv != self.num_attention_heads {
                return Err(ModelError::field(
                    "num_key_value_heads",
                    &format!(
                        "{kv} differs from num_attention_heads {}; MLA has no grouped KV heads",
                        self.num_attention_heads
                    ),
                ));
            }
        }
        match self.q_lora_rank {
            Some(0) => return Err(ModelError::field("q_lora_rank", "must be positive, got 0")),
            None => {
                let msg = "is null, but the DSA indexer reads the query latent, so V3.2 needs one";
                return Err(ModelError::field("q_lora_rank", msg));
            }
            Some(_) => {}
        }
        for flag in ["attention_bias", "mlp_bias"] {
            let set = match flag {
                "attention_bias" => self.attention_bias,
                _ => self.extra.get(flag).and_then(|v| v.as_bool()).unwrap_or(false),
            };
            if set {
                return Err(ModelError::field(flag, "is true; DeepSeek-V3.2 projections have no biases"));
            }
        }
        if let Some(types) = self.mlp_layer_types() {
            if let Some(bad) = types.iter().find(|t| *t != "dense" && *t != "sparse") {
                return Err(ModelError::field("mlp_layer_types", &format!("unknown entry `{bad}` (dense, sparse)")));
            }
        }
        self.validate_moe()?;
        if self.scoring_func != "sigmoid" {
            return Err(ModelError::field(
                "scoring_func",
                &format!("`{}` is not supported (sigmoid)", self.scoring_func),
            ));
        }
        if self.hidden_act != "silu" {
            return Err(ModelError::field("hidden_act", &format!("`{}` is not supported (silu)", self.hidden_act)));
        }
        self.rope().map(|_| ())
    }

    fn validate_moe(&self) -> Result<(), ModelError> {
        if self.n_routed_experts == 0 {
            return Ok(());
        }
        if !self.n_routed_experts.is_multiple_of(self.n_group) {
            return Err(ModelError::field(
                "n_group",
                &format!("{} does not divide n_routed_experts {}", self.n_group, self.n_routed_experts),
            ));
        }
        if self.topk_group > self.n_group {
            return Err(ModelError::field(
                "topk_group",
                &format!("{} exceeds n_group {}", self.topk_group, self.n_group),
            ));
        }
        let reachable = self.topk_group * self.experts_per_group();
        if self.num_experts_per_tok == 0 || self.num_experts_per_tok > reachable {
            return Err(ModelError::field(
                "num_experts_per_tok",
                &format!("{} must be in 1..={reachable} (topk_group × experts per group)", self.num_experts_per_tok),
            ));
        }
        Ok(())
    }
}

fn yarn_from(f: &RopeFields) -> Result<Yarn, ModelError> {
    let factor = f.factor.ok_or_else(|| ModelError::field("rope factor", "yarn needs `factor`"))?;
    let original = f
        .original_max_position_embeddings
        .ok_or_else(|| ModelError::field("rope original_max_position_embeddings", "yarn needs it"))?;
    if factor <= 0.0 {
        return Err(ModelError::field("rope factor", &format!("must be positive, got {factor}")));
    }
    Ok(Yarn {
        factor,
        original_max_position_embeddings: original,
        beta_fast: f.beta_fast.unwrap_or(32.0),
        beta_slow: f.beta_slow.unwrap_or(1.0),
        mscale: f.mscale.unwrap_or(1.0),
        mscale_all_dim: f.mscale_all_dim.unwrap_or(0.0),
    })
}
