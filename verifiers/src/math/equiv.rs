//! Equivalence of a predicted answer to the gold: exact after normalisation, numeric through
//! [`Expr`], or structural (tuples, intervals, sets, `\pm`, lists, equations).
//!
//! Gold and prediction are asymmetric, as in Math-Verify: the gold's shape decides how the
//! prediction is read. A decimal comma (`3,5`) is read as 3.5 only when the gold is a single
//! number; a percent on either side lets the value match both `x` and `x/100` (gold `50` accepts
//! `50\%`, gold `50\%` accepts `0.5`, gold `0.5` accepts `50\%`); `x = 5` is reduced to `5` on
//! both sides when the left side is a plain variable.
//!
//! Left out: unions of intervals, inequalities (`x > 3` is compared as a string), matrices, and
//! symbolic identities that agree at both sample points by accident (two points make that rare).

use super::latex::Expr;
use super::normalize::Normalized;
use super::Deadline;
use regex::Regex;
use std::sync::LazyLock;

/// Most items of a tuple or set that we compare.
const MAX_ITEMS: usize = 64;

/// How a match was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Equal strings after normalisation.
    Exact,
    /// Equal values (within tolerance) of scalar expressions.
    Numeric,
    /// Equal item by item (tuples, intervals, sets, lists).
    Structure,
}

impl Method {
    /// The name written into a verdict's detail.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Exact => "exact",
            Method::Numeric => "numeric",
            Method::Structure => "structure",
        }
    }
}

/// The result of a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// Equivalent, and how we know.
    Equal(Method),
    /// Not equivalent.
    Different,
    /// The deadline passed before the comparison finished.
    OutOfTime,
}

/// The shape of an answer.
#[derive(Debug, Clone, PartialEq)]
enum Form {
    /// One expression (or a word).
    Scalar(String),
    /// Brackets with comma-separated items: tuples `(1,2)`, intervals `[1,3)`, `(-\infty,2]`.
    Bracketed { open: char, close: char, items: Vec<String> },
    /// Order-free items: `\{1,2\}`, bare lists `1, 2`, `a \pm b`.
    Set(Vec<String>),
}

static SIMPLE_LHS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?[a-zA-Z0-9]+\}?)?(?:\([a-z]\))?$").unwrap());
static CHOICE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\(?([A-Ea-e])\)?$").unwrap());
static INTEGER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^-?\d+$").unwrap());
static DECIMAL_COMMA: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^-?\d+,(?:\d{1,2}|\d{4,})$").unwrap());

/// Compare a prediction to the gold, both normalised, with relative tolerance `rel_tol`.
pub fn equivalent(gold: &Normalized, pred: &Normalized, rel_tol: f64, deadline: &Deadline) -> Judgement {
    if gold.text == pred.text || text_key(&gold.text) == text_key(&pred.text) {
        return Judgement::Equal(Method::Exact);
    }
    let gold_form = form(&gold.text);
    let pred_text = match (&gold_form, DECIMAL_COMMA.is_match(&pred.text)) {
        (Form::Scalar(_), true) => pred.text.replace(',', "."),
        _ => pred.text.clone(),
    };
    let cmp = Scalars { rel_tol, gold_percent: gold.percent, pred_percent: pred.percent, deadline };
    let result = match (gold_form, form(&pred_text)) {
        (Form::Scalar(g), Form::Scalar(p)) => cmp.scalar(&g, &p).map(|eq| eq.then_some(Method::Numeric)),
        (Form::Bracketed { open, close, items }, Form::Bracketed { open: o, close: c, items: p }) => {
            let same = open == o && close == c && items.len() == p.len();
            cmp.all_pairs(same, &items, &p).map(|eq| eq.then_some(Method::Structure))
        }
        (Form::Set(g), Form::Set(p)) => cmp.matching(&g, &p).map(|eq| eq.then_some(Method::Structure)),
        _ => Some(None),
    };
    match result {
        None => Judgement::OutOfTime,
        Some(Some(method)) => Judgement::Equal(method),
        Some(None) => Judgement::Different,
    }
}

