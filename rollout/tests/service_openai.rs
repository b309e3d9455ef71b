//! The service driven by the official `openai` Python client (`tests/openai_client.py`, run with
//! the project's `.venv` python; `bash scripts/pip-pin.sh openai 3.51.0` installs the client):
//! completions and chat, streamed and not, `n`, `include_usage`, tools, refusals, the API key and
//! the body limit. The values the client got back are checked here against the model: log-probs
//! and `top_logprobs` against the log-softmax of a full forward over the finished sequence
//! (penalised by the rules of `engine::Penalties` where asked for).

mod service_support;

use rlvr_model::{AttentionMode, DeepseekV32};
use serde_json::Value;
use service_support::{chat_model, load, Options, Server};
use std::path::PathBuf;
use tch::{Kind, Tensor};

/// The workspace's python, which must import `openai`.
fn python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let probe = std::process::Command::new(&python).args(["-c", "import openai"]).output();
    match probe {
        Ok(out) if out.status.success() => python,
        _ => panic!("{} cannot import openai: run `bash scripts/pip-pin.sh openai 3.51.0`", python.display()),
    }
}

/// Logit rows (L, V) of a full forward over `seq`.
fn logit_rows(model: &DeepseekV32, seq: &[i64]) -> Vec<Vec<f64>> {
    let tokens = Tensor::from_slice(seq).unsqueeze(0);
    let logits = tch::no_grad(|| model.forward(&tokens, AttentionMode::Sparse)).get(0).to_kind(Kind::Double);
    let v = logits.size()[1] as usize;
    let flat = Vec::<f64>::try_from(logits.flatten(0, -1)).unwrap();
    flat.chunks(v).map(<[f64]>::to_vec).collect()
}

