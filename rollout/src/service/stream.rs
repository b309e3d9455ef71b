//! Server-sent events: a response whose body is `data: {chunk}\n\n` per chunk and `data: [DONE]`
//! last, with keep-alive comments meanwhile. A task reads the requests' events as the engine
//! thread sends them (new tokens after every step, then the outcome), has the endpoint's
//! [`Chunker`] turn them into chunks, and feeds the body at once. When the client goes away the
//! body is dropped, the task ends, its receivers drop, and the engine thread aborts the requests
//! at its next step.

use super::worker::Event;
use super::{AppState, Ticket};
use crate::engine::{RequestOutput, Sample, Token};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::mpsc::{channel, Sender, UnboundedReceiver};
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tokio_stream::{StreamExt, StreamMap};

/// Turns one response's engine events into chunks; each endpoint has its own.
pub(crate) trait Chunker: Send + 'static {
    /// Chunks for `tokens`, the next tokens of sample `sample` of prompt `prompt` (the request's
    /// position among those the response submitted).
    fn tokens(&mut self, prompt: usize, sample: usize, tokens: &[Token]) -> Vec<Value>;
    /// Chunks that end `sample` of prompt `prompt`; every token of it has gone through
    /// [`Chunker::tokens`] already.
    fn finish(&mut self, prompt: usize, sample: &Sample) -> Vec<Value>;
    /// Chunks after every request ended, before `[DONE]` (the usage chunk of
    /// `stream_options.include_usage`).
    fn end(&mut self) -> Vec<Value> {
        Vec::new()
    }
}

/// Streams the chunks `chunker` makes of the requests' events.
pub(crate) fn sse(
    state: &Arc<AppState>,
    ticket: Ticket,
    receivers: Vec<UnboundedReceiver<Event>>,
    mut chunker: impl Chunker,
) -> Response {
    let (tx, rx) = channel::<Result<SseEvent, Infallible>>(64);
    tokio::spawn(async move {
        let _ticket = ticket;
        if let Ok(completed) = pump(receivers, &mut chunker, &tx).await {
            for chunk in if completed { chunker.end() } else { Vec::new() } {
                if tx.send(Ok(SseEvent::default().data(chunk.to_string()))).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(Ok(SseEvent::default().data("[DONE]"))).await;
        }
    });
    let keep_alive = KeepAlive::new().interval(state.config.keep_alive);
    Sse::new(ReceiverStream::new(rx)).keep_alive(keep_alive).into_response()
}

/// Sends chunks as the events come until every request has ended (true), or one failed (an error
/// chunk ends the stream; false). Err once the client has gone.
async fn pump(
    receivers: Vec<UnboundedReceiver<Event>>,
    chunker: &mut impl Chunker,
    tx: &Sender<Result<SseEvent, Infallible>>,
) -> Result<bool, ()> {
    let mut open = receivers.len();
    let mut events: StreamMap<usize, _> = receivers.into_iter().map(UnboundedReceiverStream::new).enumerate().collect();
    // Tokens already chunked per (prompt, sample): an outcome's tokens beyond them are new.
    let mut seen: HashMap<(usize, usize), usize> = HashMap::new();
    while open > 0 {
        let event = tokio::select! {
            event = events.next() => event,
            _ = tx.closed() => return Err(()),
        };
        let chunks = match event {
            Some((prompt, Event::Tokens(progress))) => {
                *seen.entry((prompt, progress.sample)).or_default() += progress.tokens.len();
                chunker.tokens(prompt, progress.sample, &progress.tokens)
            }
            Some((prompt, Event::Done(output))) => {
                open -= 1;
                finish(chunker, prompt, &output, &seen)
            }
            Some((_, Event::Rejected(e))) => vec![error_chunk(e.into())],
            None => vec![error_chunk(super::ApiError::unavailable("the engine thread stopped before answering"))],
        };
        let failed = chunks.first().is_some_and(|c| c.get("error").is_some());
        for chunk in chunks {
            tx.send(Ok(SseEvent::default().data(chunk.to_string()))).await.map_err(|_| ())?;
        }
        if failed {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The chunks of an ended request: per sample, its tokens not streamed yet, then its end.
fn finish(
    chunker: &mut impl Chunker,
    prompt: usize,
    output: &RequestOutput,
    seen: &HashMap<(usize, usize), usize>,
) -> Vec<Value> {
    let mut chunks = Vec::new();
    for sample in &output.samples {
        let from = seen.get(&(prompt, sample.index)).copied().unwrap_or(0);
        chunks.extend(chunker.tokens(prompt, sample.index, &sample.tokens[from..]));
        chunks.extend(chunker.finish(prompt, sample));
    }
    chunks
}

/// An error in the stream, in OpenAI's error shape.
fn error_chunk(e: super::ApiError) -> Value {
    json!({"error": {"message": e.message, "type": e.kind, "param": e.param, "code": e.code.map_or_else(|| e.status.as_u16().to_string(), str::to_string)}})
}
