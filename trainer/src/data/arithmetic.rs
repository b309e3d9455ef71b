//! Synthetic integer arithmetic: prompt `37+45=`, answer `82`.
//!
//! Each operand draws its digit count uniformly from `min_digits..=max_digits`, then its value
//! uniformly among the numbers with that many digits (the 1-digit numbers include 0), so every
//! difficulty level is equally common. Operators are uniform over `ops`. Evaluation uses standard
//! precedence: `*` binds tighter than `+` and `-`, which associate left to right (`2+3*4-5` = 9).
//! Operands are never negative; results may be. Answers are exact `i128`: the spec limits (18
//! digits, 16 operands, digits × operands ≤ 36 with `*`) keep every result below 1.6e37.
//!
//! Held-out problems come from their own seed stream, deduplicated by prompt text. A training draw
//! whose prompt is held out is drawn again (the attempt number is part of its seed), so training
//! never shows a held-out prompt.
//!
//! Left out: division, parentheses, negative operands.

use std::collections::HashSet;

use super::rng::Rng;
use super::{answer_task, ArithmeticSpec, DataError, Problem};

/// Seed stream of training problems.
const TRAIN: u64 = 0x7472_6169_6e00_0001;
/// Seed stream of held-out problems.
const HELD_OUT: u64 = 0x6865_6c64_0000_0002;
/// Largest operand width: 10^18 − 1 fits `u64`.
const MAX_DIGITS: u32 = 18;
/// Most operands per problem.
const MAX_OPERANDS: u32 = 16;
/// With `*`, products of `operands` numbers of `max_digits` digits stay below 10^36.
const MAX_PRODUCT_DIGITS: u32 = 36;
/// Held-out prompts may carry at most this share of the draw probability, so a training draw is
/// repeated fewer than 1 / (1 − 0.9) = 10 times on average.
const MAX_HELD_OUT_MASS: f64 = 0.9;

/// One operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Sub,
    Mul,
}

impl Op {
    fn parse(symbol: &str) -> Option<Op> {
        match symbol {
            "+" => Some(Op::Add),
            "-" => Some(Op::Sub),
            "*" => Some(Op::Mul),
            _ => None,
        }
    }

    fn symbol(self) -> char {
        match self {
            Op::Add => '+',
            Op::Sub => '-',
            Op::Mul => '*',
        }
    }
}

/// The arithmetic stream of one spec and seed.
#[derive(Debug)]
pub(crate) struct Arithmetic {
    spec: ArithmeticSpec,
    ops: Vec<Op>,
    seed: u64,
    held_out: HashSet<String>,
}

/// One drawn problem and its probability under the draw.
struct Drawn {
    prompt: String,
    answer: i128,
    mass: f64,
}

impl Arithmetic {
    /// The stream and its held-out problems.
    pub(crate) fn new(spec: &ArithmeticSpec, seed: u64) -> Result<(Self, Vec<Problem>), DataError> {
        let ops = validate(spec)?;
        let mut stream = Arithmetic { spec: spec.clone(), ops, seed, held_out: HashSet::new() };
        let mut problems = Vec::with_capacity(spec.held_out);
        let mut mass = 0.0;
        let budget = 20 * spec.held_out as u64 + 1000;
        let mut index = 0;
        while problems.len() < spec.held_out {
            if index == budget {
                let message = format!(
                    "only {} distinct problems in {budget} draws; widen the digits, operands or ops",
                    problems.len()
                );
                return Err(DataError::Spec { field: "held_out", message });
            }
            let drawn = stream.draw(HELD_OUT, index, 0);
            index += 1;
            if stream.held_out.insert(drawn.prompt.clone()) {
                mass += drawn.mass;
                problems.push(problem(format!("arithmetic/held_out/{}", problems.len()), drawn));
            }
        }
        if mass > MAX_HELD_OUT_MASS {
            let message = format!(
                "{} held-out problems cover {:.0}% of all draws (at most {:.0}%); lower held_out",
                spec.held_out,
                100.0 * mass,
                100.0 * MAX_HELD_OUT_MASS
            );
            return Err(DataError::Spec { field: "held_out", message });
        }
        Ok((stream, problems))
    }

