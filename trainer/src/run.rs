//! `rlvr train RECIPE`: the run, top to bottom.
//!
//! 1. Load and check the recipe (nothing else happens if it is bad), the data, the verifier, the
//!    W&B client when asked for.
//! 2. Start fresh (random init or a model dir) or, with `--resume`, from the newest complete
//!    checkpoint: weights, optimizer, stage and step, data cursors, policy version, report so far.
//! 3. Run the stages in order. Each training stage takes optimizer steps (with a learning-rate
//!    schedule, gradient clipping and skipping of non-finite losses), logs every step, checkpoints
//!    every `checkpoint.every` steps and at its end; `eval` stages record their results.
//! 4. Write `report.json` (the stages' summaries) and the plots, print a table.

use crate::checkpoint::{self, Checkpoints, Contents};
use crate::data::{DataSpec, Dataset};
use crate::grpo;
use crate::metrics::{progress, LoggerConfig, MetricsLogger, StepRecord, WandbConfig, WandbMode as MetricsWandbMode};
use crate::optim::{self, AdamW, ParamGroup};
use crate::policy::{Policy, Source};
use crate::recipe::{self, Attention, Recipe, Stage};
use crate::sampler::{Sampler, Settings};
use crate::stages::{eval, grpo as grpo_stage, lm};
use crate::state::{Seeds, TrainState};
use anyhow::{bail, Context, Result};
use rlvr_model::{AttentionMode, DeepseekV32};
use rlvr_verifiers::Verifier;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

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

/// Everything a running recipe holds.
struct Run {
    recipe: Recipe,
    recipe_toml: String,
    run_dir: PathBuf,
    policy: Policy,
    data: Dataset,
    verifier: Box<dyn Verifier>,
    state: TrainState,
    logger: MetricsLogger,
    checkpoints: Checkpoints,
    /// The checkpoint this process resumed from (its optimizer and reference are read once).
    resumed_from: Option<PathBuf>,
    /// `--max-steps`.
    max_steps: Option<u64>,
}

