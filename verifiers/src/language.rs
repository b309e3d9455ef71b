//! Language consistency reward: the share of a completion written in the target language
//! (DeepSeek-R1 §2.3.4 and DeepSeek-V3.2's RL stage reward a chain of thought that stays in the
//! prompt's language).
//!
//! What is counted: the completion (its reasoning before `close`, its answer after it, or both, as
//! `scope` says) less what is not language: fenced and inline code, LaTeX/math spans (`$…$`,
//! `$$…$$`, `\(…\)`, `\[…\]`, `\begin{…}…\end{…}`), LaTeX command names, tags such as `<think>`,
//! digits, punctuation, symbols and single letters (variables such as the `x` in "设 x 为…").
//! A math span counts only when it is closed; a code fence left open runs to the end (a completion
//! cut off inside its code). What was left out is in `detail.excluded` (spans of code, of math, and
//! their characters): prose hidden in a code block or a formula is not counted, which a policy
//! could learn to exploit, so watch `excluded.chars` in the metrics.
//! The rest is cut into clauses (at `. ! ? ; : ,`, their CJK forms and line breaks) and words: a
//! word is a run of letters of one script, except in scripts written without spaces (Han, kana,
//! Thai, Khmer, Myanmar), where each character counts as one word.
//!
//! Whose word it is: a script used by one language decides it (Hangul → Korean, Greek → Greek,
//! Thai → Thai, kana → Japanese; Han → Japanese in a clause with kana, or in a text whose Han and
//! kana are at least a fifth kana; Chinese otherwise). In a script shared by several languages
//! (Latin, Cyrillic, Arabic, Devanagari, Hebrew) that the target is written in, each clause's
//! words of that script are identified with `whatlang` when there are at least `min_words` of
//! them (a sentence of several clauses in one call when `whatlang` is sure of it, confidence
//! ≥ 0.9). A guess other than the target that is nearly tied with it counts as the target: when
//! the guess's confidence (`whatlang`'s margin over its next guess) is below `min_confidence` and,
//! put head to head with the target alone, the target wins or the margin stays below
//! `min_confidence`. Close relatives (Dutch and Afrikaans; Russian, Bulgarian and Ukrainian) come
//! out so on short clauses. Shorter runs take the language that covers most words of that
//! script elsewhere in the same text, or, when no clause was long enough, that of all of its
//! words of that script together; fewer than `min_words` such words in all count as the target's
//! (too little to tell). A shared script the target is not written in holds no target words: its
//! words are identified once, all together, for the breakdown in `detail.languages` only.
//!
//! `share = words in the target language / words counted`; the reward is that share
//! (`mode = "share"`) or 1 when it reaches `threshold` and 0 below (`mode = "threshold"`). The
//! outcome is `Correct` at or above `threshold`, `Incorrect` below. A part with nothing to count
//! (an answer that is only a formula) is vacuously consistent: reward 1, `Correct`, `words = 0`.
//! `scope = "answer"` on a completion without `close` is `NoAnswer` with reward 0.
//!
//! The target is a fixed language (ISO 639-1 such as `"en"`, `"zh"`, or ISO 639-3 such as `"eng"`)
//! or `"auto"`: the language with the most words in the task's `prompt`, measured the same way.

use crate::{Outcome, Task, Verdict, Verifier, VerifyError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use whatlang::{Detector, Lang};

/// Which part of the completion is measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LanguageScope {
    /// The whole completion, reasoning and answer.
    #[default]
    All,
    /// The reasoning: the text before `close` (the whole completion when it has no `close`).
    Reasoning,
    /// The answer: the text after `close`.
    Answer,
}

/// How the share becomes a reward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LanguageMode {
    /// The reward is the share itself, in [0, 1].
    #[default]
    Share,
    /// The reward is 1 when the share reaches `threshold`, else 0.
    Threshold,
}

/// Settings of the language consistency reward (`kind = "language"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LanguageConfig {
    /// `"auto"` (the prompt's language) or a language code, ISO 639-1 (`"en"`) or 639-3 (`"eng"`).
    pub target: String,
    /// Part of the completion measured.
    pub scope: LanguageScope,
    /// Share as the reward, or a threshold on it.
    pub mode: LanguageMode,
    /// The share at and above which the outcome is `Correct` (and, in threshold mode, the reward 1).
    pub threshold: f64,
    /// Tag that ends the reasoning.
    pub close: String,
    /// Fewest words of a shared script in a clause for the clause to be identified on its own.
    pub min_words: usize,
    /// Confidence (`whatlang`'s margin, in [0, 1]) below which a clause identified as another
    /// language than the target is put head to head with the target, and within which of each
    /// other the two count as tied (the clause then counts as the target's).
    pub min_confidence: f64,
    /// Languages `whatlang` may answer for shared scripts (codes as in `target`); empty: all it
    /// knows (70). The target is always allowed.
    pub candidates: Vec<String>,
    /// Name used in metrics; `"language"` by default (two instances, one per scope, need two names).
    pub name: String,
}

