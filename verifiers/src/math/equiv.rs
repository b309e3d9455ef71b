//! Equivalence of a predicted answer to the gold, both normalised: exact text, values of scalar
//! expressions (exact rationals where possible), expressions with free variables (equal at several
//! sample points), equations (same solution set), inequalities (either way round, or as
//! intervals), and structures (tuples, intervals, unions, sets, lists, matrices) item by item.
//!
//! Gold and prediction are asymmetric, as in Math-Verify: the gold's shape decides how the
//! prediction is read.
//! - A decimal comma (`3,5`) is read as 3.5 only when the gold is a single number.
//! - A percent on either side lets the value match both `x` and `x/100` (gold `50` accepts
//!   `50\%`, gold `50\%` accepts `0.5`, gold `0.5` accepts `50\%`).
//! - `x = 5` against a plain gold `5` is compared by its right side when the left side is a plain
//!   label (`x`, `f(x)`, `AB`, `a_1`) or holds no letters (`2+3=5`); the same holds the other way
//!   round. A labelled tuple `(p,q)=(3,2)` is read as its right side in the gold only.
//! - Gold `\{...\}` and bare lists `a, b` are order-free (a prediction as a set, list or several
//!   boxes is fine); tuples and intervals `(a,b)`, `[a,b)` are ordered and keep their brackets.
//!   A list of labelled equations `x=3, y=2` matches the tuple `(3,2)` in order.
//! - Matrices compare cell by cell whatever their brackets; a one-row or one-column matrix also
//!   matches a tuple of the same items.
//! - List items with `\pm` stand for two items (`\pm 1, \pm 2`); a choice label before a value
//!   (`(B) 6`) is dropped when the gold is not a choice letter.
//!
//! Left out: identities that agree at every sample point by accident (four points with
//! rational coordinates make that rare); branch subtleties (`\sqrt{x^2}` against `|x|` is only
//! sampled at positive points, where they agree, and so is `x` against `|x|`).

use super::latex::{Expr, Val};
use super::normalize::Normalized;
use super::Deadline;
use num_bigint::BigInt;
use num_complex::Complex64;
use regex::Regex;
use std::sync::LazyLock;

/// Most items of a tuple, set, list or matrix that we compare.
const MAX_ITEMS: usize = 64;
/// Deepest nesting of structures compared (a list of tuples is 2).
const MAX_NESTING: usize = 4;
/// Sample points for expressions with free variables.
const POINTS: usize = 4;

/// How a match was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Equal strings after normalisation.
    Exact,
    /// Equal values (exactly, or within tolerance when a decimal is involved) of numbers.
    Numeric,
    /// Equal values at every sample point of expressions with free variables.
    Symbolic,
    /// Equations with the same solution set, or inequalities with the same solutions.
    Relation,
    /// Equal item by item (tuples, intervals, sets, lists, matrices).
    Structure,
}

impl Method {
    /// The name written into a verdict's detail.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Exact => "exact",
            Method::Numeric => "numeric",
            Method::Symbolic => "symbolic",
            Method::Relation => "relation",
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
pub enum Form {
    /// One expression (or a word).
    Scalar(String),
    /// Brackets with comma-separated items: tuples `(1,2)`, intervals `[1,3)`, `(-\infty,2]`.
    Bracketed { open: char, close: char, items: Vec<String> },
    /// `\{1,2\}`: order-free.
    Set(Vec<String>),
    /// Bare lists `1, 2`, `a \pm b`, several boxes: order-free.
    List(Vec<String>),
    /// Rows of cells.
    Matrix(Vec<Vec<String>>),
    /// Intervals joined by `\cup`.
    Union(Vec<String>),
    /// Sides joined by relation signs (`=`, `≤`, `≥`, `<`, `>`, `≠`, `≈`).
    Relation { sides: Vec<String>, ops: Vec<char> },
}

impl Form {
    /// How many items a list-like answer holds (1 for anything else).
    pub fn item_count(&self) -> usize {
        match self {
            Form::Set(items) | Form::List(items) => items.len(),
            _ => 1,
        }
    }
}

static SIMPLE_LHS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:[a-zA-Z]|[A-Z]{2,3}|\\[a-zA-Z]+)(?:_\{?[a-zA-Z0-9]+\}?)?(?:'*)(?:\([a-z0-9]+\))?$").unwrap()
});
static TUPLE_LABEL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\((?:[a-zA-Z](?:_\{?[a-zA-Z0-9]+\}?)?,)+[a-zA-Z](?:_\{?[a-zA-Z0-9]+\}?)?\)$").unwrap()
});
static VARIABLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?[a-zA-Z0-9]+\}?)?$").unwrap());
static CHOICE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\(?([A-Ea-e])\)?$").unwrap());
static CHOICE_THEN_VALUE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\([A-Ea-e]\)(.+)$").unwrap());
static INTEGER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^-?\d+$").unwrap());
static DECIMAL_COMMA: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^-?\d+,(?:\d{1,2}|\d{4,})$").unwrap());
static WORD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[A-Za-z]{2,}$").unwrap());

