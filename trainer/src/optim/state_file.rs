//! The optimizer state file: one safetensors file holding, for every parameter `<name>`,
//! `exp_avg.<name>` and `exp_avg_sq.<name>` (parameter shape, state dtype F32 or F64) and
//! `step.<name>` (I64, shape []), and for a low-precision parameter with a master copy
//! `master.<name>` (F32, parameter shape), with `{"format": "pt"}` metadata so `safetensors.torch`
//! reads it.
//!
//! Saving converts one tensor at a time as the file is written, so memory stays at one tensor.
//! Loading reads the whole file, checks every tensor against the optimizer, and only then copies,
//! so a bad file leaves the state untouched.

use super::{AdamW, OptimError};
use safetensors::tensor::{SafeTensorError, TensorView, View};
use safetensors::{Dtype, SafeTensors};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The three tensor names of one parameter's state.
fn names(param: &str) -> [String; 3] {
    [format!("exp_avg.{param}"), format!("exp_avg_sq.{param}"), format!("step.{param}")]
}

fn dtype_of(kind: Kind) -> Dtype {
    match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        other => unreachable!("optimizer state is f32 or f64, not {other:?}"),
    }
}

/// A tensor to write, turned into bytes only when the writer asks for them.
enum Stored<'a> {
    /// A moment tensor, on any device.
    Moment { tensor: &'a Tensor, dtype: Dtype, shape: Vec<usize> },
    /// A step count.
    Step([u8; 8]),
}

impl<'a> Stored<'a> {
    fn moment(tensor: &'a Tensor) -> Self {
        let shape = tensor.size().iter().map(|&d| d as usize).collect();
        Stored::Moment { tensor, dtype: dtype_of(tensor.kind()), shape }
    }
}

impl View for Stored<'_> {
    fn dtype(&self) -> Dtype {
        match self {
            Stored::Moment { dtype, .. } => *dtype,
            Stored::Step(_) => Dtype::I64,
        }
    }

    fn shape(&self) -> &[usize] {
        match self {
            Stored::Moment { shape, .. } => shape,
            Stored::Step(_) => &[],
        }
    }

    fn data(&self) -> Cow<'_, [u8]> {
        match self {
            Stored::Moment { tensor, .. } => {
                // The writer's interface cannot fail here; a device-to-host copy that fails is a
                // broken device, not a bad file, and panics.
                let cpu = tensor.to_device(Device::Cpu).contiguous();
                let mut bytes = vec![0u8; self.data_len()];
                cpu.copy_data_u8(&mut bytes, cpu.numel());
                Cow::Owned(bytes)
            }
            Stored::Step(bytes) => Cow::Borrowed(bytes),
        }
    }

    fn data_len(&self) -> usize {
        let numel: usize = self.shape().iter().product();
        numel * self.dtype().bitsize() / 8
    }
}

pub(super) fn save(opt: &AdamW, path: &Path) -> Result<(), OptimError> {
    let mut entries = Vec::new();
    for (group, states) in opt.groups.iter().zip(&opt.states) {
        for ((name, _), state) in group.params.iter().zip(states) {
            let [m, v, step] = names(name);
            entries.push((m, Stored::moment(&state.exp_avg)));
            entries.push((v, Stored::moment(&state.exp_avg_sq)));
            entries.push((step, Stored::Step(state.step.to_le_bytes())));
            if let Some(master) = &state.master {
                entries.push((format!("master.{name}"), Stored::moment(master)));
            }
        }
    }
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(entries, Some(metadata), path).map_err(|e| match e {
        SafeTensorError::IoError(source) => OptimError::io(path, source),
        other => OptimError::file(path, format!("cannot serialise the optimizer state: {other}")),
    })
}

/// One parameter's checked state from the file.
struct Loaded<'data> {
    exp_avg: TensorView<'data>,
    exp_avg_sq: TensorView<'data>,
    step: i64,
    master: Option<TensorView<'data>>,
}

