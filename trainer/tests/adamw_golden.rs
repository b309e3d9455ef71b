//! The optimizer module against PyTorch: `fixtures/adamw/adamw.safetensors`, written by
//! `fixtures/adamw/make_adamw.py` from `torch.optim.AdamW` (five steps, two groups, a parameter
//! without a gradient at step 0) and `torch.nn.utils.clip_grad_norm_`. On f32 CPU tensors both
//! must agree with torch bit for bit. Also: a save/load round trip mid-run is bit-identical to an
//! uninterrupted run, bad state files are errors naming the file and tensor, bf16 parameters step
//! in f32, and the schedule's values against their closed forms.

use rlvr_trainer::optim::{clip_grad_norm, lr_at, AdamW, AdamWConfig, OptimError, ParamGroup, Schedule};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

const STEPS: usize = 5;
/// The groups of make_adamw.py, in its order.
const GROUPS: [(&str, &[&str]); 2] =
    [("decay", &["layers.0.mlp.w", "layers.0.mlp.up"]), ("no_decay", &["layers.0.norm.weight", "head.bias"])];
const NO_GRAD_AT_STEP_0: &str = "layers.0.mlp.up";

struct Fixture(HashMap<String, Tensor>);

impl Fixture {
    fn load() -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/adamw/adamw.safetensors");
        Fixture(Tensor::read_safetensors(&path).unwrap().into_iter().collect())
    }

    fn get(&self, name: &str) -> &Tensor {
        self.0.get(name).unwrap_or_else(|| panic!("fixture has no `{name}`"))
    }

    fn scalar(&self, name: &str) -> f64 {
        self.get(name).double_value(&[])
    }

    fn lr(&self, k: usize) -> f64 {
        self.get("hp.lr").double_value(&[k as i64])
    }

    fn config(&self) -> AdamWConfig {
        let betas = self.get("hp.betas");
        AdamWConfig { betas: (betas.double_value(&[0]), betas.double_value(&[1])), eps: self.scalar("hp.eps") }
    }
}

/// A leaf parameter holding a copy of `value`, as a VarStore variable is.
fn leaf(value: &Tensor) -> Tensor {
    value.detach().copy().set_requires_grad(true)
}

/// An optimizer over fresh parameters with the values `value(name)`.
fn optimizer(fx: &Fixture, value: impl Fn(&str) -> Tensor) -> AdamW {
    let groups = GROUPS
        .iter()
        .map(|&(group, names)| ParamGroup {
            name: group.to_string(),
            params: names.iter().map(|&n| (n.to_string(), leaf(&value(n)))).collect(),
            lr_scale: fx.scalar(&format!("group.{group}.lr_scale")),
            weight_decay: fx.scalar(&format!("group.{group}.weight_decay")),
        })
        .collect();
    AdamW::new(groups, fx.config())
}

fn initial(fx: &Fixture) -> AdamW {
    optimizer(fx, |n| fx.get(&format!("init.{n}")).shallow_clone())
}

/// Sets `param`'s gradient to exactly `grad`: backward of Σ param·grad adds `grad` to a zeroed or
/// undefined gradient.
fn give_grad(param: &Tensor, grad: &Tensor) {
    (param * grad).sum(Kind::Float).backward();
}

/// Steps `k` of the fixture: zero the gradients, give each parameter its gradient, step.
fn run(opt: &mut AdamW, fx: &Fixture, steps: std::ops::Range<usize>) {
    for k in steps {
        opt.zero_grad();
        for group in opt.groups() {
            for (name, param) in &group.params {
                if let Some(grad) = fx.0.get(&format!("grad.{k}.{name}")) {
                    give_grad(param, grad);
                }
            }
        }
        opt.step(fx.lr(k));
    }
}

