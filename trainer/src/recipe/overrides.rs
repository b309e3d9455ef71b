//! `--set KEY=VALUE`: one change to the parsed recipe before it is read into structs.
//!
//! KEY is dotted (`optimizer.lr`, `logging.wandb.enabled`); inside an array a segment is a 0-based
//! index or, for `stages`, a stage's name (its kind when unnamed): `stages.1.steps`,
//! `stages.eval_before.samples`. Missing tables on the way are created, so a section the file
//! leaves out can still be set. VALUE is read as a TOML value (`3`, `1e-4`, `true`, `"text"`,
//! `[1, 2]`), else taken as a bare string (`cuda:0`). Unknown keys are not caught here: they reach
//! deserialisation, which rejects them and blames this argument.

use super::keys::{KeyPath, Seg};
use toml::Value;

/// Applies one `--set` argument to `root`, returning the path it wrote (stage names resolved to
/// indices), or what is wrong with the argument.
pub(crate) fn apply(root: &mut toml::Table, arg: &str) -> Result<KeyPath, String> {
    let (key, raw) = arg.split_once('=').ok_or("expected KEY=VALUE, e.g. optimizer.lr=1e-4")?;
    let key = key.trim();
    let names: Vec<&str> = key.split('.').collect();
    if key.is_empty() || names.iter().any(|n| n.is_empty()) {
        return Err(format!("`{key}` is not a dotted key such as optimizer.lr"));
    }
    let mut doc = Value::Table(std::mem::take(root));
    let written = set(&mut doc, &names, parse_value(raw.trim()));
    let Value::Table(table) = doc else { unreachable!("the document stays a table") };
    *root = table;
    written
}

/// Writes `value` at `names` under `doc`.
fn set(doc: &mut Value, names: &[&str], value: Value) -> Result<KeyPath, String> {
    let (last, parents) = names.split_last().expect("a key has at least one name");
    let mut path = KeyPath::new();
    let mut slot = doc;
    for name in parents {
        slot = step(slot, name, &mut path)?;
    }
    match slot {
        Value::Table(table) => {
            table.insert(last.to_string(), value);
            path.push(Seg::Key(last.to_string()));
        }
        Value::Array(_) => *step(slot, last, &mut path)? = value,
        other => return Err(not_a_table(&path, other)),
    }
    Ok(path)
}

/// Descends from `slot` into `name`: a table key (created when absent) or an array element.
fn step<'a>(slot: &'a mut Value, name: &str, path: &mut KeyPath) -> Result<&'a mut Value, String> {
    match slot {
        Value::Table(table) => {
            path.push(Seg::Key(name.to_string()));
            Ok(table.entry(name.to_string()).or_insert_with(|| Value::Table(toml::Table::new())))
        }
        Value::Array(items) => {
            let index = element_index(items, name).map_err(|e| format!("{}: {e}", super::keys::show(path, &[])))?;
            path.push(Seg::Index(index));
            Ok(&mut items[index])
        }
        other => Err(not_a_table(path, other)),
    }
}

/// Position of `name` in an array: a 0-based index, or the one element whose `name` (else
/// `kind`) is `name`.
fn element_index(items: &[Value], name: &str) -> Result<usize, String> {
    if let Ok(index) = name.parse::<usize>() {
        return if index < items.len() {
            Ok(index)
        } else {
            Err(format!("has {} entries; there is no index {index}", items.len()))
        };
    }
    let label = |item: &Value| {
        let field = |k: &str| item.get(k).and_then(Value::as_str);
        field("name").or_else(|| field("kind")).map(str::to_string)
    };
    let labels: Vec<Option<String>> = items.iter().map(label).collect();
    let matches: Vec<usize> = (0..items.len()).filter(|&i| labels[i].as_deref() == Some(name)).collect();
    match matches[..] {
        [index] => Ok(index),
        [] => {
            let known: Vec<String> = labels.iter().flatten().map(|l| format!("`{l}`")).collect();
            Err(format!("no entry named `{name}` (entries: {})", known.join(", ")))
        }
        _ => Err(format!("{} entries are named `{name}`; use an index", matches.len())),
    }
}

fn not_a_table(path: &[Seg], value: &Value) -> String {
    format!("{} is a {}, not a table", super::keys::show(path, &[]), value.type_str())
}

/// A TOML value, or the text itself when it is not one.
fn parse_value(raw: &str) -> Value {
    raw.parse::<Value>().unwrap_or_else(|_| Value::String(raw.to_string()))
}
