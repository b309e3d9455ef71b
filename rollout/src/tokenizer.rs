//! `tokenizer.json` through the `tokenizers` crate, with the special tokens the chat format uses
//! (docs/model.md §5.3).
//!
//! A model directory holds `tokenizer.json` (byte-level BPE, the chat markers as added tokens) and,
//! for DeepSeek-V3.2, `tokenizer_config.json` naming `bos_token`/`eos_token` and setting
//! `add_bos_token: false`, `add_eos_token: false`. With that file present, `encode(_, true)` follows
//! transformers' `LlamaTokenizerFast`, which rebuilds its post-processor from those two flags
//! (bos defaults to on, eos to off); without it, `tokenizer.json`'s own post-processor decides.
//!
//! Left out: padding, truncation and batch encoding (the engine packs sequences itself), offsets.
//! Unconfirmed: whether V3.2 marks `<think>`/`</think>` as special tokens. Decode completions with
//! `skip_special = false` before `chat::parse_completion` so the markers survive either way.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The names DeepSeek uses for the sequence markers when no `tokenizer_config.json` says otherwise.
const DEFAULT_BOS: &str = "<｜begin▁of▁sentence｜>";
const DEFAULT_EOS: &str = "<｜end▁of▁sentence｜>";

/// Failures loading or running a tokenizer; file errors name the file.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file is not a valid tokenizer / tokenizer config.
    #[error("parsing {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// A field of `tokenizer_config.json` names a token the vocabulary lacks, or has a bad type.
    #[error("{path}: field `{field}`: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// The field.
        field: String,
        /// What was wrong.
        message: String,
    },
    /// Encoding text failed inside `tokenizers`.
    #[error("encoding: {0}")]
    Encode(String),
    /// An id is outside the vocabulary, or decoding failed inside `tokenizers`.
    #[error("decoding: {0}")]
    Decode(String),
}

/// A loaded tokenizer plus the bos/eos handling from `tokenizer_config.json`.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos_id: Option<i64>,
    eos_id: Option<i64>,
    /// `Some((add_bos, add_eos))` when a `tokenizer_config.json` was read.
    add_flags: Option<(bool, bool)>,
}

