//! `POST /v1/chat/completions`: messages (and tools) rendered with the DeepSeek-V3.2 chat encoding
//! (`chat::encode_chat`, thinking from `thinking` or `chat_template_kwargs.thinking`), the reply
//! parsed back with `chat::parse_completion` into `content`, `reasoning_content` and `tool_calls`.
//! A reply that does not parse (e.g. from an untrained model) comes back whole as `content`.
//!
//! Streaming sends a role chunk, then per token the part of its text that falls in the reasoning
//! or the content, as soon as the step that drew it ends (text that may still be a stop string, a
//! `</think>`, the start of the tool calls or the closing end-of-sentence waits for the next token;
//! see `delta.rs`), and the parsed tool calls with the last chunk.

use super::api::{parse_request, ChatRequest};
use super::delta::TextStream;
use super::render::{fingerprint, finish_name, newest_version, piece_of, render, usage, Extras};
use super::stream::{self, Chunker};
use super::{collect, render::add_extras, unix_now, ApiError, AppState};
use crate::chat::{self, ChatOptions, Message, Role, Tool, EOS, THINK_END};
use crate::engine::{RequestOutput, Sample, Token, MAX_TOP_LOGPROBS};
use crate::tokenizer::Tokenizer;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

/// Where the tool calls begin in a reply; the content ends there.
const CALLS_START: &str = "\n\n<｜DSML｜function_calls>";

/// What every choice of one response shares.
struct Shape {
    id: String,
    created: u64,
    model: String,
    thinking: bool,
    logprobs: bool,
    /// End the stream with a usage chunk.
    include_usage: bool,
    extras: Extras,
    stops: Vec<String>,
    prompt: Vec<i64>,
    prompt_text: Option<String>,
    version: u64,
}

/// The handler.
pub(crate) async fn chat_completions(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    state.check_open()?;
    let (req, s): (ChatRequest, _) = parse_request(&body)?;
    let s = &s;
    s.check_model(&state.limits)?;
    let tok = state.tokenizer.as_ref().ok_or_else(|| {
        ApiError::invalid(
            "messages",
            "chat needs the model directory's tokenizer.json; use /v1/completions with token ids",
        )
    })?;
    let messages = chat::parse_messages(&req.messages)?;
    let tools: Vec<Tool> = match &req.tools {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| ApiError::invalid("tools", e.to_string()))?,
    };
    let tools = with_given_text(tools, &body);
    let kwargs_thinking = match &req.chat_template_kwargs {
        Some(k) => k.thinking()?,
        None => None,
    };
    let thinking = req.thinking.or(kwargs_thinking).unwrap_or(false);
    let top = req.top_logprobs.unwrap_or(0) as usize;
    if top > MAX_TOP_LOGPROBS {
        let message = format!("field `top_logprobs`: {top} is more than {MAX_TOP_LOGPROBS}");
        return Err(ApiError::invalid("top_logprobs", message));
    }
    if top > 0 && !req.logprobs {
        return Err(ApiError::invalid("top_logprobs", "field `top_logprobs`: needs `logprobs: true`"));
    }
    if s.rlvr.is_some() {
        return Err(ApiError::invalid("rlvr", "field `rlvr`: stream coordinates are served by /v1/completions only"));
    }
    let text = match &state.config.chat_template {
        Some(template) => with_template(template, &req.messages, &req.tools, thinking)?,
        None => chat::encode_chat(&messages, &tools, &ChatOptions { thinking, ..ChatOptions::default() })?,
    };
    // The rendered text starts with BOS already (a template writes its `bos_token`).
    let prompt = tok.encode(&text, false).map_err(|e| ApiError::invalid("messages", e.to_string()))?;
    let (fresh_seed, id) = state.fresh();
    let request = s.request(prompt.clone(), 0, s.seed.unwrap_or(fresh_seed), top, &state.limits)?;
    let ticket = state.admit(1)?;
    let receivers = state.submit(vec![request], s.stream)?;
    let shape = Shape {
        id: format!("chatcmpl-{id}"),
        created: unix_now(),
        model: state.limits.model.clone(),
        thinking,
        logprobs: req.logprobs,
        include_usage: s.include_usage(),
        extras: Extras {
            token_ids: s.return_token_ids,
            sampling_mask: s.return_sampling_mask,
            routing: s.return_routing,
        },
        stops: s.stop_strings(),
        prompt,
        prompt_text: req.return_prompt.then_some(text),
        version: state.metrics.version(),
    };
    if s.stream {
        let chunks = Chunks { tok: tok.clone(), shape, texts: HashMap::new(), completion_tokens: 0 };
        return Ok(stream::sse(&state, ticket, receivers, chunks));
    }
    let outputs = collect(receivers).await?;
    drop(ticket);
    Ok(Json(full_body(&state, &shape, &outputs)).into_response())
}

