//! The DeepSeek-V3.2 chat encoding. Every expected prompt below is written out by hand from the
//! format description (docs/model.md §5.3 and DeepSeek's `encoding_dsv32.py` behaviour), not produced by
//! the code under test.

use rlvr_rollout::chat::{
    encode_chat, has_wide_int, parse_completion, parse_messages, ChatError, ChatOptions, Message, ParsedCompletion,
    Role, Tool, ToolCall,
};
use serde_json::{json, Value};

const CHAT: ChatOptions = ChatOptions { thinking: false, add_generation_prompt: true, drop_thinking: true };
const THINK: ChatOptions = ChatOptions { thinking: true, add_generation_prompt: true, drop_thinking: true };

/// The tools block as DeepSeek's template writes it, before the schema lines.
const TOOLS_HEAD: &str = "## Tools\n\nYou have access to a set of tools you can use to answer the user's question.\nYou can invoke functions by writing a \"<｜DSML｜function_calls>\" block like the following as part of your reply to the user:\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"$FUNCTION_NAME\">\n<｜DSML｜parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</｜DSML｜parameter>\n...\n</｜DSML｜invoke>\n<｜DSML｜invoke name=\"$FUNCTION_NAME2\">\n...\n</｜DSML｜invoke>\n</｜DSML｜function_calls>\n\nString and scalar parameters should be specified as is without any escaping or quotes, while lists and objects should use JSON format. The \"string\" attribute should be set to \"true\" for string type parameters and \"false\" for other types (numbers, booleans, arrays, objects).\n\nIf the thinking_mode is enabled, then after function results you should strongly consider outputting a thinking block. Here is an example:\n\n<｜DSML｜function_calls>\n...\n</｜DSML｜function_calls>\n\n<function_results>\n...\n</function_results>\n\n<think>...thinking about results</think>\n\nHere are the functions available in JSONSchema format:\n<functions>\n";

fn user(text: &str) -> Message {
    Message::new(Role::User, text)
}

fn assistant(text: &str) -> Message {
    Message::new(Role::Assistant, text)
}

fn call(name: &str, args: Value) -> ToolCall {
    ToolCall::new(name, args.as_object().expect("object").clone())
}

fn weather_tool() -> Tool {
    // Keys already in sorted order, so the rendering is the same with or without preserve_order.
    let parameters = json!({"properties": {"city": {"type": "string"}}, "required": ["city"], "type": "object"});
    Tool::new("get_weather", Some("Get the weather".into()), Some(parameters))
}

/// user → assistant with two calls → two results.
fn weather_calls(reasoning: Option<&str>) -> Vec<Message> {
    let calls =
        vec![call("get_weather", json!({"city": "Paris"})), call("get_weather", json!({"city": "Rome", "days": 2}))];
    let mut turn = assistant("").with_tool_calls(calls);
    turn.reasoning_content = reasoning.map(str::to_string);
    vec![user("Weather in Paris and Rome?"), turn, Message::new(Role::Tool, "18C"), Message::new(Role::Tool, "21C")]
}

const WEATHER_DSML: &str = "\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"get_weather\">\n<｜DSML｜parameter name=\"city\" string=\"true\">Paris</｜DSML｜parameter>\n</｜DSML｜invoke>\n<｜DSML｜invoke name=\"get_weather\">\n<｜DSML｜parameter name=\"city\" string=\"true\">Rome</｜DSML｜parameter>\n<｜DSML｜parameter name=\"days\" string=\"false\">2</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜function_calls>";

