//! Training data: the recipe's `[data]` table ([`DataSpec`]) becomes a [`Dataset`] of [`Problem`]s —
//! a prompt for the model, a [`Task`] for the verifier and, when the data has one, a reference
//! response for SFT.
//!
//! Sources: a seeded synthetic arithmetic stream (`arithmetic`), and JSONL / Parquet files read into
//! rows (`files`) whose fields are mapped by a known layout (`formats`: GSM8K, MATH, DeepScaleR,
//! HumanEval, APPS, verl; or detected from the first row) or by explicit field names. Prompts given
//! as chat messages are rendered with the model's chat template (`rlvr_rollout::template`).
//! `charset` holds the character-level tokenizers: the arithmetic task's, and a printable-ASCII one
//! (with a plain chat template) for file data on a preset model.
//!
//! Everything is a pure function of (spec, seed, index): `train(index)` walks the rows in a fresh
//! seeded order each epoch, so the data cursor of a checkpoint is one `u64`.
//!
//! Left out: streaming files larger than memory (rows are read whole at load), row fields not named
//! by the mapping (they are not carried into `Task::extra`, except verl's `data_source`, `ability`
//! and `extra_info`), compressed JSONL, Parquet codecs other
//! than snappy and uncompressed.

mod arithmetic;
mod charset;
mod error;
mod files;
mod formats;
mod rng;

use std::path::{Path, PathBuf};

use rlvr_rollout::template::ChatRenderer;
use rlvr_verifiers::Task;
use serde::{Deserialize, Serialize};

use arithmetic::Arithmetic;
pub use charset::{
    arithmetic_tokenizer, text_chat_template, text_tokenizer, write_arithmetic_tokenizer, write_text_tokenizer,
    ARITHMETIC_CHARS, ARITHMETIC_VOCAB, BOS, BOS_ID, EOS, EOS_ID, PAD, PAD_ID, TEXT_CHARS, TEXT_VOCAB, UNK, UNK_ID,
};
pub use error::{DataError, RowRef};
use rng::Rng;

/// Where problems come from: the recipe's `[data]` table, tagged by `source`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case", deny_unknown_fields)]
pub enum DataSpec {
    /// Seeded synthetic integer arithmetic.
    Arithmetic(ArithmeticSpec),
    /// One JSON object per line.
    Jsonl(FileSpec),
    /// A Parquet file with one problem per row.
    Parquet(FileSpec),
}

/// Settings of the synthetic arithmetic task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArithmeticSpec {
    /// Fewest digits of an operand (1-digit operands include 0).
    #[serde(default = "default_min_digits")]
    pub min_digits: u32,
    /// Most digits of an operand (at most 18).
    #[serde(default = "default_max_digits")]
    pub max_digits: u32,
    /// Operands per problem (2 to 16).
    #[serde(default = "default_operands")]
    pub operands: u32,
    /// Operators to draw from: any of `+`, `-`, `*`.
    #[serde(default = "default_ops")]
    pub ops: Vec<String>,
    /// Size of the held-out set, drawn from its own seed stream and never trained on.
    #[serde(default = "default_arithmetic_held_out")]
    pub held_out: usize,
}

fn default_min_digits() -> u32 {
    1
}
fn default_max_digits() -> u32 {
    2
}
fn default_operands() -> u32 {
    2
}
fn default_ops() -> Vec<String> {
    vec!["+".to_string(), "-".to_string()]
}
fn default_arithmetic_held_out() -> usize {
    200
}

impl Default for ArithmeticSpec {
    fn default() -> Self {
        ArithmeticSpec {
            min_digits: default_min_digits(),
            max_digits: default_max_digits(),
            operands: default_operands(),
            ops: default_ops(),
            held_out: default_arithmetic_held_out(),
        }
    }
}

/// A file source: where the rows are and how their fields map onto a [`Problem`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// The training rows.
    pub train: PathBuf,
    /// Held-out rows; without it `held_out` rows are split off `train`.
    #[serde(default)]
    pub test: Option<PathBuf>,
    /// A known layout giving default field names and how answers/tests are read.
    #[serde(default)]
    pub format: Option<FileFormat>,
    /// Field holding the question (overrides the format's default).
    #[serde(default)]
    pub prompt_field: Option<String>,
    /// Field holding the answer, or the solution the answer is read from (gsm8k, math).
    #[serde(default)]
    pub answer_field: Option<String>,
    /// Field holding code tests.
    #[serde(default)]
    pub tests_field: Option<String>,
    /// Field holding the function name `check` is called on.
    #[serde(default)]
    pub entry_point_field: Option<String>,
    /// Field holding the document for the LM-loss stages (default: prompt + reference).
    #[serde(default)]
    pub text_field: Option<String>,
    /// With `test`: how many of its rows to use (0 = all). Without: rows split off `train`.
    #[serde(default)]
    pub held_out: usize,
    /// Field holding a correct response for SFT (overrides the format's; dotted for nested fields).
    #[serde(default)]
    pub reference_field: Option<String>,
    /// The model's prompt; `{prompt}` is replaced by the question (for chat messages: the last
    /// user message's content).
    #[serde(default = "default_prompt_template")]
    pub prompt_template: String,
    /// When prompts are rendered with the model's chat template: `auto` for prompts given as chat
    /// messages (a list of `{role, content}`), `always` also wraps text prompts as one user
    /// message, `never` uses text as is and refuses chat messages.
    #[serde(default)]
    pub chat: ChatMode,
    /// Chat prompts in thinking mode (V3.2's `<think>`; a template's `enable_thinking`).
    #[serde(default)]
    pub thinking: bool,
}

