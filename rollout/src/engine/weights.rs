//! New policy weights for the engine: the checksum that guards them, the check that they fit the
//! model, and the copy into the model's variables.
//!
//! **Checksum** ([`checksum_of`]): a 64-bit hash over the named tensors sorted by name. For each
//! tensor it absorbs the name's UTF-8 bytes, the dtype's name (`Float`, `BFloat16`, …), the shape
//! and the raw bytes of the contiguous CPU copy, each as a byte string: 8-byte little-endian words
//! (the last zero-padded), then the string's length, every word folded in by `h = mix(h ^ w)` with
//! SplitMix64's finaliser as `mix`. The same tensors in any order, on any device, hash the same;
//! a changed value, dtype, shape or name changes it. It is a transport check, not a cryptographic
//! one. [`Hasher`] is that definition over raw parts, so a mapped file's bytes hash as the tensors
//! they hold do (`mapped.rs`).
//!
//! **Two sources** of an update: an in-process caller's tensors are snapshotted into the
//! variables' dtype and device when queued (the caller may change its own afterwards); a mapped
//! safetensors file ([`MappedWeights`]) stays the file until the update is applied, then goes in
//! one tensor at a time, so at most one tensor's transient copy exists beside the model.

use super::error::EngineError;
use super::mapped::MappedWeights;
use std::collections::{BTreeMap, HashMap};
use tch::{Device, Kind, Tensor};

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

/// The checksum's state: tensors are absorbed one by one, in name order.
pub(crate) struct Hasher(u64);

impl Hasher {
    /// The state before any tensor.
    pub(crate) fn new() -> Self {
        Hasher(0x5EED_C0DE_0000_0001)
    }

    /// Absorbs one tensor: its name, dtype, shape and raw (contiguous, little-endian) bytes.
    pub(crate) fn tensor(&mut self, name: &str, kind: Kind, shape: &[i64], bytes: &[u8]) {
        let mut h = absorb(self.0, name.as_bytes());
        h = absorb(h, format!("{kind:?}").as_bytes());
        let shape: Vec<u8> = shape.iter().flat_map(|d| (*d as u64).to_le_bytes()).collect();
        h = absorb(h, &shape);
        self.0 = absorb(h, bytes);
    }

    /// The checksum.
    pub(crate) fn finish(&self) -> u64 {
        self.0
    }
}

/// The checksum of a set of named tensors (see the module notes for its definition).
pub fn checksum_of(tensors: &[(String, Tensor)]) -> u64 {
    let mut sorted: Vec<&(String, Tensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut hasher = Hasher::new();
    for (name, t) in sorted {
        hasher.tensor(name, t.kind(), &t.size(), &bytes_of(t));
    }
    hasher.finish()
}

/// What is wrong with new weights `given` as (name, shape) for the model's variables `vars`: one
/// line per problem, none when they fit.
fn misfits(given: &[(&str, &[i64])], vars: &HashMap<String, Tensor>) -> Vec<String> {
    let by_name: BTreeMap<&str, &[i64]> = given.iter().copied().collect();
    let mut problems = Vec::new();
    if by_name.len() != given.len() {
        problems.push("a tensor name appears more than once".to_string());
    }
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let want = vars[name].size();
        match by_name.get(name.as_str()) {
            None => problems.push(format!("missing `{name}`")),
            Some(shape) if *shape != want.as_slice() => {
                problems.push(format!("`{name}` has shape {shape:?}, the model's is {want:?}"))
            }
            Some(_) => {}
        }
    }
    problems.extend(by_name.keys().filter(|n| !vars.contains_key(**n)).map(|n| format!("unexpected `{n}`")));
    problems
}

/// Refuses `tensors` unless they are the model's variables `vars` by name and shape.
pub(crate) fn check_fit(tensors: &[(String, Tensor)], vars: &HashMap<String, Tensor>) -> Result<(), EngineError> {
    let shapes: Vec<Vec<i64>> = tensors.iter().map(|(_, t)| t.size()).collect();
    let given: Vec<(&str, &[i64])> =
        tensors.iter().zip(&shapes).map(|((n, _), s)| (n.as_str(), s.as_slice())).collect();
    let problems = misfits(&given, vars);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(EngineError::WeightMismatch { problems })
    }
}

/// Copies `tensors` (checked by [`check_fit`]) into the model's variables `vars`, each converted
/// to its variable's dtype and device.
pub(crate) fn copy_into(tensors: &[(String, Tensor)], vars: &HashMap<String, Tensor>) {
    tch::no_grad(|| {
        for (name, value) in tensors {
            vars[name].shallow_clone().copy_(value);
        }
    });
}

/// Checked new weights, waiting to be written into the model.
pub(crate) enum WeightUpdate {
    /// Each variable's new value, already in the variable's dtype and on its device.
    Snapshot(Vec<(String, Tensor)>),
    /// A mapped file, read when applied.
    Mapped(MappedWeights),
}

impl WeightUpdate {
    /// Checks `tensors` against the checksum and the model's variables `vars` (same names, same
    /// shapes), and snapshots them (so the caller may change its tensors afterwards).
    pub(crate) fn snapshot(
        tensors: &[(String, Tensor)],
        expected: u64,
        vars: &HashMap<String, Tensor>,
    ) -> Result<Self, EngineError> {
        let actual = checksum_of(tensors);
        if actual != expected {
            return Err(EngineError::ChecksumMismatch { expected, actual });
        }
        Self::unchecked_snapshot(tensors, vars)
    }

    /// [`Self::snapshot`] without the checksum: for tensors handed over in this process.
    pub(crate) fn unchecked_snapshot(
        tensors: &[(String, Tensor)],
        vars: &HashMap<String, Tensor>,
    ) -> Result<Self, EngineError> {
        check_fit(tensors, vars)?;
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
        Ok(WeightUpdate::Snapshot(values))
    }

    /// Checks a mapped file (its checksum was checked when it was opened) against the model's
    /// variables `vars` (same names, same shapes); nothing is read but its header.
    pub(crate) fn mapped(weights: MappedWeights, vars: &HashMap<String, Tensor>) -> Result<Self, EngineError> {
        let given: Vec<(&str, &[i64])> = weights.tensors().map(|(name, _, shape, _)| (name, shape)).collect();
        let problems = misfits(&given, vars);
        if !problems.is_empty() {
            return Err(EngineError::WeightMismatch { problems });
        }
        Ok(WeightUpdate::Mapped(weights))
    }

    /// Writes the new values into the model's variables (which share storage with the model); a
    /// mapped file one tensor at a time (its transient host copy dropped before the next).
    pub(crate) fn apply(self, vars: &HashMap<String, Tensor>) {
        tch::no_grad(|| match self {
            WeightUpdate::Snapshot(values) => copy_into(&values, vars),
            WeightUpdate::Mapped(weights) => {
                for (name, kind, shape, bytes) in weights.tensors() {
                    let value = Tensor::f_from_data_size(bytes, shape, kind)
                        .unwrap_or_else(|e| panic!("`{name}` was checked when mapped: {e}"));
                    vars[name].shallow_clone().copy_(&value);
                }
            }
        });
    }
}
