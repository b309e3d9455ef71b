//! A parameter group laid end to end ([`super::AdamW::flattened`]): one buffer each for the
//! weights, both moments and the f32 masters, every parameter (the model's own variable) and its
//! state a view of its slice, so a step is AdamW's ~11 tensor operations once per group instead of
//! once per parameter — on a GPU, a few dozen kernel launches per step instead of ~11 per tensor
//! (tens of thousands for a MoE model of real size).
//!
//! The arithmetic is elementwise, so the flat step gives each element the value the per-parameter
//! step gives it. The flat step is taken when every parameter of the group has a gradient, all
//! share one step count, and every variable still points into the buffer (nothing re-pointed it:
//! the data pointers are compared on the host, no tensor op); otherwise that step goes parameter
//! by parameter through the same views, which stay the parameters' state either way (checkpoints
//! read and write them unchanged).

use super::adamw::{update, ParamState};
use tch::{Kind, Tensor};

/// Elements per piece of a CPU step (see [`Flat::chunks`]).
const CPU_CHUNK: i64 = 1 << 18;

/// One group's flat buffers.
#[derive(Debug)]
pub(super) struct Flat {
    /// (n) in the parameters' dtype: each parameter is a view of its slice.
    param: Tensor,
    /// (n) in the state dtype.
    exp_avg: Tensor,
    /// (n) in the state dtype.
    exp_avg_sq: Tensor,
    /// (n) f32, when the parameters are low precision and keep masters.
    master: Option<Tensor>,
    /// (n) in the parameters' dtype: the gradients, each parameter's `.grad` re-pointed at its
    /// slice at its first flat step, so that backward accumulates straight into it.
    grad: Tensor,
    /// Where each parameter's slice starts, in elements (the same in every buffer).
    offsets: Vec<i64>,
}

impl Flat {
    /// Lays `params` (one dtype and device, at least one) and their `states` end to end and
    /// re-points each variable and state tensor at its slice. None when the parameters mix dtypes
    /// or devices, or some masters are kept and others not.
    pub(super) fn build(params: &[(String, Tensor)], states: &mut [ParamState]) -> Option<Flat> {
        let first = &params.first()?.1;
        let (kind, device) = (first.kind(), first.device());
        if params.iter().any(|(_, p)| p.kind() != kind || p.device() != device) {
            return None;
        }
        let masters = states.iter().filter(|s| s.master.is_some()).count();
        if masters != 0 && masters != states.len() {
            return None;
        }
        let n: i64 = params.iter().map(|(_, p)| p.numel() as i64).sum();
        let state_kind = states[0].exp_avg.kind();
        let flat = |kind: Kind| Tensor::zeros([n], (kind, device));
        let (param, exp_avg, exp_avg_sq) = (flat(kind), flat(state_kind), flat(state_kind));
        let master = (masters > 0).then(|| flat(Kind::Float));
        let grad = flat(kind);
        let mut offsets = Vec::with_capacity(params.len());
        tch::no_grad(|| {
            let mut at = 0;
            for ((_, p), s) in params.iter().zip(states.iter_mut()) {
                offsets.push(at);
                let size = p.size();
                let slice = |t: &Tensor| t.narrow(0, at, p.numel() as i64).view(size.as_slice());
                let view = slice(&param);
                view.shallow_clone().copy_(p);
                p.shallow_clone().set_data(&view);
                for (flat, own) in [(&exp_avg, &mut s.exp_avg), (&exp_avg_sq, &mut s.exp_avg_sq)] {
                    let v = slice(flat);
                    v.shallow_clone().copy_(own);
                    *own = v;
                }
                if let (Some(flat), Some(own)) = (&master, s.master.as_mut()) {
                    let v = slice(flat);
                    v.shallow_clone().copy_(own);
                    *own = v;
                }
                at += p.numel() as i64;
            }
        });
        Some(Flat { param, exp_avg, exp_avg_sq, master, grad, offsets })
    }

