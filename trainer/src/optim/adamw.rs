//! AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", Algorithm 2) as
//! `torch.optim.AdamW` computes it (torch/optim/adam.py, `_single_tensor_adam` with
//! `decoupled_weight_decay=True`), per parameter with its own step count t:
//!
//! ```text
//! p ← p·(1 − lr·λ)                       (skipped when λ = 0)
//! m ← lerp(m, g, 1 − β1)                 = β1·m + (1 − β1)·g
//! v ← β2·v + (1 − β2)·g²
//! p ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)
//! ```
//!
//! The tensor operations are torch's, in torch's order, with the scalars computed in f64 as Python
//! does, so f32 results on the CPU are bit-identical to torch. On CUDA, `addcdiv` groups its
//! product differently and results may differ from torch's in the last bit.
//!
//! Dtypes: f32 and f64 parameters keep their state in their own dtype. bf16 and f16 parameters keep
//! f32 state and, with [`AdamW::with_master_weights`] (what training uses), an f32 master copy of
//! the weight: each step updates the master and rounds it into the parameter, so updates far
//! smaller than a bf16 ulp accumulate (at lr 1e-6 almost every update is). Without a master, the new
//! weight is computed in f32 from the stored low-precision weight and rounded back once, and an
//! update smaller than half a bf16 ulp of the weight is lost (torch, stepping a bf16 parameter,
//! keeps bf16 state and loses more).

use super::flat::Flat;
use super::OptimError;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use tch::{Kind, Tensor};

/// The hyperparameters shared by every group.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    /// (β1, β2): decay rates of the first and second moment averages, each in [0, 1).
    pub betas: (f64, f64),
    /// ε added to the bias-corrected √v, ≥ 0.
    pub eps: f64,
}

impl Default for AdamWConfig {
    /// torch's defaults: betas (0.9, 0.999), eps 1e-8.
    fn default() -> Self {
        AdamWConfig { betas: (0.9, 0.999), eps: 1e-8 }
    }
}

impl AdamWConfig {
    /// Checks the ranges, naming the field and value at fault.
    pub fn check(&self) -> Result<(), String> {
        let (beta1, beta2) = self.betas;
        for (field, beta) in [("betas[0]", beta1), ("betas[1]", beta2)] {
            if !(0.0..1.0).contains(&beta) {
                return Err(format!("`{field}` = {beta}: must be in [0, 1)"));
            }
        }
        if !(self.eps >= 0.0 && self.eps.is_finite()) {
            return Err(format!("`eps` = {}: must be finite and ≥ 0", self.eps));
        }
        Ok(())
    }
}

/// Parameters that share a learning-rate scale and a weight decay.
#[derive(Debug)]
pub struct ParamGroup {
    /// The group's name, for logs.
    pub name: String,
    /// (checkpoint name, parameter): the tensors are the model's variables (shallow clones), which
    /// [`AdamW::step`] updates in place. Names are unique across all groups.
    pub params: Vec<(String, Tensor)>,
    /// Multiplies the base learning rate given to [`AdamW::step`].
    pub lr_scale: f64,
    /// Decoupled weight decay λ; 0 turns it off (norms, biases).
    pub weight_decay: f64,
}

/// One parameter's state, as torch keeps it.
#[derive(Debug)]
pub struct ParamState {
    /// First moment m, same shape as the parameter; f32 unless the parameter is f64.
    pub exp_avg: Tensor,
    /// Second moment v, same shape and dtype as `exp_avg`.
    pub exp_avg_sq: Tensor,
    /// Updates applied so far (t); 0 until the parameter first has a gradient at a step.
    pub step: i64,
    /// The f32 master copy of a low-precision parameter ([`AdamW::with_master_weights`]).
    pub master: Option<Tensor>,
}

impl ParamState {
    /// Zero moments in the state dtype for `param`, on its device.
    fn zeros(name: &str, param: &Tensor) -> Self {
        let kind = match param.kind() {
            Kind::Double => Kind::Double,
            Kind::Float | Kind::BFloat16 | Kind::Half => Kind::Float,
            other => panic!("parameter `{name}` has kind {other:?}: AdamW needs a floating-point parameter"),
        };
        let zeros = || Tensor::zeros(param.size(), (kind, param.device()));
        ParamState { exp_avg: zeros(), exp_avg_sq: zeros(), step: 0, master: None }
    }
}

/// AdamW over named parameter groups, with its state exportable through [`AdamW::save`].
#[derive(Debug)]
pub struct AdamW {
    pub(super) config: AdamWConfig,
    pub(super) groups: Vec<ParamGroup>,
    /// `states[g][i]` belongs to `groups[g].params[i]`.
    pub(super) states: Vec<Vec<ParamState>>,
    /// Checkpoint name → (group, index in group).
    index: HashMap<String, (usize, usize)>,
    /// Per group, its flat buffers once [`AdamW::flattened`] laid it out.
    flat: Vec<Option<Flat>>,
    /// Group steps taken flat so far.
    flat_steps: u64,
}

