//! Paths in a recipe mean the same wherever `rlvr train` runs: a relative path written in the
//! recipe is relative to the recipe file's folder, one given by `--set` to the working directory
//! (it was typed there), and the resolved recipe — the one saved in the run directory and in every
//! checkpoint — holds them absolute, so a resume from anywhere reads the same files.
//!
//! The paths: `data.train`, `data.test`, `model.path`, `run.out` (when written; the default
//! `runs/<name>` is under the working directory), `logging.wandb.python` and a code verifier's
//! `python` (when they hold a `/`: a bare name is looked up on `PATH`), and in an external
//! verifier's `command` every word that names a file or folder beside the recipe
//! (`command = "python3 reward.py"` runs the `reward.py` next to the recipe).
//!
//! Paths are made absolute lexically (`.` and `..` folded, links left alone).

use super::keys::{keys, KeyPath, Seg};
use super::{Recipe, Verifiers};
use crate::data::DataSpec;
use std::path::{Component, Path, PathBuf};

/// Where relative paths are taken from.
pub(crate) struct Bases<'a> {
    /// The recipe file's folder (absolute).
    pub recipe: PathBuf,
    /// The working directory.
    pub cwd: PathBuf,
    /// The keys each `--set` wrote: paths under them are relative to `cwd`.
    pub sets: &'a [KeyPath],
}

impl Bases<'_> {
    /// The bases for a recipe read from `file`.
    pub fn new<'a>(file: &Path, sets: &'a [KeyPath]) -> Bases<'a> {
        let cwd = working_dir();
        let folder = file.parent().map(Path::to_path_buf).unwrap_or_default();
        Bases { recipe: absolute_in(&cwd, &folder), cwd, sets }
    }

    /// The folder the value at `key` is relative to.
    fn base(&self, key: &[Seg]) -> &Path {
        if self.sets.iter().any(|written| key.starts_with(written)) {
            &self.cwd
        } else {
            &self.recipe
        }
    }

    /// `path` (the value at `key`) made absolute.
    fn absolute(&self, key: &[Seg], path: &Path) -> PathBuf {
        absolute_in(self.base(key), path)
    }
}

/// The working directory (`.` when it cannot be read).
pub(crate) fn working_dir() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
}

/// `path` made absolute against `base` when relative, with `.` and `..` folded.
pub fn absolute_in(base: &Path, path: &Path) -> PathBuf {
    let joined = if path.is_absolute() { path.to_path_buf() } else { base.join(path) };
    let mut out = PathBuf::new();
    for part in joined.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(part);
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// Makes every path of `recipe` absolute (see the module docs); run before defaults are filled.
pub(crate) fn resolve(recipe: &mut Recipe, bases: &Bases<'_>) {
    if let DataSpec::Jsonl(files) | DataSpec::Parquet(files) = &mut recipe.data {
        files.train = bases.absolute(&keys(&["data", "train"]), &files.train);
        if let Some(test) = &mut files.test {
            *test = bases.absolute(&keys(&["data", "test"]), test);
        }
    }
    if let Some(path) = &mut recipe.model.path {
        *path = bases.absolute(&keys(&["model", "path"]), path);
    }
    if let Some(out) = &mut recipe.run.out {
        *out = bases.absolute(&keys(&["run", "out"]), out);
    }
    if let Some(python) = recipe.logging.wandb.python.as_mut().filter(|p| p.components().count() > 1) {
        *python = bases.absolute(&keys(&["logging", "wandb", "python"]), python);
    }
    match &mut recipe.verifier {
        Verifiers::One(table) => verifier(table, keys(&["verifier"]), bases),
        Verifiers::Weighted(list) => {
            for (i, table) in list.iter_mut().enumerate() {
                verifier(table, vec![Seg::Key("verifier".into()), Seg::Index(i)], bases);
            }
        }
    }
}

/// The default run directory, `runs/<name>` under the working directory, when none was written.
pub(crate) fn default_out(recipe: &mut Recipe, cwd: &Path) {
    if let Some(out) = &mut recipe.run.out {
        *out = absolute_in(cwd, out);
    }
}

/// The paths inside one verifier table at `at`.
fn verifier(table: &mut toml::Table, at: KeyPath, bases: &Bases<'_>) {
    let key = |k: &str| {
        let mut path = at.clone();
        path.push(Seg::Key(k.into()));
        path
    };
    let kind = table.get("kind").and_then(toml::Value::as_str).unwrap_or_default().to_string();
    match kind.as_str() {
        "external" => {
            if let Some(toml::Value::String(command)) = table.get_mut("command") {
                *command = resolve_command(command, bases.base(&key("command")));
            }
        }
        "code" => {
            if let Some(toml::Value::String(python)) = table.get_mut("python") {
                if python.contains('/') {
                    *python = bases.absolute(&key("python"), Path::new(python)).display().to_string();
                }
            }
        }
        _ => {}
    }
}

/// `command` with each word that names an existing file or folder relative to `base` replaced by
/// its absolute path (quoted for the shell when it needs it). Options, absolute paths and words
/// with shell syntax are left alone.
pub fn resolve_command(command: &str, base: &Path) -> String {
    let shell_syntax =
        |w: &str| w.contains(['\'', '"', '$', '`', '\\', ';', '|', '&', '<', '>', '(', ')', '*', '?', '=']);
    command
        .split(' ')
        .map(|word| {
            let path = Path::new(word);
            let plain = !word.is_empty() && !word.starts_with(['-', '~']) && !path.is_absolute() && !shell_syntax(word);
            if plain && base.join(path).exists() {
                quote(&absolute_in(base, path).display().to_string())
            } else {
                word.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A word as the shell reads it back: as is when it is plain, else in single quotes.
fn quote(word: &str) -> String {
    let plain = word.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+,:@%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_folds_dots() {
        let base = Path::new("/a/b");
        assert_eq!(absolute_in(base, Path::new("../c/./d.jsonl")), PathBuf::from("/a/c/d.jsonl"));
        assert_eq!(absolute_in(base, Path::new("/x/../y")), PathBuf::from("/y"));
        assert_eq!(absolute_in(base, Path::new("e")), PathBuf::from("/a/b/e"));
    }

    #[test]
    fn commands_name_files_beside_the_recipe() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("reward.py"), "").unwrap();
        std::fs::create_dir(dir.path().join("my dir")).unwrap();
        std::fs::write(dir.path().join("my dir/x.py"), "").unwrap();
        let base = dir.path();
        let abs = |p: &str| base.join(p).display().to_string();
        assert_eq!(
            resolve_command("python3 -u reward.py --k 2", base),
            format!("python3 -u {} --k 2", abs("reward.py"))
        );
        assert_eq!(resolve_command("python3 missing.py", base), "python3 missing.py");
        assert_eq!(resolve_command("python3 /abs/reward.py", base), "python3 /abs/reward.py");
        assert_eq!(resolve_command("sh -c 'reward.py'", base), "sh -c 'reward.py'");
        // A folder name with a space cannot be one word; its files under it can.
        let quoted = resolve_command("cat ./reward.py", base);
        assert_eq!(quoted, format!("cat {}", abs("reward.py")));
    }
}
