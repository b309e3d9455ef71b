//! The MTP module (docs/model.md §2.10): its variables are the checkpoint's MTP tensors, it loads
//! through the checkpoint loader, and its logits, loss and gradients match
//! tests/fixtures/mtp_reference.py (plain PyTorch, own forward) on `tests/fixtures/tiny-mtp`
//! (the tiny preset, 1 MTP layer, BF16-stored random weights): logits to 1e-5 absolute, losses to
//! 1e-5 relative, gradients to 1e-5 of each tensor's largest entry.

mod support;

use rlvr_model::checkpoint::load_varstore;
use rlvr_model::spec::{main_tensors, mtp_tensors};
use rlvr_model::{AttentionMode, DeepseekV32, ForwardOptions, ModelConfig};
use std::collections::{BTreeMap, HashMap};
use support::{fixture, max_abs};
use tch::{nn::VarStore, Device, Tensor};

const REL: f64 = 1e-5;

fn names_and_shapes(vs: &VarStore) -> BTreeMap<String, Vec<i64>> {
    vs.variables().into_iter().map(|(k, v)| (k, v.size())).collect()
}

#[test]
fn mtp_variables_are_the_checkpoints_mtp_tensors() {
    let cfg = ModelConfig::from_path(&fixture("../../presets/tiny")).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let model = DeepseekV32::with_mtp(&vs.root(), &cfg).unwrap();
    assert_eq!(model.mtp.len(), 1);
    let want: BTreeMap<String, Vec<i64>> = main_tensors(&cfg)
        .into_iter()
        .chain(mtp_tensors(&cfg))
        .map(|t| (t.name, t.shape.iter().map(|&d| d as i64).collect()))
        .collect();
    assert_eq!(names_and_shapes(&vs), want);
    // Its indexer is listed with the main ones, and the plain constructor builds no MTP.
    let names = model.indexer_parameter_names();
    assert!(names.iter().all(|n| want.contains_key(n)) && names.len() == 5 * 4);
    let plain = VarStore::new(Device::Cpu);
    let _ = DeepseekV32::new(&plain.root(), &cfg).unwrap();
    assert_eq!(names_and_shapes(&plain).len(), main_tensors(&cfg).len());
}

fn load_mtp() -> (VarStore, DeepseekV32) {
    tch::set_num_threads(2);
    let dir = fixture("tiny-mtp");
    let cfg = ModelConfig::from_path(&dir).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let model = DeepseekV32::with_mtp(&vs.root(), &cfg).unwrap();
    let report = load_varstore(&dir, &cfg, &vs, true).unwrap();
    assert_eq!(report.loaded, vs.variables().len());
    (vs, model)
}

fn assert_rel(what: &str, got: &Tensor, want: &Tensor) {
    let (g, w) = (got.double_value(&[]), want.double_value(&[]));
    let rel = (g - w).abs() / w.abs();
    println!("{what}: relative error {rel:.2e}");
    assert!(rel <= REL, "{what}: got {g}, want {w}");
}

#[test]
fn mtp_logits_loss_and_gradients_match_pytorch() {
    let (vs, model) = load_mtp();
    let r: HashMap<String, Tensor> =
        Tensor::read_safetensors(fixture("tiny-mtp").join("mtp_reference.safetensors")).unwrap().into_iter().collect();
    let tokens = &r["tokens"];
    let out = model.run(tokens, ForwardOptions { mtp: true, ..ForwardOptions::new(AttentionMode::Dense) });
    assert_eq!(out.mtp_logits.len(), 1);
    let err = max_abs(&out.mtp_logits[0], &r["mtp_logits"]);
    println!("mtp logits: max abs error {err:.2e}");
    assert!(err <= 1e-5, "{err}");
    assert_rel("lm_loss", &out.lm_loss(tokens), &r["lm_loss"]);
    let loss = out.mtp_loss(tokens).expect("one MTP depth ran");
    assert_rel("mtp_loss", &loss, &r["mtp_loss"]);
    loss.backward();
    let vars = vs.variables();
    let mut worst: f64 = 0.0;
    for (key, want) in r.iter().filter(|(k, _)| k.starts_with("grad.")) {
        let name = &key["grad.".len()..];
        let g = vars[name].grad();
        let ratio = max_abs(&g, want) / want.abs().max().double_value(&[]);
        assert!(ratio <= REL, "{name}: error {ratio:.2e} of max |grad|");
        worst = worst.max(ratio);
    }
    println!("gradients: worst error / max |grad| = {worst:.2e}");
    // h is taken before the final norm: the main head's norm and weight get nothing.
    for name in ["model.norm.weight", "lm_head.weight"] {
        assert!(!vars[name].grad().defined(), "{name} reached by the MTP loss");
    }
}

#[test]
fn mtp_runs_only_when_asked() {
    let (_, model) = load_mtp();
    let tokens = Tensor::from_slice(&[5i64, 9, 11, 3]).unsqueeze(0);
    let out = tch::no_grad(|| model.run(&tokens, ForwardOptions::new(AttentionMode::Sparse)));
    assert!(out.mtp_logits.is_empty() && out.mtp_loss(&tokens).is_none());
    assert_eq!(out.trace.routings.len(), 3, "main layers only");
    let out =
        tch::no_grad(|| model.run(&tokens, ForwardOptions { mtp: true, ..ForwardOptions::new(AttentionMode::Sparse) }));
    assert_eq!(out.mtp_logits[0].size(), [1, 3, 512]);
    assert_eq!(out.trace.routings.len(), 4, "the MTP layer's routing follows");
}

#[test]
#[should_panic(expected = "built without it")]
fn mtp_on_a_model_without_it_is_refused() {
    let cfg = ModelConfig::from_path(&fixture("tiny-mtp")).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let model = DeepseekV32::new(&vs.root(), &cfg).unwrap();
    let tokens = Tensor::from_slice(&[5i64, 9, 11]).unsqueeze(0);
    let _ = model.run(&tokens, ForwardOptions { mtp: true, ..ForwardOptions::new(AttentionMode::Dense) });
}
