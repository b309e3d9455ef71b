//! Weighted rewards end to end: a short GRPO run whose reward is a `[[verifier]]` list logs each
//! part's mean reward (`reward/<name>`) in metrics.jsonl, for GRPO steps and evals; and
//! `rlvr verify --config` with a JSON array scores the weighted sum with each part in the detail.

mod common;

use common::{rlvr, TINY_ARITHMETIC};
use serde_json::Value;
use std::fs;

/// After `[run]` and the tiny arithmetic model/data: GRPO for two steps, then an eval, rewarded by
/// math + 0.5 · length.
const WEIGHTED_TAIL: &str = r#"[[stages]]
kind = "grpo"
steps = 2

[[stages]]
kind = "eval"
samples = 2
max_problems = 4

[rollout]
group_size = 4
prompts_per_step = 2
max_tokens = 8

[[verifier]]
kind = "math"

[[verifier]]
kind = "length"
weight = 0.5
max_length = 6
cache_length = 4

[logging]
plots = false
"#;

fn num(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or_else(|| panic!("no number `{key}` in {v}"))
}

#[test]
fn a_weighted_grpo_run_logs_each_part() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("weighted.toml");
    fs::write(
        &recipe,
        format!("[run]\nname = \"weighted\"\nseed = 0\ndevice = \"cpu\"\n\n{TINY_ARITHMETIC}\n{WEIGHTED_TAIL}"),
    )
    .unwrap();
    let run = dir.path().join("run");
    let out = rlvr(&["train", recipe.to_str().unwrap(), "--out", run.to_str().unwrap(), "--set", "run.threads=1"]);
    assert!(out.status.success(), "rlvr train failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let text = fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let grpo: Vec<&Value> = lines.iter().filter(|l| l["stage"] == "grpo").collect();
    assert_eq!(grpo.len(), 2, "{text}");
    for line in grpo {
        let (math, length) = (num(line, "reward/math"), num(line, "reward/length"));
        assert!((0.0..=1.0).contains(&math), "{line}");
        assert!((-1.0..=0.0).contains(&length), "{line}");
        // The step's reward is the weighted sum of the parts' means (no overlong buffer here).
        assert!((num(line, "reward") - (math + 0.5 * length)).abs() < 1e-4, "{line}");
    }
    let eval = lines.iter().find(|l| l["stage"] == "eval").expect("an eval record");
    assert!(eval.get("reward/math").is_some() && eval.get("reward/length").is_some(), "{eval}");
    let report: Value = serde_json::from_str(&fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    let text = report.to_string();
    assert!(text.contains("reward/math") && text.contains("reward/length"), "{text}");
}

#[test]
fn verify_scores_a_weighted_list_from_config() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let long = "x".repeat(20);
    let lines = [
        serde_json::json!({ "completion": "<think>ok</think> The answer is \\boxed{4}", "answer": "4" }),
        serde_json::json!({ "completion": format!("{long} \\boxed{{5}}"), "answer": "4" }),
    ];
    fs::write(&input, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let config = r#"[{"kind":"math"},{"kind":"length","weight":0.5,"max_length":30,"cache_length":10},
        {"kind":"format","name":"fmt","weight":0.25}]"#;
    let out = rlvr(&["verify", "--input", input.to_str().unwrap(), "--config", config]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let verdicts: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(verdicts.len(), 2);
    for v in &verdicts {
        let parts = v["detail"]["parts"].as_array().expect("parts");
        let names: Vec<&str> = parts.iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["math", "length", "fmt"], "{v}");
        let sum: f64 = parts.iter().map(|p| num(p, "weight") * num(p, "reward")).sum();
        assert!((num(v, "reward") - sum).abs() < 1e-5, "{v}");
    }
    assert_eq!(
        (verdicts[0]["outcome"].as_str(), verdicts[1]["outcome"].as_str()),
        (Some("Correct"), Some("Incorrect"))
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("reward/math") && stderr.contains("reward/fmt"), "{stderr}");

    // The list and --verifier do not go together; a bad entry names its index.
    let both = rlvr(&["verify", "--verifier", "math", "--input", input.to_str().unwrap(), "--config", config]);
    assert!(!both.status.success());
    let bad =
        rlvr(&["verify", "--input", input.to_str().unwrap(), "--config", r#"[{"kind":"math"},{"kind":"maths"}]"#]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success()
            && stderr.contains("verifier [1]")
            && stderr
                .contains("unknown variant `maths`, expected one of `math`, `code`, `format`, `length`, `language`"),
        "{stderr}"
    );
}
