//! A training stage from `state.stage_step` to its end: the optimizer over the stage's trainable
//! parameters, one step at a time at the scheduled learning rate (a supervised step in
//! [`super::lm`], a GRPO step in [`super::grpo`]), each logged, skipped when not finite, and
//! checkpointed every `checkpoint.every` steps; at the end the stage's summary and a checkpoint.

use super::dsa::{self, DsaSummary, ProbeFigures};
use super::grpo::GrpoRunner;
use super::lm;
use crate::checkpoint;
use crate::metrics::{self, progress};
use crate::optim::{self, Optimizer, ParamGroup};
use crate::recipe::Stage;
use crate::session::Session;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::{Map, Value};
use std::path::Path;
use tch::Tensor;

/// What a training stage records in `report.json`.
#[derive(Debug, Serialize)]
struct Summary {
    steps: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    first: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last: Option<Value>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    dsa: Option<DsaSummary>,
}

/// Runs training `stage` to its end (summary recorded, checkpoint written). False when
/// `--max-steps` stopped it first (after a checkpoint).
pub(crate) fn run(session: &mut Session, stage: &Stage) -> Result<bool> {
    let steps = stage.steps().expect("training stages have steps");
    let resumed = session.resumed_from.take();
    let mut opt = optimizer(session, stage, resumed.as_deref())?;
    let mut grpo = match stage {
        Stage::Grpo(_) => Some(GrpoRunner::new(session, resumed.as_deref())?),
        _ => None,
    };
    let probe = dsa::probe_text(&session.policy, &session.data, stage)?;
    if let (Some(tokens), 0) = (&probe, session.state.stage_step) {
        let start = serde_json::to_value(dsa::probe(&session.policy, tokens))?;
        session.state.stage_notes.insert("probe_start".into(), start);
    }
    let first_step = session.state.global_step - session.state.stage_step as u64;
    session.logger.begin_stage(stage.name(), first_step, first_step + steps as u64);
    let bar = match session.dp.is_main() {
        true => progress::bar(steps as u64, stage.name()),
        false => indicatif::ProgressBar::hidden(),
    };
    bar.set_position(session.state.stage_step as u64);
    while session.state.stage_step < steps {
        let lr = learning_rate(session, stage, steps);
        let (metrics, skipped) = match grpo.as_mut() {
            Some(runner) => {
                let left = steps - session.state.stage_step;
                runner.step(session, &mut opt, lr, left).map(|(m, s)| (metrics::fields(&m), s))?
            }
            None => lm::step(session, stage, &mut opt, lr).map(|(m, s)| (metrics::fields(&m), s))?,
        };
        record(session, stage, metrics, skipped)?;
        bar.inc(1);
        let every = session.recipe.checkpoint.every as u64;
        let (global, more) = (session.state.global_step, session.state.stage_step < steps);
        let stop = (session.max_steps == Some(global) || session.interrupted_anywhere()?) && more;
        if ((every > 0 && global % every == 0 && more) || stop) && !skipped {
            session.save(Some(&opt), grpo.as_ref().and_then(GrpoRunner::reference_tensors))?;
        }
        crate::parallel::injected_fault(&session.dp, global);
        if stop {
            bar.finish_and_clear();
            return Ok(false);
        }
    }
    bar.finish_and_clear();
    if let Some(runner) = grpo.as_mut() {
        runner.shutdown();
    }
    report_memory(session, &opt);
    session.logger.end_stage()?;
    let summary = summary(session, stage, steps, probe.as_ref())?;
    session.state.finish_stage(stage.name(), serde_json::to_value(summary)?);
    session.save(Some(&opt), None)?;
    Ok(session.max_steps != Some(session.state.global_step) && !session.interrupted_anywhere()?)
}

