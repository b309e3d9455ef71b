//! Request bodies of the OpenAI-compatible endpoints and their translation into engine
//! [`Request`]s. Every field the service reads is checked, and an error names it in `param`.
//! OpenAI fields that would change the output and that rlvr does not implement are refused with a
//! 400 naming them ([`refuse_unsupported`]) rather than ignored; informational ones (`user`,
//! `metadata`, `store`, `service_tier`, ...) and fields OpenAI does not define are ignored.

use super::errors::ApiError;
use crate::engine::{Penalties, Request, SamplingParams};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

/// `prompt` of `/v1/completions`: text, token ids, or a list of either.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    /// One text prompt.
    Text(String),
    /// One prompt as token ids.
    Ids(Vec<i64>),
    /// Several text prompts.
    Texts(Vec<String>),
    /// Several prompts as token ids.
    Batch(Vec<Vec<i64>>),
}

/// `stop`: one string or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop string.
    One(String),
    /// Several stop strings.
    Many(Vec<String>),
}

/// `logprobs` of `/v1/completions`: OpenAI's count of top alternatives per token (any count turns
/// log-probs on; a positive one fills `top_logprobs`), or a flag.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
pub enum LogprobsFlag {
    /// `true`/`false`.
    Flag(bool),
    /// A count of alternatives.
    Count(u32),
}

impl LogprobsFlag {
    /// Whether log-probs are asked for.
    pub fn enabled(self) -> bool {
        match self {
            LogprobsFlag::Flag(on) => on,
            LogprobsFlag::Count(_) => true,
        }
    }

    /// The alternatives asked for per token.
    pub fn top(self) -> usize {
        match self {
            LogprobsFlag::Flag(_) => 0,
            LogprobsFlag::Count(n) => n as usize,
        }
    }
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk (before `[DONE]`) with empty `choices` and the request's `usage`; every
    /// other chunk then carries `"usage": null`.
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// Sampling settings and rlvr's record extensions, shared by both generation endpoints.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Sampling {
    /// The served model's name; another name is a 404 naming `model`.
    pub model: Option<String>,
    /// Tokens to generate at most (default 16).
    pub max_tokens: Option<i64>,
    /// Chat's newer name for `max_tokens`.
    pub max_completion_tokens: Option<i64>,
    /// Softmax temperature, ≥ 0 (default 1; 0 is greedy).
    pub temperature: Option<f64>,
    /// Nucleus mass in (0, 1].
    pub top_p: Option<f64>,
    /// Keep the k most likely ids; 0 or -1 = off.
    pub top_k: Option<i64>,
    /// Keep ids with p ≥ min_p · p_max, in [0, 1].
    pub min_p: Option<f64>,
    /// Samples per prompt.
    pub n: Option<i64>,
    /// Seed of the sampling streams; the same seed gives the same output.
    pub seed: Option<u64>,
    /// Stop strings (need the tokenizer).
    pub stop: Option<Stop>,
    /// Generate past the config's end-of-sequence ids.
    #[serde(default)]
    pub ignore_eos: bool,
    /// OpenAI's presence penalty, in [-2, 2] (see [`crate::engine::Penalties`]).
    pub presence_penalty: Option<f64>,
    /// OpenAI's frequency penalty, in [-2, 2].
    pub frequency_penalty: Option<f64>,
    /// vLLM's / transformers' repetition penalty, > 0 (1 = off).
    pub repetition_penalty: Option<f64>,
    /// Token id (as a string key) → bias in [-100, 100] added to its logit.
    pub logit_bias: Option<std::collections::BTreeMap<String, f64>>,
    /// Streaming options (only with `stream`).
    pub stream_options: Option<StreamOptions>,
    /// Stream the answer as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// rlvr: return each token's kept set (`sampling_mask`).
    #[serde(default)]
    pub return_sampling_mask: bool,
    /// rlvr: return the routed experts (`routing`).
    #[serde(default)]
    pub return_routing: bool,
    /// rlvr: return `token_ids`, `prompt_token_ids` and per-token `policy_versions`.
    #[serde(default)]
    pub return_token_ids: bool,
    /// rlvr: draw from the trainer's sampling streams and answer with the engine's own records
    /// (`/v1/completions` only; see [`StreamCoords`]).
    pub rlvr: Option<StreamCoords>,
}

/// The `rlvr` extension of `/v1/completions`: prompt `i`'s sample `j` draws from stream
/// (`seed`, `index + i`, `j`), exactly the stream a trainer's colocated engine uses for the same
/// coordinates, and the answer carries `"rlvr": {"outputs": [...]}`, the engine's
/// [`crate::engine::RequestOutput`] of every prompt (token ids, sampling log-probs, kept sets,
/// routings, per-token policy versions) serialised as they are, so a served sample equals a local
/// one bit for bit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamCoords {
    /// The streams' seed (instead of the top-level `seed`).
    pub seed: u64,
    /// The stream index of the first prompt.
    pub index: usize,
    /// The token ids that end a sample, replacing the config's end-of-sequence ids (the
    /// trainer's own list, so that both engines stop alike).
    #[serde(default)]
    pub stop_ids: Option<Vec<i64>>,
}

