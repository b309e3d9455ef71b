//! Starting the real service on an ephemeral loopback port over a fixture model, and talking to it
//! with a real HTTP client.
#![allow(dead_code)]

use rlvr_model::checkpoint::{init_tensors, load_varstore, save, SaveOptions};
use rlvr_model::{DeepseekV32, ModelConfig};
use rlvr_rollout::engine::EngineConfig;
use rlvr_rollout::service::{Service, ServiceConfig, ServiceError};
use rlvr_rollout::tokenizer::Tokenizer;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tch::{nn::VarStore, Device, Kind};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A fixture's directory.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

/// The test tokenizer's directory.
pub fn tokenizer_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// A model directory's model in f32 on the CPU.
pub fn load(dir: &Path) -> (DeepseekV32, VarStore) {
    tch::set_num_threads(1);
    let cfg = ModelConfig::from_path(dir).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let model = DeepseekV32::new(&vs.root(), &cfg).unwrap();
    load_varstore(dir, &cfg, &vs, true).unwrap();
    (model, vs)
}

/// A model directory in `root/chat-model`: tiny-sparse's architecture with a vocabulary that
/// covers the test tokenizer, random weights (seed 3), and that tokenizer.
pub fn chat_model(root: &Path) -> PathBuf {
    let text = std::fs::read_to_string(fixture("tiny-sparse").join("config.json")).unwrap();
    let mut json: Value = serde_json::from_str(&text).unwrap();
    let vocab = Tokenizer::from_dir(tokenizer_dir()).unwrap().vocab_size();
    json["vocab_size"] = Value::from(vocab.div_ceil(64) * 64);
    let cfg = ModelConfig::from_json(&json.to_string()).unwrap();
    let dir = root.join("chat-model");
    save(&dir, &init_tensors(&cfg, 3, Kind::Float).unwrap(), &cfg, &SaveOptions::default()).unwrap();
    for file in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(tokenizer_dir().join(file), dir.join(file)).unwrap();
    }
    dir
}

/// Engine and service sizes of a test server.
#[derive(Clone)]
pub struct Options {
    pub slots: usize,
    pub context: usize,
    pub max_queue: usize,
    pub grace: Duration,
    /// The clients' key (`--api-key`).
    pub api_key: Option<String>,
    /// The administrator's key (`--admin-key`).
    pub admin_key: Option<String>,
    /// The directory weight pushes may read paths from (`--weights-dir`).
    pub weights_dir: Option<PathBuf>,
    /// The body limit (`--max-body-mb`, in bytes).
    pub max_body_bytes: usize,
}

/// The administrator's key of test servers (unless a test sets another).
pub const ADMIN_KEY: &str = "test-admin-key";

impl Default for Options {
    fn default() -> Self {
        Options {
            slots: 4,
            context: 96,
            max_queue: 64,
            grace: Duration::from_secs(5),
            api_key: None,
            admin_key: Some(ADMIN_KEY.into()),
            weights_dir: None,
            max_body_bytes: 16 << 20,
        }
    }
}

/// A server running in this process.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The key [`Server::post`] sends as a bearer token, if any.
    pub key: Option<String>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServiceError>>>,
}

impl Server {
    /// Serves the model in `dir` (its tokenizer too, if it has one) as model `"test"`.
    pub async fn start(dir: &Path, opts: Options) -> Server {
        let (model, vs) = load(dir);
        let tokenizer = dir.join("tokenizer.json").exists().then(|| Tokenizer::from_dir(dir).unwrap());
        let engine = EngineConfig::new(opts.slots, opts.context);
        let config = ServiceConfig {
            max_queue: opts.max_queue,
            grace: opts.grace,
            keep_alive: Duration::from_millis(100),
            api_key: opts.api_key.clone(),
            admin_key: opts.admin_key.clone(),
            weights_dir: opts.weights_dir.clone(),
            max_body_bytes: opts.max_body_bytes,
            ..ServiceConfig::new("test")
        };
        let service = Service::new(model, &vs, engine, tokenizer, config).expect("the test cache fits");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(service.serve(listener, async move {
            let _ = rx.await;
        }));
        Server { url, key: opts.api_key, shutdown: Some(tx), task: Some(task) }
    }

