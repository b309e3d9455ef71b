//! The code verifier on each test form: stdio pass/fail/partial, assert pass/fail, HumanEval-style
//! entry points, syntax errors, exceptions, early exits and program extraction.

use rlvr_verifiers::code::{extract_program, RewardMode};
use rlvr_verifiers::{CodeConfig, CodeTests, CodeVerifier, Outcome, StdioCase, Task, Verdict, Verifier};

fn verifier(reward: RewardMode) -> CodeVerifier {
    let config = CodeConfig { timeout_s: 5.0, reward, ..CodeConfig::default() };
    CodeVerifier::new(config).expect("python3 must be runnable")
}

fn stdio_task(cases: &[(&str, &str)]) -> Task {
    let stdio = cases.iter().map(|(i, o)| StdioCase { input: i.to_string(), output: o.to_string() }).collect();
    Task { tests: Some(CodeTests { stdio, ..CodeTests::default() }), ..Task::default() }
}

fn assert_task(tests: &str, entry_point: Option<&str>) -> Task {
    let tests =
        CodeTests { assert: Some(tests.into()), entry_point: entry_point.map(Into::into), ..CodeTests::default() };
    Task { tests: Some(tests), ..Task::default() }
}

fn status(v: &Verdict, i: usize) -> &str {
    v.detail["cases"][i]["status"].as_str().unwrap_or("?")
}

const DOUBLE: &str = "```python\nn = int(input())\nprint(n * 2)\n```";

#[test]
fn stdio_all_cases_pass() {
    let v = verifier(RewardMode::AllPass).verify(&stdio_task(&[("2\n", "4\n"), ("21", "42")]), DOUBLE).unwrap();
    assert_eq!((v.reward, v.outcome), (1.0, Outcome::Correct), "{}", v.detail);
    assert_eq!(v.detail["passed"], 2);
}

#[test]
fn stdio_wrong_output_is_incorrect() {
    let v = verifier(RewardMode::AllPass).verify(&stdio_task(&[("2", "5")]), DOUBLE).unwrap();
    assert_eq!((v.reward, v.outcome), (0.0, Outcome::Incorrect), "{}", v.detail);
    assert_eq!(status(&v, 0), "failed");
}

#[test]
fn stdio_partial_fraction_and_all_pass() {
    // Doubling passes 2→4 and 3→6 but not 5→11: fraction 2/3; all-pass stops at the third case.
    let task = stdio_task(&[("2", "4"), ("3", "6"), ("5", "11")]);
    let v = verifier(RewardMode::Fraction).verify(&task, DOUBLE).unwrap();
    assert!((v.reward - 2.0 / 3.0).abs() < 1e-6, "{}", v.detail);
    assert_eq!(v.outcome, Outcome::Incorrect);
    let task = stdio_task(&[("5", "11"), ("2", "4")]);
    let v = verifier(RewardMode::AllPass).verify(&task, DOUBLE).unwrap();
    assert_eq!((v.reward, v.outcome), (0.0, Outcome::Incorrect));
    assert_eq!(v.detail["cases"].as_array().unwrap().len(), 1, "all-pass stops at the first failure");
}

#[test]
fn mbpp_asserts_pass_and_fail() {
    let good = "def add(a, b):\n    return a + b\n";
    let bad = "def add(a, b):\n    return a - b\n";
    let task = assert_task("assert add(1, 2) == 3\nassert add(-1, 1) == 0\n", None);
    let v = verifier(RewardMode::AllPass).verify(&task, good).unwrap();
    assert_eq!((v.reward, v.outcome), (1.0, Outcome::Correct), "{}", v.detail);
    let v = verifier(RewardMode::AllPass).verify(&task, bad).unwrap();
    assert_eq!((v.reward, v.outcome), (0.0, Outcome::Incorrect), "{}", v.detail);
    assert_eq!(status(&v, 0), "failed");
}

#[test]
fn humaneval_style_entry_point() {
    let check = "def check(candidate):\n    assert candidate([3, 1, 2]) == [1, 2, 3]\n";
    let task = assert_task(check, Some("sort_list"));
    let prog = "Here you go:\n```python\ndef sort_list(xs):\n    return sorted(xs)\n```\n";
    let v = verifier(RewardMode::AllPass).verify(&task, prog).unwrap();
    assert_eq!((v.reward, v.outcome), (1.0, Outcome::Correct), "{}", v.detail);
    // The program defines another name: check(sort_list) raises NameError, a crash.
    let wrong_name = "def sorted_list(xs):\n    return sorted(xs)\n";
    let v = verifier(RewardMode::AllPass).verify(&task, wrong_name).unwrap();
    assert_eq!((v.reward, v.outcome), (0.0, Outcome::Crashed), "{}", v.detail);
    assert!(v.detail["cases"][0]["stderr_tail"].as_str().unwrap().contains("NameError"));
}

#[test]
fn syntax_error_and_exception_are_the_models_crashes() {
    // The model's program failing is `Crashed`, never `Error` (kept for a verifier that is broken).
    let task = stdio_task(&[("1", "2")]);
    let v = verifier(RewardMode::AllPass).verify(&task, "def f(:\n    pass\n").unwrap();
    assert_eq!((v.reward, v.outcome), (0.0, Outcome::Crashed));
    assert!(!v.outcome.is_unjudged());
    assert_eq!(status(&v, 0), "syntax_error");
    let v = verifier(RewardMode::AllPass).verify(&task, "print(1 // 0)").unwrap();
    assert_eq!((v.reward, v.outcome), (0.0, Outcome::Crashed));
    assert_eq!(status(&v, 0), "crashed");
    assert!(v.detail["cases"][0]["stderr_tail"].as_str().unwrap().contains("ZeroDivisionError"));
}

#[test]
fn exiting_before_the_tests_does_not_pass() {
    let task = assert_task("assert False\n", None);
    for prog in ["import sys\nsys.exit(0)\n", "import os\nos._exit(0)\n"] {
        let v = verifier(RewardMode::AllPass).verify(&task, prog).unwrap();
        assert_eq!((v.reward, v.outcome), (0.0, Outcome::Incorrect), "{prog}: {}", v.detail);
    }
}

#[test]
fn empty_program_is_no_answer_and_missing_tests_is_an_error() {
    let v = verifier(RewardMode::AllPass).verify(&stdio_task(&[("", "")]), "  \n").unwrap();
    assert_eq!(v.outcome, Outcome::NoAnswer);
    assert!(verifier(RewardMode::AllPass).verify(&Task::default(), "print(1)").is_err());
}

#[test]
fn extraction_takes_the_last_python_block() {
    let text = "Draft:\n```python\nprint(1)\n```\nOutput:\n```\n1\n```\nFinal:\n```python\nprint(2)\n```\n";
    assert_eq!(extract_program(text), "print(2)\n");
    assert_eq!(extract_program("```\nprint(3)\n```"), "print(3)\n");
    assert_eq!(extract_program("print(4)"), "print(4)");
    assert_eq!(extract_program("```py\nprint(5)\n"), "print(5)\n", "an unclosed fence runs to the end");
}

#[test]
fn config_rejects_unknown_keys() {
    let ok: CodeConfig = serde_json::from_str(r#"{"reward": "fraction", "timeout_s": 2}"#).unwrap();
    assert_eq!((ok.reward, ok.timeout_s, ok.memory_mb), (RewardMode::Fraction, 2.0, 1024));
    assert!(serde_json::from_str::<CodeConfig>(r#"{"timeout": 2}"#).is_err());
}
