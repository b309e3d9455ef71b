//! A reward that cannot be computed stops the work instead of training or reporting on zeros: a
//! GRPO run whose verifier fails (an `external` command that does not exist) stops at its first
//! step with an error naming the verifier; one whose tasks lack what the verifier needs (`code` on
//! arithmetic problems) fails before any work; an eval where every verdict failed is an error; `rlvr verify` exits non-zero when no
//! line could be judged.

mod common;

use common::{rlvr, TINY_ARITHMETIC};
use std::fs;

/// Two GRPO steps from a random tiny model on the arithmetic task; `VERIFIER` is replaced.
fn recipe_text() -> String {
    let head = "[run]\nname = \"broken\"\ndevice = \"cpu\"\n";
    let tail = "[[stages]]\nkind = \"grpo\"\nsteps = 2\n\n[rollout]\ngroup_size = 2\nprompts_per_step = 2\nmax_tokens = 4\n\n[verifier]\nVERIFIER\n\n[logging]\nplots = false\n";
    format!("{head}\n{TINY_ARITHMETIC}\n{tail}")
}

/// Runs the recipe with `verifier` (TOML lines of `[verifier]`); (success, stderr, metrics lines).
fn train(verifier: &str) -> (bool, String, usize) {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("broken.toml");
    fs::write(&recipe, recipe_text().replace("VERIFIER", verifier)).unwrap();
    let run = dir.path().join("run");
    let out = rlvr(&["train", recipe.to_str().unwrap(), "--out", run.to_str().unwrap(), "--set", "run.threads=1"]);
    let logged = fs::read_to_string(run.join("metrics.jsonl")).map(|t| t.lines().count()).unwrap_or(0);
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned(), logged)
}

#[test]
fn a_missing_external_verifier_stops_the_run_at_its_first_step() {
    let (ok, err, logged) = train("kind = \"external\"\ncommand = \"/nonexistent/grader --serve\"");
    assert!(!ok, "the run must fail:\n{err}");
    assert!(err.contains("could not judge") && err.contains("external"), "{err}");
    assert_eq!(logged, 0, "no step was trained on the broken reward");
}

#[test]
fn code_on_math_data_fails_before_any_work() {
    let (ok, err, logged) = train("kind = \"code\"");
    assert!(!ok, "the run must fail:\n{err}");
    assert!(err.contains("verifier `code` needs the task field `tests`"), "{err}");
    assert!(!err.contains("== stage"), "no stage started:\n{err}");
    assert_eq!(logged, 0);
}

#[test]
fn a_tolerated_share_of_errors_is_a_setting() {
    // max_verifier_errors = 1 keeps the old behaviour on purpose: the run trains (on zeros).
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("broken.toml");
    let verifier = "kind = \"external\"\ncommand = \"/nonexistent/grader --serve\"";
    fs::write(&recipe, recipe_text().replace("VERIFIER", verifier)).unwrap();
    let run = dir.path().join("run");
    let args = ["--set", "run.threads=1", "--set", "run.max_verifier_errors=1.0"];
    let mut all = vec!["train", recipe.to_str().unwrap(), "--out", run.to_str().unwrap()];
    all.extend(args);
    let out = rlvr(&all);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn verify_fails_when_no_line_could_be_judged() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    fs::write(&input, "{\"completion\": \"4\", \"answer\": \"4\"}\n{\"completion\": \"5\", \"answer\": \"4\"}\n")
        .unwrap();
    let out = rlvr(&["verify", "--verifier", "external:/nonexistent/grader", "--input", input.to_str().unwrap()]);
    assert!(!out.status.success(), "verify must exit non-zero");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("every line") && err.contains("external"), "{err}");
    // One line judged is enough to succeed (the other's error stays in its verdict).
    let out = rlvr(&["verify", "--verifier", "math", "--input", input.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// What a later stage needs of the data is checked before the first step: an eval with no
/// held-out problems fails at once, not after the stages before it have run.
#[test]
fn a_late_stage_without_its_data_fails_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("late.toml");
    let text = recipe_text().replace("VERIFIER", "kind = \"math\"").replace("held_out = 8", "held_out = 0").replace(
        "[[stages]]\nkind = \"grpo\"\nsteps = 2\n",
        "[[stages]]\nkind = \"grpo\"\nsteps = 2\n\n[[stages]]\nkind = \"eval\"\n",
    );
    fs::write(&recipe, text).unwrap();
    let run = dir.path().join("run");
    let out = rlvr(&["train", recipe.to_str().unwrap(), "--out", run.to_str().unwrap(), "--set", "run.threads=1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("stages[1] (eval) needs held-out problems"), "{err}");
    let logged = fs::read_to_string(run.join("metrics.jsonl")).map(|t| t.lines().count()).unwrap_or(0);
    assert_eq!(logged, 0, "no GRPO step ran before the error");
}
