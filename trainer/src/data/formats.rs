//! Field mapping: a row (JSON object) becomes a [`Problem`]. An explicit `*_field` of the spec wins
//! over the format's default field name; the format decides how the answer or tests are read.
//!
//! | format | prompt | answer / tests | reference |
//! |---|---|---|---|
//! | `gsm8k` | `question` | text after the last `####` of `answer` | `answer` with `<<…>>` calculator notes removed, `#### N` kept |
//! | `math` | `problem` | last `\boxed{}` of `solution` | `solution` |
//! | `deepscaler` | `problem` | `answer` as is | `solution` when present |
//! | `humaneval` | `prompt` | `test` as assert code, `entry_point` | ```` ```python ```` prompt + `canonical_solution` when present |
//! | `apps` | `question` | `input_output` JSON `{"inputs", "outputs"}` → stdio cases | none |
//! | `verl` | `prompt` (chat messages or text) | `reward_model.ground_truth` | none |
//! | none | `prompt` | `answer`, or `tests_field` (+ `entry_point_field`) | none |
//!
//! `auto` picks the layout from the first row's fields ([`FileFormat::detect`]). Field names may be
//! dotted paths into nested objects. A prompt field holding a list of `{role, content}` messages is
//! rendered with the model's chat template (`prompt_template` wraps the last user message's
//! content, which is also the task's `prompt`); `chat = "always"` renders text prompts as one user
//! message. `reference_field` names a reference response for any layout. verl rows pass
//! `data_source`, `ability` and `extra_info` to the verifier in `Task::extra`.
//!
//! Tests given as a string are assert code; as an array of strings (MBPP's `test_list`), assert
//! lines; as an object, a `CodeTests` (`stdio`, `assert`, `entry_point`). APPS rows that cannot be
//! checked on stdin/stdout — call-based problems (`fn_name`) and rows without cases — are skipped
//! and counted. The `#### N` line is kept in GSM8K references because the math verifier reads it.

use std::path::Path;

use rlvr_rollout::template::ChatRenderer;
use rlvr_verifiers::{CodeTests, StdioCase, Task};
use serde_json::{Map, Value};

use super::files::{json_kind, read_rows, Kind};
use super::{file_stem, ChatMode, DataError, FileFormat, FileSpec, Problem, RowRef};

/// The mapped rows of `path` (each with its `text_field` document) and the number skipped.
pub(crate) type Loaded = (Vec<(Problem, Option<String>)>, usize);

