//! What a caller asks of the engine ([`Request`]) and what it gets back ([`RequestOutput`]: per
//! sample, per generated [`Token`]).

use super::error::EngineError;
use rlvr_model::layer::Ffn;
use rlvr_model::sample::Truncation;
use rlvr_model::DeepseekV32;
use tch::Tensor;

/// The engine's handle of a submitted request (unique per engine, in submission order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct RequestId(pub u64);

/// The routed experts of one position: per MoE layer (main layers in order, dense layers
/// skipped), its `num_experts_per_tok` expert ids in the router's order.
pub type Experts = Vec<Vec<i64>>;

/// How each sample is drawn: one struct shared by the engine's [`Request`], the trainer's rollout
/// and recipes (`[rollout]` holds these keys).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Tokens to generate at most per sample (≥ 1).
    pub max_tokens: usize,
    /// Softmax temperature; 0 is greedy (argmax, no truncation).
    pub temperature: f64,
    /// Nucleus mass in (0, 1]; 1 = off.
    pub top_p: f64,
    /// Keep the k most likely ids; 0 = off.
    pub top_k: usize,
    /// Keep ids with `p ≥ min_p · p_max`, in [0, 1]; 0 = off.
    pub min_p: f64,
}

impl Default for SamplingParams {
    /// Untruncated sampling at temperature 1, up to 32 tokens.
    fn default() -> Self {
        SamplingParams { max_tokens: 32, temperature: 1.0, top_p: 1.0, top_k: 0, min_p: 0.0 }
    }
}

impl SamplingParams {
    /// The truncation these settings ask for.
    pub fn truncation(&self) -> Truncation {
        Truncation { top_k: self.top_k, top_p: self.top_p, min_p: self.min_p }
    }

    /// Whether sampling drops part of the vocabulary (top-p, top-k or min-p on, not greedy).
    pub fn truncates(&self) -> bool {
        self.temperature > 0.0 && (self.top_p < 1.0 || self.top_k > 0 || self.min_p > 0.0)
    }

    /// Checks the ranges (`max_tokens` ≥ 1 included): the first field out of range and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.max_tokens == 0 {
            return Err(("max_tokens", "must be at least 1, got 0".into()));
        }
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(("temperature", format!("must be ≥ 0, got {}", self.temperature)));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(("top_p", format!("must be in (0, 1], got {}", self.top_p)));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(("min_p", format!("must be in [0, 1], got {}", self.min_p)));
        }
        Ok(())
    }
}

/// Adjustments of the logits before temperature and truncation, as OpenAI and vLLM define them,
/// applied in this order: `logit_bias` added; the repetition penalty over the ids of the prompt
/// and the sample so far (a positive logit divided by it, a negative one multiplied, as
/// transformers' `RepetitionPenaltyLogitsProcessor`); then for each id the sample generated `c > 0`
/// times so far, `frequency · c + presence` subtracted. The default changes nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct Penalties {
    /// Subtracted once from the logit of every id the sample has generated, in [-2, 2].
    pub presence: f64,
    /// Subtracted per occurrence from the logit of every id the sample has generated, in [-2, 2].
    pub frequency: f64,
    /// Repetition penalty (> 0; 1 = off) over prompt and generated ids.
    pub repetition: f64,
    /// `(id, bias)` pairs added to the logits, bias in [-100, 100].
    pub logit_bias: Vec<(i64, f64)>,
}

impl Default for Penalties {
    fn default() -> Self {
        Penalties { presence: 0.0, frequency: 0.0, repetition: 1.0, logit_bias: Vec::new() }
    }
}

impl Penalties {
    /// Whether these change nothing.
    pub fn is_off(&self) -> bool {
        self.presence == 0.0 && self.frequency == 0.0 && self.repetition == 1.0 && self.logit_bias.is_empty()
    }

    /// `logits (V)` adjusted for a sample that so far generated `generated` after `prompt`.
    pub fn apply(&self, logits: &[f32], prompt: &[i64], generated: &[i64]) -> Vec<f32> {
        let mut out: Vec<f64> = logits.iter().map(|&l| l as f64).collect();
        for &(id, bias) in &self.logit_bias {
            out[id as usize] += bias;
        }
        if self.repetition != 1.0 {
            let seen: std::collections::BTreeSet<i64> = prompt.iter().chain(generated).copied().collect();
            for id in seen {
                let l = &mut out[id as usize];
                *l = if *l > 0.0 { *l / self.repetition } else { *l * self.repetition };
            }
        }
        if self.presence != 0.0 || self.frequency != 0.0 {
            let mut counts: std::collections::BTreeMap<i64, u32> = std::collections::BTreeMap::new();
            for &id in generated {
                *counts.entry(id).or_default() += 1;
            }
            for (id, c) in counts {
                out[id as usize] -= self.frequency * c as f64 + self.presence;
            }
        }
        out.into_iter().map(|l| l as f32).collect()
    }

