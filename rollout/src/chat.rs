//! The DeepSeek-V3.2 chat encoding (docs/model.md §5.3): messages → prompt string, completion → message.
//!
//! V3.2 ships no Jinja template; DeepSeek's `encoding/encoding_dsv32.py` defines the format, and this
//! is a Rust rendition of its behaviour (checked against copies of that file vendored in public
//! inference servers):
//! * `bos` + system content [+ `"\n\n"` + tools block] + `<｜User｜>{content}<｜Assistant｜>`, then
//!   `<think>` after the last user turn in thinking mode, else `</think>`.
//! * assistant: `[{reasoning}</think>]{content}[tool calls]<｜end▁of▁sentence｜>`; the reasoning part
//!   only after the last user turn in thinking mode, so earlier turns keep just the user's `</think>`.
//! * tool calls: `\n\n<｜DSML｜function_calls>\n` + invokes joined by `\n` + `\n</｜DSML｜function_calls>`;
//!   a parameter is written raw when it is a string (`string="true"`), else as JSON.
//! * tool results, matched to calls by order: `\n\n<function_results>`, `\n<result>…</result>` each,
//!   `\n</function_results>`, then `\n\n<think>` (thinking, after the last user turn) or `\n\n</think>`.
//! * developer: a user turn whose content is `\n\n# The user's message is: {content}`.
//! * drop_thinking (thinking mode): earlier assistant reasoning is removed — the renderer never shows
//!   it anyway — and developer turns before the last user turn are dropped (the Python file fails on
//!   that case; dropping is what its filter intends).
//!
//! Choices where the OpenAI API and the Python file differ: `tools` go after the first message when it
//! is a system message, else into an empty system block (vLLM always inserts a new system message,
//! putting tools before the caller's system text). `add_generation_prompt: false` omits the trailing
//! `<｜Assistant｜>` + think marker (or `\n\n` + marker after tool results); the Python file always
//! writes it. `parse_completion` accepts a thinking-mode text without `</think>` (a completion cut at
//! max tokens) as all reasoning, where the Python file raises.
//! JSON is written as Python's `json.dumps(ensure_ascii=False)` does (`", "` and `": "`, floats as
//! Python's `repr`: `1e-05`, `1e+20`, `123.0`); keys keep the request's order (serde_json's
//! `preserve_order` is on in the workspace). A tool is its `function` object as given, every key
//! kept. Integers beyond 64 bits, which serde_json reads as floats, are written from the text as
//! given ([`Tool::given_text`], [`ToolCall::raw_arguments`], [`py_dumps_raw`]).
//! Left out: `response_format`, per-message tools, tool-call ids, image content parts.
//!
//! Files: this one renders prompts; `chat/openai.rs` is the OpenAI JSON shape of messages and tools;
//! `chat/completion.rs` parses generated text back into an assistant message.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

mod completion;
mod openai;

pub use completion::{parse_completion, ParsedCompletion};
pub use openai::parse_messages;

/// Beginning of sequence.
pub const BOS: &str = "<｜begin▁of▁sentence｜>";
/// End of sequence; closes every assistant turn.
pub const EOS: &str = "<｜end▁of▁sentence｜>";
/// Opens a user (or developer) turn.
pub const USER: &str = "<｜User｜>";
/// Opens the assistant's reply.
pub const ASSISTANT: &str = "<｜Assistant｜>";
/// Starts reasoning (thinking mode).
pub const THINK_START: &str = "<think>";
/// Ends reasoning; in non-thinking mode it directly follows `<｜Assistant｜>`.
pub const THINK_END: &str = "</think>";
/// The marker inside every DSML tool-call tag.
pub const DSML: &str = "｜DSML｜";

const CALLS_OPEN: &str = "\n\n<｜DSML｜function_calls>";
const CALLS_CLOSE: &str = "</｜DSML｜function_calls>";
const INVOKE_OPEN: &str = "<｜DSML｜invoke name=\"";
const INVOKE_CLOSE: &str = "</｜DSML｜invoke>";
const PARAM_OPEN: &str = "<｜DSML｜parameter name=\"";
const PARAM_CLOSE: &str = "</｜DSML｜parameter>";