const RELATION_SIGNS: [char; 7] = ['=', '\u{2264}', '\u{2265}', '<', '>', '\u{2260}', '\u{2248}'];

/// Compare a prediction to the gold, both normalised, with relative tolerance `rel_tol`.
pub fn equivalent(gold: &Normalized, pred: &Normalized, rel_tol: f64, deadline: &Deadline) -> Judgement {
    if gold.text.is_empty() || pred.text.is_empty() {
        return Judgement::Different;
    }
    if gold.text == pred.text || text_key(&gold.text) == text_key(&pred.text) {
        return Judgement::Equal(Method::Exact);
    }
    let gold_form = form(&gold.text, true);
    let pred_text = match (&gold_form, DECIMAL_COMMA.is_match(&pred.text)) {
        (Form::Scalar(_), true) => pred.text.replace(',', "."),
        _ => pred.text.clone(),
    };
    let mut scales = vec![1.0];
    if gold.percent || pred.percent {
        scales.extend([0.01, 100.0]);
    }
    if gold.degrees || pred.degrees {
        scales.extend([std::f64::consts::PI / 180.0, 180.0 / std::f64::consts::PI]);
    }
    let cmp = Comparer { rel_tol, scales, deadline };
    let mut result = cmp.forms(&gold_form, &form(&pred_text, false), 0);
    if result == Some(None) && !CHOICE.is_match(&gold.text) {
        // `\textbf{(B) }6` against the value `6`: the choice label goes.
        if let Some(rest) = CHOICE_THEN_VALUE.captures(&pred_text) {
            result = cmp.forms(&gold_form, &form(&rest[1], false), 0);
        }
    }
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

/// Decide the shape of a normalised answer; `gold` allows a labelled tuple `(p,q)=(3,2)`.
pub fn form(s: &str, gold: bool) -> Form {
    let s = s.trim();
    if let Some(rows) = matrix(s) {
        return Form::Matrix(rows);
    }
    let unions = split_top_str(s, "\\cup");
    if unions.len() > 1 {
        return Form::Union(unions);
    }
    if let Some(body) = s.strip_prefix("\\{").and_then(|b| b.strip_suffix("\\}")) {
        if encloses(&format!("{{{body}}}")) {
            // Set-builder notation `\{x | -2 \le x \le 3\}` is its condition.
            if let [var, condition] = split_top(body, '|').as_slice() {
                if VARIABLE.is_match(var) {
                    return form(condition, gold);
                }
            }
            return Form::Set(expand_pm(split_top(body, ',').into_iter().filter(|i| !i.is_empty()).collect()));
        }
    }
    let (first, last) = (s.chars().next(), s.chars().last());
    if let (Some(open @ ('(' | '[')), Some(close @ (')' | ']'))) = (first, last) {
        let inner = split_top(&s[1..s.len() - 1], ',');
        if inner.len() > 1 && encloses(s) {
            return Form::Bracketed { open, close, items: inner };
        }
    }
    let items = split_top(s, ',');
    if items.len() > 1 {
        return Form::List(expand_pm(items));
    }
    // One item: a relation, `x \in S`, `a \pm b`, or a scalar.
    if let Some((lhs, rhs)) = s.split_once('\u{2208}') {
        if VARIABLE.is_match(lhs) {
            return form(rhs, gold);
        }
    }
    let (sides, ops) = split_relation(s);
    if !ops.is_empty() {
        if gold && ops == ['='] && TUPLE_LABEL.is_match(&sides[0]) {
            return form(&sides[1], gold);
        }
        return Form::Relation { sides, ops };
    }
    match split_top(s, '\u{b1}').as_slice() {
        [a, b] if a.is_empty() => Form::List(vec![b.clone(), format!("-({b})")]),
        [a, b] => Form::List(vec![format!("{a}+{b}"), format!("{a}-({b})")]),
        _ => {
            // `(1,2)` with one item after all is a scalar in brackets; `[0.5]` too.
            Form::Scalar(s.to_string())
        }
    }
}

/// List items with `\pm` in them stand for two items each (`\pm 1, \pm 2`).
fn expand_pm(items: Vec<String>) -> Vec<String> {
    if !items.iter().any(|i| i.contains("\\pm")) {
        return items;
    }
    let mut out = Vec::with_capacity(items.len() * 2);
    for item in items {
        match split_top(&item, '\u{b1}').as_slice() {
            [a, b] if a.is_empty() => out.extend([b.clone(), format!("-({b})")]),
            [a, b] if !a.contains('=') => out.extend([format!("{a}+{b}"), format!("{a}-({b})")]),
            _ => out.push(item),
        }
    }
    out
}

/// `\matrix{a&b;c&d}` (possibly in brackets) as rows of cells.
fn matrix(s: &str) -> Option<Vec<Vec<String>>> {
    let mut s = s;
    while let Some(inner) = s
        .strip_prefix('(')
        .and_then(|x| x.strip_suffix(')'))
        .or_else(|| s.strip_prefix('[').and_then(|x| x.strip_suffix(']')))
    {
        s = inner;
    }
    let body = s.strip_prefix("\\matrix{")?.strip_suffix('}')?;
    if body.contains("\\matrix") {
        return None;
    }
    let rows: Vec<Vec<String>> = body.split(';').map(|r| r.split('&').map(str::to_string).collect()).collect();
    (rows.len() * rows[0].len() <= MAX_ITEMS).then_some(rows)
}

/// Split at top-level relation signs: `(sides, signs)`.
fn split_relation(s: &str) -> (Vec<String>, Vec<char>) {
    let mut sides = vec![String::new()];
    let mut ops = Vec::new();
    let mut depth = 0i32;
    for c in s.chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            _ => {}
        }
        if depth == 0 && RELATION_SIGNS.contains(&c) {
            ops.push(c);
            sides.push(String::new());
        } else {
            sides.last_mut().expect("never empty").push(c);
        }
    }
    if sides.iter().any(|s| s.is_empty()) {
        return (vec![s.to_string()], Vec::new());
    }
    (sides, ops)
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

