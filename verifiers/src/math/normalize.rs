//! String normalisation of a math answer: strips delimiters, spacing commands, text wrappers,
//! units, currency, degrees and percent signs, and joins thousands separators, so that two ways of
//! writing the same answer become the same string.
//!
//! Also: matrices in any bracket style (`pmatrix`, `bmatrix`, `array`, ...) become one canonical
//! `\matrix{a&b;c&d}` with each cell normalised; relation commands become single characters
//! (`\le` → `≤`, `\geq` → `≥`, `\ne` → `≠`, `\in` → `∈`, `\approx` → `≈`); base subscripts of
//! numbers are dropped (`52_8`, `52_{(8)}` → `52`); `,\!` and `{,}` thousands separators join;
//! repeating decimals become fractions (`0.\overline{3}` → `\frac{3}{9}`).
//!
//! Left out: units are only stripped when they trail a value (`5 cm`, `10\text{ kg}`), never
//! inside an expression; the decimal comma is decided later, in `equiv`, because it depends on the
//! gold's shape.

use regex::Regex;
use std::sync::LazyLock;

/// A normalised answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// The canonical string: no whitespace, LaTeX spelling (`\frac`, `\sqrt`, `\pi`, ...).
    pub text: String,
    /// Whether a percent sign (`%`, `\%`, "percent") was removed.
    pub percent: bool,
    /// Whether a degree sign was removed (so the value may also be read in radians).
    pub degrees: bool,
}

/// Number words read as numbers when they are the whole answer: zero to twenty, then the tens.
const NUMBER_WORDS: &[&str] = &[
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
    "thirty",
    "forty",
    "fifty",
    "sixty",
    "seventy",
    "eighty",
    "ninety",
];

/// Commands that only affect spacing or sizing and carry no meaning.
const DROPPED: &[&str] = &[
    "\\displaystyle",
    "\\left",
    "\\right",
    "\\bigl",
    "\\biggl",
    "\\biggr",
    "\\Biggl",
    "\\Biggr",
    "\\bigg",
    "\\Bigg",
    "\\bigr",
    "\\Bigl",
    "\\Bigr",
    "\\big",
    "\\Big",
    "\\qquad",
    "\\quad",
    "\\!",
    "\\,",
    "\\;",
    "\\:",
    "\\ ",
    "~",
];

/// Wrappers whose argument is kept and whose name is dropped.
const WRAPPERS: &[&str] = &[
    "\\boxed",
    "\\textnormal",
    "\\textsf",
    "\\textsc",
    "\\textmd",
    "\\hbox",
    "\\fbox",
    "\\textbf",
    "\\textit",
    "\\textrm",
    "\\texttt",
    "\\textup",
    "\\text",
    "\\mathrm",
    "\\mathbf",
    "\\mathit",
    "\\mathsf",
    "\\mathtt",
    "\\mbox",
    "\\operatorname",
    "\\emph",
];

/// Unit and currency words stripped when they trail a value (lowercase; matched case-insensitively).
const UNITS: &[&str] = &[
    "m", "cm", "mm", "km", "nm", "g", "kg", "mg", "s", "ms", "h", "hr", "hrs", "min", "mins", "sec", "l", "ml", "ft",
    "in", "yd", "mi", "lb", "lbs", "oz", "mph", "kph", "kmh", "km/h", "m/s", "usd", "eur", "rs", "inches", "inch",
    "feet", "foot", "yards", "miles", "meters", "metres", "meter", "cents", "cent", "dollars", "dollar", "euros",
    "hours", "hour", "minutes", "minute", "seconds", "second", "days", "day", "weeks", "years", "units", "unit", "sq",
    "square", "cubic", "degrees", "degree",
];

