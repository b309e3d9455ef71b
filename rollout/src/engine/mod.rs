//! The generation engine (docs/architecture.md §5): continuous batching over a fixed pool of sequence slots
//! of one [`KvCache`].
//!
//! [`Engine::step`] does, in order: (1) apply new weights queued by [`Engine::update_weights`];
//! (2) admit waiting requests, first come first served, while the head one's `n` slots are free;
//! (3) feed one prompt chunk (at most [`EngineConfig::prefill_chunk`] tokens) of every request
//! still prefilling, requests with chunks of one length together in one forward (`prefill.rs`); a
//! request whose prompt is complete has its cache rows copied to its other samples' slots and
//! draws every sample's first token from the last prompt logits;
//! (4) decode one token for every sample that held an undecoded token when the step began, all in
//! one batched forward (so each sample gains at most one token per step);
//! (5) free the slots of ended samples and return the requests whose samples have all ended.
//!
//! **Sampling** is `rlvr_model::sample`'s arithmetic (f32 logits, f64 softmax and truncation),
//! on the host or as the same steps in tensor ops on the model's device ([`DrawSite`], `draw.rs`;
//! the device on CUDA by default, so only ids and log-probs leave the GPU): the request's [`Penalties`] (logit bias, repetition, frequency and presence), then
//! temperature, top-k, top-p, min-p, renormalised; temperature 0 is the argmax of the penalised
//! logits. Recorded log-probs (and [`Request::top_logprobs`] alternatives) are of the distribution
//! actually drawn from. Sample
//! `j` of a request draws from its own stream seeded by `stream_seed(seed, index, j)`
//! ([`Request::seed`], [`Request::index`]), set in that one place, so a sample's tokens do not
//! depend on which requests share its batch (batched logits differ from a lone forward's only by
//! float rounding).
//!
//! **Records**: per token its id, log-prob, policy version, and optionally the kept set
//! ([`Request::return_sampling_mask`]) and the routed experts ([`Request::return_routing`]); see
//! [`Token`] and [`Sample::replay`].
//!
//! **Weights**: [`Engine::update_weights`] checks a checksum ([`checksum_of`]) and the names and
//! shapes, snapshots the tensors, and the next `step` copies them into the model's variables before
//! any forward, then increments [`Engine::version`]. [`Engine::update_weights_mapped`] queues a
//! memory-mapped safetensors file instead ([`MappedWeights`], checksum checked when it was opened,
//! off the engine thread), which that step copies in one tensor at a time: the service's route, so
//! a pushed model is never held twice in memory. The version is recorded **per token**: a
//! sample in flight across an update has old-version tokens, then new-version ones. Its cached keys
//! (prompt and earlier tokens) stay those the old weights computed, as in other in-flight updates.
//!
//! **Streaming**: a caller that wants tokens as they are drawn marks the request with
//! [`Engine::watch`] and calls [`Engine::take_progress`] after each step; only watched requests
//! pay for the copies.
//!
//! **Stop strings** need a detokenizer ([`Engine::with_detokenizer`]): after each token the
//! sample's whole completion is decoded and searched for each stop string.
//!
//! **Memory**: the cache holds every slot at full length from the start, so it is sized against
//! what the device can still give before it is allocated (`memory.rs`, [`Sizing`]): slots the user
//! set that do not fit are refused, a default is lowered to what fits.
//!
//! The attention mode ([`EngineConfig::mode`]) is one for the engine, since one decode forward
//! serves every slot. The engine runs on the model's device and owns the model, so it can move to a
//! serving thread (`tch::Tensor` is `Send` but not `Sync`, so an `Arc`-shared model could not); a
//! colocated trainer keeps its own model and hands its tensors over with
//! [`Engine::update_weights`].
//!
//! Left out: preemption and swapping (a request waits until its `n` slots are free), prefix
//! sharing between requests, speculative decoding, and the HTTP service (built on top of this).

mod draw;
mod error;
mod live;
mod mapped;
mod memory;
mod prefill;
mod request;
mod weights;

