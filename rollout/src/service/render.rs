//! Turning an engine [`Sample`] into the pieces both endpoints answer with: per-token text, the
//! completion text (cut before a stop string, as OpenAI does; the token ids keep the token that
//! completed it), the finish reason, and rlvr's record extensions.

use super::delta::final_len;
use crate::engine::{FinishReason, Sample};
use crate::tokenizer::{IncrementalDecoder, Tokenizer};
use serde_json::{json, Map, Value};

/// One sample made readable.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Each token's text (`token_id:N` without a tokenizer); their concatenation is the full text.
    pub pieces: Vec<String>,
    /// The completion text, cut before the first stop string.
    pub text: String,
    /// OpenAI's finish reason (`stop`, `length`) or `abort`.
    pub finish: &'static str,
}

/// The finish reason's name.
pub fn finish_name(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::Abort => "abort",
    }
}

/// Renders `sample`; `skip_special` drops special tokens from the text (completions do, chat
/// keeps them for `chat::parse_completion`).
pub fn render(sample: &Sample, tok: Option<&Tokenizer>, skip_special: bool, stops: &[String]) -> Rendered {
    let finish = finish_name(sample.finish_reason);
    let Some(tok) = tok else {
        let pieces = sample.tokens.iter().map(|t| format!("token_id:{}", t.id)).collect();
        return Rendered { pieces, text: String::new(), finish };
    };
    let mut decoder = IncrementalDecoder::new(skip_special);
    let mut pieces: Vec<String> = sample.tokens.iter().map(|t| decoder.push(tok, t.id).unwrap_or_default()).collect();
    if let (Some(last), Ok(rest)) = (pieces.last_mut(), decoder.finish(tok)) {
        last.push_str(&rest);
    }
    let mut text: String = pieces.concat();
    text.truncate(final_len(&text, sample.finish_reason, stops));
    Rendered { pieces, text, finish }
}

/// Which extensions a request asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extras {
    /// `token_ids`, `prompt_token_ids`, `policy_versions`.
    pub token_ids: bool,
    /// `sampling_mask`.
    pub sampling_mask: bool,
    /// `routing`.
    pub routing: bool,
}

/// Adds the asked-for extensions of `sample` (prompt `prompt`) to a choice object.
pub fn add_extras(choice: &mut Map<String, Value>, sample: &Sample, prompt: &[i64], extras: Extras) {
    if extras.token_ids {
        choice.insert("token_ids".into(), json!(sample.ids()));
        choice.insert("prompt_token_ids".into(), json!(prompt));
        let versions: Vec<u64> = sample.tokens.iter().map(|t| t.version).collect();
        choice.insert("policy_versions".into(), json!(versions));
    }
    if extras.sampling_mask {
        let kept: Vec<&Option<Vec<i64>>> = sample.tokens.iter().map(|t| &t.kept).collect();
        choice.insert("sampling_mask".into(), json!(kept));
    }
    if extras.routing {
        let tokens: Vec<&Option<Vec<Vec<i64>>>> = sample.tokens.iter().map(|t| &t.experts).collect();
        choice.insert("routing".into(), json!({"prompt": sample.prompt_experts, "tokens": tokens}));
    }
}

/// The newest policy version among `samples`' tokens, or `fallback` when none has a token.
pub fn newest_version<'a>(samples: impl IntoIterator<Item = &'a Sample>, fallback: u64) -> u64 {
    samples.into_iter().filter_map(|s| s.versions().map(|v| v.1)).max().unwrap_or(fallback)
}

/// The `system_fingerprint` of a policy version.
pub fn fingerprint(version: u64) -> String {
    format!("rlvr-v{version}")
}

/// The text of token `id` alone (`token_id:N` without a tokenizer), for `top_logprobs`.
pub fn piece_of(tok: Option<&Tokenizer>, id: i64, skip_special: bool) -> String {
    match tok {
        Some(tok) => tok.decode(&[id], skip_special).unwrap_or_default(),
        None => format!("token_id:{id}"),
    }
}

/// The `usage` object.
pub fn usage(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens})
}
