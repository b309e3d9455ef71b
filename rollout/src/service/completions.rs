//! `POST /v1/completions`: OpenAI's text completions over the engine. `prompt` may be text
//! (tokenized with special tokens, e.g. BOS), token ids, or a list of either; prompt `i` is engine
//! request index `i`, and its `n` samples are choices `i·n .. i·n + n`.
//!
//! Streaming sends per token a chunk with the text it adds (held back while it may still become a
//! stop string or is part of an unfinished character; see `delta.rs`), its log-prob and version,
//! then per choice a chunk with the finish reason. Choices' chunks interleave as they are drawn.

use super::api::{parse_request, CompletionRequest, LogprobsFlag, PromptInput, Sampling};
use super::delta::TextStream;
use super::render::{add_extras, fingerprint, finish_name, newest_version, piece_of, render, usage, Extras, Rendered};
use super::stream::{self, Chunker};
use super::{collect, unix_now, ApiError, AppState};
use crate::engine::{RequestOutput, Sample, Token, MAX_TOP_LOGPROBS};
use crate::tokenizer::Tokenizer;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// What every choice of one response shares.
struct Shape {
    id: String,
    created: u64,
    model: String,
    logprobs: bool,
    /// Alternatives per token in `top_logprobs`.
    top: usize,
    echo: bool,
    /// End the stream with a usage chunk.
    include_usage: bool,
    extras: Extras,
    stops: Vec<String>,
    prompts: Vec<Vec<i64>>,
    /// Samples per prompt.
    n: usize,
    version: u64,
    /// The engine request index of the first prompt (`rlvr.index`, else 0).
    base: usize,
    /// Answer with the engine's records (`rlvr`).
    records: bool,
}

/// The handler.
pub(crate) async fn completions(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    state.check_open()?;
    let (req, s): (CompletionRequest, _) = parse_request(&body)?;
    let s = &s;
    s.check_model(&state.limits)?;
    let prompts = prompt_ids(&state, &req.prompt)?;
    let (fresh_seed, id) = state.fresh();
    let (seed, base) = stream_coords(s, fresh_seed)?;
    let top = req.logprobs.map_or(0, LogprobsFlag::top);
    if top > MAX_TOP_LOGPROBS {
        return Err(ApiError::invalid("logprobs", format!("field `logprobs`: {top} is more than {MAX_TOP_LOGPROBS}")));
    }
    let requests = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| s.request(p.clone(), base + i, seed, top, &state.limits))
        .collect::<Result<Vec<_>, _>>()?;
    let n = requests[0].n;
    let ticket = state.admit(requests.len())?;
    let receivers = state.submit(requests, s.stream)?;
    let shape = Shape {
        id: format!("cmpl-{id}"),
        created: unix_now(),
        model: state.limits.model.clone(),
        logprobs: req.logprobs.is_some_and(LogprobsFlag::enabled),
        top,
        echo: req.echo,
        include_usage: s.include_usage(),
        extras: Extras {
            token_ids: s.return_token_ids,
            sampling_mask: s.return_sampling_mask,
            routing: s.return_routing,
        },
        stops: s.stop_strings(),
        prompts,
        n,
        version: state.metrics.version(),
        base,
        records: s.rlvr.is_some(),
    };
    if s.stream {
        let chunks = Chunks { tok: state.tokenizer.clone(), shape, texts: HashMap::new(), completion_tokens: 0 };
        return Ok(stream::sse(&state, ticket, receivers, chunks));
    }
    let outputs = collect(receivers).await?;
    drop(ticket);
    Ok(Json(full_body(&state, &shape, &outputs)).into_response())
}

/// The streams' seed and the first prompt's stream index: `rlvr`'s coordinates, else `seed` (or
/// `fresh`) and 0. `rlvr` names the seed itself and needs a whole (not streamed) answer.
fn stream_coords(s: &Sampling, fresh: u64) -> Result<(u64, usize), ApiError> {
    let Some(coords) = &s.rlvr else {
        return Ok((s.seed.unwrap_or(fresh), 0));
    };
    if s.seed.is_some() {
        return Err(ApiError::invalid("seed", "field `seed`: give the seed in `rlvr.seed` only"));
    }
    if s.stream {
        return Err(ApiError::invalid("rlvr", "field `rlvr`: the engine's records come only with `stream: false`"));
    }
    Ok((coords.seed, coords.index))
}

