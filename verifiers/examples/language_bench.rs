//! Throughput of the `language` reward: completions and characters scored per second on one
//! thread (by the thread's CPU time and by wall time: the median of `--runs` passes after an
//! untimed one), over a corpus built from the labelled set (mixed-language reasoning, code blocks,
//! formulas), compared with a generation speed in tokens/s. `--target` defaults to `zh`.
//!
//! `cargo run --release -p rlvr-verifiers --example language_bench -- [--completions N] [--runs R]
//! [--chars-per-token C] [--generation-tokens-per-s T] [--target CODE]`
//!
//! The corpus is deterministic: each completion is `<think>` + 8–15 paragraphs drawn from the
//! labelled set's texts (with a fenced code block in every third completion and a display formula
//! in every second) + `</think>` + an answer paragraph. The generation side is given in tokens/s;
//! the verifier's characters/s are turned into tokens/s at `--chars-per-token` (default 5, more
//! characters per token than a 128K-vocabulary BPE gives on English, Chinese or code, so the
//! verifier's token rate is understated).

use rlvr_verifiers::{LanguageConfig, LanguageVerifier, Task, Verifier};
use serde_json::Value;
use std::time::Instant;

/// CPU seconds this thread has used: on a shared machine, the time the work itself took.
fn thread_cpu_seconds() -> f64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: plain system call writing into `t`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime");
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

const LABELLED: &str = include_str!("../tests/fixtures/language/labelled.jsonl");

const CODE: &str =
    "```python\ndef mean(values):\n    # average of a non-empty list\n    return sum(values) / len(values)\n```";
const FORMULA: &str = "\\[ \\sum_{k=1}^{n} k = \\frac{n(n+1)}{2} \\quad\\text{for every } n \\ge 1 \\]";

/// A small deterministic generator (64-bit LCG, high bits).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

fn arg(args: &[String], name: &str, default: f64) -> f64 {
    args.iter()
        .position(|a| a == name)
        .map(|i| args.get(i + 1).unwrap_or_else(|| panic!("{name} needs a value")).parse().expect("a number"))
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let completions = arg(&args, "--completions", 2000.0) as usize;
    let runs = (arg(&args, "--runs", 5.0) as usize).max(1);
    let chars_per_token = arg(&args, "--chars-per-token", 5.0);
    let generation = arg(&args, "--generation-tokens-per-s", 1285.9);
    let target = args.iter().position(|a| a == "--target").and_then(|i| args.get(i + 1)).map_or("zh", String::as_str);

    // Paragraphs: the labelled completions without their tags, and their prompts.
    let mut pieces = Vec::new();
    for line in LABELLED.lines().filter(|l| !l.trim().is_empty()) {
        let item: Value = serde_json::from_str(line).expect("labelled line");
        for key in ["completion", "prompt"] {
            if let Some(text) = item.get(key).and_then(Value::as_str) {
                pieces.push(text.replace("<think>", "").replace("</think>", "\n"));
            }
        }
    }
    let mut rng = Lcg(0);
    let corpus: Vec<String> = (0..completions)
        .map(|i| {
            let mut text = String::from("<think>");
            for _ in 0..8 + rng.next(8) {
                text.push_str(&pieces[rng.next(pieces.len())]);
                text.push_str("\n\n");
            }
            if i % 3 == 0 {
                text.push_str(CODE);
                text.push_str("\n\n");
            }
            if i % 2 == 0 {
                text.push_str(FORMULA);
                text.push('\n');
            }
            text.push_str("</think>");
            text.push_str(&pieces[rng.next(pieces.len())]);
            text
        })
        .collect();
    let chars: usize = corpus.iter().map(|c| c.chars().count()).sum();
    let bytes: usize = corpus.iter().map(String::len).sum();

    let verifier = LanguageVerifier::new(LanguageConfig { target: target.into(), ..LanguageConfig::default() })
        .expect("valid settings");
    let task = Task::default();
    let mut seconds = Vec::with_capacity(runs);
    let mut cpu_seconds = Vec::with_capacity(runs);
    let mut checksum = 0.0f64;
    // One untimed pass, then `runs` timed ones.
    for run in 0..=runs {
        let start = Instant::now();
        let cpu_start = thread_cpu_seconds();
        for completion in &corpus {
            checksum += f64::from(verifier.verify(&task, completion).expect("verdict").reward);
        }
        if run > 0 {
            seconds.push(start.elapsed().as_secs_f64());
            cpu_seconds.push(thread_cpu_seconds() - cpu_start);
        }
    }
    seconds.sort_by(f64::total_cmp);
    cpu_seconds.sort_by(f64::total_cmp);
    let (wall, cpu) = (seconds[seconds.len() / 2], cpu_seconds[cpu_seconds.len() / 2]);
    println!(
        "corpus: {completions} completions, {chars} chars ({bytes} bytes, {:.0} chars each); target {target}; {runs} timed runs (median wall {wall:.3} s, CPU {cpu:.3} s); mean reward {:.3}",
        chars as f64 / completions as f64,
        checksum / (completions * (runs + 1)) as f64
    );
    for (what, secs) in [("CPU time", cpu), ("wall time", wall)] {
        let tokens_per_s = chars as f64 / secs / chars_per_token;
        println!(
            "  by {what}: {:.0} completions/s, {:.2} M chars/s, {:.1} MB/s, ≈ {:.0} tokens/s at {chars_per_token} chars/token: {:.0}× generation at {generation} tokens/s",
            completions as f64 / secs,
            chars as f64 / secs / 1e6,
            bytes as f64 / secs / 1e6,
            tokens_per_s,
            tokens_per_s / generation
        );
    }
}
