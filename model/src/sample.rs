//! A simple batched sampler over the generation cache: every prompt gets a slot, prompts are
//! prefilled one by one (their lengths differ), then all unfinished slots decode one token per
//! step. Temperature 0 is greedy. Each sequence draws from its own stream, seeded from
//! `(seed, prompt index)`, so a completion does not depend on what it was batched with.
//!
//! Left out (the rollout engine's job): top-p/top-k/min-p, stop strings, continuous admission of new
//! requests, and keep-routing/keep-sampling-mask records.

use crate::cache::KvCache;
use crate::mla::AttentionMode;
use crate::model::DeepseekV32;
use tch::{Device, Kind, Tensor};

/// How to sample.
#[derive(Debug, Clone)]
pub struct SampleConfig {
    /// Tokens to generate at most per prompt.
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 picks the argmax.
    pub temperature: f64,
    /// Base seed of every sequence's random stream.
    pub seed: u64,
    /// Ids that end a sequence (kept as its last token).
    pub eos: Vec<i64>,
    /// Attention mode of every forward.
    pub mode: AttentionMode,
}

/// One prompt's completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Generated ids (prompt excluded).
    pub tokens: Vec<i64>,
    /// Log-probability of each generated id under the distribution it was drawn from
    /// (`softmax(logits / T)`; plain `softmax(logits)` when greedy).
    pub logprobs: Vec<f32>,
    /// Whether it stopped at an end-of-sequence id (else at `max_new_tokens`).
    pub stopped_at_eos: bool,
}

/// SplitMix64: a tiny, well-mixed, seedable stream (one per sequence).
struct Stream(u64);

impl Stream {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Completes each prompt (non-empty id lists) on `device`, batching decode steps.
pub fn generate(
    model: &DeepseekV32,
    prompts: &[Vec<i64>],
    cfg: &SampleConfig,
    device: Device,
) -> Vec<Completion> {
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let capacity = longest + cfg.max_new_tokens;
    let kind = model.embed_tokens.kind();
    let mut cache = KvCache::new(&model.config, prompts.len(), capacity, kind, device);
    let mut streams: Vec<Stream> = (0..prompts.len())
        .map(|i| Stream(cfg.seed ^ (i as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93)))
        .collect();
    let empty = Completion {
        tokens: vec![],
        logprobs: vec![],
        stopped_at_eos: false,
    };
    let mut out = vec![empty; prompts.len()];
    tch::no_grad(|| {
        let mut logits = prefill(model, prompts, &mut cache, cfg.mode, device); // (B_active, V)
        let mut active: Vec<usize> = (0..prompts.len()).collect();
        for _ in 0..cfg.max_new_tokens {
            let mut next = Vec::with_capacity(active.len());
            for (row, &slot) in active.iter().enumerate() {
                let (id, lp) = draw(&logits.get(row as i64), cfg.temperature, &mut streams[slot]);
                out[slot].tokens.push(id);
                out[slot].logprobs.push(lp);
                out[slot].stopped_at_eos = cfg.eos.contains(&id);
                next.push(id);
            }
            let keep: Vec<usize> = (0..active.len())
                .filter(|&r| !out[active[r]].stopped_at_eos)
                .collect();
            if keep.is_empty() || out[active[0]].tokens.len() == cfg.max_new_tokens {
                break;
            }
            let ids: Vec<i64> = keep.iter().map(|&r| next[r]).collect();
            active = keep.iter().map(|&r| active[r]).collect();
            let ids = Tensor::from_slice(&ids).to_device(device).unsqueeze(1); // (B_active, 1)
            let step = model.forward_cached(&ids, &mut cache, &active, cfg.mode);
            logits = step.squeeze_dim(1); // (B_active, V)
        }
    });
    out
}

/// Prefills prompt `i` into slot `i`, one prompt per call (their lengths differ); returns each
/// prompt's last logits: (B, V).
fn prefill(
    model: &DeepseekV32,
    prompts: &[Vec<i64>],
    cache: &mut KvCache,
    mode: AttentionMode,
    device: Device,
) -> Tensor {
    let mut last = Vec::with_capacity(prompts.len());
    for (slot, prompt) in prompts.iter().enumerate() {
        assert!(!prompt.is_empty(), "prompt {slot} is empty");
        let ids = Tensor::from_slice(prompt).to_device(device).unsqueeze(0); // (1, P)
        let logits = model.forward_cached(&ids, cache, &[slot], mode); // (1, P, V)
        last.push(logits.get(0).get(-1));
    }
    Tensor::stack(&last, 0)
}

/// One id from `logits (V)` and its log-probability.
fn draw(logits: &Tensor, temperature: f64, stream: &mut Stream) -> (i64, f32) {
    let logits = logits.to_kind(Kind::Float);
    if temperature <= 0.0 {
        let id = logits.argmax(-1, false).int64_value(&[]);
        return (
            id,
            logits.log_softmax(-1, Kind::Float).double_value(&[id]) as f32,
        );
    }
    let logp = (logits / temperature)
        .log_softmax(-1, Kind::Float)
        .to_device(Device::Cpu);
    let logp = Vec::<f32>::try_from(&logp).expect("f32 log-probs");
    let u = stream.uniform();
    let mut acc = 0.0f64;
    for (id, &lp) in logp.iter().enumerate() {
        acc += (lp as f64).exp();
        if u < acc {
            return (id as i64, lp);
        }
    }
    // Rounding left the total just under u: take the last id with mass.
    let id = logp
        .iter()
        .rposition(|lp| lp.is_finite())
        .expect("some token has mass");
    (id as i64, logp[id])
}
