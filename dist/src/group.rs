//! [`Group`]: one process's membership in a distributed job, and its collectives.

use crate::error::LOST_AFTER_MS;
use crate::ffi;
use crate::{DistError, Launch};
use std::ffi::{c_int, CString};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

/// The c10d backend a [`Group`] runs its collectives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// ProcessGroupGloo: CPU tensors, TCP.
    Gloo,
    /// ProcessGroupNCCL: CUDA tensors, one GPU per rank (the one at the rank's `local_rank`).
    Nccl,
}

/// The reduction of [`Group::all_reduce`] and [`Group::reduce_scatter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Max,
    Min,
}

impl ReduceOp {
    fn code(self) -> c_int {
        match self {
            ReduceOp::Sum => 0,
            ReduceOp::Max => 1,
            ReduceOp::Min => 2,
        }
    }
}

/// The constant prefix of every key this crate puts in the store. Deliberately not derived from
/// the restart count (per agent, so it could split a group after a restart).
const STORE_PREFIX: &str = "rlvr";
/// How often each process bumps its heartbeat counter.
const HEARTBEAT_PERIOD_MS: i64 = 500;
/// How often the lost-rank check rereads the counters.
const POLL: Duration = Duration::from_millis(250);

/// One process's membership in a distributed job.
///
/// Every rank must issue the same collectives in the same order with matching shapes. A world of
/// 1 made by [`Group::single`] has no store and no backend: every collective is the identity.
pub struct Group {
    rank: usize,
    world: usize,
    local_rank: usize,
    inner: Option<Inner>,
    bytes_moved: AtomicU64,
}

struct Inner {
    pg: NonNull<ffi::RlvrPg>,
    backend: Backend,
    agent_store: bool,
    store_addr: String,
    timeout: Duration,
}

// SAFETY: the shim object is owned by this Group alone and freed once, in Drop; c10d process groups
// may be driven from any thread, one call at a time, which `&self` methods on a non-`Sync` type
// guarantee.
unsafe impl Send for Group {}

impl Group {
    /// A world of one: rank 0, no store, no backend; every collective is the identity.
    pub fn single() -> Group {
        Group { rank: 0, world: 1, local_rank: 0, inner: None, bytes_moved: AtomicU64::new(0) }
    }

