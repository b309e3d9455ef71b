//! Answer extraction: finds the final answer in a completion, as a grader reading it would.
//!
//! Order of preference:
//! 1. `\boxed{}` / `\fbox{}` (nested braces respected, empty boxes skipped): the last one is the
//!    answer, and all of them are kept in [`Extracted::boxes`] so that a gold list `3, 5, 7` can be
//!    matched by `\boxed{3}, \boxed{5}, \boxed{7}`;
//! 2. the last `#### answer` line (GSM8K);
//! 3. the last answer phrase — "answer is ...", "Answer: ...", "Final answer: ...", "Final Answer:
//!    The final answer is 5. I hope it is correct." (the last phrase wins, so this is `5`), a
//!    "Final Answer" heading followed by a line — cut at the end of its sentence, and reduced to
//!    the math span or the lone number in it when it is prose;
//! 4. the last LaTeX math span (`$…$`, `$$…$$`, `\(…\)`, `\[…\]`), unless a standalone number comes
//!    after it and the last-number fallback is on (the last spans are kept in
//!    [`Extracted::boxes`] too, for a gold list written as `$x=-1$, $x=0$ and $x=1$`);
//! 5. if enabled, the last standalone number: a whole token (`1,234`, `1 000`, `-3.5`, `3/4`, `$12`,
//!    `45%`, `x=5`), never digits out of a word (`AZYUK2A`) or out of a larger expression
//!    (`\frac{1+\sqrt{5}}{2}`, `-[0,1)`): when the last token holding digits is an expression, there
//!    is no number to fall back on.
//!
//! Left out: answers given only in prose without a number ("it doubles") are not found unless they
//! follow an answer phrase; `\boxed` inside code blocks is treated like any other; a `$` that opens
//! an amount of money is told from a math span only by what follows it (a digit, then words).

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
    /// Where it came from: `boxed`, `hashes`, `answer_phrase`, `math_span` or `last_number`.
    pub source: &'static str,
    /// Every non-empty boxed answer, in order, when `source` is `boxed`; the last math spans (at
    /// most [`MAX_TRIES`]) when it is `math_span`. A gold list may be answered by several of them.
    pub boxes: Vec<String>,
}

impl Extracted {
    fn new(text: String, source: &'static str) -> Self {
        Extracted { text, source, boxes: Vec::new() }
    }
}

static ANSWER_PHRASE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)answer(?:\s+to\s+[^\n:]{1,40}?)?[*_\s]*(?:is|:|=|：)[*_\s]*(?:is\s*)?:?[ \t]*|final\s+answer[*_#:\s]*\n\s*").unwrap()
});
static NUMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?$|^[-+−]?\.\d+$").unwrap());
static LABELLED_NUMBER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[A-Za-z]=(.+)$").unwrap());
static GLUED_UNIT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(.*\d)(?:cm|mm|km|m|kg|g|mg|ml|l|s|h|min|ft|in|mph)$").unwrap());
static THREE_DIGITS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\d{3}$").unwrap());
static SENTENCE_END: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\.\s|\.$|\n|;\s|\s(?:because|since|so|which)\s").unwrap());

/// Find the answer in `completion`; `last_number` enables the last-number fallback.
pub fn extract(completion: &str, last_number: bool) -> Option<Extracted> {
    let boxes = all_boxed(completion);
    if let Some(last) = boxes.last() {
        return Some(Extracted { text: last.clone(), source: "boxed", boxes });
    }
    if let Some(text) = after_hashes(completion) {
        return Some(Extracted::new(text, "hashes"));
    }
    if let Some(text) = answer_phrase(completion) {
        return Some(Extracted::new(text, "answer_phrase"));
    }
    let mut spans = math_spans(completion);
    let span = spans.last().cloned();
    let number = if last_number { last_clean_number(completion) } else { None };
    match (span, number) {
        (Some((_, span_end)), Some((text, start))) if start >= span_end => Some(Extracted::new(text, "last_number")),
        (Some((body, _)), _) => {
            let first = spans.len().saturating_sub(MAX_TRIES);
            let boxes = spans.drain(first..).map(|(b, _)| b).collect();
            Some(Extracted { text: body, source: "math_span", boxes })
        }
        (None, Some((text, _))) => Some(Extracted::new(text, "last_number")),
        (None, None) => None,
    }
}

