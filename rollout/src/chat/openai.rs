//! The OpenAI chat API shape of [`Message`] and [`Tool`]: what `/v1/chat/completions` accepts.
//! Errors name the offending field (`messages[2].tool_calls[0].function.arguments`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{has_wide_int, ChatError, Message, Role, Tool, ToolCall};

impl Message {
    /// Reads one message in the OpenAI shape; errors name the field (`role`, `content`, …).
    pub fn from_json(value: &Value) -> Result<Self, ChatError> {
        let obj = value.as_object().ok_or_else(|| ChatError::field("message", "expected an object"))?;
        let role = match obj.get("role") {
            Some(r) => Role::deserialize(r).map_err(|_| {
                let want = "expected system, user, assistant, tool or developer";
                ChatError::field("role", format!("unknown role {r}; {want}"))
            })?,
            None => return Err(ChatError::field("role", "missing")),
        };
        let content = match obj.get("content") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => text_parts(parts)?,
            Some(other) => return Err(ChatError::field("content", format!("expected text, got {other}"))),
        };
        let reasoning_content = match obj.get("reasoning_content") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => return Err(ChatError::field("reasoning_content", format!("expected text, got {other}"))),
        };
        let tool_calls = match obj.get("tool_calls") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(calls)) if role == Role::Assistant => calls
                .iter()
                .enumerate()
                .map(|(i, c)| tool_call_from_json(c).map_err(|e| e.under(&format!("tool_calls[{i}]"))))
                .collect::<Result<_, _>>()?,
            Some(Value::Array(_)) => {
                return Err(ChatError::field("tool_calls", "only assistant messages make tool calls"))
            }
            Some(other) => return Err(ChatError::field("tool_calls", format!("expected an array, got {other}"))),
        };
        Ok(Message { role, content, reasoning_content, tool_calls })
    }

    /// The OpenAI-shaped JSON for this message.
    pub fn to_json(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("role".into(), serde_json::to_value(self.role).expect("role is a string"));
        obj.insert("content".into(), Value::String(self.content.clone()));
        if let Some(r) = &self.reasoning_content {
            obj.insert("reasoning_content".into(), Value::String(r.clone()));
        }
        if !self.tool_calls.is_empty() {
            let calls = self.tool_calls.iter().map(|c| {
                let args = c.raw_arguments.clone().unwrap_or_else(|| Value::Object(c.arguments.clone()).to_string());
                serde_json::json!({"type": "function", "function": {"name": c.name, "arguments": args}})
            });
            obj.insert("tool_calls".into(), Value::Array(calls.collect()));
        }
        Value::Object(obj)
    }
}

/// Joins OpenAI content parts of type `text`.
fn text_parts(parts: &[Value]) -> Result<String, ChatError> {
    let mut text = String::new();
    for (i, part) in parts.iter().enumerate() {
        match (part.get("type").and_then(Value::as_str), part.get("text").and_then(Value::as_str)) {
            (Some("text"), Some(t)) => text.push_str(t),
            _ => {
                return Err(ChatError::field(
                    format!("content[{i}]"),
                    "only {\"type\": \"text\", \"text\": …} parts are supported",
                ))
            }
        }
    }
    Ok(text)
}

/// `{"type": "function", "function": {"name", "arguments"}}`; `arguments` is a JSON string (or,
/// leniently, an object) that must hold an object.
fn tool_call_from_json(value: &Value) -> Result<ToolCall, ChatError> {
    let function = value.get("function").ok_or_else(|| ChatError::field("function", "missing"))?;
    let name = match function.get("name") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(ChatError::field("function.name", "expected a string")),
    };
    let parsed;
    let mut raw = None;
    let args = match function.get("arguments") {
        Some(Value::String(s)) => {
            raw = has_wide_int(s).then(|| s.clone());
            parsed = serde_json::from_str::<Value>(s)
                .map_err(|e| ChatError::field("function.arguments", format!("not valid JSON: {e}")))?;
            &parsed
        }
        Some(v) => v,
        None => return Err(ChatError::field("function.arguments", "missing")),
    };
    match args {
        Value::Object(arguments) => Ok(ToolCall { name, arguments: arguments.clone(), raw_arguments: raw }),
        other => Err(ChatError::field("function.arguments", format!("expected a JSON object, got {other}"))),
    }
}

/// Reads an OpenAI `messages` array; errors name the field as `messages[i].…`.
pub fn parse_messages(value: &Value) -> Result<Vec<Message>, ChatError> {
    let items = value.as_array().ok_or_else(|| ChatError::field("messages", "expected an array"))?;
    let parse = |(i, m)| Message::from_json(m).map_err(|e: ChatError| e.under(&format!("messages[{i}]")));
    items.iter().enumerate().map(parse).collect()
}

impl Serialize for Message {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Message::from_json(&Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct OpenAiTool {
    #[serde(rename = "type")]
    kind: String,
    /// Kept as given (every key, in order) for the prompt; read into [`FunctionDef`].
    function: Map<String, Value>,
}

#[derive(Serialize, Deserialize)]
struct FunctionDef {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parameters: Option<Value>,
}

impl TryFrom<OpenAiTool> for Tool {
    type Error = ChatError;
    fn try_from(t: OpenAiTool) -> Result<Self, ChatError> {
        if t.kind != "function" {
            return Err(ChatError::field("type", format!("expected \"function\", got {:?}", t.kind)));
        }
        let def: FunctionDef = serde_json::from_value(Value::Object(t.function.clone()))
            .map_err(|e| ChatError::field("function", e.to_string()))?;
        let FunctionDef { name, description, parameters } = def;
        Ok(Tool { name, description, parameters, given: Some(t.function), given_text: None })
    }
}

impl From<Tool> for OpenAiTool {
    fn from(t: Tool) -> Self {
        let function = t.definition();
        OpenAiTool { kind: "function".into(), function }
    }
}