pub use draw::DrawSite;
pub use error::EngineError;
pub use mapped::MappedWeights;
pub use memory::{fit_slots, Sizing, MARGIN_DIVISOR};
pub use request::{
    Experts, FinishReason, Penalties, Progress, Request, RequestId, RequestOutput, Sample, SamplingParams, Token,
    MAX_TOP_LOGPROBS,
};
pub use weights::checksum_of;

use live::Live;
use rlvr_model::{kernel, AttentionMode, DeepseekV32, ForwardOutput, KvCache};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::{nn::VarStore, Device, Tensor};
use weights::WeightUpdate;

/// Turns generated ids into text, for stop strings.
pub type Detokenizer = Arc<dyn Fn(&[i64]) -> String + Send + Sync>;

/// Size and behaviour of an engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Sequence slots (the most samples in flight at once); fewer when they do not fit the device
    /// and `sizing` says they are a default.
    pub slots: usize,
    /// Tokens one slot holds: prompt + generated.
    pub max_seq_len: usize,
    /// Most prompt tokens one request feeds per step.
    pub prefill_chunk: usize,
    /// Attention mode of every forward (sparse DSA by default).
    pub mode: AttentionMode,
    /// How `slots` meets the device's memory (`memory.rs`).
    pub sizing: Sizing,
    /// Where tokens are drawn from the logits (`draw.rs`): on the device for a CUDA model by default.
    pub draw: DrawSite,
}

impl EngineConfig {
    /// `slots` slots of `max_seq_len` tokens, prefill chunks of 512, sparse attention; the slots
    /// are refused when their cache does not fit the device.
    pub fn new(slots: usize, max_seq_len: usize) -> Self {
        let sizing = Sizing::explicit("slots", "max_seq_len");
        let (prefill_chunk, mode, draw) = (512, AttentionMode::Sparse, DrawSite::Auto);
        EngineConfig { slots, max_seq_len, prefill_chunk, mode, sizing, draw }
    }
}

/// The continuous-batching generation engine (see the module notes).
pub struct Engine {
    model: DeepseekV32,
    vars: HashMap<String, Tensor>,
    cache: KvCache,
    config: EngineConfig,
    detokenizer: Option<Detokenizer>,
    waiting: VecDeque<(RequestId, Request)>,
    live: Vec<Live>,
    watched: HashSet<RequestId>,
    free: Vec<usize>,
    done: Vec<RequestOutput>,
    next_id: u64,
    version: u64,
    update: Option<WeightUpdate>,
    tokens_generated: u64,
    busy: Duration,
    phases: StepTimes,
}

/// Where the engine's steps spent their time, summed since it started (benchmarks' split).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepTimes {
    /// Steps run.
    pub steps: u64,
    /// Steps that decoded (ran a batched decode forward).
    pub decode_steps: u64,
    /// Weight updates, admission and retiring: the engine's own bookkeeping.
    pub bookkeeping: Duration,
    /// Prompt chunks' forwards and their first tokens.
    pub prefill: Duration,
    /// Decode forwards, up to the logits (and the routing record, when asked for).
    pub decode_forward: Duration,
    /// Drawing each row's token from its logits (with their copy to the host, or the draws' on a
    /// device draw) and recording it.
    pub sampling: Duration,
}

