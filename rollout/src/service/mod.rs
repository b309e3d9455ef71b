//! `rlvr serve`: an OpenAI-compatible HTTP service over the rollout engine (docs/architecture.md §5), on tokio
//! and axum.
//!
//! Endpoints (see `routes.rs`): `POST /v1/completions`, `POST /v1/chat/completions` (both with SSE
//! streaming), `GET /v1/models`, `GET /health`, `GET /metrics` (Prometheus text), `POST /v1/weights`.
//! Every response carries the policy version in the `x-rlvr-policy-version` header, and generation
//! answers also as `"system_fingerprint": "rlvr-v<version>"` (per chunk when streamed: the version
//! of that chunk's token).
//!
//! One thread owns the engine (`worker.rs`); handlers send it requests and await their outcome.
//! Admission is bounded: at most `slots + max_queue` engine requests are outstanding, more get 429.
//! Streamed responses send each token's chunk as soon as the engine step that drew it ends (text
//! that may still become a stop string, or bytes of an unfinished character, wait for the next
//! token; see `delta.rs`). A request whose client goes away is aborted at the next engine step
//! (streams notice it when a chunk or a keep-alive comment, every [`ServiceConfig::keep_alive`],
//! fails to send).
//! Shutdown ([`Service::serve`]'s future resolving): stop accepting, let requests in flight finish
//! for [`ServiceConfig::grace`], then abort them (their choices end with `"finish_reason": "abort"`).
//!
//! Guards (`guard.rs`): an optional client API key ([`ServiceConfig::api_key`], 401), weight
//! pushes only with the administrator's key and inside [`ServiceConfig::weights_dir`], and a body
//! limit (413). Every OpenAI field is honoured or refused with a 400 naming it (`api.rs`).
//!
//! Left out (refused with a 400): `best_of` > 1, `suffix`, `response_format` other than text
//! (no constrained decoding), `tool_choice` other than `auto`; also TLS. A streamed chat reply's
//! tool calls come whole with its last chunk.

mod api;
mod chat_completions;
mod completions;
mod delta;
mod errors;
mod guard;
pub mod metrics;
mod render;
mod routes;
mod spill;
mod stream;
mod weights;
mod worker;

pub use errors::{ApiError, ServiceError};
pub use weights::{CHECKSUM_HEADER, HANG_ENV};

use crate::engine::{Engine, EngineConfig, EngineError, RequestOutput};
use crate::tokenizer::Tokenizer;
use api::Limits;
use metrics::Metrics;
use rlvr_model::{DeepseekV32, ModelConfig};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tch::nn::VarStore;
use tch::Kind;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use worker::{Command, Event, Worker};

/// How the service behaves (the engine's size is its [`EngineConfig`]).
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The model name clients must use (or omit) in `model`.
    pub model_name: String,
    /// Engine requests that may wait beyond those the slots hold; more get 429.
    pub max_queue: usize,
    /// How long requests in flight may run on after shutdown begins before they are aborted.
    pub grace: Duration,
    /// Interval of SSE keep-alive comments (which also reveal a client that went away).
    pub keep_alive: Duration,
    /// With a key, `/v1/completions`, `/v1/chat/completions` and `/v1/models` need
    /// `Authorization: Bearer <key>` (else 401); `/health` and `/metrics` stay open.
    pub api_key: Option<String>,
    /// With a key, `POST /v1/weights` is served to `Authorization: Bearer <admin key>` (else 401);
    /// without one it answers 403 to everyone.
    pub admin_key: Option<String>,
    /// The directory that `/v1/weights`' `{"path": ...}` form may read from (the path, resolved,
    /// must lie inside it); without one that form is refused. Raw pushes spill to it too (else to
    /// the system's temporary directory).
    pub weights_dir: Option<std::path::PathBuf>,
    /// Largest generation request body in bytes; a larger one is answered 413.
    pub max_body_bytes: usize,
    /// The model's Hugging Face chat template (DeepSeek-V3 / R1 / V2 and models built on them):
    /// `/v1/chat/completions` renders prompts with it; without one, with DeepSeek-V3.2's own
    /// encoding.
    pub chat_template: Option<Arc<crate::template::ChatTemplate>>,
}

impl ServiceConfig {
    /// Serves `model_name` with a queue of 256, a 30 s grace period, 1 s keep-alives, no API key,
    /// weight updates disabled, and bodies of up to 16 MiB.
    pub fn new(model_name: impl Into<String>) -> Self {
        ServiceConfig {
            model_name: model_name.into(),
            max_queue: 256,
            grace: Duration::from_secs(30),
            keep_alive: Duration::from_secs(1),
            api_key: None,
            admin_key: None,
            weights_dir: None,
            max_body_bytes: 16 << 20,
            chat_template: None,
        }
    }
}

/// What every handler shares.
pub(crate) struct AppState {
    limits: Limits,
    config: ServiceConfig,
    tokenizer: Option<Arc<Tokenizer>>,
    worker: Worker,
    metrics: Arc<Metrics>,
    model_config: ModelConfig,
    kind: Kind,
    outstanding: AtomicUsize,
    draining: AtomicBool,
    counter: AtomicU64,
    /// Weight pushes received.
    pushes: AtomicU64,
}

/// A running engine thread with the HTTP routes over it.
pub struct Service {
    state: Arc<AppState>,
}