/// Token ids of every prompt; text needs the tokenizer.
fn prompt_ids(state: &AppState, prompt: &PromptInput) -> Result<Vec<Vec<i64>>, ApiError> {
    let encode = |text: &String| {
        let tok = state.tokenizer.as_ref().ok_or_else(|| {
            ApiError::invalid("prompt", "text prompts need the model directory's tokenizer.json; send token ids")
        })?;
        tok.encode(text, true).map_err(|e| ApiError::invalid("prompt", e.to_string()))
    };
    let prompts = match prompt {
        PromptInput::Text(t) => vec![encode(t)?],
        PromptInput::Texts(ts) => ts.iter().map(encode).collect::<Result<_, _>>()?,
        PromptInput::Ids(ids) => vec![ids.clone()],
        PromptInput::Batch(b) => b.clone(),
    };
    if prompts.is_empty() {
        return Err(ApiError::invalid("prompt", "no prompts given"));
    }
    Ok(prompts)
}

/// Each sample of `outputs` with its choice index and prompt (engine indices from `base`), in
/// choice order.
fn choices(outputs: &[RequestOutput], base: usize) -> Vec<(usize, &Sample, usize)> {
    let mut out = Vec::new();
    for o in outputs {
        let (n, p) = (o.samples.len(), o.index - base);
        out.extend(o.samples.iter().map(|s| (p * n + s.index, s, p)));
    }
    out.sort_by_key(|c| c.0);
    out
}

/// OpenAI's completions `top_logprobs` entry of one token: alternative text → log-prob.
fn top_json(t: &Token, tok: Option<&Tokenizer>) -> Value {
    let mut map = Map::new();
    for &(id, lp) in t.top.iter().flatten() {
        map.entry(piece_of(tok, id, true)).or_insert(json!(lp));
    }
    Value::Object(map)
}

/// OpenAI's completions `logprobs` object for `pieces` of `sample`, with `token_ids` added (and
/// `top_ids`, the alternatives' ids, when alternatives were asked for).
fn logprobs_json(sample: &Sample, pieces: &[String], top: usize, tok: Option<&Tokenizer>) -> Value {
    let mut offset = 0;
    let offsets: Vec<usize> = pieces
        .iter()
        .map(|p| {
            offset += p.len();
            offset - p.len()
        })
        .collect();
    let mut out = json!({"tokens": pieces, "token_logprobs": sample.logprobs(), "token_ids": sample.ids(),
        "top_logprobs": null, "text_offset": offsets});
    if top > 0 {
        out["top_logprobs"] = sample.tokens.iter().map(|t| top_json(t, tok)).collect();
        out["top_ids"] = sample.tokens.iter().map(|t| json!(t.top)).collect();
    }
    out
}

/// The non-streamed response.
fn full_body(state: &AppState, shape: &Shape, outputs: &[RequestOutput]) -> Value {
    let tok = state.tokenizer.as_deref();
    let mut list = Vec::new();
    for (index, sample, p) in choices(outputs, shape.base) {
        let Rendered { pieces, text, finish } = render(sample, tok, true, &shape.stops);
        let prefix = match (shape.echo, tok) {
            (true, Some(tok)) => tok.decode(&shape.prompts[p], true).unwrap_or_default(),
            _ => String::new(),
        };
        let mut choice = Map::new();
        choice.insert("index".into(), json!(index));
        choice.insert("text".into(), json!(prefix + &text));
        let logprobs = if shape.logprobs { logprobs_json(sample, &pieces, shape.top, tok) } else { Value::Null };
        choice.insert("logprobs".into(), logprobs);
        choice.insert("finish_reason".into(), json!(finish));
        add_extras(&mut choice, sample, &shape.prompts[p], shape.extras);
        list.push(Value::Object(choice));
    }
    let prompt_tokens: usize = shape.prompts.iter().map(Vec::len).sum();
    let completion_tokens: usize = outputs.iter().flat_map(|o| &o.samples).map(|s| s.tokens.len()).sum();
    let version = newest_version(outputs.iter().flat_map(|o| &o.samples), shape.version);
    let mut body = json!({
        "id": shape.id, "object": "text_completion", "created": shape.created, "model": shape.model,
        "system_fingerprint": fingerprint(version), "choices": list,
        "usage": usage(prompt_tokens, completion_tokens),
    });
    if shape.records {
        body["rlvr"] = json!({"outputs": outputs});
    }
    body
}

