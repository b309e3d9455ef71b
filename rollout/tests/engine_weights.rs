//! Policy updates: new weights (the tiny-sharded fixture's, same architecture as tiny-sparse) are
//! refused on a checksum or shape mismatch with nothing changed; a correct update queued
//! mid-generation lands between steps, bumps the version, is recorded on the tokens after it, and
//! afterwards the engine samples from exactly the new model.

mod support;

use rlvr_model::AttentionMode;
use rlvr_rollout::engine::{checksum_of, EngineError, Request};
use support::{engine, ids, load, max_diff, prompt, reference, request, run_all, sampled, teacher_forced};
use tch::Tensor;

/// tiny-sharded's weights as the trainer would hand them over: (name, tensor), f32.
fn new_weights() -> Vec<(String, Tensor)> {
    let (_, vs) = load("tiny-sharded");
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// The fixture's greedy request.
fn greedy(name: &str) -> (Request, Vec<i64>) {
    let r = reference(name);
    (sampled(request(&ids(&r, "greedy_prompt"), 32, 0, 0), |s| s.temperature = 0.0), ids(&r, "greedy_tokens"))
}

#[test]
fn the_checksum_covers_names_values_dtypes_and_shapes_but_not_order() {
    let w = new_weights();
    let sum = checksum_of(&w);
    let reversed: Vec<(String, Tensor)> = w.iter().rev().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
    assert_eq!(checksum_of(&reversed), sum);
    let edit = |f: &dyn Fn(&str, &Tensor) -> Tensor| -> u64 {
        let changed: Vec<(String, Tensor)> = w.iter().map(|(n, t)| (n.clone(), f(n, t))).collect();
        checksum_of(&changed)
    };
    let target = "model.norm.weight";
    let nudged = edit(&|n, t| if n == target { t + 1e-6 } else { t.shallow_clone() });
    let as_double = edit(&|n, t| if n == target { t.to_kind(tch::Kind::Double) } else { t.shallow_clone() });
    let reshaped = edit(&|n, t| if n == target { t.view([1, -1]) } else { t.shallow_clone() });
    for other in [nudged, as_double, reshaped] {
        assert_ne!(other, sum);
    }
    let renamed: Vec<(String, Tensor)> =
        w.iter().map(|(n, t)| (n.replace("model.norm", "model.nrm"), t.shallow_clone())).collect();
    assert_ne!(checksum_of(&renamed), sum);
}

#[test]
fn mismatched_updates_are_refused_and_change_nothing() {
    let mut eng = engine("tiny-sparse", 2, 512);
    let (req, want) = greedy("tiny-sparse");
    let w = new_weights();
    let err = eng.update_weights(&w, checksum_of(&w) ^ 1).unwrap_err();
    assert!(matches!(err, EngineError::ChecksumMismatch { .. }), "{err}");
    let partial = &w[1..];
    let err = eng.update_weights(partial, checksum_of(partial)).unwrap_err();
    assert!(err.to_string().contains(&format!("missing `{}`", w[0].0)), "{err}");
    let mut bad_shape: Vec<(String, Tensor)> = w.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
    bad_shape[0].1 = bad_shape[0].1.flatten(0, -1).narrow(0, 0, 1);
    let err = eng.update_weights(&bad_shape, checksum_of(&bad_shape)).unwrap_err();
    assert!(err.to_string().contains("has shape"), "{err}");
    let out = run_all(&mut eng, vec![req]);
    assert_eq!(eng.version(), 0);
    assert_eq!(out[0].samples[0].ids(), want, "still tiny-sparse's greedy tokens");
    assert!(out[0].samples[0].tokens.iter().all(|t| t.version == 0));
}

#[test]
fn an_update_queued_mid_generation_lands_between_steps() {
    let mut eng = engine("tiny-sparse", 3, 512);
    let running = eng.submit(request(&prompt(7, 2), 20, 3, 0)).unwrap();
    for _ in 0..5 {
        eng.step();
    }
    let w = new_weights();
    eng.update_weights(&w, checksum_of(&w)).unwrap();
    drop(w); // the update is a snapshot: the caller's tensors may go
    assert_eq!(eng.version(), 0, "queued, not applied");
    let mut outs = eng.step();
    assert_eq!(eng.version(), 1);
    outs.extend(eng.run_until_done());
    let sample = &outs.iter().find(|o| o.id == running).unwrap().samples[0];
    let versions: Vec<u64> = sample.tokens.iter().map(|t| t.version).collect();
    assert_eq!(versions, [vec![0; 5], vec![1; 15]].concat(), "five tokens before the update");
    assert_eq!(sample.versions(), Some((0, 1)));
    // From now on the engine samples from the new model.
    let (sharded, _vs) = load("tiny-sharded");
    let (req, want) = greedy("tiny-sharded");
    let fresh = run_all(&mut eng, vec![req, request(&prompt(15, 4), 30, 8, 1)]);
    assert_eq!(fresh[0].samples[0].ids(), want, "tiny-sharded's greedy tokens");
    let s = &fresh[1].samples[0];
    let seq: Vec<i64> = prompt(15, 4).into_iter().chain(s.ids()).collect();
    let tf = teacher_forced(&sharded, &seq, AttentionMode::Sparse);
    let d = max_diff(&s.logprobs(), &tf[14..]);
    assert!(d <= 1e-4, "engine after the update vs the new model: {d:e}");
    assert!(s.tokens.iter().all(|t| t.version == 1));
}
