//! Checks of a resolved recipe that serde cannot make: ranges, files that must exist, the model
//! config and the verifier, and rules between sections. Each failure names its key.

use super::keys::{from_serde_path, keys, stage_key, KeyPath, Problem, Seg};
use super::{load, preset, Algorithm, Optimizer, Recipe, Reward, Rollout, RolloutBackend, Stage, Verifiers};
use crate::data::DataSpec;
use rlvr_verifiers::VerifierSpec;

/// The first thing wrong with `recipe`, checked section by section, stages last.
pub(crate) fn validate(recipe: &Recipe) -> Result<(), Problem> {
    run(recipe)?;
    model(recipe)?;
    data(&recipe.data)?;
    reward(&recipe.verifier)?;
    rollout(&recipe.rollout, recipe.stages.iter().any(|s| matches!(s, Stage::Grpo(_))))?;
    algorithm(&recipe.algorithm, &recipe.rollout)?;
    optimizer(&recipe.optimizer)?;
    let keep_last = recipe.checkpoint.keep_last;
    ensure(keep_last >= 1, keys(&["checkpoint", "keep_last"]), || format!("must be at least 1, got {keep_last}"))?;
    stages(&recipe.stages)
}

/// `[verifier]` or `[[verifier]]` read as the verifiers crate's specs, each list entry's `weight`
/// and `name` checked, and the parts' names unique.
pub(crate) fn reward(verifiers: &Verifiers) -> Result<Reward, Problem> {
    let list = match verifiers {
        Verifiers::One(table) => return verifier_spec(keys(&["verifier"]), table).map(Reward::One),
        Verifiers::Weighted(list) => list,
    };
    ensure(!list.is_empty(), keys(&["verifier"]), || "is an empty list; give at least one [[verifier]]".into())?;
    let mut parts: Vec<(String, f32, VerifierSpec)> = Vec::with_capacity(list.len());
    for (i, table) in list.iter().enumerate() {
        let at = |k: &str| vec![Seg::Key("verifier".into()), Seg::Index(i), Seg::Key(k.into())];
        let mut fields = table.clone();
        let weight = match fields.remove("weight") {
            None => 1.0,
            Some(toml::Value::Float(w)) => w,
            Some(toml::Value::Integer(w)) => w as f64,
            Some(other) => {
                return Err(Problem::new(at("weight"), format!("must be a number, found {}", other.type_str())))
            }
        };
        real(at("weight"), weight, "a finite number", |_| true)?;
        let name = match fields.remove("name") {
            None => None,
            Some(toml::Value::String(n)) if !n.trim().is_empty() => Some(n),
            Some(other) => {
                return Err(Problem::new(at("name"), format!("must be a non-empty string, found {other}")));
            }
        };
        let mut spec = verifier_spec(vec![Seg::Key("verifier".into()), Seg::Index(i)], &fields)?;
        if let Some(name) = &name {
            spec.set_name(name);
        }
        let name = name.unwrap_or_else(|| spec.name().to_string());
        if let Some(j) = parts.iter().position(|(n, _, _)| *n == name) {
            return Err(Problem::new(
                at("name"),
                format!(
                    "`{name}` also names verifier[{j}]; each part needs its own name (its metric is reward/<name>)"
                ),
            ));
        }
        parts.push((name, weight as f32, spec));
    }
    Ok(Reward::Weighted(parts))
}

/// One verifier table at `at`, read as the verifiers crate's spec.
fn verifier_spec(at: KeyPath, table: &toml::Table) -> Result<VerifierSpec, Problem> {
    let value = toml::Value::Table(table.clone());
    serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        // The spec is tagged by `kind`, which hides the field at fault; read the kind's own config.
        let kinds = ["math", "code", "format", "length", "language", "judge", "external"];
        load::tagged(at.clone(), &value, "kind", &kinds, probe_verifier).unwrap_or_else(|| {
            let mut path = at;
            path.extend(from_serde_path(e.path()));
            Problem::new(path, e.inner().message())
        })
    })
}

fn probe_verifier(kind: &str, fields: toml::Table) -> Option<Problem> {
    match kind {
        "math" => load::probe::<rlvr_verifiers::math::MathConfig>(fields),
        "code" => load::probe::<rlvr_verifiers::CodeConfig>(fields),
        "format" => load::probe::<rlvr_verifiers::FormatConfig>(fields),
        "length" => load::probe::<rlvr_verifiers::LengthConfig>(fields),
        "language" => load::probe::<rlvr_verifiers::LanguageConfig>(fields),
        "judge" => load::probe::<rlvr_verifiers::JudgeConfig>(fields),
        _ => load::probe::<rlvr_verifiers::ExternalConfig>(fields),
    }
}

