//! One sandboxed run of the interpreter: a fresh temp dir as cwd, a cleared environment, its own
//! process group, the isolation [`Layers`], a wall-clock kill of everything it started, and capped
//! capture of stdout/stderr.
//!
//! Output beyond the cap is not buffered: the run is killed at once and marked `output_limit`
//! (runaway printing is a failure, and draining a gigabyte would only waste time).

use super::child::{ChildSetup, Layers, NOBODY};
use super::landlock;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Resource limits of one run.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub timeout: Duration,
    pub memory_bytes: u64,
    pub max_output_bytes: usize,
    pub max_processes: u64,
    pub max_open_files: u64,
    pub max_file_bytes: u64,
}

/// How long to wait for pipes to close once the program is dead; only an escaped process (no pid
/// namespace) can hold them longer.
const PIPE_GRACE: Duration = Duration::from_millis(500);

/// A configured sandbox; cheap to share between threads.
pub(crate) struct Sandbox {
    pub python: PathBuf,
    pub layers: Layers,
    pub limits: Limits,
    pub landlock_abi: Option<u32>,
    pub seccomp: Option<Vec<libc::sock_filter>>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub(crate) struct RunOutput {
    /// Exit code, if the program exited.
    pub code: Option<i32>,
    /// Terminating signal, if it was killed.
    pub signal: Option<i32>,
    /// Killed by the wall-clock limit.
    pub timed_out: bool,
    /// Killed for writing more than the output cap.
    pub output_limit: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub wall: Duration,
}

fn kill_group(pgid: i32) {
    // SAFETY: plain system call; the group leader is not yet reaped, so the id is still ours.
    unsafe { libc::killpg(pgid, libc::SIGKILL) };
}

/// Reads `pipe` to EOF, keeping at most `cap` bytes; past the cap it kills the group and stops.
fn capture(
    mut pipe: impl Read + Send + 'static,
    cap: usize,
    pgid: i32,
    over: Arc<AtomicBool>,
    reaped: Arc<AtomicBool>,
) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) if kept.len() + n > cap => {
                    kept.extend_from_slice(&buf[..cap - kept.len()]);
                    over.store(true, Ordering::SeqCst);
                    if !reaped.load(Ordering::SeqCst) {
                        kill_group(pgid);
                    }
                    break;
                }
                Ok(n) => kept.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = tx.send(kept);
    });
    rx
}

/// Waits (without reaping) until `pid` has exited, on a helper thread.
fn exit_signal(pid: i32) -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        loop {
            // SAFETY: waitid with WNOWAIT leaves the child to be reaped by `Child::wait`.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let rc = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) };
            if rc == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break;
            }
        }
        let _ = tx.send(());
    });
    rx
}

impl Sandbox {
    fn child_setup(&self, ruleset: Option<&OwnedFd>) -> ChildSetup {
        let (uid, gid) = if self.layers.drop_uid {
            (NOBODY, NOBODY)
        } else {
            // SAFETY: plain system calls.
            unsafe { (libc::geteuid(), libc::getegid()) }
        };
        let l = &self.limits;
        let cpu_s = l.timeout.as_secs_f64().ceil().max(1.0) as u64;
        ChildSetup {
            layers: self.layers,
            uid,
            gid,
            uid_map: format!("{uid} {uid} 1").into_bytes(),
            gid_map: format!("{gid} {gid} 1").into_bytes(),
            rlimits: vec![
                (libc::RLIMIT_CPU, cpu_s),
                (libc::RLIMIT_AS, l.memory_bytes),
                (libc::RLIMIT_FSIZE, l.max_file_bytes),
                (libc::RLIMIT_NPROC, l.max_processes),
                (libc::RLIMIT_NOFILE, l.max_open_files),
            ],
            landlock_fd: ruleset.map(|fd| fd.as_raw_fd()),
            seccomp: self.seccomp.clone(),
        }
    }

    /// Writes `files` into a fresh temp dir and runs `python <args>` there with `stdin` as input.
    /// `Err` only when the sandbox itself cannot work (temp dir, spawn).
    pub(crate) fn run(&self, args: &[&str], files: &[(&str, &[u8])], stdin: &[u8]) -> io::Result<RunOutput> {
        let dir = tempfile::Builder::new().prefix("rlvr-code-").tempdir()?;
        for (name, data) in files {
            std::fs::write(dir.path().join(name), data)?;
        }
        if self.layers.drop_uid {
            chown_tree(dir.path(), files)?;
        }
        let ruleset = match (self.layers.landlock, self.landlock_abi) {
            (true, Some(abi)) => Some(landlock::ruleset_for(dir.path(), abi)?),
            _ => None,
        };
        let setup = self.child_setup(ruleset.as_ref());
        let mut cmd = Command::new(&self.python);
        cmd.args(args)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", dir.path())
            .env("TMPDIR", dir.path())
            .env("LANG", "C.UTF-8")
            .env("PYTHONIOENCODING", "utf-8")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: `apply` makes only async-signal-safe system calls on data prepared above.
        unsafe { cmd.pre_exec(move || setup.apply()) };
        let start = Instant::now();
        let child = cmd.spawn()?;
        drop(ruleset);
        let out = self.supervise(child, stdin, start);
        drop(dir);
        out
    }

    fn supervise(&self, mut child: Child, stdin: &[u8], start: Instant) -> io::Result<RunOutput> {
        let pid = child.id() as i32;
        let over = Arc::new(AtomicBool::new(false));
        let reaped = Arc::new(AtomicBool::new(false));
        let cap = self.limits.max_output_bytes;
        let out_rx = capture(child.stdout.take().expect("piped"), cap, pid, over.clone(), reaped.clone());
        let err_rx = capture(child.stderr.take().expect("piped"), cap, pid, over.clone(), reaped.clone());
        let mut pipe_in = child.stdin.take().expect("piped");
        let input = stdin.to_vec();
        // Detached: a program that never reads its input must not block the verifier.
        std::thread::spawn(move || {
            let _ = pipe_in.write_all(&input);
        });
        let exited = exit_signal(pid);
        let timed_out = exited.recv_timeout(self.limits.timeout).is_err();
        if timed_out {
            kill_group(pid);
            let _ = exited.recv();
        }
        // Whatever the program left running in its group goes with it.
        kill_group(pid);
        reaped.store(true, Ordering::SeqCst);
        let status = child.wait()?;
        let wall = start.elapsed();
        let stdout = out_rx.recv_timeout(PIPE_GRACE).unwrap_or_default();
        let stderr = err_rx.recv_timeout(PIPE_GRACE).unwrap_or_default();
        Ok(RunOutput {
            code: status.code(),
            signal: status.signal(),
            timed_out,
            output_limit: over.load(Ordering::SeqCst),
            stdout,
            stderr,
            wall,
        })
    }
}

fn chown_tree(dir: &Path, files: &[(&str, &[u8])]) -> io::Result<()> {
    std::os::unix::fs::chown(dir, Some(NOBODY), Some(NOBODY))?;
    for (name, _) in files {
        std::os::unix::fs::chown(dir.join(name), Some(NOBODY), Some(NOBODY))?;
    }
    Ok(())
}
