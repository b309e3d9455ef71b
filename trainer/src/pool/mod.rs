//! `[rollout] backend = "service"`: GRPO's rollouts from a pool of `rlvr serve` servers
//! (docs/architecture.md §6.3).
//!
//! - **Sampling** ([`Pool::sample`]): the prompts are cut into contiguous pieces, one per live
//!   server, each piece going to the server with the least outstanding work; every request names
//!   the trainer's stream coordinates (`rlvr.seed`, `rlvr.index`), so a prompt's samples are the
//!   same whichever server draws them, and equal the colocated engine's. Results come back in
//!   prompt order, each token's policy version translated to the trainer's count.
//! - **Weight sync** ([`Pool::sync`]): after an optimizer step the engine weights go to every
//!   server as safetensors with their checksum (`POST /v1/weights`), streamed a tensor at a time
//!   ([`stream`]), so no second copy of the model is made; a server applies them between two
//!   engine steps.
//! - **Faults**: every call has a deadline. A server that fails a call (refused, timed out, gone)
//!   is tried once more, then dropped with a warning (a spawned one is killed); the prompts it
//!   held are sent to the others with the same coordinates, so the same samples come back. The
//!   run fails, with the reasons, only when no server is left.
//!
//! Left out: a server still receives a push whole before reading it (the body, then the tensors).

pub mod client;
pub mod spawn;
pub mod stream;

use crate::policy::Policy;
use crate::recipe::{Recipe, ADMIN_KEY_ENV};
use crate::sampler::Settings;
use anyhow::{bail, Result};
use client::{CallError, Client};
use rlvr_rollout::engine::{checksum_of, RequestOutput};
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tch::Tensor;

/// The test hook of the fault-tolerance test: with `RLVR_FAULT_KILL_SERVER=I:N`, spawned server
/// `I` is killed (SIGKILL) as the pool's `N`-th sampling call (counting from 1) sends its
/// requests, so that the piece it was given is lost.
const FAULT_ENV: &str = "RLVR_FAULT_KILL_SERVER";

/// One server of the pool.
struct Server {
    client: Client,
    state: Mutex<ServerState>,
    /// The process, for a spawned server.
    child: Mutex<Option<spawn::Child>>,
}

/// What the pool knows of a server.
#[derive(Debug, Default, Clone)]
struct ServerState {
    alive: bool,
    /// Prompts sent and not yet answered.
    outstanding: usize,
    /// The trainer's policy version minus the server's.
    offset: i64,
    /// Tokens generated since the last [`Pool::take_stats`].
    tokens: u64,
    /// Seconds with a request in flight since the last [`Pool::take_stats`].
    busy_s: f64,
}

/// The pool's figures since the last [`Pool::take_stats`].
#[derive(Debug, Clone, Default)]
pub struct PoolStats {
    /// Servers still in the pool.
    pub alive: usize,
    /// Servers dropped since the run started.
    pub dropped: usize,
    /// Prompts sent again because their server failed.
    pub resubmitted: usize,
    /// Per server (by position in the pool): tokens generated and seconds busy; `None` once
    /// dropped.
    pub servers: Vec<Option<(u64, f64)>>,
    /// Seconds the figures cover.
    pub wall_s: f64,
}

/// A pool of `rlvr serve` servers (see the module notes).
pub struct Pool {
    servers: Vec<Server>,
    stop_ids: Vec<i64>,
    request_timeout: Duration,
    sync_timeout: Duration,
    /// The trainer's policy version of the servers' weights.
    version: AtomicU64,
    resubmitted: AtomicUsize,
    calls: AtomicUsize,
    fault: Option<(usize, usize)>,
    since: Mutex<Instant>,
}

