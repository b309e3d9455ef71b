//! The metrics side of a run: every optimizer step becomes one [`StepRecord`], which the
//! [`MetricsLogger`] appends to `run_dir/metrics.jsonl`, prints as one console line, forwards to
//! Weights & Biases (through a Python sidecar running the official client) and keeps for the PNG
//! plots written at stage ends.
//!
//! metrics.jsonl is the record of truth: one JSON object a line, `{"stage", "step", "time", ...}`,
//! each line written whole and flushed, so a kill loses at most the line being written. W&B is a
//! mirror: a sidecar that dies mid-run costs a warning, never the training.
//!
//! Left out: resuming a W&B run (a resumed training starts a new W&B run under the same name),
//! W&B media (tables, histograms), and plots other than reward, accuracy and loss.

pub mod console;
pub mod jsonl;
pub mod plot;
pub mod progress;
pub mod wandb;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use indicatif::ProgressBar;
use serde_json::{Map, Value};

use self::jsonl::JsonlWriter;
use self::wandb::Sidecar;

/// One optimizer step's metrics, as a stage reports them.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// The stage that took the step (`sft`, `grpo`, ...).
    pub stage: String,
    /// The global optimizer step, counted across stages.
    pub step: u64,
    /// Flat metrics: names ([`console`] lists the ones with a fixed meaning) to numbers.
    pub metrics: Map<String, Value>,
}

impl StepRecord {
    /// An empty record for `stage` at global step `step`.
    pub fn new(stage: &str, step: u64) -> Self {
        Self { stage: stage.to_string(), step, metrics: Map::new() }
    }

    /// Sets metric `key`; a non-finite value (which JSON cannot hold) is stored as `null`.
    pub fn set(&mut self, key: &str, value: f64) {
        let value = serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number);
        self.metrics.insert(key.to_string(), value);
    }

    /// Metric `key` as a number, if present and numeric.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.metrics.get(key).and_then(Value::as_f64)
    }
}

/// A typed metrics struct as a record's flat fields (serialised once; non-finite numbers become
/// `null`, which JSON cannot hold otherwise).
pub fn fields(metrics: &impl serde::Serialize) -> Map<String, Value> {
    match serde_json::to_value(metrics) {
        Ok(Value::Object(map)) => map,
        other => panic!("metrics must serialise to a JSON object, got {other:?}"),
    }
}

/// What the logger does besides writing metrics.jsonl.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggerConfig {
    /// Print a console line every this many steps (and at a stage's last step); 0 prints none.
    pub console_every: u64,
    /// Write `plots/*.png` at stage ends and at [`MetricsLogger::finish`].
    pub plots: bool,
    /// Mirror the metrics to Weights & Biases.
    pub wandb: Option<WandbConfig>,
}

/// Whether the W&B client talks to the server or only writes the run under `run_dir/wandb`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WandbMode {
    /// Stream to the W&B server (needs a login: `WANDB_API_KEY` or `wandb login`).
    Online,
    /// No network; `wandb sync run_dir/wandb/offline-run-*` uploads later.
    #[default]
    Offline,
}

/// How to start the W&B sidecar and what its run is.
#[derive(Debug, Clone, PartialEq)]
pub struct WandbConfig {
    /// Online or offline.
    pub mode: WandbMode,
    /// The W&B project.
    pub project: String,
    /// The W&B team or user; `None` takes the login's default.
    pub entity: Option<String>,
    /// A python with `wandb` installed (`bash scripts/wandb.sh` installs it and prints the path).
    pub python: PathBuf,
    /// The W&B run's display name.
    pub run_name: String,
    /// The resolved recipe, shown as the run's config.
    pub config_json: Value,
}

/// What can go wrong on the metrics side.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A complete line of metrics.jsonl is not a metrics record.
    #[error("{path}:{line}: {message}")]
    Corrupt {
        /// The metrics.jsonl.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The configured python cannot run the W&B client.
    #[error("W&B: {message} (python: {python}); run `bash scripts/wandb.sh`, which installs wandb into .venv and prints the python path to use")]
    WandbPython {
        /// The configured python.
        python: PathBuf,
        /// What failed.
        message: String,
    },
    /// The W&B client is there but could not start the run.
    #[error("W&B: {0}")]
    WandbInit(String),
    /// A plot could not be drawn.
    #[error("plot {path}: {message}")]
    Plot {
        /// The PNG being written.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

impl MetricsError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }
}

/// The stage whose steps are being logged: its last step and its progress bar.
struct StageProgress {
    name: String,
    end_step: u64,
    bar: ProgressBar,
}

/// Writes a run's metrics: metrics.jsonl, console lines, W&B and plots.
pub struct MetricsLogger {
    run_dir: PathBuf,
    /// `None` for a silent logger (the other ranks of a multi-process run).
    jsonl: Option<JsonlWriter>,
    console_every: u64,
    plots: bool,
    wandb: Option<Sidecar>,
    history: Vec<StepRecord>,
    stage: Option<StageProgress>,
}

