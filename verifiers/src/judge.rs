//! Rubric judge: a generative reward model over any OpenAI-compatible chat endpoint (`rlvr serve`
//! included, so one rlvr model can judge another's completions), for tasks no rule can check.
//!
//! Each call renders `template` with the task's rubric (the task field `rubric_field`, or one fixed
//! `rubric` for every task), the task's `prompt` and the completion (by default only its answer,
//! the text after `close`), posts it to `{base_url}/v1/chat/completions` and reads the reply's
//! `choices[0].message.content` under a strict output contract: exactly one line
//! `SCORE: <number>` (the label is `score_label`), the number a plain decimal in
//! [`min_score`, `max_score`]. Text after the judge's own `</think>` is read when it has one.
//! `reward = (score − min_score) / (max_score − min_score)`; the outcome is `Correct` at or above
//! `pass_score` (the middle of the range by default), `Incorrect` below.
//!
//! Nothing the judge does is a silent 0: a reply without exactly one well-formed score line in
//! range, a body that is not a chat completion, an HTTP error status (after `retries` more tries
//! for 5xx and 429, with doubling backoff) or a connection that cannot be made is an `Error`
//! verdict, and a call that outlives `timeout_s` a `Timeout` verdict; each carries the reason in
//! `detail.error`. Every verdict keeps the request body (`detail.request`) and the judge's text
//! (`detail.judgement`, or the raw body as `detail.response` when there is no text to read).
//! At most `max_concurrency` requests of one verifier are in flight at once; `timeout_s` counts
//! from when a request gets its turn and covers its retries. The proxy variables (`HTTP_PROXY`,
//! `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`) apply: a judge on this machine behind a proxy setting
//! needs its host in `NO_PROXY`.

use crate::{Outcome, Task, Verdict, Verifier, VerifyError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// The template used when a config names none.
pub const DEFAULT_TEMPLATE: &str = "You are grading a response to a task against a rubric.

## Task
{prompt}

## Rubric
{rubric}

## Response
{completion}

Judge the response by the rubric alone. Explain your judgement briefly, then end with exactly one line of the form
{label}: <number>
where <number> is between {min_score} and {max_score}, {max_score} being best. Write no other line starting with {label}:.";

/// Settings of the rubric judge (`kind = "judge"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeConfig {
    /// Server address, e.g. `http://127.0.0.1:8000` (`/v1/chat/completions` is appended; a base
    /// ending in `/v1` gets `/chat/completions`, one ending in `/chat/completions` is used as is).
    pub base_url: String,
    /// Model name sent in the request; omitted when unset (`rlvr serve` serves one model).
    #[serde(default)]
    pub model: Option<String>,
    /// API key sent as `Authorization: Bearer …`. Prefer `api_key_env`.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Name of the environment variable holding the API key (read when the verifier is built).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Optional system message.
    #[serde(default)]
    pub system: Option<String>,
    /// User message; `{prompt}`, `{rubric}`, `{completion}`, `{min_score}`, `{max_score}` and
    /// `{label}` are filled in (in one pass: text filled in is never read for placeholders).
    #[serde(default = "default_template")]
    pub template: String,
    /// One rubric for every task; when unset, each task's `rubric_field` is read.
    #[serde(default)]
    pub rubric: Option<String>,
    /// The task field holding its rubric (a string, or a list of strings read as bullet points).
    #[serde(default = "default_rubric_field")]
    pub rubric_field: String,
    /// Lowest score the judge may give.
    #[serde(default)]
    pub min_score: f64,
    /// Highest score the judge may give.
    #[serde(default = "default_max_score")]
    pub max_score: f64,
    /// Score at and above which the outcome is `Correct`; the middle of the range when unset.
    #[serde(default)]
    pub pass_score: Option<f64>,
    /// Label of the score line.
    #[serde(default = "default_label")]
    pub score_label: String,
    /// Sampling temperature of the judge.
    #[serde(default)]
    pub temperature: f64,
    /// Most tokens the judge may write.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Whether the judge sees the whole completion; by default only the text after `close` (the
    /// whole completion when it has no `close`).
    #[serde(default)]
    pub judge_reasoning: bool,
    /// Tag that ends the reasoning, in the completion and in the judge's reply.
    #[serde(default = "default_close")]
    pub close: String,
    /// Most requests in flight at once.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// Seconds one judgement may take from when its request gets its turn, retries included.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: f64,
    /// Extra tries after a 5xx, a 429 or a failed connection.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Wait before the first retry, seconds; doubled for each further one.
    #[serde(default = "default_backoff_s")]
    pub backoff_s: f64,
    /// Name used in metrics; `"judge"` by default.
    #[serde(default = "default_name")]
    pub name: String,
}

