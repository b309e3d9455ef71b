//! Matching a checkpoint's headers against the tensors a model expects, before any data is read:
//! every missing, unexpected, mis-shaped or undecodable tensor is found in one pass, so one error
//! can list them all (and nothing is copied when the checkpoint does not fit).

use crate::config::ModelConfig;
use crate::header::{CheckpointHeaders, TensorHeader};
use crate::spec::mtp_tensors;
use safetensors::Dtype;
use std::collections::{BTreeMap, BTreeSet};

/// Suffix of an FP8 weight's block-scale partner.
pub const SCALE_SUFFIX: &str = "_scale_inv";

/// One tensor to read: where it is, and its scale partner when it is FP8.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub name: String,
    pub source: TensorHeader,
    pub scale: Option<TensorHeader>,
}

/// What loading will do, and what is wrong.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub items: Vec<Item>,
    /// Expected tensors the checkpoint lacks.
    pub missing: Vec<String>,
    /// Stored tensors nothing expects (described with their file).
    pub unexpected: Vec<String>,
    /// MTP tensors stored for a model without MTP.
    pub skipped_mtp: Vec<String>,
    /// Shape and dtype problems: errors even when not strict.
    pub broken: Vec<String>,
}

fn shape_str(shape: &[usize]) -> String {
    format!("{shape:?}")
}

/// Whether `dtype` is a float format the loader converts directly.
pub(crate) fn is_plain_float(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64)
}

/// The layer index of a `model.layers.{i}.…` name.
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("model.layers.")?.split('.').next()?.parse().ok()
}

/// The FP8 block size the config declares (`quantization_config.weight_block_size`), else 128×128.
pub(crate) fn block_size(cfg: &ModelConfig) -> (usize, usize) {
    let declared = cfg.quantization_config.as_ref().and_then(|q| q.weight_block_size.as_deref());
    match declared {
        Some(&[r, c]) if r > 0 && c > 0 => (r, c),
        _ => super::fp8::BLOCK,
    }
}

/// Names of MTP tensors the checkpoint may hold beyond the model's layers: the spec's MTP list for
/// as many MTP layers as the checkpoint has layer indices past `num_hidden_layers`.
fn mtp_names(cfg: &ModelConfig, headers: &CheckpointHeaders) -> BTreeSet<String> {
    let last = headers.tensors.keys().filter_map(|n| layer_of(n)).max();
    let extra_layers = last.map_or(0, |l| (l + 1).saturating_sub(cfg.num_hidden_layers));
    let mut mtp_cfg = cfg.clone();
    mtp_cfg.num_nextn_predict_layers = extra_layers.max(cfg.num_nextn_predict_layers);
    mtp_tensors(&mtp_cfg).into_iter().map(|t| t.name).collect()
}

/// Checks one expected tensor against its header; returns the item, or pushes what is wrong.
fn check_expected(
    name: &str,
    shape: &[usize],
    headers: &CheckpointHeaders,
    block: (usize, usize),
    broken: &mut Vec<String>,
) -> Option<Item> {
    let h = headers.tensors.get(name)?;
    let file = h.file.display();
    let mut ok = true;
    if h.shape != shape {
        broken.push(format!(
            "mis-shaped `{name}` in {file}: stored {}, model expects {}",
            shape_str(&h.shape),
            shape_str(shape)
        ));
        ok = false;
    }
    let mut scale = None;
    if h.dtype == Dtype::F8_E4M3 {
        scale = check_scale(name, h, headers, block, broken);
        ok &= scale.is_some();
    } else if !is_plain_float(h.dtype) {
        broken.push(format!(
            "`{name}` in {file} has dtype {}, not a float the loader reads (F32, F16, BF16, F64, F8_E4M3)",
            h.dtype
        ));
        ok = false;
    }
    ok.then(|| Item { name: name.to_string(), source: h.clone(), scale })
}

/// Checks an FP8 weight's `_scale_inv` partner: present, a float, with the block grid's shape.
fn check_scale(
    name: &str,
    h: &TensorHeader,
    headers: &CheckpointHeaders,
    block: (usize, usize),
    broken: &mut Vec<String>,
) -> Option<TensorHeader> {
    let file = h.file.display();
    let &[rows, cols] = h.shape.as_slice() else {
        broken.push(format!(
            "FP8 `{name}` in {file} has shape {}; only 2-D weights are block-quantised",
            shape_str(&h.shape)
        ));
        return None;
    };
    let scale_name = format!("{name}{SCALE_SUFFIX}");
    let Some(s) = headers.tensors.get(&scale_name) else {
        broken.push(format!("FP8 `{name}` in {file} has no `{scale_name}`"));
        return None;
    };
    let grid = super::fp8::scale_shape(rows, cols, block).to_vec();
    if s.shape != grid || !is_plain_float(s.dtype) {
        broken.push(format!(
            "`{scale_name}` in {} is {} {}, expected a float of shape {} ({}×{} blocks)",
            s.file.display(),
            s.dtype,
            shape_str(&s.shape),
            shape_str(&grid),
            block.0,
            block.1
        ));
        return None;
    }
    Some(s.clone())
}

/// Whether a stored name is the scale partner of a stored FP8 tensor.
pub(crate) fn is_scale_partner(name: &str, headers: &CheckpointHeaders) -> bool {
    name.strip_suffix(SCALE_SUFFIX)
        .and_then(|base| headers.tensors.get(base))
        .is_some_and(|h| h.dtype == Dtype::F8_E4M3)
}

/// Compares the stored tensors with the expected `name → shape` map.
pub(crate) fn plan(cfg: &ModelConfig, headers: &CheckpointHeaders, expected: &BTreeMap<String, Vec<usize>>) -> Plan {
    let block = block_size(cfg);
    let mut out = Plan::default();
    for (name, shape) in expected {
        if !headers.tensors.contains_key(name) {
            out.missing.push(format!("missing `{name}` (model expects {}): in no file", shape_str(shape)));
            continue;
        }
        if let Some(item) = check_expected(name, shape, headers, block, &mut out.broken) {
            out.items.push(item);
        }
    }
    let mtp = mtp_names(cfg, headers);
    for (name, h) in &headers.tensors {
        if expected.contains_key(name) || is_scale_partner(name, headers) {
            continue;
        }
        if mtp.contains(name) && layer_of(name).is_some_and(|l| l >= cfg.num_hidden_layers) {
            out.skipped_mtp.push(name.clone());
        } else {
            out.unexpected.push(format!(
                "unexpected `{name}` in {} ({} {})",
                h.file.display(),
                h.dtype,
                shape_str(&h.shape)
            ));
        }
    }
    out
}