fn run(recipe: &Recipe) -> Result<(), Problem> {
    let name = &recipe.run.name;
    let named = !name.trim().is_empty() && !name.contains(['/', '\\']);
    ensure(named, keys(&["run", "name"]), || format!("must be a non-empty name without slashes, got {name:?}"))?;
    let share = recipe.run.max_verifier_errors;
    real(keys(&["run", "max_verifier_errors"]), share, "in [0, 1]", |s| (0.0..=1.0).contains(&s))?;
    let timeout = recipe.run.collective_timeout_s;
    ensure(timeout > 0, keys(&["run", "collective_timeout_s"]), || "must be ≥ 1 second".to_string())?;
    real(keys(&["run", "bucket_mb"]), recipe.run.bucket_mb, "> 0", |mb| mb > 0.0)
}

fn model(recipe: &Recipe) -> Result<(), Problem> {
    let section = &recipe.model;
    let config = preset::model_config(section)?;
    let layers = config.num_nextn_predict_layers;
    ensure(!section.mtp || layers >= 1, keys(&["model", "mtp"]), || {
        "is true, but the model config has num_nextn_predict_layers = 0".to_string()
    })?;
    real(keys(&["model", "mtp_weight"]), section.mtp_weight, "≥ 0", |w| w >= 0.0)?;
    if let Some(add) = &section.add_indexer {
        rlvr_model::convert::v32_config(&config, &add.spec())
            .map_err(|e| Problem::new(keys(&["model", "add_indexer"]), format!("cannot convert the model: {e}")))?;
    }
    Ok(())
}

fn data(spec: &DataSpec) -> Result<(), Problem> {
    let files = match spec {
        DataSpec::Arithmetic(_) => return Ok(()),
        DataSpec::Jsonl(files) | DataSpec::Parquet(files) => files,
    };
    let listed = [("train", Some(&files.train)), ("test", files.test.as_ref())];
    for (key, path) in listed {
        if let Some(path) = path {
            ensure(path.is_file(), keys(&["data", key]), || {
                format!("no such file: {}{}", path.display(), where_from())
            })?;
        }
    }
    Ok(())
}

/// How relative paths were read, for messages about files that are not there.
pub(crate) fn where_from() -> String {
    format!(
        " (relative paths in a recipe are relative to its folder, those of --set to the working directory, {})",
        super::paths::working_dir().display()
    )
}

fn rollout(rollout: &Rollout, has_grpo: bool) -> Result<(), Problem> {
    let key = |k: &str| keys(&["rollout", k]);
    let group = rollout.group_size;
    let min_group = if has_grpo { 2 } else { 1 };
    ensure(group >= min_group, key("group_size"), || match has_grpo {
        true => {
            format!("must be at least 2 when a grpo stage runs (advantages compare a group's completions), got {group}")
        }
        false => format!("must be at least 1, got {group}"),
    })?;
    at_least(key("prompts_per_step"), rollout.prompts_per_step, 1)?;
    rollout.sampling.validate().map_err(|(field, message)| Problem::new(key(field), message))?;
    backend(rollout)
}

/// `[rollout]`'s backend keys: the service's only with `backend = "service"`, which needs exactly
/// one of `endpoints` and `spawn`.
fn backend(r: &Rollout) -> Result<(), Problem> {
    let key = |k: &str| keys(&["rollout", k]);
    if r.backend == RolloutBackend::Local {
        let service_only = [
            ("endpoints", !r.endpoints.is_empty()),
            ("spawn", r.spawn > 0),
            ("admin_key", r.admin_key.is_some()),
            ("max_staleness", r.max_staleness > 0),
        ];
        if let Some((name, _)) = service_only.iter().find(|(_, set)| *set) {
            return Err(Problem::new(
                key(name),
                "needs backend = \"service\" (the local engine samples between updates, synchronously)",
            ));
        }
        return Ok(());
    }
    ensure(r.endpoints.is_empty() != (r.spawn == 0), key("spawn"), || {
        "backend = \"service\" needs either endpoints = [\"http://host:port\", ...] or spawn = N (not both)".into()
    })?;
    for (i, url) in r.endpoints.iter().enumerate() {
        let at = vec![Seg::Key("rollout".into()), Seg::Key("endpoints".into()), Seg::Index(i)];
        let rest = url.strip_prefix("http://").unwrap_or("");
        ensure(!rest.is_empty() && !rest.contains('/'), at, || {
            format!("{url:?} is not a server address of the form http://host:port")
        })?;
    }
    ensure(r.spawn == 0 || r.admin_key.is_none(), key("admin_key"), || {
        "spawned servers get a key of their own; admin_key is for endpoints".into()
    })?;
    for (name, value) in [
        ("request_timeout_s", r.request_timeout_s),
        ("sync_timeout_s", r.sync_timeout_s),
        ("startup_timeout_s", r.startup_timeout_s),
    ] {
        real(key(name), value, "a positive number of seconds", |v| v > 0.0)?;
    }
    Ok(())
}