/// Bad chat input, or a completion that is not well-formed V3.2 output.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChatError {
    /// A message or tool field is missing, has the wrong type or breaks the format's rules.
    #[error("field `{field}`: {message}")]
    Field {
        /// Path to the field, e.g. `messages[2].tool_calls[0].function.arguments`.
        field: String,
        /// What was wrong.
        message: String,
    },
    /// A completion could not be parsed.
    #[error("completion at byte {at}: {message}")]
    Completion {
        /// Byte offset into the completion text.
        at: usize,
        /// What was expected.
        message: String,
    },
}

impl ChatError {
    fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ChatError::Field { field: field.into(), message: message.into() }
    }

    /// Puts `prefix.` in front of a field path (e.g. `messages[3]`).
    fn under(self, prefix: &str) -> Self {
        match self {
            ChatError::Field { field, message } => ChatError::field(format!("{prefix}.{field}"), message),
            other => other,
        }
    }
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions before the conversation.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
    /// A tool's result, answering the preceding assistant's tool calls in order.
    Tool,
    /// A user turn carrying developer instructions (V3.2's `developer` role).
    Developer,
}

/// One function call made by the assistant.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The function's name.
    pub name: String,
    /// Its arguments (a JSON object).
    pub arguments: Map<String, Value>,
    /// The arguments' JSON text as the request gave it, kept when it holds an integer beyond 64 bits
    /// ([`has_wide_int`]), which `arguments` holds only as a float: the prompt then writes the
    /// values from this text, every digit kept.
    pub raw_arguments: Option<String>,
}

impl ToolCall {
    /// A call with these arguments.
    pub fn new(name: impl Into<String>, arguments: Map<String, Value>) -> Self {
        ToolCall { name: name.into(), arguments, raw_arguments: None }
    }
}

/// One chat message. Serde uses the OpenAI chat API shape: `{"role", "content",
/// "reasoning_content"?, "tool_calls"?: [{"type": "function", "function": {"name", "arguments"}}]}`
/// with `arguments` a JSON string.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// The text (`""` when the API sent null).
    pub content: String,
    /// The assistant's reasoning, if any.
    pub reasoning_content: Option<String>,
    /// The assistant's tool calls.
    pub tool_calls: Vec<ToolCall>,
}

impl Message {
    /// A message with no reasoning and no tool calls.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message { role, content: content.into(), reasoning_content: None, tool_calls: Vec::new() }
    }

    /// Sets the reasoning.
    pub fn with_reasoning(mut self, reasoning: impl Into<String>) -> Self {
        self.reasoning_content = Some(reasoning.into());
        self
    }

    /// Sets the tool calls.
    pub fn with_tool_calls(mut self, calls: Vec<ToolCall>) -> Self {
        self.tool_calls = calls;
        self
    }
}

/// A function the model may call. Serde uses the OpenAI shape
/// `{"type": "function", "function": {"name", "description"?, "parameters"?, ...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "openai::OpenAiTool", into = "openai::OpenAiTool")]
pub struct Tool {
    /// The function's name.
    pub name: String,
    /// What it does.
    pub description: Option<String>,
    /// JSON schema of its arguments.
    pub parameters: Option<Value>,
    /// The `function` object as the request gave it (every key, e.g. `strict`, in its order, a
    /// null `description` kept); the prompt shows this, as DeepSeek's encoder dumps it whole.
    /// `None` for a tool built in code: then `name`, `description` and `parameters` are shown.
    pub given: Option<Map<String, Value>>,
    /// The `function` object's JSON text as given, kept when it holds an integer beyond 64 bits
    /// (see [`ToolCall::raw_arguments`]); the prompt then shows this text re-dumped.
    pub given_text: Option<String>,
}