impl AdamW {
    /// An optimizer with zero moments and step 0 for every parameter (what torch's lazily created
    /// state starts from).
    ///
    /// Panics when the config is out of range, a name appears twice, or a parameter is not floating
    /// point: these are programming mistakes, not input errors.
    pub fn new(groups: Vec<ParamGroup>, config: AdamWConfig) -> Self {
        if let Err(message) = config.check() {
            panic!("AdamW config: {message}");
        }
        let mut index = HashMap::new();
        let mut states = Vec::with_capacity(groups.len());
        for (g, group) in groups.iter().enumerate() {
            let mut group_states = Vec::with_capacity(group.params.len());
            for (i, (name, param)) in group.params.iter().enumerate() {
                if let Some((other, _)) = index.insert(name.clone(), (g, i)) {
                    panic!("parameter `{name}` is in group `{}` and in group `{}`", groups[other].name, group.name);
                }
                group_states.push(ParamState::zeros(name, param));
            }
            states.push(group_states);
        }
        let flat = groups.iter().map(|_| None).collect();
        AdamW { config, groups, states, index, flat, flat_steps: 0 }
    }

    /// Lays each group's parameters, moments and masters end to end (`flat.rs`): the model's
    /// variables become views of one buffer per group and a step runs once per group instead of
    /// once per parameter, with the same values. A group mixing dtypes or devices stays as it is.
    pub fn flattened(mut self) -> Self {
        for ((group, states), flat) in self.groups.iter().zip(&mut self.states).zip(&mut self.flat) {
            if flat.is_none() {
                *flat = Flat::build(&group.params, states);
            }
        }
        self
    }

    /// Keeps an f32 master copy of every bf16/f16 parameter (its current value), which the steps
    /// update and round into the parameter, and which [`AdamW::save`] writes as `master.<name>`.
    pub fn with_master_weights(mut self) -> Self {
        for ((group, states), flat) in self.groups.iter().zip(&mut self.states).zip(&mut self.flat) {
            let low = |(_, p): &(String, Tensor)| matches!(p.kind(), Kind::BFloat16 | Kind::Half);
            if let Some(flat) = flat.as_mut().filter(|_| group.params.iter().all(low)) {
                if states.iter().all(|s| s.master.is_none()) {
                    flat.add_masters(&group.params, states);
                }
                continue;
            }
            for ((_, param), state) in group.params.iter().zip(states) {
                if matches!(param.kind(), Kind::BFloat16 | Kind::Half) {
                    state.master = Some(tch::no_grad(|| param.to_kind(Kind::Float)));
                }
            }
        }
        self
    }

    /// How many group steps went through the flat buffers so far (one per flat group and step
    /// where it applied; see [`AdamW::flattened`]).
    pub fn flat_steps(&self) -> u64 {
        self.flat_steps
    }

