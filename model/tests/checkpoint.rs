//! Loading the transformers-written fixtures (FP8, sharded BF16/F32), save → load round trips,
//! MTP handling, and seeded initialisation.

mod ckpt_support;
mod common;

use ckpt_support::{bits, raw_f32, read_raw, spec_vars};
use common::fixture;
use rlvr_model::checkpoint::{self, init, load_varstore, read_all, save, SaveOptions};
use rlvr_model::spec::{main_tensors, mtp_tensors};
use rlvr_model::{ModelConfig, ParamCounts};
use safetensors::Dtype;
use std::path::Path;
use tch::{Device, Kind, Tensor};

#[test]
fn fp8_fixture_equals_pytorch_dequantization_bit_for_bit() {
    let dir = fixture("tiny-fp8");
    let cfg = ModelConfig::from_path(&dir).unwrap();
    let vs = spec_vars(&cfg, Kind::Float, false);
    let report = load_varstore(&dir, &cfg, &vs, true).unwrap();
    assert_eq!(report.dequantized_fp8, 32);
    assert_eq!(report.loaded, main_tensors(&cfg).len());
    let expected = read_raw(&dir.join("dequantized.safetensors"));
    let vars = vs.variables();
    assert_eq!(expected.len(), vars.len());
    for (name, raw) in &expected {
        assert_eq!(raw.dtype, Dtype::F32);
        let want: Vec<u32> = raw_f32(raw).into_iter().map(f32::to_bits).collect();
        assert!(bits(&vars[name]) == want, "{name} differs from dequantized.safetensors");
    }
    // read_all decodes the same, and folds the scale partners away.
    let all = read_all(&dir, &cfg, Kind::Float, Device::Cpu).unwrap();
    assert_eq!(all.len(), expected.len());
    let name = "model.layers.1.mlp.experts.3.down_proj.weight";
    assert_eq!(bits(&all[name]), raw_f32(&expected[name]).into_iter().map(f32::to_bits).collect::<Vec<_>>());
}

#[test]
fn sharded_fixture_loads_raw_values_upcast() {
    let dir = fixture("tiny-sharded");
    let cfg = ModelConfig::from_path(&dir).unwrap();
    let f32_vars = spec_vars(&cfg, Kind::Float, false);
    let report = load_varstore(&dir, &cfg, &f32_vars, true).unwrap();
    assert_eq!((report.loaded, report.files.len()), (154, 3));
    let bf16_vars = spec_vars(&cfg, Kind::BFloat16, false);
    load_varstore(&dir, &cfg, &bf16_vars, true).unwrap();
    let (f32_vars, bf16_vars) = (f32_vars.variables(), bf16_vars.variables());
    let mut seen = std::collections::BTreeSet::new();
    for shard in &report.files {
        for (name, raw) in read_raw(shard) {
            let want: Vec<u32> = raw_f32(&raw).into_iter().map(f32::to_bits).collect();
            assert!(bits(&f32_vars[&name]) == want, "{name} in {}", shard.display());
            if raw.dtype == Dtype::BF16 {
                // Stored BF16 into a BF16 model: the very same bits.
                assert!(bits(&bf16_vars[&name]) == want, "bf16 {name}");
            }
            seen.insert(raw.dtype);
        }
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![Dtype::BF16, Dtype::F32]);
}

fn assert_same_tensors(a: &tch::nn::VarStore, b: &tch::nn::VarStore) {
    let (a, b) = (a.variables(), b.variables());
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert_eq!(t.kind(), b[name].kind(), "{name}");
        assert!(bits(t) == bits(&b[name]), "{name} changed in the round trip");
    }
}