impl Tool {
    /// A tool built in code.
    pub fn new(name: impl Into<String>, description: Option<String>, parameters: Option<Value>) -> Self {
        Tool { name: name.into(), description, parameters, given: None, given_text: None }
    }

    /// The `function` object the prompt shows: [`Tool::given`], else the fields.
    pub fn definition(&self) -> Map<String, Value> {
        if let Some(given) = &self.given {
            return given.clone();
        }
        let mut map = Map::new();
        map.insert("name".into(), Value::String(self.name.clone()));
        if let Some(d) = &self.description {
            map.insert("description".into(), Value::String(d.clone()));
        }
        if let Some(p) = &self.parameters {
            map.insert("parameters".into(), p.clone());
        }
        map
    }
}

/// How to render a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatOptions {
    /// Thinking mode: the reply starts with reasoning after `<think>`.
    pub thinking: bool,
    /// End with the prompt for the next assistant turn (`<｜Assistant｜>` + think marker).
    pub add_generation_prompt: bool,
    /// Thinking mode: drop developer turns before the last user turn (reasoning there is never shown).
    pub drop_thinking: bool,
}

impl Default for ChatOptions {
    fn default() -> Self {
        ChatOptions { thinking: false, add_generation_prompt: true, drop_thinking: true }
    }
}

/// Renders `messages` (with `tools` offered to the model) as the V3.2 prompt string, bos included.
pub fn encode_chat(messages: &[Message], tools: &[Tool], opts: &ChatOptions) -> Result<String, ChatError> {
    let last_user = messages.iter().rposition(|m| matches!(m.role, Role::User | Role::Developer));
    // Python's index comparisons against -1 when there is no user turn: everything is "after".
    let after_last_user = |i: usize| last_user.is_none_or(|u| i > u);
    let tools_in_system = messages.first().is_some_and(|m| m.role == Role::System);
    let mut out = String::from(BOS);
    if !tools.is_empty() && !tools_in_system {
        render_tools(&mut out, tools);
    }
    for (i, msg) in messages.iter().enumerate() {
        let here = |e: ChatError| e.under(&format!("messages[{i}]"));
        let marker = if opts.thinking && after_last_user(i) { THINK_START } else { THINK_END };
        let generate = i + 1 < messages.len() || opts.add_generation_prompt;
        match msg.role {
            Role::System => {
                out.push_str(&msg.content);
                if i == 0 && !tools.is_empty() {
                    render_tools(&mut out, tools);
                }
            }
            Role::User => render_user(&mut out, &msg.content, Some(i) == last_user, opts, generate),
            Role::Developer => {
                if opts.thinking && opts.drop_thinking && last_user.is_some_and(|u| i < u) {
                    continue;
                }
                if msg.content.is_empty() {
                    return Err(here(ChatError::field("content", "a developer message needs content")));
                }
                let text = format!("\n\n# The user's message is: {}", msg.content);
                render_user(&mut out, &text, Some(i) == last_user, opts, generate);
            }
            Role::Tool => render_tool_result(&mut out, messages, i, marker, generate).map_err(here)?,
            Role::Assistant => render_assistant(&mut out, msg, opts.thinking && after_last_user(i)).map_err(here)?,
        }
    }
    Ok(out)
}

/// `\n\n` + the tools block: fixed instructions, then one JSON schema per line.
fn render_tools(out: &mut String, tools: &[Tool]) {
    out.push_str("\n\n");
    out.push_str(TOOLS_PREAMBLE);
    for (i, tool) in tools.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        match tool.given_text.as_deref().and_then(py_dumps_raw) {
            Some(text) => out.push_str(&text),
            None => write_py_json(out, &Value::Object(tool.definition())),
        }
    }
    out.push_str("\n</functions>\n");
}

/// `<｜User｜>{text}` and, when generating, `<｜Assistant｜>` + the think marker.
fn render_user(out: &mut String, text: &str, is_last_user: bool, opts: &ChatOptions, generate: bool) {
    out.push_str(USER);
    out.push_str(text);
    if generate {
        out.push_str(ASSISTANT);
        out.push_str(if opts.thinking && is_last_user { THINK_START } else { THINK_END });
    }
}

