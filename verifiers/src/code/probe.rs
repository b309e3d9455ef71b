//! Start-up detection of the isolation layers this machine allows.
//!
//! Each layer is switched on in turn, on top of those already kept, and a tiny program is run
//! through the real sandbox; the layer is kept only when that program runs and prints its token.
//! This tests what actually works here (a container may forbid user namespaces, mounting `/proc`,
//! or Landlock) rather than guessing from kernel versions. Every layer that fails is reported on
//! stderr once, with the reason; nothing is dropped silently. Results are cached per interpreter.

use super::child::Layers;
use super::landlock;
use super::sandbox::{Limits, Sandbox};
use super::seccomp;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// What the code sandbox enforces on this machine, as found by probing at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SandboxReport {
    /// The interpreter every program runs under (absolute, symlinks resolved).
    pub interpreter: PathBuf,
    /// The layers in force. Rlimits, a cleared environment, a private temp cwd and the
    /// process-group kill are always on and not listed.
    pub layers: Layers,
    /// The kernel's Landlock ABI version, if any.
    pub landlock_abi: Option<u32>,
    /// Landlock also blocks TCP bind/connect (ABI ≥ 4).
    pub landlock_net: bool,
    /// Landlock also blocks signals to processes outside the sandbox (ABI ≥ 6).
    pub landlock_signals: bool,
    /// One line per layer that could not be used, with the reason.
    pub warnings: Vec<String>,
}

impl SandboxReport {
    /// Active layers as a short comma-separated list, e.g. `"uid,user,pid,mount,net,..."`.
    pub fn summary(&self) -> String {
        let l = &self.layers;
        let names = [
            (l.drop_uid, "nobody"),
            (l.user_ns, "userns"),
            (l.pid_ns, "pidns"),
            (l.mount_ns, "mountns+proc"),
            (l.net_ns, "netns"),
            (l.ipc_ns, "ipcns"),
            (l.uts_ns, "utsns"),
            (l.landlock, "landlock"),
            (l.seccomp, "seccomp"),
        ];
        let mut on: Vec<&str> = vec!["rlimits", "env", "tmpdir", "pgkill"];
        on.extend(names.iter().filter(|(b, _)| *b).map(|(_, n)| *n));
        on.join(",")
    }
}

const PROBE_TOKEN: &str = "rlvr-sandbox-probe-ok";

fn probe_limits() -> Limits {
    Limits {
        timeout: Duration::from_secs(20),
        memory_bytes: 1 << 30,
        max_output_bytes: 4096,
        max_processes: 64,
        max_open_files: 256,
        max_file_bytes: 1 << 20,
    }
}

/// Runs the probe program with `layers`; `Err` holds why it did not work.
fn try_layers(python: &Path, layers: Layers, abi: Option<u32>) -> Result<(), String> {
    let sandbox = Sandbox {
        python: python.to_path_buf(),
        layers,
        limits: probe_limits(),
        landlock_abi: abi,
        seccomp: seccomp::filter(),
    };
    let code = format!("print({PROBE_TOKEN:?})");
    let out = sandbox.run(&["-I", "-c", &code], &[], b"").map_err(|e| e.to_string())?;
    if out.code == Some(0) && String::from_utf8_lossy(&out.stdout).trim() == PROBE_TOKEN {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: String = err.lines().last().unwrap_or("").chars().take(200).collect();
        Err(format!("probe exited with {:?}/{:?}: {tail}", out.code, out.signal))
    }
}

fn detect(python: &Path) -> Result<SandboxReport, String> {
    try_layers(python, Layers::default(), None)
        .map_err(|e| format!("{} cannot run even without isolation: {e}", python.display()))?;
    let abi = landlock::abi();
    // SAFETY: plain system call.
    let is_root = unsafe { libc::geteuid() } == 0;
    let mut layers = Layers::default();
    let mut warnings = Vec::new();
    type Switch = fn(&mut Layers);
    let steps: [(&str, bool, Switch); 9] = [
        ("drop to uid 65534", is_root, |l| l.drop_uid = true),
        ("user namespace", true, |l| l.user_ns = true),
        ("pid namespace", true, |l| l.pid_ns = true),
        ("mount namespace + private /proc", true, |l| l.mount_ns = true),
        ("network namespace", true, |l| l.net_ns = true),
        ("ipc namespace", true, |l| l.ipc_ns = true),
        ("uts namespace", true, |l| l.uts_ns = true),
        ("landlock", abi.is_some(), |l| l.landlock = true),
        ("seccomp", seccomp::filter().is_some(), |l| l.seccomp = true),
    ];
    for (name, possible, switch) in steps {
        if !possible {
            warnings.push(format!("{name}: not available here (needs root / kernel support)"));
            continue;
        }
        let mut next = layers;
        switch(&mut next);
        match try_layers(python, next, abi) {
            Ok(()) => layers = next,
            Err(e) => warnings.push(format!("{name}: {e}")),
        }
    }
    let (net, signals) = abi.filter(|_| layers.landlock).map(landlock::scopes).unwrap_or((false, false));
    Ok(SandboxReport {
        interpreter: python.to_path_buf(),
        layers,
        landlock_abi: abi,
        landlock_net: net,
        landlock_signals: signals,
        warnings,
    })
}

/// Probes (once per interpreter and process) which layers work, printing a warning on stderr for
/// each one that does not. `Err` when the interpreter cannot run at all.
pub fn probe(python: &Path) -> Result<SandboxReport, String> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Result<SandboxReport, String>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = cache.get(python) {
        return found.clone();
    }
    let report = detect(python);
    if let Ok(r) = &report {
        for w in &r.warnings {
            eprintln!("rlvr-verifiers: code sandbox degraded, {w}");
        }
    }
    cache.insert(python.to_path_buf(), report.clone());
    report
}
