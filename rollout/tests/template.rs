//! Hugging Face chat templates (`rlvr_rollout::template`) against transformers' own
//! `apply_chat_template`: `fixtures/templates/cases.json` holds templates written for this test
//! (ChatML-style with tools and a thinking switch, a Llama-style one with `namespace`,
//! `raise_exception`, bos/eos, and one exercising Python string/dict methods and `tojson`'s
//! keywords), each rendered by transformers 5.23.0 (`fixtures/templates/make.py` made the file).
//! `strftime_now` is checked against the system's `date`.

use rlvr_rollout::template::{ChatRenderer, ChatTemplate, TemplateError};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

fn cases() -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/templates/cases.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let file: Value = serde_json::from_str(&text).unwrap();
    file["cases"].as_array().unwrap().clone()
}

fn template_of(case: &Value) -> ChatTemplate {
    let specials: BTreeMap<String, String> = case["specials"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    ChatTemplate::new(case["template"].as_str().unwrap(), specials).unwrap()
}

#[test]
fn templates_render_as_transformers_renders_them() {
    let cases = cases();
    assert!(cases.len() >= 8);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let template = template_of(case);
        let messages = case["messages"].as_array().unwrap();
        let mut extra: Map<String, Value> = case["extra"].as_object().unwrap().clone();
        if !case["tools"].is_null() {
            extra.insert("tools".into(), case["tools"].clone());
        }
        let generation = case["add_generation_prompt"].as_bool().unwrap();
        let got = template.render(messages, generation, &extra);
        match (case.get("expected"), got) {
            (Some(expected), Ok(text)) => assert_eq!(text, expected.as_str().unwrap(), "case {name}"),
            (None, Err(TemplateError::Render(message))) => {
                let expected = case["error"].as_str().unwrap();
                assert!(message.contains(expected), "case {name}: {message:?} should name {expected:?}");
            }
            (expected, got) => panic!("case {name}: expected {expected:?}, got {got:?}"),
        }
    }
}

#[test]
fn strftime_now_is_the_local_date() {
    let template = ChatTemplate::new("{{ strftime_now('%Y-%m-%d') }}", BTreeMap::new()).unwrap();
    let before = std::process::Command::new("date").arg("+%Y-%m-%d").output().unwrap();
    let got = template.render(&[], false, &Map::new()).unwrap();
    let after = std::process::Command::new("date").arg("+%Y-%m-%d").output().unwrap();
    let dates = [before, after].map(|o| String::from_utf8(o.stdout).unwrap().trim().to_string());
    assert!(dates.contains(&got), "{got} vs {dates:?}");
}

#[test]
fn model_dir_template_comes_from_its_files() {
    let dir = tempfile::tempdir().unwrap();
    // No template: V3.2's own encoding.
    let renderer = ChatRenderer::for_model_dir(dir.path()).unwrap();
    assert!(matches!(renderer, ChatRenderer::DeepseekV32));
    let messages = [serde_json::json!({"role": "user", "content": "2+2?"})];
    let text = renderer.render(&messages, false).unwrap();
    assert_eq!(text, "<｜begin▁of▁sentence｜><｜User｜>2+2?<｜Assistant｜></think>");
    assert_eq!(renderer.render_without_bos(&messages, false).unwrap(), "<｜User｜>2+2?<｜Assistant｜></think>");
    // tokenizer_config.json's template, with its bos as an AddedToken object.
    let config = serde_json::json!({
        "bos_token": {"__type": "AddedToken", "content": "<s>"},
        "chat_template": "{{ bos_token }}{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}",
    });
    std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
    let renderer = ChatRenderer::for_model_dir(dir.path()).unwrap();
    assert_eq!(renderer.render(&messages, false).unwrap(), "<s>user: 2+2?\nassistant:");
    assert_eq!(renderer.render_without_bos(&messages, false).unwrap(), "user: 2+2?\nassistant:");
    // chat_template.jinja wins over the config's.
    std::fs::write(dir.path().join("chat_template.jinja"), "{{ messages[0].content }}!").unwrap();
    let renderer = ChatRenderer::for_model_dir(dir.path()).unwrap();
    assert_eq!(renderer.render(&messages, false).unwrap(), "2+2?!");
}
