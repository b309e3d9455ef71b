//! `rlvr generate` through the built binary: greedy decoding reproduces transformers' full-forward
//! greedy sequences, its log-probs are `rlvr score`'s teacher-forced ones, batching and `--n` do
//! not change a prompt's samples, top-k 1 is greedy, eos stops with "stop", text goes through
//! `tokenizer.json`, and bad input fails before generation with a message naming the field or line.

mod common;

use common::{fixture, rlvr};
use serde_json::Value;
use std::process::Output;
use tch::Tensor;

const TOL: f64 = 1e-4;

/// The JSON lines of a successful run's stdout.
fn lines(out: &Output) -> Vec<Value> {
    assert!(out.status.success(), "rlvr failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

/// A failed run's stderr (asserting that it failed and wrote nothing to stdout).
fn failure(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure, got {}", String::from_utf8_lossy(&out.stdout));
    assert!(out.stdout.is_empty(), "nothing is generated before the inputs are checked");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn csv(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

/// The fixture's greedy prompt and transformers' 32 greedy tokens.
fn greedy_reference(name: &str) -> (Vec<i64>, Vec<i64>) {
    let tensors = Tensor::read_safetensors(fixture(name).join("reference.safetensors")).unwrap();
    let get = |key: &str| {
        let t = &tensors.iter().find(|(k, _)| k == key).unwrap().1;
        Vec::<i64>::try_from(t).unwrap()
    };
    (get("greedy_prompt"), get("greedy_tokens"))
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// A temp model dir whose files link to `name`'s, with `config.json` edited by `edit`.
fn model_copy(name: &str, edit: impl Fn(&mut Value)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let path = entry.unwrap().path();
        std::os::unix::fs::symlink(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let config = dir.path().join("config.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::remove_file(&config).unwrap();
    std::fs::write(&config, cfg.to_string()).unwrap();
    dir
}

#[test]
fn greedy_reproduces_the_reference_and_its_logprobs_are_the_scored_ones() {
    for name in ["tiny-dense", "tiny-sparse", "tiny-sharded"] {
        let (prompt, expected) = greedy_reference(name);
        let model = fixture(name);
        let model = model.to_str().unwrap();
        let args = ["generate", "--model", model, "--prompt-ids", &csv(&prompt), "--max-new-tokens", "32"];
        let out = lines(&rlvr(&[&args[..], &["--temperature", "0", "--ignore-eos"]].concat()));
        assert_eq!(out.len(), 1, "{name}");
        let c = &out[0];
        assert_eq!(ints(&c["tokens"]), expected, "{name}: greedy tokens");
        assert_eq!(c["finish_reason"], "length");
        assert_eq!(c["prompt_index"], 0);
        assert!(c.get("text").is_none(), "{name} has no tokenizer.json, so no text");
        // Teacher-forced log-probs of prompt + completion at the generated positions.
        let tmp = tempfile::tempdir().unwrap();
        let seqs = tmp.path().join("seqs.jsonl");
        let full: Vec<i64> = prompt.iter().chain(&expected).copied().collect();
        std::fs::write(&seqs, format!("{}\n", serde_json::json!({ "tokens": full }))).unwrap();
        let scored = lines(&rlvr(&["score", "--model", model, "--input", seqs.to_str().unwrap()]));
        let scored = floats(&scored[0]["logprobs"]);
        let d = max_diff(&floats(&c["logprobs"]), &scored[prompt.len() - 1..]);
        assert!(d <= TOL, "{name}: generate vs score log-probs differ by {d:e}");
    }
}

/// Runs `generate` on tiny-sparse with nucleus sampling at temperature 1.
fn sample(source: &[&str], seed: u64, n: usize) -> Vec<Value> {
    let model = fixture("tiny-sparse");
    let (seed, n) = (seed.to_string(), n.to_string());
    let opts = ["--temperature", "1", "--top-p", "0.9", "--seed", &seed, "--n", &n, "--max-new-tokens", "12"];
    let base = ["generate", "--model", model.to_str().unwrap(), "--ignore-eos"];
    lines(&rlvr(&[&base[..], source, &opts[..]].concat()))
}

#[test]
fn batched_prompts_and_n_samples_match_each_prompt_alone() {
    let prompts: [&[i64]; 3] = [&[5, 9, 17, 3], &[40, 41], &[7, 100, 8, 9, 10, 11, 150]];
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("prompts.jsonl");
    let body: String = prompts.iter().map(|p| format!("{}\n", serde_json::json!({ "prompt_ids": p }))).collect();
    std::fs::write(&input, body).unwrap();
    let batch = sample(&["--input", input.to_str().unwrap()], 11, 2);
    assert_eq!(batch.len(), 6, "two samples per prompt, prompt-major");
    for (i, prompt) in prompts.iter().enumerate() {
        // Prompt i of a file with seed s is that prompt alone with seed s + i.
        let alone = sample(&["--prompt-ids", &csv(prompt)], 11 + i as u64, 1);
        for j in 0..2 {
            assert_eq!(batch[2 * i + j]["prompt_index"], i as u64);
        }
        let first = &batch[2 * i];
        assert_eq!(ints(&first["tokens"]), ints(&alone[0]["tokens"]), "prompt {i}");
        let d = max_diff(&floats(&first["logprobs"]), &floats(&alone[0]["logprobs"]));
        assert!(d <= TOL, "prompt {i}: {d:e}");
        assert_ne!(first["tokens"], batch[2 * i + 1]["tokens"], "prompt {i}: samples differ");
        let lp = floats(&first["logprobs"]);
        assert!(lp.iter().all(|&x| x <= 0.0 && x > -10.0), "top-p log-probs are renormalised: {lp:?}");
    }
    assert_ne!(batch[0]["tokens"], sample(&["--input", input.to_str().unwrap()], 12, 1)[0]["tokens"]);
}

#[test]
fn drawing_on_the_device_gives_the_hosts_samples() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("prompts.jsonl");
    let body: String = [[5i64, 9, 17, 3], [40, 41, 42, 43]]
        .iter()
        .map(|p| format!("{}\n", serde_json::json!({ "prompt_ids": p })))
        .collect();
    std::fs::write(&input, body).unwrap();
    let source = ["--input", input.to_str().unwrap()];
    let host = sample(&[&source[..], &["--draw", "host"]].concat(), 3, 3);
    let device = sample(&[&source[..], &["--draw", "device"]].concat(), 3, 3);
    assert_eq!(host.len(), 6);
    for (h, d) in host.iter().zip(&device) {
        assert_eq!(ints(&h["tokens"]), ints(&d["tokens"]));
        assert!(max_diff(&floats(&h["logprobs"]), &floats(&d["logprobs"])) <= 1e-6);
    }
    let model = fixture("tiny-dense");
    let args = ["generate", "--model", model.to_str().unwrap(), "--prompt-ids", "3,4", "--draw", "gpu"];
    let err = failure(&rlvr(&args));
    assert!(err.contains("--draw") && err.contains("auto, host or device"), "{err}");
}

#[test]
fn top_k_one_is_greedy() {
    let (prompt, expected) = greedy_reference("tiny-dense");
    let model = fixture("tiny-dense");
    let ids = csv(&prompt);
    let args = ["generate", "--model", model.to_str().unwrap(), "--prompt-ids", &ids, "--max-new-tokens", "32"];
    let out =
        lines(&rlvr(&[&args[..], &["--temperature", "0.7", "--top-k", "1", "--ignore-eos", "--seed", "3"]].concat()));
    assert_eq!(ints(&out[0]["tokens"]), expected);
    // The sampled distribution has one id, so each draw had probability 1.
    assert!(floats(&out[0]["logprobs"]).iter().all(|&x| x.abs() < 1e-6));
}

#[test]
fn eos_stops_a_completion_with_reason_stop() {
    let (prompt, expected) = greedy_reference("tiny-dense");
    let eos = expected[5];
    let first = expected.iter().position(|&t| t == eos).unwrap();
    let dir = model_copy("tiny-dense", |cfg| cfg["eos_token_id"] = serde_json::json!([126, eos]));
    let model = dir.path().to_str().unwrap();
    let ids = csv(&prompt);
    let args = ["generate", "--model", model, "--prompt-ids", &ids, "--max-new-tokens", "32", "--temperature", "0"];
    let out = lines(&rlvr(&args));
    assert_eq!(ints(&out[0]["tokens"]), expected[..=first].to_vec());
    assert_eq!(out[0]["finish_reason"], "stop");
    let out = lines(&rlvr(&[&args[..], &["--ignore-eos"]].concat()));
    assert_eq!(ints(&out[0]["tokens"]), expected);
    assert_eq!(out[0]["finish_reason"], "length");
}

/// A word-level `tokenizer.json`: id i is the word `w{i}`, words split on whitespace.
fn word_tokenizer(vocab: usize) -> String {
    let words: serde_json::Map<String, Value> = (0..vocab).map(|i| (format!("w{i}"), Value::from(i))).collect();
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel", "vocab": words, "unk_token": "w0"}
    })
    .to_string()
}

#[test]
fn text_prompts_and_completions_go_through_the_tokenizer() {
    let (prompt, expected) = greedy_reference("tiny-dense");
    let dir = model_copy("tiny-dense", |_| {});
    std::fs::write(dir.path().join("tokenizer.json"), word_tokenizer(128)).unwrap();
    let text: Vec<String> = prompt.iter().map(|i| format!("w{i}")).collect();
    let model = dir.path().to_str().unwrap();
    let args = ["generate", "--model", model, "--prompt", &text.join(" "), "--max-new-tokens", "32"];
    let out = lines(&rlvr(&[&args[..], &["--temperature", "0", "--ignore-eos"]].concat()));
    assert_eq!(ints(&out[0]["tokens"]), expected, "the text prompt encodes to the reference prompt");
    let words: Vec<String> = expected.iter().map(|i| format!("w{i}")).collect();
    assert_eq!(out[0]["text"], words.join(" "));
}

#[test]
fn bad_inputs_fail_before_generation_naming_the_field() {
    let model = fixture("tiny-dense");
    let model = model.to_str().unwrap();
    let run = |extra: &[&str]| failure(&rlvr(&[&["generate", "--model", model][..], extra].concat()));
    let err = run(&["--prompt-ids", "3,999"]);
    assert!(err.contains("--prompt-ids") && err.contains("999"), "{err}");
    for p in ["--top-p=0", "--top-p=1.5", "--top-p=-0.2"] {
        let err = run(&["--prompt-ids", "3,4", p]);
        assert!(err.contains("--top-p"), "{err}");
    }
    let err = run(&["--prompt-ids", "3,4", "--temperature=-1"]);
    assert!(err.contains("--temperature"), "{err}");
    let err = run(&["--prompt", "hello"]);
    assert!(err.contains("tokenizer.json"), "{err}");
    let err = run(&["--prompt-ids", "3,4", "--max-new-tokens", "1000"]);
    assert!(err.contains("max_position_embeddings"), "{err}");
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("{\"prompt_ids\": [3, 4]}\n{\"prompt_ids\": [3, 4}\n", "line 2"),
        ("{\"prompt_ids\": []}\n", "line 1: the prompt is empty"),
        ("{\"prompt_ids\": [3]}\n{\"prompt_ids\": [3]}\n{\"tokens\": [3]}\n", "line 3"),
        ("{\"prompt_ids\": [3], \"prompt\": \"w\"}\n", "exactly one of"),
        ("{\"prompt_ids\": [3]}\n{\"prompt_ids\": [128]}\n", "line 2: token id 128"),
    ];
    for (i, (body, want)) in cases.iter().enumerate() {
        let input = tmp.path().join(format!("bad{i}.jsonl"));
        std::fs::write(&input, body).unwrap();
        let err = run(&["--input", input.to_str().unwrap()]);
        assert!(err.contains(want), "case {i}: expected `{want}` in {err}");
    }
}
