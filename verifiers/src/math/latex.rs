//! LaTeX-to-expression pass: parses a normalised answer into an `evalexpr` expression string and
//! evaluates it to an `f64`, with free variables bound to fixed sample values.
//!
//! Understood: `+ - * /`, `\cdot \times \div`, `^` with braced or bare exponents (bare digits are
//! read as one number, `2^10` = 1024, as plain-text answers mean), `\frac{a}{b}` and `\frac12`,
//! `\sqrt{x}`, `\sqrt[n]{x}`, `\pi`, `e`, implicit multiplication (`2\sqrt{3}`, `3\pi`, `2x`),
//! scientific notation (`1.5e3`, `1.5\times10^{3}`), mixed numbers (`3\frac{1}{2}`), elementary
//! functions (`\sin`, `\cos`, `\tan`, `\ln`, `\log` = natural log, `\exp`), single-letter and
//! Greek variables with subscripts.
//!
//! Left out: factorials, binomials, absolute values, `\infty`, matrices, calculus; these fail to
//! parse and the caller falls back to string comparison. Every number is emitted as a float so
//! that `evalexpr` never does integer arithmetic (no `1/2 = 0`, no overflow, no big powers);
//! inputs are capped in length, token count and nesting depth so one parse is bounded.

use evalexpr::{ContextWithMutableVariables, HashMapContext, Node, Value};

/// Longest answer (bytes) the parser will look at.
const MAX_LEN: usize = 1000;
/// Most tokens in one answer.
const MAX_TOKENS: usize = 400;
/// Deepest nesting of groups, fractions, roots and powers.
const MAX_DEPTH: usize = 48;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(String),
    Var(String),
    Cmd(String),
    Sym(char),
}

/// A parsed scalar expression, ready to evaluate at any binding of its variables.
pub struct Expr {
    tree: Node,
    /// Free variables, as `evalexpr` identifiers.
    pub vars: Vec<String>,
}

impl Expr {
    /// Parse a normalised LaTeX answer; `None` when it is not a scalar expression we understand.
    pub fn parse(latex: &str) -> Option<Expr> {
        if latex.len() > MAX_LEN {
            return None;
        }
        let toks = tokenize(latex)?;
        let mut p = Parser { toks, pos: 0, depth: 0, vars: Vec::new() };
        let source = p.expr()?;
        if p.pos != p.toks.len() {
            return None;
        }
        let tree = evalexpr::build_operator_tree(&source).ok()?;
        Some(Expr { tree, vars: p.vars })
    }

    /// Evaluate with every variable bound to its sample value at `point` (0, 1, ...).
    pub fn eval(&self, point: usize) -> Option<f64> {
        let mut ctx = HashMapContext::new();
        for var in &self.vars {
            ctx.set_value(var.clone(), Value::Float(sample_value(var, point))).ok()?;
        }
        let value = match self.tree.eval_with_context(&ctx).ok()? {
            Value::Float(f) => f,
            Value::Int(i) => i as f64,
            _ => return None,
        };
        value.is_finite().then_some(value)
    }
}

/// A fixed, name-dependent value for a variable: distinct per name and per point, away from 0 and 1.
fn sample_value(name: &str, point: usize) -> f64 {
    let h = name.bytes().fold(17u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    1.3 + ((h % 97) as f64) / 41.0 + point as f64 * 0.7183
}

/// Split a normalised answer into tokens; `None` on characters we do not read.
fn tokenize(s: &str) -> Option<Vec<Tok>> {
    let chars: Vec<char> = s.chars().filter(|c| !c.is_whitespace()).collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            let (tok, next) = number(&chars, i);
            toks.push(tok);
            i = next;
        } else if c == '\\' {
            let name: String = chars[i + 1..].iter().take_while(|c| c.is_ascii_alphabetic()).collect();
            if name.is_empty() {
                return None;
            }
            i += 1 + name.len();
            toks.push(Tok::Cmd(name));
        } else if c.is_ascii_alphabetic() {
            toks.push(Tok::Var(c.to_string()));
            i += 1;
        } else if "+-*/^()[]{}_".contains(c) {
            toks.push(Tok::Sym(c));
            i += 1;
        } else {
            return None;
        }
        if toks.len() > MAX_TOKENS {
            return None;
        }
    }
    Some(toks)
}

/// Read a decimal number at `i` (with an optional `e`/`E` exponent glued to it).
fn number(chars: &[char], mut i: usize) -> (Tok, usize) {
    let start = i;
    while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
        i += 1;
    }
    let mut text: String = chars[start..i].iter().collect();
    let sign = chars.get(i + 1).is_some_and(|c| *c == '-' || *c == '+') as usize;
    let exp_digits = chars[(i + 1 + sign).min(chars.len())..].iter().take_while(|c| c.is_ascii_digit()).count();
    if matches!(chars.get(i), Some('e' | 'E')) && exp_digits > 0 {
        let exp: String = chars[i + 1..i + 1 + sign + exp_digits].iter().collect();
        text = format!("{text}e{exp}");
        i += 1 + sign + exp_digits;
    }
    (Tok::Num(text), i)
}

