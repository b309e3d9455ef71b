//! The model being trained, with its tokenizer: built from a preset (random initialisation from a
//! seed, config overrides merged in) or loaded from a Hugging Face model directory, and copied
//! into rollout engines.
//!
//! The VarStore's variable names are the checkpoint's, so the trainer's parameter sets
//! (the indexer for the warm-up), the optimizer state and the engine updates all use HF names.

use crate::recipe::Stage;
use anyhow::{bail, Context, Result};
use rlvr_model::checkpoint::{init, load_varstore};
use rlvr_model::{AttentionMode, DeepseekV32, Dtype, ModelConfig};
use rlvr_rollout::tokenizer::Tokenizer;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// MTP tensors of `config` the checkpoint in `dir` lacks, which an `mtp = true` run would otherwise
/// train from whatever the store held: initialised as a fresh model's (seed 0), with a warning.
fn fresh_mtp(dir: &Path, config: &ModelConfig, vs: &VarStore) -> Result<()> {
    let stored = rlvr_model::header::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    let missing: Vec<_> =
        rlvr_model::spec::mtp_tensors(config).into_iter().filter(|t| !stored.tensors.contains_key(&t.name)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "warning: model.mtp = true, but {} holds no weights for {} of the MTP module's tensors (e.g. `{}`): they start from a fresh random initialisation",
        dir.display(),
        missing.len(),
        missing[0].name
    );
    let vars = vs.variables();
    tch::no_grad(|| {
        for spec in &missing {
            if let Some(var) = vars.get(&spec.name) {
                var.shallow_clone().copy_(&init::init_tensor(spec, config, 0, Kind::Float)?);
            }
        }
        Ok(())
    })
}

/// The MTP tensors of a run that does not train them: a random initialisation's from its seed, or
/// those stored in the model directory (none when it has not all of them).
fn carried_mtp(source: &Source, config: &ModelConfig) -> Result<Vec<(String, Tensor)>> {
    let specs = rlvr_model::spec::mtp_tensors(config);
    match source {
        Source::Init { config, seed } => Ok(specs
            .iter()
            .map(|t| Ok((t.name.clone(), init::init_tensor(t, config, *seed, Kind::Float)?)))
            .collect::<Result<_>>()?),
        Source::Dir(dir) | Source::Checkpoint(dir) => {
            let stored = rlvr_model::header::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
            if !specs.iter().all(|t| stored.tensors.contains_key(&t.name)) {
                return Ok(Vec::new());
            }
            let shape = |t: &rlvr_model::spec::TensorSpec| t.shape.iter().map(|&d| d as i64).collect::<Vec<_>>();
            let vars: std::collections::HashMap<String, Tensor> =
                specs.iter().map(|t| (t.name.clone(), Tensor::zeros(shape(t), (Kind::Float, Device::Cpu)))).collect();
            rlvr_model::checkpoint::load(dir, config, &vars, false)
                .with_context(|| format!("loading the MTP module of {}", dir.display()))?;
            let mut out: Vec<(String, Tensor)> = vars.into_iter().collect();
            out.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(out)
        }
    }
}

/// Where the weights come from (one value per run: the config's size does not matter).
#[allow(clippy::large_enum_variant)]
pub enum Source {
    /// A random initialisation of `config` with `seed`.
    Init {
        /// The architecture (preset with the recipe's overrides).
        config: ModelConfig,
        /// The initialisation seed.
        seed: u64,
    },
    /// A model directory (config.json + safetensors).
    Dir(PathBuf),
    /// A run checkpoint (same layout as a model directory).
    Checkpoint(PathBuf),
}

/// The trained model, its store, architecture and tokenizer.
pub struct Policy {
    /// The variables (names = checkpoint names).
    pub vs: VarStore,
    /// The network over `vs`.
    pub model: DeepseekV32,
    /// Its architecture.
    pub config: ModelConfig,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// The tokenizer files, copied into every checkpoint.
    pub tokenizer_files: Vec<PathBuf>,
    /// The MTP module's tensors when the config has one and the run does not train it
    /// (`model.mtp = false`): kept as loaded (or initialised) so that checkpoints hold them and
    /// stay true to their `config.json`; empty when the source had none.
    pub carried: Vec<(String, Tensor)>,
}