/// Split at a top-level multi-character separator (`\cup`).
fn split_top_str(s: &str, sep: &str) -> Vec<String> {
    if !s.contains(sep) {
        return vec![s.to_string()];
    }
    let mut items = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            _ => {}
        }
        if depth == 0 && s[i..].starts_with(sep) && !s[i + sep.len()..].starts_with(|c: char| c.is_ascii_alphabetic()) {
            items.push(s[start..i].to_string());
            i += sep.len();
            start = i;
            continue;
        }
        i += 1;
    }
    items.push(s[start..].to_string());
    items
}

/// Whether `s` is a plain label that may stand left of `=` (`x`, `f(x)`, `AB`, `a_1`), or
/// holds no letters at all (`2+3` in `2+3=5`).
fn is_label(s: &str) -> bool {
    SIMPLE_LHS.is_match(s) || !s.chars().any(|c| c.is_ascii_alphabetic())
}

/// One interval `(open, lo, hi, close)` from a one-variable inequality (`x \geq 5`, `1<x\le3`).
fn relation_interval(sides: &[String], ops: &[char]) -> Option<Form> {
    let inf = || "\\infty".to_string();
    let neg_inf = || "-\\infty".to_string();
    let less = |op: char| matches!(op, '<' | '\u{2264}');
    let greater = |op: char| matches!(op, '>' | '\u{2265}');
    let strict = |op: char| matches!(op, '<' | '>');
    let var = |s: &str| VARIABLE.is_match(s) && s != "e" && s != "\\pi";
    let interval = |lo: String, lo_strict: bool, hi: String, hi_strict: bool| Form::Bracketed {
        open: if lo_strict || lo == neg_inf() { '(' } else { '[' },
        close: if hi_strict || hi == inf() { ')' } else { ']' },
        items: vec![lo, hi],
    };
    match (sides, ops) {
        ([a, b], [op]) if var(a) && !var(b) => {
            if less(*op) {
                Some(interval(neg_inf(), true, b.clone(), strict(*op)))
            } else if greater(*op) {
                Some(interval(b.clone(), strict(*op), inf(), true))
            } else {
                None
            }
        }
        ([a, b], [op]) if var(b) && !var(a) => {
            if less(*op) {
                Some(interval(a.clone(), strict(*op), inf(), true))
            } else if greater(*op) {
                Some(interval(neg_inf(), true, a.clone(), strict(*op)))
            } else {
                None
            }
        }
        ([a, x, b], [p, q]) if var(x) && less(*p) && less(*q) => {
            Some(interval(a.clone(), strict(*p), b.clone(), strict(*q)))
        }
        ([a, x, b], [p, q]) if var(x) && greater(*p) && greater(*q) => {
            Some(interval(b.clone(), strict(*q), a.clone(), strict(*p)))
        }
        _ => None,
    }
}

