//! Middleware that guards the routes: the client key (`--api-key`), the administrator's key for
//! weight pushes (`--admin-key`), and the body limit of generation requests.
//!
//! Keys are compared in constant time over their bytes. A body over the limit is read to its end
//! (up to [`DRAIN_LIMIT`], without keeping it) before the 413 goes out, so a client that sends the
//! whole body before reading the answer gets the answer, not a reset connection.

use super::{ApiError, AppState};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header::AUTHORIZATION, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use tokio_stream::StreamExt;

/// The most bytes of an oversized body read (and dropped) before answering 413; past it the
/// connection is closed.
pub const DRAIN_LIMIT: usize = 1 << 30;

/// Whether `headers` carry `Authorization: Bearer <key>`.
fn bearer_is(headers: &HeaderMap, key: &str) -> bool {
    let given = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    given.is_some_and(|g| {
        let (a, b) = (g.trim().as_bytes(), key.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    })
}

/// 401 in OpenAI's shape.
fn unauthorized(message: &str) -> Response {
    let mut e = ApiError::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message);
    e.code = Some("invalid_api_key");
    e.into_response()
}

/// Client routes: with an API key configured, the request must carry it.
pub(crate) async fn client_key(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if let Some(key) = &state.config.api_key {
        if !bearer_is(request.headers(), key) {
            return unauthorized("a valid API key is required: send `Authorization: Bearer <key>`");
        }
    }
    next.run(request).await
}

/// `POST /v1/weights`: 403 unless an administrator's key is configured, then 401 unless the
/// request carries it. Checked before the body is read.
pub(crate) async fn admin_key(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let Some(key) = &state.config.admin_key else {
        let message = "weight updates over HTTP are disabled; start the server with --admin-key to enable them";
        return ApiError::new(StatusCode::FORBIDDEN, "permission_error", message).into_response();
    };
    if !bearer_is(request.headers(), key) {
        return unauthorized("weight updates need the administrator's key: `Authorization: Bearer <admin key>`");
    }
    next.run(request).await
}

/// Generation routes: buffers the body up to `state.config.max_body_bytes`; a larger one is 413
/// naming `body`.
pub(crate) async fn body_limit(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let limit = state.config.max_body_bytes;
    let (parts, body) = request.into_parts();
    let mut stream = body.into_data_stream();
    let mut kept = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return ApiError::invalid("body", "the request body could not be read").into_response();
        };
        total = total.saturating_add(chunk.len());
        if total <= limit {
            kept.extend_from_slice(&chunk);
        } else if total > DRAIN_LIMIT {
            break;
        }
    }
    if total > limit {
        let message = format!("the request body exceeds this server's limit of {limit} bytes");
        return ApiError::invalid("body", message).with_status(StatusCode::PAYLOAD_TOO_LARGE).into_response();
    }
    next.run(Request::from_parts(parts, Body::from(kept))).await
}