/// When prompts go through the model's chat template (`[data] chat`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatMode {
    /// Chat-message prompts are rendered, text prompts used as they are.
    #[default]
    Auto,
    /// Text prompts become one user message; everything is rendered.
    Always,
    /// No rendering: text prompts only.
    Never,
}

fn default_prompt_template() -> String {
    "{prompt}".to_string()
}

impl FileSpec {
    /// A spec for `train` with every other setting at its default.
    pub fn new(train: impl Into<PathBuf>) -> Self {
        FileSpec {
            train: train.into(),
            test: None,
            format: None,
            prompt_field: None,
            answer_field: None,
            tests_field: None,
            entry_point_field: None,
            text_field: None,
            held_out: 0,
            reference_field: None,
            prompt_template: default_prompt_template(),
            chat: ChatMode::Auto,
            thinking: false,
        }
    }
}

/// Known row layouts (field names as published on the Hugging Face hub).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// `question`, `answer` = solution ending in `#### N`.
    Gsm8k,
    /// `problem`, `solution` with the answer in the last `\boxed{}`.
    Math,
    /// `problem`, `answer`, optional `solution`.
    Deepscaler,
    /// `prompt`, `test` defining `check(candidate)`, `entry_point`, optional `canonical_solution`.
    Humaneval,
    /// `question`, `input_output` = JSON `{"inputs": [...], "outputs": [...]}` of stdio cases.
    Apps,
    /// verl's RL layout: `prompt` (chat messages, or text), `reward_model.ground_truth`;
    /// `data_source`, `ability` and `extra_info` are passed to the verifier in the task.
    Verl,
    /// Decided by the first row's fields (see [`FileFormat::detect`]).
    Auto,
}

impl FileFormat {
    /// The layout a row's fields show: `reward_model` or a list `prompt` → verl; `question` +
    /// `input_output` → apps; `prompt` + `test` + `entry_point` → humaneval; `question` + `answer` →
    /// gsm8k; `problem` + `answer` → deepscaler; `problem` + `solution` → math; else `None` (the
    /// generic `prompt` / `answer` mapping).
    pub fn detect(row: &serde_json::Map<String, serde_json::Value>) -> Option<FileFormat> {
        let has = |k: &str| row.get(k).is_some_and(|v| !v.is_null());
        if has("reward_model") || row.get("prompt").is_some_and(serde_json::Value::is_array) {
            Some(FileFormat::Verl)
        } else if has("question") && has("input_output") {
            Some(FileFormat::Apps)
        } else if has("prompt") && has("test") && has("entry_point") {
            Some(FileFormat::Humaneval)
        } else if has("question") && has("answer") {
            Some(FileFormat::Gsm8k)
        } else if has("problem") && has("answer") {
            Some(FileFormat::Deepscaler)
        } else if has("problem") && has("solution") {
            Some(FileFormat::Math)
        } else {
            None
        }
    }
}

/// One problem: what the model sees, what the verifier checks, and a correct response if known.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// Stable name: `arithmetic/train/<index>`, `arithmetic/held_out/<i>`, or `<file stem>:<row>`.
    pub id: String,
    /// The text given to the model (after `prompt_template`).
    pub prompt: String,
    /// What the verifier checks; `task.prompt` is the same text as `prompt`.
    pub task: Task,
    /// A correct response, for SFT, when the data has one.
    pub reference: Option<String>,
}

/// The problems of one spec and seed.
#[derive(Debug)]
pub struct Dataset {
    seed: u64,
    train: Train,
    held_out: Vec<Problem>,
    skipped: usize,
}

/// The training side: an unbounded stream or a fixed list of rows.
#[derive(Debug)]
enum Train {
    Stream(Arithmetic),
    Rows { problems: Vec<Problem>, texts: Option<Vec<String>> },
}

/// Seed stream of the per-epoch training order.
const EPOCH_ORDER: u64 = 0x6570_6f63_685f_6f72;
/// Seed stream of the shuffle that splits held-out rows off `train`.
const HELD_OUT_SPLIT: u64 = 0x6865_6c64_5f6f_7574;

impl Dataset {
    /// Builds the dataset of `spec`; every problem is a pure function of (`spec`, `seed`, index).
    /// Prompts given as chat messages need [`Dataset::load_with`] and the model's chat encoding.
    pub fn load(spec: &DataSpec, seed: u64) -> Result<Dataset, DataError> {
        Self::load_with(spec, seed, None)
    }