/// Every non-empty boxed argument (of the last [`MAX_TRIES`] boxes), in order.
fn all_boxed(text: &str) -> Vec<String> {
    let mut starts: Vec<(usize, usize)> =
        ["\\boxed", "\\fbox"].iter().flat_map(|cmd| text.match_indices(cmd).map(|(i, m)| (i, i + m.len()))).collect();
    starts.sort_unstable();
    // Only the last few: each look scans to its closing brace, so this keeps extraction linear.
    let first = starts.len().saturating_sub(MAX_TRIES);
    let mut found: Vec<(usize, usize, String)> = Vec::new();
    for &(start, end) in &starts[first..] {
        if found.last().is_some_and(|(_, e, _)| start < *e) {
            continue; // a box inside the previous box's argument
        }
        if let Some((arg, len)) = boxed_argument(&text[end..]) {
            found.push((start, end + len, arg));
        }
    }
    found.into_iter().map(|(_, _, arg)| arg).collect()
}

/// The argument following a `\boxed` command name (a braced group or one bare token), and the
/// length of text it spans.
fn boxed_argument(after: &str) -> Option<(String, usize)> {
    if let Some(body) = after.strip_prefix('{') {
        let close = matching_brace(body)?;
        let arg = body[..close].trim();
        return (!arg.is_empty()).then(|| (arg.to_string(), close + 2));
    }
    // `\boxed 5` form: a space, then a token up to whitespace or a math delimiter.
    let rest = after.strip_prefix(' ')?.trim_start();
    let token: String = rest.chars().take_while(|c| !c.is_whitespace() && *c != '$').collect();
    let len = after.len() - rest.len() + token.len();
    (!token.is_empty()).then_some((token, len))
}

/// The rest of the line after the last `####`.
fn after_hashes(text: &str) -> Option<String> {
    let pos = text.rfind("####")?;
    let line = text[pos + 4..].lines().next().unwrap_or("");
    let answer = line.trim().trim_matches('*').trim();
    (!answer.is_empty()).then(|| answer.to_string())
}

/// The answer following the last answer phrase, cut at the end of its sentence.
fn answer_phrase(text: &str) -> Option<String> {
    let found: Vec<_> = ANSWER_PHRASE.find_iter(text).collect();
    found.into_iter().rev().take(MAX_TRIES).find_map(|m| {
        let rest = &text[m.end()..];
        let answer = match math_segment(rest) {
            Some(math) => math,
            None => prose_answer(&cut_sentence(rest)),
        };
        let answer = answer.trim().trim_matches('*').trim();
        (!answer.is_empty()).then(|| answer.to_string())
    })
}

