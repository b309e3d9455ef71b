//! Verifier choice as data: a serde-tagged enum for recipes (`kind = "math" | "code" | ...`) and
//! the CLI's `--verifier KIND` spelling (`math`, `code`, `format`, `length`, `language`, `judge`,
//! `external:<cmd>`).

use crate::math::MathConfig;
use crate::{
    CodeConfig, CodeVerifier, ExternalConfig, ExternalVerifier, FormatConfig, FormatVerifier, JudgeConfig,
    JudgeVerifier, LanguageConfig, LanguageVerifier, LengthConfig, LengthPenalty, MathVerifier, Verifier, VerifyError,
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
}
