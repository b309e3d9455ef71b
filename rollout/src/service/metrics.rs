//! Counters and gauges behind `GET /metrics` (Prometheus text format 0.0.4), and the middleware
//! that counts every response by status and stamps it with the policy version.
//!
//! The engine thread refreshes the engine gauges after each step ([`Metrics::observe`]); handlers
//! read them without waiting for the engine.

use crate::engine::Engine;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// The response header carrying the policy version the server held when it answered.
pub const VERSION_HEADER: &str = "x-rlvr-policy-version";

/// The server's counters and gauges.
#[derive(Debug, Default)]
pub struct Metrics {
    queue_depth: AtomicU64,
    active_slots: AtomicU64,
    tokens_generated: AtomicU64,
    tokens_per_second_bits: AtomicU64,
    version: AtomicU64,
    aborted: AtomicU64,
    requests: Mutex<BTreeMap<u16, u64>>,
}

impl Metrics {
    /// Copies the engine's gauges (called by the engine thread after each step).
    pub fn observe(&self, engine: &Engine) {
        self.queue_depth.store(engine.queue_depth() as u64, Relaxed);
        self.active_slots.store(engine.active_slots() as u64, Relaxed);
        self.tokens_generated.store(engine.tokens_generated(), Relaxed);
        self.tokens_per_second_bits.store(engine.tokens_per_second().to_bits(), Relaxed);
        self.version.store(engine.version(), Relaxed);
    }

    /// The policy version as of the engine's last step.
    pub fn version(&self) -> u64 {
        self.version.load(Relaxed)
    }

    /// Engine requests aborted because their client left (or at shutdown).
    pub fn count_abort(&self) {
        self.aborted.fetch_add(1, Relaxed);
    }

    /// Counts one response with `status`.
    pub fn count_response(&self, status: u16) {
        *self.requests.lock().expect("metrics lock").entry(status).or_default() += 1;
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let gauges = [
            ("rlvr_queue_depth", "gauge", "Requests waiting for engine slots.", self.queue_depth.load(Relaxed) as f64),
            ("rlvr_active_slots", "gauge", "Engine slots in use.", self.active_slots.load(Relaxed) as f64),
            ("rlvr_tokens_generated_total", "counter", "Tokens generated.", self.tokens_generated.load(Relaxed) as f64),
            (
                "rlvr_tokens_per_second",
                "gauge",
                "Tokens generated per second of engine step time.",
                f64::from_bits(self.tokens_per_second_bits.load(Relaxed)),
            ),
            ("rlvr_policy_version", "gauge", "Weight updates applied.", self.version.load(Relaxed) as f64),
            ("rlvr_aborted_total", "counter", "Engine requests aborted.", self.aborted.load(Relaxed) as f64),
        ];
        for (name, kind, help, value) in gauges {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n");
        }
        out.push_str("# HELP rlvr_requests_total HTTP responses by status.\n# TYPE rlvr_requests_total counter\n");
        for (status, count) in self.requests.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "rlvr_requests_total{{status=\"{status}\"}} {count}");
        }
        out
    }
}

/// Middleware: counts the response by status and adds the [`VERSION_HEADER`].
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    metrics.count_response(response.status().as_u16());
    let version = HeaderValue::from(metrics.version());
    response.headers_mut().insert(VERSION_HEADER, version);
    response
}