/// Reads and maps every row of `path`; chat-message prompts are rendered with `chat`.
pub(crate) fn load(path: &Path, kind: Kind, spec: &FileSpec, chat: Option<&ChatRenderer>) -> Result<Loaded, DataError> {
    let stem = file_stem(path);
    let mut problems = Vec::new();
    let mut skipped = 0;
    let rows = read_rows(path, kind)?;
    let mut spec = spec.clone();
    if spec.format == Some(FileFormat::Auto) {
        spec.format = rows.first().and_then(|(_, row)| FileFormat::detect(row));
    }
    let spec = &spec;
    for (at, row) in rows {
        let fields = Fields { row: &row, path, at };
        let Some(problem) = map_row(&fields, spec, format!("{stem}:{}", at.number()), chat)? else {
            skipped += 1;
            continue;
        };
        let text = spec.text_field.as_deref().map(|name| fields.text(name)).transpose()?;
        problems.push((problem, text));
    }
    if problems.is_empty() {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    Ok((problems, skipped))
}

/// What a row says about checking answers.
struct Check {
    answer: Option<String>,
    tests: Option<CodeTests>,
    reference: Option<String>,
}

/// One row as a problem; `None` for a row that cannot be checked (see the module docs).
fn map_row(f: &Fields, spec: &FileSpec, id: String, chat: Option<&ChatRenderer>) -> Result<Option<Problem>, DataError> {
    let name = |explicit: &Option<String>, default: &'static str| explicit.clone().unwrap_or(default.to_string());
    let default_prompt = match spec.format {
        Some(FileFormat::Gsm8k | FileFormat::Apps) => "question",
        Some(FileFormat::Math | FileFormat::Deepscaler) => "problem",
        Some(FileFormat::Humaneval | FileFormat::Verl | FileFormat::Auto) | None => "prompt",
    };
    let prompt_field = name(&spec.prompt_field, default_prompt);
    let (question, messages) = match f.value(&prompt_field)? {
        Value::Array(messages) => (last_user_content(f, &prompt_field, messages)?, Some(messages.clone())),
        _ => (f.text(&prompt_field)?, None),
    };
    let check = match spec.format {
        Some(FileFormat::Gsm8k) => gsm8k(f, &name(&spec.answer_field, "answer"))?,
        Some(FileFormat::Math) => math(f, &name(&spec.answer_field, "solution"))?,
        Some(FileFormat::Deepscaler) => Check {
            answer: Some(f.text(&name(&spec.answer_field, "answer"))?),
            tests: None,
            reference: f.opt_text("solution")?,
        },
        Some(FileFormat::Humaneval) => {
            let mut tests = code_tests(f, &name(&spec.tests_field, "test"))?;
            tests.entry_point = Some(f.text(&name(&spec.entry_point_field, "entry_point"))?);
            let reference = f.opt_text("canonical_solution")?.map(|body| format!("```python\n{question}{body}```"));
            Check { answer: None, tests: Some(tests), reference }
        }
        Some(FileFormat::Apps) => match apps(f, &name(&spec.tests_field, "input_output"))? {
            Some(stdio) => {
                Check { answer: None, tests: Some(CodeTests { stdio, ..CodeTests::default() }), reference: None }
            }
            None => return Ok(None),
        },
        Some(FileFormat::Verl) => Check {
            answer: Some(f.text(&name(&spec.answer_field, "reward_model.ground_truth"))?),
            tests: None,
            reference: None,
        },
        Some(FileFormat::Auto) | None => generic(f, spec)?,
    };
    let question = spec.prompt_template.replace("{prompt}", &question);
    let prompt = match (messages, spec.chat) {
        (Some(_), ChatMode::Never) => {
            return Err(f.bad(&prompt_field, "holds chat messages, and data.chat = \"never\"".to_string()))
        }
        (Some(mut messages), _) => {
            // The template goes around the last user message's content, as around a text prompt.
            if let Some(last) =
                messages.iter_mut().rev().find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
            {
                last["content"] = Value::String(question.clone());
            }
            render(f, &prompt_field, chat, &messages, spec.thinking)?
        }
        (None, ChatMode::Always) => {
            let messages = [serde_json::json!({"role": "user", "content": question})];
            render(f, &prompt_field, chat, &messages, spec.thinking)?
        }
        (None, _) => question.clone(),
    };
    let mut extra = Map::new();
    if spec.format == Some(FileFormat::Verl) {
        for key in ["data_source", "ability", "extra_info"] {
            if let Some(value) = f.row.get(key).filter(|v| !v.is_null()) {
                extra.insert(key.to_string(), value.clone());
            }
        }
    }
    let reference = match &spec.reference_field {
        Some(field) => Some(f.text(field)?),
        None => check.reference,
    };
    let task = Task { prompt: Some(question), answer: check.answer, tests: check.tests, extra };
    Ok(Some(Problem { id, prompt, task, reference }))
}

/// The content of the last user message of a chat-message prompt (what `prompt_template` wraps
/// and the task's `prompt`).
fn last_user_content(f: &Fields, field: &str, messages: &[Value]) -> Result<String, DataError> {
    for (i, message) in messages.iter().enumerate() {
        let ok =
            message.get("role").is_some_and(Value::is_string) && message.get("content").is_some_and(Value::is_string);
        if !ok {
            return Err(
                f.bad(field, format!("message {i} is not a {{\"role\": …, \"content\": \"…\"}} object: {message}"))
            );
        }
    }
    let last = messages.iter().rev().find(|m| m["role"] == "user");
    match last {
        Some(m) => Ok(m["content"].as_str().unwrap_or_default().to_string()),
        None => Err(f.bad(field, "has no user message".to_string())),
    }
}

/// A chat prompt rendered with the model's chat encoding, without its leading bos text.
fn render(
    f: &Fields,
    field: &str,
    chat: Option<&ChatRenderer>,
    messages: &[Value],
    thinking: bool,
) -> Result<String, DataError> {
    let Some(chat) = chat else {
        let message = "holds chat messages, which need the model's chat template: give model.path (its tokenizer_config.json's chat_template, else DeepSeek-V3.2's encoding)";
        return Err(f.bad(field, message.to_string()));
    };
    chat.render_without_bos(messages, thinking).map_err(|e| f.bad(field, e.to_string()))
}

/// GSM8K: the answer follows the last `####`; the reference drops `<<48/2=24>>` calculator notes.
fn gsm8k(f: &Fields, field: &str) -> Result<Check, DataError> {
    let solution = f.text(field)?;
    let answer = solution.rfind("####").map(|pos| solution[pos + 4..].lines().next().unwrap_or("").trim());
    let Some(answer) = answer.filter(|a| !a.is_empty()) else {
        return Err(f.bad(field, "no `#### <answer>` line".to_string()));
    };
    Ok(Check { answer: Some(answer.to_string()), tests: None, reference: Some(strip_calculator_notes(&solution)) })
}

/// MATH: the answer is the content of the last `\boxed{}` of the solution.
fn math(f: &Fields, field: &str) -> Result<Check, DataError> {
    let solution = f.text(field)?;
    match rlvr_verifiers::math::extract(&solution, false) {
        Some(found) if found.source == "boxed" => {
            Ok(Check { answer: Some(found.text), tests: None, reference: Some(solution) })
        }
        _ => Err(f.bad(field, "no \\boxed{} answer".to_string())),
    }
}

/// APPS: stdio cases from the `input_output` JSON; `None` when the row has none to run.
fn apps(f: &Fields, field: &str) -> Result<Option<Vec<StdioCase>>, DataError> {
    let parsed = match f.value(field)? {
        Value::String(s) if s.trim().is_empty() => return Ok(None),
        Value::String(s) => serde_json::from_str(s).map_err(|e| f.bad(field, format!("not JSON: {e}")))?,
        other => other.clone(),
    };
    let Value::Object(cases) = parsed else {
        return Err(f.bad(field, format!("expected an object, got {}", json_kind(&parsed))));
    };
    if cases.get("fn_name").is_some_and(|v| !v.is_null()) {
        return Ok(None);
    }
    let inputs = case_texts(f, field, &cases, "inputs")?;
    let outputs = case_texts(f, field, &cases, "outputs")?;
    if inputs.len() != outputs.len() {
        return Err(f.bad(field, format!("{} inputs but {} outputs", inputs.len(), outputs.len())));
    }
    let stdio: Vec<StdioCase> =
        inputs.into_iter().zip(outputs).map(|(input, output)| StdioCase { input, output }).collect();
    Ok((!stdio.is_empty()).then_some(stdio))
}

/// `inputs` / `outputs` of APPS: each case a string, or a list of lines (TACO) joined with newlines.
fn case_texts(f: &Fields, field: &str, cases: &Map<String, Value>, key: &str) -> Result<Vec<String>, DataError> {
    let Some(Value::Array(items)) = cases.get(key) else {
        return Err(f.bad(field, format!("`{key}` must be an array")));
    };
    items
        .iter()
        .map(|item| match item {
            Value::String(s) => Some(s.clone()),
            Value::Array(lines) => {
                lines.iter().map(Value::as_str).collect::<Option<Vec<_>>>().map(|l| l.join("\n") + "\n")
            }
            _ => None,
        })
        .collect::<Option<Vec<String>>>()
        .ok_or_else(|| f.bad(field, format!("`{key}` must hold strings or lists of strings")))
}

/// No format: `answer` (or `answer_field`) and/or `tests_field` with `entry_point_field`.
fn generic(f: &Fields, spec: &FileSpec) -> Result<Check, DataError> {
    let mut tests = spec.tests_field.as_deref().map(|name| code_tests(f, name)).transpose()?;
    if let (Some(tests), Some(name)) = (tests.as_mut(), spec.entry_point_field.as_deref()) {
        tests.entry_point = Some(f.text(name)?);
    }
    let answer = match (spec.answer_field.as_deref(), &tests) {
        (Some(name), _) => Some(f.text(name)?),
        (None, None) => Some(f.text("answer")?),
        (None, Some(_)) => None,
    };
    Ok(Check { answer, tests, reference: None })
}

/// Code tests from a string (assert code), an array of assert strings, or a `CodeTests` object.
fn code_tests(f: &Fields, field: &str) -> Result<CodeTests, DataError> {
    let assert = |code: String| CodeTests { assert: Some(code), ..CodeTests::default() };
    match f.value(field)? {
        Value::String(code) => Ok(assert(code.clone())),
        Value::Array(lines) => match lines.iter().map(Value::as_str).collect::<Option<Vec<_>>>() {
            Some(lines) => Ok(assert(lines.join("\n"))),
            None => Err(f.bad(field, "an array of tests must hold only strings".to_string())),
        },
        object @ Value::Object(_) => serde_json::from_value(object.clone()).map_err(|e| f.bad(field, e.to_string())),
        other => Err(f.bad(field, format!("expected tests, got {}", json_kind(other)))),
    }
}

/// Removes GSM8K's `<<expression=result>>` calculator annotations.
fn strip_calculator_notes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("<<") {
        let Some(close) = rest[open..].find(">>") else { break };
        out.push_str(&rest[..open]);
        rest = &rest[open + close + 2..];
    }
    out.push_str(rest);
    out
}