fn field_of(err: ChatError) -> String {
    match err {
        ChatError::Field { field, .. } => field,
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn single_user_turn_non_thinking() {
    let prompt = encode_chat(&[user("Hi")], &[], &CHAT).unwrap();
    assert_eq!(prompt, "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜></think>");
}

#[test]
fn single_user_turn_thinking() {
    let prompt = encode_chat(&[user("Hi")], &[], &THINK).unwrap();
    assert_eq!(prompt, "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜><think>");
}

#[test]
fn system_then_user() {
    let msgs = [Message::new(Role::System, "You are helpful."), user("Hi")];
    let prompt = encode_chat(&msgs, &[], &CHAT).unwrap();
    assert_eq!(prompt, "<｜begin▁of▁sentence｜>You are helpful.<｜User｜>Hi<｜Assistant｜></think>");
}

#[test]
fn multi_turn_drops_earlier_reasoning_but_keeps_think_end() {
    let msgs = [user("1+1?"), assistant("2").with_reasoning("add them"), user("times 3?")];
    let thinking = encode_chat(&msgs, &[], &THINK).unwrap();
    assert_eq!(
        thinking,
        "<｜begin▁of▁sentence｜><｜User｜>1+1?<｜Assistant｜></think>2<｜end▁of▁sentence｜><｜User｜>times 3?<｜Assistant｜><think>"
    );
    let chat = encode_chat(&msgs, &[], &CHAT).unwrap();
    assert_eq!(
        chat,
        "<｜begin▁of▁sentence｜><｜User｜>1+1?<｜Assistant｜></think>2<｜end▁of▁sentence｜><｜User｜>times 3?<｜Assistant｜></think>"
    );
}

#[test]
fn final_assistant_turn_keeps_its_reasoning_in_thinking_mode() {
    let msgs = [user("Hi"), assistant("Hello").with_reasoning("greet back")];
    let thinking = encode_chat(&msgs, &[], &THINK).unwrap();
    assert_eq!(
        thinking,
        "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜><think>greet back</think>Hello<｜end▁of▁sentence｜>"
    );
    let chat = encode_chat(&msgs, &[], &CHAT).unwrap();
    assert_eq!(chat, "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜></think>Hello<｜end▁of▁sentence｜>");
}

#[test]
fn tools_calls_and_results_thinking() {
    let mut msgs = vec![Message::new(Role::System, "S")];
    msgs.extend(weather_calls(Some("need weather")));
    let prompt = encode_chat(&msgs, &[weather_tool()], &THINK).unwrap();
    let expected = format!(
        "<｜begin▁of▁sentence｜>S\n\n{TOOLS_HEAD}{}\n</functions>\n<｜User｜>Weather in Paris and Rome?<｜Assistant｜><think>need weather</think>{WEATHER_DSML}<｜end▁of▁sentence｜>\n\n<function_results>\n<result>18C</result>\n<result>21C</result>\n</function_results>\n\n<think>",
        r#"{"name": "get_weather", "description": "Get the weather", "parameters": {"properties": {"city": {"type": "string"}}, "required": ["city"], "type": "object"}}"#
    );
    assert_eq!(prompt, expected);
}

#[test]
fn tool_calls_and_results_non_thinking() {
    let prompt = encode_chat(&weather_calls(None), &[], &CHAT).unwrap();
    let expected = format!(
        "<｜begin▁of▁sentence｜><｜User｜>Weather in Paris and Rome?<｜Assistant｜></think>{WEATHER_DSML}<｜end▁of▁sentence｜>\n\n<function_results>\n<result>18C</result>\n<result>21C</result>\n</function_results>\n\n</think>"
    );
    assert_eq!(prompt, expected);
}

#[test]
fn tools_without_system_message_get_their_own_block() {
    let tool = Tool::new("now", None, None);
    let prompt = encode_chat(&[user("Time?")], &[tool], &CHAT).unwrap();
    let expected = format!(
        "<｜begin▁of▁sentence｜>\n\n{TOOLS_HEAD}{{\"name\": \"now\"}}\n</functions>\n<｜User｜>Time?<｜Assistant｜></think>"
    );
    assert_eq!(prompt, expected);
}

#[test]
fn tool_round_then_new_user_turn_thinking() {
    let msgs = [
        user("q1"),
        assistant("").with_reasoning("r1").with_tool_calls(vec![call("f", json!({}))]),
        Message::new(Role::Tool, "ok"),
        assistant("done").with_reasoning("r2"),
        user("q2"),
    ];
    let prompt = encode_chat(&msgs, &[], &THINK).unwrap();
    assert_eq!(
        prompt,
        "<｜begin▁of▁sentence｜><｜User｜>q1<｜Assistant｜></think>\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"f\">\n\n</｜DSML｜invoke>\n</｜DSML｜function_calls><｜end▁of▁sentence｜>\n\n<function_results>\n<result>ok</result>\n</function_results>\n\n</think>done<｜end▁of▁sentence｜><｜User｜>q2<｜Assistant｜><think>"
    );
}

#[test]
fn non_string_arguments_are_python_style_json() {
    let turn = assistant("").with_tool_calls(vec![call("g", json!({"a": [1, 2], "b": {"c": null, "d": true}}))]);
    let prompt = encode_chat(&[user("go"), turn], &[], &CHAT).unwrap();
    assert_eq!(
        prompt,
        "<｜begin▁of▁sentence｜><｜User｜>go<｜Assistant｜></think>\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"g\">\n<｜DSML｜parameter name=\"a\" string=\"false\">[1, 2]</｜DSML｜parameter>\n<｜DSML｜parameter name=\"b\" string=\"false\">{\"c\": null, \"d\": true}</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜function_calls><｜end▁of▁sentence｜>"
    );
}

#[test]
fn developer_role_is_a_user_turn_with_a_preamble() {
    let prompt = encode_chat(&[Message::new(Role::Developer, "Be brief.")], &[], &THINK).unwrap();
    assert_eq!(prompt, "<｜begin▁of▁sentence｜><｜User｜>\n\n# The user's message is: Be brief.<｜Assistant｜><think>");
}

fn developer_in_history() -> Vec<Message> {
    vec![
        user("u1"),
        assistant("a1").with_reasoning("r1"),
        Message::new(Role::Developer, "d"),
        assistant("a2").with_reasoning("r2"),
        user("u3"),
    ]
}

#[test]
fn drop_thinking_removes_earlier_developer_turns() {
    let prompt = encode_chat(&developer_in_history(), &[], &THINK).unwrap();
    assert_eq!(
        prompt,
        "<｜begin▁of▁sentence｜><｜User｜>u1<｜Assistant｜></think>a1<｜end▁of▁sentence｜>a2<｜end▁of▁sentence｜><｜User｜>u3<｜Assistant｜><think>"
    );
}

#[test]
fn drop_thinking_false_keeps_developer_turns_and_still_hides_old_reasoning() {
    let opts = ChatOptions { drop_thinking: false, ..THINK };
    let prompt = encode_chat(&developer_in_history(), &[], &opts).unwrap();
    assert_eq!(
        prompt,
        "<｜begin▁of▁sentence｜><｜User｜>u1<｜Assistant｜></think>a1<｜end▁of▁sentence｜><｜User｜>\n\n# The user's message is: d<｜Assistant｜></think>a2<｜end▁of▁sentence｜><｜User｜>u3<｜Assistant｜><think>"
    );
}

#[test]
fn without_generation_prompt_the_prompt_ends_with_the_last_message() {
    let opts = ChatOptions { add_generation_prompt: false, ..THINK };
    assert_eq!(encode_chat(&[user("Hi")], &[], &opts).unwrap(), "<｜begin▁of▁sentence｜><｜User｜>Hi");
    let prompt = encode_chat(&weather_calls(Some("w")), &[], &opts).unwrap();
    assert!(prompt.ends_with("<result>21C</result>\n</function_results>"), "{prompt:?}");
}

#[test]
fn encode_then_parse_round_trips_an_assistant_turn() {
    let reply = assistant("Calling.").with_reasoning("look it up").with_tool_calls(vec![call(
        "search",
        json!({"k": 3, "query": "rust <tags> & \"quotes\"", "tags": ["a", "b"]}),
    )]);
    let prompt = encode_chat(&[user("find it")], &[], &THINK).unwrap();
    let full = encode_chat(&[user("find it"), reply.clone()], &[], &THINK).unwrap();
    let completion = full.strip_prefix(&prompt).expect("the prompt is a prefix of the full conversation");
    let parsed = parse_completion(completion, true).unwrap();
    assert_eq!(parsed.into_message(), reply);
}

#[test]
fn parse_completion_non_thinking_with_typed_parameters() {
    let text = "Sure.\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"n\" string=\"false\">1.5</｜DSML｜parameter>\n<｜DSML｜parameter name=\"s\" string=\"true\">42</｜DSML｜parameter>\n<｜DSML｜parameter name=\"o\" string=\"false\">{\"x\": [true]}</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜function_calls><｜end▁of▁sentence｜>";
    let parsed = parse_completion(text, false).unwrap();
    assert_eq!(parsed.reasoning_content, None);
    assert_eq!(parsed.content, "Sure.");
    assert_eq!(parsed.tool_calls, vec![call("f", json!({"n": 1.5, "s": "42", "o": {"x": [true]}}))]);
}

#[test]
fn parse_completion_plain_and_truncated() {
    let done = parse_completion("think hard</think>The answer is 4.<｜end▁of▁sentence｜>", true).unwrap();
    let want = ParsedCompletion {
        reasoning_content: Some("think hard".into()),
        content: "The answer is 4.".into(),
        tool_calls: vec![],
    };
    assert_eq!(done, want);
    let cut = parse_completion("still thinking about", true).unwrap();
    assert_eq!((cut.reasoning_content.as_deref(), cut.content.as_str()), (Some("still thinking about"), ""));
    let chat = parse_completion("Hello!", false).unwrap();
    assert_eq!((chat.reasoning_content, chat.content.as_str()), (None, "Hello!"));
}

#[test]
fn malformed_completions_are_errors_with_offsets() {
    let bad_json = "\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"n\" string=\"false\">[1,</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜function_calls>";
    let err = parse_completion(bad_json, false).unwrap_err();
    let at = bad_json.find("[1,").unwrap();
    assert!(matches!(&err, ChatError::Completion { at: a, .. } if *a == at), "{err:?}");
    let trailing = "x\n\n<｜DSML｜function_calls>\n</｜DSML｜function_calls>junk";
    assert!(matches!(parse_completion(trailing, false), Err(ChatError::Completion { .. })));
    let unclosed = "x\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"f\">\n";
    assert!(matches!(parse_completion(unclosed, false), Err(ChatError::Completion { .. })));
    let second_end = parse_completion("a</think>b</think>c", true).unwrap_err();
    assert!(matches!(second_end, ChatError::Completion { at: 10, .. }), "{second_end:?}");
}

#[test]
fn messages_serde_matches_the_openai_shape() {
    let msg = assistant("").with_reasoning("r").with_tool_calls(vec![call("f", json!({"a": 1}))]);
    let value = serde_json::to_value(&msg).unwrap();
    assert_eq!(
        value,
        json!({"role": "assistant", "content": "", "reasoning_content": "r",
               "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]})
    );
    let back: Message = serde_json::from_value(value).unwrap();
    assert_eq!(back, msg);
    let parts: Message = serde_json::from_value(
        json!({"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}),
    )
    .unwrap();
    assert_eq!(parts, user("ab"));
    let null_content: Message =
        serde_json::from_value(json!({"role": "tool", "content": null, "tool_call_id": "x"})).unwrap();
    assert_eq!(null_content, Message::new(Role::Tool, ""));
}

#[test]
fn tools_serde_matches_the_openai_shape() {
    let value = json!({"type": "function", "function": {"name": "now", "description": "Current time"}});
    let tool: Tool = serde_json::from_value(value.clone()).unwrap();
    let given = value["function"].as_object().cloned();
    assert_eq!(tool, Tool { given, ..Tool::new("now", Some("Current time".into()), None) });
    assert_eq!(serde_json::to_value(&tool).unwrap(), value);
    let wrong = serde_json::from_value::<Tool>(json!({"type": "retrieval", "function": {"name": "x"}}));
    assert!(wrong.unwrap_err().to_string().contains("field `type`"));
}

#[test]
fn bad_message_json_names_the_field() {
    let non_object_args = json!([
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": null, "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "[1, 2]"}}]}
    ]);
    let err = parse_messages(&non_object_args).unwrap_err();
    assert_eq!(field_of(err), "messages[1].tool_calls[0].function.arguments");
    let not_json = json!([{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]}]);
    assert_eq!(field_of(parse_messages(&not_json).unwrap_err()), "messages[0].tool_calls[0].function.arguments");
    let unknown_role = json!([{"role": "robot", "content": "beep"}]);
    let err = parse_messages(&unknown_role).unwrap_err();
    assert!(err.to_string().contains("robot"), "{err}");
    assert_eq!(field_of(err), "messages[0].role");
    let via_serde = serde_json::from_value::<Message>(json!({"role": "robot"})).unwrap_err();
    assert!(via_serde.to_string().contains("field `role`"), "{via_serde}");
}

#[test]
fn inconsistent_conversations_are_rejected() {
    let orphan = [user("hi"), Message::new(Role::Tool, "result")];
    assert_eq!(field_of(encode_chat(&orphan, &[], &CHAT).unwrap_err()), "messages[1].role");
    let mut missing_result = weather_calls(None);
    missing_result.pop();
    assert_eq!(field_of(encode_chat(&missing_result, &[], &CHAT).unwrap_err()), "messages[2].role");
    let no_reasoning = [user("hi"), assistant("hello")];
    assert_eq!(field_of(encode_chat(&no_reasoning, &[], &THINK).unwrap_err()), "messages[1].reasoning_content");
    let empty_developer = [Message::new(Role::Developer, "")];
    assert_eq!(field_of(encode_chat(&empty_developer, &[], &CHAT).unwrap_err()), "messages[0].content");
}

/// Fixtures written by hand from the reference encoder's rules: a tool is its `function` object
/// dumped whole with Python's `json.dumps(ensure_ascii=False)` (every key as given, in order, a
/// null description kept), and non-string arguments likewise, floats as Python's `repr`.
#[test]
fn tools_and_arguments_render_as_python_dumps_them() {
    let given = r#"[{"type": "function", "function": {"strict": true, "name": "f", "description": null,
        "parameters": {"type": "object", "properties": {"x": {"type": "number", "minimum": 0.00001,
        "maximum": 1e20, "default": 1234567890123456.0, "multipleOf": 2.5E-7, "ü": "é"}}, "required": ["x"]}}}]"#;
    let tools: Vec<Tool> = serde_json::from_str(given).unwrap();
    let messages = vec![Message::new(Role::System, "S"), user("go")];
    let prompt = encode_chat(&messages, &tools, &CHAT).unwrap();
    let line = r#"{"strict": true, "name": "f", "description": null, "parameters": {"type": "object", "properties": {"x": {"type": "number", "minimum": 1e-05, "maximum": 1e+20, "default": 1234567890123456.0, "multipleOf": 2.5e-07, "ü": "é"}}, "required": ["x"]}}"#;
    assert!(prompt.contains(&format!("<functions>\n{line}\n</functions>\n")), "{prompt}");
    let args = json!({"a": 0.00001, "b": -2.5e-7, "c": 1e16, "d": 123.0, "e": [1.5, 1e300, 0.0001, 0.5], "f": -0.0,
        "g": 18446744073709551615u64, "h": -9223372036854775808i64});
    let turn = assistant("").with_tool_calls(vec![call("g", args)]);
    let prompt = encode_chat(&[user("go"), turn], &[], &CHAT).unwrap();
    let want = [
        ("a", "1e-05"),
        ("b", "-2.5e-07"),
        ("c", "1e+16"),
        ("d", "123.0"),
        ("e", "[1.5, 1e+300, 0.0001, 0.5]"),
        ("f", "-0.0"),
        ("g", "18446744073709551615"),
        ("h", "-9223372036854775808"),
    ];
    for (key, text) in want {
        let param = format!("<｜DSML｜parameter name=\"{key}\" string=\"false\">{text}</｜DSML｜parameter>");
        assert!(prompt.contains(&param), "{key}: {prompt}");
    }
    // Integers beyond 64 bits are written as given, from the text (serde_json holds them as floats).
    let wide = json!({"role": "assistant", "content": "", "tool_calls": [{"type": "function", "id": "1",
        "function": {"name": "g", "arguments": "{\"n\": 123456789012345678901234567890, \"m\": [-0, -18446744073709551616, 1E-7],\n \"s\": \"99999999999999999999999\", \"o\": {\"k\":1.0e2}}"}}]});
    let parsed = parse_messages(&json!([{"role": "user", "content": "go"}, wide])).unwrap();
    let prompt = encode_chat(&parsed, &[], &CHAT).unwrap();
    let want = [
        ("n", "false", "123456789012345678901234567890"),
        ("m", "false", "[0, -18446744073709551616, 1e-07]"),
        ("s", "true", "99999999999999999999999"),
        ("o", "false", "{\"k\": 100.0}"),
    ];
    for (key, string, text) in want {
        let param = format!("<｜DSML｜parameter name=\"{key}\" string=\"{string}\">{text}</｜DSML｜parameter>");
        assert!(prompt.contains(&param), "{key}: {prompt}");
    }
    let mut tool: Tool = serde_json::from_str(
        r#"{"type": "function", "function": {"name": "w", "parameters": {"maximum": 123456789012345678901234567890}}}"#,
    )
    .unwrap();
    tool.given_text = Some(r#"{"name": "w","parameters":{"maximum":123456789012345678901234567890, "x": 1e5}}"#.into());
    let prompt = encode_chat(&[user("go")], &[tool], &CHAT).unwrap();
    let line = r#"{"name": "w", "parameters": {"maximum": 123456789012345678901234567890, "x": 100000.0}}"#;
    assert!(prompt.contains(&format!("<functions>\n{line}\n</functions>")), "{prompt}");
    assert!(has_wide_int("[18446744073709551616]") && has_wide_int("{\"a\": -9223372036854775809}"));
    assert!(!has_wide_int("[18446744073709551615, 1e400, \"123456789012345678901234567890\", 1.5]"));
}