    /// Checks the ranges against a vocabulary of `vocab` ids: the field out of range and why.
    pub fn validate(&self, vocab: usize) -> Result<(), (&'static str, String)> {
        for (field, v) in [("presence_penalty", self.presence), ("frequency_penalty", self.frequency)] {
            if !(v.is_finite() && (-2.0..=2.0).contains(&v)) {
                return Err((field, format!("must be in [-2, 2], got {v}")));
            }
        }
        if !(self.repetition.is_finite() && self.repetition > 0.0) {
            return Err(("repetition_penalty", format!("must be > 0, got {}", self.repetition)));
        }
        for &(id, bias) in &self.logit_bias {
            if id < 0 || id as usize >= vocab {
                return Err(("logit_bias", format!("token id {id} is outside the vocabulary 0..{vocab}")));
            }
            if !(bias.is_finite() && (-100.0..=100.0).contains(&bias)) {
                return Err(("logit_bias", format!("bias {bias} of token {id} is not in [-100, 100]")));
            }
        }
        Ok(())
    }
}

/// The most alternatives [`Request::top_logprobs`] may ask for.
pub const MAX_TOP_LOGPROBS: usize = 20;

/// One generation request: a prompt, `n` samples, sampling settings and what to record.
#[derive(Debug, Clone)]
pub struct Request {
    /// Prompt token ids (non-empty, in the vocabulary).
    pub prompt: Vec<i64>,
    /// Samples to draw; each occupies its own slot. The prompt is prefilled once.
    pub n: usize,
    /// How each sample is drawn.
    pub sampling: SamplingParams,
    /// Ids that end a sample (kept as its last token), e.g. the config's `eos_token_id`.
    pub stop_ids: Vec<i64>,
    /// Strings that end a sample once the decoded completion contains one (the token that
    /// completes it is kept). Needs the engine's detokenizer.
    pub stop_strings: Vec<String>,
    /// Base seed of this request's random streams (fold the run seed and step into it).
    pub seed: u64,
    /// The caller's index of this prompt (e.g. its position in the batch): sample `j` draws from
    /// `rlvr_model::sample::stream_seed(seed, index, j)`, whatever else shares the engine.
    pub index: usize,
    /// Record each token's kept set (keep sampling mask, docs/model.md §3.3.7).
    pub return_sampling_mask: bool,
    /// Record each position's routed experts (keep routing, docs/model.md §3.3.6).
    pub return_routing: bool,
    /// Logit adjustments before temperature and truncation (off by default).
    pub penalties: Penalties,
    /// Record per token the this many most likely ids of the distribution it was drawn from
    /// ([`Token::top`]), at most [`MAX_TOP_LOGPROBS`]; 0 = none.
    pub top_logprobs: usize,
}

impl Request {
    /// One untruncated sample at temperature 1 of up to 16 tokens, seed 0, index 0, no stops.
    pub fn new(prompt: Vec<i64>) -> Self {
        Request {
            prompt,
            n: 1,
            sampling: SamplingParams { max_tokens: 16, ..SamplingParams::default() },
            stop_ids: Vec::new(),
            stop_strings: Vec::new(),
            seed: 0,
            index: 0,
            return_sampling_mask: false,
            return_routing: false,
            penalties: Penalties::default(),
            top_logprobs: 0,
        }
    }

    /// Checks the request against an engine of `slots` slots of `capacity` tokens over a
    /// vocabulary of `vocab` ids.
    pub(crate) fn validate(
        &self,
        vocab: usize,
        slots: usize,
        capacity: usize,
        has_detokenizer: bool,
    ) -> Result<(), EngineError> {
        if self.prompt.is_empty() {
            return Err(EngineError::bad("prompt", "is empty"));
        }
        if let Some(bad) = self.prompt.iter().find(|&&t| t < 0 || t as usize >= vocab) {
            return Err(EngineError::bad("prompt", format!("token id {bad} is outside the vocabulary 0..{vocab}")));
        }
        if self.n == 0 || self.n > slots {
            return Err(EngineError::bad("n", format!("{} is not in 1..={slots} (the engine's slots)", self.n)));
        }
        let max_tokens = self.sampling.max_tokens;
        if max_tokens == 0 || self.prompt.len() + max_tokens > capacity {
            let problem = format!(
                "{max_tokens} with a {}-token prompt must be ≥ 1 and fit a slot of {capacity} tokens",
                self.prompt.len()
            );
            return Err(EngineError::bad("max_tokens", problem));
        }
        self.sampling.validate().map_err(|(field, problem)| EngineError::bad(field, problem))?;
        self.penalties.validate(vocab).map_err(|(field, problem)| EngineError::bad(field, problem))?;
        if self.top_logprobs > MAX_TOP_LOGPROBS {
            let problem = format!("{} is more than {MAX_TOP_LOGPROBS}", self.top_logprobs);
            return Err(EngineError::bad("top_logprobs", problem));
        }
        if !self.stop_strings.is_empty() && !has_detokenizer {
            return Err(EngineError::bad("stop_strings", "need an engine built with a detokenizer"));
        }
        Ok(())
    }
}

