//! Table-driven cases for the math verifier. Every expected outcome was decided by hand from the
//! mathematics of the pair, not by running the verifier.

use rlvr_verifiers::math::{MathConfig, MathVerifier};
use rlvr_verifiers::{Outcome, Task, Verifier, VerifyError};

use Outcome::{Correct as C, Incorrect as I, NoAnswer as N};

/// (gold, completion, expected outcome)
const CASES: &[(&str, &str, Outcome)] = &[
    // Extraction: boxed, nested, last wins, fbox, ####, answer phrases, last number.
    ("5", "so \\boxed{5}", C),
    ("5", "so \\boxed{6}", I),
    ("5", "first \\boxed{3}, corrected: \\boxed{5}", C),
    ("5", "first \\boxed{5}, corrected: \\boxed{3}", I),
    ("5", "\\fbox{5}", C),
    ("5", "$\\boxed 5$", C),
    ("\\frac{\\sqrt{3}}{2}", "\\boxed{\\frac{\\sqrt{3}}{2}}", C),
    ("\\frac{\\sqrt{3}}{2}", "\\boxed{\\frac{\\sqrt{2}}{2}}", I),
    ("72", "48 + 24 = 72\n#### 72", C),
    ("72", "48 + 24 = 72\n#### 70", I),
    ("1234", "#### 1,234", C),
    ("18", "The answer is 18.", C),
    ("18", "The answer is 19.", I),
    ("18", "Final answer: 18", C),
    ("18", "**Answer:** 18", C),
    ("18", "The final answer is $18$. I hope it is correct.", C),
    ("0.5", "So the answer is $\\frac{1}{2}$ because halves.", C),
    ("42", "Adding them gives 40, plus 2 makes 42", C),
    ("42", "Adding them gives 42, minus 2 makes 40", I),
    ("42", "I cannot solve this.", N),
    ("42", "", N),
    ("7", "We get \\boxed{} so 7", C),
    // Integers and decimals.
    ("1000000", "\\boxed{1000000}", C),
    ("1000000", "\\boxed{1000001}", I),
    ("123456789012345678901", "\\boxed{123456789012345678901}", C),
    ("123456789012345678901", "\\boxed{123456789012345678902}", I),
    ("-3", "\\boxed{-3}", C),
    ("-3", "\\boxed{3}", I),
    ("-3", "\\boxed{\u{2212}3}", C),
    ("0.5", "\\boxed{.5}", C),
    ("0.5", "\\boxed{0.50}", C),
    ("2.5", "\\boxed{2.4}", I),
    ("73.4", "\\boxed{73.40}", C),
    ("3", "\\boxed{3.0}", C),
    ("3", "\\boxed{3.00001}", I),
    ("3", "\\boxed{3.0000000001}", C),
    // Thousands separators and decimal commas.
    ("1234567", "\\boxed{1,234,567}", C),
    ("1234567", "\\boxed{1\\,234\\,567}", C),
    ("1234567", "\\boxed{1 234 567}", C),
    ("1234567", "\\boxed{1\u{202f}234\u{202f}567}", C),
    ("1234567", "\\boxed{1{,}234{,}567}", C),
    ("1234567", "\\boxed{1,234,568}", I),
    ("1234", "\\boxed{1,234}", C),
    ("3.5", "\\boxed{3,5}", C),
    ("3.25", "\\boxed{3,25}", C),
    ("1.234", "\\boxed{1,234}", I),
    ("3, 5", "\\boxed{3,5}", C),
    ("3, 5", "\\boxed{3.5}", I),
    // Fractions.
    ("\\frac{1}{2}", "\\boxed{0.5}", C),
    ("\\frac{1}{2}", "\\boxed{\\dfrac{1}{2}}", C),
    ("\\frac{1}{2}", "\\boxed{\\tfrac12}", C),
    ("\\frac{1}{2}", "\\boxed{1/2}", C),
    ("\\frac{1}{2}", "\\boxed{\\frac{2}{4}}", C),
    ("\\frac{1}{2}", "\\boxed{\\frac{2}{1}}", I),
    ("\\frac{1}{3}", "\\boxed{0.333}", I),
    ("\\frac{1}{3}", "\\boxed{0.3333333}", C),
    ("\\dfrac{3}{4}", "\\boxed{0.75}", C),
    ("\\frac{7}{8}", "\\boxed{\\frac78}", C),
    ("\\frac{7}{8}", "\\boxed{\\frac87}", I),
    ("-\\frac{1}{4}", "\\boxed{-0.25}", C),
    ("-\\frac{1}{4}", "\\boxed{\\frac{-1}{4}}", C),
    ("-\\frac{1}{4}", "\\boxed{0.25}", I),
    ("\\frac{1}{2}", "\\boxed{\\left(\\frac{1}{2}\\right)}", C),
    // Wrappers, delimiters, spacing.
    ("12", "\\boxed{\\text{12}}", C),
    ("12", "\\boxed{\\mathbf{12}}", C),
    ("12", "\\boxed{\\textbf{12}}", C),
    ("12", "\\boxed{\\displaystyle 12}", C),
    ("12", "The answer is \\(12\\).", C),
    ("12", "The answer is \\[12\\]", C),
    ("12", "\\boxed{12.}", C),
    ("12", "\\boxed{ 1 2 }", C),
    ("$12$", "\\boxed{12}", C),
    // Units and currency.
    ("10", "\\boxed{10\\text{ cm}}", C),
    ("10", "\\boxed{10 cm}", C),
    ("10", "\\boxed{10\\,\\mathrm{kg}}", C),
    ("10", "\\boxed{10 meters}", C),
    ("10", "\\boxed{11 meters}", I),
    ("10", "\\boxed{\\$10}", C),
    ("10", "\\boxed{\\$10.00}", C),
    ("10", "The answer is $10.", C),
    ("10", "\\boxed{10 dollars}", C),
    ("10", "\\boxed{10\\text{ square units}}", C),
    ("10", "\\boxed{10 \\text{cm}^2}", C),
    ("12.5", "\\boxed{\\$12.50}", C),
    ("12.5", "\\boxed{\\$12.05}", I),
    ("60", "\\boxed{60 mph}", C),
    ("5", "\\boxed{5 apples}", C),
    ("5", "\\boxed{6 apples}", I),
    // Percent.
    ("50", "\\boxed{50\\%}", C),
    ("50", "\\boxed{50%}", C),
    ("50\\%", "\\boxed{50}", C),
    ("50\\%", "\\boxed{0.5}", C),
    ("0.5", "\\boxed{50\\%}", C),
    ("50", "\\boxed{0.5}", I),
    ("50", "\\boxed{40\\%}", I),
    ("12.5", "The answer is 12.5 percent.", C),
    ("12.5\\%", "\\boxed{0.125}", C),
    ("12.5\\%", "\\boxed{0.13}", I),
    // Degrees.
    ("30", "\\boxed{30^\\circ}", C),
    ("30", "\\boxed{30^{\\circ}}", C),
    ("30", "\\boxed{30\u{00b0}}", C),
    ("30^\\circ", "\\boxed{30}", C),
    ("30^\\circ", "\\boxed{30 degrees}", C),
    ("30^\\circ", "\\boxed{60^\\circ}", I),
    // Radicals, pi, powers, implicit products.
    ("2\\sqrt{3}", "\\boxed{\\sqrt{12}}", C),
    ("2\\sqrt{3}", "\\boxed{2\\sqrt3}", C),
    ("2\\sqrt{3}", "\\boxed{2 \\cdot \\sqrt{3}}", C),
    ("2\\sqrt{3}", "\\boxed{\\sqrt{3} \\times 2}", C),
    ("2\\sqrt{3}", "\\boxed{3\\sqrt{2}}", I),
    ("2\\sqrt{3}", "\\boxed{\u{221a}12}", C),
    ("\\sqrt[3]{2}", "\\boxed{2^{1/3}}", C),
    ("\\sqrt[3]{2}", "\\boxed{2^{1/2}}", I),
    ("3\\pi", "\\boxed{3\\pi}", C),
    ("3\\pi", "\\boxed{\\pi \\cdot 3}", C),
    ("3\\pi", "\\boxed{3\u{03c0}}", C),
    ("3\\pi", "\\boxed{9.42477796}", C),
    ("3\\pi", "\\boxed{9.42}", I),
    ("\\frac{3\\pi}{2}", "\\boxed{\\frac{3}{2}\\pi}", C),
    ("\\frac{3\\pi}{2}", "\\boxed{3\\pi/2}", C),
    ("\\frac{3\\pi}{2}", "\\boxed{\\frac{2\\pi}{3}}", I),
    ("1024", "\\boxed{2^{10}}", C),
    ("1024", "\\boxed{2^10}", C),
    ("1024", "\\boxed{2^{11}}", I),
    ("8", "\\boxed{2^3}", C),
    ("\\frac{1}{8}", "\\boxed{2^{-3}}", C),
    ("e^2", "\\boxed{e^{2}}", C),
    ("e^2", "\\boxed{7.3890561}", C),
    ("1", "\\boxed{2^{10^{10}}}", I),
    // Scientific notation.
    ("1500", "\\boxed{1.5\\times10^{3}}", C),
    ("1500", "\\boxed{1.5e3}", C),
    ("1500", "\\boxed{1.5 \\cdot 10^3}", C),
    ("1.5\\times 10^{3}", "\\boxed{1500}", C),
    ("1.5\\times 10^{3}", "\\boxed{1.5\\times10^{4}}", I),
    ("6.02\\times 10^{23}", "\\boxed{6.02e23}", C),
    // Variables and equations.
    ("5", "\\boxed{x = 5}", C),
    ("5", "so $x = \\boxed{5}$", C),
    ("x=5", "\\boxed{5}", C),
    ("x=5", "\\boxed{x=6}", I),
    ("5", "\\boxed{y = 2 + 3 = 5}", C),
    ("2x+1", "\\boxed{1+2x}", C),
    ("2x+1", "\\boxed{2x-1}", I),
    ("x^2+2x+1", "\\boxed{(x+1)^2}", C),
    ("x^2+2x+1", "\\boxed{(x-1)^2}", I),
    ("y=2x+1", "\\boxed{y = 1 + 2x}", C),
    ("\\frac{x}{2}", "\\boxed{0.5x}", C),
    ("a_1+a_2", "\\boxed{a_2+a_1}", C),
    ("a_1+a_2", "\\boxed{2a_1}", I),
    // Tuples.
    ("(1,2)", "\\boxed{(1,2)}", C),
    ("(1,2)", "\\boxed{(1, 2)}", C),
    ("(1,2)", "\\boxed{\\left(1, 2\\right)}", C),
    ("(1,2)", "\\boxed{(2,1)}", I),
    ("(1,2)", "\\boxed{(1,2,3)}", I),
    ("(1,2)", "\\boxed{[1,2]}", I),
    ("(\\frac{1}{2}, -3)", "\\boxed{(0.5,-3)}", C),
    ("(3, 4)", "\\boxed{(x, y) = (3, 4)}", I),
    // Intervals.
    ("[1,3)", "\\boxed{[1,3)}", C),
    ("[1,3)", "\\boxed{\\left[1, 3\\right)}", C),
    ("[1,3)", "\\boxed{[1,3]}", I),
    ("[1,3)", "\\boxed{(1,3)}", I),
    ("(-\\infty, 2]", "\\boxed{(-\\infty,2]}", C),
    ("(-\\infty, 2]", "\\boxed{(-\u{221e}, 2]}", C),
    ("(-\\infty, 2]", "\\boxed{(-\\infty,2)}", I),
    ("(-\\infty, 2]", "\\boxed{(-\\infty,3]}", I),
    ("[0, \\frac{1}{2}]", "\\boxed{[0, 0.5]}", C),
    // Sets and lists.
    ("\\{1,2,3\\}", "\\boxed{\\{3,1,2\\}}", C),
    ("\\{1,2,3\\}", "\\boxed{\\{1,2\\}}", I),
    ("\\{1,2,3\\}", "\\boxed{\\{1,2,4\\}}", I),
    ("\\{1,2,3\\}", "\\boxed{1, 2, 3}", C),
    ("1, 2", "\\boxed{2, 1}", C),
    ("1, 2", "\\boxed{2}", I),
    ("2", "\\boxed{2, 3}", I),
    ("2, 3", "\\boxed{x = 2 \\text{ or } x = 3}", C),
    ("2, 3", "\\boxed{x=3, x=2}", C),
    ("2, 3", "\\boxed{2 \\text{ and } 4}", I),
    ("-2, \\frac{1}{3}", "\\boxed{\\frac13, -2}", C),
    // Plus-minus.
    ("1 \\pm \\sqrt{2}", "\\boxed{1+\\sqrt{2}, 1-\\sqrt{2}}", C),
    ("1 \\pm \\sqrt{2}", "\\boxed{1-\\sqrt{2}, 1+\\sqrt{2}}", C),
    ("1 \\pm \\sqrt{2}", "\\boxed{1\\pm\\sqrt2}", C),
    ("1 \\pm \\sqrt{2}", "\\boxed{1+\\sqrt{2}}", I),
    ("1 \\pm \\sqrt{2}", "\\boxed{2 \\pm \\sqrt{2}}", I),
    ("\\pm 3", "\\boxed{3, -3}", C),
    // Text and multiple choice.
    ("yes", "\\boxed{Yes}", C),
    ("yes", "\\boxed{\\text{YES}}", C),
    ("yes", "\\boxed{No}", I),
    ("no", "The answer is no.", C),
    ("B", "\\boxed{B}", C),
    ("B", "\\boxed{(B)}", C),
    ("B", "\\boxed{\\textbf{(B)}}", C),
    ("B", "\\boxed{b}", C),
    ("B", "\\boxed{C}", I),
    ("\\text{(C)}", "\\boxed{C}", C),
    ("\\text{(C)}", "The answer is (D).", I),
    ("even", "\\boxed{\\text{Even}}", C),
    ("even", "\\boxed{\\text{odd}}", I),
];

