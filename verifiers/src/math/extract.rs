//! Answer extraction: finds the final answer in a completion.
//!
//! Order of preference: the last `\boxed{}` / `\fbox{}` (nested braces respected), the last
//! `#### answer` line (GSM8K), the last "answer is ..." / "Answer: ..." / "Final answer: ..."
//! phrase, and, if enabled, the last number in the text.
//!
//! Left out: answers given only in prose without a number ("it doubles") are not found unless they
//! follow an answer phrase; `\boxed` inside code blocks is treated like any other.

use super::normalize::matching_brace;
use regex::Regex;
use std::sync::LazyLock;

/// How many of the last `\boxed` / answer-phrase occurrences are tried before giving up.
const MAX_TRIES: usize = 32;

/// An answer found in a completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// The answer text as written (not yet normalised).
    pub text: String,
    /// Where it came from: `boxed`, `hashes`, `answer_phrase` or `last_number`.
    pub source: &'static str,
}

static ANSWER_PHRASE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)answer(?:\s+to\s+[^\n:]{1,40}?)?[*_\s]*(?:is|:|=|：)[*_\s]*(?:is\s*)?:?[ \t]*").unwrap()
});
static NUMBER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?|-?\.\d+").unwrap());
static SENTENCE_END: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\.\s|\.$|\n|;\s|\s(?:because|since|so|which)\s").unwrap());

/// Find the answer in `completion`; `last_number` enables the last-number fallback.
pub fn extract(completion: &str, last_number: bool) -> Option<Extracted> {
    if let Some(text) = last_boxed(completion) {
        return Some(Extracted { text, source: "boxed" });
    }
    if let Some(text) = after_hashes(completion) {
        return Some(Extracted { text, source: "hashes" });
    }
    if let Some(text) = answer_phrase(completion) {
        return Some(Extracted { text, source: "answer_phrase" });
    }
    if last_number {
        let m = NUMBER.find_iter(completion).last()?;
        return Some(Extracted { text: m.as_str().to_string(), source: "last_number" });
    }
    None
}

/// The argument of the last non-empty `\boxed{...}` or `\fbox{...}` (also `\boxed 5`).
pub fn last_boxed(text: &str) -> Option<String> {
    let mut starts: Vec<(usize, usize)> =
        ["\\boxed", "\\fbox"].iter().flat_map(|cmd| text.match_indices(cmd).map(|(i, m)| (i, i + m.len()))).collect();
    starts.sort_unstable();
    // Only the last few: each look scans to its closing brace, so this keeps extraction linear.
    starts.iter().rev().take(MAX_TRIES).find_map(|&(_, end)| boxed_argument(&text[end..]))
}

/// The argument following a `\boxed` command name: a braced group or one bare token.
fn boxed_argument(after: &str) -> Option<String> {
    if let Some(body) = after.strip_prefix('{') {
        let close = matching_brace(body)?;
        let arg = body[..close].trim();
        return (!arg.is_empty()).then(|| arg.to_string());
    }
    // `\boxed 5` form: a space, then a token up to whitespace or a math delimiter.
    let rest = after.strip_prefix(' ')?.trim_start();
    let token: String = rest.chars().take_while(|c| !c.is_whitespace() && *c != '$').collect();
    (!token.is_empty()).then_some(token)
}

/// The rest of the line after the last `####`.
fn after_hashes(text: &str) -> Option<String> {
    let pos = text.rfind("####")?;
    let line = text[pos + 4..].lines().next().unwrap_or("");
    let answer = line.trim().trim_matches('*').trim();
    (!answer.is_empty()).then(|| answer.to_string())
}

/// The answer following the last "answer is" / "answer:" phrase, cut at the end of its sentence.
fn answer_phrase(text: &str) -> Option<String> {
    let found: Vec<_> = ANSWER_PHRASE.find_iter(text).collect();
    found.into_iter().rev().take(MAX_TRIES).find_map(|m| {
        let rest = &text[m.end()..];
        let answer = math_segment(rest).unwrap_or_else(|| cut_sentence(rest));
        let answer = answer.trim().trim_matches('*').trim();
        (!answer.is_empty()).then(|| answer.to_string())
    })
}

/// If `rest` opens with `$...$` or `\(...\)`, the math inside it.
fn math_segment(rest: &str) -> Option<String> {
    for (open, close) in [("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")] {
        if let Some(body) = rest.strip_prefix(open) {
            let end = body.find(close)?;
            return Some(body[..end].to_string());
        }
    }
    None
}

/// The text up to the end of the first sentence (a full stop before a space, a newline, ...).
fn cut_sentence(rest: &str) -> String {
    let end = SENTENCE_END.find(rest).map_or(rest.len(), |m| m.start());
    rest[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn got(completion: &str) -> Option<(String, &'static str)> {
        extract(completion, true).map(|e| (e.text, e.source))
    }

    #[test]
    fn boxed_nested_and_last_wins() {
        let c = "First \\boxed{1}, then \\boxed{\\frac{\\sqrt{2}}{2}} done.";
        assert_eq!(got(c), Some(("\\frac{\\sqrt{2}}{2}".into(), "boxed")));
        assert_eq!(got("\\fbox{7} and \\boxed{8}"), Some(("8".into(), "boxed")));
        assert_eq!(got("\\boxed{8} and \\fbox{7}"), Some(("7".into(), "boxed")));
        assert_eq!(got("so $\\boxed 5$."), Some(("5".into(), "boxed")));
        assert_eq!(got("\\boxed{\\{1,2\\}}"), Some(("\\{1,2\\}".into(), "boxed")));
    }

    #[test]
    fn unbalanced_or_empty_box_falls_back() {
        assert_eq!(got("\\boxed{3} then \\boxed{4"), Some(("3".into(), "boxed")));
        assert_eq!(got("\\boxed{} The answer is 9."), Some(("9".into(), "answer_phrase")));
    }

    #[test]
    fn hashes_phrases_and_numbers() {
        assert_eq!(got("48/2 = 24\n#### 24"), Some(("24".into(), "hashes")));
        assert_eq!(got("So the answer is $\\frac{3}{4}$."), Some(("\\frac{3}{4}".into(), "answer_phrase")));
        assert_eq!(got("Final answer: 12 apples. Done"), Some(("12 apples".into(), "answer_phrase")));
        assert_eq!(got("**Answer:** 3.5"), Some(("3.5".into(), "answer_phrase")));
        assert_eq!(got("We get 3, then 4.5 in total."), Some(("4.5".into(), "last_number")));
        assert_eq!(got("no digits"), None);
        assert_eq!(extract("We get 3", false), None);
    }
}
