//! `POST /v1/chat/completions`: messages (and tools) rendered with the DeepSeek-V3.2 chat encoding
//! (`chat::encode_chat`, thinking from `thinking` or `chat_template_kwargs.thinking`), the reply
//! parsed back with `chat::parse_completion` into `content`, `reasoning_content` and `tool_calls`.
//! A reply that does not parse (e.g. from an untrained model) comes back whole as `content`.
//!
//! Streaming sends per token the part of its text that falls in the reasoning or the content, and
//! the parsed tool calls with the last chunk.

use super::api::{parse_request, ChatRequest};
use super::render::{fingerprint, newest_version, render, Extras, Rendered};
use super::{collect, render::add_extras, stream, unix_now, ApiError, AppState};
use crate::chat::{self, ChatOptions, Message, Role, Tool, EOS, THINK_END};
use crate::engine::{RequestOutput, Sample, Token};
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// What every choice of one response shares.
struct Shape {
    id: String,
    created: u64,
    model: String,
    thinking: bool,
    logprobs: bool,
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
    let thinking = req.thinking.or(req.chat_template_kwargs.as_ref().and_then(|k| k.thinking)).unwrap_or(false);
    let text = chat::encode_chat(&messages, &tools, &ChatOptions { thinking, ..ChatOptions::default() })?;
    // The rendered text starts with BOS already.
    let prompt = tok.encode(&text, false).map_err(|e| ApiError::invalid("messages", e.to_string()))?;
    let (fresh_seed, id) = state.fresh();
    let request = s.request(prompt.clone(), 0, s.seed.unwrap_or(fresh_seed), &state.limits)?;
    let ticket = state.admit(1)?;
    let receivers = state.submit(vec![request])?;
    let shape = Shape {
        id: format!("chatcmpl-{id}"),
        created: unix_now(),
        model: state.limits.model.clone(),
        thinking,
        logprobs: req.logprobs,
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
        let st = state.clone();
        return Ok(stream::sse(&state, ticket, receivers, move |outputs| chunks(&st, &shape, &outputs)));
    }
    let outputs = collect(receivers).await?;
    drop(ticket);
    Ok(Json(full_body(&state, &shape, &outputs)).into_response())
}

/// The reply as a message, and the finish reason (`tool_calls` when it called tools).
fn reply(rendered: &Rendered, thinking: bool) -> (Message, &'static str) {
    let message = match chat::parse_completion(&rendered.text, thinking) {
        Ok(parsed) => parsed.into_message(),
        Err(_) => Message::new(Role::Assistant, rendered.text.strip_suffix(EOS).unwrap_or(&rendered.text)),
    };
    let finish =
        if !message.tool_calls.is_empty() && rendered.finish == "stop" { "tool_calls" } else { rendered.finish };
    (message, finish)
}

/// Chat's `logprobs` object: `{"content": [{"token", "logprob", "bytes", "top_logprobs", "token_id"}]}`.
fn logprobs_json(tokens: &[Token], pieces: &[String]) -> Value {
    let content: Vec<Value> = tokens
        .iter()
        .zip(pieces)
        .map(|(t, p)| json!({"token": p, "logprob": t.logprob, "bytes": p.as_bytes(), "top_logprobs": [], "token_id": t.id}))
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
        let (message, finish) = reply(&rendered, shape.thinking);
        let mut choice = Map::new();
        choice.insert("index".into(), json!(sample.index));
        choice.insert("message".into(), message.to_json());
        let logprobs = if shape.logprobs { logprobs_json(&sample.tokens, &rendered.pieces) } else { Value::Null };
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
        "usage": {"prompt_tokens": shape.prompt.len(), "completion_tokens": completion_tokens,
                  "total_tokens": shape.prompt.len() + completion_tokens},
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
    let content_end = text[start..body_end].find("\n\n<｜DSML｜function_calls>").map_or(body_end, |p| start + p);
    (reasoning, (start, content_end.max(start)))
}

/// The part of `text[at..at + len]` inside `span`.
fn part(text: &str, at: usize, len: usize, span: (usize, usize)) -> &str {
    let (lo, hi) = (at.max(span.0), (at + len).min(span.1));
    if lo < hi {
        &text[lo..hi]
    } else {
        ""
    }
}

/// The streamed response: a role chunk, per token a delta of reasoning and/or content, then the
/// finish reason (with the tool calls).
fn chunks(state: &AppState, shape: &Shape, outputs: &[RequestOutput]) -> Vec<Value> {
    let tok = state.tokenizer.as_deref();
    let chunk = |version: u64, choice: Value| {
        json!({"id": shape.id, "object": "chat.completion.chunk", "created": shape.created,
            "model": shape.model, "system_fingerprint": fingerprint(version), "choices": [choice]})
    };
    let mut out = Vec::new();
    for sample in outputs.iter().flat_map(|o| &o.samples) {
        let rendered = render(sample, tok, false, &shape.stops);
        let (reasoning, content) = spans(&rendered.text, shape.thinking);
        let first = sample.tokens.first().map_or(shape.version, |t| t.version);
        out.push(chunk(
            first,
            json!({"index": sample.index, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}),
        ));
        let mut at = 0;
        for (t, piece) in sample.tokens.iter().zip(&rendered.pieces) {
            let mut delta = Map::new();
            let r = part(&rendered.text, at, piece.len(), reasoning);
            let c = part(&rendered.text, at, piece.len(), content);
            if !r.is_empty() {
                delta.insert("reasoning_content".into(), json!(r));
            }
            delta.insert("content".into(), json!(c));
            at += piece.len();
            let mut choice = json!({"index": sample.index, "delta": delta, "finish_reason": null});
            if shape.logprobs {
                choice["logprobs"] = logprobs_json(std::slice::from_ref(t), std::slice::from_ref(piece));
            }
            out.push(chunk(t.version, choice));
        }
        let (message, finish) = reply(&rendered, shape.thinking);
        let calls = message.to_json().get("tool_calls").cloned();
        let delta = calls.map_or(json!({}), |c| json!({ "tool_calls": c }));
        let last = sample.versions().map_or(shape.version, |v| v.1);
        out.push(chunk(last, json!({"index": sample.index, "delta": delta, "finish_reason": finish})));
    }
    out
}