/// `POST /v1/completions` (its [`Sampling`] fields are read separately from the same object).
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    /// The prompt(s).
    pub prompt: PromptInput,
    /// Return log-probs (OpenAI's `logprobs` object, with `token_ids` added).
    pub logprobs: Option<LogprobsFlag>,
    /// Prepend the prompt text to each choice's `text`.
    #[serde(default)]
    pub echo: bool,
}

/// `POST /v1/chat/completions` (its [`Sampling`] fields are read separately; messages and tools stay JSON for `chat::parse_messages`).
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Value,
    /// Functions the model may call.
    #[serde(default)]
    pub tools: Option<Value>,
    /// Thinking mode (also read from `chat_template_kwargs.thinking` / `.enable_thinking`).
    pub thinking: Option<bool>,
    /// vLLM-style template switches; `thinking` and its alias `enable_thinking` are read.
    pub chat_template_kwargs: Option<ChatTemplateKwargs>,
    /// Return log-probs in chat's `logprobs.content` shape.
    #[serde(default)]
    pub logprobs: bool,
    /// Alternatives per token in `logprobs.content[].top_logprobs`, 0..=20 (needs `logprobs`).
    pub top_logprobs: Option<u32>,
    /// rlvr: return the rendered prompt text as `prompt`.
    #[serde(default)]
    pub return_prompt: bool,
}

/// `chat_template_kwargs`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ChatTemplateKwargs {
    /// Thinking mode.
    pub thinking: Option<bool>,
    /// Thinking mode under the name other servers' templates use (an alias of `thinking`; the two
    /// may not disagree).
    pub enable_thinking: Option<bool>,
}

impl ChatTemplateKwargs {
    /// The thinking switch, if given; 400 naming the alias when both are given and differ.
    pub fn thinking(&self) -> Result<Option<bool>, ApiError> {
        match (self.thinking, self.enable_thinking) {
            (Some(a), Some(b)) if a != b => Err(ApiError::invalid(
                "chat_template_kwargs.enable_thinking",
                "`thinking` and `enable_thinking` disagree; they are the same switch",
            )),
            (a, b) => Ok(a.or(b)),
        }
    }
}

/// OpenAI fields whose effect rlvr does not implement, refused when given a value that asks for
/// it: (field, whether the value is harmless, why).
type Refusal = (&'static str, fn(&Value) -> bool, &'static str);

/// What [`refuse_unsupported`] checks.
const REFUSED: &[Refusal] = &[
    (
        "response_format",
        |v| v.get("type").and_then(Value::as_str) == Some("text"),
        "only {\"type\": \"text\"} is supported; rlvr has no constrained decoding (json_object, json_schema)",
    ),
    ("best_of", |v| v.as_i64() == Some(1), "only 1 is supported"),
    ("suffix", |v| v.as_str() == Some(""), "insertion (a non-empty suffix) is not supported"),
    (
        "tool_choice",
        |v| v.as_str() == Some("auto"),
        "only \"auto\" is supported: the model decides whether to call tools",
    ),
    ("parallel_tool_calls", |v| v.as_bool() == Some(true), "only true is supported"),
    ("functions", |_| false, "the deprecated `functions` are not supported; use `tools`"),
    ("function_call", |_| false, "the deprecated `function_call` is not supported; use `tools`"),
    ("audio", |_| false, "audio output is not supported"),
    ("modalities", |v| *v == serde_json::json!(["text"]), "only [\"text\"] is supported"),
    ("prediction", |_| false, "predicted outputs are not supported"),
    ("web_search_options", |_| false, "web search is not supported"),
    ("reasoning_effort", |_| false, "not supported; switch thinking with `thinking` or `chat_template_kwargs`"),
    ("verbosity", |_| false, "not supported"),
    ("n_probs", |_| false, "not supported; use `logprobs`"),
];

/// 400 naming the first field of `body` that asks for something rlvr does not do (null counts as
/// absent).
pub fn refuse_unsupported(body: &Value) -> Result<(), ApiError> {
    for (field, harmless, why) in REFUSED {
        match body.get(*field) {
            None | Some(Value::Null) => {}
            Some(v) if harmless(v) => {}
            Some(_) => return Err(ApiError::invalid(*field, format!("field `{field}`: {why}"))),
        }
    }
    Ok(())
}

/// What a request is checked against.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The served model's name.
    pub model: String,
    /// Vocabulary size.
    pub vocab: usize,
    /// Engine slots (the largest `n`).
    pub slots: usize,
    /// Tokens per slot: prompt + generated.
    pub context: usize,
    /// The config's end-of-sequence ids.
    pub eos_ids: Vec<i64>,
    /// Whether a tokenizer is loaded (text prompts, stop strings).
    pub has_tokenizer: bool,
}

