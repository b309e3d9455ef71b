//! [`Recipe::load`] and the resolved recipe: parse, apply `--set`, deserialise, fill in defaults, validate; and
//! turn each mistake into an error that names the file, the key, and the line or `--set` at fault.
//!
//! Deserialisation runs on the table after overrides, which has lost the source positions, so
//! positions come from a second, span-keeping parse of the file: the error's key path is looked up
//! in it. Internally tagged enums (`[[stages]]` by `kind`, `[data]` by `source`) buffer their
//! fields and so report errors without the field's name; those are diagnosed again against the
//! variant's own struct.

use super::error::{At, RecipeError};
use super::keys::{from_serde_path, is_written, keys, line_column, show, span_of, stage_labels, KeyPath, Problem, Seg};
use super::stage::{EvalStage, GrpoStage, IndexerWarmupStage, PretrainStage, SftStage, SparseTrainStage, STAGE_KINDS};
use super::{overrides, paths, validate, Recipe, Stage};
use crate::data::{ArithmeticSpec, FileSpec};
use crate::grpo::LossConfig;
use rlvr_rollout::engine::SamplingParams;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};
use toml::de::DeTable;
use toml::Spanned;

impl Recipe {
    /// Reads `path`, applies `--set KEY=VALUE` overrides in order, fills in defaults and checks the
    /// result.
    pub fn load(path: &Path, sets: &[String]) -> Result<Recipe, RecipeError> {
        let text = std::fs::read_to_string(path).map_err(|source| RecipeError::Io { path: path.into(), source })?;
        parse(&text, path, sets)
    }

    /// Parses recipe text as if read from `file` (which only names the source in errors).
    pub fn parse(text: &str, file: &Path, sets: &[String]) -> Result<Recipe, RecipeError> {
        parse(text, file, sets)
    }

    /// The resolved recipe as TOML; loading it again gives the same recipe.
    ///
    /// # Panics
    /// On integers TOML cannot hold (above `i64::MAX`), which a loaded recipe never has.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a recipe is representable as TOML")
    }

    /// The run directory, absolute: `out_override` (`--out`, relative to the working directory),
    /// else `run.out`, else `runs/<name>` under the working directory.
    pub fn run_dir(&self, out_override: Option<&Path>) -> PathBuf {
        let cwd = paths::working_dir();
        match (out_override, self.run.out.as_deref()) {
            (Some(dir), _) | (None, Some(dir)) => paths::absolute_in(&cwd, dir),
            (None, None) => cwd.join("runs").join(&self.run.name),
        }
    }

    /// The reward, from `[verifier]` or `[[verifier]]`.
    pub fn reward(&self) -> Result<super::Reward, RecipeError> {
        validate::reward(&self.verifier).map_err(|p| RecipeError::Field { key: show(&p.path, &[]), message: p.message })
    }

    /// Fills in the defaults that depend on other keys, so the saved recipe shows every value the
    /// run uses: `run.out`, `model.init_seed` (and `model.add_indexer.seed`), `algorithm.constant_norm`, each training stage's
    /// `lr`, and each eval's `temperature` and `pass_k`.
    pub fn resolve(&mut self) {
        self.run.out.get_or_insert_with(|| Path::new("runs").join(&self.run.name));
        let init_seed = *self.model.init_seed.get_or_insert(self.run.seed);
        if let Some(add) = &mut self.model.add_indexer {
            add.seed.get_or_insert(init_seed);
        }
        self.algorithm.loss.constant_norm.get_or_insert(self.rollout.sampling.max_tokens as f64);
        for stage in &mut self.stages {
            let lr = stage.lr(&self.optimizer);
            match stage {
                Stage::Pretrain(s) => s.lr = lr,
                Stage::Sft(s) => s.lr = lr,
                Stage::Grpo(s) => s.lr = lr,
                Stage::IndexerWarmup(s) => s.lr = lr,
                Stage::SparseTrain(s) => s.lr = lr,
                Stage::Eval(s) => {
                    s.temperature.get_or_insert(self.rollout.sampling.temperature);
                    s.pass_k = s.pass_k();
                }
            }
        }
    }
}