    /// Begins shutdown and waits for the server task (at most 20 s).
    pub async fn stop(&mut self) -> Result<(), ServiceError> {
        let _ = self.shutdown.take().unwrap().send(());
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(20), task).await.expect("server ended in time").unwrap()
    }

    /// POSTs JSON to `path`: (status, body as JSON).
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_as(path, body, self.key.as_deref()).await
    }

    /// POSTs JSON to `path` with `key` (if any) as the bearer token: (status, body as JSON).
    pub async fn post_as(&self, path: &str, body: &Value, key: Option<&str>) -> (u16, Value) {
        let mut req = client().post(format!("{}{path}", self.url)).json(body);
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// POSTs JSON to `/v1/weights` with the test administrator's key.
    pub async fn push_weights(&self, body: &Value) -> (u16, Value) {
        self.post_as("/v1/weights", body, Some(ADMIN_KEY)).await
    }

    /// POSTs a streaming request: (status, the `data:` payloads as JSON, `[DONE]` excluded,
    /// whether `[DONE]` came last).
    pub async fn post_stream(&self, path: &str, body: &Value) -> (u16, Vec<Value>, bool) {
        let resp = client().post(format!("{}{path}", self.url)).json(body).send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let data: Vec<&str> =
            text.split("\n\n").filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: "))).collect();
        let done = data.last() == Some(&"[DONE]");
        let chunks = data.iter().filter(|d| **d != "[DONE]").map(|d| serde_json::from_str(d).unwrap()).collect();
        (status, chunks, done)
    }

    /// GETs `path`: (status, body text).
    pub async fn get(&self, path: &str) -> (u16, String) {
        let resp = client().get(format!("{}{path}", self.url)).send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// A sample of `/metrics` by series name (labels included).
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.get("/metrics").await;
        parse_prometheus(&text).into_iter().find(|(name, _)| name == series).map_or(0.0, |(_, v)| v)
    }
}

/// A streamed response read event by event, as a client sees it arrive.
pub struct SseReader {
    resp: reqwest::Response,
    /// Bytes received but not yet read as events (a network read may end inside a character).
    buf: Vec<u8>,
}

impl SseReader {
    /// POSTs a streaming request to `server`; panics unless it is answered 200.
    pub async fn post(server: &Server, path: &str, body: &Value) -> SseReader {
        let resp = client().post(format!("{}{path}", server.url)).json(body).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        SseReader { resp, buf: Vec::new() }
    }

    /// The next `data:` payload (keep-alive comments skipped); `None` once the body ends.
    pub async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buf.drain(..end + 2).collect();
                let event = String::from_utf8(event).unwrap();
                match event.lines().find_map(|l| l.strip_prefix("data: ")) {
                    Some(data) => return Some(data.to_string()),
                    None => continue,
                }
            }
            let bytes = self.resp.chunk().await.unwrap()?;
            self.buf.extend_from_slice(&bytes);
        }
    }

    /// The next chunk as JSON; `None` at `[DONE]` or the end of the body.
    pub async fn next_chunk(&mut self) -> Option<Value> {
        self.next().await.filter(|d| d != "[DONE]").map(|d| serde_json::from_str(&d).unwrap())
    }
}

/// A client without connection reuse (each request its own connection, as separate clients).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap()
}

/// Parses Prometheus text: every sample as (series, value); panics on a malformed line.
pub fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix('#') {
            let words: Vec<&str> = rest.split_whitespace().collect();
            assert!(matches!(words.first(), Some(&"HELP") | Some(&"TYPE")), "bad comment line {line:?}");
            if words[0] == "TYPE" {
                assert!(["counter", "gauge"].contains(&words[2]), "bad type in {line:?}");
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad name in {line:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "bad labels in {line:?}");
        }
        out.push((series.to_string(), value.parse::<f64>().unwrap_or_else(|_| panic!("bad value in {line:?}"))));
    }
    out
}

impl Server {
    /// A handle for requests only, to a server started elsewhere (e.g. inside a spawned task).
    pub fn attach(url: &str) -> Server {
        Server { url: url.to_string(), key: None, shutdown: None, task: None }
    }
}