impl Default for LanguageConfig {
    fn default() -> Self {
        LanguageConfig {
            target: "auto".into(),
            scope: LanguageScope::All,
            mode: LanguageMode::Share,
            threshold: 0.9,
            close: "</think>".into(),
            min_words: 3,
            min_confidence: 0.5,
            candidates: Vec::new(),
            name: "language".into(),
        }
    }
}

/// ISO 639-1 codes of the languages `whatlang` knows, paired with its ISO 639-3 codes.
const ISO_639_1: &[(&str, &str)] = &[
    ("af", "afr"),
    ("ak", "aka"),
    ("am", "amh"),
    ("ar", "ara"),
    ("az", "aze"),
    ("be", "bel"),
    ("bg", "bul"),
    ("bn", "ben"),
    ("ca", "cat"),
    ("cs", "ces"),
    ("cy", "cym"),
    ("da", "dan"),
    ("de", "deu"),
    ("el", "ell"),
    ("en", "eng"),
    ("eo", "epo"),
    ("es", "spa"),
    ("et", "est"),
    ("fa", "pes"),
    ("fi", "fin"),
    ("fr", "fra"),
    ("gu", "guj"),
    ("he", "heb"),
    ("hi", "hin"),
    ("hr", "hrv"),
    ("hu", "hun"),
    ("hy", "hye"),
    ("id", "ind"),
    ("it", "ita"),
    ("ja", "jpn"),
    ("jv", "jav"),
    ("ka", "kat"),
    ("km", "khm"),
    ("kn", "kan"),
    ("ko", "kor"),
    ("la", "lat"),
    ("lt", "lit"),
    ("lv", "lav"),
    ("mk", "mkd"),
    ("ml", "mal"),
    ("mr", "mar"),
    ("my", "mya"),
    ("nb", "nob"),
    ("ne", "nep"),
    ("nl", "nld"),
    ("no", "nob"),
    ("or", "ori"),
    ("pa", "pan"),
    ("pl", "pol"),
    ("pt", "por"),
    ("ro", "ron"),
    ("ru", "rus"),
    ("si", "sin"),
    ("sk", "slk"),
    ("sl", "slv"),
    ("sn", "sna"),
    ("sr", "srp"),
    ("sv", "swe"),
    ("ta", "tam"),
    ("te", "tel"),
    ("th", "tha"),
    ("tk", "tuk"),
    ("tl", "tgl"),
    ("tr", "tur"),
    ("uk", "ukr"),
    ("ur", "urd"),
    ("uz", "uzb"),
    ("vi", "vie"),
    ("yi", "yid"),
    ("zh", "cmn"),
    ("zu", "zul"),
];

/// The language a code names: ISO 639-1 or 639-3, any case, a region or script suffix
/// (`zh-CN`, `pt_BR`, `zh-Hant`) ignored; `zho` and `chi` are read as Mandarin (`cmn`).
pub fn parse_language(code: &str) -> Option<Lang> {
    let base = code.trim().split(['-', '_']).next().unwrap_or("").to_ascii_lowercase();
    let three = match base.len() {
        2 => ISO_639_1.iter().find(|(two, _)| *two == base).map(|(_, three)| *three)?,
        3 if base == "zho" || base == "chi" => "cmn",
        3 => base.as_str(),
        _ => return None,
    };
    Lang::from_code(three)
}

/// Writing systems told apart by character ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Script {
    Latin,
    Greek,
    Cyrillic,
    Armenian,
    Hebrew,
    Arabic,
    Devanagari,
    Bengali,
    Gurmukhi,
    Gujarati,
    Oriya,
    Tamil,
    Telugu,
    Kannada,
    Malayalam,
    Sinhala,
    Thai,
    Myanmar,
    Georgian,
    Ethiopic,
    Khmer,
    Hangul,
    Hiragana,
    Katakana,
    Han,
    Other,
}

impl Script {
    /// Scripts written without spaces between words: each character is a word.
    fn per_char(self) -> bool {
        matches!(
            self,
            Script::Han | Script::Hiragana | Script::Katakana | Script::Thai | Script::Khmer | Script::Myanmar
        )
    }

