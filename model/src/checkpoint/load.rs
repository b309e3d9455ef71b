//! Loading a Hugging Face checkpoint name-for-name into a model's variables.
//!
//! Files are memory-mapped and parsed by the `safetensors` crate; each tensor's bytes go straight
//! from the map into a libtorch tensor of the stored dtype (FP8 is decoded first, see `fp8.rs`) and
//! are then copied into the variable, which converts to its dtype and device, under `no_grad`.
//! Everything is checked against the headers before the first copy (`plan.rs`).

use super::fp8;
use super::plan::{self, Item, Plan};
use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::header::{self, TensorHeader};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// What a load did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Tensors copied.
    pub loaded: usize,
    /// Of those, tensors decoded from FP8 with their block scales.
    pub dequantized_fp8: usize,
    /// MTP tensors in the checkpoint that the model has no place for.
    pub skipped_mtp: Vec<String>,
    /// Expected tensors the checkpoint lacks, one line each naming the tensor (only when not
    /// strict; strict loading fails instead).
    pub missing: Vec<String>,
    /// Stored tensors the model does not expect, one line each naming the tensor and its file (only
    /// when not strict).
    pub unexpected: Vec<String>,
    /// The safetensors files read.
    pub files: Vec<PathBuf>,
}

/// Loads the checkpoint in `dir` into `vars` (name → tensor; VarStore variables share storage with
/// the store, so copying into them fills the model). `cfg` is the checkpoint's config: it gives the
/// FP8 block size and which extra layers are MTP.
///
/// Strict: any missing or unexpected tensor is an error. Always errors: shape mismatches, dtypes
/// that are not floats, FP8 without a valid scale, unreadable files. All problems are listed in one
/// [`ModelError::Mismatch`], and nothing is copied unless the whole checkpoint fits.
pub fn load(
    dir: &Path,
    cfg: &ModelConfig,
    vars: &HashMap<String, Tensor>,
    strict: bool,
) -> Result<LoadReport, ModelError> {
    check_index_shards(dir)?;
    let headers = header::read_dir(dir)?;
    let expected: BTreeMap<String, Vec<usize>> =
        vars.iter().map(|(name, t)| (name.clone(), t.size().iter().map(|&d| d.max(0) as usize).collect())).collect();
    let Plan { items, missing, unexpected, skipped_mtp, mut broken } = plan::plan(cfg, &headers, &expected);
    if strict {
        broken.splice(0..0, missing.iter().chain(&unexpected).cloned());
    }
    if !broken.is_empty() {
        return Err(ModelError::Mismatch { dir: dir.to_path_buf(), problems: broken });
    }
    let maps = Files::open(&headers.files)?;
    let files = maps.parse()?;
    let block = plan::block_size(cfg);
    let mut dequantized_fp8 = 0;
    for item in &items {
        let src = files.decode(item, block)?;
        let mut var = vars[&item.name].shallow_clone();
        tch::no_grad(|| var.f_copy_(&src))
            .map_err(|e| ModelError::checkpoint(&item.source.file, format!("copying `{}`: {e}", item.name)))?;
        dequantized_fp8 += usize::from(item.scale.is_some());
    }
    Ok(LoadReport { loaded: items.len(), dequantized_fp8, skipped_mtp, missing, unexpected, files: headers.files })
}

/// Loads into a VarStore whose variable names are the checkpoint's (see [`load`]).
pub fn load_varstore(
    dir: &Path,
    cfg: &ModelConfig,
    vs: &tch::nn::VarStore,
    strict: bool,
) -> Result<LoadReport, ModelError> {
    load(dir, cfg, &vs.variables(), strict)
}

/// Reads every tensor of the checkpoint in `dir` (FP8 decoded, scale partners folded in) as `kind`
/// on `device`, without a model to compare against.
pub fn read_all(
    dir: &Path,
    cfg: &ModelConfig,
    kind: Kind,
    device: Device,
) -> Result<BTreeMap<String, Tensor>, ModelError> {
    check_index_shards(dir)?;
    let headers = header::read_dir(dir)?;
    let stored: BTreeMap<String, Vec<usize>> = headers
        .tensors
        .iter()
        .filter(|(name, _)| !plan::is_scale_partner(name, &headers))
        .map(|(name, h)| (name.clone(), h.shape.clone()))
        .collect();
    let plan = plan::plan(cfg, &headers, &stored);
    if !plan.broken.is_empty() {
        return Err(ModelError::Mismatch { dir: dir.to_path_buf(), problems: plan.broken });
    }
    let maps = Files::open(&headers.files)?;
    let files = maps.parse()?;
    let block = plan::block_size(cfg);
    let mut out = BTreeMap::new();
    for item in &plan.items {
        let t = files
            .decode(item, block)?
            .f_to_kind(kind)
            .and_then(|t| t.f_to(device))
            .map_err(|e| ModelError::checkpoint(&item.source.file, format!("converting `{}`: {e}", item.name)))?;
        out.insert(item.name.clone(), t);
    }
    Ok(out)
}

