//! `run_dir/metrics.jsonl`: one JSON object a line, `{"stage", "step", "time", <metrics>...}`,
//! with `time` in unix seconds and the metrics in the order the stage set them.
//!
//! Each line goes to the file in one `write` of the whole line, unbuffered, so a kill loses at most
//! the line being written; such a torn last line (no newline) is dropped when the file is opened.
//! A resumed run appends, after [`JsonlWriter::truncate_after`] has dropped the steps past the
//! checkpoint.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{MetricsError, StepRecord};

/// The file's name inside the run dir.
pub const FILE_NAME: &str = "metrics.jsonl";

/// The fields every line has before the metrics; a metric with one of these names is not written.
const RESERVED: [&str; 3] = ["stage", "step", "time"];

/// An open metrics.jsonl, appended to line by line.
pub struct JsonlWriter {
    path: PathBuf,
    file: File,
}

impl JsonlWriter {
    /// Opens (or creates) `path` for appending and returns the records already in it. A torn last
    /// line is cut off the file; any other line that is not a record is an error.
    pub fn open(path: &Path) -> Result<(Self, Vec<StepRecord>), MetricsError> {
        let (lines, whole_len) = scan(path)?;
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(|e| MetricsError::io(path, e))?;
        let len = file.metadata().map_err(|e| MetricsError::io(path, e))?.len();
        if len > whole_len {
            file.set_len(whole_len).map_err(|e| MetricsError::io(path, e))?;
        }
        let records = lines.into_iter().map(|(record, _)| record).collect();
        Ok((Self { path: path.to_path_buf(), file }, records))
    }

    /// Appends `record` stamped with `time` (unix seconds) as one line, and flushes it.
    pub fn append(&mut self, record: &StepRecord, time: f64) -> Result<(), MetricsError> {
        let mut line = to_line(record, time);
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|e| MetricsError::io(&self.path, e))
    }

    /// Drops the lines whose step is past `step`, keeping the rest byte for byte (the file is
    /// rewritten through a temporary file and a rename). Returns how many lines were dropped.
    pub fn truncate_after(&mut self, step: u64) -> Result<usize, MetricsError> {
        self.retain(|r| r.step <= step)
    }

    /// Keeps the lines whose record satisfies `keep`, byte for byte, in order (rewritten through a
    /// temporary file and a rename). Returns how many lines were dropped.
    pub fn retain(&mut self, keep: impl Fn(&StepRecord) -> bool) -> Result<usize, MetricsError> {
        let (lines, _) = scan(&self.path)?;
        let (kept, dropped): (Vec<_>, Vec<_>) = lines.into_iter().partition(|(r, _)| keep(r));
        let kept: String = kept.into_iter().map(|(_, line)| line + "\n").collect();
        let dropped = dropped.len();
        if dropped > 0 {
            let tmp = self.path.with_extension("jsonl.tmp");
            std::fs::write(&tmp, kept).map_err(|e| MetricsError::io(&tmp, e))?;
            std::fs::rename(&tmp, &self.path).map_err(|e| MetricsError::io(&self.path, e))?;
            self.file =
                OpenOptions::new().append(true).open(&self.path).map_err(|e| MetricsError::io(&self.path, e))?;
        }
        Ok(dropped)
    }
}

/// The records in a metrics.jsonl (none when the file does not exist), torn last line left out.
pub fn read(path: &Path) -> Result<Vec<StepRecord>, MetricsError> {
    Ok(scan(path)?.0.into_iter().map(|(record, _)| record).collect())
}

/// One record as its line (no newline): stage, step, time, then the metrics.
pub fn to_line(record: &StepRecord, time: f64) -> String {
    let mut object = Map::new();
    object.insert("stage".into(), Value::String(record.stage.clone()));
    object.insert("step".into(), record.step.into());
    object.insert("time".into(), serde_json::Number::from_f64(time).map_or(Value::Null, Value::Number));
    for (key, value) in &record.metrics {
        if !RESERVED.contains(&key.as_str()) {
            object.insert(key.clone(), value.clone());
        }
    }
    Value::Object(object).to_string()
}

/// Parses one line back into a record (its `time` is not part of a [`StepRecord`]).
pub fn parse_line(line: &str) -> Result<StepRecord, String> {
    let mut object = match serde_json::from_str(line).map_err(|e| e.to_string())? {
        Value::Object(object) => object,
        other => return Err(format!("expected a JSON object, found {other}")),
    };
    let stage = match object.remove("stage") {
        Some(Value::String(stage)) => stage,
        _ => return Err("field `stage`: missing or not a string".into()),
    };
    let step = object.remove("step").and_then(|s| s.as_u64()).ok_or("field `step`: missing or not an integer")?;
    object.remove("time");
    Ok(StepRecord { stage, step, metrics: object })
}

/// The file's complete lines, parsed, each with its text, and the byte length they cover.
fn scan(path: &Path) -> Result<(Vec<(StepRecord, String)>, u64), MetricsError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(MetricsError::io(path, e)),
    };
    // Everything after the last newline is a line torn by a kill.
    let whole_len = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let whole = std::str::from_utf8(&bytes[..whole_len]).map_err(|e| MetricsError::Corrupt {
        path: path.to_path_buf(),
        line: 1 + bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count(),
        message: "not UTF-8".into(),
    })?;
    let mut lines = Vec::new();
    for (i, line) in whole.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let record = parse_line(line).map_err(|message| MetricsError::Corrupt {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        })?;
        lines.push((record, line.to_string()));
    }
    Ok((lines, whole_len as u64))
}