impl Policy {
    /// Builds the model from `source` on `device` in `dtype`, with MTP modules when `mtp`, and the
    /// tokenizer found in `tokenizer_dir`.
    pub fn build(source: &Source, tokenizer_dir: &Path, mtp: bool, device: Device, dtype: Dtype) -> Result<Self> {
        let config = match source {
            Source::Init { config, .. } => config.clone(),
            Source::Dir(dir) | Source::Checkpoint(dir) => ModelConfig::from_path(dir)?,
        };
        let vs = VarStore::new(device);
        let with_mtp = mtp && config.num_nextn_predict_layers > 0;
        let model =
            if with_mtp { DeepseekV32::with_mtp(&vs.root(), &config)? } else { DeepseekV32::new(&vs.root(), &config)? };
        match source {
            Source::Init { config, seed } => {
                let vars = vs.variables();
                let tensors = init::init_tensors(config, *seed, Kind::Float)?;
                tch::no_grad(|| {
                    for (name, t) in &tensors {
                        if let Some(var) = vars.get(name) {
                            var.shallow_clone().copy_(t);
                        }
                    }
                });
            }
            Source::Dir(dir) | Source::Checkpoint(dir) => {
                load_varstore(dir, &config, &vs, !with_mtp && config.num_nextn_predict_layers == 0)
                    .with_context(|| format!("loading {}", dir.display()))?;
                if with_mtp {
                    fresh_mtp(dir, &config, &vs)?;
                }
            }
        }
        let carried =
            if with_mtp || config.num_nextn_predict_layers == 0 { Vec::new() } else { carried_mtp(source, &config)? };
        dtype.cast(&vs);
        let tokenizer = Tokenizer::from_dir(tokenizer_dir)
            .with_context(|| format!("loading the tokenizer of {}", tokenizer_dir.display()))?;
        // More tokens than rows: ids past vocab_size would index outside the embedding. Fewer:
        // the extra rows are never seen as input, and generation can still pick them (their
        // logits train only downwards), which is common (vocabularies padded to a multiple of 64)
        // and so a warning, not an error.
        if tokenizer.vocab_size() > config.vocab_size {
            bail!(
                "the tokenizer in {} has {} tokens but the model's vocab_size is {}: ids past {} would fall outside the embedding",
                tokenizer_dir.display(),
                tokenizer.vocab_size(),
                config.vocab_size,
                config.vocab_size - 1
            );
        }
        if tokenizer.vocab_size() < config.vocab_size {
            eprintln!(
                "warning: the tokenizer in {} has {} tokens, the model's vocab_size is {}: {} embedding rows no text reaches (set vocab_size to {} for a model made for this tokenizer)",
                tokenizer_dir.display(),
                tokenizer.vocab_size(),
                config.vocab_size,
                config.vocab_size - tokenizer.vocab_size(),
                tokenizer.vocab_size()
            );
        }
        let tokenizer_files = ["tokenizer.json", "tokenizer_config.json"]
            .iter()
            .map(|f| tokenizer_dir.join(f))
            .filter(|p| p.is_file())
            .collect();
        Ok(Policy { vs, model, config, tokenizer, tokenizer_files, carried })
    }

    /// What a checkpoint of this policy holds: the model's tensors and the carried MTP ones.
    pub fn checkpoint_tensors(&self) -> Vec<(String, Tensor)> {
        let mut tensors = self.named();
        tensors.extend(self.carried.iter().map(|(n, t)| (n.clone(), t.shallow_clone())));
        tensors
    }

    /// The config a checkpoint of this policy is saved with: the model's, with
    /// `num_nextn_predict_layers = 0` when its MTP module is neither trained nor carried (the
    /// source had no MTP weights), so that the checkpoint's config says what it holds.
    pub fn checkpoint_config(&self) -> ModelConfig {
        let mut config = self.config.clone();
        if self.model.mtp.is_empty() && self.carried.is_empty() {
            config.num_nextn_predict_layers = 0;
        }
        config
    }

    /// The named variables, sorted by name (shallow: they share storage with the model).
    pub fn named(&self) -> Vec<(String, Tensor)> {
        let sorted: BTreeMap<String, Tensor> = self.vs.variables().into_iter().collect();
        sorted.into_iter().collect()
    }

    /// Deep copies of the named variables (a frozen snapshot).
    pub fn snapshot(&self) -> Vec<(String, Tensor)> {
        tch::no_grad(|| self.named().into_iter().map(|(n, t)| (n, t.detach().copy())).collect())
    }

    /// Copies `tensors` (names as the checkpoint's) into the variables; every name must exist.
    pub fn assign(&self, tensors: &[(String, Tensor)]) -> Result<()> {
        let vars = self.vs.variables();
        tch::no_grad(|| {
            for (name, t) in tensors {
                let var = vars.get(name).with_context(|| format!("the model has no tensor `{name}`"))?;
                var.shallow_clone().f_copy_(t).with_context(|| format!("copying `{name}`"))?;
            }
            Ok(())
        })
    }

