//! What the engine records for training (docs/model.md §3.3.6–3.3.7), checked against the model's own
//! full forward over the finished sequences: the kept set of each draw equals the top-k/top-p/min-p
//! set recomputed here from the logits at that position, and the recorded experts are the ones a
//! plain forward chooses and, replayed, give its logits.

mod support;

use rlvr_model::{AttentionMode, DeepseekV32, ForwardOptions};
use rlvr_rollout::engine::{DrawSite, Request, SamplingParams};
use support::{drawing, engine, prompt, request, run_all, sampled};
use tch::{Kind, Tensor};

/// Full-forward logits of `seq`: (L, V) on the host, row-major.
fn logits_of(model: &DeepseekV32, seq: &[i64]) -> (Vec<f32>, usize) {
    let tokens = Tensor::from_slice(seq).unsqueeze(0); // (1, L)
    let logits = tch::no_grad(|| model.forward(&tokens, AttentionMode::Sparse)).get(0); // (L, V)
    let v = logits.size()[1] as usize;
    (Vec::<f32>::try_from(logits.flatten(0, -1)).unwrap(), v)
}

/// The ids a sampler keeps from `logits` at `temperature` under top-k, then top-p over the
/// renormalised top-k mass, then min-p, ascending; and each kept id's renormalised probability.
fn kept_set(logits: &[f32], temperature: f64, top_k: usize, top_p: f64, min_p: f64) -> Vec<(i64, f64)> {
    let scaled: Vec<f64> = logits.iter().map(|&l| l as f64 / temperature).collect();
    let max = scaled.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let z: f64 = scaled.iter().map(|s| (s - max).exp()).sum();
    let mut p: Vec<(i64, f64)> = scaled.iter().enumerate().map(|(i, s)| (i as i64, (s - max).exp() / z)).collect();
    p.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
    p.truncate(top_k);
    let mass: f64 = p.iter().map(|x| x.1).sum();
    let mut cum = 0.0;
    let mut keep = Vec::new();
    for &(id, q) in &p {
        if cum >= top_p * mass {
            break;
        }
        cum += q;
        keep.push((id, q));
    }
    let floor = keep[0].1 * min_p;
    keep.retain(|x| x.1 >= floor);
    let total: f64 = keep.iter().map(|x| x.1).sum();
    let mut keep: Vec<(i64, f64)> = keep.into_iter().map(|(id, q)| (id, q / total)).collect();
    keep.sort_by_key(|x| x.0);
    keep
}

#[test]
fn the_recorded_kept_set_is_the_truncation_of_the_models_logits() {
    recorded_kept_sets_at(DrawSite::Host);
}

#[test]
fn the_device_draw_records_the_same_truncation() {
    recorded_kept_sets_at(DrawSite::Device);
}

fn recorded_kept_sets_at(site: DrawSite) {
    let mut eng = drawing("tiny-sparse", 4, 6, site);
    let (temperature, top_k, top_p, min_p) = (0.8, 40, 0.85, 0.02);
    let base = request(&prompt(10, 11), 30, 5, 0);
    let sampling = SamplingParams { temperature, top_k, top_p, min_p, ..base.sampling };
    let req = Request { n: 3, sampling, return_sampling_mask: true, ..base };
    let out = run_all(&mut eng, vec![req.clone()]).remove(0);
    let model = eng.model();
    let mut sizes = Vec::new();
    for s in &out.samples {
        let seq: Vec<i64> = req.prompt.iter().copied().chain(s.ids()).collect();
        let (logits, v) = logits_of(model, &seq);
        for (i, t) in s.tokens.iter().enumerate() {
            let at = req.prompt.len() - 1 + i;
            let want = kept_set(&logits[at * v..(at + 1) * v], temperature, top_k, top_p, min_p);
            let want_ids: Vec<i64> = want.iter().map(|x| x.0).collect();
            assert_eq!(t.kept.as_ref().unwrap(), &want_ids, "sample {} token {i}", s.index);
            let q = want.iter().find(|x| x.0 == t.id).expect("the sampled id is kept").1;
            assert!((t.logprob as f64 - q.ln()).abs() <= 1e-4, "token {i}: {} vs {}", t.logprob, q.ln());
            sizes.push(want_ids.len());
        }
    }
    let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
    assert!(*min >= 1 && *max < top_k && min < max, "the truncation really cuts: sizes {min}..{max}");
    // Untruncated and greedy draws record an empty set (the whole vocabulary).
    let plain = Request { return_sampling_mask: true, ..request(&prompt(4, 1), 3, 0, 0) };
    let greedy = sampled(plain.clone(), |s| (s.temperature, s.top_p) = (0.0, 0.5));
    for o in run_all(&mut eng, vec![plain, greedy]) {
        assert!(o.samples[0].tokens.iter().all(|t| t.kept.as_deref() == Some(&[][..])));
    }
}

#[test]
fn recorded_routing_is_the_plain_forwards_and_replays_to_its_logits() {
    let mut eng = engine("tiny-sparse", 4, 7);
    let req = Request { n: 2, return_routing: true, ..request(&prompt(12, 3), 25, 9, 0) };
    let out = run_all(&mut eng, vec![req.clone()]).remove(0);
    let model = eng.model();
    for s in &out.samples {
        let replay = s.replay(model).expect("routing was recorded");
        // Prompt + all but the last token: the positions whose logits scored each generated token.
        let ids = s.ids();
        let seq: Vec<i64> = req.prompt.iter().chain(&ids[..ids.len() - 1]).copied().collect();
        let tokens = Tensor::from_slice(&seq).unsqueeze(0); // (1, P + C − 1)
        let (plain, replayed) = tch::no_grad(|| {
            let plain = model.run(&tokens, ForwardOptions::new(AttentionMode::Sparse));
            let opts = ForwardOptions { replay: Some(&replay), ..ForwardOptions::new(AttentionMode::Sparse) };
            (plain, model.run(&tokens, opts))
        });
        let chosen = plain.expert_ids();
        let mut moe_layers = 0;
        for (l, (rec, want)) in replay.iter().zip(&chosen).enumerate() {
            assert_eq!(rec.is_some(), want.is_some(), "layer {l}");
            if let (Some(rec), Some(want)) = (rec, want) {
                let (rec, _) = rec.sort(-1, false);
                let (want, _) = want.sort(-1, false);
                assert!(rec.equal(&want), "layer {l}: recorded experts differ from the plain forward's");
                moe_layers += 1;
            }
        }
        assert_eq!(moe_layers, 2);
        let d = (&plain.logits - &replayed.logits).abs().max().double_value(&[]);
        assert!(d <= 1e-6, "replayed logits differ by {d:e}");
        // Untruncated at temperature 1, the engine's log-probs are the replayed forward's.
        let lp = replayed.logits.get(0).log_softmax(-1, Kind::Float); // (P + C − 1, V)
        let next = Tensor::from_slice(&ids).unsqueeze(1); // (C, 1)
        let picked = lp.narrow(0, req.prompt.len() as i64 - 1, ids.len() as i64).gather(1, &next, false);
        let picked = Vec::<f32>::try_from(picked.flatten(0, -1)).unwrap();
        let d = support::max_diff(&picked, &s.logprobs());
        assert!(d <= 1e-4, "replayed vs engine log-probs differ by {d:e}");
    }
}
