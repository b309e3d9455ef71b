//! `rlvr train RECIPE`: a run, top to bottom.
//!
//! 1. [`Session::open`]: load and check the recipe (nothing else happens if it is bad), the data,
//!    the verifier, the W&B client when asked for; start fresh (random init or a model dir) or,
//!    with `--resume`, from the newest complete checkpoint (weights, optimizer, stage and step,
//!    data cursors, policy version, report so far).
//! 2. Run the stages in order: training stages in [`crate::stages::training`], evals in
//!    [`crate::stages::eval`].
//! 3. [`Session::finish`]: write `report.json` (the stages' summaries) and the plots, print a table.

use crate::checkpoint::{self, Checkpoints, Contents};
use crate::data::{DataSpec, Dataset};
use crate::metrics::{self, LoggerConfig, MetricsLogger, StepRecord, WandbConfig};
use crate::optim::{AdamW, Optimizer};
use crate::parallel::Dp;
use crate::policy::{Policy, Source};
use crate::recipe::{Recipe, Stage};
use crate::stages::{add_indexer, eval, training};
use crate::state::{Seeds, TrainState};
use crate::{report, resume};
use anyhow::{bail, Context, Result};
use rlvr_rollout::template::{ChatRenderer, ChatTemplate};
use rlvr_verifiers::Verifier;
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tch::Tensor;

/// What `rlvr train` was asked.
#[derive(Debug, Clone)]
pub struct TrainArgs {
    /// The recipe file.
    pub recipe: PathBuf,
    /// `--set key=value` overrides.
    pub sets: Vec<String>,
    /// Continue from the newest complete checkpoint.
    pub resume: bool,
    /// Run directory (instead of the recipe's).
    pub out: Option<PathBuf>,
    /// Stop (with a checkpoint) once this many optimizer steps of the run are done.
    pub max_steps: Option<u64>,
}

impl TrainArgs {
    /// Whether to continue from the newest checkpoint: asked for, or implied when torchrun has
    /// restarted the job after a rank failed (`TORCHELASTIC_RESTART_COUNT` > 0).
    fn resuming(&self) -> bool {
        let restarted =
            std::env::var("TORCHELASTIC_RESTART_COUNT").ok().and_then(|c| c.parse::<u32>().ok()).unwrap_or(0) > 0;
        self.resume || restarted
    }
}

/// Runs a recipe; returns the report, or `None` when `--max-steps` stopped it first.
pub fn train(args: &TrainArgs) -> Result<Option<Value>> {
    let mut session = match Session::open(args)? {
        Ok(session) => session,
        Err(report) => return Ok(Some(report)),
    };
    while let Some(stage) = session.recipe.stages.get(session.state.stage_index).cloned() {
        let (index, total) = (session.state.stage_index + 1, session.recipe.stages.len());
        session.say(&format!("== stage {index}/{total}: {} ({})", stage.name(), stage.kind()));
        add_indexer::before_stage(&mut session, &stage)?;
        let finished = match &stage {
            Stage::Eval(e) => {
                let summary = eval::run(&mut session, stage.name(), e)?;
                session.state.finish_stage(stage.name(), summary);
                true
            }
            _ => training::run(&mut session, &stage)?,
        };
        if session.interrupted_anywhere()? {
            let (step, newest, dir) = (session.state.global_step, session.newest_checkpoint(), session.run_dir.clone());
            session.logger.finish()?;
            bail!(
                "interrupted by a signal after step {step}; the newest checkpoint is {newest}: continue with `rlvr train {} --out {} --resume`",
                args.recipe.display(),
                dir.display()
            );
        }
        if !finished {
            let step = session.state.global_step;
            session.logger.finish()?;
            eprintln!("stopped after step {step} (--max-steps); continue with --resume");
            return Ok(None);
        }
    }
    session.finish().map(Some)
}

