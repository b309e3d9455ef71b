//! Prompt prefill: the next chunk of every request still prefilling, with requests whose chunks
//! have the same length fed together as the rows of one forward.
//!
//! A forward streams every weight of the model once whatever its row count, so feeding B prompts
//! as one (B, c) call instead of B calls of (1, c) is what makes a burst of new requests cheap.
//! Rows of one cached call must add the same number of tokens, hence the grouping by chunk length;
//! a group holds at most [`super::EngineConfig::prefill_chunk`] tokens (a longer single chunk
//! cannot occur: chunks are capped at that size too).
//!
//! Left out: packing chunks of different lengths into one call (ragged rows).

use super::draw::Pick;
use super::{experts_by_row, Engine};
use rlvr_model::sample::copy_slot;
use rlvr_model::{DeepseekV32, ForwardOptions};
use tch::Tensor;

impl Engine {
    /// Feeds one prompt chunk of every request still prefilling, grouped by chunk length.
    pub(super) fn prefill(&mut self) {
        let budget = self.config.prefill_chunk;
        let mut groups: Vec<(usize, Vec<usize>)> = Vec::new(); // (chunk length, live indices)
        for i in 0..self.live.len() {
            let live = &self.live[i];
            if !live.prefilling() {
                continue;
            }
            let len = budget.min(live.req.prompt.len() - live.prefilled);
            match groups.iter_mut().find(|(l, g)| *l == len && (g.len() + 1) * len <= budget) {
                Some((_, g)) => g.push(i),
                None => groups.push((len, vec![i])),
            }
        }
        for (len, group) in groups {
            self.prefill_group(&group, len);
        }
    }

    /// One forward over the next `len` prompt tokens of each live request in `group`.
    fn prefill_group(&mut self, group: &[usize], len: usize) {
        let device = self.model.embed_tokens.device();
        let mut ids = Vec::with_capacity(group.len() * len);
        let mut slots = Vec::with_capacity(group.len());
        for &i in group {
            let live = &self.live[i];
            ids.extend_from_slice(&live.req.prompt[live.prefilled..live.prefilled + len]);
            slots.push(live.prefill_slots().0);
        }
        let ids = Tensor::from_slice(&ids).view([group.len() as i64, len as i64]).to_device(device); // (G, c)
        let opts = DeepseekV32::cached_options(&ids, &mut self.cache, &slots, self.config.mode);
        // Only the chunk's last position is sampled from.
        let out = self.model.run(&ids, ForwardOptions { head_from: len as i64 - 1, ..opts });
        let routing = group.iter().any(|&i| self.live[i].req.return_routing);
        let mut experts = if routing { experts_by_row(&out, group.len() * len) } else { Vec::new() }.into_iter();
        let mut picks: Vec<Pick> = Vec::new();
        let mut lasts = Vec::with_capacity(group.len()); // row b's last-position experts
        for (b, &i) in group.iter().enumerate() {
            let rows: Vec<_> = experts.by_ref().take(len).collect();
            let rows = if self.live[i].req.return_routing { rows } else { Vec::new() };
            let last = self.end_chunk(i, len, rows);
            if last.is_some() {
                picks.extend((0..self.live[i].samples.len()).map(|j| (i, j, b)));
            }
            lasts.push(last.flatten());
        }
        // Every sample of a complete prompt draws its first token from the last prompt logits.
        let drawn = self.draw(&out.logits.squeeze_dim(1), &picks);
        for (&(i, j, b), token) in picks.iter().zip(drawn) {
            self.live[i].record(j, token, self.version, lasts[b].clone(), self.detokenizer.as_ref());
            self.tokens_generated += 1;
        }
    }

    /// Records that live request `i` cached `len` more prompt tokens (with their experts, when it
    /// asked for routing); when its prompt is complete, copies its cache to the sibling slots and
    /// returns the experts of the last prompt position (`Some(None)` without routing), whose
    /// logits its samples draw their first tokens from.
    fn end_chunk(&mut self, i: usize, len: usize, mut experts: Vec<super::Experts>) -> Option<Option<super::Experts>> {
        let live = &mut self.live[i];
        live.prefilled += len;
        if live.prefilling() {
            live.prompt_experts.extend(experts);
            return None;
        }
        let last = experts.pop();
        live.prompt_experts.extend(experts);
        let (slot, siblings) = live.prefill_slots();
        copy_slot(&mut self.cache, slot, &siblings);
        Some(last)
    }
}
