//! Logit adjustments (presence, frequency and repetition penalties, logit bias) and the recorded
//! top alternatives, checked against the model's own full forward over the finished sequences:
//! at every position the distribution is recomputed here from the logits by the rules written
//! out independently below (OpenAI's penalties over the sample's generated ids, transformers'
//! repetition penalty over prompt and generated ids, the bias added), and each recorded log-prob
//! and top-k list must be that distribution's. Dense attention throughout (see [`engine`]).

mod support;

use rlvr_model::{AttentionMode, DeepseekV32};
use rlvr_rollout::engine::{Engine, EngineConfig};
use rlvr_rollout::engine::{Penalties, Request, Sample};
use support::{load, prompt, request, run_all, sampled};

/// An engine over tiny-sparse in dense attention: penalties make degenerate repeats, whose tied
/// indexer scores could let sparse attention pick other keys in a decode than in a full forward.
fn engine(name: &str, slots: usize, chunk: usize) -> Engine {
    let (model, vs) = load(name);
    let config = EngineConfig { prefill_chunk: chunk, mode: AttentionMode::Dense, ..EngineConfig::new(slots, 96) };
    Engine::new(model, &vs, config).expect("the test cache fits")
}
use tch::Tensor;

/// Full-forward logits of `seq`: (L, V) on the host, row-major.
fn logits_of(model: &DeepseekV32, seq: &[i64]) -> (Vec<f32>, usize) {
    let tokens = Tensor::from_slice(seq).unsqueeze(0); // (1, L)
    let logits = tch::no_grad(|| model.forward(&tokens, AttentionMode::Dense)).get(0); // (L, V)
    let v = logits.size()[1] as usize;
    (Vec::<f32>::try_from(logits.flatten(0, -1)).unwrap(), v)
}

/// The log-probabilities at `temperature` of `logits` adjusted for a sample that generated
/// `generated` after `prompt`, id by id as the rules read.
fn reference(logits: &[f32], prompt: &[i64], generated: &[i64], p: &Penalties, temperature: f64) -> Vec<f64> {
    let adjusted: Vec<f64> = (0..logits.len() as i64)
        .map(|id| {
            let mut l = logits[id as usize] as f64;
            l += p.logit_bias.iter().filter(|b| b.0 == id).map(|b| b.1).sum::<f64>();
            let count = generated.iter().filter(|&&g| g == id).count() as f64;
            if count > 0.0 || prompt.contains(&id) {
                l = if l > 0.0 { l / p.repetition } else { l * p.repetition };
            }
            l - p.frequency * count - if count > 0.0 { p.presence } else { 0.0 }
        })
        .collect();
    let scaled: Vec<f64> = adjusted.iter().map(|l| l / temperature).collect();
    let max = scaled.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let z = scaled.iter().map(|s| (s - max).exp()).sum::<f64>().ln() + max;
    scaled.iter().map(|s| s - z).collect()
}

/// Checks every token of `sample` against [`reference`]; returns the largest change the
/// penalties made to a recorded log-prob (vs the plain distribution).
fn check(model: &DeepseekV32, req: &Request, sample: &Sample, temperature: f64) -> f64 {
    let seq: Vec<i64> = req.prompt.iter().copied().chain(sample.ids()).collect();
    let (logits, v) = logits_of(model, &seq);
    let mut moved: f64 = 0.0;
    for (i, t) in sample.tokens.iter().enumerate() {
        let at = req.prompt.len() - 1 + i;
        let row = &logits[at * v..(at + 1) * v];
        let generated = &sample.ids()[..i];
        let want = reference(row, &req.prompt, generated, &req.penalties, temperature);
        let plain = reference(row, &req.prompt, generated, &Penalties::default(), temperature);
        let case = format!("{:?} sample {} token {i}", req.penalties, sample.index);
        assert!(
            (t.logprob as f64 - want[t.id as usize]).abs() <= 2e-4,
            "{case}: {} vs {}",
            t.logprob,
            want[t.id as usize]
        );
        moved = moved.max((want[t.id as usize] - plain[t.id as usize]).abs());
        let mut order: Vec<usize> = (0..v).collect();
        order.sort_by(|&a, &b| want[b].total_cmp(&want[a]).then(a.cmp(&b)));
        let top = t.top.as_ref().expect("top alternatives recorded");
        assert_eq!(top.len(), req.top_logprobs, "{case}");
        for (k, &(id, lp)) in top.iter().enumerate() {
            assert!((lp as f64 - want[id as usize]).abs() <= 2e-4, "{case}: alternative {k}");
            // Ties within rounding may swap places; the values must still be in order.
            assert!(
                (want[id as usize] - want[order[k]]).abs() <= 2e-4,
                "{case}: alternative {k} is {id}, want {}",
                order[k]
            );
        }
        assert!(top.windows(2).all(|w| w[0].1 >= w[1].1), "{case}: most likely first");
    }
    moved
}

