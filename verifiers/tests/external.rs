//! External verifiers over JSON lines: the example verifier scores a batch; a verifier that
//! crashes, hangs or writes junk yields Error/Timeout verdicts, is restarted, and the batch ends.

use rlvr_verifiers::{score_batch, ExternalConfig, ExternalVerifier, Outcome, Task, Verifier};
use std::time::{Duration, Instant};

fn answer(a: &str) -> Task {
    Task { answer: Some(a.into()), ..Task::default() }
}

fn example_command() -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/external_verifier.py");
    format!("python3 '{script}'")
}

#[test]
fn example_verifier_scores_a_batch() {
    let v = ExternalVerifier::from_spec(&format!("external:{}", example_command())).unwrap();
    let items = vec![
        (answer("42"), "thinking...\n42\n".to_string()),
        (answer("42"), "41".to_string()),
        (answer("7"), "   \n".to_string()),
        (Task::default(), "7".to_string()),
    ];
    let verdicts = score_batch(&v, &items, 4);
    let got: Vec<_> = verdicts.iter().map(|v| (v.reward, v.outcome)).collect();
    assert_eq!(
        got,
        [(1.0, Outcome::Correct), (0.0, Outcome::Incorrect), (0.0, Outcome::NoAnswer), (0.0, Outcome::InvalidInput)]
    );
    assert_eq!(verdicts[1].detail["got"], "41");
    assert_eq!(v.restarts(), 0);
}

#[test]
fn spec_must_name_a_command() {
    assert!(ExternalVerifier::from_spec("external:").is_err());
    assert!(ExternalVerifier::from_spec("python3 x.py").is_err());
}

const FLAKY: &str = r#"
import json, sys, time
for line in sys.stdin:
    req = json.loads(line)
    c = req["completion"]
    if c == "crash":
        sys.exit(3)
    if c == "hang":
        time.sleep(600)
    if c == "junk":
        print("this is not json", flush=True)
        continue
    print(json.dumps({"id": req["id"], "reward": 1.0 if c == "ok" else 0.0}), flush=True)
"#;

fn processes_with(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker)))
        .count()
}

#[test]
fn crashes_hangs_and_junk_become_verdicts_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("flaky.py");
    std::fs::write(&script, FLAKY).unwrap();
    let marker = format!("rlvr-flaky-{}", std::process::id());
    let config = ExternalConfig {
        command: format!("python3 '{}' {marker}", script.display()),
        timeout_s: 1.0,
        processes: 1,
        name: "flaky".into(),
    };
    let v = ExternalVerifier::new(config);
    let inputs = ["ok", "crash", "ok", "hang", "wrong", "junk", "ok"];
    let items: Vec<_> = inputs.iter().map(|c| (Task::default(), c.to_string())).collect();
    let start = Instant::now();
    let verdicts = score_batch(&v, &items, 1);
    assert!(start.elapsed() < Duration::from_secs(10), "batch took {:?}", start.elapsed());
    let got: Vec<_> = verdicts.iter().map(|v| (v.reward, v.outcome)).collect();
    assert_eq!(
        got,
        [
            (1.0, Outcome::Correct),
            (0.0, Outcome::Error),
            (1.0, Outcome::Correct),
            (0.0, Outcome::Timeout),
            (0.0, Outcome::Incorrect),
            (0.0, Outcome::Error),
            (1.0, Outcome::Correct),
        ]
    );
    assert_eq!(v.restarts(), 3, "restarted after the crash, the hang and the junk line");
    assert_eq!(v.name(), "flaky");
    assert_eq!(processes_with(&marker), 1, "only the live process remains");
    drop(v);
    assert_eq!(processes_with(&marker), 0, "dropping the verifier stops its process");
}
