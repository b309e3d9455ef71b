//! Chat prompts for any model: a Hugging Face chat template (Jinja) rendered as transformers'
//! `apply_chat_template(messages, tokenize=False, add_generation_prompt=…)` renders it, or, for a
//! model without one (DeepSeek-V3.2 ships none), V3.2's own encoding (`crate::chat`).
//!
//! The template comes from the model directory: `chat_template.jinja` (transformers ≥ 4.43 saves it
//! there), else `tokenizer_config.json`'s `chat_template` (a string, or a list of `{name,
//! template}` of which `default` is used). It is rendered with `minijinja` set up the way
//! transformers sets up its Jinja environment:
//!
//! * `trim_blocks` and `lstrip_blocks` on, the loop-controls extension (`break`, `continue`);
//! * `tojson` is Python's `json.dumps(x, ensure_ascii=False, indent=…, separators=…,
//!   sort_keys=…)` (minijinja's own escapes `<`, `>`, `&`, `'` for HTML, transformers' does not);
//! * `raise_exception(message)` fails the render with the template's message;
//! * `strftime_now(format)` is the local time in `format`;
//! * Python's string and dict methods (`.strip()`, `.split()`, `.startswith()`, `.items()`, …)
//!   through `minijinja-contrib`'s pycompat callback; `namespace`, `loop.last` and the rest are
//!   minijinja built-ins;
//! * the context holds `messages`, `add_generation_prompt`, `tools` and `documents` (none), the
//!   tokenizer config's special tokens (`bos_token`, `eos_token`, `unk_token`, `pad_token`, …) and
//!   any extra keyword (`enable_thinking`, …).
//!
//! Left out: Jinja features minijinja lacks (rare in chat templates), `{% generation %}` blocks
//! (assistant masks), and Python's printing of `True`/`None` (minijinja writes `true`/`none`).

use crate::chat::{encode_chat, parse_messages, py_float, ChatOptions, BOS};
use minijinja::value::{Kwargs, Value as JinjaValue};
use minijinja::{Environment, Error as JinjaError, ErrorKind};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A template that cannot be read, compiled or rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// A file could not be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The template does not compile, or rendering failed (`raise_exception` included).
    #[error("chat template: {0}")]
    Render(String),
    /// The messages are not in the chat encoding's form.
    #[error("chat messages: {0}")]
    Messages(String),
}

/// The special tokens a template sees, by their `tokenizer_config.json` names.
const SPECIAL_TOKENS: [&str; 7] =
    ["bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token"];

/// A compiled Hugging Face chat template with the tokenizer config's special tokens.
pub struct ChatTemplate {
    env: Environment<'static>,
    specials: BTreeMap<String, String>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("specials", &self.specials).finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles `source` with the given special tokens (`bos_token` → text, …).
    pub fn new(source: &str, specials: BTreeMap<String, String>) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned("chat", source.to_string()).map_err(|e| TemplateError::Render(describe(&e)))?;
        Ok(ChatTemplate { env, specials })
    }

    /// The model directory's template (see the module docs), or `None` when it has none.
    pub fn from_model_dir(dir: &Path) -> Result<Option<Self>, TemplateError> {
        let config_path = dir.join("tokenizer_config.json");
        let config: Value = match std::fs::read_to_string(&config_path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| TemplateError::File { path: config_path.clone(), message: e.to_string() })?,
            Err(_) => Value::Object(Map::new()),
        };
        let jinja = dir.join("chat_template.jinja");
        let source = match std::fs::read_to_string(&jinja) {
            Ok(text) => Some(text),
            Err(_) => template_of(&config).map_err(|message| TemplateError::File { path: config_path, message })?,
        };
        let Some(source) = source else { return Ok(None) };
        let specials = SPECIAL_TOKENS
            .iter()
            .filter_map(|name| token_text(config.get(*name)).map(|t| (name.to_string(), t)))
            .collect();
        Self::new(&source, specials).map(Some)
    }

    /// The beginning-of-sequence text the template may write (`bos_token`).
    pub fn bos(&self) -> Option<&str> {
        self.specials.get("bos_token").map(String::as_str)
    }

    /// Renders `messages` (OpenAI-shaped objects), ending with the assistant's prompt when
    /// `add_generation_prompt`; `extra` adds keywords to the context (`enable_thinking`, …).
    pub fn render(
        &self,
        messages: &[Value],
        add_generation_prompt: bool,
        extra: &Map<String, Value>,
    ) -> Result<String, TemplateError> {
        let mut ctx: BTreeMap<String, JinjaValue> = BTreeMap::new();
        for (name, text) in &self.specials {
            ctx.insert(name.clone(), JinjaValue::from(text.as_str()));
        }
        for (key, value) in extra {
            ctx.insert(key.clone(), JinjaValue::from_serialize(value));
        }
        ctx.insert("messages".into(), JinjaValue::from_serialize(messages));
        ctx.insert("add_generation_prompt".into(), JinjaValue::from(add_generation_prompt));
        ctx.entry("tools".into()).or_insert(JinjaValue::from(()));
        ctx.entry("documents".into()).or_insert(JinjaValue::from(()));
        let template = self.env.get_template("chat").map_err(|e| TemplateError::Render(describe(&e)))?;
        template.render(JinjaValue::from(ctx)).map_err(|e| TemplateError::Render(describe(&e)))
    }
}

