//! Recipes: the examples load, defaults are filled in, every mistake names its file, key and line
//! (or `--set`), `--set` edits what it says, and the resolved recipe round-trips.

use rlvr_model::{AttentionMode, Checkpointing, Dtype};
use rlvr_trainer::data::{DataSpec, FileFormat};
use rlvr_trainer::grpo::{AdvantageMode, Aggregation, KlEstimator};
use rlvr_trainer::metrics::WandbMode;
use rlvr_trainer::optim::Schedule;
use rlvr_trainer::recipe::{At, Recipe, RecipeError, Reward, Stage, Verifiers};
use std::path::{Path, PathBuf};

/// A small valid recipe: pretrain, grpo, eval, all else default.
const BASE: &str = r#"[run]
name = "t"

[model]
preset = "tiny"

[data]
source = "arithmetic"

[[stages]]
kind = "pretrain"
steps = 2

[[stages]]
kind = "grpo"
steps = 1

[[stages]]
kind = "eval"
samples = 4
"#;

const FILE: &str = "test.toml";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn sets(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn load(text: &str, args: &[&str]) -> Result<Recipe, RecipeError> {
    Recipe::parse(text, Path::new(FILE), &sets(args))
}

fn ok(text: &str, args: &[&str]) -> Recipe {
    load(text, args).unwrap_or_else(|e| panic!("recipe should load: {e}"))
}

fn fail(text: &str, args: &[&str]) -> RecipeError {
    match load(text, args) {
        Ok(r) => panic!("recipe should fail to load, got {r:?}"),
        Err(e) => e,
    }
}

/// The 1-based line of `text` holding `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("no line with {needle:?}")) + 1
}

/// BASE with `extra` inserted after the line holding `after`.
fn with(after: &str, extra: &str) -> String {
    let i = line_of(BASE, after);
    let mut lines: Vec<&str> = BASE.lines().collect();
    lines.insert(i, extra);
    lines.join("\n") + "\n"
}

/// Asserts the error names `key`, reads `message`, and is placed at `at`.
fn assert_error(err: &RecipeError, key: &str, message: &str, at: &At) {
    let shown = err.to_string();
    match err {
        RecipeError::Invalid { file, at: got, key: got_key, .. } => {
            assert_eq!(file, Path::new(FILE), "{shown}");
            assert_eq!(got_key, key, "{shown}");
            assert_eq!(got, at, "{shown}");
        }
        other => panic!("expected an Invalid error, got {other:?}"),
    }
    assert!(shown.starts_with(FILE), "{shown}");
    assert!(shown.contains(message), "`{shown}` lacks `{message}`");
}

fn line(line: usize) -> At {
    At::Line { line, column: 1 }
}

fn set(arg: &str) -> At {
    At::Set(arg.into())
}

#[test]
fn example_recipes_load() {
    let smoke = Recipe::load(&repo().join("recipes/smoke.toml"), &[]).unwrap();
    let names: Vec<&str> = smoke.stages.iter().map(Stage::name).collect();
    assert_eq!(names, ["pretrain", "indexer_warmup", "sparse_train", "sft", "eval_before", "grpo", "eval_after"]);
    let kinds: Vec<&str> = smoke.stages.iter().map(Stage::kind).collect();
    assert_eq!(kinds, ["pretrain", "indexer_warmup", "sparse_train", "sft", "eval", "grpo", "eval"]);
    assert_eq!(smoke.model.model_config().unwrap().num_hidden_layers, 2, "[model.config] merges over the preset");
    assert_eq!(smoke.run_dir(None), cwd().join("runs/smoke"), "the default run dir is under the working directory");

    let arith = Recipe::load(&repo().join("recipes/arith-grpo.toml"), &[]).unwrap();
    assert_eq!(arith.optimizer.schedule, Schedule::Constant);
    assert_eq!(arith.algorithm.loss.off_policy_delta, Some(0.5));
    assert_eq!(arith.stages[3].lr(&arith.optimizer), Some(3e-4));
    let Stage::Grpo(grpo) = &arith.stages[3] else { panic!("stage 3 is grpo") };
    assert_eq!(grpo.schedule, Some(Schedule::Constant), "a stage's own schedule");
    let Stage::Eval(eval) = &arith.stages[2] else { panic!("stage 2 is an eval") };
    assert_eq!((eval.samples, eval.pass_k.as_slice()), (4, &[1, 4][..]));

    // The quickstart: the V3.2 path, with index_topk a strict subset of the training sequences.
    let quick = Recipe::load(&repo().join("recipes/quickstart.toml"), &[]).unwrap();
    let kinds: Vec<&str> = quick.stages.iter().map(Stage::kind).collect();
    assert_eq!(kinds, ["pretrain", "indexer_warmup", "sparse_train", "sft", "eval", "grpo", "eval"]);
    let names: Vec<&str> = quick.stages.iter().map(Stage::name).collect();
    assert_eq!((names[4], names[6]), ("eval_before", "eval_after"));
    let topk = quick.model.model_config().unwrap().index_topk;
    let Stage::SparseTrain(sparse) = &quick.stages[2] else { panic!("stage 2 is sparse_train") };
    assert!(topk < sparse.seq_len, "index_topk {topk} must select a strict subset of {} keys", sparse.seq_len);

    // V3.2's reward set: outcome first, then the length and language parts, weighted.
    let rewards = Recipe::load(&repo().join("recipes/v32-rewards.toml"), &[]).unwrap();
    let Ok(Reward::Weighted(parts)) = rewards.reward() else { panic!("v32-rewards has a [[verifier]] list") };
    let parts: Vec<(&str, f32)> = parts.iter().map(|(n, w, _)| (n.as_str(), *w)).collect();
    assert_eq!(parts, [("math", 1.0), ("length", 0.5), ("language", 0.1)]);
    assert!(rewards.reward().unwrap().build().is_ok());
}

