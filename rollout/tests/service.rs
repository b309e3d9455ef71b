//! The HTTP service end to end: a real server on an ephemeral loopback port over the tiny fixtures,
//! a real HTTP client. Bad requests, concurrency, the bounded queue, agreement with the engine run
//! directly, streaming, seeds, weight updates mid-stream and refused pushes, chat, metrics,
//! disconnects, shutdown.

mod service_support;
mod support;

use rlvr_model::checkpoint::init_tensors;
use rlvr_model::ModelConfig;
use rlvr_rollout::chat::{encode_chat, parse_messages, ChatOptions};
use rlvr_rollout::engine::{checksum_of, Request};
use rlvr_rollout::tokenizer::Tokenizer;
use serde_json::{json, Value};
use service_support::{chat_model, fixture, Options, Server};
use std::time::{Duration, Instant};
use tch::{Kind, Tensor};

const PROMPT: [i64; 6] = [5, 17, 42, 3, 99, 120];

/// Asserts an OpenAI-style error naming `param`.
fn assert_error(status: u16, body: &Value, want_status: u16, param: Option<&str>, case: &str) {
    assert_eq!(status, want_status, "{case}: {body}");
    let err = &body["error"];
    assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()), "{case}: {body}");
    assert!(err["type"].is_string() && err["code"].is_string(), "{case}: {body}");
    assert_eq!(err["param"].as_str(), param, "{case}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_name_their_field_and_the_server_survives() {
    let mut server = Server::start(&fixture("tiny-sparse"), Options::default()).await;
    let long: Vec<i64> = (0..120).map(|i| i % 150).collect();
    let cases = [
        (json!({"model": "other", "prompt": PROMPT}), 404, "model"),
        (json!({"prompt": PROMPT, "max_tokens": -1}), 400, "max_tokens"),
        (json!({"prompt": PROMPT, "max_tokens": 1_000_000}), 400, "max_tokens"),
        (json!({"prompt": long}), 400, "prompt"),
        (json!({"prompt": PROMPT, "top_p": 0.0}), 400, "top_p"),
        (json!({"prompt": PROMPT, "top_p": 1.5}), 400, "top_p"),
        (json!({"prompt": PROMPT, "n": 0}), 400, "n"),
        (json!({"prompt": PROMPT, "n": 1000}), 400, "n"),
        (json!({"prompt": PROMPT, "temperature": -1.0}), 400, "temperature"),
        (json!({"prompt": PROMPT, "min_p": 2.0}), 400, "min_p"),
        (json!({"prompt": PROMPT, "top_k": -5}), 400, "top_k"),
        (json!({"prompt": "text needs a tokenizer"}), 400, "prompt"),
        (json!({"prompt": [5, 100000]}), 400, "prompt"),
        (json!({"prompt": []}), 400, "prompt"),
        (json!({"prompt": {"not": "a prompt"}}), 400, "prompt"),
        (json!({"prompt": PROMPT, "stop": "needs a tokenizer"}), 400, "stop"),
        (json!({"prompt": PROMPT, "max_tokens": "four"}), 400, "max_tokens"),
        (json!({"prompt": PROMPT, "response_format": {"type": "json_object"}}), 400, "response_format"),
        (json!({"prompt": PROMPT, "best_of": 2}), 400, "best_of"),
        (json!({"prompt": PROMPT, "suffix": "tail"}), 400, "suffix"),
        (json!({"prompt": PROMPT, "tool_choice": "required"}), 400, "tool_choice"),
        (json!({"prompt": PROMPT, "stream_options": {"include_usage": true}}), 400, "stream_options"),
        (json!({"prompt": PROMPT, "frequency_penalty": -2.5}), 400, "frequency_penalty"),
        (json!({"prompt": PROMPT, "repetition_penalty": 0}), 400, "repetition_penalty"),
        (json!({"prompt": PROMPT, "logit_bias": {"100000": 1}}), 400, "logit_bias"),
        (json!({"prompt": PROMPT, "logit_bias": {"5": 200}}), 400, "logit_bias"),
        (json!({"prompt": PROMPT, "logprobs": 21}), 400, "logprobs"),
    ];
    for (body, status, param) in &cases {
        let (got, answer) = server.post("/v1/completions", body).await;
        assert_error(got, &answer, *status, Some(param), &body.to_string());
    }
    let chat = json!({"messages": [{"role": "user", "content": "hi"}]});
    let (got, answer) = server.post("/v1/chat/completions", &chat).await;
    assert_error(got, &answer, 400, Some("messages"), "chat without a tokenizer");
    let resp = service_support::client()
        .post(format!("{}/v1/completions", server.url))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert_error(status, &resp.json().await.unwrap(), 400, Some("body"), "invalid JSON");
    let (got, answer) = server.push_weights(&json!({"path": "/nonexistent", "checksum": "zz"})).await;
    assert_error(got, &answer, 400, Some("checksum"), "bad checksum text");
    let (got, answer) = server.push_weights(&json!({"path": "/nonexistent", "checksum": "00"})).await;
    assert_error(got, &answer, 403, Some("path"), "paths without --weights-dir");
    let (status, health) = server.get("/health").await;
    assert_eq!(status, 200, "{health}");
    let (status, answer) = server.post("/v1/completions", &json!({"prompt": PROMPT, "max_tokens": 2})).await;
    assert_eq!(status, 200, "{answer}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_clients_are_all_answered() {
    let mut server = Server::start(&fixture("tiny-sparse"), Options { slots: 8, ..Options::default() }).await;
    let url = server.url.clone();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let prompt: Vec<i64> = (0..(3 + i % 5)).map(|j| (i * 7 + j * 3) % 190).collect();
                let body = json!({"prompt": prompt, "max_tokens": 3, "logprobs": 1, "ignore_eos": true, "seed": i});
                let resp =
                    service_support::client().post(format!("{url}/v1/completions")).json(&body).send().await.unwrap();
                (resp.status().as_u16(), resp.json::<Value>().await.unwrap(), prompt.len())
            })
        })
        .collect();
    for task in tasks {
        let (status, body, prompt_len) = task.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["object"], "text_completion");
        let choice = &body["choices"][0];
        assert_eq!(body["choices"].as_array().unwrap().len(), 1);
        assert_eq!(choice["finish_reason"], "length");
        assert_eq!(choice["logprobs"]["token_ids"].as_array().unwrap().len(), 3);
        assert_eq!(choice["logprobs"]["token_logprobs"].as_array().unwrap().len(), 3);
        assert_eq!(body["usage"]["prompt_tokens"], prompt_len);
        assert_eq!(body["usage"]["completion_tokens"], 3);
        assert!(body["system_fingerprint"].as_str().unwrap().starts_with("rlvr-v"));
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_and_serves_the_rest() {
    let opts = Options { slots: 1, max_queue: 1, ..Options::default() };
    let mut server = Server::start(&fixture("tiny-sparse"), opts).await;
    let body = json!({"prompt": PROMPT, "max_tokens": 40, "ignore_eos": true});
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (url, body) = (server.url.clone(), body.clone());
            tokio::spawn(async move {
                let resp =
                    service_support::client().post(format!("{url}/v1/completions")).json(&body).send().await.unwrap();
                (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let (mut ok, mut full) = (0, 0);
    for task in tasks {
        let (status, answer) = task.await.unwrap();
        match status {
            200 => ok += 1,
            429 => {
                assert_error(status, &answer, 429, None, "queue full");
                assert_eq!(answer["error"]["type"], "rate_limit_error");
                full += 1;
            }
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    assert!(ok >= 2 && full >= 1, "{ok} answered, {full} refused");
    assert!(server.metric("rlvr_requests_total{status=\"429\"}").await >= full as f64);
    server.stop().await.unwrap();
}

/// The choice's generated ids and log-probs.
fn ids_and_logprobs(choice: &Value) -> (Vec<i64>, Vec<f64>) {
    let ids = choice["logprobs"]["token_ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    let lps = choice["logprobs"]["token_logprobs"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    (ids, lps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_http_equals_the_engine_and_streaming_equals_the_whole() {
    let mut engine = support::engine("tiny-sparse", 4, 512);
    let mut request = Request::new(PROMPT.to_vec());
    (request.sampling.max_tokens, request.sampling.temperature) = (12, 0.0);
    let direct = support::run_all(&mut engine, vec![request]).remove(0).samples.remove(0);
    let mut server = Server::start(&fixture("tiny-sparse"), Options::default()).await;
    let body = json!({"prompt": PROMPT, "max_tokens": 12, "temperature": 0, "logprobs": 1, "ignore_eos": true});
    let (status, answer) = server.post("/v1/completions", &body).await;
    assert_eq!(status, 200, "{answer}");
    let (ids, lps) = ids_and_logprobs(&answer["choices"][0]);
    assert_eq!(ids, direct.ids());
    for (got, want) in lps.iter().zip(direct.logprobs()) {
        assert!((got - want as f64).abs() <= 1e-6, "{got} vs {want}");
    }
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let (status, chunks, done) = server.post_stream("/v1/completions", &streamed).await;
    assert_eq!(status, 200);
    assert!(done, "the stream ends with [DONE]");
    let (mut s_ids, mut s_lps) = (Vec::new(), Vec::new());
    for c in &chunks[..chunks.len() - 1] {
        let (i, l) = ids_and_logprobs(&c["choices"][0]);
        s_ids.extend(i);
        s_lps.extend(l);
    }
    assert_eq!((s_ids, s_lps), (ids, lps));
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "length");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_samples_and_seeds_reproduce() {
    let mut server = Server::start(&fixture("tiny-sparse"), Options::default()).await;
    let body = |seed: u64| {
        json!({"prompt": PROMPT, "max_tokens": 8, "n": 3, "seed": seed, "logprobs": true, "ignore_eos": true,
            "return_token_ids": true, "return_sampling_mask": true, "top_k": 20})
    };
    let samples = |answer: &Value| -> Vec<Vec<i64>> {
        let choices = answer["choices"].as_array().unwrap();
        assert_eq!(choices.len(), 3);
        choices.iter().map(|c| ids_and_logprobs(c).0).collect()
    };
    let (_, first) = server.post("/v1/completions", &body(42)).await;
    let (_, again) = server.post("/v1/completions", &body(42)).await;
    let (_, other) = server.post("/v1/completions", &body(43)).await;
    assert_eq!(samples(&first), samples(&again), "the same seed gives the same samples");
    assert_ne!(samples(&first), samples(&other), "another seed gives other samples");
    let s = samples(&first);
    assert!(s[0] != s[1] || s[1] != s[2], "the n samples draw from their own streams");
    let choice = &first["choices"][1];
    assert_eq!(choice["index"], 1);
    assert_eq!(choice["token_ids"], choice["logprobs"]["token_ids"]);
    assert_eq!(choice["prompt_token_ids"], json!(PROMPT));
    let masks = choice["sampling_mask"].as_array().unwrap();
    assert!(masks.iter().all(|m| m.as_array().unwrap().len() == 20), "top-k 20 keeps 20 ids");
    server.stop().await.unwrap();
}

/// The fingerprint version of a chunk.
fn chunk_version(chunk: &Value) -> u64 {
    chunk["system_fingerprint"].as_str().unwrap().strip_prefix("rlvr-v").unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weight_update_mid_stream_shows_as_a_new_version() {
    let dir = fixture("tiny-sparse");
    let tmp = tempfile::tempdir().unwrap();
    let opts = Options { context: 1024, weights_dir: Some(tmp.path().to_path_buf()), ..Options::default() };
    let mut server = Server::start(&dir, opts).await;
    let cfg = ModelConfig::from_path(&dir).unwrap();
    let tensors = init_tensors(&cfg, 7, Kind::Float).unwrap();
    let file = tmp.path().join("new.safetensors");
    Tensor::write_safetensors(&tensors, &file).unwrap();
    let checksum = format!("{:016x}", checksum_of(&tensors));
    let body = json!({"prompt": PROMPT, "max_tokens": 900, "temperature": 0, "ignore_eos": true, "stream": true,
        "return_token_ids": true});
    let stream = {
        let url = server.url.clone();
        tokio::spawn(async move { Server::attach(&url).post_stream("/v1/completions", &body).await })
    };
    let start = Instant::now();
    while server.metric("rlvr_active_slots").await < 1.0 {
        assert!(start.elapsed() < Duration::from_secs(10), "the request never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, answer) = server.push_weights(&json!({"path": file, "checksum": "0123456789abcdef"})).await;
    assert_error(status, &answer, 409, Some("checksum"), "wrong checksum");
    let (status, answer) = server.push_weights(&json!({"path": "new.safetensors", "checksum": checksum})).await;
    assert_eq!((status, &answer["version"]), (200, &json!(1)), "{answer}");
    let (status, chunks, done) = stream.await.unwrap();
    assert!(status == 200 && done);
    let versions: Vec<u64> = chunks.iter().map(chunk_version).collect();
    assert_eq!(versions[0], 0, "tokens before the update carry version 0");
    assert_eq!(*versions.last().unwrap(), 1, "tokens after it carry version 1");
    assert!(versions.windows(2).all(|w| w[0] <= w[1]));
    let bytes = std::fs::read(&file).unwrap();
    let resp = service_support::client()
        .post(format!("{}/v1/weights", server.url))
        .bearer_auth(service_support::ADMIN_KEY)
        .header("x-rlvr-checksum", "ffff")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 409);
    assert_eq!(resp.headers()["x-rlvr-policy-version"], "1", "a refused update leaves the version");
    let resp = service_support::client()
        .post(format!("{}/v1/weights", server.url))
        .bearer_auth(service_support::ADMIN_KEY)
        .header("x-rlvr-checksum", checksum.as_str())
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap()["version"], 2);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_that_is_not_safetensors_or_cannot_be_spilled_is_refused_naming_why() {
    let tmp = tempfile::tempdir().unwrap();
    let spill = tmp.path().join("weights");
    std::fs::create_dir(&spill).unwrap();
    let opts = Options { weights_dir: Some(spill.clone()), ..Options::default() };
    let mut server = Server::start(&fixture("tiny-sparse"), opts).await;
    let push = |body: &'static str| {
        service_support::client()
            .post(format!("{}/v1/weights", server.url))
            .bearer_auth(service_support::ADMIN_KEY)
            .header("x-rlvr-checksum", "00")
            .body(body)
            .send()
    };
    let resp = push("not tensors").await.unwrap();
    let status = resp.status().as_u16();
    let answer: Value = resp.json().await.unwrap();
    assert_error(status, &answer, 400, Some("body"), "not safetensors");
    assert!(answer["error"]["message"].as_str().unwrap().contains("not safetensors"), "{answer}");
    std::fs::remove_dir(&spill).unwrap();
    let resp = push("anything").await.unwrap();
    assert_eq!(resp.headers()["x-rlvr-policy-version"], "0");
    let status = resp.status().as_u16();
    let answer: Value = resp.json().await.unwrap();
    assert_error(status, &answer, 500, None, "no spill directory");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains(spill.to_str().unwrap()) && message.contains("No such file"), "{message}");
    let (status, _) = server.post("/v1/completions", &json!({"prompt": PROMPT, "max_tokens": 2})).await;
    assert_eq!(status, 200, "the server goes on");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_renders_the_v32_prompt_and_parses_the_reply() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = chat_model(tmp.path());
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let mut server = Server::start(&dir, Options { context: 256, ..Options::default() }).await;
    let messages = json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]);
    for thinking in [false, true] {
        let body = json!({"messages": messages, "max_tokens": 12, "temperature": 0, "return_prompt": true,
            "return_token_ids": true, "logprobs": true, "chat_template_kwargs": {"thinking": thinking}});
        let (status, answer) = server.post("/v1/chat/completions", &body).await;
        assert_eq!(status, 200, "{answer}");
        let opts = ChatOptions { thinking, ..ChatOptions::default() };
        let want = encode_chat(&parse_messages(&messages).unwrap(), &[], &opts).unwrap();
        assert_eq!(answer["prompt"], json!(want));
        assert!(want.ends_with(if thinking { "<think>" } else { "</think>" }));
        assert_eq!(answer["usage"]["prompt_tokens"], tok.encode(&want, false).unwrap().len());
        let choice = &answer["choices"][0];
        assert_eq!(choice["message"]["role"], "assistant");
        let ids: Vec<i64> = serde_json::from_value(choice["token_ids"].clone()).unwrap();
        let text = tok.decode(&ids, false).unwrap();
        let message = &choice["message"];
        let shown =
            format!("{}{}", message["reasoning_content"].as_str().unwrap_or(""), message["content"].as_str().unwrap());
        let markers = ["</think>", "<｜end▁of▁sentence｜>"];
        assert_eq!(shown, markers.iter().fold(text.clone(), |t, m| t.replace(m, "")), "reply {text:?}");
        assert_eq!(choice["logprobs"]["content"].as_array().unwrap().len(), ids.len());
        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        let (_, chunks, done) = server.post_stream("/v1/chat/completions", &streamed).await;
        assert!(done);
        let deltas: String = chunks
            .iter()
            .map(|c| &c["choices"][0]["delta"])
            .map(|d| {
                format!("{}{}", d["reasoning_content"].as_str().unwrap_or(""), d["content"].as_str().unwrap_or(""))
            })
            .collect();
        assert_eq!(deltas, shown, "streamed deltas add up to the reply");
    }
    let (status, answer) = server.post("/v1/completions", &json!({"prompt": "hello world", "max_tokens": 4})).await;
    assert_eq!(status, 200, "text prompts work with a tokenizer: {answer}");
    assert!(answer["choices"][0]["text"].is_string());
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move() {
    let mut server = Server::start(&fixture("tiny-sparse"), Options::default()).await;
    let (status, text) = server.get("/metrics").await;
    assert_eq!(status, 200);
    let names: Vec<String> = service_support::parse_prometheus(&text).into_iter().map(|s| s.0).collect();
    for name in [
        "rlvr_queue_depth",
        "rlvr_active_slots",
        "rlvr_tokens_generated_total",
        "rlvr_tokens_per_second",
        "rlvr_policy_version",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} missing from\n{text}");
    }
    let ok = "rlvr_requests_total{status=\"200\"}";
    let (tokens, answered) = (server.metric("rlvr_tokens_generated_total").await, server.metric(ok).await);
    let (status, _) =
        server.post("/v1/completions", &json!({"prompt": PROMPT, "max_tokens": 5, "ignore_eos": true})).await;
    assert_eq!(status, 200);
    assert_eq!(server.metric("rlvr_tokens_generated_total").await, tokens + 5.0);
    assert!(server.metric(ok).await >= answered + 2.0, "the completion and the metrics read are counted");
    assert!(server.metric("rlvr_tokens_per_second").await > 0.0);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_stream_frees_its_slot() {
    let mut server = Server::start(&fixture("tiny-sparse"), Options { context: 4096, ..Options::default() }).await;
    let body = json!({"prompt": PROMPT, "max_tokens": 4000, "ignore_eos": true, "stream": true});
    let resp =
        service_support::client().post(format!("{}/v1/completions", server.url)).json(&body).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let start = Instant::now();
    while server.metric("rlvr_active_slots").await < 1.0 {
        assert!(start.elapsed() < Duration::from_secs(10), "the request never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(resp);
    while server.metric("rlvr_aborted_total").await < 1.0 || server.metric("rlvr_active_slots").await > 0.0 {
        assert!(start.elapsed() < Duration::from_secs(10), "the request was not aborted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(server.metric("rlvr_tokens_generated_total").await < 4000.0);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_aborts_requests_in_flight_after_the_grace_period() {
    let opts = Options { context: 4096, grace: Duration::from_millis(300), ..Options::default() };
    let mut server = Server::start(&fixture("tiny-sparse"), opts).await;
    let body = json!({"prompt": PROMPT, "max_tokens": 4000, "ignore_eos": true});
    let request = {
        let url = server.url.clone();
        tokio::spawn(async move { Server::attach(&url).post("/v1/completions", &body).await })
    };
    let start = Instant::now();
    while server.metric("rlvr_active_slots").await < 1.0 {
        assert!(start.elapsed() < Duration::from_secs(10), "the request never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.stop().await.unwrap();
    let (status, answer) = request.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["choices"][0]["finish_reason"], "abort");
    let generated = answer["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(generated > 0 && generated < 4000, "{generated} tokens before the abort");
}
