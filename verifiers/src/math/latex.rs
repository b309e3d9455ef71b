//! LaTeX → expression tree, and its evaluation with exact rationals where possible.
//!
//! Understood: `+ - * /`, `\cdot \times \div`, `^` with braced or bare exponents (bare digits are
//! read as one number, `2^10` = 1024, as plain-text answers mean), `\frac{a}{b}` and `\frac12`,
//! `\sqrt{x}`, `\sqrt[n]{x}`, `\pi`, `e`, `i`, implicit multiplication (`2\sqrt{3}`, `3\pi`, `2x`,
//! `x(x+1)`), scientific notation (`1.5e3`, `1.5\times10^{3}`), mixed numbers (`3\frac{1}{2}` =
//! 7/2: an integer then a proper fraction of integers), `n!`, `\binom{n}{k}` (also for symbolic
//! `n`), `|x|`, degrees inside trigonometric answers (`\sin 30^\circ`),
//! trigonometric, hyperbolic and inverse functions with powers (`\sin^2 x`, `\sin^{-1} x`),
//! `\ln`, `\log` (natural), `\log_b`, `\exp`, single-letter and Greek variables with subscripts.
//!
//! Values are exact rationals ([`BigRational`]) while every step stays rational (sums, products,
//! integer powers, perfect roots, factorials, binomials), and complex floats otherwise. Sizes are
//! capped: a rational over [`MAX_BITS`] bits, a power whose result would be, or a factorial or
//! binomial of more than [`MAX_FACTORIAL`] factors leaves the exact path (a float, `inf` for
//! `2^{2^{2^{100}}}`, which counts as no value), so one evaluation is bounded whatever the input.
//!
//! Left out: `\infty` (endpoints are compared as text), calculus, sums and products, matrices
//! (compared cell by cell by the caller), functions other than those above.

use num_bigint::BigInt;
use num_complex::Complex64;
use num_rational::BigRational;
use num_traits::{One, Signed, ToPrimitive, Zero};

/// Longest answer (bytes) the parser will look at.
const MAX_LEN: usize = 1000;
/// Most tokens in one answer.
const MAX_TOKENS: usize = 400;
/// Deepest nesting of groups, fractions, roots and powers.
const MAX_DEPTH: usize = 48;
/// Largest numerator or denominator (in bits) kept exact; beyond it values become floats.
pub const MAX_BITS: u64 = 4096;
/// Most factors multiplied out by a factorial or binomial.
pub const MAX_FACTORIAL: u64 = 1000;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(String),
    Var(String),
    Cmd(String),
    Sym(char),
}

/// Functions of one argument.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Func {
    Sin,
    Cos,
    Tan,
    Sec,
    Csc,
    Cot,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Tanh,
    Ln,
    Exp,
    Sqrt,
    Abs,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
}

/// An expression tree.
#[derive(Debug, Clone)]
enum Node {
    Num(BigRational),
    Var(String),
    Pi,
    E,
    I,
    Neg(Box<Node>),
    Bin(Op, Box<Node>, Box<Node>),
    Func(Func, Box<Node>),
    /// `\sqrt[n]{x}`: the real root for odd `n` and negative `x`.
    Root(Box<Node>, Box<Node>),
    /// `\log_b x` as (base, argument).
    Log(Box<Node>, Box<Node>),
    Fact(Box<Node>),
    Binom(Box<Node>, Box<Node>),
}

/// A value: exact while it can be.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// An exact rational.
    Q(BigRational),
    /// A complex float (real answers have a zero imaginary part).
    C(Complex64),
}

impl Val {
    /// As a complex float.
    pub fn to_c(&self) -> Complex64 {
        match self {
            Val::Q(q) => Complex64::new(q.to_f64().unwrap_or(f64::NAN), 0.0),
            Val::C(c) => *c,
        }
    }

    /// Whether the value is a usable number (finite).
    fn finite(&self) -> bool {
        match self {
            Val::Q(_) => true,
            Val::C(c) => c.re.is_finite() && c.im.is_finite(),
        }
    }
}

/// A parsed scalar expression, ready to evaluate at any binding of its variables.
#[derive(Debug, Clone)]
pub struct Expr {
    tree: Node,
    /// Free variables (names as written, `x`, `a_1`, `\theta`).
    pub vars: Vec<String>,
    /// Whether a decimal literal (`0.5`, `1e3`) appears: its value is then compared with the
    /// tolerance, not exactly.
    pub inexact: bool,
}

