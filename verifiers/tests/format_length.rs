//! Format reward and DAPO's soft overlong penalty.

use rlvr_verifiers::length::LengthUnit;
use rlvr_verifiers::{FormatConfig, FormatVerifier, LengthConfig, LengthPenalty, Outcome, Task, Verifier};

fn format_of(v: &FormatVerifier, text: &str) -> (f32, Outcome) {
    let verdict = v.verify(&Task::default(), text).unwrap();
    (verdict.reward, verdict.outcome)
}

#[test]
fn think_then_answer_is_required() {
    let v = FormatVerifier::new(FormatConfig::default());
    assert_eq!(format_of(&v, "<think>2+2 is 4</think>\nThe answer is 4."), (1.0, Outcome::Correct));
    for bad in [
        "The answer is 4.",                          // no tags
        "<think>2+2 is 4</think>   ",                // empty answer
        "<think> </think> 4",                        // empty reasoning
        "2+2 is 4</think> 4",                        // open tag required by default
        "<think>a</think> 4 </think> 5",             // two closes
        "<think>a<think>b</think> 4",                // two opens
        "<think>unfinished reasoning and no answer", // truncated
    ] {
        assert_eq!(format_of(&v, bad), (0.0, Outcome::Malformed), "{bad:?}");
    }
}

#[test]
fn open_tag_optional_and_answer_tags() {
    let config = FormatConfig {
        require_open: false,
        answer_open: Some("<answer>".into()),
        answer_close: Some("</answer>".into()),
        ..FormatConfig::default()
    };
    let v = FormatVerifier::new(config);
    assert_eq!(format_of(&v, "reasoning</think><answer>4</answer>"), (1.0, Outcome::Correct));
    assert_eq!(format_of(&v, "<think>reasoning</think> <answer>4</answer>\n"), (1.0, Outcome::Correct));
    assert_eq!(format_of(&v, "reasoning</think>4"), (0.0, Outcome::Malformed));
    assert_eq!(format_of(&v, "reasoning</think><answer></answer>"), (0.0, Outcome::Malformed));
    assert_eq!(format_of(&v, "x <think>reasoning</think><answer>4</answer>"), (0.0, Outcome::Malformed));
    let parsed: FormatConfig = serde_json::from_str(r#"{"open": "<reason>", "close": "</reason>"}"#).unwrap();
    assert_eq!(parsed.open, "<reason>");
    assert!(serde_json::from_str::<FormatConfig>(r#"{"tag": "x"}"#).is_err());
}

#[test]
fn dapo_soft_overlong_penalty() {
    // L_max = 100, L_cache = 20: 0 up to 80, then (80 − L)/20 down to −1 at 100, −1 beyond.
    let p = LengthPenalty::new(LengthConfig { max_length: 100, cache_length: 20, unit: LengthUnit::Chars }).unwrap();
    let cases = [(0, 0.0), (80, 0.0), (81, -0.05), (90, -0.5), (100, -1.0), (101, -1.0), (10_000, -1.0)];
    for (len, want) in cases {
        assert!((p.penalty(len) - want).abs() < 1e-6, "L={len}: {} vs {want}", p.penalty(len));
    }
    let v = p.verify(&Task::default(), &"é".repeat(90)).unwrap();
    assert!((v.reward + 0.5).abs() < 1e-6, "90 characters, not 180 bytes");
    assert_eq!((v.outcome, v.detail["unit"].as_str()), (Outcome::Incorrect, Some("chars")));
    let v = p.verify(&Task::default(), "short").unwrap();
    assert_eq!((v.reward, v.outcome), (0.0, Outcome::Correct));
}

#[test]
fn token_counts_and_words() {
    let p = LengthPenalty::new(LengthConfig { max_length: 10, cache_length: 4, unit: LengthUnit::Words }).unwrap();
    let v = p.verify(&Task::default(), "one two  three\nfour five six seven eight").unwrap();
    assert!((v.reward + 0.5).abs() < 1e-6, "8 words: (6 − 8)/4 = −0.5, got {}", v.reward);
    let mut task = Task::default();
    task.extra.insert("completion_tokens".into(), serde_json::json!(9));
    let v = p.verify(&task, "one").unwrap();
    assert!((v.reward + 0.75).abs() < 1e-6, "the given token count wins: (6 − 9)/4");
    assert_eq!(v.detail["unit"], "tokens");
    task.extra.insert("completion_tokens".into(), serde_json::json!("many"));
    assert!(p.verify(&task, "one").is_err());
    assert!(LengthPenalty::new(LengthConfig { max_length: 10, cache_length: 0, unit: LengthUnit::Chars }).is_err());
    assert!(LengthPenalty::new(LengthConfig { max_length: 10, cache_length: 11, unit: LengthUnit::Chars }).is_err());
}
