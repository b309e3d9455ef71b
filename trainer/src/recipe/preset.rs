//! Where a recipe's model comes from: a preset's or a model directory's `config.json`, with
//! `[model.config]` merged over it.

use super::keys::{keys, Problem, Seg};
use super::{ModelSection, RecipeError};
use rlvr_model::ModelConfig;
use std::path::{Path, PathBuf};

/// Directories searched for presets, in order: `$RLVR_PRESETS`, then `presets/` in the executable's
/// directory and up to three levels above it (an installed `bin/rlvr` beside `presets/`, or
/// `target/release/rlvr` in the repository), then the repository's `presets/` this binary was built
/// from. The working directory plays no part: a preset name means the same wherever `rlvr` runs.
/// This is the one lookup of preset names: recipes (`model.preset`), `rlvr init --config NAME` and
/// `rlvr inspect NAME` all use it.
pub fn preset_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("RLVR_PRESETS").map(PathBuf::from).into_iter().collect();
    if let Some(exe_dir) = std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf)) {
        dirs.extend(exe_dir.ancestors().take(4).map(|dir| dir.join("presets")));
    }
    // This crate lives in `<repository>/trainer`.
    if let Some(repo) = Path::new(env!("CARGO_MANIFEST_DIR")).parent() {
        dirs.push(repo.join("presets"));
    }
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

/// The directory of preset `name` (the first of [`preset_dirs`] holding `name/config.json`).
pub fn find_preset(name: &str) -> Option<PathBuf> {
    if name.is_empty() || name.contains(['/', '\\']) || name == ".." || name == "." {
        return None;
    }
    preset_dirs().into_iter().map(|dir| dir.join(name)).find(|dir| dir.join("config.json").is_file())
}

/// A model argument of the CLI (`rlvr init --config`, `rlvr inspect`): an existing path (a
/// `config.json` or a model directory), else a preset name looked up by [`find_preset`]; the error
/// names the working directory and every folder searched.
pub fn resolve_model_arg(arg: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(arg);
    if path.exists() {
        return Ok(path);
    }
    find_preset(arg).ok_or_else(|| {
        let cwd = std::env::current_dir().map_or_else(|_| "?".into(), |d| d.display().to_string());
        let searched: Vec<String> = preset_dirs().iter().map(|d| d.display().to_string()).collect();
        format!("`{arg}` is neither a path (working directory {cwd}) nor a preset in {}", searched.join(", "))
    })
}

impl ModelSection {
    /// The directory whose `config.json` describes the model: the preset's, or `path`.
    pub fn source_dir(&self) -> Result<PathBuf, RecipeError> {
        source_dir(self).map_err(field_error)
    }

    /// The architecture: the source's `config.json` with `[model.config]` merged over it.
    pub fn model_config(&self) -> Result<ModelConfig, RecipeError> {
        model_config(self).map_err(field_error)
    }
}

fn field_error(problem: Problem) -> RecipeError {
    RecipeError::Field { key: super::keys::show(&problem.path, &[]), message: problem.message }
}

/// The key that chose the model's source: `model.preset` or `model.path`.
fn source_key(model: &ModelSection) -> Vec<Seg> {
    keys(&["model", if model.preset.is_some() { "preset" } else { "path" }])
}

pub(crate) fn source_dir(model: &ModelSection) -> Result<PathBuf, Problem> {
    match (&model.preset, &model.path) {
        (Some(_), Some(_)) => {
            Err(Problem::new(keys(&["model", "path"]), "is given together with `model.preset`; give exactly one"))
        }
        (None, None) => Err(Problem::new(
            keys(&["model"]),
            "names no model; give `preset` (a directory under presets/) or `path` (a Hugging Face model directory)",
        )),
        (Some(name), None) => find_preset(name).ok_or_else(|| {
            let searched: Vec<String> = preset_dirs().iter().map(|d| d.display().to_string()).collect();
            Problem::new(keys(&["model", "preset"]), format!("no preset `{name}` in {}", searched.join(", ")))
        }),
        (None, Some(dir)) if dir.join("config.json").is_file() => Ok(dir.clone()),
        (None, Some(dir)) => {
            let message = format!("{} holds no config.json{}", dir.display(), super::validate::where_from());
            Err(Problem::new(keys(&["model", "path"]), message))
        }
    }
}

pub(crate) fn model_config(model: &ModelSection) -> Result<ModelConfig, Problem> {
    let dir = source_dir(model)?;
    let file = dir.join("config.json");
    let at_source = |message: String| Problem::new(source_key(model), message);
    let text = std::fs::read_to_string(&file).map_err(|e| at_source(format!("{}: {e}", file.display())))?;
    let mut json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| at_source(format!("{}: {e}", file.display())))?;
    let overrides = serde_json::to_value(&model.config)
        .map_err(|e| Problem::new(keys(&["model", "config"]), format!("is not JSON-representable: {e}")))?;
    merge(&mut json, overrides);
    ModelConfig::from_json(&json.to_string()).map_err(|err| {
        let message = match err {
            rlvr_model::ModelError::Config { message, .. } => without_json_position(&message).to_string(),
            other => other.to_string(),
        };
        // rlvr_model names the field as "field `a.b`: ..."; point at it when [model.config] set it.
        let field = message.strip_prefix("field `").and_then(|rest| rest.split_once('`')).map(|(f, _)| f);
        match field.filter(|f| sets_field(&model.config, f)) {
            Some(f) => {
                let mut path = keys(&["model", "config"]);
                path.extend(f.split('.').map(|k| Seg::Key(k.into())));
                let detail = message.split_once(": ").map_or(message.as_str(), |(_, rest)| rest);
                Problem::new(path, detail.to_string())
            }
            None => at_source(format!("{} (with [model.config] merged in): {message}", file.display())),
        }
    })
}

/// `message` without serde_json's " at line L column C", which points into the merged JSON that
/// no one sees.
fn without_json_position(message: &str) -> &str {
    let Some((head, tail)) = message.rsplit_once(" at line ") else { return message };
    let position = tail
        .split_once(" column ")
        .filter(|(l, c)| [l, c].iter().all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())));
    if position.is_some() {
        head
    } else {
        message
    }
}

/// Whether the overrides table holds the dotted `field`.
fn sets_field(table: &toml::Table, field: &str) -> bool {
    let mut parts = field.split('.');
    let Some(first) = parts.next() else { return false };
    let mut value = table.get(first);
    for part in parts {
        value = value.and_then(|v| v.get(part));
    }
    value.is_some()
}

/// Deep-merges `over` into `base`: objects merge key by key, anything else replaces.
fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(base), serde_json::Value::Object(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (slot, value) => *slot = value,
    }
}