/// A form read as a union of intervals, when it is one (an interval, a union, an inequality in
/// one variable, or a list of those).
fn as_intervals(f: &Form) -> Option<Vec<Form>> {
    match f {
        Form::Bracketed { items, .. } if items.len() == 2 => Some(vec![f.clone()]),
        Form::Relation { sides, ops } if ops == &['\u{2260}'] => {
            // `x \ne c`: the line without one point.
            let var = |s: &str| VARIABLE.is_match(s) && s != "e";
            let c = match (var(&sides[0]), var(&sides[1])) {
                (true, false) => &sides[1],
                (false, true) => &sides[0],
                _ => return None,
            };
            let part =
                |lo: &str, hi: &str| Form::Bracketed { open: '(', close: ')', items: vec![lo.into(), hi.into()] };
            Some(vec![part("-\\infty", c), part(c, "\\infty")])
        }
        Form::Relation { sides, ops } => relation_interval(sides, ops).map(|i| vec![i]),
        Form::Union(parts) => {
            parts.iter().map(|p| as_intervals(&form(p, false))).collect::<Option<Vec<_>>>().map(|v| v.concat())
        }
        Form::List(items) => {
            items.iter().map(|p| as_intervals(&form(p, false))).collect::<Option<Vec<_>>>().map(|v| v.concat())
        }
        _ => None,
    }
}

/// Comparison settings shared by every step.
struct Comparer<'a> {
    rel_tol: f64,
    /// Factors between gold and prediction that still count as equal: 1, and 100 when a percent
    /// sign was seen, π/180 when a degree sign was.
    scales: Vec<f64>,
    deadline: &'a Deadline,
}

/// `None`: out of time; `Some(None)`: different; `Some(Some(method))`: equal.
type Outcome = Option<Option<Method>>;

