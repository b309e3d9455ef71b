//! Helpers for the checkpoint tests: a VarStore built straight from the spec (no model code),
//! raw safetensors reading and writing that does not go through the loader, and fixture copies.
#![allow(dead_code)]

use rlvr_model::spec::{main_tensors, mtp_tensors};
use rlvr_model::ModelConfig;
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::Path;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// A VarStore holding zeros of every spec tensor (MTP too when `with_mtp`), registered under the
/// checkpoint names; `e_score_correction_bias` is a non-trainable buffer, as in the model.
pub fn spec_vars(cfg: &ModelConfig, kind: Kind, with_mtp: bool) -> VarStore {
    let vs = VarStore::new(Device::Cpu);
    let mut specs = main_tensors(cfg);
    if with_mtp {
        specs.extend(mtp_tensors(cfg));
    }
    for t in specs {
        let segments: Vec<&str> = t.name.split('.').collect();
        let (last, dirs) = segments.split_last().unwrap();
        let path = dirs.iter().fold(vs.root(), |p, s| p.sub(*s));
        let dims: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
        if t.name.ends_with("e_score_correction_bias") {
            let _ = path.zeros_no_train(last, &dims);
        } else {
            let _ = path.zeros(last, &dims);
        }
    }
    let mut vs = vs;
    vs.set_kind(kind);
    vs
}

/// One stored tensor, as raw little-endian bytes.
#[derive(Clone, Debug)]
pub struct Raw {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// Every tensor of one safetensors file, raw.
pub fn read_raw(path: &Path) -> BTreeMap<String, Raw> {
    let data = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&data).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| (n, Raw { dtype: v.dtype(), shape: v.shape().to_vec(), bytes: v.data().to_vec() }))
        .collect()
}

/// Writes raw tensors as one safetensors file with the `safetensors` crate.
pub fn write_raw(path: &Path, tensors: &BTreeMap<String, Raw>) {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, r)| (n.clone(), safetensors::tensor::TensorView::new(r.dtype, r.shape.clone(), &r.bytes).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// The f32 values of a raw F32 or BF16 tensor, decoded by hand (BF16 is the top half of an f32).
pub fn raw_f32(raw: &Raw) -> Vec<f32> {
    match raw.dtype {
        Dtype::F32 => raw.bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::BF16 => raw
            .bytes
            .chunks_exact(2)
            .map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16))
            .collect(),
        other => panic!("raw_f32: {other}"),
    }
}

/// A tensor's values as f32 bit patterns (for bit-exact comparisons, -0.0 and NaN included).
pub fn bits(t: &Tensor) -> Vec<u32> {
    let flat = t.to_kind(Kind::Float).flatten(0, -1);
    Vec::<f32>::try_from(&flat).unwrap().into_iter().map(f32::to_bits).collect()
}

/// A copy of a fixture directory in a fresh temporary directory.
pub fn copy_dir(from: &Path) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    tmp
}

/// A model directory holding `cfg`'s config file and the given raw tensors as `model.safetensors`.
pub fn raw_checkpoint(config_from: &Path, tensors: &BTreeMap<String, Raw>) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(config_from.join("config.json"), tmp.path().join("config.json")).unwrap();
    write_raw(&tmp.path().join("model.safetensors"), tensors);
    tmp
}
