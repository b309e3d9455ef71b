//! The optimizer of a data-parallel run, replicated or sharded across the ranks.
//!
//! **Replicated**: every rank holds the whole [`AdamW`]; the gradients are all-reduced and every
//! rank takes the same step.
//!
//! **Sharded** (ZeRO-2): each parameter group's parameters are laid end to end in buckets of at
//! most `run.bucket_mb`, each bucket padded to a multiple of the world size W and cut into W equal
//! slices; rank r keeps AdamW's moments, and an f32 master copy of the weights, for slice r of
//! every bucket only. A step reduce-scatters each bucket's flat gradient (each rank receives the
//! summed gradient of its slice), takes the global norm from the slices' squared sums, clips,
//! steps AdamW on its shard, and all-gathers the updated slices into every rank's weights.
//! Optimizer memory per rank falls from 12 B to 12/W B per parameter (f32 moments and master);
//! the model's full gradients are still held until the reduce-scatter, plus one flat bucket.
//!
//! Checkpoints hold the optimizer state in the one-file, per-parameter form of a single process
//! (the shards are gathered to write it and cut again on load), so a run resumes at the same world
//! size bit for bit and at any other one.

use super::adamw::define_grads;
use super::{clip_grad_norm, AdamW, AdamWConfig, OptimError, ParamGroup, ParamState};
use crate::parallel::Dp;
use anyhow::{bail, Result};
use rlvr_dist::ReduceOp;
use std::path::Path;
use tch::{Kind, Tensor};

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Applied {
    /// The global L2 norm of the gradients before clipping (may be non-finite).
    pub grad_norm: f64,
    /// Whether AdamW stepped (false when the norm was not finite: the step is skipped).
    pub stepped: bool,
}

/// AdamW, whole on every rank or sharded across them.
pub enum Optimizer {
    /// Every rank holds all the state.
    Replicated(AdamW),
    /// Each rank holds its shard of every group's state.
    Sharded(Sharded),
}

/// A sharded AdamW (see the module header).
pub struct Sharded {
    /// The model's parameters, by group (their names, learning-rate scales and decays).
    model: Vec<ParamGroup>,
    /// Per non-empty group: its index in `model` and its buckets.
    layouts: Vec<Layout>,
    /// AdamW over one flat shard per non-empty group (this rank's slice of each of its buckets,
    /// end to end): the master weights of this rank's shard.
    inner: AdamW,
    /// The state dtype (f32, or f64 for an all-f64 model).
    kind: Kind,
}

/// One group laid out flat, in buckets of consecutive parameters.
struct Layout {
    group: usize,
    buckets: Vec<Bucket>,
}

/// Consecutive parameters reduced, sharded and gathered together.
struct Bucket {
    /// Their indices in the group.
    params: std::ops::Range<usize>,
    /// Elements per rank's slice (the bucket padded to a multiple of the world, divided by it).
    shard: i64,
}

impl Layout {
    /// The group's parameters cut into buckets of at most `cap` elements (a larger parameter is a
    /// bucket of its own).
    fn new(group: usize, params: &[(String, Tensor)], world: i64, cap: i64) -> Layout {
        let mut buckets = Vec::new();
        let (mut start, mut size) = (0, 0i64);
        for (i, (_, p)) in params.iter().enumerate() {
            let n = p.numel() as i64;
            if i > start && size + n > cap {
                buckets.push(Bucket { params: start..i, shard: (size + world - 1) / world });
                (start, size) = (i, 0);
            }
            size += n;
        }
        if size > 0 {
            buckets.push(Bucket { params: start..params.len(), shard: (size + world - 1) / world });
        }
        Layout { group, buckets }
    }

    /// Where each bucket's slice starts in the rank's shard.
    fn offsets(&self) -> Vec<i64> {
        self.buckets.iter().scan(0, |at, b| Some(std::mem::replace(at, *at + b.shard))).collect()
    }
}

impl Optimizer {
    /// AdamW over `groups`: sharded when the run has more than one rank and asks for it. With
    /// `master_weights`, bf16/f16 parameters are stepped in f32 masters (always so when sharded:
    /// the shard is f32).
    pub fn new(groups: Vec<ParamGroup>, config: AdamWConfig, master_weights: bool, dp: &Dp) -> Result<Self> {
        if dp.world() == 1 || !dp.shard_optimizer {
            let opt = AdamW::new(groups, config).flattened();
            return Ok(Optimizer::Replicated(if master_weights { opt.with_master_weights() } else { opt }));
        }
        if !master_weights {
            bail!("run.master_weights = false needs a replicated optimizer (run.shard_optimizer = false): a shard keeps f32 masters");
        }
        Sharded::new(groups, config, dp).map(Optimizer::Sharded)
    }