/// Runs a recipe; returns the report, or `None` when `--max-steps` stopped it first.
pub fn train(args: &TrainArgs) -> Result<Option<Value>> {
    // 1. Everything that can be wrong with the input fails here, before any work.
    let recipe = Recipe::load(&args.recipe, &args.sets)?;
    let mut recipe = recipe;
    let run_dir = recipe.run_dir(args.out.as_deref());
    recipe.run.out = Some(run_dir.clone()); // the saved recipe names the directory it ran in
    let verifier_spec = recipe.verifier_spec()?;
    let device = parse_device(&recipe.run.device)?;
    let kind = match recipe.run.dtype {
        recipe::Dtype::F32 => Kind::Float,
        recipe::Dtype::Bf16 => Kind::BFloat16,
    };
    if recipe.run.threads > 0 {
        tch::set_num_threads(recipe.run.threads as i32);
    }
    let checkpoints = Checkpoints::new(&run_dir, recipe.checkpoint.keep_last);
    let found = checkpoints.latest()?;
    if found.is_some() && !args.resume {
        bail!(
            "{} already holds checkpoints; pass --resume to continue that run, or --out for a new run directory",
            run_dir.display()
        );
    }
    let data = Dataset::load(&recipe.data, recipe.run.seed).context("loading the recipe's data")?;
    let verifier = verifier_spec.build().context("building the recipe's verifier")?;
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let recipe_toml = recipe.to_toml();
    checkpoint::write_synced(&run_dir.join(checkpoint::RECIPE_FILE), recipe_toml.as_bytes())?;
    let logger = MetricsLogger::new(&run_dir, logger_config(&recipe)?)?;

    // 2. The starting point.
    let seeds = Seeds { run: recipe.run.seed, init: recipe.model.init_seed.unwrap_or(recipe.run.seed) };
    let tokenizer_dir = tokenizer_dir(&recipe, &run_dir)?;
    let (source, state, resumed_from) = match found {
        Some(found) => {
            eprintln!("resuming from {} (global step {})", found.dir.display(), found.state.global_step);
            (Source::Checkpoint(found.dir.clone()), found.state, Some(found.dir))
        }
        None => {
            if args.resume {
                eprintln!("no checkpoint in {}; starting from the beginning", run_dir.display());
            }
            let source = match (&recipe.model.path, &recipe.model.preset) {
                (Some(path), _) => Source::Dir(path.clone()),
                _ => Source::Init { config: recipe.model.model_config()?, seed: seeds.init },
            };
            (source, TrainState::new(seeds), None)
        }
    };
    let policy = Policy::build(&source, &tokenizer_dir, recipe.model.mtp, device, kind)?;
    let mut run = Run {
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
    };
    // Drop what was logged after the checkpoint: later steps, and evals run at its step (they come
    // after the checkpoint and run again).
    let (at, evals) = (run.state.global_step, eval_names(&run.recipe));
    run.logger.retain(|r| r.step < at || (r.step == at && !evals.contains(&r.stage)))?;

    // 3. The stages.
    while run.state.stage_index < run.recipe.stages.len() {
        let stage = run.recipe.stages[run.state.stage_index].clone();
        eprintln!(
            "== stage {}/{}: {} ({})",
            run.state.stage_index + 1,
            run.recipe.stages.len(),
            stage.name(),
            stage.kind()
        );
        match &stage {
            Stage::Eval(e) => {
                let summary = run_eval(&mut run, stage.name(), e)?;
                run.state.finish_stage(stage.name(), summary);
            }
            _ => {
                if !run_training(&mut run, &stage)? {
                    let step = run.state.global_step;
                    run.logger.finish()?;
                    eprintln!("stopped after step {step} (--max-steps); continue with --resume");
                    return Ok(None);
                }
            }
        }
    }

    // 4. The report.
    let report = Value::Object(run.state.report.clone());
    let path = run.run_dir.join("report.json");
    checkpoint::write_synced(&path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    run.logger.finish()?;
    print_table(&report);
    eprintln!("report: {}", path.display());
    Ok(Some(report))
}

/// One training stage from `state.stage_step` to its end, which records its summary and writes a
/// checkpoint. False when `--max-steps` stopped it first (after a checkpoint).
fn run_training(run: &mut Run, stage: &Stage) -> Result<bool> {
    let steps = stage.steps().expect("training stages have steps");
    let warmup = matches!(stage, Stage::IndexerWarmup(_));
    let trainable = run.policy.set_trainable(trainable_filter(&run.policy, stage, run.recipe.rollout.attention));
    let o = run.recipe.optimizer.clone();
    let mut opt = AdamW::new(
        param_groups(trainable, o.weight_decay),
        optim::AdamWConfig { betas: (o.betas[0], o.betas[1]), eps: o.eps },
    );
    // Every trainable parameter holds a (zero) gradient from the start, so which ones AdamW steps
    // and what the clipping norm sums never depend on what this process happened to run before:
    // a resumed run steps exactly as an uninterrupted one.
    opt.define_grads();
    let resumed = run.resumed_from.take();
    if let Some(dir) = &resumed {
        if run.state.stage_step > 0 {
            opt.load(&dir.join(checkpoint::OPTIMIZER_FILE))?;
        }
    }
    let base_lr = stage.lr(&run.recipe.optimizer).expect("training stages have a learning rate");
    let schedule = match stage {
        Stage::Grpo(g) => g.schedule.unwrap_or(o.schedule),
        _ => o.schedule,
    };
    let max_bad = run.recipe.run.max_bad_steps;

    // Stage-specific setup.
    let mut grpo_parts = match stage {
        Stage::Grpo(_) => Some(GrpoParts::new(run, resumed.as_deref())?),
        _ => None,
    };
    let probe = match stage {
        Stage::IndexerWarmup(recipe::IndexerWarmupStage { batch_size, seq_len, .. })
        | Stage::SparseTrain(recipe::SparseTrainStage { batch_size, seq_len, .. }) => {
            let tokens = lm::probe_tokens(&run.policy, &run.data, *batch_size, *seq_len)?;
            if run.state.stage_step == 0 {
                let start = lm::probe(&run.policy, &tokens);
                run.state.stage_notes.insert("probe_start".into(), Value::Object(start));
            }
            Some(tokens)
        }
        _ => None,
    };

    let first_step = run.state.global_step - run.state.stage_step as u64;
    run.logger.begin_stage(stage.name(), first_step, first_step + steps as u64);
    let bar = progress::bar(steps as u64, stage.name());
    bar.set_position(run.state.stage_step as u64);
    while run.state.stage_step < steps {
        let lr =
            optim::lr_at(schedule_of(schedule), base_lr, run.state.stage_step, steps, o.warmup_steps, o.min_lr_ratio);
        let (mut metrics, skipped) = match (stage, grpo_parts.as_mut()) {
            (Stage::Grpo(_), Some(parts)) => {
                let seed = step_seed(run.state.seeds.run, run.state.global_step);
                let mut cursor = run.state.problem_cursor;
                let mut inputs = parts.inputs(run);
                let out = grpo_stage::step(&run.policy, &mut opt, &mut inputs, lr, &mut cursor, seed)?;
                run.state.problem_cursor = cursor;
                if out.0.get("updates").and_then(Value::as_u64).unwrap_or(0) > 0 {
                    run.state.policy_version += 1;
                }
                out
            }
            _ => supervised_step(run, stage, &mut opt, lr)?,
        };
        metrics.insert("skipped".into(), json!(skipped));
        run.state.stage_step += 1;
        run.state.global_step += 1;
        note_first_last(&mut run.state.stage_notes, &metrics);
        run.logger.log(&StepRecord { stage: stage.name().to_string(), step: run.state.global_step, metrics })?;
        if skipped {
            run.state.bad_steps += 1;
            eprintln!(
                "warning: non-finite loss or gradient at step {} of {}; step skipped ({} in a row, stopping at {max_bad})",
                run.state.stage_step,
                stage.name(),
                run.state.bad_steps
            );
            if run.state.bad_steps >= max_bad {
                let last = run.checkpoints.list().pop().map(|(_, d)| d.display().to_string());
                bail!(
                    "stopping: {max_bad} non-finite losses or gradients in a row in stage {}; nothing was saved after them (newest checkpoint: {})",
                    stage.name(),
                    last.unwrap_or_else(|| "none".into())
                );
            }
        } else {
            run.state.bad_steps = 0;
        }

        bar.inc(1);
        let every = run.recipe.checkpoint.every;
        let stop = run.max_steps == Some(run.state.global_step) && run.state.stage_step < steps;
        let due = every > 0 && run.state.global_step % every as u64 == 0 && run.state.stage_step < steps;
        if (due || stop) && !skipped {
            let reference = grpo_parts.as_ref().and_then(|p| p.reference_tensors.as_deref());
            save(run, Some(&opt), reference)?;
        }
        if stop {
            bar.finish_and_clear();
            return Ok(false);
        }
    }
    bar.finish_and_clear();
    run.logger.end_stage()?;

    // The summary.
    let mut summary = Map::new();
    summary.insert("steps".into(), json!(steps));
    if let Some(first) = run.state.stage_notes.get("first") {
        summary.insert("first".into(), first.clone());
    }
    if let Some(last) = run.state.stage_notes.get("last") {
        summary.insert("last".into(), last.clone());
    }
    if let Some(tokens) = &probe {
        let end = lm::probe(&run.policy, tokens);
        let start = run.state.stage_notes.get("probe_start").cloned().unwrap_or(Value::Null);
        let pick = |m: &Value, k: &str| m.get(k).cloned().unwrap_or(Value::Null);
        let end = Value::Object(end);
        if warmup {
            summary.insert("kl_start".into(), pick(&start, "kl"));
            summary.insert("kl_end".into(), pick(&end, "kl"));
            summary.insert("recall_start".into(), pick(&start, "recall"));
            summary.insert("recall_end".into(), pick(&end, "recall"));
        } else {
            summary.insert("lm_loss_dense".into(), pick(&end, "lm_loss_dense"));
            summary.insert("lm_loss_sparse".into(), pick(&end, "lm_loss_sparse"));
            summary.insert("recall_end".into(), pick(&end, "recall"));
            summary.insert("kl_end".into(), pick(&end, "kl"));
        }
        summary.insert("probe_start".into(), start);
        summary.insert("probe_end".into(), end);
    }
    run.state.finish_stage(stage.name(), Value::Object(summary));
    save(run, Some(&opt), None)?;
    Ok(run.max_steps != Some(run.state.global_step))
}

/// Which parameters a stage trains: the warm-up only the indexers; GRPO never the MTP modules
/// (it has no MTP loss); stages with dense attention (GRPO: the rollout's) never the indexers (they get no gradient
/// there, and AdamW's decay would still move them). The router bias is never a parameter.
fn trainable_filter<'a>(policy: &Policy, stage: &Stage, rollout: Attention) -> impl Fn(&str) -> bool + 'a {
    let indexer: std::collections::HashSet<String> = policy.model.indexer_parameter_names().into_iter().collect();
    let first_mtp = policy.config.num_hidden_layers;
    let is_mtp = move |name: &str| {
        name.strip_prefix("model.layers.")
            .and_then(|rest| rest.split('.').next())
            .and_then(|i| i.parse::<usize>().ok())
            .is_some_and(|i| i >= first_mtp)
    };
    let (only_indexer, no_indexer, no_mtp) = match stage {
        Stage::IndexerWarmup(_) => (true, false, false),
        Stage::SparseTrain(_) => (false, false, false),
        Stage::Pretrain(s) => (false, s.attention == Attention::Dense, false),
        Stage::Sft(s) => (false, s.attention == Attention::Dense, false),
        Stage::Grpo(_) => (false, rollout == Attention::Dense, true),
        Stage::Eval(_) => (false, true, true),
    };
    move |name: &str| {
        let idx = indexer.contains(name);
        if only_indexer {
            return idx;
        }
        !(no_indexer && idx) && !(no_mtp && is_mtp(name))
    }
}

/// One optimizer step of a supervised stage; (metrics, skipped).
fn supervised_step(run: &mut Run, stage: &Stage, opt: &mut AdamW, lr: f64) -> Result<(Map<String, Value>, bool)> {
    let mtp_weight = run.recipe.model.mtp_weight;
    let (tokens, mask, objective) = match stage {
        Stage::Pretrain(recipe::PretrainStage { batch_size, seq_len, attention, .. }) => {
            let t = lm::stream_batch(&run.policy, &run.data, &mut run.state.text_cursor, *batch_size, *seq_len)?;
            (t, None, lm::Objective::Pretrain { mode: mode_of(*attention), mtp_weight })
        }
        Stage::Sft(recipe::SftStage { batch_size, attention, .. }) => {
            let first = run.state.problem_cursor;
            let problems: Vec<_> = (0..*batch_size as u64).map(|i| run.data.train(first + i)).collect();
            run.state.problem_cursor += *batch_size as u64;
            let (t, m) = lm::sft_batch(&run.policy, &problems)?;
            (t, Some(m), lm::Objective::Sft { mode: mode_of(*attention), mtp_weight })
        }
        Stage::IndexerWarmup(recipe::IndexerWarmupStage { batch_size, seq_len, .. }) => {
            let t = lm::stream_batch(&run.policy, &run.data, &mut run.state.text_cursor, *batch_size, *seq_len)?;
            (t, None, lm::Objective::IndexerWarmup)
        }
        Stage::SparseTrain(recipe::SparseTrainStage { batch_size, seq_len, indexer_loss_weight, .. }) => {
            let t = lm::stream_batch(&run.policy, &run.data, &mut run.state.text_cursor, *batch_size, *seq_len)?;
            (t, None, lm::Objective::SparseTrain { indexer_weight: *indexer_loss_weight, mtp_weight })
        }
        Stage::Grpo(_) | Stage::Eval(_) => unreachable!("not a supervised stage"),
    };
    let start = std::time::Instant::now();
    opt.zero_grad();
    let (loss, mut m) = lm::loss(&run.policy, objective, &tokens, mask.as_ref());
    let mut skipped = !loss.double_value(&[]).is_finite();
    if !skipped {
        loss.backward();
        let params: Vec<Tensor> = opt.params().map(Tensor::shallow_clone).collect();
        let clip = run.recipe.optimizer.grad_clip;
        let norm = optim::clip_grad_norm(&params, if clip > 0.0 { clip } else { f64::INFINITY });
        m.insert("grad_norm".into(), json!(norm));
        if norm.is_finite() {
            opt.step(lr);
        } else {
            skipped = true;
        }
    }
    opt.zero_grad();
    let secs = start.elapsed().as_secs_f64();
    let n_tokens = tokens.numel() as f64;
    m.insert("lr".into(), json!(lr));
    m.insert("train_s".into(), json!(secs));
    m.insert("tok_per_s".into(), json!(n_tokens / secs.max(1e-9)));
    Ok((m, skipped))
}

/// The GRPO stage's engine and KL reference.
struct GrpoParts {
    sampler: Sampler,
    reference: Option<(DeepseekV32, tch::nn::VarStore)>,
    reference_tensors: Option<Vec<(String, Tensor)>>,
}

impl GrpoParts {
    fn new(run: &Run, resumed: Option<&Path>) -> Result<Self> {
        let r = &run.recipe.rollout;
        let a = &run.recipe.algorithm;
        let slots = if r.slots > 0 { r.slots } else { r.prompts_per_step * r.group_size };
        let sampler = Sampler::new(&run.policy, slots, r.max_tokens, mode_of(r.attention), run.state.policy_version)?;
        let (reference, reference_tensors) = if a.kl_coef > 0.0 {
            // The reference is the policy as the stage began: from the checkpoint when resuming
            // mid-stage, else the current weights.
            let tensors = match resumed.filter(|_| run.state.stage_step > 0) {
                Some(dir) => checkpoint::read_reference(dir)?
                    .with_context(|| format!("{} has no {}", dir.display(), checkpoint::REFERENCE_FILE))?,
                None => run.policy.engine_tensors().into_iter().map(|(n, t)| (n, t.detach().copy())).collect(),
            };
            let (model, vs) = run.policy.engine_copy()?;
            let vars = vs.variables();
            tch::no_grad(|| {
                for (name, t) in &tensors {
                    vars[name].shallow_clone().copy_(t);
                }
            });
            (Some((model, vs)), Some(tensors))
        } else {
            (None, None)
        };
        Ok(GrpoParts { sampler, reference, reference_tensors })
    }

    fn inputs<'a>(&'a mut self, run: &'a Run) -> grpo_stage::GrpoInputs<'a> {
        let r = &run.recipe.rollout;
        let a = &run.recipe.algorithm;
        let has_moe = (0..run.policy.config.num_hidden_layers).any(|i| run.policy.config.is_moe_layer(i));
        let truncates = r.top_p < 1.0 || r.top_k > 0 || r.min_p > 0.0;
        grpo_stage::GrpoInputs {
            sampler: &mut self.sampler,
            verifier: run.verifier.as_ref(),
            data: &run.data,
            reference: self.reference.as_ref().map(|(m, _)| m),
            settings: Settings {
                n: r.group_size,
                max_tokens: r.max_tokens,
                temperature: r.temperature,
                top_p: r.top_p,
                top_k: r.top_k,
                min_p: r.min_p,
                sampling_mask: a.keep_sampling_mask && truncates && r.temperature > 0.0,
                routing: a.keep_routing && has_moe,
            },
            prompts: r.prompts_per_step,
            loss: grpo::LossConfig {
                clip_low: a.clip_low,
                clip_high: a.clip_high,
                aggregation: aggregation_of(a.aggregation),
                constant_norm: a.constant_norm.unwrap_or(r.max_tokens as f64),
                kl: (a.kl_coef > 0.0).then(|| grpo::KlPenalty { estimator: kl_of(a.kl_estimator), coef: a.kl_coef }),
                off_policy_delta: a.off_policy_delta,
            },
            advantage: advantage_of(a.advantage),
            mode: mode_of(r.attention),
            dynamic_sampling: a.dynamic_sampling.then_some(a.max_refills),
            overlong: (a.overlong_buffer, a.overlong_penalty),
            epochs: a.epochs,
            minibatches: a.minibatches,
            micro_batch: a.micro_batch,
            grad_clip: run.recipe.optimizer.grad_clip,
            parallel: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
        }
    }
}

/// An eval stage; returns its result.
fn run_eval(run: &mut Run, name: &str, stage: &recipe::EvalStage) -> Result<Value> {
    let recipe::EvalStage { samples, temperature, max_problems, .. } = stage;
    let pass_k = stage.pass_k();
    let r = &run.recipe.rollout;
    let held = run.data.held_out();
    let problems = &held[..max_problems.unwrap_or(held.len()).min(held.len())];
    if problems.is_empty() {
        bail!("stage {name}: there are no held-out problems to evaluate (data.held_out / data.test)");
    }
    let settings = Settings {
        n: *samples,
        max_tokens: r.max_tokens,
        temperature: temperature.unwrap_or(r.temperature),
        top_p: r.top_p,
        top_k: r.top_k,
        min_p: r.min_p,
        sampling_mask: false,
        routing: false,
    };
    let slots = (problems.len() * samples).min(512);
    let mut sampler = Sampler::new(&run.policy, slots, r.max_tokens, mode_of(r.attention), run.state.policy_version)?;
    let start = std::time::Instant::now();
    let parallel = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let result = eval::evaluate(
        &run.policy,
        &mut sampler,
        run.verifier.as_ref(),
        problems,
        &settings,
        &pass_k,
        run.state.seeds.run,
        parallel,
    )?;
    let value = result.to_json();
    let mut metrics = Map::new();
    metrics.insert("accuracy".into(), json!(result.accuracy));
    for (k, v) in &result.pass_at_k {
        metrics.insert(format!("pass_at_{k}"), json!(v));
    }
    metrics.insert("completion_len".into(), json!(result.response_len));
    metrics.insert("gen_s".into(), json!(start.elapsed().as_secs_f64()));
    run.logger.log(&StepRecord { stage: name.to_string(), step: run.state.global_step, metrics })?;
    Ok(value)
}

/// Writes a checkpoint of the current state.
fn save(run: &mut Run, opt: Option<&AdamW>, reference: Option<&[(String, Tensor)]>) -> Result<()> {
    let tensors = run.policy.named();
    // An update can overflow the weights even when its loss and gradient were finite: such a state
    // is never checkpointed.
    let bad: Vec<&str> = tch::no_grad(|| {
        tensors
            .iter()
            .filter(|(_, t)| !bool::try_from(t.isfinite().all()).unwrap_or(false))
            .map(|(n, _)| n.as_str())
            .collect()
    });
    if !bad.is_empty() {
        let last = run.checkpoints.list().pop().map(|(_, d)| d.display().to_string());
        bail!(
            "the weights are no longer finite after step {} ({} tensors, e.g. `{}`); not checkpointing them (newest checkpoint: {})",
            run.state.global_step,
            bad.len(),
            bad[0],
            last.unwrap_or_else(|| "none".into())
        );
    }
    let contents = Contents {
        tensors: &tensors,
        config: &run.policy.config,
        extra_files: &run.policy.tokenizer_files,
        optimizer: opt,
        reference,
        recipe_toml: &run.recipe_toml,
        state: &run.state,
    };
    let dir = run.checkpoints.save(run.state.global_step, &contents)?;
    eprintln!("checkpoint {}", dir.display());
    Ok(())
}

/// AdamW groups: matrices decay, vectors (norms, biases) do not.
fn param_groups(params: Vec<(String, Tensor)>, weight_decay: f64) -> Vec<ParamGroup> {
    let (matrices, vectors): (Vec<_>, Vec<_>) = params.into_iter().partition(|(_, t)| t.dim() >= 2);
    vec![
        ParamGroup { name: "decay".into(), params: matrices, lr_scale: 1.0, weight_decay },
        ParamGroup { name: "no_decay".into(), params: vectors, lr_scale: 1.0, weight_decay: 0.0 },
    ]
}

/// Keeps the first and the latest metrics of the running stage.
fn note_first_last(notes: &mut Map<String, Value>, metrics: &Map<String, Value>) {
    if !notes.contains_key("first") {
        notes.insert("first".into(), Value::Object(metrics.clone()));
    }
    notes.insert("last".into(), Value::Object(metrics.clone()));
}

/// Where the tokenizer comes from: the built-in one of the arithmetic task (written into the run
/// dir), or the model directory's.
fn tokenizer_dir(recipe: &Recipe, run_dir: &Path) -> Result<PathBuf> {
    match (&recipe.data, &recipe.model.path) {
        (DataSpec::Arithmetic(_), _) => {
            let dir = run_dir.join("tokenizer");
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            crate::data::write_arithmetic_tokenizer(&dir)?;
            Ok(dir)
        }
        (_, Some(path)) => Ok(path.clone()),
        (_, None) => bail!(
            "model.preset with file data needs a tokenizer: use model.path (a model dir with tokenizer.json) or data.source = \"arithmetic\""
        ),
    }
}

/// The metrics side of the recipe: console cadence, plots, W&B (checked before any work).
fn logger_config(recipe: &Recipe) -> Result<LoggerConfig> {
    let l = &recipe.logging;
    let wandb = if l.wandb.enabled {
        let python = match &l.wandb.python {
            Some(p) => p.clone(),
            None => default_python(),
        };
        let config_json = serde_json::to_value(recipe).context("the recipe as JSON for W&B")?;
        Some(WandbConfig {
            mode: match l.wandb.mode {
                recipe::WandbMode::Online => MetricsWandbMode::Online,
                recipe::WandbMode::Offline => MetricsWandbMode::Offline,
            },
            project: l.wandb.project.clone(),
            entity: l.wandb.entity.clone(),
            python,
            run_name: recipe.run.name.clone(),
            config_json,
        })
    } else {
        None
    };
    Ok(LoggerConfig { console_every: l.console_every as u64, plots: l.plots, wandb })
}

/// The project's virtual environment's python: `./.venv`, else beside the executable's checkout.
fn default_python() -> PathBuf {
    let local = PathBuf::from(".venv/bin/python");
    if local.exists() {
        return local;
    }
    let exe = std::env::current_exe().ok();
    exe.as_deref()
        .and_then(Path::parent)
        .into_iter()
        .flat_map(Path::ancestors)
        .take(4)
        .map(|d| d.join(".venv/bin/python"))
        .find(|p| p.exists())
        .unwrap_or(local)
}

/// The names of the recipe's eval stages.
fn eval_names(recipe: &Recipe) -> Vec<String> {
    recipe.stages.iter().filter(|s| matches!(s, Stage::Eval(_))).map(|s| s.name().to_string()).collect()
}

/// The step's sampling seed, from the run seed and the global step.
fn step_seed(seed: u64, step: u64) -> u64 {
    rlvr_model::sample::stream_seed(seed, step as usize, usize::MAX)
}

fn advantage_of(a: recipe::AdvantageKind) -> grpo::AdvantageMode {
    match a {
        recipe::AdvantageKind::Mean => grpo::AdvantageMode::Mean,
        recipe::AdvantageKind::MeanStd => grpo::AdvantageMode::MeanStd,
    }
}

fn aggregation_of(a: recipe::AggregationKind) -> grpo::Aggregation {
    match a {
        recipe::AggregationKind::Sequence => grpo::Aggregation::Sequence,
        recipe::AggregationKind::Token => grpo::Aggregation::Token,
        recipe::AggregationKind::Constant => grpo::Aggregation::Constant,
    }
}

fn kl_of(k: recipe::KlKind) -> grpo::KlEstimator {
    match k {
        recipe::KlKind::K1 => grpo::KlEstimator::K1,
        recipe::KlKind::K2 => grpo::KlEstimator::K2,
        recipe::KlKind::K3 => grpo::KlEstimator::K3,
        recipe::KlKind::Unbiased => grpo::KlEstimator::Unbiased,
    }
}

fn schedule_of(s: recipe::Schedule) -> optim::Schedule {
    match s {
        recipe::Schedule::Constant => optim::Schedule::Constant,
        recipe::Schedule::Cosine => optim::Schedule::Cosine,
    }
}

fn mode_of(a: Attention) -> AttentionMode {
    match a {
        Attention::Dense => AttentionMode::Dense,
        Attention::Sparse => AttentionMode::Sparse,
    }
}

/// `cpu`, `cuda`, `cuda:N` or `auto`.
pub fn parse_device(s: &str) -> Result<Device> {
    Ok(match s {
        "cpu" => Device::Cpu,
        "auto" => Device::cuda_if_available(),
        "cuda" => Device::Cuda(0),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => Device::Cuda(n),
            None => bail!("run.device: `{other}` is not cpu, cuda, cuda:N or auto"),
        },
    })
}

/// Prints each stage's key figures.
fn print_table(report: &Value) {
    println!("{:<16} {}", "stage", "figures");
    let Some(stages) = report.as_object() else { return };
    for (name, s) in stages {
        let keys = [
            "accuracy",
            "kl_start",
            "kl_end",
            "recall_start",
            "recall_end",
            "lm_loss_dense",
            "lm_loss_sparse",
            "steps",
        ];
        let figures: Vec<String> =
            keys.iter().filter_map(|k| s.get(*k).and_then(Value::as_f64).map(|v| format!("{k} {v:.4}"))).collect();
        let last = s.get("last").and_then(|l| {
            let pick = ["lm_loss", "loss", "reward", "accuracy"];
            let f: Vec<String> = pick
                .iter()
                .filter_map(|k| l.get(*k).and_then(Value::as_f64).map(|v| format!("last {k} {v:.4}")))
                .collect();
            (!f.is_empty()).then(|| f.join("  "))
        });
        println!("{:<16} {}{}", name, figures.join("  "), last.map(|l| format!("  {l}")).unwrap_or_default());
    }
}