    /// Like [`Dataset::load`], rendering chat-message prompts with `chat` (the model's template,
    /// or V3.2's encoding), without the leading bos text: every sequence starts with the bos id.
    pub fn load_with(spec: &DataSpec, seed: u64, chat: Option<&ChatRenderer>) -> Result<Dataset, DataError> {
        match spec {
            DataSpec::Arithmetic(a) => {
                let (stream, held_out) = Arithmetic::new(a, seed)?;
                Ok(Dataset { seed, train: Train::Stream(stream), held_out, skipped: 0 })
            }
            DataSpec::Jsonl(f) => Self::from_files(f, files::Kind::Jsonl, seed, chat),
            DataSpec::Parquet(f) => Self::from_files(f, files::Kind::Parquet, seed, chat),
        }
    }

    /// Reads train (and test) rows, maps them, and splits off the held-out set.
    fn from_files(
        spec: &FileSpec,
        kind: files::Kind,
        seed: u64,
        chat: Option<&ChatRenderer>,
    ) -> Result<Dataset, DataError> {
        if !spec.prompt_template.contains("{prompt}") {
            let message = format!("{:?} has no {{prompt}} placeholder", spec.prompt_template);
            return Err(DataError::Spec { field: "prompt_template", message });
        }
        let (mut rows, mut skipped) = formats::load(&spec.train, kind, spec, chat)?;
        let held_out = match &spec.test {
            Some(test) => {
                let (mut rows, test_skipped) = formats::load(test, kind, spec, chat)?;
                skipped += test_skipped;
                if spec.held_out > 0 {
                    rows.truncate(spec.held_out);
                }
                rows.into_iter().map(|(p, _)| p).collect()
            }
            None if spec.held_out > 0 => {
                if spec.held_out >= rows.len() {
                    let message = format!("{} leaves no training rows of {}", spec.held_out, rows.len());
                    return Err(DataError::Spec { field: "held_out", message });
                }
                Rng::new(&[seed, HELD_OUT_SPLIT]).shuffle(&mut rows);
                let split = rows.len() - spec.held_out;
                rows.split_off(split).into_iter().map(|(p, _)| p).collect()
            }
            None => Vec::new(),
        };
        let texts =
            spec.text_field.as_ref().map(|_| rows.iter_mut().map(|(_, t)| t.take().unwrap_or_default()).collect());
        let problems = rows.into_iter().map(|(p, _)| p).collect();
        Ok(Dataset { seed, train: Train::Rows { problems, texts }, held_out, skipped })
    }

    /// Number of training problems; `None` for the unbounded synthetic stream.
    pub fn train_len(&self) -> Option<usize> {
        match &self.train {
            Train::Stream(_) => None,
            Train::Rows { problems, .. } => Some(problems.len()),
        }
    }

    /// The training problem at cursor `index`. For files, `index / len` is the epoch and each epoch
    /// visits every row once in its own seeded order.
    pub fn train(&self, index: u64) -> Problem {
        match &self.train {
            Train::Stream(stream) => stream.train(index),
            Train::Rows { problems, .. } => problems[self.row_of(index, problems.len())].clone(),
        }
    }

    /// The held-out problems (evaluation set), in a fixed order.
    pub fn held_out(&self) -> &[Problem] {
        &self.held_out
    }

    /// A document for the LM-loss stages: for arithmetic the problem and its answer (`37+45=82`),
    /// for files the `text_field`, else the prompt followed by the reference (or the prompt alone).
    pub fn pretrain_text(&self, index: u64) -> String {
        if let Train::Rows { problems, texts: Some(texts) } = &self.train {
            return texts[self.row_of(index, problems.len())].clone();
        }
        let problem = self.train(index);
        match (&self.train, problem.reference) {
            (Train::Stream(_), Some(reference)) => problem.prompt + &reference,
            (_, Some(reference)) if problem.prompt.ends_with(char::is_whitespace) => problem.prompt + &reference,
            (_, Some(reference)) => format!("{}\n{}", problem.prompt, reference),
            (_, None) => problem.prompt,
        }
    }

    /// Rows left out because they cannot be verified (APPS call-based problems, no test cases).
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The row visited at cursor `index` of a list of `len` rows.
    fn row_of(&self, index: u64, len: usize) -> usize {
        let len = len as u64;
        let (epoch, pos) = (index / len, index % len);
        rng::permute(pos, len, rng::hash(&[self.seed, EPOCH_ORDER, epoch])) as usize
    }
}

/// The `Task` of a math-style problem.
fn answer_task(prompt: &str, answer: String) -> Task {
    Task { prompt: Some(prompt.to_string()), answer: Some(answer), ..Task::default() }
}

/// The file name for ids and messages: the stem (`gsm8k` for `data/gsm8k.parquet`).
fn file_stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}