/// Asserts bitwise equality (same dtype, shape and every value).
fn assert_same(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.kind(), want.kind(), "{what}: dtype");
    assert_eq!(got.size(), want.size(), "{what}: shape");
    if !got.equal(want) {
        let diff = (got - want).abs().max().double_value(&[]);
        panic!("{what}: differs from the reference by up to {diff:e}");
    }
}

/// Every parameter and its state after fixture step `k`, bit for bit.
fn assert_matches_torch(opt: &AdamW, fx: &Fixture, k: usize) {
    for group in opt.groups() {
        for (name, param) in &group.params {
            let state = opt.state(name).unwrap();
            assert_same(&format!("step {k} {name}"), param, fx.get(&format!("after.{k}.param.{name}")));
            assert_same(
                &format!("step {k} exp_avg {name}"),
                &state.exp_avg,
                fx.get(&format!("after.{k}.exp_avg.{name}")),
            );
            let want_sq = fx.get(&format!("after.{k}.exp_avg_sq.{name}"));
            assert_same(&format!("step {k} exp_avg_sq {name}"), &state.exp_avg_sq, want_sq);
            assert_eq!(state.step as f64, fx.scalar(&format!("after.{k}.step.{name}")), "step {k} count of {name}");
        }
    }
}

#[test]
fn five_steps_match_torch_bitwise() {
    let fx = Fixture::load();
    let mut opt = initial(&fx);
    for k in 0..STEPS {
        run(&mut opt, &fx, k..k + 1);
        assert_matches_torch(&opt, &fx, k);
        if k == 0 {
            // No gradient: weight, moments and step count untouched, as in torch.
            let state = opt.state(NO_GRAD_AT_STEP_0).unwrap();
            assert_eq!(state.step, 0);
            let (_, param) = opt.groups()[0].params.iter().find(|(n, _)| n == NO_GRAD_AT_STEP_0).unwrap();
            assert_same("skipped parameter", param, fx.get(&format!("init.{NO_GRAD_AT_STEP_0}")));
        }
    }
    assert_eq!(opt.state("layers.0.mlp.w").unwrap().step, 5);
    assert_eq!(opt.state(NO_GRAD_AT_STEP_0).unwrap().step, 4);
}

/// Flat groups (`AdamW::flattened`) against torch: the same bits. The decay group has a parameter
/// without a gradient at step 0, so its step counts differ from then on and it steps parameter by
/// parameter through the flat views; the other group steps flat every time.
#[test]
fn flat_groups_match_torch_bitwise() {
    let fx = Fixture::load();
    let mut opt = initial(&fx).flattened();
    let params: Vec<Tensor> = opt.params().map(Tensor::shallow_clone).collect();
    // The parameters are views of one buffer per group, end to end.
    let (a, b) = (&params[2], &params[3]);
    assert_eq!(b.data_ptr() as usize, a.data_ptr() as usize + a.numel() * 4, "laid end to end");
    for k in 0..STEPS {
        run(&mut opt, &fx, k..k + 1);
        assert_matches_torch(&opt, &fx, k);
    }
    assert_eq!(opt.flat_steps(), STEPS as u64, "the no-decay group stepped flat, the decay group did not");
    // Its gradients now live in its flat gradient buffer, where backward accumulates them.
    let (ga, gb) = (a.grad(), b.grad());
    assert_eq!(gb.data_ptr() as usize, ga.data_ptr() as usize + ga.numel() * 4, "gradients end to end");
}