/// An answer sentence reduced to its answer: the math span in it, or its one number when it is
/// prose ("that there are 5 apples"), or the sentence itself.
fn prose_answer(sentence: &str) -> String {
    if let Some((body, _)) = last_math_span(sentence) {
        if sentence.trim_start().starts_with(|c: char| c.is_alphabetic()) {
            return body;
        }
    }
    let words = sentence.split_whitespace().count();
    if words > 3 {
        let numbers = tokens(sentence).into_iter().filter_map(|(t, _)| clean_number(&t)).count();
        if numbers == 1 {
            if let Some((n, _)) = last_clean_number(sentence) {
                return n;
            }
        }
    }
    sentence.to_string()
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

/// The body of the last non-empty math span and the byte offset where the span ends.
fn last_math_span(text: &str) -> Option<(String, usize)> {
    math_spans(text).pop()
}

/// Every non-empty math span: its body and the byte offset where it ends.
fn math_spans(text: &str) -> Vec<(String, usize)> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        let (open, close) = if rest.starts_with("$$") {
            ("$$", "$$")
        } else if rest.starts_with("\\[") {
            ("\\[", "\\]")
        } else if rest.starts_with("\\(") {
            ("\\(", "\\)")
        } else if rest.starts_with('$') && (i == 0 || bytes[i - 1] != b'\\') {
            ("$", "$")
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        };
        let body_start = i + open.len();
        let Some(len) = find_close(&text[body_start..], close) else {
            i += open.len();
            continue;
        };
        let body = &text[body_start..body_start + len];
        if open == "$" && (body.contains('\n') || looks_like_money(body)) {
            i += 1;
            continue;
        }
        let end = body_start + len + close.len();
        if !body.trim().is_empty() {
            found.push((body.trim().to_string(), end));
        }
        i = end;
    }
    found
}

/// Byte length up to the closing delimiter (an unescaped `$`, or `close`).
fn find_close(s: &str, close: &str) -> Option<usize> {
    if close != "$" {
        return s.find(close);
    }
    let bytes = s.as_bytes();
    (0..bytes.len()).find(|&j| bytes[j] == b'$' && (j == 0 || bytes[j - 1] != b'\\'))
}

/// `$5 and $` : an amount of money, not math (a digit, then a word of three letters or more).
fn looks_like_money(body: &str) -> bool {
    body.starts_with(|c: char| c.is_ascii_digit())
        && body.split_whitespace().skip(1).any(|w| w.len() >= 3 && w.chars().all(|c| c.is_alphabetic()))
}

/// Whitespace-separated tokens with their byte offsets; a three-digit token after a short number
/// is joined to it (`1 000`).
fn tokens(text: &str) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices().chain(std::iter::once((text.len(), ' '))) {
        match (c.is_whitespace(), start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                let word = &text[s..i];
                let trimmed = word.trim_end_matches(['.', ',', ';', ':', '!', '?', ')', '"', '\'']);
                let joins = THREE_DIGITS.is_match(trimmed)
                    && out.last().is_some_and(|(prev, p)| {
                        text[p + prev.len()..s].chars().all(|c| c == ' ')
                            && prev.len() <= 3
                            && prev.chars().all(|c| c.is_ascii_digit())
                    });
                if joins {
                    let last = out.last_mut().expect("checked");
                    last.0 = text[last.1..i].to_string();
                } else {
                    out.push((word.to_string(), s));
                }
                start = None;
            }
            _ => {}
        }
    }
    out
}

/// A token that is one number, possibly in quotes, parentheses, bold, with a currency or percent
/// sign, a glued unit, a trailing full stop, or a one-letter label (`x=5`).
fn clean_number(token: &str) -> Option<String> {
    let t = token
        .trim_start_matches(['(', '"', '\'', '*', '$', '€', '£'])
        .trim_end_matches(['.', ',', ';', ':', '!', '?', ')', '"', '\'', '*', '%', '$']);
    let t = t.strip_prefix('$').unwrap_or(t);
    let t = LABELLED_NUMBER.captures(t).map_or(t, |c| c.get(1).expect("group").as_str());
    let t = GLUED_UNIT.captures(t).map_or(t, |c| c.get(1).expect("group").as_str());
    if NUMBER.is_match(t) {
        // A percent sign stays: `50%` is read with its sign by the normaliser.
        let percent = if token.trim_end_matches(['.', ',', ';', ':', '!', '?', ')', '"', '\'', '*']).ends_with('%') {
            "%"
        } else {
            ""
        };
        return Some(format!("{}{percent}", t.replace('−', "-")));
    }
    let joined = t.replace(' ', "");
    (t.contains(' ') && NUMBER.is_match(&joined)).then_some(joined)
}