#[test]
fn save_load_round_trip_is_bit_identical_single_and_sharded() {
    let src = fixture("tiny-sparse");
    let cfg = ModelConfig::from_path(&src).unwrap();
    let original = spec_vars(&cfg, Kind::Float, false);
    load_varstore(&src, &cfg, &original, true).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for (name, max) in [("single", u64::MAX), ("sharded", 100_000)] {
        let out = tmp.path().join(name);
        let opts = SaveOptions { max_shard_bytes: max, ..Default::default() };
        let report = checkpoint::save_varstore(&out, &original, &cfg, &opts).unwrap();
        let back = spec_vars(&cfg, Kind::Float, false);
        let loaded = load_varstore(&out, &ModelConfig::from_path(&out).unwrap(), &back, true).unwrap();
        assert_eq!(loaded.files, report.files);
        assert_same_tensors(&original, &back);
        assert_eq!(report.total_size, 4 * ParamCounts::of(&cfg).total);
        if name == "sharded" {
            assert_eq!(report.files.len(), 7, "614 kB in shards of ≤ 100 kB");
            let index: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(out.join("model.safetensors.index.json")).unwrap())
                    .unwrap();
            assert_eq!(index["metadata"]["total_size"], report.total_size);
            assert_eq!(index["weight_map"].as_object().unwrap().len(), main_tensors(&cfg).len());
            assert_eq!(index["weight_map"]["model.embed_tokens.weight"], "model-00001-of-00007.safetensors");
            for f in &report.files {
                assert!(std::fs::metadata(f).unwrap().len() <= 100_000 + 16_384, "{}", f.display());
            }
        }
        // The config comes back equal; only `dtype` may be rewritten.
        let saved = ModelConfig::from_path(&out).unwrap();
        assert_eq!(saved, cfg);
        // No temporary directory is left beside the target.
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .filter_map(|e| {
                let n = e.unwrap().file_name().to_string_lossy().into_owned();
                n.starts_with('.').then_some(n)
            })
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

#[test]
fn bf16_save_rounds_once_and_keeps_the_router_bias_f32() {
    let src = fixture("tiny-sparse");
    let cfg = ModelConfig::from_path(&src).unwrap();
    let original = spec_vars(&cfg, Kind::Float, false);
    load_varstore(&src, &cfg, &original, true).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bf16");
    let opts = SaveOptions { dtype: Some(Kind::BFloat16), ..Default::default() };
    checkpoint::save_varstore(&out, &original, &cfg, &opts).unwrap();
    let raw = read_raw(&out.join("model.safetensors"));
    assert_eq!(raw["model.layers.1.mlp.gate.e_score_correction_bias"].dtype, Dtype::F32);
    assert_eq!(raw["model.norm.weight"].dtype, Dtype::BF16);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["dtype"], "bfloat16");
    let back = spec_vars(&cfg, Kind::Float, false);
    load_varstore(&out, &cfg, &back, true).unwrap();
    let (a, b) = (original.variables(), back.variables());
    for (name, t) in &a {
        let want =
            if name.ends_with("e_score_correction_bias") { t.shallow_clone() } else { t.to_kind(Kind::BFloat16) };
        assert!(bits(&want) == bits(&b[name]), "{name}");
    }
}

#[test]
fn overwrite_is_refused_unless_asked() {
    let cfg = ModelConfig::from_path(&fixture("tiny-dense")).unwrap();
    let tensors = init::init_tensors(&cfg, 1, Kind::Float).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    save(&out, &tensors, &cfg, &SaveOptions::default()).unwrap();
    let err = save(&out, &tensors, &cfg, &SaveOptions::default()).unwrap_err().to_string();
    assert!(err.contains("refusing to overwrite"), "{err}");
    let other = init::init_tensors(&cfg, 2, Kind::Float).unwrap();
    save(&out, &other, &cfg, &SaveOptions { overwrite: true, ..Default::default() }).unwrap();
    let vs = spec_vars(&cfg, Kind::Float, false);
    load_varstore(&out, &cfg, &vs, true).unwrap();
    let name = "model.embed_tokens.weight";
    assert_eq!(bits(&vs.variables()[name]), bits(&other.iter().find(|(n, _)| n == name).unwrap().1));
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1, "the old copy is gone");
}

fn mtp_config() -> ModelConfig {
    let mut cfg = ModelConfig::from_path(&fixture("tiny-sparse")).unwrap();
    cfg.num_nextn_predict_layers = 1;
    cfg
}

#[test]
fn mtp_tensors_load_when_the_model_has_mtp_and_are_skipped_otherwise() {
    let cfg = mtp_config();
    let tensors = init::init_tensors(&cfg, 3, Kind::Float).unwrap();
    assert_eq!(tensors.len(), main_tensors(&cfg).len() + mtp_tensors(&cfg).len());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("mtp");
    save(&out, &tensors, &cfg, &SaveOptions::default()).unwrap();

    let without = spec_vars(&cfg, Kind::Float, false);
    let report = load_varstore(&out, &cfg, &without, true).unwrap();
    assert_eq!(report.skipped_mtp.len(), mtp_tensors(&cfg).len());
    assert!(report.skipped_mtp.iter().all(|n| n.starts_with("model.layers.3.")));

    let with = spec_vars(&cfg, Kind::Float, true);
    let report = load_varstore(&out, &cfg, &with, true).unwrap();
    assert_eq!((report.loaded, report.skipped_mtp.len()), (tensors.len(), 0));
    let name = "model.layers.3.eh_proj.weight";
    assert_eq!(bits(&with.variables()[name]), bits(&tensors.iter().find(|(n, _)| n == name).unwrap().1));
}

