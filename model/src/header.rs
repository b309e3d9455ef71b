//! Safetensors headers of a Hugging Face model directory: which tensors exist, in which file, with
//! which dtype and shape. Reads a single `model.safetensors` or a sharded checkpoint through
//! `model.safetensors.index.json`. Files are memory-mapped, so only the headers are paged in; the
//! `safetensors` crate checks each header against the file's length, so a truncated shard fails
//! here with its name.

use crate::error::ModelError;
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Name of the single-file checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// Name of the shard index.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// One tensor's header entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorHeader {
    /// Element type as stored (`BF16`, `F8_E4M3`, ...).
    pub dtype: Dtype,
    /// Shape as stored.
    pub shape: Vec<usize>,
    /// The file holding it.
    pub file: PathBuf,
}

/// All tensor headers of a checkpoint.
#[derive(Debug, Clone, Default)]
pub struct CheckpointHeaders {
    /// Files read, in order.
    pub files: Vec<PathBuf>,
    /// Tensors by name.
    pub tensors: BTreeMap<String, TensorHeader>,
}

#[derive(Deserialize)]
struct IndexFile {
    weight_map: BTreeMap<String, String>,
}

/// Reads the headers of one safetensors file.
pub fn read_file(path: &Path) -> Result<Vec<(String, TensorHeader)>, ModelError> {
    let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    // SAFETY: the map is read-only and lives only for this call; a checkpoint changing under us
    // would at worst give a parse error.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
    let (_, metadata) = SafeTensors::read_metadata(&map)
        .map_err(|e| ModelError::checkpoint(path, format!("not a valid safetensors file: {e}")))?;
    let mut entries: Vec<(String, TensorHeader)> = metadata
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            let header = TensorHeader { dtype: info.dtype, shape: info.shape.clone(), file: path.to_path_buf() };
            (name, header)
        })
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(entries)
}

/// Reads every header of the checkpoint in `dir` (sharded through the index when there is one).
pub fn read_dir(dir: &Path) -> Result<CheckpointHeaders, ModelError> {
    let index = dir.join(INDEX_FILE);
    if index.exists() {
        return read_sharded(dir, &index);
    }
    let single = dir.join(SINGLE_FILE);
    if !single.exists() {
        return Err(ModelError::checkpoint(dir, format!("neither {SINGLE_FILE} nor {INDEX_FILE} found")));
    }
    let mut out = CheckpointHeaders { files: vec![single.clone()], ..Default::default() };
    out.tensors.extend(read_file(&single)?);
    Ok(out)
}

fn read_sharded(dir: &Path, index: &Path) -> Result<CheckpointHeaders, ModelError> {
    let text = std::fs::read_to_string(index).map_err(|e| ModelError::io(index, e))?;
    let parsed: IndexFile =
        serde_json::from_str(&text).map_err(|e| ModelError::checkpoint(index, format!("invalid index: {e}")))?;
    let mut shards: Vec<&String> = parsed.weight_map.values().collect();
    shards.sort();
    shards.dedup();
    let mut out = CheckpointHeaders::default();
    let mut found: HashMap<String, PathBuf> = HashMap::new();
    for shard in shards {
        let path = dir.join(shard);
        for (name, header) in read_file(&path)? {
            if let Some(first) = found.insert(name.clone(), path.clone()) {
                let msg = format!("tensor `{name}` is stored twice (also in {})", first.display());
                return Err(ModelError::checkpoint(&path, msg));
            }
            out.tensors.insert(name, header);
        }
        out.files.push(path);
    }
    for (name, shard) in &parsed.weight_map {
        match found.get(name) {
            Some(path) if path.ends_with(shard) => {}
            Some(path) => {
                let msg = format!("index puts `{name}` in {shard} but it is in {}", path.display());
                return Err(ModelError::checkpoint(index, msg));
            }
            None => {
                return Err(ModelError::checkpoint(
                    index,
                    format!("`{name}` is listed for {shard} but that file lacks it"),
                ))
            }
        }
    }
    Ok(out)
}

impl CheckpointHeaders {
    /// Tensors and elements per stored dtype, e.g. `{"BF16": (1200, 6.1e9), ...}`.
    pub fn dtype_summary(&self) -> BTreeMap<String, (usize, u64)> {
        let mut out = BTreeMap::new();
        for header in self.tensors.values() {
            let entry = out.entry(format!("{:?}", header.dtype)).or_insert((0, 0));
            entry.0 += 1;
            entry.1 += header.shape.iter().map(|&d| d as u64).product::<u64>();
        }
        out
    }
}
