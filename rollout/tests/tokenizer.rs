//! The tokenizer wrapper on the hand-built fixture `tests/data/tokenizer.json` (made by
//! `tests/data/make_tokenizer.py`): a byte-level BPE with the DeepSeek chat markers as added tokens.

use std::path::{Path, PathBuf};

use rlvr_rollout::chat::{encode_chat, ChatOptions, Message, Role, ASSISTANT, BOS, EOS, THINK_END, THINK_START, USER};
use rlvr_rollout::tokenizer::{IncrementalDecoder, Tokenizer, TokenizerError};
use serde_json::Value;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn fixture() -> Tokenizer {
    Tokenizer::from_dir(data_dir()).unwrap()
}

/// The fixture's BPE vocabulary read straight from the JSON, independent of the wrapper.
fn vocab_id(token: &str) -> i64 {
    let text = std::fs::read_to_string(data_dir().join("tokenizer.json")).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    json["model"]["vocab"][token].as_i64().unwrap_or_else(|| panic!("{token:?} not in the fixture vocab"))
}

/// A copy of the fixture's `tokenizer.json` with a chosen `tokenizer_config.json` (or none).
fn dir_with_config(config: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(data_dir().join("tokenizer.json"), dir.path().join("tokenizer.json")).unwrap();
    if let Some(config) = config {
        std::fs::write(dir.path().join("tokenizer_config.json"), config).unwrap();
    }
    dir
}

#[test]
fn chat_markers_have_their_fixture_ids() {
    let tok = fixture();
    let markers = [
        (BOS, 0),
        (EOS, 1),
        (USER, 2),
        (ASSISTANT, 3),
        (THINK_START, 4),
        (THINK_END, 5),
        ("<｜tool▁calls▁begin｜>", 6),
        ("<｜tool▁calls▁end｜>", 7),
        ("<｜tool▁call▁begin｜>", 8),
        ("<｜tool▁call▁end｜>", 9),
        ("<｜tool▁sep｜>", 10),
    ];
    for (marker, id) in markers {
        assert_eq!(tok.token_id(marker), Some(id), "{marker}");
    }
    assert_eq!(tok.token_id("<｜not a token｜>"), None);
    assert_eq!((tok.bos_id(), tok.eos_id()), (Some(0), Some(1)));
    // 11 markers + 256 byte symbols + one new token per merge (20, all distinct).
    assert_eq!(tok.vocab_size(), 11 + 256 + 20);
}

#[test]
fn encode_applies_merges_and_keeps_markers_whole() {
    let tok = fixture();
    assert_eq!(tok.encode("Hello world", false).unwrap(), vec![vocab_id("Hello"), vocab_id("Ġworld")]);
    let text = format!("{USER}Hello{ASSISTANT}{THINK_END}the answer");
    let want = vec![2, vocab_id("Hello"), 3, 5, vocab_id("t"), vocab_id("he"), vocab_id("Ġanswer")];
    assert_eq!(tok.encode(&text, false).unwrap(), want);
}

#[test]
fn chat_prompt_tokenises_markers_to_single_ids() {
    let tok = fixture();
    let prompt = encode_chat(&[Message::new(Role::User, "Hello")], &[], &ChatOptions::default()).unwrap();
    assert_eq!(tok.encode(&prompt, false).unwrap(), vec![0, 2, vocab_id("Hello"), 3, 5]);
}

#[test]
fn decode_round_trips_text_with_multibyte_characters() {
    let tok = fixture();
    let text = "Hello world, the answer is 42! é 世界 🙂\n\ttabs";
    let ids = tok.encode(text, false).unwrap();
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
    // é is two bytes with no merge, so two byte tokens.
    assert_eq!(tok.encode("é", false).unwrap(), vec![vocab_id("Ã"), vocab_id("©")]);
}

#[test]
fn skip_special_drops_special_markers_only() {
    let tok = fixture();
    let text = format!("{BOS}{USER}Hello{ASSISTANT}{THINK_START}the{THINK_END} world{EOS}");
    let ids = tok.encode(&text, false).unwrap();
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
    // The fixture marks <think>/</think> non-special (see make_tokenizer.py), so they survive.
    assert_eq!(tok.decode(&ids, true).unwrap(), "Hello<think>the</think> world");
}