/// Every parameter with a gradient at every step (zero where the fixture has none): the flat step
/// of both groups gives the per-parameter step's bits, state included, and survives a save and a
/// load into a fresh flat optimizer; a variable re-pointed away from its buffer falls back to the
/// per-parameter step, still with the same bits.
#[test]
fn flat_steps_equal_per_parameter_steps() {
    let fx = Fixture::load();
    let (mut plain, mut flat) = (initial(&fx), initial(&fx).flattened());
    let step = |opt: &mut AdamW, k: usize| {
        opt.zero_grad();
        for group in opt.groups() {
            for (name, param) in &group.params {
                let grad =
                    fx.0.get(&format!("grad.{k}.{name}")).map_or_else(|| param.zeros_like(), |g| g.shallow_clone());
                give_grad(param, &grad);
            }
        }
        opt.step(fx.lr(k));
    };
    let same = |what: &str, a: &AdamW, b: &AdamW| {
        for (ga, gb) in a.groups().iter().zip(b.groups()) {
            for ((name, pa), (_, pb)) in ga.params.iter().zip(&gb.params) {
                let (sa, sb) = (a.state(name).unwrap(), b.state(name).unwrap());
                assert_same(&format!("{what}: {name}"), pb, pa);
                assert_same(&format!("{what}: exp_avg {name}"), &sb.exp_avg, &sa.exp_avg);
                assert_same(&format!("{what}: exp_avg_sq {name}"), &sb.exp_avg_sq, &sa.exp_avg_sq);
                assert_eq!(sa.step, sb.step);
            }
        }
    };
    for k in 0..3 {
        step(&mut plain, k);
        step(&mut flat, k);
        same(&format!("step {k}"), &plain, &flat);
    }
    assert_eq!(flat.flat_steps(), 6);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flat.safetensors");
    flat.save(&path).unwrap();
    let mut again = optimizer(&fx, |n| {
        let (_, p) = flat.groups().iter().flat_map(|g| &g.params).find(|(name, _)| name == n).unwrap();
        p.detach().copy()
    })
    .flattened();
    again.load(&path).unwrap();
    for k in 3..STEPS {
        step(&mut plain, k);
        step(&mut again, k);
        same(&format!("reloaded, step {k}"), &plain, &again);
    }
    assert_eq!(again.flat_steps(), 4);
    // A variable re-pointed elsewhere (a dtype cast, a replaced tensor) takes its group off the
    // flat path; the values stay right.
    for opt in [&mut plain, &mut again] {
        let (_, p) = &opt.groups()[1].params[0];
        tch::no_grad(|| p.shallow_clone().set_data(&p.copy()));
    }
    step(&mut plain, 0);
    step(&mut again, 0);
    same("re-pointed", &plain, &again);
    assert_eq!(again.flat_steps(), 5, "only the untouched group stepped flat");
}

#[test]
fn save_load_midway_is_bit_identical() {
    let fx = Fixture::load();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("optimizer.safetensors");

    let mut straight = initial(&fx);
    run(&mut straight, &fx, 0..2);
    straight.save(&path).unwrap();
    let weights: HashMap<String, Tensor> =
        straight.groups().iter().flat_map(|g| g.params.iter().map(|(n, p)| (n.clone(), p.detach().copy()))).collect();

    // A new process: same weights (the model checkpoint's job), state from the file only.
    let mut resumed = optimizer(&fx, |n| weights[n].shallow_clone());
    resumed.load(&path).unwrap();
    assert_eq!(resumed.state(NO_GRAD_AT_STEP_0).unwrap().step, 1);

    run(&mut straight, &fx, 2..STEPS);
    run(&mut resumed, &fx, 2..STEPS);
    for (group_a, group_b) in straight.groups().iter().zip(resumed.groups()) {
        for ((name, a), (_, b)) in group_a.params.iter().zip(&group_b.params) {
            let (sa, sb) = (straight.state(name).unwrap(), resumed.state(name).unwrap());
            assert_same(&format!("resumed {name}"), b, a);
            assert_same(&format!("resumed exp_avg {name}"), &sb.exp_avg, &sa.exp_avg);
            assert_same(&format!("resumed exp_avg_sq {name}"), &sb.exp_avg_sq, &sa.exp_avg_sq);
            assert_eq!(sb.step, sa.step, "resumed step count of {name}");
        }
    }
    assert_matches_torch(&resumed, &fx, STEPS - 1);
}