/// Parses, overrides, resolves and validates a recipe read from `file`.
pub(crate) fn parse(text: &str, file: &Path, sets: &[String]) -> Result<Recipe, RecipeError> {
    let doc = DeTable::parse(text).map_err(|e| syntax_error(file, text, &e))?;
    let mut root: toml::Table = toml::from_str(text).map_err(|e| syntax_error(file, text, &e))?;
    let mut written = Vec::with_capacity(sets.len());
    for arg in sets {
        let path = overrides::apply(&mut root, arg).map_err(|message| RecipeError::Invalid {
            file: file.to_path_buf(),
            at: At::Set(arg.clone()),
            key: arg.split_once('=').map_or("", |(k, _)| k.trim()).to_string(),
            message,
        })?;
        written.push((arg.clone(), path));
    }
    let placer = Placer { file, text, doc: &doc, sets: &written, labels: stage_labels(&root) };
    let mut recipe = deserialize(&root).map_err(|p| placer.error(p))?;
    let set_keys: Vec<KeyPath> = written.iter().map(|(_, key)| key.clone()).collect();
    let bases = paths::Bases::new(file, &set_keys);
    paths::resolve(&mut recipe, &bases);
    recipe.resolve();
    paths::default_out(&mut recipe, &bases.cwd);
    validate::validate(&recipe).map_err(|p| placer.error(p))?;
    Ok(recipe)
}

fn syntax_error(file: &Path, text: &str, err: &toml::de::Error) -> RecipeError {
    let at = err.span().map_or(At::File, |span| {
        let (line, column) = line_column(text, span.start);
        At::Line { line, column }
    });
    RecipeError::Invalid { file: file.to_path_buf(), at, key: String::new(), message: err.message().trim().to_string() }
}

/// Everything needed to place a [`Problem`]: the source and what each `--set` wrote.
struct Placer<'a> {
    file: &'a Path,
    text: &'a str,
    doc: &'a Spanned<DeTable<'a>>,
    sets: &'a [(String, KeyPath)],
    labels: Vec<String>,
}

impl Placer<'_> {
    fn error(&self, problem: Problem) -> RecipeError {
        let Problem { mut path, message } = problem;
        // serde names unknown and missing fields in the message, with the path ending at the table.
        let field = ["unknown field `", "missing field `"]
            .iter()
            .find_map(|prefix| message.strip_prefix(prefix))
            .and_then(|rest| rest.split_once('`'));
        if let Some((name, _)) = field {
            if path.last() != Some(&Seg::Key(name.to_string())) {
                path.push(Seg::Key(name.to_string()));
            }
        }
        let key = show(&path, &self.labels);
        // A --set is to blame when it wrote the key at fault or a table holding it, or when it
        // created the key at fault on its way to deeper ones (`--set optimiser.lr=1`).
        let created = |written: &KeyPath| written.starts_with(&path) && !is_written(self.doc, &path);
        let set = self.sets.iter().rev().find(|(_, written)| path.starts_with(written) || created(written));
        let message = match field {
            Some((name, rest)) => {
                let head = message.split_once(' ').map_or("", |(h, _)| h);
                let within = self.within(&path[..path.len() - 1]);
                let rest = rest.strip_prefix(", ").map(|r| format!("; {r}")).unwrap_or_default();
                format!("{head} field `{name}` {within}{rest}")
            }
            None if set.is_some_and(|(_, written)| *written == path) => message,
            None => format!("{key}: {message}"),
        };
        let at = match set {
            Some((arg, _)) => At::Set(arg.clone()),
            None => span_of(self.doc, &path).map_or(At::File, |span| {
                let (line, column) = line_column(self.text, span.start);
                At::Line { line, column }
            }),
        };
        RecipeError::Invalid { file: self.file.to_path_buf(), at, key, message }
    }

    /// "in [optimizer]", "in stages[2] (grpo)", "at the top level".
    fn within(&self, table: &[Seg]) -> String {
        match table {
            [] => "at the top level".into(),
            [.., Seg::Index(_)] => format!("in {}", show(table, &self.labels)),
            _ => format!("in [{}]", show(table, &self.labels)),
        }
    }
}

