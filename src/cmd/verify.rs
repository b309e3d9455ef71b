//! `rlvr verify --verifier KIND --input FILE.jsonl [--output FILE]`: one verdict per input line.
//! `--config` holds the verifier's settings (a JSON object), or instead of `--verifier` a weighted
//! list (a JSON array of `{"kind", "weight", "name", <settings>}`): the reward is then
//! `Σ weight · reward`, the outcome the first entry's, each part's verdict in `detail.parts`.
//!
//! A line that is not valid JSON, or lacks `completion`, gets its own `Malformed` verdict naming the
//! line; every other line is still scored. Lines are scored in chunks on the verifier's pool and
//! written in input order.

use anyhow::{Context, Result};
use rlvr_verifiers::{score_batch, Outcome, Task, Verdict, Verifier, VerifierSpec, Weighted};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;

/// Arguments of `rlvr verify`.
#[derive(clap::Args)]
pub struct Args {
    /// `math`, `code`, `format`, `length`, `language`, `judge`, or `external:<command>`; omit it
    /// when `--config` holds a weighted list.
    #[arg(long, required_unless_present = "config")]
    pub verifier: Option<String>,
    /// JSONL input: `{"completion", "answer"}` (math) or `{"completion", "tests": {...}}` (code).
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the verdicts (stdout by default).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Inline JSON or a file path: a JSON object of `--verifier`'s settings, or (without
    /// `--verifier`) a weighted list, a JSON array of verifiers, each
    /// `{"kind": "math", "weight": 1.0, "name": "math", <settings>}` (`weight` defaults to 1 and
    /// `name` to the kind; the first entry gives the outcome), e.g.
    /// `[{"kind":"math"},{"kind":"length","weight":0.5,"max_length":512,"cache_length":128}]`.
    #[arg(long)]
    pub config: Option<String>,
    /// How many lines are checked at once (default: the number of CPUs).
    #[arg(long)]
    pub parallel: Option<usize>,
}

#[derive(Deserialize)]
struct Line {
    completion: String,
    #[serde(flatten)]
    task: Task,
}

const CHUNK: usize = 512;

/// One input line: its number, and the parsed item or the verdict for an unreadable line.
type Parsed = (usize, Result<(Task, String), Verdict>);

fn settings(arg: Option<&str>) -> Result<Option<serde_json::Value>> {
    let Some(arg) = arg else { return Ok(None) };
    let text = if arg.trim_start().starts_with(['{', '[']) {
        arg.to_string()
    } else {
        std::fs::read_to_string(arg).with_context(|| format!("reading --config {arg}"))?
    };
    Ok(Some(serde_json::from_str(&text).with_context(|| format!("--config {arg}: not JSON"))?))
}

/// The verifier of `--verifier KIND [--config SETTINGS]`, or of `--config LIST` (a weighted list).
pub(crate) fn build_verifier(verifier: Option<&str>, config: Option<&str>) -> Result<Box<dyn Verifier>> {
    match (verifier, settings(config)?) {
        (Some(_), Some(serde_json::Value::Array(_))) => {
            anyhow::bail!("--config holds a weighted list of verifiers; give it without --verifier")
        }
        (Some(kind), settings) => {
            let spec = VerifierSpec::from_cli(kind, settings).with_context(|| "--verifier")?;
            spec.build().with_context(|| format!("starting verifier `{kind}`"))
        }
        (None, Some(serde_json::Value::Array(entries))) => {
            let parts = entries
                .into_iter()
                .enumerate()
                .map(|(i, e)| VerifierSpec::weighted_entry(e).with_context(|| format!("--config: verifier [{i}]")))
                .collect::<Result<Vec<_>>>()?;
            VerifierSpec::build_weighted(parts).context("starting the weighted verifiers")
        }
        (None, _) => anyhow::bail!("give --verifier KIND, or --config with a JSON array of verifiers"),
    }
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let verifier = build_verifier(args.verifier.as_deref(), args.config.as_deref())?;
    let input = std::fs::File::open(&args.input).with_context(|| format!("opening {}", args.input.display()))?;
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let parallel = args.parallel.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut stats = Stats::default();
    let started = std::time::Instant::now();
    let mut lines = std::io::BufReader::new(input).lines().enumerate().peekable();
    while lines.peek().is_some() {
        let mut chunk: Vec<Parsed> = Vec::with_capacity(CHUNK);
        for (i, line) in lines.by_ref().take(CHUNK) {
            let line = line.with_context(|| format!("reading {}", args.input.display()))?;
            chunk.push((i + 1, parse_line(&line, i + 1)));
        }
        let items: Vec<(Task, String)> = chunk.iter().filter_map(|(_, r)| r.as_ref().ok().cloned()).collect();
        let mut scored = score_batch(verifier.as_ref(), &items, parallel).into_iter();
        for (_, item) in chunk {
            let verdict = item.map_or_else(|bad| bad, |_| scored.next().expect("one verdict per item"));
            stats.add(&verdict);
            serde_json::to_writer(&mut out, &verdict)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    stats.seconds = started.elapsed().as_secs_f64();
    eprintln!("{}", stats.summary(verifier.name()));
    if stats.n > 0 && stats.unjudged == stats.n {
        anyhow::bail!(
            "every line's verdict is Error or InvalidInput: verifier `{}` could not judge any of {} ({}); see the verdicts' `detail`",
            verifier.name(),
            stats.n,
            args.input.display()
        );
    }
    Ok(())
}

fn parse_line(line: &str, number: usize) -> Result<(Task, String), Verdict> {
    let malformed =
        |msg: String| Verdict::zero(Outcome::InvalidInput, json!({ "error": format!("line {number}: {msg}") }));
    if line.trim().is_empty() {
        return Err(malformed("empty line".into()));
    }
    match serde_json::from_str::<Line>(line) {
        Ok(l) => Ok((l.task, l.completion)),
        Err(e) => Err(malformed(e.to_string())),
    }
}

#[derive(Default)]
struct Stats {
    n: usize,
    /// Verdicts that judged nothing (`Error`, `InvalidInput`).
    unjudged: usize,
    reward: f64,
    seconds: f64,
    outcomes: BTreeMap<String, usize>,
    /// Per part of a weighted reward: the sum of its rewards and their count.
    parts: BTreeMap<String, (f64, usize)>,
}

impl Stats {
    fn add(&mut self, v: &Verdict) {
        self.n += 1;
        self.unjudged += usize::from(v.outcome.is_unjudged());
        self.reward += v.reward as f64;
        *self.outcomes.entry(format!("{:?}", v.outcome)).or_default() += 1;
        for (name, reward) in Weighted::part_rewards(v) {
            let part = self.parts.entry(name.to_string()).or_default();
            part.0 += f64::from(reward);
            part.1 += 1;
        }
    }

    fn summary(&self, name: &str) -> String {
        let mean = if self.n == 0 { 0.0 } else { self.reward / self.n as f64 };
        let counts: Vec<String> = self.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let rate = self.n as f64 / self.seconds.max(1e-9);
        let parts: String = self
            .parts
            .iter()
            .map(|(part, (sum, n))| format!(", reward/{part} {:.4}", sum / (*n).max(1) as f64))
            .collect();
        format!(
            "rlvr verify: {name}: {} lines, mean reward {mean:.4}{parts} ({}); scored in {:.4} s ({rate:.0} lines/s)",
            self.n,
            counts.join(", "),
            self.seconds
        )
    }
}