/// Leaf parameters with the fixture's clipping gradients.
fn clip_params(fx: &Fixture) -> Vec<Tensor> {
    (0..3)
        .map(|i| {
            let grad = fx.get(&format!("clip.grad.{i}"));
            let param = leaf(&grad.zeros_like());
            give_grad(&param, grad);
            param
        })
        .collect()
}

#[test]
fn clip_grad_norm_matches_torch() {
    let fx = Fixture::load();
    for case in ["active", "inactive"] {
        let params = clip_params(&fx);
        let norm = clip_grad_norm(&params, fx.scalar(&format!("clip.{case}.max_norm")));
        assert_eq!(norm, fx.scalar(&format!("clip.{case}.norm")), "{case}: norm");
        for (i, param) in params.iter().enumerate() {
            assert_same(&format!("{case}: grad {i}"), &param.grad(), fx.get(&format!("clip.{case}.grad.{i}")));
        }
    }
    assert!(fx.scalar("clip.active.norm") > fx.scalar("clip.active.max_norm"), "the active case must clip");
}

#[test]
fn clip_grad_norm_edge_cases() {
    let fx = Fixture::load();
    // A parameter without a gradient is ignored.
    let mut params = clip_params(&fx);
    params.push(leaf(&Tensor::ones([4], (Kind::Float, tch::Device::Cpu))));
    let norm = clip_grad_norm(&params, 1e3);
    assert_eq!(norm, fx.scalar("clip.inactive.norm"));
    assert_eq!(clip_grad_norm(&params[3..], 1.0), 0.0, "no gradients at all");

    // A non-finite norm is returned and nothing is scaled.
    for bad in [f64::NAN, f64::INFINITY] {
        let params = clip_params(&fx);
        let _ = params[1].grad().narrow(0, 2, 1).fill_(bad);
        let before: Vec<Tensor> = params.iter().map(|p| p.grad().copy()).collect();
        let norm = clip_grad_norm(&params, 1.0);
        assert!(!norm.is_finite() && (norm.is_nan() == bad.is_nan()), "norm {norm} for a {bad} gradient");
        for (param, before) in params.iter().zip(&before) {
            assert!(param.grad().isnan().eq_tensor(&before.isnan()).all().int64_value(&[]) == 1);
            assert!(param.grad().nan_to_num(0.0, None, None).equal(&before.nan_to_num(0.0, None, None)));
        }
    }
}

