//! `POST /v1/weights`: new policy weights for the engine, applied between two steps.
//!
//! An administrator's action: served only with [`super::ServiceConfig::admin_key`] set, to
//! requests carrying that key (`guard.rs`; 403 / 401 otherwise). Two forms:
//! * JSON `{"path": P, "checksum": "<hex>"}`: P a safetensors file (tensors as stored) or a model
//!   directory (read with `rlvr_model::checkpoint::read_all` in the served model's dtype, FP8
//!   decoded), relative to [`super::ServiceConfig::weights_dir`] or absolute; resolved (links
//!   followed) it must lie inside that directory, and without one this form is refused. A path
//!   outside, a missing one and an unreadable one get the same 400 naming `path`, and no answer
//!   quotes what a file holds;
//! * raw safetensors bytes (any other content type), the checksum in the `x-rlvr-checksum` header.
//!
//! The checksum is [`crate::engine::checksum_of`] the tensors so read, as 16 hex digits (an optional
//! `0x` prefix is accepted). A mismatch is 409 naming `checksum`; tensors that do not fit the model
//! are 400 naming `weights`. Success answers `{"version": v, "checksum": "<hex>"}`, `v` the policy
//! version the update was applied as.

//! `POST /v1/weights`: new policy weights for the engine, applied between two steps.
//!
//! An administrator's action: served only with [`super::ServiceConfig::admin_key`] set, to
//! requests carrying that key (`guard.rs`; 403 / 401 otherwise). Two forms:
//! * raw safetensors bytes (any content type but JSON), the checksum in the `x-rlvr-checksum`
//!   header. The body is streamed to an unnamed spill file on disk (`spill.rs`; no size limit, so
//!   multi-GB models pass), which is memory-mapped and applied from the map (`engine/mapped.rs`);
//! * JSON `{"path": P, "checksum": "<hex>"}` (a body of at most
//!   [`super::ServiceConfig::max_body_bytes`]): P a safetensors file, mapped the same way, or a
//!   model directory, read whole with `rlvr_model::checkpoint::read_all` in the served model's
//!   dtype (FP8 decoded, shards merged) and snapshotted by the engine — a directory costs two
//!   copies of the model in memory for the moment, so push files for large models. P is relative
//!   to [`super::ServiceConfig::weights_dir`] or absolute; resolved (links followed) it must lie
//!   inside that directory, and without one this form is refused. A path outside, a missing one
//!   and an unreadable one get the same 400 naming `path`, and no answer quotes what a file holds.
//!
//! **Memory**: a pushed file is never in the process's own memory as a whole. Its checksum and
//! the name/shape check run over the mapped bytes (file pages, which the kernel may drop and
//! re-read), the engine's queued update holds the map, and the next step copies it into the model
//! one tensor at a time (one tensor's transient copy at most). The map, and with it a spill file,
//! goes when the update is applied, replaced by a later one, or refused.
//!
//! The checksum is [`crate::engine::checksum_of`] the tensors so read, as 16 hex digits (an optional
//! `0x` prefix is accepted); it is checked here, off the engine thread, for files. A mismatch is
//! 409 naming `checksum`; tensors that do not fit the model are 400 naming `weights`; a body that is
//! not float safetensors is 400 naming `body`; a disk error while spilling is a 507 or 500 naming
//! the directory. Success answers `{"version": v, "checksum": "<hex>"}`, `v` the policy version
//! the update was applied as.

use super::spill::spill;
use super::worker::{Command, NewWeights};
use super::{ApiError, AppState};
use crate::engine::{EngineError, MappedWeights};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header::CONTENT_TYPE, HeaderMap, StatusCode};
use axum::Json;
use rlvr_model::checkpoint::read_all;
use rlvr_model::ModelConfig;
use serde::Deserialize;
use serde_json::{json, Value};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::{Device, Kind};

/// The header carrying the checksum of a raw-bytes upload.
pub const CHECKSUM_HEADER: &str = "x-rlvr-checksum";

/// A test aid for the trainer's fault-tolerance tests: with `RLVR_FAULT_HANG_WEIGHTS=N` in the
/// server's environment, every weight push after the first N never answers.
pub const HANG_ENV: &str = "RLVR_FAULT_HANG_WEIGHTS";

/// The JSON form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ByPath {
    path: String,
    checksum: String,
}

/// The handler.
pub(crate) async fn update(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    state.check_open()?;
    hang_if_asked(&state).await;
    let is_json =
        headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    let (weights, checksum) =
        if is_json { by_path(&state, body).await? } else { by_body(&state, &headers, body).await? };
    let (reply, answer) = tokio::sync::oneshot::channel();
    if !state.worker.send(Command::Weights { weights, reply }) {
        return Err(ApiError::unavailable("the engine thread has stopped"));
    }
    let version = answer.await.map_err(|_| ApiError::unavailable("the engine thread stopped"))??;
    Ok(Json(json!({"version": version, "checksum": format!("{checksum:016x}")})))
}

