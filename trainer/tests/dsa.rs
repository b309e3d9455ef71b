//! The DSA training stages' gradient routing (docs/model.md §3.2): in sparse training the LM and MTP
//! losses give every indexer parameter zero gradient, and the indexer KL gives every other
//! parameter zero gradient; both reach their own side.

use rlvr_model::ModelConfig;
use rlvr_trainer::data::write_arithmetic_tokenizer;
use rlvr_trainer::policy::{Policy, Source};
use rlvr_trainer::stages::lm::sparse_losses;
use std::collections::HashSet;
use std::path::Path;
use tch::{Device, Kind, Tensor};

fn tiny_policy(dir: &Path) -> Policy {
    let preset = Path::new(env!("CARGO_MANIFEST_DIR")).join("../presets/tiny");
    let config = ModelConfig::from_path(&preset).expect("tiny preset");
    write_arithmetic_tokenizer(dir).expect("tokenizer");
    Policy::build(&Source::Init { config, seed: 3 }, dir, true, Device::Cpu, rlvr_model::Dtype::F32).expect("policy")
}

/// Sum of |grad| per named parameter (0 when the gradient is undefined).
fn grad_mass(policy: &Policy) -> Vec<(String, f64)> {
    policy
        .named()
        .into_iter()
        .map(|(n, t)| {
            let g = t.grad();
            (n, if g.defined() { g.abs().sum(Kind::Double).double_value(&[]) } else { 0.0 })
        })
        .collect()
}

fn zero_grads(policy: &Policy) {
    for (_, t) in policy.named() {
        let mut g = t.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
}

#[test]
fn sparse_training_routes_each_loss_to_its_own_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let policy = tiny_policy(dir.path());
    assert!(!policy.model.mtp.is_empty(), "the tiny preset has an MTP layer");
    let indexer: HashSet<String> = policy.model.indexer_parameter_names().into_iter().collect();
    assert!(indexer.iter().any(|n| n.starts_with(&format!("model.layers.{}.", policy.config.num_hidden_layers))));
    policy.set_trainable(|_| true);
    // 48 tokens > index_topk = 16: the selection is a strict subset for most rows.
    let tokens = Tensor::randint_low(3, 20, [2, 48], (Kind::Int64, Device::Cpu)); // (B, T)

    let losses = sparse_losses(&policy, &tokens);
    (losses.lm + losses.mtp.expect("MTP loss") * 0.3).backward();
    let mut rest_reached = 0;
    for (name, mass) in grad_mass(&policy) {
        if indexer.contains(&name) {
            assert_eq!(mass, 0.0, "the LM/MTP loss reached indexer parameter {name}");
        } else if mass > 0.0 {
            rest_reached += 1;
        }
    }
    assert!(rest_reached > 20, "the LM loss reached only {rest_reached} parameters");

    zero_grads(&policy);
    let losses = sparse_losses(&policy, &tokens);
    losses.indexer.backward();
    for (name, mass) in grad_mass(&policy) {
        if indexer.contains(&name) {
            assert!(mass > 0.0, "the indexer loss did not reach {name}");
        } else {
            assert_eq!(mass, 0.0, "the indexer loss reached non-indexer parameter {name}");
        }
    }
}