/// Everything a running recipe holds.
pub(crate) struct Session {
    pub recipe: Recipe,
    /// The resolved recipe as saved in the run directory and in every checkpoint.
    pub recipe_toml: String,
    pub run_dir: PathBuf,
    pub policy: Policy,
    pub data: Dataset,
    pub verifier: Box<dyn Verifier>,
    pub state: TrainState,
    pub logger: MetricsLogger,
    pub checkpoints: Checkpoints,
    /// The checkpoint this process resumed from (its optimizer and reference are read once).
    pub resumed_from: Option<PathBuf>,
    /// `--max-steps`.
    pub max_steps: Option<u64>,
    /// Sequences per GRPO backward: the recipe's `algorithm.micro_batch`, or with 0 there what fits
    /// the device (`plan::fit_micro_batch`; 0 = the whole minibatch share).
    pub micro_batch: usize,
    /// The ranks of a multi-process run (one process: world 1).
    pub dp: Dp,
    /// Set by the first SIGINT/SIGTERM: the running step finishes, a checkpoint is written and
    /// the run stops; a second signal exits at once (status 130).
    interrupt: Arc<AtomicBool>,
}

impl Session {
    /// Everything that can be wrong with the input fails here, before any work; then the
    /// starting point (fresh, or the newest checkpoint with `--resume`, whose saved recipe is the
    /// run's). A resumed run that has finished gives its report instead (`Err`).
    fn open(args: &TrainArgs) -> Result<std::result::Result<Session, Value>> {
        let resume = args.resuming();
        let mut recipe = Recipe::load(&args.recipe, &args.sets)?;
        let run_dir = recipe.run_dir(args.out.as_deref());
        recipe.run.out = Some(run_dir.clone()); // the saved recipe names the directory it ran in
        let found = Checkpoints::new(&run_dir, recipe.checkpoint.keep_last).latest()?;
        if found.is_some() && !resume {
            bail!(
                "{} already holds checkpoints; pass --resume to continue that run, or --out for a new run directory",
                run_dir.display()
            );
        }
        if let Some(found) = &found {
            recipe = resume::continued_recipe(recipe, &found.dir)?;
        }
        if resume {
            if let Some(report) = resume::finished_report(&run_dir)? {
                eprintln!("the run in {} is finished; its report:", run_dir.display());
                report::print_table(&report);
                return Ok(Err(report));
            }
        }
        let reward = recipe.reward()?;
        if recipe.run.threads > 0 {
            tch::set_num_threads(recipe.run.threads as i32);
        }
        if recipe.run.deterministic {
            // cuBLAS reads it at its first use, which is later than this.
            if std::env::var_os("CUBLAS_WORKSPACE_CONFIG").is_none() {
                std::env::set_var("CUBLAS_WORKSPACE_CONFIG", rlvr_dist::CUBLAS_WORKSPACE);
            }
            rlvr_dist::set_deterministic(true);
            let cublas = std::env::var("CUBLAS_WORKSPACE_CONFIG").unwrap_or_default();
            let on = if rlvr_dist::deterministic() { "on" } else { "NOT on" };
            eprintln!("run.deterministic: libtorch's deterministic algorithms {on}, CUBLAS_WORKSPACE_CONFIG={cublas}");
        }
        let timeout = std::time::Duration::from_secs(recipe.run.collective_timeout_s);
        let r = &recipe.run;
        let wanted = crate::policy::run_device(r.device, None)?;
        let dp = Dp::from_env(wanted, timeout, r.shard_optimizer, r.bucket_mb)?;
        let checkpoints = Checkpoints::new(&run_dir, recipe.checkpoint.keep_last);
        let chat = chat_renderer(&recipe)?;
        let data =
            Dataset::load_with(&recipe.data, recipe.run.seed, chat.as_ref()).context("loading the recipe's data")?;
        check_stage_data(&recipe, &data, dp.world())?;
        let device_name = crate::plan::device_name(recipe.run.device);
        let runtime = crate::plan::runtime_bytes(device_name, crate::plan::warm_resident_bytes());
        let local_ranks = std::env::var("LOCAL_WORLD_SIZE").ok().and_then(|n| n.parse().ok()).unwrap_or(dp.world());
        // Each rank computes on its local GPU; the spawned rollout servers on the recipe's device.
        let device = match (wanted, dp.world()) {
            (tch::Device::Cuda(_), world) if world > 1 => {
                crate::policy::run_device(recipe.run.device, Some(dp.group().local_rank()))?
            }
            (device, _) => device,
        };
        let budget = crate::plan::Budget::of(device, local_ranks, wanted);
        let (micro_batch, plan) =
            crate::plan::fit_micro_batch(&recipe, dp.world(), device_name, runtime, &data, budget.as_ref())?;
        crate::plan::check_fits(&plan, budget.as_ref())?;
        let verifier = reward.build().context("building the recipe's verifier")?;
        check_task_fields(verifier.as_ref(), &data)?;
        std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
        let recipe_toml = recipe.to_toml();
        let logger = match dp.is_main() {
            true => {
                checkpoint::write_synced(&run_dir.join(checkpoint::RECIPE_FILE), recipe_toml.as_bytes())?;
                MetricsLogger::new(&run_dir, logger_config(&recipe)?)?
            }
            false => MetricsLogger::silent(),
        };
        let tokenizer_dir = tokenizer_dir(&recipe, &run_dir, &dp)?;
        let (source, state, resumed_from) = start_point(&recipe, found, resume, &run_dir)?;
        let policy = Policy::build(&source, &tokenizer_dir, recipe.model.mtp, device, recipe.run.dtype)?;
        check_attention(&recipe, &policy.config)?;
        let mut session = Session {
            recipe,
            recipe_toml,
            run_dir,
            policy,
            data,
            verifier,
            state,
            logger,
            checkpoints,
            resumed_from,
            max_steps: args.max_steps,
            micro_batch,
            dp,
            interrupt: install_interrupt()?,
        };
        // Drop what was logged after the checkpoint: later steps, and evals run at its step (they
        // come after the checkpoint and run again).
        let at = session.state.global_step;
        let evals: Vec<String> = session
            .recipe
            .stages
            .iter()
            .filter(|s| matches!(s, Stage::Eval(_)))
            .map(|s| s.name().to_string())
            .collect();
        session.logger.retain(|r| r.step < at || (r.step == at && !evals.contains(&r.stage)))?;
        if session.dp.world() > 1 {
            let how = if session.recipe.run.shard_optimizer { "sharded" } else { "replicated" };
            session.say(&format!("data parallel over {} ranks (optimizer state {how})", session.dp.world()));
        }
        Ok(Ok(session))
    }