/// AdamW over the stage's trainable parameters (matrices decay, vectors do not), with the saved
/// state when resuming mid-stage.
fn optimizer(session: &Session, stage: &Stage, resumed: Option<&Path>) -> Result<Optimizer> {
    let policy = &session.policy;
    let trainable = policy.set_trainable(policy.stage_trainable(stage, session.recipe.rollout.attention));
    let o = &session.recipe.optimizer;
    let (matrices, vectors): (Vec<_>, Vec<_>) = trainable.into_iter().partition(|(_, t)| t.dim() >= 2);
    let groups = vec![
        ParamGroup { name: "decay".into(), params: matrices, lr_scale: 1.0, weight_decay: o.weight_decay },
        ParamGroup { name: "no_decay".into(), params: vectors, lr_scale: 1.0, weight_decay: 0.0 },
    ];
    let config = optim::AdamWConfig { betas: (o.betas[0], o.betas[1]), eps: o.eps };
    let mut opt = Optimizer::new(groups, config, session.recipe.run.master_weights, &session.dp)?;
    // Every trainable parameter holds a (zero) gradient from the start, so which ones AdamW steps
    // and what the clipping norm sums never depend on what this process happened to run before:
    // a resumed run steps exactly as an uninterrupted one.
    opt.define_grads();
    if let (Some(dir), true) = (resumed, session.state.stage_step > 0) {
        opt.load(&dir.join(checkpoint::OPTIMIZER_FILE), &session.dp)?;
    }
    Ok(opt)
}

/// The learning rate of the stage's next step: its peak on the stage's schedule.
fn learning_rate(session: &Session, stage: &Stage, steps: usize) -> f64 {
    let o = &session.recipe.optimizer;
    let base = stage.lr(o).expect("training stages have a learning rate");
    let schedule = match stage {
        Stage::Grpo(g) => g.schedule.unwrap_or(o.schedule),
        _ => o.schedule,
    };
    optim::lr_at(schedule, base, session.state.stage_step, steps, o.warmup_steps, o.min_lr_ratio)
}

/// Counts a finished step, logs it, keeps the stage's first and last figures, and stops the run
/// after `run.max_bad_steps` skipped steps in a row.
fn record(session: &mut Session, stage: &Stage, mut metrics: Map<String, Value>, skipped: bool) -> Result<()> {
    metrics.insert("skipped".into(), Value::Bool(skipped));
    let state = &mut session.state;
    state.stage_step += 1;
    state.global_step += 1;
    if !state.stage_notes.contains_key("first") {
        state.stage_notes.insert("first".into(), Value::Object(metrics.clone()));
    }
    state.stage_notes.insert("last".into(), Value::Object(metrics.clone()));
    let record = metrics::StepRecord { stage: stage.name().to_string(), step: state.global_step, metrics };
    session.logger.log(&record)?;
    if !skipped {
        session.state.bad_steps = 0;
        return Ok(());
    }
    session.state.bad_steps += 1;
    let (max_bad, bad) = (session.recipe.run.max_bad_steps, session.state.bad_steps);
    eprintln!(
        "warning: non-finite loss or gradient at step {} of {}; step skipped ({bad} in a row, stopping at {max_bad})",
        session.state.stage_step,
        stage.name(),
    );
    if bad >= max_bad {
        bail!(
            "stopping: {max_bad} non-finite losses or gradients in a row in stage {}; nothing was saved after them (newest checkpoint: {})",
            stage.name(),
            session.newest_checkpoint()
        );
    }
    Ok(())
}

/// The stage's report entry: steps, first and last figures, and a DSA stage's probes.
fn summary(session: &Session, stage: &Stage, steps: usize, probe: Option<&Tensor>) -> Result<Summary> {
    let notes = &session.state.stage_notes;
    let dsa = match probe {
        Some(tokens) => {
            let end = dsa::probe(&session.policy, tokens);
            let start = notes.get("probe_start").cloned().context("the stage's starting probe was not recorded")?;
            let start: ProbeFigures = serde_json::from_value(start).context("the stage's starting probe")?;
            Some(dsa::summary(stage, start, end))
        }
        None => None,
    };
    Ok(Summary { steps, first: notes.get("first").cloned(), last: notes.get("last").cloned(), dsa })
}

/// Each rank's memory at the end of a stage of a multi-process run: optimizer state (a shard of
/// it when sharded), peak resident memory, bytes it put into collectives.
fn report_memory(session: &Session, opt: &Optimizer) {
    let dp = &session.dp;
    if dp.world() == 1 {
        return;
    }
    let how = if matches!(opt, Optimizer::Sharded(_)) { "sharded" } else { "replicated" };
    eprintln!(
        "rank {}/{}: optimizer state {:.2} MiB ({how}), peak RSS {:.0} MiB, {:.1} MB through collectives",
        dp.rank(),
        dp.world(),
        opt.state_bytes() as f64 / (1u64 << 20) as f64,
        crate::parallel::peak_rss_mib(),
        dp.bytes_moved() as f64 / 1e6
    );
}
