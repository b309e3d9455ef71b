//! Run checkpoints (docs/architecture.md §6): `run_dir/checkpoints/step_NNNNNN/` holding the model in the
//! Hugging Face layout (`model.safetensors` + `config.json`, plus the tokenizer files), the
//! optimizer state, the frozen KL reference when a GRPO stage uses one, the resolved `recipe.toml`
//! and `state.json`.
//!
//! Atomic: a checkpoint is written into `.step_NNNNNN.tmp-<pid>/`, every file synced, then renamed
//! into place and the directory synced, so a crash (even `kill -9`) mid-save leaves the previous
//! checkpoints untouched and at most a temporary directory, which the next save removes. Only
//! `step_*` directories holding `state.json` count as checkpoints. After each save all but the
//! newest `keep_last` are deleted.

use crate::optim::AdamW;
use crate::state::TrainState;
use anyhow::{bail, Context, Result};
use rlvr_model::checkpoint::{save, SaveOptions};
use rlvr_model::ModelConfig;
use std::fs;
use std::path::{Path, PathBuf};
use tch::Tensor;

/// The optimizer state file of a checkpoint.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// The frozen reference weights of a checkpoint (GRPO with a KL term).
pub const REFERENCE_FILE: &str = "reference.safetensors";
/// The run state of a checkpoint; written last.
pub const STATE_FILE: &str = "state.json";
/// The resolved recipe.
pub const RECIPE_FILE: &str = "recipe.toml";

/// Everything one checkpoint holds.
pub struct Contents<'a> {
    /// The model's named tensors (checkpoint names).
    pub tensors: &'a [(String, Tensor)],
    /// Its architecture.
    pub config: &'a ModelConfig,
    /// Files to copy beside the weights (tokenizer.json, tokenizer_config.json).
    pub extra_files: &'a [PathBuf],
    /// The running stage's optimizer.
    pub optimizer: Option<&'a AdamW>,
    /// The frozen reference of a GRPO stage with a KL term.
    pub reference: Option<&'a [(String, Tensor)]>,
    /// The resolved recipe.
    pub recipe_toml: &'a str,
    /// The run state.
    pub state: &'a TrainState,
}

/// The checkpoints of one run.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    dir: PathBuf,
    keep_last: usize,
}

/// A loaded checkpoint's directory and state.
#[derive(Debug)]
pub struct Found {
    /// `…/checkpoints/step_NNNNNN`.
    pub dir: PathBuf,
    /// Its `state.json`.
    pub state: TrainState,
}

impl Checkpoints {
    /// The checkpoints under `run_dir/checkpoints`, keeping the newest `keep_last` (≥ 1).
    pub fn new(run_dir: &Path, keep_last: usize) -> Self {
        Checkpoints { dir: run_dir.join("checkpoints"), keep_last: keep_last.max(1) }
    }

    /// The directory name of step `step`.
    pub fn name(step: u64) -> String {
        format!("step_{step:06}")
    }

    /// Writes checkpoint `step` atomically, then prunes old ones. Returns its directory.
    pub fn save(&self, step: u64, contents: &Contents<'_>) -> Result<PathBuf> {
        fs::create_dir_all(&self.dir).with_context(|| format!("creating {}", self.dir.display()))?;
        self.remove_temporaries();
        let name = Self::name(step);
        let tmp = self.dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let written = write_contents(&tmp, contents);
        if let Err(e) = written {
            let _ = fs::remove_dir_all(&tmp); // best effort: the write error is what to report
            return Err(e.context(format!(
                "saving checkpoint {} failed; the previous checkpoints are untouched",
                self.dir.join(&name).display()
            )));
        }
        let target = self.dir.join(&name);
        if target.exists() {
            // Re-saving a step (a resumed run that redid it): the new copy replaces the old one.
            fs::remove_dir_all(&target).with_context(|| format!("replacing {}", target.display()))?;
        }
        fs::rename(&tmp, &target).with_context(|| format!("renaming {} to {}", tmp.display(), target.display()))?;
        sync_dir(&self.dir)?;
        self.prune()?;
        Ok(target)
    }

