//! `rlvr-math-bench INPUT.jsonl OUTPUT.jsonl`: one math verdict per input line, as
//! `rlvr verify --verifier math` writes them, scored on all CPUs with the same `score_batch`.

use rlvr_verifiers::math::MathVerifier;
use rlvr_verifiers::{score_batch, Task};
use std::io::Write;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, output] = args.as_slice() else {
        return Err("usage: rlvr-math-bench INPUT.jsonl OUTPUT.jsonl".into());
    };
    let text = std::fs::read_to_string(input)?;
    let mut items = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let row: serde_json::Value = serde_json::from_str(line)?;
        let completion = row["completion"].as_str().ok_or("a line without `completion`")?.to_string();
        let answer = row["answer"].as_str().map(str::to_string);
        items.push((Task { answer, ..Task::default() }, completion));
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let verdicts = score_batch(&MathVerifier::default(), &items, threads);
    let mut out = std::io::BufWriter::new(std::fs::File::create(output)?);
    for verdict in &verdicts {
        serde_json::to_writer(&mut out, verdict)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    eprintln!("rlvr-math-bench: {} lines", verdicts.len());
    Ok(())
}