/// A case-free key for word answers and multiple-choice letters (`(B)`, `b`, `B`).
fn text_key(s: &str) -> String {
    let s = s.trim_start_matches("\\text").to_lowercase();
    match CHOICE.captures(&s) {
        Some(c) => c[1].to_string(),
        None => s,
    }
}

/// Decide the shape of a normalised answer.
fn form(s: &str) -> Form {
    // `x=(1,2)` is one equation; `x=2,x=3` is a list of two.
    let s = if split_top(s, ',').len() == 1 { strip_lhs(s) } else { s.to_string() };
    if let Some(body) = s.strip_prefix("\\{").and_then(|b| b.strip_suffix("\\}")) {
        return Form::Set(split_top(body, ',').into_iter().map(|i| strip_lhs(&i)).collect());
    }
    let (first, last) = (s.chars().next(), s.chars().last());
    if let (Some(open @ ('(' | '[')), Some(close @ (')' | ']'))) = (first, last) {
        let items = split_top(&s[1..s.len() - 1], ',');
        if items.len() > 1 && encloses(&s) {
            return Form::Bracketed { open, close, items };
        }
    }
    let items = split_top(&s, ',');
    if items.len() > 1 {
        return Form::Set(items.iter().map(|i| strip_lhs(i)).collect());
    }
    match split_top(&s, '\u{b1}').as_slice() {
        [a, b] if a.is_empty() => Form::Set(vec![b.clone(), format!("-({b})")]),
        [a, b] => Form::Set(vec![format!("{a}+{b}"), format!("{a}-({b})")]),
        _ => Form::Scalar(s),
    }
}

/// `x=5` → `5`, `y=2x+1` → `2x+1`, `x=2+3=5` → `5`; other equations stay whole.
fn strip_lhs(s: &str) -> String {
    let parts = split_top(s, '=');
    match parts.as_slice() {
        [lhs, .., rhs] if SIMPLE_LHS.is_match(lhs) && !rhs.is_empty() => rhs.clone(),
        _ => s.to_string(),
    }
}

/// Whether the opening bracket of `s` is closed by its last character (not `(1)+(2)`).
fn encloses(s: &str) -> bool {
    let mut depth = 0i32;
    let n = s.chars().count();
    for (i, c) in s.chars().enumerate() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            _ => {}
        }
        if depth == 0 && i + 1 < n {
            return false;
        }
    }
    true
}

/// Split at `sep` outside brackets; `\pm` is read as the separator `±` when `sep` is `±`.
fn split_top(s: &str, sep: char) -> Vec<String> {
    let s = s.replace("\\pm", "\u{b1}");
    let mut items = vec![String::new()];
    let mut depth = 0i32;
    let mut prev = ' ';
    for c in s.chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            // `\{` and `\}` nest like braces; an interval's `[1,2)` closes with either kind.
            ')' | ']' | '}' => depth -= 1,
            _ => {}
        }
        if c == sep && depth == 0 && prev != '\\' {
            items.push(String::new());
        } else {
            items.last_mut().expect("never empty").push(c);
        }
        prev = c;
    }
    items.into_iter().map(|i| i.replace('\u{b1}', "\\pm")).collect()
}

/// Scalar comparison settings shared by the structural comparisons.
struct Scalars<'a> {
    rel_tol: f64,
    gold_percent: bool,
    pred_percent: bool,
    deadline: &'a Deadline,
}

