//! Reading an assistant turn back from generated text: reasoning up to `</think>`, content, and
//! DSML function calls (`string="true"` values raw, `string="false"` values JSON).

use serde_json::{Map, Value};

use super::{ChatError, Message, Role, ToolCall, BOS, DSML, EOS, THINK_END, THINK_START};
use super::{CALLS_CLOSE, CALLS_OPEN, INVOKE_CLOSE, INVOKE_OPEN, PARAM_CLOSE, PARAM_OPEN};

/// An assistant turn read back from generated text.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedCompletion {
    /// The text before `</think>` (thinking mode only).
    pub reasoning_content: Option<String>,
    /// The answer text.
    pub content: String,
    /// DSML function calls after the content.
    pub tool_calls: Vec<ToolCall>,
}

impl ParsedCompletion {
    /// As an assistant [`Message`], e.g. to append to the conversation.
    pub fn into_message(self) -> Message {
        Message {
            role: Role::Assistant,
            content: self.content,
            reasoning_content: self.reasoning_content,
            tool_calls: self.tool_calls,
        }
    }
}

/// Parses the text generated after the prompt (decoded with special tokens kept); a trailing
/// `<｜end▁of▁sentence｜>` is optional. In thinking mode the reasoning runs up to the first `</think>`;
/// without one the whole text is reasoning (generation was cut off).
pub fn parse_completion(text: &str, thinking: bool) -> Result<ParsedCompletion, ChatError> {
    let (reasoning, start) = match (thinking, text.find(THINK_END)) {
        (false, _) => (None, 0),
        (true, Some(p)) => (Some(&text[..p]), p + THINK_END.len()),
        (true, None) => (Some(text.strip_suffix(EOS).unwrap_or(text)), text.len()),
    };
    let rest = &text[start..];
    let body = rest.strip_suffix(EOS).unwrap_or(rest);
    let (content, tool_calls) = match body.find(CALLS_OPEN) {
        Some(p) => (&body[..p], parse_dsml(body, start, p + CALLS_OPEN.len())?),
        None => (body, Vec::new()),
    };
    for (part, offset) in [(reasoning.unwrap_or(""), 0), (content, start)] {
        for marker in [BOS, EOS, THINK_START, THINK_END, DSML] {
            if let Some(p) = part.find(marker) {
                let message = format!("unexpected {marker} inside reasoning or content");
                return Err(ChatError::Completion { at: offset + p, message });
            }
        }
    }
    Ok(ParsedCompletion { reasoning_content: reasoning.map(str::to_string), content: content.to_string(), tool_calls })
}

/// Reads DSML invokes from `body[pos..]` (just after `<｜DSML｜function_calls>`) up to the closing
/// tag, which must end `body`. `base` turns positions into offsets in the whole completion.
fn parse_dsml(body: &str, base: usize, pos: usize) -> Result<Vec<ToolCall>, ChatError> {
    let mut cur = Cursor { text: body, pos, base };
    let mut calls = Vec::new();
    loop {
        cur.skip_whitespace();
        if cur.eat(CALLS_CLOSE).is_ok() {
            break;
        }
        cur.eat(INVOKE_OPEN)?;
        let name = cur.until("\">")?.to_string();
        let mut arguments = Map::new();
        loop {
            cur.skip_whitespace();
            if cur.eat(INVOKE_CLOSE).is_ok() {
                break;
            }
            let (key, value) = parse_parameter(&mut cur)?;
            if arguments.insert(key.clone(), value).is_some() {
                return Err(cur.error(format!("parameter {key:?} given twice")));
            }
        }
        calls.push(ToolCall::new(name, arguments));
    }
    if cur.pos != body.len() {
        return Err(cur.error("text after </｜DSML｜function_calls>".to_string()));
    }
    Ok(calls)
}

/// `<｜DSML｜parameter name="k" string="true|false">v</｜DSML｜parameter>`: v raw, or as JSON.
fn parse_parameter(cur: &mut Cursor) -> Result<(String, Value), ChatError> {
    cur.eat(PARAM_OPEN)?;
    let key = cur.until("\" string=\"")?.to_string();
    let flag = cur.until("\">")?;
    let at = cur.pos;
    let raw = cur.until(PARAM_CLOSE)?;
    let value = match flag {
        "true" => Value::String(raw.to_string()),
        "false" => serde_json::from_str(raw).map_err(|e| ChatError::Completion {
            at: cur.base + at,
            message: format!("parameter {key:?} has string=\"false\" but is not JSON: {e}"),
        })?,
        other => return Err(cur.error(format!("string=\"{other}\" must be \"true\" or \"false\""))),
    };
    Ok((key, value))
}

/// A read position in DSML text.
struct Cursor<'a> {
    text: &'a str,
    pos: usize,
    base: usize,
}

impl<'a> Cursor<'a> {
    fn error(&self, message: String) -> ChatError {
        ChatError::Completion { at: self.base + self.pos, message }
    }

    fn skip_whitespace(&mut self) {
        let rest = &self.text[self.pos..];
        self.pos += rest.len() - rest.trim_start().len();
    }

    /// Consumes `literal` if the text continues with it.
    fn eat(&mut self, literal: &str) -> Result<(), ChatError> {
        if self.text[self.pos..].starts_with(literal) {
            self.pos += literal.len();
            Ok(())
        } else {
            Err(self.error(format!("expected {literal:?}")))
        }
    }

    /// The text up to `stop`, consuming both.
    fn until(&mut self, stop: &str) -> Result<&'a str, ChatError> {
        let rest = &self.text[self.pos..];
        let end = rest.find(stop).ok_or_else(|| self.error(format!("missing {stop:?}")))?;
        self.pos += end + stop.len();
        Ok(&rest[..end])
    }
}