/// How a model's prompts are written from chat messages.
#[derive(Debug)]
pub enum ChatRenderer {
    /// The model's Hugging Face chat template.
    Template(Box<ChatTemplate>),
    /// DeepSeek-V3.2's own encoding (`crate::chat`), for models without a template.
    DeepseekV32,
}

impl ChatRenderer {
    /// The model directory's chat template, else the DeepSeek-V3.2 encoding.
    pub fn for_model_dir(dir: &Path) -> Result<Self, TemplateError> {
        Ok(match ChatTemplate::from_model_dir(dir)? {
            Some(template) => ChatRenderer::Template(Box::new(template)),
            None => ChatRenderer::DeepseekV32,
        })
    }

    /// The prompt for `messages`, ending where the assistant's reply starts; `thinking` asks for
    /// thinking mode (V3.2's `<think>`, a template's `enable_thinking` and `thinking`).
    pub fn render(&self, messages: &[Value], thinking: bool) -> Result<String, TemplateError> {
        match self {
            ChatRenderer::Template(t) => {
                let mut extra = Map::new();
                extra.insert("enable_thinking".into(), Value::Bool(thinking));
                extra.insert("thinking".into(), Value::Bool(thinking));
                t.render(messages, true, &extra)
            }
            ChatRenderer::DeepseekV32 => {
                let parsed = parse_messages(&Value::Array(messages.to_vec()))
                    .map_err(|e| TemplateError::Messages(e.to_string()))?;
                let opts = ChatOptions { thinking, add_generation_prompt: true, drop_thinking: true };
                encode_chat(&parsed, &[], &opts).map_err(|e| TemplateError::Messages(e.to_string()))
            }
        }
    }

    /// The beginning-of-sequence text a rendered prompt may start with.
    pub fn bos(&self) -> Option<&str> {
        match self {
            ChatRenderer::Template(t) => t.bos(),
            ChatRenderer::DeepseekV32 => Some(BOS),
        }
    }

    /// Like [`Self::render`], without a leading beginning-of-sequence text: for callers that put
    /// the bos id in front of every sequence themselves.
    pub fn render_without_bos(&self, messages: &[Value], thinking: bool) -> Result<String, TemplateError> {
        let text = self.render(messages, thinking)?;
        Ok(match self.bos().filter(|b| !b.is_empty()).and_then(|b| text.strip_prefix(b)) {
            Some(rest) => rest.to_string(),
            None => text,
        })
    }
}