fn default_template() -> String {
    DEFAULT_TEMPLATE.into()
}
fn default_rubric_field() -> String {
    "rubric".into()
}
fn default_max_score() -> f64 {
    10.0
}
fn default_label() -> String {
    "SCORE".into()
}
fn default_max_tokens() -> u32 {
    1024
}
fn default_close() -> String {
    "</think>".into()
}
fn default_max_concurrency() -> usize {
    8
}
fn default_timeout_s() -> f64 {
    120.0
}
fn default_retries() -> u32 {
    2
}
fn default_backoff_s() -> f64 {
    0.5
}
fn default_name() -> String {
    "judge".into()
}

impl JudgeConfig {
    /// A config for the judge at `base_url`, every other setting at its default.
    pub fn new(base_url: impl Into<String>) -> Self {
        JudgeConfig {
            base_url: base_url.into(),
            model: None,
            api_key: None,
            api_key_env: None,
            system: None,
            template: default_template(),
            rubric: None,
            rubric_field: default_rubric_field(),
            min_score: 0.0,
            max_score: default_max_score(),
            pass_score: None,
            score_label: default_label(),
            temperature: 0.0,
            max_tokens: default_max_tokens(),
            judge_reasoning: false,
            close: default_close(),
            max_concurrency: default_max_concurrency(),
            timeout_s: default_timeout_s(),
            retries: default_retries(),
            backoff_s: default_backoff_s(),
            name: default_name(),
        }
    }
}

/// A counting semaphore: at most `limit` holders at once.
struct Semaphore {
    free: Mutex<usize>,
    freed: Condvar,
}

/// A held place of a [`Semaphore`], given back on drop.
struct Permit<'a>(&'a Semaphore);

impl Semaphore {
    fn new(limit: usize) -> Self {
        Semaphore { free: Mutex::new(limit), freed: Condvar::new() }
    }

