//! The metrics side: metrics.jsonl content and resume truncation, the console line, progress
//! bars, PNG plots, and W&B through the sidecar — errors at logger creation, a sidecar dying
//! mid-run, and an offline run read back from its `.wandb` file with wandb's own protobufs.
//!
//! The offline W&B test needs a python with wandb==0.31.0: `./x test` sets `RLVR_WANDB_PYTHON` from
//! `scripts/wandb.sh`; a plain `cargo test` without it skips that test, saying why.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rlvr_trainer::metrics::{
    console, jsonl, plot, progress, LoggerConfig, MetricsError, MetricsLogger, StepRecord, WandbConfig, WandbMode,
};
use serde_json::{json, Value};

fn record(stage: &str, step: u64, metrics: &[(&str, f64)]) -> StepRecord {
    let mut r = StepRecord::new(stage, step);
    for &(key, value) in metrics {
        r.set(key, value);
    }
    r
}

fn quiet() -> LoggerConfig {
    LoggerConfig { console_every: 0, plots: false, wandb: None }
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

#[test]
fn jsonl_lines_are_stage_step_time_then_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let mut logger = MetricsLogger::new(dir.path(), quiet()).unwrap();
    let records: Vec<_> =
        (1..=3).map(|s| record("grpo", s, &[("reward", 0.25 * s as f64), ("loss", 1.0 / s as f64)])).collect();
    let before = unix_now();
    for r in &records {
        logger.log(r).unwrap();
    }
    let path = dir.path().join("metrics.jsonl");
    // Written through before log() returns, not at finish.
    let written = lines(&path);
    logger.finish().unwrap();

    assert_eq!(written.len(), 3);
    for (line, r) in written.iter().zip(&records) {
        let keys: Vec<&str> = line.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["stage", "step", "time", "reward", "loss"]);
        assert_eq!(line["stage"], "grpo");
        assert_eq!(line["step"], r.step);
        assert_eq!(line["reward"].as_f64(), r.get("reward"));
        assert_eq!(line["loss"].as_f64(), r.get("loss"));
        let time = line["time"].as_f64().unwrap();
        assert!(time >= before - 1.0 && time <= unix_now() + 1.0, "time {time}");
    }
    assert_eq!(jsonl::read(&path).unwrap(), records);
}