    /// Scripts whose marks (vowel signs, viramas, tone marks) are part of the letter run even where
    /// Unicode does not call them alphabetic.
    fn has_marks(self) -> bool {
        matches!(
            self,
            Script::Hebrew
                | Script::Arabic
                | Script::Devanagari
                | Script::Bengali
                | Script::Gurmukhi
                | Script::Gujarati
                | Script::Oriya
                | Script::Tamil
                | Script::Telugu
                | Script::Kannada
                | Script::Malayalam
                | Script::Sinhala
                | Script::Thai
                | Script::Myanmar
                | Script::Khmer
        )
    }

    /// The one language written in this script, for scripts that have one.
    fn sole_language(self) -> Option<Lang> {
        Some(match self {
            Script::Greek => Lang::Ell,
            Script::Armenian => Lang::Hye,
            Script::Bengali => Lang::Ben,
            Script::Gurmukhi => Lang::Pan,
            Script::Gujarati => Lang::Guj,
            Script::Oriya => Lang::Ori,
            Script::Tamil => Lang::Tam,
            Script::Telugu => Lang::Tel,
            Script::Kannada => Lang::Kan,
            Script::Malayalam => Lang::Mal,
            Script::Sinhala => Lang::Sin,
            Script::Thai => Lang::Tha,
            Script::Myanmar => Lang::Mya,
            Script::Georgian => Lang::Kat,
            Script::Ethiopic => Lang::Amh,
            Script::Khmer => Lang::Khm,
            Script::Hangul => Lang::Kor,
            Script::Hiragana | Script::Katakana => Lang::Jpn,
            _ => return None,
        })
    }

    /// Scripts shared by several languages, told apart by `whatlang`.
    fn shared(self) -> bool {
        matches!(self, Script::Latin | Script::Cyrillic | Script::Arabic | Script::Devanagari | Script::Hebrew)
    }

    /// The script a language is written in (Japanese: kana; Chinese: Han).
    fn of_language(lang: Lang) -> Script {
        match lang {
            Lang::Rus | Lang::Ukr | Lang::Srp | Lang::Bel | Lang::Bul | Lang::Mkd => Script::Cyrillic,
            Lang::Ara | Lang::Urd | Lang::Pes => Script::Arabic,
            Lang::Hin | Lang::Mar | Lang::Nep => Script::Devanagari,
            Lang::Heb | Lang::Yid => Script::Hebrew,
            Lang::Cmn => Script::Han,
            Lang::Jpn => Script::Hiragana,
            Lang::Ell => Script::Greek,
            Lang::Hye => Script::Armenian,
            Lang::Ben => Script::Bengali,
            Lang::Pan => Script::Gurmukhi,
            Lang::Guj => Script::Gujarati,
            Lang::Ori => Script::Oriya,
            Lang::Tam => Script::Tamil,
            Lang::Tel => Script::Telugu,
            Lang::Kan => Script::Kannada,
            Lang::Mal => Script::Malayalam,
            Lang::Sin => Script::Sinhala,
            Lang::Tha => Script::Thai,
            Lang::Mya => Script::Myanmar,
            Lang::Kat => Script::Georgian,
            Lang::Amh => Script::Ethiopic,
            Lang::Khm => Script::Khmer,
            Lang::Kor => Script::Hangul,
            _ => Script::Latin,
        }
    }
}

/// The script of `c` when `c` belongs to a word, `None` for digits, punctuation, symbols, space.
fn script_of(c: char) -> Option<Script> {
    let u = c as u32;
    if c.is_ascii() {
        return c.is_ascii_alphabetic().then_some(Script::Latin);
    }
    let script = match u {
        0x00C0..=0x02AF | 0x1E00..=0x1EFF | 0x2C60..=0x2C7F | 0xA720..=0xA7FF | 0xFF21..=0xFF3A | 0xFF41..=0xFF5A => {
            Script::Latin
        }
        0x00AA | 0x00BA => Script::Latin,
        0x0370..=0x03FF | 0x1F00..=0x1FFF => Script::Greek,
        0x0400..=0x052F | 0x1C80..=0x1C8F | 0x2DE0..=0x2DFF | 0xA640..=0xA69F => Script::Cyrillic,
        0x0530..=0x058F => Script::Armenian,
        0x0590..=0x05FF | 0xFB1D..=0xFB4F => Script::Hebrew,
        0x0600..=0x06FF | 0x0750..=0x077F | 0x08A0..=0x08FF | 0xFB50..=0xFDFF | 0xFE70..=0xFEFF => Script::Arabic,
        0x0900..=0x097F | 0xA8E0..=0xA8FF => Script::Devanagari,
        0x0980..=0x09FF => Script::Bengali,
        0x0A00..=0x0A7F => Script::Gurmukhi,
        0x0A80..=0x0AFF => Script::Gujarati,
        0x0B00..=0x0B7F => Script::Oriya,
        0x0B80..=0x0BFF => Script::Tamil,
        0x0C00..=0x0C7F => Script::Telugu,
        0x0C80..=0x0CFF => Script::Kannada,
        0x0D00..=0x0D7F => Script::Malayalam,
        0x0D80..=0x0DFF => Script::Sinhala,
        0x0E00..=0x0E7F => Script::Thai,
        0x1000..=0x109F => Script::Myanmar,
        0x10A0..=0x10FF | 0x1C90..=0x1CBF | 0x2D00..=0x2D2F => Script::Georgian,
        0x1100..=0x11FF | 0x3130..=0x318F | 0xA960..=0xA97F | 0xAC00..=0xD7FF => Script::Hangul,
        0x1200..=0x139F | 0x2D80..=0x2DDF => Script::Ethiopic,
        0x1780..=0x17FF => Script::Khmer,
        0x3040..=0x309F => Script::Hiragana,
        0x30A0..=0x30FF | 0x31F0..=0x31FF | 0xFF66..=0xFF9F => Script::Katakana,
        0x3005 | 0x3007 | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x3134F => Script::Han,
        _ => Script::Other,
    };
    let letter = c.is_alphabetic()
        || (script.has_marks()
            && !c.is_numeric()
            && !c.is_whitespace()
            && !is_sentence_end(c)
            && !is_clause_end(c)
            && !is_mark_punct(c));
    letter.then_some(script)
}