fn cwd() -> PathBuf {
    std::env::current_dir().unwrap()
}

/// Relative paths written in a recipe are relative to its folder, those of `--set` to the working
/// directory; the resolved recipe holds them absolute and loads back to itself.
#[test]
fn relative_paths_resolve_against_the_recipe_folder() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("project");
    std::fs::create_dir_all(folder.join("data")).unwrap();
    std::fs::create_dir_all(folder.join("model")).unwrap();
    std::fs::copy(repo().join("presets/tiny/config.json"), folder.join("model/config.json")).unwrap();
    std::fs::write(folder.join("data/train.jsonl"), "{\"prompt\": \"1+1=\", \"answer\": \"2\"}\n").unwrap();
    std::fs::write(folder.join("reward.py"), "").unwrap();
    let text = r#"
[run]
name = "paths"
out = "../runs/paths"
[model]
path = "model"
[data]
source = "jsonl"
train = "./data/train.jsonl"
[[stages]]
kind = "grpo"
steps = 1
[[verifier]]
kind = "external"
command = "python3 reward.py --strict"
[[verifier]]
kind = "math"
"#;
    let file = folder.join("recipe.toml");
    std::fs::write(&file, text).unwrap();
    let r = Recipe::load(&file, &[]).unwrap();
    let DataSpec::Jsonl(files) = &r.data else { panic!("jsonl") };
    assert_eq!(files.train, folder.join("data/train.jsonl"));
    assert_eq!(r.model.path.as_deref(), Some(folder.join("model").as_path()));
    assert_eq!(r.run.out, Some(dir.path().join("runs/paths")));
    let Verifiers::Weighted(list) = &r.verifier else { panic!("a list") };
    let command = format!("python3 {} --strict", folder.join("reward.py").display());
    assert_eq!(list[0]["command"].as_str(), Some(command.as_str()));
    // Saved and read back from anywhere: the same recipe.
    let saved = Recipe::parse(&r.to_toml(), Path::new("/elsewhere/recipe.toml"), &[]).unwrap();
    assert_eq!(saved.to_toml(), r.to_toml());
    // A --set path is the working directory's; a missing file's error shows the resolved path and it.
    let err = Recipe::load(&file, &["data.test=\"no/test.jsonl\"".into()]).unwrap_err().to_string();
    assert!(err.contains(&cwd().join("no/test.jsonl").display().to_string()), "{err}");
    assert!(err.contains(&format!("working directory, {}", cwd().display())), "{err}");
}

#[test]
fn defaults_are_filled_in() {
    let r = ok(BASE, &[]);
    assert_eq!(
        (r.run.seed, r.run.device.to_string().as_str(), r.run.dtype, r.run.threads, r.run.max_bad_steps),
        (0, "cpu", Dtype::F32, 0, 3)
    );
    assert_eq!(r.run.out, Some(cwd().join("runs/t")));
    assert_eq!(r.run.activation_checkpointing, Checkpointing::None);
    assert_eq!(
        ok(BASE, &["run.activation_checkpointing=\"layer\""]).run.activation_checkpointing,
        Checkpointing::Layer
    );
    assert_eq!(r.checkpoint.every, rlvr_trainer::recipe::CHECKPOINT_EVERY);
    assert_eq!((r.model.init_seed, r.model.mtp, r.model.mtp_weight), (Some(0), false, 0.3));
    let Some(DataSpec::Arithmetic(a)) = Some(&r.data) else { panic!("arithmetic data") };
    assert_eq!((a.min_digits, a.max_digits, a.operands, a.held_out), (1, 2, 2, 200));
    assert_eq!(a.ops, ["+", "-"]);
    let ro = &r.rollout;
    let sa = &ro.sampling;
    assert_eq!((ro.group_size, ro.prompts_per_step, sa.max_tokens, sa.top_k, ro.slots), (8, 8, 32, 0, 0));
    assert_eq!((sa.temperature, sa.top_p, sa.min_p, ro.attention), (1.0, 1.0, 0.0, AttentionMode::Dense));
    assert_eq!(ro.effective_slots(), 64);
    let al = &r.algorithm;
    assert_eq!(
        (al.advantage, al.loss.aggregation, al.loss.kl_estimator),
        (AdvantageMode::Mean, Aggregation::Sequence, KlEstimator::Unbiased)
    );
    let lo = &al.loss;
    assert_eq!((lo.clip_low, lo.clip_high, lo.kl_coef, lo.constant_norm), (0.2, 0.28, 0.0, Some(32.0)));
    assert_eq!(
        (al.keep_routing, al.keep_sampling_mask, al.dynamic_sampling, lo.off_policy_delta),
        (true, true, false, None)
    );
    assert_eq!((al.max_refills, al.overlong_buffer, al.overlong_penalty), (2, 0, 1.0));
    assert_eq!((al.minibatches, al.epochs, al.micro_batch), (1, 1, 0));
    let op = &r.optimizer;
    assert_eq!((op.lr, op.betas, op.eps, op.weight_decay), (1e-3, [0.9, 0.999], 1e-8, 0.0));
    assert_eq!((op.schedule, op.warmup_steps, op.min_lr_ratio, op.grad_clip), (Schedule::Constant, 0, 0.1, 1.0));
    assert_eq!((r.checkpoint.every, r.checkpoint.keep_last), (100, 3), "checkpoint.every defaults to 100");
    let lg = &r.logging;
    assert_eq!((lg.console_every, lg.plots, lg.wandb.enabled, lg.wandb.mode), (1, true, false, WandbMode::Offline));
    assert_eq!((lg.wandb.project.as_str(), &lg.wandb.entity, &lg.wandb.python), ("rlvr", &None, &None));
    let Verifiers::One(table) = &r.verifier else { panic!("the default is one [verifier]") };
    assert_eq!(table.get("kind").and_then(|k| k.as_str()), Some("math"));
    assert!(matches!(r.reward(), Ok(Reward::One(rlvr_verifiers::VerifierSpec::Math(_)))));

    let Stage::Pretrain(p) = &r.stages[0] else { panic!("stage 0 is pretrain") };
    assert_eq!((p.batch_size, p.seq_len, p.lr, p.attention), (16, 64, Some(1e-3), AttentionMode::Dense));
    let Stage::Eval(e) = &r.stages[2] else { panic!("stage 2 is eval") };
    assert_eq!((e.samples, e.pass_k.as_slice(), e.temperature, e.max_problems), (4, &[1, 4][..], Some(1.0), None));
    assert_eq!(r.stages[2].lr(&r.optimizer), None);
}

