//! The service's errors: [`ApiError`], what a client gets (an HTTP status and OpenAI's error object
//! `{"error": {"message", "type", "param", "code"}}`, `param` naming the request field at fault), and
//! [`ServiceError`], what starting or running the server can fail with.

use crate::chat::ChatError;
use crate::engine::EngineError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An error answered to the client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, for a person.
    pub message: String,
    /// OpenAI's error `type` (`invalid_request_error`, `rate_limit_error`, ...).
    pub kind: &'static str,
    /// The request field at fault, when one is.
    pub param: Option<String>,
    /// OpenAI's error `code` when it has a name (`invalid_api_key`); else the status as text.
    pub code: Option<&'static str>,
}

impl ApiError {
    /// A 400 about `param`.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.into()),
            code: None,
        }
    }

    /// An error with no field to blame.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), kind, param: None, code: None }
    }

    /// 429: every slot and queue place is taken.
    pub fn queue_full(limit: usize) -> Self {
        let message = format!("the server holds its limit of {limit} requests; retry later");
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message)
    }

    /// 503: the server is shutting down or its engine has stopped.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
    }

    /// The same error with its status replaced.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
}

impl From<EngineError> for ApiError {
    /// A rejected request names the engine's field in the API's terms (`stop_strings` is `stop`);
    /// a refused weight update blames the checksum (409) or the weights (400), and a pushed file
    /// that is not usable safetensors the body (400: paths get one answer for every failure,
    /// `weights.rs`); a cache that does not fit is the server's fault (500).
    fn from(e: EngineError) -> Self {
        match &e {
            EngineError::BadRequest { field, .. } => {
                let param = if *field == "stop_strings" { "stop" } else { field };
                ApiError::invalid(param, e.to_string())
            }
            EngineError::ChecksumMismatch { .. } => {
                ApiError::invalid("checksum", e.to_string()).with_status(StatusCode::CONFLICT)
            }
            EngineError::WeightMismatch { .. } => ApiError::invalid("weights", e.to_string()),
            EngineError::WeightsFile { .. } => ApiError::invalid("body", e.to_string()),
            // Raised when an engine is built, before any request: a server fault if it ever reaches one.
            EngineError::CacheDoesNotFit { .. } => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", e.to_string())
            }
        }
    }
}

impl From<ChatError> for ApiError {
    fn from(e: ChatError) -> Self {
        match &e {
            ChatError::Field { field, .. } => ApiError::invalid(field.clone(), e.to_string()),
            ChatError::Completion { .. } => ApiError::invalid("messages", e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code.map_or_else(|| self.status.as_u16().to_string(), str::to_string);
        let body = json!({"error": {
            "message": self.message, "type": self.kind, "param": self.param, "code": code,
        }});
        (self.status, Json(body)).into_response()
    }
}

/// Failures starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The runtime could not start, or serving failed.
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
    /// The engine thread panicked.
    #[error("the engine thread panicked")]
    EnginePanicked,
}