    /// Writes `report.json`, closes the metrics and prints the table; the report.
    fn finish(self) -> Result<Value> {
        let report = Value::Object(self.state.report.clone());
        if !self.dp.is_main() {
            return Ok(report);
        }
        let path = self.run_dir.join("report.json");
        checkpoint::write_synced(&path, serde_json::to_string_pretty(&report)?.as_bytes())?;
        self.logger.finish()?;
        report::print_table(&report);
        eprintln!("report: {}", path.display());
        Ok(report)
    }

    /// Logs `metrics` as stage `stage`'s record at the current global step.
    pub fn log(&mut self, stage: &str, metrics: &impl Serialize) -> Result<()> {
        let record =
            StepRecord { stage: stage.to_string(), step: self.state.global_step, metrics: metrics::fields(metrics) };
        self.logger.log(&record)?;
        Ok(())
    }

    /// Writes a checkpoint of the current state (with the optimizer, and the KL reference of a
    /// GRPO stage). Weights that are no longer finite are never checkpointed. Every rank takes
    /// part (a sharded optimizer's state is gathered); rank 0 writes.
    pub fn save(&mut self, opt: Option<&Optimizer>, reference: Option<&[(String, Tensor)]>) -> Result<()> {
        let tensors = self.policy.checkpoint_tensors();
        let bad: Vec<&str> = tch::no_grad(|| {
            tensors
                .iter()
                .filter(|(_, t)| !bool::try_from(t.isfinite().all()).unwrap_or(false))
                .map(|(n, _)| n.as_str())
                .collect()
        });
        if let Some(first) = bad.first() {
            bail!(
                "the weights are no longer finite after step {} ({} tensors, e.g. `{first}`); not checkpointing them (newest checkpoint: {})",
                self.state.global_step,
                bad.len(),
                self.newest_checkpoint()
            );
        }
        let gathered = match opt {
            Some(opt) => opt.gathered(&self.dp)?,
            None => None,
        };
        if !self.dp.is_main() {
            return Ok(());
        }
        let optimizer: Option<&AdamW> = match (opt, &gathered) {
            (_, Some(full)) => Some(full),
            (Some(Optimizer::Replicated(opt)), None) => Some(opt),
            _ => None,
        };
        let config = self.policy.checkpoint_config();
        let contents = Contents {
            tensors: &tensors,
            config: &config,
            extra_files: &self.policy.tokenizer_files,
            optimizer,
            reference,
            recipe_toml: &self.recipe_toml,
            state: &self.state,
        };
        let dir = self.checkpoints.save(self.state.global_step, &contents)?;
        eprintln!("checkpoint {}", dir.display());
        Ok(())
    }

