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

use super::worker::Command;
use super::{ApiError, AppState};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header::CONTENT_TYPE, HeaderMap, StatusCode};
use axum::Json;
use rlvr_model::checkpoint::read_all;
use rlvr_model::ModelConfig;
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

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
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    state.check_open()?;
    hang_if_asked(&state).await;
    let is_json =
        headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    let st = state.clone();
    let (tensors, checksum) = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        if is_json {
            let value: Value = serde_json::from_slice(&body)
                .map_err(|e| ApiError::invalid("body", format!("the body is not valid JSON: {e}")))?;
            let req: ByPath = super::api::fields(&value)?;
            let checksum = parse_checksum(&req.checksum, "checksum")?;
            let Some(root) = &st.config.weights_dir else {
                let message = "reading weights from a path is disabled; start the server with --weights-dir DIR";
                return Err(ApiError::invalid("path", message).with_status(StatusCode::FORBIDDEN));
            };
            let path = confine(root, &req.path)?;
            Ok((read_path(&path, st.kind, &st.model_config).map_err(|()| unreadable(&req.path))?, checksum))
        } else {
            let header = headers.get(CHECKSUM_HEADER).and_then(|v| v.to_str().ok());
            let header = header.ok_or_else(|| ApiError::invalid(CHECKSUM_HEADER, "raw weights need this header"))?;
            Ok((from_safetensors(&body, "body")?, parse_checksum(header, CHECKSUM_HEADER)?))
        }
    })
    .await
    .map_err(|e| ApiError::unavailable(format!("loading weights failed: {e}")))??;
    let (reply, answer) = tokio::sync::oneshot::channel();
    if !state.worker.send(Command::Weights { tensors, checksum, reply }) {
        return Err(ApiError::unavailable("the engine thread has stopped"));
    }
    let version = answer.await.map_err(|_| ApiError::unavailable("the engine thread stopped"))??;
    Ok(Json(json!({"version": version, "checksum": format!("{checksum:016x}")})))
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

/// The tensors of a safetensors file or a model directory; what failed is not reported, so no
/// answer reveals what a file holds.
fn read_path(path: &Path, kind: Kind, served: &ModelConfig) -> Result<Vec<(String, Tensor)>, ()> {
    if path.is_dir() {
        let config = ModelConfig::from_path(path).map_err(|_| ())?;
        if config.vocab_size != served.vocab_size || config.hidden_size != served.hidden_size {
            return Err(());
        }
        let tensors = read_all(path, &config, kind, Device::Cpu).map_err(|_| ())?;
        return Ok(tensors.into_iter().collect());
    }
    let bytes = std::fs::read(path).map_err(|_| ())?;
    from_safetensors(&bytes, "path").map_err(|_| ())
}

/// The tensors of a safetensors buffer, in their stored dtypes.
fn from_safetensors(bytes: &[u8], param: &str) -> Result<Vec<(String, Tensor)>, ApiError> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| ApiError::invalid(param, format!("not safetensors: {e}")))?;
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let kind = match view.dtype() {
                Dtype::F32 => Kind::Float,
                Dtype::BF16 => Kind::BFloat16,
                Dtype::F16 => Kind::Half,
                Dtype::F64 => Kind::Double,
                other => return Err(ApiError::invalid(param, format!("`{name}` has dtype {other:?}; send floats"))),
            };
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            let tensor = Tensor::f_from_data_size(view.data(), &shape, kind)
                .map_err(|e| ApiError::invalid(param, format!("`{name}`: {e}")))?;
            Ok((name, tensor))
        })
        .collect()
}