/// Characters that end a sentence.
fn is_sentence_end(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | ';' | '\n' | '。' | '！' | '？' | '；' | '…' | '।' | '॥' | '؟' | '۔' | '։' | '።')
}

/// Characters that end a clause inside a sentence.
fn is_clause_end(c: char) -> bool {
    matches!(c, ',' | ':' | '，' | '：' | '、' | '\u{060C}')
}

/// Punctuation inside the blocks of scripts with marks (Arabic comma, Thai signs, ...).
fn is_mark_punct(c: char) -> bool {
    matches!(
        c,
        '\u{060C}' | '\u{061B}' | '\u{066A}'
            ..='\u{066D}'
                | '\u{0E3F}'
                | '\u{0E4F}'
                | '\u{0E5A}'
                | '\u{0E5B}'
                | '\u{05BE}'
                | '\u{05C0}'
                | '\u{05C3}'
                | '\u{05F3}'
                | '\u{05F4}'
    )
}

/// Spans left out of the count, by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Excluded {
    code: usize,
    math: usize,
    /// Characters inside the excluded spans.
    chars: usize,
}

/// Position just past the first `needle` at or after `from`, or `None`.
fn find_after(text: &str, from: usize, needle: &str) -> Option<usize> {
    text[from..].find(needle).map(|at| from + at + needle.len())
}

/// Whether byte `i` starts a line, allowing up to three spaces of indent before it.
fn at_line_start(bytes: &[u8], i: usize) -> bool {
    let mut j = i;
    let mut spaces = 0;
    while j > 0 && bytes[j - 1] == b' ' && spaces < 4 {
        j -= 1;
        spaces += 1;
    }
    spaces <= 3 && (j == 0 || bytes[j - 1] == b'\n')
}

/// End of the fenced block opened by `run` fence characters `fence` at `i`: just past the closing
/// fence line, or the end of the text when the block is not closed (a truncated completion).
fn fence_end(text: &str, i: usize, fence: u8, run: usize) -> usize {
    // The opening line (with its info string) belongs to the block.
    let mut line = match text[i..].find('\n') {
        Some(at) => i + at + 1,
        None => return text.len(),
    };
    while line < text.len() {
        let end = text[line..].find('\n').map_or(text.len(), |at| line + at);
        let trimmed = text[line..end].trim_start_matches(' ');
        let indent = (end - line) - trimmed.len();
        let closing = trimmed.bytes().take_while(|&b| b == fence).count();
        if indent <= 3 && closing >= run && trimmed[closing..].trim().is_empty() {
            return (end + 1).min(text.len());
        }
        line = end + 1;
    }
    text.len()
}

/// End of an inline `$…$` opened at `i`, by Pandoc's rule: the opening `$` is followed by a
/// non-space, the closing one preceded by a non-space and not followed by a digit, within the
/// paragraph. `None` when there is no such closing `$` (a price, a lone dollar).
fn inline_math_end(text: &str, i: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let next = *bytes.get(i + 1)?;
    if next.is_ascii_whitespace() {
        return None;
    }
    let mut j = i + 1;
    while j < bytes.len() {
        match bytes[j] {
            b'\\' => j += 2,
            b'\n' if bytes.get(j + 1) == Some(&b'\n') => return None,
            b'$' if !bytes[j - 1].is_ascii_whitespace() && !bytes.get(j + 1).is_some_and(u8::is_ascii_digit) => {
                return Some(j + 1)
            }
            _ => j += 1,
        }
    }
    None
}