impl Engine {
    /// An engine over `model`, whose variables live in `vars` (the store it was built in and
    /// loaded into; updates are written there), with a cache of `config.slots` slots on the
    /// model's device and in its dtype — fewer for a default that does not fit the device, an
    /// error for a setting that does not (`memory.rs`). Starts at policy version 0. The model's
    /// routed experts are packed for grouped compute ([`DeepseekV32::pack_experts`]), so its dtype
    /// and device must be final; updates then write into the packed storage.
    pub fn new(mut model: DeepseekV32, vars: &VarStore, mut config: EngineConfig) -> Result<Self, EngineError> {
        assert!(config.slots > 0, "an engine needs at least one slot");
        assert!(config.prefill_chunk > 0, "prefill_chunk must be ≥ 1");
        let max = model.config.max_position_embeddings;
        assert!(config.max_seq_len <= max, "max_seq_len {} > max_position_embeddings {max}", config.max_seq_len);
        let (kind, device) = (model.embed_tokens.kind(), model.embed_tokens.device());
        // Packed first, so the memory the cache is sized against is what is left after it.
        model.pack_experts();
        let available = config.sizing.available.or_else(|| rlvr_model::device::available_bytes(device));
        config.slots = fit_slots(&model.config, kind, config.slots, config.max_seq_len, &config.sizing, available)?;
        let cache = KvCache::new(&model.config, config.slots, config.max_seq_len, kind, device);
        Ok(Engine {
            vars: vars.variables(),
            cache,
            free: (0..config.slots).rev().collect(),
            model,
            config,
            detokenizer: None,
            waiting: VecDeque::new(),
            live: Vec::new(),
            watched: HashSet::new(),
            done: Vec::new(),
            next_id: 0,
            version: 0,
            update: None,
            tokens_generated: 0,
            busy: Duration::ZERO,
            phases: StepTimes::default(),
        })
    }

    /// Sequence slots the engine has (its config's, or fewer that fit the device).
    pub fn slots(&self) -> usize {
        self.config.slots
    }

    /// The same engine, decoding completions with `detokenizer` to check stop strings.
    pub fn with_detokenizer(mut self, detokenizer: Detokenizer) -> Self {
        self.detokenizer = Some(detokenizer);
        self
    }

    /// The same engine, starting at policy version `version` instead of 0 (a trainer that
    /// rebuilds its engine, e.g. after a resume, keeps counting its weight updates).
    pub fn with_version(mut self, version: u64) -> Self {
        self.version = version;
        self
    }

    /// The model (its weights are the current policy version's).
    pub fn model(&self) -> &DeepseekV32 {
        &self.model
    }

    /// Queues a request (checked first); it is admitted by a later [`Engine::step`].
    pub fn submit(&mut self, request: Request) -> Result<RequestId, EngineError> {
        let vocab = self.model.config.vocab_size;
        request.validate(vocab, self.config.slots, self.config.max_seq_len, self.detokenizer.is_some())?;
        let id = RequestId(self.next_id);
        self.next_id += 1;
        self.waiting.push_back((id, request));
        Ok(id)
    }

    /// Ends request `id`: its running samples finish with [`FinishReason::Abort`] and free their
    /// slots now; its output comes with the next [`Engine::step`]. False if it is not in flight.
    pub fn abort(&mut self, id: RequestId) -> bool {
        if let Some(at) = self.waiting.iter().position(|(w, _)| *w == id) {
            let (id, req) = self.waiting.remove(at).expect("found above");
            let mut live = Live::new(id, req, Vec::new());
            live.abort();
            self.done.push(live.into_output());
            self.watched.remove(&id);
            return true;
        }
        let Some(live) = self.live.iter_mut().find(|l| l.id == id) else {
            return false;
        };
        live.abort();
        self.retire();
        true
    }

    /// Asks for request `id`'s tokens step by step ([`Engine::take_progress`]). False if it is not
    /// waiting or running.
    pub fn watch(&mut self, id: RequestId) -> bool {
        let known = self.waiting.iter().any(|(w, _)| *w == id) || self.live.iter().any(|l| l.id == id);
        if known {
            self.watched.insert(id);
        }
        known
    }

    /// The tokens that the samples of watched requests still running drew since the last call,
    /// one entry per sample that drew any. A request that ended in the last step reports instead
    /// in its [`RequestOutput`], whose tokens include those never taken here.
    pub fn take_progress(&mut self) -> Vec<Progress> {
        let watched = &self.watched;
        self.live.iter_mut().filter(|l| watched.contains(&l.id)).flat_map(Live::progress).collect()
    }