    fn acquire(&self) -> Permit<'_> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

/// The rubric judge as a verifier.
pub struct JudgeVerifier {
    config: JudgeConfig,
    url: String,
    api_key: Option<String>,
    agent: ureq::Agent,
    slots: Semaphore,
}

/// Placeholders a template may use.
const PLACEHOLDERS: [&str; 6] = ["prompt", "rubric", "completion", "min_score", "max_score", "label"];

/// Fills `{name}` placeholders in one pass; `value(name)` gives each one's text. Braces that do not
/// spell a known placeholder stay as they are.
fn render(template: &str, mut value: impl FnMut(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len() * 2);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}').map(|close| &after[..close]).filter(|name| PLACEHOLDERS.contains(name)) {
            Some(name) => {
                out.push_str(&value(name));
                rest = &after[name.len() + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whether `line` is an attempt at a score line: the label (any case), optional spaces, a colon.
fn is_score_line(line: &str, label: &str) -> bool {
    let line = line.trim_start();
    line.get(..label.len()).is_some_and(|head| head.eq_ignore_ascii_case(label))
        && line[label.len()..].trim_start().starts_with(':')
}

/// A plain decimal: optional sign, digits, optional fraction.
fn parse_decimal(text: &str) -> Option<f64> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let plain = !(whole.is_empty() && frac.is_empty())
        && whole.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit());
    plain.then(|| text.parse::<f64>().ok()).flatten().filter(|x| x.is_finite())
}

/// The score in `judgement` under the contract: exactly one line `LABEL: <decimal>` (the label in
/// its configured case) with the number in `[min, max]`; `Err` says what is wrong.
pub fn parse_score(judgement: &str, label: &str, min: f64, max: f64) -> Result<f64, String> {
    let lines: Vec<&str> = judgement.lines().filter(|l| is_score_line(l, label)).collect();
    let line = match lines.as_slice() {
        [] => return Err(format!("no `{label}: <number>` line")),
        [one] => one.trim(),
        many => return Err(format!("{} `{label}:` lines; exactly one is allowed", many.len())),
    };
    let number = line
        .strip_prefix(label)
        .and_then(|r| r.trim_start().strip_prefix(':'))
        .map(str::trim)
        .ok_or_else(|| format!("malformed score line {line:?}: the label must be `{label}`"))?;
    let score = parse_decimal(number)
        .ok_or_else(|| format!("malformed score line {line:?}: {number:?} is not a plain number"))?;
    if !(min..=max).contains(&score) {
        return Err(format!("score {score} is outside [{min}, {max}]"));
    }
    Ok(score)
}

/// How one HTTP exchange ended.
enum Exchange {
    /// A 2xx answer and its body.
    Answer(String),
    /// Worth another try (5xx, 429, a connection that failed); the reason, and the status and body
    /// when there was a response.
    Retry(String, Option<(u16, String)>),
    /// Not worth another try; the reason, and the status and body when there was a response.
    Fail(String, Option<(u16, String)>),
    /// The deadline passed.
    Timeout(String),
}

impl JudgeVerifier {
    /// A judge for `config`; `Err` naming the field when a setting is invalid (or `api_key_env`
    /// names an unset variable).
    pub fn new(config: JudgeConfig) -> Result<Self, VerifyError> {
        let bad = |field: &str, why: String| VerifyError::Config(format!("judge `{field}`: {why}"));
        let base = config.base_url.trim().trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(bad("base_url", format!("must start with http:// or https://, got {:?}", config.base_url)));
        }
        let url = if base.ends_with("/chat/completions") {
            base.to_string()
        } else if base.ends_with("/v1") {
            format!("{base}/chat/completions")
        } else {
            format!("{base}/v1/chat/completions")
        };
        let (min, max) = (config.min_score, config.max_score);
        if !(min.is_finite() && max.is_finite() && min < max) {
            return Err(bad("max_score", format!("must be finite and above min_score ({min}), got {max}")));
        }
        if let Some(pass) = config.pass_score {
            if !(min..=max).contains(&pass) {
                return Err(bad("pass_score", format!("must be in [{min}, {max}], got {pass}")));
            }
        }
        for needed in ["{completion}", "{rubric}"] {
            if !config.template.contains(needed) {
                return Err(bad("template", format!("must contain {needed}")));
            }
        }
        let label = &config.score_label;
        if label.trim().is_empty() || label.trim() != label || label.contains([':', '\n']) {
            return Err(bad(
                "score_label",
                format!("must be a word without colon or surrounding space, got {label:?}"),
            ));
        }
        if config.rubric.is_none() && config.rubric_field.trim().is_empty() {
            return Err(bad("rubric_field", "must name a task field when no `rubric` is set".into()));
        }
        if !(config.temperature.is_finite() && config.temperature >= 0.0) {
            return Err(bad("temperature", format!("must be ≥ 0, got {}", config.temperature)));
        }
        if config.max_tokens == 0 {
            return Err(bad("max_tokens", "must be at least 1".into()));
        }
        if config.close.is_empty() {
            return Err(bad("close", "must not be empty".into()));
        }
        if config.max_concurrency == 0 {
            return Err(bad("max_concurrency", "must be at least 1".into()));
        }
        if !(config.timeout_s.is_finite() && config.timeout_s > 0.0) {
            return Err(bad("timeout_s", format!("must be > 0, got {}", config.timeout_s)));
        }
        if !(config.backoff_s.is_finite() && config.backoff_s >= 0.0) {
            return Err(bad("backoff_s", format!("must be ≥ 0, got {}", config.backoff_s)));
        }
        if config.name.trim().is_empty() {
            return Err(bad("name", "must not be empty".into()));
        }
        let api_key = match (&config.api_key, &config.api_key_env) {
            (Some(_), Some(_)) => return Err(bad("api_key_env", "set either api_key or api_key_env, not both".into())),
            (Some(key), None) => Some(key.clone()),
            (None, Some(var)) => Some(
                std::env::var(var)
                    .map_err(|_| bad("api_key_env", format!("environment variable {var:?} is not set")))?,
            ),
            (None, None) => None,
        };
        let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
        let slots = Semaphore::new(config.max_concurrency);
        Ok(JudgeVerifier { config, url, api_key, agent, slots })
    }

