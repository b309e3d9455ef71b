//! Row readers: JSONL (one object per line) and Parquet, both into `serde_json` objects so that
//! field mapping (`formats`) sees one representation.
//!
//! Parquet columns convert as: strings → strings, integers → numbers, floats → numbers (NaN and
//! infinities → null), booleans → booleans, lists → arrays, maps and groups (structs) → objects,
//! nulls → null, and anything else (binary, decimals, dates, times) → its display string. Rows are
//! read through the record API (no Arrow), so Parquet's own nesting comes through unchanged.
//!
//! Left out: JSONL compression, Parquet codecs other than snappy and uncompressed (the reader names
//! the codec it lacks), reading column subsets.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use parquet::file::reader::SerializedFileReader;
use parquet::record::{Field, Row};
use serde_json::{Map, Number, Value};

use super::{DataError, RowRef};

/// The two on-disk layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Jsonl,
    Parquet,
}

/// The rows of a file as JSON objects, each with where it came from.
pub(crate) type Rows = Vec<(RowRef, Map<String, Value>)>;

/// Every row of `path` with where it came from.
pub(crate) fn read_rows(path: &Path, kind: Kind) -> Result<Rows, DataError> {
    match kind {
        Kind::Jsonl => read_jsonl(path),
        Kind::Parquet => read_parquet(path),
    }
}

/// One JSON object per line; blank lines are skipped but still counted.
fn read_jsonl(path: &Path) -> Result<Rows, DataError> {
    let io = |source| DataError::Io { path: path.to_path_buf(), source };
    let reader = BufReader::new(File::open(path).map_err(io)?);
    let mut rows = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let at = RowRef::Line(i + 1);
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| DataError::Json { path: path.to_path_buf(), at, message };
        match serde_json::from_str::<Value>(&line).map_err(|e| bad(e.to_string()))? {
            Value::Object(row) => rows.push((at, row)),
            other => return Err(bad(format!("expected an object, got {}", json_kind(&other)))),
        }
    }
    Ok(rows)
}

/// Every row of a Parquet file, converted column by column.
fn read_parquet(path: &Path) -> Result<Rows, DataError> {
    let file = File::open(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    let bad = |message: String| DataError::Parquet { path: path.to_path_buf(), message };
    let reader = SerializedFileReader::new(file).map_err(|e| bad(e.to_string()))?;
    let mut rows = Vec::new();
    for (i, row) in reader.into_iter().enumerate() {
        let at = RowRef::Row(i + 1);
        let row = row.map_err(|e| bad(format!("{at}: {e}")))?;
        rows.push((at, row_to_json(&row)));
    }
    Ok(rows)
}

/// A record (top-level row or nested group) as a JSON object.
fn row_to_json(row: &Row) -> Map<String, Value> {
    row.get_column_iter().map(|(name, field)| (name.clone(), field_to_json(field))).collect()
}

/// One Parquet value as JSON (see the module docs for the mapping).
fn field_to_json(field: &Field) -> Value {
    match field {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(v) => Value::from(*v),
        Field::Short(v) => Value::from(*v),
        Field::Int(v) => Value::from(*v),
        Field::Long(v) => Value::from(*v),
        Field::UByte(v) => Value::from(*v),
        Field::UShort(v) => Value::from(*v),
        Field::UInt(v) => Value::from(*v),
        Field::ULong(v) => Value::from(*v),
        Field::Float16(v) => float(f64::from(*v)),
        Field::Float(v) => float(f64::from(*v)),
        Field::Double(v) => float(*v),
        Field::Str(s) => Value::String(s.clone()),
        Field::Group(row) => Value::Object(row_to_json(row)),
        Field::ListInternal(list) => Value::Array(list.elements().iter().map(field_to_json).collect()),
        Field::MapInternal(map) => {
            let entries = map.entries().iter().map(|(k, v)| (map_key(k), field_to_json(v)));
            Value::Object(entries.collect())
        }
        other => Value::String(other.to_string()),
    }
}

/// A finite float as a JSON number, else null (JSON has no NaN).
fn float(v: f64) -> Value {
    Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// A map key as an object key: strings as they are, anything else by its display form.
fn map_key(key: &Field) -> String {
    match key {
        Field::Str(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The JSON type name of a value, for messages.
pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
