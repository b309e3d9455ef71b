//! The three calls the trainer makes to an `rlvr serve` server, each with a deadline: its health
//! (and policy version), a completions request with the `rlvr` stream coordinates (answered with
//! the engine's own records), and a weight push (safetensors bytes with their checksum).

use super::stream::SafetensorsReader;
use crate::sampler::Settings;
use rlvr_rollout::engine::RequestOutput;
use serde_json::{json, Value};
use std::time::Duration;
use tch::Tensor;
use ureq::SendBody;

/// Why a call failed: the server did not answer in time or at all (worth another try), or it
/// answered with an error.
#[derive(Debug)]
pub enum CallError {
    /// Timeout, refused connection, reset, unreadable answer, 5xx or 429.
    Unreachable(String),
    /// A 4xx answer: the request itself is wrong for this server.
    Refused(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(why) | CallError::Refused(why) => f.write_str(why),
        }
    }
}

/// A blocking HTTP client of one server.
pub struct Client {
    agent: ureq::Agent,
    /// `http://host:port`.
    pub url: String,
    admin_key: String,
}

impl Client {
    /// A client of the server at `url` pushing weights with `admin_key`.
    pub fn new(url: &str, admin_key: &str) -> Self {
        let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
        Client { agent, url: url.trim_end_matches('/').to_string(), admin_key: admin_key.to_string() }
    }

    /// `GET /health`'s policy version, when the server answers 200 within `timeout`.
    pub fn health(&self, timeout: Duration) -> Result<u64, CallError> {
        let request = self.agent.get(format!("{}/health", self.url)).config().timeout_global(Some(timeout)).build();
        let answer = finish(request.call())?;
        let value: Value = serde_json::from_str(&answer).map_err(|e| CallError::Unreachable(format!("health: {e}")))?;
        value["policy_version"].as_u64().ok_or_else(|| CallError::Unreachable(format!("health answered {answer}")))
    }

    /// The samples of `prompts` from streams (`seed`, `first_index + i`, j), stopping at
    /// `stop_ids`, within `timeout`; the engine's records in prompt order.
    pub fn complete(
        &self,
        prompts: &[Vec<i64>],
        settings: &Settings,
        stop_ids: &[i64],
        seed: u64,
        first_index: usize,
        timeout: Duration,
    ) -> Result<Vec<RequestOutput>, CallError> {
        let s = &settings.sampling;
        let body = json!({
            "prompt": prompts, "n": settings.n, "max_tokens": s.max_tokens, "temperature": s.temperature,
            "top_p": s.top_p, "top_k": s.top_k, "min_p": s.min_p,
            "return_sampling_mask": settings.sampling_mask, "return_routing": settings.routing,
            "rlvr": {"seed": seed, "index": first_index, "stop_ids": stop_ids},
        });
        let request =
            self.agent.post(format!("{}/v1/completions", self.url)).config().timeout_global(Some(timeout)).build();
        let answer = finish(request.content_type("application/json").send(body.to_string()))?;
        let mut value: Value =
            serde_json::from_str(&answer).map_err(|e| CallError::Unreachable(format!("completions: {e}")))?;
        let mut outputs: Vec<RequestOutput> = serde_json::from_value(value["rlvr"]["outputs"].take())
            .map_err(|e| CallError::Unreachable(format!("completions: no engine records: {e}")))?;
        outputs.sort_by_key(|o| o.index);
        if outputs.len() != prompts.len() || outputs.iter().enumerate().any(|(i, o)| o.index != first_index + i) {
            return Err(CallError::Unreachable("completions: the records do not match the prompts".into()));
        }
        Ok(outputs)
    }

    /// Pushes `tensors`, streamed as safetensors ([`SafetensorsReader`]), whose
    /// [`rlvr_rollout::engine::checksum_of`] is `checksum`; the server's new version.
    pub fn push(&self, tensors: Vec<(String, Tensor)>, checksum: u64, timeout: Duration) -> Result<u64, CallError> {
        let request = self
            .agent
            .post(format!("{}/v1/weights", self.url))
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("Authorization", format!("Bearer {}", self.admin_key))
            .header(rlvr_rollout::service::CHECKSUM_HEADER, format!("{checksum:016x}"))
            .content_type("application/octet-stream");
        let answer = finish(request.send(SendBody::from_owned_reader(SafetensorsReader::new(tensors))))?;
        let value: Value =
            serde_json::from_str(&answer).map_err(|e| CallError::Unreachable(format!("weights: {e}")))?;
        value["version"].as_u64().ok_or_else(|| CallError::Unreachable(format!("weights answered {answer}")))
    }
}

/// The body of a 2xx answer; anything else as a [`CallError`].
fn finish(sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<String, CallError> {
    let mut response = sent.map_err(|e| CallError::Unreachable(e.to_string()))?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_string()
        .map_err(|e| CallError::Unreachable(format!("reading the answer: {e}")))?;
    match status {
        200..=299 => Ok(text),
        429 | 500..=599 => Err(CallError::Unreachable(format!("HTTP {status}: {text}"))),
        _ => Err(CallError::Refused(format!("HTTP {status}: {text}"))),
    }
}