impl Expr {
    /// Parse a normalised LaTeX answer; `None` when it is not a scalar expression we understand.
    pub fn parse(latex: &str) -> Option<Expr> {
        if latex.len() > MAX_LEN {
            return None;
        }
        let toks = tokenize(latex)?;
        let inexact = toks.iter().any(|t| matches!(t, Tok::Num(n) if n.contains(['.', 'e'])));
        let mut p = Parser { toks, pos: 0, depth: 0, abs_depth: 0, vars: Vec::new() };
        let tree = p.expr()?;
        if p.pos != p.toks.len() {
            return None;
        }
        Some(Expr { tree, vars: p.vars, inexact })
    }

    /// `a - b` as one expression (for equations and inequalities).
    pub fn difference(a: &Expr, b: &Expr) -> Expr {
        let mut vars = a.vars.clone();
        for v in &b.vars {
            if !vars.contains(v) {
                vars.push(v.clone());
            }
        }
        let tree = Node::Bin(Op::Sub, Box::new(a.tree.clone()), Box::new(b.tree.clone()));
        Expr { tree, vars, inexact: a.inexact || b.inexact }
    }

    /// Evaluate with every variable bound to its sample value at `point` (0, 1, ...); `None` when
    /// undefined there (division by zero, overflow, a factorial of a non-integer, ...).
    pub fn eval(&self, point: usize) -> Option<Val> {
        let v = eval(&self.tree, point)?;
        v.finite().then_some(v)
    }
}