#[test]
fn bf16_parameters_keep_f32_state_and_round_once() {
    let fx = Fixture::load();
    let config = fx.config();
    let init = fx.get("init.layers.0.mlp.w").to_kind(Kind::BFloat16);
    let group = |param: Tensor| ParamGroup {
        name: "all".into(),
        params: vec![("w".into(), param)],
        lr_scale: 1.0,
        weight_decay: 0.1,
    };
    let mut bf16 = AdamW::new(vec![group(leaf(&init))], config);
    let mut f32 = AdamW::new(vec![group(leaf(&init.to_kind(Kind::Float)))], config);
    assert_eq!(bf16.state("w").unwrap().exp_avg.kind(), Kind::Float);
    for k in 0..STEPS {
        let grad = fx.get(&format!("grad.{k}.layers.0.mlp.w")).to_kind(Kind::BFloat16);
        let (p16, p32) = (bf16.params().next().unwrap().shallow_clone(), f32.params().next().unwrap().shallow_clone());
        // The f32 reference starts each step from the rounded weight, as the bf16 path does.
        tch::no_grad(|| p32.shallow_clone().copy_(&p16));
        bf16.zero_grad();
        f32.zero_grad();
        give_grad(&p16, &grad);
        give_grad(&p32, &grad.to_kind(Kind::Float));
        bf16.step(fx.lr(k));
        f32.step(fx.lr(k));
        assert_same(&format!("bf16 step {k}"), &p16, &p32.to_kind(Kind::BFloat16));
        let (s16, s32) = (bf16.state("w").unwrap(), f32.state("w").unwrap());
        assert_same(&format!("bf16 exp_avg step {k}"), &s16.exp_avg, &s32.exp_avg);
        assert_same(&format!("bf16 exp_avg_sq step {k}"), &s16.exp_avg_sq, &s32.exp_avg_sq);
    }
    // Flat, with masters kept (what training uses), in either order: the same bits as per tensor.
    let masters = |opt: AdamW| opt.with_master_weights();
    let runs = [
        masters(AdamW::new(vec![group(leaf(&init))], config)),
        masters(AdamW::new(vec![group(leaf(&init))], config).flattened()),
        masters(AdamW::new(vec![group(leaf(&init))], config)).flattened(),
    ];
    let mut runs = runs.into_iter().collect::<Vec<_>>();
    for k in 0..STEPS {
        let grad = fx.get(&format!("grad.{k}.layers.0.mlp.w")).to_kind(Kind::BFloat16);
        for opt in &mut runs {
            opt.zero_grad();
            give_grad(opt.params().next().unwrap(), &grad);
            opt.step(fx.lr(k) * 1e-3);
        }
    }
    let master = |opt: &AdamW| opt.state("w").unwrap().master.as_ref().unwrap().shallow_clone();
    for (n, opt) in runs.iter().enumerate().skip(1) {
        assert_same(&format!("flat run {n}: weight"), opt.params().next().unwrap(), runs[0].params().next().unwrap());
        assert_same(&format!("flat run {n}: master"), &master(opt), &master(&runs[0]));
        assert_eq!(opt.flat_steps(), STEPS as u64, "flat run {n}");
    }
    // The f32 state survives a round trip.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bf16.safetensors");
    bf16.save(&path).unwrap();
    let mut again = AdamW::new(vec![group(leaf(&init))], config);
    again.load(&path).unwrap();
    assert_same(
        "bf16 reloaded exp_avg_sq",
        &again.state("w").unwrap().exp_avg_sq,
        &bf16.state("w").unwrap().exp_avg_sq,
    );
}

/// A state file saved after one step, and its tensors.
fn saved_state(fx: &Fixture, dir: &Path) -> (AdamW, PathBuf, Vec<(String, Tensor)>) {
    let mut opt = initial(fx);
    run(&mut opt, fx, 0..1);
    let path = dir.join("good.safetensors");
    opt.save(&path).unwrap();
    let tensors = Tensor::read_safetensors(&path).unwrap();
    (opt, path, tensors)
}

/// Loads `path` into `opt`, expects an error whose message names the file and `tensor`, and checks
/// that the state is unchanged.
fn assert_load_fails(opt: &mut AdamW, path: &Path, tensor: Option<&str>) -> OptimError {
    let before: Vec<Tensor> =
        opt.groups()[0].params.iter().map(|(n, _)| opt.state(n).unwrap().exp_avg.copy()).collect();
    let err = opt.load(path).expect_err("a bad file must not load");
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "`{message}` does not name the file");
    if let Some(tensor) = tensor {
        assert!(message.contains(&format!("`{tensor}`")), "`{message}` does not name `{tensor}`");
        assert!(matches!(&err, OptimError::Tensor { tensor: t, .. } if t == tensor), "{err:?}");
    }
    for ((name, _), before) in opt.groups()[0].params.iter().zip(&before) {
        assert_same(&format!("{name} after a failed load"), &opt.state(name).unwrap().exp_avg, before);
    }
    err
}