    /// The shared hyperparameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// The groups, in the order given to [`AdamW::new`].
    pub fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }

    /// Every parameter, group by group.
    pub fn params(&self) -> impl Iterator<Item = &Tensor> {
        self.groups.iter().flat_map(|group| group.params.iter().map(|(_, param)| param))
    }

    /// The state of the parameter with this checkpoint name.
    pub fn state(&self, name: &str) -> Option<&ParamState> {
        self.index.get(name).map(|&(g, i)| &self.states[g][i])
    }

    /// One update of every parameter that has a gradient, with learning rate `lr · lr_scale` in
    /// each group. A parameter whose gradient is undefined is skipped: its weight, state and step
    /// count stay as they are, as in torch.
    pub fn step(&mut self, lr: f64) {
        self.step_each(lr, true, |param, _| param.grad());
    }

    /// One update with the gradients given, one per parameter in [`AdamW::params`] order (an
    /// undefined tensor skips its parameter), instead of the parameters' own `.grad`.
    pub fn step_with(&mut self, lr: f64, grads: &[Tensor]) {
        assert_eq!(grads.len(), self.params().count(), "AdamW::step_with: one gradient per parameter");
        self.step_each(lr, false, |_, i| grads[i].shallow_clone());
    }

    /// The update, with parameter `i`'s (in [`AdamW::params`] order) gradient from `grad_of`: a
    /// flat group in one step where it applies (`flat.rs`), the others parameter by parameter.
    /// `own`: the gradients are the parameters' `.grad`.
    fn step_each(&mut self, lr: f64, own: bool, grad_of: impl Fn(&Tensor, usize) -> Tensor) {
        let config = self.config;
        let mut i = 0;
        tch::no_grad(|| {
            for ((group, states), flat) in self.groups.iter_mut().zip(&mut self.states).zip(&mut self.flat) {
                let group_lr = lr * group.lr_scale;
                let grads: Vec<Tensor> = group.params.iter().enumerate().map(|(j, (_, p))| grad_of(p, i + j)).collect();
                i += grads.len();
                if let Some(flat) = flat {
                    if flat.step(&group.params, states, &grads, own, group_lr, group.weight_decay, &config) {
                        self.flat_steps += 1;
                        continue;
                    }
                }
                for (((_, param), state), grad) in group.params.iter_mut().zip(states.iter_mut()).zip(&grads) {
                    if grad.defined() {
                        update(param, grad, state, group_lr, group.weight_decay, &config);
                    }
                }
            }
        });
    }

    /// The state of every parameter, group by group, mutably (to fill from gathered shards).
    pub(crate) fn states_mut(&mut self) -> impl Iterator<Item = &mut ParamState> {
        self.states.iter_mut().flatten()
    }

    /// Bytes of optimizer state held (both moments of every parameter).
    pub fn state_bytes(&self) -> u64 {
        let bytes = |t: &Tensor| t.numel() as u64 * t.kind().elt_size_in_bytes() as u64;
        self.states.iter().flatten().map(|s| 2 * bytes(&s.exp_avg) + s.master.as_ref().map_or(0, bytes)).sum()
    }

    /// Gives every parameter without a gradient a zero one (as torch's `zero_grad(set_to_none=False)`
    /// state after any backward), so that from then on every parameter is stepped each step —
    /// a parameter that got no signal keeps its value until its moments or weight decay move it.
    pub fn define_grads(&self) {
        let params: Vec<Tensor> = self.params().map(Tensor::shallow_clone).collect();
        define_grads(&params);
    }

    /// Zeroes every defined gradient in place (torch's `zero_grad(set_to_none=False)`; tch cannot
    /// reset a gradient to undefined). A parameter that had a gradient once is therefore stepped
    /// at every later step, with a zero gradient if it took no part in the loss.
    pub fn zero_grad(&mut self) {
        for (group, flat) in self.groups.iter_mut().zip(&self.flat) {
            // A flat group whose gradients live in its buffer: one zeroing for all of them.
            if flat.as_ref().is_some_and(|f| f.zero_grads(&group.params)) {
                continue;
            }
            for (_, param) in &mut group.params {
                param.zero_grad();
            }
        }
    }

    /// Writes the state to one safetensors file: `exp_avg.<name>` and `exp_avg_sq.<name>` in the
    /// state dtype and `step.<name>` as an i64 scalar, for every parameter.
    pub fn save(&self, path: &Path) -> Result<(), OptimError> {
        super::state_file::save(self, path)
    }

    /// Restores the state written by [`AdamW::save`] for the same parameters. Every expected tensor
    /// must be present with the right dtype and shape, and nothing else may be in the file; on any
    /// error the state is left unchanged.
    pub fn load(&mut self, path: &Path) -> Result<(), OptimError> {
        super::state_file::load(self, path)
    }
}

/// Gives every tensor of `params` without a gradient a zero one (see [`AdamW::define_grads`]).
pub(crate) fn define_grads(params: &[Tensor]) {
    let missing: Vec<&Tensor> = params.iter().filter(|p| !p.grad().defined()).collect();
    if missing.is_empty() {
        return;
    }
    let zero: Tensor = missing.iter().map(|p| p.sum(tch::Kind::Float) * 0.0).reduce(|a, b| a + b).expect("non-empty");
    zero.backward();
}

/// One AdamW update of `param` in place; the operations mirror torch's `_single_tensor_adam`.
pub(super) fn update(
    param: &mut Tensor,
    grad: &Tensor,
    state: &mut ParamState,
    lr: f64,
    weight_decay: f64,
    config: &AdamWConfig,
) {
    let (beta1, beta2) = config.betas;
    state.step += 1;
    // Python float arithmetic: `beta ** step` is C `pow`, `bias_correction2 ** 0.5` too.
    let t = state.step as f64;
    let bias_correction1 = 1.0 - beta1.powf(t);
    let bias_correction2 = 1.0 - beta2.powf(t);
    let step_size = lr / bias_correction1;
    let bias_correction2_sqrt = bias_correction2.powf(0.5);

    let kind = state.exp_avg.kind();
    let same_kind = param.kind() == kind;
    // Low-precision weights are stepped in their f32 master, or else in an f32 copy, and rounded
    // back once at the end.
    let mut p = match (&state.master, same_kind) {
        (Some(master), _) => master.shallow_clone(),
        (None, true) => param.shallow_clone(),
        (None, false) => param.to_kind(kind),
    };
    let g = grad.to_kind(kind);
    if weight_decay != 0.0 {
        p *= 1.0 - lr * weight_decay;
    }
    let _ = state.exp_avg.lerp_(&g, 1.0 - beta1);
    state.exp_avg_sq *= beta2;
    // torch: `addcmul_(g, g, value=1 − β2)`; the kernel forms value·t1 first, so scaling t1
    // beforehand rounds identically (tch's addcmul_ takes no value).
    let _ = state.exp_avg_sq.addcmul_(&(&g * (1.0 - beta2)), &g);
    let mut denom = state.exp_avg_sq.sqrt() / bias_correction2_sqrt;
    denom += config.eps;
    // torch: `addcdiv_(m, denom, value=−step_size)`, likewise value·t1 first on the CPU.
    let _ = p.addcdiv_(&(&state.exp_avg * -step_size), &denom);
    if !same_kind {
        param.copy_(&p);
    }
}