    /// Whether SIGINT or SIGTERM has arrived at any rank (a collective: every rank stops at the
    /// same step).
    pub fn interrupted_anywhere(&self) -> Result<bool> {
        Ok(!self.dp.all(!self.interrupted())?)
    }

    /// Prints `message` once (rank 0 of a multi-process run).
    pub fn say(&self, message: &str) {
        if self.dp.is_main() {
            eprintln!("{message}");
        }
    }

    /// Whether SIGINT or SIGTERM has arrived.
    pub fn interrupted(&self) -> bool {
        self.interrupt.load(Ordering::Relaxed)
    }

    /// The newest checkpoint's directory, for messages.
    pub fn newest_checkpoint(&self) -> String {
        self.checkpoints.list().pop().map_or_else(|| "none".into(), |(_, d)| d.display().to_string())
    }
}

/// What each stage needs of the data, checked before any work: held-out problems for evals and
/// the DSA stages' probes, reference responses for SFT (every training row of file data).
fn check_stage_data(recipe: &Recipe, data: &Dataset, world: usize) -> Result<()> {
    for (i, stage) in recipe.stages.iter().enumerate() {
        let at = format!("stages[{i}] ({})", stage.name());
        if let Some(rows) = stage.batch_size().filter(|&rows| rows < world) {
            bail!("{at}: batch_size = {rows} cannot be shared by {world} ranks: each rank needs at least one row");
        }
        let needs_held_out = matches!(stage, Stage::Eval(_) | Stage::IndexerWarmup(_) | Stage::SparseTrain(_));
        if needs_held_out && data.held_out().is_empty() {
            bail!("{at} needs held-out problems, and the data has none (data.held_out for the arithmetic task, data.test for files)");
        }
        if let Stage::Sft(_) = stage {
            let rows = data.train_len().unwrap_or(1) as u64;
            if let Some(p) = (0..rows).map(|r| data.train(r)).find(|p| p.reference.is_none()) {
                bail!("{at}: training problem `{}` has no reference response, which SFT trains on", p.id);
            }
        }
    }
    Ok(())
}

/// Refuses, before any work, what needs the DSA lightning indexer (a stage's or `[rollout]`'s
/// `attention = "sparse"`, the two DSA stages) on a model that has none (deepseek_v3 / deepseek_v2)
/// and will not get one (`[model] add_indexer`, which adds them before the first such stage).
fn check_attention(recipe: &Recipe, cfg: &rlvr_model::ModelConfig) -> Result<()> {
    let converted = match &recipe.model.add_indexer {
        Some(add) if cfg.family() == rlvr_model::Family::V3 => {
            rlvr_model::convert::v32_config(cfg, &add.spec()).context("recipe key model.add_indexer")?
        }
        _ => cfg.clone(),
    };
    let Err(why) = converted.check_attention(rlvr_model::AttentionMode::Sparse) else { return Ok(()) };
    for stage in &recipe.stages {
        if let Some(what) = add_indexer::needs_indexer(recipe, stage) {
            bail!("recipe stage `{}` ({}): {what}, but the model's config.json: {why}", stage.name(), stage.kind());
        }
    }
    Ok(())
}

/// Refuses, before any work, data whose tasks lack a field the verifier needs (the `code`
/// verifier on maths problems, `math` on rows without an answer): every held-out problem and
/// every training row of file data (up to 100 000; the first 1 000 of a generated task).
fn check_task_fields(verifier: &dyn Verifier, data: &Dataset) -> Result<()> {
    let needs = verifier.needs();
    if needs.is_empty() {
        return Ok(());
    }
    let rows = data.train_len().map_or(1_000, |n| n.min(100_000)) as u64;
    let training = (0..rows).map(|r| ("training", data.train(r)));
    let held_out = data.held_out().iter().cloned().map(|p| ("held-out", p));
    for (which, problem) in training.chain(held_out) {
        if let Some(field) = needs.iter().find(|f| !problem.task.has(f)) {
            bail!(
                "verifier `{}` needs the task field `{field}`, and {which} problem `{}` has none: check [verifier] against [data] (its field mapping)",
                verifier.name(),
                problem.id
            );
        }
    }
    Ok(())
}