/// A fixed, name-dependent rational value for a variable at a sample point: in [1, 4), with a
/// denominator of 337 so that identities do not hold by integer accident, and distinct per name.
pub fn sample_value(name: &str, point: usize) -> BigRational {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    let mixed = (h ^ (point as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    let k = (mixed >> 33) % 1011;
    BigRational::new(BigInt::from(337 + k), BigInt::from(337))
}

// ---------------------------------------------------------------------------------------------
// Evaluation

fn eval(node: &Node, point: usize) -> Option<Val> {
    Some(match node {
        Node::Num(q) => Val::Q(q.clone()),
        Node::Var(name) => Val::Q(sample_value(name, point)),
        Node::Pi => Val::C(Complex64::new(std::f64::consts::PI, 0.0)),
        Node::E => Val::C(Complex64::new(std::f64::consts::E, 0.0)),
        Node::I => Val::C(Complex64::new(0.0, 1.0)),
        Node::Neg(a) => match eval(a, point)? {
            Val::Q(q) => Val::Q(-q),
            Val::C(c) => Val::C(-c),
        },
        Node::Bin(op, a, b) => {
            let (a, b) = (eval(a, point)?, eval(b, point)?);
            binary(*op, a, b)?
        }
        Node::Func(f, a) => func(*f, eval(a, point)?)?,
        Node::Root(n, x) => {
            let (n, x) = (eval(n, point)?, eval(x, point)?);
            root(n, x)?
        }
        Node::Log(base, x) => {
            let (b, x) = (eval(base, point)?.to_c(), eval(x, point)?.to_c());
            let den = b.ln();
            if den.norm() == 0.0 || x.norm() == 0.0 {
                return None;
            }
            real_if_real(x.ln() / den, b, x)
        }
        Node::Fact(a) => {
            let n = small_natural(&eval(a, point)?)?;
            let mut acc = BigInt::one();
            for k in 2..=n {
                acc *= k;
            }
            Val::Q(BigRational::from_integer(acc))
        }
        Node::Binom(n, k) => {
            let (n, k) = (eval(n, point)?, eval(k, point)?);
            let (Val::Q(n), Val::Q(k)) = (n, k) else { return None };
            if !k.is_integer() || k.is_negative() {
                return None;
            }
            if !n.is_integer() || n.is_negative() {
                // n(n-1)...(n-k+1)/k! for any rational n (`\binom{n}{2}` at a sample point).
                let k = k.to_integer().to_u64().filter(|k| *k <= 64)?;
                let mut acc = BigRational::one();
                for j in 0..k {
                    acc = acc * (&n - BigRational::from_integer(BigInt::from(j)))
                        / BigRational::from_integer(BigInt::from(j + 1));
                }
                return Some(bounded(acc));
            }
            let (n, k) = (n.to_integer(), k.to_integer());
            if k > n {
                return Some(Val::Q(BigRational::zero()));
            }
            let k = k.clone().min(&n - &k).to_u64()?;
            if k > MAX_FACTORIAL || n.bits().saturating_mul(k) > MAX_BITS * 4 {
                return None;
            }
            let mut acc = BigInt::one();
            for j in 0..k {
                acc = acc * (&n - j) / (j + 1);
            }
            Val::Q(BigRational::from_integer(acc))
        }
    })
}

/// A natural number no larger than [`MAX_FACTORIAL`], as for `n!`.
fn small_natural(v: &Val) -> Option<u64> {
    match v {
        Val::Q(q) if q.is_integer() && !q.is_negative() => q.to_integer().to_u64().filter(|n| *n <= MAX_FACTORIAL),
        _ => None,
    }
}

/// Keep an exact rational only while it is small; a larger one becomes a float.
fn bounded(q: BigRational) -> Val {
    if q.numer().bits() > MAX_BITS || q.denom().bits() > MAX_BITS {
        Val::C(Complex64::new(q.to_f64().unwrap_or(f64::NAN), 0.0))
    } else {
        Val::Q(q)
    }
}

fn binary(op: Op, a: Val, b: Val) -> Option<Val> {
    if let (Val::Q(x), Val::Q(y)) = (&a, &b) {
        return match op {
            Op::Add => Some(bounded(x + y)),
            Op::Sub => Some(bounded(x - y)),
            Op::Mul => Some(bounded(x * y)),
            Op::Div => (!y.is_zero()).then(|| bounded(x / y)),
            Op::Pow => rational_power(x, y),
        };
    }
    let (x, y) = (a.to_c(), b.to_c());
    Some(Val::C(match op {
        Op::Add => x + y,
        Op::Sub => x - y,
        Op::Mul => x * y,
        Op::Div => {
            if y.norm() == 0.0 {
                return None;
            }
            x / y
        }
        Op::Pow => complex_power(x, y)?,
    }))
}

/// `x^y` for rationals: exact for integer exponents within the size cap and for perfect roots
/// (`8^{1/3}` = 2); otherwise a float.
fn rational_power(x: &BigRational, y: &BigRational) -> Option<Val> {
    if x.is_zero() {
        return match y.cmp(&BigRational::zero()) {
            std::cmp::Ordering::Greater => Some(Val::Q(BigRational::zero())),
            std::cmp::Ordering::Equal => Some(Val::Q(BigRational::one())),
            std::cmp::Ordering::Less => None,
        };
    }
    let (p, q) = (y.numer(), y.denom());
    let bits = x.numer().bits().max(x.denom().bits()).max(1);
    if let (Some(p), Some(q)) = (p.to_i64(), q.to_u64()) {
        if q <= 64 && (p.unsigned_abs()).saturating_mul(bits) <= MAX_BITS * 2 {
            // x^(p/q) = (x^(1/q))^p, exact when x is a perfect q-th power.
            let base = if q == 1 { Some(x.clone()) } else { exact_root(x, q) };
            if let Some(base) = base {
                let powered = if p >= 0 { base.pow(p as i32) } else { base.recip().pow((-p) as i32) };
                return Some(bounded(powered));
            }
            if x.is_negative() && q % 2 == 1 {
                // The real root of a negative number, as `(-8)^{1/3}` = -2 is meant.
                let r = -(-x.to_f64()?).powf(1.0 / q as f64);
                return Some(Val::C(Complex64::new(r.powi(p as i32), 0.0)));
            }
        }
    }
    Some(Val::C(complex_power(Complex64::new(x.to_f64()?, 0.0), Complex64::new(y.to_f64()?, 0.0))?))
}

/// The exact `q`-th root of a rational, when it is one.
fn exact_root(x: &BigRational, q: u64) -> Option<BigRational> {
    if x.is_negative() {
        return if q % 2 == 1 { exact_root(&-x, q).map(|r| -r) } else { None };
    }
    let n = x.numer().nth_root(q as u32);
    let d = x.denom().nth_root(q as u32);
    (num_traits::pow(n.clone(), q as usize) == *x.numer() && num_traits::pow(d.clone(), q as usize) == *x.denom())
        .then(|| BigRational::new(n, d))
}

fn complex_power(x: Complex64, y: Complex64) -> Option<Complex64> {
    if x.norm() == 0.0 {
        return (y.re > 0.0).then_some(Complex64::new(0.0, 0.0));
    }
    if x.im == 0.0 && y.im == 0.0 && (x.re > 0.0 || y.re.fract() == 0.0) {
        return Some(Complex64::new(x.re.powf(y.re), 0.0));
    }
    Some(x.powc(y))
}

/// `\sqrt[n]{x}`: exact for perfect powers, the real root for odd `n`, the principal one else.
fn root(n: Val, x: Val) -> Option<Val> {
    match (&n, &x) {
        (Val::Q(n), Val::Q(_)) if n.is_zero() => None,
        (Val::Q(n), Val::Q(xq)) => rational_power(xq, &n.recip()),
        _ => Some(Val::C(complex_power(x.to_c(), Complex64::new(1.0, 0.0) / n.to_c())?)),
    }
}

/// A result that must be real when its inputs are real and positive (logs of positive numbers).
fn real_if_real(v: Complex64, a: Complex64, b: Complex64) -> Val {
    if a.im == 0.0 && b.im == 0.0 && a.re > 0.0 && b.re > 0.0 {
        Val::C(Complex64::new(v.re, 0.0))
    } else {
        Val::C(v)
    }
}

fn func(f: Func, a: Val) -> Option<Val> {
    match (f, &a) {
        (Func::Sqrt, Val::Q(q)) => return rational_power(q, &BigRational::new(BigInt::one(), BigInt::from(2))),
        (Func::Abs, Val::Q(q)) => return Some(Val::Q(q.abs())),
        (Func::Abs, Val::C(c)) => return Some(Val::C(Complex64::new(c.norm(), 0.0))),
        (Func::Exp | Func::Cos | Func::Sec | Func::Cosh, Val::Q(q)) if q.is_zero() => {
            return Some(Val::Q(BigRational::one()));
        }
        (Func::Ln, Val::Q(q)) if q.is_one() => return Some(Val::Q(BigRational::zero())),
        (Func::Sin | Func::Tan | Func::Asin | Func::Atan | Func::Sinh | Func::Tanh, Val::Q(q)) if q.is_zero() => {
            return Some(Val::Q(BigRational::zero()));
        }
        _ => {}
    }
    let x = a.to_c();
    let real = x.im == 0.0;
    let one = Complex64::new(1.0, 0.0);
    let r = match f {
        Func::Sin => x.sin(),
        Func::Cos => x.cos(),
        Func::Tan => x.tan(),
        Func::Sec => one / x.cos(),
        Func::Csc => one / x.sin(),
        Func::Cot => one / x.tan(),
        Func::Asin if real && x.re.abs() <= 1.0 => Complex64::new(x.re.asin(), 0.0),
        Func::Asin => x.asin(),
        Func::Acos if real && x.re.abs() <= 1.0 => Complex64::new(x.re.acos(), 0.0),
        Func::Acos => x.acos(),
        Func::Atan => x.atan(),
        Func::Sinh => x.sinh(),
        Func::Cosh => x.cosh(),
        Func::Tanh => x.tanh(),
        Func::Ln if x.norm() == 0.0 => return None,
        Func::Ln if real && x.re > 0.0 => Complex64::new(x.re.ln(), 0.0),
        Func::Ln => x.ln(),
        Func::Exp => x.exp(),
        Func::Sqrt if real && x.re >= 0.0 => Complex64::new(x.re.sqrt(), 0.0),
        Func::Sqrt => x.sqrt(),
        Func::Abs => Complex64::new(x.norm(), 0.0),
    };
    Some(Val::C(r))
}

// ---------------------------------------------------------------------------------------------
// Tokens

/// Command names the parser reads; a longer unknown name starting with one of them is that
/// command followed by letters.
const KNOWN_COMMANDS: &[&str] = &[
    "frac",
    "binom",
    "sqrt",
    "pi",
    "mathrm",
    "mathit",
    "sin",
    "cos",
    "tan",
    "tg",
    "sec",
    "csc",
    "cosec",
    "cot",
    "ctg",
    "arcsin",
    "arccos",
    "arctan",
    "sinh",
    "cosh",
    "tanh",
    "ln",
    "exp",
    "log",
    "lg",
    "cdot",
    "times",
    "div",
    "ast",
    "pm",
    "mp",
    "infty",
    "alpha",
    "beta",
    "gamma",
    "delta",
    "theta",
    "lambda",
    "mu",
    "phi",
    "varphi",
    "omega",
    "sigma",
    "tau",
    "rho",
    "psi",
    "xi",
    "eta",
    "zeta",
    "kappa",
    "nu",
    "chi",
    "epsilon",
    "varepsilon",
];

/// Function names also read without a backslash (`sin x`, `ln 2`), longest first.
const BARE_FUNCTIONS: &[&str] = &[
    "arcsin", "arccos", "arctan", "sqrt", "sinh", "cosh", "tanh", "sin", "cos", "tan", "sec", "csc", "cot", "exp",
    "log", "ln",
];

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
                // `\{` `\}` group like braces inside a scalar; anything else is not ours.
                match chars.get(i + 1) {
                    Some('{') => toks.push(Tok::Sym('(')),
                    Some('}') => toks.push(Tok::Sym(')')),
                    _ => return None,
                }
                i += 2;
            } else if KNOWN_COMMANDS.contains(&name.as_str()) {
                i += 1 + name.len();
                toks.push(Tok::Cmd(name));
            } else {
                // Spaces were removed by normalisation: `\sinx` is `\sin x`, `\pir` is `\pi r`.
                let known = KNOWN_COMMANDS.iter().filter(|k| name.starts_with(**k)).max_by_key(|k| k.len());
                let cmd = known.map_or(name.as_str(), |k| *k);
                i += 1 + cmd.len();
                toks.push(Tok::Cmd(cmd.to_string()));
            }
        } else if c.is_ascii_alphabetic() {
            let word: String = chars[i..].iter().take_while(|c| c.is_ascii_alphabetic()).collect();
            match BARE_FUNCTIONS.iter().find(|f| word.starts_with(**f)) {
                Some(f) => {
                    toks.push(Tok::Cmd(f.to_string()));
                    i += f.len();
                }
                None => {
                    toks.push(Tok::Var(c.to_string()));
                    i += 1;
                }
            }
        } else if "+-*/^()[]{}_!|\u{b0}".contains(c) {
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

/// The exact value of a numeric literal (`12`, `0.25`, `.5`, `1.5e3`).
pub fn literal(text: &str) -> Option<BigRational> {
    let (mantissa, exp) = match text.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (text, 0),
    };
    if mantissa.matches('.').count() > 1 || mantissa.ends_with('.') || mantissa.is_empty() || exp.abs() > 400 {
        return None;
    }
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: BigInt = format!("{int}{frac}").parse().ok()?;
    let scale = exp - frac.len() as i32;
    let ten = BigInt::from(10);
    Some(if scale >= 0 {
        BigRational::from_integer(digits * num_traits::pow(ten, scale as usize))
    } else {
        BigRational::new(digits, num_traits::pow(ten, (-scale) as usize))
    })
}