/// Names that look like words but are mathematics, never stripped as units.
const MATH_WORDS: &[&str] =
    &["sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "pi", "sqrt", "frac", "infty", "and", "or"];

static UNICODE: &[(&str, &str)] = &[
    ("\u{2212}", "-"),
    ("\u{2013}", "-"),
    ("\u{00d7}", "\\times "),
    ("\u{22c5}", "\\cdot "),
    ("\u{00b7}", "\\cdot "),
    ("\u{00f7}", "\\div "),
    ("\u{03c0}", "\\pi "),
    ("\u{221e}", "\\infty "),
    ("\u{00b0}", "^\\circ"),
    ("\u{00b2}", "^2"),
    ("\u{00b3}", "^3"),
    ("\u{00a0}", " "),
    ("\u{2009}", " "),
    ("\u{202f}", " "),
    ("\u{2007}", " "),
    ("\u{2a7d}", "\u{2264}"),
    ("\u{2a7e}", "\u{2265}"),
    ("\\dfrac", "\\frac"),
    ("\\tfrac", "\\frac"),
    ("\\cfrac", "\\frac"),
    ("\\dbinom", "\\binom"),
    ("\\tbinom", "\\binom"),
    ("\\varnothing", "\\emptyset"),
    ("\u{2205}", "\\emptyset"),
    ("\u{211d}", "\\mathbb{R}"),
    ("\\mathbb R", "\\mathbb{R}"),
    (",\\!", ","),
    ("\\!", ""),
    ("{,}", ","),
    ("\\%", "%"),
    ("\\$", "$"),
    ("\\degree", "^\\circ"),
];

/// Relation commands, rewritten to one character each (only where the command name ends there, so
/// `\left` and `\infty` stay).
const RELATIONS: &[(&str, &str)] = &[
    ("\\leqslant", "\u{2264}"),
    ("\\geqslant", "\u{2265}"),
    ("\\leq", "\u{2264}"),
    ("\\geq", "\u{2265}"),
    ("\\le", "\u{2264}"),
    ("\\ge", "\u{2265}"),
    ("\\lt", "<"),
    ("\\gt", ">"),
    ("\\neq", "\u{2260}"),
    ("\\ne", "\u{2260}"),
    ("\\approx", "\u{2248}"),
    ("\\in", "\u{2208}"),
    ("\\inf", "\\infty"),
    ("\\lvert", "|"),
    ("\\rvert", "|"),
    ("\\vert", "|"),
    ("\\mid", "|"),
];

static MATRIX: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?s)\\begin\{(?:[pbBvV]?matrix|smallmatrix|array)\}(?:\{[lcr|\s]*\})?(.*?)\\end\{(?:[pbBvV]?matrix|smallmatrix|array)\}").unwrap()
});
static BASE_SUBSCRIPT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(^|[^A-Za-z0-9_^\\])(\d[0-9A-F]*)_\{?\(?(\d{1,2})\)?\}?").unwrap());
static TRIG: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\\(?:sin|cos|tan|sec|csc|cot)").unwrap());
static OVER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\{?([^{}]+?)\\over\b([^{}]+?)\}?$").unwrap());
static REPEATING: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(^|[^\d.])(\d{0,15})\.(\d{0,10})\\overline\{(\d{1,10})\}").unwrap());
static PLUS_INFINITY: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\+\s*\\infty").unwrap());
static SQRT_UNICODE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\x{221a}\s*(\d+(?:\.\d+)?|[a-zA-Z])").unwrap());
static DEGREES: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\^\s*\{?\s*\\circ\s*\}?|\\circ").unwrap());
static SPACE_THOUSANDS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(^|[^\d.,])(\d{1,3}(?: \d{3})+)($|[^\d])").unwrap());
static COMMA_NUMBER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$").unwrap());
static TRAILING_WORD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)(?:\s|^)([a-z]+(?:/[a-z]+)?\.?)(?:\s*\^\{?[23]\}?)?\s*$").unwrap());
static OR_WORDS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\s+(?:or|and)\s+|,\s*(?:or|and)\s+").unwrap());