impl Scalars<'_> {
    /// `Some(equal)`, or `None` when the deadline passed.
    fn scalar(&self, gold: &str, pred: &str) -> Option<bool> {
        if self.deadline.passed() {
            return None;
        }
        if gold == pred || text_key(gold) == text_key(pred) {
            return Some(true);
        }
        if INTEGER.is_match(gold) && INTEGER.is_match(pred) && !self.gold_percent && !self.pred_percent {
            // Integers compare exactly, however large: 1000000 is not 1000001.
            return Some(
                gold.trim_start_matches('-') == pred.trim_start_matches('-')
                    && gold.starts_with('-') == pred.starts_with('-'),
            );
        }
        let (Some(g), Some(p)) = (Expr::parse(gold), Expr::parse(pred)) else {
            return Some(false);
        };
        Some((0..2).all(|point| self.values_match(&g, &p, point)))
    }

    /// Compare the values at one sample point, allowing `x` vs `x/100` when a percent was seen.
    fn values_match(&self, gold: &Expr, pred: &Expr, point: usize) -> bool {
        let (Some(g), Some(p)) = (gold.eval(point), pred.eval(point)) else {
            return false;
        };
        let scales: &[f64] = if self.gold_percent || self.pred_percent { &[1.0, 0.01, 100.0] } else { &[1.0] };
        scales.iter().any(|k| close(g * k, p, self.rel_tol) || close(g, p * k, self.rel_tol))
    }

    /// Items equal pairwise in order (tuples, intervals).
    fn all_pairs(&self, same_shape: bool, gold: &[String], pred: &[String]) -> Option<bool> {
        if !same_shape || gold.len() > MAX_ITEMS {
            return Some(false);
        }
        for (g, p) in gold.iter().zip(pred) {
            if !self.scalar(g, p)? {
                return Some(false);
            }
        }
        Some(true)
    }

    /// Items equal as a multiset, in any order (greedy matching: each gold item takes the first
    /// unused prediction item equal to it; items are distinct values in practice).
    fn matching(&self, gold: &[String], pred: &[String]) -> Option<bool> {
        if gold.len() != pred.len() || gold.len() > MAX_ITEMS {
            return Some(false);
        }
        let mut used = vec![false; pred.len()];
        for g in gold {
            let mut found = false;
            for (j, p) in pred.iter().enumerate() {
                if !used[j] && self.scalar(g, p)? {
                    used[j] = true;
                    found = true;
                    break;
                }
            }
            if !found {
                return Some(false);
            }
        }
        Some(true)
    }
}

/// `|a - b| <= rel_tol * max(|a|, |b|)`, with an absolute floor of `rel_tol * 1e-6` near zero.
fn close(a: f64, b: f64, rel_tol: f64) -> bool {
    (a - b).abs() <= rel_tol * a.abs().max(b.abs()).max(1e-6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let b = |o, c, items: &[&str]| Form::Bracketed {
            open: o,
            close: c,
            items: items.iter().map(|s| s.to_string()).collect(),
        };
        let set = |items: &[&str]| Form::Set(items.iter().map(|s| s.to_string()).collect());
        assert_eq!(form("(1,2)"), b('(', ')', &["1", "2"]));
        assert_eq!(form("[1,3)"), b('[', ')', &["1", "3"]));
        assert_eq!(form("(-\\infty,2]"), b('(', ']', &["-\\infty", "2"]));
        assert_eq!(form("\\{1,2,3\\}"), set(&["1", "2", "3"]));
        assert_eq!(form("x=2,x=3"), set(&["2", "3"]));
        assert_eq!(form("1\\pm\\sqrt{2}"), set(&["1+\\sqrt{2}", "1-(\\sqrt{2})"]));
        assert_eq!(form("(1)+(2)"), Form::Scalar("(1)+(2)".into()));
        assert_eq!(form("x=5"), Form::Scalar("5".into()));
        assert_eq!(form("2x+3y=5"), Form::Scalar("2x+3y=5".into()));
        assert_eq!(form("f(x)=x^2"), Form::Scalar("x^2".into()));
    }

    #[test]
    fn closeness() {
        assert!(close(1.0, 1.0 + 1e-9, 1e-6));
        assert!(!close(22.0 / 7.0, std::f64::consts::PI, 1e-6));
        assert!(close(0.0, 1e-13, 1e-6));
    }
}