/// The last standalone number and its offset; `None` when the last token holding a digit is part
/// of an expression (so no digit is taken out of it) or there is none.
fn last_clean_number(text: &str) -> Option<(String, usize)> {
    for (token, offset) in tokens(text).into_iter().rev() {
        if !token.contains(|c: char| c.is_ascii_digit()) {
            continue;
        }
        if let Some(n) = clean_number(&token) {
            return Some((n, offset));
        }
        let expression = token
            .contains(['\\', '^', '_', '{', '}', '[', ']', '=', '+', '*', '/', '<', '>', '|', '(', ','])
            || token.trim_start_matches(['(', '$']).starts_with('-');
        if expression {
            return None;
        }
        // A word with digits in it (`AZYUK2A`, `3rd`, `x2`): not a number; look further back.
    }
    None
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
        let all = extract("\\boxed{3}, \\boxed{5}, \\boxed{7}", true).unwrap();
        assert_eq!(all.boxes, vec!["3", "5", "7"]);
        assert_eq!(extract("\\boxed{\\boxed{2}}", true).unwrap().boxes, vec!["\\boxed{2}"]);
    }

    #[test]
    fn unbalanced_or_empty_box_falls_back() {
        assert_eq!(got("\\boxed{3} then \\boxed{4"), Some(("3".into(), "boxed")));
        assert_eq!(got("\\boxed{} The answer is 9."), Some(("9".into(), "answer_phrase")));
        assert_eq!(got("\\boxed{ }"), None);
    }

    #[test]
    fn hashes_phrases_and_numbers() {
        assert_eq!(got("48/2 = 24\n#### 24"), Some(("24".into(), "hashes")));
        assert_eq!(got("So the answer is $\\frac{3}{4}$."), Some(("\\frac{3}{4}".into(), "answer_phrase")));
        assert_eq!(got("Final answer: 12 apples. Done"), Some(("12 apples".into(), "answer_phrase")));
        assert_eq!(got("**Answer:** 3.5"), Some(("3.5".into(), "answer_phrase")));
        assert_eq!(
            got("Final Answer: The final answer is 5. I hope it is correct."),
            Some(("5".into(), "answer_phrase"))
        );
        assert_eq!(got("The answer is that there are 12 apples."), Some(("12".into(), "answer_phrase")));
        assert_eq!(got("We get 3, then 4.5 in total."), Some(("4.5".into(), "last_number")));
        assert_eq!(got("no digits"), None);
        assert_eq!(extract("We get 3", false), None);
    }

    #[test]
    fn math_spans_before_numbers() {
        assert_eq!(got("So the ratio is $\\frac{10}{9}$."), Some(("\\frac{10}{9}".into(), "math_span")));
        assert_eq!(got("Thus \\(x \\geq 5\\)"), Some(("x \\geq 5".into(), "math_span")));
        assert_eq!(got("We get $$f(y) = y$$"), Some(("f(y) = y".into(), "math_span")));
        assert_eq!(got("so $a=2$ and $b=5$, the sum is 7."), Some(("7".into(), "last_number")));
        assert_eq!(got("It costs $5 and we pay $\\frac12$"), Some(("\\frac12".into(), "math_span")));
    }

    #[test]
    fn numbers_are_whole_tokens() {
        assert_eq!(got("The total is 1 000."), Some(("1000".into(), "last_number")));
        assert_eq!(got("It was 1,234,567 people"), Some(("1,234,567".into(), "last_number")));
        assert_eq!(got("The code is AZYUK2A"), None);
        assert_eq!(got("it is 3 and then AZYUK2A"), Some(("3".into(), "last_number")));
        assert_eq!(got("so x = \\frac{1+\\sqrt{5}}{2}"), None);
        assert_eq!(got("the set -[0,1)"), None);
        assert_eq!(got("we get x=5."), Some(("5".into(), "last_number")));
        assert_eq!(got("costs $12."), Some(("12".into(), "last_number")));
    }
}