fn file_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn init_is_deterministic_and_follows_the_rules() {
    let cfg = ModelConfig::from_path(&fixture("tiny-sparse")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let opts = SaveOptions { max_shard_bytes: 200_000, ..Default::default() };
    for (dir, seed) in [("a", 11), ("b", 11), ("c", 12)] {
        save(&tmp.path().join(dir), &init::init_tensors(&cfg, seed, Kind::Float).unwrap(), &cfg, &opts).unwrap();
    }
    let (a, b, c) =
        (file_bytes(&tmp.path().join("a")), file_bytes(&tmp.path().join("b")), file_bytes(&tmp.path().join("c")));
    assert!(a.len() > 2 && a == b, "same seed, same bytes");
    assert_eq!(a.iter().map(|f| &f.0).collect::<Vec<_>>(), c.iter().map(|f| &f.0).collect::<Vec<_>>());
    assert!(a.iter().zip(&c).any(|(x, y)| x.1 != y.1), "another seed, other weights");

    let vs = spec_vars(&cfg, Kind::Float, false);
    load_varstore(&tmp.path().join("a"), &cfg, &vs, true).unwrap();
    let vars = vs.variables();
    let all_equal = |name: &str, v: f64| vars[name].eq(v).all().int64_value(&[]) == 1;
    assert!(all_equal("model.norm.weight", 1.0) && all_equal("model.layers.2.self_attn.q_a_layernorm.weight", 1.0));
    assert!(all_equal("model.layers.0.self_attn.indexer.k_norm.weight", 1.0));
    assert!(all_equal("model.layers.0.self_attn.indexer.k_norm.bias", 0.0));
    assert!(all_equal("model.layers.1.mlp.gate.e_score_correction_bias", 0.0));
    // All normal weights together: mean ≈ 0, std ≈ initializer_range (0.02).
    let normal: Vec<Tensor> = vars
        .iter()
        .filter(|(n, _)| matches!(init::init_of(n, &cfg), init::Init::Normal(_)))
        .map(|(_, t)| t.flatten(0, -1))
        .collect();
    let all = Tensor::cat(&normal, 0);
    let (mean, std) = (all.mean(Kind::Double).double_value(&[]), all.std(true).double_value(&[]));
    assert!(all.size()[0] > 100_000 && mean.abs() < 2e-4 && (std - 0.02).abs() < 2e-4, "{mean} {std}");
}

#[test]
fn box_muller_draws_have_unit_moments() {
    let v = init::normal_values(5, "x", 400_000, 1.0);
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = v.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / n;
    let within_1sd = v.iter().filter(|x| x.abs() < 1.0).count() as f64 / n;
    assert!(
        mean.abs() < 0.01 && (var - 1.0).abs() < 0.01 && (within_1sd - 0.6827).abs() < 0.005,
        "{mean} {var} {within_1sd}"
    );
    assert_ne!(init::normal_values(5, "x", 8, 1.0), init::normal_values(5, "y", 8, 1.0));
}

/// The workspace's Python, when it can import transformers (else why not, for the skip message).
fn python_with_transformers() -> Result<std::path::PathBuf, String> {
    let python = common::root().join(".venv/bin/python");
    let probe = std::process::Command::new(&python).args(["-c", "import transformers, safetensors"]).output();
    match probe {
        Ok(out) if out.status.success() => Ok(python),
        Ok(out) => Err(format!(
            "{} cannot import transformers: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("{}: {e}", python.display())),
    }
}

/// transformers' `DeepseekV32ForCausalLM.from_pretrained` loads an rlvr-saved (sharded) copy of
/// tiny-sparse with no key problems, and its logits equal the original's exactly
/// (tests/fixtures/check_roundtrip.py). `./x test` installs transformers first and sets
/// `RLVR_REQUIRE_TRANSFORMERS=1`, so there a missing Python environment fails the test; a plain
/// `cargo test` without it skips, saying why.
#[test]
fn transformers_loads_what_rlvr_saves() {
    let python = match python_with_transformers() {
        Ok(p) => p,
        Err(why) if std::env::var_os("RLVR_REQUIRE_TRANSFORMERS").is_some() => panic!("{why}"),
        Err(why) => {
            eprintln!("skipped transformers_loads_what_rlvr_saves: {why}");
            return;
        }
    };
    let src = fixture("tiny-sparse");
    let cfg = ModelConfig::from_path(&src).unwrap();
    let vs = spec_vars(&cfg, Kind::Float, false);
    load_varstore(&src, &cfg, &vs, true).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("saved");
    let opts = SaveOptions { max_shard_bytes: 250_000, ..Default::default() };
    assert!(checkpoint::save_varstore(&out, &vs, &cfg, &opts).unwrap().files.len() > 1);
    let script = common::root().join("tests/fixtures/check_roundtrip.py");
    let run = std::process::Command::new(python).arg(script).arg(&src).arg(&out).output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let summary: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["loading_info"], serde_json::json!({}));
    assert_eq!(summary["max_logit_diff_vs_original"], 0.0);
}