fn algorithm(algorithm: &Algorithm, rollout: &Rollout) -> Result<(), Problem> {
    let key = |k: &str| keys(&["algorithm", k]);
    algorithm.loss.validate().map_err(|e| Problem::new(key(e.field), e.message))?;
    ensure(!(algorithm.dynamic_sampling && rollout.max_staleness > 0), key("dynamic_sampling"), || {
        "is not supported with rollout.max_staleness > 0 (refills would sample beside groups generated ahead)".into()
    })?;
    let (buffer, max_tokens) = (algorithm.overlong_buffer, rollout.sampling.max_tokens);
    ensure(buffer <= max_tokens, key("overlong_buffer"), || {
        format!("{buffer} is longer than rollout.max_tokens ({max_tokens})")
    })?;
    real(key("overlong_penalty"), algorithm.overlong_penalty, "≥ 0", |p| p >= 0.0)?;
    at_least(key("minibatches"), algorithm.minibatches, 1)?;
    at_least(key("epochs"), algorithm.epochs, 1)
}

fn optimizer(optimizer: &Optimizer) -> Result<(), Problem> {
    let key = |k: &str| keys(&["optimizer", k]);
    real(key("lr"), optimizer.lr, "> 0", |lr| lr > 0.0)?;
    for (i, beta) in optimizer.betas.iter().enumerate() {
        let mut path = key("betas");
        path.push(Seg::Index(i));
        real(path, *beta, "in [0, 1)", |b| (0.0..1.0).contains(&b))?;
    }
    real(key("eps"), optimizer.eps, "> 0", |e| e > 0.0)?;
    real(key("weight_decay"), optimizer.weight_decay, "≥ 0", |w| w >= 0.0)?;
    real(key("min_lr_ratio"), optimizer.min_lr_ratio, "in [0, 1]", |r| (0.0..=1.0).contains(&r))?;
    real(key("grad_clip"), optimizer.grad_clip, "≥ 0 (0: off)", |c| c >= 0.0)
}

fn stages(stages: &[Stage]) -> Result<(), Problem> {
    ensure(!stages.is_empty(), keys(&["stages"]), || "is empty; a recipe runs at least one [[stages]]".into())?;
    for (i, stage) in stages.iter().enumerate() {
        if let Some(j) = stages[..i].iter().position(|earlier| earlier.name() == stage.name()) {
            return Err(Problem::new(
                stage_key(i, "name"),
                format!(
                    "`{}` also names stages[{j}]; stage names must be unique (an unnamed stage is named by its kind)",
                    stage.name()
                ),
            ));
        }
        one_stage(i, stage)?;
    }
    Ok(())
}

fn one_stage(i: usize, stage: &Stage) -> Result<(), Problem> {
    let key = |k: &str| stage_key(i, k);
    if let Some(steps) = stage.steps() {
        at_least(key("steps"), steps, 1)?;
    }
    if let Some(lr) = stage.own_lr() {
        real(key("lr"), lr, "> 0", |lr| lr > 0.0)?;
    }
    let (batch_size, seq_len) = match stage {
        Stage::Pretrain(s) => (Some(s.batch_size), Some(s.seq_len)),
        Stage::Sft(s) => (Some(s.batch_size), None),
        Stage::IndexerWarmup(s) => (Some(s.batch_size), Some(s.seq_len)),
        Stage::SparseTrain(s) => {
            real(key("indexer_loss_weight"), s.indexer_loss_weight, "≥ 0", |w| w >= 0.0)?;
            (Some(s.batch_size), Some(s.seq_len))
        }
        Stage::Eval(s) => {
            at_least(key("samples"), s.samples, 1)?;
            for (j, &k) in s.pass_k().iter().enumerate() {
                let mut path = key("pass_k");
                path.push(Seg::Index(j));
                let samples = s.samples;
                ensure((1..=samples).contains(&k), path, || format!("{k} is outside 1..={samples} (samples)"))?;
            }
            if let Some(t) = s.temperature {
                real(key("temperature"), t, "≥ 0", |t| t >= 0.0)?;
            }
            if let Some(n) = s.max_problems {
                at_least(key("max_problems"), n, 1)?;
            }
            (None, None)
        }
        Stage::Grpo(_) => (None, None),
    };
    if let Some(b) = batch_size {
        at_least(key("batch_size"), b, 1)?;
    }
    if let Some(t) = seq_len {
        at_least(key("seq_len"), t, 1)?;
    }
    Ok(())
}

fn ensure(ok: bool, path: KeyPath, message: impl FnOnce() -> String) -> Result<(), Problem> {
    if ok {
        Ok(())
    } else {
        Err(Problem::new(path, message()))
    }
}

fn at_least(path: KeyPath, value: usize, min: usize) -> Result<(), Problem> {
    ensure(value >= min, path, || format!("must be at least {min}, got {value}"))
}

/// A finite float for which `ok` holds; `want` says what `ok` asks in the message.
fn real(path: KeyPath, value: f64, want: &str, ok: impl Fn(f64) -> bool) -> Result<(), Problem> {
    ensure(value.is_finite() && ok(value), path, || format!("must be {want}, got {value}"))
}