impl Service {
    /// Starts the engine thread over `model` (its variables in `vars`) with `engine` slots and
    /// context (an error when its cache cannot fit the device, see [`Engine::new`]); `tokenizer`
    /// enables text prompts, chat and stop strings.
    pub fn new(
        model: DeepseekV32,
        vars: &VarStore,
        engine: EngineConfig,
        tokenizer: Option<Tokenizer>,
        config: ServiceConfig,
    ) -> Result<Self, EngineError> {
        let model_config = model.config.clone();
        let kind = model.embed_tokens.kind();
        let context = engine.max_seq_len;
        let tokenizer = tokenizer.map(Arc::new);
        let mut built = Engine::new(model, vars, engine)?;
        let limits = Limits {
            model: config.model_name.clone(),
            vocab: model_config.vocab_size,
            slots: built.slots(),
            context,
            eos_ids: model_config.eos_ids(),
            has_tokenizer: tokenizer.is_some(),
        };
        if let Some(tok) = tokenizer.clone() {
            built = built.with_detokenizer(Arc::new(move |ids: &[i64]| tok.decode(ids, false).unwrap_or_default()));
        }
        let metrics = Arc::new(Metrics::default());
        let worker = Worker::start(built, metrics.clone());
        let state = AppState {
            limits,
            config,
            tokenizer,
            worker,
            metrics,
            model_config,
            kind,
            outstanding: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            counter: AtomicU64::new(0),
            pushes: AtomicU64::new(0),
        };
        Ok(Service { state: Arc::new(state) })
    }

    /// The service's routes.
    pub fn router(&self) -> axum::Router {
        routes::router(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` resolves, then drains (see the module notes) and
    /// stops the engine thread.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServiceError> {
        let state = self.state.clone();
        let (grace_tx, grace_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            state.draining.store(true, SeqCst);
            let _ = grace_tx.send(());
        };
        let state = self.state.clone();
        let grace = tokio::spawn(async move {
            if grace_rx.await.is_ok() {
                tokio::time::sleep(state.config.grace).await;
                state.worker.send(Command::AbortAll);
            }
        });
        let served = axum::serve(listener, self.router()).with_graceful_shutdown(signal).await;
        grace.abort();
        let state = self.state.clone();
        let stopped = tokio::task::spawn_blocking(move || state.worker.stop()).await;
        served?;
        match stopped {
            Ok(Ok(())) => Ok(()),
            _ => Err(ServiceError::EnginePanicked),
        }
    }
}

/// Binds `addr` and serves until ctrl-c or SIGTERM, on a multi-threaded tokio runtime.
pub fn run_blocking(service: Service, addr: &str) -> Result<(), ServiceError> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServiceError::Bind { addr: addr.to_string(), source })?;
        eprintln!("rlvr serve: listening on http://{}", listener.local_addr()?);
        service.serve(listener, shutdown_signal()).await
    })
}

/// Resolves on ctrl-c or (on Unix) SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    eprintln!("rlvr serve: shutting down");
}

/// Outstanding engine requests of one HTTP request; releases their places when dropped.
pub(crate) struct Ticket {
    state: Arc<AppState>,
    count: usize,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.state.outstanding.fetch_sub(self.count, SeqCst);
    }
}

impl AppState {
    /// 503 once shutdown has begun or the engine thread has stopped.
    fn check_open(&self) -> Result<(), ApiError> {
        if self.draining.load(SeqCst) {
            return Err(ApiError::unavailable("the server is shutting down"));
        }
        if !self.worker.is_alive() {
            return Err(ApiError::unavailable("the engine thread has stopped"));
        }
        Ok(())
    }

    /// Takes `count` places, or 429 when that would pass `slots + max_queue`.
    fn admit(self: &Arc<Self>, count: usize) -> Result<Ticket, ApiError> {
        let limit = self.limits.slots + self.config.max_queue;
        let before = self.outstanding.fetch_add(count, SeqCst);
        let ticket = Ticket { state: self.clone(), count };
        if before + count > limit {
            return Err(ApiError::queue_full(limit));
        }
        Ok(ticket)
    }

    /// A seed for a request that named none, and a unique response id.
    fn fresh(&self) -> (u64, String) {
        let n = self.counter.fetch_add(1, SeqCst);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        (nanos ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15), format!("{n:x}{:08x}", nanos as u32))
    }

    /// Sends the requests to the engine thread; one receiver each. `stream` asks for their tokens
    /// step by step.
    fn submit(
        &self,
        requests: Vec<crate::engine::Request>,
        stream: bool,
    ) -> Result<Vec<UnboundedReceiver<Event>>, ApiError> {
        let mut receivers = Vec::with_capacity(requests.len());
        let mut batch = Vec::with_capacity(requests.len());
        for request in requests {
            let (events, rx) = unbounded_channel();
            batch.push((request, events));
            receivers.push(rx);
        }
        if !self.worker.send(Command::Submit { requests: batch, stream }) {
            return Err(ApiError::unavailable("the engine thread has stopped"));
        }
        Ok(receivers)
    }
}

/// Awaits every request's outcome, in order (token events, sent only for streamed requests, are
/// skipped).
pub(crate) async fn collect(receivers: Vec<UnboundedReceiver<Event>>) -> Result<Vec<RequestOutput>, ApiError> {
    let mut outputs = Vec::with_capacity(receivers.len());
    for mut rx in receivers {
        let output = loop {
            match rx.recv().await {
                Some(Event::Tokens(_)) => {}
                Some(Event::Done(output)) => break output,
                Some(Event::Rejected(e)) => return Err(e.into()),
                None => return Err(ApiError::unavailable("the engine thread stopped before answering")),
            }
        };
        outputs.push(output);
    }
    Ok(outputs)
}

/// Seconds since the Unix epoch (`created`).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