    /// The endpoint requests go to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The task's rubric: the fixed one, or the task's field.
    fn rubric(&self, task: &Task) -> Result<String, VerifyError> {
        if let Some(rubric) = &self.config.rubric {
            return Ok(rubric.clone());
        }
        let field = &self.config.rubric_field;
        match task.extra.get(field) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .map(|item| item.as_str().map(|s| format!("- {s}")))
                .collect::<Option<Vec<_>>>()
                .map(|lines| lines.join("\n"))
                .ok_or_else(|| VerifyError::InvalidTask(format!("rubric field `{field}` must hold strings"))),
            Some(other) => {
                Err(VerifyError::InvalidTask(format!("rubric field `{field}` must be a non-empty string, got {other}")))
            }
            None => Err(VerifyError::InvalidTask(format!("task has no rubric field `{field}`"))),
        }
    }

    /// The request body for one judgement.
    pub fn request(&self, task: &Task, completion: &str) -> Result<Value, VerifyError> {
        let rubric = self.rubric(task)?;
        let judged = match completion.split_once(self.config.close.as_str()) {
            Some((_, answer)) if !self.config.judge_reasoning => answer.trim(),
            _ => completion.trim(),
        };
        let prompt = if self.config.template.contains("{prompt}") {
            task.prompt.as_deref().ok_or(VerifyError::MissingField("prompt"))?
        } else {
            ""
        };
        let user = render(&self.config.template, |name| match name {
            "prompt" => prompt.to_string(),
            "rubric" => rubric.clone(),
            "completion" => judged.to_string(),
            "min_score" => self.config.min_score.to_string(),
            "max_score" => self.config.max_score.to_string(),
            _ => self.config.score_label.clone(),
        });
        let mut messages = Vec::with_capacity(2);
        if let Some(system) = &self.config.system {
            messages.push(json!({ "role": "system", "content": system }));
        }
        messages.push(json!({ "role": "user", "content": user }));
        let mut body = Map::new();
        if let Some(model) = &self.config.model {
            body.insert("model".into(), model.clone().into());
        }
        body.insert("messages".into(), messages.into());
        body.insert("temperature".into(), json!(self.config.temperature));
        body.insert("max_tokens".into(), json!(self.config.max_tokens));
        body.insert("stream".into(), false.into());
        Ok(Value::Object(body))
    }

    /// One POST of `body` with what is left of the deadline.
    fn exchange(&self, body: &str, left: Duration) -> Exchange {
        let mut request =
            self.agent.post(&self.url).config().timeout_global(Some(left)).build().content_type("application/json");
        if let Some(key) = &self.api_key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        let mut response = match request.send(body) {
            Ok(response) => response,
            Err(ureq::Error::Timeout(what)) => return Exchange::Timeout(format!("no answer in time ({what})")),
            Err(
                e @ (ureq::Error::Io(_)
                | ureq::Error::ConnectionFailed
                | ureq::Error::HostNotFound
                | ureq::Error::Protocol(_)),
            ) => return Exchange::Retry(format!("request failed: {e}"), None),
            Err(e) => return Exchange::Fail(format!("request failed: {e}"), None),
        };
        let status = response.status().as_u16();
        let text = match response.body_mut().read_to_string() {
            Ok(text) => text,
            Err(ureq::Error::Timeout(what)) => return Exchange::Timeout(format!("answer not read in time ({what})")),
            Err(e) => return Exchange::Retry(format!("reading the answer failed: {e}"), None),
        };
        match status {
            200..=299 => Exchange::Answer(text),
            429 | 500..=599 => Exchange::Retry(format!("HTTP {status}"), Some((status, text))),
            _ => Exchange::Fail(format!("HTTP {status}"), Some((status, text))),
        }
    }

    /// The verdict on a 2xx body.
    fn judge(&self, text: &str, mut detail: Map<String, Value>) -> Verdict {
        let parsed: Option<Value> = serde_json::from_str(text).ok();
        let message = parsed.as_ref().and_then(|v| v.pointer("/choices/0/message"));
        let Some(content) = message.and_then(|m| m.get("content")).and_then(Value::as_str) else {
            detail.insert("response".into(), text.into());
            detail.insert("error".into(), "the answer is not a chat completion with text content".into());
            return Verdict::zero(Outcome::Error, Value::Object(detail));
        };
        detail.insert("judgement".into(), content.into());
        if let Some(reasoning) = message.and_then(|m| m.get("reasoning_content")).filter(|r| r.is_string()) {
            detail.insert("judge_reasoning".into(), reasoning.clone());
        }
        let close = self.config.close.as_str();
        let read = content.rsplit_once(close).map_or(content, |(_, after)| after);
        let c = &self.config;
        match parse_score(read, &c.score_label, c.min_score, c.max_score) {
            Ok(score) => {
                let pass = c.pass_score.unwrap_or((c.min_score + c.max_score) / 2.0);
                let reward = ((score - c.min_score) / (c.max_score - c.min_score)) as f32;
                detail.insert("score".into(), json!(score));
                let outcome = if score >= pass { Outcome::Correct } else { Outcome::Incorrect };
                Verdict { reward, outcome, detail: Value::Object(detail) }
            }
            Err(why) => {
                detail.insert("error".into(), format!("malformed judgement: {why}").into());
                Verdict::zero(Outcome::Error, Value::Object(detail))
            }
        }
    }
}