pub(super) fn load(opt: &mut AdamW, path: &Path) -> Result<(), OptimError> {
    let bytes = std::fs::read(path).map_err(|e| OptimError::io(path, e))?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| OptimError::file(path, format!("not a valid safetensors file: {e}")))?;

    let mut expected = HashSet::new();
    let mut loaded: Vec<Vec<Loaded>> = Vec::with_capacity(opt.groups.len());
    for (group, states) in opt.groups.iter().zip(&opt.states) {
        let mut group_loaded = Vec::with_capacity(states.len());
        for ((name, _), state) in group.params.iter().zip(states) {
            let [m, v, step] = names(name);
            let shape: Vec<usize> = state.exp_avg.size().iter().map(|&d| d as usize).collect();
            let dtype = dtype_of(state.exp_avg.kind());
            // A master the optimizer keeps must be in the file (its weights are the truth, the
            // parameter only their rounding); a file's master for a parameter kept without one is
            // unexpected.
            let master = match &state.master {
                Some(_) => {
                    let name = format!("master.{name}");
                    let view = checked(&file, path, &name, Dtype::F32, &shape)?;
                    expected.insert(name);
                    Some(view)
                }
                None => None,
            };
            group_loaded.push(Loaded {
                exp_avg: checked(&file, path, &m, dtype, &shape)?,
                exp_avg_sq: checked(&file, path, &v, dtype, &shape)?,
                step: step_count(&file, path, &step)?,
                master,
            });
            expected.extend([m, v, step]);
        }
        loaded.push(group_loaded);
    }
    let mut unexpected: Vec<&str> = file.names().into_iter().filter(|n| !expected.contains(*n)).collect();
    unexpected.sort_unstable();
    if let Some(name) = unexpected.first() {
        return Err(OptimError::tensor(path, name, "unexpected: this optimizer has no parameter state of that name"));
    }

    for (states, group_loaded) in opt.states.iter_mut().zip(loaded) {
        for (state, new) in states.iter_mut().zip(group_loaded) {
            copy_into(&mut state.exp_avg, &new.exp_avg);
            copy_into(&mut state.exp_avg_sq, &new.exp_avg_sq);
            state.step = new.step;
            if let (Some(master), Some(view)) = (state.master.as_mut(), &new.master) {
                copy_into(master, view);
            }
        }
    }
    Ok(())
}

/// The tensor `name`, checked to have `dtype` and `shape`.
fn checked<'data>(
    file: &SafeTensors<'data>,
    path: &Path,
    name: &str,
    dtype: Dtype,
    shape: &[usize],
) -> Result<TensorView<'data>, OptimError> {
    let view = file.tensor(name).map_err(|_| OptimError::tensor(path, name, "missing"))?;
    if view.dtype() != dtype {
        return Err(OptimError::tensor(path, name, format!("dtype {}, expected {dtype}", view.dtype())));
    }
    if view.shape() != shape {
        return Err(OptimError::tensor(path, name, format!("shape {:?}, expected {shape:?}", view.shape())));
    }
    Ok(view)
}

/// The step count stored as `name`: an I64 scalar, ≥ 0.
fn step_count(file: &SafeTensors, path: &Path, name: &str) -> Result<i64, OptimError> {
    let view = checked(file, path, name, Dtype::I64, &[])?;
    let bytes: [u8; 8] = view.data().try_into().map_err(|_| OptimError::tensor(path, name, "not 8 bytes"))?;
    let step = i64::from_le_bytes(bytes);
    if step < 0 {
        return Err(OptimError::tensor(path, name, format!("step count {step} is negative")));
    }
    Ok(step)
}

/// Copies a checked view into the state tensor of the same shape and dtype, on its device.
fn copy_into(state: &mut Tensor, view: &TensorView) {
    let dims: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
    let cpu = Tensor::from_data_size(view.data(), &dims, state.kind());
    state.copy_(&cpu);
}
