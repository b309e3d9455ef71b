//! What runs in the child between `fork` and `exec`: namespaces, the pid-namespace init split,
//! user ids, rlimits, Landlock and seccomp, in that order.
//!
//! Only async-signal-safe work happens here (raw system calls on data prepared by the parent): the
//! verifier is multi-threaded, and a forked child of a multi-threaded process must not allocate.
//!
//! With a new pid namespace the child forks once more: the new process is pid 1 of the namespace
//! and goes on to exec the interpreter, while the first child closes every descriptor (so pipes
//! and std's exec-error pipe see only the inner process) and mirrors the inner process's exit. When
//! pid 1 of a namespace dies, the kernel kills every process left in it — the daemonised
//! grandchildren included.

use super::landlock;
use super::seccomp;
use serde::Serialize;
use std::io;
use std::os::fd::RawFd;

/// The isolation layers a run uses; the probe decides which ones this machine supports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Layers {
    /// Run as uid/gid 65534 (`nobody`); only possible when the verifier runs as root.
    pub drop_uid: bool,
    /// New user namespace (the program holds no capabilities outside it).
    pub user_ns: bool,
    /// New pid namespace: the program cannot see or signal outside processes, and everything it
    /// starts dies with it.
    pub pid_ns: bool,
    /// New mount namespace with a private `/proc` for the new pid namespace.
    pub mount_ns: bool,
    /// New network namespace: no interfaces but a down loopback.
    pub net_ns: bool,
    /// New System V IPC namespace.
    pub ipc_ns: bool,
    /// New hostname namespace.
    pub uts_ns: bool,
    /// Landlock: writes only beneath the temp dir, no TCP, no signals out (by ABI).
    pub landlock: bool,
    /// seccomp-bpf deny-list.
    pub seccomp: bool,
}

/// The uid and gid the sandboxed program runs as when `drop_uid` is on.
pub(crate) const NOBODY: u32 = 65534;

/// Everything the child needs, prepared by the parent before fork.
pub(crate) struct ChildSetup {
    pub layers: Layers,
    /// The effective uid/gid of the program (mapped to itself inside a user namespace).
    pub uid: u32,
    pub gid: u32,
    /// `"<uid> <uid> 1"` and `"<gid> <gid> 1"`.
    pub uid_map: Vec<u8>,
    pub gid_map: Vec<u8>,
    /// `(resource, limit)` pairs; soft and hard are equal except for CPU time (hard = soft + 1 s).
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
    pub landlock_fd: Option<RawFd>,
    pub seccomp: Option<Vec<libc::sock_filter>>,
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn write_proc(path: &std::ffi::CStr, data: &[u8]) -> io::Result<()> {
    // SAFETY: raw open/write/close on a NUL-terminated path and a live buffer.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        check(fd)?;
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        libc::close(fd);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn drop_ids(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: plain system calls.
    unsafe {
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setresgid(gid, gid, gid))?;
        check(libc::setresuid(uid, uid, uid))?;
        // A credential change makes the process non-dumpable, which would hand /proc/self (and
        // uid_map) to root; the sandbox needs to write its own maps.
        check(libc::prctl(libc::PR_SET_DUMPABLE, 1))?;
    }
    Ok(())
}

/// Forks; returns in the child (pid 1 of the new namespace). The parent never returns: it waits
/// for the child and exits the same way.
fn split_pid_namespace_init() -> io::Result<()> {
    // SAFETY: fork/waitpid/close_range/kill/_exit are async-signal-safe.
    unsafe {
        let pid = libc::fork();
        check(pid)?;
        if pid == 0 {
            return Ok(());
        }
        if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) != 0 {
            for fd in 0..1024 {
                libc::close(fd);
            }
        }
        let mut status = 0;
        while libc::waitpid(pid, &mut status, 0) < 0 {
            if *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
        }
        if libc::WIFSIGNALED(status) {
            let sig = libc::WTERMSIG(status);
            libc::signal(sig, libc::SIG_DFL);
            libc::kill(libc::getpid(), sig);
            libc::_exit(128 + sig);
        }
        libc::_exit(libc::WEXITSTATUS(status))
    }
}

fn private_proc() -> io::Result<()> {
    // SAFETY: mount(2) with static NUL-terminated strings.
    unsafe {
        check(libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        check(libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        ))
    }
}

impl ChildSetup {
    fn unshare_flags(&self) -> libc::c_int {
        let l = &self.layers;
        let mut flags = 0;
        for (on, flag) in [
            (l.user_ns, libc::CLONE_NEWUSER),
            (l.pid_ns, libc::CLONE_NEWPID),
            (l.mount_ns, libc::CLONE_NEWNS),
            (l.net_ns, libc::CLONE_NEWNET),
            (l.ipc_ns, libc::CLONE_NEWIPC),
            (l.uts_ns, libc::CLONE_NEWUTS),
        ] {
            if on {
                flags |= flag;
            }
        }
        flags
    }

    /// Applies every layer to the calling (forked) process. Async-signal-safe.
    pub(crate) fn apply(&self) -> io::Result<()> {
        let l = self.layers;
        set_rlimit(libc::RLIMIT_CORE, 0, 0)?;
        if l.drop_uid && l.user_ns {
            // Drop to nobody first, so that the namespace belongs to nobody rather than root.
            drop_ids(self.uid, self.gid)?;
        }
        let flags = self.unshare_flags();
        if flags != 0 {
            // SAFETY: plain system call.
            check(unsafe { libc::unshare(flags) })?;
        }
        if l.user_ns {
            write_proc(c"/proc/self/setgroups", b"deny")?;
            write_proc(c"/proc/self/uid_map", &self.uid_map)?;
            write_proc(c"/proc/self/gid_map", &self.gid_map)?;
        }
        if l.pid_ns {
            split_pid_namespace_init()?;
        }
        if l.mount_ns && l.pid_ns {
            private_proc()?;
        }
        if l.drop_uid && !l.user_ns {
            drop_ids(self.uid, self.gid)?;
        }
        // Set after the last credential change, which clears it. The parent is the thread that
        // spawned us (or the namespace-init split above).
        // SAFETY: plain system call.
        check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) })?;
        for &(resource, limit) in &self.rlimits {
            let hard = if resource == libc::RLIMIT_CPU { limit + 1 } else { limit };
            set_rlimit(resource, limit, hard)?;
        }
        if l.landlock || l.seccomp {
            // SAFETY: plain system call.
            check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })?;
        }
        if let (true, Some(fd)) = (l.landlock, self.landlock_fd) {
            landlock::restrict_self(fd)?;
        }
        if let (true, Some(prog)) = (l.seccomp, &self.seccomp) {
            seccomp::install(prog)?;
        }
        Ok(())
    }
}

fn set_rlimit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> io::Result<()> {
    let lim = libc::rlimit { rlim_cur: soft, rlim_max: hard };
    // SAFETY: plain system call with a live struct.
    check(unsafe { libc::setrlimit(resource, &lim) })
}