impl Pool {
    /// Connects to `rollout.endpoints` (pushing them the policy's weights) or starts
    /// `rollout.spawn` servers over them (written to `run_dir/rollout-model/`); the pool's weights
    /// are policy version `version`.
    pub fn connect(recipe: &Recipe, policy: &Policy, run_dir: &Path, version: u64) -> Result<Self> {
        let r = &recipe.rollout;
        let mut stop_ids = policy.config.eos_ids();
        if stop_ids.is_empty() {
            stop_ids.push(policy.eos());
        }
        let fault = std::env::var(FAULT_ENV).ok().and_then(|spec| {
            let (i, n) = spec.split_once(':')?;
            Some((i.parse().ok()?, n.parse().ok()?))
        });
        let mut pool = Pool {
            servers: Vec::new(),
            stop_ids,
            request_timeout: Duration::from_secs_f64(r.request_timeout_s),
            sync_timeout: Duration::from_secs_f64(r.sync_timeout_s),
            version: AtomicU64::new(version),
            resubmitted: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
            fault,
            since: Mutex::new(Instant::now()),
        };
        if r.spawn > 0 {
            let key = spawn::random_key();
            let dir = run_dir.join("rollout-model");
            spawn::write_model(policy, &pool.stop_ids, &dir)?;
            for (child, url) in spawn::start(recipe, &dir, run_dir, r.spawn, &key)? {
                let client = Client::new(&url, &key);
                let served = client.health(pool.sync_timeout).map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
                let state = ServerState { alive: true, offset: version as i64 - served as i64, ..Default::default() };
                pool.servers.push(Server { client, state: Mutex::new(state), child: Mutex::new(Some(child)) });
            }
            eprintln!("rollout: started {} rollout servers ({})", r.spawn, pool.urls().join(", "));
            return Ok(pool);
        }
        let key = match (&r.admin_key, std::env::var(ADMIN_KEY_ENV)) {
            (Some(key), _) => key.clone(),
            (None, Ok(key)) if !key.is_empty() => key,
            _ => bail!(
                "rollout.endpoints: weight pushes need the servers' administrator key; set rollout.admin_key or the environment variable {ADMIN_KEY_ENV}"
            ),
        };
        for url in &r.endpoints {
            let state = ServerState { alive: true, ..Default::default() };
            let client = Client::new(url, &key);
            pool.servers.push(Server { client, state: Mutex::new(state), child: Mutex::new(None) });
        }
        // External servers hold weights of their own: they get the policy's before any sampling.
        pool.push(policy, version)?;
        eprintln!("rollout: using {} rollout servers ({})", pool.alive().len(), pool.urls().join(", "));
        Ok(pool)
    }

