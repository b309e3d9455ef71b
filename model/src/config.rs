//! The model's architecture: a Hugging Face `config.json` deserialised as-is.
//!
//! Field names are the checkpoint's own (`hidden_size`, `kv_lora_rank`, `index_topk`, ...), so a
//! config read from the hub, written by transformers 5, or shipped as a preset needs no renaming.
//! RoPE comes in two forms and both are accepted:
//! - hub form: top-level `rope_theta` plus an optional `rope_scaling` object (`"type": "yarn"`);
//! - transformers-5 form: one `rope_parameters` object (`"rope_type": "yarn" | "default"`, with
//!   `rope_theta` inside it).
//!
//! [`ModelConfig::rope`] folds either into one [`Rope`].
//!
//! Three members of the DeepSeek family share this struct ([`Family`], chosen from `model_type` and
//! `architectures`): DeepSeek-V3.2 (`deepseek_v32`, with the DSA lightning indexer), DeepSeek-V3 and
//! the models built on its architecture (`deepseek_v3`: V3, V3.1, R1, Kimi-K2, Moonlight; dense MLA,
//! no indexer) and DeepSeek-V2 (`deepseek_v2`: softmax router, `greedy` / `group_limited_greedy`
//! top-k). The indexer fields are read only for V3.2; `q_lora_rank = null` (queries projected
//! directly) is allowed where there is no indexer to read the query latent.
//!
//! Keys this crate does not use
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

/// Which member of the DeepSeek family a config describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// DeepSeek-V3.2 (`deepseek_v32`, `DeepseekV32ForCausalLM`): V3 plus the DSA lightning indexer.
    V32,
    /// DeepSeek-V3 / V3.1 / R1, Kimi-K2, Moonlight (`deepseek_v3`, `DeepseekV3ForCausalLM`): dense
    /// MLA, sigmoid router with `e_score_correction_bias`.
    V3,
    /// DeepSeek-V2 / V2-Lite / V2.5 (`deepseek_v2`, `DeepseekV2ForCausalLM`): dense MLA, softmax
    /// router, `greedy` or `group_limited_greedy` top-k, no router bias.
    V2,
}

impl Family {
    const ALL: [Family; 3] = [Family::V32, Family::V3, Family::V2];

    /// The `model_type` transformers registers for it.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::V32 => "deepseek_v32",
            Family::V3 => "deepseek_v3",
            Family::V2 => "deepseek_v2",
        }
    }

    /// The causal-LM class in `architectures`.
    pub fn architecture(self) -> &'static str {
        match self {
            Family::V32 => "DeepseekV32ForCausalLM",
            Family::V3 => "DeepseekV3ForCausalLM",
            Family::V2 => "DeepseekV2ForCausalLM",
        }
    }

    /// Whether its layers carry the DSA lightning indexer (and so support sparse attention).
    pub fn has_indexer(self) -> bool {
        self == Family::V32
    }

    fn from_model_type(name: &str) -> Option<Family> {
        // Kimi-K2 ships `model_type: kimi_k2` with the DeepSeek-V3 classes.
        if name == "kimi_k2" {
            return Some(Family::V3);
        }
        Family::ALL.into_iter().find(|f| f.model_type() == name)
    }

    fn from_architecture(name: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.architecture() == name)
    }
}

/// How the router scores experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scoring {
    /// `sigmoid(x Wᵀ)` (V3, V3.2).
    Sigmoid,
    /// `softmax(x Wᵀ)` over all experts (V2).
    Softmax,
}

/// How the router picks its top-k experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopkMethod {
    /// V3's aux-loss-free routing: biased scores, groups ranked by the sum of their top-2.
    NoauxTc,
    /// V2: the top-k scores over all experts.
    Greedy,
    /// V2: groups ranked by their best score, top-k within the `topk_group` best groups.
    GroupLimitedGreedy,
}

