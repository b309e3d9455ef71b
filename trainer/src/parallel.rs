//! Data parallelism over PyTorch's c10d ([`rlvr_dist`]): one process per rank, launched by
//! torchrun (or `rlvr train --nproc N`), every rank holding the whole model.
//!
//! How a step divides (docs/architecture.md §6.1):
//!
//! - **The batch is global.** Every rank draws the same global batch from the data (drawing is
//!   cheap and deterministic) and trains on its contiguous share of the rows ([`Dp::share`]).
//!   Each share's loss is weighted by its part of the global normaliser (rows, tokens or response
//!   tokens, as the loss averages), so the gradients summed over the ranks are the gradient of the
//!   single-process loss; figures are summed the same way ([`Dp::sum`]).
//! - **Rollouts are local, results global.** Each rank samples and judges its share of the
//!   prompts (a GRPO group never straddles ranks) on its own engine and verifiers; the
//!   completions and verdicts are then gathered ([`Dp::gather`]) so that dynamic sampling,
//!   advantages, metrics and eval figures are computed from the same global batch on every rank.
//! - **Gradients** are summed by all-reduce (replicated optimizer) or reduce-scattered into the
//!   shards of a sharded optimizer ([`crate::optim::Optimizer`]); either way every rank ends the
//!   step with the same weights.
//! - Rank 0 writes metrics, plots, the report and checkpoints; every rank takes part in the
//!   collectives that gather what a checkpoint holds.
//!
//! Every rank must issue the same collectives in the same order: decisions that end or skip a
//! step (a non-finite loss, a broken reward) are taken on global figures.

use anyhow::{Context, Result};
use rlvr_dist::{Backend, Group, Launch, ReduceOp};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::ops::Range;
use std::time::Duration;
use tch::{Device, Tensor};

/// The ranks of a run and how they share work.
pub struct Dp {
    group: Group,
    /// Whether the optimizer state is sharded across the ranks (ZeRO-2).
    pub shard_optimizer: bool,
    /// Bytes of gradients per collective (`run.bucket_mb`).
    pub bucket_bytes: i64,
}

impl Dp {
    /// One process: every collective is the identity.
    pub fn single() -> Dp {
        Dp { group: Group::single(), shard_optimizer: false, bucket_bytes: 64 << 20 }
    }

    /// The ranks torchrun started (one process when it did not): Gloo for CPU runs, NCCL for CUDA.
    pub fn from_env(device: Device, timeout: Duration, shard_optimizer: bool, bucket_mb: f64) -> Result<Dp> {
        let Some(launch) = Launch::from_env()? else {
            return Ok(Dp::single());
        };
        if launch.world == 1 {
            return Ok(Dp::single());
        }
        let backend = match device {
            Device::Cuda(_) => Backend::Nccl,
            _ => Backend::Gloo,
        };
        let group = Group::init(&launch, backend, timeout)
            .with_context(|| format!("joining the {} ranks of the run as rank {}", launch.world, launch.rank))?;
        let bucket_bytes = ((bucket_mb * (1 << 20) as f64) as i64).max(1);
        Ok(Dp { group, shard_optimizer, bucket_bytes })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.group.rank()
    }

    /// The number of ranks.
    pub fn world(&self) -> usize {
        self.group.world()
    }

    /// Whether this is rank 0, which writes the run's files.
    pub fn is_main(&self) -> bool {
        self.group.rank() == 0
    }

    /// The process group.
    pub fn group(&self) -> &Group {
        &self.group
    }

    /// This rank's contiguous share of `n` items: the first `n mod world` ranks take one more.
    pub fn share(&self, n: usize) -> Range<usize> {
        share_of(n, self.rank(), self.world())
    }

    /// Sums `values` over the ranks, in place.
    pub fn sum(&self, values: &mut [f64]) -> Result<()> {
        if self.world() > 1 {
            self.group.all_reduce_f64(values, ReduceOp::Sum)?;
        }
        Ok(())
    }

    /// The largest of each value over the ranks, in place.
    pub fn max(&self, values: &mut [f64]) -> Result<()> {
        if self.world() > 1 {
            self.group.all_reduce_f64(values, ReduceOp::Max)?;
        }
        Ok(())
    }

    /// Whether `flag` holds on every rank.
    pub fn all(&self, flag: bool) -> Result<bool> {
        let mut v = [if flag { 1.0 } else { 0.0 }];
        if self.world() > 1 {
            self.group.all_reduce_f64(&mut v, ReduceOp::Min)?;
        }
        Ok(v[0] > 0.5)
    }

    /// Every rank's `local`, in rank order (binary encoding: floats exactly, but no
    /// self-describing values such as `serde_json::Value`; see [`Dp::gather_json`]).
    pub fn gather<T: Serialize + DeserializeOwned>(&self, local: T) -> Result<Vec<T>> {
        self.gather_as(local, |v| Ok(postcard::to_allocvec(v)?), |b| Ok(postcard::from_bytes(b)?))
    }