/// With an index, every shard it names must exist; the error lists each absent shard with the
/// tensors it should hold.
fn check_index_shards(dir: &Path) -> Result<(), ModelError> {
    let index = dir.join(header::INDEX_FILE);
    let Ok(text) = std::fs::read_to_string(&index) else {
        return Ok(()); // no index (or unreadable: header::read_dir reports it)
    };
    let Ok(parsed) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Ok(());
    };
    let mut absent: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, shard) in parsed["weight_map"].as_object().into_iter().flatten() {
        if let Some(shard) = shard.as_str().filter(|s| !dir.join(s).is_file()) {
            absent.entry(shard).or_default().push(name);
        }
    }
    if absent.is_empty() {
        return Ok(());
    }
    let problems = absent
        .iter()
        .map(|(shard, names)| {
            let shown: Vec<String> = names.iter().take(5).map(|n| format!("`{n}`")).collect();
            let more = if names.len() > 5 { format!(" and {} more", names.len() - 5) } else { String::new() };
            format!("{} names {shard} for {}{more}, but that file does not exist", index.display(), shown.join(", "))
        })
        .collect();
    Err(ModelError::Mismatch { dir: dir.to_path_buf(), problems })
}

/// The checkpoint's files, memory-mapped.
struct Files {
    maps: Vec<(PathBuf, Mmap)>,
}

impl Files {
    fn open(paths: &[PathBuf]) -> Result<Self, ModelError> {
        let mut maps = Vec::with_capacity(paths.len());
        for path in paths {
            let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
            // SAFETY: read-only map; a file changed under us gives a parse error or wrong values,
            // never memory unsafety in this process's own allocations.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
            maps.push((path.clone(), map));
        }
        Ok(Files { maps })
    }

    /// Parses each file's header once.
    fn parse(&self) -> Result<Parsed<'_>, ModelError> {
        let mut files = HashMap::new();
        for (path, map) in &self.maps {
            let st = SafeTensors::deserialize(map)
                .map_err(|e| ModelError::checkpoint(path, format!("not a valid safetensors file: {e}")))?;
            files.insert(path.as_path(), st);
        }
        Ok(Parsed { files })
    }
}

/// The parsed files, borrowing the maps.
struct Parsed<'a> {
    files: HashMap<&'a Path, SafeTensors<'a>>,
}

impl Parsed<'_> {
    /// The stored bytes of one tensor.
    fn bytes(&self, name: &str, h: &TensorHeader) -> Result<(&[u8], Dtype), ModelError> {
        let st =
            self.files.get(h.file.as_path()).ok_or_else(|| ModelError::checkpoint(&h.file, "file was not opened"))?;
        let view = st.tensor(name).map_err(|e| ModelError::checkpoint(&h.file, format!("reading `{name}`: {e}")))?;
        Ok((view.data(), view.dtype()))
    }

    /// One tensor on the CPU: a plain float in its stored dtype, or FP8 decoded to f32.
    fn decode(&self, item: &Item, block: (usize, usize)) -> Result<Tensor, ModelError> {
        let (bytes, dtype) = self.bytes(&item.name, &item.source)?;
        let file = &item.source.file;
        let shape = &item.source.shape;
        let Some(scale) = &item.scale else {
            return plain(bytes, dtype, shape)
                .map_err(|e| ModelError::checkpoint(file, format!("`{}`: {e}", item.name)));
        };
        let scale_name = format!("{}{}", item.name, plan::SCALE_SUFFIX);
        let (scale_bytes, scale_dtype) = self.bytes(&scale_name, scale)?;
        let scales: Vec<f32> = plain(scale_bytes, scale_dtype, &scale.shape)
            .and_then(|t| t.f_to_kind(Kind::Float)?.f_flatten(0, -1))
            .and_then(|t| Vec::<f32>::try_from(&t))
            .map_err(|e| ModelError::checkpoint(&scale.file, format!("`{scale_name}`: {e}")))?;
        let (rows, cols) = (shape[0], shape[1]);
        let values = fp8::dequantize(bytes, rows, cols, &scales, block)
            .map_err(|e| ModelError::checkpoint(file, format!("`{}`: {e}", item.name)))?;
        Tensor::from_slice(&values)
            .f_view([rows as i64, cols as i64])
            .map_err(|e| ModelError::checkpoint(file, format!("`{}`: {e}", item.name)))
    }
}

/// A CPU tensor holding a copy of `bytes` (little-endian, as safetensors stores them).
fn plain(bytes: &[u8], dtype: Dtype, shape: &[usize]) -> Result<Tensor, tch::TchError> {
    let kind = match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F64 => Kind::Double,
        other => return Err(tch::TchError::Kind(format!("dtype {other} is not a plain float"))),
    };
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    Tensor::f_from_data_size(bytes, &dims, kind)
}