/// One row's fields, with what error messages need to name it.
struct Fields<'a> {
    row: &'a Map<String, Value>,
    path: &'a Path,
    at: RowRef,
}

impl Fields<'_> {
    /// A field by name, or by a dotted path into nested objects (`reward_model.ground_truth`).
    fn get(&self, name: &str) -> Option<&Value> {
        if let Some(value) = self.row.get(name) {
            return Some(value);
        }
        let mut parts = name.split('.');
        let mut value = self.row.get(parts.next()?)?;
        for part in parts {
            value = value.as_object()?.get(part)?;
        }
        Some(value)
    }

    /// A present, non-null field.
    fn value(&self, name: &str) -> Result<&Value, DataError> {
        match self.get(name) {
            None | Some(Value::Null) => {
                Err(DataError::MissingField { path: self.path.to_path_buf(), at: self.at, field: name.to_string() })
            }
            Some(value) => Ok(value),
        }
    }

    /// A field as text: strings as they are, numbers written out (an answer stored as `42`).
    fn text(&self, name: &str) -> Result<String, DataError> {
        match self.value(name)? {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(self.bad(name, format!("expected a string, got {}", json_kind(other)))),
        }
    }

    /// Like [`Fields::text`], `None` when absent, null or empty.
    fn opt_text(&self, name: &str) -> Result<Option<String>, DataError> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => Ok(Some(self.text(name)?).filter(|t| !t.is_empty())),
        }
    }

    /// A [`DataError::BadField`] for this row.
    fn bad(&self, name: &str, message: String) -> DataError {
        DataError::BadField { path: self.path.to_path_buf(), at: self.at, field: name.to_string(), message }
    }
}
