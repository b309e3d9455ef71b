//! The code verifier: runs the Python program in a completion against a task's tests inside an OS
//! sandbox and rewards passing them.
//!
//! Two test forms ([`crate::CodeTests`]): stdin/stdout cases (APPS/TACO/LiveCodeBench), each run as
//! its own process, and an assert-style test (HumanEval's `check(candidate)` called on the entry
//! point, or MBPP's plain asserts), run once with the program and tests in one script. An assert
//! run passes only if the script reaches a random token printed after the tests, so `sys.exit(0)`
//! before the tests does not pass.
//!
//! Outcomes: every case passed → `Correct`; otherwise the first case that did not pass decides:
//! wrong output or a failed assertion → `Incorrect`; wall-clock or CPU limit → `Timeout`; a crash,
//! a syntax error or output past the cap → `Crashed` (the model's fault; `Error` is kept for a
//! verifier that cannot run). An empty program is `NoAnswer`. Reward is 1/0
//! (`all_pass`, which stops at the first failing case) or the passed fraction (`fraction`).
//!
//! Isolation (see [`SandboxReport`]): every run gets a fresh temp dir as cwd, a cleared
//! environment, rlimits, its own process group killed on exit or timeout, and — where the probe
//! finds the kernel allows them — uid 65534, user/pid/mount/net/ipc/uts namespaces, Landlock and a
//! seccomp deny-list. Left out: cgroups (memory is bounded by `RLIMIT_AS` instead), languages
//! other than Python, and call-based (`fn_name`) APPS tests.

mod child;
mod landlock;
mod pool;
mod probe;
mod python;
mod sandbox;
mod seccomp;

pub use child::Layers;
pub use probe::{probe, SandboxReport};
pub use python::extract_program;

use crate::{Outcome, Task, Verdict, Verifier, VerifyError};
use python::{assert_script, exception_name, same_output};
use sandbox::{Limits, RunOutput, Sandbox};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;

/// How passed cases turn into a reward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardMode {
    /// 1 if every case passes, else 0.
    #[default]
    AllPass,
    /// The fraction of cases that pass (an assert test counts as one case).
    Fraction,
}

/// Settings of the code verifier (a recipe's `[verifier]` table for `kind = "code"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CodeConfig {
    /// Wall-clock limit per run, seconds; the CPU-time limit is this rounded up.
    pub timeout_s: f64,
    /// Address-space limit per run, MiB.
    pub memory_mb: u64,
    /// Cap on each of stdout and stderr; a run writing more is killed (`Crashed`).
    pub max_output_bytes: usize,
    /// How many programs may run at once across all threads.
    pub max_parallel: usize,
    /// Process limit inside the sandbox (`RLIMIT_NPROC`).
    pub max_processes: u64,
    /// Open-file limit (`RLIMIT_NOFILE`).
    pub max_open_files: u64,
    /// Largest file a program may write, MiB (`RLIMIT_FSIZE`).
    pub max_file_mb: u64,
    /// All-pass or fraction reward.
    pub reward: RewardMode,
    /// Interpreter name or path; by default `python3` from `PATH` (or a system Python when that
    /// one is unreachable for the sandbox user).
    pub python: Option<String>,
}

impl Default for CodeConfig {
    fn default() -> Self {
        CodeConfig {
            timeout_s: 5.0,
            memory_mb: 1024,
            max_output_bytes: 1 << 20,
            max_parallel: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_processes: 64,
            max_open_files: 256,
            max_file_mb: 64,
            reward: RewardMode::AllPass,
            python: None,
        }
    }
}

/// How one case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum CaseStatus {
    Passed,
    Failed,
    Timeout,
    Crashed,
    SyntaxError,
    OutputLimit,
}

impl CaseStatus {
    fn outcome(self) -> Outcome {
        match self {
            CaseStatus::Passed => Outcome::Correct,
            CaseStatus::Failed => Outcome::Incorrect,
            CaseStatus::Timeout => Outcome::Timeout,
            CaseStatus::Crashed | CaseStatus::SyntaxError | CaseStatus::OutputLimit => Outcome::Crashed,
        }
    }
}

fn classify(out: &RunOutput, passed: bool) -> CaseStatus {
    if out.output_limit {
        return CaseStatus::OutputLimit;
    }
    // SIGXCPU / SIGKILL without our own kill: the CPU-time rlimit.
    if out.timed_out || matches!(out.signal, Some(libc::SIGXCPU) | Some(libc::SIGKILL)) {
        return CaseStatus::Timeout;
    }
    if passed {
        return CaseStatus::Passed;
    }
    match exception_name(&out.stderr).as_deref() {
        Some("SyntaxError" | "IndentationError" | "TabError") => CaseStatus::SyntaxError,
        Some("AssertionError") => CaseStatus::Failed,
        _ if out.code == Some(0) => CaseStatus::Failed,
        _ => CaseStatus::Crashed,
    }
}

fn case_detail(kind: &str, status: CaseStatus, out: &RunOutput) -> Value {
    let mut d = json!({ "kind": kind, "status": status, "wall_ms": out.wall.as_millis() as u64 });
    if status != CaseStatus::Passed {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: String = err.chars().rev().take(400).collect::<Vec<_>>().into_iter().rev().collect();
        d["stderr_tail"] = json!(tail);
        d["exit_code"] = json!(out.code);
        d["signal"] = json!(out.signal);
    }
    d
}

