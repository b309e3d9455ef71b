//! External verifiers: a long-lived child process, in any language, speaking JSON lines.
//!
//! Each call writes one request line `{"id", "completion", "task"}` to the process's stdin and
//! waits, up to `timeout_s`, for the response line with the same `id` on its stdout:
//! `{"id", "reward", "outcome"?, "detail"?}`. The protocol is in `verifiers/PROTOCOL.md`.
//!
//! A process that exits, writes a line that is not a verdict, or misses the deadline is killed
//! (its whole process group) and started afresh on the next call; that call returns
//! `VerifyError::Failed` / `VerifyError::Timeout`, which batch scoring turns into an
//! `Error`/`Timeout` verdict with reward 0, so a batch always finishes. `processes` copies run side
//! by side; each is used by one call at a time.

use crate::{Outcome, Task, Verdict, Verifier, VerifyError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

/// Settings of an external verifier (`kind = "external"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalConfig {
    /// Command line, run through `sh -c 'exec <command>'` (so shell quoting works as usual).
    pub command: String,
    /// Per-call deadline, seconds.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: f64,
    /// How many copies of the process serve calls in parallel.
    #[serde(default = "default_processes")]
    pub processes: usize,
    /// Name used in metrics; `"external"` by default.
    #[serde(default = "default_name")]
    pub name: String,
}

fn default_timeout_s() -> f64 {
    30.0
}
fn default_processes() -> usize {
    1
}
fn default_name() -> String {
    "external".into()
}

/// A running copy of the external process.
struct Proc {
    child: Child,
    /// Requests go through a writer thread, so that a process that stops reading cannot block
    /// the caller past its deadline.
    requests: mpsc::Sender<String>,
    lines: mpsc::Receiver<String>,
}

fn write_requests(mut stdin: ChildStdin, requests: mpsc::Receiver<String>) {
    for request in requests {
        if stdin.write_all(request.as_bytes()).and_then(|()| stdin.flush()).is_err() {
            break;
        }
    }
}

impl Proc {
    fn spawn(command: &str) -> std::io::Result<Proc> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("exec {command}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()?;
        let stdout = child.stdout.take().expect("piped");
        let stdin = child.stdin.take().expect("piped");
        let (requests, pending) = mpsc::channel();
        std::thread::spawn(move || write_requests(stdin, pending));
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Proc { child, requests, lines })
    }

    /// Kills the process and everything in its group, and reaps it.
    fn kill(mut self) {
        // SAFETY: plain system call; the group leader is not reaped yet.
        unsafe { libc::killpg(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// One process place: the running process, if any, and whether one ever ran here.
#[derive(Default)]
struct Slot {
    proc: Option<Proc>,
    started: bool,
}

/// A verifier served by an external process over JSON lines.
pub struct ExternalVerifier {
    config: ExternalConfig,
    slots: Vec<Mutex<Slot>>,
    next_slot: AtomicUsize,
    next_id: AtomicU64,
    restarts: AtomicU64,
}

impl ExternalVerifier {
    /// A verifier for `config`; processes start on first use.
    pub fn new(config: ExternalConfig) -> Self {
        let slots = (0..config.processes.max(1)).map(|_| Mutex::default()).collect();
        ExternalVerifier {
            config,
            slots,
            next_slot: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
        }
    }

    /// Parses a CLI spec `external:<command>` with default settings.
    pub fn from_spec(spec: &str) -> Result<Self, VerifyError> {
        let command = spec
            .strip_prefix("external:")
            .filter(|c| !c.trim().is_empty())
            .ok_or_else(|| VerifyError::InvalidTask(format!("expected `external:<command>`, got `{spec}`")))?;
        Ok(Self::new(ExternalConfig {
            command: command.to_string(),
            timeout_s: default_timeout_s(),
            processes: default_processes(),
            name: default_name(),
        }))
    }

    /// How many times a process was started after the first (after a crash, hang or bad line).
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Takes a free slot if there is one, else waits for the next one in turn.
    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        let start = self.next_slot.fetch_add(1, Ordering::Relaxed);
        let n = self.slots.len();
        for i in 0..n {
            if let Ok(guard) = self.slots[(start + i) % n].try_lock() {
                return guard;
            }
        }
        self.slots[start % n].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One request/response exchange on a running process.
    fn exchange(&self, proc: &mut Proc, request: String, id: u64) -> Result<Verdict, VerifyError> {
        let timeout = Duration::from_secs_f64(self.config.timeout_s.max(0.001));
        let deadline = Instant::now() + timeout;
        proc.requests
            .send(request)
            .map_err(|_| VerifyError::Failed("external verifier stopped reading its input".into()))?;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match proc.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Timeout) => return Err(VerifyError::Timeout(timeout)),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(VerifyError::Failed("external verifier exited".into()))
                }
            };
            let value: Value = serde_json::from_str(&line)
                .map_err(|e| VerifyError::Failed(format!("external verifier wrote a non-JSON line ({e}): {line}")))?;
            // A late answer to an earlier, timed-out request (after a restart this cannot happen,
            // but a slow process may answer one request while the next is waiting).
            if value.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            return parse_verdict(&value);
        }
    }
}

/// Reads a response line's verdict fields.
fn parse_verdict(value: &Value) -> Result<Verdict, VerifyError> {
    let bad = |why: &str| VerifyError::Failed(format!("external verdict {value}: {why}"));
    let reward = value.get("reward").and_then(Value::as_f64).ok_or_else(|| bad("no numeric `reward`"))?;
    if !reward.is_finite() {
        return Err(bad("reward is not finite"));
    }
    let outcome = match value.get("outcome").and_then(Value::as_str) {
        None if reward > 0.0 => Outcome::Correct,
        None => Outcome::Incorrect,
        Some(name) => match name.to_ascii_lowercase().replace('_', "").as_str() {
            "correct" => Outcome::Correct,
            "incorrect" => Outcome::Incorrect,
            "noanswer" => Outcome::NoAnswer,
            "malformed" => Outcome::Malformed,
            "timeout" => Outcome::Timeout,
            "error" => Outcome::Error,
            "invalidinput" => Outcome::InvalidInput,
            "crashed" => Outcome::Crashed,
            _ => return Err(bad("unknown `outcome`")),
        },
    };
    let detail = value.get("detail").cloned().unwrap_or(Value::Null);
    Ok(Verdict { reward: reward as f32, outcome, detail })
}

impl Verifier for ExternalVerifier {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn verify(&self, task: &Task, completion: &str) -> Result<Verdict, VerifyError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut request = json!({ "id": id, "completion": completion, "task": task }).to_string();
        request.push('\n');
        let mut slot = self.slot();
        if slot.proc.is_none() {
            if slot.started {
                self.restarts.fetch_add(1, Ordering::Relaxed);
            }
            slot.proc = Some(Proc::spawn(&self.config.command)?);
            slot.started = true;
        }
        let proc = slot.proc.as_mut().expect("started above");
        let result = self.exchange(proc, request, id);
        if result.is_err() {
            // Whatever went wrong, the process is in an unknown state: replace it.
            if let Some(p) = slot.proc.take() {
                p.kill();
            }
        }
        result
    }
}

impl Drop for ExternalVerifier {
    fn drop(&mut self) {
        for slot in &mut self.slots {
            let proc = slot.get_mut().unwrap_or_else(|e| e.into_inner()).proc.take();
            if let Some(p) = proc {
                p.kill();
            }
        }
    }
}