impl Tokenizer {
    /// Loads `dir/tokenizer.json` and, when present, `dir/tokenizer_config.json`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let dir = dir.as_ref();
        let path = dir.join("tokenizer.json");
        let bytes = std::fs::read(&path).map_err(|source| TokenizerError::Io { path: path.clone(), source })?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|e| TokenizerError::Parse { path: path.clone(), message: e.to_string() })?;
        let mut tok = Tokenizer {
            bos_id: inner.token_to_id(DEFAULT_BOS).map(i64::from),
            eos_id: inner.token_to_id(DEFAULT_EOS).map(i64::from),
            inner,
            add_flags: None,
        };
        let config = dir.join("tokenizer_config.json");
        if config.exists() {
            tok.apply_config(&config)?;
        }
        Ok(tok)
    }

    /// Reads bos/eos names and the `add_*_token` flags from `tokenizer_config.json`.
    fn apply_config(&mut self, path: &Path) -> Result<(), TokenizerError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| TokenizerError::Io { path: path.to_path_buf(), source })?;
        let config: Value = serde_json::from_str(&text)
            .map_err(|e| TokenizerError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        let bad = |field: &str, message: String| TokenizerError::Config {
            path: path.to_path_buf(),
            field: field.to_string(),
            message,
        };
        for field in ["bos_token", "eos_token"] {
            let Some(name) = special_token_name(&config, field).map_err(|m| bad(field, m))? else {
                continue;
            };
            let id = self.inner.token_to_id(&name).map(i64::from);
            let id = id.ok_or_else(|| bad(field, format!("{name:?} is not in the vocabulary")))?;
            if field == "bos_token" {
                self.bos_id = Some(id);
            } else {
                self.eos_id = Some(id);
            }
        }
        let flag = |field: &str, default: bool| match config.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(bad(field, format!("expected true or false, got {other}"))),
        };
        self.add_flags = Some((flag("add_bos_token", true)?, flag("add_eos_token", false)?));
        Ok(())
    }

    /// Text to ids. Special tokens written in the text (`<｜User｜>`, `<think>`, …) become their
    /// single ids. `add_special` adds bos/eos as the tokenizer config says (nothing for V3.2).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<i64>, TokenizerError> {
        let via_post_processor = add_special && self.add_flags.is_none();
        let encoding =
            self.inner.encode(text, via_post_processor).map_err(|e| TokenizerError::Encode(e.to_string()))?;
        let mut ids: Vec<i64> = encoding.get_ids().iter().map(|&id| i64::from(id)).collect();
        if let (true, Some((add_bos, add_eos))) = (add_special, self.add_flags) {
            if let (true, Some(bos)) = (add_bos, self.bos_id) {
                ids.insert(0, bos);
            }
            if let (true, Some(eos)) = (add_eos, self.eos_id) {
                ids.push(eos);
            }
        }
        Ok(ids)
    }

    /// Ids to text; `skip_special` leaves out tokens marked special in `tokenizer.json`.
    pub fn decode(&self, ids: &[i64], skip_special: bool) -> Result<String, TokenizerError> {
        let ids = ids
            .iter()
            .map(|&id| u32::try_from(id).map_err(|_| TokenizerError::Decode(format!("id {id}"))))
            .collect::<Result<Vec<u32>, _>>()?;
        self.inner.decode(&ids, skip_special).map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    /// The id of one token, e.g. a chat marker such as `<｜Assistant｜>` or `</think>`.
    pub fn token_id(&self, token: &str) -> Option<i64> {
        self.inner.token_to_id(token).map(i64::from)
    }

    /// The beginning-of-sequence id (`<｜begin▁of▁sentence｜>` for DeepSeek).
    pub fn bos_id(&self) -> Option<i64> {
        self.bos_id
    }

    /// The end-of-sequence id (`<｜end▁of▁sentence｜>` for DeepSeek): the default stop token.
    pub fn eos_id(&self) -> Option<i64> {
        self.eos_id
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The wrapped `tokenizers` object, for anything this wrapper does not cover.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// `tokenizer_config.json` writes a token either as a string or as
/// `{"__type": "AddedToken", "content": …}`; a missing or null field is `None`.
fn special_token_name(config: &Value, field: &str) -> Result<Option<String>, String> {
    match config.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Object(o)) => match o.get("content") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            _ => Err("an AddedToken object needs a string `content`".to_string()),
        },
        Some(other) => Err(format!("expected a string or an AddedToken object, got {other}")),
    }
}

/// Streaming detokenisation: feed ids one at a time, get back only the text they add.
///
/// Byte-level BPE splits multi-byte characters across tokens, and decoding a lone piece yields
/// U+FFFD. So the decoder re-decodes a short window (from `prefix_offset`) and emits text only once
/// the window no longer ends in U+FFFD; `read_offset` marks how far text has been emitted. This is
/// the window scheme used by text-generation-inference and vLLM.
#[derive(Debug, Clone, Default)]
pub struct IncrementalDecoder {
    ids: Vec<i64>,
    prefix_offset: usize,
    read_offset: usize,
    skip_special: bool,
}

impl IncrementalDecoder {
    /// A decoder for one sequence; `skip_special` as in [`Tokenizer::decode`].
    pub fn new(skip_special: bool) -> Self {
        IncrementalDecoder { skip_special, ..Self::default() }
    }

    /// Adds one id; returns the new text (empty while a character is still incomplete).
    pub fn push(&mut self, tok: &Tokenizer, id: i64) -> Result<String, TokenizerError> {
        self.ids.push(id);
        let prefix = tok.decode(&self.ids[self.prefix_offset..self.read_offset], self.skip_special)?;
        let full = tok.decode(&self.ids[self.prefix_offset..], self.skip_special)?;
        if full.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        let Some(new_text) = full.get(prefix.len()..).filter(|t| !t.is_empty()) else {
            return Ok(String::new());
        };
        let new_text = new_text.to_string();
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        Ok(new_text)
    }

    /// Text still held back at the end of the sequence (an incomplete character shows as U+FFFD).
    pub fn finish(&mut self, tok: &Tokenizer) -> Result<String, TokenizerError> {
        let prefix = tok.decode(&self.ids[self.prefix_offset..self.read_offset], self.skip_special)?;
        let full = tok.decode(&self.ids[self.prefix_offset..], self.skip_special)?;
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        Ok(full.get(prefix.len()..).unwrap_or_default().to_string())
    }

    /// All ids pushed so far.
    pub fn ids(&self) -> &[i64] {
        &self.ids
    }
}