#[test]
fn penalties_and_bias_change_the_distribution_exactly_as_specified() {
    let mut eng = engine("tiny-sparse", 4, 8);
    // A short prompt that repeats ids, so the repetition penalty has prompt ids to act on.
    let p: Vec<i64> = prompt(6, 2).into_iter().cycle().take(12).collect();
    let bias_id = 7;
    let settings = [
        Penalties { presence: 1.5, ..Penalties::default() },
        Penalties { frequency: 0.9, ..Penalties::default() },
        Penalties { presence: -1.0, frequency: -0.5, ..Penalties::default() },
        Penalties { repetition: 1.7, ..Penalties::default() },
        Penalties { repetition: 0.6, ..Penalties::default() },
        Penalties { logit_bias: vec![(bias_id, 3.0), (11, -100.0)], ..Penalties::default() },
        Penalties { presence: 0.4, frequency: 0.3, repetition: 1.3, logit_bias: vec![(bias_id, 2.0)] },
    ];
    for (k, penalties) in settings.iter().enumerate() {
        for temperature in [1.0, 0.7] {
            let base = sampled(request(&p, 16, 40 + k as u64, 0), |s| s.temperature = temperature);
            let req = Request { n: 2, penalties: penalties.clone(), top_logprobs: 5, ..base };
            let out = run_all(&mut eng, vec![req.clone()]).remove(0);
            let moved: f64 = out.samples.iter().map(|s| check(eng.model(), &req, s, temperature)).fold(0.0, f64::max);
            assert!(moved > 1e-2, "{penalties:?} at {temperature} changed the recorded log-probs (by {moved})");
            if penalties.logit_bias.iter().any(|b| b.1 == -100.0) {
                assert!(out.samples.iter().all(|s| !s.ids().contains(&11)), "a -100 bias bans its id");
            }
        }
    }
    // Greedy draws take the argmax of the penalised logits, and a +100 bias forces its id.
    let greedy = sampled(request(&p, 6, 0, 0), |s| s.temperature = 0.0);
    let forced = Request {
        penalties: Penalties { logit_bias: vec![(bias_id, 100.0)], ..Penalties::default() },
        ..greedy.clone()
    };
    let out = run_all(&mut eng, vec![Request { top_logprobs: 3, ..forced.clone() }]).remove(0);
    assert!(out.samples[0].ids().iter().all(|&id| id == bias_id), "{:?}", out.samples[0].ids());
    check(eng.model(), &Request { top_logprobs: 3, ..forced }, &out.samples[0], 1.0);
    let rep = Request { penalties: Penalties { frequency: 2.0, ..Penalties::default() }, top_logprobs: 4, ..greedy };
    let out = run_all(&mut eng, vec![rep.clone()]).remove(0);
    check(eng.model(), &rep, &out.samples[0], 1.0);
}

#[test]
fn top_alternatives_without_penalties_are_the_models_log_softmax_and_truncation_renormalises() {
    let mut eng = engine("tiny-sparse", 4, 8);
    let p = prompt(9, 5);
    let req = Request { top_logprobs: 20, ..request(&p, 10, 3, 0) };
    let out = run_all(&mut eng, vec![req.clone()]).remove(0);
    check(eng.model(), &req, &out.samples[0], 1.0);
    // With top-k 3 the alternatives are the kept set, renormalised: three, summing to one.
    let trunc = Request { top_logprobs: 5, ..sampled(request(&p, 10, 3, 0), |s| s.top_k = 3) };
    let out = run_all(&mut eng, vec![trunc]).remove(0);
    for t in &out.samples[0].tokens {
        let top = t.top.as_ref().unwrap();
        assert_eq!(top.len(), 3);
        let mass: f64 = top.iter().map(|x| (x.1 as f64).exp()).sum();
        assert!((mass - 1.0).abs() < 1e-4, "{mass}");
        assert!(top.iter().any(|x| x.0 == t.id && x.1 == t.logprob));
    }
    // Without the request, nothing is recorded.
    let plain = run_all(&mut eng, vec![request(&p, 3, 3, 0)]).remove(0);
    assert!(plain.samples[0].tokens.iter().all(|t| t.top.is_none()));
    // Out-of-range settings are refused, naming the field.
    let bad = [
        (Penalties { presence: 2.5, ..Penalties::default() }, "presence_penalty"),
        (Penalties { frequency: f64::NAN, ..Penalties::default() }, "frequency_penalty"),
        (Penalties { repetition: 0.0, ..Penalties::default() }, "repetition_penalty"),
        (Penalties { logit_bias: vec![(1 << 40, 1.0)], ..Penalties::default() }, "logit_bias"),
        (Penalties { logit_bias: vec![(3, 101.0)], ..Penalties::default() }, "logit_bias"),
    ];
    for (penalties, field) in bad {
        let err = eng.submit(Request { penalties, ..request(&p, 3, 3, 0) }).unwrap_err();
        assert!(err.to_string().contains(field), "{err}");
    }
    let err = eng.submit(Request { top_logprobs: 21, ..request(&p, 3, 3, 0) }).unwrap_err();
    assert!(err.to_string().contains("top_logprobs"), "{err}");
}