/// A DeepSeek-family `config.json` (V3.2, V3 or V2, see [`Family`]).
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
    #[serde(default, deserialize_with = "null_is_default")]
    pub num_experts_per_tok: usize,
    /// Expert groups for group-limited routing (`null`, as transformers writes V2's default, is 1).
    #[serde(default = "one", deserialize_with = "null_is_one")]
    pub n_group: usize,
    /// Groups kept per token (`null` is 1).
    #[serde(default = "one", deserialize_with = "null_is_one")]
    pub topk_group: usize,
    /// Multiplier on the normalised routing weights.
    #[serde(default = "unit")]
    pub routed_scaling_factor: f64,
    /// Whether the top-k routing weights are renormalised to sum to one (absent: true for V3/V3.2,
    /// false for V2, as transformers defaults); see [`ModelConfig::norm_topk_prob`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub norm_topk_prob: Option<bool>,
    /// Layers `0..first_k_dense_replace` use the dense FFN.
    #[serde(default, deserialize_with = "null_is_default")]
    pub first_k_dense_replace: usize,
    /// Every `moe_layer_freq`-th layer from `first_k_dense_replace` on is MoE.
    #[serde(default = "one")]
    pub moe_layer_freq: usize,
    /// Router scoring function as written (`sigmoid` for V3/V3.2, `softmax` for V2; absent: the
    /// family's); see [`ModelConfig::scoring`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scoring_func: Option<String>,
    /// Routing method as written (`noaux_tc` for V3/V3.2; `greedy` or `group_limited_greedy` for V2;
    /// absent: `noaux_tc` / `greedy`); see [`ModelConfig::topk_method`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topk_method: Option<String>,
    /// V2's auxiliary balance-loss weight α (parsed and kept; the forward does not use it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aux_loss_alpha: Option<f64>,
    /// V2: balance loss per sequence (`true`) or per batch (parsed and kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_aux: Option<bool>,
    /// transformers' DeepSeek-V3 switch for MLA's rope pair layout; only the checkpoints' own
    /// interleaved layout (`true`, the default) is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_interleave: Option<bool>,
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
    /// Lightning indexer heads H^I (V3.2 only; 0 = absent).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub index_n_heads: usize,
    /// Lightning indexer head width d^I (V3.2 only; 0 = absent).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub index_head_dim: usize,
    /// Keys each query attends to under DSA (V3.2 only; 0 = absent).
    #[serde(default, skip_serializing_if = "is_zero")]
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
fn is_zero(n: &usize) -> bool {
    *n == 0
}
fn null_is_one<'de, D: serde::Deserializer<'de>>(de: D) -> Result<usize, D::Error> {
    Ok(Option::<usize>::deserialize(de)?.unwrap_or(1))
}
fn null_is_default<'de, D: serde::Deserializer<'de>>(de: D) -> Result<usize, D::Error> {
    Ok(Option::<usize>::deserialize(de)?.unwrap_or_default())
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

    /// The family this config describes: from `architectures` when it names a known class, else
    /// from `model_type`; a config with neither is rlvr's own V3.2. [`Self::validate`] rejects
    /// unknown names and the two fields disagreeing.
    pub fn family(&self) -> Family {
        let by_arch = self.architectures().iter().find_map(|a| Family::from_architecture(a));
        let by_type = self.model_type().and_then(Family::from_model_type);
        by_arch.or(by_type).unwrap_or(Family::V32)
    }

    fn model_type(&self) -> Option<&str> {
        self.extra.get("model_type").and_then(|v| v.as_str())
    }

    fn architectures(&self) -> Vec<&str> {
        match self.extra.get("architectures") {
            Some(serde_json::Value::Array(list)) => list.iter().filter_map(|v| v.as_str()).collect(),
            Some(serde_json::Value::String(one)) => vec![one.as_str()],
            _ => Vec::new(),
        }
    }

    fn check_family(&self) -> Result<(), ModelError> {
        let by_type = self.model_type().map(|t| (t, Family::from_model_type(t)));
        let archs = self.architectures();
        let by_arch = archs.iter().find_map(|a| Family::from_architecture(a));
        let known = Family::ALL.map(Family::model_type).join(", ");
        match (by_type, by_arch) {
            (Some((t, None)), None) => Err(ModelError::field(
                "model_type",
                &format!("`{t}` is not a DeepSeek family model rlvr runs ({known}; or `architectures` naming one)"),
            )),
            (Some((t, Some(a))), Some(b)) if a != b => Err(ModelError::field(
                "architectures",
                &format!(
                    "{archs:?} is {} but model_type `{t}` is {}; the two must agree",
                    b.model_type(),
                    a.model_type()
                ),
            )),
            (None, None) if !archs.is_empty() => Err(ModelError::field(
                "architectures",
                &format!(
                    "{archs:?} names no DeepSeek family class rlvr runs ({})",
                    Family::ALL.map(Family::architecture).join(", ")
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Whether the layers carry the DSA lightning indexer (V3.2), so sparse attention is possible.
    pub fn has_indexer(&self) -> bool {
        self.family().has_indexer()
    }

    /// Refuses sparse attention (DSA) on a model without lightning indexers, naming the field that
    /// decides it. Callers attach the config file ([`ModelError::in_file`]).
    pub fn check_attention(&self, mode: crate::mla::AttentionMode) -> Result<(), ModelError> {
        if mode == crate::mla::AttentionMode::Dense || self.has_indexer() {
            return Ok(());
        }
        let family = self.family();
        Err(ModelError::field(
            "model_type",
            &format!(
                "sparse attention (DSA) needs the lightning indexer, but this is a {} model ({}) without \
                 one (no `index_n_heads` / `index_topk`); use dense attention, or add indexers with \
                 `rlvr convert --add-indexer`",
                family.model_type(),
                family.architecture()
            ),
        ))
    }

    /// The router's scoring function: `scoring_func`, else the family's.
    pub fn scoring(&self) -> Scoring {
        match self.scoring_func.as_deref() {
            Some("softmax") => Scoring::Softmax,
            Some(_) => Scoring::Sigmoid,
            None if self.family() == Family::V2 => Scoring::Softmax,
            None => Scoring::Sigmoid,
        }
    }

    /// The router's top-k method: `topk_method`, else the family's (unknown names are rejected by
    /// [`Self::validate`]).
    pub fn topk_method(&self) -> TopkMethod {
        match self.topk_method.as_deref() {
            Some("greedy") => TopkMethod::Greedy,
            Some("group_limited_greedy") => TopkMethod::GroupLimitedGreedy,
            Some(_) => TopkMethod::NoauxTc,
            None if self.family() == Family::V2 => TopkMethod::Greedy,
            None => TopkMethod::NoauxTc,
        }
    }

    /// `norm_topk_prob`, else the family's default (true for V3/V3.2, false for V2).
    pub fn norm_topk_prob(&self) -> bool {
        self.norm_topk_prob.unwrap_or(self.family() != Family::V2)
    }

    /// Whether MoE routers hold `e_score_correction_bias` (the aux-loss-free `noaux_tc` routing).
    pub fn router_has_bias(&self) -> bool {
        self.topk_method() == TopkMethod::NoauxTc
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
        self.check_family()?;
        let family = self.family();
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("kv_lora_rank", self.kv_lora_rank),
            ("qk_nope_head_dim", self.qk_nope_head_dim),
            ("qk_rope_head_dim", self.qk_rope_head_dim),
            ("v_head_dim", self.v_head_dim),
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
        if family.has_indexer() {
            self.validate_indexer()?;
        }
        if self.rope_interleave == Some(false) {
            let msg = "is false; only DeepSeek's interleaved rope pairs (the checkpoints' layout) are supported";
            return Err(ModelError::field("rope_interleave", msg));
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
        if self.q_lora_rank == Some(0) {
            return Err(ModelError::field("q_lora_rank", "must be positive, got 0 (null: no query compression)"));
        }
        for flag in ["attention_bias", "mlp_bias"] {
            let set = match flag {
                "attention_bias" => self.attention_bias,
                _ => self.extra.get(flag).and_then(|v| v.as_bool()).unwrap_or(false),
            };
            if set {
                return Err(ModelError::field(flag, "is true; DeepSeek projections have no biases"));
            }
        }
        if let Some(types) = self.mlp_layer_types() {
            if let Some(bad) = types.iter().find(|t| *t != "dense" && *t != "sparse") {
                return Err(ModelError::field("mlp_layer_types", &format!("unknown entry `{bad}` (dense, sparse)")));
            }
        }
        self.validate_router(family)?;
        self.validate_moe()?;
        if self.hidden_act != "silu" {
            return Err(ModelError::field("hidden_act", &format!("`{}` is not supported (silu)", self.hidden_act)));
        }
        self.rope().map(|_| ())
    }

    /// V3.2's indexer fields: present, consistent, and a query latent for the indexer to read.
    fn validate_indexer(&self) -> Result<(), ModelError> {
        for (name, value) in [
            ("index_n_heads", self.index_n_heads),
            ("index_head_dim", self.index_head_dim),
            ("index_topk", self.index_topk),
        ] {
            if value == 0 {
                return Err(ModelError::field(
                    name,
                    "missing or 0, but a deepseek_v32 model needs the DSA indexer fields (a model without \
                     indexers is `model_type: deepseek_v3`)",
                ));
            }
        }
        if self.index_head_dim < self.qk_rope_head_dim {
            return Err(ModelError::field(
                "index_head_dim",
                &format!("{} is smaller than qk_rope_head_dim {}", self.index_head_dim, self.qk_rope_head_dim),
            ));
        }
        if self.q_lora_rank.is_none() {
            let msg = "is null, but the DSA indexer reads the query latent, so V3.2 needs one";
            return Err(ModelError::field("q_lora_rank", msg));
        }
        Ok(())
    }

    /// The router's scoring function and top-k method must be the family's.
    fn validate_router(&self, family: Family) -> Result<(), ModelError> {
        let (scoring, methods): (&str, &[&str]) = match family {
            Family::V2 => ("softmax", &["greedy", "group_limited_greedy"]),
            Family::V3 | Family::V32 => ("sigmoid", &["noaux_tc"]),
        };
        if let Some(f) = self.scoring_func.as_deref().filter(|f| *f != scoring) {
            return Err(ModelError::field(
                "scoring_func",
                &format!("`{f}` is not supported for {} (the family scores with {scoring})", family.model_type()),
            ));
        }
        if let Some(m) = self.topk_method.as_deref().filter(|m| !methods.contains(m)) {
            return Err(ModelError::field(
                "topk_method",
                &format!("`{m}` is not a {} top-k method ({})", family.model_type(), methods.join(", ")),
            ));
        }
        if let Some(alpha) = self.aux_loss_alpha.filter(|a| !a.is_finite() || *a < 0.0) {
            return Err(ModelError::field("aux_loss_alpha", &format!("must be finite and ≥ 0, got {alpha}")));
        }
        Ok(())
    }

    fn validate_moe(&self) -> Result<(), ModelError> {
        if self.n_routed_experts == 0 {
            return Ok(());
        }
        if self.topk_method() == TopkMethod::Greedy {
            // Plain top-k over all experts: the group fields play no part.
            if self.num_experts_per_tok == 0 || self.num_experts_per_tok > self.n_routed_experts {
                return Err(ModelError::field(
                    "num_experts_per_tok",
                    &format!("{} must be in 1..={}", self.num_experts_per_tok, self.n_routed_experts),
                ));
            }
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

/// The repository's `small` preset, for tests of the model's pieces at a real config's shapes.
#[cfg(test)]
pub(crate) fn small_preset() -> ModelConfig {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../presets/small/config.json");
    ModelConfig::from_path(&path).expect("the small preset")
}