fn task(gold: &str) -> Task {
    Task { answer: Some(gold.to_string()), ..Default::default() }
}

#[test]
fn table() {
    assert!(CASES.len() >= 150, "only {} cases", CASES.len());
    let verifier = MathVerifier::default();
    let mut failures = Vec::new();
    for (gold, completion, want) in CASES {
        let verdict = verifier.verify(&task(gold), completion).expect("a verdict, not an error");
        let reward = if *want == Outcome::Correct { 1.0 } else { 0.0 };
        if verdict.outcome != *want || verdict.reward != reward {
            failures.push(format!("gold {gold:?} completion {completion:?}: want {want:?}, got {verdict:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), CASES.len(), failures.join("\n"));
}

#[test]
fn detail_names_extraction_and_method() {
    let v = MathVerifier::default().verify(&task("\\frac{1}{2}"), "so \\boxed{0.5}").unwrap();
    assert_eq!(v.detail["extracted"], "0.5");
    assert_eq!(v.detail["gold"], "\\frac{1}{2}");
    assert_eq!(v.detail["normalized_gold"], "\\frac{1}{2}");
    assert_eq!(v.detail["normalized_pred"], "0.5");
    assert_eq!(v.detail["method"], "numeric");
    let v = MathVerifier::default().verify(&task("1,234"), "\\boxed{1234}").unwrap();
    assert_eq!(v.detail["method"], "exact");
    let v = MathVerifier::default().verify(&task("\\{1,2\\}"), "\\boxed{\\{2,1\\}}").unwrap();
    assert_eq!(v.detail["method"], "structure");
    let v = MathVerifier::default().verify(&task("3"), "\\boxed{4}").unwrap();
    assert!(v.detail["method"].is_null());
}

#[test]
fn missing_gold_is_an_error() {
    let err = MathVerifier::default().verify(&Task::default(), "\\boxed{1}").unwrap_err();
    assert!(matches!(err, VerifyError::MissingField("answer")));
}

#[test]
fn last_number_fallback_can_be_switched_off() {
    let config = MathConfig { last_number_fallback: false, ..Default::default() };
    let v = MathVerifier::new(config).verify(&task("42"), "it is 42").unwrap();
    assert_eq!(v.outcome, Outcome::NoAnswer);
    let v = MathVerifier::new(MathConfig::default()).verify(&task("42"), "it is 42").unwrap();
    assert_eq!(v.outcome, Outcome::Correct);
}

#[test]
fn tolerance_and_reward_come_from_config() {
    let loose = MathConfig { rel_tol: 1e-2, reward_correct: 0.5, ..Default::default() };
    let v = MathVerifier::new(loose).verify(&task("\\pi"), "\\boxed{3.14}").unwrap();
    assert_eq!((v.outcome, v.reward), (Outcome::Correct, 0.5));
    let v = MathVerifier::default().verify(&task("\\pi"), "\\boxed{3.14}").unwrap();
    assert_eq!((v.outcome, v.reward), (Outcome::Incorrect, 0.0));
}

#[test]
fn config_rejects_unknown_keys_and_fills_defaults() {
    let c: MathConfig = serde_json::from_str(r#"{"timeout_ms": 50}"#).unwrap();
    assert_eq!(c, MathConfig { timeout_ms: 50, ..Default::default() });
    assert!(serde_json::from_str::<MathConfig>(r#"{"rel_tol": 1e-3, "tol": 1}"#).is_err());
}

#[test]
fn hostile_inputs_finish_within_the_bound() {
    let verifier = MathVerifier::new(MathConfig { timeout_ms: 200, ..Default::default() });
    let deep = format!("\\boxed{{{}1{}}}", "\\sqrt{".repeat(5000), "}".repeat(5000));
    let wide = format!("\\boxed{{\\{{{}\\}}}}", vec!["2^{2^{2^{2^{2^{2}}}}}"; 3000].join(","));
    let long = "9".repeat(200_000);
    for completion in [deep, wide, format!("\\boxed{{{long}}}"), format!("{{{}", "{".repeat(100_000))] {
        let start = std::time::Instant::now();
        let v = verifier.verify(&task("2"), &completion).unwrap();
        assert!(start.elapsed().as_millis() < 1000, "took {:?}", start.elapsed());
        assert_ne!(v.outcome, Outcome::Correct);
    }
}

#[test]
fn zero_budget_times_out() {
    let verifier = MathVerifier::new(MathConfig { timeout_ms: 0, ..Default::default() });
    let v = verifier.verify(&task("2"), "\\boxed{2}").unwrap();
    assert_eq!((v.outcome, v.reward), (Outcome::Timeout, 0.0));
}