    /// Where parameter `i`'s slice of `buffer` starts in memory.
    fn start(&self, buffer: &Tensor, i: usize) -> usize {
        buffer.data_ptr() as usize + self.offsets[i] as usize * buffer.kind().elt_size_in_bytes()
    }

    /// Whether every variable of `params` still points at its slice.
    fn is_current(&self, params: &[(String, Tensor)]) -> bool {
        let kind = self.param.kind();
        params.len() == self.offsets.len()
            && params
                .iter()
                .enumerate()
                .all(|(i, (_, p))| p.data_ptr() as usize == self.start(&self.param, i) && p.kind() == kind)
    }

    /// Zeroes the group's gradients with one operation when every parameter's `.grad` lives in the
    /// flat gradient buffer (as after a flat step); false, with nothing touched, otherwise.
    pub(super) fn zero_grads(&self, params: &[(String, Tensor)]) -> bool {
        let in_place = self.is_current(params)
            && params.iter().enumerate().all(|(i, (_, p))| {
                let g = p.grad();
                g.defined() && g.data_ptr() as usize == self.start(&self.grad, i) && g.size() == p.size()
            });
        if in_place {
            let _ = self.grad.shallow_clone().zero_();
        }
        in_place
    }

    /// One AdamW step of the whole group with `grads` (one per parameter; `own`: they are the
    /// parameters' `.grad`), when the flat step applies (see the module notes); false, with
    /// nothing changed, when it does not. A gradient not yet in the flat gradient buffer is copied
    /// there, and an own one re-pointed at its slice, so from the next backward on it accumulates
    /// in place and the step copies nothing.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn step(
        &mut self,
        params: &[(String, Tensor)],
        states: &mut [ParamState],
        grads: &[Tensor],
        own: bool,
        lr: f64,
        weight_decay: f64,
        config: &super::AdamWConfig,
    ) -> bool {
        let step = states[0].step;
        let applies = grads.iter().all(Tensor::defined) && states.iter().all(|s| s.step == step);
        if !(applies && self.is_current(params)) {
            return false;
        }
        for (i, ((_, p), g)) in params.iter().zip(grads).enumerate() {
            if g.data_ptr() as usize != self.start(&self.grad, i) || g.size() != p.size() || g.kind() != p.kind() {
                let slot = self.grad.narrow(0, self.offsets[i], p.numel() as i64).view(p.size().as_slice());
                slot.shallow_clone().copy_(g);
                if own {
                    g.shallow_clone().set_data(&slot);
                }
            }
        }
        let mut next = 0;
        for chunk in self.chunks() {
            let part = |t: &Tensor| t.narrow(0, chunk.0, chunk.1);
            let mut state = ParamState {
                exp_avg: part(&self.exp_avg),
                exp_avg_sq: part(&self.exp_avg_sq),
                step,
                master: self.master.as_ref().map(part),
            };
            update(&mut part(&self.param), &part(&self.grad), &mut state, lr, weight_decay, config);
            next = state.step;
        }
        for s in states {
            s.step = next;
        }
        true
    }

    /// The pieces `(start, length)` a step runs over: the whole buffer on a GPU (one launch per
    /// operation); on the CPU pieces of [`CPU_CHUNK`] elements, so that the step's temporaries
    /// stay small and reused instead of whole-group allocations the OS maps and zeroes afresh.
    fn chunks(&self) -> Vec<(i64, i64)> {
        let n = self.param.numel() as i64;
        let size = if self.param.device().is_cuda() { n } else { CPU_CHUNK };
        (0..n).step_by(size as usize).map(|at| (at, size.min(n - at))).collect()
    }

    /// Keeps f32 masters for the group (the parameters' current values) in one flat buffer, the
    /// states' masters its views.
    pub(super) fn add_masters(&mut self, params: &[(String, Tensor)], states: &mut [ParamState]) {
        let master = tch::no_grad(|| self.param.to_kind(Kind::Float));
        for (((_, p), s), &at) in params.iter().zip(states).zip(&self.offsets) {
            s.master = Some(master.narrow(0, at, p.numel() as i64).view(p.size().as_slice()));
        }
        self.master = Some(master);
    }
}
