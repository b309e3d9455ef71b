//! New weights as a memory-mapped safetensors file, so a large model is never held twice.
//!
//! [`MappedWeights::open`] maps the file read-only, reads its header (names, dtypes, shapes, byte
//! ranges) and checks [`super::checksum_of`]'s hash over the mapped bytes — the same definition
//! as for tensors, so a sender may hash its tensors and send them as a file. Nothing is copied: the
//! pages are the file's (page cache, not the process's anonymous memory), read as the hash and
//! later the engine's update walk over them. The engine's next step copies the tensors into the
//! model's variables one at a time (`weights.rs`), so at most one tensor's transient copy exists
//! beside the model. Dropping the value unmaps the file; a spilled upload that was never given a
//! name (`tempfile::tempfile_in`) then leaves the disk.
//!
//! Floats only (F32, BF16, F16, F64), as the engine's models are; other dtypes are refused naming
//! the tensor.

use super::error::EngineError;
use super::weights::Hasher;
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::fs::File;
use std::ops::Range;
use tch::Kind;

/// A safetensors file's tensors, mapped, whose checksum has been checked.
pub struct MappedWeights {
    map: Mmap,
    /// The tensors, sorted by name.
    entries: Vec<Entry>,
}

/// Where one tensor lies in the map.
struct Entry {
    name: String,
    kind: Kind,
    shape: Vec<i64>,
    bytes: Range<usize>,
}

/// One mapped tensor: (name, dtype, shape, raw little-endian bytes).
pub(crate) type MappedTensor<'a> = (&'a str, Kind, &'a [i64], &'a [u8]);

impl MappedWeights {
    /// Maps `file`, reads its safetensors header, and checks that the checksum of its tensors is
    /// `expected`. [`EngineError::WeightsFile`] names what is wrong with the file;
    /// [`EngineError::ChecksumMismatch`] is a mismatch. The file must not be truncated while the
    /// value lives (a mapped page that no longer exists is a fault); the service maps only its own
    /// unnamed spill files and files in the weights directory.
    pub fn open(file: &File, expected: u64) -> Result<Self, EngineError> {
        let invalid = |problem: String| EngineError::WeightsFile { problem };
        // SAFETY: a read-only map of a file nobody truncates while it lives (see above);
        // a file whose bytes change under it gives a checksum mismatch or wrong values, never
        // unsafety in this process's own allocations.
        let map = unsafe { Mmap::map(file) }.map_err(|e| invalid(format!("it cannot be mapped: {e}")))?;
        let (header, metadata) =
            SafeTensors::read_metadata(&map).map_err(|e| invalid(format!("not safetensors: {e}")))?;
        let base = 8 + header;
        let mut entries = Vec::new();
        for (name, info) in metadata.tensors() {
            let kind = kind_of(info.dtype)
                .ok_or_else(|| invalid(format!("`{name}` has dtype {:?}; send floats", info.dtype)))?;
            let shape = info.shape.iter().map(|&d| d as i64).collect();
            let (start, end) = info.data_offsets;
            entries.push(Entry { name, kind, shape, bytes: base + start..base + end });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let weights = MappedWeights { map, entries };
        let actual = weights.checksum();
        if actual != expected {
            return Err(EngineError::ChecksumMismatch { expected, actual });
        }
        Ok(weights)
    }

    /// The tensors, sorted by name.
    pub(crate) fn tensors(&self) -> impl Iterator<Item = MappedTensor<'_>> {
        self.entries.iter().map(|e| (e.name.as_str(), e.kind, e.shape.as_slice(), &self.map[e.bytes.clone()]))
    }

    /// [`super::checksum_of`] over the mapped tensors.
    fn checksum(&self) -> u64 {
        let mut hasher = Hasher::new();
        for (name, kind, shape, bytes) in self.tensors() {
            hasher.tensor(name, kind, shape, bytes);
        }
        hasher.finish()
    }
}

/// The tch dtype of a safetensors float dtype.
fn kind_of(dtype: Dtype) -> Option<Kind> {
    match dtype {
        Dtype::F32 => Some(Kind::Float),
        Dtype::BF16 => Some(Kind::BFloat16),
        Dtype::F16 => Some(Kind::Half),
        Dtype::F64 => Some(Kind::Double),
        _ => None,
    }
}