    /// The model parameters it updates.
    pub fn params(&self) -> Vec<Tensor> {
        match self {
            Optimizer::Replicated(opt) => opt.params().map(Tensor::shallow_clone).collect(),
            Optimizer::Sharded(s) => s.model_params(),
        }
    }

    /// Gives every parameter a (zero) gradient: see [`AdamW::define_grads`].
    pub fn define_grads(&self) {
        define_grads(&self.params());
    }

    /// Zeroes the model's gradients.
    pub fn zero_grad(&mut self) {
        match self {
            Optimizer::Replicated(opt) => opt.zero_grad(),
            Optimizer::Sharded(_) => {
                for p in &mut self.params() {
                    p.zero_grad();
                }
            }
        }
    }

    /// Bytes of optimizer state on this rank (moments, and the master shard when sharded).
    pub fn state_bytes(&self) -> u64 {
        match self {
            Optimizer::Replicated(opt) => opt.state_bytes(),
            Optimizer::Sharded(s) => {
                let master: u64 =
                    s.inner.params().map(|p| p.numel() as u64 * p.kind().elt_size_in_bytes() as u64).sum();
                s.inner.state_bytes() + master
            }
        }
    }

    /// Sums the gradients over the ranks, clips them to `grad_clip` (> 0) by the global norm and
    /// steps at `lr` unless the norm is not finite.
    pub fn step(&mut self, lr: f64, grad_clip: f64, dp: &Dp) -> Result<Applied> {
        let max_norm = if grad_clip > 0.0 { grad_clip } else { f64::INFINITY };
        match self {
            Optimizer::Replicated(opt) => {
                let params: Vec<Tensor> = opt.params().map(Tensor::shallow_clone).collect();
                dp.all_reduce_grads(&params)?;
                let grad_norm = clip_grad_norm(&params, max_norm);
                let stepped = grad_norm.is_finite();
                if stepped {
                    opt.step(lr);
                }
                Ok(Applied { grad_norm, stepped })
            }
            Optimizer::Sharded(s) => s.step(lr, max_norm, dp),
        }
    }

    /// The whole state as one [`AdamW`] over the model's parameters, for a checkpoint (gathered
    /// from every rank when sharded: a collective).
    pub fn gathered(&self, dp: &Dp) -> Result<Option<AdamW>> {
        match self {
            Optimizer::Replicated(_) => Ok(None),
            Optimizer::Sharded(s) => s.gather(dp).map(Some),
        }
    }

    /// Restores the state from a checkpoint's optimizer file (written at any world size).
    pub fn load(&mut self, path: &Path, dp: &Dp) -> Result<(), OptimError> {
        match self {
            Optimizer::Replicated(opt) => opt.load(path),
            Optimizer::Sharded(s) => s.load(path, dp),
        }
    }
}

impl Sharded {
    fn new(groups: Vec<ParamGroup>, config: AdamWConfig, dp: &Dp) -> Result<Self> {
        let kinds: Vec<Kind> = groups.iter().flat_map(|g| g.params.iter().map(|(_, p)| p.kind())).collect();
        let kind = match (kinds.iter().all(|&k| k == Kind::Double), kinds.contains(&Kind::Double)) {
            (true, _) => Kind::Double,
            (false, false) => Kind::Float,
            (false, true) => {
                bail!("a sharded optimizer needs one state dtype: the model mixes f64 and other parameters")
            }
        };
        let (world, rank) = (dp.world() as i64, dp.rank() as i64);
        let mut layouts = Vec::new();
        let mut inner_groups = Vec::new();
        for (g, group) in groups.iter().enumerate() {
            let cap = (dp.bucket_bytes / kind.elt_size_in_bytes() as i64).max(1);
            let layout = Layout::new(g, &group.params, world, cap);
            if layout.buckets.is_empty() {
                continue;
            }
            let slices: Vec<Tensor> = tch::no_grad(|| {
                layout
                    .buckets
                    .iter()
                    .map(|b| {
                        let weights = group.params[b.params.clone()].iter().map(|(_, p)| p.shallow_clone());
                        flatten(weights, kind, world * b.shard).narrow(0, rank * b.shard, b.shard)
                    })
                    .collect()
            });
            inner_groups.push(ParamGroup {
                name: group.name.clone(),
                params: vec![(format!("shard.{}", group.name), Tensor::cat(&slices, 0))],
                lr_scale: group.lr_scale,
                weight_decay: group.weight_decay,
            });
            layouts.push(layout);
        }
        Ok(Sharded { model: groups, layouts, inner: AdamW::new(inner_groups, config), kind })
    }