/// Render a numeric literal as an `evalexpr` float expression.
fn float_literal(text: &str) -> Option<String> {
    let (mantissa, exp) = match text.split_once('e') {
        Some((m, e)) => (m, Some(e.parse::<i32>().ok()?)),
        None => (text, None),
    };
    if mantissa.matches('.').count() > 1 || mantissa.ends_with('.') {
        return None;
    }
    let m = match mantissa.contains('.') {
        true if mantissa.starts_with('.') => format!("0{mantissa}"),
        true => mantissa.to_string(),
        false => format!("{mantissa}.0"),
    };
    Some(match exp {
        Some(e) => format!("({m}*math::pow(10.0,{e}.0))"),
        None => m,
    })
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
    vars: Vec<String>,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn eat_sym(&mut self, c: char) -> bool {
        let hit = self.peek() == Some(&Tok::Sym(c));
        self.pos += hit as usize;
        hit
    }

    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// expr := term (('+' | '-') term)*
    fn expr(&mut self) -> Option<String> {
        self.enter()?;
        let mut out = self.term()?;
        loop {
            let op = if self.eat_sym('+') {
                '+'
            } else if self.eat_sym('-') {
                '-'
            } else {
                break;
            };
            out = format!("({out}{op}{})", self.term()?);
        }
        self.depth -= 1;
        Some(out)
    }

    /// term := unary (('*' | '/' | \cdot | \times | \div)? unary)*  — juxtaposition multiplies.
    fn term(&mut self) -> Option<String> {
        let mut out = self.unary()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Sym('*')) => '*',
                Some(Tok::Sym('/')) => '/',
                Some(Tok::Cmd(c)) if c == "cdot" || c == "times" => '*',
                Some(Tok::Cmd(c)) if c == "div" => '/',
                Some(t) if starts_primary(t) => {
                    out = format!("({out}*{})", self.power()?);
                    continue;
                }
                _ => break,
            };
            self.pos += 1;
            out = format!("({out}{op}{})", self.unary()?);
        }
        Some(out)
    }

    /// unary := ('-' | '+') unary | power
    fn unary(&mut self) -> Option<String> {
        if self.eat_sym('-') {
            return Some(format!("(-{})", self.unary()?));
        }
        if self.eat_sym('+') {
            return self.unary();
        }
        self.power()
    }

    /// power := primary ('^' exponent)?   (right-associative: `2^3^2` = 2^(3^2))
    fn power(&mut self) -> Option<String> {
        self.enter()?;
        let base = self.primary()?;
        let out = if self.eat_sym('^') {
            let exp = if self.eat_sym('-') { format!("(-{})", self.power()?) } else { self.power()? };
            format!("math::pow({base},{exp})")
        } else {
            base
        };
        self.depth -= 1;
        Some(out)
    }

    /// primary := number | variable | group | \frac | \sqrt | constant | function
    fn primary(&mut self) -> Option<String> {
        let tok = self.peek()?.clone();
        self.pos += 1;
        match tok {
            Tok::Num(text) => float_literal(&text),
            Tok::Var(v) => Some(self.variable(v)),
            Tok::Sym(open @ ('(' | '{' | '[')) => {
                let inner = self.expr()?;
                let close = match open {
                    '(' => ')',
                    '{' => '}',
                    _ => ']',
                };
                self.eat_sym(close).then_some(inner)
            }
            Tok::Cmd(name) => self.command(&name),
            Tok::Sym(_) => None,
        }
    }

    /// A variable, with an optional subscript (`x_1`, `a_{n}`); `e` alone is Euler's number.
    fn variable(&mut self, name: String) -> String {
        let mut ident = format!("var_{name}");
        if self.eat_sym('_') {
            match self.peek().cloned() {
                Some(Tok::Num(n)) | Some(Tok::Var(n)) => {
                    self.pos += 1;
                    ident.push_str(&format!("_{}", n.replace('.', "_")));
                }
                Some(Tok::Sym('{')) => {
                    let mut sub = String::new();
                    self.pos += 1;
                    while let Some(Tok::Num(t) | Tok::Var(t)) = self.peek().cloned() {
                        sub.push_str(&t);
                        self.pos += 1;
                    }
                    self.eat_sym('}');
                    ident.push_str(&format!("_{}", sub.replace('.', "_")));
                }
                _ => {}
            }
        } else if name == "e" {
            return std::f64::consts::E.to_string();
        }
        if !self.vars.contains(&ident) {
            self.vars.push(ident.clone());
        }
        ident
    }

    /// A backslash command in value position.
    fn command(&mut self, name: &str) -> Option<String> {
        match name {
            "frac" => {
                let num = self.argument()?;
                let den = self.argument()?;
                Some(format!("({num}/{den})"))
            }
            "sqrt" => {
                let root = if self.eat_sym('[') { Some(self.bracket_index()?) } else { None };
                let body = self.argument()?;
                Some(match root {
                    Some(n) => format!("math::pow({body},(1.0/{n}))"),
                    None => format!("math::sqrt({body})"),
                })
            }
            "pi" => Some(std::f64::consts::PI.to_string()),
            "sin" | "cos" | "tan" | "ln" | "exp" | "log" => {
                let func = if name == "log" { "ln" } else { name };
                let arg = match self.peek() {
                    Some(Tok::Sym('(' | '{')) => self.primary()?,
                    _ => self.power()?,
                };
                Some(format!("math::{func}({arg})"))
            }
            "alpha" | "beta" | "gamma" | "theta" | "lambda" | "mu" | "phi" | "omega" => {
                Some(self.variable(name.to_string()))
            }
            _ => None,
        }
    }

    /// The `n` of `\sqrt[n]{...}` (the `[` already consumed).
    fn bracket_index(&mut self) -> Option<String> {
        let index = self.expr()?;
        self.eat_sym(']').then_some(index)
    }

    /// A command argument: a braced group, or a single digit / letter / command (`\frac12`).
    fn argument(&mut self) -> Option<String> {
        match self.peek()?.clone() {
            Tok::Sym('{') => self.primary(),
            Tok::Num(text) if text.len() > 1 && text.chars().all(|c| c.is_ascii_digit()) => {
                // `\frac12`: the argument is the first digit; the rest stays for the next read.
                self.toks[self.pos] = Tok::Num(text[1..].to_string());
                float_literal(&text[..1])
            }
            _ => self.primary(),
        }
    }
}