    /// Sets which variables train: those for which `trainable(name)` holds; the others stop
    /// requiring gradients. Returns the trainable ones, sorted by name.
    pub fn set_trainable(&self, trainable: impl Fn(&str) -> bool) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (name, var) in self.named() {
            // The aux-loss-free balancing bias is a buffer, never a gradient-trained parameter.
            let on = trainable(&name) && !name.ends_with("e_score_correction_bias");
            let _ = var.shallow_clone().set_requires_grad(on);
            if on {
                out.push((name, var));
            }
        }
        out
    }

    /// Which parameters `stage` trains: the warm-up only the indexers; GRPO never the MTP modules
    /// (it has no MTP loss); stages with dense attention (GRPO: the rollout's, `rollout_mode`)
    /// never the indexers (they get no gradient there, and AdamW's decay would still move them).
    /// The router bias is never a parameter ([`Self::set_trainable`]).
    pub fn stage_trainable(&self, stage: &Stage, rollout_mode: AttentionMode) -> impl Fn(&str) -> bool {
        let rule = stage_rule(stage, rollout_mode);
        let indexer: HashSet<String> = self.model.indexer_parameter_names().into_iter().collect();
        let first_mtp = self.config.num_hidden_layers;
        let is_mtp = move |name: &str| {
            name.strip_prefix("model.layers.")
                .and_then(|rest| rest.split('.').next())
                .and_then(|i| i.parse::<usize>().ok())
                .is_some_and(|i| i >= first_mtp)
        };
        move |name: &str| stage_trains(rule, indexer.contains(name), is_mtp(name))
    }

    /// Turns this `deepseek_v3` policy into a `deepseek_v32` one in place: the same tensors plus
    /// one freshly initialised lightning indexer per layer (`rlvr_model::convert`; MTP layers too,
    /// trained or carried), in `dtype` except the kept-in-f32 ones. Returns how many indexer
    /// parameters were added. In dense mode the new model computes exactly the old one's logits.
    pub fn add_indexer(&mut self, spec: &rlvr_model::convert::IndexerSpec, seed: u64, dtype: Dtype) -> Result<i64> {
        let v32 = rlvr_model::convert::v32_config(&self.config, spec).context("adding lightning indexers")?;
        let with_mtp = !self.model.mtp.is_empty();
        let vs = VarStore::new(self.vs.device());
        let model =
            if with_mtp { DeepseekV32::with_mtp(&vs.root(), &v32)? } else { DeepseekV32::new(&vs.root(), &v32)? };
        let carried_mtp = !self.carried.is_empty();
        let fresh = rlvr_model::convert::indexer_tensors(&v32, seed, with_mtp || carried_mtp, Kind::Float)?;
        let mine = self.vs.variables();
        let theirs = vs.variables();
        let mut added = 0;
        tch::no_grad(|| -> Result<()> {
            for (name, t) in
                mine.iter().chain(fresh.iter().map(|(n, t)| (n, t)).filter(|(n, _)| theirs.contains_key(*n)))
            {
                let var = theirs.get(name).with_context(|| format!("the V3.2 model has no tensor `{name}`"))?;
                let mut dst = var.shallow_clone();
                dst.set_data(&t.to_device(dst.device()));
                if !mine.contains_key(name) {
                    added += t.numel() as i64;
                }
            }
            Ok(())
        })?;
        dtype.cast(&vs);
        let carried_names: HashSet<&String> = self.carried.iter().map(|(n, _)| n).collect();
        if carried_mtp {
            let first_mtp = format!("model.layers.{}.", v32.num_hidden_layers);
            let mtp_indexer = fresh.iter().filter(|(n, _)| n.starts_with(&first_mtp) && !carried_names.contains(n));
            let extra: Vec<(String, Tensor)> = mtp_indexer.map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
            self.carried.extend(extra);
            self.carried.sort_by(|a, b| a.0.cmp(&b.0));
        }
        self.vs = vs;
        self.model = model;
        self.config = v32;
        Ok(added)
    }

    /// A separate copy of the main model (no MTP) in its own store, for a rollout engine.
    pub fn engine_copy(&self) -> Result<(DeepseekV32, VarStore)> {
        let vs = VarStore::new(self.vs.device());
        let model = DeepseekV32::new(&vs.root(), &self.config)?;
        let mine = self.vs.variables();
        let theirs = vs.variables();
        tch::no_grad(|| {
            for (name, var) in &theirs {
                let src = &mine[name];
                let mut dst = var.shallow_clone();
                if dst.kind() != src.kind() {
                    dst.set_data(&dst.to_kind(src.kind()));
                }
                dst.copy_(src);
            }
        });
        Ok((model, vs))
    }

    /// The tensors an engine built by [`Self::engine_copy`] takes as an update.
    pub fn engine_tensors(&self) -> Vec<(String, Tensor)> {
        let main: std::collections::HashSet<String> =
            rlvr_model::spec::main_tensors(&self.config).into_iter().map(|t| t.name).collect();
        self.named().into_iter().filter(|(n, _)| main.contains(n)).collect()
    }

    /// The token id sequences start with.
    pub fn bos(&self) -> i64 {
        self.tokenizer.bos_id().or(self.config.bos_token_id).unwrap_or(0)
    }

    /// The id that ends a sequence.
    pub fn eos(&self) -> i64 {
        self.tokenizer.eos_id().unwrap_or_else(|| self.config.eos_ids().first().copied().unwrap_or(1))
    }

    /// `text`'s ids, without special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        Ok(self.tokenizer.encode(text, false)?)
    }

    /// `ids` as text, special tokens dropped.
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        Ok(self.tokenizer.decode(ids, true)?)
    }
}