/// Why a sample ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FinishReason {
    /// A stop id was sampled, or a stop string appeared.
    Stop,
    /// It reached `max_tokens`.
    Length,
    /// The request was aborted first.
    Abort,
}

/// One generated token.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Token {
    /// The sampled id.
    pub id: i64,
    /// Its log-probability under the distribution it was drawn from (the request's
    /// [`Penalties`], temperature, then top-k, top-p, min-p, renormalised); for greedy, under the
    /// untruncated distribution of the penalised logits (the model's own without penalties).
    pub logprob: f32,
    /// With [`Request::top_logprobs`] `k`: the `k` most likely ids of that same distribution
    /// (fewer when truncation kept fewer) and their log-probabilities, most likely first (ties by
    /// id).
    pub top: Option<Vec<(i64, f32)>>,
    /// The policy version whose forward produced the logits it was drawn from.
    pub version: u64,
    /// With `return_sampling_mask`: the ids the truncation kept, ascending. Empty means the
    /// whole vocabulary (no truncation, or greedy), as `rlvr_model::VocabMask` reads an empty row.
    pub kept: Option<Vec<i64>>,
    /// With `return_routing`: the experts of the position it was sampled from, i.e. of the
    /// previous token (the last prompt token for the first one).
    pub experts: Option<Experts>,
}

/// One sample of a request. (Serialisable, so the ranks of a multi-process run can share them.)
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    /// Its index among the request's `n`.
    pub index: usize,
    /// The generated tokens (prompt excluded).
    pub tokens: Vec<Token>,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// With `return_routing`: the experts of prompt positions `0..P−1` (the last prompt
    /// position's are the first token's `experts`). Shared by the request's samples.
    pub prompt_experts: Option<Vec<Experts>>,
}

impl Sample {
    /// The generated ids.
    pub fn ids(&self) -> Vec<i64> {
        self.tokens.iter().map(|t| t.id).collect()
    }

    /// The log-probability of each generated id.
    pub fn logprobs(&self) -> Vec<f32> {
        self.tokens.iter().map(|t| t.logprob).collect()
    }

    /// The oldest and newest policy versions among its tokens (`None` without tokens).
    pub fn versions(&self) -> Option<(u64, u64)> {
        let v = self.tokens.iter().map(|t| t.version);
        Some((v.clone().min()?, v.max()?))
    }

    /// The recorded routing as `ForwardOptions::replay` takes it for a forward over
    /// `prompt + tokens[..C−1]` (P + C − 1 positions, whose logits score every generated token):
    /// per main layer a (1, P + C − 1, K) i64 tensor, `None` for dense layers. `None` when routing
    /// was not recorded.
    pub fn replay(&self, model: &DeepseekV32) -> Option<Vec<Option<Tensor>>> {
        let mut rows: Vec<&Experts> = self.prompt_experts.as_ref()?.iter().collect();
        for t in &self.tokens {
            rows.push(t.experts.as_ref()?);
        }
        let k = model.config.num_experts_per_tok as i64;
        let mut moe = 0;
        let layers = model.layers.iter().map(|layer| {
            if !matches!(layer.mlp, Ffn::Moe(_)) {
                return None;
            }
            let ids: Vec<i64> = rows.iter().flat_map(|r| r[moe].iter().copied()).collect();
            moe += 1;
            Some(Tensor::from_slice(&ids).view([1, rows.len() as i64, k]).to_device(model.embed_tokens.device()))
            // (1, P + C − 1, K)
        });
        Some(layers.collect())
    }
}

/// Tokens that one sample of a watched request drew since the last report
/// ([`crate::engine::Engine::take_progress`]).
#[derive(Debug, Clone)]
pub struct Progress {
    /// The request's handle.
    pub id: RequestId,
    /// The sample's index among the request's `n`.
    pub sample: usize,
    /// The new tokens, oldest first.
    pub tokens: Vec<Token>,
}

/// A finished request: its samples in index order.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RequestOutput {
    /// The handle [`crate::engine::Engine::submit`] returned.
    pub id: RequestId,
    /// The caller's index of the prompt ([`Request::index`]).
    pub index: usize,
    /// The `n` samples.
    pub samples: Vec<Sample>,
}
