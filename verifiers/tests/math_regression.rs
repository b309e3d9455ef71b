//! The math verifier's regression suite: hand-written (gold, completion) pairs in the style of
//! MATH, GSM8K, AIME and OlympiadBench answers, each with its truth decided by hand (see
//! `benches/math/regression_cases.py`, which writes the fixture, and the conventions in
//! `benches/math/README.md`). Every case must pass; failures are all listed.

use rlvr_verifiers::math::MathVerifier;
use rlvr_verifiers::{Outcome, Task, Verifier};
use serde::Deserialize;
use std::time::{Duration, Instant};

#[derive(Deserialize)]
struct Case {
    completion: String,
    answer: String,
    expected: bool,
    kind: String,
    note: String,
}

fn cases() -> Vec<Case> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/math/regression.jsonl");
    let text = std::fs::read_to_string(path).expect("the regression fixture is checked in");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("line {}: {e}", i + 1)))
        .collect()
}

#[test]
fn regression_suite_passes() {
    let cases = cases();
    assert!(cases.len() >= 300, "only {} cases", cases.len());
    let verifier = MathVerifier::default();
    let budget = Duration::from_millis(verifier.config().timeout_ms + 500);
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let task = Task { answer: Some(case.answer.clone()), ..Default::default() };
        let start = Instant::now();
        let v = verifier.verify(&task, &case.completion).expect("a verdict, not an error");
        let took = start.elapsed();
        let correct = v.outcome == Outcome::Correct;
        if correct != case.expected || took > budget || (correct && v.detail["method"].is_null()) {
            failures.push(format!(
                "line {} [{}] {}: gold {:?} completion {:?}: want {}, got {:?} in {took:?}, detail {}",
                i + 1,
                case.kind,
                case.note,
                case.answer,
                case.completion,
                case.expected,
                v.outcome,
                v.detail
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn every_kind_holds_right_and_wrong_answers() {
    let cases = cases();
    let mut kinds: Vec<&str> = cases.iter().map(|c| c.kind.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    for kind in kinds {
        let of_kind: Vec<&Case> = cases.iter().filter(|c| c.kind == kind).collect();
        assert!(of_kind.iter().any(|c| !c.expected), "kind {kind} has no wrong answer");
        if kind != "empty" {
            assert!(of_kind.iter().any(|c| c.expected), "kind {kind} has no right answer");
        }
    }
}

#[test]
fn new_paths_stay_within_the_deadline() {
    use rlvr_verifiers::math::MathConfig;
    let verifier = MathVerifier::new(MathConfig { timeout_ms: 300, ..Default::default() });
    let nested = format!("{}1{}", "\\frac{1}{".repeat(2000), "}".repeat(2000));
    let nested_short = format!("{}2{}", "\\frac{1}{1+".repeat(40), "}".repeat(40));
    let hostile = [
        "2^{2^{2^{100}}}".to_string(),
        "100000!".to_string(),
        "(10^{1000})!".to_string(),
        "\\binom{10^{1000}}{1000}".to_string(),
        "\\binom{10^{6}}{500000}".to_string(),
        "x^{10^{9}}+1".to_string(),
        "\\sqrt[1000000]{2}".to_string(),
        "(1+x)^{4096}".to_string(),
        "\\frac{1}{3}^{100000}".to_string(),
        "e^{e^{e^{e^{10}}}}".to_string(),
        nested.clone(),
        nested_short,
        format!("y = {}", "x^{2^{".repeat(30) + &"}}".repeat(30)),
        format!("x \\le {}", "(".repeat(3000)),
        format!("\\begin{{pmatrix}}{}\\end{{pmatrix}}", vec!["1 & 2 \\\\ 3 & 4"; 500].join(" \\\\ ")),
        vec!["(1,2)"; 2000].join(" \\cup "),
        format!("\\{{{}\\}}", vec!["\\{1,\\{2,\\{3\\}\\}\\}"; 300].join(",")),
    ];
    for gold in ["2", "x+1", "(0,1)", "y = 2x + 1"] {
        for answer in &hostile {
            for completion in [format!("\\boxed{{{answer}}}"), format!("So ${answer}$"), answer.clone()] {
                let task = Task { answer: Some(gold.to_string()), ..Default::default() };
                let start = Instant::now();
                let v = verifier.verify(&task, &completion).unwrap();
                let took = start.elapsed();
                assert!(took < Duration::from_millis(1000), "gold {gold}, {:.60}: took {took:?}", completion);
                assert_ne!(v.outcome, Outcome::Correct, "gold {gold}, {:.60}", completion);
            }
        }
    }
    // The gold side is read by the same code: a hostile gold is bounded too.
    for gold in &hostile {
        let task = Task { answer: Some(gold.clone()), ..Default::default() };
        let start = Instant::now();
        let v = verifier.verify(&task, "\\boxed{2}").unwrap();
        assert!(start.elapsed() < Duration::from_millis(1000), "gold {:.60}: took {:?}", gold, start.elapsed());
        assert_ne!(v.outcome, Outcome::Correct);
    }
}
