//! The generation engine on the tiny-sparse fixture (sparse DSA, index_topk 8, sequences longer
//! than that): its log-probs are the model's teacher-forced ones, a request's samples do not depend
//! on what shares the batch or when it is admitted, greedy reproduces transformers' greedy tokens,
//! stops, lengths, aborts and `n` samples behave, and the metrics count what happened.

mod support;

use rlvr_model::AttentionMode;
use rlvr_rollout::engine::{FinishReason, Request, RequestOutput};
use support::{engine, ids, max_diff, prompt, reference, request, run_all, sampled, teacher_forced};

#[test]
fn logprobs_equal_teacher_forced_logprobs_in_sparse_mode() {
    let mut eng = engine("tiny-sparse", 6, 4);
    let prompts = [prompt(5, 1), prompt(13, 2), prompt(30, 3)];
    let reqs = prompts.iter().enumerate().map(|(i, p)| Request { n: 2, ..request(p, 40, 7, i) }).collect();
    let out = run_all(&mut eng, reqs);
    let model = eng.model();
    for (p, o) in prompts.iter().zip(&out) {
        for s in &o.samples {
            assert_eq!(s.finish_reason, FinishReason::Length);
            assert_eq!(s.tokens.len(), 40);
            let seq: Vec<i64> = p.iter().copied().chain(s.ids()).collect();
            assert!(seq.len() > 8 + 8, "longer than index_topk");
            let tf = teacher_forced(model, &seq, AttentionMode::Sparse);
            let d = max_diff(&s.logprobs(), &tf[p.len() - 1..]);
            assert!(d <= 1e-4, "prompt of {}: engine vs teacher-forced log-probs differ by {d:e}", p.len());
        }
        assert_ne!(o.samples[0].ids(), o.samples[1].ids(), "the n samples differ");
    }
    assert_eq!(eng.tokens_generated(), 3 * 2 * 40);
    assert!(eng.tokens_per_second() > 0.0);
    assert_eq!((eng.queue_depth(), eng.active_slots()), (0, 0));
}

/// The nucleus request under test: index 3, seed 11, top-p 0.9.
fn probe() -> Request {
    sampled(Request { n: 2, ..request(&prompt(9, 4), 24, 11, 3) }, |s| s.top_p = 0.9)
}

fn assert_same(alone: &RequestOutput, batched: &RequestOutput) {
    for (a, b) in alone.samples.iter().zip(&batched.samples) {
        assert_eq!(a.ids(), b.ids(), "sample {}: tokens", a.index);
        let d = max_diff(&a.logprobs(), &b.logprobs());
        assert!(d <= 1e-5, "sample {}: log-probs differ by {d:e}", a.index);
    }
}

#[test]
fn a_request_alone_equals_it_in_a_full_batch_admitted_midway() {
    let alone = run_all(&mut engine("tiny-sparse", 2, 512), vec![probe()]).remove(0);
    // Six slots: two long-running neighbours of other lengths and settings, then the probe
    // arrives while they decode, with a fourth request that fills the pool.
    let mut eng = engine("tiny-sparse", 6, 5);
    let first = eng.submit(Request { n: 2, ..request(&prompt(21, 5), 40, 1, 0) }).unwrap();
    let second = eng.submit(sampled(request(&prompt(3, 6), 40, 2, 1), |s| s.top_k = 30)).unwrap();
    let mut outs = Vec::new();
    for _ in 0..7 {
        outs.extend(eng.step());
    }
    assert_eq!(eng.active_slots(), 3);
    let probe_id = eng.submit(probe()).unwrap();
    let last = eng.submit(request(&prompt(17, 7), 30, 3, 2)).unwrap();
    eng.step();
    assert_eq!((eng.active_slots(), eng.queue_depth()), (6, 0), "the pool is full");
    outs.extend(eng.run_until_done());
    let batched = outs.iter().find(|o| o.id == probe_id).unwrap();
    assert_same(&alone, batched);
    for id in [first, second, last] {
        assert!(outs.iter().any(|o| o.id == id));
    }
    // A waiting request is admitted once slots free up; the probe still comes out the same.
    let mut eng = engine("tiny-sparse", 3, 512);
    eng.submit(request(&prompt(6, 8), 10, 4, 0)).unwrap();
    eng.submit(request(&prompt(11, 9), 30, 5, 1)).unwrap();
    let probe_id = eng.submit(probe()).unwrap();
    eng.step();
    assert_eq!(eng.queue_depth(), 1, "the probe waits for two free slots");
    let outs = eng.run_until_done();
    assert_same(&alone, outs.iter().find(|o| o.id == probe_id).unwrap());
}

#[test]
fn greedy_reproduces_the_reference_greedy_tokens() {
    let r = reference("tiny-sparse");
    let (p, want) = (ids(&r, "greedy_prompt"), ids(&r, "greedy_tokens"));
    let greedy = sampled(request(&p, 32, 0, 0), |s| s.temperature = 0.0);
    // Alone, and next to a sampling request, with the prompt fed two tokens at a time.
    let out = run_all(&mut engine("tiny-sparse", 3, 2), vec![greedy.clone(), request(&prompt(12, 1), 20, 0, 1)]);
    assert_eq!(out[0].samples[0].ids(), want);
    let out = run_all(&mut engine("tiny-sparse", 1, 512), vec![greedy]);
    assert_eq!(out[0].samples[0].ids(), want);
    assert_eq!(out[0].samples[0].finish_reason, FinishReason::Length);
}

