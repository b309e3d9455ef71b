//! Writing one safetensors file, one tensor at a time.
//!
//! The format (huggingface/safetensors): an 8-byte little-endian header length, a JSON header
//! `{"__metadata__": {...}, name: {"dtype", "shape", "data_offsets": [begin, end]}}` padded with
//! spaces to a multiple of 8, then the tensors' bytes back to back. Tensors are written widest
//! dtype first, as the `safetensors` crate does, so each one starts aligned to its element size.
//! Written here rather than through `safetensors::serialize_to_file` so that a tensor's bytes are
//! produced only when written (memory stays at one tensor) and every failure is an error.

use crate::error::ModelError;
use safetensors::Dtype;
use std::io::Write;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// One tensor to write, with the dtype it is stored in.
pub(crate) struct Entry<'a> {
    pub name: &'a str,
    pub tensor: &'a Tensor,
    pub kind: Kind,
}

impl Entry<'_> {
    pub fn numel(&self) -> usize {
        self.tensor.size().iter().map(|&d| d.max(0) as usize).product()
    }

    /// Bytes once stored.
    pub fn bytes(&self) -> usize {
        self.numel() * self.kind.elt_size_in_bytes()
    }
}

/// The safetensors dtype of a float kind.
pub(crate) fn dtype_of(kind: Kind) -> Option<Dtype> {
    match kind {
        Kind::Float => Some(Dtype::F32),
        Kind::BFloat16 => Some(Dtype::BF16),
        Kind::Half => Some(Dtype::F16),
        Kind::Double => Some(Dtype::F64),
        _ => None,
    }
}

/// The JSON header, already padded, and the write order.
fn header(entries: &[Entry]) -> Result<(Vec<u8>, Vec<usize>), String> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(entries[i].kind.elt_size_in_bytes()));
    let mut map = serde_json::Map::new();
    map.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut offset = 0usize;
    for &i in &order {
        let e = &entries[i];
        let dtype = dtype_of(e.kind).ok_or_else(|| format!("`{}`: kind {:?} cannot be stored", e.name, e.kind))?;
        let end = offset + e.bytes();
        let info =
            serde_json::json!({"dtype": dtype.to_string(), "shape": e.tensor.size(), "data_offsets": [offset, end]});
        map.insert(e.name.to_string(), info);
        offset = end;
    }
    let mut bytes = serde_json::to_vec(&map).map_err(|e| e.to_string())?;
    bytes.resize(bytes.len().next_multiple_of(8), b' ');
    Ok((bytes, order))
}

/// The stored bytes of one tensor: converted, on the CPU, contiguous, without autograd.
fn tensor_bytes(e: &Entry) -> Result<Vec<u8>, tch::TchError> {
    tch::no_grad(|| {
        let t = e.tensor.f_to_kind(e.kind)?.f_to(Device::Cpu)?.f_contiguous()?;
        let mut buf = vec![0u8; e.bytes()];
        t.f_copy_data_u8(&mut buf, e.numel())?;
        Ok(buf)
    })
}

/// Writes `entries` to `path` and flushes it to disk.
pub(crate) fn write_file(path: &Path, entries: &[Entry]) -> Result<(), ModelError> {
    let (head, order) = header(entries).map_err(|m| ModelError::checkpoint(path, m))?;
    let io = |e: std::io::Error| ModelError::io(path, e);
    let file = std::fs::File::create(path).map_err(io)?;
    let mut out = std::io::BufWriter::new(file);
    out.write_all(&(head.len() as u64).to_le_bytes()).map_err(io)?;
    out.write_all(&head).map_err(io)?;
    for &i in &order {
        let e = &entries[i];
        let bytes = tensor_bytes(e).map_err(|err| ModelError::checkpoint(path, format!("`{}`: {err}", e.name)))?;
        out.write_all(&bytes).map_err(io)?;
    }
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)
}
