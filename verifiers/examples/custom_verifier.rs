//! A custom verifier in Rust: implement [`Verifier`] and use it like the built-in ones — alone
//! through [`score_batch`], or in a weighted sum with the format reward through [`Weighted`].
//!
//! `cargo run -p rlvr-verifiers --example custom_verifier`
//!
//! The toy task: the completion's answer (after `</think>`) must be the prompt's words reversed.

use rlvr_verifiers::{
    score_batch, FormatConfig, FormatVerifier, Outcome, Task, Verdict, Verifier, VerifyError, Weighted,
};
use serde_json::json;

/// Rewards an answer that lists the prompt's words in reverse order.
struct ReverseWords;

impl Verifier for ReverseWords {
    fn name(&self) -> &str {
        "reverse_words"
    }

    fn verify(&self, task: &Task, completion: &str) -> Result<Verdict, VerifyError> {
        let prompt = task.prompt.as_deref().ok_or(VerifyError::MissingField("prompt"))?;
        let want: Vec<&str> = prompt.split_whitespace().rev().collect();
        let answer = completion.rsplit("</think>").next().unwrap_or(completion).trim();
        if answer.is_empty() {
            return Ok(Verdict::zero(Outcome::NoAnswer, json!({})));
        }
        let got: Vec<&str> = answer.split_whitespace().collect();
        let outcome = if got == want { Outcome::Correct } else { Outcome::Incorrect };
        let reward = if outcome == Outcome::Correct { 1.0 } else { 0.0 };
        Ok(Verdict { reward, outcome, detail: json!({ "want": want.join(" ") }) })
    }
}

fn main() -> anyhow::Result<()> {
    let task = Task { prompt: Some("one two three".into()), ..Task::default() };
    let items = vec![
        (task.clone(), "<think>reverse it</think> three two one".to_string()),
        (task.clone(), "three two one".to_string()),
        (task.clone(), "<think>hmm</think> one two three".to_string()),
        (Task::default(), "<think>no prompt</think> x".to_string()),
    ];
    let alone = score_batch(&ReverseWords, &items, 2);
    let combined = Weighted::new(vec![
        (1.0, Box::new(ReverseWords) as Box<dyn Verifier>),
        (0.2, Box::new(FormatVerifier::new(FormatConfig::default()))),
    ]);
    let summed = score_batch(&combined, &items, 2);
    println!("| completion | {} | {} |", ReverseWords.name(), combined.name());
    println!("|---|---|---|");
    for (((_, text), a), s) in items.iter().zip(&alone).zip(&summed) {
        println!("| {text:?} | {} ({:?}) | {:.1} ({:?}) |", a.reward, a.outcome, s.reward, s.outcome);
    }
    Ok(())
}
