//! Safetensors headers of transformers-written fixtures, checked against the tensor list derived
//! from the config, and errors on broken checkpoints.

mod common;

use common::fixture;
use rlvr_model::header::{read_dir, CheckpointHeaders};
use rlvr_model::spec::main_tensors;
use rlvr_model::ModelConfig;
use std::path::Path;

/// Every tensor transformers wrote is one the config predicts, with the same shape, and back.
fn assert_matches_spec(dir: &Path, headers: &CheckpointHeaders) {
    let cfg = ModelConfig::from_path(dir).unwrap();
    let spec = main_tensors(&cfg);
    assert_eq!(headers.tensors.len(), spec.len(), "{}", dir.display());
    for t in &spec {
        let h = headers.tensors.get(&t.name).unwrap_or_else(|| panic!("{} lacks {}", dir.display(), t.name));
        assert_eq!(h.shape, t.shape, "{}", t.name);
    }
}

#[test]
fn single_file_fixtures_match_the_config() {
    for name in ["tiny-dense", "tiny-sparse"] {
        let dir = fixture(name);
        let headers = read_dir(&dir).unwrap();
        assert_eq!(headers.files.len(), 1);
        assert_eq!(headers.dtype_summary().keys().collect::<Vec<_>>(), vec!["F32"], "{name}");
        assert_matches_spec(&dir, &headers);
    }
}

#[test]
fn sharded_fixture_reads_through_the_index() {
    let dir = fixture("tiny-sharded");
    let headers = read_dir(&dir).unwrap();
    assert_eq!(headers.files.len(), 3);
    assert_matches_spec(&dir, &headers);
    // Independent count: the index's weight_map, and the dtypes the script chose.
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("model.safetensors.index.json")).unwrap()).unwrap();
    let map = index["weight_map"].as_object().unwrap();
    assert_eq!(map.len(), headers.tensors.len());
    for (name, file) in map {
        assert!(headers.tensors[name].file.ends_with(file.as_str().unwrap()), "{name}");
    }
    let dtypes = headers.dtype_summary();
    assert!(dtypes.contains_key("BF16") && dtypes.contains_key("F32"), "{dtypes:?}");
    let elements: u64 = dtypes.values().map(|(_, n)| n).sum();
    let cfg = ModelConfig::from_path(&dir).unwrap();
    assert_eq!(elements, main_tensors(&cfg).iter().map(|t| t.numel()).sum::<u64>());
}

#[test]
fn fp8_fixture_lists_e4m3_weights_and_scales() {
    let headers = read_dir(&fixture("tiny-fp8")).unwrap();
    let dtypes = headers.dtype_summary();
    assert!(dtypes.contains_key("F8_E4M3"), "{dtypes:?}");
    for (name, h) in &headers.tensors {
        if format!("{:?}", h.dtype) == "F8_E4M3" {
            let scale =
                headers.tensors.get(&format!("{name}_scale_inv")).unwrap_or_else(|| panic!("{name} has no scale"));
            let blocks: Vec<usize> = h.shape.iter().map(|d| d.div_ceil(128)).collect();
            assert_eq!(scale.shape, blocks, "{name}");
        }
    }
}

fn copy_fixture(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    tmp
}

#[test]
fn truncated_shard_is_named() {
    let tmp = copy_fixture("tiny-sharded");
    let shard = tmp.path().join("model-00002-of-00003.safetensors");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 100]).unwrap();
    let err = read_dir(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("model-00002-of-00003.safetensors"), "{err}");
}

#[test]
fn garbage_header_and_missing_files_are_named() {
    let tmp = copy_fixture("tiny-sharded");
    std::fs::write(tmp.path().join("model-00001-of-00003.safetensors"), b"\x10\0\0\0\0\0\0\0{not json at all").unwrap();
    let err = read_dir(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("model-00001-of-00003.safetensors"), "{err}");

    std::fs::remove_file(tmp.path().join("model-00003-of-00003.safetensors")).unwrap();
    std::fs::copy(
        fixture("tiny-sharded/model-00001-of-00003.safetensors"),
        tmp.path().join("model-00001-of-00003.safetensors"),
    )
    .unwrap();
    let err = read_dir(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("model-00003-of-00003.safetensors"), "{err}");

    let empty = tempfile::tempdir().unwrap();
    let err = read_dir(empty.path()).unwrap_err().to_string();
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn index_pointing_at_the_wrong_shard_is_named() {
    let tmp = copy_fixture("tiny-sharded");
    let path = tmp.path().join("model.safetensors.index.json");
    let mut index: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let map = index["weight_map"].as_object_mut().unwrap();
    let (name, file) = map.iter().next().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).unwrap();
    let other = ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors"]
        .into_iter()
        .find(|f| *f != file)
        .unwrap();
    map.insert(name.clone(), other.into());
    std::fs::write(&path, index.to_string()).unwrap();
    let err = read_dir(tmp.path()).unwrap_err().to_string();
    assert!(err.contains(&name), "{err}");
}
