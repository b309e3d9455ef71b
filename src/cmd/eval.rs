//! `rlvr eval`: samples K completions of every problem and prints `{"accuracy", "pass_at_k": {"1":
//! …, "K": …}, "n", …}` (pass@k by the unbiased estimator), plus `"reward/<name>"`, the mean
//! reward of each part, with a weighted list of verifiers.
//!
//! Two ways to say what to evaluate:
//! * `--data FILE` with the same data options as a recipe's `[data]` (`--format`, `--prompt-field`,
//!   `--answer-field`, …, `--prompt-template`, `--chat`): every row of FILE is a problem. JSONL or
//!   Parquet by the extension (else by the file's first bytes), the layout by `--format` or from
//!   the first row (`auto`). Chat-message prompts are rendered with the model's chat template.
//! * `--recipe RUN_DIR/recipe.toml`: the run's data (its held-out problems), prompt rendering,
//!   verifier, sampling, attention and seed, and the settings of its eval stage (`--stage NAME`,
//!   default the last): evaluating a checkpoint of the run (`--model`, default its newest) gives
//!   exactly the figure the in-run eval reported at that checkpoint's step.
//!
//! `--output FILE.jsonl` writes one line per sample: `{"id", "sample", "prompt", "completion",
//! "reward", "outcome", "verdict"}`.

