//! The language consistency reward against a hand-labelled set (tests/fixtures/language/), and its
//! settings, scopes, modes and errors.

use rlvr_verifiers::language::{parse_language, LanguageMode, LanguageScope};
use rlvr_verifiers::{
    LanguageConfig, LanguageVerifier, LengthConfig, LengthPenalty, Outcome, Task, Verifier, VerifierSpec, VerifyError,
    Weighted,
};
use serde_json::{json, Value};

const LABELLED: &str = include_str!("fixtures/language/labelled.jsonl");

fn verifier(target: &str, scope: LanguageScope) -> LanguageVerifier {
    LanguageVerifier::new(LanguageConfig { target: target.into(), scope, ..LanguageConfig::default() }).unwrap()
}

fn scope_of(item: &Value) -> LanguageScope {
    match item.get("scope").and_then(Value::as_str).unwrap_or("all") {
        "all" => LanguageScope::All,
        "reasoning" => LanguageScope::Reasoning,
        "answer" => LanguageScope::Answer,
        other => panic!("fixture scope {other}"),
    }
}

/// Every labelled item: the share within its hand-counted interval, the spans left out as counted,
/// and the decision at the default threshold (0.9) equal to the hand label.
#[test]
fn labelled_set_scores_as_hand_counted() {
    let mut failures = Vec::new();
    let (mut items, mut agree, mut counted, mut within) = (0, 0, 0, 0);
    for line in LABELLED.lines().filter(|l| !l.trim().is_empty()) {
        let item: Value = serde_json::from_str(line).unwrap();
        let id = item["id"].as_str().unwrap();
        let v = verifier(item["target"].as_str().unwrap(), scope_of(&item));
        let task = Task { prompt: item.get("prompt").and_then(Value::as_str).map(String::from), ..Task::default() };
        let verdict = v.verify(&task, item["completion"].as_str().unwrap()).unwrap();
        items += 1;
        let decided = verdict.outcome == Outcome::Correct;
        let label = item["consistent"].as_bool().unwrap();
        if decided == label {
            agree += 1;
        } else if let Some(why) = item.get("known_miss") {
            println!("known miss {id}: decided consistent={decided}, labelled {label}: {why}");
        } else {
            failures.push(format!("{id}: decided consistent={decided}, labelled {label}; {}", verdict.detail));
        }
        if let Some(range) = item.get("share") {
            counted += 1;
            let (lo, hi) = (range[0].as_f64().unwrap(), range[1].as_f64().unwrap());
            let share = verdict.detail["share"].as_f64();
            if share.is_some_and(|s| s >= lo - 1e-9 && s <= hi + 1e-9) {
                within += 1;
            } else if let Some(why) = item.get("known_miss") {
                println!("known miss {id}: share {share:?} outside [{lo}, {hi}]: {why}");
            } else {
                failures.push(format!("{id}: share {share:?} outside [{lo}, {hi}]; {}", verdict.detail));
            }
            // In share mode the reward is the share.
            assert!((f64::from(verdict.reward) - share.unwrap_or(1.0)).abs() < 1e-6, "{id}");
        }
        if let Some(words) = item.get("words") {
            if verdict.detail["words"] != *words || verdict.reward != 1.0 {
                failures.push(format!("{id}: expected {words} words and reward 1; {}", verdict.detail));
            }
        }
        if let Some(excluded) = item.get("excluded") {
            let got = &verdict.detail["excluded"];
            if got["code"] != excluded["code"] || got["math"] != excluded["math"] {
                failures.push(format!("{id}: excluded {got} != {excluded}"));
            }
        }
    }
    println!("labelled set: {agree}/{items} decisions agree; {within}/{counted} shares within the hand count");
    assert!(items >= 40, "the labelled set has {items} items");
    // Every miss is a known one, marked in the fixture with the reason.
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn exact_counts_and_breakdown() {
    let v = verifier("zh", LanguageScope::All);
    // 6 + 5 Han characters; "Then we divide by the count" is 6 English words.
    let verdict =
        v.verify(&Task::default(), "<think>首先计算总和。Then we divide by the count.</think>平均值是五。").unwrap();
    assert_eq!(verdict.detail["words"], 17);
    assert_eq!(verdict.detail["target_words"], 11);
    assert_eq!(verdict.detail["languages"], json!({ "cmn": 11, "eng": 6 }));
    assert_eq!(verdict.detail["target"], "cmn");
    assert_eq!(verdict.detail["target_from"], "config");
    assert_eq!(verdict.outcome, Outcome::Incorrect);
    assert!((verdict.reward - 11.0 / 17.0).abs() < 1e-6);
}

#[test]
fn single_letters_digits_and_punctuation_are_not_counted() {
    let v = verifier("zh", LanguageScope::All);
    // Only the seven Han characters count: x, y, digits, '=' and punctuation do not.
    let verdict = v.verify(&Task::default(), "设 x = 3，y = 4，那么 x + y = 7。答案正确!").unwrap();
    assert_eq!(verdict.detail["words"], 7);
    assert_eq!(verdict.reward, 1.0);
}

#[test]
fn threshold_mode_gives_zero_or_one() {
    let config = |threshold| LanguageConfig {
        target: "zh".into(),
        mode: LanguageMode::Threshold,
        threshold,
        ..LanguageConfig::default()
    };
    let text = "<think>首先计算总和。Then we divide by the count.</think>平均值是五。"; // share 11/17 ≈ 0.647
    let low = LanguageVerifier::new(config(0.6)).unwrap().verify(&Task::default(), text).unwrap();
    assert_eq!((low.reward, low.outcome), (1.0, Outcome::Correct));
    let high = LanguageVerifier::new(config(0.7)).unwrap().verify(&Task::default(), text).unwrap();
    assert_eq!((high.reward, high.outcome), (0.0, Outcome::Incorrect));
    assert!((high.detail["share"].as_f64().unwrap() - 11.0 / 17.0).abs() < 1e-9);
}

#[test]
fn scopes_split_at_the_close_tag() {
    let text = "<think>The width is three and the height is four.</think>面积是十二。";
    let all = verifier("zh", LanguageScope::All).verify(&Task::default(), text).unwrap();
    let reasoning = verifier("zh", LanguageScope::Reasoning).verify(&Task::default(), text).unwrap();
    let answer = verifier("zh", LanguageScope::Answer).verify(&Task::default(), text).unwrap();
    assert_eq!(all.detail["words"], 14); // 9 English words + 5 Han
    assert_eq!(reasoning.detail["words"], 9);
    assert_eq!(reasoning.reward, 0.0);
    assert_eq!(answer.detail["words"], 5);
    assert_eq!(answer.reward, 1.0);
    // No close tag: the whole text is reasoning, and there is no answer.
    let open = "The width is three and the height is four";
    assert_eq!(verifier("en", LanguageScope::Reasoning).verify(&Task::default(), open).unwrap().reward, 1.0);
    let none = verifier("en", LanguageScope::Answer).verify(&Task::default(), open).unwrap();
    assert_eq!((none.reward, none.outcome), (0.0, Outcome::NoAnswer));
    // A custom close tag.
    let custom = LanguageVerifier::new(LanguageConfig {
        target: "en".into(),
        scope: LanguageScope::Answer,
        close: "<|end_think|>".into(),
        ..LanguageConfig::default()
    })
    .unwrap();
    let v = custom.verify(&Task::default(), "思考一下。<|end_think|>The answer is twelve.").unwrap();
    assert_eq!((v.reward, v.detail["words"].clone()), (1.0, json!(4)));
}

#[test]
fn auto_reads_the_prompt() {
    let v = verifier("auto", LanguageScope::All);
    let task = |prompt: &str| Task { prompt: Some(prompt.into()), ..Task::default() };
    let ru = v.verify(&task("Найдите площадь прямоугольника со сторонами три и четыре."), "Площадь равна двенадцати.");
    let ru = ru.unwrap();
    assert_eq!(
        (ru.reward, ru.detail["target"].clone(), ru.detail["target_from"].clone()),
        (1.0, json!("rus"), json!("prompt"))
    );
    // No prompt: the task is missing a field.
    let missing = v.verify(&Task::default(), "anything");
    assert!(matches!(missing, Err(VerifyError::MissingField("prompt"))), "{missing:?}");
    // A prompt with nothing but math and code: its language cannot be told.
    let mathy = v.verify(&task("$x^2 = 4$ `x = ?`"), "x = 2");
    assert!(matches!(mathy, Err(VerifyError::InvalidTask(_))), "{mathy:?}");
}

#[test]
fn language_codes() {
    let code = |s: &str| parse_language(s).map(|lang| lang.code());
    assert_eq!(code("en"), Some("eng"));
    assert_eq!(code("ENG"), Some("eng"));
    assert_eq!(code("zh-CN"), Some("cmn"));
    assert_eq!(code("zh-Hant"), Some("cmn"));
    assert_eq!(code("zho"), Some("cmn"));
    assert_eq!(code("pt_BR"), Some("por"));
    assert_eq!(code("fa"), Some("pes"));
    assert_eq!(code("xx"), None);
    assert_eq!(code("english"), None);
    assert_eq!(code(""), None);
}

#[test]
fn settings_from_the_registry_and_their_errors() {
    let spec = VerifierSpec::from_cli(
        "language",
        Some(
            json!({ "target": "fr", "scope": "answer", "mode": "threshold", "threshold": 0.8, "name": "lang_answer" }),
        ),
    )
    .unwrap();
    let built = spec.build().unwrap();
    assert_eq!(built.name(), "lang_answer");
    let v = built.verify(&Task::default(), "<think>x</think>Nous avons trouvé la réponse.").unwrap();
    assert_eq!((v.reward, v.outcome), (1.0, Outcome::Correct));

    let err = |settings: Value| match VerifierSpec::from_cli("language", Some(settings)).and_then(|s| s.build()) {
        Err(VerifyError::Config(message)) => message,
        Err(other) => panic!("expected a config error, got {other}"),
        Ok(_) => panic!("expected a config error"),
    };
    assert!(err(json!({ "target": "klingon" })).contains("target"));
    assert!(err(json!({ "threshold": 1.5 })).contains("threshold"));
    assert!(err(json!({ "min_words": 0 })).contains("min_words"));
    assert!(err(json!({ "candidates": ["en", "nope"] })).contains("candidates"));
    assert!(err(json!({ "scope": "everything" })).contains("everything"));
    assert!(err(json!({ "min_confidence": -0.1 })).contains("min_confidence"));
    assert!(err(json!({ "colour": "blue" })).contains("colour"));
}

#[test]
fn candidates_restrict_identification() {
    // Portuguese and Spanish share words; with only English and Spanish allowed, a Portuguese
    // sentence cannot come out as Portuguese.
    let text = "Para resolver o problema precisamos primeiro encontrar quantos alunos foram aprovados no exame.";
    let all = verifier("pt", LanguageScope::All).verify(&Task::default(), text).unwrap();
    assert_eq!(all.reward, 1.0);
    let restricted = LanguageVerifier::new(LanguageConfig {
        target: "es".into(),
        candidates: vec!["en".into()],
        ..LanguageConfig::default()
    })
    .unwrap();
    let v = restricted.verify(&Task::default(), text).unwrap();
    let languages = v.detail["languages"].as_object().unwrap();
    assert!(languages.keys().all(|k| k == "spa" || k == "eng"), "{languages:?}");
}

#[test]
fn the_v32_set_reports_each_part() {
    // Outcome reward stand-in (format), language and length, as a recipe composes them.
    let parts: Vec<(f32, Box<dyn Verifier>)> = vec![
        (1.0, Box::new(rlvr_verifiers::FormatVerifier::new(Default::default()))),
        (0.1, Box::new(verifier("auto", LanguageScope::Reasoning))),
        (
            1.0,
            Box::new(
                LengthPenalty::new(LengthConfig { max_length: 100, cache_length: 50, ..Default::default() }).unwrap(),
            ),
        ),
    ];
    let weighted = Weighted::new(parts);
    assert_eq!(weighted.name(), "format+language+length");
    let task = Task {
        prompt: Some("一个长方形的宽是三，高是四，它的面积是多少？".into()), ..Task::default()
    };
    let v = weighted.verify(&task, "<think>Width times height is twelve.</think>面积是十二。").unwrap();
    let parts = v.detail["parts"].as_array().unwrap();
    assert_eq!(parts[1]["name"], "language");
    assert_eq!(parts[1]["reward"], 0.0);
    assert_eq!(parts[1]["detail"]["target"], "cmn");
    assert_eq!(v.reward, 1.0);
}

#[test]
fn only_closed_math_is_left_out() {
    let v = verifier("zh", LanguageScope::All);
    // An opening delimiter without its close hides nothing: the English after it is counted.
    for text in [
        "\\[ Let me think in English here.",
        "$$ Let me think in English here.",
        "\\begin{align} Let me think in English here.",
    ] {
        let verdict = v.verify(&Task::default(), text).unwrap();
        assert_eq!(verdict.detail["excluded"]["math"], 0, "{text}");
        assert_eq!(verdict.reward, 0.0, "{text}: {}", verdict.detail);
    }
    // What is left out is counted in characters too, for the metrics: `$x+1$` is 5, `f(x)` in
    // backticks 6.
    let verdict = v.verify(&Task::default(), "答案是 $x+1$ 和 `f(x)`。").unwrap();
    assert_eq!(verdict.detail["excluded"], json!({ "code": 1, "math": 1, "chars": 11 }));
    assert_eq!((verdict.detail["words"].clone(), verdict.reward), (json!(4), 1.0));
}
