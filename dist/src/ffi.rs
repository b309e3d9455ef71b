//! The shim's C ABI (`shim/c10d.cpp`). Every `c_int` function returns 0 or -1; after -1,
//! `rlvr_c10d_last_error` holds the message (per thread).

use std::ffi::{c_char, c_int, CStr};
use torch_sys::C_tensor;

/// The shim's process-group object (opaque).
#[repr(C)]
pub(crate) struct RlvrPg {
    _private: [u8; 0],
}

pub(crate) const BACKEND_GLOO: c_int = 0;
pub(crate) const BACKEND_NCCL: c_int = 1;

extern "C" {
    fn rlvr_c10d_last_error() -> *const c_char;
    pub(crate) fn rlvr_set_deterministic(on: c_int);
    pub(crate) fn rlvr_deterministic() -> c_int;
    pub fn rlvr_c10d_sizeof_gloo() -> usize;
    pub fn rlvr_c10d_sizeof_nccl() -> usize;
    pub fn rlvr_c10d_has_nccl() -> c_int;

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn rlvr_pg_new(
        host: *const c_char,
        port: u16,
        rank: c_int,
        world: c_int,
        is_server: c_int,
        backend: c_int,
        device: c_int,
        timeout_ms: i64,
        heartbeat_ms: i64,
        prefix: *const c_char,
        out: *mut *mut RlvrPg,
    ) -> c_int;
    pub(crate) fn rlvr_pg_free(pg: *mut RlvrPg);
    pub(crate) fn rlvr_pg_heartbeats(pg: *mut RlvrPg, counts: *mut i64, world: c_int) -> c_int;
    pub(crate) fn rlvr_all_reduce(pg: *mut RlvrPg, tensor: *mut C_tensor, op: c_int) -> c_int;
    pub(crate) fn rlvr_broadcast(pg: *mut RlvrPg, tensor: *mut C_tensor, root: c_int) -> c_int;
    pub(crate) fn rlvr_all_gather(pg: *mut RlvrPg, out: *mut C_tensor, input: *mut C_tensor) -> c_int;
    pub(crate) fn rlvr_reduce_scatter(pg: *mut RlvrPg, out: *mut C_tensor, input: *mut C_tensor, op: c_int) -> c_int;
    pub(crate) fn rlvr_all_to_all(
        pg: *mut RlvrPg,
        out: *mut C_tensor,
        input: *mut C_tensor,
        out_splits: *const i64,
        n_out: usize,
        in_splits: *const i64,
        n_in: usize,
    ) -> c_int;
    pub(crate) fn rlvr_barrier(pg: *mut RlvrPg) -> c_int;
}

/// The calling thread's last shim error message.
pub(crate) fn last_error() -> String {
    // SAFETY: the shim returns a NUL-terminated thread-local string that lives until the next
    // failing call on this thread; it is copied before anything else runs here.
    unsafe { CStr::from_ptr(rlvr_c10d_last_error()) }.to_string_lossy().into_owned()
}