#[test]
fn other_stage_defaults_and_lr() {
    let text = format!(
        "{BASE}\n[[stages]]\nkind = \"sft\"\nsteps = 1\n\n[[stages]]\nkind = \"indexer_warmup\"\nsteps = 1\n\n\
         [[stages]]\nkind = \"sparse_train\"\nsteps = 1\nlr = 2e-4\n\n[[stages]]\nkind = \"eval\"\nname = \"last\"\nsamples = 1\n"
    );
    let r = ok(&text, &["optimizer.lr=3e-4"]);
    let Stage::Sft(s) = &r.stages[3] else { panic!("sft") };
    assert_eq!((s.batch_size, s.lr, s.attention), (16, Some(3e-4), AttentionMode::Dense));
    let Stage::IndexerWarmup(w) = &r.stages[4] else { panic!("indexer_warmup") };
    assert_eq!((w.batch_size, w.seq_len, w.lr), (8, 128, Some(1e-3)), "indexer_warmup defaults to 1e-3");
    let Stage::SparseTrain(t) = &r.stages[5] else { panic!("sparse_train") };
    assert_eq!((t.batch_size, t.seq_len, t.lr, t.indexer_loss_weight), (8, 128, Some(2e-4), 1.0));
    let Stage::Eval(e) = &r.stages[6] else { panic!("eval") };
    assert_eq!(e.pass_k, [1], "samples = 1 gives pass_k = [1]");
    assert_eq!(
        r.stages.iter().map(|s| s.steps()).collect::<Vec<_>>(),
        [Some(2), Some(1), None, Some(1), Some(1), Some(1), None]
    );
}

#[test]
fn run_dir_prefers_the_override() {
    let r = ok(BASE, &["run.out=elsewhere"]);
    assert_eq!(r.run_dir(None), cwd().join("elsewhere"), "a --set path is relative to the working directory");
    assert_eq!(r.run_dir(Some(Path::new("/tmp/x"))), Path::new("/tmp/x"));
}

#[test]
fn syntax_errors_give_the_line() {
    let text = with("preset = \"tiny\"", "mtp = = true");
    let err = fail(&text, &[]);
    let At::Line { line, .. } = (match &err {
        RecipeError::Invalid { at, .. } => at.clone(),
        other => panic!("{other:?}"),
    }) else {
        panic!("syntax error without a line: {err}")
    };
    assert_eq!(line, line_of(&text, "mtp = = true"), "{err}");
    assert!(err.to_string().starts_with(&format!("{FILE}:{line}:")), "{err}");
}

#[test]
fn unknown_key_at_top_level() {
    let text = format!("{BASE}\n[rolout]\ngroup_size = 4\n");
    let err = fail(&text, &[]);
    let at = At::Line { line: line_of(&text, "[rolout]"), column: 2 };
    assert_error(&err, "rolout", "unknown field `rolout` at the top level; expected one of", &at);
    assert!(err.to_string().contains("`rollout`"), "lists the known keys: {err}");
}

#[test]
fn unknown_key_in_a_section() {
    let text = format!("{BASE}\n[optimizer]\nlr = 1e-3\nlrr = 1\n");
    let err = fail(&text, &[]);
    let at = line(line_of(&text, "lrr = 1"));
    assert_error(&err, "optimizer.lrr", "unknown field `lrr` in [optimizer]; expected one of `lr`", &at);
    assert!(err.to_string().starts_with(&format!("{FILE}:{}:1: unknown field `lrr`", line_of(&text, "lrr"))), "{err}");

    let text = format!("{BASE}\n[logging.wandb]\nprojekt = \"x\"\n");
    let at = line(line_of(&text, "projekt"));
    assert_error(&fail(&text, &[]), "logging.wandb.projekt", "in [logging.wandb]", &at);
}

