//! Distributed collectives for rlvr, on PyTorch's own engine.
//!
//! This crate binds c10d, the C++ layer under `torch.distributed`, through a small C++ shim
//! (`shim/`, compiled by `build.rs` against the headers of the torch wheel that `tch` links):
//! a `TCPStore` for rendezvous, seen through a `PrefixStore` with a constant prefix, and a
//! `ProcessGroupGloo` (CPU) or `ProcessGroupNCCL` (one GPU per rank) for the collectives. Tensors
//! cross the C ABI as tch's `C_tensor`, which is an `at::Tensor*`, so nothing is copied on the way.
//! [`Group`] is the whole API: all_reduce, broadcast, all_gather, reduce_scatter, all_to_all with
//! uneven splits, barrier, and byte/f64 conveniences built on them. The same shim carries two
//! more calls into libtorch that tch lacks: [`set_deterministic`] and the benchmarks' operator
//! profiler ([`profile`]).
//!
//! # Launching
//!
//! Any launcher that sets `RANK`, `WORLD_SIZE`, `MASTER_ADDR` and `MASTER_PORT` works
//! ([`Launch::from_env`]); `torchrun --no-python <binary> ...` is the tested one. Two rules make
//! torchrun work:
//!
//! 1. **Agent store: every rank is a client.** torchrun's agent already serves a TCPStore on
//!    `MASTER_PORT` and says so with `TORCHELASTIC_USE_AGENT_STORE=True`; rank 0 then connects
//!    like everyone else instead of trying to listen on a port that is taken ([`Launch::agent_store`]).
//!    Otherwise rank 0 hosts the store.
//! 2. **Restarts: a fresh store per round, a constant prefix.** torchrun's shared agent store
//!    outlives a restart and keeps the previous round's keys, and `TORCHELASTIC_RESTART_COUNT`
//!    counts per agent, so nodes disagree on it. Launch elastic jobs with
//!    `TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1` (each round then gets a new `MASTER_PORT` and rank 0
//!    hosts a new store), and this crate never puts the restart count into its key prefix.
//!
//! # Timeouts and lost ranks
//!
//! Every collective waits at most the group's timeout, so no call hangs forever. A peer that dies
//! (even by `SIGKILL`) closes its connections and Gloo fails the next collective at once or, at
//! worst, when the timeout expires.
//!
//! To say *who* went away, each process runs a heartbeat thread that adds 1 to its own counter in
//! the store every 500 ms over a connection of its own. When a collective fails, the failing rank
//! reads all counters, then rereads them for up to 1.5 s: peers whose counter never moved are
//! reported in [`DistError::lost`] and named in the message, for example
//! `rank 1: all_reduce failed: lost rank 2 (no heartbeat for 1.5 s): <c10d message>`. This compares
//! counters only, never clocks, so it needs no clock agreement between machines. If the store
//! itself cannot be reached the error says so; without an agent store, rank 0 hosts it, so rank 0
//! is then reported lost (with torchrun's agent store the store outlives the ranks).
//!
//! The first failures name the rank that died. A survivor that gives up and exits stops beating
//! too (and, as rank 0 without an agent store, takes the store with it), so a rank whose
//! collective fails only later, at its timeout, may name that survivor as well. A group is
//! unusable after a failed collective: drop it, which stops the heartbeat and shuts the backend
//! down.
//!
//! # NCCL
//!
//! The NCCL half of the shim builds whenever libtorch is a CUDA build and the CUDA headers are
//! present (`scripts/dist-deps.sh`); no GPU is needed to build or link it. Without a GPU,
//! creating an NCCL group returns libtorch's "no GPUs found" error. [`nccl_built`] tells whether
//! this build has it.

use std::ffi::c_int;

mod error;
mod ffi;
mod group;
mod launch;
pub mod profile;

pub use error::DistError;
pub use group::{Backend, Group, ReduceOp};
pub use launch::Launch;

/// Switches libtorch's deterministic mode (`torch.use_deterministic_algorithms(on)`, plus
/// deterministic cuDNN without benchmarking): on CUDA, ops whose kernels accumulate with float
/// atomics (`scatter_add`, `index_add`, ...) take their deterministic paths, so a run repeats bit
/// for bit; an op with none fails instead of varying. cuBLAS also needs `CUBLAS_WORKSPACE_CONFIG`
/// set before its first use ([`CUBLAS_WORKSPACE`]). Process-wide; a C++ call, since tch has no
/// binding for libtorch's global context.
pub fn set_deterministic(on: bool) {
    // SAFETY: sets flags of libtorch's global context; no pointers cross.
    unsafe { ffi::rlvr_set_deterministic(c_int::from(on)) }
}

/// Whether libtorch's deterministic mode is on.
pub fn deterministic() -> bool {
    // SAFETY: reads a flag of libtorch's global context.
    unsafe { ffi::rlvr_deterministic() != 0 }
}

/// The `CUBLAS_WORKSPACE_CONFIG` value that makes cuBLAS deterministic (NVIDIA's documented
/// setting: a fixed workspace per stream instead of one that depends on scheduling).
pub const CUBLAS_WORKSPACE: &str = ":4096:8";

/// `sizeof(c10d::ProcessGroupGloo)` as the shim was compiled: must equal what libtorch itself
/// allocates, or the shim's headers and the library disagree on the layout.
pub fn c10d_sizeof_gloo() -> usize {
    // SAFETY: a pure function of the shim.
    unsafe { ffi::rlvr_c10d_sizeof_gloo() }
}

/// `sizeof(c10d::ProcessGroupNCCL)` as the shim's NCCL part was compiled; `None` without it.
pub fn c10d_sizeof_nccl() -> Option<usize> {
    // SAFETY: a pure function of the shim.
    Some(unsafe { ffi::rlvr_c10d_sizeof_nccl() }).filter(|&size| size > 0)
}

/// Whether this build includes the NCCL backend (see the build script's warning when not).
pub fn nccl_built() -> bool {
    // SAFETY: a pure function of the shim.
    unsafe { ffi::rlvr_c10d_has_nccl() != 0 }
}