#[test]
fn add_special_follows_tokenizer_config() {
    // The fixture's config is V3.2's: add_bos_token and add_eos_token both false.
    let tok = fixture();
    assert_eq!(tok.encode("Hello", true).unwrap(), vec![vocab_id("Hello")]);
    let bos_as_string = r#"{"add_bos_token": true, "add_eos_token": true, "bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>"}"#;
    let dir = dir_with_config(Some(bos_as_string));
    let tok = Tokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(tok.encode("Hello", true).unwrap(), vec![0, vocab_id("Hello"), 1]);
    assert_eq!(tok.encode("Hello", false).unwrap(), vec![vocab_id("Hello")]);
    // LlamaTokenizerFast's default is bos on, eos off.
    let dir = dir_with_config(Some(r#"{"bos_token": null}"#));
    let tok = Tokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(tok.encode("Hello", true).unwrap(), vec![0, vocab_id("Hello")]);
    // No config: tokenizer.json's ByteLevel post-processor adds nothing; DeepSeek's names still found.
    let dir = dir_with_config(None);
    let tok = Tokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(tok.encode("Hello", true).unwrap(), vec![vocab_id("Hello")]);
    assert_eq!((tok.bos_id(), tok.eos_id()), (Some(0), Some(1)));
}

#[test]
fn incremental_decode_waits_for_split_characters() {
    let tok = fixture();
    let ids = tok.encode("é世", false).unwrap();
    assert_eq!(ids.len(), 5, "2 bytes + 3 bytes, no merges");
    let mut dec = IncrementalDecoder::new(false);
    let pieces: Vec<String> = ids.iter().map(|&id| dec.push(&tok, id).unwrap()).collect();
    assert_eq!(pieces, vec!["", "é", "", "", "世"]);
    assert_eq!(dec.finish(&tok).unwrap(), "");
    assert_eq!(dec.ids(), ids.as_slice());
}

#[test]
fn incremental_pieces_concatenate_to_the_full_decode() {
    let tok = fixture();
    let text = format!("{THINK_START}Hello 🙂 world{THINK_END}the answer is é{EOS}");
    let ids = tok.encode(&text, false).unwrap();
    let mut dec = IncrementalDecoder::new(false);
    let mut streamed = String::new();
    for &id in &ids {
        streamed.push_str(&dec.push(&tok, id).unwrap());
    }
    streamed.push_str(&dec.finish(&tok).unwrap());
    assert_eq!(streamed, text);
}

#[test]
fn finish_flushes_an_incomplete_character_as_replacement() {
    let tok = fixture();
    let first_byte_of_shi = tok.encode("世", false).unwrap()[0];
    let mut dec = IncrementalDecoder::new(false);
    assert_eq!(dec.push(&tok, vocab_id("Hello")).unwrap(), "Hello");
    assert_eq!(dec.push(&tok, first_byte_of_shi).unwrap(), "");
    assert_eq!(dec.finish(&tok).unwrap(), "\u{FFFD}");
}

#[test]
fn errors_name_the_file_and_field() {
    let missing = tempfile::tempdir().unwrap();
    let err = Tokenizer::from_dir(missing.path()).err().unwrap();
    assert!(matches!(&err, TokenizerError::Io { path, .. } if path.ends_with("tokenizer.json")), "{err}");
    assert!(err.to_string().contains("tokenizer.json"));

    std::fs::write(missing.path().join("tokenizer.json"), "{not json").unwrap();
    let err = Tokenizer::from_dir(missing.path()).err().unwrap();
    assert!(matches!(err, TokenizerError::Parse { .. }), "{err}");

    let dir = dir_with_config(Some(r#"{"bos_token": "<s>"}"#));
    let err = Tokenizer::from_dir(dir.path()).err().unwrap();
    let msg = err.to_string();
    assert!(msg.contains("tokenizer_config.json") && msg.contains("`bos_token`") && msg.contains("<s>"), "{msg}");

    let dir = dir_with_config(Some(r#"{"add_bos_token": "yes"}"#));
    let err = Tokenizer::from_dir(dir.path()).err().unwrap();
    assert!(matches!(&err, TokenizerError::Config { field, .. } if field == "add_bos_token"), "{err}");

    assert!(matches!(fixture().decode(&[-1], false), Err(TokenizerError::Decode(_))));
}