#[test]
fn unknown_key_in_a_stage() {
    let text = with("kind = \"grpo\"", "stepz = 3");
    let at = line(line_of(&text, "stepz"));
    assert_error(
        &fail(&text, &[]),
        "stages[1] (grpo).stepz",
        "unknown field `stepz` in stages[1] (grpo); expected",
        &at,
    );
}

#[test]
fn unknown_algorithm_key_is_named() {
    // The loss keys are flattened into [algorithm] and the sampling keys into [rollout]: an
    // unknown key there, or a loss/sampling key of the wrong type, is still named exactly.
    let text = format!("{BASE}\n[algorithm]\nclip_ratio = 0.2\n");
    let at = line(line_of(&text, "clip_ratio"));
    assert_error(&fail(&text, &[]), "algorithm.clip_ratio", "unknown field `clip_ratio` in [algorithm]", &at);
    let text = format!("{BASE}\n[algorithm]\nclip_low = \"wide\"\n");
    let at = line(line_of(&text, "clip_low"));
    assert_error(&fail(&text, &[]), "algorithm.clip_low", "expected f64", &at);
    let text = format!("{BASE}\n[rollout]\ntop_q = 0.9\n");
    let at = line(line_of(&text, "top_q"));
    assert_error(&fail(&text, &[]), "rollout.top_q", "unknown field `top_q` in [rollout]", &at);
}

#[test]
fn unknown_key_in_data() {
    let text = with("source = \"arithmetic\"", "digits = 3");
    let at = line(line_of(&text, "digits = 3"));
    assert_error(&fail(&text, &[]), "data.digits", "unknown field `digits` in [data]", &at);
}

#[test]
fn bad_types_name_the_key() {
    let text = format!("{BASE}\n[optimizer]\nlr = \"fast\"\n");
    let at = line(line_of(&text, "lr = \"fast\""));
    assert_error(&fail(&text, &[]), "optimizer.lr", "optimizer.lr: invalid type: string \"fast\", expected f64", &at);

    let text = BASE.replace("steps = 2", "steps = \"two\"");
    let at = line(line_of(&text, "steps = \"two\""));
    assert_error(&fail(&text, &[]), "stages[0] (pretrain).steps", "invalid type: string \"two\", expected usize", &at);

    let text = BASE.replace("steps = 2", "steps = -2");
    assert_error(&fail(&text, &[]), "stages[0] (pretrain).steps", "invalid value: integer `-2`", &line(12));

    let text = with("name = \"t\"", "dtype = \"f16\"");
    let at = line(line_of(&text, "dtype"));
    assert_error(&fail(&text, &[]), "run.dtype", "run.dtype: unknown variant `f16`, expected `f32` or `bf16`", &at);

    let text = with("name = \"t\"", "activation_checkpointing = \"attention\"");
    let at = line(line_of(&text, "activation_checkpointing"));
    let want = "run.activation_checkpointing: unknown variant `attention`, expected `none` or `layer`";
    assert_error(&fail(&text, &[]), "run.activation_checkpointing", want, &at);

    let text = with("source = \"arithmetic\"", "max_digits = \"3\"");
    assert_error(&fail(&text, &[]), "data.max_digits", "expected u32", &line(line_of(&text, "max_digits")));
}

#[test]
fn missing_and_unknown_kinds() {
    let text = BASE.replace("steps = 1\n", "");
    let at = line(line_of(BASE, "kind = \"grpo\"") - 1);
    assert_error(&fail(&text, &[]), "stages[1] (grpo).steps", "missing field `steps` in stages[1] (grpo)", &at);

    let text = BASE.replace("kind = \"grpo\"", "kind = \"ppo\"");
    let at = line(line_of(&text, "ppo"));
    assert_error(&fail(&text, &[]), "stages[1] (ppo).kind", "unknown kind `ppo`, expected one of `pretrain`", &at);

    let text = BASE.replace("name = \"t\"\n", "");
    let at = At::Line { line: 1, column: 2 };
    assert_error(&fail(&text, &[]), "run.name", "missing field `name` in [run]", &at);

    let text = BASE.replace("source = \"arithmetic\"", "source = \"csv\"");
    assert_error(&fail(&text, &[]), "data.source", "unknown source `csv`", &line(line_of(&text, "csv")));

    let stageless: String = BASE.split("[[stages]]").next().unwrap().to_string();
    assert_error(&fail(&stageless, &[]), "stages", "missing field `stages` at the top level", &At::File);
}

/// One validation rule: the recipe text, `--set`s, and the key and message expected.
struct Rule {
    text: String,
    sets: &'static [&'static str],
    key: &'static str,
    message: &'static str,
}

fn rule(text: impl Into<String>, sets: &'static [&'static str], key: &'static str, message: &'static str) -> Rule {
    Rule { text: text.into(), sets, key, message }
}