/// End of a tag at `i` (`<think>`, `</answer>`, `<|im_end|>`, `<｜User｜>`), or `None`.
fn tag_end(text: &str, i: usize) -> Option<usize> {
    let rest = &text[i..];
    for (open, close) in [("<|", "|>"), ("<｜", "｜>")] {
        if let Some(inner) = rest.strip_prefix(open) {
            let end = inner.find(close)?;
            return (end <= 64 && !inner[..end].contains('\n')).then(|| i + open.len() + end + close.len());
        }
    }
    let body = rest.strip_prefix("</").or_else(|| rest.strip_prefix('<'))?;
    let name = body.bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-').count();
    let starts_alpha = body.as_bytes().first().is_some_and(u8::is_ascii_alphabetic);
    (starts_alpha && name <= 32 && body.as_bytes().get(name) == Some(&b'>'))
        .then(|| i + (rest.len() - body.len()) + name + 1)
}

/// `text` with code, math, LaTeX commands and tags blanked out, and how many spans went.
fn strip_non_language(text: &str) -> (String, Excluded) {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut excluded = Excluded::default();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let skip_to = match b {
            b'`' | b'~' => {
                let run = bytes[i..].iter().take_while(|&&c| c == b).count();
                if run >= 3 && at_line_start(bytes, i) {
                    // An unclosed fence runs to the end: a completion cut off inside its code.
                    let end = fence_end(text, i, b, run);
                    excluded.code += 1;
                    excluded.chars += text[i..end].chars().count();
                    out.push('\n');
                    Some(end)
                } else if b == b'`' {
                    // Inline code: up to the next run of exactly as many backticks.
                    let mut j = i + run;
                    let mut end = None;
                    while let Some(at) = text[j..].find('`') {
                        let start = j + at;
                        let len = bytes[start..].iter().take_while(|&&c| c == b'`').count();
                        if len == run {
                            end = Some(start + len);
                            break;
                        }
                        j = start + len;
                    }
                    if let Some(end) = end {
                        excluded.code += 1;
                        excluded.chars += text[i..end].chars().count();
                        out.push(' ');
                    }
                    Some(end.unwrap_or(i + run))
                } else {
                    Some(i + run)
                }
            }
            b'$' => {
                let double = bytes.get(i + 1) == Some(&b'$');
                let end = if double { find_after(text, i + 2, "$$") } else { inline_math_end(text, i) };
                if let Some(end) = end {
                    excluded.math += 1;
                    excluded.chars += text[i..end].chars().count();
                    out.push(' ');
                }
                // An unclosed `$$` is not math (else a `$$` would hide all the prose after it).
                Some(end.unwrap_or(i + if double { 2 } else { 1 }))
            }
            b'\\' => {
                let rest = &text[i + 1..];
                let close = match rest.as_bytes().first() {
                    Some(b'[') => Some("\\]".to_string()),
                    Some(b'(') => Some("\\)".to_string()),
                    _ => rest.strip_prefix("begin{").and_then(|r| r.find('}').map(|e| format!("\\end{{{}}}", &r[..e]))),
                };
                // Only a closed span is math (else an opening delimiter would hide all the prose
                // after it).
                match close.and_then(|close| find_after(text, i + 2, &close)) {
                    Some(end) => {
                        excluded.math += 1;
                        excluded.chars += text[i..end].chars().count();
                        out.push(' ');
                        Some(end)
                    }
                    None => {
                        // A command name (`\frac`, `\boxed`) is not prose; its arguments stay.
                        let name = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
                        out.push(' ');
                        Some(i + 1 + name.max(1).min(rest.len()))
                    }
                }
            }
            b'<' => tag_end(text, i).inspect(|_| out.push(' ')),
            _ => None,
        };
        match skip_to {
            Some(end) => i = end.max(i + 1).min(bytes.len()),
            None => {
                let c = text[i..].chars().next().expect("i is on a char boundary");
                out.push(c);
                i += c.len_utf8();
            }
        }
        // Never stop inside a character.
        while i < bytes.len() && !text.is_char_boundary(i) {
            i += 1;
        }
    }
    (out, excluded)
}

/// One word: its script, its text and the clause it is in (numbered through the text).
struct Word<'a> {
    script: Script,
    text: &'a str,
    clause: usize,
}