/// `tools` with each `function` text that holds an integer beyond 64 bits kept as given
/// ([`Tool::given_text`]), read from the request body.
fn with_given_text(mut tools: Vec<Tool>, body: &[u8]) -> Vec<Tool> {
    let Ok(text) = std::str::from_utf8(body) else { return tools };
    if tools.is_empty() || !chat::has_wide_int(text) {
        return tools;
    }
    let members = chat::object_members(text).unwrap_or_default();
    let Some((_, raw)) = members.iter().find(|(k, _)| k == "tools") else { return tools };
    for (tool, item) in tools.iter_mut().zip(chat::array_items(raw).unwrap_or_default()) {
        let function = chat::object_members(item).unwrap_or_default().into_iter().find(|(k, _)| k == "function");
        if let Some((_, f)) = function.filter(|(_, f)| chat::has_wide_int(f)) {
            tool.given_text = Some(f.to_string());
        }
    }
    tools
}

/// The prompt of `messages` (and `tools`) rendered with the model's chat template, ending where
/// the assistant's reply starts; `thinking` is passed as `enable_thinking` and `thinking`.
fn with_template(
    template: &crate::template::ChatTemplate,
    messages: &Value,
    tools: &Option<Value>,
    thinking: bool,
) -> Result<String, ApiError> {
    let list = messages.as_array().map(Vec::as_slice).unwrap_or_default();
    let mut extra = Map::new();
    extra.insert("enable_thinking".into(), Value::Bool(thinking));
    extra.insert("thinking".into(), Value::Bool(thinking));
    if let Some(tools) = tools.as_ref().filter(|t| !t.is_null()) {
        extra.insert("tools".into(), tools.clone());
    }
    template.render(list, true, &extra).map_err(|e| {
        ApiError::invalid("messages", format!("the model's chat template cannot render these messages: {e}"))
    })
}

/// The reply `text` as a message, and the finish reason (`tool_calls` when it called tools;
/// else `finish`).
fn reply(text: &str, finish: &'static str, thinking: bool) -> (Message, &'static str) {
    let message = match chat::parse_completion(text, thinking) {
        Ok(parsed) => parsed.into_message(),
        Err(_) => Message::new(Role::Assistant, text.strip_suffix(EOS).unwrap_or(text)),
    };
    let finish = if !message.tool_calls.is_empty() && finish == "stop" { "tool_calls" } else { finish };
    (message, finish)
}

/// Chat's `logprobs` object: `{"content": [{"token", "logprob", "bytes", "top_logprobs", "token_id"}]}`,
/// each alternative `{"token", "logprob", "bytes", "token_id"}`.
fn logprobs_json(tokens: &[Token], pieces: &[String], tok: &Tokenizer) -> Value {
    let content: Vec<Value> = tokens
        .iter()
        .zip(pieces)
        .map(|(t, p)| {
            let top: Vec<Value> = t
                .top
                .iter()
                .flatten()
                .map(|&(id, lp)| {
                    let piece = piece_of(Some(tok), id, false);
                    json!({"token": piece, "logprob": lp, "bytes": piece.as_bytes(), "token_id": id})
                })
                .collect();
            json!({"token": p, "logprob": t.logprob, "bytes": p.as_bytes(), "top_logprobs": top, "token_id": t.id})
        })
        .collect();
    json!({ "content": content })
}

/// The non-streamed response.
fn full_body(state: &AppState, shape: &Shape, outputs: &[RequestOutput]) -> Value {
    let tok = state.tokenizer.as_deref();
    let samples: Vec<&Sample> = outputs.iter().flat_map(|o| &o.samples).collect();
    let mut list = Vec::new();
    for sample in &samples {
        let rendered = render(sample, tok, false, &shape.stops);
        let (message, finish) = reply(&rendered.text, rendered.finish, shape.thinking);
        let mut choice = Map::new();
        choice.insert("index".into(), json!(sample.index));
        choice.insert("message".into(), message.to_json());
        let logprobs = match (shape.logprobs, tok) {
            (true, Some(tok)) => logprobs_json(&sample.tokens, &rendered.pieces, tok),
            _ => Value::Null,
        };
        choice.insert("logprobs".into(), logprobs);
        choice.insert("finish_reason".into(), json!(finish));
        add_extras(&mut choice, sample, &shape.prompt, shape.extras);
        list.push(Value::Object(choice));
    }
    let completion_tokens: usize = samples.iter().map(|s| s.tokens.len()).sum();
    let mut body = json!({
        "id": shape.id, "object": "chat.completion", "created": shape.created, "model": shape.model,
        "system_fingerprint": fingerprint(newest_version(samples.iter().copied(), shape.version)),
        "choices": list,
        "usage": usage(shape.prompt.len(), completion_tokens),
    });
    if let Some(text) = &shape.prompt_text {
        body["prompt"] = json!(text);
    }
    body
}