#[test]
fn stop_ids_stop_strings_length_and_abort() {
    let r = reference("tiny-sparse");
    let (p, want) = (ids(&r, "greedy_prompt"), ids(&r, "greedy_tokens"));
    let greedy = sampled(request(&p, 32, 0, 0), |s| s.temperature = 0.0);
    let stop = want[9];
    let first = want.iter().position(|&t| t == stop).unwrap();
    let detok = std::sync::Arc::new(|ids: &[i64]| ids.iter().map(|i| format!("<{i}>")).collect::<String>());
    let mut eng = engine("tiny-sparse", 4, 512).with_detokenizer(detok);
    let by_id = Request { stop_ids: vec![stop], ..greedy.clone() };
    let text = format!("<{}><{}>", want[3], want[4]);
    let by_text = Request { stop_strings: vec![text], ..greedy.clone() };
    let short = sampled(greedy.clone(), |s| s.max_tokens = 5);
    let out = run_all(&mut eng, vec![by_id, by_text, short]);
    assert_eq!(out[0].samples[0].ids(), want[..=first].to_vec());
    assert_eq!(out[0].samples[0].finish_reason, FinishReason::Stop);
    assert_eq!(out[1].samples[0].ids(), want[..5].to_vec(), "ends at the token completing the string");
    assert_eq!(out[1].samples[0].finish_reason, FinishReason::Stop);
    assert_eq!(out[2].samples[0].finish_reason, FinishReason::Length);
    // Abort a running request (3 samples) and a waiting one.
    let running = eng.submit(Request { n: 3, ..request(&p, 30, 1, 0) }).unwrap();
    let waiting = eng.submit(Request { n: 2, ..request(&p, 30, 1, 1) }).unwrap();
    eng.step();
    eng.step();
    assert_eq!((eng.active_slots(), eng.queue_depth()), (3, 1));
    assert!(eng.abort(running) && eng.abort(waiting));
    assert_eq!((eng.active_slots(), eng.queue_depth()), (0, 0), "abort frees the slots at once");
    let out = eng.step();
    assert_eq!(out.len(), 2);
    for o in &out {
        for s in &o.samples {
            assert_eq!(s.finish_reason, FinishReason::Abort);
        }
    }
    let run = out.iter().find(|o| o.id == running).unwrap();
    assert!(run.samples.iter().all(|s| s.tokens.len() == 2), "two steps, two tokens each");
    assert!(out.iter().find(|o| o.id == waiting).unwrap().samples.iter().all(|s| s.tokens.is_empty()));
    assert!(!eng.abort(running), "already ended");
    assert!(eng.submit(Request { stop_strings: vec!["x".into()], ..greedy.clone() }).is_ok());
    let plain = engine("tiny-sparse", 1, 512).submit(Request { stop_strings: vec!["x".into()], ..greedy });
    assert!(plain.unwrap_err().to_string().contains("stop_strings"));
}

#[test]
fn bad_requests_name_the_field() {
    let mut eng = engine("tiny-sparse", 2, 512);
    let cases = [
        (Request::new(vec![]), "prompt"),
        (Request::new(vec![3, 192]), "prompt"),
        (Request { n: 3, ..Request::new(vec![3]) }, "`n`"),
        (sampled(Request::new(vec![3]), |s| s.max_tokens = 96), "max_tokens"),
        (sampled(Request::new(vec![3]), |s| s.top_p = 0.0), "top_p"),
        (sampled(Request::new(vec![3]), |s| s.temperature = -1.0), "temperature"),
        (sampled(Request::new(vec![3]), |s| s.min_p = 2.0), "min_p"),
    ];
    for (req, field) in cases {
        let err = eng.submit(req).unwrap_err().to_string();
        assert!(err.contains(field), "expected {field} in {err}");
    }
    assert_eq!(eng.queue_depth(), 0);
}

#[test]
fn an_engine_can_move_to_a_serving_thread() {
    fn send<T: Send>() {}
    send::<rlvr_rollout::engine::Engine>();
    let mut eng = engine("tiny-sparse", 1, 512);
    let handle = std::thread::spawn(move || run_all(&mut eng, vec![request(&prompt(3, 1), 4, 0, 0)]));
    assert_eq!(handle.join().unwrap()[0].samples[0].tokens.len(), 4);
}

#[test]
fn a_watched_request_reports_its_tokens_step_by_step() {
    let mut eng = engine("tiny-sparse", 4, 4);
    let watched = eng.submit(Request { n: 2, ..request(&prompt(9, 5), 12, 3, 0) }).unwrap();
    let quiet = eng.submit(request(&prompt(6, 6), 12, 4, 1)).unwrap();
    assert!(eng.watch(watched));
    let mut reported: Vec<Vec<i64>> = vec![Vec::new(); 2];
    let mut outputs = Vec::new();
    while !eng.is_idle() {
        outputs.extend(eng.step());
        for p in eng.take_progress() {
            assert_eq!(p.id, watched, "only the watched request reports");
            assert_eq!(p.tokens.len(), 1, "one token per sample per step");
            reported[p.sample].extend(p.tokens.iter().map(|t| t.id));
        }
    }
    assert!(!eng.watch(quiet), "an ended request cannot be watched");
    let out = outputs.iter().find(|o| o.id == watched).unwrap();
    for s in &out.samples {
        let got = &reported[s.index];
        assert!(!got.is_empty() && got.len() < s.tokens.len(), "the last step's token comes with the output");
        assert_eq!(got[..], s.ids()[..got.len()], "reported tokens are the output's, in order");
    }
}
