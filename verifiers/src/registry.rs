//! Verifier choice as data: a serde-tagged enum for recipes (`kind = "math" | "code" | ...`) and
//! the CLI's `--verifier KIND` spelling (`math`, `code`, `format`, `length`, `language`, `judge`,
//! `external:<cmd>`), and weighted lists of them (`[[verifier]]` in recipes, a JSON array in
//! `--config`): each entry a spec plus `weight` (default 1) and an optional `name`.

use crate::math::MathConfig;
use crate::{
    CodeConfig, CodeVerifier, ExternalConfig, ExternalVerifier, FormatConfig, FormatVerifier, JudgeConfig,
    JudgeVerifier, LanguageConfig, LanguageVerifier, LengthConfig, LengthPenalty, MathVerifier, Verifier, VerifyError,
    Weighted,
};
use serde::Deserialize;

/// One verifier and its settings, as a recipe or `--config` file writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum VerifierSpec {
    /// Math answers.
    Math(MathConfig),
    /// Python programs run against tests in the sandbox.
    Code(CodeConfig),
    /// Required `<think>…</think>` structure.
    Format(FormatConfig),
    /// DAPO overlong penalty.
    Length(LengthConfig),
    /// Share of the completion in the target language.
    Language(LanguageConfig),
    /// A generative reward model with a rubric, over an OpenAI-compatible endpoint (boxed: its
    /// config is much larger than the others).
    Judge(Box<JudgeConfig>),
    /// A long-lived process speaking JSON lines (see PROTOCOL.md).
    External(ExternalConfig),
}

impl VerifierSpec {
    /// Parses the CLI spelling: `math`, `code`, `format`, `length`, `language`, `judge` (which needs
    /// at least `base_url` in its settings) or `external:<command>`, with
    /// optional settings (a JSON object of the kind's config fields).
    pub fn from_cli(kind: &str, settings: Option<serde_json::Value>) -> Result<Self, VerifyError> {
        let mut object = match settings {
            Some(serde_json::Value::Object(map)) => map,
            Some(other) => {
                return Err(VerifyError::Config(format!("verifier settings must be a JSON object, got {other}")))
            }
            None => serde_json::Map::new(),
        };
        let name = match kind.split_once(':') {
            Some(("external", command)) if !command.trim().is_empty() => {
                object.insert("command".into(), command.trim().into());
                "external"
            }
            Some(_) => {
                return Err(VerifyError::Config(format!(
                    "unknown verifier `{kind}` (math, code, format, length, language, judge, external:<cmd>)"
                )))
            }
            None => kind,
        };
        object.insert("kind".into(), name.into());
        serde_json::from_value(serde_json::Value::Object(object))
            .map_err(|e| VerifyError::Config(format!("verifier `{kind}`: {e}")))
    }

    /// Builds the verifier.
    pub fn build(self) -> Result<Box<dyn Verifier>, VerifyError> {
        Ok(match self {
            VerifierSpec::Math(c) => Box::new(MathVerifier::new(c)),
            VerifierSpec::Code(c) => Box::new(CodeVerifier::new(c)?),
            VerifierSpec::Format(c) => Box::new(FormatVerifier::new(c)),
            VerifierSpec::Length(c) => Box::new(LengthPenalty::new(c)?),
            VerifierSpec::Language(c) => Box::new(LanguageVerifier::new(c)?),
            VerifierSpec::Judge(c) => Box::new(JudgeVerifier::new(*c)?),
            VerifierSpec::External(c) => Box::new(ExternalVerifier::new(c)),
        })
    }

    /// The verifier's name in metrics and breakdowns: the kind, or the `name` setting of the kinds
    /// that have one (`language`, `judge`, `external`).
    pub fn name(&self) -> &str {
        match self {
            VerifierSpec::Math(_) => "math",
            VerifierSpec::Code(_) => "code",
            VerifierSpec::Format(_) => "format",
            VerifierSpec::Length(_) => "length",
            VerifierSpec::Language(c) => &c.name,
            VerifierSpec::Judge(c) => &c.name,
            VerifierSpec::External(c) => &c.name,
        }
    }

    /// Renames the verifier where its kind has a `name` setting (the others are named by the part).
    pub fn set_name(&mut self, name: &str) {
        match self {
            VerifierSpec::Language(c) => c.name = name.to_string(),
            VerifierSpec::Judge(c) => c.name = name.to_string(),
            VerifierSpec::External(c) => c.name = name.to_string(),
            _ => {}
        }
    }

    /// Reads one entry of a weighted list: `{"kind": …, "weight": 1.0, "name": …, <settings>}`,
    /// as `(name, weight, spec)`. `weight` defaults to 1 and `name` to [`VerifierSpec::name`].
    pub fn weighted_entry(entry: serde_json::Value) -> Result<(String, f32, VerifierSpec), VerifyError> {
        let serde_json::Value::Object(mut object) = entry else {
            return Err(VerifyError::Config(format!("a weighted verifier must be a JSON object, got {entry}")));
        };
        let weight = match object.remove("weight") {
            None => 1.0,
            Some(w) => match w.as_f64() {
                Some(w) if w.is_finite() => w as f32,
                _ => return Err(VerifyError::Config(format!("`weight` must be a finite number, got {w}"))),
            },
        };
        let name = match object.remove("name") {
            None => None,
            Some(serde_json::Value::String(n)) if !n.trim().is_empty() => Some(n),
            Some(n) => return Err(VerifyError::Config(format!("`name` must be a non-empty string, got {n}"))),
        };
        let kind = match object.remove("kind") {
            Some(serde_json::Value::String(k)) => k,
            Some(k) => return Err(VerifyError::Config(format!("`kind` must be a string, got {k}"))),
            None => return Err(VerifyError::Config("missing field `kind`".into())),
        };
        let mut spec = VerifierSpec::from_cli(&kind, Some(serde_json::Value::Object(object)))?;
        if let Some(name) = &name {
            spec.set_name(name);
        }
        let name = name.unwrap_or_else(|| spec.name().to_string());
        Ok((name, weight, spec))
    }

    /// Builds `Σ weight · reward` over `(name, weight, spec)` parts ([`Weighted`]); the first part
    /// gives the outcome. Names must be unique (they key the per-part metrics).
    pub fn build_weighted(parts: Vec<(String, f32, VerifierSpec)>) -> Result<Box<dyn Verifier>, VerifyError> {
        if parts.is_empty() {
            return Err(VerifyError::Config("a weighted list needs at least one verifier".into()));
        }
        let mut built = Vec::with_capacity(parts.len());
        for (i, (name, weight, spec)) in parts.into_iter().enumerate() {
            if let Some(j) = built.iter().position(|(n, _, _): &(String, f32, Box<dyn Verifier>)| *n == name) {
                return Err(VerifyError::Config(format!(
                    "verifiers {j} and {i} are both named `{name}`; give one a distinct `name`"
                )));
            }
            built.push((name, weight, spec.build()?));
        }
        Ok(Box::new(Weighted::named(built)))
    }
}