/// Cuts cleaned text into sentences of words, each word knowing its clause. Single letters of spaced scripts are dropped; an
/// apostrophe between two letters stays inside the word.
fn sentences(text: &str) -> Vec<Vec<Word<'_>>> {
    let mut all = Vec::new();
    let mut sentence: Vec<Word<'_>> = Vec::new();
    let mut word: Option<(Script, usize, usize)> = None; // script, start byte, letters
    let mut clause = 0;
    fn flush<'a>(
        text: &'a str,
        word: &mut Option<(Script, usize, usize)>,
        end: usize,
        clause: usize,
        sentence: &mut Vec<Word<'a>>,
    ) {
        if let Some((script, start, letters)) = word.take() {
            if letters >= 2 || script.per_char() {
                sentence.push(Word { script, text: &text[start..end], clause });
            }
        }
    }
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match script_of(c) {
            Some(script) if script.per_char() => {
                flush(text, &mut word, at, clause, &mut sentence);
                sentence.push(Word { script, text: &text[at..at + c.len_utf8()], clause });
            }
            Some(script) => match &mut word {
                Some((current, _, letters)) if *current == script => *letters += 1,
                _ => {
                    flush(text, &mut word, at, clause, &mut sentence);
                    word = Some((script, at, 1));
                }
            },
            None => {
                let apostrophe = matches!(c, '\'' | '’')
                    && word.is_some()
                    && chars.peek().is_some_and(|&(_, n)| word.as_ref().is_some_and(|w| script_of(n) == Some(w.0)));
                if apostrophe {
                    continue;
                }
                flush(text, &mut word, at, clause, &mut sentence);
                if is_sentence_end(c) || is_clause_end(c) {
                    clause += 1;
                }
                if is_sentence_end(c) && !sentence.is_empty() {
                    all.push(std::mem::take(&mut sentence));
                }
            }
        }
    }
    flush(text, &mut word, text.len(), clause, &mut sentence);
    if !sentence.is_empty() {
        all.push(sentence);
    }
    all
}

/// A language label: one of `whatlang`'s, or unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Lang(Lang),
    Unknown,
}

impl Label {
    fn code(self) -> &'static str {
        match self {
            Label::Lang(lang) => lang.code(),
            Label::Unknown => "und",
        }
    }
}

/// Orders `Lang` by its code, for deterministic maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LangKey(Label);

impl Ord for LangKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.code().cmp(other.0.code())
    }
}

impl PartialOrd for LangKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Words counted per language in one text, and the spans left out.
#[derive(Debug, Default)]
struct Measure {
    words: BTreeMap<LangKey, usize>,
    excluded: Excluded,
}

impl Measure {
    fn total(&self) -> usize {
        self.words.values().sum()
    }

    fn of(&self, lang: Lang) -> usize {
        self.words.get(&LangKey(Label::Lang(lang))).copied().unwrap_or(0)
    }

    /// The language with the most words (ties: the first by code), unknown excluded.
    fn top(&self) -> Option<Lang> {
        let mut best: Option<(Lang, usize)> = None;
        for (key, &n) in &self.words {
            if let Label::Lang(lang) = key.0 {
                if best.is_none_or(|(_, m)| n > m) {
                    best = Some((lang, n));
                }
            }
        }
        best.map(|(lang, _)| lang)
    }

    fn languages_json(&self) -> Value {
        Value::Object(self.words.iter().map(|(k, &n)| (k.0.code().to_string(), json!(n))).collect::<Map<_, _>>())
    }
}

/// `whatlang`'s confidence at and above which a sentence of several clauses is taken whole (its
/// own threshold of a reliable answer).
const SURE: f64 = 0.9;

/// The language consistency reward.
pub struct LanguageVerifier {
    config: LanguageConfig,
    /// `None`: the prompt's language.
    target: Option<Lang>,
    detector: Detector,
}

impl LanguageVerifier {
    /// A verifier for `config`; `Err` naming the field when a setting is invalid.
    pub fn new(config: LanguageConfig) -> Result<Self, VerifyError> {
        let bad = |field: &str, why: String| VerifyError::Config(format!("language `{field}`: {why}"));
        let target = if config.target.trim().eq_ignore_ascii_case("auto") {
            None
        } else {
            Some(parse_language(&config.target).ok_or_else(|| {
                bad("target", format!("unknown language {:?} (\"auto\", or an ISO 639-1/639-3 code)", config.target))
            })?)
        };
        if !(0.0..=1.0).contains(&config.threshold) {
            return Err(bad("threshold", format!("must be in [0, 1], got {}", config.threshold)));
        }
        if config.close.is_empty() {
            return Err(bad("close", "must not be empty".into()));
        }
        if config.min_words == 0 {
            return Err(bad("min_words", "must be at least 1".into()));
        }
        if config.name.trim().is_empty() {
            return Err(bad("name", "must not be empty".into()));
        }
        if !(0.0..=1.0).contains(&config.min_confidence) {
            return Err(bad("min_confidence", format!("must be in [0, 1], got {}", config.min_confidence)));
        }
        let candidates = if config.candidates.is_empty() {
            None
        } else {
            let mut list = Vec::with_capacity(config.candidates.len() + 1);
            for code in &config.candidates {
                list.push(parse_language(code).ok_or_else(|| bad("candidates", format!("unknown language {code:?}")))?);
            }
            list.extend(target);
            Some(list)
        };
        let detector = candidates.map_or_else(Detector::new, Detector::with_allowlist);
        Ok(LanguageVerifier { config, target, detector })
    }