use super::score::{device, Compute};
use anyhow::{bail, Context, Result};
use rlvr_model::AttentionMode;
use rlvr_rollout::engine::{SamplingParams, Sizing};
use rlvr_rollout::template::ChatRenderer;
use rlvr_trainer::checkpoint::Checkpoints;
use rlvr_trainer::data::{DataSpec, Dataset};
use rlvr_trainer::parallel::Dp;
use rlvr_trainer::policy::{Policy, Source};
use rlvr_trainer::recipe::{EvalStage, Recipe, Stage};
use rlvr_trainer::sampler::{Sampler, Settings};
use rlvr_trainer::stages::eval::{eval_slots, evaluate_samples, stage_settings};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Arguments of `rlvr eval`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory (config.json, safetensors, tokenizer.json); with --recipe, default the
    /// run's newest checkpoint.
    #[arg(long, required_unless_present = "recipe")]
    pub model: Option<PathBuf>,
    /// A run's recipe (`RUN_DIR/recipe.toml`, or any recipe): its data, prompts, verifier,
    /// sampling and eval-stage settings.
    #[arg(long, conflicts_with_all = ["data", "verifier", "config"])]
    pub recipe: Option<PathBuf>,
    /// With --recipe: the eval stage whose settings to use (default the recipe's last eval).
    #[arg(long, requires = "recipe")]
    pub stage: Option<String>,
    /// Problems: `.jsonl` or `.parquet` (other names: told apart by their first bytes).
    #[arg(long, required_unless_present = "recipe")]
    pub data: Option<PathBuf>,
    /// The data options of a recipe's `[data]`.
    #[command(flatten)]
    pub fields: Box<DataFlags>,
    /// `math`, `code`, `format`, `length`, `language`, `judge`, or `external:<command>`; omit it
    /// when `--config` holds a weighted list.
    #[arg(long, required_unless_present_any = ["config", "recipe"])]
    pub verifier: Option<String>,
    /// Inline JSON or a file path: a JSON object of `--verifier`'s settings, or (without
    /// `--verifier`) a weighted list as in `rlvr verify --config`:
    /// `[{"kind":"math"},{"kind":"format","weight":0.2}]`.
    #[arg(long)]
    pub config: Option<String>,
    /// Samples per problem (pass@1 and pass@K are reported); with --recipe, the eval stage's.
    #[arg(long)]
    pub samples: Option<usize>,
    /// Tokens per completion at most (default 256; with --recipe, `rollout.max_tokens`).
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Sampling temperature, 0 = greedy (default 1; with --recipe, the eval stage's).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Nucleus mass (default 1; with --recipe, `rollout.top_p`).
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Evaluate only the first N problems (with --recipe, default the stage's `max_problems`).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Seed of the sampling streams (default 0; with --recipe, `run.seed`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Engine slots (concurrent samples; default: every sample of the problems at once, ≤ 512,
    /// as the in-run eval).
    #[arg(long)]
    pub slots: Option<usize>,
    /// One JSON line per sample: prompt, completion, reward, outcome and the whole verdict.
    #[arg(long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub compute: Compute,
}

/// `--data`'s options, as a recipe's `[data]` keys.
#[derive(clap::Args, Debug)]
pub struct DataFlags {
    /// Row layout: gsm8k, math, deepscaler, humaneval, apps, verl, or auto (default: from the
    /// first row's fields).
    #[arg(long, default_value = "auto")]
    pub format: String,
    /// Field holding the question (a recipe's `data.prompt_field`; dotted for nested fields).
    #[arg(long)]
    pub prompt_field: Option<String>,
    /// Field holding the answer or solution (`data.answer_field`).
    #[arg(long)]
    pub answer_field: Option<String>,
    /// Field holding code tests (`data.tests_field`).
    #[arg(long)]
    pub tests_field: Option<String>,
    /// Field holding the function `check` is called on (`data.entry_point_field`).
    #[arg(long)]
    pub entry_point_field: Option<String>,
    /// The model's prompt with `{prompt}` for the question (`data.prompt_template`).
    #[arg(long)]
    pub prompt_template: Option<String>,
    /// Chat template use: auto, always, never (`data.chat`).
    #[arg(long)]
    pub chat: Option<String>,
    /// Chat prompts in thinking mode (`data.thinking`).
    #[arg(long)]
    pub thinking: bool,
}

/// What to evaluate, from a recipe or from the flags.
struct Plan {
    model: PathBuf,
    data: Dataset,
    verifier: Box<dyn rlvr_verifiers::Verifier>,
    settings: Settings,
    pass_k: Vec<usize>,
    limit: Option<usize>,
    seed: u64,
    mode: AttentionMode,
    dtype: rlvr_model::Dtype,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let plan = match &args.recipe {
        Some(recipe) => from_recipe(&args, recipe)?,
        None => from_flags(&args)?,
    };
    let policy =
        Policy::build(&Source::Dir(plan.model.clone()), &plan.model, false, device(args.compute.device)?, plan.dtype)?;
    let problems = plan.data.held_out();
    let problems = &problems[..plan.limit.unwrap_or(problems.len()).min(problems.len())];
    if problems.is_empty() {
        bail!("there are no problems to evaluate");
    }
    let (slots, sizing) = match args.slots {
        Some(n) => (n, Sizing::explicit("--slots", "--max-tokens")),
        None => (
            eval_slots(problems.len(), plan.settings.n),
            Sizing::default_slots(plan.settings.n, "--slots", "--max-tokens"),
        ),
    };
    let mut sampler = Sampler::new(&policy, slots, sizing, plan.settings.sampling.max_tokens, plan.mode, 0)?;
    let parallel = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let eval_args = (
        &policy,
        &mut sampler,
        plan.verifier.as_ref(),
        problems,
        &plan.settings,
        plan.pass_k.as_slice(),
        plan.seed,
        parallel,
        &Dp::single(),
    );
    let (result, samples) = evaluate_samples(eval_args, args.output.is_some())?;
    if let Some(path) = &args.output {
        let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        for sample in &samples {
            serde_json::to_writer(&mut out, sample)?;
            out.write_all(b"\n")?;
        }
        out.flush().with_context(|| format!("writing {}", path.display()))?;
    }
    let mut report = result.to_json();
    report["model"] = json!(plan.model);
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Everything from the run's recipe; flags given override the sampling settings.
fn from_recipe(args: &Args, path: &Path) -> Result<Plan> {
    let recipe = Recipe::load(path, &[])?;
    let evals: Vec<&EvalStage> = recipe
        .stages
        .iter()
        .filter_map(|s| match s {
            Stage::Eval(e) => Some(e),
            _ => None,
        })
        .collect();
    let name = |e: &EvalStage| e.name.clone().unwrap_or_else(|| "eval".into());
    let stage = match &args.stage {
        Some(wanted) => evals.iter().copied().find(|e| name(e) == *wanted).with_context(|| {
            let names: Vec<String> = evals.iter().map(|e| name(e)).collect();
            format!("{} has no eval stage `{wanted}` (its evals: {})", path.display(), names.join(", "))
        })?,
        None => evals
            .last()
            .copied()
            .with_context(|| format!("{} has no eval stage; without one, use --data and --verifier", path.display()))?,
    };
    let mut settings = stage_settings(&recipe.rollout.sampling, stage);
    override_sampling(args, &mut settings);
    let model = match &args.model {
        Some(model) => model.clone(),
        None => {
            let run_dir = recipe.run_dir(None);
            let newest = Checkpoints::new(&run_dir, 1).list().pop();
            newest
                .map(|(_, dir)| dir)
                .with_context(|| format!("{} holds no checkpoint; give --model", run_dir.display()))?
        }
    };
    let chat = rlvr_trainer::session::chat_renderer(&recipe)?;
    let data = Dataset::load_with(&recipe.data, recipe.run.seed, chat.as_ref()).context("loading the recipe's data")?;
    let verifier = recipe.reward()?.build().context("building the recipe's verifier")?;
    let pass_k = match args.samples {
        Some(k) if k != stage.samples => ks(k),
        _ => stage.pass_k(),
    };
    // `--mode` as given (checked against the model); else the recipe's rollout attention, which a
    // checkpoint from before `[model] add_indexer` converted the model cannot take: dense there.
    let mode = match flag_given("--mode") {
        true => args.compute.mode_for(&model)?,
        false if !rlvr_model::ModelConfig::from_path(&model)?.has_indexer() => AttentionMode::Dense,
        false => recipe.rollout.attention,
    };
    let dtype = if flag_given("--dtype") { args.compute.dtype } else { recipe.run.dtype };
    Ok(Plan {
        model,
        data,
        verifier,
        settings,
        pass_k,
        limit: args.limit.or(stage.max_problems),
        seed: args.seed.unwrap_or(recipe.run.seed),
        mode,
        dtype,
    })
}

/// `--data` with the recipe-like data flags, `--verifier`/`--config`, and the sampling flags.
fn from_flags(args: &Args) -> Result<Plan> {
    let data_path = args.data.clone().context("--data is needed without --recipe")?;
    let model = args.model.clone().context("--model is needed without --recipe")?;
    let source = file_kind(&data_path)?;
    let mut spec = json!({ "source": source, "train": data_path, "test": data_path, "format": args.fields.format });
    let optional = [
        ("prompt_field", &args.fields.prompt_field),
        ("answer_field", &args.fields.answer_field),
        ("tests_field", &args.fields.tests_field),
        ("entry_point_field", &args.fields.entry_point_field),
        ("prompt_template", &args.fields.prompt_template),
        ("chat", &args.fields.chat),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            spec[key] = json!(value);
        }
    }
    spec["thinking"] = json!(args.fields.thinking);
    let spec: DataSpec = serde_json::from_value(spec).context("the data options (--format, --chat, …)")?;
    let chat =
        ChatRenderer::for_model_dir(&model).with_context(|| format!("the chat template of {}", model.display()))?;
    let seed = args.seed.unwrap_or(0);
    let data =
        Dataset::load_with(&spec, seed, Some(&chat)).with_context(|| format!("loading {}", data_path.display()))?;
    let verifier = super::verify::build_verifier(args.verifier.as_deref(), args.config.as_deref())?;
    let samples = args.samples.unwrap_or(1);
    anyhow::ensure!(samples >= 1, "--samples must be ≥ 1");
    let mut settings = Settings {
        n: samples,
        sampling: SamplingParams { max_tokens: 256, temperature: 1.0, top_p: 1.0, ..SamplingParams::default() },
        sampling_mask: false,
        routing: false,
    };
    override_sampling(args, &mut settings);
    Ok(Plan {
        mode: args.compute.mode_for(&model)?,
        model,
        data,
        verifier,
        settings,
        pass_k: ks(samples),
        limit: args.limit,
        seed,
        dtype: args.compute.dtype,
    })
}

/// The sampling flags given, over `settings`.
fn override_sampling(args: &Args, settings: &mut Settings) {
    if let Some(n) = args.samples {
        settings.n = n;
    }
    if let Some(t) = args.max_tokens {
        settings.sampling.max_tokens = t;
    }
    if let Some(t) = args.temperature {
        settings.sampling.temperature = t;
    }
    if let Some(p) = args.top_p {
        settings.sampling.top_p = p;
    }
}

/// pass@1 and pass@k for k samples.
fn ks(samples: usize) -> Vec<usize> {
    if samples > 1 {
        vec![1, samples]
    } else {
        vec![1]
    }
}

/// `jsonl` or `parquet`: by the extension, else by the first bytes (`PAR1` is Parquet's magic).
fn file_kind(path: &Path) -> Result<&'static str> {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("parquet") => return Ok("parquet"),
        Some("jsonl" | "json" | "ndjson") => return Ok("jsonl"),
        _ => {}
    }
    let mut head = [0u8; 4];
    let mut file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let n = std::io::Read::read(&mut file, &mut head).with_context(|| format!("reading {}", path.display()))?;
    Ok(if n == 4 && &head == b"PAR1" { "parquet" } else { "jsonl" })
}

/// Whether `--FLAG` was given (else a recipe's setting decides).
fn flag_given(flag: &str) -> bool {
    let eq = format!("{flag}=");
    std::env::args_os().any(|a| a.to_str().is_some_and(|a| a == flag || a.starts_with(&eq)))
}