    /// Every rank's `local`, in rank order, as JSON (for values holding `serde_json::Value`).
    pub fn gather_json<T: Serialize + DeserializeOwned>(&self, local: T) -> Result<Vec<T>> {
        self.gather_as(local, |v| Ok(serde_json::to_vec(v)?), |b| Ok(serde_json::from_slice(b)?))
    }

    /// Every rank's `local`, in rank order, through `encode` and `decode`.
    fn gather_as<T>(
        &self,
        local: T,
        encode: impl Fn(&T) -> Result<Vec<u8>>,
        decode: impl Fn(&[u8]) -> Result<T>,
    ) -> Result<Vec<T>> {
        if self.world() == 1 {
            return Ok(vec![local]);
        }
        let bytes = encode(&local).context("encoding for the other ranks")?;
        let all = self.group.all_gather_bytes(&bytes)?;
        all.iter()
            .enumerate()
            .map(|(rank, b)| decode(b).with_context(|| format!("decoding what rank {rank} sent")))
            .collect()
    }

    /// Sums the gradients of `params` over the ranks (flat buckets of one dtype each).
    pub fn all_reduce_grads(&self, params: &[Tensor]) -> Result<()> {
        if self.world() == 1 {
            return Ok(());
        }
        tch::no_grad(|| {
            let grads: Vec<Tensor> = params.iter().map(Tensor::grad).filter(Tensor::defined).collect();
            for bucket in buckets(&grads, self.bucket_bytes) {
                let views: Vec<Tensor> = bucket.iter().map(|g| g.reshape([-1])).collect();
                let mut flat = Tensor::cat(&views, 0);
                self.group.all_reduce(&mut flat, ReduceOp::Sum)?;
                let mut at = 0;
                for g in &bucket {
                    let n = g.numel() as i64;
                    let mut g = g.shallow_clone();
                    g.copy_(&flat.narrow(0, at, n).view_as(&g));
                    at += n;
                }
            }
            Ok(())
        })
    }

    /// Bytes this rank has put into collectives so far.
    pub fn bytes_moved(&self) -> u64 {
        self.group.bytes_moved()
    }
}

/// Rank `rank`'s contiguous share of `n` items over `world` ranks.
pub fn share_of(n: usize, rank: usize, world: usize) -> Range<usize> {
    let (base, extra) = (n / world, n % world);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// Consecutive gradients of one dtype and device, each bucket at most `cap` bytes (a larger
/// gradient is a bucket of its own).
fn buckets(grads: &[Tensor], cap: i64) -> Vec<Vec<Tensor>> {
    let mut out: Vec<Vec<Tensor>> = Vec::new();
    let mut bytes = 0;
    for g in grads {
        let size = g.numel() as i64 * g.kind().elt_size_in_bytes() as i64;
        let fits = out.last().is_some_and(|b| {
            let head = &b[0];
            head.kind() == g.kind() && head.device() == g.device() && bytes + size <= cap
        });
        if fits {
            bytes += size;
            out.last_mut().expect("a bucket").push(g.shallow_clone());
        } else {
            bytes = size;
            out.push(vec![g.shallow_clone()]);
        }
    }
    out
}

/// Peak resident memory of this process in MiB (`VmHWM`), for the memory report.
pub fn peak_rss_mib() -> f64 {
    crate::plan::status_kib("VmHWM").map_or(0.0, |kb| kb / 1024.0)
}

/// A test aid for the fault-tolerance tests: with `RLVR_FAULT_KILL=RANK:STEP` in the environment,
/// rank RANK kills itself with SIGKILL right after global step STEP (and its checkpoint, when one
/// was due), on a job's first attempt only (`TORCHELASTIC_RESTART_COUNT` unset or 0).
pub fn injected_fault(dp: &Dp, global_step: u64) {
    let Some(spec) = std::env::var("RLVR_FAULT_KILL").ok() else { return };
    let restarted = std::env::var("TORCHELASTIC_RESTART_COUNT").is_ok_and(|c| c != "0");
    let target = spec.split_once(':').and_then(|(r, s)| Some((r.parse::<usize>().ok()?, s.parse::<u64>().ok()?)));
    if let (Some((rank, step)), false) = (target, restarted) {
        if rank == dp.rank() && step == global_step {
            eprintln!("rank {rank}: RLVR_FAULT_KILL: killing myself after step {step}");
            let _ = signal_hook::low_level::raise(signal_hook::consts::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::share_of;

    #[test]
    fn shares_cover_the_items_in_order() {
        for n in 0..20 {
            for world in 1..6 {
                let mut next = 0;
                for rank in 0..world {
                    let r = share_of(n, rank, world);
                    assert_eq!(r.start, next, "n {n} world {world} rank {rank}");
                    assert!(r.len() == n / world || r.len() == n / world + 1);
                    next = r.end;
                }
                assert_eq!(next, n);
            }
        }
    }
}