/// Where the run starts: the newest checkpoint when there is one (`--resume` was checked), else
/// the recipe's model dir or a random init of its config.
fn start_point(
    recipe: &Recipe,
    found: Option<checkpoint::Found>,
    resume: bool,
    run_dir: &Path,
) -> Result<(Source, TrainState, Option<PathBuf>)> {
    if let Some(found) = found {
        eprintln!("resuming from {} (global step {})", found.dir.display(), found.state.global_step);
        return Ok((Source::Checkpoint(found.dir.clone()), found.state, Some(found.dir)));
    }
    if resume {
        eprintln!("no checkpoint in {}; starting from the beginning", run_dir.display());
    }
    let seeds = Seeds { run: recipe.run.seed, init: recipe.model.init_seed.unwrap_or(recipe.run.seed) };
    let source = match &recipe.model.path {
        Some(path) => Source::Dir(path.clone()),
        None => Source::Init { config: recipe.model.model_config()?, seed: seeds.init },
    };
    Ok((source, TrainState::new(seeds), None))
}

/// The interrupt flag, set by SIGINT and SIGTERM; a signal that finds it already set ends the
/// process at once with status 130.
fn install_interrupt() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Registered first, so it sees the flag as the previous signal left it.
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&flag))?;
        signal_hook::flag::register(signal, Arc::clone(&flag))?;
    }
    Ok(flag)
}

/// Threads for the verifiers.
pub(crate) fn parallelism() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

/// Where the tokenizer comes from: the built-in one of the arithmetic task, or for file data on a
/// preset the built-in printable-ASCII one (either written into the run dir), or the model
/// directory's.
fn tokenizer_dir(recipe: &Recipe, run_dir: &Path, dp: &Dp) -> Result<PathBuf> {
    let write: fn(&Path) -> std::result::Result<(), crate::data::DataError> = match (&recipe.data, &recipe.model.path) {
        (DataSpec::Arithmetic(_), _) => crate::data::write_arithmetic_tokenizer,
        (_, Some(path)) => return Ok(path.clone()),
        (_, None) => crate::data::write_text_tokenizer,
    };
    let dir = run_dir.join("tokenizer");
    if dp.is_main() {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        write(&dir)?;
    }
    dp.group().barrier()?; // the other ranks read what rank 0 wrote
    Ok(dir)
}

/// How the data's chat-message prompts are rendered: the model directory's chat template (else
/// DeepSeek-V3.2's encoding), the built-in template of the printable-ASCII tokenizer for file data
/// on a preset, none for the arithmetic task.
pub fn chat_renderer(recipe: &Recipe) -> Result<Option<ChatRenderer>> {
    Ok(match (&recipe.data, &recipe.model.path) {
        (DataSpec::Arithmetic(_), _) => None,
        (_, Some(path)) => Some(
            ChatRenderer::for_model_dir(path).with_context(|| format!("the chat template of {}", path.display()))?,
        ),
        (_, None) => {
            let specials = [("bos_token", crate::data::BOS), ("eos_token", crate::data::EOS)]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into_iter()
                .collect();
            Some(ChatRenderer::Template(Box::new(ChatTemplate::new(crate::data::text_chat_template(), specials)?)))
        }
    })
}

/// The metrics side of the recipe: console cadence, plots, W&B (checked before any work).
fn logger_config(recipe: &Recipe) -> Result<LoggerConfig> {
    let l = &recipe.logging;
    let wandb = match l.wandb.enabled {
        true => Some(WandbConfig {
            mode: l.wandb.mode,
            project: l.wandb.project.clone(),
            entity: l.wandb.entity.clone(),
            python: l.wandb.python.clone().unwrap_or_else(metrics::wandb::default_python),
            run_name: recipe.run.name.clone(),
            config_json: serde_json::to_value(recipe).context("the recipe as JSON for W&B")?,
        }),
        false => None,
    };
    Ok(LoggerConfig { console_every: l.console_every as u64, plots: l.plots, wandb })
}