/// What a stage trains, as (only the indexers, never the indexers, never the MTP module).
#[derive(Debug, Clone, Copy)]
pub struct StageRule(bool, bool, bool);

/// The rule of [`Policy::stage_trainable`] for `stage` (GRPO's attention is the rollout's).
pub fn stage_rule(stage: &Stage, rollout_mode: AttentionMode) -> StageRule {
    let dense = |mode: AttentionMode| mode == AttentionMode::Dense;
    match stage {
        Stage::IndexerWarmup(_) => StageRule(true, false, false),
        Stage::SparseTrain(_) => StageRule(false, false, false),
        Stage::Pretrain(s) => StageRule(false, dense(s.attention), false),
        Stage::Sft(s) => StageRule(false, dense(s.attention), false),
        Stage::Grpo(_) => StageRule(false, dense(rollout_mode), true),
        Stage::Eval(_) => StageRule(false, true, true),
    }
}

/// Whether a stage with `rule` trains a tensor that is (or is not) an indexer's and the MTP
/// module's.
pub fn stage_trains(rule: StageRule, indexer: bool, mtp: bool) -> bool {
    let StageRule(only_indexer, no_indexer, no_mtp) = rule;
    if only_indexer {
        return indexer;
    }
    !((no_indexer && indexer) || (no_mtp && mtp))
}

/// The device a run computes on, checked before any work: `cuda`/`cuda:N` must be a device libtorch
/// can use (a CUDA build of torch needs a matching NVIDIA driver: PyPI's torch 2.11.0 is built for
/// CUDA 13, driver ≥ 580), else the error says what was found; `auto` says which it chose. In a
/// multi-process run on CUDA each rank takes GPU `local_rank`.
pub fn run_device(spec: rlvr_model::DeviceSpec, local_rank: Option<usize>) -> Result<Device> {
    let count = if tch::Cuda::is_available() { tch::Cuda::device_count() as usize } else { 0 };
    let index = match (spec, local_rank) {
        (rlvr_model::DeviceSpec::Cpu, _) => return Ok(Device::Cpu),
        (rlvr_model::DeviceSpec::Auto, _) if count == 0 => {
            eprintln!("run.device = \"auto\": no usable CUDA device, running on the CPU");
            return Ok(Device::Cpu);
        }
        (rlvr_model::DeviceSpec::Cuda(n), None) => n,
        (_, Some(rank)) => rank,
        (rlvr_model::DeviceSpec::Auto, None) => 0,
    };
    if count == 0 {
        let runtime = rlvr_model::device::cuda_runtime_version().unwrap_or_else(|| "not loaded".into());
        let driver = rlvr_model::device::cuda_driver_version()
            .map_or("no NVIDIA driver (libcuda.so.1 not found)".to_string(), |v| {
                format!("the driver supports CUDA {v}")
            });
        bail!(
            "run.device = \"{spec}\": libtorch sees no usable CUDA device; found: CUDA runtime {runtime} (this torch build's), {driver}. A GPU needs a driver that supports the runtime's CUDA version (PyPI's torch 2.11.0 is built for CUDA 13: driver ≥ 580); use \"cpu\""
        );
    }
    if index >= count {
        bail!("run.device = \"{spec}\": CUDA device {index} asked for, libtorch sees {count} (0..{count})");
    }
    Ok(Device::Cuda(index))
}
