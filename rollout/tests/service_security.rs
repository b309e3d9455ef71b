//! The service's guards with a real server and client: the clients' API key (401), the
//! administrator's key and the weights directory of `/v1/weights` (403 / 401 / one answer for
//! every path it may not or cannot read, quoting nothing of a file), and the body limit (413).

mod service_support;

use rlvr_model::checkpoint::init_tensors;
use rlvr_model::ModelConfig;
use rlvr_rollout::engine::checksum_of;
use serde_json::{json, Value};
use service_support::{client, fixture, Options, Server, ADMIN_KEY};
use tch::{Kind, Tensor};

const PROMPT: [i64; 4] = [5, 17, 42, 3];

/// Asserts OpenAI's error shape with `status`, `param` and (when given) `code`.
fn assert_error(status: u16, body: &Value, want: u16, param: Option<&str>, code: Option<&str>, case: &str) {
    assert_eq!(status, want, "{case}: {body}");
    let err = &body["error"];
    assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()), "{case}: {body}");
    assert!(err["type"].is_string(), "{case}: {body}");
    assert_eq!(err["param"].as_str(), param, "{case}: {body}");
    let want_code = code.map_or_else(|| want.to_string(), str::to_string);
    assert_eq!(err["code"].as_str(), Some(want_code.as_str()), "{case}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_guards_client_routes_only() {
    let opts = Options { api_key: Some("sk-test".into()), ..Options::default() };
    let mut server = Server::start(&fixture("tiny-sparse"), opts).await;
    let body = json!({"prompt": PROMPT, "max_tokens": 2, "temperature": 0});
    for path in ["/v1/completions", "/v1/chat/completions"] {
        for key in [None, Some("sk-wrong"), Some("sk-tes"), Some("sk-test2")] {
            let (status, answer) = server.post_as(path, &body, key).await;
            assert_error(status, &answer, 401, None, Some("invalid_api_key"), &format!("{path} with {key:?}"));
        }
    }
    let resp = client().get(format!("{}/v1/models", server.url)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = client().get(format!("{}/v1/models", server.url)).bearer_auth("sk-test").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (status, answer) = server.post("/v1/completions", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["choices"][0]["logprobs"], Value::Null);
    // Monitoring stays open; the admin route has its own key, not the clients'.
    assert_eq!(server.get("/health").await.0, 200);
    assert_eq!(server.get("/metrics").await.0, 200);
    let (status, answer) =
        server.post_as("/v1/weights", &json!({"path": "x", "checksum": "00"}), Some("sk-test")).await;
    assert_error(status, &answer, 401, None, Some("invalid_api_key"), "the client key on the admin route");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_pushes_need_the_admin_key_and_stay_inside_the_weights_dir() {
    let dir = fixture("tiny-sparse");
    // Without an admin key nobody may push, whatever they send.
    let mut closed = Server::start(&dir, Options { admin_key: None, ..Options::default() }).await;
    for key in [None, Some(ADMIN_KEY)] {
        let (status, answer) =
            closed.post_as("/v1/weights", &json!({"path": "/etc/passwd", "checksum": "00"}), key).await;
        assert_error(status, &answer, 403, None, None, "pushes disabled");
    }
    closed.stop().await.unwrap();

    let root = tempfile::tempdir().unwrap();
    let allowed = root.path().join("weights");
    std::fs::create_dir(&allowed).unwrap();
    let cfg = ModelConfig::from_path(&dir).unwrap();
    let tensors = init_tensors(&cfg, 11, Kind::Float).unwrap();
    let checksum = format!("{:016x}", checksum_of(&tensors));
    Tensor::write_safetensors(&tensors, allowed.join("good.safetensors")).unwrap();
    // Outside the directory: a real safetensors file, a system file, a link out of the directory.
    Tensor::write_safetensors(&tensors, root.path().join("outside.safetensors")).unwrap();
    let secret = root.path().join("secret.txt");
    std::fs::write(&secret, "TOP-SECRET-CONTENT: hunter2\n").unwrap();
    std::os::unix::fs::symlink(&secret, allowed.join("link.safetensors")).unwrap();
    std::fs::write(allowed.join("text.safetensors"), "TOP-SECRET-CONTENT inside\n").unwrap();
    let opts = Options { weights_dir: Some(allowed.clone()), ..Options::default() };
    let mut server = Server::start(&dir, opts).await;

    let push = json!({"path": "good.safetensors", "checksum": checksum});
    let (status, answer) = server.post_as("/v1/weights", &push, None).await;
    assert_error(status, &answer, 401, None, Some("invalid_api_key"), "no admin key");
    let (status, answer) = server.post_as("/v1/weights", &push, Some("wrong")).await;
    assert_error(status, &answer, 401, None, Some("invalid_api_key"), "wrong admin key");

    let refused = [
        "/etc/passwd".to_string(),
        "/nonexistent/file".to_string(),
        "missing.safetensors".to_string(),
        "../outside.safetensors".to_string(),
        root.path().join("outside.safetensors").display().to_string(),
        secret.display().to_string(),
        "link.safetensors".to_string(),
        "text.safetensors".to_string(),
    ];
    let mut messages = Vec::new();
    for path in &refused {
        let (status, answer) = server.push_weights(&json!({"path": path, "checksum": checksum})).await;
        assert_error(status, &answer, 400, Some("path"), None, path);
        let message = answer["error"]["message"].as_str().unwrap().to_string();
        assert!(!message.contains("TOP-SECRET") && !message.contains("root:"), "{path}: {message}");
        assert!(!message.contains("header") && !message.contains("No such file"), "{path}: {message}");
        messages.push(message.replace(&format!("{path:?}"), "P"));
    }
    assert!(messages.windows(2).all(|w| w[0] == w[1]), "one answer for every refused path: {messages:?}");
    assert_eq!(server.metric("rlvr_policy_version").await, 0.0, "nothing was applied");

    let (status, answer) = server.push_weights(&push).await;
    assert_eq!((status, &answer["version"]), (200, &json!(1)), "{answer}");
    let absolute = json!({"path": allowed.join("good.safetensors"), "checksum": checksum});
    let (status, answer) = server.push_weights(&absolute).await;
    assert_eq!((status, &answer["version"]), (200, &json!(2)), "an absolute path inside is fine: {answer}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_gets_413_and_the_server_goes_on() {
    let limit = 1 << 20;
    let mut server =
        Server::start(&fixture("tiny-sparse"), Options { max_body_bytes: limit, ..Options::default() }).await;
    for (path, size) in
        [("/v1/completions", limit + 1), ("/v1/chat/completions", 3 * limit), ("/v1/completions", 50 << 20)]
    {
        let body = format!("{{\"prompt\": [5], \"padding\": \"{}\"}}", "x".repeat(size));
        let resp = client()
            .post(format!("{}{path}", server.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let answer: Value = resp.json().await.unwrap();
        assert_error(status, &answer, 413, Some("body"), None, &format!("{path} with {size} bytes"));
    }
    // Just under the limit is served.
    let pad = "x".repeat(limit - 200);
    let (status, answer) =
        server.post("/v1/completions", &json!({"prompt": PROMPT, "max_tokens": 1, "pad": pad})).await;
    assert_eq!(status, 200, "{answer}");
    server.stop().await.unwrap();
}
