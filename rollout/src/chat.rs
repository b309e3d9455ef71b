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
//! JSON is written as Python's `json.dumps(ensure_ascii=False)` does (`", "` and `": "`); floats with
//! exponents print differently (`1e20` vs `1e+20`). Key order follows `serde_json::Map`, which is
//! sorted unless serde_json's `preserve_order` feature is on; Python keeps the request's order.
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
/// `{"type": "function", "function": {"name", "description"?, "parameters"?}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "openai::OpenAiTool", into = "openai::OpenAiTool")]
pub struct Tool {
    /// The function's name.
    pub name: String,
    /// What it does.
    pub description: Option<String>,
    /// JSON schema of its arguments.
    pub parameters: Option<Value>,
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
        out.push_str("{\"name\": ");
        write_py_json(out, &Value::String(tool.name.clone()));
        if let Some(d) = &tool.description {
            out.push_str(", \"description\": ");
            write_py_json(out, &Value::String(d.clone()));
        }
        if let Some(p) = &tool.parameters {
            out.push_str(", \"parameters\": ");
            write_py_json(out, p);
        }
        out.push('}');
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
            for (key, value) in &call.arguments {
                out.push_str(&format!("{PARAM_OPEN}{key}\" string=\"{}\">", value.is_string()));
                match value {
                    Value::String(s) => out.push_str(s),
                    other => write_py_json(out, other),
                }
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
/// `": "` after keys. Scalars and string escapes match serde_json's compact form.
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
        scalar => out.push_str(&scalar.to_string()),
    }
}
