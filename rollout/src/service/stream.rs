//! Server-sent events: a response whose body is `data: {chunk}\n\n` per chunk and `data: [DONE]`
//! last, with keep-alive comments meanwhile. A task awaits the requests' outcomes and feeds the
//! body; when the client goes away the body is dropped, the task ends, its receivers drop, and the
//! engine thread aborts the requests.

use super::worker::Event;
use super::{collect, AppState, Ticket};
use crate::engine::RequestOutput;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::mpsc::{channel, UnboundedReceiver};
use tokio_stream::wrappers::ReceiverStream;

/// Streams the chunks `chunks` makes of the requests' outputs.
pub(crate) fn sse<F>(
    state: &Arc<AppState>,
    ticket: Ticket,
    receivers: Vec<UnboundedReceiver<Event>>,
    chunks: F,
) -> Response
where
    F: FnOnce(Vec<RequestOutput>) -> Vec<Value> + Send + 'static,
{
    let (tx, rx) = channel::<Result<SseEvent, Infallible>>(64);
    tokio::spawn(async move {
        let _ticket = ticket;
        let outcome = tokio::select! {
            outcome = collect(receivers) => outcome,
            _ = tx.closed() => return,
        };
        let data = match outcome {
            Ok(outputs) => chunks(outputs),
            Err(e) => vec![json!({"error": {"message": e.message, "type": e.kind, "param": e.param,
                "code": e.status.as_u16().to_string()}})],
        };
        for chunk in data {
            if tx.send(Ok(SseEvent::default().data(chunk.to_string()))).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Ok(SseEvent::default().data("[DONE]"))).await;
    });
    let keep_alive = KeepAlive::new().interval(state.config.keep_alive);
    Sse::new(ReceiverStream::new(rx)).keep_alive(keep_alive).into_response()
}
