//! Policy updates: new weights (the tiny-sharded fixture's, same architecture as tiny-sparse) are
//! refused on a checksum or shape mismatch with nothing changed; a correct update queued
//! mid-generation lands between steps, bumps the version, is recorded on the tokens after it, and
//! afterwards the engine samples from exactly the new model. The same weights as a mapped
//! safetensors file hash as the tensors do (every float dtype) and land the same way. In-process
//! weights (`set_weights`, no checksum) go straight in when the engine is idle, else queue.

mod support;

use rlvr_model::AttentionMode;
use rlvr_rollout::engine::{checksum_of, EngineError, MappedWeights, Request};
use std::fs::File;
use std::path::Path;
use support::{engine, ids, load, max_diff, prompt, reference, request, run_all, sampled, teacher_forced};
use tch::{Kind, Tensor};

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

/// `tensors` written as the safetensors file `dir/name`, opened.
fn written(tensors: &[(String, Tensor)], dir: &Path, name: &str) -> File {
    let path = dir.join(name);
    Tensor::write_safetensors(tensors, &path).unwrap();
    File::open(path).unwrap()
}

#[test]
fn a_mapped_file_hashes_as_its_tensors_in_every_float_dtype() {
    let dir = tempfile::tempdir().unwrap();
    for kind in [Kind::Float, Kind::BFloat16, Kind::Half, Kind::Double] {
        let w: Vec<(String, Tensor)> = new_weights().into_iter().map(|(n, t)| (n, t.to_kind(kind))).collect();
        let file = written(&w, dir.path(), &format!("{kind:?}.safetensors"));
        assert!(MappedWeights::open(&file, checksum_of(&w)).is_ok(), "{kind:?}");
        match MappedWeights::open(&file, checksum_of(&w) ^ 1) {
            Err(EngineError::ChecksumMismatch { actual, .. }) => assert_eq!(actual, checksum_of(&w), "{kind:?}"),
            other => panic!("{kind:?}: {:?}", other.err()),
        }
    }
    let ints = vec![("model.steps".to_string(), Tensor::from_slice(&[1i64, 2]))];
    let err = MappedWeights::open(&written(&ints, dir.path(), "ints.safetensors"), checksum_of(&ints)).err().unwrap();
    assert!(matches!(err, EngineError::WeightsFile { .. }) && err.to_string().contains("`model.steps`"), "{err}");
    std::fs::write(dir.path().join("text"), "not weights").unwrap();
    let err = MappedWeights::open(&File::open(dir.path().join("text")).unwrap(), 0).err().unwrap();
    assert!(err.to_string().contains("not safetensors"), "{err}");
}

#[test]
fn a_mapped_update_is_checked_and_lands_as_the_tensors_would() {
    let dir = tempfile::tempdir().unwrap();
    let mut eng = engine("tiny-sparse", 2, 512);
    let w = new_weights();
    let partial = &w[1..];
    let mapped = MappedWeights::open(&written(partial, dir.path(), "partial"), checksum_of(partial)).unwrap();
    let err = eng.update_weights_mapped(mapped).unwrap_err();
    assert!(err.to_string().contains(&format!("missing `{}`", w[0].0)), "{err}");
    let (req, want) = greedy("tiny-sparse");
    assert_eq!(run_all(&mut eng, vec![req])[0].samples[0].ids(), want, "refused: still tiny-sparse");
    assert_eq!(eng.version(), 0);
    let as_bf16: Vec<(String, Tensor)> = w.iter().map(|(n, t)| (n.clone(), t.to_kind(Kind::BFloat16))).collect();
    let mapped = MappedWeights::open(&written(&as_bf16, dir.path(), "bf16"), checksum_of(&as_bf16)).unwrap();
    eng.update_weights_mapped(mapped).unwrap();
    let mapped = MappedWeights::open(&written(&w, dir.path(), "f32"), checksum_of(&w)).unwrap();
    eng.update_weights_mapped(mapped).unwrap();
    assert_eq!(eng.next_version(), 1, "the second update replaced the first");
    let (req, want) = greedy("tiny-sharded");
    let out = run_all(&mut eng, vec![req]);
    assert_eq!(eng.version(), 1);
    assert_eq!(out[0].samples[0].ids(), want, "tiny-sharded's greedy tokens, from its f32 file");
    assert!(out[0].samples[0].tokens.iter().all(|t| t.version == 1));
}

#[test]
fn in_process_weights_go_straight_in_when_idle_and_queue_when_busy() {
    // Refused on a shape or name mismatch, nothing changed.
    let mut eng = engine("tiny-sparse", 3, 512);
    let w = new_weights();
    let err = eng.set_weights(&w[1..]).unwrap_err();
    assert!(err.to_string().contains(&format!("missing `{}`", w[0].0)), "{err}");
    let (req, want) = greedy("tiny-sparse");
    assert_eq!(run_all(&mut eng, vec![req])[0].samples[0].ids(), want, "refused: still tiny-sparse");
    assert_eq!(eng.version(), 0);

    // Idle: copied in at once, the version advances now, the caller's tensors may change after.
    let mut w = new_weights();
    eng.set_weights(&w).unwrap();
    assert_eq!((eng.version(), eng.next_version()), (1, 1));
    tch::no_grad(|| w.iter().for_each(|(_, t)| drop(t.shallow_clone().fill_(0.0))));
    w.clear();
    let (req, want) = greedy("tiny-sharded");
    assert_eq!(run_all(&mut eng, vec![req])[0].samples[0].ids(), want, "tiny-sharded's greedy tokens");

    // Busy: queued for the next step, as `update_weights` is.
    let mut eng = engine("tiny-sparse", 3, 512);
    let running = eng.submit(request(&prompt(7, 2), 20, 3, 0)).unwrap();
    for _ in 0..5 {
        eng.step();
    }
    eng.set_weights(&new_weights()).unwrap();
    assert_eq!((eng.version(), eng.next_version()), (0, 1), "queued, not applied");
    let mut outs = eng.step();
    outs.extend(eng.run_until_done());
    let sample = &outs.iter().find(|o| o.id == running).unwrap().samples[0];
    let versions: Vec<u64> = sample.tokens.iter().map(|t| t.version).collect();
    assert_eq!(versions, [vec![0; 5], vec![1; 15]].concat(), "five tokens before the update");
    let (req, want) = greedy("tiny-sharded");
    assert_eq!(run_all(&mut eng, vec![req])[0].samples[0].ids(), want, "then tiny-sharded's greedy tokens");
}