    /// Training problem `index`: the first draw of `(seed, TRAIN, index, attempt)` not held out.
    pub(crate) fn train(&self, index: u64) -> Problem {
        // Ends: held-out prompts carry at most MAX_HELD_OUT_MASS of the probability of a draw.
        let drawn = (0..)
            .map(|attempt| self.draw(TRAIN, index, attempt))
            .find(|d| !self.held_out.contains(&d.prompt))
            .expect("an unbounded range");
        problem(format!("arithmetic/train/{index}"), drawn)
    }

    /// The problem seeded by `(seed, stream, index, attempt)`.
    fn draw(&self, stream: u64, index: u64, attempt: u64) -> Drawn {
        let mut rng = Rng::new(&[self.seed, stream, index, attempt]);
        let (min, max) = (self.spec.min_digits, self.spec.max_digits);
        let levels = u64::from(max - min + 1);
        let n = self.spec.operands as usize;
        let mut values = Vec::with_capacity(n);
        let mut ops = Vec::with_capacity(n - 1);
        let mut mass = 1.0;
        for k in 0..n {
            if k > 0 {
                ops.push(self.ops[rng.below(self.ops.len() as u64) as usize]);
                mass /= self.ops.len() as f64;
            }
            let digits = min + rng.below(levels) as u32;
            let (low, count) = digit_range(digits);
            values.push(low + rng.below(count));
            mass /= levels as f64 * count as f64;
        }
        let mut prompt = values[0].to_string();
        for (op, value) in ops.iter().zip(&values[1..]) {
            prompt.push(op.symbol());
            prompt.push_str(&value.to_string());
        }
        prompt.push('=');
        Drawn { prompt, answer: evaluate(&values, &ops), mass }
    }
}

/// The [`Problem`] of a drawn expression: the answer is both the gold and the reference.
fn problem(id: String, drawn: Drawn) -> Problem {
    let answer = drawn.answer.to_string();
    Problem { id, task: answer_task(&drawn.prompt, answer.clone()), prompt: drawn.prompt, reference: Some(answer) }
}

/// Smallest value and count of the numbers with `digits` digits (`0..=9` for one digit).
fn digit_range(digits: u32) -> (u64, u64) {
    if digits == 1 {
        return (0, 10);
    }
    let low = 10u64.pow(digits - 1);
    (low, 9 * low)
}

/// `values[0] ops[0] values[1] ...` with `*` before `+`/`-`, left to right.
fn evaluate(values: &[u64], ops: &[Op]) -> i128 {
    let mut total = 0i128;
    let mut sign = 1i128;
    let mut term = i128::from(values[0]);
    for (op, &value) in ops.iter().zip(&values[1..]) {
        let value = i128::from(value);
        match op {
            Op::Mul => term *= value,
            Op::Add | Op::Sub => {
                total += sign * term;
                sign = if *op == Op::Add { 1 } else { -1 };
                term = value;
            }
        }
    }
    total + sign * term
}

/// Checks the spec's ranges and returns its operators.
fn validate(spec: &ArithmeticSpec) -> Result<Vec<Op>, DataError> {
    let bad = |field, message: String| Err(DataError::Spec { field, message });
    if spec.min_digits == 0 || spec.min_digits > spec.max_digits || spec.max_digits > MAX_DIGITS {
        let (min, max) = (spec.min_digits, spec.max_digits);
        return bad("min_digits", format!("need 1 ≤ min_digits ≤ max_digits ≤ {MAX_DIGITS}, got {min} and {max}"));
    }
    if !(2..=MAX_OPERANDS).contains(&spec.operands) {
        return bad("operands", format!("need 2 to {MAX_OPERANDS}, got {}", spec.operands));
    }
    let mut ops = Vec::new();
    for symbol in &spec.ops {
        let Some(op) = Op::parse(symbol) else {
            return bad("ops", format!("{symbol:?} is not one of \"+\", \"-\", \"*\""));
        };
        if ops.contains(&op) {
            return bad("ops", format!("{symbol:?} is listed twice"));
        }
        ops.push(op);
    }
    if ops.is_empty() {
        return bad("ops", "is empty".to_string());
    }
    if ops.contains(&Op::Mul) && spec.max_digits * spec.operands > MAX_PRODUCT_DIGITS {
        let message = format!(
            "with \"*\", max_digits × operands must be ≤ {MAX_PRODUCT_DIGITS} to keep answers exact, got {} × {}",
            spec.max_digits, spec.operands
        );
        return bad("max_digits", message);
    }
    Ok(ops)
}
