//! `[rollout] spawn = N`: `rlvr serve` children of this process on 127.0.0.1, each on a free
//! port, sharing a per-run administrator key, started from the policy's current weights (written
//! once to `run_dir/rollout-model/`), and sized as the colocated engine would be (slots, context,
//! attention, device, dtype, threads), so that a served sample equals a local one.
//!
//! With `RLVR_FAULT_HANG_WEIGHTS=I:N` (a test aid) server `I` answers its first `N` weight pushes
//! and hangs on the next ones (`rlvr_rollout::service::HANG_ENV`).
//!
//! A child dies with the run: it is killed when its [`Child`] handle is dropped (the pool drops
//! it when the run ends or the server is dropped), and on Linux the kernel kills it when the
//! thread that started it exits (`PR_SET_PDEATHSIG`), which covers a trainer that is itself
//! killed.

use super::client::Client;
use crate::policy::Policy;
use crate::recipe::{Recipe, Rollout};
use crate::sampler::MAX_PROMPT_TOKENS;
use anyhow::{bail, Context, Result};
use rlvr_model::checkpoint::{save, SaveOptions};
use rlvr_model::config::TokenIds;
use rlvr_rollout::service::HANG_ENV;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A spawned server process, killed when dropped.
pub struct Child {
    process: std::process::Child,
    /// Its log file (stdout and stderr).
    pub log: PathBuf,
}

impl Child {
    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }

    /// Whether it has exited.
    fn exited(&mut self) -> bool {
        !matches!(self.process.try_wait(), Ok(None))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh random administrator key (128 bits from the OS-seeded hasher keys).
pub fn random_key() -> String {
    let word = || {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id()));
        h.finish()
    };
    format!("{:016x}{:016x}", word(), word())
}

/// Writes the policy's engine weights as a model directory the servers load: the main model
/// (no MTP) with the config's end-of-sequence ids set to `stop_ids`.
pub fn write_model(policy: &Policy, stop_ids: &[i64], dir: &Path) -> Result<()> {
    let mut config = policy.config.clone();
    config.num_nextn_predict_layers = 0;
    config.eos_token_id = Some(TokenIds::Many(stop_ids.to_vec()));
    let options = SaveOptions { overwrite: true, ..SaveOptions::default() };
    save(dir, &policy.engine_tensors(), &config, &options)
        .with_context(|| format!("writing the rollout servers' model to {}", dir.display()))?;
    Ok(())
}

/// `rollout.slots = 0` (the default): the servers lower their slots to what fits their device,
/// down to one group's samples (`--min-slots`), as the colocated engine does; a count the recipe
/// sets is refused by a server it does not fit.
pub fn slot_floor(r: &Rollout) -> Vec<String> {
    match r.slots {
        0 => vec!["--min-slots".to_string(), r.group_size.to_string()],
        _ => Vec::new(),
    }
}

/// Starts `n` servers over the model in `model_dir` with `key`, logs in `run_dir`, and waits (up
/// to `rollout.startup_timeout_s`) until every one answers `/health`.
pub fn start(recipe: &Recipe, model_dir: &Path, run_dir: &Path, n: usize, key: &str) -> Result<Vec<(Child, String)>> {
    let r = &recipe.rollout;
    let context = MAX_PROMPT_TOKENS + r.sampling.max_tokens;
    let exe = std::env::current_exe().context("finding this program to start rollout servers")?;
    let hang: Option<(usize, String)> = std::env::var(HANG_ENV).ok().and_then(|spec| {
        let (i, n) = spec.split_once(':')?;
        Some((i.parse().ok()?, n.to_string()))
    });
    let mut started = Vec::with_capacity(n);
    for i in 0..n {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port for a rollout server")?
            .port();
        let log = run_dir.join(format!("rollout-server-{i}.log"));
        let file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new(&exe);
        command
            .arg("serve")
            .arg("--model")
            .arg(model_dir)
            .args(["--port", &port.to_string(), "--slots", &r.effective_slots().to_string()])
            .args(slot_floor(r))
            .args(["--max-seq-len", &context.to_string()])
            .args(["--served-model-name", "rlvr-rollout", "--grace-secs", "1"])
            .args(["--mode", &cli_name(&r.attention), "--device", &recipe.run.device.to_string()])
            .args(["--dtype", &cli_name(&recipe.run.dtype)])
            // The key goes through the environment, out of the process list.
            .env("RLVR_SERVE_ADMIN_KEY", key)
            .env("OMP_NUM_THREADS", tch::get_num_threads().max(1).to_string())
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        // The hang test aid (`RLVR_FAULT_HANG_WEIGHTS=I:N`) reaches server I only, as `N`.
        command.env_remove(HANG_ENV);
        if let Some((_, n)) = hang.as_ref().filter(|(server, _)| *server == i) {
            command.env(HANG_ENV, n);
        }
        die_with_parent(&mut command);
        let process = command.spawn().with_context(|| format!("starting rollout server {i} ({})", exe.display()))?;
        started.push((Child { process, log }, format!("http://127.0.0.1:{port}")));
    }
    let deadline = Instant::now() + Duration::from_secs_f64(r.startup_timeout_s);
    for (i, (child, url)) in started.iter_mut().enumerate() {
        let client = Client::new(url, key);
        while client.health(Duration::from_secs(2)).is_err() {
            if child.exited() {
                bail!("rollout server {i} ({url}) exited while starting; its log: {}", tail(&child.log));
            }
            if Instant::now() > deadline {
                bail!(
                    "rollout server {i} ({url}) did not answer /health within rollout.startup_timeout_s = {} s; its log: {}",
                    r.startup_timeout_s,
                    tail(&child.log)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(started)
}

/// The last lines of a log file, for an error message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!("{} … {}", path.display(), lines[lines.len().saturating_sub(5)..].join(" | "))
}

/// On Linux: the child gets SIGKILL when the thread that started it exits.
#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only calls prctl, which is
    // async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {}

/// The command-line spelling of a recipe value: its serde name.
fn cli_name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}