/// Parses a JSON object body into `T` and [`Sampling`]; invalid JSON is a 400 naming `body`, a
/// wrong field a 400 naming it.
pub fn parse_request<T: DeserializeOwned>(body: &[u8]) -> Result<(T, Sampling), ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid("body", format!("the body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::invalid("body", "the body must be a JSON object"));
    }
    refuse_unsupported(&value)?;
    let sampling: Sampling = fields(&value)?;
    if sampling.stream_options.is_some() && !sampling.stream {
        return Err(ApiError::invalid("stream_options", "field `stream_options`: only allowed with `stream: true`"));
    }
    Ok((fields(&value)?, sampling))
}

/// Reads `T` from a JSON object; a wrong field is a 400 naming its path.
pub fn fields<T: DeserializeOwned>(value: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde names a missing field only in its message: "missing field `prompt`".
        let missing = inner.strip_prefix("missing field `").and_then(|r| r.split('`').next());
        let param = match (path.as_str(), missing) {
            (".", Some(field)) => field.to_string(),
            (".", None) => "body".to_string(),
            _ => path,
        };
        ApiError::invalid(param.clone(), format!("field `{param}`: {inner}"))
    })
}

impl Sampling {
    /// Checks `model` against the served one (404 naming `model`).
    pub fn check_model(&self, limits: &Limits) -> Result<(), ApiError> {
        match &self.model {
            Some(m) if *m != limits.model => {
                Err(ApiError::invalid("model", format!("unknown model {m:?}; this server serves {:?}", limits.model))
                    .with_status(axum::http::StatusCode::NOT_FOUND))
            }
            _ => Ok(()),
        }
    }

    /// The stop strings asked for.
    pub fn stop_strings(&self) -> Vec<String> {
        match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        }
    }

    /// Whether the stream ends with a usage chunk.
    pub fn include_usage(&self) -> bool {
        self.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false)
    }

    /// The logit adjustments asked for (ranges are checked with the request).
    pub fn penalties(&self) -> Result<Penalties, ApiError> {
        let mut logit_bias = Vec::new();
        for (key, &bias) in self.logit_bias.iter().flatten() {
            let id: i64 = key.trim().parse().map_err(|_| {
                ApiError::invalid("logit_bias", format!("field `logit_bias`: key {key:?} is not a token id"))
            })?;
            logit_bias.push((id, bias));
        }
        Ok(Penalties {
            presence: self.presence_penalty.unwrap_or(0.0),
            frequency: self.frequency_penalty.unwrap_or(0.0),
            repetition: self.repetition_penalty.unwrap_or(1.0),
            logit_bias,
        })
    }

    /// The engine request of prompt `index` (`ids`), `top` alternatives per token, checked as the
    /// engine would, with the prompt length checked against the context first so that mistake
    /// names `prompt`.
    pub fn request(
        &self,
        ids: Vec<i64>,
        index: usize,
        seed: u64,
        top: usize,
        limits: &Limits,
    ) -> Result<Request, ApiError> {
        if ids.len() >= limits.context {
            let message = format!("{} prompt tokens leave no room in the context of {}", ids.len(), limits.context);
            return Err(ApiError::invalid("prompt", message));
        }
        let (max_field, max_tokens) = match (self.max_tokens, self.max_completion_tokens) {
            (Some(m), _) => ("max_tokens", m),
            (None, Some(m)) => ("max_completion_tokens", m),
            (None, None) => ("max_tokens", 16),
        };
        if max_tokens < 1 || ids.len() as i64 + max_tokens > limits.context as i64 {
            let message = format!(
                "{max_tokens} must be ≥ 1 and fit the context of {} after {} prompt tokens",
                limits.context,
                ids.len()
            );
            return Err(ApiError::invalid(max_field, message));
        }
        let n = self.n.unwrap_or(1);
        if n < 1 || n as usize > limits.slots {
            return Err(ApiError::invalid("n", format!("{n} is not in 1..={} (the server's slots)", limits.slots)));
        }
        let top_k = self.top_k.unwrap_or(0);
        if top_k < -1 {
            return Err(ApiError::invalid("top_k", format!("must be ≥ 0 (or -1 for off), got {top_k}")));
        }
        let request = Request {
            n: n as usize,
            sampling: SamplingParams {
                max_tokens: max_tokens as usize,
                temperature: self.temperature.unwrap_or(1.0),
                top_p: self.top_p.unwrap_or(1.0),
                top_k: top_k.max(0) as usize,
                min_p: self.min_p.unwrap_or(0.0),
            },
            stop_ids: match (&self.rlvr, self.ignore_eos) {
                (Some(StreamCoords { stop_ids: Some(ids), .. }), _) => ids.clone(),
                (_, true) => Vec::new(),
                (_, false) => limits.eos_ids.clone(),
            },
            stop_strings: self.stop_strings(),
            seed,
            index,
            return_sampling_mask: self.return_sampling_mask,
            return_routing: self.return_routing,
            penalties: self.penalties()?,
            top_logprobs: top,
            ..Request::new(ids)
        };
        request.validate(limits.vocab, limits.slots, limits.context, limits.has_tokenizer)?;
        Ok(request)
    }
}