impl Comparer<'_> {
    /// Compare two forms, the gold's deciding how the prediction is read.
    fn forms(&self, gold: &Form, pred: &Form, depth: usize) -> Outcome {
        if self.deadline.passed() {
            return None;
        }
        if depth > MAX_NESTING {
            return Some(None);
        }
        let structure = |r: Option<bool>| r.map(|eq| eq.then_some(Method::Structure));
        match (gold, pred) {
            (Form::Scalar(g), Form::Scalar(p)) => self.scalar(g, p),
            (Form::Scalar(_), Form::Relation { sides, ops }) => self.by_side(gold, sides, ops, depth),
            (Form::Relation { sides, ops }, Form::Relation { sides: ps, ops: pops }) => {
                self.relations(sides, ops, ps, pops, depth)
            }
            (Form::Relation { sides, ops }, _) if ops == &['='] && is_label(&sides[0]) => {
                self.forms(&form(&sides[1], true), pred, depth + 1)
            }
            (Form::Bracketed { open, close, items }, Form::Bracketed { open: o, close: c, items: p }) => {
                let same = open == o && close == c && items.len() == p.len();
                structure(self.in_order(same, items, p, depth))
            }
            (Form::Bracketed { open: '(', close: ')', items }, Form::Matrix(rows))
            | (Form::Matrix(rows), Form::Bracketed { open: '(', close: ')', items }) => {
                let cells: Vec<String> = rows.concat();
                let vector = rows.len() == 1 || rows.iter().all(|r| r.len() == 1);
                structure(self.in_order(vector && cells.len() == items.len(), items, &cells, depth))
            }
            (Form::Set(g) | Form::List(g), Form::Set(p) | Form::List(p)) => structure(self.any_order(g, p, depth)),
            (Form::Set(_) | Form::List(_), Form::Relation { sides, ops }) if ops == &['='] && is_label(&sides[0]) => {
                // `x = \pm 3` against `\pm 3`, `x = \{1, 2\}` against `1, 2`.
                self.forms(gold, &form(&sides[1], false), depth + 1)
            }
            (Form::Set(g), Form::Bracketed { items, .. }) => structure(self.any_order(g, items, depth)),
            (Form::Bracketed { open: '(', close: ')', items }, Form::List(p)) => {
                structure(self.in_order(items.len() == p.len(), items, p, depth))
            }
            (Form::List(g), Form::Bracketed { open: '(', close: ')', items }) => {
                let labelled = g.iter().all(|i| matches!(form(i, true), Form::Relation { ops, .. } if ops == ['=']));
                structure(self.in_order(labelled && g.len() == items.len(), g, items, depth))
            }
            (Form::Matrix(g), Form::Matrix(p)) => {
                let same = g.len() == p.len() && g.iter().zip(p).all(|(a, b)| a.len() == b.len());
                structure(self.in_order(same, &g.concat(), &p.concat(), depth))
            }
            (Form::Union(_) | Form::Bracketed { .. } | Form::Relation { .. }, _) => self.intervals(gold, pred, depth),
            _ => Some(None),
        }
    }

    /// A scalar gold against `x = 5`, `2+3 = 5`, `5 = x`: compared with the side a grader reads.
    fn by_side(&self, gold: &Form, sides: &[String], ops: &[char], depth: usize) -> Outcome {
        if !ops.iter().all(|op| matches!(op, '=' | '\u{2248}')) {
            return Some(None);
        }
        // The last side is the result (`\pi r^2 = 25\pi`, `m+n = 199+5 = 204`); `5 = x` reads
        // the other way round.
        let last = sides.last().expect("a relation has sides");
        let r = self.forms(gold, &form(last, false), depth + 1)?;
        if r.is_some() {
            return Some(r);
        }
        // `\sqrt{13} \approx 3.606`: the exact value stands before the first `≈`.
        if let Some(k) = ops.iter().position(|op| *op == '\u{2248}') {
            if k + 1 < sides.len() {
                let r = self.forms(gold, &form(&sides[k], false), depth + 1)?;
                if r.is_some() {
                    return Some(r);
                }
            }
        }
        if sides.len() != 2 || !SIMPLE_LHS.is_match(last) {
            return Some(None);
        }
        self.forms(gold, &form(&sides[0], false), depth + 1)
    }

    /// Two relations: same label and same right side, the same equation up to a factor, the same
    /// inequality up to a positive factor, or the same intervals.
    fn relations(&self, gs: &[String], gops: &[char], ps: &[String], pops: &[char], depth: usize) -> Outcome {
        let equations = gops.iter().chain(pops).all(|op| *op == '=');
        if equations && gops.len() == 1 && pops.len() == 1 {
            if gs[0] == ps[0] && SIMPLE_LHS.is_match(&gs[0]) {
                let r = self.forms(&form(&gs[1], true), &form(&ps[1], false), depth + 1)?;
                if r.is_some() {
                    return Some(r);
                }
            }
            return self.proportional(&gs[0], &gs[1], &ps[0], &ps[1], false);
        }
        if equations && gops.len() == 1 && is_label(&gs[0]) {
            // A chain `x = 2+3 = 5` against `x = 5`: its last side.
            return self.by_side(&form(&gs[1], true), ps, pops, depth);
        }
        let ineq = |ops: &[char]| ops.len() == 1 && !matches!(ops[0], '=' | '\u{2260}' | '\u{2248}');
        if ineq(gops) && ineq(pops) {
            // Orient both as `small <(=) big`.
            let orient = |s: &[String], op: char| match op {
                '<' | '\u{2264}' => (s[0].clone(), s[1].clone(), op == '<'),
                _ => (s[1].clone(), s[0].clone(), op == '>'),
            };
            let (ga, gb, gstrict) = orient(gs, gops[0]);
            let (pa, pb, pstrict) = orient(ps, pops[0]);
            if gstrict == pstrict {
                let r = self.proportional(&gb, &ga, &pb, &pa, true)?;
                if r.is_some() {
                    return Some(r);
                }
            }
        }
        if gops == pops && gops.iter().all(|op| *op == '\u{2260}') && gs.len() == ps.len() {
            return self.in_order(true, gs, ps, depth).map(|eq| eq.then_some(Method::Relation));
        }
        let g = Form::Relation { sides: gs.to_vec(), ops: gops.to_vec() };
        let p = Form::Relation { sides: ps.to_vec(), ops: pops.to_vec() };
        self.intervals(&g, &p, depth)
    }

    /// Both sides read as unions of intervals, compared in any order.
    fn intervals(&self, gold: &Form, pred: &Form, depth: usize) -> Outcome {
        let (Some(g), Some(p)) = (as_intervals(gold), as_intervals(pred)) else {
            return Some(None);
        };
        if g.len() != p.len() || g.len() > MAX_ITEMS {
            return Some(None);
        }
        let mut used = vec![false; p.len()];
        for gi in &g {
            let mut found = false;
            for (j, pj) in p.iter().enumerate() {
                if used[j] {
                    continue;
                }
                let (Form::Bracketed { open, close, items }, Form::Bracketed { open: o, close: c, items: pi }) =
                    (gi, pj)
                else {
                    continue;
                };
                let same = open == o && close == c && items.len() == pi.len();
                if self.in_order(same, items, pi, depth)? {
                    used[j] = true;
                    found = true;
                    break;
                }
            }
            if !found {
                return Some(None);
            }
        }
        Some(Some(if matches!(gold, Form::Relation { .. }) { Method::Relation } else { Method::Structure }))
    }

    /// `a − b` and `c − d` are proportional (by a positive factor when `positive`): the same
    /// equation, or the same inequality.
    fn proportional(&self, a: &str, b: &str, c: &str, d: &str, positive: bool) -> Outcome {
        let (Some(a), Some(b), Some(c), Some(d)) = (Expr::parse(a), Expr::parse(b), Expr::parse(c), Expr::parse(d))
        else {
            return Some(None);
        };
        let (f, g) = (Expr::difference(&a, &b), Expr::difference(&c, &d));
        if f.vars.is_empty() && g.vars.is_empty() {
            return Some(None);
        }
        let mut ratio: Option<Val> = None;
        let mut seen = 0;
        for point in 0..POINTS + 2 {
            if self.deadline.passed() {
                return None;
            }
            let (Some(x), Some(y)) = (f.eval(point), g.eval(point)) else {
                return Some(None);
            };
            match (is_zero(&x, self.rel_tol), is_zero(&y, self.rel_tol)) {
                (true, true) => continue,
                (false, false) => {}
                _ => return Some(None),
            }
            let r = divide(&y, &x);
            if let Some(first) = &ratio {
                if !self.same(first, &r, f.inexact || g.inexact, false) {
                    return Some(None);
                }
            } else {
                if positive {
                    let rc = r.to_c();
                    if rc.re <= 0.0 || rc.im.abs() > self.rel_tol * rc.re.abs() {
                        return Some(None);
                    }
                }
                ratio = Some(r);
            }
            seen += 1;
        }
        Some((seen >= 2).then_some(Method::Relation))
    }

    /// Items equal pairwise in order (tuples, intervals, matrices).
    fn in_order(&self, same_shape: bool, gold: &[String], pred: &[String], depth: usize) -> Option<bool> {
        if !same_shape || gold.len() > MAX_ITEMS {
            return Some(false);
        }
        for (g, p) in gold.iter().zip(pred) {
            if self.forms(&form(g, true), &form(p, false), depth + 1)?.is_none() {
                return Some(false);
            }
        }
        Some(true)
    }

    /// Items equal as a multiset, in any order (greedy matching: each gold item takes the first
    /// unused prediction item equal to it; items are distinct values in practice).
    fn any_order(&self, gold: &[String], pred: &[String], depth: usize) -> Option<bool> {
        if gold.len() != pred.len() || gold.len() > MAX_ITEMS {
            return Some(false);
        }
        let pred_forms: Vec<Form> = pred.iter().map(|p| form(p, false)).collect();
        let mut used = vec![false; pred.len()];
        for g in gold {
            let gf = form(g, true);
            let mut found = false;
            for (j, p) in pred_forms.iter().enumerate() {
                if !used[j] && self.forms(&gf, p, depth + 1)?.is_some() {
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

    /// Two scalars: text, integers, then values (at sample points when there are variables).
    fn scalar(&self, gold: &str, pred: &str) -> Outcome {
        if self.deadline.passed() {
            return None;
        }
        if gold == pred || text_key(gold) == text_key(pred) {
            return Some(Some(Method::Exact));
        }
        if is_word(gold) || is_word(pred) {
            return Some(None);
        }
        let percent = self.scales.len() > 1;
        if INTEGER.is_match(gold) && INTEGER.is_match(pred) && !percent {
            // Integers compare exactly, however large: 1000000 is not 1000001, 007 is 7.
            let (g, p) = (gold.parse::<BigInt>().ok(), pred.parse::<BigInt>().ok());
            return Some((g.is_some() && g == p).then_some(Method::Numeric));
        }
        let (Some(g), Some(p)) = (Expr::parse(gold), Expr::parse(pred)) else {
            return Some(None);
        };
        let free = !(g.vars.is_empty() && p.vars.is_empty());
        let points = if free { POINTS } else { 1 };
        let inexact = g.inexact || p.inexact;
        let mut defined = 0;
        for point in 0..points {
            if self.deadline.passed() {
                return None;
            }
            match (g.eval(point), p.eval(point)) {
                (Some(x), Some(y)) => {
                    if !self.same(&x, &y, inexact, percent) {
                        return Some(None);
                    }
                    defined += 1;
                }
                (None, None) if free => {}
                _ => return Some(None),
            }
        }
        Some((defined > 0).then_some(if free { Method::Symbolic } else { Method::Numeric }))
    }

    /// Equal values: exactly when both are exact and no decimal was written, else within the
    /// tolerance (and up to a factor 100 when a percent sign was seen, π/180 for a degree sign).
    fn same(&self, gold: &Val, pred: &Val, inexact: bool, scaled: bool) -> bool {
        if let (Val::Q(a), Val::Q(b), false, false) = (gold, pred, inexact, scaled) {
            return a == b;
        }
        let (g, p) = (gold.to_c(), pred.to_c());
        let scales: &[f64] = if scaled { &self.scales } else { &[1.0] };
        scales.iter().any(|k| close(g * k, p, self.rel_tol) || close(g, p * k, self.rel_tol))
    }
}

/// A word answer (`odd`, `yes`, `none`): compared as text only, never as a product of letters.
fn is_word(s: &str) -> bool {
    WORD.is_match(s)
}

fn is_zero(v: &Val, rel_tol: f64) -> bool {
    match v {
        Val::Q(q) => num_traits::Zero::is_zero(q),
        Val::C(c) => c.norm() <= rel_tol * 1e-6,
    }
}

fn divide(a: &Val, b: &Val) -> Val {
    match (a, b) {
        (Val::Q(x), Val::Q(y)) => Val::Q(x / y),
        _ => Val::C(a.to_c() / b.to_c()),
    }
}

/// `|a - b| <= rel_tol * max(|a|, |b|)`, with an absolute floor of `rel_tol * 1e-6` near zero.
fn close(a: Complex64, b: Complex64, rel_tol: f64) -> bool {
    (a - b).norm() <= rel_tol * a.norm().max(b.norm()).max(1e-6)
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
        let list = |items: &[&str]| Form::List(items.iter().map(|s| s.to_string()).collect());
        assert_eq!(form("(1,2)", false), b('(', ')', &["1", "2"]));
        assert_eq!(form("[1,3)", false), b('[', ')', &["1", "3"]));
        assert_eq!(form("(-\\infty,2]", false), b('(', ']', &["-\\infty", "2"]));
        assert_eq!(form("\\{1,2,3\\}", false), Form::Set(vec!["1".into(), "2".into(), "3".into()]));
        assert_eq!(form("x=2,x=3", false), list(&["x=2", "x=3"]));
        assert_eq!(form("1\\pm\\sqrt{2}", false), list(&["1+\\sqrt{2}", "1-(\\sqrt{2})"]));
        assert_eq!(form("(1)+(2)", false), Form::Scalar("(1)+(2)".into()));
        assert_eq!(form("(p,q)=(3,2)", true), b('(', ')', &["3", "2"]));
        assert!(matches!(form("(p,q)=(3,2)", false), Form::Relation { .. }));
        assert_eq!(
            form("\\matrix{1&2;3&4}", false),
            Form::Matrix(vec![vec!["1".into(), "2".into()], vec!["3".into(), "4".into()]])
        );
        assert_eq!(form("x\u{2208}[0,1)", false), b('[', ')', &["0", "1"]));
        assert_eq!(form("(0,1)\\cup(2,3)", false), Form::Union(vec!["(0,1)".into(), "(2,3)".into()]));
    }

    #[test]
    fn inequalities_become_intervals() {
        let i = |s: &str| match form(s, false) {
            Form::Relation { sides, ops } => relation_interval(&sides, &ops),
            _ => None,
        };
        let b =
            |o, c, lo: &str, hi: &str| Some(Form::Bracketed { open: o, close: c, items: vec![lo.into(), hi.into()] });
        assert_eq!(i("x\u{2265}5"), b('[', ')', "5", "\\infty"));
        assert_eq!(i("5\u{2265}x"), b('(', ']', "-\\infty", "5"));
        assert_eq!(i("1<x\u{2264}3"), b('(', ']', "1", "3"));
    }

    #[test]
    fn closeness() {
        let c = |x: f64| Complex64::new(x, 0.0);
        assert!(close(c(1.0), c(1.0 + 1e-9), 1e-6));
        assert!(!close(c(22.0 / 7.0), c(std::f64::consts::PI), 1e-6));
        assert!(close(c(0.0), c(1e-13), 1e-6));
    }
}