/// `chat_template` of a tokenizer config: a string, or the `default` of a named list.
fn template_of(config: &Value) -> Result<Option<String>, String> {
    match config.get("chat_template") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(named)) => {
            let find = |wanted: &str| {
                named
                    .iter()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some(wanted))
                    .and_then(|t| t.get("template"))
            };
            match find("default").and_then(Value::as_str) {
                Some(s) => Ok(Some(s.to_string())),
                None => Err("field `chat_template`: a list of templates needs one named `default`".into()),
            }
        }
        Some(other) => Err(format!("field `chat_template`: expected a string or a list, got {other}")),
    }
}

/// A special token's text: a string or an `AddedToken` object's `content`.
fn token_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// A minijinja error with its cause and place.
fn describe(err: &JinjaError) -> String {
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        message.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    message
}

fn raise_exception(message: String) -> Result<JinjaValue, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, message))
}

fn strftime_now(format: String) -> Result<String, JinjaError> {
    use std::fmt::Write;
    let mut out = String::new();
    write!(out, "{}", chrono::Local::now().format(&format))
        .map_err(|_| JinjaError::new(ErrorKind::InvalidOperation, format!("strftime_now: bad format {format:?}")))?;
    Ok(out)
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=indent,
/// separators=separators, sort_keys=sort_keys)`.
fn tojson(value: JinjaValue, indent: Option<JinjaValue>, kwargs: Kwargs) -> Result<JinjaValue, JinjaError> {
    let bad = |what: String| JinjaError::new(ErrorKind::InvalidOperation, format!("tojson: {what}"));
    let indent = match indent.or(kwargs.get::<Option<JinjaValue>>("indent")?) {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match (v.as_i64(), v.as_str()) {
            (Some(n), _) => Some(" ".repeat(n.max(0) as usize)),
            (None, Some(s)) => Some(s.to_string()),
            _ => return Err(bad(format!("indent must be an integer or a string, got {v}"))),
        },
    };
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let (item, key) = match separators.as_deref() {
        Some([item, key]) => (item.clone(), key.clone()),
        Some(other) => return Err(bad(format!("separators must be a pair, got {other:?}"))),
        // Python's defaults: `", "` between items without indent, `","` (then a newline) with it.
        None => (if indent.is_some() { "," } else { ", " }.to_string(), ": ".to_string()),
    };
    let json = serde_json::to_value(&value).map_err(|e| bad(e.to_string()))?;
    let style = Dumps { indent, item, key, sort_keys: sort_keys.unwrap_or(false) };
    let mut out = String::new();
    style.write(&mut out, &json, 0);
    Ok(JinjaValue::from(out))
}

/// Python's `json.dumps` layout.
struct Dumps {
    indent: Option<String>,
    item: String,
    key: String,
    sort_keys: bool,
}

impl Dumps {
    fn write(&self, out: &mut String, value: &Value, level: usize) {
        match value {
            Value::Array(items) if items.is_empty() => out.push_str("[]"),
            Value::Object(map) if map.is_empty() => out.push_str("{}"),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    self.separate(out, i, level + 1);
                    self.write(out, item, level + 1);
                }
                self.close(out, level);
                out.push(']');
            }
            Value::Object(map) => {
                out.push('{');
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                }
                for (i, (key, item)) in entries.into_iter().enumerate() {
                    self.separate(out, i, level + 1);
                    out.push_str(&Value::String(key.clone()).to_string());
                    out.push_str(&self.key);
                    self.write(out, item, level + 1);
                }
                self.close(out, level);
                out.push('}');
            }
            Value::Number(n) if n.is_f64() => out.push_str(&py_float(n.as_f64().expect("an f64"))),
            scalar => out.push_str(&scalar.to_string()),
        }
    }

    /// Before item `i` at nesting `level`: the item separator (after the first), then a newline
    /// and indentation when indenting.
    fn separate(&self, out: &mut String, i: usize, level: usize) {
        if i > 0 {
            out.push_str(&self.item);
        }
        if let Some(indent) = &self.indent {
            out.push('\n');
            out.push_str(&indent.repeat(level));
        }
    }

    /// Before a closing bracket at nesting `level`.
    fn close(&self, out: &mut String, level: usize) {
        if let Some(indent) = &self.indent {
            out.push('\n');
            out.push_str(&indent.repeat(level));
        }
    }
}