/// One tool result; the first of a group opens `<function_results>`, the last closes it.
fn render_tool_result(
    out: &mut String,
    msgs: &[Message],
    i: usize,
    marker: &str,
    generate: bool,
) -> Result<(), ChatError> {
    let caller = msgs[..i].iter().rposition(|m| m.role != Role::Tool);
    let calls = match caller.map(|j| &msgs[j]) {
        Some(m) if m.role == Role::Assistant && !m.tool_calls.is_empty() => m.tool_calls.len(),
        _ => return Err(ChatError::field("role", "a tool result must follow an assistant message with tool_calls")),
    };
    let order = i - caller.unwrap_or(0);
    if order > calls {
        return Err(ChatError::field("role", format!("more tool results than the {calls} tool calls")));
    }
    let next_is_tool = msgs.get(i + 1).is_some_and(|m| m.role == Role::Tool);
    if order < calls && !next_is_tool {
        return Err(ChatError::field("role", format!("{order} tool results for {calls} tool calls")));
    }
    if order == 1 {
        out.push_str("\n\n<function_results>");
    }
    out.push_str(&format!("\n<result>{}</result>", msgs[i].content));
    if order == calls {
        out.push_str("\n</function_results>");
        if generate {
            out.push_str("\n\n");
            out.push_str(marker);
        }
    }
    Ok(())
}

/// `[{reasoning}</think>]{content}[DSML calls]<｜end▁of▁sentence｜>`.
fn render_assistant(out: &mut String, msg: &Message, show_reasoning: bool) -> Result<(), ChatError> {
    if show_reasoning {
        let reasoning = msg.reasoning_content.as_deref().unwrap_or("");
        if reasoning.is_empty() && msg.tool_calls.is_empty() {
            let why = "in thinking mode an assistant turn after the last user turn needs reasoning or tool calls";
            return Err(ChatError::field("reasoning_content", why));
        }
        out.push_str(reasoning);
        out.push_str(THINK_END);
    }
    out.push_str(&msg.content);
    if !msg.tool_calls.is_empty() {
        out.push_str(CALLS_OPEN);
        for call in &msg.tool_calls {
            out.push('\n');
            out.push_str(&format!("{INVOKE_OPEN}{}\">\n", call.name));
            let raw = call.raw_arguments.as_deref().and_then(object_members);
            let members: Vec<(String, String, bool)> = match raw {
                // From the text as given: every digit of a wide integer kept.
                Some(members) => members
                    .into_iter()
                    .map(|(key, raw)| match serde_json::from_str::<String>(raw) {
                        Ok(s) => (key, s, true),
                        Err(_) => (key, py_dumps_raw(raw).unwrap_or_else(|| raw.to_string()), false),
                    })
                    .collect(),
                None => call
                    .arguments
                    .iter()
                    .map(|(key, value)| match value {
                        Value::String(s) => (key.clone(), s.clone(), true),
                        other => {
                            let mut text = String::new();
                            write_py_json(&mut text, other);
                            (key.clone(), text, false)
                        }
                    })
                    .collect(),
            };
            for (key, text, is_string) in &members {
                out.push_str(&format!("{PARAM_OPEN}{key}\" string=\"{is_string}\">"));
                out.push_str(text);
                out.push_str(PARAM_CLOSE);
                out.push('\n');
            }
            if call.arguments.is_empty() {
                // Python joins the (zero) parameters between two newlines.
                out.push('\n');
            }
            out.push_str(INVOKE_CLOSE);
        }
        out.push('\n');
        out.push_str(CALLS_CLOSE);
    }
    out.push_str(EOS);
    Ok(())
}

/// The fixed text of V3.2's tools block, up to the schemas (DeepSeek's wording, which the model was
/// trained on, so it is reproduced exactly).
const TOOLS_PREAMBLE: &str = r#"## Tools