    /// Joins the group `launch` describes: connects to the TCPStore at `MASTER_ADDR:MASTER_PORT`
    /// (rank 0 hosts it unless the launcher's agent does), starts the heartbeat and creates the
    /// backend. Every collective, and the setup itself, gives up after `timeout`. A world of 1 still
    /// gets a real store and backend here (use [`Group::single`] to avoid them).
    pub fn init(launch: &Launch, backend: Backend, timeout: Duration) -> Result<Group, DistError> {
        let init_error = |message: String| DistError::new("init", launch.rank, message);
        if launch.world == 0 || launch.rank >= launch.world {
            return Err(init_error(format!("rank {} is outside a world of {}", launch.rank, launch.world)));
        }
        let host = CString::new(launch.master_addr.as_str())
            .map_err(|_| init_error(format!("MASTER_ADDR {:?} contains a NUL byte", launch.master_addr)))?;
        let prefix = CString::new(STORE_PREFIX).expect("constant prefix has no NUL");
        let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX).max(1);
        let is_server = launch.rank == 0 && !launch.agent_store;
        let code = match backend {
            Backend::Gloo => ffi::BACKEND_GLOO,
            Backend::Nccl => ffi::BACKEND_NCCL,
        };
        let to_int =
            |v: usize, what: &str| c_int::try_from(v).map_err(|_| init_error(format!("{what} {v} is too large")));
        let mut pg = std::ptr::null_mut();
        // SAFETY: the strings outlive the call; `pg` is written only on success.
        let rc = unsafe {
            ffi::rlvr_pg_new(
                host.as_ptr(),
                launch.master_port,
                to_int(launch.rank, "rank")?,
                to_int(launch.world, "world")?,
                c_int::from(is_server),
                code,
                to_int(launch.local_rank, "local rank")?,
                timeout_ms,
                HEARTBEAT_PERIOD_MS,
                prefix.as_ptr(),
                &mut pg,
            )
        };
        let pg = match (rc, NonNull::new(pg)) {
            (0, Some(pg)) => pg,
            _ => {
                let store = format!("{}:{}", launch.master_addr, launch.master_port);
                return Err(init_error(format!("{backend:?} group on store {store}: {}", ffi::last_error())));
            }
        };
        Ok(Group {
            rank: launch.rank,
            world: launch.world,
            local_rank: launch.local_rank,
            inner: Some(Inner {
                pg,
                backend,
                agent_store: launch.agent_store,
                store_addr: format!("{}:{}", launch.master_addr, launch.master_port),
                timeout,
            }),
            bytes_moved: AtomicU64::new(0),
        })
    }

    /// [`Group::init`] from the launcher's environment ([`Launch::from_env`]), or
    /// [`Group::single`] when the process was not launched as part of a job.
    pub fn from_env(backend: Backend, timeout: Duration) -> Result<Group, DistError> {
        match Launch::from_env()? {
            Some(launch) => Group::init(&launch, backend, timeout),
            None => Ok(Group::single()),
        }
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world(&self) -> usize {
        self.world
    }

    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// Rank 0: the one that logs, writes checkpoints, and so on.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// The backend, `None` for [`Group::single`].
    pub fn backend(&self) -> Option<Backend> {
        self.inner.as_ref().map(|inner| inner.backend)
    }

    /// Where this group's tensors live: the rank's GPU under NCCL, else the CPU.
    pub fn device(&self) -> Device {
        match self.backend() {
            Some(Backend::Nccl) => Device::Cuda(self.local_rank),
            _ => Device::Cpu,
        }
    }

    /// Running total of the bytes of the tensors this rank handed to collectives as their input
    /// (broadcast: on the root only); 0 for a world of 1. For benchmarks.
    pub fn bytes_moved(&self) -> u64 {
        self.bytes_moved.load(Ordering::Relaxed)
    }

    /// Reduces `t` in place across all ranks.
    pub fn all_reduce(&self, t: &mut Tensor, op: ReduceOp) -> Result<(), DistError> {
        let Some(inner) = self.inner.as_ref() else { return Ok(()) };
        self.count(t);
        // SAFETY: `pg` is live; the tensor pointer is tch's at::Tensor* for the duration of the call.
        let rc = unsafe { ffi::rlvr_all_reduce(inner.pg.as_ptr(), t.as_mut_ptr(), op.code()) };
        self.check("all_reduce", rc)
    }

    /// Copies `root`'s `t` into every rank's `t`.
    pub fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<(), DistError> {
        let root_code = self.root("broadcast", root)?;
        let Some(inner) = self.inner.as_ref() else { return Ok(()) };
        if root == self.rank {
            self.count(t);
        }
        // SAFETY: as in all_reduce.
        let rc = unsafe { ffi::rlvr_broadcast(inner.pg.as_ptr(), t.as_mut_ptr(), root_code) };
        self.check("broadcast", rc)
    }

    /// Concatenates every rank's `input` along dim 0, in rank order, into `out` (contiguous, world
    /// times `input`'s rows).
    pub fn all_gather(&self, out: &mut Tensor, input: &Tensor) -> Result<(), DistError> {
        self.same_kind("all_gather", out, input)?;
        if out.numel() != self.world * input.numel() {
            return Err(self.usage(
                "all_gather",
                format!("out {:?} must hold world ({}) × input {:?}", out.size(), self.world, input.size()),
            ));
        }
        let Some(inner) = self.inner.as_ref() else { return self.copy("all_gather", out, input) };
        self.count(input);
        // SAFETY: as in all_reduce; the shim does not modify the input handle.
        let rc = unsafe { ffi::rlvr_all_gather(inner.pg.as_ptr(), out.as_mut_ptr(), input.as_ptr() as *mut _) };
        self.check("all_gather", rc)
    }

    /// Reduces every rank's `input` (world times `out`'s rows along dim 0) and leaves block `rank`
    /// of the result in `out`.
    pub fn reduce_scatter(&self, out: &mut Tensor, input: &Tensor, op: ReduceOp) -> Result<(), DistError> {
        self.same_kind("reduce_scatter", out, input)?;
        if input.numel() != self.world * out.numel() {
            return Err(self.usage(
                "reduce_scatter",
                format!("input {:?} must hold world ({}) × out {:?}", input.size(), self.world, out.size()),
            ));
        }
        let Some(inner) = self.inner.as_ref() else { return self.copy("reduce_scatter", out, input) };
        self.count(input);
        // SAFETY: as in all_gather.
        let rc = unsafe {
            ffi::rlvr_reduce_scatter(inner.pg.as_ptr(), out.as_mut_ptr(), input.as_ptr() as *mut _, op.code())
        };
        self.check("reduce_scatter", rc)
    }

    /// Sends `in_splits[r]` rows of `input` (consecutive, along dim 0) to rank `r` and receives
    /// `out_splits[r]` rows from rank `r` into `out`, in rank order. Both split lists have one entry
    /// per rank, or are both empty for an even split.
    pub fn all_to_all(
        &self,
        out: &mut Tensor,
        input: &Tensor,
        out_splits: &[i64],
        in_splits: &[i64],
    ) -> Result<(), DistError> {
        self.same_kind("all_to_all", out, input)?;
        self.check_splits("out", out, out_splits)?;
        self.check_splits("input", input, in_splits)?;
        let Some(inner) = self.inner.as_ref() else {
            if out_splits != in_splits {
                return Err(self.usage(
                    "all_to_all",
                    format!("a world of 1 sends to itself: splits {in_splits:?} and {out_splits:?} differ"),
                ));
            }
            return self.copy("all_to_all", out, input);
        };
        self.count(input);
        // SAFETY: as in all_gather; the split slices outlive the call.
        let rc = unsafe {
            ffi::rlvr_all_to_all(
                inner.pg.as_ptr(),
                out.as_mut_ptr(),
                input.as_ptr() as *mut _,
                out_splits.as_ptr(),
                out_splits.len(),
                in_splits.as_ptr(),
                in_splits.len(),
            )
        };
        self.check("all_to_all", rc)
    }

    /// Returns once every rank has called it.
    pub fn barrier(&self) -> Result<(), DistError> {
        let Some(inner) = &self.inner else { return Ok(()) };
        // SAFETY: `pg` is live.
        let rc = unsafe { ffi::rlvr_barrier(inner.pg.as_ptr()) };
        self.check("barrier", rc)
    }

    /// [`Group::all_reduce`] of a few numbers (every rank passes the same count).
    pub fn all_reduce_f64(&self, values: &mut [f64], op: ReduceOp) -> Result<(), DistError> {
        if self.inner.is_none() || values.is_empty() {
            return Ok(());
        }
        let mut t = Tensor::from_slice(values).to_device(self.device());
        self.all_reduce(&mut t, op)?;
        let n = values.len();
        t.to_device(Device::Cpu).copy_data(values, n);
        Ok(())
    }

    /// Every rank's `bytes`, in rank order; the lengths may differ.
    pub fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, DistError> {
        if self.inner.is_none() {
            return Ok(vec![bytes.to_vec()]);
        }
        let device = self.device();
        let mut lengths = Tensor::zeros([self.world as i64], (Kind::Int64, device));
        self.all_gather(&mut lengths, &Tensor::from_slice(&[bytes.len() as i64]).to_device(device))?;
        let mut lengths_host = vec![0i64; self.world];
        lengths.to_device(Device::Cpu).copy_data(&mut lengths_host, self.world);
        let longest = lengths_host.iter().copied().max().unwrap_or(0).max(0) as usize;
        if longest == 0 {
            return Ok(vec![Vec::new(); self.world]);
        }
        let mut padded = vec![0u8; longest];
        padded[..bytes.len()].copy_from_slice(bytes);
        let mut gathered = Tensor::zeros([(self.world * longest) as i64], (Kind::Uint8, device));
        self.all_gather(&mut gathered, &Tensor::from_slice(&padded).to_device(device))?;
        let mut flat = vec![0u8; self.world * longest];
        gathered.to_device(Device::Cpu).copy_data(&mut flat, self.world * longest);
        Ok(flat.chunks(longest).zip(&lengths_host).map(|(chunk, &len)| chunk[..len as usize].to_vec()).collect())
    }

    /// Replaces every rank's `bytes` with `root`'s (lengths may differ before the call).
    pub fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<(), DistError> {
        self.root("broadcast_bytes", root)?;
        if self.inner.is_none() {
            return Ok(());
        }
        let device = self.device();
        let mut length = Tensor::from_slice(&[bytes.len() as i64]).to_device(device);
        self.broadcast(&mut length, root)?;
        let length = length.int64_value(&[0]) as usize;
        if self.rank != root {
            bytes.clear();
            bytes.resize(length, 0);
        }
        if length == 0 {
            return Ok(());
        }
        let mut data = Tensor::from_slice(bytes.as_slice()).to_device(device);
        self.broadcast(&mut data, root)?;
        if self.rank != root {
            data.to_device(Device::Cpu).copy_data(bytes.as_mut_slice(), length);
        }
        Ok(())
    }

    fn count(&self, t: &Tensor) {
        if self.world > 1 {
            let bytes = t.numel() * t.kind().elt_size_in_bytes();
            self.bytes_moved.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    fn root(&self, collective: &str, root: usize) -> Result<c_int, DistError> {
        if root >= self.world {
            return Err(self.usage(collective, format!("root {root} is outside a world of {}", self.world)));
        }
        Ok(root as c_int)
    }

    fn same_kind(&self, collective: &str, out: &Tensor, input: &Tensor) -> Result<(), DistError> {
        if out.kind() != input.kind() {
            return Err(self.usage(collective, format!("out is {:?} but input is {:?}", out.kind(), input.kind())));
        }
        if !out.is_contiguous() {
            return Err(self.usage(collective, "out must be contiguous".into()));
        }
        Ok(())
    }

    fn check_splits(&self, what: &str, t: &Tensor, splits: &[i64]) -> Result<(), DistError> {
        let rows = t.size().first().copied().unwrap_or(0);
        if splits.is_empty() {
            if rows % self.world as i64 != 0 {
                return Err(
                    self.usage("all_to_all", format!("{what} has {rows} rows, not divisible by world {}", self.world))
                );
            }
            return Ok(());
        }
        if splits.len() != self.world || splits.iter().any(|&s| s < 0) || splits.iter().sum::<i64>() != rows {
            return Err(self.usage(
                "all_to_all",
                format!(
                    "{what} splits {splits:?} must be {} non-negative counts summing to its {rows} rows",
                    self.world
                ),
            ));
        }
        Ok(())
    }

    /// The identity of a world of 1: `input`'s values into `out`.
    fn copy(&self, collective: &str, out: &mut Tensor, input: &Tensor) -> Result<(), DistError> {
        out.f_copy_(&input.reshape(out.size())).map_err(|e| self.usage(collective, e.to_string()))
    }

    fn usage(&self, collective: &str, message: String) -> DistError {
        DistError::new(collective, self.rank, message)
    }

    fn check(&self, collective: &str, rc: c_int) -> Result<(), DistError> {
        if rc == 0 {
            return Ok(());
        }
        let message = ffi::last_error();
        let inner = self.inner.as_ref().expect("only a live backend fails");
        let message = if message.contains("timed out") {
            format!("{message} (group timeout {:?})", inner.timeout)
        } else {
            message
        };
        let (lost, note) = self.find_lost(inner);
        let message = match note {
            Some(note) => format!("{note}; {message}"),
            None => message,
        };
        Err(DistError { collective: collective.to_owned(), rank: self.rank, lost, message })
    }

    /// Names the peers whose heartbeat counter stands still for `LOST_AFTER_MS`; stops early once
    /// every peer has moved. When the store itself cannot be read, says so instead: without an
    /// agent store, rank 0 hosts it, so rank 0 is the one lost.
    fn find_lost(&self, inner: &Inner) -> (Vec<usize>, Option<String>) {
        let unreachable = |error: String| {
            if !inner.agent_store && self.rank != 0 {
                (
                    vec![0],
                    Some(format!("the store at {}, hosted by rank 0, is unreachable ({error})", inner.store_addr)),
                )
            } else {
                (Vec::new(), Some(format!("the store at {} is unreachable ({error})", inner.store_addr)))
            }
        };
        let first = match self.heartbeats(inner) {
            Ok(counts) => counts,
            Err(error) => return unreachable(error),
        };
        let mut alive = vec![false; self.world];
        alive[self.rank] = true;
        let deadline = Instant::now() + Duration::from_millis(LOST_AFTER_MS);
        while alive.iter().any(|a| !a) && Instant::now() < deadline {
            std::thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
            let now = match self.heartbeats(inner) {
                Ok(counts) => counts,
                Err(error) => return unreachable(error),
            };
            for (r, flag) in alive.iter_mut().enumerate() {
                *flag |= now[r] != first[r];
            }
        }
        ((0..self.world).filter(|&r| !alive[r]).collect(), None)
    }

    fn heartbeats(&self, inner: &Inner) -> Result<Vec<i64>, String> {
        let mut counts = vec![0i64; self.world];
        // SAFETY: `pg` is live; `counts` has `world` entries.
        let rc = unsafe { ffi::rlvr_pg_heartbeats(inner.pg.as_ptr(), counts.as_mut_ptr(), self.world as c_int) };
        if rc == 0 {
            Ok(counts)
        } else {
            Err(ffi::last_error())
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            // SAFETY: `pg` came from rlvr_pg_new and is freed exactly once, here.
            unsafe { ffi::rlvr_pg_free(inner.pg.as_ptr()) };
        }
    }
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("rank", &self.rank)
            .field("world", &self.world)
            .field("local_rank", &self.local_rank)
            .field("backend", &self.backend())
            .finish()
    }
}
