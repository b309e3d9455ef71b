//! What `--resume` continues: the run that was started. The recipe saved with the newest
//! checkpoint is the truth; the recipe and `--set`s given now may differ from it only in keys that
//! do not change what is computed (`checkpoint.keep_last`, `logging.*`, `run.threads`,
//! `run.collective_timeout_s`, `run.out`), and any
//! other difference is an error that shows it. A finished run (its `report.json` written) is
//! reported, not run again.

use crate::checkpoint::RECIPE_FILE;
use crate::recipe::Recipe;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Keys a resumed run may change (prefixes of flattened key paths).
/// `run.out` is where the run is now (a run directory may be moved), not what it computes.
const MAY_CHANGE: [&str; 5] = ["checkpoint.keep_last", "logging", "run.threads", "run.collective_timeout_s", "run.out"];

/// The recipe a resume from `checkpoint` runs: the saved one, with the changeable keys taken from
/// `given`; an error listing every other key where `given` differs. Both hold absolute paths (the
/// given recipe's resolved against its folder, the saved one as it was saved), so a resume from
/// another directory compares the files themselves.
pub fn continued_recipe(given: Recipe, checkpoint: &Path) -> Result<Recipe> {
    let path = checkpoint.join(RECIPE_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut saved =
        Recipe::parse(&text, &path, &[]).with_context(|| format!("the run's saved recipe {}", path.display()))?;
    let (now, then) = (flatten(&given)?, flatten(&saved)?);
    let keys: std::collections::BTreeSet<&String> = now.keys().chain(then.keys()).collect();
    let changed: Vec<String> = keys
        .into_iter()
        .filter(|k| !MAY_CHANGE.iter().any(|m| k.as_str() == *m || k.starts_with(&format!("{m}."))))
        .filter(|k| now.get(*k) != then.get(*k))
        .map(|k| format!("  {k}: saved {}, now {}", shown(then.get(k)), shown(now.get(k))))
        .collect();
    if !changed.is_empty() {
        bail!(
            "--resume continues the run that was started, and the recipe given now differs from its saved recipe ({}):\n{}\nundo these changes, or start a new run with --out",
            path.display(),
            changed.join("\n")
        );
    }
    saved.checkpoint.keep_last = given.checkpoint.keep_last;
    saved.logging = given.logging;
    saved.run.threads = given.run.threads;
    saved.run.collective_timeout_s = given.run.collective_timeout_s;
    saved.run.out = given.run.out;
    Ok(saved)
}

/// The report of a finished run in `run_dir`, if there is one.
pub fn finished_report(run_dir: &Path) -> Result<Option<Value>> {
    let path = run_dir.join("report.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?))
}

/// A recipe as `key.path[i].key → value`.
fn flatten(recipe: &Recipe) -> Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    walk(String::new(), serde_json::to_value(recipe)?, &mut out);
    Ok(out)
}

fn walk(at: String, value: Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                walk(if at.is_empty() { k } else { format!("{at}.{k}") }, v, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.into_iter().enumerate() {
                walk(format!("{at}[{i}]"), v, out);
            }
        }
        leaf => {
            out.insert(at, leaf);
        }
    }
}

fn shown(value: Option<&Value>) -> String {
    value.map_or_else(|| "(absent)".to_string(), Value::to_string)
}
