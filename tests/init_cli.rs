//! `rlvr init`: its output loads strictly, `rlvr inspect` counts what the config implies, and the same
//! seed gives byte-identical files.
//!
//! Both go through the built binary.

use rlvr_model::checkpoint::load;
use rlvr_model::header::read_dir;
use rlvr_model::spec::{main_tensors, mtp_tensors};
use rlvr_model::{ModelConfig, ParamCounts};
use std::collections::HashMap;
use std::path::Path;
use tch::{Kind, Tensor};

/// Runs `rlvr init ARGS...`; `Err` carries its stderr.
fn init(args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rlvr"))
        .arg("init")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        anyhow::bail!("{}", String::from_utf8_lossy(&out.stderr))
    }
}

fn zeros_for(cfg: &ModelConfig, with_mtp: bool) -> HashMap<String, Tensor> {
    let mtp = if with_mtp { mtp_tensors(cfg) } else { Vec::new() };
    main_tensors(cfg)
        .into_iter()
        .chain(mtp)
        .map(|t| {
            let dims: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
            (t.name, Tensor::zeros(dims.as_slice(), (Kind::Float, tch::Device::Cpu)))
        })
        .collect()
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
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
fn init_output_loads_strictly_and_inspect_counts_match() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tiny-init");
    let out_s = out.to_str().unwrap();
    init(&["--config", "tiny", "--out", out_s, "--seed", "7", "--max-shard-bytes", "300000"]).unwrap();
    let cfg = ModelConfig::from_path(&out).unwrap();
    assert!(cfg.num_nextn_predict_layers > 0, "the tiny preset has MTP, so MTP tensors are written too");

    let vars = zeros_for(&cfg, true);
    let report = load(&out, &cfg, &vars, true).unwrap();
    assert_eq!((report.loaded, report.skipped_mtp.len()), (vars.len(), 0));
    assert!(report.files.len() > 1, "sharded at 300 kB");
    let without_mtp = zeros_for(&cfg, false);
    let report = load(&out, &cfg, &without_mtp, true).unwrap();
    assert_eq!(report.skipped_mtp.len(), mtp_tensors(&cfg).len());

    let counts = ParamCounts::of(&cfg);
    let run =
        std::process::Command::new(env!("CARGO_BIN_EXE_rlvr")).args(["inspect", out_s, "--json"]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let json: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(json["params_total"], counts.total);
    assert_eq!(json["checkpoint_tensors"], vars.len());
    let stored: u64 = json["dtypes"].as_object().unwrap().values().map(|d| d["elements"].as_u64().unwrap()).sum();
    assert_eq!(stored, counts.total + counts.mtp_with_shared_copies);
    assert_eq!(json["dtypes"].as_object().unwrap().keys().collect::<Vec<_>>(), vec!["F32"]);
}

#[test]
fn same_seed_same_bytes_and_bf16_keeps_the_router_bias_f32() {
    let tmp = tempfile::tempdir().unwrap();
    let path = |n: &str| tmp.path().join(n).to_str().unwrap().to_string();
    for (name, seed) in [("a", "1"), ("b", "1"), ("c", "2")] {
        init(&["--config", "tiny", "--out", &path(name), "--seed", seed, "--dtype", "bf16"]).unwrap();
    }
    let (a, b, c) = (files(&tmp.path().join("a")), files(&tmp.path().join("b")), files(&tmp.path().join("c")));
    assert!(a == b, "same seed, different bytes");
    assert!(a != c, "different seeds, same bytes");
    let headers = read_dir(&tmp.path().join("a")).unwrap();
    for (name, h) in &headers.tensors {
        let want = if name.ends_with("e_score_correction_bias") { "F32" } else { "BF16" };
        assert_eq!(h.dtype.to_string(), want, "{name}");
    }
    let err = format!("{:#}", init(&["--config", "tiny", "--out", &path("a")]).unwrap_err());
    assert!(err.contains("refusing to overwrite"), "{err:#}");
    init(&["--config", "tiny", "--out", &path("a"), "--seed", "2", "--dtype", "bf16", "--overwrite"]).unwrap();
    assert!(files(&tmp.path().join("a")) == c);
}

#[test]
fn unknown_config_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x");
    let err = init(&["--config", "no-such-preset", "--out", out.to_str().unwrap()]).unwrap_err();
    assert!(format!("{err:#}").contains("no-such-preset"), "{err:#}");
    assert!(!out.exists());
}