/// Normalise an answer string (gold or prediction alike).
pub fn normalize(raw: &str) -> Normalized {
    let mut s = raw.trim().to_string();
    for (from, to) in UNICODE {
        if s.contains(from) {
            s = s.replace(from, to);
        }
    }
    s = SQRT_UNICODE.replace_all(&s, r"\sqrt{$1}").into_owned();
    s = strip_delimiters(&s);
    if s.contains("\\overline") {
        s = REPEATING.replace_all(&s, repeating_fraction).into_owned();
    }
    if s.contains("\\begin") {
        s = MATRIX.replace_all(&s, |c: &regex::Captures| matrix(&c[1])).into_owned();
    }
    for cmd in DROPPED {
        s = remove_command(&s, cmd);
    }
    for (cmd, to) in RELATIONS {
        if s.contains(cmd) {
            s = replace_command(&s, cmd, to);
        }
    }
    s = PLUS_INFINITY.replace_all(&s, "\\infty").into_owned();
    s = BASE_SUBSCRIPT.replace_all(&s, "$1$2").into_owned();
    for wrapper in WRAPPERS {
        s = unwrap_command(&s, wrapper);
    }
    // Degrees inside a trigonometric answer are a unit the parser converts (`\sin 30°`); elsewhere
    // the sign is dropped and remembered.
    let trig = TRIG.is_match(&s);
    let degrees = !trig && (DEGREES.is_match(&s) || s.to_lowercase().contains("degree"));
    s = DEGREES.replace_all(&s, if trig { "\u{b0}" } else { "" }).into_owned();
    if s.contains("\\over") {
        s = OVER.replace_all(&s, "\\frac{$1}{$2}").into_owned();
    }
    let percent = s.contains('%') || s.to_lowercase().contains("percent");
    s = s.replace('%', " ");
    s = strip_currency(&s);
    s = OR_WORDS.replace_all(&s, ",").into_owned();
    s = strip_units(&s);
    s = SPACE_THOUSANDS.replace_all(&s, space_join).into_owned();
    // `1,234` is a thousands separator only while no space follows the comma (`1, 234` is a list).
    let mut text = trim_punctuation(s.trim());
    if COMMA_NUMBER.is_match(&text) {
        text = text.replace(',', "");
    }
    text.retain(|c| !c.is_whitespace());
    let mut text = trim_punctuation(&text);
    if text == "\\mathbb{R}" {
        text = "(-\\infty,\\infty)".into();
    } else if text == "\\{\\}" {
        text = "\\emptyset".into();
    } else if let Some(n) = NUMBER_WORDS.iter().position(|w| text.eq_ignore_ascii_case(w)) {
        text = if n <= 20 { n.to_string() } else { ((n - 18) * 10).to_string() };
    }
    Normalized { text, percent, degrees }
}

/// `1.2\overline{45}` as the fraction it is, `\frac{137}{110}` (callback of the repeating-decimal
/// regex; at most 35 digits in all, so `u128` holds every number).
fn repeating_fraction(caps: &regex::Captures) -> String {
    let (before, int, fixed, rep) = (&caps[1], &caps[2], &caps[3], &caps[4]);
    let digits = |s: &str| s.parse::<u128>().unwrap_or(0);
    let head = digits(&format!("{int}{fixed}"));
    let whole = digits(&format!("{int}{fixed}{rep}"));
    let den = 10u128.pow(fixed.len() as u32) * (10u128.pow(rep.len() as u32) - 1);
    format!("{before}\\frac{{{}}}{{{den}}}", whole - head)
}

/// The canonical `\matrix{a&b;c&d}` of a matrix body (rows split at `\\`, cells at `&`).
fn matrix(body: &str) -> String {
    let rows: Vec<String> = body
        .split("\\\\")
        .map(|row| row.split('&').map(|cell| normalize(cell).text).collect::<Vec<_>>().join("&"))
        .filter(|row| !row.is_empty())
        .collect();
    format!("\\matrix{{{}}}", rows.join(";"))
}