    fn model_params(&self) -> Vec<Tensor> {
        self.model.iter().flat_map(|g| g.params.iter().map(|(_, p)| p.shallow_clone())).collect()
    }

    fn step(&mut self, lr: f64, max_norm: f64, dp: &Dp) -> Result<Applied> {
        let (group, world) = (dp.group(), dp.world() as i64);
        // Each group's shard of the summed gradient, bucket by bucket.
        let grads = tch::no_grad(|| -> Result<Vec<Tensor>> {
            let mut out = Vec::with_capacity(self.layouts.len());
            for l in &self.layouts {
                let params = &self.model[l.group].params;
                let mut slices = Vec::with_capacity(l.buckets.len());
                for b in &l.buckets {
                    let flat =
                        flatten(params[b.params.clone()].iter().map(|(_, p)| p.grad()), self.kind, world * b.shard);
                    let mut slice = Tensor::zeros([b.shard], (self.kind, flat.device()));
                    group.reduce_scatter(&mut slice, &flat, ReduceOp::Sum)?;
                    slices.push(slice);
                }
                out.push(Tensor::cat(&slices, 0));
            }
            Ok(out)
        })?;
        let mut squares = [grads.iter().map(|g| g.square().sum(Kind::Double).double_value(&[])).sum::<f64>()];
        dp.sum(&mut squares)?;
        let grad_norm = squares[0].sqrt();
        if !grad_norm.is_finite() {
            return Ok(Applied { grad_norm, stepped: false });
        }
        // torch's clip coefficient: max_norm / (norm + 1e-6), at most 1.
        let coef = (max_norm / (grad_norm + 1e-6)).min(1.0);
        let grads: Vec<Tensor> = if coef < 1.0 { grads.iter().map(|g| g * coef).collect() } else { grads };
        self.inner.step_with(lr, &grads);
        tch::no_grad(|| -> Result<()> {
            for (l, master) in self.layouts.iter().zip(self.inner.params()) {
                let params = &self.model[l.group].params;
                for (b, at) in l.buckets.iter().zip(l.offsets()) {
                    let mut full = Tensor::empty([world * b.shard], (self.kind, master.device()));
                    group.all_gather(&mut full, &master.narrow(0, at, b.shard))?;
                    unflatten(&full, &params[b.params.clone()], |p, part| {
                        let mut p = p.shallow_clone();
                        p.copy_(part);
                    });
                }
            }
            Ok(())
        })?;
        Ok(Applied { grad_norm, stepped: true })
    }

    /// A zero-state [`AdamW`] over the model's parameters, to gather into or load from.
    fn full(&self) -> AdamW {
        let groups = self
            .model
            .iter()
            .map(|g| ParamGroup {
                params: g.params.iter().map(|(n, p)| (n.clone(), p.shallow_clone())).collect(),
                ..settings(g)
            })
            .collect();
        AdamW::new(groups, *self.inner.config()).with_master_weights()
    }

    /// This rank's state of each layout's shard.
    fn shard_states(&self) -> Vec<&ParamState> {
        self.inner.groups().iter().map(|g| self.inner.state(&g.params[0].0).expect("a shard's state")).collect()
    }

    /// The full state as an [`AdamW`] over the model's parameters (on every rank).
    fn gather(&self, dp: &Dp) -> Result<AdamW> {
        let mut full = self.full();
        let world = dp.world() as i64;
        // Where each model group's parameters start in the full optimizer's state order.
        let starts: Vec<usize> =
            self.model.iter().scan(0, |at, g| Some(std::mem::replace(at, *at + g.params.len()))).collect();
        let shards: Vec<(Tensor, Tensor, i64)> = self
            .shard_states()
            .iter()
            .map(|s| (s.exp_avg.shallow_clone(), s.exp_avg_sq.shallow_clone(), s.step))
            .collect();
        let mut states: Vec<&mut ParamState> = full.states_mut().collect();
        tch::no_grad(|| -> Result<()> {
            for (l, (m, v, step)) in self.layouts.iter().zip(&shards) {
                let params = &self.model[l.group].params;
                for (b, at) in l.buckets.iter().zip(l.offsets()) {
                    for (first, moment) in [(true, m), (false, v)] {
                        let mut flat = Tensor::empty([world * b.shard], (self.kind, moment.device()));
                        dp.group().all_gather(&mut flat, &moment.narrow(0, at, b.shard))?;
                        let mut i = starts[l.group] + b.params.start;
                        unflatten(&flat, &params[b.params.clone()], |_, part| {
                            let s = &mut states[i];
                            let target = if first { &mut s.exp_avg } else { &mut s.exp_avg_sq };
                            target.copy_(part);
                            s.step = *step;
                            i += 1;
                        });
                    }
                }
            }
            Ok(())
        })?;
        Ok(full)
    }

