//! The `rlvr` extension of `/v1/completions`: a request naming the trainer's stream coordinates
//! (seed, first index) gets exactly the engine's own records — the samples a colocated engine
//! draws for the same coordinates, bit for bit — and a malformed extension is a 400 naming it.

mod service_support;
mod support;

use rlvr_rollout::engine::{Engine, EngineConfig, Request, RequestOutput, SamplingParams};
use serde_json::{json, Value};
use service_support::{fixture, Options, Server};

const PROMPTS: [&[i64]; 3] = [&[5, 17, 42, 3, 99, 120], &[7, 8, 9], &[150, 2, 64, 33]];

/// Every finite f32 that a JSON answer carries comes back with the same bits (serde_json writes
/// f32 as its shortest decimal and reads it back through f64): checked on 2 million bit patterns
/// spread over the whole range, log-prob-like values and the edges.
#[test]
fn f32_survives_json_bit_for_bit() {
    let mut x: u32 = 0x9E37_79B9;
    let mut patterns: Vec<u32> = (0..2_000_000)
        .map(|_| {
            // xorshift32
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        })
        .collect();
    patterns.extend([0, 1, 0x7F7F_FFFF, 0xFF7F_FFFF, 0x0080_0000, 0x8000_0001, 0x8000_0000]);
    patterns.extend((0..100_000u32).map(|i| (-(i as f32) * 1e-4).to_bits()));
    for bits in patterns {
        let v = f32::from_bits(bits);
        if !v.is_finite() {
            continue;
        }
        let text = serde_json::to_string(&v).unwrap();
        let back: f32 = serde_json::from_str(&text).unwrap();
        assert_eq!(back.to_bits(), bits, "{v:e} written as {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_records_equal_the_local_engines_bit_for_bit() {
    let sampling = SamplingParams { max_tokens: 6, temperature: 1.0, top_p: 0.9, top_k: 20, min_p: 0.0 };
    let (seed, first) = (11u64, 7usize);

    // The local engine, sized as the server below (4 slots of 96 tokens).
    let (model, vs) = support::load("tiny-sparse");
    let mut engine = Engine::new(model, &vs, EngineConfig::new(4, 96)).expect("the test cache fits");
    let local: Vec<RequestOutput> = support::run_all(
        &mut engine,
        PROMPTS
            .iter()
            .enumerate()
            .map(|(i, p)| Request {
                n: 2,
                sampling,
                seed,
                index: first + i,
                return_sampling_mask: true,
                return_routing: true,
                ..Request::new(p.to_vec())
            })
            .collect(),
    );

    let mut server = Server::start(&fixture("tiny-sparse"), Options::default()).await;
    let body = json!({"prompt": PROMPTS, "n": 2, "max_tokens": 6, "temperature": 1.0, "top_p": 0.9, "top_k": 20,
        "ignore_eos": true, "return_sampling_mask": true, "return_routing": true,
        "rlvr": {"seed": seed, "index": first}});
    let (status, answer) = server.post("/v1/completions", &body).await;
    assert_eq!(status, 200, "{answer}");
    let served: Vec<RequestOutput> = serde_json::from_value(answer["rlvr"]["outputs"].clone()).unwrap();
    assert_eq!(served.len(), PROMPTS.len());
    assert_eq!(answer["choices"].as_array().unwrap().len(), 2 * PROMPTS.len());
    let mut kept_sets = 0;
    for (s, l) in served.iter().zip(&local) {
        assert_eq!(s.index, l.index, "engine indices are the stream indices");
        assert_eq!(s.samples.len(), 2);
        for (a, b) in s.samples.iter().zip(&l.samples) {
            assert_eq!(a.ids(), b.ids(), "prompt {} sample {}", s.index, a.index);
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a.logprobs()), bits(&b.logprobs()), "log-probs bit for bit");
            assert_eq!(a.finish_reason, b.finish_reason);
            assert_eq!(a.prompt_experts, b.prompt_experts);
            for (x, y) in a.tokens.iter().zip(&b.tokens) {
                assert_eq!((x.version, &x.kept, &x.experts), (y.version, &y.kept, &y.experts));
                kept_sets += usize::from(x.kept.as_ref().is_some_and(|k| !k.is_empty()));
                assert!(x.experts.is_some(), "routing recorded");
            }
        }
    }
    assert!(kept_sets > 0, "kept sets recorded");
    // The choices are the records, in choice order.
    let choice = &answer["choices"][3];
    assert_eq!(choice["index"], 3);
    let want: Vec<i64> = served[1].samples[1].ids();
    assert_eq!(choice["sampling_mask"].as_array().unwrap().len(), want.len());
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_extension_is_a_400_naming_it() {
    let mut server = Server::start(&fixture("tiny-sparse"), Options::default()).await;
    let base = |rlvr: Value| json!({"prompt": PROMPTS[0], "max_tokens": 2, "rlvr": rlvr});
    let mut both = base(json!({"seed": 1, "index": 0}));
    both["seed"] = json!(3);
    let mut streamed = base(json!({"seed": 1, "index": 0}));
    streamed["stream"] = json!(true);
    let cases = [
        (base(json!({"seed": 1})), "rlvr"),
        (base(json!({"seed": "one", "index": 0})), "rlvr.seed"),
        (base(json!({"seed": 1, "index": -2})), "rlvr.index"),
        (base(json!({"seed": 1, "index": 0, "step": 2})), "rlvr.step"),
        (base(json!(7)), "rlvr"),
        (both, "seed"),
        (streamed, "rlvr"),
    ];
    for (body, param) in &cases {
        let (status, answer) = server.post("/v1/completions", body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["param"].as_str(), Some(*param), "{body}: {answer}");
    }
    let (status, answer) = server.post("/v1/completions", &base(json!({"seed": 1, "index": 0}))).await;
    assert_eq!(status, 200, "{answer}");
    server.stop().await.unwrap();
}
