//! Saving in the Hugging Face layout: `config.json` plus `model.safetensors`, or shards
//! `model-0000i-of-0000N.safetensors` with `model.safetensors.index.json`
//! (`{"metadata": {"total_size"}, "weight_map"}`) when the tensors exceed the shard size.
//!
//! Atomic: everything is written into a hidden temporary directory beside the target and renamed
//! into place, so an interrupted save never leaves a half-written model directory. With
//! `overwrite`, an existing target is first renamed aside and deleted after the new one is in
//! place; a crash between those two renames leaves both copies, complete, beside the target.

use super::write::{self, Entry};
use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::header::{INDEX_FILE, SINGLE_FILE};
use crate::spec::{main_tensors, mtp_tensors};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// How to save.
#[derive(Debug, Clone, PartialEq)]
pub struct SaveOptions {
    /// Stored dtype; `None` keeps each tensor's own. `e_score_correction_bias` is always stored
    /// as f32, as transformers keeps it (docs/model.md §5.1).
    pub dtype: Option<Kind>,
    /// Largest shard in bytes; a single tensor larger than this gets a shard of its own.
    pub max_shard_bytes: u64,
    /// Replace an existing non-empty target directory (otherwise that is an error).
    pub overwrite: bool,
}

impl Default for SaveOptions {
    fn default() -> Self {
        SaveOptions { dtype: None, max_shard_bytes: 5_000_000_000, overwrite: false }
    }
}

/// What a save wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct SaveReport {
    /// The safetensors files, in the final directory.
    pub files: Vec<PathBuf>,
    /// Bytes of tensor data (the index's `total_size`).
    pub total_size: u64,
}

/// Saves a VarStore whose variable names are the checkpoint's (see [`save`]).
pub fn save_varstore(
    dir: &Path,
    vs: &tch::nn::VarStore,
    cfg: &ModelConfig,
    opts: &SaveOptions,
) -> Result<SaveReport, ModelError> {
    let vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    save(dir, &vars, cfg, opts)
}

/// Saves `tensors` (HF names) and `cfg` as a model directory at `dir`.
pub fn save(
    dir: &Path,
    tensors: &[(String, Tensor)],
    cfg: &ModelConfig,
    opts: &SaveOptions,
) -> Result<SaveReport, ModelError> {
    let name = dir
        .file_name()
        .ok_or_else(|| ModelError::checkpoint(dir, "a model directory needs a name"))?
        .to_string_lossy()
        .into_owned();
    if !opts.overwrite && !is_absent_or_empty(dir) {
        return Err(ModelError::checkpoint(dir, "exists and is not empty; refusing to overwrite"));
    }
    let entries = entries(dir, tensors, cfg, opts)?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| ModelError::io(&parent, e))?;
    let tmp = parent.join(format!(".{name}.rlvr-tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
    }
    std::fs::create_dir(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
    let written = write_all(&tmp, &entries, cfg, opts);
    let report = match written.and_then(|r| commit(&tmp, dir, &parent, &name).map(|_| r)) {
        Ok(report) => report,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp); // best effort; the error is the one to report
            return Err(e);
        }
    };
    Ok(SaveReport { files: report.files.iter().map(|f| dir.join(f)).collect(), total_size: report.total_size })
}

fn is_absent_or_empty(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(_) => !dir.exists(),
    }
}

/// The tensors in checkpoint order (the spec's, then any others by name) with their stored kinds.
fn entries<'a>(
    dir: &Path,
    tensors: &'a [(String, Tensor)],
    cfg: &ModelConfig,
    opts: &SaveOptions,
) -> Result<Vec<Entry<'a>>, ModelError> {
    let rank: HashMap<String, usize> =
        main_tensors(cfg).into_iter().chain(mtp_tensors(cfg)).enumerate().map(|(i, t)| (t.name, i)).collect();
    let mut out = Vec::with_capacity(tensors.len());
    let mut bad = Vec::new();
    for (name, tensor) in tensors {
        let own = match tensor.f_kind() {
            Ok(kind) => kind,
            Err(e) => {
                bad.push(format!("`{name}`: {e}"));
                continue;
            }
        };
        let kind = if name.ends_with("e_score_correction_bias") { Kind::Float } else { opts.dtype.unwrap_or(own) };
        if write::dtype_of(kind).is_none() || write::dtype_of(own).is_none() {
            bad.push(format!("`{name}` is {own:?}; only float tensors can be saved as {kind:?}"));
        }
        out.push(Entry { name, tensor, kind });
    }
    if !bad.is_empty() {
        return Err(ModelError::checkpoint(dir, format!("cannot save: {}", bad.join("; "))));
    }
    out.sort_by(|a, b| {
        let key = |e: &Entry| rank.get(e.name).copied().unwrap_or(usize::MAX);
        key(a).cmp(&key(b)).then_with(|| a.name.cmp(b.name))
    });
    Ok(out)
}