/// The streamed response's chunks (see the module notes); their texts add up to the
/// non-streamed `text`.
struct Chunks {
    tok: Option<Arc<Tokenizer>>,
    shape: Shape,
    /// Each choice's text so far, by choice index (with a tokenizer).
    texts: HashMap<usize, TextStream>,
    /// Tokens of the choices ended so far.
    completion_tokens: usize,
}

impl Chunks {
    /// A chunk of one choice, stamped with `version`.
    fn chunk(&self, version: u64, choice: Value) -> Value {
        let shape = &self.shape;
        let mut chunk = json!({"id": shape.id, "object": "text_completion", "created": shape.created,
            "model": shape.model, "system_fingerprint": fingerprint(version), "choices": [choice]});
        if shape.include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    /// Token `t`'s piece and the text it releases (empty without a tokenizer).
    fn advance(&mut self, index: usize, t: &Token) -> (String, String) {
        let Some(tok) = &self.tok else {
            return (format!("token_id:{}", t.id), String::new());
        };
        let text = self.texts.entry(index).or_insert_with(|| TextStream::new(true));
        let piece = text.push(tok, t.id);
        let range = text.release(&self.shape.stops, &[]);
        (piece, text.text()[range].to_string())
    }
}

impl Chunker for Chunks {
    fn tokens(&mut self, prompt: usize, sample: usize, tokens: &[Token]) -> Vec<Value> {
        let index = prompt * self.shape.n + sample;
        let mut out = Vec::with_capacity(tokens.len());
        for t in tokens {
            let (piece, text) = self.advance(index, t);
            let mut choice = json!({"index": index, "text": text, "logprobs": null, "finish_reason": null});
            if self.shape.logprobs {
                choice["logprobs"] = json!({"tokens": [piece], "token_logprobs": [t.logprob], "token_ids": [t.id]});
                if self.shape.top > 0 {
                    choice["logprobs"]["top_logprobs"] = json!([top_json(t, self.tok.as_deref())]);
                    choice["logprobs"]["top_ids"] = json!([t.top]);
                }
            }
            if self.shape.extras.token_ids {
                choice["token_ids"] = json!([t.id]);
            }
            out.push(self.chunk(t.version, choice));
        }
        out
    }

    /// The finish reason, with the text held back to the end (e.g. a stop string's start that
    /// never completed one).
    fn finish(&mut self, prompt: usize, sample: &Sample) -> Vec<Value> {
        let index = prompt * self.shape.n + sample.index;
        self.completion_tokens += sample.tokens.len();
        let rest = match (&self.tok, self.texts.get_mut(&index)) {
            (Some(tok), Some(text)) => {
                let range = text.finish(tok, sample.finish_reason, &self.shape.stops);
                text.text()[range].to_string()
            }
            _ => String::new(),
        };
        let finish = finish_name(sample.finish_reason);
        let last = sample.versions().map_or(self.shape.version, |v| v.1);
        vec![self.chunk(last, json!({"index": index, "text": rest, "logprobs": null, "finish_reason": finish}))]
    }

    /// With `include_usage`: the usage chunk.
    fn end(&mut self) -> Vec<Value> {
        if !self.shape.include_usage {
            return Vec::new();
        }
        let shape = &self.shape;
        let prompt_tokens: usize = shape.prompts.iter().map(Vec::len).sum();
        vec![json!({"id": shape.id, "object": "text_completion", "created": shape.created, "model": shape.model,
            "system_fingerprint": fingerprint(shape.version), "choices": [],
            "usage": usage(prompt_tokens, self.completion_tokens)})]
    }
}