/// `detail` with the reason, and the status and body when there was a response.
fn failure(mut detail: Map<String, Value>, why: String, response: Option<(u16, String)>) -> Value {
    detail.insert("error".into(), why.into());
    if let Some((status, body)) = response {
        detail.insert("status".into(), status.into());
        detail.insert("response".into(), body.into());
    }
    Value::Object(detail)
}

impl Verifier for JudgeVerifier {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn verify(&self, task: &Task, completion: &str) -> Result<Verdict, VerifyError> {
        let request = self.request(task, completion)?;
        let body = request.to_string();
        let mut detail = Map::new();
        detail.insert("url".into(), self.url.clone().into());
        detail.insert("request".into(), request);

        let _permit = self.slots.acquire();
        let timeout = Duration::from_secs_f64(self.config.timeout_s);
        let deadline = Instant::now() + timeout;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            detail.insert("attempts".into(), attempt.into());
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let why = format!("timed out after {timeout:?}");
                return Ok(Verdict::zero(Outcome::Timeout, failure(detail, why, None)));
            }
            let (why, response) = match self.exchange(&body, left) {
                Exchange::Answer(text) => return Ok(self.judge(&text, detail)),
                Exchange::Timeout(why) => {
                    let why = format!("timed out after {timeout:?}: {why}");
                    return Ok(Verdict::zero(Outcome::Timeout, failure(detail, why, None)));
                }
                Exchange::Fail(why, response) => {
                    return Ok(Verdict::zero(Outcome::Error, failure(detail, why, response)))
                }
                Exchange::Retry(why, response) => (why, response),
            };
            if attempt > self.config.retries {
                let why = format!("{why} (after {attempt} tries)");
                return Ok(Verdict::zero(Outcome::Error, failure(detail, why, response)));
            }
            let wait = Duration::from_secs_f64(self.config.backoff_s * f64::from(1u32 << (attempt - 1).min(16)));
            if Instant::now() + wait >= deadline {
                let why = format!("timed out after {timeout:?}; last try: {why}");
                return Ok(Verdict::zero(Outcome::Timeout, failure(detail, why, response)));
            }
            std::thread::sleep(wait);
        }
    }
}
