//! DeepSeek-V3 → DeepSeek-V3.2: adding freshly initialised lightning indexers to a `deepseek_v3`
//! checkpoint, the conversion DeepSeek ran on V3.1-Terminus before the dense warm-up and sparse
//! training (V3.2-Exp paper §2.1; docs/model.md §3.2).
//!
//! The V3.2 network is the V3 network plus one indexer per layer (MTP layers included); nothing
//! else changes, so the converted model in dense mode computes exactly the V3 model's logits. The
//! indexers start as transformers' `DeepseekV32PreTrainedModel._init_weights` starts them: `wq_b`,
//! `wk`, `weights_proj` ~ N(0, `initializer_range`) (nn.Linear), `k_norm` weight 1 and bias 0
//! (nn.LayerNorm), drawn here from rlvr's seeded per-tensor streams ([`crate::checkpoint::init`]).
//!
//! What changes in `config.json`: `model_type: deepseek_v32`, `architectures:
//! ["DeepseekV32ForCausalLM"]`, the three `index_*` fields; `auto_map` (the hub's remote-code
//! classes for V3) and `rope_interleave` (V3.2 is always interleaved) are dropped.

use crate::checkpoint::init;
use crate::config::{Family, ModelConfig};
use crate::device::KEEP_F32;
use crate::error::ModelError;
use crate::spec::{main_tensors, mtp_tensors, Part};
use tch::{Kind, Tensor};

/// The indexer to add (V3.2's published values by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexerSpec {
    /// Indexer heads H^I (`index_n_heads`).
    pub n_heads: usize,
    /// Indexer head width d^I (`index_head_dim`; at least `qk_rope_head_dim`).
    pub head_dim: usize,
    /// Keys each query keeps under DSA (`index_topk`).
    pub topk: usize,
}

impl Default for IndexerSpec {
    fn default() -> Self {
        IndexerSpec { n_heads: 64, head_dim: 128, topk: 2048 }
    }
}

/// The `deepseek_v32` config of the `deepseek_v3` config `v3` with indexers `spec`. Errors (naming
/// the field) for anything but a V3 model with a query latent.
pub fn v32_config(v3: &ModelConfig, spec: &IndexerSpec) -> Result<ModelConfig, ModelError> {
    match v3.family() {
        Family::V3 => {}
        Family::V32 => return Err(ModelError::field("model_type", "is deepseek_v32: the model has indexers already")),
        other => {
            return Err(ModelError::field(
                "model_type",
                &format!(
                    "is {}; indexers are added to deepseek_v3 models (V3.2 keeps V3's sigmoid router)",
                    other.model_type()
                ),
            ))
        }
    }
    if v3.q_lora_rank.is_none() {
        return Err(ModelError::field(
            "q_lora_rank",
            "is null, but the V3.2 indexer reads MLA's query latent; this model projects queries directly",
        ));
    }
    let mut cfg = v3.clone();
    cfg.index_n_heads = spec.n_heads;
    cfg.index_head_dim = spec.head_dim;
    cfg.index_topk = spec.topk;
    cfg.rope_interleave = None;
    cfg.extra.remove("auto_map");
    cfg.extra.insert("model_type".into(), Family::V32.model_type().into());
    cfg.extra.insert("architectures".into(), serde_json::json!([Family::V32.architecture()]));
    cfg.validate()?;
    Ok(cfg)
}

/// The new indexer tensors of `v32` (main layers, and MTP layers when `with_mtp`), initialised from
/// `seed`: `kind` for the projections, f32 for what transformers keeps in f32 (`weights_proj`,
/// `k_norm`).
pub fn indexer_tensors(
    v32: &ModelConfig,
    seed: u64,
    with_mtp: bool,
    kind: Kind,
) -> Result<Vec<(String, Tensor)>, ModelError> {
    let mtp = if with_mtp { mtp_tensors(v32) } else { Vec::new() };
    main_tensors(v32)
        .into_iter()
        .chain(mtp)
        .filter(|t| t.part == Part::Indexer)
        .map(|t| {
            let k = if KEEP_F32.iter().any(|p| t.name.contains(p)) { Kind::Float } else { kind };
            Ok((t.name.clone(), init::init_tensor(&t, v32, seed, k)?))
        })
        .collect()
}

/// Adds indexers to a V3 checkpoint's tensors `v3_tensors` (HF names, any order): the V3.2 config
/// and every tensor of the V3.2 checkpoint. MTP layers get indexers when their tensors are present.
pub fn add_indexer(
    v3: &ModelConfig,
    v3_tensors: Vec<(String, Tensor)>,
    spec: &IndexerSpec,
    seed: u64,
) -> Result<(ModelConfig, Vec<(String, Tensor)>), ModelError> {
    let v32 = v32_config(v3, spec)?;
    let mtp_prefix = format!("model.layers.{}.", v3.num_hidden_layers);
    let with_mtp = v3.num_nextn_predict_layers > 0 && v3_tensors.iter().any(|(n, _)| n.starts_with(&mtp_prefix));
    let kind =
        v3_tensors.iter().find(|(n, _)| n.ends_with("q_b_proj.weight")).map(|(_, t)| t.kind()).unwrap_or(Kind::Float);
    let mut tensors = v3_tensors;
    tensors.extend(indexer_tensors(&v32, seed, with_mtp, kind)?);
    Ok((v32, tensors))
}