#[test]
fn bad_state_files_are_errors_naming_file_and_tensor() {
    let fx = Fixture::load();
    let dir = tempfile::tempdir().unwrap();
    let (mut opt, _, tensors) = saved_state(&fx, dir.path());
    let write = |file: &str, tensors: &[(String, Tensor)]| {
        let path = dir.path().join(file);
        Tensor::write_safetensors(tensors, &path).unwrap();
        path
    };
    // Every tensor is there and right: loads.
    opt.load(&write("rewritten.safetensors", &tensors)).unwrap();

    let missing = "exp_avg_sq.head.bias";
    let without: Vec<_> = tensors.iter().filter(|(n, _)| n != missing).map(|(n, t)| (n.clone(), t.copy())).collect();
    assert_load_fails(&mut opt, &write("missing.safetensors", &without), Some(missing));

    let reshaped = "exp_avg.layers.0.mlp.w";
    let wrong: Vec<_> =
        tensors.iter().map(|(n, t)| (n.clone(), if n == reshaped { t.reshape([3, 4]) } else { t.copy() })).collect();
    let err = assert_load_fails(&mut opt, &write("shape.safetensors", &wrong), Some(reshaped));
    assert!(err.to_string().contains("[3, 4]"), "{err}");

    let step = "step.layers.0.norm.weight";
    let wrong: Vec<_> =
        tensors.iter().map(|(n, t)| (n.clone(), if n == step { t.to_kind(Kind::Float) } else { t.copy() })).collect();
    assert_load_fails(&mut opt, &write("dtype.safetensors", &wrong), Some(step));

    let extra = "exp_avg.layers.1.mlp.w";
    let mut more: Vec<_> = tensors.iter().map(|(n, t)| (n.clone(), t.copy())).collect();
    more.push((extra.to_string(), Tensor::zeros([4, 3], (Kind::Float, tch::Device::Cpu))));
    assert_load_fails(&mut opt, &write("extra.safetensors", &more), Some(extra));

    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"this is not a safetensors file at all").unwrap();
    assert!(matches!(assert_load_fails(&mut opt, &garbage, None), OptimError::File { .. }));

    let absent = dir.path().join("absent.safetensors");
    assert!(matches!(assert_load_fails(&mut opt, &absent, None), OptimError::Io { .. }));
}

#[test]
fn schedule_values_follow_their_closed_forms() {
    let close = |got: f64, want: f64| assert!((got - want).abs() <= 1e-15 * want.abs().max(1e-300), "{got} vs {want}");
    let base = 3e-4;
    // Warmup 10 of 111 steps: 101 decay steps, so step 10 + 100·p has progress p.
    let lr = |schedule, step| lr_at(schedule, base, step, 111, 10, 0.1);
    for schedule in [Schedule::Constant, Schedule::Cosine] {
        close(lr(schedule, 0), base / 10.0);
        close(lr(schedule, 4), base * 5.0 / 10.0);
        close(lr(schedule, 9), base);
        close(lr(schedule, 10), base);
    }
    close(lr(Schedule::Constant, 110), base);
    close(lr(Schedule::Constant, 1000), base);
    // base·(0.1 + 0.9·(1 + cos πp)/2) at p = ¼, ½, 1, and past the end.
    close(lr(Schedule::Cosine, 35), base * (0.1 + 0.9 * (1.0 + std::f64::consts::FRAC_1_SQRT_2) / 2.0));
    close(lr(Schedule::Cosine, 60), base * 0.55);
    close(lr(Schedule::Cosine, 110), base * 0.1);
    close(lr(Schedule::Cosine, 500), base * 0.1);
    // No warmup: the first step runs at base_lr; one decay step stays at base_lr.
    close(lr_at(Schedule::Cosine, base, 0, 5, 0, 0.0), base);
    close(lr_at(Schedule::Cosine, base, 2, 5, 0, 0.0), base / 2.0);
    close(lr_at(Schedule::Cosine, base, 4, 5, 0, 0.0), 0.0);
    close(lr_at(Schedule::Cosine, base, 3, 4, 3, 0.0), base);

    assert_eq!(serde_json::from_str::<Schedule>("\"cosine\"").unwrap(), Schedule::Cosine);
    assert_eq!(serde_json::to_string(&Schedule::Constant).unwrap(), "\"constant\"");
    assert!(serde_json::from_str::<Schedule>("\"Cosine\"").is_err());
}