impl MetricsLogger {
    /// Opens `run_dir/metrics.jsonl` for appending (the records already there become the plots'
    /// history; a line torn by a kill is dropped) and, when configured, starts the W&B run. A
    /// python that cannot run wandb is an error here, before any training work.
    pub fn new(run_dir: &Path, config: LoggerConfig) -> Result<Self, MetricsError> {
        std::fs::create_dir_all(run_dir).map_err(|e| MetricsError::io(run_dir, e))?;
        let wandb = config.wandb.as_ref().map(|w| Sidecar::start(w, run_dir)).transpose()?;
        let (jsonl, history) = JsonlWriter::open(&run_dir.join(jsonl::FILE_NAME))?;
        Ok(Self {
            run_dir: run_dir.to_path_buf(),
            jsonl: Some(jsonl),
            console_every: config.console_every,
            plots: config.plots,
            wandb,
            history,
            stage: None,
        })
    }

    /// A logger that writes and shows nothing (ranks other than 0 of a multi-process run, whose
    /// figures rank 0 logs).
    pub fn silent() -> Self {
        Self {
            run_dir: PathBuf::new(),
            jsonl: None,
            console_every: 0,
            plots: false,
            wandb: None,
            history: Vec::new(),
            stage: None,
        }
    }

    /// Drops the records with step > `step` from metrics.jsonl and the history: called on resume
    /// from the checkpoint at `step`, before the first new record. Returns how many were dropped.
    pub fn truncate_after(&mut self, step: u64) -> Result<usize, MetricsError> {
        self.retain(|r| r.step <= step)
    }

    /// Keeps only the records (in the history and in metrics.jsonl) that satisfy `keep`; a resumed
    /// run drops what was logged after its checkpoint. Returns how many lines were dropped.
    pub fn retain(&mut self, keep: impl Fn(&StepRecord) -> bool) -> Result<usize, MetricsError> {
        self.history.retain(&keep);
        match self.jsonl.as_mut() {
            Some(jsonl) => jsonl.retain(keep),
            None => Ok(0),
        }
    }

    /// Starts a stage whose steps run from `start_step + 1` to `end_step` (global steps; a resumed
    /// stage starts past its first step): shows a progress bar and "step N/end" on console lines.
    pub fn begin_stage(&mut self, stage: &str, start_step: u64, end_step: u64) {
        let bar = match self.jsonl {
            Some(_) => progress::bar(end_step, stage),
            None => indicatif::ProgressBar::hidden(),
        };
        bar.set_position(start_step);
        bar.reset_eta();
        self.stage = Some(StageProgress { name: stage.to_string(), end_step, bar });
    }

    /// Ends the current stage: closes its progress bar and writes the plots when enabled.
    pub fn end_stage(&mut self) -> Result<(), MetricsError> {
        if let Some(stage) = self.stage.take() {
            stage.bar.finish();
        }
        self.write_plots()
    }

    /// Logs one step: a line in metrics.jsonl (written and flushed before this returns), a
    /// console line when due, a W&B row when enabled, and a history entry for the plots.
    pub fn log(&mut self, record: &StepRecord) -> Result<(), MetricsError> {
        if let Some(jsonl) = self.jsonl.as_mut() {
            jsonl.append(record, unix_time())?;
        }
        if let Some(wandb) = self.wandb.as_mut() {
            wandb.log(record);
        }
        let stage = self.stage.as_ref().filter(|s| s.name == record.stage);
        let end_step = stage.map(|s| s.end_step);
        let due =
            self.console_every > 0 && (record.step.is_multiple_of(self.console_every) || Some(record.step) == end_step);
        if due {
            let line = console::format_line(record, end_step);
            match stage {
                Some(s) => s.bar.suspend(|| println!("{line}")),
                None => println!("{line}"),
            }
        }
        if let Some(s) = stage {
            s.bar.set_position(record.step);
        }
        self.history.push(record.clone());
        Ok(())
    }

    /// Whether records still reach W&B: false when it is off or its sidecar has died.
    pub fn wandb_active(&mut self) -> bool {
        self.wandb.as_mut().is_some_and(Sidecar::alive)
    }

    /// Every record of this run so far, in the order logged (including those from before a
    /// resume that [`Self::truncate_after`] kept).
    pub fn history(&self) -> &[StepRecord] {
        &self.history
    }

    /// Writes the plots now when enabled (also done by [`Self::end_stage`] and [`Self::finish`]).
    pub fn write_plots(&self) -> Result<(), MetricsError> {
        if self.plots {
            plot::write_plots(&self.run_dir, &self.history)?;
        }
        Ok(())
    }

    /// Ends the run: closes a stage left open, writes the plots, and finishes the W&B run,
    /// waiting for its sidecar to exit (a sidecar that fails or hangs gets a warning).
    pub fn finish(mut self) -> Result<(), MetricsError> {
        if let Some(stage) = self.stage.take() {
            stage.bar.finish();
        }
        let plots = self.write_plots();
        if let Some(wandb) = self.wandb.take() {
            wandb.finish(wandb::FINISH_TIMEOUT);
        }
        plots
    }
}

fn unix_time() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}
