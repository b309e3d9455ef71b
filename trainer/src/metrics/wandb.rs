//! Weights & Biases through the official Python client: a long-lived sidecar
//! (`trainer/python/wandb_sidecar.py`, embedded here and run as `python -c`) reads one JSON message
//! a line on stdin and calls `wandb.init`, `wandb.log(data, step=step)` and `wandb.finish`.
//!
//! Writes to the sidecar go through a thread, so a slow or hung client never blocks a training
//! step. The logger waits for the sidecar's answer to `init`, so a python without wandb, or an
//! online run without a login, fails at logger creation. After that the sidecar is a mirror: if
//! it dies, one warning is printed and training goes on (metrics.jsonl stays complete).
//!
//! W&B keys are `stage/metric` (`grpo/reward`), so that stages sharing a metric name get
//! separate charts; the W&B step is the global optimizer step.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::{MetricsError, StepRecord, WandbConfig, WandbMode};

/// The sidecar's source.
pub const SIDECAR: &str = include_str!("../../python/wandb_sidecar.py");

/// How long `wandb.init` may take (an online init retries the server for up to 90 s by default).
pub const INIT_TIMEOUT: Duration = Duration::from_secs(180);

/// How long [`crate::metrics::MetricsLogger::finish`] waits for the sidecar to exit: an online
/// run uploads what is left before `wandb.finish` returns.
pub const FINISH_TIMEOUT: Duration = Duration::from_secs(300);

/// A running sidecar.
pub(crate) struct Sidecar {
    child: Child,
    lines: Option<mpsc::Sender<String>>,
    writer: Option<JoinHandle<()>>,
    broken_pipe: Arc<AtomicBool>,
    warned: bool,
}

impl Sidecar {
    /// Starts the sidecar and the W&B run, and waits for the run to be ready.
    pub(crate) fn start(config: &WandbConfig, run_dir: &Path) -> Result<Self, MetricsError> {
        let python_error = |message: String| MetricsError::WandbPython { python: config.python.clone(), message };
        let mode = match config.mode {
            WandbMode::Online => "online",
            WandbMode::Offline => "offline",
        };
        let mut command = Command::new(&config.python);
        command.arg("-c").arg(SIDECAR).env("WANDB_SILENT", "true");
        if config.mode == WandbMode::Offline {
            command.env("WANDB_MODE", "offline");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| python_error(format!("cannot start the python: {e}")))?;

        let replies = read_replies(&mut child);
        let broken_pipe = Arc::new(AtomicBool::new(false));
        let (lines, writer) = spawn_writer(child.stdin.take().expect("stdin is piped"), broken_pipe.clone());
        let init = json!({"init": {
            "project": config.project,
            "entity": config.entity,
            "name": config.run_name,
            "config": config.config_json,
            "mode": mode,
            "dir": run_dir,
        }});
        let _ = lines.send(init.to_string());
        let mut sidecar = Self { child, lines: Some(lines), writer: Some(writer), broken_pipe, warned: false };

        let reply = match replies.recv_timeout(INIT_TIMEOUT) {
            Ok(reply) => reply,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                sidecar.kill();
                return Err(MetricsError::WandbInit(format!("no answer to wandb.init in {INIT_TIMEOUT:?}")));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = sidecar.child.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                return Err(python_error(format!(
                    "the sidecar exited ({status}) before answering; its stderr is above"
                )));
            }
        };
        match reply.get("ready") {
            Some(Value::Bool(true)) => Ok(sidecar),
            _ => {
                // An error reply comes just before the sidecar exits; anything else, it is killed.
                sidecar.kill();
                let message = reply.get("error").and_then(Value::as_str).unwrap_or("unexpected reply").to_string();
                match reply.get("kind").and_then(Value::as_str) {
                    Some("import") => Err(python_error(message)),
                    _ => Err(MetricsError::WandbInit(message)),
                }
            }
        }
    }

    /// Sends one record; if the sidecar has died, warns once and drops the record.
    pub(crate) fn log(&mut self, record: &StepRecord) {
        if !self.alive() {
            return;
        }
        let data: Map<String, Value> = record
            .metrics
            .iter()
            .filter(|(_, v)| v.is_number())
            .map(|(k, v)| (format!("{}/{k}", record.stage), v.clone()))
            .collect();
        let line = json!({"log": {"step": record.step, "data": data}}).to_string();
        if self.lines.as_ref().is_none_or(|l| l.send(line).is_err()) {
            self.broken_pipe.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the sidecar is still taking records; the first time it is not, prints the warning.
    pub(crate) fn alive(&mut self) -> bool {
        if self.warned {
            return false;
        }
        let exited = match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) if self.broken_pipe.load(Ordering::Relaxed) => Some("its stdin is closed".to_string()),
            Ok(None) => None,
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = exited {
            self.warned = true;
            eprintln!("rlvr: warning: the W&B sidecar stopped ({why}); W&B gets no more records, metrics.jsonl stays complete");
        }
        !self.warned
    }

    /// Asks the sidecar to finish the run and waits up to `timeout` for it to exit; a sidecar
    /// that fails or outlasts the timeout (then killed) gets a warning.
    pub(crate) fn finish(mut self, timeout: Duration) {
        let was_alive = self.alive();
        if let Some(lines) = self.lines.take() {
            let _ = lines.send(json!({"finish": true}).to_string());
        }
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() || !was_alive => return,
                Ok(Some(status)) => {
                    eprintln!("rlvr: warning: the W&B sidecar exited with {status} while finishing the run");
                    return;
                }
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                Ok(None) => {
                    eprintln!("rlvr: warning: the W&B sidecar did not finish in {timeout:?}; killed it");
                    self.kill();
                    return;
                }
                Err(e) => {
                    eprintln!("rlvr: warning: waiting for the W&B sidecar: {e}");
                    return;
                }
            }
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the sidecar's stdout on a thread; its JSON lines arrive on the returned channel. The
/// thread drains stdout until the sidecar closes it.
fn read_replies(child: &mut Child) -> mpsc::Receiver<Value> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(value) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(value);
            }
        }
    });
    rx
}

/// Writes the lines sent on the returned channel to the sidecar's stdin, each flushed; closes
/// stdin when the channel closes, and raises `broken_pipe` if a write fails.
fn spawn_writer(mut stdin: ChildStdin, broken_pipe: Arc<AtomicBool>) -> (mpsc::Sender<String>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<String>();
    let writer = std::thread::spawn(move || {
        for mut line in rx {
            line.push('\n');
            if stdin.write_all(line.as_bytes()).and_then(|()| stdin.flush()).is_err() {
                broken_pipe.store(true, Ordering::Relaxed);
                return;
            }
        }
    });
    (tx, writer)
}

/// The project's virtual environment's python: `./.venv`, else beside the executable's checkout.
pub fn default_python() -> std::path::PathBuf {
    use std::path::{Path, PathBuf};
    let local = PathBuf::from(".venv/bin/python");
    if local.exists() {
        return local;
    }
    let exe = std::env::current_exe().ok();
    exe.as_deref()
        .and_then(Path::parent)
        .into_iter()
        .flat_map(Path::ancestors)
        .take(4)
        .map(|d| d.join(".venv/bin/python"))
        .find(|p| p.exists())
        .unwrap_or(local)
}