You have access to a set of tools you can use to answer the user's question.
You can invoke functions by writing a "<｜DSML｜function_calls>" block like the following as part of your reply to the user:
<｜DSML｜function_calls>
<｜DSML｜invoke name="$FUNCTION_NAME">
<｜DSML｜parameter name="$PARAMETER_NAME" string="true|false">$PARAMETER_VALUE</｜DSML｜parameter>
...
</｜DSML｜invoke>
<｜DSML｜invoke name="$FUNCTION_NAME2">
...
</｜DSML｜invoke>
</｜DSML｜function_calls>

String and scalar parameters should be specified as is without any escaping or quotes, while lists and objects should use JSON format. The "string" attribute should be set to "true" for string type parameters and "false" for other types (numbers, booleans, arrays, objects).

If the thinking_mode is enabled, then after function results you should strongly consider outputting a thinking block. Here is an example:

<｜DSML｜function_calls>
...
</｜DSML｜function_calls>

<function_results>
...
</function_results>

<think>...thinking about results</think>

Here are the functions available in JSONSchema format:
<functions>
"#;

/// JSON as Python's `json.dumps(value, ensure_ascii=False)` writes it: `", "` between items and
/// `": "` after keys, floats as Python's `repr` ([`py_float`]); strings, integers and literals match
/// serde_json's compact form.
fn write_py_json(out: &mut String, value: &Value) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_py_json(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push_str(": ");
                write_py_json(out, item);
            }
            out.push('}');
        }
        Value::Number(n) if n.is_f64() => out.push_str(&py_float(n.as_f64().expect("an f64"))),
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// A float as Python's `repr` writes it: the shortest digits that read back to it (as Rust's
/// `{:e}` finds them), positional when the decimal exponent is in -4..16 (with `.0` when whole),
/// else `d[.ddd]e±XX` with at least two exponent digits. Non-finite values as `json.dumps` writes
/// them (`NaN`, `Infinity`, `-Infinity`).
pub fn py_float(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    let sci = format!("{x:e}"); // e.g. "-1.2345e-5", "1e20", "0e0"
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("an integer exponent");
    let (sign, mantissa) = mantissa.strip_prefix('-').map_or(("", mantissa), |m| ("-", m));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let text = if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            format!("{}.{}", &digits[..point as usize], &digits[point as usize..])
        };
        return format!("{sign}{text}");
    }
    let mantissa = if digits.len() > 1 { format!("{}.{}", &digits[..1], &digits[1..]) } else { digits };
    let esign = if exp < 0 { '-' } else { '+' };
    format!("{sign}{mantissa}e{esign}{:02}", exp.abs())
}

/// Whether JSON text `raw` holds an integer literal (no fraction, no exponent) that fits neither
/// i64 nor u64: serde_json reads one as a float, so the text must be kept to write it back as given
/// (Python keeps every integer exact). Strings are skipped.
pub fn has_wide_int(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < bytes.len() && matches!(bytes[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') {
                    i += 1;
                }
                let lit = &raw[start..i];
                let integer = !lit.contains(['.', 'e', 'E']);
                if integer && lit.parse::<i64>().is_err() && lit.parse::<u64>().is_err() {
                    return true;
                }
            }
            _ => i += 1,
        }
    }
    false
}

/// The index after the JSON whitespace at `i`.
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The end of the JSON value starting at `i` (whitespace skipped first); `None` when malformed.
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    let mut i = skip_ws(b, i);
    match *b.get(i)? {
        b'"' => {
            i += 1;
            while *b.get(i)? != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            Some(i + 1)
        }
        open @ (b'{' | b'[') => {
            let close = if open == b'{' { b'}' } else { b']' };
            i = skip_ws(b, i + 1);
            if *b.get(i)? == close {
                return Some(i + 1);
            }
            loop {
                if open == b'{' {
                    i = skip_ws(b, value_end(b, i)?);
                    if *b.get(i)? != b':' {
                        return None;
                    }
                    i += 1;
                }
                i = skip_ws(b, value_end(b, i)?);
                match *b.get(i)? {
                    b',' => i += 1,
                    c if c == close => return Some(i + 1),
                    _ => return None,
                }
            }
        }
        _ => {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'-' | b'+' | b'.')) {
                i += 1;
            }
            (i > start).then_some(i)
        }
    }
}