/// Greedy shards in order: a new shard starts when the next tensor would pass the limit.
fn shards(entries: &[Entry], max_bytes: u64) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0u64);
    for (i, e) in entries.iter().enumerate() {
        let bytes = e.bytes() as u64;
        if i > start && size + bytes > max_bytes {
            out.push(start..i);
            (start, size) = (i, 0);
        }
        size += bytes;
    }
    out.push(start..entries.len());
    out
}

/// Writes the weights, index and config into `tmp`; returns the file names and data size.
fn write_all(tmp: &Path, entries: &[Entry], cfg: &ModelConfig, opts: &SaveOptions) -> Result<SaveReport, ModelError> {
    let ranges = shards(entries, opts.max_shard_bytes);
    let n = ranges.len();
    let mut files = Vec::with_capacity(n);
    let mut weight_map = BTreeMap::new();
    for (i, range) in ranges.into_iter().enumerate() {
        let file = if n == 1 { SINGLE_FILE.to_string() } else { format!("model-{:05}-of-{n:05}.safetensors", i + 1) };
        write::write_file(&tmp.join(&file), &entries[range.clone()])?;
        weight_map.extend(entries[range].iter().map(|e| (e.name.to_string(), file.clone())));
        files.push(PathBuf::from(file));
    }
    let total_size: u64 = entries.iter().map(|e| e.bytes() as u64).sum();
    if n > 1 {
        let index = serde_json::json!({"metadata": {"total_size": total_size}, "weight_map": weight_map});
        write_json(&tmp.join(INDEX_FILE), &index)?;
    }
    write_json(&tmp.join("config.json"), &saved_config(cfg, entries)?)?;
    Ok(SaveReport { files, total_size })
}

/// The config as saved: no `quantization_config` (weights are no longer FP8), and `dtype` (or the
/// hub's `torch_dtype`, when the config uses that key) naming the kind most elements are stored in.
fn saved_config(cfg: &ModelConfig, entries: &[Entry]) -> Result<serde_json::Value, ModelError> {
    let mut cfg = cfg.clone();
    cfg.quantization_config = None;
    let mut elements: BTreeMap<&str, usize> = BTreeMap::new();
    for e in entries {
        *elements.entry(kind_name(e.kind)).or_default() += e.numel();
    }
    if let Some((name, _)) = elements.into_iter().max_by_key(|&(_, n)| n) {
        let key = if cfg.extra.contains_key("torch_dtype") { "torch_dtype" } else { "dtype" };
        cfg.extra.insert(key.into(), name.into());
    }
    serde_json::to_value(&cfg).map_err(|e| ModelError::field("config", &e.to_string()))
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::BFloat16 => "bfloat16",
        Kind::Half => "float16",
        Kind::Double => "float64",
        _ => "float32",
    }
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), ModelError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| ModelError::checkpoint(path, e.to_string()))?;
    text.push('\n');
    let file = std::fs::File::create(path).map_err(|e| ModelError::io(path, e))?;
    std::io::Write::write_all(&mut &file, text.as_bytes()).map_err(|e| ModelError::io(path, e))?;
    file.sync_all().map_err(|e| ModelError::io(path, e))
}

/// Moves the finished temporary directory to `dir` (setting an old one aside first).
fn commit(tmp: &Path, dir: &Path, parent: &Path, name: &str) -> Result<(), ModelError> {
    let mut old = None;
    if dir.exists() {
        if is_absent_or_empty(dir) {
            std::fs::remove_dir(dir).map_err(|e| ModelError::io(dir, e))?;
        } else {
            let aside = parent.join(format!(".{name}.rlvr-old-{}", std::process::id()));
            std::fs::rename(dir, &aside).map_err(|e| ModelError::io(dir, e))?;
            old = Some(aside);
        }
    }
    std::fs::rename(tmp, dir).map_err(|e| ModelError::io(dir, e))?;
    if let Ok(d) = std::fs::File::open(parent) {
        let _ = d.sync_all(); // directory fsync: not supported everywhere, and the data is already safe
    }
    if let Some(aside) = old {
        std::fs::remove_dir_all(&aside).map_err(|e| ModelError::io(&aside, e))?;
    }
    Ok(())
}