    /// One engine step (see the module notes); returns the requests that ended since the last one.
    pub fn step(&mut self) -> Vec<RequestOutput> {
        let start = Instant::now();
        if let Some(update) = self.update.take() {
            update.apply(&self.vars);
            self.version += 1;
        }
        self.admit();
        // Samples whose first token comes from this step's prefill wait for the next decode, so
        // every sample gains at most one token per step.
        let rows = self.decode_rows();
        let before_prefill = Instant::now();
        // The few-row CPU kernel for decode-sized products (rlvr_model::kernel), no autograd.
        kernel::enabled(|| {
            tch::no_grad(|| {
                self.prefill();
                self.phases.prefill += before_prefill.elapsed();
                self.decode(&rows);
            })
        });
        let before_retire = Instant::now();
        self.retire();
        let end = Instant::now();
        self.phases.steps += 1;
        self.phases.bookkeeping += (before_prefill - start) + (end - before_retire);
        self.busy += end - start;
        std::mem::take(&mut self.done)
    }

    /// Steps until nothing waits or runs; every output, in the order the requests ended.
    pub fn run_until_done(&mut self) -> Vec<RequestOutput> {
        let mut out = Vec::new();
        while !self.is_idle() {
            out.extend(self.step());
        }
        out
    }

    /// Whether nothing waits, runs, or awaits collection.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.live.is_empty() && self.done.is_empty()
    }

    /// The current policy version (0 at start unless [`Engine::with_version`] said otherwise, +1
    /// per applied update).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The policy version the next step's tokens will carry: [`Engine::version`], plus one when an
    /// update is queued.
    pub fn next_version(&self) -> u64 {
        self.version + u64::from(self.update.is_some())
    }

    /// Queues new weights (the trainer's named tensors, names as the checkpoint's) for the start of
    /// the next step. Refused, with nothing changed, when [`checksum_of`] the tensors is not
    /// `expected_checksum` or they do not match the model's names and shapes. A second update
    /// queued before the next step replaces the first; the version counts applied updates.
    pub fn update_weights(&mut self, tensors: &[(String, Tensor)], expected_checksum: u64) -> Result<(), EngineError> {
        self.update = Some(WeightUpdate::snapshot(tensors, expected_checksum, &self.vars)?);
        Ok(())
    }

    /// New weights from this process (the trainer's named tensors, names as the checkpoint's), with
    /// no checksum: nothing travelled, so there is nothing to check but names and shapes (refused,
    /// with nothing changed, when they differ from the model's). An idle engine (no request running
    /// or waiting) copies them straight into its variables and its version advances now; a busy one
    /// snapshots them and queues the update for the start of its next step, as
    /// [`Engine::update_weights`] does. Either way a queued update is replaced.
    pub fn set_weights(&mut self, tensors: &[(String, Tensor)]) -> Result<(), EngineError> {
        if self.active_slots() == 0 && self.waiting.is_empty() {
            weights::check_fit(tensors, &self.vars)?;
            weights::copy_into(tensors, &self.vars);
            self.update = None;
            self.version += 1;
        } else {
            self.update = Some(WeightUpdate::unchecked_snapshot(tensors, &self.vars)?);
        }
        Ok(())
    }

    /// Queues new weights held as a mapped safetensors file, whose checksum
    /// [`MappedWeights::open`] checked, for the start of the next step, which copies them in one
    /// tensor at a time. Refused, with nothing changed, when they do not match the model's names and
    /// shapes. Replaces a queued update, as [`Engine::update_weights`] does.
    pub fn update_weights_mapped(&mut self, weights: MappedWeights) -> Result<(), EngineError> {
        self.update = Some(WeightUpdate::mapped(weights, &self.vars)?);
        Ok(())
    }

    /// Requests waiting for slots.
    pub fn queue_depth(&self) -> usize {
        self.waiting.len()
    }

    /// Slots in use.
    pub fn active_slots(&self) -> usize {
        self.config.slots - self.free.len()
    }

    /// Tokens generated since the engine started.
    pub fn tokens_generated(&self) -> u64 {
        self.tokens_generated
    }

    /// Where the steps' time went so far.
    pub fn step_times(&self) -> StepTimes {
        self.phases
    }

    /// Tokens generated per second of time spent in [`Engine::step`].
    pub fn tokens_per_second(&self) -> f64 {
        self.tokens_generated as f64 / self.busy.as_secs_f64().max(1e-9)
    }

    /// Moves waiting requests into free slots, in order, while the head one fits.
    fn admit(&mut self) {
        while let Some((_, req)) = self.waiting.front() {
            if req.n > self.free.len() {
                break;
            }
            let (id, req) = self.waiting.pop_front().expect("checked above");
            let slots = self.free.split_off(self.free.len() - req.n);
            self.live.push(Live::new(id, req, slots.into_iter().rev().collect()));
        }
    }

    /// The samples holding an undecoded token: (live index, sample index, slot, input id).
    fn decode_rows(&self) -> Vec<(usize, usize, usize, i64)> {
        let mut rows = Vec::new();
        for (i, live) in self.live.iter().enumerate() {
            for (j, s) in live.samples.iter().enumerate() {
                if let (Some(id), Some(slot)) = (s.pending, s.slot) {
                    rows.push((i, j, slot, id));
                }
            }
        }
        rows
    }

    /// One batched forward over `rows` (from [`Self::decode_rows`]); draws each one's next token.
    fn decode(&mut self, rows: &[(usize, usize, usize, i64)]) {
        if rows.is_empty() {
            return;
        }
        let start = Instant::now();
        let slots: Vec<usize> = rows.iter().map(|r| r.2).collect();
        let ids: Vec<i64> = rows.iter().map(|r| r.3).collect();
        let ids = Tensor::from_slice(&ids).to_device(self.model.embed_tokens.device()).unsqueeze(1); // (B, 1)
        let out = self.model.run(&ids, DeepseekV32::cached_options(&ids, &mut self.cache, &slots, self.config.mode));
        let routing = rows.iter().any(|r| self.live[r.0].req.return_routing);
        let all_experts = if routing { experts_by_row(&out, rows.len()) } else { Vec::new() };
        let mut experts = all_experts.into_iter();
        let forwarded = Instant::now();
        let picks: Vec<draw::Pick> = rows.iter().enumerate().map(|(b, &(i, j, _, _))| (i, j, b)).collect();
        let drawn = self.draw(&out.logits.squeeze_dim(1), &picks);
        for (&(i, j, _, _), drawn) in rows.iter().zip(drawn) {
            self.live[i].record(j, drawn, self.version, experts.next(), self.detokenizer.as_ref());
            self.tokens_generated += 1;
        }
        self.phases.decode_steps += 1;
        self.phases.decode_forward += forwarded - start;
        self.phases.sampling += forwarded.elapsed();
    }

    /// Frees the slots of ended samples and outputs the requests whose samples all ended.
    fn retire(&mut self) {
        let free_before = self.free.len();
        for live in &mut self.live {
            for s in &mut live.samples {
                if s.finish.is_some() {
                    if let Some(slot) = s.slot.take() {
                        self.cache.reset(slot);
                        self.free.push(slot);
                    }
                }
            }
        }
        if self.free.len() > free_before {
            // Highest first, so `admit` hands out the lowest free slots in ascending order: a batch
            // of consecutive slots reads the cache as a view, any other set is gathered
            // (`KvCache::read`).
            self.free.sort_unstable_by(|a, b| b.cmp(a));
        }
        let (ended, running): (Vec<Live>, Vec<Live>) =
            std::mem::take(&mut self.live).into_iter().partition(Live::finished);
        self.live = running;
        for live in &ended {
            self.watched.remove(&live.id);
        }
        self.done.extend(ended.into_iter().map(Live::into_output));
    }
}

/// The routed experts of each of the `rows` rows (B·T order) of a forward, per MoE layer.
fn experts_by_row(out: &ForwardOutput, rows: usize) -> Vec<Experts> {
    let layers: Vec<(Vec<i64>, usize)> = out
        .trace
        .routings
        .iter()
        .flatten()
        .map(|r| {
            let k = r.experts.size()[1] as usize;
            (Vec::<i64>::try_from(r.experts.to_device(Device::Cpu).flatten(0, -1)).expect("i64 expert ids"), k)
        })
        .collect();
    (0..rows).map(|r| layers.iter().map(|(ids, k)| ids[r * k..(r + 1) * k].to_vec()).collect()).collect()
}