/// The members of the JSON object text `raw`: each key (decoded) with its value's raw text.
pub fn object_members(raw: &str) -> Option<Vec<(String, &str)>> {
    let b = raw.as_bytes();
    let mut i = skip_ws(b, 0);
    if *b.get(i)? != b'{' {
        return None;
    }
    i = skip_ws(b, i + 1);
    let mut out = Vec::new();
    if *b.get(i)? == b'}' {
        return Some(out);
    }
    loop {
        let key_end = value_end(b, i)?;
        let key: String = serde_json::from_str(&raw[i..key_end]).ok()?;
        i = skip_ws(b, key_end);
        if *b.get(i)? != b':' {
            return None;
        }
        let start = skip_ws(b, i + 1);
        let end = value_end(b, start)?;
        out.push((key, &raw[start..end]));
        i = skip_ws(b, end);
        match *b.get(i)? {
            b',' => i = skip_ws(b, i + 1),
            b'}' => return Some(out),
            _ => return None,
        }
    }
}

/// The raw text of each item of the JSON array text `raw`.
pub fn array_items(raw: &str) -> Option<Vec<&str>> {
    let b = raw.as_bytes();
    let mut i = skip_ws(b, 0);
    if *b.get(i)? != b'[' {
        return None;
    }
    i = skip_ws(b, i + 1);
    let mut out = Vec::new();
    if *b.get(i)? == b']' {
        return Some(out);
    }
    loop {
        let start = skip_ws(b, i);
        let end = value_end(b, start)?;
        out.push(&raw[start..end]);
        i = skip_ws(b, end);
        match *b.get(i)? {
            b',' => i += 1,
            b']' => return Some(out),
            _ => return None,
        }
    }
}

/// JSON text `raw` as Python's `json.dumps(json.loads(raw), ensure_ascii=False)` writes it, read
/// from the text so that integers keep every digit (Python's ints are exact): integers as written
/// (`-0` as `0`), floats as [`py_float`], strings re-escaped as serde_json does (the same escapes as
/// Python's), `", "` and `": "` between items. `None` when `raw` is not valid JSON. (A key given
/// twice is written twice, where Python keeps the last value; serde_json would reject nothing.)
pub fn py_dumps_raw(raw: &str) -> Option<String> {
    serde_json::from_str::<serde::de::IgnoredAny>(raw).ok()?;
    let mut out = String::with_capacity(raw.len());
    write_raw(&mut out, raw.trim())?;
    Some(out)
}

/// One value of [`py_dumps_raw`].
fn write_raw(out: &mut String, raw: &str) -> Option<()> {
    match raw.as_bytes().first()? {
        b'{' => {
            out.push('{');
            for (i, (key, value)) in object_members(raw)?.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&Value::String(key).to_string());
                out.push_str(": ");
                write_raw(out, value)?;
            }
            out.push('}');
        }
        b'[' => {
            out.push('[');
            for (i, item) in array_items(raw)?.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_raw(out, item)?;
            }
            out.push(']');
        }
        b'"' => out.push_str(&Value::String(serde_json::from_str(raw).ok()?).to_string()),
        b'-' | b'0'..=b'9' if !raw.contains(['.', 'e', 'E']) => {
            let digits = raw.trim_start_matches('-');
            let negative = raw.starts_with('-') && digits.bytes().any(|d| d != b'0');
            out.push_str(if negative { "-" } else { "" });
            out.push_str(digits);
        }
        b'-' | b'0'..=b'9' => out.push_str(&py_float(raw.parse().ok()?)),
        _ => out.push_str(raw),
    }
    Some(())
}
