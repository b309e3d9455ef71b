//! The character-level tokenizers — the arithmetic task's, and a printable-ASCII one for file data
//! on a preset model — built with the `tokenizers` crate so the same `tokenizer.json` serves
//! training, `rlvr generate` and rollout's loader.
//!
//! Ids: 0 `<bos>`, 1 `<eos>`, 2 `<pad>` (special), then one id per character of
//! [`ARITHMETIC_CHARS`] in order, then `<unk>` (special) for any other character. The pipeline is a
//! `Split` pre-tokenizer isolating every character, a `WordLevel` model over single characters, a
//! `TemplateProcessing` post-processor that prepends `<bos>` when special tokens are asked for, and
//! a `Fuse` decoder that joins tokens with no separator.

use std::path::Path;

use ahash::AHashMap;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::DataError;

/// Beginning-of-sequence token.
pub const BOS: &str = "<bos>";
/// End-of-sequence token: the stop token of generation.
pub const EOS: &str = "<eos>";
/// Padding token.
pub const PAD: &str = "<pad>";
/// Stands for any character outside [`ARITHMETIC_CHARS`].
pub const UNK: &str = "<unk>";
/// Id of [`BOS`].
pub const BOS_ID: u32 = 0;
/// Id of [`EOS`].
pub const EOS_ID: u32 = 1;
/// Id of [`PAD`].
pub const PAD_ID: u32 = 2;
/// The characters with their own id, in id order from 3 (all ASCII, one byte each).
pub const ARITHMETIC_CHARS: &str = "0123456789+-*/=()., \n";
/// Id of [`UNK`]: the last one.
pub const UNK_ID: u32 = 3 + ARITHMETIC_CHARS.len() as u32;
/// Vocabulary size: the three sequence tokens, the characters, and `<unk>`.
pub const ARITHMETIC_VOCAB: usize = UNK_ID as usize + 1;

/// The characters of the printable-ASCII tokenizer, in id order from 3: newline, tab, then space
/// to `~`.
pub const TEXT_CHARS: &str =
    "\n\t !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";
/// Vocabulary size of the printable-ASCII tokenizer (its `<unk>` is id `TEXT_VOCAB - 1`).
pub const TEXT_VOCAB: usize = TEXT_CHARS.len() + 4;

/// The chat template of the printable-ASCII tokenizer: `System: …`, `User: …`, `Assistant: …`
/// lines, the prompt ending with `Assistant: `.
pub fn text_chat_template() -> &'static str {
    "{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}Assistant: {% endif %}"
}

/// The character-level tokenizer of the arithmetic task (see the module docs for ids and pipeline).
pub fn arithmetic_tokenizer() -> Tokenizer {
    char_tokenizer(ARITHMETIC_CHARS)
}

/// A character-level tokenizer of printable ASCII (and newline, tab), for file data on a preset
/// model: ids as the arithmetic one's, over [`TEXT_CHARS`].
pub fn text_tokenizer() -> Tokenizer {
    char_tokenizer(TEXT_CHARS)
}

/// A character-level tokenizer: `<bos>`, `<eos>`, `<pad>`, one id per character of `chars`, `<unk>`.
fn char_tokenizer(chars: &str) -> Tokenizer {
    let unk_id = 3 + chars.chars().count() as u32;
    let mut vocab: AHashMap<String, u32> = [(BOS, BOS_ID), (EOS, EOS_ID), (PAD, PAD_ID), (UNK, unk_id)]
        .into_iter()
        .map(|(token, id)| (token.to_string(), id))
        .collect();
    for (id, c) in (3..).zip(chars.chars()) {
        vocab.insert(c.to_string(), id);
    }
    let model = WordLevel::builder().vocab(vocab).unk_token(UNK.to_string()).build().expect("a valid vocabulary");
    // `[\s\S]` matches every character, newline included, in Rust's regex engine and in the
    // Oniguruma of Python's `tokenizers` alike (which rejects `(?s)`); `Isolated` makes each match
    // its own piece.
    let split = Split::new(SplitPattern::Regex(r"[\s\S]".to_string()), SplitDelimiterBehavior::Isolated, false)
        .expect("a valid pattern");
    let bos_first = TemplateProcessing::builder()
        .try_single(format!("{BOS} $A"))
        .and_then(|b| b.try_pair(format!("{BOS} $A $B:1")))
        .expect("a valid template")
        .special_tokens(vec![(BOS, BOS_ID)])
        .build()
        .expect("a valid template");
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(split)).with_post_processor(Some(bos_first)).with_decoder(Some(Fuse::new()));
    let specials = [BOS, EOS, PAD, UNK].map(|t| AddedToken::from(t, true));
    tokenizer.add_special_tokens(&specials);
    tokenizer
}

/// Writes `tokenizer.json` and a `tokenizer_config.json` naming bos/eos (with `add_bos_token:
/// true`, matching the post-processor) into the model directory `dir`, which must exist.
pub fn write_arithmetic_tokenizer(dir: &Path) -> Result<(), DataError> {
    write_char_tokenizer(dir, &arithmetic_tokenizer(), None)
}

/// Writes the printable-ASCII tokenizer ([`text_tokenizer`]) into the model directory `dir`, its
/// `tokenizer_config.json` with [`text_chat_template`] as `chat_template`.
pub fn write_text_tokenizer(dir: &Path) -> Result<(), DataError> {
    write_char_tokenizer(dir, &text_tokenizer(), Some(text_chat_template()))
}

fn write_char_tokenizer(dir: &Path, tokenizer: &Tokenizer, chat_template: Option<&str>) -> Result<(), DataError> {
    let json = tokenizer.to_string(true).map_err(|e| DataError::Tokenizer(e.to_string()))?;
    let mut config = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "unk_token": UNK,
        "add_bos_token": true,
        "add_eos_token": false,
    });
    if let Some(template) = chat_template {
        config["chat_template"] = serde_json::Value::String(template.to_string());
    }
    let config = serde_json::to_string_pretty(&config).expect("JSON of strings and booleans");
    for (name, text) in [("tokenizer.json", json), ("tokenizer_config.json", config)] {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| DataError::Io { path, source })?;
    }
    Ok(())
}