    /// Identifies the words of a shared script; `None` when `whatlang` has no answer. Close
    /// relatives (Dutch and Afrikaans; Russian, Bulgarian and Ukrainian) come out nearly tied on a
    /// short clause: a guess other than `target` with a confidence below `min_confidence` is put
    /// head to head with `target` (`whatlang` choosing between the two alone), and when `target`
    /// wins or the two stay within `min_confidence` of each other the words count as `target`.
    fn identify(&self, words: &[&Word<'_>], target: Option<Lang>) -> Option<Lang> {
        let joined = words.iter().map(|w| w.text).collect::<Vec<_>>().join(" ");
        let info = self.detector.detect(&joined)?;
        let top = info.lang();
        // Only a target written in this script can be a near-tie of the guess.
        let target = target.filter(|&t| words.first().is_some_and(|w| Script::of_language(t) == w.script));
        match target {
            Some(target) if top != target && info.confidence() < self.config.min_confidence => {
                let duel = Detector::with_allowlist(vec![top, target]).detect(&joined);
                let tied = duel.is_some_and(|d| d.lang() == target || d.confidence() < self.config.min_confidence);
                Some(if tied { target } else { top })
            }
            _ => Some(top),
        }
    }

    /// Words per language in `text` (code and math left out), with `target` deciding the short
    /// runs of its own script that nothing else can tell.
    fn measure(&self, text: &str, target: Option<Lang>) -> Measure {
        let (clean, excluded) = strip_non_language(text);
        let sentences = sentences(&clean);
        let mut measure = Measure { words: BTreeMap::new(), excluded };
        let mut add = |label: Label, n: usize| *measure.words.entry(LangKey(label)).or_insert(0) += n;

        // Han without kana in its clause is Japanese when the text is at least a fifth kana.
        let (mut han, mut kana) = (0usize, 0usize);
        for w in sentences.iter().flatten() {
            match w.script {
                Script::Han => han += 1,
                Script::Hiragana | Script::Katakana => kana += 1,
                _ => {}
            }
        }
        let han_default = if kana > 0 && kana * 5 >= han + kana { Lang::Jpn } else { Lang::Cmn };

        // Runs of shared scripts too short to identify, per script, for the second pass.
        let mut deferred: BTreeMap<Script, Vec<&Word<'_>>> = BTreeMap::new();
        // Words of shared scripts the target is not written in, per script.
        let mut foreign: BTreeMap<Script, Vec<&Word<'_>>> = BTreeMap::new();
        // Words of each shared script per identified language, for the majority of the second pass.
        let mut identified: BTreeMap<Script, BTreeMap<LangKey, usize>> = BTreeMap::new();
        for sentence in &sentences {
            let kana_clauses: Vec<usize> = sentence
                .iter()
                .filter(|w| matches!(w.script, Script::Hiragana | Script::Katakana))
                .map(|w| w.clause)
                .collect();
            let mut shared: BTreeMap<Script, Vec<&Word<'_>>> = BTreeMap::new();
            for w in sentence {
                if w.script.shared() {
                    shared.entry(w.script).or_default().push(w);
                } else if w.script == Script::Han {
                    let has_kana = kana_clauses.contains(&w.clause);
                    add(Label::Lang(if has_kana { Lang::Jpn } else { han_default }), 1);
                } else {
                    add(w.script.sole_language().map_or(Label::Unknown, Label::Lang), 1);
                }
            }
            for (script, words) in shared {
                // A script the target is not written in cannot hold target words: its words are
                // identified once, all together, for the breakdown only.
                if target.is_some_and(|t| Script::of_language(t) != script) {
                    foreign.entry(script).or_default().extend(words);
                    continue;
                }
                // A sentence of several clauses is identified whole when `whatlang` is sure of it
                // (one call); otherwise clause by clause, to catch a switch of language at a comma.
                let several = words.first().is_some_and(|f| words.iter().any(|w| w.clause != f.clause));
                if several && words.len() >= self.config.min_words {
                    let joined = words.iter().map(|w| w.text).collect::<Vec<_>>().join(" ");
                    if let Some(info) = self.detector.detect(&joined).filter(|i| i.confidence() >= SURE) {
                        let label = Label::Lang(info.lang());
                        add(label, words.len());
                        *identified.entry(script).or_default().entry(LangKey(label)).or_insert(0) += words.len();
                        continue;
                    }
                }
                for clause in words.chunk_by(|a, b| a.clause == b.clause) {
                    if clause.len() < self.config.min_words {
                        deferred.entry(script).or_default().extend(clause);
                        continue;
                    }
                    let label = self.identify(clause, target).map_or(Label::Unknown, Label::Lang);
                    add(label, clause.len());
                    *identified.entry(script).or_default().entry(LangKey(label)).or_insert(0) += clause.len();
                }
            }
        }
        for words in foreign.values() {
            add(self.identify(words, None).map_or(Label::Unknown, Label::Lang), words.len());
        }
        for (script, words) in deferred {
            let majority = identified.get(&script).and_then(|by_lang| {
                by_lang.iter().filter(|(k, _)| k.0 != Label::Unknown).max_by_key(|(_, &n)| n).map(|(k, _)| k.0)
            });
            let label = match majority {
                Some(label) => label,
                None if words.len() >= self.config.min_words || target.is_none() => {
                    self.identify(&words, target).map_or(Label::Unknown, Label::Lang)
                }
                // Too little to tell: the target's, when the target is written in this script.
                None => match target {
                    Some(t) if Script::of_language(t) == script => Label::Lang(t),
                    _ => Label::Unknown,
                },
            };
            add(label, words.len());
        }
        measure
    }

    /// The part of the completion this verifier measures, `None` when it is absent.
    fn part<'a>(&self, completion: &'a str) -> Option<&'a str> {
        let split = completion.split_once(self.config.close.as_str());
        match self.config.scope {
            LanguageScope::All => Some(completion),
            LanguageScope::Reasoning => Some(split.map_or(completion, |(reasoning, _)| reasoning)),
            LanguageScope::Answer => split.map(|(_, answer)| answer),
        }
    }

    /// The share of `text` in `target` (`None` when nothing is countable), with the breakdown.
    pub fn share(&self, text: &str, target: Lang) -> (Option<f64>, Value) {
        let measure = self.measure(text, Some(target));
        let total = measure.total();
        let hits = measure.of(target);
        let share = (total > 0).then(|| hits as f64 / total as f64);
        let detail = json!({
            "words": total,
            "target_words": hits,
            "languages": measure.languages_json(),
            "excluded": {
                "code": measure.excluded.code,
                "math": measure.excluded.math,
                "chars": measure.excluded.chars,
            },
        });
        (share, detail)
    }

    /// The language with the most words in `text`, as [`LanguageConfig::target`]'s `"auto"` reads a
    /// prompt; `None` when nothing in it is countable or identifiable.
    pub fn dominant_language(&self, text: &str) -> Option<Lang> {
        self.measure(text, None).top()
    }
}