#[test]
fn each_validation_rule_names_its_key() {
    let data_dir = tempfile::tempdir().unwrap();
    let train = data_dir.path().join("train.jsonl");
    std::fs::write(&train, "{}\n").unwrap();
    let jsonl = |extra: &str| {
        BASE.replace("source = \"arithmetic\"", &format!("source = \"jsonl\"\ntrain = {:?}\n{extra}", train.display()))
    };
    let two_grpo = format!("{BASE}\n[[stages]]\nkind = \"grpo\"\nsteps = 1\n");
    let second = |entry: &str| format!("{BASE}\n[[verifier]]\nkind = \"math\"\n\n[[verifier]]\n{entry}\n");
    let kinds = "unknown kind `lenght`, expected one of `math`, `code`, `format`, `length`, `language`, `judge`";
    let rules = [
        rule(format!("stages = []\n{}", BASE.split("[[stages]]").next().unwrap()), &[], "stages", "is empty"),
        rule(BASE, &["stages.0.steps=0"], "stages[0] (pretrain).steps", "must be at least 1, got 0"),
        rule(BASE, &["stages.grpo.steps=0"], "stages[1] (grpo).steps", "must be at least 1"),
        rule(BASE, &["stages.0.batch_size=0"], "stages[0] (pretrain).batch_size", "must be at least 1"),
        rule(BASE, &["stages.0.seq_len=0"], "stages[0] (pretrain).seq_len", "must be at least 1"),
        rule(BASE, &["stages.0.lr=0"], "stages[0] (pretrain).lr", "must be > 0"),
        rule(BASE.replace("preset = \"tiny\"", "mtp = false"), &[], "model", "names no model"),
        rule(BASE, &["model.path=/"], "model.path", "given together with `model.preset`"),
        rule(BASE, &["model.preset=no-such-preset"], "model.preset", "no preset `no-such-preset`"),
        rule(BASE.replace("preset = \"tiny\"", "path = \"/no/such/dir\""), &[], "model.path", "holds no config.json"),
        rule(BASE, &["model.config.hidden_size=-3"], "model.config.hidden_size", "invalid value"),
        rule(BASE, &["model.config.qk_rope_head_dim=7"], "model.config.qk_rope_head_dim", "must be even"),
        rule(BASE, &["model.config.num_attention_heads=0"], "model.config.num_attention_heads", "must be positive"),
        rule(BASE, &["model.preset=small", "model.mtp=true"], "model.mtp", "num_nextn_predict_layers = 0"),
        rule(
            BASE.replace("source = \"arithmetic\"", "source = \"parquet\"\ntrain = \"/no/such.parquet\""),
            &[],
            "data.train",
            "no such file: /no/such.parquet",
        ),
        rule(jsonl("test = \"/no/such/test.jsonl\""), &[], "data.test", "no such file: /no/such/test.jsonl"),
        rule(
            format!("{BASE}\n[verifier]\nkind = \"math\"\nrel_tol = \"tight\"\n"),
            &[],
            "verifier.rel_tol",
            "expected f64",
        ),
        rule(format!("{BASE}\n[verifier]\nkind = \"maths\"\n"), &[], "verifier.kind", "unknown kind `maths`"),
        rule(format!("{BASE}\n[verifier]\nkind = \"math\"\nstrict = true\n"), &[], "verifier.strict", "unknown field"),
        rule(second("kind = \"lenght\""), &[], "verifier[1].kind", kinds),
        rule(
            format!("{BASE}\n[[verifier]]\nkind = \"math\"\nweight = \"high\"\n"),
            &[],
            "verifier[0].weight",
            "must be a number, found string",
        ),
        rule(format!("{BASE}\n[[verifier]]\nkind = \"math\"\nweight = nan\n"), &[], "verifier[0].weight", "got NaN"),
        rule(second("weight = 0.5"), &[], "verifier[1].kind", "missing field `kind`"),
        rule(second("kind = \"length\"\nmax_length = \"long\""), &[], "verifier[1].max_length", "invalid type"),
        rule(second("kind = \"math\"\nweight = 0.1"), &[], "verifier[1].name", "`math` also names verifier[0]"),
        rule(format!("verifier = []\n{BASE}"), &[], "verifier", "is an empty list"),
        rule(
            format!("{BASE}\n[rollout]\ngroup_size = 1\n"),
            &[],
            "rollout.group_size",
            "at least 2 when a grpo stage runs",
        ),
        rule(format!("{BASE}\n[rollout]\ntop_p = 0.0\n"), &[], "rollout.top_p", "must be in (0, 1], got 0"),
        rule(format!("{BASE}\n[rollout]\ntop_p = 1.5\n"), &[], "rollout.top_p", "must be in (0, 1], got 1.5"),
        rule(format!("{BASE}\n[rollout]\ntemperature = -1\n"), &[], "rollout.temperature", "must be ≥ 0, got -1"),
        rule(format!("{BASE}\n[rollout]\nmin_p = 2\n"), &[], "rollout.min_p", "in [0, 1]"),
        rule(format!("{BASE}\n[rollout]\nprompts_per_step = 0\n"), &[], "rollout.prompts_per_step", "at least 1"),
        rule(format!("{BASE}\n[algorithm]\nclip_low = -0.1\n"), &[], "algorithm.clip_low", "must be in [0, 1)"),
        rule(format!("{BASE}\n[algorithm]\nclip_high = -0.2\n"), &[], "algorithm.clip_high", "must be ≥ 0"),
        rule(format!("{BASE}\n[algorithm]\nkl_coef = -1\n"), &[], "algorithm.kl_coef", "must be ≥ 0"),
        rule(format!("{BASE}\n[algorithm]\nminibatches = 0\n"), &[], "algorithm.minibatches", "at least 1"),
        rule(format!("{BASE}\n[algorithm]\noverlong_buffer = 64\n"), &[], "algorithm.overlong_buffer", "longer than"),
        rule(format!("{BASE}\n[optimizer]\nlr = 0\n"), &[], "optimizer.lr", "must be > 0"),
        rule(format!("{BASE}\n[optimizer]\nbetas = [0.9, 1.0]\n"), &[], "optimizer.betas[1]", "in [0, 1)"),
        rule(format!("{BASE}\n[optimizer]\nlr = nan\n"), &[], "optimizer.lr", "got NaN"),
        rule(
            format!("{BASE}\n[checkpoint]\nkeep_last = 0\n"),
            &[],
            "checkpoint.keep_last",
            "must be at least 1, got 0",
        ),
        rule(with("samples = 4", "pass_k = [1, 5]"), &[], "stages[2] (eval).pass_k[1]", "5 is outside 1..=4"),
        rule(with("samples = 4", "pass_k = [0]"), &[], "stages[2] (eval).pass_k[0]", "0 is outside 1..=4"),
        rule(BASE, &["stages.eval.samples=0"], "stages[2] (eval).samples", "must be at least 1"),
        rule(with("samples = 4", "temperature = -0.5"), &[], "stages[2] (eval).temperature", "must be ≥ 0"),
        rule(two_grpo, &[], "stages[3] (grpo).name", "`grpo` also names stages[1]; stage names must be unique"),
        rule(with("name = \"t\"", "device = \"gpu\""), &[], "run.device", "cpu, cuda, cuda:N or auto"),
        rule(with("name = \"t\"", "max_verifier_errors = 1.5"), &[], "run.max_verifier_errors", "must be in [0, 1]"),
        rule(with("name = \"t\"", "device = \"cuda:x\""), &[], "run.device", "got \"cuda:x\""),
    ];
    for (i, r) in rules.into_iter().enumerate() {
        let err = match load(&r.text, r.sets) {
            Ok(_) => panic!("rule {i} ({}) should fail", r.key),
            Err(e) => e,
        };
        let shown = err.to_string();
        assert_eq!(err.key(), Some(r.key), "rule {i}: {shown}");
        assert!(shown.contains(r.message), "rule {i}: `{shown}` lacks `{}`", r.message);
        assert!(shown.starts_with(FILE), "rule {i}: {shown}");
        match (&err, r.sets.last()) {
            (RecipeError::Invalid { at: At::Set(arg), .. }, Some(last)) => assert_eq!(arg, last, "rule {i}"),
            (RecipeError::Invalid { at, .. }, None) => assert!(!matches!(at, At::Set(_)), "rule {i}: {shown}"),
            (other, _) => panic!("rule {i}: {other:?}"),
        }
    }
}

