//! `rlvr serve` on a model of the families before V3.2 (a `deepseek_v3` checkpoint) renders chat
//! prompts with the Jinja `chat_template` of its tokenizer config, as transformers'
//! `apply_chat_template` does (tests/fixtures/render_chat.py), and a template that cannot render
//! the messages is a 400 naming `messages`.

mod common;

use common::{fixture, root, Server};
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};

/// A DeepSeek-V3-like template: a system prompt gathered with `namespace`, `loop.last`, string
/// methods, `raise_exception` on a bad role, the generation prompt.
const TEMPLATE: &str = "{% set ns = namespace(system='') %}{% for m in messages %}{% if m['role'] == 'system' %}{% set ns.system = m['content'] %}{% endif %}{% endfor %}{{ bos_token }}{{ ns.system }}{% for m in messages %}{% if m['role'] == 'user' %}<U>{{ m['content'] | trim }}{% elif m['role'] == 'assistant' %}<A>{{ m['content'].strip() }}{% if not loop.last %}{{ eos_token }}{% endif %}{% elif m['role'] != 'system' %}{{ raise_exception('unknown role ' + m['role']) }}{% endif %}{% endfor %}{% if add_generation_prompt %}<A>{% endif %}";

fn request(port: u16, body: &str) -> (u16, String) {
    common::http(port, "POST", "/v1/chat/completions", None, body)
}

#[test]
fn chat_prompts_follow_the_models_template() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("v3");
    std::fs::create_dir(&model).unwrap();
    for file in ["config.json", "generation_config.json", "model.safetensors"] {
        std::fs::copy(fixture("tiny-v3").join(file), model.join(file)).unwrap();
    }
    rlvr_trainer::data::write_arithmetic_tokenizer(&model).unwrap();
    let config_path = model.join("tokenizer_config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["chat_template"] = json!(TEMPLATE);
    config["bos_token"] = json!("<bos>");
    config["eos_token"] = json!("<eos>");
    std::fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();

    let server = Server::start(&["--model", model.to_str().unwrap(), "--slots", "2"]);
    let conversations = json!([
        [{"role": "user", "content": "  1+2=  "}],
        [{"role": "system", "content": "Add."}, {"role": "user", "content": "3+4="}, {"role": "assistant", "content": " 7 "}, {"role": "user", "content": "5+6="}],
    ]);
    let mut ours = Vec::new();
    for messages in conversations.as_array().unwrap() {
        let body = json!({"messages": messages, "max_tokens": 2, "temperature": 0, "return_prompt": true});
        let (status, answer) = request(server.port, &body.to_string());
        assert_eq!(status, 200, "{answer}");
        let answer: Value = serde_json::from_str(&answer).unwrap();
        ours.push(answer["prompt"].as_str().unwrap().to_string());
    }
    assert_eq!(ours[1], "<bos>Add.<U>3+4=<A>7<eos><U>5+6=<A>", "the template as written");

    // transformers renders the same template the same way.
    let python = root().join(".venv/bin/python");
    let mut py = Command::new(&python)
        .arg(root().join("tests/fixtures/render_chat.py"))
        .arg(&model)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    py.stdin.take().unwrap().write_all(conversations.to_string().as_bytes()).unwrap();
    let out = py.wait_with_output().unwrap();
    if out.status.success() {
        let theirs: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(ours, theirs, "rlvr serve vs transformers' apply_chat_template");
    } else if std::env::var_os("RLVR_REQUIRE_TRANSFORMERS").is_some() {
        panic!("transformers could not render: {}", String::from_utf8_lossy(&out.stderr));
    } else {
        eprintln!("skipped the transformers comparison: {}", String::from_utf8_lossy(&out.stderr));
    }

    // A role the template refuses: a 400 naming `messages`, with the template's own message.
    let body = json!({"messages": [{"role": "tool", "content": "x"}], "max_tokens": 1});
    let (status, answer) = request(server.port, &body.to_string());
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("messages") && answer.contains("unknown role tool"), "{answer}");
}