/// Reads the overridden table into a [`Recipe`], diagnosing tagged-enum errors precisely.
fn deserialize(root: &toml::Table) -> Result<Recipe, Problem> {
    let err = match serde_path_to_error::deserialize(toml::Value::Table(root.clone())) {
        Ok(recipe) => return Ok(recipe),
        Err(err) => err,
    };
    let path = from_serde_path(err.path());
    let problem = Problem::new(path.clone(), err.inner().message());
    let precise = match path.as_slice() {
        [Seg::Key(s), Seg::Index(i), ..] if s == "stages" => {
            let stage = root.get("stages").and_then(|v| v.get(*i));
            stage.and_then(|v| tagged(path[..2].to_vec(), v, "kind", &STAGE_KINDS, probe_stage))
        }
        [Seg::Key(d), ..] if d == "data" => {
            let data = root.get("data");
            data.and_then(|v| tagged(keys(&["data"]), v, "source", &["arithmetic", "jsonl", "parquet"], probe_data))
        }
        // The loss keys are flattened into `[algorithm]`, where serde reports their type errors
        // at the table: read them again as the loss's own struct.
        [Seg::Key(a)] if a == "algorithm" => flattened::<LossConfig>(root, "algorithm"),
        [Seg::Key(r)] if r == "rollout" => flattened::<SamplingParams>(root, "rollout"),
        // `[verifier]` or `[[verifier]]` (an untagged enum, whose own message names neither).
        [Seg::Key(v), ..] if v == "verifier" => root.get("verifier").map(verifiers_shape),
        _ => None,
    };
    Err(precise.unwrap_or(problem))
}

/// The problem with a `verifier` that is neither a table nor an array of tables.
fn verifiers_shape(value: &toml::Value) -> Problem {
    let found = match value {
        toml::Value::Array(items) => match items.iter().position(|i| !i.is_table()) {
            Some(i) => {
                let at = vec![Seg::Key("verifier".into()), Seg::Index(i)];
                return Problem::new(at, format!("must be a table, found {}", items[i].type_str()));
            }
            None => "an array",
        },
        other => other.type_str(),
    };
    let message = format!("must be a table ([verifier]) or an array of tables ([[verifier]]), found {found}");
    Problem::new(keys(&["verifier"]), message)
}

/// The problem with the keys of section `name` that belong to its flattened part `T` (serde
/// reports those at the section), found by reading the section as `T` alone.
fn flattened<T: DeserializeOwned>(root: &toml::Table, name: &str) -> Option<Problem> {
    let table = root.get(name).and_then(toml::Value::as_table).cloned()?;
    let inner = probe::<T>(table)?;
    let mut path = keys(&[name]);
    path.extend(inner.path);
    Some(Problem::new(path, inner.message))
}

/// The problem with `value`, a table tagged by `tag`, found by reading it as its variant's struct.
pub(crate) fn tagged(
    at: KeyPath,
    value: &toml::Value,
    tag: &str,
    kinds: &[&str],
    probe_kind: fn(&str, toml::Table) -> Option<Problem>,
) -> Option<Problem> {
    let Some(table) = value.as_table() else {
        return Some(Problem::new(at, format!("must be a table, found {}", value.type_str())));
    };
    let mut tag_path = at.clone();
    tag_path.push(Seg::Key(tag.into()));
    let kind = match table.get(tag) {
        None => return Some(Problem::new(tag_path, format!("missing field `{tag}`"))),
        Some(toml::Value::String(kind)) => kind.as_str(),
        Some(other) => return Some(Problem::new(tag_path, format!("must be a string, found {}", other.type_str()))),
    };
    if !kinds.contains(&kind) {
        let expected: Vec<String> = kinds.iter().map(|k| format!("`{k}`")).collect();
        return Some(Problem::new(
            tag_path,
            format!("unknown {tag} `{kind}`, expected one of {}", expected.join(", ")),
        ));
    }
    let mut fields = table.clone();
    fields.remove(tag);
    let inner = probe_kind(kind, fields)?;
    let mut path = at;
    path.extend(inner.path);
    Some(Problem::new(path, inner.message))
}

fn probe_stage(kind: &str, fields: toml::Table) -> Option<Problem> {
    match kind {
        "pretrain" => probe::<PretrainStage>(fields),
        "sft" => probe::<SftStage>(fields),
        "grpo" => probe::<GrpoStage>(fields),
        "eval" => probe::<EvalStage>(fields),
        "indexer_warmup" => probe::<IndexerWarmupStage>(fields),
        _ => probe::<SparseTrainStage>(fields),
    }
}

fn probe_data(source: &str, fields: toml::Table) -> Option<Problem> {
    match source {
        "arithmetic" => probe::<ArithmeticSpec>(fields),
        _ => probe::<FileSpec>(fields),
    }
}

/// The first error of reading `fields` as `T`, with its path inside `fields`.
pub(crate) fn probe<T: DeserializeOwned>(fields: toml::Table) -> Option<Problem> {
    let err = serde_path_to_error::deserialize::<_, T>(toml::Value::Table(fields)).err()?;
    Some(Problem::new(from_serde_path(err.path()), err.inner().message()))
}