/// Replace a command by `to` wherever its name ends there (not inside a longer command name).
fn replace_command(s: &str, cmd: &str, to: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find(cmd) {
        let after = &rest[pos + cmd.len()..];
        out.push_str(&rest[..pos]);
        if after.starts_with(|c: char| c.is_ascii_alphabetic()) {
            out.push_str(cmd);
        } else {
            out.push_str(to);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Join `1 234 567` into `1234567` (callback of the space-thousands regex).
fn space_join(caps: &regex::Captures) -> String {
    format!("{}{}{}", &caps[1], caps[2].replace(' ', ""), &caps[3])
}

/// Peel `$...$`, `$$...$$`, `\(...\)`, `\[...\]` off the whole string, repeatedly.
pub fn strip_delimiters(s: &str) -> String {
    let mut s = s.trim();
    loop {
        let inner = [("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")].iter().find_map(|(l, r)| {
            let body = s.strip_prefix(l)?.strip_suffix(r)?;
            (!body.is_empty()).then_some(body)
        });
        match inner {
            Some(body) => s = body.trim(),
            None => return s.to_string(),
        }
    }
}

/// Remove every occurrence of a command, taking care not to eat a longer command's prefix
/// (`\left` must not match inside `\leftarrow`).
fn remove_command(s: &str, cmd: &str) -> String {
    let alphabetic = cmd.chars().last().is_some_and(|c| c.is_ascii_alphabetic());
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find(cmd) {
        let after = &rest[pos + cmd.len()..];
        let glued = alphabetic && after.starts_with(|c: char| c.is_ascii_alphabetic());
        out.push_str(&rest[..pos]);
        if glued {
            out.push_str(cmd);
        } else {
            out.push(' ');
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Replace `\cmd{body}` with ` body ` everywhere (nested braces respected).
fn unwrap_command(s: &str, cmd: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find(cmd) {
        let after = rest[pos + cmd.len()..].trim_start();
        out.push_str(&rest[..pos]);
        match after.strip_prefix('{').and_then(|a| matching_brace(a).map(|end| (a, end))) {
            Some((a, end)) => {
                out.push(' ');
                out.push_str(&a[..end]);
                out.push(' ');
                rest = &a[end + 1..];
            }
            None => {
                out.push_str(cmd);
                rest = &rest[pos + cmd.len()..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Byte index of the `}` closing a group whose `{` was just consumed; escaped `\{` `\}` are skipped.
pub fn matching_brace(s: &str) -> Option<usize> {
    let mut depth = 1usize;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Remove currency signs (`$`, `€`, `£`, `¥`) left after the math delimiters are gone.
fn strip_currency(s: &str) -> String {
    s.chars().map(|c| if matches!(c, '$' | '€' | '£' | '¥') { ' ' } else { c }).collect()
}

/// Drop trailing unit words (`5 cm`, `12 dollars`, `3 square meters`) when a value precedes them.
fn strip_units(s: &str) -> String {
    let original = s.trim_end().trim_end_matches('.');
    let mut head = original;
    for _ in 0..4 {
        let Some(caps) = TRAILING_WORD.captures(head) else {
            break;
        };
        let word = caps[1].trim_end_matches('.').to_lowercase();
        let is_unit =
            UNITS.contains(&word.as_str()) || (word.len() >= 3 && word.chars().all(|c| c.is_ascii_lowercase()));
        if !is_unit || MATH_WORDS.contains(&word.as_str()) {
            break;
        }
        head = head[..caps.get(0).expect("group 0 always matches").start()].trim_end();
    }
    let after_value = head.ends_with(|c: char| c.is_ascii_digit() || c == '}' || c == ')');
    if after_value { head } else { original }.to_string()
}

/// Trim sentence punctuation and stray separators from the ends.
fn trim_punctuation(s: &str) -> String {
    let mut t = s.trim_end_matches(['.', ';', ':']);
    // `!` ends a sentence after a word, but is a factorial after a number or a group (`4!`).
    while t.ends_with('!')
        && !t[..t.len() - 1].ends_with(|c: char| c.is_ascii_digit() || c == ')' || c == '}' || c == '!')
    {
        t = t[..t.len() - 1].trim_end_matches(['.', ';', ':']);
    }
    t.trim_start_matches(':').trim_end_matches(',').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_layout_and_wrappers() {
        let cases = [
            ("$\\dfrac{1}{2}$", "\\frac{1}{2}"),
            ("\\left( 1, 2 \\right)", "(1,2)"),
            ("\\text{(B)}", "(B)"),
            ("\\(\\displaystyle 3\\)", "3"),
            ("\\[ \\textbf{42} \\]", "42"),
            ("1,234,567", "1234567"),
            ("1\\,234\\,567", "1234567"),
            ("1 234 567", "1234567"),
            ("1\u{202f}234", "1234"),
            ("\\$1{,}000", "1000"),
            ("30^\\circ", "30"),
            ("30^{\\circ}", "30"),
            ("45\u{00b0}", "45"),
            ("10\\text{ cm}", "10"),
            ("12 dollars.", "12"),
            ("5 \\text{square units}", "5"),
            ("3\\sqrt{2} meters", "3\\sqrt{2}"),
            ("x = 2 \\text{ or } x = 3", "x=2,x=3"),
            ("\u{221a}12", "\\sqrt{12}"),
            ("1.2\\overline{45}", "\\frac{1233}{990}"),
            ("0.\\overline{3}", "\\frac{3}{9}"),
            ("52_{8}", "52"),
            ("10,\\!000", "10000"),
            ("x \\geq 5", "x\u{2265}5"),
            ("2\u{03c0}", "2\\pi"),
            ("\\leftarrow", "\\leftarrow"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize(raw).text, want, "normalising {raw:?}");
        }
    }

    #[test]
    fn percent_is_flagged_and_removed() {
        let n = normalize("50\\%");
        assert_eq!((n.text.as_str(), n.percent), ("50", true));
        let n = normalize("12.5 percent");
        assert_eq!((n.text.as_str(), n.percent), ("12.5", true));
        assert!(!normalize("50").percent);
    }

    #[test]
    fn keeps_text_answers_and_lists() {
        assert_eq!(normalize("Yes").text, "Yes");
        assert_eq!(normalize("1, 234").text, "1,234");
        assert_eq!(normalize("(1,234)").text, "(1,234)");
        assert_eq!(normalize("sin x").text, "sinx");
    }
}