    /// The servers' addresses.
    fn urls(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.client.url.clone()).collect()
    }

    /// The trainer's policy version the next samples start from.
    pub fn version(&self) -> u64 {
        self.version.load(SeqCst)
    }

    /// Positions of the live servers.
    fn alive(&self) -> Vec<usize> {
        (0..self.servers.len()).filter(|&i| self.state(i).alive).collect()
    }

    fn state(&self, i: usize) -> std::sync::MutexGuard<'_, ServerState> {
        self.servers[i].state.lock().expect("pool lock")
    }

    /// Samples `settings.n` completions of every prompt, prompt `i`'s sample `j` from stream
    /// (`seed`, `first_index + i`, `j`); outputs in prompt order (see the module notes).
    pub fn sample(
        &self,
        prompts: &[Vec<i64>],
        settings: &Settings,
        seed: u64,
        first_index: usize,
    ) -> Result<Vec<RequestOutput>> {
        let call = self.calls.fetch_add(1, SeqCst) + 1;
        let mut results: Vec<Option<RequestOutput>> = vec![None; prompts.len()];
        let whole: Range<usize> = 0..prompts.len();
        let mut pending = vec![whole];
        let mut failures: Vec<String> = Vec::new();
        while !pending.is_empty() {
            let alive = self.alive();
            if alive.is_empty() {
                bail!("every rollout server was dropped: {}", failures.join("; "));
            }
            let mut jobs = Vec::new();
            for piece in pending.drain(..) {
                for chunk in split(piece, alive.len()) {
                    jobs.push((self.least_loaded(chunk.len()), chunk));
                }
            }
            let answers: Vec<_> = std::thread::scope(|scope| {
                let handles: Vec<_> = jobs
                    .iter()
                    .map(|(s, chunk)| {
                        let chunk_prompts = &prompts[chunk.clone()];
                        scope.spawn(move || self.request(*s, chunk_prompts, settings, seed, first_index + chunk.start))
                    })
                    .collect();
                self.inject_fault(call);
                handles.into_iter().map(|h| h.join().expect("rollout request thread")).collect()
            });
            for ((s, chunk), answer) in jobs.into_iter().zip(answers) {
                let mut state = self.state(s);
                state.outstanding -= chunk.len();
                match answer {
                    Ok(outputs) if state.alive => {
                        for (slot, mut out) in results[chunk].iter_mut().zip(outputs) {
                            for token in out.samples.iter_mut().flat_map(|x| x.tokens.iter_mut()) {
                                token.version = (token.version as i64 + state.offset).max(0) as u64;
                            }
                            *slot = Some(out);
                        }
                    }
                    Ok(_) => {
                        // Dropped while it was generating (a failed weight push): its samples
                        // may carry weights the pool no longer tracks.
                        self.resubmitted.fetch_add(chunk.len(), SeqCst);
                        pending.push(chunk);
                    }
                    Err(CallError::Refused(why)) => {
                        bail!("rollout server {} refused a generation request: {why}", self.servers[s].client.url)
                    }
                    Err(CallError::Unreachable(why)) => {
                        drop(state);
                        failures.push(format!("{}: {why}", self.servers[s].client.url));
                        self.drop_server(s, &format!("generation failed twice ({why})"));
                        self.resubmitted.fetch_add(chunk.len(), SeqCst);
                        pending.push(chunk);
                    }
                }
            }
        }
        Ok(results.into_iter().map(|o| o.expect("every prompt answered")).collect())
    }

    /// The live server with the least outstanding work (the first of equals), charged `work`.
    fn least_loaded(&self, work: usize) -> usize {
        let alive = self.alive();
        let best = *alive.iter().min_by_key(|&&i| self.state(i).outstanding).expect("a live server");
        self.state(best).outstanding += work;
        best
    }

    /// One generation request to server `s`, tried twice; its time and tokens counted.
    fn request(
        &self,
        s: usize,
        prompts: &[Vec<i64>],
        settings: &Settings,
        seed: u64,
        first_index: usize,
    ) -> Result<Vec<RequestOutput>, CallError> {
        let client = &self.servers[s].client;
        let started = Instant::now();
        let mut answer = client.complete(prompts, settings, &self.stop_ids, seed, first_index, self.request_timeout);
        if let Err(CallError::Unreachable(why)) = &answer {
            eprintln!("warning: rollout server {}: {why}; trying again", client.url);
            std::thread::sleep(Duration::from_millis(200));
            answer = client.complete(prompts, settings, &self.stop_ids, seed, first_index, self.request_timeout);
        }
        let mut state = self.state(s);
        state.busy_s += started.elapsed().as_secs_f64();
        if let Ok(outputs) = &answer {
            state.tokens += outputs.iter().flat_map(|o| &o.samples).map(|x| x.tokens.len() as u64).sum::<u64>();
        }
        answer
    }

    /// Publishes `policy`'s engine weights to every live server as the next policy version.
    pub fn sync(&self, policy: &Policy) -> Result<()> {
        self.push(policy, self.version() + 1)
    }

    /// Pushes `policy`'s engine weights to every live server as trainer version `version`,
    /// dropping the servers that fail twice; an error when none is left.
    fn push(&self, policy: &Policy, version: u64) -> Result<()> {
        let tensors = policy.engine_tensors();
        let checksum = checksum_of(&tensors);
        let shallow = |ts: &[(String, Tensor)]| -> Vec<(String, Tensor)> {
            ts.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect()
        };
        let alive = self.alive();
        let answers: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = alive
                .iter()
                .map(|&s| {
                    let (client, mine) = (&self.servers[s].client, shallow(&tensors));
                    scope.spawn(move || {
                        client.push(shallow(&mine), checksum, self.sync_timeout).or_else(|e| {
                            eprintln!("warning: rollout server {}: weight push failed ({e}); trying again", client.url);
                            client.push(mine, checksum, self.sync_timeout)
                        })
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("weight push thread")).collect()
        });
        let mut failures = Vec::new();
        for (s, answer) in alive.into_iter().zip(answers) {
            match answer {
                Ok(served) => self.state(s).offset = version as i64 - served as i64,
                Err(e) => {
                    failures.push(format!("{}: {e}", self.servers[s].client.url));
                    self.drop_server(s, &format!("weight push failed twice ({e})"));
                }
            }
        }
        self.version.store(version, SeqCst);
        if self.alive().is_empty() {
            bail!("every rollout server was dropped: {}", failures.join("; "));
        }
        Ok(())
    }

    /// Takes server `s` out of the pool with a warning (killing it when spawned).
    fn drop_server(&self, s: usize, why: &str) {
        let mut state = self.state(s);
        if !state.alive {
            return;
        }
        state.alive = false;
        drop(state);
        if let Some(mut child) = self.servers[s].child.lock().expect("pool lock").take() {
            child.kill();
        }
        let left = self.alive().len();
        eprintln!("warning: rollout server {} dropped from the pool: {why}; {left} left", self.servers[s].client.url);
    }

    /// [`FAULT_ENV`]: kills the named server as sampling call `call` sends its requests.
    fn inject_fault(&self, call: usize) {
        let Some((i, n)) = self.fault.filter(|&(i, n)| n == call && i < self.servers.len()) else { return };
        if let Some(child) = self.servers[i].child.lock().expect("pool lock").as_mut() {
            eprintln!("{FAULT_ENV}: killing rollout server {i} during sampling call {n}");
            child.kill();
        }
    }

    /// The figures since the last call, which starts the next period.
    pub fn take_stats(&self) -> PoolStats {
        let mut since = self.since.lock().expect("pool lock");
        let wall_s = since.elapsed().as_secs_f64();
        *since = Instant::now();
        let mut stats = PoolStats { wall_s, resubmitted: self.resubmitted.swap(0, SeqCst), ..Default::default() };
        for i in 0..self.servers.len() {
            let mut state = self.state(i);
            let figures = (state.tokens, state.busy_s);
            (state.tokens, state.busy_s) = (0, 0.0);
            if state.alive {
                stats.alive += 1;
                stats.servers.push(Some(figures));
            } else {
                stats.dropped += 1;
                stats.servers.push(None);
            }
        }
        stats
    }

    /// Kills the spawned servers now (they also die when the pool is dropped).
    pub fn shutdown(&self) {
        for server in &self.servers {
            if let Some(mut child) = server.child.lock().expect("pool lock").take() {
                child.kill();
            }
        }
    }
}

/// `range` cut into at most `parts` contiguous, near-equal pieces (the first ones longer).
fn split(range: Range<usize>, parts: usize) -> Vec<Range<usize>> {
    let (len, parts) = (range.len(), parts.max(1));
    let mut out = Vec::new();
    let mut start = range.start;
    for p in 0..parts.min(len) {
        let size = len / parts.min(len) + usize::from(p < len % parts.min(len));
        out.push(start..start + size);
        start += size;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn split_covers_the_range_in_order() {
        assert_eq!(split(0..10, 3), vec![0..4, 4..7, 7..10]);
        assert_eq!(split(5..7, 4), vec![5..6, 6..7]);
        assert_eq!(split(0..4, 1), vec![0..4]);
        assert!(split(3..3, 2).is_empty());
    }
}