    fn load(&mut self, path: &Path, dp: &Dp) -> Result<(), OptimError> {
        let mut full = self.full();
        full.load(path)?;
        let (world, rank) = (dp.world() as i64, dp.rank() as i64);
        let mut loaded = Vec::new();
        for l in &self.layouts {
            let group = &self.model[l.group];
            let states: Vec<&ParamState> =
                group.params.iter().map(|(n, _)| full.state(n).expect("a loaded state")).collect();
            let steps: Vec<i64> = states.iter().map(|s| s.step).collect();
            if steps.windows(2).any(|w| w[0] != w[1]) {
                let message =
                    format!("group `{}` has different step counts; a sharded optimizer needs one", group.name);
                return Err(OptimError::file(path, message));
            }
            let cut = |moment: fn(&ParamState) -> &Tensor| {
                let slices: Vec<Tensor> = l
                    .buckets
                    .iter()
                    .map(|b| {
                        let parts = states[b.params.clone()].iter().map(|s| moment(s).shallow_clone());
                        flatten(parts, self.kind, world * b.shard).narrow(0, rank * b.shard, b.shard)
                    })
                    .collect();
                Tensor::cat(&slices, 0)
            };
            // The master: a low-precision parameter's saved f32 copy, an f32 parameter itself.
            let weights: Vec<Tensor> = group
                .params
                .iter()
                .zip(&states)
                .map(|((_, p), s)| s.master.as_ref().map_or_else(|| p.shallow_clone(), Tensor::shallow_clone))
                .collect();
            let master: Vec<Tensor> = l
                .buckets
                .iter()
                .map(|b| {
                    let parts = weights[b.params.clone()].iter().map(Tensor::shallow_clone);
                    flatten(parts, self.kind, world * b.shard).narrow(0, rank * b.shard, b.shard)
                })
                .collect();
            let step = steps.first().copied().unwrap_or(0);
            loaded.push((cut(|s| &s.exp_avg), cut(|s| &s.exp_avg_sq), Tensor::cat(&master, 0), step));
        }
        let masters: Vec<Tensor> = self.inner.params().map(Tensor::shallow_clone).collect();
        tch::no_grad(|| {
            for ((state, (m, v, master, step)), mut current) in self.inner.states_mut().zip(loaded).zip(masters) {
                state.exp_avg.copy_(&m);
                state.exp_avg_sq.copy_(&v);
                state.step = step;
                current.copy_(&master);
            }
        });
        Ok(())
    }
}

/// A group's settings without its parameters.
fn settings(g: &ParamGroup) -> ParamGroup {
    ParamGroup { name: g.name.clone(), params: Vec::new(), lr_scale: g.lr_scale, weight_decay: g.weight_decay }
}

/// `tensors` flattened end to end in `kind`, zero-padded to `len` elements. Every tensor must be
/// defined (gradients are, once [`Optimizer::define_grads`] ran).
fn flatten(tensors: impl Iterator<Item = Tensor>, kind: Kind, len: i64) -> Tensor {
    let parts: Vec<Tensor> = tensors
        .map(|t| {
            assert!(t.defined(), "flatten: every parameter needs a gradient (define_grads)");
            t.reshape([-1]).to_kind(kind)
        })
        .collect();
    let flat = Tensor::cat(&parts, 0);
    let pad = len - flat.numel() as i64;
    if pad > 0 {
        Tensor::cat(&[flat.shallow_clone(), Tensor::zeros([pad], (kind, flat.device()))], 0)
    } else {
        flat
    }
}

/// Calls `each(param, part)` with each parameter and its part of `flat`, shaped like it.
fn unflatten(flat: &Tensor, params: &[(String, Tensor)], mut each: impl FnMut(&Tensor, &Tensor)) {
    let mut at = 0;
    for (_, p) in params {
        let n = p.numel() as i64;
        each(p, &flat.narrow(0, at, n).view(p.size().as_slice()));
        at += n;
    }
}
