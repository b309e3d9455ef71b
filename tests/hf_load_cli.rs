//! What `rlvr train` writes loads whole in transformers: `AutoTokenizer` and
//! `AutoModelForCausalLM` take a checkpoint of the built-in task's run (its character tokenizer
//! included), no weight is missing, and Python's tokenizer gives the ids rlvr's gives on the task's
//! text (tests/fixtures/check_hf_load.py). `./x test` installs transformers and sets
//! `RLVR_REQUIRE_TRANSFORMERS=1`; a plain `cargo test` without transformers skips, saying why.

mod common;

use common::{root, TINY_ARITHMETIC};
use serde_json::Value;
use std::process::Command;

#[test]
fn a_run_checkpoint_loads_in_transformers_with_the_same_token_ids() {
    let Some(python) = common::transformers_or_skip("the transformers check") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tmp.path().join("r.toml");
    let text = format!(
        "[run]\nname = \"hf\"\ndevice = \"cpu\"\n\n{TINY_ARITHMETIC}\n[[stages]]\nkind = \"pretrain\"\nsteps = 1\nbatch_size = 2\nseq_len = 16\n\n[logging]\nplots = false\n"
    );
    std::fs::write(&recipe, text).unwrap();
    let run = tmp.path().join("run");
    let out = common::rlvr(&["train", recipe.to_str().unwrap(), "--out", run.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = run.join("checkpoints/step_000001");
    // The task's own text: problems, answers, newlines; and a character outside its alphabet.
    let texts = ["12+7=19", "3*(4-1)=9\n8-5=3", "9 = 9?"];
    let check = root().join("tests/fixtures/check_hf_load.py");
    let py = Command::new(python).arg(check).arg(&dir).args(texts).output().unwrap();
    assert!(
        py.status.success(),
        "transformers could not load {}:\n{}",
        dir.display(),
        String::from_utf8_lossy(&py.stderr)
    );
    let got: Value = serde_json::from_str(String::from_utf8_lossy(&py.stdout).trim().lines().last().unwrap()).unwrap();
    assert_eq!(got["class"], "DeepseekV32ForCausalLM");
    assert_eq!(got["missing"], serde_json::json!([]), "weights transformers found missing");
    let ours = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    for (i, t) in texts.iter().enumerate() {
        let ids: Vec<u64> = ours.encode(*t, true).unwrap().get_ids().iter().map(|&x| u64::from(x)).collect();
        let theirs: Vec<u64> = got["ids"][i].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
        assert_eq!(theirs, ids, "token ids of {t:?}: transformers vs rlvr");
    }
}
