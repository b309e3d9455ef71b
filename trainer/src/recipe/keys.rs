//! Key paths into a recipe (`stages`, 2, `steps`): how they are written in messages and where they
//! sit in the file.

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    /// A key of a table.
    Key(String),
    /// A position in an array.
    Index(usize),
}

/// A key path from the top of the recipe.
pub(crate) type KeyPath = Vec<Seg>;

/// Builds a path of table keys.
pub(crate) fn keys(names: &[&str]) -> KeyPath {
    names.iter().map(|k| Seg::Key(k.to_string())).collect()
}

/// A path under `stages[i]`.
pub(crate) fn stage_key(i: usize, field: &str) -> KeyPath {
    vec![Seg::Key("stages".into()), Seg::Index(i), Seg::Key(field.into())]
}

/// One mistake found while reading or checking a recipe, before it is placed in the file.
#[derive(Debug, Clone)]
pub(crate) struct Problem {
    /// The key at fault.
    pub path: KeyPath,
    /// What is wrong, without the key.
    pub message: String,
}

impl Problem {
    /// A mistake at `path`.
    pub fn new(path: KeyPath, message: impl Into<String>) -> Self {
        Problem { path, message: message.into() }
    }
}

/// Writes a path as messages show it: `optimizer.lr`, `stages[2] (grpo).steps`, `pass_k[0]`.
/// `stage_labels[i]` is stage i's name (or kind), shown after its index.
pub(crate) fn show(path: &[Seg], stage_labels: &[String]) -> String {
    let mut out = String::new();
    for (i, seg) in path.iter().enumerate() {
        match seg {
            Seg::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Seg::Index(n) => {
                out.push_str(&format!("[{n}]"));
                let under_stages = i == 1 && path[0] == Seg::Key("stages".into());
                if let Some(label) = stage_labels.get(*n).filter(|_| under_stages) {
                    out.push_str(&format!(" ({label})"));
                }
            }
        }
    }
    out
}

/// The byte range in the source of the deepest part of `path` the document holds: the key itself
/// when it is written, else the nearest enclosing table or array element.
pub(crate) fn span_of(doc: &Spanned<DeTable<'_>>, path: &[Seg]) -> Option<std::ops::Range<usize>> {
    locate(doc, path).0
}

/// Whether the document writes all of `path`.
pub(crate) fn is_written(doc: &Spanned<DeTable<'_>>, path: &[Seg]) -> bool {
    locate(doc, path).1 == path.len()
}

/// The span of the deepest part of `path` found, and how many segments were found.
fn locate(doc: &Spanned<DeTable<'_>>, path: &[Seg]) -> (Option<std::ops::Range<usize>>, usize) {
    let mut found = 0;
    let mut best = None;
    let mut value: Option<&Spanned<DeValue<'_>>> = None;
    for seg in path {
        let next = match (seg, value.map(Spanned::get_ref)) {
            (Seg::Key(key), None) => doc.get_ref().get_key_value(key.as_str()),
            (Seg::Key(key), Some(DeValue::Table(table))) => table.get_key_value(key.as_str()),
            (Seg::Index(n), Some(DeValue::Array(array))) => match array.get(*n) {
                Some(element) => {
                    best = Some(element.span()).filter(|s| !s.is_empty()).or(best);
                    value = Some(element);
                    found += 1;
                    continue;
                }
                None => None,
            },
            _ => None,
        };
        let Some((key, next)) = next else { break };
        best = Some(key.span());
        value = Some(next);
        found += 1;
    }
    (best, found)
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The label of each stage in a raw recipe table: its `name`, else its `kind`, else `?`.
pub(crate) fn stage_labels(root: &toml::Table) -> Vec<String> {
    let Some(toml::Value::Array(stages)) = root.get("stages") else { return Vec::new() };
    stages
        .iter()
        .map(|stage| {
            let field = |k: &str| stage.get(k).and_then(toml::Value::as_str).map(str::to_string);
            field("name").or_else(|| field("kind")).unwrap_or_else(|| "?".into())
        })
        .collect()
}

/// Turns a `serde_path_to_error` path into ours (enum variant steps carry no key and are skipped).
pub(crate) fn from_serde_path(path: &serde_path_to_error::Path) -> KeyPath {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|seg| match seg {
            Segment::Seq { index } => Some(Seg::Index(*index)),
            Segment::Map { key } => Some(Seg::Key(key.clone())),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect()
}