/// `row` adjusted by OpenAI's penalties and bias and vLLM's repetition penalty, then log-softmaxed.
fn penalised(
    row: &[f64],
    prompt: &[i64],
    generated: &[i64],
    (presence, frequency, repetition): (f64, f64, f64),
    bias: &[(i64, f64)],
) -> Vec<f64> {
    let adjusted: Vec<f64> = (0..row.len() as i64)
        .map(|id| {
            let mut l = row[id as usize] + bias.iter().filter(|b| b.0 == id).map(|b| b.1).sum::<f64>();
            let count = generated.iter().filter(|&&g| g == id).count() as f64;
            if count > 0.0 || prompt.contains(&id) {
                l = if l > 0.0 { l / repetition } else { l * repetition };
            }
            l - frequency * count - if count > 0.0 { presence } else { 0.0 }
        })
        .collect();
    let max = adjusted.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let z = adjusted.iter().map(|l| (l - max).exp()).sum::<f64>().ln() + max;
    adjusted.iter().map(|l| l - z).collect()
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

/// The logit rows that scored each generated token of a choice.
fn rows_of(model: &DeepseekV32, choice: &Value) -> (Vec<i64>, Vec<i64>, Vec<Vec<f64>>) {
    let (prompt, gen) = (ids(&choice["prompt_token_ids"]), ids(&choice["token_ids"]));
    let seq: Vec<i64> = prompt.iter().chain(&gen).copied().collect();
    let rows = logit_rows(model, &seq)[prompt.len() - 1..seq.len() - 1].to_vec();
    (prompt, gen, rows)
}

/// Asserts `alts` ((id, log-prob), most likely first) are the top of `row`.
fn assert_top(alts: &[(i64, f64)], row: &[f64], case: &str) {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
    for (k, &(id, lp)) in alts.iter().enumerate() {
        assert!((lp - row[id as usize]).abs() < 2e-3, "{case}: alternative {k}: {lp} vs {}", row[id as usize]);
        assert!(
            (row[id as usize] - row[order[k]]).abs() < 2e-3,
            "{case}: alternative {k} is not the {k}-th most likely"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_client_gets_every_field_honoured_or_refused() {
    let python = python();
    let tmp = tempfile::tempdir().unwrap();
    let dir = chat_model(tmp.path());
    let limit = 1 << 20;
    let opts = Options { api_key: Some("sk-rlvr".into()), max_body_bytes: limit, context: 1536, ..Options::default() };
    let mut server = Server::start(&dir, opts).await;
    let out_path = tmp.path().join("out.json");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/openai_client.py");
    let (url, out_arg) = (server.url.clone(), out_path.display().to_string());
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .args([url.as_str(), "sk-rlvr", &limit.to_string(), &out_arg])
            .output()
    });
    let output = run.await.unwrap().unwrap();
    assert!(
        output.status.success(),
        "openai_client.py failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    server.stop().await.unwrap();
    let out: Value = serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap();
    let (model, _vs) = load(&dir);

    // Completions: each token's log-prob and its three alternatives are the model's log-softmax.
    let plain = |row: &Vec<f64>| penalised(row, &[], &[], (0.0, 0.0, 1.0), &[]);
    for choice in out["completion"]["choices"].as_array().unwrap() {
        let (_, gen, rows) = rows_of(&model, choice);
        let rows: Vec<Vec<f64>> = rows.iter().map(plain).collect();
        let lp = &choice["logprobs"];
        for (i, row) in rows.iter().enumerate() {
            let case = format!("completion token {i}");
            let got = lp["token_logprobs"][i].as_f64().unwrap();
            assert!((got - row[gen[i] as usize]).abs() < 2e-3, "{case}: {got} vs {}", row[gen[i] as usize]);
            let alts: Vec<(i64, f64)> = lp["top_ids"][i]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap()))
                .collect();
            assert_eq!(alts.len(), 3, "{case}");
            assert_top(&alts, row, &case);
            let by_text = lp["top_logprobs"][i].as_object().unwrap();
            assert!(by_text.values().all(|v| alts.iter().any(|a| (a.1 - v.as_f64().unwrap()).abs() < 1e-6)), "{case}");
        }
    }
    // Chat: the same for `logprobs.content[].top_logprobs`.
    for choice in out["chat"]["choices"].as_array().unwrap() {
        let (_, gen, rows) = rows_of(&model, choice);
        let rows: Vec<Vec<f64>> = rows.iter().map(plain).collect();
        let content = choice["logprobs"]["content"].as_array().unwrap();
        assert_eq!(content.len(), gen.len());
        for (i, (entry, row)) in content.iter().zip(&rows).enumerate() {
            let alts: Vec<(i64, f64)> = entry["top_logprobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| (a["token_id"].as_i64().unwrap(), a["logprob"].as_f64().unwrap()))
                .collect();
            assert_top(&alts, row, &format!("chat token {i}"));
            assert!((entry["logprob"].as_f64().unwrap() - row[gen[i] as usize]).abs() < 2e-3);
        }
    }
    assert_eq!(
        out["chat_stream_usage"]["total_tokens"],
        out["chat_stream_usage"]["prompt_tokens"].as_i64().unwrap() + 4
    );
    // Penalties and bias: each recorded log-prob is of the penalised distribution.
    let choice = &out["penalised"]["choices"][0];
    let (prompt, gen, rows) = rows_of(&model, choice);
    let mut moved: f64 = 0.0;
    for (i, row) in rows.iter().enumerate() {
        let want = penalised(row, &prompt, &gen[..i], (0.8, 0.5, 1.3), &[(5, 2.0)]);
        let got = choice["logprobs"]["token_logprobs"][i].as_f64().unwrap();
        assert!((got - want[gen[i] as usize]).abs() < 2e-3, "penalised token {i}: {got} vs {}", want[gen[i] as usize]);
        moved = moved.max((got - plain(row)[gen[i] as usize]).abs());
    }
    assert!(moved > 1e-2, "the penalties changed the distribution");
    assert_eq!(ids(&out["forced"]["choices"][0]["token_ids"]), vec![42; 4], "a +100 bias forces its id");
    // Tools as given, and `enable_thinking` as an alias of `thinking`.
    let prompt = out["tools"]["prompt"].as_str().unwrap();
    let line = r#"{"name": "get_weather", "strict": true, "description": null, "parameters": {"type": "object", "properties": {"t": {"type": "number", "minimum": 1e-05, "maximum": 123456789012345678901234567890}}}}"#;
    assert!(prompt.contains(&format!("<functions>\n{line}\n</functions>\n")), "{prompt}");
    assert!(prompt.ends_with("<｜Assistant｜><think>"), "{prompt}");
    // Errors: status, OpenAI's shape, the field named.
    let cases = [
        ("json_object", 400, Some("response_format")),
        ("json_schema", 400, Some("response_format")),
        ("temperature", 400, Some("temperature")),
        ("model", 404, Some("model")),
        ("logit_bias", 400, Some("logit_bias")),
        ("presence_penalty", 400, Some("presence_penalty")),
        ("top_logprobs", 400, Some("top_logprobs")),
        ("too_large", 413, Some("body")),
        ("api_key", 401, None),
        ("admin", 401, None),
    ];
    for (name, status, param) in cases {
        let e = &out["errors"][name];
        assert_eq!(e["status"], status, "{name}: {e}");
        let body = e["body"].get("error").unwrap_or(&e["body"]);
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()) && body["type"].is_string(), "{name}: {e}");
        assert_eq!(body["param"].as_str(), param, "{name}: {e}");
    }
    assert_eq!(out["errors"]["api_key"]["kind"], "AuthenticationError");
}
