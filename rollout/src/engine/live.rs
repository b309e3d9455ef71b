//! An admitted request: its slots, how much of its prompt is cached, and each sample's stream,
//! tokens and state. Drawing a token on the host and deciding whether it ends the sample happen
//! here.

use super::request::{Experts, FinishReason, Progress, Request, RequestId, RequestOutput, Sample, Token};
use super::Detokenizer;
use rlvr_model::sample::{choose, greedy, stream_seed, Stream, Truncation};

/// A token drawn for a sample, not yet recorded.
pub(crate) struct Drawn {
    /// The id.
    pub(crate) id: i64,
    /// Its log-probability under the distribution it was drawn from.
    pub(crate) logprob: f32,
    /// The kept set's ids in ascending order; empty when nothing was truncated (or greedy).
    pub(crate) kept: Vec<i64>,
    /// The most likely alternatives, when the request asked for them.
    pub(crate) top: Option<Vec<(i64, f32)>>,
}

/// One sample in flight.
pub(crate) struct SampleState {
    /// Its random stream, seeded from (request seed, request index, sample index).
    stream: Stream,
    /// Tokens generated so far.
    tokens: Vec<Token>,
    /// How many of `tokens` [`Live::progress`] has reported.
    reported: usize,
    /// Set once it has ended.
    pub(crate) finish: Option<FinishReason>,
    /// The last token drawn but not yet fed through the model (the next decode step's input).
    pub(crate) pending: Option<i64>,
    /// Its cache slot while it holds one.
    pub(crate) slot: Option<usize>,
}

/// A request that holds slots.
pub(crate) struct Live {
    /// Its handle.
    pub(crate) id: RequestId,
    /// What was asked.
    pub(crate) req: Request,
    trunc: Truncation,
    /// Prompt tokens already in the first sample's slot.
    pub(crate) prefilled: usize,
    /// Experts of the prompt positions cached so far (with `return_routing`).
    pub(crate) prompt_experts: Vec<Experts>,
    /// The `n` samples.
    pub(crate) samples: Vec<SampleState>,
}

impl Live {
    /// A request admitted into `slots` (one per sample).
    pub(crate) fn new(id: RequestId, req: Request, slots: Vec<usize>) -> Self {
        let samples = slots
            .into_iter()
            .enumerate()
            .map(|(j, slot)| SampleState {
                stream: Stream::new(stream_seed(req.seed, req.index, j)),
                tokens: Vec::new(),
                reported: 0,
                finish: None,
                pending: None,
                slot: Some(slot),
            })
            .collect();
        Live { id, trunc: req.sampling.truncation(), req, prefilled: 0, prompt_experts: Vec::new(), samples }
    }

    /// Whether part of the prompt still has to go through the model.
    pub(crate) fn prefilling(&self) -> bool {
        self.prefilled < self.req.prompt.len()
    }

    /// The slot the prompt is prefilled into (the first sample's), and the sibling slots it is
    /// copied to afterwards.
    pub(crate) fn prefill_slots(&self) -> (usize, Vec<usize>) {
        let slots: Vec<usize> = self.samples.iter().filter_map(|s| s.slot).collect();
        (slots[0], slots[1..].to_vec())
    }

    /// Whether every sample has ended.
    pub(crate) fn finished(&self) -> bool {
        self.samples.iter().all(|s| s.finish.is_some())
    }

    /// Whether this request's draws can be made by the tensor draw on the model's device
    /// (`rlvr_model::draw`): no penalties and no alternatives asked for, which need the host.
    pub(crate) fn draws_on_device(&self) -> bool {
        self.req.penalties.is_off() && self.req.top_logprobs == 0
    }

    /// The uniform sample `j`'s next draw takes from its stream (none for greedy, which draws
    /// nothing), for a draw made elsewhere than [`Self::draw`].
    pub(crate) fn next_uniform(&mut self, j: usize) -> Option<f64> {
        (self.req.sampling.temperature > 0.0).then(|| self.samples[j].stream.uniform())
    }

    /// The truncation this request samples with.
    pub(crate) fn truncation(&self) -> Truncation {
        self.trunc
    }

