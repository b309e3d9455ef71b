//! End-to-end tests of the `rlvr` binary: `inspect` and `verify`.

mod common;

use common::{rlvr, root};
use rlvr_model::{ModelConfig, ParamCounts};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

fn json_stdout(out: &Output) -> Value {
    assert!(out.status.success(), "rlvr failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

#[test]
fn inspect_671b_preset_reports_published_sizes() {
    let report = json_stdout(&rlvr(&["inspect", "deepseek-v3.2", "--json"]));
    let get = |k: &str| report[k].as_u64().unwrap_or_else(|| panic!("{k} missing: {report}"));
    let near = |k: &str, expected: f64| {
        let v = get(k) as f64;
        assert!(((v - expected) / expected).abs() < 0.01, "{k} = {v}, expected ≈ {expected}");
    };
    near("params_total", 671.9e9);
    near("params_active", 38.4e9);
    near("params_mtp", 11.6e9);
    near("params_mtp_with_shared_copies", 13.5e9);
    assert!(report["cuda_available"].is_boolean());
    // The binary reports exactly what the library computes.
    let cfg = ModelConfig::from_path(&root().join("presets/deepseek-v3.2")).unwrap();
    let counts = ParamCounts::of(&cfg);
    assert_eq!(get("params_total"), counts.total);
    assert_eq!(get("params_active"), counts.active);
}

/// The CUDA runtime and driver `inspect` reports, and the error of a CUDA run where libtorch sees
/// no device, which names both. The project's torch is PyPI's 2.11.0, the CUDA 13 build: its
/// `libcudart.so.13` is what libtorch loads. The driver is whatever this machine has (none in CI).
#[test]
fn inspect_reports_the_cuda_runtime_and_driver_and_a_cuda_run_without_a_device_says_what_it_found() {
    let report = json_stdout(&rlvr(&["inspect", "tiny", "--json"]));
    assert_eq!(report["cuda_runtime"], "13.0", "{report}");
    let driver = report["cuda_driver"].clone();
    assert!(driver.is_null() || driver.as_str().is_some_and(|v| v.contains('.')), "{report}");
    if report["cuda_available"] == true {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tmp.path().join("r.toml");
    let text = format!(
        "[run]\nname = \"cuda\"\ndevice = \"cuda\"\n\n{}\n[[stages]]\nkind = \"pretrain\"\nsteps = 1\n",
        common::TINY_ARITHMETIC
    );
    std::fs::write(&recipe, text).unwrap();
    let out = rlvr(&["train", recipe.to_str().unwrap(), "--out", tmp.path().join("run").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let found = match driver.as_str() {
        Some(v) => format!("the driver supports CUDA {v}"),
        None => "no NVIDIA driver".to_string(),
    };
    assert!(
        err.contains("no usable CUDA device") && err.contains("CUDA runtime 13.0") && err.contains(&found),
        "{err}"
    );
}

#[test]
fn inspect_reads_dtypes_of_a_sharded_checkpoint() {
    let report = json_stdout(&rlvr(&["inspect", "tests/fixtures/tiny-sharded", "--json"]));
    assert_eq!(report["checkpoint_files"], 3);
    let dtypes = report["dtypes"].as_object().unwrap();
    let mut names: Vec<&str> = dtypes.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(names, vec!["BF16", "F32"]);
    let elements: u64 = dtypes.values().map(|d| d["elements"].as_u64().unwrap()).sum();
    assert_eq!(elements, report["params_total"].as_u64().unwrap(), "every stored element is a main-model parameter");
    // A bare config.json works too, and reports no weights.
    let cfg_only = json_stdout(&rlvr(&["inspect", "tests/fixtures/tiny-sharded/config.json", "--json"]));
    assert!(cfg_only["dtypes"].is_null());
    assert_eq!(cfg_only["params_total"], report["params_total"]);
}

#[test]
fn inspect_errors_name_the_input() {
    let out = rlvr(&["inspect", "no/such/model"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no/such/model"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"hidden_size": 8}"#).unwrap();
    let out = rlvr(&["inspect", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("config.json") && err.contains("missing field"), "{err}");
}

fn write_lines(dir: &Path, lines: &[&str]) -> PathBuf {
    let path = dir.join("input.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[test]
fn verify_scores_every_line_and_isolates_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_lines(
        dir.path(),
        &[
            r#"{"completion": "so the total is \\boxed{\\frac{1}{2}}", "answer": "0.5"}"#,
            r#####"{"completion": "#### 1,234", "answer": "1234"}"#####,
            r#"this is not json"#,
            r#"{"completion": "The answer is 7.", "answer": "8"}"#,
            r#"{"answer": "3"}"#,
        ],
    );
    let output = dir.path().join("verdicts.jsonl");
    let out = rlvr(&[
        "verify",
        "--verifier",
        "math",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let verdicts: Vec<Value> =
        std::fs::read_to_string(&output).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let outcomes: Vec<&str> = verdicts.iter().map(|v| v["outcome"].as_str().unwrap()).collect();
    // Lines the verifier cannot read (not JSON, no `completion`) are the input's fault: InvalidInput.
    assert_eq!(outcomes, vec!["Correct", "Correct", "InvalidInput", "Incorrect", "InvalidInput"]);
    let rewards: Vec<f64> = verdicts.iter().map(|v| v["reward"].as_f64().unwrap()).collect();
    assert_eq!(rewards, vec![1.0, 1.0, 0.0, 0.0, 0.0]);
    assert!(verdicts[2]["detail"]["error"].as_str().unwrap().contains("line 3"));
    assert!(verdicts[4]["detail"]["error"].as_str().unwrap().contains("completion"));
}

#[test]
fn verify_code_runs_stdio_and_assert_tests() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_lines(
        dir.path(),
        &[
            r#"{"completion": "```python\nprint(sum(map(int, input().split())))\n```", "tests": {"stdio": [{"input": "1 2\n", "output": "3\n"}, {"input": "5 5\n", "output": "10\n"}]}}"#,
            r#"{"completion": "def add(a, b):\n    return a - b\n", "tests": {"assert": "def check(candidate):\n    assert candidate(2, 3) == 5\n", "entry_point": "add"}}"#,
            r#"{"completion": "def add(a, b):\n    return a + b\n", "tests": {"assert": "def check(candidate):\n    assert candidate(2, 3) == 5\n", "entry_point": "add"}}"#,
        ],
    );
    let out = rlvr(&["verify", "--verifier", "code", "--input", input.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let outcomes: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["outcome"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(outcomes, vec!["Correct", "Incorrect", "Correct"]);
}

#[test]
fn verify_rejects_unknown_verifiers_and_settings_before_scoring() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_lines(dir.path(), &[r#"{"completion": "1", "answer": "1"}"#]);
    let input = input.to_str().unwrap();
    for (args, needle) in [
        (vec!["verify", "--verifier", "nope", "--input", input], "nope"),
        (vec!["verify", "--verifier", "math", "--config", r#"{"bogus": 1}"#, "--input", input], "bogus"),
        (vec!["verify", "--verifier", "math", "--input", "missing.jsonl"], "missing.jsonl"),
    ] {
        let out = rlvr(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "nothing scored for {args:?}");
    }
}
