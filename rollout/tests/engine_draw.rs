//! The device draw (`DrawSite::Device`, tensor ops where the logits are) against the host draw: the
//! same requests, in the same engine set-up, give the same tokens, kept sets, alternatives and
//! finish reasons, and log-probs within f32 rounding, for every sampling setting the engine takes
//! (greedy, untruncated, top-k/top-p/min-p, several settings in one batch, penalties and
//! `top_logprobs`, which always draw on the host, and prompts whose `n` samples share a prefill).

mod support;

use rlvr_rollout::engine::{DrawSite, Penalties, Request, RequestOutput};
use support::{drawing, prompt, request, run_all, sampled};

fn requests() -> Vec<Request> {
    let mask = |r: Request| Request { return_sampling_mask: true, ..r };
    vec![
        Request { n: 3, ..request(&prompt(9, 1), 24, 7, 0) },
        sampled(request(&prompt(5, 2), 20, 7, 1), |s| s.temperature = 0.0),
        mask(Request { n: 2, ..sampled(request(&prompt(12, 3), 24, 7, 2), |s| (s.top_p, s.temperature) = (0.8, 0.7)) }),
        mask(sampled(request(&prompt(7, 4), 24, 7, 3), |s| (s.top_k, s.min_p, s.temperature) = (30, 0.05, 1.3))),
        mask(sampled(request(&prompt(6, 5), 24, 7, 4), |s| (s.top_k, s.top_p) = (12, 0.9))),
        Request { top_logprobs: 3, ..request(&prompt(8, 6), 16, 7, 5) },
        Request {
            penalties: Penalties { repetition: 1.3, presence: 0.5, ..Penalties::default() },
            ..sampled(request(&prompt(8, 7), 16, 7, 6), |s| s.top_p = 0.9)
        },
        request(&prompt(30, 8), 12, 7, 7),
    ]
}

fn run_at(site: DrawSite) -> Vec<RequestOutput> {
    let mut eng = drawing("tiny-sparse", 8, 6, site);
    run_all(&mut eng, requests())
}

#[test]
fn the_device_draw_equals_the_host_draw() {
    let (host, device) = (run_at(DrawSite::Host), run_at(DrawSite::Device));
    let mut truncated = 0;
    for (h, d) in host.iter().zip(&device) {
        assert_eq!(h.samples.len(), d.samples.len());
        for (hs, ds) in h.samples.iter().zip(&d.samples) {
            let what = format!("request {} sample {}", h.index, hs.index);
            assert_eq!(hs.ids(), ds.ids(), "{what}");
            assert_eq!(hs.finish_reason, ds.finish_reason, "{what}");
            for (ht, dt) in hs.tokens.iter().zip(&ds.tokens) {
                assert!((ht.logprob - dt.logprob).abs() <= 1e-6, "{what}: {} vs {}", ht.logprob, dt.logprob);
                assert_eq!(ht.kept, dt.kept, "{what}");
                assert_eq!(ht.top, dt.top, "{what}");
                truncated += usize::from(ht.kept.as_ref().is_some_and(|k| !k.is_empty()));
            }
        }
    }
    assert!(truncated > 50, "the kept sets were compared ({truncated} truncated draws)");
    // Sampled, not greedy: the first request's three samples differ from each other.
    let first: Vec<Vec<i64>> = device[0].samples.iter().map(|s| s.ids()).collect();
    assert!(first[0] != first[1] && first[1] != first[2], "{first:?}");
}