/// Byte ranges of the reasoning and the content in a reply's raw text.
fn spans(text: &str, thinking: bool) -> ((usize, usize), (usize, usize)) {
    let body_end = text.strip_suffix(EOS).map_or(text.len(), str::len);
    let (reasoning, start) = match (thinking, text.find(THINK_END)) {
        (false, _) => ((0, 0), 0),
        (true, Some(p)) => ((0, p), p + THINK_END.len()),
        (true, None) => ((0, body_end), body_end),
    };
    let content_end = text[start..body_end].find(CALLS_START).map_or(body_end, |p| start + p);
    (reasoning, (start, content_end.max(start)))
}

/// The part of `text[range]` inside `span`.
fn part(text: &str, range: Range<usize>, span: (usize, usize)) -> &str {
    let (lo, hi) = (range.start.max(span.0), range.end.min(span.1));
    if lo < hi {
        &text[lo..hi]
    } else {
        ""
    }
}

/// The streamed response's chunks (see the module notes); their deltas add up to the
/// non-streamed reasoning and content.
struct Chunks {
    tok: Arc<Tokenizer>,
    shape: Shape,
    /// Each sample's text so far, by sample index; present once its role chunk went out.
    texts: HashMap<usize, TextStream>,
    /// Tokens of the samples ended so far.
    completion_tokens: usize,
}

impl Chunks {
    /// A chunk of one choice, stamped with `version`.
    fn chunk(&self, version: u64, choice: Value) -> Value {
        let shape = &self.shape;
        let mut chunk = json!({"id": shape.id, "object": "chat.completion.chunk", "created": shape.created,
            "model": shape.model, "system_fingerprint": fingerprint(version), "choices": [choice]});
        if shape.include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    /// The role chunk that opens sample `index`, the first time it is asked for.
    fn open(&mut self, index: usize, version: u64) -> Option<Value> {
        if self.texts.contains_key(&index) {
            return None;
        }
        self.texts.insert(index, TextStream::new(false));
        let delta = json!({"role": "assistant", "content": ""});
        Some(self.chunk(version, json!({"index": index, "delta": delta, "finish_reason": null})))
    }

    /// The delta of `text[range]`: its reasoning part (when any) and its content part.
    fn delta(&self, text: &str, range: Range<usize>) -> Map<String, Value> {
        let (reasoning, content) = spans(text, self.shape.thinking);
        let mut delta = Map::new();
        let r = part(text, range.clone(), reasoning);
        if !r.is_empty() {
            delta.insert("reasoning_content".into(), json!(r));
        }
        delta.insert("content".into(), json!(part(text, range, content)));
        delta
    }
}

impl Chunker for Chunks {
    fn tokens(&mut self, _prompt: usize, sample: usize, tokens: &[Token]) -> Vec<Value> {
        let mut out: Vec<Value> = tokens.first().and_then(|t| self.open(sample, t.version)).into_iter().collect();
        let markers: &[&str] = if self.shape.thinking { &[THINK_END, CALLS_START, EOS] } else { &[CALLS_START, EOS] };
        for t in tokens {
            let text = self.texts.get_mut(&sample).expect("opened above");
            let piece = text.push(&self.tok, t.id);
            let range = text.release(&self.shape.stops, markers);
            // Split by the spans of all the text so far: a marker that the held-back tail may
            // still complete never reaches into the released range.
            let delta = self.delta(self.texts[&sample].text(), range);
            let mut choice = json!({"index": sample, "delta": delta, "finish_reason": null});
            if self.shape.logprobs {
                choice["logprobs"] = logprobs_json(std::slice::from_ref(t), &[piece], &self.tok);
            }
            out.push(self.chunk(t.version, choice));
        }
        out
    }

    /// The text held back to the end, the finish reason, and the tool calls.
    fn finish(&mut self, _prompt: usize, sample: &Sample) -> Vec<Value> {
        self.completion_tokens += sample.tokens.len();
        let mut out: Vec<Value> = self.open(sample.index, self.shape.version).into_iter().collect();
        let text = self.texts.get_mut(&sample.index).expect("opened above");
        let range = text.finish(&self.tok, sample.finish_reason, &self.shape.stops);
        let text = self.texts[&sample.index].text();
        let mut delta = if range.is_empty() { Map::new() } else { self.delta(text, range) };
        let (message, finish) = reply(text, finish_name(sample.finish_reason), self.shape.thinking);
        if let Some(calls) = message.to_json().get("tool_calls") {
            delta.insert("tool_calls".into(), calls.clone());
        }
        let last = sample.versions().map_or(self.shape.version, |v| v.1);
        out.push(self.chunk(last, json!({"index": sample.index, "delta": delta, "finish_reason": finish})));
        out
    }

    /// With `include_usage`: the usage chunk.
    fn end(&mut self) -> Vec<Value> {
        if !self.shape.include_usage {
            return Vec::new();
        }
        let shape = &self.shape;
        vec![json!({"id": shape.id, "object": "chat.completion.chunk", "created": shape.created,
            "model": shape.model, "system_fingerprint": fingerprint(shape.version), "choices": [],
            "usage": usage(shape.prompt.len(), self.completion_tokens)})]
    }
}
