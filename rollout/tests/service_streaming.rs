//! Token-by-token streaming of the HTTP service: a streamed request's first chunks arrive while the
//! engine is still generating it, and the streamed pieces add up to the non-streamed answer for
//! the same seed (stop strings and characters split across tokens included).

mod service_support;

use serde_json::{json, Value};
use service_support::{chat_model, Options, Server, SseReader};

/// Tokens of the long requests: far more than a client needs to see its first chunk.
const MAX_TOKENS: usize = 1500;

/// Reads the rest of a stream: its chunks, and whether `[DONE]` ended it.
async fn rest(reader: &mut SseReader) -> (Vec<Value>, bool) {
    let mut chunks = Vec::new();
    while let Some(data) = reader.next().await {
        if data == "[DONE]" {
            return (chunks, reader.next().await.is_none());
        }
        chunks.push(serde_json::from_str(&data).unwrap());
    }
    (chunks, false)
}

/// Asserts that the request just streamed is still running, well short of `MAX_TOKENS`.
async fn assert_still_generating(server: &Server) {
    let generated = server.metric("rlvr_tokens_generated_total").await;
    let active = server.metric("rlvr_active_slots").await;
    assert!(active >= 1.0, "the request had ended when its first chunk arrived ({generated} tokens)");
    assert!(generated < MAX_TOKENS as f64 / 2.0, "{generated} of {MAX_TOKENS} tokens were drawn first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_chunks_arrive_while_the_request_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = chat_model(tmp.path());
    let mut server = Server::start(&dir, Options { context: 2048, ..Options::default() }).await;
    let body = json!({"prompt": "hello world", "max_tokens": MAX_TOKENS, "ignore_eos": true, "seed": 7,
        "logprobs": 1, "stream": true});
    let mut reader = SseReader::post(&server, "/v1/completions", &body).await;
    let first = reader.next_chunk().await.expect("a first chunk");
    assert_eq!(first["choices"][0]["finish_reason"], Value::Null, "{first}");
    assert_still_generating(&server).await;
    let (mut chunks, done) = rest(&mut reader).await;
    assert!(done, "the stream ends with [DONE]");
    chunks.insert(0, first);
    assert_eq!(chunks.len(), MAX_TOKENS + 1, "one chunk per token, then the finish reason");
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "length");
    let streamed: String = chunks.iter().map(|c| c["choices"][0]["text"].as_str().unwrap()).collect();
    let ids: Vec<Value> =
        chunks.iter().filter_map(|c| c["choices"][0]["logprobs"]["token_ids"].get(0).cloned()).collect();
    let mut whole = body.clone();
    whole["stream"] = json!(false);
    let (status, answer) = server.post("/v1/completions", &whole).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(json!(ids), answer["choices"][0]["logprobs"]["token_ids"], "the same seed draws the same tokens");
    assert_eq!(streamed, answer["choices"][0]["text"].as_str().unwrap(), "the chunks add up to the text");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_text_with_stop_strings_adds_up_to_the_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = chat_model(tmp.path());
    let mut server = Server::start(&dir, Options { context: 256, ..Options::default() }).await;
    let mut stopped = 0;
    for seed in 0..8 {
        let body = json!({"prompt": "hello world", "max_tokens": 48, "ignore_eos": true, "seed": seed,
            "stop": ["a", "e", "th", "o"], "stream": true, "n": 2});
        let (_, chunks, done) = server.post_stream("/v1/completions", &body).await;
        assert!(done);
        let mut whole = body.clone();
        whole["stream"] = json!(false);
        let (status, answer) = server.post("/v1/completions", &whole).await;
        assert_eq!(status, 200, "{answer}");
        for index in 0..2 {
            let mine: Vec<&Value> = chunks.iter().map(|c| &c["choices"][0]).filter(|c| c["index"] == index).collect();
            let text: String = mine.iter().map(|c| c["text"].as_str().unwrap()).collect();
            let want = &answer["choices"][index];
            assert_eq!(text, want["text"].as_str().unwrap(), "seed {seed} choice {index}");
            assert_eq!(mine.last().unwrap()["finish_reason"], want["finish_reason"]);
            stopped += usize::from(want["finish_reason"] == "stop");
        }
    }
    assert!(stopped > 0, "some sample ended by a stop string");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_deltas_arrive_while_the_request_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = chat_model(tmp.path());
    let mut server = Server::start(&dir, Options { context: 2048, ..Options::default() }).await;
    let body = json!({"messages": [{"role": "user", "content": "Say something."}], "max_tokens": MAX_TOKENS,
        "ignore_eos": true, "seed": 11, "stream": true, "chat_template_kwargs": {"thinking": false}});
    let mut reader = SseReader::post(&server, "/v1/chat/completions", &body).await;
    let role = reader.next_chunk().await.expect("a role chunk");
    assert_eq!(role["choices"][0]["delta"]["role"], "assistant", "{role}");
    let first = reader.next_chunk().await.expect("a first token chunk");
    assert_eq!(first["choices"][0]["finish_reason"], Value::Null, "{first}");
    assert!(first["choices"][0]["delta"]["content"].is_string(), "{first}");
    assert_still_generating(&server).await;
    let (chunks, done) = rest(&mut reader).await;
    assert!(done, "the stream ends with [DONE]");
    assert_eq!(chunks.len(), MAX_TOKENS, "one chunk per token (the first read above), then the finish");
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "length");
    let delta = |c: &Value, key: &str| c["choices"][0]["delta"][key].as_str().unwrap_or("").to_string();
    let streamed: String =
        std::iter::once(&first).chain(&chunks).map(|c| delta(c, "reasoning_content") + &delta(c, "content")).collect();
    let mut whole = body.clone();
    whole["stream"] = json!(false);
    let (status, answer) = server.post("/v1/chat/completions", &whole).await;
    assert_eq!(status, 200, "{answer}");
    let message = &answer["choices"][0]["message"];
    let shown =
        format!("{}{}", message["reasoning_content"].as_str().unwrap_or(""), message["content"].as_str().unwrap());
    assert_eq!(streamed, shown, "the deltas add up to the reply");
    server.stop().await.unwrap();
}