#[test]
fn weighted_verifier_lists_load() {
    let text = format!(
        "{BASE}
[[verifier]]
kind = \"math\"

[[verifier]]
kind = \"length\"
weight = 0.5
max_length = 8
cache_length = 4

[[verifier]]
kind = \"language\"
name = \"lang_en\"
weight = 1
target = \"en\"

[[verifier]]
kind = \"format\"
name = \"fmt\"
weight = 0.1
"
    );
    let r = ok(&text, &[]);
    let Ok(Reward::Weighted(parts)) = r.reward() else { panic!("a weighted list: {:?}", r.reward()) };
    let summary: Vec<(&str, f32, &str)> = parts.iter().map(|(n, w, s)| (n.as_str(), *w, s.name())).collect();
    assert_eq!(
        summary,
        [("math", 1.0, "math"), ("length", 0.5, "length"), ("lang_en", 1.0, "lang_en"), ("fmt", 0.1, "format")]
    );
    let verifier = r.reward().unwrap().build().unwrap();
    assert_eq!(verifier.name(), "math+length+lang_en+fmt");
    let task = rlvr_verifiers::Task { answer: Some("7".into()), ..Default::default() };
    let verdict = verifier.verify(&task, "7").unwrap();
    // math 1, length 0 (1 char, far below 8 − 4), language 1 (nothing to count), format 0.
    assert_eq!(verdict.outcome, rlvr_verifiers::Outcome::Correct);
    let parts = rlvr_verifiers::Weighted::part_rewards(&verdict);
    assert_eq!(parts, [("math", 1.0), ("length", 0.0), ("lang_en", 1.0), ("fmt", 0.0)]);
    assert!((verdict.reward - 2.0).abs() < 1e-6, "{verdict:?}");
    assert_round_trip(&r);
    assert!(r.to_toml().contains("[[verifier]]"), "{}", r.to_toml());

    // A bare array that is not of tables is named as such.
    let err = fail(&format!("verifier = [1]\n{BASE}"), &[]);
    assert_eq!(err.key(), Some("verifier[0]"), "{err}");
    let err = fail(&format!("verifier = \"math\"\n{BASE}"), &[]);
    assert_eq!(err.key(), Some("verifier"), "{err}");
    assert!(err.to_string().contains("a table ([verifier]) or an array of tables ([[verifier]])"), "{err}");
}

#[test]
fn validation_errors_in_the_file_give_the_line() {
    let text = format!("{BASE}\n[optimizer]\nlr = -1e-3\n");
    assert_error(
        &fail(&text, &[]),
        "optimizer.lr",
        "optimizer.lr: must be > 0, got -0.001",
        &line(line_of(&text, "lr = -")),
    );
    let text = BASE.replace("steps = 1", "steps = 0");
    assert_error(&fail(&text, &[]), "stages[1] (grpo).steps", "must be at least 1", &line(line_of(&text, "steps = 0")));
}