/// Runs Python completions against code tests in the sandbox.
pub struct CodeVerifier {
    config: CodeConfig,
    sandbox: Sandbox,
    report: SandboxReport,
    pool: pool::Pool,
}

impl CodeVerifier {
    /// Resolves the interpreter, probes the sandbox layers (warning on stderr about each one that
    /// does not work here) and sizes the run pool. `Err` when no interpreter can run at all.
    pub fn new(config: CodeConfig) -> Result<Self, VerifyError> {
        // SAFETY: plain system call.
        let is_root = unsafe { libc::geteuid() } == 0;
        let python = match &config.python {
            Some(name) => python::resolve(name)?,
            None => {
                let (exe, note) = python::default_interpreter(is_root)?;
                if let Some(note) = note {
                    eprintln!("rlvr-verifiers: code verifier interpreter: {note}");
                }
                exe
            }
        };
        let report = probe(&python).map_err(VerifyError::Failed)?;
        let limits = Limits {
            timeout: Duration::from_secs_f64(config.timeout_s.max(0.001)),
            memory_bytes: config.memory_mb << 20,
            max_output_bytes: config.max_output_bytes,
            max_processes: config.max_processes,
            max_open_files: config.max_open_files,
            max_file_bytes: config.max_file_mb << 20,
        };
        let sandbox = Sandbox {
            python,
            layers: report.layers,
            limits,
            landlock_abi: report.landlock_abi,
            seccomp: seccomp::filter(),
        };
        let pool = pool::Pool::new(config.max_parallel);
        Ok(CodeVerifier { config, sandbox, report, pool })
    }

    /// What the sandbox enforces on this machine.
    pub fn report(&self) -> &SandboxReport {
        &self.report
    }

    fn run_stdio(&self, program: &str, input: &str, want: &str) -> Result<(CaseStatus, Value), VerifyError> {
        let _slot = self.pool.acquire();
        let files = [("solution.py", program.as_bytes())];
        let out = self.sandbox.run(&["-I", "-B", "solution.py"], &files, input.as_bytes())?;
        let got = String::from_utf8_lossy(&out.stdout);
        let status = classify(&out, out.code == Some(0) && same_output(&got, want));
        Ok((status, case_detail("stdio", status, &out)))
    }

    fn run_assert(&self, program: &str, tests: &str, entry: Option<&str>) -> Result<(CaseStatus, Value), VerifyError> {
        let token = python::token()?;
        let script = assert_script(program, tests, entry, &token);
        let _slot = self.pool.acquire();
        let out = self.sandbox.run(&["-I", "-B", "-"], &[], script.as_bytes())?;
        let reached = String::from_utf8_lossy(&out.stdout).lines().any(|l| l == token);
        let status = classify(&out, out.code == Some(0) && reached);
        Ok((status, case_detail("assert", status, &out)))
    }
}

impl Verifier for CodeVerifier {
    fn name(&self) -> &str {
        "code"
    }

    fn needs(&self) -> Vec<&'static str> {
        vec!["tests"]
    }

    fn verify(&self, task: &Task, completion: &str) -> Result<Verdict, VerifyError> {
        let tests = task.tests.as_ref().ok_or(VerifyError::MissingField("tests"))?;
        let total = tests.stdio.len() + usize::from(tests.assert.is_some());
        if total == 0 {
            return Err(VerifyError::InvalidTask("code tests have no stdio cases and no assert".into()));
        }
        let program = extract_program(completion);
        let sandbox = self.report.summary();
        if program.trim().is_empty() {
            return Ok(Verdict::zero(Outcome::NoAnswer, json!({ "error": "no program", "sandbox": sandbox })));
        }
        let all_pass = self.config.reward == RewardMode::AllPass;
        let mut cases = Vec::with_capacity(total);
        let mut first_fail = None;
        let mut record = |(status, detail): (CaseStatus, Value)| {
            if status != CaseStatus::Passed {
                first_fail.get_or_insert(status);
            }
            cases.push((status, detail));
            !(all_pass && status != CaseStatus::Passed)
        };
        let mut go_on = true;
        for case in &tests.stdio {
            go_on = record(self.run_stdio(&program, &case.input, &case.output)?);
            if !go_on {
                break;
            }
        }
        if let (true, Some(assert)) = (go_on, &tests.assert) {
            record(self.run_assert(&program, assert, tests.entry_point.as_deref())?);
        }
        let passed = cases.iter().filter(|(s, _)| *s == CaseStatus::Passed).count();
        let reward = match (self.config.reward, first_fail) {
            (_, None) => 1.0,
            (RewardMode::AllPass, Some(_)) => 0.0,
            (RewardMode::Fraction, Some(_)) => passed as f32 / total as f32,
        };
        let outcome = first_fail.map_or(Outcome::Correct, CaseStatus::outcome);
        let details: Vec<Value> = cases.into_iter().map(|(_, d)| d).collect();
        Ok(Verdict {
            reward,
            outcome,
            detail: json!({ "passed": passed, "total": total, "cases": details, "sandbox": sandbox }),
        })
    }
}