/// The raw form: the body spilled to disk, mapped, its checksum checked.
async fn by_body(state: &AppState, headers: &HeaderMap, body: Body) -> Result<(NewWeights, u64), ApiError> {
    let header = headers.get(CHECKSUM_HEADER).and_then(|v| v.to_str().ok());
    let header = header.ok_or_else(|| ApiError::invalid(CHECKSUM_HEADER, "raw weights need this header"))?;
    let checksum = parse_checksum(header, CHECKSUM_HEADER)?;
    let dir = state.config.weights_dir.clone().unwrap_or_else(std::env::temp_dir);
    let file = spill(body, &dir).await?;
    let mapped = blocking(move || MappedWeights::open(&file, checksum).map_err(ApiError::from)).await?;
    Ok((NewWeights::Mapped(mapped), checksum))
}

/// The JSON form: a file mapped and checked, or a model directory read whole.
async fn by_path(state: &Arc<AppState>, body: Body) -> Result<(NewWeights, u64), ApiError> {
    let limit = state.config.max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        ApiError::invalid("body", format!("the JSON body (at most {limit} bytes) could not be read: {e}"))
    })?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid("body", format!("the body is not valid JSON: {e}")))?;
    let req: ByPath = super::api::fields(&value)?;
    let checksum = parse_checksum(&req.checksum, "checksum")?;
    let Some(root) = &state.config.weights_dir else {
        let message = "reading weights from a path is disabled; start the server with --weights-dir DIR";
        return Err(ApiError::invalid("path", message).with_status(StatusCode::FORBIDDEN));
    };
    let path = confine(root, &req.path)?;
    let st = state.clone();
    let weights = blocking(move || read_path(&path, checksum, st.kind, &st.model_config, &req.path)).await?;
    Ok((weights, checksum))
}

/// Runs `work` on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::unavailable(format!("loading weights failed: {e}")))?
}

/// [`HANG_ENV`]: waits forever once the pushes it allows have been made.
async fn hang_if_asked(state: &AppState) {
    let Some(allowed) = std::env::var(HANG_ENV).ok().and_then(|n| n.parse::<u64>().ok()) else { return };
    if state.pushes.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= allowed {
        eprintln!("{HANG_ENV}: this weight push will not be answered");
        std::future::pending::<()>().await;
    }
}

/// A checksum as hex.
fn parse_checksum(text: &str, param: &str) -> Result<u64, ApiError> {
    let hex = text.trim().trim_start_matches("0x");
    u64::from_str_radix(hex, 16)
        .map_err(|e| ApiError::invalid(param, format!("{text:?} is not a 64-bit hex checksum: {e}")))
}

/// The one answer to a path outside the weights directory, missing, or not weights of this model.
fn unreadable(given: &str) -> ApiError {
    ApiError::invalid(
        "path",
        format!("{given:?} is not a safetensors file or model directory of this model inside the weights directory"),
    )
}

/// `given` (relative to `root`, or absolute) resolved, when it lies inside `root` resolved.
fn confine(root: &Path, given: &str) -> Result<PathBuf, ApiError> {
    let root = root.canonicalize().map_err(|_| unreadable(given))?;
    let path = root.join(given).canonicalize().map_err(|_| unreadable(given))?;
    if !path.starts_with(&root) {
        return Err(unreadable(given));
    }
    Ok(path)
}

/// The weights at `path` (`given` by the client): a safetensors file mapped with its checksum
/// checked (a mismatch is 409 as for bytes), or a model directory's tensors. Every other failure
/// is the one [`unreadable`] answer, so no answer reveals what a file holds.
fn read_path(
    path: &Path,
    checksum: u64,
    kind: Kind,
    served: &ModelConfig,
    given: &str,
) -> Result<NewWeights, ApiError> {
    if path.is_dir() {
        let config = ModelConfig::from_path(path).map_err(|_| unreadable(given))?;
        if config.vocab_size != served.vocab_size || config.hidden_size != served.hidden_size {
            return Err(unreadable(given));
        }
        let tensors = read_all(path, &config, kind, Device::Cpu).map_err(|_| unreadable(given))?;
        return Ok(NewWeights::Tensors(tensors.into_iter().collect(), checksum));
    }
    let file = File::open(path).map_err(|_| unreadable(given))?;
    match MappedWeights::open(&file, checksum) {
        Ok(mapped) => Ok(NewWeights::Mapped(mapped)),
        Err(e @ EngineError::ChecksumMismatch { .. }) => Err(e.into()),
        Err(_) => Err(unreadable(given)),
    }
}