#[test]
fn set_numbers_bools_strings_and_arrays() {
    let r = ok(BASE, &["optimizer.lr=1e-4", "rollout.group_size=4", "algorithm.clip_high=1"]);
    assert_eq!((r.optimizer.lr, r.rollout.group_size, r.algorithm.loss.clip_high), (1e-4, 4, 1.0));
    assert_eq!(r.stages[0].lr(&r.optimizer), Some(1e-4), "stages without lr follow optimizer.lr");

    let r = ok(BASE, &["logging.plots=false", "algorithm.dynamic_sampling=true", "logging.wandb.enabled=true"]);
    assert!(!r.logging.plots && r.algorithm.dynamic_sampling && r.logging.wandb.enabled);

    let r = ok(BASE, &["run.name=other", "run.device=cuda:1", "logging.wandb.entity=\"team\"", "run.dtype=bf16"]);
    assert_eq!((r.run.name.as_str(), r.run.device.to_string().as_str(), r.run.dtype), ("other", "cuda:1", Dtype::Bf16));
    assert_eq!(r.logging.wandb.entity.as_deref(), Some("team"));
    assert_eq!(r.run_dir(None), cwd().join("runs/other"));

    let r = ok(BASE, &["optimizer.betas=[0.8, 0.95]", "stages.eval.pass_k=[1,2,4]"]);
    assert_eq!(r.optimizer.betas, [0.8, 0.95]);
    let Stage::Eval(e) = &r.stages[2] else { panic!("eval") };
    assert_eq!(e.pass_k, [1, 2, 4]);

    let r = ok(BASE, &["optimizer.lr=1", "optimizer.lr=2e-3"]);
    assert_eq!(r.optimizer.lr, 2e-3, "the later --set wins");
}

#[test]
fn set_stages_by_index_and_by_name() {
    let r = ok(BASE, &["stages.1.steps=7", "stages.pretrain.seq_len=16", "stages.eval.max_problems=5"]);
    assert_eq!(r.stages[1].steps(), Some(7));
    let Stage::Pretrain(p) = &r.stages[0] else { panic!("pretrain") };
    assert_eq!(p.seq_len, 16);
    let Stage::Eval(e) = &r.stages[2] else { panic!("eval") };
    assert_eq!(e.max_problems, Some(5));

    let smoke = Recipe::load(&repo().join("recipes/smoke.toml"), &sets(&["stages.eval_after.samples=3"])).unwrap();
    let Stage::Eval(after) = &smoke.stages[6] else { panic!("eval_after") };
    assert_eq!((after.samples, after.pass_k.as_slice()), (3, &[1, 3][..]));
    let Stage::Eval(before) = &smoke.stages[4] else { panic!("eval_before") };
    assert_eq!(before.samples, 2, "only the named stage changes");
}

#[test]
fn set_errors_name_the_argument() {
    let arg = "optimizer.lr=abc";
    let err = fail(BASE, &[arg]);
    assert_error(&err, "optimizer.lr", "--set optimizer.lr=abc: invalid type: string \"abc\", expected f64", &set(arg));

    let arg = "optimizer.lrr=1";
    let err = fail(BASE, &[arg]);
    assert_error(&err, "optimizer.lrr", "--set optimizer.lrr=1: unknown field `lrr` in [optimizer]", &set(arg));

    let arg = "optimiser.lr=1";
    assert_error(&fail(BASE, &[arg]), "optimiser", "unknown field `optimiser` at the top level", &set(arg));

    let arg = "stages.grpo.stepz=1";
    assert_error(&fail(BASE, &[arg]), "stages[1] (grpo).stepz", "unknown field `stepz` in stages[1] (grpo)", &set(arg));

    let arg = "stages.0.steps=ten";
    assert_error(&fail(BASE, &[arg]), "stages[0] (pretrain).steps", "expected usize", &set(arg));

    let arg = "optimizer.lr";
    assert_error(&fail(BASE, &[arg]), "", "--set optimizer.lr: expected KEY=VALUE", &set(arg));

    let arg = "=3";
    assert_error(&fail(BASE, &[arg]), "", "is not a dotted key", &set(arg));

    let arg = "stages.sft.steps=1";
    assert_error(&fail(BASE, &[arg]), "stages.sft.steps", "no entry named `sft`", &set(arg));

    let arg = "stages.9.steps=1";
    assert_error(&fail(BASE, &[arg]), "stages.9.steps", "has 3 entries; there is no index 9", &set(arg));

    let arg = "run.name.first=x";
    assert_error(&fail(BASE, &[arg]), "run.name.first", "run.name is a string, not a table", &set(arg));

    let two_grpo = format!("{BASE}\n[[stages]]\nkind = \"grpo\"\nsteps = 1\n");
    let arg = "stages.grpo.steps=3";
    assert_error(&fail(&two_grpo, &[arg]), "stages.grpo.steps", "2 entries are named `grpo`; use an index", &set(arg));

    let arg = "stages.0.steps=0";
    assert_error(
        &fail(BASE, &["optimizer.lr=1e-4", arg]),
        "stages[0] (pretrain).steps",
        "must be at least 1",
        &set(arg),
    );

    // An error elsewhere in the file is not blamed on an unrelated --set.
    let text = format!("{BASE}\n[optimizer]\nlrr = 1\n");
    let at = line(line_of(&text, "lrr"));
    assert_error(&fail(&text, &["optimizer.lr=1e-4"]), "optimizer.lrr", "unknown field `lrr`", &at);
}

