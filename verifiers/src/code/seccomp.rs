//! A seccomp-bpf deny-list for sandboxed programs (x86_64 only; other architectures run without it
//! and the probe says so).
//!
//! The filter allows everything except system calls a test program has no business making: tracing
//! other processes, mounting, entering or creating namespaces, loading kernel code, BPF, perf,
//! io_uring (which bypasses seccomp for the calls it queues), keyrings, and IPv4/IPv6 sockets. A
//! denied call fails with `EPERM`, so the program sees an ordinary error rather than being killed.
//! The choice of calls follows the deny-list that mistral.rs's sandbox documents
//! (`mistralrs-sandbox/src/linux/seccomp.rs` in the mistral.rs repository).

use std::io;

// Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD (0x00) | BPF_W (0x00) | BPF_ABS (0x20)
const BPF_JEQ_K: u16 = 0x05 | 0x10; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JGE_K: u16 = 0x05 | 0x30; // BPF_JMP | BPF_JGE | BPF_K
const BPF_JSET_K: u16 = 0x05 | 0x40; // BPF_JMP | BPF_JSET | BPF_K
const BPF_RET_K: u16 = 0x06;

// Offsets into `struct seccomp_data`: nr (u32), arch (u32), ip (u64), args[6] (u64 each).
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARG0_LO: u32 = 16; // low half of args[0] on little-endian machines

const RET_ALLOW: u32 = 0x7fff_0000; // SECCOMP_RET_ALLOW
const RET_KILL_PROCESS: u32 = 0x8000_0000; // SECCOMP_RET_KILL_PROCESS
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Namespace-creating bits of `clone(2)`'s flags: a sandboxed program may fork, not unshare.
const CLONE_NS_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP) as u32;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt: 0, jf: 0, k }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

fn ret_errno(errno: i32) -> libc::sock_filter {
    stmt(BPF_RET_K, libc::SECCOMP_RET_ERRNO | (errno as u32 & 0xffff))
}

/// System calls that fail with `EPERM` inside the sandbox.
#[cfg(target_arch = "x86_64")]
const DENIED: &[libc::c_long] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_userfaultfd,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_syslog,
    libc::SYS_fanotify_init,
];

/// The compiled filter, or `None` where this architecture has no filter.
#[cfg(target_arch = "x86_64")]
pub(crate) fn filter() -> Option<Vec<libc::sock_filter>> {
    let mut prog = vec![
        stmt(BPF_LD_W_ABS, OFF_ARCH),
        jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(BPF_RET_K, RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, OFF_NR),
        // x32 system calls reuse the numbers with a high bit set; refuse the whole x32 table.
        jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1),
        ret_errno(libc::EPERM),
    ];
    for &nr in DENIED {
        prog.push(jump(BPF_JEQ_K, nr as u32, 0, 1));
        prog.push(ret_errno(libc::EPERM));
    }
    // clone3 passes its flags in memory a BPF filter cannot read: answer ENOSYS so that libc
    // falls back to clone(2), whose flags are checked below.
    prog.push(jump(BPF_JEQ_K, libc::SYS_clone3 as u32, 0, 1));
    prog.push(ret_errno(libc::ENOSYS));
    prog.extend([
        jump(BPF_JEQ_K, libc::SYS_clone as u32, 0, 3),
        stmt(BPF_LD_W_ABS, OFF_ARG0_LO),
        jump(BPF_JSET_K, CLONE_NS_FLAGS, 0, 1),
        ret_errno(libc::EPERM),
        stmt(BPF_LD_W_ABS, OFF_NR),
        jump(BPF_JEQ_K, libc::SYS_socket as u32, 0, 4),
        stmt(BPF_LD_W_ABS, OFF_ARG0_LO),
        jump(BPF_JEQ_K, libc::AF_INET as u32, 1, 0),
        jump(BPF_JEQ_K, libc::AF_INET6 as u32, 0, 1),
        ret_errno(libc::EPERM),
        stmt(BPF_RET_K, RET_ALLOW),
    ]);
    Some(prog)
}

/// The compiled filter, or `None` where this architecture has no filter.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn filter() -> Option<Vec<libc::sock_filter>> {
    None
}

/// Installs `prog` on the calling thread. Runs between fork and exec: raw system calls only.
/// The caller must have set `PR_SET_NO_NEW_PRIVS`.
pub(crate) fn install(prog: &[libc::sock_filter]) -> io::Result<()> {
    let fprog = libc::sock_fprog { len: prog.len() as libc::c_ushort, filter: prog.as_ptr() as *mut libc::sock_filter };
    // SAFETY: `fprog` points at `prog`, which outlives the call; the kernel copies the program.
    let rc = unsafe {
        libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER as libc::c_ulong, &fprog as *const libc::sock_fprog)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
