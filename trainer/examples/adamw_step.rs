//! Time of one AdamW step over a preset's parameters, parameter by parameter and with flat groups
//! (`AdamW::flattened`, what training uses): each on its own copy of the model (random init,
//! random gradients), warmed up, then `--steps` timed steps; the two must end bit-identical.
//! Prints one JSON line per mode; `--shapes PATH` also writes the parameters' groups and shapes for
//! `benches/optim/torch_side.py`, which times torch's AdamW on the same shapes.
//!
//! `cargo run --release -p rlvr-trainer --example adamw_step -- [--preset small] [--steps 20]
//!  [--threads 2] [--dtype f32|bf16] [--shapes PATH]`

use anyhow::{bail, Context, Result};
use rlvr_model::{DeepseekV32, ModelConfig};
use rlvr_trainer::optim::{AdamW, AdamWConfig, ParamGroup};
use rlvr_trainer::recipe::find_preset;
use std::path::PathBuf;
use std::time::Instant;
use tch::{nn::VarStore, Device, Kind, Tensor};

struct Args {
    preset: String,
    steps: usize,
    threads: i32,
    bf16: bool,
    shapes: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args { preset: "small".into(), steps: 20, threads: 2, bf16: false, shapes: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| anyhow::anyhow!("{flag} {value}: {e}");
        match flag.as_str() {
            "--preset" => a.preset = value,
            "--steps" => a.steps = value.parse().map_err(|e| bad(&e))?,
            "--threads" => a.threads = value.parse().map_err(|e| bad(&e))?,
            "--dtype" => {
                a.bf16 = match value.as_str() {
                    "f32" => false,
                    "bf16" => true,
                    _ => bail!("--dtype {value}: must be f32 or bf16"),
                }
            }
            "--shapes" => a.shapes = Some(PathBuf::from(value)),
            _ => bail!("unknown flag {flag}"),
        }
    }
    Ok(a)
}

/// The preset's parameters (random init) in the trainer's two groups, each with a random gradient.
fn groups(cfg: &ModelConfig, bf16: bool) -> Result<(VarStore, Vec<ParamGroup>)> {
    tch::manual_seed(0);
    let mut vs = VarStore::new(Device::Cpu);
    DeepseekV32::new(&vs.root(), cfg)?;
    if bf16 {
        vs.bfloat16();
    }
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let loss = vars.iter().map(|(_, p)| (p * p.randn_like()).sum(Kind::Float)).reduce(|a, b| a + b);
    loss.context("a model without parameters")?.backward();
    let (matrices, vectors): (Vec<_>, Vec<_>) = vars.into_iter().partition(|(_, t)| t.dim() >= 2);
    let groups = vec![
        ParamGroup { name: "decay".into(), params: matrices, lr_scale: 1.0, weight_decay: 0.1 },
        ParamGroup { name: "no_decay".into(), params: vectors, lr_scale: 1.0, weight_decay: 0.0 },
    ];
    Ok((vs, groups))
}

fn median_ms(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2] * 1e3
}

fn main() -> Result<()> {
    let args = parse_args()?;
    tch::set_num_threads(args.threads);
    let path = find_preset(&args.preset).unwrap_or_else(|| PathBuf::from(&args.preset));
    let cfg = ModelConfig::from_path(&path).with_context(|| format!("no preset or config `{}`", args.preset))?;
    let config = AdamWConfig::default();
    let mut results = Vec::new();
    for flat in [true, false] {
        let (vs, groups) = groups(&cfg, args.bf16)?;
        if let (Some(shapes), true) = (&args.shapes, flat) {
            let json: Vec<serde_json::Value> = groups
                .iter()
                .map(|g| {
                    let shapes: Vec<Vec<i64>> = g.params.iter().map(|(_, p)| p.size()).collect();
                    serde_json::json!({ "weight_decay": g.weight_decay, "shapes": shapes })
                })
                .collect();
            std::fs::write(shapes, serde_json::to_string(&json)?)?;
        }
        let tensors: usize = groups.iter().map(|g| g.params.len()).sum();
        let params: i64 = groups.iter().flat_map(|g| &g.params).map(|(_, p)| p.numel() as i64).sum();
        let opt = AdamW::new(groups, config);
        let opt = if flat { opt.flattened() } else { opt };
        let mut opt = opt.with_master_weights();
        for _ in 0..2 {
            opt.step(1e-4);
        }
        let mut times = Vec::with_capacity(args.steps);
        for _ in 0..args.steps {
            let start = Instant::now();
            opt.step(1e-4);
            times.push(start.elapsed().as_secs_f64());
        }
        let mode = if flat { "flat" } else { "per_tensor" };
        println!(
            "{}",
            serde_json::json!({
                "mode": mode, "tensors": tensors, "params": params, "dtype": if args.bf16 { "bf16" } else { "f32" },
                "step_ms": median_ms(times), "flat_group_steps": opt.flat_steps(),
            })
        );
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        results.push(vars);
    }
    let same = results[0].iter().zip(&results[1]).all(|((_, a), (_, b))| a.equal(b));
    if !same {
        bail!("the flat and per-tensor steps ended with different weights");
    }
    Ok(())
}