    /// Draws sample `j`'s next token from `logits (V)` on the host.
    pub(crate) fn draw(&mut self, j: usize, logits: &[f32]) -> Drawn {
        let req = &self.req;
        let sample = &mut self.samples[j];
        let penalised;
        let logits = if req.penalties.is_off() {
            logits
        } else {
            let generated: Vec<i64> = sample.tokens.iter().map(|t| t.id).collect();
            penalised = req.penalties.apply(logits, &req.prompt, &generated);
            &penalised[..]
        };
        if req.sampling.temperature <= 0.0 {
            let (id, logprob) = greedy(logits);
            let top = (req.top_logprobs > 0).then(|| top_of(Truncation::default().kept(logits, 1.0), req.top_logprobs));
            return Drawn { id, logprob, kept: Vec::new(), top };
        }
        let kept = self.trunc.kept(logits, req.sampling.temperature);
        let (id, logprob) = choose(&kept, &mut sample.stream);
        let mut ids: Vec<i64> =
            if self.trunc.is_off() { Vec::new() } else { kept.iter().map(|&(i, _)| i as i64).collect() };
        ids.sort_unstable();
        let top = (req.top_logprobs > 0).then(|| top_of(kept, req.top_logprobs));
        Drawn { id, logprob, kept: ids, top }
    }

    /// Records sample `j`'s drawn token under policy `version`; `experts` are those of the
    /// position its logits came from. Returns once the sample either ended or holds the token as
    /// its next input.
    pub(crate) fn record(
        &mut self,
        j: usize,
        drawn: Drawn,
        version: u64,
        experts: Option<Experts>,
        detokenizer: Option<&Detokenizer>,
    ) {
        let req = &self.req;
        let sample = &mut self.samples[j];
        let Drawn { id, logprob, kept, top } = drawn;
        let kept = req.return_sampling_mask.then_some(kept);
        let experts = experts.filter(|_| req.return_routing);
        sample.tokens.push(Token { id, logprob, version, kept, experts, top });
        sample.finish = if req.stop_ids.contains(&id) || hits_stop_string(req, &sample.tokens, detokenizer) {
            Some(FinishReason::Stop)
        } else if sample.tokens.len() >= req.sampling.max_tokens {
            Some(FinishReason::Length)
        } else {
            None
        };
        sample.pending = sample.finish.is_none().then_some(id);
    }

    /// Each sample's tokens drawn since the last call; samples that drew none are left out.
    pub(crate) fn progress(&mut self) -> Vec<Progress> {
        let id = self.id;
        let fresh = self.samples.iter_mut().enumerate().filter(|(_, s)| s.tokens.len() > s.reported);
        fresh
            .map(|(sample, s)| {
                let tokens = s.tokens[s.reported..].to_vec();
                s.reported = s.tokens.len();
                Progress { id, sample, tokens }
            })
            .collect()
    }

    /// Ends every sample still running with [`FinishReason::Abort`].
    pub(crate) fn abort(&mut self) {
        for s in &mut self.samples {
            if s.finish.is_none() {
                s.finish = Some(FinishReason::Abort);
                s.pending = None;
            }
        }
    }

    /// The finished request's output (every sample must have ended).
    pub(crate) fn into_output(self) -> RequestOutput {
        let prompt_experts = self.req.return_routing.then_some(self.prompt_experts);
        let samples = self
            .samples
            .into_iter()
            .enumerate()
            .map(|(index, s)| Sample {
                index,
                tokens: s.tokens,
                finish_reason: s.finish.expect("only finished requests are output"),
                prompt_experts: prompt_experts.clone(),
            })
            .collect();
        RequestOutput { id: self.id, index: self.req.index, samples }
    }
}

/// The `k` most likely of a kept set (`(id, log-prob)`), most likely first, ties by id.
fn top_of(mut kept: Vec<(usize, f64)>, k: usize) -> Vec<(i64, f32)> {
    let order = |a: &(usize, f64), b: &(usize, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if k < kept.len() {
        kept.select_nth_unstable_by(k - 1, order);
        kept.truncate(k);
    }
    kept.sort_unstable_by(order);
    kept.into_iter().map(|(id, lp)| (id as i64, lp as f32)).collect()
}

/// Whether the decoded completion now contains one of the request's stop strings. The whole
/// completion is decoded each time, so a string spanning several tokens (or a token whose text
/// depends on its neighbours) is caught.
fn hits_stop_string(req: &Request, tokens: &[Token], detokenizer: Option<&Detokenizer>) -> bool {
    let Some(detokenize) = detokenizer.filter(|_| !req.stop_strings.is_empty()) else {
        return false;
    };
    let ids: Vec<i64> = tokens.iter().map(|t| t.id).collect();
    let text = detokenize(&ids);
    req.stop_strings.iter().any(|s| !s.is_empty() && text.contains(s.as_str()))
}
