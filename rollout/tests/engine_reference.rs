//! The engine's cached generation against the golden fixtures and the model's own scoring (these
//! checks held the model crate's former test-only generation loop to the same standard): greedy
//! tokens equal transformers' greedy on every fixture, whatever is batched beside them; greedy and
//! sampled log-probs equal teacher-forced scoring; sampling is seeded per sequence; a stop id ends
//! a sample with that id kept.

mod support;

use rlvr_model::AttentionMode;
use rlvr_rollout::engine::FinishReason;
use support::{engine, ids, max_diff, reference, request, run_all, sampled, teacher_forced};

const TOL: f32 = 1e-5;

#[test]
fn cached_greedy_reproduces_the_reference_beside_another_prompt() {
    for name in ["tiny-dense", "tiny-sparse", "tiny-sharded"] {
        let r = reference(name);
        let (prompt, expected) = (ids(&r, "greedy_prompt"), ids(&r, "greedy_tokens"));
        // The reference prompt beside a different one: batching must not change it.
        let other: Vec<i64> = prompt.iter().rev().copied().chain([5, 6, 7]).collect();
        let greedy = |p: &[i64], i| sampled(request(p, expected.len(), 0, i), |s| s.temperature = 0.0);
        let mut eng = engine(name, 2, 512);
        let out = run_all(&mut eng, vec![greedy(&other, 0), greedy(&prompt, 1)]);
        let got = out[1].samples[0].ids();
        assert_eq!(got, expected, "{name}");
        // Greedy log-probs are the model's own, untruncated.
        let seq: Vec<i64> = prompt.iter().chain(&expected).copied().collect();
        let (model, _) = support::load(name);
        let lp = teacher_forced(&model, &seq, AttentionMode::Sparse);
        let d = max_diff(&out[1].samples[0].logprobs(), &lp[prompt.len() - 1..]);
        assert!(d <= TOL, "{name} logprobs: {d:e}");
    }
}

#[test]
fn temperature_sampling_is_seeded_per_sequence_and_stops_at_a_stop_id() {
    let prompt = vec![5i64, 9, 17, 3];
    let run = |neighbour: Vec<i64>, seed: u64| {
        let mut eng = engine("tiny-sparse", 2, 512);
        run_all(&mut eng, vec![request(&prompt, 12, seed, 0), request(&neighbour, 12, seed, 1)])
    };
    let a = run(vec![8, 8], 7);
    let b = run(vec![40, 41, 42], 7);
    let (a0, b0) = (&a[0].samples[0], &b[0].samples[0]);
    assert_eq!(a0.ids(), b0.ids(), "a sequence's draws do not depend on its batch neighbours");
    assert!(max_diff(&a0.logprobs(), &b0.logprobs()) <= TOL);
    let c = run(vec![8, 8], 8);
    assert_ne!(a0.ids(), c[0].samples[0].ids(), "another seed, another completion");
    // Reported log-probs are those of the sampled ids under softmax(logits / T) (T = 1 here).
    let (model, _) = support::load("tiny-sparse");
    let seq: Vec<i64> = prompt.iter().chain(&a0.ids()).copied().collect();
    let lp = teacher_forced(&model, &seq, AttentionMode::Sparse);
    let d = max_diff(&a0.logprobs(), &lp[prompt.len() - 1..]);
    assert!(d <= TOL, "{d:e}");
    // Stopping: make the third sampled id a stop id.
    let stop = a0.ids()[2];
    let first = a0.ids().iter().position(|&t| t == stop).unwrap();
    let mut eng = engine("tiny-sparse", 1, 512);
    let req = rlvr_rollout::engine::Request { stop_ids: vec![stop], ..request(&prompt, 12, 7, 0) };
    let s = run_all(&mut eng, vec![req]);
    assert_eq!(s[0].samples[0].finish_reason, FinishReason::Stop);
    assert_eq!(s[0].samples[0].ids(), a0.ids()[..=first].to_vec());
}