#[test]
fn set_fills_what_the_file_leaves_out() {
    let text = BASE.replace("name = \"t\"\n", "");
    assert_eq!(ok(&text, &["run.name=from-cli"]).run.name, "from-cli");
}

#[test]
fn model_config_overrides_merge_into_the_preset() {
    let r = ok(BASE, &["model.config.vocab_size=32", "model.config.rope_parameters.factor=2.0"]);
    let cfg = r.model.model_config().unwrap();
    assert_eq!(cfg.vocab_size, 32);
    assert_eq!(cfg.rope_parameters.as_ref().and_then(|p| p.factor), Some(2.0));
    assert_eq!(cfg.hidden_size, 64, "untouched keys keep the preset's values");
    assert_eq!(r.model.source_dir().unwrap().file_name().unwrap(), "tiny");
}

fn assert_round_trip(r: &Recipe) {
    let text = r.to_toml();
    let again = Recipe::parse(&text, Path::new("resolved.toml"), &[]).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(format!("{again:?}"), format!("{r:?}"), "\n{text}");
    assert_eq!(again.to_toml(), text);
    assert_eq!(again.stages, r.stages);
    assert_eq!((&again.run, &again.model, &again.rollout), (&r.run, &r.model, &r.rollout));
    assert_eq!((&again.algorithm, &again.optimizer), (&r.algorithm, &r.optimizer));
    assert_eq!((&again.checkpoint, &again.logging, &again.verifier), (&r.checkpoint, &r.logging, &r.verifier));
}

#[test]
fn resolved_recipe_round_trips() {
    for name in [
        "smoke.toml",
        "arith-grpo.toml",
        "quickstart.toml",
        "v32-rewards.toml",
        "word-problems.toml",
        "v3-to-v32.toml",
        "deepseek-v32-grpo.toml",
    ] {
        assert_round_trip(&Recipe::load(&repo().join("recipes").join(name), &[]).unwrap());
    }
    assert_round_trip(&ok(BASE, &[]));

    // Every optional key set, a model directory, and file data.
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("model");
    std::fs::create_dir(&model_dir).unwrap();
    std::fs::copy(repo().join("presets/tiny/config.json"), model_dir.join("config.json")).unwrap();
    let (train, test) = (dir.path().join("train.jsonl"), dir.path().join("test.jsonl"));
    std::fs::write(&train, "{}\n").unwrap();
    std::fs::write(&test, "{}\n").unwrap();
    let text = format!(
        r#"[run]
name = "full"
seed = 7
out = "somewhere/full"
device = "auto"
dtype = "bf16"
threads = 2
max_bad_steps = 5

[model]
path = {model:?}
init_seed = 11
mtp = true
mtp_weight = 0.5
config = {{ vocab_size = 64, rope_parameters = {{ factor = 2.0 }} }}

[data]
source = "jsonl"
train = {train:?}
test = {test:?}
format = "gsm8k"
prompt_field = "question"
answer_field = "answer"
held_out = 5
prompt_template = "Q: {{prompt}}\nA:"

[[stages]]
kind = "sft"
name = "warm"
steps = 3
batch_size = 2
lr = 1e-4
attention = "sparse"

[[stages]]
kind = "grpo"
steps = 2

[[stages]]
kind = "eval"
name = "final"
samples = 3
pass_k = [1, 3]
temperature = 0.0
max_problems = 10

[rollout]
group_size = 4
attention = "sparse"
slots = 6
top_k = 20
min_p = 0.05

[verifier]
kind = "math"
rel_tol = 1e-4

[algorithm]
advantage = "mean_std"
aggregation = "constant"
constant_norm = 100.0
kl_estimator = "k3"
kl_coef = 0.01
off_policy_delta = 0.3
dynamic_sampling = true
overlong_buffer = 8
micro_batch = 2

[optimizer]
schedule = "cosine"
warmup_steps = 5
weight_decay = 0.1

[checkpoint]
every = 10
keep_last = 1

[logging]
console_every = 5

[logging.wandb]
enabled = true
mode = "online"
entity = "team"
python = "/usr/bin/python3"
"#,
        model = model_dir.display().to_string(),
        train = train.display().to_string(),
        test = test.display().to_string(),
    );
    let r = ok(&text, &[]);
    let DataSpec::Jsonl(files) = &r.data else { panic!("jsonl data") };
    assert_eq!((files.format, files.held_out), (Some(FileFormat::Gsm8k), 5));
    assert_eq!(r.model.model_config().unwrap().vocab_size, 64);
    assert_round_trip(&r);
}

/// Spawned rollout servers get `--min-slots` (one group) with the default `rollout.slots = 0`, so
/// they lower their slots to what fits as the colocated engine does; a count the recipe sets is
/// passed alone (a server it does not fit refuses it).
#[test]
fn spawned_servers_lower_default_slots_down_to_one_group() {
    let mut rollout = rlvr_trainer::recipe::Rollout { group_size: 8, prompts_per_step: 32, ..Default::default() };
    assert_eq!(rollout.slots, 0);
    assert_eq!(rlvr_trainer::pool::spawn::slot_floor(&rollout), ["--min-slots", "8"]);
    rollout.slots = 64;
    assert!(rlvr_trainer::pool::spawn::slot_floor(&rollout).is_empty());
}