#[test]
fn resume_drops_a_torn_line_and_the_steps_past_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    let mut logger = MetricsLogger::new(dir.path(), quiet()).unwrap();
    for s in 1..=5 {
        logger.log(&record("sft", s, &[("loss", s as f64)])).unwrap();
    }
    drop(logger);
    let kept_text: String = std::fs::read_to_string(&path).unwrap().lines().take(3).map(|l| format!("{l}\n")).collect();
    // A kill in the middle of writing step 6.
    let mut torn = std::fs::read(&path).unwrap();
    torn.extend_from_slice(br#"{"stage":"sft","step":6,"ti"#);
    std::fs::write(&path, torn).unwrap();

    let mut logger = MetricsLogger::new(dir.path(), quiet()).unwrap();
    assert_eq!(logger.history().iter().map(|r| r.step).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert!(std::fs::read_to_string(&path).unwrap().ends_with("}\n"), "the torn line is cut off");
    assert_eq!(logger.truncate_after(3).unwrap(), 2);
    assert!(std::fs::read_to_string(&path).unwrap() == kept_text, "kept lines are unchanged, byte for byte");
    assert_eq!(logger.truncate_after(3).unwrap(), 0);
    logger.log(&record("sft", 4, &[("loss", 40.0)])).unwrap();
    logger.finish().unwrap();

    let steps: Vec<(u64, f64)> =
        lines(&path).iter().map(|l| (l["step"].as_u64().unwrap(), l["loss"].as_f64().unwrap())).collect();
    assert_eq!(steps, [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]);
}

#[test]
fn a_corrupt_line_is_an_error_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    std::fs::write(&path, "{\"stage\":\"sft\",\"step\":1,\"time\":0}\n{\"stage\":\"sft\"}\n").unwrap();
    match MetricsLogger::new(dir.path(), quiet()) {
        Err(MetricsError::Corrupt { path: p, line: 2, message }) => {
            assert_eq!(p, path);
            assert!(message.contains("step"), "{message}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a corrupt line was accepted"),
    }
}

#[test]
fn console_line_shows_known_keys_in_a_fixed_order_and_nothing_else() {
    // Set in a scrambled order, with metrics the line does not show.
    let r = record(
        "grpo",
        12,
        &[
            ("tok_per_s", 950.2),
            ("train_s", 0.81),
            ("unknown_metric", 5.0),
            ("clip_high", 0.0),
            ("kl", 0.0011),
            ("reward_std", 0.30),
            ("gen_s", 1.24),
            ("loss", 0.0123),
            ("completion_len", 7.06),
            ("accuracy", 0.375),
            ("score_s", 0.07),
            ("clip_low", 0.021),
            ("reward", 0.41),
        ],
    );
    assert_eq!(
        console::format_line(&r, Some(50)),
        "[grpo] step 12/50 reward 0.41±0.30 acc 0.38 loss 0.012 kl 0.001 clip 0.02/0.00 len 7.1 gen 1.2s score 0.1s train 0.8s 950 tok/s"
    );
    let sft =
        record("sft", 3, &[("lr", 1e-5), ("loss", 2.3456), ("kl", 0.0004), ("clip_high", 0.5), ("grad_norm", 0.0)]);
    assert_eq!(console::format_line(&sft, None), "[sft] step 3 loss 2.346 kl 4.0e-4 clip -/0.50 gnorm 0.000 lr 1.0e-5");
    let mut nan = record("sft", 4, &[("loss", f64::NAN)]);
    nan.metrics.insert("note".into(), json!("text"));
    assert_eq!(console::format_line(&nan, Some(4)), "[sft] step 4/4");
}

#[test]
fn a_progress_bar_counts_whether_or_not_it_is_drawn() {
    use std::io::IsTerminal;
    let bar = progress::bar(10, "eval");
    bar.inc(3);
    bar.inc(4);
    assert_eq!(bar.position(), 7);
    assert_eq!(bar.length(), Some(10));
    assert_eq!(bar.is_hidden(), !std::io::stderr().is_terminal());
    bar.finish();
}

/// RGB pixels of a PNG after checking its signature and size.
fn decode_png(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    assert!(bytes.len() > 1000, "{} is {} bytes", path.display(), bytes.len());
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((info.width, info.height), plot::SIZE);
    assert_eq!(info.color_type, png::ColorType::Rgb);
    pixels
}

fn count_color(pixels: &[u8], rgb: [u8; 3]) -> usize {
    pixels.chunks_exact(3).filter(|p| *p == rgb).count()
}

const BLUE: [u8; 3] = [31, 119, 180];
const ORANGE: [u8; 3] = [255, 127, 14];

#[test]
fn plots_are_pngs_with_a_line_per_stage() {
    let dir = tempfile::tempdir().unwrap();
    let mut logger =
        MetricsLogger::new(dir.path(), LoggerConfig { console_every: 2, plots: true, wandb: None }).unwrap();
    logger.begin_stage("sft", 0, 5);
    for s in 1..=5 {
        logger.log(&record("sft", s, &[("loss", 2.0 / s as f64)])).unwrap();
    }
    logger.end_stage().unwrap();
    let plots = dir.path().join("plots");
    assert!(plots.join("loss.png").is_file(), "written at the stage end");
    assert!(!plots.join("reward.png").exists(), "no reward yet, no reward plot");
    logger.begin_stage("grpo", 5, 10);
    for s in 6..=10 {
        let x = s as f64;
        logger.log(&record("grpo", s, &[("reward", 0.1 * x), ("accuracy", 0.05 * x), ("loss", 0.01 * x)])).unwrap();
    }
    logger.finish().unwrap();

    // The supervised loss and GRPO's (orders of magnitude smaller) never share an axis.
    let loss = decode_png(&plots.join("loss.png"));
    assert!(count_color(&loss, BLUE) > 100, "the sft line");
    assert_eq!(count_color(&loss, ORANGE), 0, "no grpo line in the supervised loss plot");
    for name in ["reward.png", "accuracy.png", "grpo_loss.png"] {
        let pixels = decode_png(&plots.join(name));
        assert!(count_color(&pixels, BLUE) > 100, "{name}: grpo is its only stage");
        assert_eq!(count_color(&pixels, ORANGE), 0, "{name}: one stage, one colour");
    }
}

/// A GRPO loss of ~1e-8 next to an SFT loss of ~2 would read as 0: each plot holds one kind.
#[test]
fn grpo_loss_gets_its_own_plot() {
    let mut history: Vec<StepRecord> = (1..=3).map(|s| record("sft", s, &[("loss", 2.0 / s as f64)])).collect();
    history.extend((4..=6).map(|s| record("grpo", s, &[("reward", 0.5), ("loss", 1e-8 * s as f64)])));
    history.push(record("eval", 6, &[("accuracy", 0.4)]));
    let plots = plot::plot_series(&history);
    let stages = |stem: &str| -> Vec<String> {
        plots
            .iter()
            .find(|(s, _)| *s == stem)
            .map(|(_, series)| series.iter().map(|(st, _)| st.clone()).collect())
            .unwrap_or_default()
    };
    assert_eq!(stages("loss"), ["sft"]);
    assert_eq!(stages("grpo_loss"), ["grpo"]);
    assert_eq!(stages("reward"), ["grpo"]);
    assert_eq!(stages("accuracy"), ["eval"]);
}

/// Tick labels keep the digits their axis needs: a GRPO loss axis of a few 1e-8 does not read `-0.0`.
#[test]
fn tick_labels_fit_the_axis() {
    assert_eq!(plot::tick_label(-3.5e-8, 6e-8), "-3.50e-8");
    assert_eq!(plot::tick_label(0.25, 1.0), "0.25");
    assert_eq!(plot::tick_label(1.5, 300.0), "2");
    assert_eq!(plot::tick_label(0.0123, 0.01), "0.0123");
    assert_ne!(plot::tick_label(-2e-8, 1e-8), plot::tick_label(-3e-8, 1e-8));
}

#[test]
fn plots_without_a_font_still_render() {
    let series = vec![("grpo".to_string(), vec![(1, 0.5), (2, 0.5)]), ("eval".to_string(), vec![(2, 0.7)])];
    let png = plot::render_png("reward", "mean reward", &series, plot::SeriesLabelPosition::UpperLeft, false).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.png");
    std::fs::write(&path, png).unwrap();
    let pixels = decode_png(&path);
    assert!(count_color(&pixels, BLUE) > 100 && count_color(&pixels, ORANGE) > 10);
    let history =
        [record("a", 2, &[("loss", 1.0)]), record("b", 1, &[("loss", 3.0)]), record("a", 1, &[("loss", 2.0)])];
    let by_stage = plot::series(&history, "loss");
    assert_eq!(by_stage, [("a".to_string(), vec![(1, 2.0), (2, 1.0)]), ("b".to_string(), vec![(1, 3.0)])]);
}

fn wandb_config(python: PathBuf) -> WandbConfig {
    WandbConfig {
        mode: WandbMode::Offline,
        project: "rlvr-test".into(),
        entity: None,
        python,
        run_name: "metrics-test".into(),
        config_json: json!({"stage": "grpo", "lr": 1e-6, "group_size": 8}),
    }
}

fn with_wandb(python: PathBuf) -> LoggerConfig {
    LoggerConfig { console_every: 1, plots: false, wandb: Some(wandb_config(python)) }
}

/// An executable shell script standing in for python.
fn fake_python(dir: &Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("fake-python");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn a_missing_python_is_a_clear_error_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let python = dir.path().join("no-such-python");
    let run_dir = dir.path().join("run");
    let err = MetricsLogger::new(&run_dir, with_wandb(python.clone())).err().expect("no python, no logger");
    assert!(matches!(err, MetricsError::WandbPython { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains(&python.display().to_string()) && message.contains("bash scripts/wandb.sh"), "{message}");
    assert!(!run_dir.join("metrics.jsonl").exists());
}

#[test]
fn a_python_without_wandb_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    // -S: no site-packages, so no wandb whatever this python has installed.
    let python = fake_python(dir.path(), "exec python3 -S \"$@\"");
    let err = MetricsLogger::new(&dir.path().join("run"), with_wandb(python)).err().expect("no wandb, no logger");
    let message = err.to_string();
    assert!(matches!(err, MetricsError::WandbPython { .. }), "{message}");
    assert!(message.contains("cannot import wandb") && message.contains("bash scripts/wandb.sh"), "{message}");
}

#[test]
fn a_sidecar_dying_mid_run_costs_w_and_b_not_the_training() {
    let dir = tempfile::tempdir().unwrap();
    // Answers init, takes one record, dies.
    let python = fake_python(dir.path(), "read -r init\necho '{\"ready\": true}'\nread -r first\nexit 3");
    let run_dir = dir.path().join("run");
    let mut logger = MetricsLogger::new(&run_dir, with_wandb(python)).unwrap();
    assert!(logger.wandb_active());
    logger.log(&record("grpo", 1, &[("reward", 1.0)])).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while logger.wandb_active() {
        assert!(Instant::now() < deadline, "the dead sidecar was not noticed");
        std::thread::sleep(Duration::from_millis(20));
    }
    for s in 2..=3 {
        logger.log(&record("grpo", s, &[("reward", s as f64)])).unwrap();
    }
    logger.finish().unwrap();
    assert_eq!(jsonl::read(&run_dir.join("metrics.jsonl")).unwrap().len(), 3);
}

/// Reads the history and run records of `run_dir/wandb/offline-run-*/run-*.wandb` with wandb's
/// protobuf `Record` (wandb 0.31.0 ships no Python reader for its transaction log). The file is
/// a 7-byte header (`:W&B`, magic 0xBEE1, version 0), then LevelDB-log records in 32 KiB blocks:
/// each a 7-byte header (crc32 of type byte + data, data length, type: 1 full, 2 first,
/// 3 middle, 4 last) and its data; a block tail shorter than a header is padding.
const READ_WANDB: &str = r#"
import glob, json, struct, sys, zlib
from wandb.proto import wandb_internal_pb2 as pb

paths = glob.glob(f"{sys.argv[1]}/wandb/offline-run-*/run-*.wandb")
assert len(paths) == 1, paths
data = open(paths[0], "rb").read()
assert struct.unpack("<4sHB", data[:7]) == (b":W&B", 0xBEE1, 0), data[:7]
BLOCK, HEADER = 32768, 7
pos, pending, out = 7, b"", {"history": [], "run": None}
while pos + HEADER <= len(data):
    left = BLOCK - pos % BLOCK
    if left < HEADER:
        pos += left
        continue
    crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
    if kind == 0 and length == 0:
        pos += left
        continue
    chunk = data[pos + HEADER:pos + HEADER + length]
    assert zlib.crc32(bytes([kind]) + chunk) == crc, f"crc mismatch at byte {pos}"
    pos += HEADER + length
    pending = chunk if kind in (1, 2) else pending + chunk
    if kind not in (1, 4):
        continue
    record = pb.Record()
    record.ParseFromString(pending)
    which = record.WhichOneof("record_type")
    if which == "history":
        row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
        out["history"].append(row)
    elif which == "run":
        config = {item.key: json.loads(item.value_json) for item in record.run.config.update}
        out["run"] = {"name": record.run.display_name, "project": record.run.project, "config": config}
print(json.dumps(out))
"#;

#[test]
fn an_offline_w_and_b_run_holds_the_logged_history() {
    let Some(python) = std::env::var_os("RLVR_WANDB_PYTHON").map(PathBuf::from) else {
        eprintln!("skipped an_offline_w_and_b_run_holds_the_logged_history: RLVR_WANDB_PYTHON is unset (./x test sets it from `bash scripts/wandb.sh`)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut logger = MetricsLogger::new(dir.path(), with_wandb(python.clone())).unwrap();
    let values = [(0.25, 0.5, 1.5), (0.5, 0.625, 0.75), (0.75, 0.875, 0.375)];
    for (s, &(reward, acc, loss)) in (1u64..).zip(&values) {
        logger.log(&record("grpo", s, &[("reward", reward), ("accuracy", acc), ("loss", loss)])).unwrap();
    }
    assert!(logger.wandb_active());
    logger.finish().unwrap();

    let out = std::process::Command::new(&python).arg("-c").arg(READ_WANDB).arg(dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let read: Value = serde_json::from_str(stdout.trim()).unwrap();
    let run = &read["run"];
    assert_eq!(run["name"], "metrics-test");
    assert_eq!(run["project"], "rlvr-test");
    assert_eq!(run["config"]["lr"], 1e-6);
    assert_eq!(run["config"]["group_size"], 8);
    let history = read["history"].as_array().unwrap();
    assert_eq!(history.len(), 3, "{history:?}");
    for (s, (row, &(reward, acc, loss))) in (1u64..).zip(history.iter().zip(&values)) {
        assert_eq!(row["_step"], s);
        assert_eq!(row["grpo/reward"], reward);
        assert_eq!(row["grpo/accuracy"], acc);
        assert_eq!(row["grpo/loss"], loss);
    }
}
