//! The router: every endpoint, the 404 for unknown paths, the body limit, and the middleware that
//! counts responses and stamps the policy version.

use super::chat_completions::chat_completions;
use super::completions::completions;
use super::guard;
use super::metrics::track;
use super::{ApiError, AppState};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header::CONTENT_TYPE, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use serde_json::json;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

/// The service's routes over `state`: client routes behind the API key (when one is set),
/// generation bodies limited to [`super::ServiceConfig::max_body_bytes`], weight pushes behind the
/// administrator's key (their raw bodies unlimited: streamed to disk, `spill.rs`).
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let metrics = state.metrics.clone();
    let generation = Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .layer(DefaultBodyLimit::disable())
        .route_layer(middleware::from_fn_with_state(state.clone(), guard::body_limit));
    let client = generation
        .route("/v1/models", get(models))
        .route_layer(middleware::from_fn_with_state(state.clone(), guard::client_key));
    let admin = Router::new()
        .route("/v1/weights", post(super::weights::update))
        .route_layer(middleware::from_fn_with_state(state.clone(), guard::admin_key));
    client
        .merge(admin)
        .route("/health", get(health))
        .route("/metrics", get(prometheus))
        .fallback(not_found)
        .with_state(state)
        .layer(middleware::from_fn_with_state(metrics, track))
}

/// `GET /health`: 200 while the engine runs and the server accepts requests, else 503.
async fn health(State(state): State<Arc<AppState>>) -> Response {
    let version = state.metrics.version();
    let (status, word) = if !state.worker.is_alive() {
        (StatusCode::SERVICE_UNAVAILABLE, "engine stopped")
    } else if state.draining.load(SeqCst) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down")
    } else {
        (StatusCode::OK, "ok")
    };
    (status, Json(json!({"status": word, "policy_version": version}))).into_response()
}

/// `GET /v1/models`: the one served model.
async fn models(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let model = json!({"id": state.limits.model, "object": "model", "created": 0, "owned_by": "rlvr",
        "max_model_len": state.limits.context, "policy_version": state.metrics.version()});
    Json(json!({"object": "list", "data": [model]}))
}

/// `GET /metrics`: Prometheus text.
async fn prometheus(State(state): State<Arc<AppState>>) -> Response {
    ([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render()).into_response()
}

/// Any other path.
async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", "no such endpoint")
}
