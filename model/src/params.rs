//! Parameter counts from the config alone.
//!
//! "Activated" is what one token uses: everything except the routed experts, plus
//! `num_experts_per_tok` routed experts per MoE layer. Embedding and head are counted (DeepSeek's
//! published 37B counts them too). The MTP module is reported on its own, once without and once
//! with its stored copies of the embedding and head.

use crate::config::ModelConfig;
use crate::spec::{main_tensors, mtp_tensors, Part, TensorSpec};
use serde::Serialize;
use std::collections::BTreeMap;

/// Parameter counts of a configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamCounts {
    /// Main model (embedding, all decoder layers, final norm, head).
    pub total: u64,
    /// Main model parameters used by one token.
    pub active: u64,
    /// MTP modules' own parameters (without their embedding/head copies).
    pub mtp: u64,
    /// MTP modules including the stored embedding and head copies.
    pub mtp_with_shared_copies: u64,
    /// MTP parameters used by one token (own parameters only).
    pub mtp_active: u64,
    /// Main model parameters by part.
    pub by_part: BTreeMap<String, u64>,
}

/// Parameters of one routed expert (they are all the same size).
fn expert_size(cfg: &ModelConfig) -> u64 {
    3 * cfg.hidden_size as u64 * cfg.moe_intermediate_size as u64
}

/// Sum of parameters, and the share a single token activates.
fn sums<'a>(cfg: &ModelConfig, specs: impl Iterator<Item = &'a TensorSpec>) -> (u64, u64) {
    let mut total = 0;
    let mut routed = 0;
    let mut moe_layers = std::collections::BTreeSet::new();
    for t in specs {
        total += t.numel();
        if t.part == Part::RoutedExpert {
            routed += t.numel();
            moe_layers.extend(t.layer);
        }
    }
    let active_routed = moe_layers.len() as u64 * cfg.num_experts_per_tok as u64 * expert_size(cfg);
    (total, total - routed + active_routed)
}

impl ParamCounts {
    /// Counts the parameters `cfg` describes.
    pub fn of(cfg: &ModelConfig) -> Self {
        let main = main_tensors(cfg);
        let mtp = mtp_tensors(cfg);
        let (total, active) = sums(cfg, main.iter());
        let own = || mtp.iter().filter(|t| t.part != Part::MtpSharedCopy);
        let (mtp_own, mtp_active) = sums(cfg, own());
        let copies: u64 = mtp.iter().filter(|t| t.part == Part::MtpSharedCopy).map(TensorSpec::numel).sum();
        let mut by_part = BTreeMap::new();
        for t in &main {
            *by_part.entry(format!("{:?}", t.part)).or_insert(0) += t.numel();
        }
        ParamCounts { total, active, mtp: mtp_own, mtp_with_shared_copies: mtp_own + copies, mtp_active, by_part }
    }
}