    /// The complete checkpoints, oldest first, as (step, directory).
    pub fn list(&self) -> Vec<(u64, PathBuf)> {
        let Ok(entries) = fs::read_dir(&self.dir) else { return Vec::new() };
        let mut found: Vec<(u64, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let step = name.strip_prefix("step_")?.parse::<u64>().ok()?;
                e.path().join(STATE_FILE).is_file().then(|| (step, e.path()))
            })
            .collect();
        found.sort();
        found
    }

    /// The newest complete checkpoint and its state, if any.
    pub fn latest(&self) -> Result<Option<Found>> {
        let Some((_, dir)) = self.list().pop() else { return Ok(None) };
        let path = dir.join(STATE_FILE);
        let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let state: TrainState = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok(Some(Found { dir, state }))
    }

    fn prune(&self) -> Result<()> {
        let all = self.list();
        let excess = all.len().saturating_sub(self.keep_last);
        for (step, dir) in &all[..excess] {
            // Renamed out of the `step_*` namespace first, so a kill mid-delete never leaves a
            // partial directory that still looks like a checkpoint.
            let doomed = self.dir.join(format!(".{}.tmp-delete", Self::name(*step)));
            fs::rename(dir, &doomed).with_context(|| format!("retiring old checkpoint {}", dir.display()))?;
            fs::remove_dir_all(&doomed).with_context(|| format!("removing {}", doomed.display()))?;
        }
        Ok(())
    }

    /// Removes what interrupted saves left behind.
    fn remove_temporaries(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else { return };
        for e in entries.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.contains(".tmp-") || name.contains(".rlvr-tmp-") {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Writes every file of a checkpoint into `dir` (which must not exist) and syncs them.
fn write_contents(dir: &Path, c: &Contents<'_>) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    save(dir, c.tensors, c.config, &SaveOptions::default())
        .with_context(|| format!("writing the model to {}", dir.display()))?;
    for file in c.extra_files {
        let name = file.file_name().context("an extra checkpoint file needs a name")?;
        fs::copy(file, dir.join(name)).with_context(|| format!("copying {} into {}", file.display(), dir.display()))?;
    }
    if let Some(opt) = c.optimizer {
        opt.save(&dir.join(OPTIMIZER_FILE))?;
    }
    if let Some(reference) = c.reference {
        let path = dir.join(REFERENCE_FILE);
        Tensor::write_safetensors(reference, &path).with_context(|| format!("writing {}", path.display()))?;
    }
    write_synced(&dir.join(RECIPE_FILE), c.recipe_toml.as_bytes())?;
    let state = serde_json::to_vec_pretty(c.state)?;
    write_synced(&dir.join(STATE_FILE), &state)?;
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        fs::File::open(&path).and_then(|f| f.sync_all()).with_context(|| format!("syncing {}", path.display()))?;
    }
    sync_dir(dir)
}

/// Writes `bytes` to `path` and syncs it.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes).with_context(|| format!("writing {}", path.display()))?;
    f.sync_all().with_context(|| format!("syncing {}", path.display()))
}

/// Syncs a directory's entries (so a rename in it survives a power cut).
fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir).and_then(|f| f.sync_all()).with_context(|| format!("syncing {}", dir.display()))
}

/// Reads `reference.safetensors` of a checkpoint, if it has one.
pub fn read_reference(dir: &Path) -> Result<Option<Vec<(String, Tensor)>>> {
    let path = dir.join(REFERENCE_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let tensors = Tensor::read_safetensors(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(tensors))
}

/// Fails unless `dir` looks like a complete checkpoint.
pub fn check_complete(dir: &Path) -> Result<()> {
    for file in [STATE_FILE, "config.json"] {
        if !dir.join(file).is_file() {
            bail!("{} is not a complete checkpoint: {file} is missing", dir.display());
        }
    }
    Ok(())
}