impl Verifier for LanguageVerifier {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn verify(&self, task: &Task, completion: &str) -> Result<Verdict, VerifyError> {
        let (target, from) = match self.target {
            Some(lang) => (lang, "config"),
            None => {
                let prompt = task.prompt.as_deref().ok_or(VerifyError::MissingField("prompt"))?;
                let lang = self.dominant_language(prompt).ok_or_else(|| {
                    VerifyError::InvalidTask("cannot tell the prompt's language: no words outside code and math".into())
                })?;
                (lang, "prompt")
            }
        };
        let Some(text) = self.part(completion) else {
            return Ok(Verdict::zero(
                Outcome::NoAnswer,
                json!({ "target": target.code(), "reason": format!("no answer after {}", self.config.close) }),
            ));
        };
        let (share, mut detail) = self.share(text, target);
        let reached = share.is_none_or(|s| s >= self.config.threshold);
        let reward = match (self.config.mode, share) {
            (_, None) => 1.0,
            (LanguageMode::Share, Some(s)) => s as f32,
            (LanguageMode::Threshold, Some(_)) => f32::from(u8::from(reached)),
        };
        let object = detail.as_object_mut().expect("share builds an object");
        object.insert("target".into(), target.code().into());
        object.insert("target_from".into(), from.into());
        object.insert("share".into(), share.map_or(Value::Null, |s| json!(s)));
        let outcome = if reached { Outcome::Correct } else { Outcome::Incorrect };
        Ok(Verdict { reward, outcome, detail })
    }
}