// ---------------------------------------------------------------------------------------------
// Parser

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
    abs_depth: usize,
    vars: Vec<String>,
}

fn bin(op: Op, a: Node, b: Node) -> Node {
    Node::Bin(op, Box::new(a), Box::new(b))
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
    fn expr(&mut self) -> Option<Node> {
        self.enter()?;
        let mut out = self.term()?;
        loop {
            if self.eat_sym('+') {
                out = bin(Op::Add, out, self.term()?);
            } else if self.eat_sym('-') {
                out = bin(Op::Sub, out, self.term()?);
            } else {
                break;
            }
        }
        self.depth -= 1;
        Some(out)
    }

    /// term := unary (('*' | '/' | \cdot | \times | \div)? power)*  — juxtaposition multiplies.
    fn term(&mut self) -> Option<Node> {
        let mut out = self.unary()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Sym('*')) => Op::Mul,
                Some(Tok::Sym('/')) => Op::Div,
                Some(Tok::Cmd(c)) if c == "cdot" || c == "times" || c == "ast" => Op::Mul,
                Some(Tok::Cmd(c)) if c == "div" => Op::Div,
                Some(t) if self.starts_factor(t) => {
                    out = bin(Op::Mul, out, self.power()?);
                    continue;
                }
                _ => break,
            };
            self.pos += 1;
            out = bin(op, out, self.unary()?);
        }
        Some(out)
    }

    /// unary := ('-' | '+') unary | power
    fn unary(&mut self) -> Option<Node> {
        if self.eat_sym('-') {
            return Some(Node::Neg(Box::new(self.unary()?)));
        }
        if self.eat_sym('+') {
            return self.unary();
        }
        self.power()
    }

    /// power := postfix ('^' exponent)?   (right-associative: `2^3^2` = 2^(3^2))
    fn power(&mut self) -> Option<Node> {
        self.enter()?;
        let base = self.postfix()?;
        let out = if self.eat_sym('^') { bin(Op::Pow, base, self.exponent()?) } else { base };
        self.depth -= 1;
        Some(out)
    }

    /// An exponent: `-` then an exponent, or a power (so `2^3^2` nests to the right).
    fn exponent(&mut self) -> Option<Node> {
        if self.eat_sym('-') {
            return Some(Node::Neg(Box::new(self.exponent()?)));
        }
        self.power()
    }

    /// postfix := primary ('!' | '°')*   (`°` is left only inside trigonometric answers)
    fn postfix(&mut self) -> Option<Node> {
        let mut node = self.primary()?;
        loop {
            if self.eat_sym('!') {
                node = Node::Fact(Box::new(node));
            } else if self.eat_sym('\u{b0}') {
                node =
                    bin(Op::Div, bin(Op::Mul, node, Node::Pi), Node::Num(BigRational::from_integer(BigInt::from(180))));
            } else {
                return Some(node);
            }
        }
    }

    /// primary := number | variable | group | |x| | \frac | \sqrt | constant | function
    fn primary(&mut self) -> Option<Node> {
        let tok = self.peek()?.clone();
        self.pos += 1;
        match tok {
            Tok::Num(text) => {
                let whole = literal(&text)?;
                match self.mixed_fraction(&text) {
                    Some(frac) => Some(Node::Num(whole + frac)),
                    None => Some(Node::Num(whole)),
                }
            }
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
            Tok::Sym('|') => {
                self.abs_depth += 1;
                let inner = self.expr()?;
                self.abs_depth -= 1;
                self.eat_sym('|').then(|| Node::Func(Func::Abs, Box::new(inner)))
            }
            Tok::Cmd(name) => self.command(&name),
            Tok::Sym(_) => None,
        }
    }

    /// After an integer, a proper fraction of integer literals (`2\frac{1}{3}`, `2\frac13`) makes a
    /// mixed number, as answers write them; consumed when found.
    fn mixed_fraction(&mut self, whole: &str) -> Option<BigRational> {
        if !whole.chars().all(|c| c.is_ascii_digit()) || self.peek() != Some(&Tok::Cmd("frac".into())) {
            return None;
        }
        let int = |t: Option<&Tok>| match t {
            Some(Tok::Num(n)) if n.chars().all(|c| c.is_ascii_digit()) => n.parse::<BigInt>().ok(),
            _ => None,
        };
        let at = |k: usize| self.toks.get(self.pos + k);
        let (num, den, len) = if at(1) == Some(&Tok::Sym('{'))
            && at(3) == Some(&Tok::Sym('}'))
            && at(4) == Some(&Tok::Sym('{'))
            && at(6) == Some(&Tok::Sym('}'))
        {
            (int(at(2))?, int(at(5))?, 7)
        } else {
            match at(1) {
                Some(Tok::Num(n)) if n.len() == 2 && n.chars().all(|c| c.is_ascii_digit()) => {
                    (BigInt::from(n.as_bytes()[0] - b'0'), BigInt::from(n.as_bytes()[1] - b'0'), 2)
                }
                _ => return None,
            }
        };
        if num.is_zero() || den <= num {
            return None;
        }
        self.pos += len;
        Some(BigRational::new(num, den))
    }

    /// A variable, with an optional subscript (`x_1`, `a_{n}`); `e` and `i` alone are constants.
    fn variable(&mut self, name: String) -> Node {
        let mut ident = name.clone();
        if self.eat_sym('_') {
            match self.peek().cloned() {
                Some(Tok::Num(n)) => {
                    // `x_12` is `x_1` times 2 in TeX; answers mean `x_{12}` as often, keep it whole.
                    self.pos += 1;
                    ident.push_str(&format!("_{n}"));
                }
                Some(Tok::Var(n)) => {
                    self.pos += 1;
                    ident.push_str(&format!("_{n}"));
                }
                Some(Tok::Sym('{')) => {
                    let mut sub = String::new();
                    self.pos += 1;
                    while let Some(Tok::Num(t) | Tok::Var(t) | Tok::Cmd(t)) = self.peek().cloned() {
                        sub.push_str(&t);
                        self.pos += 1;
                    }
                    self.eat_sym('}');
                    ident.push_str(&format!("_{sub}"));
                }
                _ => {}
            }
        } else if name == "e" {
            return Node::E;
        } else if name == "i" {
            return Node::I;
        }
        if !self.vars.contains(&ident) {
            self.vars.push(ident.clone());
        }
        Node::Var(ident)
    }

    /// A backslash command in value position.
    fn command(&mut self, name: &str) -> Option<Node> {
        let f = match name {
            "frac" => {
                let num = self.argument()?;
                let den = self.argument()?;
                return Some(bin(Op::Div, num, den));
            }
            "binom" => {
                let n = self.argument()?;
                let k = self.argument()?;
                return Some(Node::Binom(Box::new(n), Box::new(k)));
            }
            "sqrt" => {
                if self.eat_sym('[') {
                    let index = self.expr()?;
                    if !self.eat_sym(']') {
                        return None;
                    }
                    let body = self.argument()?;
                    return Some(Node::Root(Box::new(index), Box::new(body)));
                }
                return Some(Node::Func(Func::Sqrt, Box::new(self.argument()?)));
            }
            "pi" => return Some(Node::Pi),
            "mathrm" | "mathit" => return self.argument(),
            "sin" => Func::Sin,
            "cos" => Func::Cos,
            "tan" | "tg" => Func::Tan,
            "sec" => Func::Sec,
            "csc" | "cosec" => Func::Csc,
            "cot" | "ctg" => Func::Cot,
            "arcsin" => Func::Asin,
            "arccos" => Func::Acos,
            "arctan" => Func::Atan,
            "sinh" => Func::Sinh,
            "cosh" => Func::Cosh,
            "tanh" => Func::Tanh,
            "ln" => Func::Ln,
            "exp" => Func::Exp,
            "log" | "lg" => return self.log(name == "lg"),
            "alpha" | "beta" | "gamma" | "delta" | "theta" | "lambda" | "mu" | "phi" | "varphi" | "omega" | "sigma"
            | "tau" | "rho" | "psi" | "xi" | "eta" | "zeta" | "kappa" | "nu" | "chi" | "epsilon" | "varepsilon" => {
                return Some(self.variable(format!("\\{name}")));
            }
            _ => return None,
        };
        self.function(f)
    }

    /// A function application, with `\sin^2 x` (a power of the value) and `\sin^{-1} x` (inverse).
    fn function(&mut self, mut f: Func) -> Option<Node> {
        let mut power = None;
        if self.eat_sym('^') {
            let exp = self.exponent()?;
            let inverse = matches!(&exp, Node::Neg(n) if matches!(&**n, Node::Num(q) if q.is_one()));
            match (inverse, f) {
                (true, Func::Sin) => f = Func::Asin,
                (true, Func::Cos) => f = Func::Acos,
                (true, Func::Tan) => f = Func::Atan,
                _ => power = Some(exp),
            }
        }
        let arg = self.function_argument()?;
        let value = Node::Func(f, Box::new(arg));
        Some(match power {
            Some(p) => bin(Op::Pow, value, p),
            None => value,
        })
    }

    /// `\log x` (natural), `\log_b x`, `\lg x` (base 10).
    fn log(&mut self, base10: bool) -> Option<Node> {
        let base = if self.eat_sym('_') {
            Some(self.argument()?)
        } else if base10 {
            Some(Node::Num(BigRational::from_integer(BigInt::from(10))))
        } else {
            None
        };
        let power = if self.eat_sym('^') { Some(self.exponent()?) } else { None };
        let arg = self.function_argument()?;
        let value = match base {
            Some(b) => Node::Log(Box::new(b), Box::new(arg)),
            None => Node::Func(Func::Ln, Box::new(arg)),
        };
        Some(match power {
            Some(p) => bin(Op::Pow, value, p),
            None => value,
        })
    }

    /// The argument of a function: a parenthesised group, or an implicit product of plain
    /// factors (`\sin 2x` = sin(2x)) that stops at an operator or another function.
    fn function_argument(&mut self) -> Option<Node> {
        if matches!(self.peek(), Some(Tok::Sym('(' | '{'))) {
            let group = self.postfix()?;
            return Some(if self.eat_sym('^') { bin(Op::Pow, group, self.exponent()?) } else { group });
        }
        let mut out = self.power()?;
        while let Some(t) = self.peek() {
            let plain = matches!(t, Tok::Num(_) | Tok::Var(_))
                || matches!(t, Tok::Cmd(c) if matches!(c.as_str(), "pi" | "frac" | "sqrt" | "alpha" | "beta" | "theta" | "phi"));
            if !plain {
                break;
            }
            out = bin(Op::Mul, out, self.power()?);
        }
        Some(out)
    }

    /// A command argument: a braced group, or a single digit / letter / command (`\frac12`).
    fn argument(&mut self) -> Option<Node> {
        self.enter()?;
        let out = match self.peek()?.clone() {
            Tok::Sym('{') => self.primary(),
            Tok::Num(text) if text.len() > 1 && text.chars().all(|c| c.is_ascii_digit()) => {
                // `\frac12`: the argument is the first digit; the rest stays for the next read.
                self.toks[self.pos] = Tok::Num(text[1..].to_string());
                literal(&text[..1]).map(Node::Num)
            }
            _ => self.primary(),
        };
        self.depth -= 1;
        out
    }

    /// Whether a token can begin a factor of an implicit product (`2\pi`, `3x`, `2(1+x)`).
    fn starts_factor(&self, tok: &Tok) -> bool {
        match tok {
            Tok::Num(_) | Tok::Var(_) => true,
            Tok::Sym(c) => matches!(c, '(' | '{' | '[') || (*c == '|' && self.abs_depth == 0),
            Tok::Cmd(c) => !matches!(c.as_str(), "cdot" | "times" | "div" | "ast" | "pm" | "mp" | "infty"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &str) -> Option<f64> {
        let v = Expr::parse(s)?.eval(0)?.to_c();
        (v.im.abs() < 1e-12).then_some(v.re)
    }

    #[test]
    fn evaluates_latex() {
        let cases: &[(&str, f64)] = &[
            ("\\frac{1}{2}", 0.5),
            ("\\frac12", 0.5),
            ("\\frac123", 1.5),
            ("2\\sqrt{3}", 2.0 * 3f64.sqrt()),
            ("\\sqrt[3]{8}", 2.0),
            ("\\sqrt[3]{-8}", -2.0),
            ("3\\pi", 3.0 * std::f64::consts::PI),
            ("1.5\\times10^{3}", 1500.0),
            ("1.5e3", 1500.0),
            ("2^10", 1024.0),
            ("2^{-1}", 0.5),
            ("2^3^2", 512.0),
            ("-2^2", -4.0),
            ("3\\frac{1}{2}", 3.5),
            ("-2\\frac13", -7.0 / 3.0),
            ("3\\cdot\\frac{1}{2}", 1.5),
            ("\\sin30\u{b0}", 0.5),
            ("\\frac{\\sqrt{2}}{2}", 2f64.sqrt() / 2.0),
            ("(1+2)(3+4)", 21.0),
            ("10/4", 2.5),
            (".5", 0.5),
            ("e^{2}", std::f64::consts::E.powi(2)),
            ("\\ln(e)", 1.0),
            ("5!", 120.0),
            ("\\binom{5}{2}", 10.0),
            ("|-3|", 3.0),
            ("\\sin^2(1)+\\cos^2(1)", 1.0),
            ("\\log_2 8", 3.0),
            ("\\sin^{-1}(1)", std::f64::consts::FRAC_PI_2),
            ("i^2", -1.0),
        ];
        for (s, want) in cases {
            let got = value(s).unwrap_or_else(|| panic!("{s} did not evaluate"));
            assert!((got - want).abs() <= 1e-12 * want.abs().max(1.0), "{s}: {got} vs {want}");
        }
    }

    #[test]
    fn exact_where_rational() {
        let q = |s: &str| match Expr::parse(s).unwrap().eval(0).unwrap() {
            Val::Q(q) => q,
            v => panic!("{s} not exact: {v:?}"),
        };
        assert_eq!(q("\\frac{x}{7}+\\frac{2}{7}"), q("\\frac{x+2}{7}"));
        assert_eq!(q("\\sqrt{\\frac{16}{9}}"), q("\\frac{4}{3}"));
        assert_eq!(q("8^{2/3}"), q("4"));
        assert_eq!(q("20!/18!"), q("380"));
    }

    #[test]
    fn rejects_or_bounds_what_it_cannot_value() {
        for s in ["(1,2)", "1+", "\\infty", "2^{2^{2^{100}}}", "100000!", "(0.5)!"] {
            assert_eq!(value(s), None, "{s} should have no value");
        }
        assert!(Expr::parse(&"(".repeat(200)).is_none());
    }

    #[test]
    fn variables_get_sample_values() {
        let a = Expr::parse("2x+1").unwrap();
        let b = Expr::parse("1+x\\cdot2").unwrap();
        assert_eq!(a.vars, vec!["x".to_string()]);
        assert_eq!(Expr::parse("\\pir^2").unwrap().vars, vec!["r".to_string()]);
        assert_eq!(a.eval(0), b.eval(0));
        assert_ne!(a.eval(0), a.eval(1));
    }
}
