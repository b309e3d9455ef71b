//! New policy weights for the engine: the checksum that guards them, the check that they fit the
//! model, and the copy into the model's variables.
//!
//! **Checksum** ([`checksum_of`]): a 64-bit hash over the named tensors sorted by name. For each
//! tensor it absorbs the name's UTF-8 bytes, the dtype's name (`Float`, `BFloat16`, …), the shape
//! and the raw bytes of the contiguous CPU copy, each as a byte string: 8-byte little-endian words
//! (the last zero-padded), then the string's length, every word folded in by `h = mix(h ^ w)` with
//! SplitMix64's finaliser as `mix`. The same tensors in any order, on any device, hash the same;
//! a changed value, dtype, shape or name changes it. It is a transport check, not a cryptographic
//! one.

use super::error::EngineError;
use std::collections::{BTreeMap, HashMap};
use tch::{Device, Tensor};

/// SplitMix64's finaliser.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Folds one byte string into `h`.
fn absorb(mut h: u64, bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        h = mix(h ^ u64::from_le_bytes(w.try_into().expect("8 bytes")));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        h = mix(h ^ u64::from_le_bytes(last));
    }
    mix(h ^ bytes.len() as u64)
}

/// The raw bytes of `t` (contiguous, on the CPU, in its own dtype).
fn bytes_of(t: &Tensor) -> Vec<u8> {
    let t = t.detach().to_device(Device::Cpu).contiguous();
    let numel = t.numel();
    let mut out = vec![0u8; numel * t.kind().elt_size_in_bytes()];
    t.copy_data_u8(&mut out, numel);
    out
}

/// The checksum of a set of named tensors (see the module notes for its definition).
pub fn checksum_of(tensors: &[(String, Tensor)]) -> u64 {
    let mut sorted: Vec<&(String, Tensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = 0x5EED_C0DE_0000_0001;
    for (name, t) in sorted {
        h = absorb(h, name.as_bytes());
        h = absorb(h, format!("{:?}", t.kind()).as_bytes());
        let shape: Vec<u8> = t.size().iter().flat_map(|d| (*d as u64).to_le_bytes()).collect();
        h = absorb(h, &shape);
        h = absorb(h, &bytes_of(t));
    }
    h
}

/// A checked copy of new weights, waiting to be written into the model.
pub(crate) struct WeightUpdate {
    /// Each variable's new value, already in the variable's dtype and on its device.
    values: Vec<(String, Tensor)>,
}

impl WeightUpdate {
    /// Checks `tensors` against the checksum and the model's variables `vars` (same names, same
    /// shapes), and snapshots them (so the caller may change its tensors afterwards).
    pub(crate) fn new(
        tensors: &[(String, Tensor)],
        expected: u64,
        vars: &HashMap<String, Tensor>,
    ) -> Result<Self, EngineError> {
        let actual = checksum_of(tensors);
        if actual != expected {
            return Err(EngineError::ChecksumMismatch { expected, actual });
        }
        let given: BTreeMap<&str, &Tensor> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let mut problems = Vec::new();
        if given.len() != tensors.len() {
            problems.push("a tensor name appears more than once".to_string());
        }
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        for name in names {
            match given.get(name.as_str()) {
                None => problems.push(format!("missing `{name}`")),
                Some(t) if t.size() != vars[name].size() => {
                    problems.push(format!("`{name}` has shape {:?}, the model's is {:?}", t.size(), vars[name].size()))
                }
                Some(_) => {}
            }
        }
        problems.extend(given.keys().filter(|n| !vars.contains_key(**n)).map(|n| format!("unexpected `{n}`")));
        if !problems.is_empty() {
            return Err(EngineError::WeightMismatch { problems });
        }
        let values = tch::no_grad(|| {
            tensors
                .iter()
                .map(|(name, t)| {
                    let dst = &vars[name];
                    let mut copy = Tensor::empty_like(dst);
                    copy.copy_(t);
                    (name.clone(), copy)
                })
                .collect()
        });
        Ok(WeightUpdate { values })
    }

    /// Writes the new values into the model's variables (which share storage with the model).
    pub(crate) fn apply(self, vars: &HashMap<String, Tensor>) {
        tch::no_grad(|| {
            for (name, value) in &self.values {
                vars[name].shallow_clone().copy_(value);
            }
        });
    }
}