/// Whether a token can begin a factor of an implicit product (`2\pi`, `3x`, `2(1+x)`).
fn starts_primary(tok: &Tok) -> bool {
    match tok {
        Tok::Num(_) | Tok::Var(_) => true,
        Tok::Sym(c) => matches!(c, '(' | '{'),
        Tok::Cmd(c) => !matches!(c.as_str(), "cdot" | "times" | "div" | "pm" | "mp" | "infty"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &str) -> Option<f64> {
        Expr::parse(s)?.eval(0)
    }

    #[test]
    fn evaluates_latex() {
        let cases: &[(&str, f64)] = &[
            ("\\frac{1}{2}", 0.5),
            ("\\frac12", 0.5),
            ("\\frac123", 1.5),
            ("2\\sqrt{3}", 2.0 * 3f64.sqrt()),
            ("\\sqrt[3]{8}", 2.0),
            ("3\\pi", 3.0 * std::f64::consts::PI),
            ("1.5\\times10^{3}", 1500.0),
            ("1.5e3", 1500.0),
            ("2^10", 1024.0),
            ("2^{-1}", 0.5),
            ("2^3^2", 512.0),
            ("-2^2", -4.0),
            // A mixed number is read as a product, as LaTeX and SymPy read it.
            ("3\\frac{1}{2}", 1.5),
            ("\\frac{\\sqrt{2}}{2}", 2f64.sqrt() / 2.0),
            ("(1+2)(3+4)", 21.0),
            ("10/4", 2.5),
            (".5", 0.5),
            ("e^{2}", std::f64::consts::E.powi(2)),
            ("\\ln(e)", 1.0),
        ];
        for (s, want) in cases {
            let got = value(s).unwrap_or_else(|| panic!("{s} did not evaluate"));
            assert!((got - want).abs() <= 1e-12 * want.abs().max(1.0), "{s}: {got} vs {want}");
        }
    }

    #[test]
    fn rejects_what_it_does_not_read() {
        for s in ["5!", "\\binom{5}{2}", "|x|", "(1,2)", "1+", "\\infty", "2^{10^{10^{10}}}"] {
            assert_eq!(value(s), None, "{s} should not evaluate");
        }
        assert!(Expr::parse(&"(".repeat(200)).is_none());
    }

    #[test]
    fn variables_get_sample_values() {
        let a = Expr::parse("2x+1").unwrap();
        let b = Expr::parse("1+x\\cdot2").unwrap();
        assert_eq!(a.vars, vec!["var_x".to_string()]);
        assert_eq!(a.eval(0), b.eval(0));
        assert_ne!(a.eval(0), a.eval(1));
    }
}
